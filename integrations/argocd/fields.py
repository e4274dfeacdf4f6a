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
# real path, so a watched app parses to what the list reports (and hashes the same once its sync
# revision is put back, see below).
#
# Without `status.sync.revision`: Argo CD skips an event identical (after `fields`) to the previous
# one it sent for the app (§6, #3849), and a commit to a monorepo moves every app's sync revision and
# nothing else. With the revision in the fields every commit streams one event per app (10,000 apps:
# 17 MB, and the synced app's event somewhere in the burst); without it only the apps whose sync
# status, health or operation moved are sent. The revision the portal shows is the last sync's
# (ArgoApplication.running_revision), which a sync's full read brings; an app's compared revision
# alone is left to the poller's list (one UPDATE for the fleet), and the watcher keeps the stored one
# meanwhile (inventory.observe). The first commit after a (re)connect still streams every app once.
_LIST_QUIRK = "items.status.operationState.operation.sync"
_NOT_WATCHED = ("items.status.sync.revision", _LIST_QUIRK)
DEFAULT_WATCH_FIELDS: tuple[str, ...] = (
    "result.type",
    *(
        "result.application." + f.removeprefix("items.")
        for f in DEFAULT_LIST_FIELDS
        if f.startswith("items.") and f not in _NOT_WATCHED
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
