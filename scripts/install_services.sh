#!/usr/bin/env bash
# Installs the system services the tests start themselves (Redis, from Debian's packages).
# Idempotent; without root or apt it says what is missing, and those tests skip with a reason.
set -euo pipefail
if command -v redis-server >/dev/null; then
  echo "services: redis-server present ($(redis-server --version | cut -d' ' -f3))"
  exit 0
fi
if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
  echo "services: installing redis-server from Debian's packages"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q redis-server >/dev/null
  # The tests start their own server on a free port; the distribution's service is not needed.
  (service redis-server stop || true) >/dev/null 2>&1
  echo "services: redis-server $(redis-server --version | cut -d' ' -f3) installed"
else
  echo "services: redis-server missing and cannot be installed here (needs root and apt-get);" \
       "the Redis tests will be skipped" >&2
fi
