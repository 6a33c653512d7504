#!/usr/bin/env bash
# Runs a test network written by `allium testnet --emit-configs DIR` as separate processes.
# Usage: scripts/testnet-processes.sh DIR [ALLIUM_BINARY]
# Logs go to DIR/NAME.log. Ctrl-C (or SIGTERM) stops every process.
set -euo pipefail
dir="${1:?usage: $0 DIR [ALLIUM_BINARY]}"
bin="${2:-$(dirname "$0")/../target/release/allium}"
[ -x "$bin" ] || { echo "no allium binary at $bin (cargo build --release, or pass its path)"; exit 1; }
pids=()
stop() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop EXIT INT TERM
for f in "$dir"/authority-*.toml; do
  "$bin" authority --config "$f" >"${f%.toml}.log" 2>&1 & pids+=($!)
done
for f in "$dir"/relay-*.toml; do
  "$bin" relay --config "$f" >"${f%.toml}.log" 2>&1 & pids+=($!)
done
"$bin" proxy --config "$dir/proxy.toml" >"$dir/proxy.log" 2>&1 & pids+=($!)
socks=$(sed -n 's/^socks_listen = "\(.*\)"/\1/p' "$dir/proxy.toml")
echo "started ${#pids[@]} processes; the proxy will listen on $socks once bootstrapped (see $dir/proxy.log)"
echo "press Ctrl-C to stop"
wait
