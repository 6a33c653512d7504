#!/usr/bin/env python3
"""A voice-like UDP client for a SOCKS5 proxy, written from RFC 1928 alone (standard
library only), as an independent check of allium's UDP ASSOCIATE.

It opens the TCP control connection (no authentication), asks for UDP ASSOCIATE, then
sends --count datagrams of --size bytes at --rate per second through the relay address
the proxy returned, to --echo (a UDP echo server). Each datagram carries a sequence
number and its send time; the echoes give loss and round-trip times. One JSON line is
printed: sent, received, loss_pct, median_ms, p99_ms.

    python3 voice_client.py --proxy 127.0.0.1:9050 --echo 127.0.0.1:7 \\
        --count 1000 --size 160 --rate 50
"""

import argparse
import ipaddress
import json
import socket
import statistics
import struct
import sys
import time

# Sequence number (u32) and send time (f64 seconds, this process's clock).
STAMP = struct.Struct("!Id")


def host_port(text):
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


def read_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise ConnectionError("proxy closed the control connection")
        data += chunk
    return data


def read_address(sock):
    """ATYP, address and port as in a SOCKS5 reply."""
    atyp = read_exact(sock, 1)[0]
    if atyp == 1:
        addr = str(ipaddress.IPv4Address(read_exact(sock, 4)))
    elif atyp == 4:
        addr = str(ipaddress.IPv6Address(read_exact(sock, 16)))
    elif atyp == 3:
        addr = read_exact(sock, read_exact(sock, 1)[0]).decode("ascii")
    else:
        raise ValueError("unknown address type %d" % atyp)
    (port,) = struct.unpack("!H", read_exact(sock, 2))
    return addr, port


def encode_address(host, port):
    """ATYP, address and port for a request or a UDP header."""
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        name = host.encode("ascii")
        return bytes([3, len(name)]) + name + struct.pack("!H", port)
    atyp = 1 if ip.version == 4 else 4
    return bytes([atyp]) + ip.packed + struct.pack("!H", port)


def associate(proxy):
    """Greeting and UDP ASSOCIATE; returns the control socket and the relay address."""
    ctl = socket.create_connection(proxy, timeout=10)
    ctl.sendall(b"\x05\x01\x00")
    if read_exact(ctl, 2) != b"\x05\x00":
        raise ConnectionError("proxy refused the no-authentication method")
    # DST 0.0.0.0:0: we do not know which address our datagrams will come from.
    ctl.sendall(b"\x05\x03\x00" + encode_address("0.0.0.0", 0))
    ver, rep, _rsv = read_exact(ctl, 3)
    if ver != 5 or rep != 0:
        raise ConnectionError("UDP ASSOCIATE refused: reply %d" % rep)
    addr, port = read_address(ctl)
    if ipaddress.ip_address(addr).is_unspecified:
        addr = proxy[0]
    return ctl, (addr, port)


def strip_header(datagram):
    """The payload of a datagram from the relay (RSV RSV FRAG ATYP ADDR PORT DATA)."""
    if len(datagram) < 4 or datagram[:3] != b"\x00\x00\x00":
        return None
    atyp = datagram[3]
    if atyp == 1:
        start = 4 + 4 + 2
    elif atyp == 4:
        start = 4 + 16 + 2
    elif atyp == 3 and len(datagram) > 4:
        start = 5 + datagram[4] + 2
    else:
        return None
    return datagram[start:] if len(datagram) >= start else None


def percentile(values, pct):
    if len(values) < 2:
        return values[0] if values else None
    return statistics.quantiles(values, n=100, method="inclusive")[pct - 1]


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--proxy", required=True, help="host:port of the SOCKS5 proxy")
    ap.add_argument("--echo", required=True, help="host:port of a UDP echo server")
    ap.add_argument("--count", type=int, default=1000)
    ap.add_argument("--size", type=int, default=160, help="bytes per datagram")
    ap.add_argument("--rate", type=float, default=50.0, help="datagrams per second")
    ap.add_argument("--wait", type=float, default=2.0,
                    help="seconds to wait for late echoes after the last send")
    args = ap.parse_args()
    if args.size < STAMP.size:
        ap.error("--size must be at least %d" % STAMP.size)

    proxy = host_port(args.proxy)
    echo_host, echo_port = host_port(args.echo)
    ctl, relay = associate(proxy)
    family = socket.AF_INET6 if ":" in relay[0] else socket.AF_INET
    udp = socket.socket(family, socket.SOCK_DGRAM)
    udp.bind((relay[0], 0))
    header = b"\x00\x00\x00" + encode_address(echo_host, echo_port)
    padding = bytes(args.size - STAMP.size)

    rtts = {}
    interval = 1.0 / args.rate
    start = time.perf_counter()
    deadline = None
    seq = 0
    while True:
        now = time.perf_counter()
        if seq < args.count and now >= start + seq * interval:
            udp.sendto(header + STAMP.pack(seq, now) + padding, relay)
            seq += 1
            continue
        if seq >= args.count and deadline is None:
            deadline = now + args.wait
        if deadline is not None and (now >= deadline or len(rtts) >= args.count):
            break
        wake = deadline if deadline is not None else start + seq * interval
        udp.settimeout(max(wake - now, 0.0005))
        try:
            datagram, _ = udp.recvfrom(65535)
        except socket.timeout:
            continue
        payload = strip_header(datagram)
        if payload is None or len(payload) < STAMP.size:
            continue
        got_seq, sent_at = STAMP.unpack_from(payload)
        if got_seq < seq and got_seq not in rtts:
            rtts[got_seq] = (time.perf_counter() - sent_at) * 1000.0
    ctl.close()
    udp.close()

    values = sorted(rtts.values())
    sent = args.count
    received = len(rtts)
    result = {
        "sent": sent,
        "received": received,
        "loss_pct": round(100.0 * (sent - received) / sent, 2) if sent else 0.0,
        "median_ms": round(statistics.median(values), 3) if values else None,
        "p99_ms": round(percentile(values, 99), 3) if values else None,
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
