#!/usr/bin/env python3
"""Pre-authentication abuse while an authenticated client produces (issue 14,
must-show 4), for tests/ops/test_ops_abuse.sh and `make bench-abuse`.
Loopback only; bounded in count and time.

The attack, all at once, each from its own source address:
  idle       N connections that never authenticate (127.0.0.2-4); the
             broker closes them at auth_timeout_ms and they come back
  big        a 2 GiB length prefix on a new connection every 20 ms (.5)
  slowloris  S connections sending one byte of a 1000-byte frame a second (.6)
  brute      B connections sending Authenticate with wrong keys, again as
             soon as answered, reconnecting when closed (.7)
The authenticated client is `verity bench --workload W1` (1,000,000 x
100-byte produces, key in VERITY_API_KEY), RUNS pairs: a run without the
attack, then the attack starts (its idle connections all open, WARM
seconds), a run under it, the attack stops and its connections go. The
figure is the median of the pairs' ratios (the shared host's load drifts
alike for both runs of a pair). The broker's RSS is sampled every 100 ms.

usage: abuse.py --broker HOST:PORT --pid PID --verity PATH [--idle N]
                [--slow S] [--brute B] [--runs R] [--warm-s SECS]
                [--target HOST:PORT [--target-pid PID]] [--pin A,V]
--target aims the attack at another broker while W1 runs against --broker:
the same load on the host, none on W1's broker (a control run).
--pin A,V: the attacker (this process: every thread) on CPU A; the broker
under test (every thread of --pid) and each W1 client on CPU V; the
--target-pid broker of a control on CPU A with its attacker. Both runs of
every pair are pinned alike, so the ratio measures what the attack makes
W1's broker do, not the attacker's own CPU taken from it.
Prints one JSON object (figures and counters).
"""
import argparse, json, os, random, resource, selectors, socket, struct, subprocess, sys
import threading, time


def rss_kb(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def cpu_s(pid):
    """utime + stime of a process, seconds."""
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return (int(v[11]) + int(v[12])) / os.sysconf("SC_CLK_TCK")


def self_cpu_s():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def fds(pid):
    return len(os.listdir(f"/proc/{pid}/fd"))


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vwire import envelope, field as fld, frame as vframe  # noqa: E402


def frame(corr, body_num, body):
    return vframe(envelope(corr, body_num, body))


HELLO = frame(1, 100, fld(1, 1) + fld(2, 1) + fld(3, "abuse"))


def wrong_key():
    return "vk_%016x_%064x" % (random.getrandbits(64), random.getrandbits(256))


class Attack(threading.Thread):
    def __init__(self, a):
        super().__init__(daemon=True)
        self.a = a
        host, port = (a.target or a.broker).rsplit(":", 1)
        self.dest = (host, int(port))
        self.sel = selectors.DefaultSelector()
        self.stop = threading.Event()
        self.c = dict(idle_open=0, idle_open_max=0, idle_connects=0, idle_closed_by_broker=0,
                      connect_failures=0, big_sent=0, big_closed=0, slow_open=0,
                      slow_closed_by_broker=0, brute_attempts=0, brute_answers=0,
                      brute_closed_by_broker=0)
        self.pool = {"idle": set(), "slow": set(), "brute": set()}
        self.slow_pos = {}
        self.hello_wait = set()  # brute connections whose Hello is not answered yet

    def connect(self, kind, src):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind((src, 0))
            s.settimeout(2)
            s.connect(self.dest)
            s.setblocking(False)
        except OSError:
            s.close()
            self.c["connect_failures"] += 1
            return None
        self.sel.register(s, selectors.EVENT_READ, kind)
        if kind in self.pool:
            self.pool[kind].add(s)
        return s

    def drop(self, s, kind):
        try:
            self.sel.unregister(s)
        except (KeyError, ValueError):
            pass
        if kind in self.pool:
            self.pool[kind].discard(s)
        self.slow_pos.pop(s, None)
        self.hello_wait.discard(s)
        s.close()

    def brute_send(self, s):
        try:
            s.sendall(frame(2, 160, fld(1, wrong_key())))
            self.c["brute_attempts"] += 1
        except OSError:
            pass

    def fill(self):
        """Tops the pools up, at most 500 new connections a round."""
        budget = 500
        a = self.a
        while len(self.pool["idle"]) < a.idle and budget > 0:
            src = "127.0.0.%d" % (2 + self.c["idle_connects"] % 3)
            if self.connect("idle", src):
                self.c["idle_connects"] += 1
            budget -= 1
        while len(self.pool["slow"]) < a.slow and budget > 0:
            s = self.connect("slow", "127.0.0.6")
            if s:
                self.slow_pos[s] = 0
            budget -= 1
        while len(self.pool["brute"]) < a.brute and budget > 0:
            s = self.connect("brute", "127.0.0.7")
            if s:
                try:
                    s.sendall(HELLO)
                    self.hello_wait.add(s)
                except OSError:
                    pass
            budget -= 1
        self.c["idle_open"] = len(self.pool["idle"])
        self.c["idle_open_max"] = max(self.c["idle_open_max"], self.c["idle_open"])
        self.c["slow_open"] = len(self.pool["slow"])

    def run(self):
        slow_frame = struct.pack(">II", 1000, 16) + b"\0" * 992
        next_big = next_slow = time.monotonic()
        drain_until = None
        while True:
            now = time.monotonic()
            if self.stop.is_set() and drain_until is None:
                drain_until = now + 2  # no new attack; the broker's last closes are counted
            if drain_until is not None:
                if now >= drain_until or not any(k.data == "big" for k in self.sel.get_map().values()):
                    break
                next_big = next_slow = now + 3600
            else:
                self.fill()
            if now >= next_big:
                next_big = now + 0.02
                s = self.connect("big", "127.0.0.5")
                if s:
                    try:
                        s.sendall(struct.pack(">II", 1 << 31, 4))
                        self.c["big_sent"] += 1
                    except OSError:
                        pass
            if now >= next_slow:
                next_slow = now + 1.0
                for s in list(self.pool["slow"]):
                    p = self.slow_pos[s]
                    try:
                        s.send(slow_frame[p:p + 1])
                        self.slow_pos[s] = p + 1
                    except OSError:
                        pass
            for key, _ in self.sel.select(timeout=0.02):
                s, kind = key.fileobj, key.data
                try:
                    d = s.recv(65536)
                except OSError:
                    d = b""
                if kind == "brute" and d:
                    # Hello's answer, or a refusal (after auth_fail_delay_ms):
                    # guess (again). Answers are small: one recv, one answer.
                    if s in self.hello_wait:
                        self.hello_wait.discard(s)
                    else:
                        self.c["brute_answers"] += 1
                    if drain_until is None:
                        self.brute_send(s)
                    continue
                if d:
                    continue  # an error frame before the close
                self.c[{"idle": "idle_closed_by_broker", "big": "big_closed",
                        "slow": "slow_closed_by_broker",
                        "brute": "brute_closed_by_broker"}[kind]] += 1
                self.drop(s, kind)
        for key in list(self.sel.get_map().values()):
            self.drop(key.fileobj, key.data)


class Sampler(threading.Thread):
    def __init__(self, pid):
        super().__init__(daemon=True)
        self.pid = pid
        self.peak_rss = 0
        self.peak_fds = 0
        self.stop = threading.Event()

    def reset(self):
        self.peak_rss = self.peak_fds = 0

    def run(self):
        while not self.stop.is_set():
            try:
                self.peak_rss = max(self.peak_rss, rss_kb(self.pid))
                self.peak_fds = max(self.peak_fds, fds(self.pid))
            except OSError:
                pass
            time.sleep(0.1)


def pin_pid(pid, cpu):
    """Every thread of pid on cpu (threads made later inherit it)."""
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            os.sched_setaffinity(int(tid), {cpu})
        except OSError:
            pass


def w1(a):
    cmd = [a.verity, "bench", "--broker", a.broker, "--workload", "W1", "--json"]
    if a.pin:
        cmd = ["taskset", "-c", str(a.pin[1])] + cmd
    r = subprocess.run(cmd, capture_output=True, timeout=300, text=True)
    for line in r.stdout.splitlines():
        if line.startswith("{"):
            d = json.loads(line)
            if d.get("workload") == "W1":
                return d["msgs_per_s"]
    sys.exit("abuse: W1 failed: %s" % r.stderr[-500:])


def median(v):
    v = sorted(v)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--pid", type=int, required=True)
    ap.add_argument("--verity", required=True)
    ap.add_argument("--idle", type=int, default=5000)
    ap.add_argument("--slow", type=int, default=200)
    ap.add_argument("--brute", type=int, default=50)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--warm-s", type=float, default=3)
    ap.add_argument("--target", help="attack this broker instead (a control: same host load, "
                    "W1's broker untouched)")
    ap.add_argument("--target-pid", type=int, help="the --target broker's PID (pinned with the "
                    "attacker under --pin)")
    ap.add_argument("--pin", help="A,V: attacker on CPU A; the broker under test and W1 on CPU V")
    a = ap.parse_args()
    if a.pin:
        a.pin = [int(x) for x in a.pin.split(",")]
        if len(a.pin) != 2 or a.pin[0] == a.pin[1] or max(a.pin) >= os.cpu_count():
            sys.exit("abuse: --pin needs two different CPUs of this host")
        # before any thread starts: the sampler and the attack inherit it
        os.sched_setaffinity(0, {a.pin[0]})
        pin_pid(a.pid, a.pin[1])
        if a.target_pid:
            pin_pid(a.target_pid, a.pin[0])
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = a.idle + a.slow + a.brute + 1000
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(need, soft)), hard))
    out = {"idle": a.idle, "slow": a.slow, "brute": a.brute, "runs": a.runs,
           "control": bool(a.target), "pin": a.pin,
           "load_before": os.getloadavg()[0], "rss_idle_kb": rss_kb(a.pid)}
    fds0 = fds(a.pid)
    smp = Sampler(a.pid)
    smp.start()
    # Pairs, so that the shared host's load drifts alike for both: a W1
    # run without the attack, then one with the attack at full strength.
    before, during, ratios = [], [], []
    peak_base = peak_att = peak_fds = 0
    cpu_base = cpu_att = att_s = self_s = base_s = 0.0
    totals = {}
    for i in range(a.runs):
        smp.reset()
        c0, t0 = cpu_s(a.pid), time.monotonic()
        before.append(w1(a))
        cpu_base += cpu_s(a.pid) - c0
        base_s += time.monotonic() - t0
        peak_base = max(peak_base, smp.peak_rss)
        smp.reset()
        att = Attack(a)
        t0, c0, s0 = time.monotonic(), cpu_s(a.pid), self_cpu_s()
        att.start()
        end = t0 + max(a.warm_s, 30)
        while time.monotonic() < end:
            if att.c["idle_open"] >= a.idle and time.monotonic() - t0 >= a.warm_s:
                break
            time.sleep(0.1)
        during.append(w1(a))
        # Each window takes in one wave of deadline closes (bounded).
        end = time.monotonic() + 20
        while time.monotonic() < end and att.c["idle_closed_by_broker"] < a.idle:
            time.sleep(0.1)
        att.stop.set()
        att.join(30)
        att_s += time.monotonic() - t0
        cpu_att += cpu_s(a.pid) - c0
        self_s += self_cpu_s() - s0
        peak_att = max(peak_att, smp.peak_rss)
        peak_fds = max(peak_fds, smp.peak_fds)
        for k, v in att.c.items():
            if k.endswith("_max") or k.endswith("_open"):
                totals[k] = max(totals.get(k, 0), v)
            else:
                totals[k] = totals.get(k, 0) + v
        ratios.append(during[-1] / before[-1])
        # The attack's connections gone before the next pair (or 15 s).
        end = time.monotonic() + 15
        while time.monotonic() < end and fds(a.pid) > fds0 + 16:
            time.sleep(0.1)
    smp.stop.set()
    out["attack_s"] = round(att_s, 1)
    out["broker_cpu_base"] = round(cpu_base / base_s, 2)      # cores
    out["broker_cpu_attack"] = round(cpu_att / att_s, 2)
    out["attacker_cpu"] = round(self_s / att_s, 2)
    out["peak_rss_base_kb"] = peak_base
    out["peak_rss_attack_kb"] = peak_att
    out["peak_fds_attack"] = peak_fds
    out["rss_after_kb"] = rss_kb(a.pid)
    out["attack"] = totals
    out["w1_before"], out["w1_during"] = before, during
    out["ratios"] = [round(r, 3) for r in ratios]
    out["w1_base_median"] = median(before)
    out["w1_attack_median"] = median(during)
    out["ratio"] = round(median(ratios), 3)  # the median of the pairs' ratios
    out["load_after"] = os.getloadavg()[0]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
