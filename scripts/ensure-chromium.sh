#!/usr/bin/env bash
# Browser tests drive Debian's chromium with Playwright (Playwright's own browser download fails here).
set -euo pipefail
if [ -x /usr/bin/chromium ]; then exit 0; fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing Debian's chromium for the browser tests..."
  (apt-get install -y -q chromium >/dev/null 2>&1) || (apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null)
else
  echo "warning: /usr/bin/chromium missing; browser tests will be skipped (apt-get install chromium)" >&2
fi
