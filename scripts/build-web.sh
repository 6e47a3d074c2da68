#!/usr/bin/env bash
# Builds the web root the proxy serves with WEB_ROOT: the console page from web/ plus noVNC's
# modules, installed from the npm registry at the version web/package-lock.json pins.
#
#   scripts/build-web.sh [OUT]      (default: target/web)
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-target/web}
command -v npm >/dev/null || { echo "build-web: npm is missing: run scripts/setup-e2e.sh --demo" >&2; exit 1; }
# npm ci only when the lock file changed since the last install.
if [ ! web/node_modules/.package-lock.json -nt web/package-lock.json ]; then
  (cd web && npm ci --no-audit --no-fund --loglevel=error)
fi
novnc=web/node_modules/@novnc/novnc
tmp="$out.tmp.$$"
rm -rf "$tmp"
mkdir -p "$tmp/novnc"
cp web/console.html web/console.js web/resume.js web/console.css web/favicon.svg "$tmp/"
cp -R "$novnc/core" "$novnc/vendor" "$tmp/novnc/"
# noVNC is MPL-2.0 (its vendored pako MIT): ship the licence texts with the code.
cp "$novnc/LICENSE.txt" "$tmp/novnc/"
cp -R "$novnc/docs" "$tmp/novnc/licenses"
rm -f "$tmp/novnc/licenses/"*.md
rm -rf "$out"
mkdir -p "$(dirname "$out")"
mv "$tmp" "$out"
echo "build-web: console page and noVNC $(node -p "require('./$novnc/package.json').version") in $out"
