#!/usr/bin/env python3
"""State transfer of `__meta` to a broker replaced with --rejoin, against
real verityd processes (issue 10; docs/REPLICATION.md "State transfer of
`__meta`"). Helpers come from cluster_e2e.py.

    meta_xfer_e2e.py [--ops 2200] [--crash none|staged|recorded] [--keep-disk]
                     [--load-during N] [--verityd PATH]
        3 brokers. Topics: mx-a (2 partitions on all three), mx-b (one
        replica), mx-gone (created, then deleted). Then --ops InitProducer
        requests (each a new producer id, one `__meta` op; the
        cluster_meta_ops client) drive `__meta` past half a journal (2,048
        ops). A backup of `__meta` is kill -9'd, its data directory
        deleted, and it is started again with `verity cluster restart
        --rejoin`. It must take `__meta` by state transfer
        (replica_state_transferred group=__meta, GET /cluster meta row
        state_transfers.done), end at the same applied op as the others,
        hold the same topics (mx-gone not among them) with their partitions
        open, and, once made primary of `__meta` (the primary is kill -9'd
        until it is), issue producer ids above every id issued before.
        --crash staged|recorded: the first start runs with VERITY_FAULTS set
        so that the broker exits in the middle of installing the state
        (staged: mark and meta.xfer.new written, op not recorded; recorded:
        op recorded, live state not yet replaced); restarted, it must end
        with the old state and transfer again (staged) or load the new one
        (recorded), then pass the same checks.
        --keep-disk: the victim keeps its data directory. It goes down
        holding topic mx-old; while it is down mx-old is deleted and mx-new
        created, then the ops are made; restarted without --rejoin, it must
        take the state by transfer, drop mx-old (its directory removed) and
        open mx-new. With --crash staged the restart cuts the meta log back
        to the applied op, state mark included (meta_log_cut).
        --load-during N: N more InitProducer requests run while the victim
        restarts (the primary has proposals in flight when asked); every
        id stays unique and the checks wait for them to end.

Needs VERITY_BIN_DIR and CLUSTER_META_OPS. Prints "meta_xfer_e2e: N passed,
N failed"; exits 1 on a failure. Every wait is bounded and every process
started is stopped by PID.
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cluster_e2e as ce  # noqa: E402

expect = ce.expect
wait_for = ce.wait_for
OPS = os.environ.get("CLUSTER_META_OPS",
                     os.path.join(ce.BIN, "..", "tests", "cluster_meta_ops"))


def meta_row(c, node):
    return ce.cluster_json(c.http(node)).get("meta") or {}


def topics_of(c, node):
    with urllib.request.urlopen("http://%s/v1/topics" % c.http(node), timeout=3) as f:
        j = json.loads(f.read().decode())
    return sorted((t["name"], t.get("partitions"), t.get("durability"), t.get("retention_ms"),
                   t.get("segment_bytes")) for t in j.get("topics", [])
                  if not t["name"].startswith("__"))


def meta_primary(c):
    for b in c.brokers():
        try:
            r = meta_row(c, b["id"])
        except Exception:
            continue
        if r.get("role") == "primary":
            return b["id"]
    return 0


def issue(c, count, threads, path):
    r = subprocess.run([OPS, c.bootstrap, str(count), path, "--threads", str(threads)],
                       capture_output=True, text=True, timeout=600)
    try:
        res = json.loads(r.stdout.strip().splitlines()[-1])
    except Exception:
        res = {"issued": 0, "failed": count, "dup": 0, "min": 0, "max": 0}
    ids = [int(x) for x in open(path).read().split()] if os.path.exists(path) else []
    return r.returncode, res, ids


def events(path, start, name):
    with open(path, errors="replace") as f:
        return [x.strip() for x in f.readlines()[start:] if "event=%s " % name in x or
                " %s " % name in x or "\"%s\"" % name in x]


def create_topic(c, topic, parts, replicas):
    """Creates topic, retrying; a retry that finds it there counts (the
    first attempt may have timed out on the client after the commit)."""
    def once():
        r = ce.verity("topic", "create", topic, "--partitions", str(parts), "--replicas",
                      str(replicas), "--broker", c.bootstrap, timeout=30)
        return r.returncode == 0 or "already exists" in r.stderr
    return expect(wait_for(once, 60, 0.5), "topic %s (--replicas %d) created" % (topic, replicas))


def restart_rejoin(c, victim, faults=None, rejoin=True):
    env = dict(os.environ)
    env.pop("VERITY_FAULTS", None)
    if faults:
        env["VERITY_FAULTS"] = faults
    return subprocess.run([ce.VERITY, "cluster", "restart", "--dir", c.dir, "--id", str(victim)] +
                          (["--rejoin"] if rejoin else []), capture_output=True, text=True,
                          timeout=60, env=env)


def pid_of(c, i):
    return [b for b in c.brokers() if b["id"] == i][0]["pid"]


def scenario(tmp, n_ops, crash, verityd=None, keep_disk=False, load_during=0):
    c = ce.Cluster(3, tmp, verityd=verityd)
    figures = {}
    try:
        if not (create_topic(c, "mx-a", 2, 3) and create_topic(c, "mx-b", 1, 1) and
                create_topic(c, "mx-gone", 1, 3)):
            return
        r = ce.verity("topic", "delete", "mx-gone", "--broker", c.bootstrap, timeout=30)
        expect(r.returncode == 0, "mx-gone deleted: %s" % r.stderr.strip())
        want = ["mx-a", "mx-b"]
        if keep_disk:
            # the victim goes down holding mx-old; while it is down mx-old is
            # deleted and mx-new created: the state it takes drops the one
            # and opens the other
            if not create_topic(c, "mx-old", 1, 3):
                return
            prim = meta_primary(c)
            victim = [i for i in (1, 2, 3) if i != prim][0]
            vinfo = [b for b in c.brokers() if b["id"] == victim][0]
            old_dir = os.path.join(vinfo["data_dir"], "topics", "mx-old")
            expect(wait_for(lambda: os.path.isdir(old_dir), 20, 0.2),
                   "broker %d holds mx-old" % victim)
            print("  victim broker %d (backup of __meta, primary %d), keeps its disk" %
                  (victim, prim), flush=True)
            c.kill9(victim)
            r = ce.verity("topic", "delete", "mx-old", "--broker", c.bootstrap, timeout=30)
            expect(r.returncode == 0, "mx-old deleted: %s" % r.stderr.strip())
            if not create_topic(c, "mx-new", 1, 3):
                return
            want = ["mx-a", "mx-b", "mx-new"]
        t0 = time.monotonic()
        rc, res, ids1 = issue(c, n_ops, 8, os.path.join(tmp, "ids1.txt"))
        figures["ops_s"] = round(time.monotonic() - t0, 1)
        print("  first ids: %s" % res, flush=True)
        expect(rc == 0 and res["issued"] == n_ops and res["dup"] == 0,
               "%d producer ids issued, none twice (%s)" % (n_ops, res))
        expect(wait_for(lambda: len({meta_row(c, b["id"]).get("applied")
                                     for b in c.brokers() if not keep_disk or
                                     b["id"] != victim}) == 1, 30, 0.3),
               "every running broker applied the same __meta op")
        applied = meta_row(c, meta_primary(c) or 1).get("applied", 0)
        figures["meta_applied"] = applied
        expect(applied > 2048 + 50, "__meta is past half a journal (applied op %d)" % applied)
        if keep_disk:
            prim = meta_primary(c)
        else:
            prim = meta_primary(c)
            victim = [i for i in (1, 2, 3) if i != prim][0]
            vinfo = [b for b in c.brokers() if b["id"] == victim][0]
            print("  victim broker %d (backup of __meta, primary %d)" % (victim, prim),
                  flush=True)
            c.kill9(victim)
            shutil.rmtree(vinfo["data_dir"])
        rejoin = not keep_disk
        mid_load = None
        if load_during:
            # InitProducers go on while the victim restarts: the primary of
            # __meta has proposals in flight when the victim asks it
            mid_path = os.path.join(tmp, "ids_mid.txt")
            mid_load = subprocess.Popen([OPS, c.bootstrap, str(load_during), mid_path,
                                         "--threads", "2"], stdout=subprocess.PIPE, text=True)
            time.sleep(1)
        log = os.path.join(c.dir, "node%d.log" % victim)
        start_line = ce.count_lines(log)
        t1 = time.monotonic()
        if crash != "none":
            site = "meta_install_crash_" + crash
            r = restart_rejoin(c, victim, site, rejoin)
            expect(r.returncode == 0, "restart --rejoin with %s: %s" % (site, r.stderr.strip()))
            pid = pid_of(c, victim)
            expect(wait_for(lambda: not ce.alive(pid), 60, 0.2),
                   "broker %d exited at the fault point %s" % (victim, site))
            expect(events(log, start_line, "replica_state_transfer_started"),
                   "a transfer started before the crash")
            mid = ce.count_lines(log)
            r = restart_rejoin(c, victim, None, rejoin)
            expect(r.returncode == 0, "restart after the crash: %s" % r.stderr.strip())
            if crash == "recorded":
                expect(wait_for(lambda: events(log, mid, "meta_state_adopted"), 30, 0.2),
                       "the recorded state was loaded at the restart (meta_state_adopted)")
            else:
                dropped = "meta_log_cut" if keep_disk else "meta_state_unstaged"
                expect(wait_for(lambda: events(log, mid, dropped), 30, 0.2),
                       "the staged state was dropped at the restart (%s)" % dropped)
        else:
            r = restart_rejoin(c, victim, None, rejoin)
            expect(r.returncode == 0, "restart: %s" % r.stderr.strip())

        if mid_load is not None:
            out, _ = mid_load.communicate(timeout=300)
            ids_mid = [int(x) for x in open(mid_path).read().split()]
            expect(mid_load.returncode == 0 and len(ids_mid) == load_during,
                   "%d more ids issued during the restart: %s" % (load_during, out.strip()))
            expect(not set(ids_mid) & set(ids1), "no id issued twice during the restart")
            ids1 = ids1 + ids_mid

        def caught_up():
            rows = {b["id"]: meta_row(c, b["id"]) for b in c.brokers()}
            v = rows[victim]
            return (not v.get("rejoining") and v.get("role") in ("primary", "backup") and
                    v.get("applied") == rows[prim].get("applied"))
        ok = wait_for(caught_up, 90, 0.3)
        figures["restart_to_caught_up_s"] = round(time.monotonic() - t1, 2)
        expect(ok, "broker %d caught up __meta (same applied op, not rejoining): %s" %
               (victim, meta_row(c, victim)))
        done = [e for e in events(log, start_line, "replica_state_transferred")
                if "group=__meta" in e]
        for e in done + events(log, start_line, "meta_state_unstaged") + \
                events(log, start_line, "meta_state_adopted"):
            print("  " + e[:240], flush=True)
        if crash != "recorded":  # recorded: the install finished at the restart
            expect(done, "__meta taken by state transfer (replica_state_transferred "
                   "group=__meta)")
            st = meta_row(c, victim).get("state_transfers", {})
            expect(st.get("done", 0) >= 1, "GET /cluster meta state_transfers.done >= 1: %s" %
                   st)
        stopped = events(log, start_line, "replica_group_stopped")
        expect(not stopped, "no replica group stopped on broker %d: %s" % (victim, stopped[:2]))
        others = topics_of(c, prim)
        expect([t[0] for t in others] == want,
               "the primary holds %s (mx-gone deleted): %s" % (want, others))
        expect(wait_for(lambda: topics_of(c, victim) == others, 30, 0.3),
               "broker %d holds the same topics: %s vs %s" % (victim, topics_of(c, victim),
                                                              others))
        if keep_disk:
            expect(wait_for(lambda: not os.path.exists(old_dir), 20, 0.2),
                   "mx-old's directory removed from broker %d" % victim)
            expect(wait_for(lambda: len([p for p in ce.cluster_json(c.http(victim))
                                         .get("partitions", []) if p.get("topic") == "mx-new"])
                            == 1, 30, 0.3), "broker %d opened mx-new's replica" % victim)
        expect(wait_for(lambda: len([p for p in ce.cluster_json(c.http(victim))
                                     .get("partitions", []) if p.get("topic") == "mx-a"]) == 2,
                        30, 0.3), "broker %d opened mx-a's replicas" % victim)
        # Producer ids after the transfer: the rejoined broker allocates as
        # primary of __meta; every id must be new.
        for _ in range(8):
            p = meta_primary(c)
            if p == victim:
                break
            if p:
                c.kill9(p)
                wait_for(lambda: meta_primary(c) not in (0, p), 20, 0.2)
                expect(c.restart(p).returncode == 0, "restart of broker %d" % p)
            wait_for(lambda: meta_primary(c) != 0 and
                     all(meta_row(c, b["id"]).get("role") in ("primary", "backup")
                         for b in c.brokers()), 30, 0.3)
        expect(meta_primary(c) == victim, "broker %d became primary of __meta" % victim)
        rc, res2, ids2 = issue(c, 50, 2, os.path.join(tmp, "ids2.txt"))
        print("  ids after the transfer: %s" % res2, flush=True)
        expect(rc == 0 and res2["issued"] == 50, "50 producer ids issued after the transfer")
        expect(ids2 and min(ids2) > max(ids1),
               "every id after the transfer is above every earlier one (%s > %s)" %
               (min(ids2) if ids2 else None, max(ids1) if ids1 else None))
        expect(not set(ids1) & set(ids2), "no producer id issued twice")
        expect(wait_for(lambda: len({meta_row(c, b["id"]).get("applied")
                                     for b in c.brokers()}) == 1, 30, 0.3),
               "every broker at the same __meta op at the end")
        print("FIGURES", figures, "loadavg", open("/proc/loadavg").read().split()[:3], flush=True)
    finally:
        c.stop()
    for b in c.brokers():
        with open(os.path.join(c.dir, "node%d.log" % b["id"]), errors="replace") as f:
            bad = [x for x in f if "Sanitizer" in x or "runtime error:" in x]
        expect(not bad, "broker %d: no sanitizer report: %s" % (b["id"], bad[:2]))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=2200, help="InitProducer requests (__meta ops)")
    ap.add_argument("--crash", choices=["none", "staged", "recorded"], default="none")
    ap.add_argument("--keep-disk", action="store_true",
                    help="the victim keeps its data directory (restarted without --rejoin)")
    ap.add_argument("--load-during", type=int, default=0,
                    help="InitProducer requests made while the victim restarts")
    ap.add_argument("--keep", action="store_true")
    ap.add_argument("--verityd", help="another verityd binary (e.g. an older build)")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="verity-metax-")
    try:
        scenario(tmp, a.ops, a.crash, a.verityd, a.keep_disk, a.load_during)
    finally:
        if not a.keep and not ce.failed:
            shutil.rmtree(tmp, ignore_errors=True)
        elif ce.failed:
            print("kept", tmp, "for inspection")
    print("meta_xfer_e2e: %d passed, %d failed" % (ce.passed, ce.failed))
    return 1 if ce.failed else 0


if __name__ == "__main__":
    sys.exit(main())
