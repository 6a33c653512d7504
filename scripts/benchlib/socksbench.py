#!/usr/bin/env python3
"""Client-side measurements through any SOCKS5 proxy (allium or Tor), stdlib only.

One program measures both networks, so the comparison is fair by construction: the same
sink server, the same SOCKS5 client code, the same timers. Used by scripts/bench-vs-tor.sh.

Subcommands:
  sink     a TCP server on 127.0.0.1: reads an 8-byte big-endian length N, sends N bytes
  measure  runs every measurement against each network (phase by phase, alternating) and
           writes a JSON file
  table    prints the side-by-side table of that file (networks "allium" and "tor")
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


def metric(url, name):
    """The value of one Prometheus gauge/counter (summed over its labels), or None."""
    import urllib.request
    try:
        text = urllib.request.urlopen(url, timeout=10).read().decode()
    except OSError:
        return None
    vals = [float(l.split()[-1]) for l in text.splitlines()
            if l.startswith(name) and (l[len(name):len(name) + 1] in (" ", "{"))]
    return sum(vals) if vals else None


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


class Net:
    """One network under test: its SOCKS proxy and the processes to watch."""

    def __init__(self, spec):
        kv = dict(item.split("=", 1) for item in spec.split(";") if item)
        self.name = kv["name"]
        h, p = kv["socks"].rsplit(":", 1)
        self.socks = (h, int(p))
        self.relay_pids = [int(x) for x in kv.get("relays", "").split(",") if x]
        self.node_pids = [int(x) for x in kv.get("nodes", "").split(",") if x]
        c = kv.get("control")
        self.control = (c.rsplit(":", 1)[0], int(c.rsplit(":", 1)[1])) if c else None
        self.metrics = [u for u in kv.get("metrics", "").split(",") if u]
        self.r = {"name": self.name}

    def log(self, *m):
        print(f"[{self.name}]", *m, file=sys.stderr, flush=True)


METHODS = {
    "ttfb": "connect to the SOCKS port -> first byte of a 1-byte reply, new stream on the"
            " circuit of an isolation class already used once",
    "build_isolation": "same as ttfb with a new SOCKS username each time (after two throwaway"
                       " isolations took the client's prebuilt circuits), minus warm ttfb",
    "build_control": "Tor only: EXTENDCIRCUIT 0 -> 650 CIRC BUILT on the control port",
    "cpu": "utime+stime of all authority and relay processes over the bulk transfer,"
           " divided by GB moved and by 3 relays on the path",
    "circuits": "one new isolation class (so one new circuit) per 1-byte request, 32 in"
                " parallel, up to --circuits or the time limit; circuit hops = opened x 3",
    "order": "both networks run at once; each phase runs on one network, then the other"
             " (TTFB samples alternate), so load changes on the machine hit both alike",
}


def cmd_measure(a):
    nets = [Net(spec) for spec in a.net]
    sink = a.sink_port

    # Idle relay RSS, before any measured traffic.
    for n in nets:
        rss = [proc_rss_mib(p) for p in n.relay_pids]
        n.r["rss_idle_mib"] = med(rss)
        n.r["rss_idle_all_mib"] = [round(x, 1) for x in rss]
        n.log(f"relay RSS idle: median {med(rss):.1f} MiB of {n.r['rss_idle_all_mib']}")

    # Warm TTFB: one request opens the circuit of isolation "warm", then new streams on
    # it; samples alternate between the networks.
    warm = {n.name: [] for n in nets}
    for n in nets:
        fetch(n.socks, sink, 1, user="warm")
    for _ in range(a.ttfb_samples):
        for n in nets:
            warm[n.name].append(fetch(n.socks, sink, 1, user="warm")[0])
            time.sleep(0.05)
    for n in nets:
        w = warm[n.name]
        n.r["ttfb_warm_ms"] = med(w) * 1000
        n.r["ttfb_warm_samples_ms"] = [round(x * 1000, 2) for x in w]
        n.log(f"warm TTFB: median {n.r['ttfb_warm_ms']:.2f} ms of {len(w)}")

    # Fresh circuit via a new isolation class. Clients keep a few clean circuits ready
    # (allium 2, Tor a predicted set), so two throwaway isolations claim them first; the
    # measured request then has to build (in Tor it may instead join a circuit already
    # being built, which favours Tor). Build time = fresh TTFB - warm TTFB.
    fresh = {n.name: [] for n in nets}
    for i in range(a.fresh_samples):
        for n in nets:
            held = [socks_connect(n.socks, "127.0.0.1", sink, user=f"drain-{i}-{k}") for k in range(2)]
            fresh[n.name].append(fetch(n.socks, sink, 1, user=f"fresh-{i}")[0])
            for h in held:
                h.close()
            time.sleep(0.5)
    for n in nets:
        f = fresh[n.name]
        n.r["ttfb_fresh_ms"] = med(f) * 1000
        n.r["ttfb_fresh_samples_ms"] = [round(x * 1000, 2) for x in f]
        # Only meaningful when fresh > warm: Tor's warm TTFB is bimodal (~12 ms or ~50 ms on
        # this machine), and when its slow mode dominates the difference says nothing.
        d = n.r["ttfb_fresh_ms"] - n.r["ttfb_warm_ms"]
        n.r["build_isolation_ms"] = d if d > 0 else None
        n.log(f"fresh-isolation TTFB samples (ms; one near warm TTFB would mean a prebuilt"
              f" circuit was used): {n.r['ttfb_fresh_samples_ms']}")
        n.log(f"fresh-isolation TTFB: median {n.r['ttfb_fresh_ms']:.2f} ms -> build"
              f" {d:.2f} ms{'' if d > 0 else ' (not positive: reported as n/a)'}")
        if n.control:
            t = tor_extendcircuit_times(n.control, a.fresh_samples)
            n.r["build_control_ms"] = med(t) * 1000 if t else None
            n.r["build_control_samples_ms"] = [round(x * 1000, 2) for x in t]
            n.log(f"EXTENDCIRCUIT->BUILT: {len(t)} of {a.fresh_samples} built, median"
                  f" {n.r['build_control_ms']:.2f} ms, samples {n.r['build_control_samples_ms']}")

    # Bulk through one stream, with the CPU time of every node process around it.
    nbytes = a.bulk_mib << 20
    for n in nets:
        fetch(n.socks, sink, 1 << 20, user="bulk")  # circuit ready, not timed
        c0 = cpu_sum(n.node_pids)
        _, t = fetch(n.socks, sink, nbytes, user="bulk")
        c1 = cpu_sum(n.node_pids)
        n.r["bulk_mbps"] = nbytes / t / 1e6
        n.r["cpu_s_per_gb_per_relay"] = (c1 - c0) / (nbytes / 1e9) / 3
        n.log(f"bulk {a.bulk_mib} MiB: {t:.2f} s, {n.r['bulk_mbps']:.1f} MB/s; node CPU"
              f" {c1 - c0:.2f} s -> {n.r['cpu_s_per_gb_per_relay']:.2f} s/GB per relay on the path")

    # Concurrent streams on one isolation class.
    per = a.stream_mib << 20
    for n in nets:
        errs = []
        def worker():
            try:
                fetch(n.socks, sink, per, user="conc")
            except OSError as e:
                errs.append(str(e))
        fetch(n.socks, sink, 1, user="conc")
        ths = [threading.Thread(target=worker) for _ in range(a.streams)]
        t0 = time.perf_counter()
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        t = time.perf_counter() - t0
        n.r["concurrent_mbps"] = (a.streams - len(errs)) * per / t / 1e6
        n.r["concurrent_failed"] = len(errs)
        n.r["streams"] = a.streams
        n.log(f"{a.streams} streams x {a.stream_mib} MiB: {t:.2f} s, {n.r['concurrent_mbps']:.1f}"
              f" MB/s aggregate, {len(errs)} failed {errs[:2]}")

    # Many circuits: one new isolation class each (a 1-byte request), then RSS while they
    # stay open (both clients keep a used circuit ~10 min). Node CPU over this phase per
    # circuit hop gives the relay-side cost of a circuit (handshake + one stream).
    for n in nets:
        total = a.circuits
        done, cerrs, nxt = [0], [], [0]
        lock = threading.Lock()
        stop_at = time.perf_counter() + a.circuits_time_limit
        def opener():
            while True:
                with lock:
                    # A client that slows down with many circuits (Tor's does) stops at the
                    # time limit; the figures then say how many it reached.
                    if nxt[0] >= total or time.perf_counter() > stop_at:
                        return
                    i = nxt[0]
                    nxt[0] += 1
                try:
                    fetch(n.socks, sink, 1, user=f"many-{i}")
                    with lock:
                        done[0] += 1
                except OSError as e:
                    with lock:
                        cerrs.append(str(e))
        c0 = cpu_sum(n.node_pids)
        t0 = time.perf_counter()
        ths = [threading.Thread(target=opener) for _ in range(a.circuit_parallel)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        t = time.perf_counter() - t0
        c1 = cpu_sum(n.node_pids)
        time.sleep(2)
        rss = [proc_rss_mib(p) for p in n.relay_pids]
        r = n.r
        r["circuits_opened"] = done[0]
        r["circuits_failed"] = len(cerrs)
        r["circuits_per_s_client"] = done[0] / t
        r["relay_circuits_per_cpu_s"] = done[0] * 3 / (c1 - c0) if c1 > c0 else None
        r["rss_circuits_median_mib"] = med(rss)
        r["rss_circuits_max_mib"] = max(rss)
        r["rss_circuits_all_mib"] = [round(x, 1) for x in rss]
        # Per circuit at a relay: each circuit has 3 hops spread over the relays, so a relay
        # holds about opened * 3 / relays of them; its growth over idle, divided by that.
        hops_per_relay = done[0] * 3 / max(len(n.relay_pids), 1)
        idle = r.get("rss_idle_mib")
        if hops_per_relay > 0 and idle is not None:
            r["relay_kib_per_circuit"] = (med(rss) - idle) * 1024 / hops_per_relay
        if n.metrics:
            # allium relays export how many circuits they hold: proof they are open.
            r["circuits_open_per_relay"] = [metric(u, "allium_circuits_open") for u in n.metrics]
            n.log(f"circuits open per relay (allium_circuits_open): {r['circuits_open_per_relay']}")
        n.log(f"{done[0]} circuits ({len(cerrs)} failed {cerrs[:2]}) in {t:.1f} s ({done[0] / t:.0f}/s);"
              f" node CPU {c1 - c0:.2f} s -> {r['relay_circuits_per_cpu_s'] or 0:.0f} circuit hops per"
              f" CPU s; relay RSS median {med(rss):.1f} max {max(rss):.1f} MiB of {r['rss_circuits_all_mib']}")

    with open(a.out, "w") as f:
        json.dump({"method": METHODS, "nets": {n.name: n.r for n in nets}}, f, indent=1)


# ---------------------------------------------------------------- table

ROWS = [
    # key, label, unit, better ("hi"/"lo"), target ratio allium/tor, or None
    ("bulk_mbps", "bulk, 1 stream, 3 hops", "MB/s", "hi", 3.0),
    ("concurrent_mbps", "{streams} concurrent streams (aggregate)", "MB/s", "hi", None),
    ("ttfb_warm_ms", "TTFB on a warm circuit (median)", "ms", "lo", 0.5),
    ("build_isolation_ms", "fresh 3-hop circuit (new isolation TTFB - warm)", "ms", "lo", 0.3),
    ("build_control_ms", "fresh 3-hop circuit (Tor EXTENDCIRCUIT->BUILT)", "ms", "lo", 0.3),
    ("rss_idle_mib", "relay RSS idle (median)", "MiB", "lo", 0.5),
    ("rss_circuits_median_mib", "relay RSS, {circuits} client circuits open (median)", "MiB", "lo", None),
    ("rss_circuits_max_mib", "relay RSS, {circuits} client circuits open (max)", "MiB", "lo", None),
    ("relay_kib_per_circuit", "relay memory per open circuit (median growth / hops held)", "KiB", "lo", 1.0),
    ("relay_circuits_per_cpu_s", "circuit hops (+1 stream) per relay CPU second", "1/s", "hi", None),
    ("circuits_per_s_client", "circuits opened per second (client-driven)", "1/s", "hi", None),
    ("cpu_s_per_gb_per_relay", "CPU per GB relayed, per relay on the path", "s/GB", "lo", None),
]


def cmd_table(a):
    nets = json.load(open(a.results))["nets"]
    al, to = nets["allium"], nets["tor"]
    out = []
    # For the control-port row allium's figure is its isolation-method build time.
    al = dict(al)
    al.setdefault("build_control_ms", al.get("build_isolation_ms"))
    hdr = f"{'metric':58} {'allium':>10} {'tor':>10} {'ratio':>8} {'target':>9} {'met':>4}"
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
        label = label.format(streams=al.get("streams"),
                             circuits=f"{al.get('circuits_opened')}/{to.get('circuits_opened')}")
        f = lambda v: "n/a" if v is None else f"{v:.2f}"
        print(f"{label + ' (' + unit + ')':58} {f(x):>10} {f(y):>10} {f(ratio):>8} {tgt:>9} {met:>4}")
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
    m.add_argument("--net", action="append", required=True,
                   help="name=N;socks=H:P;relays=PIDS;nodes=PIDS[;control=H:P][;metrics=URLS]"
                        " (relays: not authorities, for RSS; nodes: all, for CPU)")
    m.add_argument("--sink-port", type=int, required=True)
    m.add_argument("--bulk-mib", type=int, default=256)
    m.add_argument("--streams", type=int, default=50)
    m.add_argument("--stream-mib", type=int, default=8)
    m.add_argument("--ttfb-samples", type=int, default=40)
    m.add_argument("--fresh-samples", type=int, default=20)
    m.add_argument("--circuits", type=int, default=10000)
    m.add_argument("--circuit-parallel", type=int, default=32)
    m.add_argument("--circuits-time-limit", type=float, default=600.0,
                   help="seconds; stop opening circuits after this")
    m.add_argument("--out", required=True)
    t = sub.add_parser("table")
    t.add_argument("--results", required=True, help="the JSON file of `measure`")
    t.add_argument("--json")
    a = p.parse_args()
    {"sink": cmd_sink, "measure": cmd_measure, "table": cmd_table}[a.cmd](a)


if __name__ == "__main__":
    main()
