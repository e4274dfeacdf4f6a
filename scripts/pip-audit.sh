#!/usr/bin/env bash
# Audit the locked dependencies (requirements/dev.txt: runtime + tools, pinned with hashes) for known
# vulnerabilities (pip-audit). The lock, not whatever one venv happens to hold, is what every install uses.
#
# Exit codes:
#   0  every installed distribution was audited and none has a known vulnerability
#   1  at least one known vulnerability (the table lists package, version, id and fixed versions)
#   2  the audit could not run or was incomplete (vulnerability service unreachable, packages skipped)
#      -- set PIP_AUDIT_ALLOW_INCOMPLETE=1 to turn this case into a warning (exit 0) on offline machines
#
# Usage: scripts/pip-audit.sh [extra pip-audit args]   (PYTHON=.venv/bin/python by default; it runs pip-audit)
# PIP_AUDIT_LOCK=requirements/runtime.txt audits one lock file (default requirements/dev.txt).
# PIP_AUDIT_SERVICE=pypi|osv picks the vulnerability database (default pypi).
# PIP_AUDIT_IGNORE="GHSA-xxxx PYSEC-yyyy" ignores reviewed advisories (document why in docs/security.md).
set -uo pipefail

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-.venv/bin/python}"
SERVICE="${PIP_AUDIT_SERVICE:-pypi}"
LOCK="${PIP_AUDIT_LOCK:-requirements/dev.txt}"

if ! "$PYTHON" -m pip_audit --version >/dev/null 2>&1; then
    echo "pip-audit: not installed in $PYTHON (pip install 'pip-audit>=2.7', it is in the dev extra)" >&2
    exit 2
fi

ignore_args=()
for id in ${PIP_AUDIT_IGNORE:-}; do
    ignore_args+=(--ignore-vuln "$id")
done

report="$(mktemp)"
trap 'rm -f "$report"' EXIT

# --no-deps: the lock already pins every distribution, nothing to resolve or install; the hashes
# are checked to be present (--require-hashes) so an unhashed line cannot slip into the lock.
"$PYTHON" -m pip_audit -r "$LOCK" --no-deps --require-hashes --progress-spinner off --vulnerability-service "$SERVICE" \
    --format json --output "$report" "${ignore_args[@]}" "$@" 2>"$report.err"
status=$?

"$PYTHON" - "$report" "$status" <<'PY'
import json
import os
import sys

path, status = sys.argv[1], int(sys.argv[2])
try:
    with open(path) as fh:
        data = json.load(fh)
except (OSError, ValueError):
    err = open(path + ".err").read().strip().splitlines()
    print("pip-audit: the audit did not run: " + (err[-1] if err else f"exit status {status}"), file=sys.stderr)
    sys.exit(2)

deps = data.get("dependencies", [])
vulnerable = [d for d in deps if d.get("vulns")]
skipped = [d for d in deps if d.get("skip_reason") and d.get("name") != "gitopsportal"]
for dep in vulnerable:
    for vuln in dep["vulns"]:
        fixed = ", ".join(vuln.get("fix_versions") or []) or "no fix yet"
        print(f"VULNERABLE {dep['name']} {dep['version']}: {vuln['id']} (fixed in: {fixed})")
audited = len(deps) - len(skipped)
print(f"pip-audit: {audited} of {len(deps)} distributions audited, {len(vulnerable)} with known vulnerabilities")
if vulnerable:
    sys.exit(1)
if skipped:
    names = ", ".join(sorted(d["name"] for d in skipped)[:10])
    print(f"pip-audit: {len(skipped)} distribution(s) could not be audited ({names}...): "
          "is the vulnerability service reachable?", file=sys.stderr)
    if os.environ.get("PIP_AUDIT_ALLOW_INCOMPLETE") == "1":
        print("pip-audit: PIP_AUDIT_ALLOW_INCOMPLETE=1, not failing", file=sys.stderr)
        sys.exit(0)
    sys.exit(2)
sys.exit(0)
PY
rc=$?
rm -f "$report.err"
exit $rc
