#!/usr/bin/env bash
# Installs what the end-to-end tests and the demo need on a fresh Debian machine (idempotent):
# TigerVNC's Xvnc and vncpasswd, xsetroot, Debian's Chromium, and Node.js with npm; x11-utils
# (the demo's message window xmessage, the tests' pointer watcher xev).
#
#   scripts/setup-e2e.sh            everything (tests)
#   scripts/setup-e2e.sh --demo     without the browser (the demo prints a URL for yours)
set -euo pipefail
want_browser=1
[ "${1:-}" = --demo ] && want_browser=0
missing=()
command -v Xvnc >/dev/null || missing+=(tigervnc-standalone-server)
command -v vncpasswd >/dev/null || missing+=(tigervnc-tools)
command -v xsetroot >/dev/null || missing+=(x11-xserver-utils)
# Xvnc's core fonts (a Recommends of tigervnc-standalone-server).
dpkg -s xfonts-base >/dev/null 2>&1 || missing+=(xfonts-base)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
{ command -v xmessage >/dev/null && command -v xev >/dev/null; } || missing+=(x11-utils)
if [ "$want_browser" = 1 ]; then
  [ -x /usr/bin/chromium ] || missing+=(chromium)
  # Fonts for the console page's status line in screenshots.
  dpkg -s fonts-dejavu-core >/dev/null 2>&1 || missing+=(fonts-dejavu-core)
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup-e2e: installing ${missing[*]}"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
