#!/usr/bin/env bash
# The whole test suite: unit tests, the configuration fixtures, the ticket vectors, the proxy
# binary driven as a process over real sockets and real TLS, with a real Redis server for
# single-use tickets, real HAProxy in front of two instances and TigerVNC's Xvnc for
# encrypted consoles; a short fuzz run of every parser of untrusted or operator input
# (FUZZ_SECONDS per target, default 10; 0 skips); the browser tests (scripts/test-e2e.sh:
# Chromium, noVNC, Xvnc); then a seconds-long smoke of the benchmark (it checks that every
# figure can be measured, never how fast).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-redis.sh
scripts/setup-ops.sh
scripts/setup-e2e.sh
cargo test --locked --workspace --all-targets "$@"
fuzz_seconds=${FUZZ_SECONDS:-10}
if [ "$fuzz_seconds" -gt 0 ]; then
  scripts/fuzz.sh "$fuzz_seconds"
fi
scripts/test-e2e.sh
cargo build --locked -p consolegate -p consolegate-bench
timeout 120 target/debug/consolegate-bench run --smoke \
  --consolegate target/debug/consolegate --pki tests/fixtures/pki --workdir target/bench-smoke \
  --websockify-missing "not part of the smoke (scripts/bench.sh installs it)" \
  --websocat-missing "not part of the smoke (scripts/bench.sh installs it)" >target/bench-smoke.md
echo "bench smoke: report in target/bench-smoke.md"
