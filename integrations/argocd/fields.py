"""The §5 field selections the poller asks for, for the list and for the watch stream."""

from __future__ import annotations

# The §5 whitelist subset the poller needs. The list's own metadata (resourceVersion) always comes
# back; per-item resourceVersion, history and conditions are dropped by the server when filtering.
DEFAULT_LIST_FIELDS: tuple[str, ...] = (
    "metadata.resourceVersion",
    "items.metadata.name",
    "items.metadata.namespace",
    "items.metadata.labels",
    "items.metadata.annotations",
    "items.spec",
    "items.status.sync.status",
    "items.status.sync.revision",
    "items.status.health",
    "items.status.summary",
    "items.status.operationState.phase",
    "items.status.operationState.startedAt",
    "items.status.operationState.finishedAt",
    "items.status.operationState.operation.sync",
)

# The same state for the watch stream, whose `fields` are generic paths under `result.` (§5). The
# list's `operationState.operation.sync` quirk returns the sync *result*; here it is asked for by its
# real path, so a watched app parses to exactly what the list reports (and hashes the same).
_LIST_QUIRK = "items.status.operationState.operation.sync"
DEFAULT_WATCH_FIELDS: tuple[str, ...] = (
    "result.type",
    *(
        "result.application." + f.removeprefix("items.")
        for f in DEFAULT_LIST_FIELDS
        if f.startswith("items.") and f != _LIST_QUIRK
    ),
    "result.application.status.operationState.syncResult.revision",
    "result.application.status.operationState.syncResult.revisions",
    # The list's quirk returns the whole result, resources included (their counts are evidence).
    "result.application.status.operationState.syncResult.resources",
)

# What a full GET supplies to `parse_application`, asked of the stream's initial burst instead: one
# streamed answer for a whole first poll rather than a GET per app. Stream `fields` are not
# whitelisted (§5), so status.history, conditions and sync.revisions come through; status.resources
# and metadata.managedFields (the bulk of a big app, §9) are left out: nothing the poller stores.
FULL_WATCH_FIELDS: tuple[str, ...] = (
    "result.type",
    "result.application.metadata.name",
    "result.application.metadata.namespace",
    "result.application.metadata.labels",
    "result.application.metadata.annotations",
    "result.application.metadata.resourceVersion",
    "result.application.spec",
    "result.application.operation",
    "result.application.status.sync",
    "result.application.status.health",
    "result.application.status.operationState",
    "result.application.status.summary",
    "result.application.status.reconciledAt",
    "result.application.status.history",
    "result.application.status.conditions",
)
