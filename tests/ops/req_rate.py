#!/usr/bin/env python3
"""Sends N ListTopics requests one after another over one authenticated
connection and prints {"requests": N, "ms": elapsed, "errors": {...}} (for
tests/ops/test_ops_quota.sh: requests_per_s). Speaks the framing of
docs/PROTOCOL.md by hand: u32 frame length, u32 envelope length, envelope.

usage: req_rate.py HOST:PORT API_KEY N
"""
import json, os, socket, struct, sys, time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vwire import envelope, field, fields, frame, recv_exact  # noqa: E402


def send(s, env):
    s.sendall(frame(env))


def error_of(env):
    """The Envelope's error field (3), 0 when absent."""
    return next((v for num, _, v in fields(env) if num == 3), 0)


def answer(s):
    frame_len, env_len = struct.unpack(">II", recv_exact(s, 8))
    rest = recv_exact(s, frame_len - 4)
    return error_of(rest[:env_len])


def main():
    host, port = sys.argv[1].rsplit(":", 1)
    key, n = sys.argv[2], int(sys.argv[3])
    s = socket.create_connection((host, int(port)), timeout=30)
    send(s, envelope(1, 100, field(1, 1) + field(2, 1) + field(3, b"req_rate")))
    answer(s)
    send(s, envelope(2, 160, field(1, key)))
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
