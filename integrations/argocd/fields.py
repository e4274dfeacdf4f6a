"""The §5 field selections the poller asks for, for the list and for the watch stream."""

from __future__ import annotations

# The §5 whitelist subset the poller needs. The list's own metadata (resourceVersion) always comes
# back; per-item resourceVersion, history and conditions are dropped by the server when filtering.
#
# Not `items.status.operationState.operation.sync`: that entry returns the operation's whole sync
# *result* (§5), its resources included, more than half of each item (10,002 apps: 18.3 MB against
# 9.4 MB without it), to encode, send, cut and hash on every cycle. The list only has to tell which
# apps to read in full: an operation that starts or ends moves its phase or times, asked above, and
# the app is then read in full, its result with it (what is stored comes from that read). The state
# hash leaves the result out (inventory.appstate), so watched and listed apps still hash alike.
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
)

# The same state for the watch stream, whose `fields` are generic paths under `result.` (§5), so a
# watched app hashes like a listed one once its sync revision is put back (see below). The stream
# also asks for the operation's sync result revisions (by their real path), which the watcher reads
# to fetch a synced commit early (inventory.observe.raw_sync_revisions); the state hash ignores them.
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
    # Resource counts: evidence, stored from the full read; asked here as before (an event per
    # change of the running operation's resources), though not hashed.
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
