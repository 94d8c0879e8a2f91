#!/usr/bin/env python3
"""Unit-level tests of the fault harness itself, with real TCP: the relay
forwards, cuts one way or both ways, heals and resets; the history checker
accepts a good history and rejects a lost ack, a duplicate, a phantom, a
misplaced ack and reordering; replica comparison sees one flipped byte.
Prints "test_harness: N passed, N failed" and exits non-zero on a failure."""
import json
import os
import socket
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import history  # noqa: E402
import relay    # noqa: E402

passed = failed = 0


def expect(cond, what):
    global passed, failed
    if cond:
        passed += 1
    else:
        failed += 1
        print("FAIL:", what)


def wait_for(cond, timeout=5.0):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


class Echo:
    """A TCP server that records what it got and echoes it back."""
    def __init__(self):
        self.srv = socket.create_server(("127.0.0.1", 0))
        self.got = b""
        threading.Thread(target=self.loop, daemon=True).start()

    def loop(self):
        while True:
            try:
                c, _ = self.srv.accept()
            except OSError:
                return
            threading.Thread(target=self.serve, args=(c,), daemon=True).start()

    def serve(self, c):
        while True:
            try:
                d = c.recv(4096)
            except OSError:
                return
            if not d:
                return
            self.got += d
            c.sendall(d)

    def addr(self):
        return "127.0.0.1:%d" % self.srv.getsockname()[1]


def recv_some(s, timeout):
    s.settimeout(timeout)
    try:
        return s.recv(4096)
    except socket.timeout:
        return None


def test_relay(tmp):
    echo = Echo()
    cf = os.path.join(tmp, "relay.json")
    p = subprocess.Popen([sys.executable, os.path.join(HERE, "relay.py"), "--target", echo.addr(),
                          "--control-file", cf])
    try:
        expect(wait_for(lambda: os.path.exists(cf)), "relay wrote its control file")
        info = json.load(open(cf))
        host, port = relay.split(info["listen"])
        c = socket.create_connection((host, port), timeout=2)
        c.sendall(b"one")
        expect(recv_some(c, 2) == b"one", "relay forwards both ways")
        # one way: dialer -> target cut; nothing reaches the target
        st = relay.ctl(info["control"], "cut up")
        expect(st["up"] and not st["down"], "cut up is reported")
        before = echo.got
        c.sendall(b"two")
        expect(recv_some(c, 0.5) is None, "no echo while up is cut")
        expect(echo.got == before, "target got nothing while up is cut")
        relay.ctl(info["control"], "heal")
        expect(recv_some(c, 2) == b"two", "held bytes flow after heal")
        # the other way: target -> dialer cut; the target gets it, the echo waits
        relay.ctl(info["control"], "cut down")
        c.sendall(b"three")
        expect(wait_for(lambda: echo.got.endswith(b"three")), "target gets bytes when down is cut")
        expect(recv_some(c, 0.5) is None, "no echo back while down is cut")
        relay.ctl(info["control"], "heal")
        expect(recv_some(c, 2) == b"three", "echo arrives after heal")
        # both ways
        relay.ctl(info["control"], "cut both")
        c.sendall(b"four")
        expect(recv_some(c, 0.5) is None and not echo.got.endswith(b"four"), "cut both holds all")
        relay.ctl(info["control"], "heal")
        expect(recv_some(c, 2) == b"four", "cut both heals")
        # reset closes relayed connections
        st = relay.ctl(info["control"], "reset")
        expect(st["conns"] == 0, "reset drops connections")
        expect(recv_some(c, 2) == b"", "the dialer sees the close")
        c.close()
        expect("error" in relay.ctl(info["control"], "bogus"), "unknown command refused")
    finally:
        p.terminate()
        p.wait(timeout=5)
        echo.srv.close()


def good_history():
    ev = []
    for i in range(6):
        ev.append({"op": "send", "v": "a-%d" % i})
    for i in range(5):
        ev.append({"op": "ack", "v": "a-%d" % i, "p": i % 2, "o": i // 2})
    ev.append({"op": "fail", "v": "a-5", "e": "ETIMEOUT"})
    for i in range(5):
        ev.append({"op": "read", "v": "a-%d" % i, "p": i % 2, "o": i // 2})
    return ev


def test_checker():
    r = history.check(good_history())
    expect(r["ok"], "a good history passes: %s" % r)
    expect(r["counts"]["acked"] == 5 and r["counts"]["failed"] == 1, "counts")
    # a failed (or unknown) send read back is allowed
    ev = good_history() + [{"op": "read", "v": "a-5", "p": 1, "o": 3}]
    expect(history.check(ev)["ok"], "failed send read back is allowed")
    # lost ack
    ev = [e for e in good_history() if not (e["op"] == "read" and e["v"] == "a-3")]
    r = history.check(ev)
    expect(not r["ok"] and r["lost"] == ["a-3"], "a lost ack is caught: %s" % r)
    # duplicate
    ev = good_history() + [{"op": "read", "v": "a-1", "p": 1, "o": 9}]
    r = history.check(ev)
    expect(not r["ok"] and r["duplicates"] == ["a-1"], "a duplicate is caught")
    # phantom
    ev = good_history() + [{"op": "read", "v": "z-1", "p": 0, "o": 9}]
    r = history.check(ev)
    expect(not r["ok"] and r["phantoms"] == ["z-1"], "a phantom is caught")
    # reordering: a-2 read before a-0 in partition 0
    ev = [e for e in good_history() if e["op"] != "read"]
    ev += [{"op": "read", "v": "a-2", "p": 0, "o": 0}, {"op": "read", "v": "a-0", "p": 0, "o": 1},
           {"op": "read", "v": "a-4", "p": 0, "o": 2}, {"op": "read", "v": "a-1", "p": 1, "o": 0},
           {"op": "read", "v": "a-3", "p": 1, "o": 1}]
    r = history.check(ev)
    expect(not r["ok"] and r["reordered"] and r["misplaced"], "reordering is caught: %s" % r)
    # offsets going backwards in a read
    ev = good_history()
    ev[-1] = dict(ev[-1], o=0)   # a-4 at p0 o0 again
    r = history.check(ev)
    expect(not r["ok"] and 0 in r["offsets"], "non-increasing offsets are caught")
    # an ack as VERITY_EDUPLICATE (offset null): not misplaced, but forgotten
    ev = [dict(e, o=None) if e["op"] == "ack" and e["v"] == "a-1" else e for e in good_history()]
    r = history.check(ev)
    expect(not r["ok"] and r["forgotten"] == ["a-1"] and not r["misplaced"] and
           r["counts"]["acked_no_offset"] == 1, "an ack without offset is caught: %s" % r)


def test_replicas(tmp):
    dirs = []
    for n in range(3):
        d = os.path.join(tmp, "r%d" % n)
        os.makedirs(d)
        with open(os.path.join(d, "00000000000000000000.log"), "wb") as f:
            f.write(bytes(range(256)) * 4)
        dirs.append(d)
    ok, diffs = history.replicas_identical(dirs)
    expect(ok and not diffs, "identical replicas compare equal")
    path = os.path.join(dirs[2], "00000000000000000000.log")
    with open(path, "r+b") as f:
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x10]))
    ok, diffs = history.replicas_identical(dirs)
    expect(not ok and len(diffs) == 1, "one flipped bit is seen")
    # The active (last) segment's zero tail (docs/FORMAT.md 5.3) is not
    # compared; a closed segment's is.
    with open(path, "r+b") as f:
        f.seek(100)
        f.write(b)
    with open(os.path.join(dirs[1], "00000000000000000000.log"), "ab") as f:
        f.write(bytes(65536))
    ok, diffs = history.replicas_identical(dirs)
    expect(ok and not diffs, "a zero tail on the active segment is not a difference")
    with open(os.path.join(dirs[1], "00000000000000000099.log"), "wb") as f:
        f.write(bytes(range(256)))
    for d in (dirs[0], dirs[2]):
        with open(os.path.join(d, "00000000000000000099.log"), "wb") as f:
            f.write(bytes(range(256)))
    ok, diffs = history.replicas_identical(dirs)
    expect(not ok and len(diffs) == 1, "a zero tail on a closed segment is a difference")


def main():
    with tempfile.TemporaryDirectory(prefix="verity-harness-") as tmp:
        test_relay(tmp)
        test_checker()
        test_replicas(tmp)
    print("test_harness: %d passed, %d failed" % (passed, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
