#!/usr/bin/env python3
"""A TCP relay for one broker-to-broker link, which a test can cut and heal.

    relay.py --listen 127.0.0.1:0 --target HOST:PORT --control-file F

Listens on --listen, forwards every accepted connection to --target. The
listening address and the control port are written to --control-file as
JSON {"listen": "...", "control": "127.0.0.1:C", "pid": N} once both are
bound. The control port takes one line per connection and answers one line:

    cut up      bytes from the dialer to the target stop (one-way partition)
    cut down    bytes from the target back to the dialer stop
    cut both    both directions stop
    heal        both directions flow again
    reset       close every relayed connection (as a partition long enough
                for TCP to give up); new ones are accepted
    status      {"up": bool, "down": bool, "conns": n, "bytes_up": n, "bytes_down": n}

A cut direction is not read at all: bytes wait in the kernel buffers (as
packets would be retransmitted across a real partition) and flow after
heal unless an endpoint gave up on the connection first. The relay runs
until it gets SIGTERM or SIGINT.
"""
import argparse
import json
import os
import selectors
import signal
import socket
import sys
import threading


def split(hp):
    host, _, port = hp.rpartition(":")
    return host, int(port)


class Relay:
    def __init__(self, listen, target):
        self.target = target
        self.cut = {"up": False, "down": False}
        self.mu = threading.Lock()
        self.pairs = []          # [client, server] sockets
        self.bytes = {"up": 0, "down": 0}
        self.lsock = socket.create_server(split(listen))
        self.csock = socket.create_server(("127.0.0.1", 0))
        self.wake_r, self.wake_w = os.pipe()
        self.stop = False

    def addr(self, s):
        h, p = s.getsockname()[:2]
        return "%s:%d" % (h, p)

    def wake(self):
        os.write(self.wake_w, b"x")

    def control(self, line):
        words = line.split()
        with self.mu:
            if words == ["cut", "up"]:
                self.cut["up"] = True
            elif words == ["cut", "down"]:
                self.cut["down"] = True
            elif words == ["cut", "both"]:
                self.cut["up"] = self.cut["down"] = True
            elif words == ["heal"]:
                self.cut["up"] = self.cut["down"] = False
            elif words == ["reset"]:
                for pair in self.pairs:
                    for s in pair:
                        try:
                            s.close()
                        except OSError:
                            pass
                self.pairs = []
            elif words == ["status"]:
                pass
            else:
                return json.dumps({"error": "unknown command %r" % line})
            st = {"up": self.cut["up"], "down": self.cut["down"], "conns": len(self.pairs),
                  "bytes_up": self.bytes["up"], "bytes_down": self.bytes["down"]}
        self.wake()
        return json.dumps(st)

    def control_loop(self):
        while not self.stop:
            try:
                c, _ = self.csock.accept()
            except OSError:
                return
            with c:
                f = c.makefile("rwb")
                line = f.readline().decode(errors="replace").strip()
                f.write((self.control(line) + "\n").encode())
                f.flush()

    def run(self):
        threading.Thread(target=self.control_loop, daemon=True).start()
        sel = selectors.DefaultSelector()
        while not self.stop:
            sel.close()
            sel = selectors.DefaultSelector()
            sel.register(self.lsock, selectors.EVENT_READ, ("accept", None))
            sel.register(self.wake_r, selectors.EVENT_READ, ("wake", None))
            with self.mu:
                cut = dict(self.cut)
                pairs = list(self.pairs)
            for pair in pairs:
                c, s = pair
                if not cut["up"] and c.fileno() >= 0:
                    sel.register(c, selectors.EVENT_READ, ("up", pair))
                if not cut["down"] and s.fileno() >= 0:
                    sel.register(s, selectors.EVENT_READ, ("down", pair))
            for key, _ in sel.select(timeout=0.5):
                kind, pair = key.data
                if kind == "wake":
                    os.read(self.wake_r, 4096)
                elif kind == "accept":
                    self.accept()
                else:
                    self.forward(kind, pair)

    def accept(self):
        try:
            c, _ = self.lsock.accept()
        except OSError:
            return
        try:
            s = socket.create_connection(split(self.target), timeout=2)
            s.settimeout(None)
        except OSError:
            c.close()   # the target is down: the dialer sees the refusal as a close
            return
        with self.mu:
            self.pairs.append([c, s])

    def forward(self, direction, pair):
        src, dst = (pair[0], pair[1]) if direction == "up" else (pair[1], pair[0])
        try:
            data = src.recv(65536)
            if data:
                dst.sendall(data)
                with self.mu:
                    self.bytes[direction] += len(data)
                return
        except OSError:
            pass
        with self.mu:     # EOF or error: close both ends, as the network would pass it on
            if pair in self.pairs:
                self.pairs.remove(pair)
        for s in pair:
            try:
                s.close()
            except OSError:
                pass


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--listen", default="127.0.0.1:0")
    ap.add_argument("--target", required=True)
    ap.add_argument("--control-file", required=True)
    a = ap.parse_args()
    r = Relay(a.listen, a.target)

    def stop(*_):
        r.stop = True
        r.wake()
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    tmp = a.control_file + ".tmp"
    with open(tmp, "w") as f:
        json.dump({"listen": r.addr(r.lsock), "control": r.addr(r.csock), "pid": os.getpid()}, f)
    os.rename(tmp, a.control_file)
    r.run()
    return 0


def ctl(control_addr, command, timeout=5.0):
    """Sends one control command to a relay; returns its JSON answer."""
    with socket.create_connection(split(control_addr), timeout=timeout) as s:
        s.sendall((command + "\n").encode())
        f = s.makefile("rb")
        return json.loads(f.readline().decode())


if __name__ == "__main__":
    sys.exit(main())
