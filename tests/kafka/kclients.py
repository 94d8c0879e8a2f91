#!/usr/bin/python3
"""Kafka-client checks against a running verityd's Kafka listener (issue 15).

Each subcommand exits 0 on success and prints one line per check; any
mismatch raises (exit 1). Run by tests/kafka/run.sh, which owns the broker.

  idem BOOT TOPIC N OUT        confluent-kafka idempotent producer: sends N keyed
                               messages, writes the acknowledged (partition,
                               offset, key) triples to OUT
  readback BOOT TOPIC ACKED    reads the topic from the beginning with
                               confluent-kafka; every acknowledged message is
                               present exactly once, offsets strictly
                               increasing per partition, keys in send order
  kp_produce BOOT TOPIC N      kafka-python producer, acks=all
  kp_group BOOT TOPIC GROUP N OUT  kafka-python group consumer: reads N,
                               commits, writes each partition's position to OUT
  kp_committed BOOT TOPIC GROUP OUT  the group's committed offsets equal OUT
  fill BOOT TOPIC N            N keyed messages (idempotent producer)
  group3 BOOT TOPIC GROUP N TMP  three confluent-kafka members with manual
                               commits; one is killed -9 mid-stream; its
                               partitions move, nothing is lost, and only its
                               uncommitted tail is read twice
  badinput HOST PORT           malformed frames: typed errors or a closed
                               connection, and the broker keeps answering
"""
import socket
import struct
import sys
import time


def idem(boot, topic, n, out):
    import confluent_kafka as ck
    p = ck.Producer({'bootstrap.servers': boot, 'enable.idempotence': True,
                     'linger.ms': 5, 'message.timeout.ms': 120000,
                     'reconnect.backoff.max.ms': 200, 'retry.backoff.ms': 50})
    acked = []
    errors = []

    def cb(err, msg):
        if err:
            errors.append(str(err))
        else:
            acked.append((msg.partition(), msg.offset(), msg.key().decode()))

    for i in range(n):
        while True:
            try:
                p.produce(topic, key=b'%08d' % i, value=b'value-%d' % i,
                          headers=[('seq', b'%d' % i)], on_delivery=cb)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(180)
    with open(out, 'w') as f:
        for a in acked:
            f.write('%d %d %s\n' % a)
    print('idem: sent %d acked %d errors %d unflushed %d' % (n, len(acked), len(errors), left))
    if errors:
        print('idem: first errors', errors[:3])
    # A fatal idempotence error would be a defect; timeouts are reported.
    assert not any('Fatal' in e or 'OUT_OF_ORDER' in e for e in errors), errors[:3]


def readback(boot, topic, acked_file):
    import confluent_kafka as ck
    acked = {}
    for line in open(acked_file):
        p, o, k = line.split()
        acked[(int(p), int(o))] = k
    c = ck.Consumer({'bootstrap.servers': boot, 'group.id': 'readback-%d' % time.time(),
                     'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
                     'enable.partition.eof': True})
    md = c.list_topics(topic, timeout=10)
    parts = sorted(md.topics[topic].partitions)
    c.assign([ck.TopicPartition(topic, p, ck.OFFSET_BEGINNING) for p in parts])
    eof = set()
    seen = {}
    last = {}
    keys_by_part = {}
    deadline = time.time() + 120
    while len(eof) < len(parts) and time.time() < deadline:
        m = c.poll(1.0)
        if m is None:
            continue
        if m.error():
            if m.error().code() == ck.KafkaError._PARTITION_EOF:
                eof.add(m.partition())
                continue
            raise RuntimeError(m.error())
        p, o = m.partition(), m.offset()
        assert o > last.get(p, -1), ('offsets not increasing', p, o)
        last[p] = o
        k = m.key().decode()
        seen[k] = seen.get(k, 0) + 1
        keys_by_part.setdefault(p, []).append(k)
        assert m.headers() == [('seq', str(int(k)).encode())], m.headers()
        assert m.value() == b'value-%d' % int(k)
    c.close()
    assert len(eof) == len(parts), 'did not reach the end of every partition'
    dups = [k for k, v in seen.items() if v > 1]
    assert not dups, ('duplicates', dups[:5], len(dups))
    for (p, o), k in acked.items():
        assert k in seen, ('acknowledged message lost', p, o, k)
    for p, ks in keys_by_part.items():
        assert ks == sorted(ks), ('partition %d out of send order' % p)
    print('readback: %d acknowledged, %d read, 0 duplicates, order kept' % (len(acked), len(seen)))


def kp_produce(boot, topic, n):
    from kafka import KafkaProducer
    p = KafkaProducer(bootstrap_servers=boot, acks='all', api_version_auto_timeout_ms=10000)
    futs = [p.send(topic, key=b'kp%d' % i, value=b'kafka-python %d' % i,
                   headers=[('h', b'%d' % i)]) for i in range(n)]
    p.flush(30)
    for f in futs:
        f.get(timeout=30)
    p.close()
    print('kp_produce: %d acknowledged' % n)


def kp_group(boot, topic, group, n, out):
    from kafka import KafkaConsumer
    c = KafkaConsumer(topic, bootstrap_servers=boot, group_id=group,
                      auto_offset_reset='earliest', enable_auto_commit=False,
                      consumer_timeout_ms=20000)
    got = 0
    pos = {}
    for m in c:
        assert m.value == b'kafka-python %s' % m.key[2:], (m.key, m.value)
        assert m.headers == [('h', m.key[2:])], m.headers
        pos[m.partition] = m.offset + 1
        got += 1
        if got == n:
            break
    c.commit()
    c.close()
    assert got == n, (got, n)
    with open(out, 'w') as f:
        for p, o in sorted(pos.items()):
            f.write('%d %d\n' % (p, o))
    print('kp_group: read and committed %d' % got)


def kp_committed(boot, topic, group, posfile):
    from kafka import KafkaConsumer, TopicPartition
    want = {}
    for line in open(posfile):
        p, o = line.split()
        want[int(p)] = int(o)
    c = KafkaConsumer(bootstrap_servers=boot, group_id=group, enable_auto_commit=False)
    for p, o in want.items():
        off = c.committed(TopicPartition(topic, p))
        assert off == o, ('committed offset differs', p, off, o)
    c.close()
    print('kp_committed: %d partitions, committed offsets read back after restart' % len(want))


def describe_check(list_file, describe_file, offsets_file, topic, group, posfile, extra):
    """`verity group list --json` and `verity group describe GROUP --json` show
    the Kafka group: mode kafka, the committed offsets of posfile, the high
    watermarks of `verity offsets TOPIC --json`, and a lag per partition of
    high watermark - committed. Lag counts offsets, as Kafka's does, so the
    control records a restart wrote (checkpoints) count too: the total is at
    least `extra`, the messages produced after the commit."""
    import json
    want = {}
    for line in open(posfile):
        p, o = line.split()
        want[int(p)] = int(o)
    listed = [g for g in json.load(open(list_file)) if g['name'] == group]
    assert len(listed) == 1 and listed[0]['mode'] == 'kafka', ('not listed as kafka', listed)
    d = json.load(open(describe_file))
    assert d['mode'] == 'kafka' and d['name'] == group, (d['mode'], d['name'])
    assert d['topics'] == [topic], d['topics']
    hw = {p['partition']: p['end_offset'] for p in json.load(open(offsets_file))['partitions']}
    got = {p['partition']: p for p in d['partitions'] if p['topic'] == topic}
    assert set(got) == set(want), ('partitions', sorted(got), sorted(want))
    lag = 0
    for p, o in want.items():
        assert got[p]['committed'] == o, ('committed', p, got[p]['committed'], o)
        assert got[p]['high_watermark'] == hw[p], ('high watermark', p, got[p]['high_watermark'], hw[p])
        assert got[p]['unacked'] == hw[p] - o, ('lag', p, got[p]['unacked'], hw[p] - o)
        lag += got[p]['unacked']
    assert lag >= extra, ('total lag', lag, extra)
    assert listed[0]['unacked'] == lag, ('list lag', listed[0]['unacked'], lag)
    print('describe_check: Kafka group %s listed and described, %d partitions, lag %d' % (group, len(want), lag))
    return lag


def crosscheck(kcat_file, verity_file):
    """kcat -f '%k\\t%s\\t%h\\t%T\\n' lines and `verity consume --format json`
    lines hold the same records: keys, values, headers, timestamps."""
    import json
    a = []
    for line in open(kcat_file, encoding='utf-8'):
        k, v, h, t = line.rstrip('\n').split('\t')
        hs = [tuple(x.split('=', 1)) for x in h.split(',')] if h else []
        a.append((k, v, tuple(hs), int(t)))
    b = []
    for line in open(verity_file, encoding='utf-8'):
        r = json.loads(line)
        hs = tuple((x['key'], x['value']) for x in r.get('headers', []))
        b.append((r['key'], r['value'], hs, int(r['timestamp'])))
    assert len(a) == len(b), (len(a), len(b))
    assert sorted(a) == sorted(b), 'records differ'
    print('crosscheck: %d records identical (key, value, headers, timestamp)' % len(a))


def fill(boot, topic, n):
    import confluent_kafka as ck
    p = ck.Producer({'bootstrap.servers': boot, 'enable.idempotence': True, 'linger.ms': 5})
    for i in range(n):
        p.produce(topic, key=b'%08d' % i, value=b'g%d' % i)
        p.poll(0)
    assert p.flush(60) == 0
    print('fill: %d messages' % n)


def member(boot, topic, group, out):
    """A group member with manual commits: logs every message as 'M p o key'
    and every successful commit as 'C p next_offset' (flushed at once)."""
    import confluent_kafka as ck
    c = ck.Consumer({'bootstrap.servers': boot, 'group.id': group,
                     'auto.offset.reset': 'earliest', 'enable.auto.commit': False,
                     'session.timeout.ms': 6000, 'heartbeat.interval.ms': 500})
    c.subscribe([topic])
    f = open(out, 'w', buffering=1)
    idle_since = time.time()
    n = 0
    while time.time() - idle_since < 5:
        m = c.poll(0.5)
        if m is None or m.error():
            continue
        idle_since = time.time()
        f.write('M %d %d %s %.6f\n' % (m.partition(), m.offset(), m.key().decode(), time.time()))
        n += 1
        time.sleep(0.002)
        if n % 25 == 0:
            try:
                for tp in c.commit(asynchronous=False) or []:
                    if tp.offset >= 0 and not tp.error:
                        f.write('C %d %d %.6f\n' % (tp.partition, tp.offset, time.time()))
            except ck.KafkaException:
                pass  # rebalancing: the next commit carries the position
    c.close()


def group3(boot, topic, group, n, tmp):
    import os
    import signal
    import subprocess
    outs = ['%s/member%d.log' % (tmp, i) for i in range(3)]
    procs = [subprocess.Popen([sys.executable, __file__, 'member', boot, topic, group, o])
             for o in outs]

    def lines(o):
        try:
            return open(o).read().splitlines()
        except FileNotFoundError:
            return []

    deadline = time.time() + 60
    while time.time() < deadline:
        if all(sum(1 for x in lines(o) if x.startswith('C ')) >= 2 for o in outs):
            break
        time.sleep(0.05)
    else:
        raise RuntimeError('members did not all consume and commit')
    t_kill = time.time()
    os.kill(procs[0].pid, signal.SIGKILL)
    procs[0].wait()
    for p in procs[1:]:
        assert p.wait(timeout=120) == 0
    dead = lines(outs[0])
    commits = []  # (time, partition, next offset), from every member
    reads = []    # (time, partition, offset, member, key)
    for i, o in enumerate(outs):
        for x in lines(o):
            f = x.split()
            if f[0] == 'C':
                commits.append((float(f[3]), int(f[1]), int(f[2])))
            elif f[0] == 'M':
                reads.append((float(f[4]), int(f[1]), int(f[2]), i, f[3]))
    keys = {r[4] for r in reads}
    assert len(keys) == n, ('lost messages', n - len(keys))
    first = {}
    reread = 0
    for t, p, off, who, k in sorted(reads):
        if (p, off) not in first:
            first[(p, off)] = who
            continue
        # A second read is allowed only while the message is uncommitted.
        done = [c for c in commits if c[1] == p and c[2] > off and c[0] < t]
        assert not done, ('committed message re-read', p, off, who, done[:1])
        reread += 1
    moved = {int(x.split()[1]) for x in dead if x.startswith('M ')}
    # Its partitions move: each one the killed member read is read on by a
    # survivor after the kill (it held unread messages when it died).
    assert moved, 'the killed member read nothing'
    for p in moved:
        after = [r for r in reads if r[1] == p and r[3] != 0 and r[0] > t_kill]
        assert after, ('partition %d of the killed member never read by a survivor' % p)
    print('group3: %d messages, none lost; member 0 (partitions %s) killed -9, its partitions '
          'read on by the survivors; %d re-read, none of them committed before'
          % (n, sorted(moved), reread))


# ---- bad input -------------------------------------------------------------

def frame(api_key, version, corr, body, client=b'bad'):
    head = struct.pack('>hhih', api_key, version, corr, len(client)) + client
    return struct.pack('>i', len(head) + len(body)) + head + body


def recv_frame(s):
    def read(n):
        buf = b''
        while len(buf) < n:
            chunk = s.recv(n - len(buf))
            if not chunk:
                return None
            buf += chunk
        return buf
    h = read(4)
    if h is None:
        return None
    (n,) = struct.unpack('>i', h)
    return read(n)


def closed(s):
    s.settimeout(5)
    try:
        return recv_frame(s) is None
    except (ConnectionResetError, socket.timeout):
        return True


def api_versions_ok(host, port):
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(18, 0, 7, b''))
    r = recv_frame(s)
    s.close()
    corr, err = struct.unpack('>ih', r[:6])
    return corr == 7 and err == 0


def produce_body(topic, records):
    t = topic.encode()
    return (struct.pack('>hhi', -1, -1, 5000) + struct.pack('>i', 1) +
            struct.pack('>h', len(t)) + t + struct.pack('>i', 1) +
            struct.pack('>i', 0) + struct.pack('>i', len(records)) + records)


def badinput(host, port, topic):
    port = int(port)
    checks = []
    # 1. KIP-511: an unsupported ApiVersions version -> error 35 + v0 body.
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(18, 99, 11, b'\x00garbage-v3-body'))
    r = recv_frame(s)
    corr, err, n = struct.unpack('>ihi', r[:10])
    assert corr == 11 and err == 35 and n > 5, (corr, err, n)
    keys = {struct.unpack('>hhh', r[10 + 6 * i:16 + 6 * i])[0] for i in range(n)}
    assert {0, 1, 3, 18, 22} <= keys, keys
    s.close()
    checks.append('ApiVersions v99: error 35 with the v0 list')
    # 2. Frame size above max_frame_bytes -> closed.
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(struct.pack('>i', 0x7fffffff) + b'\x00' * 16)
    assert closed(s)
    checks.append('oversized frame: connection closed')
    # 3. Negative / tiny size -> closed.
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(struct.pack('>i', -5) + b'\x00' * 8)
    assert closed(s)
    checks.append('negative frame size: connection closed')
    # 4. Unknown API key -> closed.
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(999, 0, 1, b''))
    assert closed(s)
    checks.append('unknown api key: connection closed')
    # 5. Truncated Metadata body -> closed.
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(3, 1, 1, b'\x00\x00\x00\x05\x00'))
    assert closed(s)
    checks.append('truncated Metadata: connection closed')
    # 6. A record batch with a wrong CRC -> CORRUPT_MESSAGE (2) for the partition.
    rec = bytes([12, 0, 0, 0, 1, 2, ord('k'), 2, ord('v'), 0])  # hand-made record
    body = struct.pack('>ii', 0, 0) + b'\x02' + struct.pack('>I', 0xdeadbeef)
    tail = struct.pack('>hiqqqhii', 0, 0, 0, 0, -1, -1, -1, 1) + rec
    batch = struct.pack('>q', 0) + struct.pack('>i', 4 + 1 + 4 + len(tail)) + \
        struct.pack('>i', 0) + b'\x02' + struct.pack('>I', 0xdeadbeef) + tail
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(0, 3, 21, produce_body(topic, batch)))
    r = recv_frame(s)
    s.close()
    corr, nt = struct.unpack('>ii', r[:8])
    tl = struct.unpack('>h', r[8:10])[0]
    off = 10 + tl
    npart, pidx, perr = struct.unpack('>iih', r[off:off + 10])
    assert corr == 21 and npart == 1 and perr == 2, (corr, npart, perr)
    checks.append('bad CRC batch: CORRUPT_MESSAGE')
    # 7. Records that are not a batch at all -> CORRUPT_MESSAGE.
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(0, 3, 22, produce_body(topic, b'\x01' * 20)))
    r = recv_frame(s)
    s.close()
    npart, pidx, perr = struct.unpack('>iih', r[off:off + 10])
    assert perr == 2, perr
    checks.append('short record set: CORRUPT_MESSAGE')
    # 8. Unknown topic -> UNKNOWN_TOPIC_OR_PARTITION (3).
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(frame(0, 3, 23, produce_body('no-such-topic', batch)))
    r = recv_frame(s)
    s.close()
    tl2 = struct.unpack('>h', r[8:10])[0]
    npart, pidx, perr = struct.unpack('>iih', r[10 + tl2:20 + tl2])
    assert perr == 3, perr
    checks.append('unknown topic: UNKNOWN_TOPIC_OR_PARTITION')
    # 9. Pipelined requests answer in order.
    s = socket.create_connection((host, port), timeout=5)
    s.sendall(b''.join(frame(18, 0, 100 + i, b'') for i in range(20)))
    for i in range(20):
        r = recv_frame(s)
        assert struct.unpack('>i', r[:4])[0] == 100 + i
    s.close()
    checks.append('20 pipelined requests answered in order')
    # 10. acks=0 gets no response: the next request's answer comes first.
    s = socket.create_connection((host, port), timeout=5)
    body0 = struct.pack('>hhi', -1, 0, 5000) + produce_body(topic, batch)[8:]
    s.sendall(frame(0, 3, 31, body0) + frame(18, 0, 32, b''))
    r = recv_frame(s)
    assert struct.unpack('>i', r[:4])[0] == 32
    s.close()
    checks.append('acks=0: no response')
    assert api_versions_ok(host, port)
    checks.append('broker still serving')
    for c in checks:
        print('badinput: ' + c)


def fetch_records(s, topic, part, offset, pmax, corr):
    """Fetch v4 of one partition: (error, records bytes)."""
    t = topic.encode()
    body = (struct.pack('>iiiib', -1, 100, 1, pmax, 0) + struct.pack('>i', 1) +
            struct.pack('>h', len(t)) + t + struct.pack('>i', 1) +
            struct.pack('>iqi', part, offset, pmax))
    s.sendall(frame(1, 4, corr, body, client=b'ra'))
    r = recv_frame(s)
    p = 4 + 4  # correlation id, throttle
    (nt,) = struct.unpack_from('>i', r, p); p += 4
    (tl,) = struct.unpack_from('>h', r, p); p += 2 + tl
    (np_,) = struct.unpack_from('>i', r, p); p += 4
    assert nt == 1 and np_ == 1, (nt, np_)
    _, err, _, _ = struct.unpack_from('>ihqq', r, p); p += 4 + 2 + 8 + 8
    (na,) = struct.unpack_from('>i', r, p); p += 4
    (rl,) = struct.unpack_from('>i', r, p); p += 4
    return err, r[p:p + max(rl, 0)]


def batches_end(recs, want_from):
    """Checks recs is whole record batches from the one holding want_from,
    contiguous; returns the offset after the last."""
    p, end = 0, None
    while p < len(recs):
        base, blen = struct.unpack_from('>qi', recs, p)
        (last,) = struct.unpack_from('>i', recs, p + 23)
        if end is None and not base <= want_from <= base + last:
            sys.exit('readahead: first batch %d..%d does not hold %d' % (base, base + last, want_from))
        if end is not None and base != end:
            sys.exit('readahead: batch at %d after one ending at %d' % (base, end))
        end = base + last + 1
        p += 12 + blen
    if p != len(recs) or end is None:
        sys.exit('readahead: %d bytes are not whole batches' % len(recs))
    return end


def readahead(host, port, topic):
    """The Fetch read-ahead (k_fetch.c) answers exactly what a conversion on
    demand answers: after a Fetch, the broker converts the next range ahead;
    a following Fetch with a smaller budget gets the first batches of that
    range, one with a larger budget that range plus batches converted then.
    Each is compared byte for byte with the same Fetch asked again, which
    finds no range ahead (a range is used once) and is converted on demand."""
    s = socket.create_connection((host, int(port)), timeout=10)
    err, a = fetch_records(s, topic, 0, 0, 256 << 10, 1)
    x = batches_end(a, 0)
    time.sleep(0.3)  # the read-ahead runs once the answer is written
    _, b1 = fetch_records(s, topic, 0, x, 64 << 10, 2)    # a part of the range ahead
    _, b2 = fetch_records(s, topic, 0, x, 64 << 10, 3)    # converted on demand
    y = batches_end(b1, x)
    time.sleep(0.3)
    _, c1 = fetch_records(s, topic, 0, y, 512 << 10, 4)   # the range ahead + more
    _, c2 = fetch_records(s, topic, 0, y, 512 << 10, 5)   # converted on demand
    z = batches_end(c1, y)
    s.close()
    # A range of 512 KiB is read ahead in steps of 256 KiB (KRA_STEP), the
    # loop serving the connection between them: asked for at once, the next
    # range is answered from however much the steps have converted.
    s = socket.create_connection((host, int(port)), timeout=10)
    _, d0 = fetch_records(s, topic, 0, 0, 512 << 10, 6)
    w = batches_end(d0, 0)
    _, d1 = fetch_records(s, topic, 0, w, 512 << 10, 7)
    _, d2 = fetch_records(s, topic, 0, w, 512 << 10, 8)
    s.close()
    if err or not b1 or b1 != b2 or not c1 or c1 != c2 or not d1 or d1 != d2:
        sys.exit('readahead: answers differ (%d/%d bytes, %d/%d bytes, %d/%d bytes)'
                 % (len(b1), len(b2), len(c1), len(c2), len(d1), len(d2)))
    if not (len(b1) < 64 << 10 + 4096 and len(c1) > 64 << 10 and z > y > x > 0 and
            len(d1) > 256 << 10):
        sys.exit('readahead: budgets not exercised (%d, %d bytes; %d %d %d)' % (len(b1), len(c1), x, y, z))
    print('readahead: offsets %d..%d (smaller budget), %d..%d (larger) and %d.. (%d bytes, '
          'read ahead in steps) identical to a conversion on demand' % (x, y, y, z, w, len(d1)))


if __name__ == '__main__':
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == 'idem':
        idem(args[0], args[1], int(args[2]), args[3])
    elif cmd == 'readback':
        readback(*args)
    elif cmd == 'kp_produce':
        kp_produce(args[0], args[1], int(args[2]))
    elif cmd == 'kp_group':
        kp_group(args[0], args[1], args[2], int(args[3]), args[4])
    elif cmd == 'kp_committed':
        kp_committed(*args)
    elif cmd == 'fill':
        fill(args[0], args[1], int(args[2]))
    elif cmd == 'member':
        member(*args)
    elif cmd == 'group3':
        group3(args[0], args[1], args[2], int(args[3]), args[4])
    elif cmd == 'crosscheck':
        crosscheck(*args)
    elif cmd == 'describe_check':
        describe_check(*args[:6], int(args[6]))
    elif cmd == 'badinput':
        badinput(*args)
    elif cmd == 'readahead':
        readahead(*args)
    else:
        sys.exit('unknown command ' + cmd)
