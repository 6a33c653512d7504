#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short time on the stable toolchain (no sanitizer).
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 25)
# A crash fails the script; the reproducer lands in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-25}"
targets=$(cargo fuzz list --fuzz-dir fuzz)
# One build of every target (one cargo invocation links them in parallel); the runs below
# then find them up to date.
cargo fuzz build -s none --fuzz-dir fuzz
for t in $targets; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  echo "fuzz smoke: $t for ${secs}s"
  # Seeds are read-only inputs; new inputs go to the (ignored) corpus directory.
  log="fuzz/smoke-$t.log"
  if ! cargo fuzz run -s none --fuzz-dir fuzz "$t" "$corpus" "fuzz/seeds/$t" -- \
      -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1; then
    tail -n 40 "$log"
    echo "fuzz target $t FAILED (reproducer in fuzz/artifacts/$t/)"
    exit 1
  fi
  grep -E "^stat::number_of_executed_units" "$log" || true
done
