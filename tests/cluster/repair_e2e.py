#!/usr/bin/env python3
"""State transfer and damaged-replica repair against real verityd processes
(issue 10, items 1 and 3; docs/REPLICATION.md "State transfer and repair").
Helpers come from cluster_e2e.py.

    repair_e2e.py transfer [--ops 3000]
        3 brokers, one partition on all three; a backup is kill -9'd, the
        recorder produces (acks=quorum, one batch per op) until the primary
        committed --ops more ops than the backup had applied (> the 2,048
        a journal can catch up), the backup restarts: it must catch up by
        state transfer (verity_replica_state_transfers_total done >= 1 and
        GET /cluster), end byte-identical to the others, `verity log verify`
        passes on every replica, 0 acknowledged writes lost.
    repair_e2e.py damage [--mode flip|truncate|both]
        as transfer, but before the backup restarts its disk is damaged:
        flip (bit flips in a closed segment) or truncate (its active
        segment cut in the middle); on start it must detect the damage,
        move the data aside (`<partition>/damaged-*`), never be primary
        while behind, and end identical to the others after repair.

    repair_e2e.py peer-down
        as transfer, with the other backup paused (SIGSTOP) while the
        lagging one restarts: a transfer that asks the paused peer stalls
        (1 s) and the next asks the primary; caught up with the primary,
        then the paused peer resumes and every replica must agree.

    repair_e2e.py catchup [--ops 1500] [--rate 100] [--bound 20]
        catch-up inside the journal (docs/REPLICATION.md "Catch-up"): a
        backup is kill -9'd while the primary commits about --ops ops (fewer
        than the 2,048 that start a state transfer), then restarts while the
        recorder keeps producing at --rate msg/s (0: none); it must apply
        every op the primary had committed at its restart within --bound s,
        by repair (no state transfer), and end identical to the others.
        Prints the catch-up rate (ops/s).

Prints "repair_e2e NAME: N passed, N failed"; exits 1 on a failure. Every
wait is bounded and every process started is stopped by PID.
"""
import argparse
import glob
import os
import re
import signal
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cluster_e2e as ce  # noqa: E402
import history  # noqa: E402

expect = ce.expect
wait_for = ce.wait_for


def metric(http, name, labels):
    with urllib.request.urlopen("http://%s/metrics" % http, timeout=3) as f:
        text = f.read().decode()
    total = 0
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        if all('%s="%s"' % kv in line for kv in labels.items()):
            total += float(line.rsplit(" ", 1)[1])
    return total


def row(c, node, topic, part=0):
    for r in ce.cluster_json(c.http(node)).get("partitions", []):
        if r.get("topic") == topic and r["partition"] == part:
            return r
    return None


def node_log(c, node):
    return os.path.join(c.dir, "node%d.log" % node)


def produce_until(c, topic, hist, name, target_commit, primary, max_s=240, rate=800, secs=5):
    """Runs the recorder in rounds until the primary's commit reaches
    target_commit (bounded by max_s)."""
    t0 = time.monotonic()
    rounds = 0
    while time.monotonic() - t0 < max_s:
        r = row(c, primary, topic)
        if r and r.get("commit", 0) >= target_commit:
            return True, rounds
        rounds += 1
        p = subprocess.run([ce.PRODUCER, c.bootstrap, topic, hist + ".%d" % rounds, "--name",
                            "%s%d" % (name, rounds), "--seconds", str(secs), "--rate", str(rate),
                            "--acks", "quorum"], timeout=120)
        expect(p.returncode == 0, "producer round %d got every delivery report" % rounds)
    r = row(c, primary, topic)
    return bool(r and r.get("commit", 0) >= target_commit), rounds


def load_hist(hist):
    events = []
    for f in sorted(glob.glob(hist + ".*")):
        events += history.load(f)
    return events


def flip_closed_segment(part_dir):
    """Bit flips in the middle of the oldest closed segment; returns its
    path (None when the log has a single segment)."""
    segs = sorted(glob.glob(os.path.join(part_dir, "*.log")))
    if len(segs) < 2:
        return None
    seg = segs[0]
    size = os.path.getsize(seg)
    with open(seg, "r+b") as f:
        for at in (size // 3, size // 2):
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x10]))
    return seg


def truncate_active_segment(part_dir):
    segs = sorted(glob.glob(os.path.join(part_dir, "*.log")))
    seg = segs[-1]
    size = os.path.getsize(seg)
    os.truncate(seg, size // 2)
    return seg, size


def pair_caught_up(c, topic, a, b):
    ra, rb = row(c, a, topic), row(c, b, topic)
    return (ra and rb and ra["role"] in ("primary", "backup") and rb["role"] in ("primary", "backup")
            and ra["applied"] == rb["applied"] and ra["end"] == rb["end"] and ra["applied"] > 0)


def catchup(tmp, ops, rate, bound, verityd=None):
    """A backup restarted inside the journal catches up by repair within
    bound seconds while production goes on (module docstring)."""
    topic = "catchup"
    c = ce.Cluster(3, tmp, verityd=verityd)
    hist = os.path.join(tmp, "history.jsonl")
    bg = None
    try:
        ok = wait_for(lambda: ce.verity("topic", "create", topic, "--partitions", "1",
                                        "--replicas", "3", "--broker", c.bootstrap,
                                        timeout=30).returncode == 0, 30, step=0.5)
        if not expect(ok, "topic created"):
            return
        expect(wait_for(lambda: (row(c, 1, topic) or {}).get("primary"), 30), "a primary exists")
        primary = row(c, 1, topic)["primary"]
        backup = [i for i in (1, 2, 3) if i != primary][0]
        p = subprocess.run([ce.PRODUCER, c.bootstrap, topic, hist + ".0", "--name", "w",
                            "--seconds", "2", "--rate", "200", "--acks", "quorum"], timeout=120)
        expect(p.returncode == 0, "warm-up producer")
        expect(wait_for(lambda: ce.caught_up(c, topic), 30, 0.5), "caught up before the kill")
        applied_before = row(c, backup, topic)["applied"]
        c.kill9(backup)
        # short rounds: the gap must stay inside the journal (< 2,048 ops)
        ok, rounds = produce_until(c, topic, hist, "b", applied_before + ops, primary,
                                   rate=300, secs=1)
        target = row(c, primary, topic)["commit"]
        gap = target - applied_before
        expect(ok and gap < 2048, "primary committed %d ops past the backup's %d (< 2,048)" %
               (gap, applied_before))
        if rate > 0:
            bg = subprocess.Popen([ce.PRODUCER, c.bootstrap, topic, hist + ".bg", "--name", "bg",
                                   "--seconds", str(bound + 10), "--rate", str(rate),
                                   "--acks", "quorum"])
            time.sleep(1)
            target = row(c, primary, topic)["commit"]
            gap = target - applied_before
        load = open("/proc/loadavg").read().split()[:3]
        t0 = time.monotonic()
        expect(c.restart(backup).returncode == 0, "backup %d restarted" % backup)
        t_up = time.monotonic()
        trace = []

        def reached():
            r = row(c, backup, topic)
            if r:
                trace.append((round(time.monotonic() - t0, 2), r["applied"]))
            return bool(r) and r["applied"] >= target
        caught = wait_for(reached, bound, 0.1)
        secs = time.monotonic() - t0
        secs_up = time.monotonic() - t_up
        transfers = metric(c.http(backup), "verity_replica_state_transfers_total",
                           {"group": topic, "outcome": "done"})
        print("  restart took %.2f s; applied over time %s" %
              (t_up - t0, trace[::max(1, len(trace) // 12)]), flush=True)
        # the catch-up proper: from the last sample before the applied op
        # moved to the first at the target (the broker's start, its links
        # and its first START_VIEW come before)
        start = trace[0][1] if trace else 0
        still = [t for t, a in trace if a == start]
        active = secs - (still[-1] if still else 0)
        rate_s = (target - start) / active if caught and active > 0 else 0
        print("CATCHUP ops=%d restart_to_caught_up_s=%.2f up_to_caught_up_s=%.2f active_s=%.2f "
              "ops_per_s=%.0f caught=%s state_transfers=%d background_rate=%d loadavg=%s" %
              (gap, secs, secs_up, active, rate_s, caught, transfers, rate, " ".join(load)),
              flush=True)
        expect(caught, "backup %d applied the %d ops it lacked within %d s (%.1f s)" %
               (backup, gap, bound, secs))
        expect(transfers == 0, "caught up by repair, no state transfer (done=%d)" % transfers)
        if bg:
            expect(bg.wait(timeout=bound + 120) == 0, "background producer got every report")
            bg = None
        expect(wait_for(lambda: ce.caught_up(c, topic), 60, 0.5), "every replica caught up")
        events = load_hist(hist) + ce.read_back(c, topic, 1)
        res = history.check(events)
        print("  counts %s" % res["counts"], flush=True)
        for k in ("lost", "duplicates", "phantoms", "misplaced", "reordered", "offsets",
                  "forgotten"):
            expect(not res[k], "%s: %s" % (k, res[k][:10]))
    finally:
        if bg and bg.poll() is None:
            bg.kill()
            bg.wait(timeout=10)
        c.stop()
    ce.verify_replicas(c, topic, 1)


def scenario(tmp, ops, damage=None, peer_down=False, verityd=None):
    topic = "xfer"
    c = ce.Cluster(3, tmp, verityd=verityd)
    hist = os.path.join(tmp, "history.jsonl")
    figures = {}
    try:
        # damage: small segments, so the log has closed segments to flip bits in
        seg = ["--segment-bytes", str(64 << 10)] if damage else []
        ok = wait_for(lambda: ce.verity("topic", "create", topic, "--partitions", "1",
                                        "--replicas", "3", "--broker", c.bootstrap, *seg,
                                        timeout=30).returncode == 0, 30, step=0.5)
        if not expect(ok, "topic created"):
            return
        expect(wait_for(lambda: (row(c, 1, topic) or {}).get("primary"), 30), "a primary exists")
        primary = row(c, 1, topic)["primary"]
        backup = [i for i in (1, 2, 3) if i != primary][0]
        p = subprocess.run([ce.PRODUCER, c.bootstrap, topic, hist + ".0", "--name", "w",
                            "--seconds", "4" if damage else "2", "--rate", "800" if damage else "200",
                            "--acks", "quorum"], timeout=120)
        expect(p.returncode == 0, "warm-up producer")
        expect(wait_for(lambda: ce.caught_up(c, topic), 30, 0.5), "caught up before the kill")
        applied_before = row(c, backup, topic)["applied"]
        c.kill9(backup)
        target = applied_before + ops
        ok, rounds = produce_until(c, topic, hist, "b", target, primary)
        commit = row(c, primary, topic)["commit"]
        expect(ok, "primary committed %d ops past the backup's %d (commit %d)" %
               (ops, applied_before, commit))
        part_dir = os.path.join([b for b in c.brokers() if b["id"] == backup][0]["data_dir"],
                                "topics", topic, "0")
        if damage in ("flip", "both"):
            seg = flip_closed_segment(part_dir)
            expect(seg is not None, "the backup has a closed segment to damage")
        if damage in ("truncate", "both"):
            seg, size = truncate_active_segment(part_dir)
            print("  truncated %s from %d bytes" % (os.path.basename(seg), size))
        log_lines = ce.count_lines(node_log(c, backup))
        other = [i for i in (1, 2, 3) if i not in (primary, backup)][0]
        other_pid = [b for b in c.brokers() if b["id"] == other][0]["pid"]
        if peer_down:
            # the other backup is paused (a dead peer that holds its port):
            # a transfer that asks it stalls and the next peer is asked
            os.kill(other_pid, signal.SIGSTOP)
        t0 = time.monotonic()
        expect(c.restart(backup).returncode == 0, "backup %d restarted" % backup)
        if peer_down:
            ok = wait_for(lambda: pair_caught_up(c, topic, primary, backup), 120, 0.2)
            expect(ok, "with peer %d paused, backup %d caught up from the primary" % (other, backup))
            figures["with_peer_paused_s"] = round(time.monotonic() - t0, 2)
            stalled = metric(c.http(backup), "verity_replica_state_transfers_total",
                             {"group": topic, "outcome": "stalled"})
            failed_n = metric(c.http(backup), "verity_replica_state_transfers_total",
                              {"group": topic, "outcome": "failed"})
            print("  transfers stalled %d, failed %d before the one that completed" %
                  (stalled, failed_n), flush=True)
            os.kill(other_pid, signal.SIGCONT)
        # never primary while behind: sample its role until it caught up
        roles = set()

        def done():
            r = row(c, backup, topic)
            if r:
                roles.add(r["role"])
            return ce.caught_up(c, topic)
        caught = wait_for(done, 120, 0.2)
        figures["restart_to_caught_up_s"] = round(time.monotonic() - t0, 2)
        expect(caught, "backup %d caught up" % backup)
        expect("primary" not in roles or caught, "the repaired replica was not primary while behind")
        done_n = metric(c.http(backup), "verity_replica_state_transfers_total",
                        {"group": topic, "outcome": "done"})
        expect(done_n >= 1, "backup made a state transfer (metric done=%d)" % done_n)
        r = row(c, backup, topic)
        expect(r.get("state_transfers", {}).get("done", 0) >= 1, "GET /cluster shows it")
        with open(node_log(c, backup), errors="replace") as f:
            ev = f.readlines()[log_lines:]
        for e in ev:
            if "replica_state_transferred" in e or "replica_damaged" in e:
                print("  " + e.strip()[:300])
        m = [e for e in ev if "replica_state_transferred" in e]
        if m:
            kv = dict(re.findall(r"(\w+)=(\S+)", m[-1]))
            figures.update({"ops": kv.get("ops"), "bytes": kv.get("bytes"), "ms": kv.get("ms")})
        if damage:
            moved = glob.glob(os.path.join(part_dir, "damaged-*"))
            expect(moved, "damaged data moved aside, not deleted: %s" % moved)
            expect(any("replica_damaged" in e for e in ev), "replica_damaged event logged")
        events = load_hist(hist) + ce.read_back(c, topic, 1)
        res = history.check(events)
        print("  counts %s" % res["counts"], flush=True)
        for k in ("lost", "duplicates", "phantoms", "misplaced", "reordered", "offsets",
                  "forgotten"):
            expect(not res[k], "%s: %s" % (k, res[k][:10]))
        print("FIGURES", figures, "loadavg", open("/proc/loadavg").read().split()[:3], flush=True)
    finally:
        c.stop()
    ce.verify_replicas(c, topic, 1)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("test", choices=["transfer", "damage", "peer-down", "catchup"])
    ap.add_argument("--ops", type=int, default=None)
    ap.add_argument("--rate", type=int, default=100, help="catchup: msg/s during the catch-up")
    ap.add_argument("--bound", type=int, default=20, help="catchup: seconds allowed")
    ap.add_argument("--mode", choices=["flip", "truncate", "both"], default="both")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--verityd", help="another verityd binary (e.g. an ASan build)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verity-repair-")
    try:
        if a.test == "catchup":
            catchup(tmp, a.ops or 1500, a.rate, a.bound, a.verityd)
        else:
            scenario(tmp, a.ops or 3000, a.mode if a.test == "damage" else None,
                     a.test == "peer-down", a.verityd)
    finally:
        if not a.keep and not ce.failed:
            shutil.rmtree(tmp, ignore_errors=True)
        elif ce.failed:
            print("kept", tmp, "for inspection")
    print("repair_e2e %s: %d passed, %d failed" % (a.test, ce.passed, ce.failed))
    return 1 if ce.failed else 0


if __name__ == "__main__":
    sys.exit(main())
