#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer) of every parser of untrusted or operator input.
#
#   scripts/fuzz.sh [SECONDS] [TARGET...]    each TARGET (default: all) for SECONDS (default 60)
#
# Runs on the stable toolchain: fuzz/ is a cargo-fuzz project, built here with plain cargo
# and the instrumentation flags `cargo fuzz build --sanitizer none` passes, which are all
# stable rustc options; so neither nightly nor a `cargo install` is needed (developers with
# cargo-fuzz can still `cargo fuzz run TARGET`). Each target starts from its committed seed
# corpus, fuzz/corpus/TARGET (never written), plus a working corpus kept in
# fuzz/target/corpus/TARGET. A failing input is saved in fuzz/artifacts/TARGET/ and the
# script exits 1; replay it with `fuzz/target/<triple>/fuzz/TARGET FILE`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-60}
[[ $seconds =~ ^[0-9]+$ ]] && [ "$seconds" -gt 0 ] || {
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]" >&2
  exit 64
}
shift $(($# > 0 ? 1 : 0))
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for file in fuzz/fuzz_targets/*.rs; do targets+=("$(basename "$file" .rs)"); done
fi

# libFuzzer itself is C++, compiled by the libfuzzer-sys build script.
if ! command -v c++ >/dev/null; then
  echo "fuzz: installing g++ (libFuzzer is C++)"
  sudo_cmd=""
  [ "$(id -u)" -eq 0 ] || sudo_cmd=sudo
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq g++
fi

triple=$(rustc -vV | sed -n 's/^host: //p')
flags=(
  -Cpasses=sancov-module
  -Cllvm-args=-sanitizer-coverage-level=4
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters
  -Cllvm-args=-sanitizer-coverage-pc-table
  -Cllvm-args=-sanitizer-coverage-trace-compares
  -Cllvm-args=-sanitizer-coverage-stack-depth
  -Cllvm-args=-simplifycfg-branch-fold-threshold=0
  -Cdebug-assertions
  -Coverflow-checks
  --cfg fuzzing
)
started=$SECONDS
# The fuzz crate resolves from the main crate's lock file, so it builds consolegate with
# exactly the dependency versions the main build uses (and never goes stale when they change);
# cargo adds only the fuzz-only crates (libfuzzer-sys and what it needs).
cp Cargo.lock fuzz/Cargo.lock
# --target keeps the instrumentation off build scripts and proc macros, as cargo-fuzz does.
RUSTFLAGS="${flags[*]} ${RUSTFLAGS:-}" cargo build --profile fuzz \
  --manifest-path fuzz/Cargo.toml --target-dir fuzz/target --target "$triple" --bins
echo "fuzz: built in $((SECONDS - started)) s"

mkdir -p fuzz/target/logs
total=0
failed=()
for target in "${targets[@]}"; do
  binary=fuzz/target/$triple/fuzz/$target
  seeds=fuzz/corpus/$target
  [ -x "$binary" ] && [ -d "$seeds" ] || {
    echo "fuzz: unknown target $target (needs fuzz/fuzz_targets/$target.rs, a [[bin]] in fuzz/Cargo.toml and $seeds/)" >&2
    exit 64
  }
  work=fuzz/target/corpus/$target
  artifacts=fuzz/artifacts/$target
  log=fuzz/target/logs/$target.log
  mkdir -p "$work" "$artifacts"
  status=0
  "$binary" "$work" "$seeds" -max_total_time="$seconds" -timeout=10 -max_len=20480 \
    -print_final_stats=1 -artifact_prefix="$artifacts/" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n 1)
  [ -n "$runs" ] || runs=$(grep -o '^#[0-9]*' "$log" | tail -n 1 | tr -d '#')
  runs=${runs:-0}
  total=$((total + runs))
  inputs=$(find "$work" -type f | wc -l)
  if [ "$status" -eq 0 ]; then
    printf 'fuzz: %-16s %8d executions in %s s without a failure (corpus: %d seeds, %d found)\n' \
      "$target" "$runs" "$seconds" "$(find "$seeds" -type f | wc -l)" "$inputs"
  else
    failed+=("$target")
    echo "fuzz: $target FAILED after $runs executions (exit $status); its log ends:" >&2
    tail -n 40 "$log" >&2
  fi
done
echo "fuzz: $total executions in total, ${#targets[@]} targets for $seconds s each"
echo "fuzz: $((${#targets[@]} - ${#failed[@]})) passed, ${#failed[@]} failed"
[ ${#failed[@]} -eq 0 ]
