#!/usr/bin/python3
"""Seed corpus for tests/fuzz/fuzz_kafka.c: Kafka frames as librdkafka sends
them (Produce v3/v7 with a keyed, headered, idempotent record batch v2; Fetch
v4/v11; Metadata; ApiVersions), a bare record batch, and near misses.
usage: kafka_seeds.py DIR"""
import base64
import os
import struct
import sys


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc ^= b
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def varint(v):
    u = (v << 1) ^ (v >> 63)
    u &= (1 << 64) - 1
    out = b''
    while u >= 0x80:
        out += bytes([(u & 0x7f) | 0x80])
        u >>= 7
    return out + bytes([u])


def record(i, key, value, headers):
    body = b'\x00' + varint(i * 3) + varint(i)
    body += (varint(-1) if key is None else varint(len(key)) + key)
    body += (varint(-1) if value is None else varint(len(value)) + value)
    body += varint(len(headers))
    for hk, hv in headers:
        body += varint(len(hk)) + hk + (varint(-1) if hv is None else varint(len(hv)) + hv)
    return varint(len(body)) + body


def batch(n, pid=-1, epoch=-1, seq=-1):
    recs = b''.join(record(i, b'key%d' % i if i % 3 else None, b'value %d' % i,
                           [(b'h', b'%d' % i), (b'n', None)] if i % 2 else [])
                    for i in range(n))
    tail = struct.pack('>hiqqqhii', 0, n - 1, 1700000000000, 1700000000000 + 3 * (n - 1),
                       pid, epoch, seq, n) + recs
    crc = crc32c(tail)
    inner = struct.pack('>i', 0) + b'\x02' + struct.pack('>I', crc) + tail
    return struct.pack('>qi', 0, len(inner)) + inner


def frame(key, ver, body):
    head = struct.pack('>hhih', key, ver, 7, 6) + b'rdkafk'
    return struct.pack('>i', len(head) + len(body)) + head + body


def produce(records, acks=-1):
    t = b'topic'
    return (struct.pack('>hhi', -1, acks, 30000) + struct.pack('>i', 1) + struct.pack('>h', len(t)) +
            t + struct.pack('>i', 1) + struct.pack('>i', 0) + struct.pack('>i', len(records)) +
            records)


def fetch(v):
    t = b'topic'
    b = struct.pack('>iiiib', -1, 500, 1, 52428800, 0)
    if v >= 7:
        b += struct.pack('>ii', 0, -1)
    b += struct.pack('>i', 1) + struct.pack('>h', len(t)) + t + struct.pack('>i', 2)
    for p in range(2):
        b += struct.pack('>i', p)
        if v >= 9:
            b += struct.pack('>i', -1)
        b += struct.pack('>q', 5)
        if v >= 5:
            b += struct.pack('>q', -1)
        b += struct.pack('>i', 1048576)
    if v >= 7:
        b += struct.pack('>i', 0)
    if v >= 11:
        b += struct.pack('>h', 0)
    return b


def main(d):
    os.makedirs(d, exist_ok=True)
    b1 = batch(5)
    b2 = batch(3, pid=7, epoch=0, seq=10)
    seeds = {
        'produce_v3': frame(0, 3, produce(b1 + b2)),
        'produce_v7_acks0': frame(0, 7, produce(b2, acks=0)),
        'fetch_v4': frame(1, 4, fetch(4)),
        'fetch_v11': frame(1, 11, fetch(11)),
        'metadata_v1': frame(3, 1, struct.pack('>i', -1)),
        'api_versions_v3': frame(18, 3, b'\x00\x00\x00'),
        'batch': b1,
        'batch_bad_crc': b1[:17] + b'\x00\x00\x00\x00' + b1[21:],
        'batch_truncated': b1[:-3],
        # Regression: baseTimestamp near INT64_MIN plus a negative delta was
        # signed overflow in krec_to_verity (found by this fuzzer in CI).
        'regress_ts_overflow': base64.b64decode(
            'AAAAAAAAAAAAAACRAAAAAAIAAAAAAAAAAAAEgAAAAAAAAAAAAAGLV+VoDP//////////////////'
            'AAAABRr/fQABDnZhbHVlIDAAAAAABAAAAYvP5WgAAAABi8/l5WgAAAABi1flaAz/////////////'
            '/////wAAAAUa/30AAQ52YWx1ZSAwAAAAAAQAAAGLz+VoAAAAAYvP5WgM//////////////////8A'
            'AAAFGgAAAAEOdmFsdWUgMAAwAAYCCGtleTEOdmFsdWUgMQQCaAIxAm4BIgA0AA=='),
    }
    for name, data in seeds.items():
        with open(os.path.join(d, name), 'wb') as f:
            f.write(data)


if __name__ == '__main__':
    main(sys.argv[1])
