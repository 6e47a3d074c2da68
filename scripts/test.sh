#!/usr/bin/env bash
# The whole test suite: unit tests, the configuration fixtures, the ticket vectors and the
# proxy binary driven as a process over real sockets and real TLS, with a real Redis server
# for single-use tickets and real HAProxy in front of two instances.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/setup-redis.sh
scripts/setup-ops.sh
cargo test --locked --all-targets "$@"
