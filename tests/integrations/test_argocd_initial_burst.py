"""Full apps read from the watch stream's initial burst (API.md §5-§6) instead of a GET each."""

from __future__ import annotations

import json
from typing import Any

from integrations.argocd import FULL_WATCH_FIELDS, ArgoCDClient, InitialReadChunk
from integrations.argocd.watch import InitialBurst
from tests.integrations.integration_fakes import FakeServer

TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-argocd-token"
STREAM = "/api/v1/stream/applications"


def client(server: FakeServer) -> ArgoCDClient:
    return ArgoCDClient(server.url, TOKEN, allow_http=True)


def app(name: str, revision: str = "a" * 40, history: int = 2) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "argocd", "resourceVersion": "7"},
        "spec": {
            "project": "default",
            "source": {"repoURL": "https://git.example/gitops", "path": f"apps/{name}"},
            "destination": {"server": "https://kubernetes.default.svc", "namespace": name},
        },
        "status": {
            "sync": {"status": "Synced", "revision": revision},
            "health": {"status": "Healthy"},
            "history": [
                {"id": i, "revision": revision, "deployedAt": "2024-03-05T07:33:04Z"} for i in range(history)
            ],
        },
    }


def sse(kind: str, body: dict[str, Any]) -> str:
    # Argo CD's framing: "data: {...} " (note the trailing space), then a blank line.
    return f"data: {json.dumps({'result': {'type': kind, 'application': body}})} \n\n"


def read_all(argo: ArgoCDClient, expected: list[str], **kwargs: Any) -> tuple[list[InitialReadChunk], dict]:
    chunks = list(argo.initial_applications(expected, **kwargs))
    apps: dict[str, Any] = {}
    for part in chunks:
        apps.update(part.apps)
    return chunks, apps


def test_the_burst_delivers_every_expected_app_with_history_in_chunks(server: FakeServer) -> None:
    names = [f"app-{i:02d}" for i in range(7)]
    body = ":\n" + "".join(sse("ADDED", app(n)) for n in [*names, "zz-not-expected"])
    server.add("GET", STREAM, body=body, headers={"Content-Type": "text/event-stream"}, stream=True)

    chunks, apps = read_all(client(server), names, chunk=3)

    assert [len(c.apps) for c in chunks] == [3, 3, 1]
    assert chunks[-1].final and chunks[-1].missing == () and chunks[-1].failure == ""
    assert sorted(apps) == names
    assert all(len(a.history) == 2 for a in apps.values())  # the list's `fields` would drop it
    seen = server.requests[0]
    assert seen.headers["Accept"] == "text/event-stream"
    assert "resourceVersion" not in seen.query  # without it the stream starts with the burst
    assert seen.query["fields"] == [",".join(FULL_WATCH_FIELDS)]
    assert "result.application.status.history" in FULL_WATCH_FIELDS


def test_ndjson_framing_without_the_sse_header(server: FakeServer) -> None:
    body = "".join(json.dumps({"result": {"type": "ADDED", "application": app(n)}}) + "\n" for n in "ab")
    server.add("GET", STREAM, body=body, stream=True)

    _, apps = read_all(client(server), ["a", "b"])

    assert sorted(apps) == ["a", "b"]


def test_an_app_the_sorted_burst_went_past_is_missing_and_the_read_stops_at_the_last(
    server: FakeServer,
) -> None:
    # "b" was deleted between the list and the stream; live events after "c" are never awaited.
    body = sse("ADDED", app("a")) + sse("ADDED", app("c")) + ":\n" * 3
    server.add("GET", STREAM, body=body, headers={"Content-Type": "text/event-stream"}, stream=True)

    chunks, apps = read_all(client(server), ["a", "b", "c"])

    assert sorted(apps) == ["a", "c"]
    assert chunks[-1].missing == ("b",) and chunks[-1].failure == ""


def test_a_mid_stream_error_leaves_the_rest_to_get(server: FakeServer) -> None:
    error = {"error": {"grpc_code": 14, "http_code": 503, "http_status": "Unavailable", "message": "gone"}}
    body = sse("ADDED", app("a")) + f"data: {json.dumps(error)} \n\n" + sse("ADDED", app("b"))
    server.add("GET", STREAM, body=body, headers={"Content-Type": "text/event-stream"}, stream=True)

    chunks, apps = read_all(client(server), ["a", "b", "c"])

    assert list(apps) == ["a"]
    assert chunks[-1].missing == ("b", "c") and "gone" in chunks[-1].failure


def test_a_cut_stream_leaves_the_rest_to_get(server: FakeServer) -> None:
    # The connection ends mid-event: that event is incomplete, dropped, and read by GET.
    body = sse("ADDED", app("a")) + sse("ADDED", app("b"))[:40]
    server.add("GET", STREAM, body=body, headers={"Content-Type": "text/event-stream"}, stream=True)

    chunks, apps = read_all(client(server), ["a", "b"])

    assert list(apps) == ["a"]
    assert chunks[-1].missing == ("b",) and "ended early" in chunks[-1].failure


def test_a_stream_refused_with_an_http_error_leaves_all_to_get(server: FakeServer) -> None:
    server.add("GET", STREAM, 403, {"error": "permission denied", "code": 7, "message": "permission denied"})

    chunks, apps = read_all(client(server), ["a", "b"])

    assert apps == {} and chunks[-1].missing == ("a", "b") and "permission denied" in chunks[-1].failure


def test_a_modified_before_the_end_replaces_the_received_copy(server: FakeServer) -> None:
    body = (
        sse("ADDED", app("a", history=1))
        + sse("MODIFIED", app("a", revision="b" * 40, history=2))
        + sse("ADDED", app("b"))
    )
    server.add("GET", STREAM, body=body, headers={"Content-Type": "text/event-stream"}, stream=True)

    chunks, apps = read_all(client(server), ["a", "b"])

    # The MODIFIED ends the burst (live changes follow it): "b" is left to a GET.
    assert apps["a"].sync_revision == "b" * 40 and len(apps["a"].history) == 2
    assert chunks[-1].missing == ("b",)


def test_the_burst_tracker_follows_the_documented_order() -> None:
    burst = InitialBurst(["a", "b", "d"])
    assert burst.offer("ADDED", "a") and not burst.done
    assert not burst.offer("ADDED", "aa")  # not expected (created after the list): not kept
    assert burst.offer("ADDED", "d") and burst.done  # past the last expected name
    assert burst.missing() == ("b",)

    live = InitialBurst(["a", "b"])
    assert live.offer("ADDED", "a")
    assert not live.offer("DELETED", "b") and live.done and live.missing() == ()

    assert InitialBurst([]).done


def test_a_burst_quiet_for_a_keepalive_period_is_over(server: FakeServer) -> None:
    # The app sorted last was deleted meanwhile: the stream goes quiet, sending keep-alives only.
    body = sse("ADDED", app("a")) + ":\n" + ":\n" + sse("MODIFIED", app("a", revision="c" * 40))
    server.add("GET", STREAM, body=body, headers={"Content-Type": "text/event-stream"}, stream=True)

    chunks, apps = read_all(client(server), ["a", "b"])

    assert apps["a"].sync_revision == "a" * 40  # stopped at the second keep-alive
    assert chunks[-1].missing == ("b",) and chunks[-1].failure == ""
