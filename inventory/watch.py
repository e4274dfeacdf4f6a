"""Follow Argo CD's application stream between polls (`manage.py argocd_watch`).

One thread per Argo CD instance: re-list (the poller's `instance_poll`), then watch from the list's
resourceVersion and apply each event through the poller's own code (`argo_application_observe` /
`argo_application_remove`). Any error re-lists after an exponential backoff; a stream the server
closes cleanly is reopened from the last list position (replayed events are no-ops: their state
hash is already stored). The Celery poller keeps running: it repairs whatever a watcher misses.
"""

from __future__ import annotations

import itertools
import logging
import queue
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any

from django.db import DatabaseError, close_old_connections, connection

from integrations.argocd import DEFAULT_WATCH_FIELDS, ArgoCDClient, ArgoCDError

from .clients import argocd_client_for
from .ingest import ingest_ahead_running, repositories_prefetch
from .models import ArgoInstance
from .observe import (
    argo_application_remove,
    argo_applications_observe,
    raw_operation_moved,
    raw_sync_revisions,
)
from .poll import instance_poll

logger = logging.getLogger(__name__)

BACKOFF_BASE_SECONDS = 1.0
BACKOFF_MAX_SECONDS = 60.0


# The most narrow (status/health) moves stored as one batch before new events are read again.
MAX_BURST = 500
# During a burst (events keep arriving with gaps under QUIET_SECONDS) only urgent apps are stored:
# the narrow ones (the first events after a connect: every app once, most unchanged) wait for a gap,
# or at most NARROW_MAX_WAIT_SECONDS, so that parsing and hashing a fleet does not take the CPU
# the synced app's full read and Git fetch need. Status and health moves are never later than that.
QUIET_SECONDS = 0.05
NARROW_MAX_WAIT_SECONDS = 3.0
# Syncs whose commit is being fetched ahead are held (at most this long) and stored together once it
# is ingested; the queue is looked at every AHEAD_POLL_SECONDS meanwhile.
AHEAD_HOLD_SECONDS = 10.0
AHEAD_POLL_SECONDS = 0.005
_NOTHING = Exception("no event")  # the queue is empty for now (never raised)
_ENDED = Exception("the stream ended")  # never raised


@dataclass
class _Pending:
    """The latest undecoded event of each app not stored yet, and which of them are urgent."""

    events: dict[str, dict[str, Any]] = field(default_factory=dict)
    unchecked: set[str] = field(default_factory=set)  # arrived since the last urgency check
    urgent: dict[str, None] = field(default_factory=dict)  # new apps, moved operations (in order)
    taken_at: dict[str, float] = field(default_factory=dict)  # when each was taken from the queue

    def add(self, name: str, event: dict[str, Any]) -> None:
        self.events.pop(name, None)
        self.events[name] = event
        self.urgent.pop(name, None)
        self.unchecked.add(name)
        self.taken_at.setdefault(name, time.monotonic())

    def oldest_age(self) -> float:
        """Seconds since the longest-pending event was taken from the queue."""
        oldest = next(iter(self.taken_at.values()), None)  # insertion order: the first is the oldest
        return 0.0 if oldest is None else time.monotonic() - oldest

    def pop(self, name: str) -> dict[str, Any]:
        self.urgent.pop(name, None)
        self.unchecked.discard(name)
        self.taken_at.pop(name, None)
        return self.events.pop(name)


def _event_name(data: dict[str, Any]) -> str | None:
    """The app an undecoded event is about (None when malformed: parsing it says why)."""
    result = data.get("result")
    app = result.get("application") if isinstance(result, dict) else None
    meta = app.get("metadata") if isinstance(app, dict) else None
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) and name else None


def _read_stream(
    events: Iterator[dict[str, Any]], arrived: queue.SimpleQueue[dict[str, Any] | BaseException | None]
) -> None:
    """Move the stream's events into `arrived`; then None (the stream ended) or the error that ended it."""
    try:
        for event in events:
            arrived.put(event)
    except BaseException as exc:  # handed to the storing thread, which re-lists
        arrived.put(exc)
        return
    arrived.put(None)


class RelistFailed(Exception):
    """The re-list (a poll of the instance) failed; the instance is marked stale by the poll."""


@dataclass
class WatchStats:
    """Counters for logs, the heartbeat and tests."""

    relists: int = 0
    connects: int = 0
    events: int = 0
    changed: int = 0
    removed: int = 0
    deployments: int = 0
    errors: int = 0
    last_error: str = ""
    last_event_at: float | None = None


@dataclass
class InstanceWatcher:
    """Keep one instance's observed state current from its watch stream."""

    instance_id: int
    stop_event: threading.Event
    backoff_base: float = BACKOFF_BASE_SECONDS
    backoff_max: float = BACKOFF_MAX_SECONDS
    client_factory: Callable[[ArgoInstance], ArgoCDClient] = argocd_client_for
    stats: WatchStats = field(default_factory=WatchStats)
    _client: ArgoCDClient | None = field(default=None, repr=False)
    _streaming: bool = field(default=False, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def run(self) -> None:
        """Watch until `stop_event` is set; never raises."""
        failures = 0
        relist = True
        try:
            while not self.stop_event.is_set():
                try:
                    close_old_connections()
                    instance = ArgoInstance.objects.get(pk=self.instance_id)
                    client = self.client_factory(instance)
                    with self._lock:
                        self._client = client
                    if relist:
                        self._relist()
                        relist = False
                    self._follow()
                    failures = 0
                    # The server ended the stream cleanly (a proxy's idle cut, a restart): reopen it
                    # from the list position, but never faster than once per backoff step.
                    self.stop_event.wait(self.backoff_base)
                except ArgoInstance.DoesNotExist:
                    logger.info("argocd watch: instance %s was removed; stopping", self.instance_id)
                    return
                except (ArgoCDError, RelistFailed, DatabaseError, OSError) as exc:
                    if self.stop_event.is_set():
                        return
                    failures += 1
                    relist = True
                    self._record_error(exc, failures)
                    self.stop_event.wait(self._backoff(failures))
                except Exception as exc:  # never let one bug end the watch of an instance for good
                    if self.stop_event.is_set():
                        return
                    failures += 1
                    relist = True
                    logger.exception("argocd watch: unexpected error on instance %s", self.instance_id)
                    self._record_error(exc, failures)
                    self.stop_event.wait(self._backoff(failures))
                finally:
                    with self._lock:
                        used, self._client = self._client, None
                    if used is not None:
                        with suppress(Exception):  # closing a dead connection must not end the loop
                            used.close()
        finally:
            connection.close()

    def stop(self) -> None:
        """Ask the loop to end and abort a blocked stream read.

        A re-list in progress is left to finish (bounded by the HTTP timeouts): aborting it would
        record the instance as failing.
        """
        with self._lock:
            self.stop_event.set()
            client = self._client if self._streaming else None
        if client is not None:
            try:
                client.close()
            except Exception:  # stopping must not fail (it runs from a signal handler)
                logger.warning("argocd watch: aborting the stream failed", exc_info=True)

    # -- steps ------------------------------------------------------------------------------------

    def _relist(self) -> None:
        assert self._client is not None
        result = instance_poll(instance_id=self.instance_id, client=self._client)
        self.stats.relists += 1
        if result.error:
            raise RelistFailed(result.error)
        logger.info(
            "argocd watch: re-listed %s: %s apps, %s changed, %s new deployments%s",
            result.instance,
            result.apps_seen,
            result.apps_changed + result.apps_new,
            result.new_deployments,
            " (a poll was running: using its list)" if result.skipped else "",
        )

    def _follow(self) -> None:
        client = self._client
        assert client is not None
        # The latest list position, whoever listed last (this watcher or the Celery poller).
        position = ArgoInstance.objects.filter(pk=self.instance_id).values_list(
            "list_resource_version", flat=True
        )[0]
        with self._lock:
            if self.stop_event.is_set():
                return
            self._streaming = True  # from here on stop() may abort the read
        try:
            self.stats.connects += 1
            events = client.watch_application_payloads(
                resource_version=position or None, fields=DEFAULT_WATCH_FIELDS
            )
            # One thread reads and decodes the stream while this one parses and stores: a burst (a
            # monorepo commit moves every app) is coalesced and stored in batches, the urgent first.
            arrived: queue.SimpleQueue[dict[str, Any] | BaseException | None] = queue.SimpleQueue()
            threading.Thread(
                target=_read_stream,
                args=(events, arrived),
                name=f"argocd-watch-read-{self.instance_id}",
                daemon=True,
            ).start()
            pending = _Pending()
            ended: BaseException | None = None
            while not self.stop_event.is_set():
                item: dict[str, Any] | BaseException | None = _NOTHING
                try:
                    # With events pending (narrow ones held back during a burst), wait only briefly:
                    # a gap this long ends the burst.
                    item = arrived.get(timeout=self._wait_for_events(pending))
                    while isinstance(item, dict):
                        self.stats.events += 1
                        self.stats.last_event_at = time.monotonic()
                        pending.add(
                            _event_name(item) or client.parse_watch_event(item).application.name, item
                        )
                        item = arrived.get_nowait()
                except queue.Empty:
                    pass
                if self.stop_event.is_set():
                    return
                if item is None or (isinstance(item, BaseException) and item is not _NOTHING):
                    ended = item or _ENDED
                if pending.events:
                    self._apply_some(
                        client,
                        pending,
                        everything=ended is not None,
                        narrow_now=item is _NOTHING or pending.oldest_age() > NARROW_MAX_WAIT_SECONDS,
                    )
                if ended is not None and not pending.events:
                    if ended is _ENDED:
                        return  # the server ended the stream
                    raise ended
        finally:
            with self._lock:
                self._streaming = False

    @staticmethod
    def _wait_for_events(pending: _Pending) -> float:
        if pending.urgent and ingest_ahead_running():
            return AHEAD_POLL_SECONDS  # urgent apps held for a fetch: store them as soon as it lands
        return QUIET_SECONDS if pending.events else 0.5

    def _apply_some(
        self, client: ArgoCDClient, pending: _Pending, *, everything: bool, narrow_now: bool = True
    ) -> None:
        """Store part of the pending events, the most urgent first, and drop them from `pending`.

        Deletions, new apps and apps whose operation moved (a sync and its new history) go first,
        on their own; otherwise, when `narrow_now`, at most MAX_BURST of the others (status or
        health moves, or no change at all: the first events after a connect), oldest first, before
        new events are read again: a synced app never waits behind a whole fleet's burst. Events
        are parsed here, urgent ones first, not as they arrive.
        """
        fresh = {name: pending.events[name] for name in pending.unchecked}
        pending.unchecked.clear()
        for name, data in fresh.items():
            if data["result"].get("type") == "DELETED":
                event = client.parse_watch_event(pending.pop(name))
                result = argo_application_remove(instance_id=self.instance_id, name=event.application.name)
                self.stats.removed += int(result.removed)
        moved = raw_operation_moved(
            instance_id=self.instance_id,
            items={n: d["result"]["application"] for n, d in fresh.items() if n in pending.events},
        )
        pending.urgent.update(dict.fromkeys(moved))
        if moved:
            # A sync's revision not ingested yet: start fetching it now (no forge webhook needed; the
            # store waits for this fetch rather than starting its own).
            repositories_prefetch(
                raw_sync_revisions(pending.events[name]["result"]["application"] for name in moved)
            )
        # The urgent apps alone (each a full read and its deployments), then back to the queue: a
        # sync that arrives meanwhile is not stored after a batch of narrow moves.
        names = list(pending.urgent)
        if names and not everything and ingest_ahead_running():
            # Their commit is being fetched: storing waits for it anyway. Meanwhile the other apps
            # of the same sync (one per cluster, a few ms apart on the stream) join the batch, and
            # nothing else is stored before it. Bounded: a hung fetch does not hold them for long.
            held = time.monotonic() - min(pending.taken_at.get(n, time.monotonic()) for n in names)
            if held < AHEAD_HOLD_SECONDS:
                return
        kind = "urgent"
        if not names and (narrow_now or everything):
            kind = "narrow"
            narrow = iter(pending.events)
            names = list(narrow if everything else itertools.islice(narrow, MAX_BURST))
        if not names:
            return
        started = time.monotonic()
        waited = started - min(pending.taken_at.get(name, started) for name in names)
        batch = [client.parse_watch_event(pending.pop(name)).application for name in names]
        changed = 0
        for result in argo_applications_observe(instance_id=self.instance_id, remotes=batch, client=client):
            changed += int(result.changed)
            self.stats.deployments += result.new_deployments
            if result.new_deployments:
                logger.info("argocd watch: %s: %s new deployment(s)", result.name, result.new_deployments)
        self.stats.changed += changed
        logger.debug(
            "argocd watch: %s %s event(s), %s changed: waited %.0f ms, stored in %.0f ms (%s pending)",
            len(names),
            kind,
            changed,
            waited * 1000,
            (time.monotonic() - started) * 1000,
            len(pending.events),
        )

    # -- helpers ----------------------------------------------------------------------------------

    def _record_error(self, exc: BaseException, failures: int) -> None:
        self.stats.errors += 1
        self.stats.last_error = str(exc)[:500] or type(exc).__name__
        logger.warning(
            "argocd watch: instance %s: %s (attempt %s); re-listing in %.1fs",
            self.instance_id,
            self.stats.last_error,
            failures,
            self._backoff(failures),
        )

    def _backoff(self, failures: int) -> float:
        # Exponential with full jitter in the upper half, so many watchers do not reconnect in step.
        ceiling = min(self.backoff_max, self.backoff_base * 2 ** max(0, failures - 1))
        return ceiling / 2 + random.random() * ceiling / 2


@dataclass
class WatchSupervisor:
    """Run one InstanceWatcher thread per ArgoInstance; pick up added and removed instances."""

    stop_event: threading.Event = field(default_factory=threading.Event)
    rescan_seconds: float = 30.0
    heartbeat: Callable[[], None] | None = None
    watcher_options: dict[str, object] = field(default_factory=dict)
    watchers: dict[int, tuple[InstanceWatcher, threading.Thread]] = field(default_factory=dict)

    def run(self) -> None:
        """Supervise until `stop()`; then stop every watcher and wait for its thread."""
        try:
            while not self.stop_event.is_set():
                self._sync_threads()
                if self.heartbeat is not None:
                    self.heartbeat()
                self.stop_event.wait(self.rescan_seconds)
        finally:
            self._stop_all()
            connection.close()

    def stop(self) -> None:
        """Ask the supervisor (and every watcher) to stop; safe from a signal handler."""
        self.stop_event.set()
        for watcher, _ in list(self.watchers.values()):
            watcher.stop()

    def _sync_threads(self) -> None:
        try:
            close_old_connections()
            wanted = set(ArgoInstance.objects.values_list("pk", flat=True))
        except DatabaseError as exc:
            logger.warning("argocd watch: cannot list instances: %s", exc)
            return
        for pk, (watcher, thread) in list(self.watchers.items()):
            if pk not in wanted or not thread.is_alive():
                watcher.stop()
                thread.join(5)
                del self.watchers[pk]
        for pk in sorted(wanted - set(self.watchers)):
            watcher = InstanceWatcher(instance_id=pk, stop_event=threading.Event(), **self.watcher_options)  # type: ignore[arg-type]
            thread = threading.Thread(target=watcher.run, name=f"argocd-watch-{pk}", daemon=True)
            self.watchers[pk] = (watcher, thread)
            thread.start()

    def _stop_all(self) -> None:
        for watcher, _ in self.watchers.values():
            watcher.stop()
        for _, thread in self.watchers.values():
            thread.join(10)
