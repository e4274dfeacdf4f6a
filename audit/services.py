"""The audit ledger and change records: the write side of the audit app.

Ledger
------
``audit_event_record(*, action, actor=None, target=None, target_type="", target_id="", target_label="",
app="", project=None, environment=None, cluster="", shas=(), pr_url="", before=None, after=None,
message="", out_of_band=False, correlation_id=None, system_name=None) -> AuditEvent``
    Append one event to the hash-chained ledger inside the caller's transaction. EVERY state change
    calls it in the same transaction as the change. Appends are serialised by a PostgreSQL
    transaction-level advisory lock; the row is never updated (a trigger refuses it).

    ``action`` is an :class:`audit.actions.AuditAction` (or its string); anything else raises
    ``ValueError`` (docs/audit.md lists each action and its payload). ``actor`` is a user (or
    ``None`` with ``system_name`` for tasks). ``project`` / ``environment`` (strings) scope the
    event for auditors; when omitted they are asked of the target: ``target=obj``, or the row
    named by ``(target_type, target_id)``, through its ``audit_scope`` property (audit/scope.py).

``audit_events_record(events) -> list[AuditEvent]``
    Append many events (each a dict of the keyword arguments above) in the given order with one
    advisory lock, one head read and one multi-row INSERT: for writers with many facts at once (the
    Argo CD poller's deployments). Same chain, same transaction rules as one by one; instead of a
    post_save per row, ``audit.signals.events_recorded`` is sent once with the list (insight
    notifies from it with one subscription query per batch).

Change records (call from promotions, rollbacks and the Argo CD poller)
-----------------------------------------------------------------------
``change_record_sync(*, kind, source_type, source_id, app, environment, **fields) -> ChangeRecord``
    Create or update THE one change record of a source object (``(source_type, source_id)`` is
    unique, e.g. ``("promotion", str(promotion.pk))``, ``("rollback", str(rb.pk))``,
    ``("deployment", str(deployment.pk))`` for an out-of-band sync). Call it at every step, in the
    same transaction as the step and after its ``audit_event_record``; pass only what you know, the
    fields you omit keep their stored values. ``kind`` is ``"promotion" | "rollback" | "out_of_band"``.

    Accepted ``fields`` (anything else raises ``TypeError``):

    ===========================  ===============================================================
    requester_name: str          who asked (frozen username)
    approvers: list[str]         usernames who approved (replaces the stored list)
    approved_head_sha: str       the commit they approved (the PR branch head they reviewed)
    pr_number: int | None        PR number; pr_url: str; merged_by: str (username on the forge)
    revision_before/after: str   Git SHAs deployed before / after
    versions_before/after: dict  e.g. ``{"image": "1.4.2"}`` or ``{"prod-eu-west-1": "1.4.2"}``
    gates: list[dict]            ``[{"name": "ci", "passed": True, "detail": "3/3 checks"}]``, each
                                 optionally with ``evaluation`` ("at request", "at PR opening")
                                 and ``evaluated_at`` (ISO-8601): every evaluation, oldest first
    sync_result: Any (JSON)      Argo CD operation result, e.g. ``{"phase": "Succeeded", ...}``
    requested_at, approved_at, pr_opened_at, merged_at, deployed_at, healthy_at
                                 datetimes (aware) or ISO-8601 strings
    outcome: str                 ``pending | succeeded | rolled_back | failed | abandoned``
    emergency: bool              justification: str (required in practice for emergencies)
    approval_reason: str         why the approver approved (after-the-fact approvals)
    project: str                 Argo CD project / team (used for project-scoped auditors)
    clusters: list[str]          clusters the change touched; title: str (short summary)
    correlation_id: str          the request's correlation id; incident: str (reference or URL)
    ===========================  ===============================================================

    Computed on every call: ``separation_of_duties_ok`` (requester not among approvers, compared
    case-insensitively; ``None`` while nobody approved), ``lead_time`` (from ``requested_at`` (or
    the earliest of pr_opened/merged) to ``healthy_at`` (or ``deployed_at``)) and ``occurred_at``
    (the earliest known step; period filters use it).

    The record is a projection, not evidence: it may be updated, the ledger is the truth. The
    evidence page lists the ledger events whose ``(target_type, target_id)`` equals the record's
    ``(source_type, source_id)``, so write your events with the same pair. A change that touches
    several apps at once (a release train) writes one record per app with ``source_id``
    ``"<id>:<app>"``: its evidence is the events of ``(source_type, "<id>")``, and project-scoped
    auditors see exactly the apps in their projects.

``change_records_create(records) -> list[ChangeRecord]``
    The same for many new sources at once (each item: ``change_record_sync``'s keyword arguments):
    one multi-row INSERT; a source that already has its record is updated by ``change_record_sync``.

Checkpoints
-----------
``audit_checkpoint_create() -> AuditCheckpoint | None``
    Sign the current chain head (sequence, hash, count, time) with the Ed25519 key of
    ``settings.AUDIT_SIGNING_KEY``; ``None`` when the ledger is empty or the head is already signed.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser
from django.core.serializers.json import DjangoJSONEncoder
from django.db import IntegrityError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from core.bulkinsert import models_copy_insert
from core.requestid import current_request_id

from .actions import AuditAction
from .bundle import checkpoint_payload, sign
from .chain import _normalise, event_hash
from .context import current_actor_context
from .models import GENESIS_HASH, AuditCheckpoint, AuditEvent, ChangeRecord
from .scope import target_scope
from .signals import events_recorded
from .signing import current_key_id, signing_key

# Any fixed 64-bit number: the key of the PostgreSQL advisory lock that serialises appends.
AUDIT_CHAIN_LOCK_KEY = 0x6175646974636861

_REDACTED_KEYS = {"token", "password", "secret", "authorization", "api_key", "private_key"}


def _as_json(value: Any) -> Any:
    """Return the value as it will read back from the JSON column (dates, decimals, UUIDs as text).

    The hash is computed over this form, so it recomputes from the stored row and from exports.
    """
    if value is None:
        return None
    return json.loads(json.dumps(value, cls=DjangoJSONEncoder, ensure_ascii=False))


@functools.lru_cache(maxsize=4096)
def _credential_key(key: str) -> bool:
    # Payload keys are few and repeat in every event (a poller's batch has tens of thousands).
    lowered = key.lower()
    return any(word in lowered for word in _REDACTED_KEYS)


def _redact(value: Any) -> Any:
    """Drop anything that looks like a credential from before/after payloads."""
    if isinstance(value, dict):
        return {k: ("[redacted]" if _credential_key(str(k)) else _redact(v)) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_redact(v) for v in value]
    return value


def _lock_chain() -> None:
    """Serialise appends for the rest of the transaction."""
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [AUDIT_CHAIN_LOCK_KEY])
    # SQLite (the demo) takes the database write lock at BEGIN IMMEDIATE: appends are already serial.


def _event_build(
    *,
    action: AuditAction | str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    target: object | None = None,
    target_type: str = "",
    target_id: str | int = "",
    target_label: str = "",
    app: str = "",
    project: str | None = None,
    environment: str | None = None,
    cluster: str = "",
    shas: list[str] | tuple[str, ...] = (),
    pr_url: str = "",
    before: Any = None,
    after: Any = None,
    message: str = "",
    out_of_band: bool = False,
    correlation_id: str | None = None,
    system_name: str | None = None,
    caller: str = "audit_event_record",
) -> AuditEvent:
    """Return the unsaved event without its place in the chain (sequence, prev_hash, hash)."""
    try:
        action = AuditAction(action)
    except ValueError:
        raise ValueError(
            f"{caller}: unknown action {action!r}; add it to audit.actions.AuditAction and docs/audit.md"
        ) from None
    if project is None or environment is None:
        derived = target_scope(target=target, target_type=target_type, target_id=str(target_id))
        if derived is not None:
            project = derived[0] if project is None else project
            environment = derived[1] if environment is None else environment
    context = current_actor_context()
    user = actor if actor is not None and actor.is_authenticated else None
    if user is not None:
        actor_name = user.get_username()
        actor_type = "token" if context.auth_method == "token" else "user"
    elif system_name or context.system_name:
        actor_name = f"system:{system_name or context.system_name}"
        actor_type = "system"
    else:
        actor_name = "anonymous"
        actor_type = "anonymous"
    return AuditEvent(
        actor_id=user.pk if user is not None else None,
        actor_name=actor_name[:150],
        actor_type=actor_type,
        auth_method=(context.auth_method or "session") if user is not None else "",
        ip_address=context.ip_address[:64],
        user_agent=context.user_agent[:300],
        action=action.value,
        target_type=target_type[:64],
        target_id=str(target_id)[:200],
        target_label=str(target_label)[:300],
        app=app[:200],
        environment=(environment or "")[:64],
        project=(project or "")[:200],
        cluster=cluster[:200],
        shas=[str(sha) for sha in shas],
        pr_url=pr_url[:500],
        correlation_id=(correlation_id or current_request_id() or "")[:64],
        out_of_band=out_of_band,
        before=_redact(_as_json(before)),
        after=_redact(_as_json(after)),
        message=message,
    )


def _chain_head() -> tuple[int, str]:
    """Lock the chain for the rest of the transaction and return (next sequence, previous hash)."""
    _lock_chain()
    last = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    return (last[0] + 1, last[1]) if last else (1, GENESIS_HASH)


def _chain(events: list[AuditEvent], sequence: int, prev_hash: str) -> None:
    """Give each event its place in the chain, one after the other, and its hash."""
    now = timezone.now()
    for event in events:
        event.sequence = sequence
        event.created_at = now
        event.prev_hash = prev_hash
        event.hash = event_hash(event_as_record(event))
        sequence, prev_hash = sequence + 1, event.hash


def audit_event_record(
    *,
    action: AuditAction | str,
    actor: AbstractBaseUser | AnonymousUser | None = None,
    target: object | None = None,
    target_type: str = "",
    target_id: str | int = "",
    target_label: str = "",
    app: str = "",
    project: str | None = None,
    environment: str | None = None,
    cluster: str = "",
    shas: list[str] | tuple[str, ...] = (),
    pr_url: str = "",
    before: Any = None,
    after: Any = None,
    message: str = "",
    out_of_band: bool = False,
    correlation_id: str | None = None,
    system_name: str | None = None,
) -> AuditEvent:
    """Append one event to the ledger inside the current transaction (or a new one).

    Raise ValueError for an action that is not an :class:`AuditAction`. ``project`` and
    ``environment`` not given are asked of the target (``audit_scope``, see audit/scope.py).
    """
    event = _event_build(
        action=action, actor=actor, target=target, target_type=target_type, target_id=target_id,
        target_label=target_label, app=app, project=project, environment=environment, cluster=cluster,
        shas=shas, pr_url=pr_url, before=before, after=after, message=message, out_of_band=out_of_band,
        correlation_id=correlation_id, system_name=system_name,
    )  # fmt: skip
    with transaction.atomic():
        _chain([event], *_chain_head())
        event.save(force_insert=True)
    return event


def audit_events_record(events: Iterable[Mapping[str, Any]]) -> list[AuditEvent]:
    """Append many events, in the given order, with one lock, one head read and one multi-row INSERT.

    Each item holds the keyword arguments of :func:`audit_event_record`. The events are chained
    exactly as if appended one by one (same transaction, same created_at). Post-save signals are
    not sent per row: :data:`audit.signals.events_recorded` is sent once with the whole list.
    Pass ``project`` and ``environment`` for speed: otherwise each is asked of its target.
    """
    built = [_event_build(**dict(item), caller="audit_events_record") for item in events]
    if not built:
        return []
    with transaction.atomic():
        _chain(built, *_chain_head())
        models_copy_insert(built)  # COPY: a poller's first cycle appends tens of thousands
        events_recorded.send(sender=AuditEvent, events=built)
    return built


# The fields of an exported event, in the order of the JSON Lines keys (the hashed ones and ``project``).
EVENT_RECORD_FIELDS: tuple[str, ...] = (
    "sequence", "created_at", "actor_id", "actor_name", "actor_type", "auth_method", "ip_address",
    "user_agent", "action", "target_type", "target_id", "target_label", "app", "environment",
    "project",  # not hashed: see audit/chain.py HASHED_FIELDS
    "cluster", "shas", "pr_url", "correlation_id", "out_of_band", "before", "after", "message",
    "prev_hash", "hash",
)  # fmt: skip


def event_as_record(event: AuditEvent) -> dict[str, Any]:
    """Return the event as the dict that is hashed and exported."""
    return {name: getattr(event, name) for name in EVENT_RECORD_FIELDS}


# --- change records ---------------------------------------------------------------------------------

CHANGE_KINDS = ("promotion", "rollback", "out_of_band")
CHANGE_OUTCOMES = ("pending", "succeeded", "rolled_back", "failed", "abandoned")
_CHANGE_TIME_FIELDS = (
    "requested_at",
    "approved_at",
    "pr_opened_at",
    "merged_at",
    "deployed_at",
    "healthy_at",
)
_CHANGE_TEXT_FIELDS = {
    "requester_name": 150,
    "pr_url": 500,
    "merged_by": 150,
    "revision_before": 64,
    "revision_after": 64,
    "approved_head_sha": 64,
    "project": 200,
    "title": 300,
    "correlation_id": 64,
    "incident": 500,
}
_CHANGE_FIELDS = frozenset(
    {
        *_CHANGE_TIME_FIELDS,
        *_CHANGE_TEXT_FIELDS,
        "approvers",
        "pr_number",
        "versions_before",
        "versions_after",
        "gates",
        "sync_result",
        "outcome",
        "emergency",
        "justification",
        "approval_reason",
        "clusters",
    }
)


def _as_datetime(name: str, value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if timezone.is_aware(value) else timezone.make_aware(value, UTC)
    if isinstance(value, str):
        parsed = parse_datetime(value)
        if parsed is not None:
            return parsed if timezone.is_aware(parsed) else timezone.make_aware(parsed, UTC)
    raise ValueError(f"change_record_sync: {name} must be a datetime or an ISO-8601 string, not {value!r}")


def _clean_change_field(name: str, value: Any) -> Any:
    if name in _CHANGE_TIME_FIELDS:
        return _as_datetime(name, value)
    if name in _CHANGE_TEXT_FIELDS:
        return ("" if value is None else str(value))[: _CHANGE_TEXT_FIELDS[name]]
    if name in ("approvers", "clusters"):
        return [str(v) for v in (value or [])]
    if name == "pr_number":
        return int(value) if value not in (None, "") else None
    if name == "gates":
        gates = []
        for gate in value or []:
            if not isinstance(gate, dict) or "name" not in gate:
                raise ValueError("change_record_sync: gates are dicts {name, passed, detail}")
            clean = {
                "name": str(gate["name"]),
                "passed": bool(gate.get("passed")),
                "detail": gate.get("detail", ""),
            }
            # Which evaluation the gate belongs to ("at request", "at PR opening") and when.
            for key in ("evaluation", "evaluated_at"):
                if gate.get(key):
                    clean[key] = str(gate[key])[:100]
            gates.append(clean)
        return gates
    if name in ("versions_before", "versions_after"):
        return _redact(value) if value is not None else {}
    if name == "sync_result":
        return _redact(value)
    if name == "outcome":
        if value not in CHANGE_OUTCOMES:
            raise ValueError(f"change_record_sync: outcome must be one of {CHANGE_OUTCOMES}, not {value!r}")
        return value
    if name == "emergency":
        return bool(value)
    if name in ("justification", "approval_reason"):
        return "" if value is None else str(value)
    return value


def _change_record_compute(record: ChangeRecord) -> None:
    """Fill the derived fields: separation of duties, lead time, when it happened."""
    requester = record.requester_name.strip().lower()
    approvers = [a.strip().lower() for a in record.approvers if a and a.strip()]
    record.separation_of_duties_ok = (requester not in approvers) if approvers else None
    start = record.requested_at or min(
        (t for t in (record.pr_opened_at, record.merged_at) if t is not None), default=None
    )
    end = record.healthy_at or record.deployed_at
    record.lead_time = (end - start) if start is not None and end is not None and end >= start else None
    known = [getattr(record, name) for name in _CHANGE_TIME_FIELDS if getattr(record, name) is not None]
    record.occurred_at = min(known) if known else (record.created_at or timezone.now())
    if record.merged_at is not None and not record.merged_by:
        record.merged_by = _merged_by_from_evidence(record)


def _merged_by_from_evidence(record: ChangeRecord) -> str:
    """Return who merged, as the record's own ``<kind>.merged`` ledger event says (one source for both)."""
    after = (
        AuditEvent.objects.filter(
            target_type=record.source_type,
            target_id__in={record.source_id, record.evidence_target_id},
            action=f"{record.source_type}.merged",
        )
        .order_by("-sequence")
        .values_list("after", flat=True)
        .first()
    )
    return str((after or {}).get("merged_by") or "")[:150] if isinstance(after, dict) else ""


@transaction.atomic
def change_record_sync(
    *, kind: str, source_type: str, source_id: str | int, app: str, environment: str, **fields: Any
) -> ChangeRecord:
    """Create or update the one change record of ``(source_type, source_id)``; see the module docs."""
    if kind not in CHANGE_KINDS:
        raise ValueError(f"change_record_sync: kind must be one of {CHANGE_KINDS}, not {kind!r}")
    unknown = set(fields) - _CHANGE_FIELDS
    if unknown:
        raise TypeError(f"change_record_sync: unknown fields {sorted(unknown)}")
    cleaned = {name: _clean_change_field(name, value) for name, value in fields.items()}
    source_id = str(source_id)
    record = (
        ChangeRecord.objects.select_for_update().filter(source_type=source_type, source_id=source_id).first()
    )
    if record is None:
        record = _change_record_new(kind, source_type, source_id, app, environment, cleaned)
        try:
            with transaction.atomic():
                record.save(force_insert=True)
            return record
        except IntegrityError:
            # Another transaction created it meanwhile: update theirs.
            record = ChangeRecord.objects.select_for_update().get(
                source_type=source_type, source_id=source_id
            )
    record.kind = kind
    record.app = app or record.app
    record.environment = environment or record.environment
    for name, value in cleaned.items():
        setattr(record, name, value)
    record.updated_at = timezone.now()
    _change_record_compute(record)
    record.save()
    return record


def _change_record_new(
    kind: str, source_type: str, source_id: str, app: str, environment: str, cleaned: dict[str, Any]
) -> ChangeRecord:
    now = timezone.now()
    record = ChangeRecord(
        kind=kind, source_type=source_type, source_id=source_id, app=app, environment=environment,
        created_at=now, updated_at=now, **cleaned,
    )  # fmt: skip
    _change_record_compute(record)
    return record


@transaction.atomic
def change_records_create(records: Iterable[Mapping[str, Any]]) -> list[ChangeRecord]:
    """Create the change records of many new source objects in one multi-row INSERT.

    Each item holds the keyword arguments of :func:`change_record_sync`, for sources that normally
    have no record yet (the poller's out-of-band deployments, just inserted); one that already has
    its record is updated by change_record_sync, as if it had been called for each.
    """
    items = [dict(item) for item in records]
    keys = {(item["source_type"], str(item["source_id"])) for item in items}
    existing = set()
    for source_type in {t for t, _ in keys}:
        ids = [i for t, i in keys if t == source_type]
        existing |= {
            (source_type, i)
            for i in ChangeRecord.objects.filter(source_type=source_type, source_id__in=ids).values_list(
                "source_id", flat=True
            )
        }
    updated = [change_record_sync(**i) for i in items if (i["source_type"], str(i["source_id"])) in existing]
    built = []
    for item in items:
        if (item["source_type"], str(item["source_id"])) in existing:
            continue
        kind, source_type, source_id = item.pop("kind"), item.pop("source_type"), str(item.pop("source_id"))
        app, environment = item.pop("app"), item.pop("environment")
        if kind not in CHANGE_KINDS:
            raise ValueError(f"change_records_create: kind must be one of {CHANGE_KINDS}, not {kind!r}")
        unknown = set(item) - _CHANGE_FIELDS
        if unknown:
            raise TypeError(f"change_records_create: unknown fields {sorted(unknown)}")
        cleaned = {name: _clean_change_field(name, value) for name, value in item.items()}
        built.append(_change_record_new(kind, source_type, source_id, app, environment, cleaned))
    models_copy_insert(built)
    return updated + built


# --- checkpoints --------------------------------------------------------------------------------------


def checkpoint_as_record(checkpoint: AuditCheckpoint) -> dict[str, Any]:
    """Return the checkpoint as the dict that is signed, exported and verified."""
    return {
        "head_sequence": checkpoint.head_sequence,
        "head_hash": checkpoint.head_hash,
        "event_count": checkpoint.event_count,
        "created_at": _normalise(checkpoint.created_at),
        "public_key_id": checkpoint.public_key_id,
        "signature": checkpoint.signature,
    }


@transaction.atomic
def audit_checkpoint_create(*, force: bool = False) -> AuditCheckpoint | None:
    """Sign the chain head; None when the ledger is empty or its head is already signed (unless force)."""
    _lock_chain()  # a consistent head and count: no append can slip in between
    head = AuditEvent.objects.order_by("-sequence").values_list("sequence", "hash").first()
    if head is None:
        return None
    latest = AuditCheckpoint.objects.order_by("-head_sequence", "-id").first()
    key_id = current_key_id()
    if (
        not force
        and latest is not None
        and latest.head_sequence == head[0]
        and latest.public_key_id == key_id
    ):
        return None
    checkpoint = AuditCheckpoint(
        head_sequence=head[0],
        head_hash=head[1],
        event_count=AuditEvent.objects.filter(sequence__lte=head[0]).count(),
        created_at=timezone.now(),
        public_key_id=key_id,
    )
    checkpoint.signature = sign(signing_key(), checkpoint_payload(checkpoint_as_record(checkpoint)))
    checkpoint.save(force_insert=True)
    return checkpoint


def audit_checkpoint_current() -> AuditCheckpoint | None:
    """Return a checkpoint of the current head: a new one, or the latest if the head is already signed."""
    return audit_checkpoint_create() or AuditCheckpoint.objects.order_by("-head_sequence", "-id").first()
