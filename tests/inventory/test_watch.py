"""Following Argo CD's watch stream between polls: changes arrive without a poll, errors re-list."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from audit.models import AuditEvent, ChangeRecord
from integrations.argocd import DEFAULT_WATCH_FIELDS, ArgoCDClient
from inventory.appstate import state_hash
from inventory.models import ArgoApplication, ArgoInstance, Deployment
from inventory.observe import with_stored_revision
from inventory.watch import InstanceWatcher
from tests.conftest import ROOT, subprocess_env, wait_for
from tests.integrations.integration_fakes import FakeServer, load_fixture
from tests.sandbox_fixtures import ARGOCD_TOKEN, _git, commit_files, read_file, set_image_tag

# The watcher runs in its own thread with its own database connection: data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)


def _start(inv, **options) -> tuple[InstanceWatcher, threading.Thread]:
    watcher = InstanceWatcher(
        instance_id=inv.instance.pk,
        stop_event=threading.Event(),
        backoff_base=0.05,
        backoff_max=0.2,
        **options,
    )
    thread = threading.Thread(target=watcher.run, name="test-argocd-watch", daemon=True)
    thread.start()
    return watcher, thread


@pytest.fixture
def watching(sandbox_inventory) -> Iterator[InstanceWatcher]:
    watcher, thread = _start(sandbox_inventory)
    wait_for(lambda: watcher.stats.connects >= 1, timeout=15, message="the watcher to connect")
    yield watcher
    _stop(watcher, thread)


def _stop(watcher: InstanceWatcher, thread: threading.Thread) -> float:
    started = time.monotonic()
    watcher.stop()
    thread.join(10)
    assert not thread.is_alive(), "the watcher did not stop"
    return time.monotonic() - started


def _push_tag(inv, env: str, app: str, tag: str, message: str = "hotfix\n") -> str:
    path = f"environments/{env}/{app}/kustomization.yaml"
    return commit_files(inv.repo.path, {path: set_image_tag(read_file(inv.repo.path, path), tag)}, message)


def _deployment(argo_name: str, sha: str) -> Deployment | None:
    return Deployment.objects.filter(argo_app__name=argo_name, revision=sha).first()


def _streamed_names(clients) -> list[str]:
    return [n for c in clients for n in c.streamed]


def _stream_recording(inv, clients: list):
    from tests.inventory.test_poll_at_scale import RecordingClient

    class StreamRecordingClient(RecordingClient):
        """Also remembers the app of every event the stream sent."""

        def __init__(self, base_url: str) -> None:
            super().__init__(base_url)
            self.streamed: list[str] = []

        def watch_application_payloads(self, **kwargs):
            for data in super().watch_application_payloads(**kwargs):
                self.streamed.append(data["result"]["application"]["metadata"]["name"])
                yield data

    def factory(instance) -> StreamRecordingClient:
        clients.append(StreamRecordingClient(inv.argocd.base_url))
        return clients[-1]

    return factory


def _dev_apps(app: str) -> list[str]:
    return sorted(
        ArgoApplication.objects.live()
        .filter(claimed_app=app, environment__name="dev")
        .values_list("name", flat=True)
    )


def test_a_monorepo_commit_streams_only_the_synced_apps_and_the_poll_brings_the_other_revisions(
    sandbox_inventory,
):
    inv = sandbox_inventory
    clients: list = []
    watcher, thread = _start(inv, client_factory=_stream_recording(inv, clients))
    fleet = ArgoApplication.objects.live().count()
    try:
        wait_for(lambda: watcher.stats.connects >= 1, timeout=15, message="the watcher to connect")
        before = dict(ArgoApplication.objects.live().values_list("name", "revision"))
        # The first commit after a connect: Argo CD has sent nothing yet for any app on this stream,
        # so every app's (unchanged, narrow) state comes once; only the synced apps are read.
        first = inv.repo.apps[2].name
        sha = _push_tag(inv, "dev", first, "8.8.8")
        inv.refresh()
        synced = _dev_apps(first)
        for name in synced:
            wait_for(lambda name=name: _deployment(name, sha), timeout=15, message=f"{name}'s deployment")
        wait_for(lambda: watcher.stats.events >= fleet, timeout=15, message="the first commit's events")
        # The second commit moves every app's sync revision again: only the synced apps are streamed.
        streamed_before = len(_streamed_names(clients))
        second = inv.repo.apps[3].name
        sha2 = _push_tag(inv, "dev", second, "8.8.9")
        inv.refresh()
        synced2 = _dev_apps(second)
        for name in synced2:
            wait_for(lambda name=name: _deployment(name, sha2), timeout=15, message=f"{name}'s deployment")
        time.sleep(0.5)  # anything else the stream had to send has arrived
        streamed = _streamed_names(clients)[streamed_before:]
    finally:
        _stop(watcher, thread)
    assert synced and synced2 and set(streamed) == set(synced2)
    # Only the synced apps were read in full; they run, and compare with, the commit synced.
    assert {n for c in clients for n in c.full_reads} == set(synced) | set(synced2)
    rows = {r.name: r for r in ArgoApplication.objects.live()}
    assert {(rows[n].running_revision, rows[n].revision) for n in synced2} == {(sha2, sha2)}
    # The other apps keep the compared revision they had (what they run did not move) ...
    others = set(rows) - set(synced) - set(synced2)
    assert others and {n: rows[n].revision for n in others} == {n: before[n] for n in others}
    assert all(rows[n].running_revision == rows[n].deployed_revision for n in others)
    # ... until the poller's list, which stores the sync-revision moves and reads nothing in full.
    polled = inv.poll()
    assert polled.ok and polled.new_deployments == 0
    assert set(ArgoApplication.objects.live().values_list("revision", flat=True)) == {sha2}
    assert _stored_hashes_match_the_list(inv)


def test_a_status_move_from_the_stream_keeps_the_stored_sync_revision(sandbox_inventory, watching):
    inv = sandbox_inventory
    app = inv.repo.apps[1].name
    name = f"{app}-stage-eu-west-1"
    row = ArgoApplication.objects.get(name=name)
    assert row.health_status == "Healthy" and row.revision and row.version
    inv.argocd.faults.update({"degraded_tags": [row.version]})
    inv.refresh()
    wait_for(
        lambda: ArgoApplication.objects.get(name=name).health_status == "Degraded",
        timeout=15,
        message="the degraded health from the stream",
    )
    after = ArgoApplication.objects.get(name=name)
    # Stored from the narrow state, with the stored revision put back (the stream has none): had it
    # been stored without, the revision would be blank and the hash not the list's.
    assert (after.revision, after.deployed_revision) == (row.revision, row.deployed_revision)
    assert after.degraded_since is not None
    assert _stored_hashes_match_the_list(inv)


def test_a_sync_reaches_the_database_without_a_poll(sandbox_inventory, watching):
    inv = sandbox_inventory
    app = inv.repo.apps[1].name
    argo_name = f"{app}-prod-eu-west-1"
    before = ArgoApplication.objects.get(name=argo_name)
    polled_at = ArgoInstance.objects.get(pk=inv.instance.pk).last_poll_finished_at

    sha = _push_tag(inv, "prod", app, "7.7.7")
    inv.refresh()
    deployment = wait_for(lambda: _deployment(argo_name, sha), timeout=15, message="the deployment")

    row = ArgoApplication.objects.get(name=argo_name)
    assert (row.deployed_revision, row.version) == (sha, "7.7.7")
    assert deployment.version == "7.7.7" and deployment.out_of_band is True
    assert Deployment.objects.filter(argo_app=row, revision=sha).count() == 1
    observed = AuditEvent.objects.get(action="deployment.observed", target_id=str(deployment.pk))
    # Git was ingested before the deployment was judged: the commit is known, and not from the portal.
    assert observed.out_of_band and observed.after["reason"].startswith("1 commit(s) without Promotion-Id")
    # No poll ran: the one re-list at start-up was before the commit.
    assert ArgoInstance.objects.get(pk=inv.instance.pk).last_poll_finished_at == polled_at
    assert watching.stats.relists == 1 and watching.stats.errors == 0

    # A direct push to prod is out of band: its change record is written with the deployment.
    record = ChangeRecord.objects.get(source_type="deployment", source_id=str(deployment.pk))
    assert (record.kind, record.app, record.environment, record.outcome) == (
        "out_of_band",
        app,
        "prod",
        "succeeded",
    )
    assert (record.revision_before, record.revision_after) == (before.deployed_revision, sha)
    assert record.versions_before == {app: before.version} and record.versions_after == {app: "7.7.7"}
    assert record.deployed_at == deployment.deployed_at and record.clusters == ["prod-eu-west-1"]
    assert record.project == row.application.project and "Out-of-band deployment" in record.title

    # The watcher stored what a poll would have: once Argo CD is quiet, a poll finds nothing new.
    wait_for(
        lambda: ArgoApplication.objects.get(name=argo_name).health_status == "Healthy",
        timeout=15,
        message="prod healthy",
    )
    # The head move changed every app's sync revision, which the stream leaves out: the next poll
    # stores those in one UPDATE and finds nothing else (the synced app is stored as it lists).
    stored = ArgoApplication.objects.get(name=argo_name).state_hash
    polled = inv.poll()
    assert polled.ok and polled.new_deployments == 0
    assert ArgoApplication.objects.get(name=argo_name).state_hash == stored
    assert _stored_hashes_match_the_list(inv)


def _stored_hashes_match_the_list(inv) -> bool:
    client = ArgoCDClient(inv.argocd.base_url, ARGOCD_TOKEN, allow_http=True)
    # A revision-only list update keeps the state hash of the revision before (`hashed_revision`).
    rows = {
        r[0]: r[1:]
        for r in ArgoApplication.objects.live().values_list(
            "name", "revision", "hashed_revision", "state_hash"
        )
    }
    listing = {
        item.name: (
            item.sync_revision or "",
            state_hash(
                dataclasses.replace(
                    item, sync_revision=rows.get(item.name, ("", "", ""))[1] or item.sync_revision
                )
            ),
        )
        for item in client.list_applications().items
    }
    return listing == {name: (revision, digest) for name, (revision, _, digest) in rows.items()}


def test_during_a_burst_the_synced_app_is_stored_at_once_and_the_narrow_events_wait_for_a_gap(
    sandbox_inventory, monkeypatch
):
    import copy

    from inventory import watch as watch_module

    inv = sandbox_inventory
    client = ArgoCDClient(inv.argocd.base_url, ARGOCD_TOKEN, allow_http=True)
    unchanged = []  # every app as it is stored: the first events after a connect
    for data in client.watch_application_payloads(fields=DEFAULT_WATCH_FIELDS):
        unchanged.append({"result": {**data["result"], "type": "MODIFIED"}})
        if len(unchanged) == ArgoApplication.objects.live().count():
            break
    client.close()
    synced = copy.deepcopy(unchanged[3])  # its operation moved: urgent (read in full)
    operation = synced["result"]["application"]["status"].setdefault("operationState", {})
    operation.update(phase="Succeeded", startedAt="2031-01-01T00:00:00Z", finishedAt="2031-01-01T00:00:01Z")
    urgent = synced["result"]["application"]["metadata"]["name"]
    burst_ended = threading.Event()

    class BurstClient(ArgoCDClient):
        streams = 0

        def watch_application_payloads(self, **kwargs):
            BurstClient.streams += 1
            if BurstClient.streams > 1:  # reopened after the burst: stay idle
                while not watcher.stop_event.wait(0.05):
                    pass
                return
            for round_ in range(40):  # events 2 ms apart, the synced app's in the middle
                for data in (synced,) if round_ == 20 else unchanged[round_ % 3 :: 3]:
                    yield data
                    time.sleep(0.002)
            burst_ended.set()

    batches: list[tuple[list[str], bool]] = []
    observe = watch_module.argo_applications_observe

    def recording(*, instance_id, remotes, client):
        batches.append(([r.name for r in remotes], burst_ended.is_set()))
        return observe(instance_id=instance_id, remotes=remotes, client=client)

    monkeypatch.setattr(watch_module, "argo_applications_observe", recording)
    # Gaps in the burst are a few ms; generous bounds keep a loaded machine from ending it early.
    monkeypatch.setattr(watch_module, "QUIET_SECONDS", 0.5)
    monkeypatch.setattr(watch_module, "NARROW_MAX_WAIT_SECONDS", 30.0)
    watcher, thread = _start(
        inv, client_factory=lambda instance: BurstClient(inv.argocd.base_url, ARGOCD_TOKEN, allow_http=True)
    )
    try:
        wait_for(burst_ended.is_set, timeout=15, message="the end of the burst")
        wait_for(
            lambda: sum(len(n) for n, _ in batches) > len(unchanged), timeout=15, message="the burst stored"
        )
    finally:
        _stop(watcher, thread)
    during = [names for names, after in batches if not after]
    assert during == [[urgent]]  # stored while the burst went on, alone
    assert {n for names, after in batches if after for n in names} == {
        d["result"]["application"]["metadata"]["name"] for d in unchanged
    }


def test_a_stream_error_leads_to_a_relist_and_the_watch_resumes(sandbox_inventory):
    inv = sandbox_inventory
    inv.argocd.faults.update(
        {"error_rate": 1.0, "status": 503, "count": 1, "paths": ["/api/v1/stream/applications"]}
    )
    watcher, thread = _start(inv)
    try:
        wait_for(lambda: watcher.stats.relists >= 2, timeout=15, message="a second re-list")
        assert watcher.stats.errors == 1 and "503" in watcher.stats.last_error
        app = inv.repo.apps[2].name
        sha = _push_tag(inv, "stage", app, "8.8.8", "ci: bump\n")
        inv.refresh()
        deployment = wait_for(
            lambda: _deployment(f"{app}-stage-eu-west-1", sha), timeout=15, message="the stage deployment"
        )
        assert deployment.out_of_band is False  # a CI commit to stage is the normal path
        assert not ChangeRecord.objects.filter(
            source_type="deployment", source_id=str(deployment.pk)
        ).exists()
        assert not ArgoInstance.objects.get(pk=inv.instance.pk).is_stale
    finally:
        _stop(watcher, thread)


def test_a_deleted_application_is_soft_deleted_and_keeps_its_history(sandbox_inventory, watching):
    inv = sandbox_inventory
    app = inv.repo.apps[0].name
    argo_name = f"{app}-dev-eu-west-1"
    history = Deployment.objects.filter(argo_app__name=argo_name).count()
    assert history > 0

    _remove_dir(inv.repo.path, f"environments/dev/{app}")
    inv.refresh()

    row = wait_for(
        lambda: ArgoApplication.objects.filter(name=argo_name, deleted_at__isnull=False).first(),
        timeout=15,
        message="the soft delete",
    )
    assert Deployment.objects.filter(argo_app=row).count() == history
    event = AuditEvent.objects.get(action="argocd.applications_removed")
    assert event.after == {"applications": [argo_name]} and event.actor_name == "system:argocd-watch"


def test_stop_ends_a_blocked_watch_promptly(sandbox_inventory, watching):
    thread = next(t for t in threading.enumerate() if t.name == "test-argocd-watch")
    time.sleep(0.3)  # blocked in the stream read: nothing changes in Argo CD
    assert _stop(watching, thread) < 3


def test_watched_state_hashes_like_the_polled_list_once_the_sync_revision_is_put_back(sandbox_inventory):
    client = ArgoCDClient(sandbox_inventory.argocd.base_url, ARGOCD_TOKEN, allow_http=True)
    items = client.list_applications().items
    listed = {a.name: state_hash(a) for a in items}
    revisions = {a.name: {"revision": a.sync_revision} for a in items}
    watched, bare = {}, {}
    for event in client.watch_applications(fields=DEFAULT_WATCH_FIELDS):  # no position: ADDED for all
        app = event.application
        assert app.sync_revision is None  # not asked for: a monorepo commit moves it on every app
        bare[app.name] = state_hash(app)
        watched[app.name] = state_hash(with_stored_revision(app, revisions[app.name]))
        if len(watched) == len(listed):
            break
    client.close()
    assert watched == listed
    assert not set(bare.values()) & set(listed.values())


def test_the_argocd_watch_command_follows_changes_and_stops_on_sigterm(sandbox_inventory, tmp_path, settings):
    inv = sandbox_inventory
    heartbeat = tmp_path / "alive"
    log = tmp_path / "watch.log"
    polled_at = ArgoInstance.objects.get(pk=inv.instance.pk).last_poll_finished_at
    heartbeat_args = ["--heartbeat-file", str(heartbeat)]
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "manage.py",
                "argocd_watch",
                "--backoff",
                "0.1",
                "--rescan",
                "0.5",
                *heartbeat_args,
            ],
            cwd=ROOT,
            env=subprocess_env(GITOPSPORTAL_MIRRORS_DIR=str(settings.MIRRORS_DIR), GITOPSPORTAL_CONFIG=""),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_for(heartbeat.exists, timeout=30, message="the heartbeat")
        wait_for(
            lambda: ArgoInstance.objects.get(pk=inv.instance.pk).last_poll_finished_at != polled_at,
            timeout=30,
            message="the start-up re-list",
        )
        app = inv.repo.apps[3].name
        sha = _push_tag(inv, "prod", app, "6.6.6")
        inv.refresh()
        wait_for(
            lambda: _deployment(f"{app}-prod-eu-west-1", sha),
            timeout=20,
            message=f"the deployment via the command ({log.read_text()[-2000:]})",
        )
        os.killpg(proc.pid, signal.SIGTERM)
        assert proc.wait(15) == 0, log.read_text()[-3000:]
        assert "argocd watch: stopped after" in log.read_text()
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def _remove_dir(repo: Path, directory: str) -> str:
    """Commit the removal of every file under `directory` on main (plumbing on the bare repo)."""
    head = _git(repo, "rev-parse", "refs/heads/main")
    files = _git(repo, "ls-tree", "-r", "--name-only", head, "--", directory).splitlines()
    with tempfile.TemporaryDirectory() as tmp:
        env = {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
        _git(repo, "read-tree", head, env=env)
        # Mode 0 removes an index entry (update-index --force-remove needs a work tree).
        removals = "".join(f"0 {'0' * 40}\t{name}\n" for name in files)
        _git(repo, "update-index", "--index-info", input_text=removals, env=env)
        tree = _git(repo, "write-tree", env=env)
    sha = _git(repo, "commit-tree", tree, "-p", head, input_text=f"retire {directory}\n")
    _git(repo, "update-ref", "refs/heads/main", sha, head)
    return sha


@pytest.fixture
def server() -> Iterator[FakeServer]:
    """A local HTTP server with recorded Argo CD answers."""
    fake = FakeServer()
    fake.start()
    yield fake
    fake.stop()


def test_a_stream_the_server_closes_cleanly_is_reopened_without_a_relist(server):
    """A proxy's idle cut: reconnect from the list position; replayed events cost nothing."""
    full = load_fixture("argocd/application-full.json")
    name = full["metadata"]["name"]
    server.add("GET", "/api/v1/clusters", body=load_fixture("argocd/clusters.json"))
    server.add("GET", "/api/v1/applications", body={"metadata": {"resourceVersion": "5"}, "items": []})
    server.add("GET", f"/api/v1/applications/{name}", body=full)
    event = {"result": {"type": "ADDED", "application": full}}
    server.add(
        "GET",
        "/api/v1/stream/applications",
        body=f"data: {json.dumps(event)} \n\n",
        headers={"Content-Type": "text/event-stream"},
        stream=True,  # the server closes the connection after the event
    )
    instance = ArgoInstance.objects.create(name="fake", url=server.url, token="t-0123456789", allow_http=True)
    watcher = InstanceWatcher(instance_id=instance.pk, stop_event=threading.Event(), backoff_base=0.05)
    thread = threading.Thread(target=watcher.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: watcher.stats.connects >= 3, timeout=15, message="reconnects")
    finally:
        _stop(watcher, thread)
    assert watcher.stats.relists == 1 and watcher.stats.errors == 0
    assert Deployment.objects.filter(argo_app__name=name).count() == len(full["status"]["history"])
    streams = [r for r in server.requests if r.path == "/api/v1/stream/applications"]
    assert all(r.query["resourceVersion"] == ["5"] for r in streams)
    # The same event on every reconnect: read in full once, then recognised by its state hash.
    assert sum(r.path == f"/api/v1/applications/{name}" for r in server.requests) == 1


def test_a_syncs_commit_is_fetched_as_soon_as_its_event_arrives_not_after_the_full_read(
    sandbox_inventory, watching, monkeypatch
):
    # No forge webhook: the watcher fetches the new commit itself. It starts the fetch when the
    # event names the sync's revision, and reads the app in full meanwhile; the store then waits
    # for that fetch rather than fetching again.
    import inventory.ingest
    import inventory.store

    inv = sandbox_inventory
    calls: list[tuple[str, str]] = []
    ingest, full_read = inventory.ingest.repository_ingest, inventory.store._full_read

    def recording_ingest(*, repository_id: int):
        calls.append(("ingest", threading.current_thread().name))
        return ingest(repository_id=repository_id)

    def recording_read(client, name):
        calls.append(("read", name))
        return full_read(client, name)

    monkeypatch.setattr(inventory.ingest, "repository_ingest", recording_ingest)
    monkeypatch.setattr(inventory.store, "_full_read", recording_read)
    app = inv.repo.apps[1].name
    argo_name = f"{app}-prod-eu-west-1"
    sha = _push_tag(inv, "prod", app, "7.8.9")
    inv.refresh()
    deployment = wait_for(lambda: _deployment(argo_name, sha), timeout=15, message="the deployment")
    assert deployment.version == "7.8.9"
    observed = AuditEvent.objects.get(action="deployment.observed", target_id=str(deployment.pk))
    assert observed.after["reason"].startswith("1 commit(s) without Promotion-Id")  # judged on the commit
    first_read = calls.index(("read", argo_name))
    ingests = [thread for kind, thread in calls if kind == "ingest"]
    assert ingests and ingests[0].startswith("git-ingest-ahead-")
    assert calls.index(("ingest", ingests[0])) < first_read
    assert len(ingests) == 1  # the store did not fetch a second time


def test_the_revisions_a_watched_operation_syncs_to_by_repository():
    from inventory.observe import raw_sync_revisions

    sha1, sha2, sha3 = "a" * 40, "b" * 40, "c" * 40
    running = {
        "spec": {"source": {"repoURL": "https://git.example.com/acme/gitops.git"}},
        "status": {"operationState": {"phase": "Running", "operation": {"sync": {"revision": sha1}}}},
    }
    finished = {
        "spec": {"source": {"repoURL": "https://git.example.com/acme/gitops"}},
        "status": {"operationState": {"phase": "Succeeded", "syncResult": {"revision": sha2}}},
    }
    multi = {
        "spec": {
            "sources": [
                {"repoURL": "https://git.example.com/acme/charts"},
                {"repoURL": "https://git.example.com/acme/gitops"},
            ]
        },
        "status": {"operationState": {"syncResult": {"revisions": ["1.2.3", sha3]}}},
    }
    manual = {  # a sync to a branch name: nothing to fetch ahead
        "spec": {"source": {"repoURL": "https://git.example.com/acme/gitops"}},
        "status": {"operationState": {"operation": {"sync": {"revision": "main"}}}},
    }
    malformed = {"spec": "?", "status": {"operationState": {"syncResult": {"revision": 7}}}}
    assert raw_sync_revisions([running, finished, multi, manual, malformed, {}]) == {
        "https://git.example.com/acme/gitops": {sha1, sha2, sha3}
    }


@pytest.mark.parametrize("sandbox_repo_options", [{"apps": 3, "clusters": 2, "commits": 40, "seed": 7}])
def test_the_apps_of_one_sync_are_held_while_its_commit_is_fetched_and_stored_together(
    sandbox_inventory, monkeypatch
):
    # A sync to an environment of two clusters streams two apps, not always in the same write.
    # Storing waits for the commit either way: the first is held while it is fetched, and both are
    # stored in one batch (not the second after the first one's fetch and store).
    import inventory.ingest
    import inventory.watch

    inv = sandbox_inventory
    app = inv.repo.apps[1].name
    names = sorted(
        ArgoApplication.objects.filter(name__startswith=f"{app}-prod-").values_list("name", flat=True)
    )
    assert len(names) == 2
    batches: list[list[str]] = []
    observe, read_stream = inventory.watch.argo_applications_observe, inventory.watch._read_stream
    pushed = threading.Event()

    def recording(*, instance_id, remotes, client):
        batches.append(sorted(r.name for r in remotes))
        return observe(instance_id=instance_id, remotes=remotes, client=client)

    def second_one_later(events, arrived):
        def delayed():
            late = True
            for event in events:
                if late and pushed.is_set() and inventory.watch._event_name(event) == names[1]:
                    late = False  # its first event after the push comes once the fetch has started
                    deadline = time.monotonic() + 5
                    while not inventory.ingest.ingest_ahead_running() and time.monotonic() < deadline:
                        time.sleep(0.002)
                yield event

        read_stream(delayed(), arrived)

    monkeypatch.setattr(inventory.watch, "argo_applications_observe", recording)
    monkeypatch.setattr(inventory.watch, "_read_stream", second_one_later)
    watcher, thread = _start(inv)
    try:
        wait_for(lambda: watcher.stats.connects >= 1, timeout=15, message="the watcher to connect")
        pushed.set()
        sha = _push_tag(inv, "prod", app, "7.9.1")
        inv.refresh()
        wait_for(lambda: all(_deployment(n, sha) for n in names), timeout=15, message="both deployments")
    finally:
        _stop(watcher, thread)
    first = next(batch for batch in batches if set(batch) & set(names))
    assert first == names
