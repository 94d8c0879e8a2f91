#!/usr/bin/python3
"""Kafka produce under a quota, for tests/ops/test_ops_kafka_quota.sh: a
librdkafka producer (confluent-kafka) with SASL/PLAIN sends N records of
SIZE bytes to TOPIC (acks=all) and prints {"secs", "delivered", "errors",
"throttle_events", "throttle_ms_max"}; throttle events are librdkafka's
reports of the broker's throttle_time_ms.

usage: kquota.py BOOT USER KEY TOPIC N SIZE [abandon]
  abandon: exit 1 s after the last produce() without waiting for the
  deliveries (the connection closes while the broker holds requests)
"""
import json, os, sys, time

from confluent_kafka import Producer


def main():
    boot, user, key, topic, n, size = sys.argv[1:7]
    n, size = int(n), int(size)
    thr = []
    p = Producer({"bootstrap.servers": boot, "security.protocol": "SASL_PLAINTEXT",
                  "sasl.mechanism": "PLAIN", "sasl.username": user, "sasl.password": key,
                  "acks": "all", "linger.ms": 5, "batch.size": 65536,
                  "throttle_cb": lambda ev: thr.append(ev.throttle_time * 1000)})
    res = {"delivered": 0, "errors": 0}

    def done(err, msg):
        res["errors" if err else "delivered"] += 1

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
