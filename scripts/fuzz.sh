#!/usr/bin/env bash
# Runs every fuzz target for a bounded time: `scripts/fuzz.sh [seconds-per-target]` (default 20).
# CI runs it short; `make fuzz` runs it long. Installs cargo-fuzz from crates.io if missing.
# The toolchain here is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its -Z sanitizer flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-20}
command -v cargo-fuzz >/dev/null || cargo install --locked cargo-fuzz@0.13.2
export RUSTC_BOOTSTRAP=1
targets=$(cargo fuzz list --fuzz-dir fuzz)
for t in $targets; do
  mkdir -p "fuzz/corpus/$t"
  echo "fuzz: $t for ${secs}s"
  # One worker per target: CI has two cores and other work to do.
  log=$(mktemp)
  seeds=()
  [ -d "fuzz/seeds/$t" ] && seeds=("fuzz/seeds/$t")
  if ! cargo fuzz run --fuzz-dir fuzz "$t" "fuzz/corpus/$t" "${seeds[@]}" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$log" 2>&1; then
    tail -40 "$log" >&2
    echo "fuzz: $t FAILED (failing inputs, if any, are in fuzz/artifacts/$t)" >&2
    rm -f "$log"
    exit 1
  fi
  grep -E '^(Done|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
  rm -f "$log"
done
echo "fuzz: all targets ran ${secs}s without a failure"
