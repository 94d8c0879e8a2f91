#!/usr/bin/env python3
"""A backup that is behind must not answer reads as if it were current
(issue 10: "Fetch and groups see only committed offsets"; a reader asking a
lagging backup for the end took its stale high watermark and stopped short).

3 brokers, one partition with 3 replicas. 20 records; kill -9 one backup;
20 more (committed by the primary and the other backup); pause the primary
and the other backup (SIGSTOP) and start the killed backup again on its
directory: it holds only the first 20. Asked for the partition's offsets,
it must not answer an end below 40 (it answers NOT_LEADER, which the client
follows or, with no primary known, retries until it gives up). Then resume
the others: the same question to the same broker answers 40, and a read
through it returns all 40 records. Then a topic with one replica per
partition: every broker answers its offsets (following NOT_LEADER).

Needs VERITY_BIN_DIR (verity, verityd). Prints "stale-read: N passed, N
failed"; exits 1 on a failure. Every wait is bounded.
"""
import json
import os
import shutil
import signal
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cluster_e2e as ce  # noqa: E402

TOPIC = "stale"


def produce(c, first, n):
    lines = "".join("v-%d\n" % i for i in range(first, first + n))
    r = ce.subprocess.run([ce.VERITY, "produce", TOPIC, "--partition", "0", "--broker",
                           c.bootstrap, "--timeout-ms", "20000"],
                          input=lines, capture_output=True, text=True, timeout=60)
    return ce.expect(r.returncode == 0, "produce %d..%d: %s" % (first, first + n - 1,
                                                                 r.stderr.strip()))


def end_offset(listen, timeout):
    r = ce.verity("offsets", TOPIC, "--partition", "0", "--json", "--broker", listen,
                  timeout=timeout)
    if r.returncode != 0:
        return None, r.stderr.strip()
    return json.loads(r.stdout)["partitions"][0]["end_offset"], r.stdout.strip()


def main():
    tmp = tempfile.mkdtemp(prefix="verity-stale-")
    c = ce.Cluster(3, tmp)
    stopped = []
    try:
        ok = ce.wait_for(lambda: ce.verity("topic", "create", TOPIC, "--partitions", "1",
                                           "--replicas", "3", "--broker", c.bootstrap,
                                           timeout=30).returncode == 0, 30, step=0.5)
        if not ce.expect(ok, "topic with 3 replicas created"):
            return
        produce(c, 0, 20)
        ce.expect(ce.wait_for(lambda: ce.caught_up(c, TOPIC), 30, 0.2), "replicas caught up")
        primary = c.partitions(TOPIC)[0]["primary"]
        backups = [b["id"] for b in c.brokers() if b["id"] != primary]
        lag, other = backups
        c.kill9(lag)
        produce(c, 20, 20)
        for i in (primary, other):
            pid = [b["pid"] for b in c.brokers() if b["id"] == i][0]
            os.kill(pid, signal.SIGSTOP)
            stopped.append(pid)
        ce.expect(c.restart(lag).returncode == 0, "restart of the lagging backup")
        listen = [b["listen"] for b in c.brokers() if b["id"] == lag][0]
        end, out = end_offset(listen, 30)
        print("  lagging backup, peers paused: end=%s (%s)" % (end, out[-160:]), flush=True)
        ce.expect(end is None or end == 40,
                  "a lagging backup does not answer a stale end (got %s, want 40 or an error)"
                  % end)
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        stopped.clear()
        ce.expect(ce.wait_for(lambda: end_offset(listen, 30)[0] == 40, 60, 0.5),
                  "after the peers resume, the same broker answers end 40")
        r = ce.verity("consume", TOPIC, "--partition", "0", "--from", "earliest", "--json",
                      "--broker", listen, timeout=60)
        n = len(r.stdout.splitlines()) if r.returncode == 0 else -1
        ce.expect(n == 40, "a read through that broker returns 40 records (got %d: %s)"
                  % (n, r.stderr.strip()))
        # --replicas 1: each partition lives on one broker; every broker
        # answers `verity offsets` for all of them (ListOffsets followed).
        ok = ce.wait_for(lambda: ce.verity("topic", "create", "single", "--partitions", "3",
                                           "--replicas", "1", "--broker", c.bootstrap,
                                           timeout=30).returncode == 0, 30, step=0.5)
        ce.expect(ok, "topic with 1 replica per partition created")
        for p in range(3):
            r = ce.subprocess.run([ce.VERITY, "produce", "single", "--partition", str(p),
                                   "--broker", c.bootstrap], input="x\n" * (p + 1),
                                  capture_output=True, text=True, timeout=60)
            ce.expect(r.returncode == 0, "produce to single/%d: %s" % (p, r.stderr.strip()))
        for b in c.brokers():
            r = ce.verity("offsets", "single", "--json", "--broker", b["listen"], timeout=60)
            ends = ([x["end_offset"] for x in json.loads(r.stdout)["partitions"]]
                    if r.returncode == 0 else r.stderr.strip())
            ce.expect(ends == [1, 2, 3], "offsets of a 1-replica topic through broker %d: %s"
                      % (b["id"], ends))
    finally:
        for pid in stopped:
            os.kill(pid, signal.SIGCONT)
        c.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
    print("stale-read: %d passed, %d failed" % (ce.passed, ce.failed), flush=True)
    sys.exit(1 if ce.failed else 0)
