#!/usr/bin/env bash
# Installs the headless browser the UI's browser test drives: Debian's chromium and chromium-driver
# (Playwright uses /usr/bin/chromium and never downloads a browser). Idempotent. Exits non-zero,
# saying why, when the browser is missing and cannot be installed (needs root and apt-get).
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  echo "browser: $(chromium --version 2>/dev/null | head -1) and chromedriver present"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "browser: chromium/chromium-driver missing and cannot be installed here (needs root and apt-get);" \
       "install them with: apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
echo "browser: installing chromium and chromium-driver from Debian's packages"
apt-get update -q >/dev/null
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  echo "browser: apt-get finished but chromium or chromedriver is still missing" >&2
  exit 1
fi
echo "browser: $(chromium --version 2>/dev/null | head -1) installed"
