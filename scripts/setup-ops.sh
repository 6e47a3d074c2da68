#!/usr/bin/env bash
# Installs what the operations tests need on a fresh Debian machine (idempotent): HAProxy for
# the load-balancer test, and systemd-analyze (package systemd) to check the unit file.
set -euo pipefail
missing=()
command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
command -v systemd-analyze >/dev/null || missing+=(systemd)
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-ops: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  # HAProxy's package would start a service where systemd runs; the tests start their own.
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
