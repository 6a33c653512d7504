#!/usr/bin/env python3
"""Independent implementation of allium's relay-cell crypto (docs/protocol.md §4.5),
written from the text of the spec alone, for the test vectors of §4.7.

Uses AES from the `cryptography` package and a hand-written POLYVAL (RFC 8452).
Prints one `name hex` line per vector; tests/crypto_vectors.rs compares them with the
Rust implementation.
"""
import hashlib
import sys

from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

# ---------------------------------------------------------------- primitives

def aes_enc(key, block):
    e = Cipher(algorithms.AES(key), modes.ECB()).encryptor()
    return e.update(block) + e.finalize()

def aes_dec(key, block):
    d = Cipher(algorithms.AES(key), modes.ECB()).decryptor()
    return d.update(block) + d.finalize()

# POLYVAL's field: GF(2^128) modulo x^128 + x^127 + x^126 + x^121 + 1, elements as
# little-endian 16-byte strings; dot(a, b) = a * b * x^-128.
P = (1 << 128) | (1 << 127) | (1 << 126) | (1 << 121) | 1

def dot(a, b):
    r = 0
    while b:
        if b & 1:
            r ^= a
        a <<= 1
        b >>= 1
    # reduce the (up to 255-bit) product, then divide by x 128 times
    for i in range(255, 127, -1):
        if r >> i & 1:
            r ^= P << (i - 128)
    for _ in range(128):
        if r & 1:
            r ^= P
        r >>= 1
    return r

def polyval(h, data):
    assert len(data) % 16 == 0
    hk = int.from_bytes(h, "little")
    s = 0
    for i in range(0, len(data), 16):
        s = dot(s ^ int.from_bytes(data[i:i + 16], "little"), hk)
    return s.to_bytes(16, "little")

def xor(a, b):
    return bytes(x ^ y for x, y in zip(a, b))

def ctr(key, start, first, nblocks):
    out = b""
    for i in range(nblocks):
        out += aes_enc(key, ((start + first + i) % (1 << 128)).to_bytes(16, "big"))
    return out

# ---------------------------------------------------------------- UIV+ and the layer

class Layer:
    """One direction of one hop: seed = KJ | HJ | KS | HS | N (80 bytes)."""

    def __init__(self, seed, direction):
        self.set_keys(seed[:64])
        self.nonce = seed[64:80]
        self.chain = bytes(16)
        self.counter = 0
        self.direction = direction

    def set_keys(self, k):
        self.kj, self.hj, self.ks, self.hs = k[0:16], k[16:32], k[32:48], k[48:64]

    def ad(self, cmd):
        return bytes([cmd, self.direction]) + bytes(6) + self.counter.to_bytes(8, "big")

    def mask(self, ad, right):
        return polyval(self.hj, self.chain + ad + right)

    def stream(self, v, first, n):
        return ctr(self.ks, int.from_bytes(polyval(self.hs, v), "big"), first, n)

    def enc(self, cmd, body):
        left, right = body[:16], body[16:]
        m = self.mask(self.ad(cmd), right)
        left = xor(aes_enc(self.kj, xor(left, m)), m)
        right = xor(right, self.stream(left, 0, 31))
        return left + right

    def dec(self, cmd, body):
        left, right = body[:16], body[16:]
        right = xor(right, self.stream(left, 0, 31))
        m = self.mask(self.ad(cmd), right)
        left = xor(aes_dec(self.kj, xor(left, m)), m)
        return left + right

    def update(self):
        s = self.stream(self.nonce, 31, 5)
        self.set_keys(s[:64])
        self.nonce = s[64:80]

    # relay side: encrypt, chain on the output tag
    def relay_step(self, cmd, body):
        out = self.enc(cmd, body)
        self.chain = out[:16]
        self.counter += 1
        return out

    # client side: decrypt, chain on the input tag
    def client_step(self, cmd, body):
        out = self.dec(cmd, body)
        self.chain = body[:16]
        self.counter += 1
        return out

RELAY, RELAY_EARLY = 3, 5

def seeds(block):
    return Layer(block[0:80], 0), Layer(block[80:160], 1)

def client_originate(layers, target, cmd, payload):
    """layers: forward Layer per hop; returns (wire body, SENDME tag)."""
    body = layers[target].nonce + payload
    body = layers[target].client_step(cmd, body)
    tag = body[:16]
    layers[target].update()
    for h in range(target - 1, -1, -1):
        body = layers[h].client_step(cmd, body)
    return body, tag

def relay_receive(layer, cmd, body):
    tag_in = body[:16]
    out = layer.relay_step(cmd, body)
    if out[:16] == layer.nonce:
        layer.update()
        return bytes(16) + out[16:], tag_in
    return out, None

def relay_originate(layer, payload):
    body = layer.relay_step(RELAY, layer.nonce + payload)
    layer.update()
    return body, body[:16]

def main():
    # RFC 8452 Appendix A, to check the hand-written POLYVAL.
    h = bytes.fromhex("25629347589242761d31f826ba4b757b")
    x = bytes.fromhex("4f4f95668c83dfb6401762bb2d01a262d1a24ddd2721d006bbe45f20d3c9f362")
    assert polyval(h, x).hex() == "f7a3b47b846119fae5b7866cf5e5b77e"

    block = bytes(range(192))
    payload = lambda c: bytes((i + c) % 256 for i in range(496))
    sha = lambda b: hashlib.sha256(b).hexdigest()

    # One hop, forward: two cells originated by the client, recognised by the relay.
    cf, _ = seeds(block)
    rf, _ = seeds(block)
    for c in range(2):
        wire, tag = client_originate([cf], 0, RELAY, payload(c))
        print(f"fwd1_cell{c}_tag {wire[:16].hex()}")
        print(f"fwd1_cell{c}_sha256 {sha(wire)}")
        print(f"fwd1_cell{c}_sendme {tag.hex()}")
        plain, seen = relay_receive(rf, RELAY, wire)
        assert seen == tag and plain == bytes(16) + payload(c)

    # One hop, backward: two cells originated by the relay, recognised by the client.
    _, rb = seeds(block)
    _, cb = seeds(block)
    for c in range(2):
        wire, tag = relay_originate(rb, payload(c))
        print(f"bwd1_cell{c}_tag {wire[:16].hex()}")
        print(f"bwd1_cell{c}_sha256 {sha(wire)}")
        out = cb.client_step(RELAY, wire)
        assert out[:16] == cb.nonce and out[16:] == payload(c)
        cb.update()

    # Three hops (hop h has key block byte i = (i + h) mod 256), a RELAY_EARLY cell from
    # the client to hop 2.
    hops = [seeds(bytes((i + h) % 256 for i in range(192)))[0] for h in range(3)]
    wire, tag = client_originate(hops, 2, RELAY_EARLY, payload(7))
    print(f"fwd3_early_tag {wire[:16].hex()}")
    print(f"fwd3_early_sha256 {sha(wire)}")
    print(f"fwd3_early_sendme {tag.hex()}")
    return 0

if __name__ == "__main__":
    sys.exit(main())
