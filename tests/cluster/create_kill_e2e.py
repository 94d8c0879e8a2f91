#!/usr/bin/env python3
"""A topic's replica groups right after creation, with the first broker
(view-0 primary of partition 0, primary of `__meta`) kill -9'd before they
settled (docs/REPLICATION.md, "The stall after a kill right after a topic's
creation").

Each round: 3 brokers (`verity cluster start`), a topic of 3 partitions
with --replicas 3 created through the first broker, broker 1 kill -9'd
--delay s after the creation returned, restarted --down s later; then the
history recorder's idempotent producer at acks=quorum for --seconds s. The
checks: every partition acknowledges its first produce within --bound s of
the producer's start, and the producer gets every report. Rounds run until
--rounds are done (each on a new cluster); with --keep the directories of
failed rounds are kept, with GET /cluster of every broker at the failure.

usage: create_kill_e2e.py [--rounds 5] [--delay 0.3] [--down 0.5]
                          [--seconds 10] [--bound 10] [--verityd PATH]
                          [--producer PATH] [--keep]
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cluster_e2e as ce  # noqa: E402

TOPIC, PARTS = "ctopic", 3


def snapshot(c, path):
    out = {}
    for b in c.brokers():
        try:
            out[b["id"]] = ce.cluster_json(b["http"])
        except Exception as e:  # noqa: BLE001 (a broker down or slow)
            out[b["id"]] = {"error": str(e)}
    with open(path, "w") as f:
        json.dump(out, f, indent=1)


def one_round(k, args):
    tmp = tempfile.mkdtemp(prefix="verity-create-kill-")
    c = ce.Cluster(3, tmp, verityd=args.verityd)
    hist = os.path.join(tmp, "history.jsonl")
    failed_before = ce.failed
    prod = None
    try:
        if not ce.create_topic(c, TOPIC, PARTS, 3):
            return
        time.sleep(args.delay)
        c.kill9(1)
        time.sleep(args.down)
        ce.expect(c.restart(1).returncode == 0, "round %d: restart of broker 1" % k)
        t0 = time.time()
        prod = subprocess.Popen([args.producer or ce.PRODUCER, c.bootstrap, TOPIC, hist, "--name", "c",
                                 "--seconds", str(args.seconds), "--rate", "50",
                                 "--acks", "quorum"])
        firsts = {}
        for p in range(PARTS):
            firsts[p] = ce.first_ack_after(hist, t0, max(0.1, t0 + args.bound - time.time()), p)
        ok = all(v is not None for v in firsts.values())
        if not ok:
            snapshot(c, os.path.join(tmp, "cluster-at-failure.json"))
        ce.expect(ok, "round %d: every partition acknowledged within %.0f s of the producer's "
                  "start: %s" % (k, args.bound,
                                 {p: (None if v is None else round(v, 2))
                                  for p, v in firsts.items()}))
        rc = prod.wait(timeout=args.seconds + 90)
        prod = None
        ce.expect(rc == 0, "round %d: the producer got every report" % k)
        fails = [e for e in ce.events_from(hist, 0) if e.get("op") == "fail"]
        acks = [e for e in ce.events_from(hist, 0) if e.get("op") == "ack"]
        print("  round %d: first ack per partition (s) %s, %d acked, %d failed" %
              (k, {p: (None if v is None else round(v, 2)) for p, v in firsts.items()},
               len(acks), len(fails)), flush=True)
    finally:
        if prod is not None:
            prod.kill()
            prod.wait()
        c.stop()
        if ce.failed > failed_before and args.keep:
            print("  kept", tmp, flush=True)
        else:
            shutil.rmtree(tmp, ignore_errors=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--delay", type=float, default=0.3,
                    help="seconds from the topic's creation to the kill of broker 1")
    ap.add_argument("--down", type=float, default=0.5, help="seconds broker 1 stays down")
    ap.add_argument("--seconds", type=float, default=10, help="production per round")
    ap.add_argument("--bound", type=float, default=10,
                    help="seconds from the producer's start to each partition's first ack")
    ap.add_argument("--verityd", help="another verityd")
    ap.add_argument("--producer", help="another cluster_producer (e.g. built before the fix)")
    ap.add_argument("--keep", action="store_true", help="keep the directories of failed rounds")
    args = ap.parse_args()
    for k in range(1, args.rounds + 1):
        one_round(k, args)
    print("create_kill_e2e: %d passed, %d failed" % (ce.passed, ce.failed), flush=True)
    sys.exit(1 if ce.failed else 0)


if __name__ == "__main__":
    main()
