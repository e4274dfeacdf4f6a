"""DORA metrics as pure computations over plain rows (no database, no clock): the definitions live here.

The selectors (`insight.selectors`) load rows from inventory, rollbacks, promotions and audit and
call these functions; tests feed them known histories and assert exact numbers.

Definitions (also shown beside the charts, see ``DEFINITIONS``):

- A **production deployment** is a new revision of an application observed running in a
  production-like environment. Argo CD history entries (`Deployment` rows) of the same app and
  environment are grouped: a row starts a new deployment when its revision differs from the
  revision of the previous deployment of that app in that environment (the same revision reaching
  a second cluster is the same deployment). Its time is the first cluster's ``deployed_at``.
- **Deployment frequency**: the number of production deployments whose time falls in a bucket.
- **Lead time for changes**: for every commit a deployment delivered (commits touching the app in
  that environment or its shared base, after the previous deployment's revision up to and
  including the deployed revision; when the previous revision is unknown, only the deployed
  revision's own commit), the time from the commit's ``committed_at`` to the deployment time
  ("running in prod") and to the time its change record reported healthy ("healthy"). Negative
  durations (clock skew) count as 0. Reported as median and p90.
- **Change failure rate**: failed production deployments / production deployments. A deployment
  failed when, after its time and within the failure window (default 24 h) but before the next
  deployment of the same app in the same environment, one of these happened to that app in that
  environment: a rollback was requested (not counting cancelled ones), a revert commit touching
  the app was committed, or degraded health was observed.
- **Time to restore**: for each production rollback that reached healthy, from the earlier of its
  first degraded observation and its request to ``healthy_at``. Bucketed by the restore time.
- **Median** is the middle value (mean of the two middle values for an even count); **p90** is
  the nearest-rank 90th percentile: the value at rank ceil(0.9 x n) of the sorted values.
- Weeks start on Monday 00:00 UTC; months on the 1st, 00:00 UTC.
"""

from __future__ import annotations

import math
import statistics
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

PERIODS = ("week", "month")

DEFINITIONS: dict[str, str] = {
    "deployment_frequency": (
        "Production deployments observed per period: a new revision of an app running in a "
        "production-like environment (a revision reaching a second cluster is the same deployment)."
    ),
    "lead_time": (
        "For each commit a production deployment delivered (commits touching the app's environment "
        "overlay or shared base since the previous deployed revision): commit time → first cluster "
        "running it, and → its change record reporting healthy. Median and p90 (nearest rank)."
    ),
    "change_failure_rate": (
        "Share of production deployments followed, within the failure window and before the next "
        "deployment of that app, by a rollback request, a revert commit or degraded health."
    ),
    "time_to_restore": (
        "For each production rollback that reached healthy: from the first degraded observation "
        "(or the rollback request, if earlier) to healthy. Median and p90 (nearest rank)."
    ),
}


# ---- input rows ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DeploymentRow:
    """One Argo CD history entry in a production-like environment."""

    app: str
    project: str
    environment: str
    cluster: str
    revision: str
    deployed_at: datetime


@dataclass(frozen=True)
class CommitInfo:
    """A commit of the app's repository: its ingest order and time."""

    sha: str
    seq: int
    committed_at: datetime


@dataclass(frozen=True)
class FailureSignal:
    """Something that marks the deployment in effect before it as failed."""

    app: str
    environment: str
    at: datetime
    kind: str  # rollback | revert | degraded
    ref: str = ""


@dataclass(frozen=True)
class Restore:
    """A production rollback that brought an app back to healthy."""

    app: str
    project: str
    environment: str
    started_at: datetime
    restored_at: datetime
    ref: str = ""

    @property
    def seconds(self) -> float:
        return max(0.0, (self.restored_at - self.started_at).total_seconds())


# ---- derived rows --------------------------------------------------------------------------------------


@dataclass
class DeploymentEvent:
    """A production deployment (one or more clusters receiving the same new revision)."""

    app: str
    project: str
    environment: str
    revision: str
    deployed_at: datetime
    previous_revision: str | None  # None: the first deployment observed of this app here
    clusters: list[str] = field(default_factory=list)
    failed: bool = False
    failure_kinds: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class LeadSample:
    """The lead time of one commit delivered by one deployment."""

    app: str
    project: str
    environment: str
    sha: str
    deployed_at: datetime
    to_running: float  # seconds
    to_healthy: float | None  # seconds; None: no healthy time known


# ---- statistics ----------------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float | None:
    """Return the median (mean of the two middle values for an even count), None when empty."""
    return float(statistics.median(values)) if values else None


def percentile(values: Sequence[float], pct: float) -> float | None:
    """Return the nearest-rank percentile: the value at rank ceil(pct/100 x n) of the sorted values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return float(ordered[rank - 1])


# ---- periods -------------------------------------------------------------------------------------------


def bucket_start(moment: datetime, period: str) -> datetime:
    """Return the start of the week (Monday 00:00 UTC) or month (1st 00:00 UTC) holding the moment."""
    moment = moment.astimezone(UTC)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if period == "week":
        return day - timedelta(days=day.weekday())
    if period == "month":
        return day.replace(day=1)
    raise ValueError(f"unknown period {period!r}")


def next_bucket(start: datetime, period: str) -> datetime:
    if period == "week":
        return start + timedelta(days=7)
    if start.month == 12:
        return start.replace(year=start.year + 1, month=1)
    return start.replace(month=start.month + 1)


def buckets(end: datetime, period: str, count: int) -> list[datetime]:
    """Return ``count`` bucket starts, oldest first, the last one holding ``end``."""
    starts = [bucket_start(end, period)]
    for _ in range(count - 1):
        previous = bucket_start(starts[0] - timedelta(seconds=1), period)
        starts.insert(0, previous)
    return starts


# ---- computations --------------------------------------------------------------------------------------


def deployment_events(rows: Iterable[DeploymentRow]) -> list[DeploymentEvent]:
    """Group history entries into production deployments (see the module docstring)."""
    by_key: dict[tuple[str, str], list[DeploymentRow]] = defaultdict(list)
    for row in rows:
        if row.revision:
            by_key[(row.app, row.environment)].append(row)
    events: list[DeploymentEvent] = []
    for key in sorted(by_key):
        current: DeploymentEvent | None = None
        for row in sorted(by_key[key], key=lambda r: (r.deployed_at, r.cluster)):
            if current is not None and row.revision == current.revision:
                if row.cluster not in current.clusters:
                    current.clusters.append(row.cluster)
                continue
            current = DeploymentEvent(
                app=row.app,
                project=row.project,
                environment=row.environment,
                revision=row.revision,
                deployed_at=row.deployed_at,
                previous_revision=current.revision if current is not None else None,
                clusters=[row.cluster],
            )
            events.append(current)
    events.sort(key=lambda e: (e.deployed_at, e.app, e.environment))
    return events


def mark_failures(
    events: list[DeploymentEvent], signals: Iterable[FailureSignal], *, window: timedelta
) -> list[DeploymentEvent]:
    """Set ``failed`` on each deployment followed by a failure signal (window, before the next one)."""
    by_key: dict[tuple[str, str], list[DeploymentEvent]] = defaultdict(list)
    for event in events:
        by_key[(event.app, event.environment)].append(event)
    for chain in by_key.values():
        chain.sort(key=lambda e: e.deployed_at)
    for signal in signals:
        chain = by_key.get((signal.app, signal.environment), [])
        # The deployment in effect when the signal happened: the last one strictly before it.
        in_effect = None
        following = None
        for position, event in enumerate(chain):
            if event.deployed_at < signal.at:
                in_effect = event
                following = chain[position + 1] if position + 1 < len(chain) else None
        if in_effect is None:
            continue
        if signal.at - in_effect.deployed_at > window:
            continue
        if following is not None and following.deployed_at <= signal.at:
            continue
        in_effect.failed = True
        if signal.kind not in in_effect.failure_kinds:
            in_effect.failure_kinds.append(signal.kind)
    return events


def lead_samples(
    events: Iterable[DeploymentEvent],
    *,
    commits: Mapping[str, CommitInfo],
    touches: Mapping[tuple[str, str], Sequence[CommitInfo]],
    healthy_at: Callable[[DeploymentEvent], datetime | None],
) -> list[LeadSample]:
    """Return one lead-time sample per commit each deployment delivered.

    ``commits`` maps a SHA to its commit; ``touches`` maps (app, environment) to the commits that
    touched the app's overlay in that environment or its shared base, in any order.
    """
    samples: list[LeadSample] = []
    for event in events:
        target = commits.get(event.revision)
        if target is None:
            continue  # the revision was never ingested: no commit time to measure from
        previous = commits.get(event.previous_revision or "")
        if previous is not None:
            delivered = [
                c
                for c in touches.get((event.app, event.environment), ())
                if previous.seq < c.seq <= target.seq
            ]
            if not delivered:
                delivered = [target]
        else:
            delivered = [target]
        healthy = healthy_at(event)
        for commit in sorted(delivered, key=lambda c: c.seq):
            samples.append(
                LeadSample(
                    app=event.app,
                    project=event.project,
                    environment=event.environment,
                    sha=commit.sha,
                    deployed_at=event.deployed_at,
                    to_running=max(0.0, (event.deployed_at - commit.committed_at).total_seconds()),
                    to_healthy=max(0.0, (healthy - commit.committed_at).total_seconds())
                    if healthy is not None
                    else None,
                )
            )
    return samples


@dataclass
class Summary:
    """The four metrics over one set of deployments, lead samples and restores."""

    deployments: int = 0
    failed: int = 0
    lead_running_median: float | None = None
    lead_running_p90: float | None = None
    lead_healthy_median: float | None = None
    lead_healthy_p90: float | None = None
    lead_samples: int = 0
    restores: int = 0
    restore_median: float | None = None
    restore_p90: float | None = None

    @property
    def change_failure_rate(self) -> float | None:
        return self.failed / self.deployments if self.deployments else None


def summarize(
    events: Sequence[DeploymentEvent], samples: Sequence[LeadSample], restores: Sequence[Restore]
) -> Summary:
    running = [s.to_running for s in samples]
    healthy = [s.to_healthy for s in samples if s.to_healthy is not None]
    restore_seconds = [r.seconds for r in restores]
    return Summary(
        deployments=len(events),
        failed=sum(1 for e in events if e.failed),
        lead_running_median=median(running),
        lead_running_p90=percentile(running, 90),
        lead_healthy_median=median(healthy),
        lead_healthy_p90=percentile(healthy, 90),
        lead_samples=len(samples),
        restores=len(restores),
        restore_median=median(restore_seconds),
        restore_p90=percentile(restore_seconds, 90),
    )


@dataclass
class Report:
    """Everything the page, the CSV and the tests read."""

    period: str
    starts: list[datetime]
    end: datetime
    trend: list[tuple[datetime, Summary]]
    total: Summary
    by_app: list[tuple[str, Summary]]
    by_project: list[tuple[str, Summary]]
    by_environment: list[tuple[str, Summary]]
    lead_distribution: list[tuple[str, int]]
    events: list[DeploymentEvent]
    samples: list[LeadSample]
    restores: list[Restore]


# Lead-time histogram bins: (label, upper bound in seconds, exclusive).
LEAD_BINS: tuple[tuple[str, float], ...] = (
    ("< 1 h", 3600),
    ("1-4 h", 4 * 3600),
    ("4-24 h", 24 * 3600),
    ("1-7 d", 7 * 86400),
    ("≥ 7 d", math.inf),
)


def lead_histogram(samples: Iterable[LeadSample]) -> list[tuple[str, int]]:
    """Count lead-time-to-running samples per bin of ``LEAD_BINS``."""
    counts = [0] * len(LEAD_BINS)
    for sample in samples:
        for position, (_, upper) in enumerate(LEAD_BINS):
            if sample.to_running < upper:
                counts[position] += 1
                break
    return [(label, counts[i]) for i, (label, _) in enumerate(LEAD_BINS)]


def build_report(
    *,
    events: list[DeploymentEvent],
    samples: list[LeadSample],
    restores: list[Restore],
    period: str,
    count: int,
    end: datetime,
) -> Report:
    """Bucket the deployments, samples and restores that fall in ``count`` periods ending at ``end``."""
    starts = buckets(end, period, count)
    start, stop = starts[0], next_bucket(starts[-1], period)

    def inside(moment: datetime) -> bool:
        return start <= moment < stop

    events = [e for e in events if inside(e.deployed_at)]
    samples = [s for s in samples if inside(s.deployed_at)]
    restores = [r for r in restores if inside(r.restored_at)]

    trend = []
    for bucket in starts:
        upper = next_bucket(bucket, period)
        trend.append(
            (
                bucket,
                summarize(
                    [e for e in events if bucket <= e.deployed_at < upper],
                    [s for s in samples if bucket <= s.deployed_at < upper],
                    [r for r in restores if bucket <= r.restored_at < upper],
                ),
            )
        )

    def grouped(key: Callable[[object], str]) -> list[tuple[str, Summary]]:
        names = sorted({key(x) for x in (*events, *samples, *restores)})
        return [
            (
                name,
                summarize(
                    [e for e in events if key(e) == name],
                    [s for s in samples if key(s) == name],
                    [r for r in restores if key(r) == name],
                ),
            )
            for name in names
        ]

    return Report(
        period=period,
        starts=starts,
        end=stop,
        trend=trend,
        total=summarize(events, samples, restores),
        by_app=grouped(lambda x: x.app),  # type: ignore[attr-defined]
        by_project=grouped(lambda x: x.project),  # type: ignore[attr-defined]
        by_environment=grouped(lambda x: x.environment),  # type: ignore[attr-defined]
        lead_distribution=lead_histogram(samples),
        events=events,
        samples=samples,
        restores=restores,
    )
