#!/usr/bin/env python3
"""Resource attacks on a running verityd, for tests/ops/test_ops_attack.sh and
the figures in docs/OPERATIONS.md. Loopback only; bounded in count and time.

usage: attack.py MODE --broker HOST:PORT --pid PID --verity PATH [--target HOST:PORT] [options]
  partial    N connections each announce a frame of FRAME_MB and send PART_MB
  idle       N connections that connect and send nothing
  slowloris  N connections that send one byte of a frame every second
  http-idle  N idle connections to the admin HTTP port (--http HOST:PORT)
Prints one JSON object: baseline, peak and after RSS (KiB), the operator's
`verity broker status` result during the attack, and per-mode counts.
"""
import argparse, errno, json, os, select, socket, struct, subprocess, sys, time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


def hostport(s):
    h, p = s.rsplit(":", 1)
    return h, int(p)


def status(args):
    t0 = time.monotonic()
    try:
        r = subprocess.run([args.verity, "broker", "status", "--json", "--broker", args.broker],
                           capture_output=True, timeout=args.status_timeout)
        ok = r.returncode == 0
    except subprocess.TimeoutExpired:
        ok = False
    return {"ok": ok, "seconds": round(time.monotonic() - t0, 3)}


def connect_many(n, dest, src):
    socks, refused = [], 0
    for _ in range(n):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((src, 0))
            s.connect(dest)
            s.setblocking(False)
            socks.append(s)
        except OSError:
            refused += 1
            s.close()
    return socks, refused


def alive(socks, wait=0.5, most=5.0):
    """Counts sockets the broker has not closed (no EOF, no error frame):
    waits until none was closed for wait seconds (at most `most` seconds in
    all: on a loaded host the broker may still be accepting and closing the
    connections past its limit from the listen backlog)."""
    poller = select.poll()
    by_fd = {s.fileno(): s for s in socks}
    for fd in by_fd:
        poller.register(fd, select.POLLIN)
    closed = set()
    t0 = time.monotonic()
    quiet_until = t0 + wait
    while time.monotonic() < min(quiet_until, t0 + most) and len(closed) < len(socks):
        left = min(quiet_until, t0 + most) - time.monotonic()
        for fd, _ in poller.poll(max(1, int(left * 1000))):
            closed.add(fd)  # EOF or an error frame: refused or closing
            poller.unregister(fd)
            quiet_until = time.monotonic() + wait
    return len(socks) - len(closed)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode")
    ap.add_argument("--broker", required=True)
    ap.add_argument("--target", help="attack this HOST:PORT (e.g. the Kafka listener) "
                    "instead of --broker; status still asks --broker")
    ap.add_argument("--http")
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--verity", required=True)
    ap.add_argument("-n", type=int, default=100)
    ap.add_argument("--frame-mb", type=float, default=16)
    ap.add_argument("--part-mb", type=float, default=10)
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--src", default="127.0.0.2", help="attacker's source address")
    ap.add_argument("--status-timeout", type=float, default=10)
    args = ap.parse_args()
    dest = hostport(args.target or args.broker)
    out = {"mode": args.mode, "n": args.n, "baseline_rss_kb": rss_kb(args.pid),
           "baseline_fds": fds(args.pid)}
    peak = out["baseline_rss_kb"]
    t_end = time.monotonic() + args.seconds

    if args.mode == "partial":
        socks, refused = connect_many(args.n, dest, args.src)
        frame_len = int(args.frame_mb * (1 << 20)) - 64
        quota = int(args.part_mb * (1 << 20))
        sent = {s: 0 for s in socks}
        head = struct.pack(">II", frame_len, 16)
        for s in socks:
            try:
                sent[s] += s.send(head)
            except OSError:
                pass
        chunk = b"\0" * 65536
        status_res = None
        while time.monotonic() < t_end:
            want = [s for s in socks if sent[s] < quota and s.fileno() >= 0]
            if not want:
                break
            _, w, _ = select.select([], want, [], 0.2)
            for s in w:
                try:
                    sent[s] += s.send(chunk[: min(len(chunk), quota - sent[s])])
                except OSError:
                    sent[s] = quota
            peak = max(peak, rss_kb(args.pid))
            if status_res is None and time.monotonic() > t_end - args.seconds / 2:
                status_res = status(args)
        if status_res is None:
            status_res = status(args)
        peak = max(peak, rss_kb(args.pid))
        out.update(refused=refused, sent_mb=round(sum(sent.values()) / (1 << 20), 1),
                   status_during=status_res)
    elif args.mode == "idle":
        socks, refused = connect_many(args.n, dest, args.src)
        peak = max(peak, rss_kb(args.pid))
        n_alive = alive(socks)
        out.update(connected=len(socks), refused_at_connect=refused, open_after_accept=n_alive,
                   broker_fds=fds(args.pid), status_during=status(args))
        peak = max(peak, rss_kb(args.pid))
    elif args.mode == "slowloris":
        socks, refused = connect_many(args.n, dest, args.src)
        frame = struct.pack(">II", 1000, 16) + b"\0" * 992
        pos = {s: 0 for s in socks}
        closed_at = {}
        t0 = time.monotonic()
        status_res = None
        while time.monotonic() < t_end and len(closed_at) < len(socks):
            for s in socks:
                if s in closed_at:
                    continue
                try:
                    s.send(frame[pos[s]: pos[s] + 1])
                    pos[s] += 1
                except OSError:
                    closed_at[s] = time.monotonic() - t0
            r, _, _ = select.select([s for s in socks if s not in closed_at], [], [], 1.0)
            for s in r:
                try:
                    d = s.recv(4096)
                except OSError:
                    d = b""
                closed_at.setdefault(s, time.monotonic() - t0)
            peak = max(peak, rss_kb(args.pid))
            if status_res is None:
                status_res = status(args)
        out.update(closed=len(closed_at), open=len(socks) - len(closed_at),
                   max_close_s=round(max(closed_at.values()), 2) if closed_at else None,
                   status_during=status_res)
    elif args.mode == "http-idle":
        socks, refused = connect_many(args.n, hostport(args.http), args.src)
        # The most descriptors the broker holds over a 2 s window.
        most, end = 0, time.monotonic() + 2
        while time.monotonic() < end:
            most = max(most, fds(args.pid))
            time.sleep(0.05)
        out.update(connected=len(socks), broker_fds_during=most, status_during=status(args))
    else:
        sys.exit("unknown mode")

    out["peak_rss_kb"] = peak
    for s in locals().get("socks", []):
        s.close()
    # After: poll until RSS is back within 64 MiB of the baseline (or 15 s).
    end = time.monotonic() + 15
    while time.monotonic() < end:
        if rss_kb(args.pid) <= out["baseline_rss_kb"] + 64 * 1024:
            break
        time.sleep(0.2)
    out["after_rss_kb"] = rss_kb(args.pid)
    out["after_fds"] = fds(args.pid)
    out["status_after"] = status(args)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
