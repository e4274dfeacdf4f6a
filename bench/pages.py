"""Figure 3: page server time and query counts at two sizes (Django test client, in-process)."""

from __future__ import annotations

import time
from collections.abc import Callable

from . import data
from .measure import count_sql, fmt_n, fmt_p, stats
from .report import Section, verdict

P95_BUDGET = 0.150


def bench_user(username: str = "bench-viewer", roles: tuple[str, ...] = ("viewer", "auditor")):
    """A user holding global viewer + auditor grants (not a superuser)."""
    from django.contrib.auth import get_user_model
    from django.contrib.auth.models import Group

    user, _ = get_user_model().objects.get_or_create(
        username=username, defaults={"email": f"{username}@example.com"}
    )
    for role in roles:
        group, _ = Group.objects.get_or_create(name=role)
        user.groups.add(group)
    return user


def time_page(client, url: str, requests: int, expect: str = "") -> tuple[list[float], int, int]:
    """Warm up twice, then time `requests` GETs; return the samples, the query count and the size."""
    for _ in range(2):
        resp = client.get(url)
        if resp.status_code != 200:
            raise RuntimeError(f"GET {url}: HTTP {resp.status_code}")
        if expect and expect not in resp.content.decode():
            raise RuntimeError(f"GET {url}: {expect!r} not in the page: {resp.content.decode()[:3000]}")
    samples = []
    queries = set()
    size = 0
    for _ in range(requests):
        with count_sql() as sql:
            start = time.perf_counter()
            resp = client.get(url)
            body = resp.content
            samples.append(time.perf_counter() - start)
        queries.add(sql.statements)
        size = len(body)
    return samples, max(queries), size


def _measure(
    section: Section,
    client,
    name: str,
    url: str,
    sizes: list[tuple[str, Callable[[], None]]],
    requests: int,
    expect: str = "",
) -> None:
    counts = []
    for label, grow in sizes:
        grow()
        data.analyze()
        samples, queries, size = time_page(client, url, requests, expect)
        s = stats(samples)
        counts.append(queries)
        section.row(
            f"{name} — {label}",
            f"{fmt_p(s)}; {queries} queries; {size / 1024:.0f} KB HTML",
            target="p95 < 150 ms",
            verdict=verdict(s.p95 < P95_BUDGET, f"p95 {s.p95 * 1000:.0f} ms"),
        )
    same = len(set(counts)) == 1
    section.row(
        f"{name} — query count vs size",
        " → ".join(str(c) for c in counts),
        target="independent of size",
        verdict=verdict(same, "query count grows with the data"),
    )


def run(
    section: Section,
    *,
    matrix_apps: list[int],
    app_deployments: list[int],
    events: list[int],
    requests: int,
    audit_filter: str,
) -> None:
    from django.test import Client
    from django.urls import reverse

    client = Client()
    client.force_login(bench_user())
    base = data.inventory_base()

    grown = {"apps": 0}

    def grow_matrix(target: int) -> Callable[[], None]:
        def grow() -> None:
            if target > grown["apps"]:
                data.add_matrix_apps(base, grown["apps"], target)
                grown["apps"] = target

        return grow

    _measure(
        section,
        client,
        "matrix (first page, 50 apps)",
        reverse("inventory:matrix"),
        [
            (f"{fmt_n(n)} apps \u00d7 3 env \u00d7 2 clusters ({fmt_n(n * 6)} Argo CD apps)", grow_matrix(n))
            for n in matrix_apps
        ],
        requests,
    )
    history_app = "app-history-bench"
    _measure(
        section,
        client,
        "app page",
        reverse("inventory:app", args=[history_app]),
        [
            (f"{fmt_n(n)} deployments", lambda n=n: data.add_app_history(base, history_app, n))
            for n in app_deployments
        ],
        requests,
        expect="Deployment timeline",
    )

    def grow_events(target: int) -> Callable[[], None]:
        def grow() -> None:
            head = data.ledger_head()
            if target > head:
                data.insert_synthetic_events(target - head)

        return grow

    url = reverse("audit:event_list") + "?" + audit_filter
    _measure(
        section,
        client,
        f"audit list, filtered ({audit_filter})",
        url,
        [(f"{fmt_n(n)} events", grow_events(n)) for n in events],
        requests,
    )
    section.note(
        f"Server time = the Django test client's round trip in-process (middleware, view, selectors, "
        f"template), {requests} requests after 2 warm-ups, DEBUG off; query count = statements seen by "
        "connection.execute_wrapper during one request (including session and auth)."
    )
    section.note(
        "Data is inserted directly (bulk_create / one INSERT … SELECT generate_series), not through the "
        "services: the matrix apps get 2 deployments per Argo CD app and 3 overlay touches per "
        "environment; the app page's repository has no local mirror, so its overlay diff is skipped "
        '("not mirrored yet"), and its Argo CD instance does not answer (a closed local port), so its '
        "live objects (Rollouts, ApplicationSet) show their error at once; the rest of the page is "
        "measured. Audit events carry synthetic "
        "(md5-based) hashes that link but do not verify: fine for timing a list, not for audit_verify."
    )
    section.note(
        "The matrix shows 50 apps per page (search, project, environment and label filters find any "
        "app of the fleet). The page's ~300 cell rows are read as plain values (one query; no Argo CD "
        "app, cluster, instance or environment object per cell, no JSON column decoded) and the table "
        "body is built by one tag (inventory/templatetags/matrix_cells.py) that builds what cells share "
        "once per page (a deployment time with its 'ago', a commit's link and copy button, labels), "
        "escapes with html.escape and looks the time zone up once; a cell's lines are bare divs styled "
        "by `.cell-item > div`. 'Behind' counts only the commits a promotion carries: a second, "
        "filtered ArrayAgg in the one touches query (no query per app). Nothing is cached across "
        "requests: each request reads the live state. Before (10,000 apps, same machine, load ~7): "
        "~75 ms of CPU per request, half building cells (~1,300 model objects, ~1,100 JSON decodes, "
        "3,000 timesince/escape calls), half rendering 300 simple tags and their timestamps; after: "
        "~35 ms, with the HTML ~4% smaller (what remains per cell, ~1 KB, is the information shown: "
        "full SHAs for the link, tooltip and copy button, the exact time, the mobile card label). "
        "Earlier still, nested template tags: p95 153 ms at 1,000 apps."
    )
