#!/usr/bin/env bash
# Runs every cargo-fuzz target for a short time on the stable toolchain (no sanitizer).
# Usage: scripts/fuzz-smoke.sh [SECONDS_PER_TARGET]   (default 25)
# A crash fails the script; the reproducer lands in fuzz/artifacts/TARGET/.
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-25}"
targets=$(cargo fuzz list --fuzz-dir fuzz)
for t in $targets; do
  corpus="fuzz/corpus/$t"
  mkdir -p "$corpus"
  echo "fuzz smoke: $t for ${secs}s"
  # Seeds are read-only inputs; new inputs go to the (ignored) corpus directory.
  cargo fuzz run -s none --fuzz-dir fuzz "$t" "$corpus" "fuzz/seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 2>&1 | grep -E "^(stat::number_of_executed_units|#[0-9]+ *DONE|==|SUMMARY|thread)" || true
  # grep hides libFuzzer's chatter; the exit status of cargo fuzz is what counts.
  test "${PIPESTATUS[0]}" -eq 0 || { echo "fuzz target $t failed"; exit 1; }
done
