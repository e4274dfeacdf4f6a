"""DORA metrics of a known production history, asserted exactly (see insight/metrics.py for definitions).

History (all UTC; weeks start Monday; "now" is Monday 2025-03-31 12:00, four weekly buckets from
2025-03-10):

pay-api (payments), prod clusters eu and us:
  D0 c1  2025-03-03 10:00 eu+us   before the range (it only sets the previous revision)
  D1 c3  2025-03-11 12:00 eu, 12:30 us  delivers c2 (08:00, 4 h) and c3 (10:00, 2 h); healthy 13:00
  D2 c5  2025-03-18 09:00 eu      delivers c4 (base, 03-17 09:00, 24 h) and c5 (08:00, 1 h);
         degraded 09:30, rollback requested 10:00, healthy 11:00 → failed; restore 1 h 30 min
  D3 c6  2025-03-18 10:40 eu      the revert commit c6 (10:10, 30 min); healthy 11:00 (50 min)
  D4 c7  2025-03-26 15:00 eu      c7 (03-24 15:00, 48 h); degraded 03-27 16:00 = 25 h later: outside
         the 24 h window → not failed
shop-web (checkout), prod eu:
  E1 c2b 2025-03-12 09:00         first deployment seen: only its own commit (03-11 09:00, 24 h)
  E2 c8  2025-03-19 12:00         c8 (11:00, 1 h); a cancelled rollback at 13:00 is not a failure
pay-api in stage (not production-like) is ignored.
"""

from __future__ import annotations

import csv
import io

import pytest
from django.urls import reverse

from accounts.roles import Role
from insight import metrics
from insight.selectors import DoraFilters, dora_report
from rollbacks.models import RollbackRequest
from tests.factories import ApplicationFactory, EnvironmentFactory, GitRepositoryFactory, user_with_role

from .builders import (
    ArgoApplicationFactory,
    ChangeRecordFactory,
    ClusterFactory,
    CommitFactory,
    CommitTouchFactory,
    DeploymentFactory,
    PromotionFactory,
    PromotionItemFactory,
    RollbackFactory,
    at,
    sha,
)

pytestmark = pytest.mark.django_db

NOW = at("2025-03-31 12:00")
H = 3600


@pytest.fixture
def history():
    repo = GitRepositoryFactory()
    stage = EnvironmentFactory(name="stage", order=1)
    prod = EnvironmentFactory(name="prod", order=2, production_like=True)
    pay = ApplicationFactory(name="pay-api", project="payments", repository=repo)
    shop = ApplicationFactory(name="shop-web", project="checkout", repository=repo)
    eu = ClusterFactory(name="prod-eu-west-1", environment=prod)
    us = ClusterFactory(name="prod-us-east-1", environment=prod)
    stage_cluster = ClusterFactory(name="stage-eu-west-1", environment=stage)
    pay_eu = ArgoApplicationFactory(application=pay, environment=prod, cluster=eu)
    pay_us = ArgoApplicationFactory(application=pay, environment=prod, cluster=us)
    pay_stage = ArgoApplicationFactory(application=pay, environment=stage, cluster=stage_cluster)
    shop_eu = ArgoApplicationFactory(application=shop, environment=prod, cluster=eu)

    commits = {}
    for seq, (name, when, message) in enumerate(
        [
            ("c1", "2025-03-03 09:00", "pay-api 1.0"),
            ("c2", "2025-03-11 08:00", "pay-api: config"),
            ("c2b", "2025-03-11 09:00", "shop-web 2.0"),
            ("c3", "2025-03-11 10:00", "pay-api 1.1"),
            ("c4", "2025-03-17 09:00", "pay-api base: probes"),
            ("c5", "2025-03-18 08:00", "pay-api 1.2"),
            ("c6", "2025-03-18 10:10", f'Revert "pay-api 1.2"\n\nThis reverts commit {sha("c5")}.'),
            ("c8", "2025-03-19 11:00", "shop-web 2.1"),
            ("c7", "2025-03-24 15:00", "pay-api 1.3"),
        ],
        start=1,
    ):
        commits[name] = CommitFactory(
            repository=repo, sha=sha(name), seq=seq, committed_at=at(when), message=message
        )
    for name in ("c1", "c2", "c3", "c5", "c6", "c7"):
        CommitTouchFactory(commit=commits[name], application=pay, environment=prod)
    CommitTouchFactory(commit=commits["c4"], application=pay, environment=None)  # the shared base
    CommitTouchFactory(commit=commits["c2"], application=pay, environment=stage)
    for name in ("c2b", "c8"):
        CommitTouchFactory(commit=commits[name], application=shop, environment=prod)

    def deploy(argo_app, name, when):
        DeploymentFactory(argo_app=argo_app, revision=sha(name), deployed_at=at(when))

    deploy(pay_eu, "c1", "2025-03-03 10:00")
    deploy(pay_us, "c1", "2025-03-03 10:05")
    deploy(pay_eu, "c3", "2025-03-11 12:00")
    deploy(pay_us, "c3", "2025-03-11 12:30")
    deploy(pay_eu, "c5", "2025-03-18 09:00")
    deploy(pay_eu, "c6", "2025-03-18 10:40")
    deploy(pay_eu, "c7", "2025-03-26 15:00")
    deploy(pay_stage, "c2", "2025-03-11 08:30")
    deploy(pay_stage, "c5", "2025-03-17 12:00")
    deploy(shop_eu, "c2b", "2025-03-12 09:00")
    deploy(shop_eu, "c8", "2025-03-19 12:00")

    ChangeRecordFactory(app="pay-api", revision_after=sha("c3"), healthy_at=at("2025-03-11 13:00"))
    ChangeRecordFactory(app="pay-api", revision_after=sha("c5"), healthy_at=None, outcome="rolled_back")
    ChangeRecordFactory(
        kind="rollback",
        source_type="rollback",
        app="pay-api",
        revision_after=sha("c6"),
        healthy_at=at("2025-03-18 11:00"),
    )
    RollbackFactory(
        application=pay,
        environment=prod,
        state=RollbackRequest.State.HEALTHY,
        degraded_since=at("2025-03-18 09:30"),
        requested_at=at("2025-03-18 10:00"),
        merge_commit_sha=sha("c6"),
        healthy_at=at("2025-03-18 11:00"),
    )
    RollbackFactory(
        application=shop,
        environment=prod,
        state=RollbackRequest.State.CANCELLED,
        requested_at=at("2025-03-19 13:00"),
    )
    promotion = PromotionFactory(
        source_env=stage,
        target_env=prod,
        repository=repo,
        state="degraded",
        degraded_at=at("2025-03-27 16:00"),
    )
    PromotionItemFactory(promotion=promotion, application=pay)
    return {"pay": pay, "shop": shop}


def _report(user, **params):
    filters = DoraFilters.from_query({"period": "week", "count": "4", **params})
    report, _ = dora_report(user=user, filters=filters, now=NOW)
    return report


def test_weekly_buckets_hold_the_exact_metrics(history):
    report = _report(user_with_role(Role.VIEWER))

    assert [s.date().isoformat() for s in report.starts] == [
        "2025-03-10",
        "2025-03-17",
        "2025-03-24",
        "2025-03-31",
    ]
    trend = [summary for _, summary in report.trend]
    assert [s.deployments for s in trend] == [2, 3, 1, 0]
    assert [s.failed for s in trend] == [0, 1, 0, 0]
    assert [s.change_failure_rate for s in trend] == [0.0, 1 / 3, 0.0, None]
    assert [s.lead_running_median for s in trend] == [4 * H, 1 * H, 48 * H, None]
    assert [s.lead_running_p90 for s in trend] == [24 * H, 24 * H, 48 * H, None]
    assert [s.lead_samples for s in trend] == [3, 4, 1, 0]
    assert [s.lead_healthy_median for s in trend] == [4 * H, 3000.0, None, None]
    assert [s.restores for s in trend] == [0, 1, 0, 0]
    assert [s.restore_median for s in trend] == [None, 1.5 * H, None, None]

    total = report.total
    assert total.deployments == 6
    assert total.failed == 1
    assert total.change_failure_rate == 1 / 6
    assert total.lead_running_median == 3 * H  # (2 h + 4 h) / 2 of 8 samples
    assert total.lead_running_p90 == 48 * H
    assert total.lead_healthy_median == 3 * H
    assert total.lead_healthy_p90 == 5 * H
    assert (total.restores, total.restore_median, total.restore_p90) == (1, 1.5 * H, 1.5 * H)
    assert report.lead_distribution == [("< 1 h", 1), ("1-4 h", 3), ("4-24 h", 1), ("1-7 d", 3), ("≥ 7 d", 0)]


def test_deployments_to_two_clusters_count_once_and_failures_name_their_cause(history):
    report = _report(user_with_role(Role.VIEWER))
    pay = [e for e in report.events if e.app == "pay-api"]
    assert next((e.revision, sorted(e.clusters)) for e in pay) == (
        sha("c3"),
        ["prod-eu-west-1", "prod-us-east-1"],
    )
    failed = [e for e in report.events if e.failed]
    assert [(e.revision, sorted(e.failure_kinds)) for e in failed] == [
        (sha("c5"), ["degraded", "revert", "rollback"])
    ]
    samples = {(s.app, s.sha): s.to_running for s in report.samples}
    assert samples == {
        ("pay-api", sha("c2")): 4 * H,
        ("pay-api", sha("c3")): 2 * H,
        ("shop-web", sha("c2b")): 24 * H,
        ("pay-api", sha("c4")): 24 * H,
        ("pay-api", sha("c5")): 1 * H,
        ("pay-api", sha("c6")): 0.5 * H,
        ("shop-web", sha("c8")): 1 * H,
        ("pay-api", sha("c7")): 48 * H,
    }


def test_breakdowns_by_app_project_and_environment(history):
    report = _report(user_with_role(Role.VIEWER))
    assert [(k, s.deployments, s.failed) for k, s in report.by_app] == [("pay-api", 4, 1), ("shop-web", 2, 0)]
    assert [(k, s.deployments) for k, s in report.by_project] == [("checkout", 2), ("payments", 4)]
    assert [(k, s.deployments, s.lead_samples) for k, s in report.by_environment] == [("prod", 6, 8)]
    by_app = dict(report.by_app)
    assert by_app["shop-web"].lead_running_median == 12.5 * H  # (1 h + 24 h) / 2


def test_filters_and_project_scope(history):
    only_pay = _report(user_with_role(Role.VIEWER), app="pay-api")
    assert only_pay.total.deployments == 4
    assert _report(user_with_role(Role.VIEWER), project="checkout").total.deployments == 2
    monthly = dora_report(
        user=user_with_role(Role.VIEWER),
        filters=DoraFilters.from_query({"period": "month", "count": "1"}),
        now=NOW,
    )[0]
    assert monthly.total.deployments == 7  # D0 on 2025-03-03 too
    from accounts.models import RoleGrant

    scoped = user_with_role(Role.RELEASE_MANAGER, "rm-pay")
    scoped.groups.clear()
    RoleGrant.objects.create(user=scoped, role=Role.RELEASE_MANAGER, project="pay*", environment="*")
    assert [k for k, _ in _report(scoped).by_app] == ["pay-api"]


def test_statistics_definitions():
    assert metrics.median([]) is None
    assert metrics.median([3.0, 1.0, 2.0]) == 2.0
    assert metrics.median([1.0, 2.0, 3.0, 10.0]) == 2.5
    assert metrics.percentile([1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0], 90) == 9.0
    assert metrics.percentile([5.0], 90) == 5.0
    assert metrics.percentile(list(map(float, range(1, 12))), 90) == 10.0  # rank ceil(9.9) = 10
    assert metrics.bucket_start(at("2025-03-16 23:59"), "week") == at("2025-03-10 00:00")
    assert metrics.bucket_start(at("2025-12-31 23:59"), "month") == at("2025-12-01 00:00")
    assert metrics.next_bucket(at("2025-12-01 00:00"), "month") == at("2026-01-01 00:00")


def test_page_renders_charts_definitions_and_csv(client, history, monkeypatch):
    monkeypatch.setattr("django.utils.timezone.now", lambda: NOW)
    client.force_login(user_with_role(Role.VIEWER))
    response = client.get(reverse("insight:dora"), {"period": "week", "count": "4"})
    assert response.status_code == 200
    html = response.content.decode()
    assert html.count("<svg") == 5 and '<title id="chart-lead-title">' in html
    assert metrics.DEFINITIONS["change_failure_rate"] in html
    assert "17%" in html  # 1 of 6
    partial = client.get(reverse("insight:dora"), {"period": "week", "count": "4"}, HTTP_HX_REQUEST="true")
    assert b"<html" not in partial.content and b'id="dora-report"' in partial.content

    exported = client.get(reverse("insight:dora_csv"), {"period": "week", "count": "4"})
    assert exported["Content-Type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(exported.content.decode())))
    weeks = [r for r in rows if r["scope"] == "week"]
    assert [(r["period_start"], r["deployments"], r["lead_time_running_median_s"]) for r in weeks] == [
        ("2025-03-10", "2", "14400"),
        ("2025-03-17", "3", "3600"),
        ("2025-03-24", "1", "172800"),
        ("2025-03-31", "0", ""),
    ]
    total = next(r for r in rows if r["scope"] == "total")
    assert (total["deployments"], total["failed_deployments"], total["change_failure_rate"]) == (
        "6",
        "1",
        "0.1667",
    )
    assert {r["key"] for r in rows if r["scope"] == "app"} == {"pay-api", "shop-web"}
