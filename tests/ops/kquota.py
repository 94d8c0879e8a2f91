#!/usr/bin/python3
"""Kafka produce under a quota, for tests/ops/test_ops_kafka_quota.sh: a
librdkafka producer (confluent-kafka) with SASL/PLAIN sends N records of
SIZE bytes to TOPIC (acks=all) and prints {"secs", "delivered", "errors",
"throttle_events", "throttle_ms_max"}; throttle events are librdkafka's
reports of the broker's throttle_time_ms.

usage: kquota.py BOOT USER KEY TOPIC N SIZE [abandon|consume]
  abandon: exit 1 s after the last produce() without waiting for the
  deliveries (the connection closes while the broker holds requests)
  consume: read N records of TOPIC from the beginning instead (assigned
  partition 0, 64 KiB per fetch) and print {"secs", "read", "bytes",
  "throttle_events", "throttle_ms_max"}
Failed deliveries are counted by error name in "error_names".
"""
import json, os, sys, time

from confluent_kafka import Consumer, Producer, TopicPartition


def consume(boot, user, key, topic, n):
    thr = []
    c = Consumer({"bootstrap.servers": boot, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": key,
                  "group.id": "kquota-" + user, "enable.auto.commit": False,
                  "fetch.max.bytes": 65536, "max.partition.fetch.bytes": 65536,
                  "message.max.bytes": 65536,
                  "fetch.wait.max.ms": 100,
                  "throttle_cb": lambda ev: thr.append(ev.throttle_time * 1000)})
    c.assign([TopicPartition(topic, 0, 0)])
    got = nbytes = 0
    t0 = time.monotonic()
    end = t0 + 100
    while got < n and time.monotonic() < end:
        m = c.poll(0.2)
        if m is None or m.error():
            continue
        got += 1
        nbytes += len(m.value() or b"")
    secs = time.monotonic() - t0
    c.poll(0.5)  # throttle reports of the last answers
    c.close()
    print(json.dumps({"secs": round(secs, 3), "read": got, "bytes": nbytes,
                      "throttle_events": len(thr),
                      "throttle_ms_max": int(max(thr)) if thr else 0}))


def main():
    boot, user, key, topic, n, size = sys.argv[1:7]
    n, size = int(n), int(size)
    if len(sys.argv) > 7 and sys.argv[7] == "consume":
        consume(boot, user, key, topic, n)
        return
    thr = []
    p = Producer({"bootstrap.servers": boot, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": key,
                  "acks": "all", "linger.ms": 5, "batch.size": 65536,
                  "throttle_cb": lambda ev: thr.append(ev.throttle_time * 1000)})
    res = {"delivered": 0, "errors": 0, "error_names": {}}

    def done(err, msg):
        res["errors" if err else "delivered"] += 1
        if err:
            res["error_names"][err.name()] = res["error_names"].get(err.name(), 0) + 1

    t0 = time.monotonic()
    for i in range(n):
        v = ("%08d" % i).encode() + b"q" * (size - 8)
        while True:
            try:
                p.produce(topic, v, on_delivery=done)
                break
            except BufferError:
                p.poll(0.05)
        p.poll(0)
    if len(sys.argv) > 7 and sys.argv[7] == "abandon":
        p.flush(1)
        print(json.dumps({"abandoned_after_s": round(time.monotonic() - t0, 3)}))
        sys.stdout.flush()
        os._exit(0)
    left = p.flush(120)
    res["secs"] = round(time.monotonic() - t0, 3)
    res["undelivered"] = left
    res["throttle_events"] = len(thr)
    res["throttle_ms_max"] = int(max(thr)) if thr else 0
    print(json.dumps(res))


if __name__ == "__main__":
    main()
