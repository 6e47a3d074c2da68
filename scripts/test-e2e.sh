#!/usr/bin/env bash
# The browser part of the suite: Debian's Chromium, driven by playwright-core, loads the
# console page from the consolegate binary and connects through it to real TigerVNC servers
# (tests/e2e/console.test.js; reconnect.test.js: reconnects, refusals after the grace period
# and heartbeats, through a TCP relay the tests cut; resume.test.js: unit tests of the page's
# reconnect module). Installs its Debian and npm packages first; screenshots go to
# test-artifacts/.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-e2e.sh
cargo build --locked --bin consolegate
scripts/build-web.sh target/web
cd tests/e2e
if [ ! node_modules/.package-lock.json -nt package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
exec node --test resume.test.js console.test.js reconnect.test.js
