#!/usr/bin/env bash
# What a busy client's isolation churn leaves open (issue 19): a local network of separate
# processes (allium testnet --emit-configs + scripts/testnet-processes.sh), a proxy whose
# maximum circuit dirtiness is DIRTINESS seconds, and REQUESTS requests of 1 MB, 4 at once,
# each with a new SOCKS username (a new isolation class, as a browser isolating by site
# makes). Prints every process's RSS before, right after, and DIRTINESS + 60 s later.
# Usage: scripts/isolation-churn.sh [REQUESTS] [DIRTINESS] [ALLIUM_BINARY]
set -euo pipefail
requests="${1:-1000}"
dirtiness="${2:-60}"
bin="${3:-$(dirname "$0")/../target/release/allium}"
bin="$(realpath "$bin")"
[ -x "$bin" ] || { echo "no allium binary at $bin (cargo build --release)"; exit 1; }
for t in curl python3; do type -P "$t" >/dev/null || { echo "needs $t"; exit 1; }; done
dir="$(mktemp -d /tmp/allium-churn.XXXXXX)"
pids=()
cleanup() { kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT INT TERM

"$bin" testnet --emit-configs "$dir/net" --relays 5 --exits 2 --socks-port 0 >/dev/null
socks=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
sed -i "s/^socks_listen = .*/socks_listen = \"127.0.0.1:$socks\"\nmax_circuit_dirtiness_secs = $dirtiness/" "$dir/net/proxy.toml"
"$(dirname "$0")/testnet-processes.sh" "$dir/net" "$bin" >/dev/null & pids+=($!)
mkdir -p "$dir/www" && head -c 1000000 /dev/urandom >"$dir/www/1mb"
web=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
python3 -m http.server "$web" --bind 127.0.0.1 --directory "$dir/www" >/dev/null 2>&1 & pids+=($!)

fetch() { curl -sf -o /dev/null --max-time 60 --proxy "socks5h://$1:x@127.0.0.1:$socks" "http://127.0.0.1:$web/1mb"; }
echo "waiting for the network and the proxy (up to 3 minutes)"
for _ in $(seq 180); do fetch warmup && break; sleep 1; done
fetch warmup || { echo "the proxy never served a request; logs in $dir/net"; tail "$dir/net/proxy.log"; exit 1; }

rss() {
  local line=""
  for f in "$dir"/net/*.toml; do
    local name pid
    name=$(basename "$f" .toml)
    pid=$(pgrep -f -- "--config $f" | head -1 || true)
    [ -n "$pid" ] && line+="$name $(( $(awk '/VmRSS/ {print $2}' /proc/"$pid"/status) / 1024 )) MiB, "
  done
  echo "${line%, }"
}
echo "before:            $(rss)"
export -f fetch; export socks web
start=$SECONDS
failed=$(seq "$requests" | xargs -P4 -I{} bash -c 'fetch "site-{}" || echo fail' | grep -c fail || true)
echo "$requests requests (1 MB each, a new isolation each) in $((SECONDS - start)) s, $failed failed"
echo "right after:       $(rss)"
sleep $((dirtiness + 60))
echo "$((dirtiness + 60)) s later:      $(rss)"
