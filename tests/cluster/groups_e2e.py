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
    and in all at most changes x (pending_max + 1024 x partitions)
    redeliveries per group;
  - every broker's group state (GET /cluster "groups": committed seq and a
    SHA-256 of the durable state) is the same once caught up.

With --down (state transfer of __groups), instead of the kill loop: a
broker that is not the coordinator is kill -9'd and kept down until the
coordinator has applied more than half a journal (C_SLOTS / 2 = 2,048) of
__groups ops past it, so it cannot catch up from the journal; restarted,
it must take the coordinator's state by state transfer (its
verity_replica_state_transfers_total{group="__groups",outcome="done"}
rises), agree with the others, and then coordinate: the coordinator is
killed until that broker takes over, and the groups go on to the same
checks.

With --commit-every N the judged members wait for their acks' answers
(verity_group_commit) after every N acks, and no ack may be answered
ELEASE: each group has one member, so a message it acks after a coordinator
change is one it holds (before the fix of holder_ok, a message delivered by
the old coordinator had no holder in the new one's state, and its ack was
refused ELEASE).

usage: groups_e2e.py [--seconds 40] [--every 10] [--rate 100] [--down]
                     [--commit-every N]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cluster_e2e as ce  # noqa: E402
import history  # noqa: E402

CONSUMER = os.environ.get("CLUSTER_GROUP_CONSUMER",
                          os.path.join(ce.BIN, "..", "tests", "cluster_group_consumer"))
PENDING_MAX = 2000
HORIZON_AHEAD = 1024  # GROUP_HORIZON_AHEAD (broker/group/group.h)


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


def transfers_done(http):
    """verity_replica_state_transfers_total{group="__groups",...,outcome="done"}."""
    try:
        with urllib.request.urlopen("http://%s/metrics" % http, timeout=3) as f:
            for line in f.read().decode().splitlines():
                if line.startswith("verity_replica_state_transfers_total{group=\"__groups\"") \
                        and 'outcome="done"' in line:
                    return int(float(line.split()[-1]))
    except Exception:
        pass
    return 0


def applied(c, i):
    try:
        return (groups_rows(c).get(i) or {}).get("applied") or 0
    except Exception:
        return 0


def down_and_transfer(c, args, topic, churn):
    """The --down scenario (see the module text); returns the victim's id."""
    ce.wait_for(lambda: coordinator(c) is not None, 30, 0.5)
    coord = coordinator(c)
    victim = [b["id"] for b in c.brokers() if b["id"] != coord][0]
    before = applied(c, victim)
    c.kill9(victim)
    t0 = time.monotonic()
    need = before + 2048 + 200
    far = ce.wait_for(lambda: applied(c, coordinator(c) or coord) > need, args.down_max, 0.5)
    print("  __groups: broker %d down %.1f s, applied %d -> coordinator at %d" %
          (victim, time.monotonic() - t0, before, applied(c, coordinator(c) or coord)),
          flush=True)
    if not ce.expect(far, "__groups moved more than half a journal (%d ops) while broker %d "
                     "was down" % (need - before, victim)):
        c.restart(victim)
        return victim
    ce.expect(c.restart(victim).returncode == 0, "restart of broker %d" % victim)
    http = c.http(victim)
    t1 = time.monotonic()
    ok = ce.wait_for(lambda: transfers_done(http) >= 1, 60, 0.5)
    ce.expect(ok, "broker %d took the groups' state by state transfer (%d done)" %
              (victim, transfers_done(http)))
    if ok:
        print("  __groups state transfer done %.1f s after the restart" %
              (time.monotonic() - t1), flush=True)
    churn.kill()  # its nacks never end; it only had to move __groups
    churn.wait()
    # (the states are compared once the members stop, at the end: while
    # they ack, the live coordinator is always a few ops ahead)
    # now let the transferred state coordinate
    for _ in range(6):
        cur = coordinator(c)
        if cur == victim:
            break
        if cur is not None:
            c.kill9(cur)
            time.sleep(0.5)
            c.restart(cur)
        ce.wait_for(lambda: coordinator(c) is not None, 20, 0.5)
    ce.expect(coordinator(c) == victim, "broker %d (state transferred) became the coordinator" %
              victim)
    # its copies of the partitions catch up by their own transfer/repair;
    # until then it leases nothing it cannot read (group_fetch's hwm)
    ce.expect(ce.wait_for(lambda: ce.caught_up(c, topic), 120, 1.0),
              "every replica of %s caught up" % topic)
    return victim


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
    ap.add_argument("--down", action="store_true",
                    help="state transfer of __groups instead of the kill loop (module text)")
    ap.add_argument("--down-max", type=float, default=90,
                    help="--down: at most this long for __groups to move half a journal")
    ap.add_argument("--commit-every", type=int, default=0,
                    help="the judged members wait for their acks' answers "
                    "(verity_group_commit) after every N acks; then no ack may be "
                    "answered ELEASE (one member per group: nobody else can hold a message)")
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
    churn = None
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
                 "--idle-ms", "6000", "--name", g] +
                (["--commit-every", str(args.commit_every)] if args.commit_every else [])))
        churn = None
        if args.down:
            # a third group whose member gives every message back and waits
            # for each answer: each nack and redelivery is its own __groups
            # op, so __groups moves half a journal in seconds whatever the
            # produce rate (it is not judged: it only makes ops)
            r = ce.verity("group", "create", "gchurn", "--topic", topic, "--mode", "shared",
                          "--from", "earliest", "--max-deliveries", "1000", "--backoff", "0",
                          "--broker", c.bootstrap, timeout=30)
            ce.expect(r.returncode == 0, "group gchurn created: %s" % r.stderr.strip())
            churn = subprocess.Popen(
                [CONSUMER, c.bootstrap, "gchurn", topic, os.path.join(tmp, "consumer-gchurn.jsonl"),
                 "--until-file", stop_file, "--idle-ms", "2000", "--name", "gchurn",
                 "--commit-every", "1", "--nack", "1"])
        prod = subprocess.Popen([ce.PRODUCER, c.bootstrap, topic, hist, "--name", "g",
                                 "--seconds", str(args.seconds), "--rate", str(args.rate),
                                 "--acks", "quorum"])
        end = time.monotonic() + args.seconds
        next_kill = time.monotonic() + args.every
        turn = 0
        if args.down:
            # the members are running (each wrote its first delivery) before
            # a broker goes down
            outs = [o for o, _ in consumers.values()]
            outs.append(os.path.join(tmp, "consumer-gchurn.jsonl"))
            def delivered(o):
                with open(o) as f:
                    return '"op":"dlv"' in f.read()
            ce.expect(ce.wait_for(lambda: all(delivered(o) for o in outs), 30, 0.1),
                      "every member has its first delivery before the broker goes down")
            kills.append(("__groups down", down_and_transfer(c, args, topic, churn)))
            next_kill = end + 1
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
        if churn is not None:
            try:
                churn.wait(timeout=180)
            except subprocess.TimeoutExpired:
                churn.kill()
                churn.wait()
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
        ce.expect(any(w.startswith("__groups") for w, _ in kills), "the coordinator was killed")
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
            if args.commit_every:
                # the member's acks after a coordinator change are of
                # messages it holds (the only member): never "lease moved"
                elease = sum(n for e, n in errs.items() if "ELEASE" in e)
                ce.expect(elease == 0, "%s: %d acks answered ELEASE" % (g, elease))
            r = ce.verity("group", "describe", g, "--json", "--broker", c.bootstrap)
            d = json.loads(r.stdout) if r.returncode == 0 else {}
            ce.expect(r.returncode == 0 and d.get("unacked") == 0,
                      "%s: describe shows 0 unacked: %s" % (g, d.get("unacked", r.stderr.strip())))
    finally:
        if args.down and churn is not None and churn.poll() is None:
            churn.kill()
            churn.wait()
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
