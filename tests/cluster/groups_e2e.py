#!/usr/bin/env python3
"""Consumer groups through a kill loop (issue 10, item 5).

3 brokers (`verity cluster start`), a topic with --replicas 3, the history
recorder's idempotent producer at acks=quorum, and one consumer group per
delivery mode (shared, ordered), each read by a real libverity member
(tests/cluster/cluster_group_consumer.c) that acknowledges everything it
gets. Every --every seconds the primary of `__groups` (the coordinator of
every group) or of partition 0, in turn, is kill -9'd and restarted. Then
heal and drain; the checks:

  - every message the producer got acknowledged was acknowledged to each
    group (an ack answered 0 or EALREADY): none lost, and each group's
    describe shows 0 unacknowledged;
  - every delivered value is the one produced at that offset;
  - redeliveries within docs/GROUPS.md's restart bound, per coordinator
    change: no message's delivery count above 1 + the coordinator changes,
    and in all at most changes x (pending_max + 256 x partitions)
    redeliveries per group;
  - every broker's group state (GET /cluster "groups": committed seq and a
    SHA-256 of the durable state) is the same once caught up.

usage: groups_e2e.py [--seconds 40] [--every 10] [--rate 100]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cluster_e2e as ce  # noqa: E402
import history  # noqa: E402

CONSUMER = os.environ.get("CLUSTER_GROUP_CONSUMER",
                          os.path.join(ce.BIN, "..", "tests", "cluster_group_consumer"))
PENDING_MAX = 2000
HORIZON_AHEAD = 256  # GROUP_HORIZON_AHEAD (broker/group/group.h)


def groups_rows(c):
    rows = {}
    for b in c.brokers():
        try:
            rows[b["id"]] = ce.cluster_json(b["http"]).get("groups")
        except Exception:
            rows[b["id"]] = None
    return rows


def coordinator(c):
    for i, r in groups_rows(c).items():
        if r and r.get("coordinator"):
            return i
    return None


def groups_agree(c):
    rows = groups_rows(c)
    if any(not r or r.get("role") not in ("primary", "backup") for r in rows.values()):
        return False
    seen = {(r["view"], r["committed_seq"], r["last_seq"], r["state"]) for r in rows.values()}
    return len(seen) == 1


def takeovers(c):
    """Times a broker became the coordinator, from every broker's log
    (restarts append to nodeN.log)."""
    n = 0
    for b in c.brokers():
        path = os.path.join(c.dir, "node%d.log" % b["id"])
        try:
            with open(path, errors="replace") as f:
                n += sum(1 for line in f if "event=groups_coordinator " in line)
        except OSError:
            pass
    return n


def load(path):
    out = []
    try:
        with open(path) as f:
            for line in f:
                try:
                    out.append(json.loads(line))
                except ValueError:
                    pass  # a line cut by the end of the run
    except OSError:
        pass
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=40)
    ap.add_argument("--every", type=float, default=10)
    ap.add_argument("--rate", type=int, default=100)
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory")
    ap.add_argument("--verityd", help="another verityd (e.g. one without replicated groups, "
                    "to see the test fail)")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verity-groups-e2e-")
    topic, parts = "gtopic", 3
    modes = {"gshared": "shared", "gordered": "ordered"}
    c = ce.Cluster(3, tmp, verityd=args.verityd)
    hist = os.path.join(tmp, "history.jsonl")
    stop_file = os.path.join(tmp, "stop")
    consumers = {}
    kills = []
    kill_ms = []  # (what, wall ms of the kill)
    try:
        ok = ce.wait_for(lambda: ce.verity("topic", "create", topic, "--partitions", str(parts),
                                           "--replicas", "3", "--broker", c.bootstrap,
                                           timeout=30).returncode == 0, 30, step=0.5)
        if not ce.expect(ok, "topic with --replicas 3 created"):
            return
        for g, mode in modes.items():
            r = None
            for _ in range(60):
                r = ce.verity("group", "create", g, "--topic", topic, "--mode", mode,
                              "--from", "earliest", "--max-deliveries", "100",
                              "--pending-max", str(PENDING_MAX), "--broker", c.bootstrap,
                              timeout=30)
                if r.returncode == 0:
                    break
                time.sleep(0.5)
            if not ce.expect(r.returncode == 0, "group %s (%s) created: %s" %
                             (g, mode, r.stderr.strip())):
                return
        # a group on a topic that is not on every broker is refused clearly
        ce.verity("topic", "create", "gsingle", "--partitions", "1", "--broker", c.bootstrap,
                  timeout=30)
        r = ce.verity("group", "create", "gbad", "--topic", "gsingle", "--broker", c.bootstrap)
        ce.expect(r.returncode == 1 and "replicated on every broker" in r.stderr,
                  "a group on a --replicas 1 topic is refused: %s" % r.stderr.strip())
        for g in modes:
            out = os.path.join(tmp, "consumer-%s.jsonl" % g)
            consumers[g] = (out, subprocess.Popen(
                [CONSUMER, c.bootstrap, g, topic, out, "--until-file", stop_file,
                 "--idle-ms", "6000", "--name", g]))
        prod = subprocess.Popen([ce.PRODUCER, c.bootstrap, topic, hist, "--name", "g",
                                 "--seconds", str(args.seconds), "--rate", str(args.rate),
                                 "--acks", "quorum"])
        end = time.monotonic() + args.seconds
        next_kill = time.monotonic() + args.every
        turn = 0
        while next_kill <= end:
            time.sleep(max(0.0, next_kill - time.monotonic()))
            next_kill += args.every
            if turn % 2 == 0:
                what, victim = "__groups", coordinator(c)
                if victim is None and not any(groups_rows(c).values()):
                    # a verityd without __groups: the groups live on the
                    # broker the clients reached first
                    victim = c.brokers()[0]["id"]
            else:
                what, victim = "partition 0", c.partitions(topic).get(0, {}).get("primary")
            turn += 1
            if not victim:
                continue
            t_kill = time.time() * 1000
            c.kill9(victim)
            kills.append((what, victim))
            kill_ms.append((what, t_kill))
            time.sleep(0.5)
            ce.expect(c.restart(victim).returncode == 0, "restart of killed %d" % victim)
        ce.expect(prod.wait(timeout=args.seconds + 120) == 0, "producer got every report")
        for b in c.brokers():
            if not ce.alive(b["pid"]):
                c.restart(b["id"])
        open(stop_file, "w").close()
        for g, (out, p) in consumers.items():
            try:
                rc = p.wait(timeout=180)
            except subprocess.TimeoutExpired:
                p.kill()
                rc = p.wait()
            ce.expect(rc == 0, "consumer %s exited 0 (%s)" % (g, rc))
        ce.expect(ce.wait_for(lambda: groups_agree(c), 60, 0.5),
                  "every broker's group state agrees: %s" %
                  {i: (r or {}).get("state", "")[:12] for i, r in groups_rows(c).items()})
        rows = groups_rows(c)
        print("  __groups: %s" % {i: (r or {}).get("applied") for i, r in rows.items()},
              "ops applied per broker", flush=True)
        produced = {}
        for e in history.load(hist):
            if e.get("op") == "ack" and e.get("o") is not None:
                produced[(e["p"], e["o"])] = e["v"]
        changes = max(0, takeovers(c) - 1)
        print("  kills %s; coordinator changes %d; produced %d acknowledged" %
              (kills, changes, len(produced)), flush=True)
        ce.expect(len(produced) > 0, "something was produced")
        ce.expect(any(w == "__groups" for w, _ in kills), "the coordinator was killed")
        for g, (out, _) in consumers.items():
            ev = load(out)
            acked, counts, wrong = set(), {}, []
            dlv = 0
            for e in ev:
                if e["op"] == "dlv":
                    dlv += 1
                    k = (e["p"], e["o"])
                    counts[k] = max(counts.get(k, 0), e["c"])
                    if k in produced and produced[k] != e["v"]:
                        wrong.append((k, e["v"], produced[k]))
                elif e["op"] == "acked" and e["e"] in ("", "EALREADY"):
                    for o in range(e["o"], e["o"] + e["n"]):
                        acked.add((e["p"], o))
            lost = sorted(k for k in produced if k not in acked)
            redelivered = dlv - len(counts)
            worst = max(counts.values()) if counts else 0
            bound = changes * (PENDING_MAX + HORIZON_AHEAD * parts)
            errs = {}
            for e in ev:
                if e["op"] == "err" or (e["op"] == "acked" and e["e"] not in ("", "EALREADY")):
                    errs[e["e"]] = errs.get(e["e"], 0) + 1
            # failover as a member sees it: kill of the coordinator to its
            # next acknowledged ack (production continues at --rate)
            fo = []
            for what, t in kill_ms:
                if what != "__groups":
                    continue
                after = [e["t"] for e in ev if e["op"] == "acked" and e["e"] == "" and e["t"] > t]
                if after:
                    fo.append((min(after) - t) / 1000.0)
            print("  %s: coordinator kill -> next acknowledged ack, s: %s" %
                  (g, ["%.2f" % x for x in fo]), flush=True)
            print("  %s (%s): delivered %d (%d distinct), redelivered %d (bound %d), highest "
                  "count %d, acked %d, errors %s" % (g, modes[g], dlv, len(counts), redelivered,
                                                   bound, worst, len(acked), errs), flush=True)
            ce.expect(not lost, "%s: %d acknowledged messages never acked to the group: %s" %
                      (g, len(lost), lost[:10]))
            ce.expect(not wrong, "%s: delivered values differ from the produced: %s" %
                      (g, wrong[:5]))
            ce.expect(redelivered <= bound, "%s: %d redeliveries > bound %d" %
                      (g, redelivered, bound))
            ce.expect(worst <= 1 + changes, "%s: a delivery count of %d > 1 + %d changes" %
                      (g, worst, changes))
            r = ce.verity("group", "describe", g, "--json", "--broker", c.bootstrap)
            d = json.loads(r.stdout) if r.returncode == 0 else {}
            ce.expect(r.returncode == 0 and d.get("unacked") == 0,
                      "%s: describe shows 0 unacked: %s" % (g, d.get("unacked", r.stderr.strip())))
    finally:
        for _, p in consumers.values():
            if p.poll() is None:
                p.kill()
                p.wait()
        c.stop()
        if not args.keep and ce.failed == 0:
            import shutil
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            print("  kept", tmp)
    print("groups_e2e: %d passed, %d failed" % (ce.passed, ce.failed))
    sys.exit(1 if ce.failed else 0)


if __name__ == "__main__":
    main()
