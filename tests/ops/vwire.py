"""The few pieces of Verity's wire protocol (docs/PROTOCOL.md) that the ops
test tools write by hand, so that they can send what libverity never would:
protobuf varints and fields, an Envelope, a frame (total length, envelope
length, envelope), and reading answers back. Used by req_rate.py,
tenant_probe.py, acl_conn.py and abuse.py.
"""
import struct


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, payload):
    """A field: an int as a varint (wire type 0); bytes or str
    length-delimited (wire type 2)."""
    if isinstance(payload, int):
        return varint(num << 3) + varint(payload)
    if isinstance(payload, str):
        payload = payload.encode()
    return varint((num << 3) | 2) + varint(len(payload)) + payload


def envelope(corr, body_num, body):
    """Envelope: version 1, correlation id corr, the body in field body_num."""
    return field(1, 1) + field(2, corr) + field(body_num, body)


def frame(env):
    """The frame carrying env: total length, envelope length, envelope."""
    return struct.pack(">II", 4 + len(env), len(env)) + env


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise ConnectionError("closed")
        buf += d
    return buf


def read_varint(b, i):
    """The varint at b[i]: (value, index after it)."""
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def fields(env):
    """Top-level (num, wire, value) of a message."""
    out, i = [], 0
    while i < len(env):
        key, i = read_varint(env, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(env, i)
        elif wire == 2:
            ln, i = read_varint(env, i)
            v, i = env[i:i + ln], i + ln
        elif wire == 1:
            v, i = env[i:i + 8], i + 8
        elif wire == 5:
            v, i = env[i:i + 4], i + 4
        else:
            raise ValueError("bad wire type")
        out.append((num, wire, v))
    return out


def call(s, corr, body_num, body):
    """One request on socket s and its answer: (error, message, the rest of
    the frame after its length: envelope and payload)."""
    s.sendall(frame(envelope(corr, body_num, body)))
    flen, elen = struct.unpack(">II", recv_exact(s, 8))
    rest = recv_exact(s, flen - 4)
    err, msg = 0, b""
    for num, _, v in fields(rest[:elen]):
        if num == 3:
            err = v
        elif num == 4:
            msg = v
    return err, msg.decode(errors="replace"), rest
