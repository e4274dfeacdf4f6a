#!/usr/bin/env bash
# Browser tests drive Debian's chromium with Playwright (Playwright's own browser download fails here);
# the auditor's PDF tests read the report back with poppler's pdftotext.
set -euo pipefail
missing=()
[ -x /usr/bin/chromium ] || missing+=(chromium)
command -v pdftotext >/dev/null || missing+=(poppler-utils)
if [ ${#missing[@]} -eq 0 ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's ${missing[*]} for the browser and PDF tests..."
  (apt-get install -y -q "${missing[@]}" >/dev/null 2>&1) || (apt-get update -q >/dev/null && apt-get install -y -q "${missing[@]}" >/dev/null)
else
  echo "warning: ${missing[*]} missing; browser/PDF tests will be skipped (apt-get install ${missing[*]})" >&2
fi
