#!/usr/bin/env python3
"""An independent control-port client (the socket module only, no allium code), as a
stem-style script would drive allium's control port (docs/control.md):

  PROTOCOLINFO, AUTHENTICATE with the cookie file, GETINFO status/bootstrap-phase,
  SETEVENTS CIRC STREAM, ADD_ONION (then the service is reached through the SOCKS port),
  the events that follow, DEL_ONION (then it is unreachable), SIGNAL NEWNYM between two
  streams through an exit to TARGET_PORT (the test checks that they left from different
  exits), and a second connection refused before it authenticates.

Usage: control_port.py CONTROL_HOST:PORT COOKIE_FILE SOCKS_HOST:PORT TARGET_PORT
TARGET_PORT is a local TCP echo server the ephemeral service forwards to.
Exit status 0 when every check passed; otherwise the failed check is printed.
"""

import socket
import sys
import threading
import time
import queue


def hostport(s):
    host, port = s.rsplit(":", 1)
    return host, int(port)


def fail(msg):
    print("control_port.py: FAILED: " + msg, flush=True)
    sys.exit(1)


class Control:
    """A control connection: commands get their reply; 650 events are queued apart."""

    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=120)
        self.replies = queue.Queue()
        self.events = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self):
        buf = b""
        lines = []
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                data = b""
            if not data:
                self.replies.put(None)
                return
            buf += data
            while b"\r\n" in buf:
                line, buf = buf.split(b"\r\n", 1)
                text = line.decode("ascii")
                if text.startswith("650"):
                    self.events.put(text)
                    continue
                lines.append(text)
                # A reply ends with "NNN " (a space after the code); "250-"/"250+" go on.
                if len(text) >= 4 and text[3] == " ":
                    self.replies.put(lines)
                    lines = []

    def command(self, line):
        self.sock.sendall(line.encode("ascii") + b"\r\n")
        reply = self.replies.get(timeout=120)
        if reply is None:
            fail("connection closed after " + line.split(" ")[0])
        return reply

    def expect_ok(self, line):
        reply = self.command(line)
        if not reply[-1].startswith("250 "):
            fail("%s: %r" % (line.split(" ")[0], reply))
        return reply

    def wait_event(self, predicate, what, limit=60):
        deadline = time.time() + limit
        seen = []
        while time.time() < deadline:
            try:
                ev = self.events.get(timeout=1)
            except queue.Empty:
                continue
            seen.append(ev)
            if predicate(ev):
                return ev
        fail("no %s event in %ds (saw %r)" % (what, limit, seen[-5:]))


def socks_connect(socks, host, port):
    """A SOCKS5 CONNECT with the name sent to the proxy; the socket or the reply code."""
    s = socket.create_connection(socks, timeout=90)
    s.sendall(b"\x05\x01\x00")
    if s.recv(2) != b"\x05\x00":
        fail("SOCKS5 greeting refused")
    name = host.encode("ascii")
    s.sendall(b"\x05\x01\x00\x03" + bytes([len(name)]) + name + port.to_bytes(2, "big"))
    head = recv_exact(s, 4)
    if head[1] != 0:
        s.close()
        return None, head[1]
    rest = {1: 4, 4: 16}.get(head[3])
    if rest is None:
        rest = recv_exact(s, 1)[0]
    recv_exact(s, rest + 2)
    return s, 0


def recv_exact(s, n):
    out = b""
    while len(out) < n:
        data = s.recv(n - len(out))
        if not data:
            fail("connection closed early")
        out += data
    return out


def echo_through(socks, host, port=80):
    """Connects to host:port through SOCKS and checks the echo; the SOCKS reply code."""
    s, code = socks_connect(socks, host, port)
    if s is None:
        return code
    s.sendall(b"ping\n")
    if recv_exact(s, 5) != b"ping\n":
        fail("the service did not echo")
    s.close()
    return 0


def main():
    if len(sys.argv) != 5:
        fail(__doc__)
    control, cookie_file = hostport(sys.argv[1]), sys.argv[2]
    socks, target_port = hostport(sys.argv[3]), int(sys.argv[4])

    # Before authenticating: only PROTOCOLINFO, AUTHENTICATE and QUIT; anything else is
    # refused with 514 and the connection closed, with nothing else said.
    c = Control(control)
    info = c.command("PROTOCOLINFO 1")
    auth_line = [l for l in info if l.startswith("250-AUTH ")]
    if not auth_line or "COOKIE" not in auth_line[0]:
        fail("PROTOCOLINFO: %r" % info)
    if ('COOKIEFILE="%s"' % cookie_file) not in auth_line[0]:
        fail("PROTOCOLINFO names another cookie file: %r" % auth_line)
    c.sock.sendall(b"GETINFO status/bootstrap-phase\r\n")
    refused = c.replies.get(timeout=30)
    if refused != ["514 Authentication required."] or c.replies.get(timeout=30) is not None:
        fail("GETINFO before AUTHENTICATE: %r" % refused)

    c = Control(control)
    with open(cookie_file, "rb") as f:
        cookie = f.read()
    if len(cookie) != 32:
        fail("the cookie is %d bytes" % len(cookie))
    c.expect_ok("AUTHENTICATE " + cookie.hex())
    phase = c.expect_ok("GETINFO status/bootstrap-phase")
    if "PROGRESS=100" not in phase[0]:
        fail("bootstrap phase: %r" % phase)
    c.expect_ok("SETEVENTS CIRC STREAM")

    added = c.expect_ok("ADD_ONION NEW:BEST Port=80,127.0.0.1:%d" % target_port)
    service_id = added[0].split("=", 1)[1]
    if not added[0].startswith("250-ServiceID=") or len(service_id) != 56:
        fail("ADD_ONION: %r" % added)
    if not added[1].startswith("250-PrivateKey=ALLIUM-ED25519:"):
        fail("ADD_ONION returned no key: %r" % added)
    host = service_id + ".allium"
    current = c.expect_ok("GETINFO onions/current")
    if current[0] != "250-onions/current=" + service_id:
        fail("onions/current: %r" % current)

    # The service publishes in the background (as Tor's ADD_ONION): retry until reached.
    deadline = time.time() + 120
    while True:
        code = echo_through(socks, host)
        if code == 0:
            break
        if time.time() > deadline:
            fail("the ephemeral service was not reachable (SOCKS reply %d)" % code)
        time.sleep(2)
    print("control_port.py: ephemeral service reached through SOCKS", flush=True)
    c.wait_event(lambda e: e.startswith("650 CIRC ") and " BUILT " in e, "CIRC BUILT")
    c.wait_event(
        lambda e: e.startswith("650 STREAM ") and (" SUCCEEDED 0 %s:80" % host) in e,
        "STREAM SUCCEEDED",
    )

    c.expect_ok("DEL_ONION " + service_id)
    current = c.expect_ok("GETINFO onions/current")
    if current[0] != "250-onions/current=":
        fail("onions/current after DEL_ONION: %r" % current)
    # Gone: the service's circuits are closed; within a little while (the client learns
    # of the closed circuit) every attempt fails, and keeps failing.
    deadline = time.time() + 60
    while echo_through(socks, host) == 0:
        if time.time() > deadline:
            fail("the service is still reachable after DEL_ONION")
        time.sleep(1)
    if echo_through(socks, host) == 0:
        fail("the service was reachable again after DEL_ONION")
    again = c.command("DEL_ONION " + service_id)
    if not again[-1].startswith("552 "):
        fail("second DEL_ONION: %r" % again)

    # An exit stream, NEWNYM, another: the test sees which exits carried them.
    if echo_through(socks, "127.0.0.1", target_port) != 0:
        fail("the exit stream before NEWNYM failed")
    c.expect_ok("SIGNAL NEWNYM")
    if echo_through(socks, "127.0.0.1", target_port) != 0:
        fail("the exit stream after NEWNYM failed")
    bye = c.command("QUIT")
    if not bye[-1].startswith("250 "):
        fail("QUIT: %r" % bye)
    print("control_port.py: OK (service %s... added, reached, removed)" % service_id[:8],
          flush=True)


if __name__ == "__main__":
    main()
