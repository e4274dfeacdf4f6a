"""`python -m tests.load [--users 50] [--seconds 60]`: the live stack under load, report under test-artifacts/load/.

Needs PostgreSQL and Redis like the tests (DATABASE_URL / REDIS_URL, or run through
scripts/with-test-services.sh). Exits non-zero when any request failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=50)
    parser.add_argument("--seconds", type=float, default=60)
    parser.add_argument("--out", default="test-artifacts/load")
    args = parser.parse_args()

    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "gitopsportal.settings")
    os.environ.setdefault("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/gitopsportal")
    import django

    django.setup()
    from tests.e2e.harness import LiveStack
    from tests.load.loadgen import run_load, write_report

    with tempfile.TemporaryDirectory(prefix="gitopsportal-load-") as tmp:
        stack = LiveStack.start(Path(tmp))
        try:
            result = run_load(stack.start_gunicorn(), users=args.users, seconds=args.seconds)
        finally:
            stack.stop()
    report = write_report(result, Path(args.out))
    print(report.read_text())
    return 1 if result.errors else 0


if __name__ == "__main__":
    sys.exit(main())
