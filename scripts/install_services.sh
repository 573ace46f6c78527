#!/usr/bin/env bash
# Installs the system services the tests start themselves (Redis, from Debian's packages).
# Idempotent. Exits non-zero, saying what is missing, when Redis is absent and cannot be
# installed (no root, no apt-get, or the install failed): CI must not go on and skip those tests.
set -euo pipefail
if command -v redis-server >/dev/null; then
  echo "services: redis-server present ($(redis-server --version | cut -d' ' -f3))"
  exit 0
fi
if [[ $(id -u) -ne 0 ]] || ! command -v apt-get >/dev/null; then
  echo "services: ERROR: redis-server is missing and cannot be installed here (needs root and apt-get);" \
       "install it (apt-get install redis-server) and rerun" >&2
  exit 1
fi
echo "services: installing redis-server from Debian's packages"
if ! { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null; }; then
  echo "services: ERROR: apt-get install redis-server failed" >&2
  exit 1
fi
if ! command -v redis-server >/dev/null; then
  echo "services: ERROR: redis-server still not on PATH after the install" >&2
  exit 1
fi
# The tests start their own server on a free port; the distribution's service is not needed.
(service redis-server stop || true) >/dev/null 2>&1
echo "services: redis-server $(redis-server --version | cut -d' ' -f3) installed"
