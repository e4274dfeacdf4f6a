"""Fast seeding of big tables for the page, export and evidence figures (bulk_create and SQL)."""

from __future__ import annotations

import hashlib
import random
from datetime import UTC, datetime, timedelta
from typing import Any

from django.db import connection, transaction

ENV_NAMES = ("dev", "stage", "prod")
TEAMS = ("payments", "checkout", "platform", "search", "identity", "catalog", "notifications", "data")
ACTIONS = (
    "deployment.observed",
    "promotion.requested",
    "promotion.approved",
    "promotion.pr_opened",
    "promotion.merged",
    "promotion.deployed",
    "promotion.healthy",
    "rollback.requested",
    "auth.login",
    "audit.exported",
)
EPOCH = datetime(2025, 1, 1, tzinfo=UTC)


def sha(*parts: Any) -> str:
    return hashlib.sha1("/".join(map(str, parts)).encode(), usedforsecurity=False).hexdigest()


def wipe_ledger() -> None:
    """Empty the audit tables (bench database only: the append-only trigger is bypassed for this)."""
    with connection.cursor() as cursor:
        # Both append-only tables carry triggers; shipped-checkpoint bookkeeping references them.
        for table in ("audit_auditevent", "audit_auditcheckpoint"):
            cursor.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cursor.execute(
            "TRUNCATE audit_auditevent, audit_changerecord, audit_auditcheckpoint,"
            " audit_checkpointshipment RESTART IDENTITY"
        )
        for table in ("audit_auditevent", "audit_auditcheckpoint"):
            cursor.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")


def ledger_head() -> int:
    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(max(sequence), 0) FROM audit_auditevent")
        return int(cursor.fetchone()[0])


def insert_synthetic_events(count: int, *, apps: int = 1000, span_days: int = 365) -> int:
    """Append `count` events with one INSERT … SELECT generate_series.

    The rows look like real ones (actions, apps, environments, actors, JSON payloads, increasing
    times) and link by prev_hash, but their hashes are synthetic (md5-based), not the canonical
    SHA-256: fine for page and export timing, not for verification.
    """
    if count <= 0:
        return ledger_head()
    low = ledger_head() + 1
    high = low + count - 1
    seconds = span_days * 86400 / max(high, 1)
    with connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO audit_auditevent (
                sequence, created_at, actor_id, actor_name, actor_type, auth_method, ip_address,
                user_agent, action, target_type, target_id, target_label, app, environment, cluster,
                shas, pr_url, correlation_id, out_of_band, before, after, message, prev_hash, hash, project)
            SELECT s,
                   %(epoch)s::timestamptz + make_interval(secs => s * %(step)s),
                   NULL,
                   (ARRAY['alice','bob','carol','dave','system:poller'])[1 + s %% 5],
                   CASE WHEN s %% 5 = 4 THEN 'system' ELSE 'user' END,
                   CASE WHEN s %% 5 = 4 THEN '' ELSE 'session' END,
                   '10.0.' || (s %% 250) || '.' || (s %% 200), 'Mozilla/5.0 (bench)',
                   (%(actions)s::text[])[1 + (s * 7) %% %(n_actions)s],
                   'promotion', (s / 6)::text, 'promotion #' || (s / 6),
                   'app-' || lpad(((s * 13) %% %(apps)s)::text, 5, '0'),
                   (ARRAY['dev','stage','prod'])[1 + s %% 3],
                   (ARRAY['dev','stage','prod'])[1 + s %% 3] || '-eu-west-1',
                   jsonb_build_array(md5(s::text) || substr(md5('x' || s), 1, 8)),
                   'https://forge.example/acme/gitops/pull/' || (s / 6),
                   md5('c' || (s / 6)),
                   s %% 97 = 0,
                   jsonb_build_object('state', 'approved'),
                   jsonb_build_object('state', 'pr_open', 'items',
                       jsonb_build_array(jsonb_build_object('app', 'app-' || ((s * 13) %% %(apps)s),
                                                            'before', '1.4.2', 'after', '1.4.3'))),
                   'promotion #' || (s / 6) || ' moved on (synthetic event ' || s || ')',
                   CASE WHEN s = 1 THEN repeat('0', 64) ELSE md5((s - 1)::text) || md5('h' || (s - 1)) END,
                   md5(s::text) || md5('h' || s),
                   (ARRAY['payments','checkout','platform','search'])[1 + (s * 13) %% 4]
            FROM generate_series(%(low)s::bigint, %(high)s::bigint) AS s
            """,
            {
                "epoch": EPOCH,
                "step": seconds,
                "apps": apps,
                "low": low,
                "high": high,
                "actions": list(ACTIONS),
                "n_actions": len(ACTIONS),
            },
        )
        cursor.execute("ANALYZE audit_auditevent")
    return high


# --- inventory: the matrix and an app's history ----------------------------------------------------------


def inventory_base() -> dict[str, Any]:
    """Environments, one Argo CD instance (fresh), one repository, 2 clusters per environment."""
    from django.utils import timezone

    from inventory.models import ArgoInstance, Cluster, Environment, GitRepository

    envs = []
    for order, name in enumerate(ENV_NAMES, start=1):
        env, _ = Environment.objects.get_or_create(name=name, defaults={"order": order * 10})
        envs.append(env)
    now = timezone.now()
    instance, _ = ArgoInstance.objects.update_or_create(
        name="bench-pages",
        # Nothing listens there: the app page's live-object reads fail at once (measured: the rest).
        defaults={"url": "http://127.0.0.1:9", "last_success_at": now, "last_poll_finished_at": now},
    )
    repo, _ = GitRepository.objects.get_or_create(
        name="bench-pages",
        defaults={"url": "https://forge.example/acme/gitops.git", "full_name": "acme/gitops",
                  "web_url": "https://forge.example/acme/gitops"},
    )  # fmt: skip
    clusters = []
    for env in envs:
        for region in ("eu-west-1", "us-east-1"):
            name = f"{env.name}-{region}"
            cluster, _ = Cluster.objects.get_or_create(
                instance=instance,
                server=f"https://{name}.k8s.example",
                defaults={"name": name, "environment": env, "labels": {"env": env.name, "region": region}},
            )
            clusters.append(cluster)
    return {"envs": envs, "instance": instance, "repo": repo, "clusters": clusters}


def ensure_commits(repo: Any, count: int) -> list[str]:
    """`count` commits with seq 1..count (idempotent), returned as SHAs in seq order."""
    from inventory.models import Commit

    have = Commit.objects.filter(repository=repo).count()
    if have < count:
        Commit.objects.bulk_create(
            [
                Commit(
                    repository=repo, sha=sha(repo.pk, i), seq=i, parents=[sha(repo.pk, i - 1)],
                    author_name="Bench", author_email="bench@example.com",
                    authored_at=EPOCH + timedelta(hours=i), committer_name="Bench",
                    committed_at=EPOCH + timedelta(hours=i), message=f"change {i}",
                )
                for i in range(have + 1, count + 1)
            ],
            batch_size=2000,
        )  # fmt: skip
    return [sha(repo.pk, i) for i in range(1, count + 1)]


@transaction.atomic
def add_matrix_apps(base: dict[str, Any], start: int, end: int, *, deployments_per_app: int = 2) -> None:
    """Apps start..end-1, each in 3 environments x 2 clusters, with deployments and overlay touches."""
    from inventory.models import Application, ArgoApplication, Commit, CommitTouch, Deployment

    rng = random.Random(start)
    commits = ensure_commits(base["repo"], 2000)
    commit_ids = dict(Commit.objects.filter(repository=base["repo"]).values_list("seq", "id"))
    apps = Application.objects.bulk_create(
        [
            Application(name=f"app-{i:05d}", project=TEAMS[i % len(TEAMS)], repository=base["repo"])
            for i in range(start, end)
        ]
    )
    argo_rows = []
    seq_of: dict[str, int] = {}
    for app in apps:
        base_seq = rng.randint(100, 1900)
        for cluster in base["clusters"]:
            env_index = ENV_NAMES.index(cluster.environment.name)
            seq = base_seq - 40 * env_index  # prod lags stage lags dev
            seq_of[f"{app.name}-{cluster.name}"] = seq
            argo_rows.append(
                ArgoApplication(
                    instance=base["instance"], name=f"{app.name}-{cluster.name}", application=app,
                    environment=cluster.environment, cluster=cluster, project=app.project,
                    namespace=f"{app.project}-{app.name}", labels={"app.kubernetes.io/name": app.name},
                    repo_url=base["repo"].url, path=f"environments/{cluster.environment.name}/{app.name}",
                    target_revision="main", automated=True, sync_status="Synced",
                    health_status="Healthy" if rng.random() > 0.05 else "Degraded",
                    revision=commits[seq - 1], deployed_revision=commits[seq - 1],
                    deployed_at=EPOCH + timedelta(hours=seq),
                    images=[f"registry.example.com/acme/{app.name}:1.{seq // 100}.{seq % 100}"],
                    version=f"1.{seq // 100}.{seq % 100}", state_hash=sha("state", app.pk, cluster.pk),
                )
            )  # fmt: skip
    ArgoApplication.objects.bulk_create(argo_rows, batch_size=2000)
    deployments = []
    touches = []
    for row in argo_rows:
        seq = seq_of[row.name]
        for k in range(deployments_per_app):
            s = max(1, seq - 20 * k)
            deployments.append(
                Deployment(
                    argo_app=row, history_id=deployments_per_app - k, application_id=row.application_id,
                    environment=row.environment, cluster=row.cluster, revision=commits[s - 1],
                    deployed_at=EPOCH + timedelta(hours=s), initiated_by="automated", automated=True,
                    images=[f"registry.example.com/acme/x:1.{s // 100}.{s % 100}"],
                    version=f"1.{s // 100}.{s % 100}", source_path=row.path,
                )
            )  # fmt: skip
    for app in apps:
        for env in base["envs"]:
            for s in sorted(rng.sample(range(1, 2000), 3)):
                touches.append(
                    CommitTouch(commit_id=commit_ids[s], application=app, environment=env, seq=s,
                                paths=[f"environments/{env.name}/{app.name}/kustomization.yaml"])
                )  # fmt: skip
    Deployment.objects.bulk_create(deployments, batch_size=5000)
    CommitTouch.objects.bulk_create(touches, batch_size=5000, ignore_conflicts=True)


@transaction.atomic
def add_app_history(base: dict[str, Any], app_name: str, target: int) -> Any:
    """Give one app `target` deployments spread over its 6 Argo CD apps (idempotent growth)."""
    from inventory.models import Application, ArgoApplication, Deployment

    commits = ensure_commits(base["repo"], 2000)
    app, _ = Application.objects.get_or_create(
        name=app_name, defaults={"project": "payments", "repository": base["repo"]}
    )
    rows = list(ArgoApplication.objects.filter(application=app).select_related("environment", "cluster"))
    if not rows:
        rows = [
            ArgoApplication(
                instance=base["instance"], name=f"{app.name}-{c.name}", application=app,
                environment=c.environment, cluster=c, project=app.project, sync_status="Synced",
                health_status="Healthy", path=f"environments/{c.environment.name}/{app.name}",
                revision=commits[-1], deployed_revision=commits[-1], version="9.9.9",
                images=[f"registry.example.com/acme/{app.name}:9.9.9"],
            )
            for c in base["clusters"]
        ]  # fmt: skip
        ArgoApplication.objects.bulk_create(rows)
    have = Deployment.objects.filter(application=app).count()
    new = []
    for i in range(have, target):
        row = rows[i % len(rows)]
        s = 1 + i % 2000
        new.append(
            Deployment(
                argo_app=row, history_id=i // len(rows) + 1, application=app, environment=row.environment,
                cluster=row.cluster, revision=commits[s - 1], deployed_at=EPOCH + timedelta(minutes=10 * i),
                initiated_by="automated", automated=True, version=f"1.{i // 100}.{i % 100}",
                images=[f"registry.example.com/acme/{app.name}:1.{i // 100}.{i % 100}"], source_path=row.path,
            )
        )  # fmt: skip
    Deployment.objects.bulk_create(new, batch_size=5000)
    return app


def analyze() -> None:
    """Statistics and visibility map as autovacuum leaves them in a running portal (bulk loads skip it)."""
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE" if not connection.in_atomic_block else "ANALYZE")
