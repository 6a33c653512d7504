#!/usr/bin/env python3
"""Client-side measurements through any SOCKS5 proxy (allium or Tor), stdlib only.

One program measures both networks, so the comparison is fair by construction: the same
sink server, the same SOCKS5 client code, the same timers. Used by scripts/bench-vs-tor.sh.

Subcommands:
  sink     a TCP server on 127.0.0.1: reads an 8-byte big-endian length N, sends N bytes
  measure  runs every measurement against one network and writes a JSON file
  table    prints the side-by-side table of two JSON files (allium, tor)
"""
import argparse
import json
import os
import socket
import statistics
import struct
import sys
import threading
import time

CHUNK = 1 << 20
TIMEOUT = 120.0  # generous per-operation bound so a stuck network cannot hang the bench


# ---------------------------------------------------------------- sink server

def serve_one(conn):
    try:
        conn.settimeout(TIMEOUT)
        hdr = b""
        while len(hdr) < 8:
            part = conn.recv(8 - len(hdr))
            if not part:
                return
            hdr += part
        (n,) = struct.unpack(">Q", hdr)
        buf = bytes(range(256)) * (CHUNK // 256)
        view = memoryview(buf)
        while n > 0:
            k = min(n, CHUNK)
            conn.sendall(view[:k])
            n -= k
        conn.shutdown(socket.SHUT_WR)
        # Wait for the client to close, so the last bytes are not lost to a reset.
        while conn.recv(4096):
            pass
    except OSError:
        pass
    finally:
        conn.close()


def cmd_sink(args):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4096)
    with open(args.port_file + ".tmp", "w") as f:
        f.write(str(srv.getsockname()[1]))
    os.rename(args.port_file + ".tmp", args.port_file)
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=serve_one, args=(conn,), daemon=True).start()


# ---------------------------------------------------------------- SOCKS5 client

def recv_exact(s, n):
    out = b""
    while len(out) < n:
        part = s.recv(n - len(out))
        if not part:
            raise OSError("SOCKS proxy closed the connection")
        out += part
    return out


def socks_connect(socks, host, port, user=None):
    """Opens a stream to host:port (ATYP domain: the name goes to the exit) through a
    SOCKS5 proxy; `user` selects the isolation class (username/password auth)."""
    s = socket.create_connection(socks, timeout=TIMEOUT)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if user is None:
        s.sendall(b"\x05\x01\x00")
        if recv_exact(s, 2) != b"\x05\x00":
            raise OSError("SOCKS5: no-auth refused")
    else:
        s.sendall(b"\x05\x01\x02")
        if recv_exact(s, 2) != b"\x05\x02":
            raise OSError("SOCKS5: username auth refused")
        u = user.encode()
        s.sendall(b"\x01" + bytes([len(u)]) + u + b"\x01x")
        if recv_exact(s, 2)[1] != 0:
            raise OSError("SOCKS5: credentials refused")
    h = host.encode()
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(h)]) + h + struct.pack(">H", port))
    rep = recv_exact(s, 4)
    if rep[1] != 0:
        raise OSError(f"SOCKS5 connect failed, reply {rep[1]}")
    atyp = rep[3]
    if atyp == 1:
        recv_exact(s, 6)
    elif atyp == 4:
        recv_exact(s, 18)
    elif atyp == 3:
        recv_exact(s, recv_exact(s, 1)[0] + 2)
    else:
        raise OSError("SOCKS5: bad reply address type")
    return s


def fetch(socks, sink, nbytes, user=None):
    """Requests nbytes from the sink through the proxy. Returns (seconds to the first
    byte, seconds to the last byte), both from the start of the SOCKS connection."""
    t0 = time.perf_counter()
    s = socks_connect(socks, "127.0.0.1", sink, user)
    try:
        s.sendall(struct.pack(">Q", nbytes))
        buf = bytearray(CHUNK)
        got = 0
        ttfb = None
        while got < nbytes:
            k = s.recv_into(buf)
            if k == 0:
                raise OSError(f"stream ended after {got} of {nbytes} bytes")
            if ttfb is None:
                ttfb = time.perf_counter() - t0
            got += k
        return ttfb, time.perf_counter() - t0
    finally:
        s.close()


# ---------------------------------------------------------------- process figures

def proc_cpu(pid):
    """utime + stime of a process, in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_rss_mib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


def cpu_sum(pids):
    return sum(proc_cpu(p) for p in pids)


# ---------------------------------------------------------------- Tor control port

class Control:
    """Minimal Tor control-port client (no authentication: a private test network)."""

    def __init__(self, addr):
        self.s = socket.create_connection(addr, timeout=TIMEOUT)
        self.f = self.s.makefile("rb")
        self.cmd("AUTHENTICATE")

    def line(self):
        l = self.f.readline()
        if not l:
            raise OSError("control port closed")
        return l.decode(errors="replace").rstrip("\r\n")

    def cmd(self, c):
        self.s.sendall(c.encode() + b"\r\n")
        lines = []
        while True:
            l = self.line()
            if l.startswith("650"):
                continue  # an asynchronous event between replies
            lines.append(l)
            if len(l) >= 4 and l[3] == " ":
                if not l.startswith("250"):
                    raise OSError(f"control: {c!r} -> {l}")
                return lines


def tor_extendcircuit_times(addr, n):
    """Time from EXTENDCIRCUIT 0 (Tor picks a fresh 3-hop path) to its 650 CIRC BUILT."""
    ctl = Control(addr)
    ctl.cmd("SETEVENTS CIRC")
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        ctl.s.sendall(b"EXTENDCIRCUIT 0\r\n")
        cid = None
        deadline = time.time() + TIMEOUT
        while time.time() < deadline:
            l = ctl.line()
            if l.startswith("250 EXTENDED "):
                cid = l.split()[2]
            elif l.startswith("650 CIRC ") and cid is not None:
                parts = l.split()
                if parts[2] == cid and parts[3] == "BUILT":
                    times.append(time.perf_counter() - t0)
                    break
                if parts[2] == cid and parts[3] in ("FAILED", "CLOSED"):
                    break
            elif l[:3] not in ("250", "650"):
                raise OSError(f"control: EXTENDCIRCUIT -> {l}")
        if cid is not None:
            try:
                ctl.cmd(f"CLOSECIRCUIT {cid}")
            except OSError:
                pass
        time.sleep(0.2)
    return times


# ---------------------------------------------------------------- measurements

def med(xs):
    return statistics.median(xs) if xs else None


def cmd_measure(a):
    socks = (a.socks.split(":")[0], int(a.socks.split(":")[1]))
    relay_pids = [int(p) for p in a.relay_pids.split(",") if p]
    node_pids = [int(p) for p in a.node_pids.split(",") if p]
    r = {"name": a.name, "method": {}}
    log = lambda *m: print(f"[{a.name}]", *m, file=sys.stderr, flush=True)

    # Idle relay RSS, before any measured traffic.
    rss = [proc_rss_mib(p) for p in relay_pids]
    r["rss_idle_mib"] = med(rss)
    r["rss_idle_all_mib"] = rss
    log(f"relay RSS idle: median {r['rss_idle_mib']:.1f} MiB of {['%.1f' % x for x in rss]}")

    # Warm TTFB: one request opens the circuit of isolation "warm", then new streams on it.
    fetch(socks, a.sink_port, 1, user="warm")
    warm = []
    for _ in range(a.ttfb_samples):
        warm.append(fetch(socks, a.sink_port, 1, user="warm")[0])
        time.sleep(0.05)
    r["ttfb_warm_ms"] = med(warm) * 1000
    log(f"warm TTFB: median {r['ttfb_warm_ms']:.2f} ms of {len(warm)}")

    # Fresh circuit via a new isolation class. Clients keep a few clean circuits ready
    # (allium 2, Tor a predicted set), so two throwaway isolations claim them first; the
    # measured request then has to build (or, in Tor, may join one already being built,
    # which favours Tor). Build time = fresh TTFB - warm TTFB.
    fresh = []
    for i in range(a.fresh_samples):
        held = [socks_connect(socks, "127.0.0.1", a.sink_port, user=f"drain-{i}-{k}") for k in range(2)]
        fresh.append(fetch(socks, a.sink_port, 1, user=f"fresh-{i}")[0])
        for h in held:
            h.close()
        time.sleep(1.0)
    r["ttfb_fresh_ms"] = med(fresh) * 1000
    r["build_isolation_ms"] = r["ttfb_fresh_ms"] - r["ttfb_warm_ms"]
    log(f"fresh-isolation TTFB: median {r['ttfb_fresh_ms']:.2f} ms -> build {r['build_isolation_ms']:.2f} ms")
    if a.control:
        c = a.control.split(":")
        t = tor_extendcircuit_times((c[0], int(c[1])), a.fresh_samples)
        r["build_control_ms"] = med(t) * 1000 if t else None
        log(f"EXTENDCIRCUIT->BUILT: median {r['build_control_ms']} ms of {len(t)}")

    # Bulk through one stream, with the CPU time of every node process around it.
    nbytes = a.bulk_mib << 20
    fetch(socks, a.sink_port, 1 << 20, user="bulk")  # circuit ready, not timed
    c0 = cpu_sum(node_pids)
    _, t = fetch(socks, a.sink_port, nbytes, user="bulk")
    c1 = cpu_sum(node_pids)
    r["bulk_mbps"] = nbytes / t / 1e6
    gb = nbytes / 1e9
    r["cpu_s_per_gb_per_relay"] = (c1 - c0) / gb / 3
    log(f"bulk {a.bulk_mib} MiB: {t:.2f} s, {r['bulk_mbps']:.1f} MB/s; node CPU {c1 - c0:.2f} s"
        f" -> {r['cpu_s_per_gb_per_relay']:.2f} s/GB per relay on the path")

    # Concurrent streams on one isolation class.
    per = a.stream_mib << 20
    errs = []
    def worker():
        try:
            fetch(socks, a.sink_port, per, user="conc")
        except OSError as e:
            errs.append(str(e))
    fetch(socks, a.sink_port, 1, user="conc")
    ths = [threading.Thread(target=worker) for _ in range(a.streams)]
    t0 = time.perf_counter()
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    t = time.perf_counter() - t0
    ok = a.streams - len(errs)
    r["concurrent_mbps"] = ok * per / t / 1e6
    r["concurrent_failed"] = len(errs)
    log(f"{a.streams} streams x {a.stream_mib} MiB: {t:.2f} s, {r['concurrent_mbps']:.1f} MB/s aggregate,"
        f" {len(errs)} failed {errs[:2]}")

    # Many circuits: one new isolation class each (a 1-byte request), then RSS while they
    # stay open (both clients keep a used circuit ~10 min). Relay CPU over this phase per
    # circuit hop gives the relay-side cost of a circuit (handshake + stream setup).
    n = a.circuits
    done = [0]
    cerrs = []
    lock = threading.Lock()
    nxt = [0]
    def opener():
        while True:
            with lock:
                if nxt[0] >= n:
                    return
                i = nxt[0]
                nxt[0] += 1
            try:
                fetch(socks, a.sink_port, 1, user=f"many-{i}")
                with lock:
                    done[0] += 1
            except OSError as e:
                with lock:
                    cerrs.append(str(e))
    c0 = cpu_sum(node_pids)
    t0 = time.perf_counter()
    ths = [threading.Thread(target=opener) for _ in range(a.circuit_parallel)]
    for th in ths:
        th.start()
    for th in ths:
        th.join()
    t = time.perf_counter() - t0
    c1 = cpu_sum(node_pids)
    time.sleep(2)
    rss = [proc_rss_mib(p) for p in relay_pids]
    r["circuits_opened"] = done[0]
    r["circuits_failed"] = len(cerrs)
    r["circuits_per_s_client"] = done[0] / t
    r["relay_circuits_per_cpu_s"] = done[0] * 3 / (c1 - c0) if c1 > c0 else None
    r["rss_circuits_median_mib"] = med(rss)
    r["rss_circuits_max_mib"] = max(rss)
    r["rss_circuits_all_mib"] = rss
    log(f"{done[0]} circuits ({len(cerrs)} failed {cerrs[:2]}) in {t:.1f} s ({done[0] / t:.0f}/s);"
        f" node CPU {c1 - c0:.2f} s -> {r['relay_circuits_per_cpu_s']} circuit hops per CPU s;"
        f" relay RSS median {r['rss_circuits_median_mib']:.1f} max {r['rss_circuits_max_mib']:.1f} MiB")
    with open(a.out, "w") as f:
        json.dump(r, f, indent=1)


# ---------------------------------------------------------------- table

ROWS = [
    # key, label, unit, better ("hi"/"lo"), target ratio allium/tor, or None
    ("bulk_mbps", "bulk, 1 stream, 3 hops", "MB/s", "hi", 3.0),
    ("concurrent_mbps", "50 concurrent streams (aggregate)", "MB/s", "hi", None),
    ("ttfb_warm_ms", "TTFB on a warm circuit (median)", "ms", "lo", 0.5),
    ("build_isolation_ms", "fresh 3-hop circuit (new isolation TTFB - warm)", "ms", "lo", 0.3),
    ("build_control_ms", "fresh 3-hop circuit (Tor EXTENDCIRCUIT->BUILT)", "ms", "lo", 0.3),
    ("rss_idle_mib", "relay RSS idle (median)", "MiB", "lo", 0.5),
    ("rss_circuits_median_mib", "relay RSS with N circuits open (median)", "MiB", "lo", None),
    ("rss_circuits_max_mib", "relay RSS with N circuits open (max)", "MiB", "lo", None),
    ("relay_circuits_per_cpu_s", "circuit hops per relay CPU second", "1/s", "hi", None),
    ("circuits_per_s_client", "circuits opened per second (client-driven)", "1/s", "hi", None),
    ("cpu_s_per_gb_per_relay", "CPU per GB relayed, per relay on the path", "s/GB", "lo", None),
]


def cmd_table(a):
    al = json.load(open(a.allium))
    to = json.load(open(a.tor))
    out = []
    # For the control-port row allium's figure is its isolation-method build time.
    al = dict(al)
    al.setdefault("build_control_ms", al.get("build_isolation_ms"))
    hdr = f"{'metric':52} {'allium':>10} {'tor':>10} {'ratio':>8} {'target':>9} {'met':>4}"
    print(hdr)
    print("-" * len(hdr))
    for key, label, unit, better, target in ROWS:
        x, y = al.get(key), to.get(key)
        ratio = x / y if (x is not None and y) else None
        met = ""
        tgt = ""
        if target is not None:
            tgt = (">=" if better == "hi" else "<=") + f"{target:g}x"
            if ratio is not None:
                met = "yes" if (ratio >= target if better == "hi" else ratio <= target) else "NO"
        f = lambda v: "n/a" if v is None else f"{v:.2f}"
        print(f"{label + ' (' + unit + ')':52} {f(x):>10} {f(y):>10} {f(ratio):>8} {tgt:>9} {met:>4}")
        out.append({"metric": key, "unit": unit, "allium": x, "tor": y, "ratio": ratio,
                    "target": tgt or None, "met": met or None})
    print(f"N circuits: allium {al.get('circuits_opened')} opened ({al.get('circuits_failed')} failed),"
          f" tor {to.get('circuits_opened')} opened ({to.get('circuits_failed')} failed)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"rows": out, "allium": al, "tor": to}, f, indent=1)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("sink")
    s.add_argument("--port-file", required=True)
    m = sub.add_parser("measure")
    m.add_argument("--name", required=True)
    m.add_argument("--socks", required=True)
    m.add_argument("--sink-port", type=int, required=True)
    m.add_argument("--relay-pids", required=True, help="relays (not authorities), for RSS")
    m.add_argument("--node-pids", required=True, help="every relay and authority, for CPU")
    m.add_argument("--control", help="Tor control port host:port")
    m.add_argument("--bulk-mib", type=int, default=256)
    m.add_argument("--streams", type=int, default=50)
    m.add_argument("--stream-mib", type=int, default=8)
    m.add_argument("--ttfb-samples", type=int, default=20)
    m.add_argument("--fresh-samples", type=int, default=10)
    m.add_argument("--circuits", type=int, default=10000)
    m.add_argument("--circuit-parallel", type=int, default=32)
    m.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("--allium", required=True)
    t.add_argument("--tor", required=True)
    t.add_argument("--json")
    a = p.parse_args()
    {"sink": cmd_sink, "measure": cmd_measure, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
