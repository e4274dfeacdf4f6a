"""ArgoCDClient against a real local HTTP server serving recorded Argo CD answers."""

from __future__ import annotations

import copy
import json
import socket
from datetime import UTC, datetime

import pytest

from integrations.argocd import (
    DEFAULT_LIST_FIELDS,
    ArgoCDAuthError,
    ArgoCDClient,
    ArgoCDError,
    ArgoCDNotFound,
    ArgoCDPermissionDenied,
    ArgoCDRequestError,
    ArgoCDResponseError,
    ArgoCDUnavailable,
    iter_stream_payloads,
    parse_application,
    session_login,
)
from tests.integrations.integration_fakes import FIXTURES, FakeServer, load_fixture

TOKEN = "eyJhbGciOiJIUzI1NiJ9.secret-argocd-token"
SHA1 = "8f6b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e6f7a8b"


def client(server: FakeServer, **kwargs: object) -> ArgoCDClient:
    return ArgoCDClient(server.url, TOKEN, allow_http=True, **kwargs)  # type: ignore[arg-type]


# -- parsing ------------------------------------------------------------------------------------


def test_list_applications_sends_fields_and_parses_filtered_items(server: FakeServer) -> None:
    server.add("GET", "/api/v1/applications", body=load_fixture("argocd/application-list.json"))

    result = client(server).list_applications(projects=["payments", "search"], selector="env=prod")

    seen = server.requests[0]
    assert seen.headers["Authorization"] == f"Bearer {TOKEN}"
    assert seen.query["projects"] == ["payments", "search"]
    assert seen.query["selector"] == ["env=prod"]
    assert seen.query["fields"] == [",".join(DEFAULT_LIST_FIELDS)]
    assert result.resource_version == "48213"
    prod, stage = result.items
    assert prod.name == "checkout-prod-eu-west-1"
    assert prod.project == "payments"
    assert prod.labels["env"] == "prod"
    assert prod.sync_status == "Synced"
    assert prod.sync_revision == SHA1
    assert prod.sync_result_revision == SHA1  # from operationState.operation.sync (fields quirk)
    assert prod.images == ("registry.example.com/acme/checkout:1.4.2",)
    assert prod.automated is True
    assert prod.history == ()
    assert prod.resource_version is None
    assert stage.operation_phase == "Running"
    assert stage.operation_finished_at is None
    assert stage.health_status == "Progressing"


def test_get_application_parses_history_conditions_and_operation(server: FakeServer) -> None:
    server.add(
        "GET",
        "/api/v1/applications/checkout-prod-eu-west-1",
        body=load_fixture("argocd/application-full.json"),
    )

    app = client(server).get_application("checkout-prod-eu-west-1", project="payments")

    assert server.requests[0].query["project"] == ["payments"]
    assert app.resource_version == "1234"
    assert app.source is not None and app.source.path == "environments/prod/checkout"
    assert app.destination_server == "https://prod-eu-west-1.k8s.example"
    assert app.destination_namespace == "payments-checkout"
    assert [h.id for h in app.history] == [1, 2]
    assert app.history[0].initiated_by_username == "admin"
    assert app.history[1].initiated_by_automated is True
    assert app.history[1].deployed_at == datetime(2024, 3, 5, 7, 33, 4, tzinfo=UTC)
    assert app.history[1].source_path == "environments/prod/checkout"
    assert app.conditions[0].type == "SyncError"
    assert app.operation_phase == "Succeeded"
    assert app.operation_initiated_automated is True
    assert app.reconciled_at == datetime(2024, 3, 5, 7, 35, tzinfo=UTC)


def test_multi_source_application_uses_revision_lists() -> None:
    app = parse_application(load_fixture("argocd/application-multisource.json"))

    assert app.is_multi_source
    assert [s.chart for s in app.sources] == ["search", None]
    assert app.sources[1].ref == "values"
    assert app.sync_revision is None
    assert app.sync_revisions == ("2.1.0", SHA1)
    assert app.history[0].revisions == ("2.1.0", SHA1)
    assert app.history[0].repo_url == "https://charts.example.com"
    assert app.automated is False


def test_real_application_example_parses() -> None:
    app = parse_application(load_fixture("argocd/example-application-helm-child.json"))

    assert app.name == "argo-workflows"
    assert app.destination_name == "in-cluster"
    assert app.sources[0].chart == "argo-workflows"
    assert app.sources[0].target_revision == "0.45.28"
    assert app.automated is True
    assert app.sync_status is None  # no status yet: absent, not invented


@pytest.mark.parametrize(
    "name", ["example-applicationset-cluster-generator.json", "example-applicationset-healthy-status.json"]
)
def test_applications_generated_from_real_applicationset_templates_parse(name: str) -> None:
    appset = load_fixture(f"argocd/{name}")
    rendered = (
        json.dumps(appset["spec"]["template"])
        .replace("{{.name}}", "in-cluster")
        .replace("{{name}}", "in-cluster")
        .replace("{{.server}}", "https://kubernetes.default.svc")
        .replace("{{server}}", "https://kubernetes.default.svc")
    )

    app = parse_application(json.loads(rendered))

    assert app.name.startswith("in-cluster")
    assert app.destination_server == "https://kubernetes.default.svc"
    assert app.sources[0].repo_url == "https://github.com/argoproj/argocd-example-apps/"


def test_other_read_endpoints(server: FakeServer) -> None:
    base = "/api/v1/applications/checkout-prod-eu-west-1"
    server.add("GET", f"{base}/managed-resources", body=load_fixture("argocd/managed-resources.json"))
    server.add("GET", f"{base}/resource-tree", body=load_fixture("argocd/resource-tree.json"))
    server.add("GET", f"{base}/syncwindows", body=load_fixture("argocd/syncwindows.json"))
    server.add("GET", f"{base}/revisions/{SHA1}/metadata", body=load_fixture("argocd/revision-metadata.json"))
    server.add("GET", "/api/v1/projects", body=load_fixture("argocd/projects.json"))
    server.add("GET", "/api/v1/clusters", body=load_fixture("argocd/clusters.json"))
    server.add("GET", "/api/version", body=load_fixture("argocd/version.json"))
    argo = client(server)

    diffs = argo.managed_resources("checkout-prod-eu-west-1")
    tree = argo.resource_tree("checkout-prod-eu-west-1")
    windows = argo.application_sync_windows("checkout-prod-eu-west-1")
    meta = argo.revision_metadata("checkout-prod-eu-west-1", SHA1)
    projects = argo.list_projects()
    clusters = argo.list_clusters()

    assert diffs[0].target_state is not None and diffs[0].target_state["kind"] == "Deployment"
    assert diffs[0].modified is True
    assert diffs[1].live_state is None  # "null" string
    assert tree.nodes[2].images == ("registry.example.com/acme/checkout:1.4.2",)
    assert tree.nodes[1].parent_uids == ("u1",)
    assert windows.can_sync and windows.assigned[0].kind == "deny" and windows.active == ()
    assert meta.author.startswith("Dev One") and meta.tags == ("v1.4.2",)
    assert projects[0].sync_windows[0].time_zone == "Europe/Berlin"
    assert projects[0].sync_windows[0].clusters == ("prod-*",)
    assert projects[1].sync_windows == ()
    assert clusters[0].labels == {"env": "prod", "region": "eu-west-1", "tier": "1"}
    assert clusters[0].connection_status == "Successful"
    assert clusters[1].connection_status == "Unknown"
    assert argo.version().version == "v3.1.0+abc1234"


def test_sync_posts_json_and_returns_app(server: FakeServer) -> None:
    answer = load_fixture("argocd/application-full.json")
    answer["operation"] = {"sync": {"revision": SHA1}, "initiatedBy": {"username": "portal"}}
    server.add("POST", "/api/v1/applications/checkout-prod-eu-west-1/sync", body=answer)

    app = client(server).sync("checkout-prod-eu-west-1", revision=SHA1, dry_run=True)

    seen = server.requests[0]
    assert seen.headers["Content-Type"] == "application/json"
    assert seen.json() == {
        "name": "checkout-prod-eu-west-1",
        "dryRun": True,
        "prune": False,
        "revision": SHA1,
    }
    assert app.operation_pending is True


def test_session_login_returns_token(server: FakeServer) -> None:
    server.add("POST", "/api/v1/session", body={"token": "jwt-from-login"})

    token = session_login(server.url, "admin", "sandbox", allow_http=True)

    assert token == "jwt-from-login"
    assert server.requests[0].json() == {"username": "admin", "password": "sandbox"}
    assert "Authorization" not in server.requests[0].headers


def test_session_login_bad_password_is_auth_error(server: FakeServer) -> None:
    server.add("POST", "/api/v1/session", 401, {"error": "Invalid username or password", "code": 16})

    with pytest.raises(ArgoCDAuthError):
        ArgoCDClient.session_login(server.url, "admin", "wrong", allow_http=True)


# -- error mapping --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "code", "message", "exc"),
    [
        (401, 16, "no session information", ArgoCDAuthError),
        (403, 7, "permission denied", ArgoCDPermissionDenied),
        (404, 5, 'applications.argoproj.io "x" not found', ArgoCDNotFound),
        (400, 9, "another operation is already in progress", ArgoCDRequestError),
        (500, 2, "error getting repository by URL", ArgoCDUnavailable),
        (502, None, "", ArgoCDUnavailable),
        (503, None, "", ArgoCDUnavailable),
        (504, None, "", ArgoCDUnavailable),
    ],
)
def test_http_errors_map_to_exceptions(
    server: FakeServer, status: int, code: int | None, message: str, exc: type[ArgoCDError]
) -> None:
    body = (
        {"error": message, "code": code, "message": message}
        if code is not None
        else "<html>bad gateway</html>"
    )
    server.add("GET", "/api/v1/applications/x", status, body)

    with pytest.raises(exc) as info:
        client(server).get_application("x")

    assert info.value.status == status
    assert info.value.grpc_code == code
    assert message in str(info.value)
    assert TOKEN not in str(info.value)


def test_plain_text_415_is_request_error(server: FakeServer) -> None:
    server.add("POST", "/api/v1/applications/x/sync", 415, "415 Invalid content type")

    with pytest.raises(ArgoCDRequestError, match="Invalid content type"):
        client(server).sync("x")


def test_connection_refused_is_unavailable() -> None:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()

    with pytest.raises(ArgoCDUnavailable) as info:
        ArgoCDClient(f"http://127.0.0.1:{port}", TOKEN, allow_http=True).list_applications()

    assert TOKEN not in str(info.value) and TOKEN not in repr(info.value)


def test_read_timeout_is_unavailable(server: FakeServer) -> None:
    server.add("GET", "/api/v1/applications", body={"items": []}, delay=0.5)

    with pytest.raises(ArgoCDUnavailable):
        client(server, timeout=(1.0, 0.1)).list_applications()


def test_redirect_to_other_host_is_not_followed(server: FakeServer) -> None:
    server.add(
        "GET", "/api/v1/applications", 302, None, headers={"Location": "http://169.254.169.254/latest"}
    )

    with pytest.raises(ArgoCDResponseError, match="redirect"):
        client(server).list_applications()

    assert len(server.requests) == 1


def test_same_origin_redirect_is_followed_with_credentials(server: FakeServer) -> None:
    server.add("GET", "/api/v1/applications", 301, None, headers={"Location": "{base}/api/v1/applications/"})
    server.add("GET", "/api/v1/applications/", body={"metadata": {}, "items": []})

    assert client(server).list_applications().items == ()
    assert server.requests[1].headers["Authorization"] == f"Bearer {TOKEN}"


# -- malformed answers ----------------------------------------------------------------------------


def _app_with(path: list[str], value: object) -> dict[str, object]:
    data = copy.deepcopy(load_fixture("argocd/application-full.json"))
    node = data
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return data


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"metadata": {"name": "x"}, "spec": {', "not valid JSON"),
        (_app_with(["status", "sync", "status"], "Confused"), "$.status.sync.status"),
        (_app_with(["status", "health", "status"], 3), "$.status.health.status"),
        (_app_with(["metadata", "labels"], ["env=prod"]), "$.metadata.labels"),
        (_app_with(["status", "history"], [{"revision": "abc"}]), "$.status.history[0].id"),
        (_app_with(["status", "reconciledAt"], "yesterday"), "$.status.reconciledAt"),
        (_app_with(["metadata", "name"], None), "$.metadata.name"),
        ([1, 2, 3], "expected an object"),
    ],
)
def test_malformed_application_is_response_error(server: FakeServer, body: object, field: str) -> None:
    server.add(
        "GET",
        "/api/v1/applications/x",
        200,
        json.dumps(body).encode() if not isinstance(body, bytes) else body,
    )

    with pytest.raises(ArgoCDResponseError) as info:
        client(server).get_application("x")

    assert field in str(info.value)


def test_managed_resource_state_that_is_not_json_is_response_error(server: FakeServer) -> None:
    server.add(
        "GET",
        "/api/v1/applications/x/managed-resources",
        body={"items": [{"kind": "X", "targetState": "{nope"}]},
    )

    with pytest.raises(ArgoCDResponseError, match="targetState"):
        client(server).managed_resources("x")


def test_oversized_response_is_refused(server: FakeServer) -> None:
    argo = client(server)
    argo._http.max_bytes = 1000
    server.add("GET", "/api/v1/applications", body={"metadata": {}, "items": [], "pad": "x" * 5000})

    with pytest.raises(ArgoCDResponseError, match="cap"):
        argo.list_applications()


# -- watch ----------------------------------------------------------------------------------------


def test_watch_parses_sse_with_trailing_space_and_keepalive(server: FakeServer) -> None:
    body = (FIXTURES / "argocd/watch.sse").read_bytes()
    server.add(
        "GET",
        "/api/v1/stream/applications",
        body=body,
        headers={"Content-Type": "text/event-stream"},
        stream=True,
    )

    events = list(client(server).watch_applications(resource_version="48213", projects=["payments"]))

    assert [e.type for e in events] == ["ADDED", "MODIFIED", "DELETED"]
    assert events[1].application.resource_version == "48214"
    assert events[1].application.sync_status == "OutOfSync"
    seen = server.requests[0]
    assert seen.headers["Accept"] == "text/event-stream"
    assert seen.query["resourceVersion"] == ["48213"]
    assert seen.query["projects"] == ["payments"]


def test_watch_parses_ndjson(server: FakeServer) -> None:
    body = (FIXTURES / "argocd/watch.ndjson").read_bytes()
    server.add("GET", "/api/v1/stream/applications", body=body, stream=True)

    events = list(client(server).watch_applications())

    assert [e.application.name for e in events] == ["checkout-prod-eu-west-1", "checkout-stage-eu-west-1"]


def test_watch_error_object_raises_mapped_exception(server: FakeServer) -> None:
    first = (FIXTURES / "argocd/watch.sse").read_text().split("\n\n")[0] + "\n\n"
    error = {
        "error": {
            "grpc_code": 16,
            "http_code": 401,
            "http_status": "Unauthorized",
            "message": "invalid session",
        }
    }
    server.add(
        "GET", "/api/v1/stream/applications", body=first + f"data: {json.dumps(error)} \n\n", stream=True
    )

    stream = client(server).watch_applications()
    assert next(stream).type == "ADDED"
    with pytest.raises(ArgoCDAuthError, match="invalid session"):
        next(stream)


def test_watch_unknown_event_type_is_response_error(server: FakeServer) -> None:
    bad = {"result": {"type": "BOOKMARK", "application": {"metadata": {"name": "a"}}}}
    server.add("GET", "/api/v1/stream/applications", body=f"data: {json.dumps(bad)} \n\n", stream=True)

    with pytest.raises(ArgoCDResponseError, match="type"):
        list(client(server).watch_applications())


def test_watch_http_error_before_stream(server: FakeServer) -> None:
    server.add("GET", "/api/v1/stream/applications", 403, {"error": "permission denied", "code": 7})

    with pytest.raises(ArgoCDPermissionDenied):
        list(client(server).watch_applications())


def test_stream_payloads_join_multiline_data_and_drop_incomplete_tail() -> None:
    lines = [b'data: {"a":', b"data: 1} ", b"", b"event: x", b": ping", b'data: {"b":2}']

    assert list(iter_stream_payloads(lines)) == [b'{"a":\n1}']


# -- secrets --------------------------------------------------------------------------------------


def test_token_never_appears_in_repr() -> None:
    argo = ArgoCDClient("https://argocd.example.com/", TOKEN)

    assert TOKEN not in repr(argo)
    assert TOKEN not in repr(argo._http)
    assert argo.base_url == "https://argocd.example.com"


@pytest.mark.parametrize(
    "url",
    [
        "http://argocd.example.com",  # http without allow_http
        "https://169.254.169.254",
        "https://[fd00:ec2::254]",
        "https://[::ffff:169.254.169.254]",
        "https://metadata.google.internal",
        "https://user:pass@argocd.example.com",
        "ftp://argocd.example.com",
    ],
)
def test_unsafe_base_urls_are_refused(url: str) -> None:
    with pytest.raises(ArgoCDError, match="refusing"):
        ArgoCDClient(url, TOKEN)
