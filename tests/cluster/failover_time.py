#!/usr/bin/env python3
"""Primary failover time on a 3-broker loopback cluster (issue 10 item 6):
one topic of ONE partition with 3 replicas, idempotent production at
acks=quorum (cluster_producer, --rate msg/s), the partition's primary kill -9'd
--kills times; each time the figure is the wall time from the kill to the
first acknowledgement written to the history after it (polled every 2 ms),
then the broker is restarted and the backups are allowed to catch up.

    failover_time.py [--kills 5] [--rate 500] [--bound S]

Needs VERITY_BIN_DIR and CLUSTER_PRODUCER like cluster_e2e.py. Prints one
line per kill and a summary; exits 1 when a kill got no new acknowledgement
within 30 s, or (--bound) took longer than S seconds."""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cluster_e2e as e2e  # noqa: E402


def acks(path):
    with open(path) as f:
        return sum(1 for line in f if '"ack"' in line)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kills", type=int, default=5)
    ap.add_argument("--rate", type=float, default=500)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--bound", type=float, default=0, help="fail when a failover takes longer")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verity-failover-")
    c = e2e.Cluster(3, tmp)
    hist = os.path.join(tmp, "history.jsonl")
    figures, bad = [], 0
    prod = None
    try:
        ok = e2e.wait_for(lambda: e2e.verity("topic", "create", "fo", "--partitions", "1",
                                             "--replicas", "3", "--broker", c.bootstrap,
                                             timeout=30).returncode == 0, 30, 0.5)
        if not ok:
            print("topic not created")
            return 1
        seconds = a.kills * 70 + 30   # outlives the loop; stopped below
        prod = subprocess.Popen([e2e.PRODUCER, c.bootstrap, "fo", hist, "--name", "f",
                                 "--seconds", str(seconds), "--rate", str(a.rate),
                                 "--acks", "quorum"])
        e2e.wait_for(lambda: os.path.exists(hist) and acks(hist) > 100, 30)
        for k in range(a.kills):
            e2e.wait_for(lambda: e2e.caught_up(c, "fo"), 30, 0.2)
            primary = c.partitions("fo").get(0, {}).get("primary")
            if not primary:
                time.sleep(0.5)   # a view change in progress: try the next round
                continue
            before = acks(hist)
            t0 = time.monotonic()
            c.kill9(primary)
            if e2e.wait_for(lambda: acks(hist) > before, 30, 0.002):
                figures.append(time.monotonic() - t0)
                print("kill %d of node %d: first new ack after %.3f s" % (k + 1, primary,
                                                                         figures[-1]), flush=True)
            else:
                bad += 1
                print("kill %d of node %d: no ack within 30 s" % (k + 1, primary), flush=True)
            c.restart(primary)
        prod.terminate()
        prod.wait(timeout=30)
    finally:
        if prod and prod.poll() is None:
            prod.kill()
        c.stop()
        if a.keep or bad:
            print("kept", tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    if figures:
        s = sorted(figures)
        print("failover s: n=%d min %.3f median %.3f max %.3f loadavg %s" %
              (len(s), s[0], s[len(s) // 2], s[-1], " ".join(open("/proc/loadavg").read().split()[:3])))
        if a.bound and s[-1] > a.bound:
            print("FAIL: a failover took %.3f s (bound %.1f s)" % (s[-1], a.bound))
            bad += 1
    return 1 if bad or not figures else 0


if __name__ == "__main__":
    sys.exit(main())
