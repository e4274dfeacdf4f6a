"""`python -m bench --smoke` runs every figure end to end at tiny sizes, so the benchmark cannot rot."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ("1", "2", "3", "4", "5", "6", "7", "8")

pytestmark = pytest.mark.slow


def test_smoke_run_measures_every_figure_and_writes_its_table_where_asked(tmp_path):
    out = tmp_path / "benchmarks.md"
    docs = ROOT / "docs" / "benchmarks.md"
    docs_before = docs.read_bytes() if docs.exists() else None
    env = dict(os.environ)
    env.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gitopsportal")
    env["PYTHONUNBUFFERED"] = "1"
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")

    proc = subprocess.run(
        [
            sys.executable, "-m", "bench", "--smoke", "--out", str(out), "--workdir", str(tmp_path / "work"),
            "--db-name", f"gitopsportal_bench_smoke_{worker}",
        ],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip

    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    table = out.read_text()
    assert "## Machine" in table and "## Results" in table
    for key in ("cores", "memory", "cpu", "python", "postgresql", "redis", "git"):
        assert f"| {key} |" in table
    for figure in FIGURES:
        assert f"\n| {figure} | " in table, f"figure {figure} missing from the table"
    assert "FAILED" not in table
    assert "SMOKE run" in table
    # The smoke run never overwrites the committed reference figures.
    assert (docs.read_bytes() if docs.exists() else None) == docs_before
