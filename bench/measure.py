"""Counting and timing: SQL statements and rows written, HTTP bytes, medians and p95."""

from __future__ import annotations

import math
import re
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import requests

_WRITE = re.compile(r'^\s*(INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+"?([A-Za-z0-9_]+)"?', re.IGNORECASE)
_COPY = re.compile(r'^\s*COPY\s+"?([A-Za-z0-9_]+)"?', re.IGNORECASE)


@dataclass
class SqlCounter:
    """Counts statements and the rows INSERT/UPDATE/DELETE changed, per table."""

    statements: int = 0
    rows_written: Counter[str] = field(default_factory=Counter)

    def __call__(self, execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        self.statements += 1
        result = execute(sql, params, many, context)
        match = _WRITE.match(sql) or _COPY.match(sql)
        if match:
            cursor = context.get("cursor")
            count = getattr(cursor, "rowcount", -1)
            self.rows_written[match.group(match.lastindex or 1)] += max(count, 0)
        return result

    @property
    def written(self) -> int:
        return sum(self.rows_written.values())

    def written_except(self, *tables: str) -> int:
        return sum(n for t, n in self.rows_written.items() if t not in tables)


@contextmanager
def count_sql() -> Iterator[SqlCounter]:
    """Count the statements this thread's connection runs inside the block."""
    from django.db import connection

    counter = SqlCounter()
    with connection.execute_wrapper(counter):
        yield counter


class ByteCountingSession(requests.Session):
    """A requests session that counts the response body bytes it reads (decoded)."""

    def __init__(self) -> None:
        super().__init__()
        self.trust_env = False
        self.bytes_received = 0
        self.requests_sent = 0
        self._count_lock = threading.Lock()  # the poller reads apps from several threads
        self.hooks["response"].append(self._hook)

    def _hook(self, resp: requests.Response, *args: Any, **kwargs: Any) -> requests.Response:
        with self._count_lock:
            self.requests_sent += 1
        original = resp.iter_content

        def counting(*a: Any, **kw: Any) -> Iterator[bytes]:
            for chunk in original(*a, **kw):
                if isinstance(chunk, bytes):
                    with self._count_lock:
                        self.bytes_received += len(chunk)
                yield chunk

        resp.iter_content = counting  # type: ignore[method-assign]
        return resp

    def reset(self) -> None:
        self.bytes_received = 0
        self.requests_sent = 0


@contextmanager
def stopwatch() -> Iterator[list[float]]:
    """`with stopwatch() as t: ...` then `t[0]` is the elapsed seconds."""
    box: list[float] = [0.0]
    start = time.perf_counter()
    try:
        yield box
    finally:
        box[0] = time.perf_counter() - start


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile (p95 of 20 samples is the 19th smallest)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


@dataclass(frozen=True)
class Stats:
    samples: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.samples)

    @property
    def p50(self) -> float:
        return statistics.median(self.samples) if self.samples else math.nan

    @property
    def p95(self) -> float:
        return percentile(list(self.samples), 95)

    @property
    def max(self) -> float:
        return max(self.samples) if self.samples else math.nan

    @property
    def total(self) -> float:
        return sum(self.samples)


def stats(samples: list[float]) -> Stats:
    return Stats(tuple(samples))


# --- formatting ---------------------------------------------------------------------------------------


def fmt_s(seconds: float) -> str:
    if seconds != seconds:  # NaN
        return "n/a"
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms" if seconds < 0.1 else f"{seconds * 1000:.0f} ms"
    return f"{seconds:.2f} s" if seconds < 100 else f"{seconds:.0f} s"


def fmt_p(s: Stats) -> str:
    return f"p50 {fmt_s(s.p50)} / p95 {fmt_s(s.p95)}"


def fmt_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if abs(n) < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GB"


def fmt_n(n: float) -> str:
    return f"{n:,.0f}"


def fmt_ratio(value: float, reference: float) -> str:
    if not reference or value != value or reference != reference:
        return "n/a"
    return f"{value / reference:.2f}\u00d7"
