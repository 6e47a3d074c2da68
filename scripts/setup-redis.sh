#!/usr/bin/env bash
# Installs redis-server for the single-use ticket tests (idempotent). The tests start their
# own servers on loopback ports with temporary directories; the package's system service is
# not used.
set -euo pipefail
if ! command -v redis-server >/dev/null; then
  echo "setup-redis: installing redis-server"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends redis-server
fi
redis-server --version >/dev/null
