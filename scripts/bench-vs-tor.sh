#!/usr/bin/env bash
# allium side by side with Tor: the same client-side measurements (scripts/benchlib/socksbench.py)
# against a private allium network and a private Tor network, both on 127.0.0.1 as separate
# processes (3 directory authorities, 5 relays of which 2 exits, 1 client), in one invocation.
# Prints a table with ratios (allium / tor): ratios, not absolute times, are what count on a
# noisy machine.
#
# Usage: scripts/bench-vs-tor.sh [--bulk-mib N] [--circuits N] [--circuits-time-limit SECS]
#                                [--streams N] [--stream-mib N] [--json FILE] [--keep]
#                                [--only allium|tor]
# Defaults: 256 MiB bulk, 10000 circuits (each client stops after 600 s), 50 x 8 MiB.
# Needs: cargo, python3, tor + tor-gencert (Debian: apt-get install tor).
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
bulk_mib=256 circuits=10000 circuits_time=600 streams=50 stream_mib=8 json="" keep=0 only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --bulk-mib) bulk_mib=$2; shift 2 ;;
    --circuits) circuits=$2; shift 2 ;;
    --circuits-time-limit) circuits_time=$2; shift 2 ;;
    --streams) streams=$2; shift 2 ;;
    --stream-mib) stream_mib=$2; shift 2 ;;
    --json) json=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --only) only=$2; shift 2 ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

for t in tor tor-gencert; do
  command -v "$t" >/dev/null || { echo "$t not found: install Tor (Debian/Ubuntu: sudo apt-get install tor)" >&2; exit 1; }
done
command -v python3 >/dev/null || { echo "python3 not found" >&2; exit 1; }

work=$(mktemp -d "${TMPDIR:-/tmp}/bench-vs-tor.XXXXXX")
pids=()
cleanup() {
  # Stop every process this script started (and only those).
  local p i
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  # tor sometimes hangs on exit after "Catching signal TERM" (seen: a futex wait), so
  # whatever is still there after 10 s gets SIGKILL.
  for ((i = 0; i < 100; i++)); do
    for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && break; p=""; done
    [ -z "$p" ] && break
    sleep 0.1
  done
  for p in "${pids[@]}"; do kill -9 "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

log() { echo "== $*" >&2; }
freeport() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
bench="$repo/scripts/benchlib/socksbench.py"
load_start=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ build allium
target="${CARGO_TARGET_DIR:-$repo/target}"
allium="$target/release/allium"
if [ "$only" != tor ]; then
  log "building allium (cargo build --release)"
  (cd "$repo" && cargo build --release --quiet)
fi

# ------------------------------------------------------------------ sink
python3 "$bench" sink --port-file "$work/sink.port" & pids+=($!)
for _ in $(seq 100); do [ -s "$work/sink.port" ] && break; sleep 0.1; done
sink=$(cat "$work/sink.port")

measure_args=(--sink-port "$sink" --bulk-mib "$bulk_mib" --circuits "$circuits"
              --circuits-time-limit "$circuits_time"
              --streams "$streams" --stream-mib "$stream_mib")

# Waits until a 1-byte request through the SOCKS proxy $1 succeeds (up to $2 seconds).
wait_socks() {
  local socks=$1 limit=$2 i
  for ((i = 0; i < limit; i++)); do
    if python3 -c "
import sys; sys.path.insert(0, '$repo/scripts/benchlib'); import socksbench as b
h, p = '$socks'.split(':'); b.TIMEOUT = 10; b.fetch((h, int(p)), $sink, 1, user='probe')" 2>/dev/null; then
      return 0
    fi
    sleep 1
  done
  return 1
}

# ------------------------------------------------------------------ allium network
run_allium() {
  local d="$work/allium"
  log "allium: writing a network of 3 authorities, 5 relays (2 exits) and a proxy"
  "$allium" testnet --emit-configs "$d" --authorities 3 --relays 5 --exits 2 >/dev/null
  # Raise the relays' resource limits so no configured limit caps the measurements
  # (the defaults allow 4096 circuits per channel and 2000 handshakes/s).
  for f in "$d"/relay-*.toml "$d"/authority-*.toml; do
    cat >>"$f" <<'TOML'

[limits]
circuits_per_channel = 65535
total_queued_bytes = 1073741824
handshakes_per_second = 1000000
handshake_burst = 1000000
pending_link_handshakes = 4096
TOML
  done
  local relay_pids=() node_pids=() metrics=() f p m
  # Relays export relay-wide totals (circuits open) so the bench can show how many
  # circuits each one holds during the RSS measurement.
  for f in "$d"/relay-*.toml; do
    m="127.0.0.1:$(freeport)"; metrics+=("http://$m/metrics")
    printf '\n[metrics]\nlisten = "%s"\n' "$m" >>"$f"
  done
  for f in "$d"/authority-*.toml; do
    "$allium" authority --config "$f" >"${f%.toml}.log" 2>&1 & p=$!; pids+=($p); node_pids+=($p)
  done
  for f in "$d"/relay-*.toml; do
    "$allium" relay --config "$f" >"${f%.toml}.log" 2>&1 & p=$!; pids+=($p); node_pids+=($p); relay_pids+=($p)
  done
  "$allium" proxy --config "$d/proxy.toml" >"$d/proxy.log" 2>&1 & pids+=($!)
  local socks t0=$SECONDS
  socks=$(sed -n 's/^socks_listen = "\(.*\)"/\1/p' "$d/proxy.toml")
  log "allium: waiting for the network (a request through $socks)"
  wait_socks "$socks" 180 || { echo "allium network did not come up; logs in $d (use --keep)" >&2; exit 1; }
  log "allium: ready after $((SECONDS - t0)) s"
  nets+=(--net "name=allium;socks=$socks;relays=$(IFS=,; echo "${relay_pids[*]}");nodes=$(IFS=,; echo "${node_pids[*]}");metrics=$(IFS=,; echo "${metrics[*]}")")
}

# ------------------------------------------------------------------ Tor network
# Settings shared by every Tor node: a private test network that forms in seconds, and
# bandwidth limits far above what this machine can move, so no configured rate binds.
tor_common() {
  cat <<EOF2
TestingTorNetwork 1
DataDirectory $1
Nickname $2
RunAsDaemon 0
ShutdownWaitLength 0
Log notice file $1/notice.log
AssumeReachable 1
PathsNeededToBuildCircuits 0.25
TestingDirAuthVoteExit *
TestingDirAuthVoteGuard *
TestingMinExitFlagThreshold 0
V3AuthNIntervalsValid 2
BandwidthRate 1 GB
BandwidthBurst 1 GB
ConnLimit 60
$(cat "$work/tor/dirauths")
EOF2
}

run_tor() {
  local d="$work/tor" i n p
  mkdir -p "$d"
  : >"$d/dirauths"
  log "tor: generating 3 authorities' keys (tor-gencert)"
  declare -a aor adir
  for i in 1 2 3; do
    n="auth$i"; mkdir -p "$d/$n/keys"; chmod 700 "$d/$n"
    aor[$i]=$(freeport); adir[$i]=$(freeport)
    (cd "$d/$n/keys" && echo "" | tor-gencert --create-identity-key -m 12 \
       -a "127.0.0.1:${adir[$i]}" --passphrase-fd 0 \
       -i authority_identity_key -s authority_signing_key -c authority_certificate >/dev/null 2>&1)
    local v3 fp
    v3=$(sed -n 's/^fingerprint //p' "$d/$n/keys/authority_certificate")
    tor --quiet --list-fingerprint --DataDirectory "$d/$n" --ORPort "${aor[$i]}" \
      --Nickname "$n" --TestingTorNetwork 1 \
      --DirAuthority "x orport=1 v3ident=$v3 127.0.0.1:1 0000000000000000000000000000000000000000" \
      >/dev/null 2>&1 || true
    fp=$(cut -d' ' -f2 "$d/$n/fingerprint")
    echo "DirAuthority $n orport=${aor[$i]} no-v2 v3ident=$v3 127.0.0.1:${adir[$i]} $fp" >>"$d/dirauths"
  done
  local relay_pids=() node_pids=()
  for i in 1 2 3; do
    n="auth$i"
    { tor_common "$d/$n" "$n"
      cat <<EOF2
Address 127.0.0.1
ORPort 127.0.0.1:${aor[$i]}
DirPort 127.0.0.1:${adir[$i]}
SocksPort 0
AuthoritativeDirectory 1
V3AuthoritativeDirectory 1
ContactInfo $n@test.invalid
TestingV3AuthInitialVotingInterval 10
TestingV3AuthInitialVoteDelay 2
TestingV3AuthInitialDistDelay 2
V3AuthVotingInterval 10
V3AuthVoteDelay 2
V3AuthDistDelay 2
ExitPolicy reject *:*
EOF2
    } >"$d/$n.torrc"
  done
  for i in 1 2 3 4 5; do
    n="relay$i"; mkdir -p "$d/$n"; chmod 700 "$d/$n"
    { tor_common "$d/$n" "$n"
      cat <<EOF2
Address 127.0.0.1
ORPort 127.0.0.1:$(freeport)
SocksPort 0
RelayBandwidthRate 1 GB
RelayBandwidthBurst 1 GB
ContactInfo $n@test.invalid
EOF2
      # Exits: the same policy as allium's emitted exits. `accept *:*` is needed too: a
      # microdescriptor's policy summary ignores private addresses, so a loopback-only exit
      # would look like no exit to the client.
      if [ "$i" -le 2 ]; then
        printf 'ExitRelay 1\nExitPolicyRejectPrivate 0\nExitPolicyRejectLocalInterfaces 0\nExitPolicy accept 127.0.0.0/8:*\nExitPolicy accept *:*\n'
      else
        printf 'ExitPolicy reject *:*\n'
      fi
    } >"$d/$n.torrc"
  done
  local socks ctl
  socks="127.0.0.1:$(freeport)"; ctl="127.0.0.1:$(freeport)"
  mkdir -p "$d/client"; chmod 700 "$d/client"
  { tor_common "$d/client" client
    printf 'SocksPort %s\nControlPort %s\n' "$socks" "$ctl"
  } >"$d/client.torrc"
  for f in "$d"/auth*.torrc; do
    tor -f "$f" >/dev/null 2>&1 & p=$!; pids+=($p); node_pids+=($p)
  done
  for f in "$d"/relay*.torrc; do
    tor -f "$f" >/dev/null 2>&1 & p=$!; pids+=($p); node_pids+=($p); relay_pids+=($p)
  done
  tor -f "$d/client.torrc" >/dev/null 2>&1 & pids+=($!)
  local t0=$SECONDS
  log "tor: waiting for the client to bootstrap (100%) and a request through $socks"
  local ok=0
  for _ in $(seq 300); do
    if grep -q "Bootstrapped 100%" "$d/client/notice.log" 2>/dev/null; then ok=1; break; fi
    sleep 1
  done
  [ "$ok" = 1 ] && wait_socks "$socks" 120 || { echo "tor network did not come up; logs in $d/*/notice.log (use --keep)" >&2; exit 1; }
  log "tor: ready after $((SECONDS - t0)) s"
  nets+=(--net "name=tor;socks=$socks;control=$ctl;relays=$(IFS=,; echo "${relay_pids[*]}");nodes=$(IFS=,; echo "${node_pids[*]}")")
}

# Both networks run at once and the measurement alternates between them phase by phase,
# so a change in the machine's load (other builds) affects both sides alike.
nets=()
[ "$only" = tor ] || run_allium
[ "$only" = allium ] || run_tor
log "both up; settling 10 s, then measuring (phases alternate between the networks)"
sleep 10
# In the background + wait, so Ctrl-C/SIGTERM reach the cleanup trap at once (bash runs
# traps only after a foreground command finishes).
python3 "$bench" measure "${nets[@]}" "${measure_args[@]}" --out "$work/results.json" & m=$!
pids+=($m)
wait "$m"

echo
echo "allium vs Tor $(tor --version | head -1 | sed 's/^Tor version //; s/\.$//') on 127.0.0.1, $(nproc) cores;" \
     "bulk ${bulk_mib} MiB, ${streams} x ${stream_mib} MiB concurrent, ${circuits} circuits"
echo "load average (1/5/15 min): at start $load_start, at end $(cut -d' ' -f1-3 /proc/loadavg)"
if [ -z "$only" ]; then
  python3 "$bench" table --results "$work/results.json" ${json:+--json "$json"}
else
  cat "$work/results.json"
fi
