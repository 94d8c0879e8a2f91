#!/usr/bin/env python3
"""Replacing a dead broker's disk with --rejoin, against real verityd
processes (issue 10, must-show 7; docs/REPLICATION.md "Replacing a dead
broker's disk"). Helpers come from cluster_e2e.py.

    rejoin_e2e.py [--seconds 40] [--victim primary|backup] [--warmup 4] [--rate 200]
                  [--crash-mid] [--verityd PATH]
        3 brokers, a topic of 3 partitions on all three (--replicas 3), the
        recorder producing idempotently at acks=quorum for --seconds. After
        a warm-up, the victim (partition 0's primary, or a backup of it) is
        kill -9'd, its whole data directory deleted, and it is started again
        with `verity cluster restart --rejoin` while production continues.
        It must log replica_rejoining for __meta, __groups and every
        partition and replica_rejoined for each once caught up (GET /cluster
        rows show rejoining false); then, to show that the rejoined broker
        holds what it acknowledges, one of the two other brokers is kill
        -9'd for a few seconds while production goes on (the rejoined one
        is now needed for every quorum) and restarted. At the end: every
        replica caught up (same view, applied op and log end), 0 lost, 0
        duplicates, order kept, `verity log verify` on every replica and
        the replicas' segment files identical byte for byte. With a longer
        --warmup and a higher --rate the partitions are more than half a
        journal (2,048 ops) ahead of the empty broker, which then catches
        up by state transfer while it rejoins. --crash-mid kills it again 1 s
        into its rejoin and restarts it (groups with a journal resume the
        rejoin from their superblock).

Prints "rejoin_e2e: N passed, N failed"; exits 1 on a failure. Every wait
is bounded and every process started is stopped by PID.
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cluster_e2e as ce  # noqa: E402
import history  # noqa: E402

expect = ce.expect
wait_for = ce.wait_for


def rows_of(c, node, topic):
    """Every replica group row of node: the topic's partitions, __meta and
    __groups (GET /cluster)."""
    j = ce.cluster_json(c.http(node))
    rows = [r for r in j.get("partitions", []) if r.get("topic") == topic]
    for k in ("meta", "groups"):
        if j.get(k):
            rows.append(dict(j[k], topic=j[k].get("topic", "__" + k)))
    return rows


def rejoin_done(c, node, topic, parts):
    try:
        rows = rows_of(c, node, topic)
    except Exception:
        return False
    n_topic = sum(1 for r in rows if r.get("topic") == topic)
    return n_topic == parts and all(not r.get("rejoining") for r in rows)


def events(path, start, name):
    with open(path, errors="replace") as f:
        return [x.strip() for x in f.readlines()[start:] if " %s " % name in x or
                "\"%s\"" % name in x or "event=%s" % name in x]


def scenario(tmp, seconds, victim_kind, warmup, rate, verityd=None, crash_mid=False):
    topic, parts = "rejoin", 3
    c = ce.Cluster(3, tmp, verityd=verityd)
    hist = os.path.join(tmp, "history.jsonl")
    figures = {}
    prod = None
    try:
        if not ce.create_topic(c, topic, parts, 3):
            return
        expect(wait_for(lambda: len(c.partitions(topic)) == parts and
                        all(r.get("primary") for r in c.partitions(topic).values()), 30, 0.2),
               "every partition has a primary")
        prod = subprocess.Popen([ce.PRODUCER, c.bootstrap, topic, hist, "--name", "r",
                                 "--seconds", str(seconds), "--rate", str(rate), "--acks", "quorum"])
        t_start = time.monotonic()
        time.sleep(warmup)  # the victim holds acknowledged data when it dies
        rows = c.partitions(topic)
        primary0 = rows[0]["primary"]
        victim = primary0 if victim_kind == "primary" else [i for i in (1, 2, 3)
                                                            if i != primary0][0]
        vinfo = [b for b in c.brokers() if b["id"] == victim][0]
        applied_before = {r["topic"]: r.get("applied") for r in rows_of(c, victim, topic)}
        print("  victim broker %d (%s of partition 0), applied before: %s" %
              (victim, victim_kind, applied_before), flush=True)
        c.kill9(victim)
        shutil.rmtree(vinfo["data_dir"])
        expect(not os.path.exists(vinfo["data_dir"]), "victim's data dir deleted")
        time.sleep(2)  # the others go on without it (a view change if it was primary)
        log = os.path.join(c.dir, "node%d.log" % victim)
        start_line = ce.count_lines(log)
        t0 = time.monotonic()
        r = ce.verity("cluster", "restart", "--dir", c.dir, "--id", str(victim), "--rejoin",
                      timeout=60)
        expect(r.returncode == 0, "restart --rejoin: %s" % r.stderr.strip())
        if crash_mid:
            # killed again in the middle of its rejoin: the groups that have a
            # journal resume from their superblock's flag
            time.sleep(1.0)
            busy = [x["topic"] for x in rows_of(c, victim, topic) if x.get("rejoining")]
            print("  still rejoining at the second kill: %s" % busy, flush=True)
            c.kill9(victim)
            mid_line = ce.count_lines(log)
            r = ce.verity("cluster", "restart", "--dir", c.dir, "--id", str(victim), "--rejoin",
                          timeout=60)
            expect(r.returncode == 0, "second restart --rejoin: %s" % r.stderr.strip())
            resumed = events(log, mid_line, "replica_rejoining")
            expect(len(resumed) >= len(busy), "rejoin resumed for %d groups after the crash" %
                   len(resumed))
        ok = wait_for(lambda: rejoin_done(c, victim, topic, parts), 120, 0.2)
        figures["restart_to_rejoined_s"] = round(time.monotonic() - t0, 2)
        expect(ok, "broker %d rejoined every group (GET /cluster rejoining false)" % victim)
        started = events(log, start_line, "replica_rejoining")
        done = events(log, start_line, "replica_rejoined")
        for e in done + events(log, start_line, "replica_state_transferred"):
            print("  " + e[:240])
        figures["state_transfers"] = len(events(log, start_line, "replica_state_transferred"))
        want = parts + 2  # the partitions, __meta and __groups
        expect(len(started) >= want, "replica_rejoining logged for %d groups (want %d)" %
               (len(started), want))
        expect(len(done) >= want, "replica_rejoined logged for %d groups (want %d)" %
               (len(done), want))
        roles = {r["topic"] + "/%d" % r["partition"]: r.get("role")
                 for r in rows_of(c, victim, topic)}
        expect(all(x in ("primary", "backup") for x in roles.values()),
               "every group of the rejoined broker is in a normal view: %s" % roles)
        # The rejoined broker now votes and counts in every quorum: take one
        # of the others down while production goes on.
        other = [i for i in (1, 2, 3) if i != victim][0]
        if time.monotonic() - t_start < seconds - 6:
            c.kill9(other)
            time.sleep(4)
            expect(c.restart(other).returncode == 0, "restart of broker %d" % other)
            figures["second_kill"] = other
        expect(prod.wait(timeout=seconds + 120) == 0, "producer got every delivery report")
        prod = None
        t1 = time.monotonic()
        expect(wait_for(lambda: ce.caught_up(c, topic), 90, 0.5), "every replica caught up")
        figures["end_to_caught_up_s"] = round(time.monotonic() - t1, 2)
        evs = history.load(hist) + ce.read_back(c, topic, parts)
        res = history.check(evs)
        print("  counts %s" % res["counts"], flush=True)
        expect(res["counts"]["acked"] > 0, "something was acknowledged")
        for k in ("lost", "duplicates", "phantoms", "misplaced", "reordered", "offsets",
                  "forgotten"):
            expect(not res[k], "%s: %s" % (k, res[k][:10]))
        print("FIGURES", figures, "loadavg", open("/proc/loadavg").read().split()[:3], flush=True)
    finally:
        if prod is not None and prod.poll() is None:
            prod.kill()
            prod.wait(timeout=10)
        c.stop()
    ce.verify_replicas(c, topic, parts)
    for b in c.brokers():
        with open(os.path.join(c.dir, "node%d.log" % b["id"]), errors="replace") as f:
            bad = [x for x in f if "Sanitizer" in x or "runtime error:" in x]
        expect(not bad, "broker %d: no sanitizer report: %s" % (b["id"], bad[:2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=40)
    ap.add_argument("--victim", choices=["primary", "backup"], default="primary")
    ap.add_argument("--warmup", type=int, default=4, help="seconds of production before the kill")
    ap.add_argument("--rate", type=int, default=200, help="messages per second")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--verityd", help="another verityd binary (e.g. an ASan build)")
    ap.add_argument("--crash-mid", action="store_true",
                    help="kill -9 the victim again 1 s into its rejoin and restart it")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verity-rejoin-")
    try:
        scenario(tmp, a.seconds, a.victim, a.warmup, a.rate, a.verityd, a.crash_mid)
    finally:
        if not a.keep and not ce.failed:
            shutil.rmtree(tmp, ignore_errors=True)
        elif ce.failed:
            print("kept", tmp, "for inspection")
    print("rejoin_e2e: %d passed, %d failed" % (ce.passed, ce.failed))
    return 1 if ce.failed else 0


if __name__ == "__main__":
    sys.exit(main())
