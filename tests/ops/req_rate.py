#!/usr/bin/env python3
"""Sends N ListTopics requests one after another over one authenticated
connection and prints {"requests": N, "ms": elapsed, "errors": {...}} (for
tests/ops/test_ops_quota.sh: requests_per_s). Speaks the framing of
docs/PROTOCOL.md by hand: u32 frame length, u32 envelope length, envelope.

usage: req_rate.py HOST:PORT API_KEY N
"""
import json, socket, struct, sys, time


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        out.append(b | (0x80 if n else 0))
        if not n:
            return bytes(out)


def field(num, wire, payload):
    tag = varint((num << 3) | wire)
    if wire == 0:
        return tag + varint(payload)
    return tag + varint(len(payload)) + payload


def envelope(corr, body_num, body):
    return field(1, 0, 1) + field(2, 0, corr) + field(body_num, 2, body)


def send(s, env):
    s.sendall(struct.pack(">II", 4 + len(env), len(env)) + env)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        d = s.recv(n - len(buf))
        if not d:
            raise ConnectionError("closed")
        buf += d
    return buf


def read_varint(b, i):
    n = shift = 0
    while True:
        c = b[i]
        i += 1
        n |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return n, i


def error_of(env):
    """The Envelope's error field (3), 0 when absent."""
    i = 0
    while i < len(env):
        key, i = read_varint(env, i)
        num, wire = key >> 3, key & 7
        if wire == 0:
            v, i = read_varint(env, i)
            if num == 3:
                return v
        elif wire == 2:
            ln, i = read_varint(env, i)
            i += ln
        elif wire == 1:
            i += 8
        elif wire == 5:
            i += 4
        else:
            return -1
    return 0


def answer(s):
    frame_len, env_len = struct.unpack(">II", recv_exact(s, 8))
    rest = recv_exact(s, frame_len - 4)
    return error_of(rest[:env_len])


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key, n = sys.argv[2], int(sys.argv[3])
    s = socket.create_connection((host, int(port)), timeout=30)
    send(s, envelope(1, 100, field(1, 0, 1) + field(2, 0, 1) + field(3, 2, b"req_rate")))
    answer(s)
    send(s, envelope(2, 160, field(1, 2, key.encode())))
    if answer(s) != 0:
        print(json.dumps({"error": "authentication failed"}))
        sys.exit(1)
    errors = {}
    t0 = time.monotonic()
    for i in range(n):
        send(s, envelope(10 + i, 104, b""))
        e = answer(s)
        if e:
            errors[str(e)] = errors.get(str(e), 0) + 1
    ms = int((time.monotonic() - t0) * 1000)
    print(json.dumps({"requests": n, "ms": ms, "errors": errors}))


if __name__ == "__main__":
    main()
