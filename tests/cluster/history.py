#!/usr/bin/env python3
"""History recorder format and checker for the cluster fault tests (issue 10).

A history is a list of events (one JSON object per line in a file):

    {"op": "send", "v": V}                      a produce was issued (value V, unique)
    {"op": "ack", "v": V, "p": P, "o": O}       acknowledged at partition P, offset O
                                                (O null: acknowledged as a duplicate of a
                                                write whose offset the broker no longer
                                                names, VERITY_EDUPLICATE)
    {"op": "fail", "v": V, "e": "ENAME"}        the client reported a failure
    {"op": "read", "v": V, "p": P, "o": O}      read back after healing

A send with neither ack nor fail is "unknown" (the producer was killed or
the run ended first). Values are "PRODUCER-SEQ" strings: SEQ increases with
the order in which one producer issued them.

check() returns a dict of findings; ok is true only when all are empty:
    lost        acknowledged but not read back
    duplicates  read back more than once (the idempotent producer must not write twice)
    phantoms    read back but never sent
    misplaced   read back at another partition/offset than acknowledged
    reordered   within a partition, one producer's values read in another order
                than sent
    offsets     a partition's offsets read back are not strictly increasing
    forgotten   acknowledged only as VERITY_EDUPLICATE (offsets unknown to the
                broker) although the client keeps at most five batches in flight
Failed and unknown sends may or may not be read back; both are allowed.

Also: replicas_identical(dirs) compares the partition directories of
several replicas file by file, byte for byte.
"""
import collections
import filecmp
import json
import os
import sys


def load(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def seq_of(v):
    prod, _, seq = str(v).rpartition("-")
    return prod, int(seq) if seq.isdigit() else -1


def check(events):
    sent, acked, failed = set(), {}, set()
    reads = collections.defaultdict(list)        # v -> [(p, o)]
    by_part = collections.defaultdict(list)      # p -> [(o, v)] in read order
    for e in events:
        op = e.get("op")
        if op == "send":
            sent.add(e["v"])
        elif op == "ack":
            acked[e["v"]] = (e["p"], e["o"])
        elif op == "fail":
            failed.add(e["v"])
        elif op == "read":
            reads[e["v"]].append((e["p"], e["o"]))
            by_part[e["p"]].append((e["o"], e["v"]))
    f = {
        "lost": sorted(v for v in acked if v not in reads),
        "duplicates": sorted(v for v, r in reads.items() if len(r) > 1),
        "phantoms": sorted(v for v in reads if v not in sent and v not in acked),
        "misplaced": sorted(v for v, at in acked.items()
                            if v in reads and at[1] is not None and at not in reads[v]),
        "reordered": [],
        "offsets": [],
        # acknowledged as VERITY_EDUPLICATE: the broker no longer knew the
        # offsets of a batch the client was still retrying; with at most
        # five batches in flight per partition it keeps them, so this is a
        # lost idempotence entry (the next retry could be written twice)
        "forgotten": sorted(v for v, at in acked.items() if at[1] is None),
    }
    for p, lst in sorted(by_part.items()):
        offs = [o for o, _ in lst]
        if any(b <= a for a, b in zip(offs, offs[1:])):
            f["offsets"].append(p)
        last = {}
        for o, v in sorted(lst):
            prod, seq = seq_of(v)
            if prod in last and seq < last[prod]:
                f["reordered"].append((p, v))
            last[prod] = max(seq, last.get(prod, -1))
    f["ok"] = not any(f[k] for k in ("lost", "duplicates", "phantoms", "misplaced",
                                     "reordered", "offsets", "forgotten"))
    f["counts"] = {"sent": len(sent), "acked": len(acked),
                   "acked_no_offset": sum(1 for at in acked.values() if at[1] is None),
                   "failed": len(failed),
                   "unknown": len(sent - set(acked) - failed), "read": len(reads)}
    return f


def _without_zero_tail(path):
    """The bytes of a segment file without its zero tail (docs/FORMAT.md
    5.3: only the active segment has one, of a length that depends on when
    its broker stopped; a clean stop cuts it)."""
    with open(path, "rb") as f:
        return f.read().rstrip(b"\0")


def replicas_identical(dirs):
    """True (and []) when every replica directory holds the same segment
    files (*.log) with the same bytes; else False and the differences.
    Closed segments are compared byte for byte, whole; the last (active)
    one byte for byte up to its zero tail, which a broker stopped by a
    crash keeps (a batch never ends a file in a zero byte that matters:
    `log verify`, run on every replica first, catches a torn batch)."""
    diffs = []
    names = [sorted(n for n in os.listdir(d) if n.endswith(".log")) for d in dirs]
    for d, n in zip(dirs[1:], names[1:]):
        if n != names[0]:
            diffs.append("%s: segments %s != %s" % (d, n, names[0]))
    for i, name in enumerate(names[0]):
        last = i + 1 == len(names[0])
        for d in dirs[1:]:
            a, b = os.path.join(dirs[0], name), os.path.join(d, name)
            if not os.path.exists(b):
                continue
            if last:
                same = _without_zero_tail(a) == _without_zero_tail(b)
            else:
                same = filecmp.cmp(a, b, shallow=False)
            if not same:
                diffs.append("%s differs from %s" % (b, a))
    return not diffs, diffs


if __name__ == "__main__":
    r = check(load(sys.argv[1]))
    print(json.dumps(r))
    sys.exit(0 if r["ok"] else 1)
