#!/usr/bin/env bash
# The performance benchmark (issue 8): raw loopback TCP, websockify, websocat and consolegate
# over ws:// and wss://, side by side in one run, on loopback only. Installs the comparators
# on first use into a cache (websockify from PyPI into a virtual environment, websocat with
# `cargo install --locked`), builds release binaries, and writes bench/results/latest.md.
#
#   scripts/bench.sh                 # 3 runs, idle holds of 1,000 and 9,000 sessions (~15 min)
#   scripts/bench.sh --runs 5        # any consolegate-bench `run` option is passed through
#   scripts/bench.sh --only down,up --hold 1000 --out /tmp/quick.md
#
# A comparator that cannot be installed is reported as n/a with the reason; the run goes on.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh

cache="${CONSOLEGATE_BENCH_CACHE:-$HOME/.cache/consolegate-bench}"
websockify_version="${WEBSOCKIFY_VERSION:-0.13.0}"
websocat_version="${WEBSOCAT_VERSION:-1.14.1}"
mkdir -p "$cache"
sudo_cmd=""
[ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
run_args=()
headers=("consolegate $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet 2>/dev/null || echo ' (uncommitted changes)')")

# websockify: the Python proxy under ovirt-websocket-proxy and nova-novncproxy.
venv="$cache/websockify-$websockify_version"
if [ ! -x "$venv/bin/websockify" ]; then
  echo "bench: installing websockify $websockify_version into $venv"
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c 'import ensurepip' >/dev/null 2>&1; then
    $sudo_cmd apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  rm -rf "$venv"
  { python3 -m venv "$venv" && "$venv/bin/pip" install -q "websockify==$websockify_version"; } \
    >"$cache/websockify-install.log" 2>&1 || true
fi
if [ -x "$venv/bin/websockify" ]; then
  run_args+=(--websockify "$venv/bin/websockify")
  headers+=("websockify $websockify_version (PyPI, $("$venv/bin/python" --version 2>&1)), token-file mode, one process per session")
else
  run_args+=(--websockify-missing "pip install websockify==$websockify_version failed; see $cache/websockify-install.log")
fi

# websocat: the general-purpose Rust relay.
websocat="$cache/websocat-$websocat_version/bin/websocat"
if [ ! -x "$websocat" ]; then
  echo "bench: building websocat $websocat_version (cargo install, once)"
  cargo install websocat --version "$websocat_version" --locked --root "$cache/websocat-$websocat_version" \
    >"$cache/websocat-install.log" 2>&1 || true
fi
if [ -x "$websocat" ]; then
  run_args+=(--websocat "$websocat")
  headers+=("$("$websocat" --version 2>&1 | head -1), run as \`websocat -b -E ws-l:HOST:PORT tcp:TARGET\`")
else
  run_args+=(--websocat-missing "cargo install websocat --version $websocat_version failed; see $cache/websocat-install.log")
fi

cargo build --release --locked -p consolegate -p consolegate-bench
for header in "${headers[@]}"; do run_args+=(--header "$header"); done
mkdir -p bench/results
case " $* " in *" --out "*) ;; *) run_args+=(--out bench/results/latest.md) ;; esac
exec target/release/consolegate-bench run \
  --consolegate target/release/consolegate \
  --pki tests/fixtures/pki \
  --workdir target/bench \
  "${run_args[@]}" "$@"
