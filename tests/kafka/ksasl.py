#!/usr/bin/env python3
"""librdkafka (confluent-kafka) clients for tests/kafka/sasl.sh and mtls.sh.

  ksasl.py BOOT noauth
  ksasl.py BOOT badkey USER KEY
  ksasl.py BOOT roundtrip USER KEY TOPIC N
  ksasl.py BOOT denied USER KEY TOPIC          (bob: may read, may not write)
  ksasl.py BOOT isolated USER KEY TOPIC        (eve: another tenant)
  ksasl.py BOOT revoke USER KEY TOPIC VERITY AUTH_FILE PID LOG
  ksasl.py BOOT connquota USER KEY QUOTA OTHER_USER OTHER_KEY LOG
                                               (USER's connections quota is QUOTA)

Prints one line saying what it saw; exit 1 (with the reason) when a check fails.

TLS (mtls.sh): KSASL_TLS=CA[,CERT,KEY] in the environment speaks TLS to the
Kafka port (SSL, or SASL_SSL when USER is given), presenting CERT when
given. USER "-": no SASL (the certificate is the identity); for revoke, KEY
is then the certificate's subject, whose mapping is removed.
"""
import os
import signal
import socket
import struct
import subprocess
import sys
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient


def conf(boot, user=None, key=None, **extra):
    c = {"bootstrap.servers": boot, "socket.timeout.ms": 5000,
         "reconnect.backoff.ms": 100, "reconnect.backoff.max.ms": 500}
    if user == "-":
        user = None
    tls = os.environ.get("KSASL_TLS")
    if user is not None:
        c.update({"security.protocol": "SASL_SSL" if tls else "SASL_PLAINTEXT",
                  "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": key})
    elif tls:
        c["security.protocol"] = "SSL"
    if tls:
        f = tls.split(",")
        c["ssl.ca.location"] = f[0]
        if len(f) == 3:
            c.update({"ssl.certificate.location": f[1], "ssl.key.location": f[2]})
    c.update(extra)
    return c


def die(msg):
    print(msg)
    sys.exit(1)


def metadata_fails(c, timeout=6):
    """True when no Metadata answer arrives (the broker refuses the client)."""
    try:
        AdminClient(c).list_topics(timeout=timeout)
        return False
    except KafkaException:
        return True


def topics(c):
    return set(AdminClient(c).list_topics(timeout=10).topics)


def produce(c, topic, n, prefix):
    errs = []
    p = Producer(dict(c, **{"enable.idempotence": True, "acks": "all",
                            "message.timeout.ms": 20000}))

    def dr(err, msg):
        if err:
            errs.append(err)

    for i in range(n):
        while True:
            try:
                p.produce(topic, key=b"k%d" % i, value=b"%s-%d" % (prefix, i),
                          headers=[("h", b"%d" % i)], on_delivery=dr)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    left = p.flush(30)
    return errs, left


def consume(c, topic, n, group, commit=True, deadline_s=60):
    cons = Consumer(dict(c, **{"group.id": group, "auto.offset.reset": "earliest",
                               "enable.auto.commit": False}))
    cons.subscribe([topic])
    got, errs = [], []
    end = time.time() + deadline_s
    while len(got) < n and time.time() < end:
        m = cons.poll(0.5)
        if m is None:
            continue
        if m.error():
            errs.append(m.error())
            if m.error().code() in (KafkaError.TOPIC_AUTHORIZATION_FAILED,
                                    KafkaError.GROUP_AUTHORIZATION_FAILED,
                                    KafkaError.UNKNOWN_TOPIC_OR_PART):
                break
            continue
        got.append(m)
    if commit and got:
        cons.commit(asynchronous=False)
    cons.close()
    return got, errs


def kframe(api_key, version, corr, body):
    head = struct.pack(">hhih", api_key, version, corr, 5) + b"holdr"
    return struct.pack(">i", len(head) + len(body)) + head + body


def krecv(s):
    def exact(n):
        b = b""
        while len(b) < n:
            c = s.recv(n - len(b))
            if not c:
                raise EOFError("closed")
            b += c
        return b
    n = struct.unpack(">i", exact(4))[0]
    return exact(n)


def sasl_hold(boot, user, key):
    """One Kafka connection logged in with SASL/PLAIN (SaslHandshake v1,
    SaslAuthenticate v1), kept open: the socket, or None and the broker's
    error message when the login is refused."""
    host, port = boot.rsplit(":", 1)
    s = socket.create_connection((host, int(port)), 5)
    s.settimeout(5)
    s.sendall(kframe(17, 1, 1, struct.pack(">h", 5) + b"PLAIN"))
    r = krecv(s)
    if struct.unpack(">h", r[4:6])[0] != 0:
        s.close()
        return None, "handshake refused"
    tok = b"\0" + user.encode() + b"\0" + key.encode()
    s.sendall(kframe(36, 1, 2, struct.pack(">i", len(tok)) + tok))
    r = krecv(s)
    err = struct.unpack(">h", r[4:6])[0]
    if err == 0:
        return s, None
    ml = struct.unpack(">h", r[6:8])[0]
    msg = r[8:8 + ml].decode() if ml > 0 else ""
    s.close()
    return None, "error %d: %s" % (err, msg)


def log_count(log, what):
    return open(log, "rb").read().count(what)


def connquota(boot, user, key, quota, ouser, okey, log):
    """USER's connections quota is QUOTA: QUOTA of USER's connections are
    admitted, the next (a confluent-kafka client, and a raw login) is
    refused naming the quota, OUSER (another tenant) is not affected, and
    USER is admitted again once its connections close."""
    refused0 = log_count(log, b"quota=connections port=kafka")
    held = []
    for _ in range(quota):
        s, err = sasl_hold(boot, user, key)
        if not s:
            die("login %d of %d refused: %s" % (len(held) + 1, quota, err))
        held.append(s)
    # a librdkafka client of USER over the quota: refused, and told why
    errs = []
    over = Producer(conf(boot, user, key, error_cb=lambda e: errs.append(e)))
    try:
        over.list_topics(timeout=3)
        die("a confluent-kafka client over the connections quota got Metadata")
    except KafkaException:
        pass
    over.poll(0.5)  # error_cb runs here
    del over
    why = " ".join(e.str() for e in errs)
    if "quota exceeded: connections %d of" % quota not in why:
        die("the client was not told which quota: %s" % why[:300])
    if log_count(log, b"quota=connections port=kafka") == refused0:
        die("no quota_exceeded quota=connections port=kafka logged")
    s, err = sasl_hold(boot, user, key)
    if s or "quota exceeded: connections" not in (err or ""):
        die("a raw login over the quota: %s" % (err or "admitted"))
    # another tenant's principal is not limited by USER's quota
    other = conf(boot, ouser, okey)
    if metadata_fails(other):
        die("%s (another tenant) was refused while %s is at its quota" % (ouser, user))
    # the count goes back down when USER's connections close
    for s in held:
        s.close()
    held = []
    end = time.time() + 10
    while True:
        s, err = sasl_hold(boot, user, key)
        if s:
            break
        if time.time() > end:
            die("still refused 10 s after its connections closed: %s" % err)
        time.sleep(0.1)
    s.close()
    # the confluent-kafka client is admitted now, and once it is closed
    # the whole quota is free again
    p = Producer(conf(boot, user, key))
    try:
        md = p.list_topics(timeout=10)
    except KafkaException as e:
        die("the confluent-kafka client was refused after the others closed: %s" % e)
    if not md.topics:
        die("no topics in Metadata")
    del p
    end = time.time() + 10
    while True:
        held = [sasl_hold(boot, user, key) for _ in range(quota)]
        ok_n = sum(1 for s, _ in held if s)
        for s, _ in held:
            if s:
                s.close()
        if ok_n == quota:
            break
        if time.time() > end:
            die("after every client closed only %d of %d logins were admitted" % (ok_n, quota))
        time.sleep(0.1)
    print("%d connections admitted, the next refused (%s); %s of another tenant unaffected; "
          "admitted again once they closed, and all %d once the client closed"
          % (quota, why.split("quota exceeded: ")[1].split(" (")[0][:40] if "quota exceeded: " in why
             else "?", ouser, quota))


def main():
    boot, what = sys.argv[1], sys.argv[2]
    a = sys.argv[3:]
    if what == "noauth":
        if not metadata_fails(conf(boot)):
            die("a client without SASL got Metadata")
        print("a client without SASL gets no Metadata")
    elif what == "badkey":
        if not metadata_fails(conf(boot, a[0], a[1])):
            die("a wrong key got Metadata")
        print("SASL with that key fails")
    elif what == "roundtrip":
        user, key, topic, n = a[0], a[1], a[2], int(a[3])
        c = conf(boot, user, key)
        if topic not in topics(c):
            die("alice does not see %s in Metadata" % topic)
        errs, left = produce(c, topic, n, b"v")
        if errs or left:
            die("produce: %d errors (%s), %d not delivered" % (len(errs), errs[:3], left))
        got, errs = consume(c, topic, n, "g1")
        if len(got) != n:
            die("consumed %d of %d (%s)" % (len(got), n, errs[:3]))
        seen = {}
        for m in got:
            i = int(m.value().split(b"-")[1])
            if m.key() != b"k%d" % i or dict(m.headers() or [])["h"] != b"%d" % i:
                die("record %d: key or header differs" % i)
            last = seen.get(m.partition(), -1)
            if i <= last:
                die("partition %d out of order" % m.partition())
            seen[m.partition()] = i
        if len(set(int(m.value().split(b"-")[1]) for m in got)) != n:
            die("duplicates in what was read")
        # The group committed: a new member of g1 finds nothing more.
        cons = Consumer(dict(c, **{"group.id": "g1", "enable.auto.commit": False}))
        parts = [TopicPartition(topic, p) for p in range(3)]
        committed = cons.committed(parts, timeout=10)
        cons.close()
        total = sum(tp.offset for tp in committed if tp.offset >= 0)
        if total != n:
            die("committed offsets sum to %d, want %d" % (total, n))
        print("produced %d idempotently, read them back once each in order through group g1, "
              "committed %d" % (n, total))
    elif what == "denied":
        user, key, topic = a[0], a[1], a[2]
        c = conf(boot, user, key)
        errs, left = produce(c, topic, 5, b"bob")
        codes = set(e.code() for e in errs)
        if KafkaError.TOPIC_AUTHORIZATION_FAILED not in codes:
            die("bob's produce was not refused with TOPIC_AUTHORIZATION_FAILED: %s, %d left"
                % (errs[:3], left))
        got, errs2 = consume(c, topic, 10, "g-bob", commit=False, deadline_s=30)
        if len(got) != 10:
            die("bob could not read orders: %d (%s)" % (len(got), errs2[:3]))
        print("produce refused with TOPIC_AUTHORIZATION_FAILED, consume works (read 10)")
    elif what == "isolated":
        user, key, topic = a[0], a[1], a[2]
        c = conf(boot, user, key)
        seen = topics(c)
        if topic in seen or any("~" in t for t in seen):
            die("eve sees %s" % sorted(seen))
        cons = Consumer(dict(c, **{"group.id": "g-eve", "auto.offset.reset": "earliest"}))
        cons.assign([TopicPartition(topic, 0, 0)])
        end, got = time.time() + 8, 0
        while time.time() < end:
            m = cons.poll(0.5)
            if m is not None and not m.error():
                got += 1
        cons.close()
        if got:
            die("eve read %d of acme's records" % got)
        print("Metadata lists none of acme's topics; reading %s finds nothing" % topic)
    elif what == "revoke":
        user, key, topic, verity, auth_file, pid, log = a
        c = conf(boot, user, key)
        p = Producer(dict(c, **{"acks": "all", "message.timeout.ms": 8000}))
        p.produce(topic, b"before")
        if p.flush(10):
            die("a produce before revocation was not delivered")
        if user == "-":  # the certificate's mapping goes
            cmd = ["cert", "remove", "--subject", key]
        else:
            cmd = ["key", "revoke", key.split("_")[1]]
        subprocess.run([verity, "auth", "--file", auth_file] + cmd, check=True,
                       stdout=subprocess.DEVNULL)
        before = open(log, "rb").read().count(b"event=auth_reloaded")
        os.kill(int(pid), signal.SIGHUP)
        end = time.time() + 10
        while open(log, "rb").read().count(b"event=auth_reloaded") == before:
            if time.time() > end:
                die("no auth_reloaded within 10 s of SIGHUP")
            time.sleep(0.05)
        errs = []
        p.produce(topic, b"after", on_delivery=lambda e, m: errs.append(e))
        left = p.flush(15)
        if left == 0 and not any(errs):
            die("a produce after revocation was delivered")
        if not metadata_fails(c):
            die("a new session with the revoked key got Metadata")
        print("the open session ends at its next request; a new one is refused")
    elif what == "connquota":
        connquota(boot, a[0], a[1], int(a[2]), a[3], a[4], a[5])
    else:
        die("unknown command " + what)


if __name__ == "__main__":
    main()
