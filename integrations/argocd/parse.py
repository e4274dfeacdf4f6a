"""Parse Argo CD JSON into the typed dataclasses; every shape mismatch raises ParseError."""

from __future__ import annotations

import json
from collections import Counter
from typing import Any

from integrations.argocd.models import (
    HEALTH_STATUSES,
    OPERATION_PHASES,
    SYNC_STATUSES,
    WINDOW_KINDS,
    ApplicationList,
    AppSource,
    ArgoApplication,
    ArgoCluster,
    ArgoProject,
    Condition,
    HistoryEntry,
    RawApplicationList,
    ResourceDiff,
    ResourceNode,
    SyncWindow,
)
from integrations.http import (
    JsonReader,
)


def _parse_source(r: JsonReader) -> AppSource:
    return AppSource(
        repo_url=r.text("repoURL"),
        path=r.opt_text("path"),
        target_revision=r.opt_text("targetRevision"),
        chart=r.opt_text("chart"),
        ref=r.opt_text("ref"),
        value_files=r.obj("helm").strs("valueFiles"),
    )


def _parse_history(r: JsonReader) -> HistoryEntry:
    initiator = r.obj("initiatedBy")
    source = r.opt_obj("source")
    sources = r.objs("sources")
    first = source or (sources[0] if sources else None)
    return HistoryEntry(
        id=r.req_integer("id"),
        revision=r.opt_text("revision"),
        revisions=r.strs("revisions"),
        deployed_at=r.time("deployedAt"),
        deploy_started_at=r.time("deployStartedAt"),
        initiated_by_username=initiator.opt_text("username"),
        initiated_by_automated=initiator.flag("automated"),
        source_path=first.opt_text("path") if first else None,
        repo_url=first.opt_text("repoURL") if first else None,
    )


def _parse_condition(r: JsonReader) -> Condition:
    return Condition(
        type=r.text("type"), message=r.text("message"), last_transition_time=r.time("lastTransitionTime")
    )


def _parse_sources(spec: JsonReader) -> tuple[tuple[AppSource, ...], bool]:
    multi = spec.objs("sources")
    if multi:
        return tuple(_parse_source(s) for s in multi), True
    single = spec.opt_obj("source")
    return ((_parse_source(single),) if single else ()), False


def parse_application(data: Any, path: str = "$") -> ArgoApplication:
    """Parse an Application object; raise ParseError naming the offending field."""
    r = JsonReader(data, path)
    meta, spec, status = r.req_obj("metadata"), r.obj("spec"), r.obj("status")
    sources, is_multi = _parse_sources(spec)
    dest, sync, health = spec.obj("destination"), status.obj("sync"), status.obj("health")
    op_state = status.obj("operationState")
    operation = op_state.obj("operation")
    initiator = operation.obj("initiatedBy")
    # With `fields=...operationState.operation.sync` the list returns the sync *result* there (§5),
    # so accept revisions from either place.
    result = op_state.opt_obj("syncResult") or operation.obj("sync")
    return ArgoApplication(
        name=meta.req_text("name"),
        namespace=meta.opt_text("namespace"),
        project=spec.text("project"),
        labels=meta.str_map("labels"),
        annotations=meta.str_map("annotations"),
        sources=sources,
        is_multi_source=is_multi,
        destination_server=dest.opt_text("server"),
        destination_name=dest.opt_text("name"),
        destination_namespace=dest.opt_text("namespace"),
        automated=spec.obj("syncPolicy").has("automated"),
        sync_status=sync.enum("status", SYNC_STATUSES),
        sync_revision=sync.opt_text("revision"),
        sync_revisions=sync.strs("revisions"),
        health_status=health.enum("status", HEALTH_STATUSES),
        health_message=health.opt_text("message"),
        operation_phase=op_state.enum("phase", OPERATION_PHASES),
        operation_message=op_state.opt_text("message"),
        operation_started_at=op_state.time("startedAt"),
        operation_finished_at=op_state.time("finishedAt"),
        operation_initiated_by=initiator.opt_text("username"),
        operation_initiated_automated=initiator.flag("automated"),
        operation_pending=r.has("operation"),
        sync_result_revision=result.opt_text("revision"),
        sync_result_revisions=result.strs("revisions"),
        images=status.obj("summary").strs("images"),
        reconciled_at=status.time("reconciledAt"),
        history=tuple(_parse_history(h) for h in status.objs("history")),
        conditions=tuple(_parse_condition(c) for c in status.objs("conditions")),
        resource_version=meta.opt_text("resourceVersion"),
        sync_result_resource_counts=_resource_counts(result),
        operation_revision=_operation_revision(r.obj("operation").obj("sync"), op_state),
    )


def _operation_revision(pending: JsonReader, op_state: JsonReader) -> str | None:
    requested = op_state.obj("operation").obj("sync")
    for sync in (pending, requested):
        revision = sync.opt_text("revision") or next(iter(sync.strs("revisions")), None)
        if revision:
            return revision
    return None


def _resource_counts(result: JsonReader) -> tuple[tuple[str, int], ...]:
    counts = Counter(item.text("status") or "Unknown" for item in result.objs("resources"))
    return tuple(sorted(counts.items()))


def parse_application_list(data: Any) -> ApplicationList:
    """Parse an ApplicationList."""
    r = JsonReader(data)
    items = tuple(parse_application(item.raw_dict(), item.path) for item in r.objs("items"))
    return ApplicationList(items=items, resource_version=r.obj("metadata").opt_text("resourceVersion"))


def parse_raw_application_list(data: Any) -> RawApplicationList:
    """Check an ApplicationList's shape and keep its items raw (see parse_application_list)."""
    r = JsonReader(data)
    items = r.array("items")
    if not all(isinstance(item, dict) for item in items):  # a reader per item only to say which is wrong
        r.objs("items")
    return RawApplicationList(
        items=tuple(items), resource_version=r.obj("metadata").opt_text("resourceVersion")
    )


def parse_sync_window(r: JsonReader) -> SyncWindow:
    """Parse one sync window of an AppProject."""
    return SyncWindow(
        kind=r.enum("kind", WINDOW_KINDS) or "",
        schedule=r.text("schedule"),
        duration=r.text("duration"),
        applications=r.strs("applications"),
        namespaces=r.strs("namespaces"),
        clusters=r.strs("clusters"),
        manual_sync=r.flag("manualSync"),
        time_zone=r.opt_text("timeZone"),
        description=r.opt_text("description"),
    )


def parse_project(data: Any, path: str = "$") -> ArgoProject:
    """Parse an AppProject."""
    r = JsonReader(data, path)
    windows = r.obj("spec").objs("syncWindows")
    return ArgoProject(
        name=r.req_obj("metadata").req_text("name"), sync_windows=tuple(map(parse_sync_window, windows))
    )


def parse_cluster(data: Any, path: str = "$") -> ArgoCluster:
    """Parse a Cluster; prefer info.connectionState over the deprecated top-level copy."""
    r = JsonReader(data, path)
    state = r.obj("info").opt_obj("connectionState") or r.obj("connectionState")
    return ArgoCluster(
        server=r.req_text("server"),
        name=r.text("name"),
        labels=r.str_map("labels"),
        connection_status=state.opt_text("status"),
    )


def _decode_state(r: JsonReader, key: str) -> dict[str, Any] | None:
    # managed-resources carries manifests as JSON *strings*; "null" or "" means absent.
    raw = r.opt_text(key)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
    except ValueError:
        r.fail(key, "not valid JSON")
    if value is None:
        return None
    if not isinstance(value, dict):
        r.fail(key, "expected a JSON object")
    return value


def parse_resource_diff(r: JsonReader) -> ResourceDiff:
    """Parse one managed-resources item."""
    return ResourceDiff(
        group=r.text("group"),
        kind=r.text("kind"),
        namespace=r.text("namespace"),
        name=r.text("name"),
        modified=r.flag("modified"),
        target_state=_decode_state(r, "targetState"),
        live_state=_decode_state(r, "liveState"),
        diff=r.text("diff"),
    )


def parse_resource_node(r: JsonReader) -> ResourceNode:
    """Parse one node of an application's resource tree."""
    return ResourceNode(
        group=r.text("group"),
        version=r.text("version"),
        kind=r.text("kind"),
        namespace=r.text("namespace"),
        name=r.text("name"),
        uid=r.text("uid"),
        health_status=r.obj("health").opt_text("status"),
        images=r.strs("images"),
        parent_uids=tuple(p.text("uid") for p in r.objs("parentRefs")),
    )
