#!/usr/bin/env bash
# Builds the libFuzzer target tests/fuzz/fuzz_frame.c with
# clang -fsanitize=fuzzer,address,undefined against the sources it needs
# (the frame codec, the generated protobuf code, the batch format, the
# broker's batch check and idempotence rules, the consumer-group state
# machine and its record codec), generates a small seed corpus,
# and runs the fuzzer for SECONDS (default 60). Exits non-zero on a crash,
# a sanitizer report or a leak; the crashing input is left in
# $FUZZ_DIR/artifacts.
#
# Then tests/fuzz/fuzz_kafka.c (the Kafka listener's frame, Produce/Fetch and
# record batch decoders) for KAFKA_FUZZ_SECONDS (default 15; 0 skips).
# Then builds and runs tests/fuzz/fuzz_proof.c (proof decoders) for
# PROOF_FUZZ_SECONDS (default 15), then tests/fuzz/fuzz_auth.c (the security
# store's JSON decoder, issue 14) for AUTH_FUZZ_SECONDS (default 15), then
# tests/fuzz/fuzz_auth_change.c (a change of that store: POST /v1/security
# and the metadata log's auth_change records) for as long. Later sections
# (VSR, state transfer, the applied ring, the `__meta` state decoder
# fuzz_meta_snap.c, ...) have their own *_FUZZ_SECONDS.
#
# usage: bash tests/fuzz/run.sh [SECONDS]
# env:   FUZZ_DIR (default build/fuzz), FUZZ_JOBS (parallel jobs, default 1),
#        KAFKA_FUZZ_SECONDS (default 15)
set -euo pipefail

secs=${1:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${FUZZ_DIR:-$root/build/fuzz}
jobs=${FUZZ_JOBS:-1}
cd "$root"

for tool in clang protoc-c pkg-config; do
    command -v "$tool" >/dev/null || { echo "fuzz: $tool not found (make deps)" >&2; exit 2; }
done

mkdir -p "$out/gen" "$out/seeds" "$out/corpus" "$out/artifacts"
protoc-c --c_out="$out/gen" proto/verity.proto

cflags=(-std=c17 -g -O1 -D_GNU_SOURCE -Iinclude -I. -I"$out/gen" -fno-omit-frame-pointer)
# shellcheck disable=SC2207
pkg=($(pkg-config --cflags --libs libprotobuf-c libcrypto))
srcs=(proto/codec.c "$out/gen/proto/verity.pb-c.c" storage/batch.c storage/crc32c.c
      storage/errors.c broker/batchcheck.c broker/idem.c broker/group/group*.c)

echo "fuzz: building $out/fuzz_frame"
clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    tests/fuzz/fuzz_frame.c "${srcs[@]}" "${pkg[@]}" -o "$out/fuzz_frame"
clang "${cflags[@]}" -fsanitize=address,undefined \
    tests/fuzz/seed_gen.c "${srcs[@]}" "${pkg[@]}" -o "$out/seed_gen"
"$out/seed_gen" "$out/seeds"
echo "fuzz: $(ls "$out/seeds" | wc -l) seeds; running for ${secs}s"

par=()
if [ "$jobs" -gt 1 ]; then
    par=(-jobs="$jobs" -workers="$jobs") # each job logs to fuzz-N.log in $out
fi
set +e
(cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz_frame -max_total_time="$secs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    "${par[@]}" -print_final_stats=1 -artifact_prefix="$out/artifacts/" \
    "$out/corpus" "$out/seeds")
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "fuzz: FAILED (exit $rc); inputs in $out/artifacts" >&2
    exit "$rc"
fi
echo "fuzz: no crash in ${secs}s"

# ---- sharing gateway decoders (tests/fuzz/fuzz_share.c) ---------------------
# Tokens, profiles, field rules (with the rule applied), predicates, share
# specs, shares-topic records, export files. SHARE_FUZZ_SECONDS (default 15)
# is its run time (`make test` sets 5 s for this and every target but the
# frame decoder; see TEST_FUZZ_SHORT in the Makefile).
share_secs=${SHARE_FUZZ_SECONDS:-15}
if [ "$share_secs" != 0 ]; then
    # shellcheck disable=SC2207
    spkg=($(pkg-config --cflags --libs libevent libevent_pthreads libevent_openssl libprotobuf-c jansson libssl libcrypto))
    ssrcs=(consumer/share/paseto.c consumer/share/share_util.c consumer/share/share_spec.c
           consumer/share/share_xform.c consumer/share/share_export.c consumer/share/share_store.c
           consumer/share/share_proof.c consumer/share/share_line.c
           client/*.c storage/*.c proto/codec.c "$out/gen/proto/verity.pb-c.c")
    echo "fuzz: building $out/fuzz_share"
    clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        tests/fuzz/fuzz_share.c "${ssrcs[@]}" "${spkg[@]}" -pthread -o "$out/fuzz_share"
    sseeds="$out/share_seeds"
    mkdir -p "$sseeds" "$out/share_corpus"
    s() { printf '%b' "$2" > "$sseeds/$1"; }
    s tok '\x00v4.public.eyJkYXRhIjoidGhpcyBpcyBhIHNpZ25lZCBtZXNzYWdlIiwiZXhwIjoiMjAyMi0wMS0wMVQwMDowMDowMCswMDowMCJ9bg_XBBzds8lTZShVlwwKSgeKpLT3yukTw6JUz3W4h_ExsQV-P0V54zemZDcAxFaSeef1QlXEFtkqxT1ciiQEDA'
    s tokf '\x00v4.public.eyJzaWQiOiIwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZiJ9AAAA.eyJraWQiOiJ4In0'
    s prof '\x01{"shareCredentialsVersion":1,"endpoint":"https://127.0.0.1:9743/v1","bearerToken":"v4.public.AAAA","expirationTime":"2026-12-11T17:57:33Z"}'
    for r in '/a=hash' '/a=mask:last:4' '/a=generalise:month' '/n=generalise:bucket:10' \
             '/n=generalise:ranges:0-17=child,18-=adult' '/a=date_shift:/p:30' '/b/c/2/d=encrypt' \
             '/a=tokenize' '/a=replace:{"x":[1]}' '/b~1c=drop'; do
        s "rule$(echo "$r" | md5sum | cut -c1-8)" "\\x02$r"
    done
    s pred1 '\x03/a>=1'; s pred2 '\x03/c/1/d==2'; s pred3 '\x03/b exists'
    s spec '\x04{"id":"0123456789abcdef0123456789abcdef","topics":["t","u"],"filter":["/a==1"],"fields":["/a=hash","/b=drop"],"created_ms":1,"expires_ms":2,"max_uses":1,"from_time_ms":5,"recipient":{"name":"r","purpose":"p"}}'
    s use '\x05{"type":"use","share":"0123456789abcdef0123456789abcdef","export":"e","sources":[]}'
    s rev '\x05{"type":"revoke","share":"0123456789abcdef0123456789abcdef","reason":"x"}'
    s exp '\x06{"type":"export","share":"0123456789abcdef0123456789abcdef","export":"e"}\n{"type":"record","i":0,"pos":"t/0/1","commit":{"/a":"x"}}\n{"type":"manifest","signature":"AA","gateway_key":"AA"}\n'
    s proofl '\x07verity.example/local/t/0\n2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n\n\xe2\x80\x94 verity.example/local AAAA\n\x00{"type":"proof","index":1,"leaf":"AAAAAAAAAAABAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==","proof":["AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="]}'
    s line1 '\x08{"a":"x y","b":"p1","c":"4111111111","d":"2026-03-14T10:00:00Z","e":1,"n":42.5,"x/y":[1,{"z":null}],"k":"v","m":[0]}'
    s line2 '\x08 {"p":"id1","d":"2026-01-31","s":{"q":[true,false]},"t":-0,"a":"caf\xc3\xa9","n":7,"k":"v","m":[1]} '
    s line3 '\x08{"a":"\\u00e9\\n","b":{"c":"x"},"b":2}'
    echo "fuzz: fuzz_share for ${share_secs}s"
    set +e
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_share -max_total_time="$share_secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$out/artifacts/share-" "$out/share_corpus" "$sseeds")
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: fuzz_share FAILED (exit $rc); inputs in $out/artifacts" >&2
        exit "$rc"
    fi
    echo "fuzz: fuzz_share: no crash in ${share_secs}s"
fi

# The replication core (issue 9): decoders and restart from arbitrary disk
# bytes, for VSR_FUZZ_SECONDS (default 10; 0 skips).
vsecs=${VSR_FUZZ_SECONDS:-10}
if [ "$vsecs" != 0 ]; then
    mkdir -p "$out/corpus_vsr"
    clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        tests/fuzz/fuzz_vsr.c broker/vsr/vsr.c broker/vsr/superblock.c -o "$out/fuzz_vsr"
    set +e
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_vsr -max_total_time="$vsecs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=0 -artifact_prefix="$out/artifacts/" "$out/corpus_vsr")
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: fuzz_vsr FAILED (exit $rc); inputs in $out/artifacts" >&2
        exit "$rc"
    fi
    echo "fuzz: fuzz_vsr no crash in ${vsecs}s"
fi

# The VSR wire codec (issue 10): broker-to-broker messages and peer frames,
# for VSR_WIRE_FUZZ_SECONDS (default 10; 0 skips).
wsecs=${VSR_WIRE_FUZZ_SECONDS:-10}
if [ "$wsecs" != 0 ]; then
    mkdir -p "$out/corpus_vsr_wire"
    clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        tests/fuzz/fuzz_vsr_wire.c broker/vsr/vsr_wire.c -o "$out/fuzz_vsr_wire"
    set +e
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_vsr_wire -max_total_time="$wsecs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=0 -artifact_prefix="$out/artifacts/" "$out/corpus_vsr_wire")
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: fuzz_vsr_wire FAILED (exit $rc); inputs in $out/artifacts" >&2
        exit "$rc"
    fi
    echo "fuzz: fuzz_vsr_wire no crash in ${wsecs}s"
fi

# The state-transfer codec (issue 10, broker/vsr/xfer_wire.c), for
# XFER_WIRE_FUZZ_SECONDS (default 5; 0 skips).
xsecs=${XFER_WIRE_FUZZ_SECONDS:-5}
if [ "$xsecs" != 0 ]; then
    mkdir -p "$out/corpus_xfer_wire"
    clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        tests/fuzz/fuzz_xfer_wire.c broker/vsr/xfer_wire.c storage/errors.c -o "$out/fuzz_xfer_wire"
    set +e
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_xfer_wire -max_total_time="$xsecs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=0 -artifact_prefix="$out/artifacts/" "$out/corpus_xfer_wire")
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: fuzz_xfer_wire FAILED (exit $rc); inputs in $out/artifacts" >&2
        exit "$rc"
    fi
    echo "fuzz: fuzz_xfer_wire no crash in ${xsecs}s"
fi

# The metadata state decoder (issue 10, broker/meta_snap.c: meta.snap and the
# state a `__meta` replica copies from a peer), for META_SNAP_FUZZ_SECONDS
# (default 5; 0 skips). Seeds: an empty state and one with a topic, three
# producer ids and an auth store.
msecs=${META_SNAP_FUZZ_SECONDS:-5}
if [ "$msecs" != 0 ]; then
    mkdir -p "$out/corpus_meta_snap" "$out/seeds_meta_snap"
    # shellcheck disable=SC2207
    mpkg=($(pkg-config --cflags --libs libprotobuf-c libcrypto jansson))
    clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        tests/fuzz/fuzz_meta_snap.c broker/meta_snap.c broker/auth_store.c broker/config_dur.c \
        proto/codec.c "$out/gen/proto/verity.pb-c.c" storage/errors.c "${mpkg[@]}" \
        -o "$out/fuzz_meta_snap"
    python3 - "$out/seeds_meta_snap" <<'PY'
import json, struct, sys
d = sys.argv[1]
def image(topics, epochs, auth=None):
    j = json.dumps(topics, separators=(",", ":")).encode()
    b = struct.pack("<I", len(j)) + j + struct.pack("<Q", len(epochs))
    b += b"".join(struct.pack("<h", e) for e in epochs)
    if auth is not None:
        a = json.dumps(auth).encode()
        b += struct.pack("<I", len(a)) + a
    return b
t = {"type": "create_topic", "name": "orders", "partitions": 3, "durability": "group",
     "retention_ms": -1, "retention_bytes": -1, "segment_bytes": 1048576,
     "max_message_bytes": 65536, "time_ms": 1700000000000, "replicas": 3}
auth = {"version": 1, "acls": [{"tenant": "acme", "principal": "svc",
                                "resource": "topic:orders*", "ops": ["produce"],
                                "effect": "allow"}]}
open(d + "/empty", "wb").write(image([], []))
open(d + "/full", "wb").write(image([t], [0, -1, 7], auth))
PY
    set +e
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_meta_snap -max_total_time="$msecs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=0 -artifact_prefix="$out/artifacts/" "$out/corpus_meta_snap" \
        "$out/seeds_meta_snap")
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: fuzz_meta_snap FAILED (exit $rc); inputs in $out/artifacts" >&2
        exit "$rc"
    fi
    echo "fuzz: fuzz_meta_snap no crash in ${msecs}s"
fi

# The applied-position ring of a replica group (issue 10, broker/vsr/vapplied.c),
# for VAPPLIED_FUZZ_SECONDS (default 5; 0 skips).
asecs=${VAPPLIED_FUZZ_SECONDS:-5}
if [ "$asecs" != 0 ]; then
    mkdir -p "$out/corpus_vapplied"
    clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        tests/fuzz/fuzz_vapplied.c broker/vsr/vapplied.c storage/crc32c.c -o "$out/fuzz_vapplied"
    set +e
    (cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_vapplied -max_total_time="$asecs" -max_len=9000 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=0 -artifact_prefix="$out/artifacts/" "$out/corpus_vapplied")
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: fuzz_vapplied FAILED (exit $rc); inputs in $out/artifacts" >&2
        exit "$rc"
    fi
    echo "fuzz: fuzz_vapplied no crash in ${asecs}s"
fi

# ---- Kafka listener decoders (issue 15): fuzz_kafka, its own short block ----
ksecs=${KAFKA_FUZZ_SECONDS:-15}
if [ "$ksecs" != 0 ]; then
    kout="$out/kafka"
    mkdir -p "$kout/seeds" "$kout/corpus" "$kout/artifacts"
    ksrcs=(broker/kafka/kwire.c broker/kafka/kparse.c broker/kafka/krecords.c storage/batch.c
           storage/crc32c.c storage/errors.c broker/batchcheck.c)
    echo "fuzz: building $kout/fuzz_kafka"
    clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
        tests/fuzz/fuzz_kafka.c "${ksrcs[@]}" "${pkg[@]}" -o "$kout/fuzz_kafka"
    python3 tests/fuzz/kafka_seeds.py "$kout/seeds"
    echo "fuzz: kafka: $(ls "$kout/seeds" | wc -l) seeds; running for ${ksecs}s"
    set +e
    (cd "$kout" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
        UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
        ./fuzz_kafka -max_total_time="$ksecs" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$kout/artifacts/" "$kout/corpus" "$kout/seeds")
    rc=$?
    set -e
    if [ "$rc" -ne 0 ]; then
        echo "fuzz: kafka FAILED (exit $rc); inputs in $kout/artifacts" >&2
        exit "$rc"
    fi
    echo "fuzz: kafka: no crash in ${ksecs}s"
fi

# ---- proof decoders (issue 11): notes, vkeys, tlog-proof, witness bodies,
# JSON proofs. Runs PROOF_FUZZ_SECONDS (default 15) after fuzz_frame.
psecs=${PROOF_FUZZ_SECONDS:-15}
echo "fuzz: building $out/fuzz_proof"
mkdir -p "$out/proof-seeds" "$out/proof-corpus"
# shellcheck disable=SC2207
ppkg=($(pkg-config --cflags --libs libcrypto jansson))
clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    tests/fuzz/fuzz_proof.c storage/*.c "${ppkg[@]}" -lpthread -o "$out/fuzz_proof"
note='verity.example/local/orders/3\n301\nO0cX27wnzOJRssAuKXsLj3oolb/lTlPo4th2NnQe7qw=\n\n\xe2\x80\x94 verity.example/local Ur38fP5OmgQCQgjScQ464o1QLUapmMGSk+O6obzlT3FR971WL4kf6QCcwgFfA6oodKkYqnyJxYpC7Cz1eOc7QkRSmgI=\n'
printf "\x00$note" > "$out/proof-seeds/note"
printf '\x01verity.example/local+52bdfc7c+AdW3CUCpB1B2uU+5FV9hTOoR0iASqNgL9iij3puV6AOV' > "$out/proof-seeds/vkey"
printf "\x02$note" > "$out/proof-seeds/checkpoint"
printf "\x03c2sp.org/tlog-proof@v1\nextra AAAA\nindex 214\nX4jQ0806h4cy/llT/HffImXZHyl827yN0cgDh0lpxrs=\n\n$note" > "$out/proof-seeds/tlogproof"
printf "\x04old 10\nX4jQ0806h4cy/llT/HffImXZHyl827yN0cgDh0lpxrs=\n\n$note" > "$out/proof-seeds/witness"
printf "\x06\xe2\x80\x94 witness.example/w1 9U6NqgAAAABrE8FIOacoRhWcWQ9Y5jxOCI11GrDoTJss5NTPfrfTG+siB0G7YBAnHDmMrkFlKDENKgVgjStwsekX6WHFZEX+r+vXBg==\n" > "$out/proof-seeds/cosig"
printf '\x0777\n' > "$out/proof-seeds/size409"
printf '\x05{"type":"consistency","old_size":1,"new_size":2,"proof":["X4jQ0806h4cy/llT/HffImXZHyl827yN0cgDh0lpxrs="],"old_checkpoint":"a","new_checkpoint":"b"}' > "$out/proof-seeds/json"
set +e
(cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz_proof -max_total_time="$psecs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/proof-" \
    "$out/proof-corpus" "$out/proof-seeds")
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "fuzz: fuzz_proof FAILED (exit $rc); inputs in $out/artifacts" >&2
    exit "$rc"
fi
echo "fuzz: fuzz_proof no crash in ${psecs}s"

# ---- the security store's decoder (issue 14): auth_file JSON. Runs
# AUTH_FUZZ_SECONDS (default 15) after fuzz_proof.
asecs=${AUTH_FUZZ_SECONDS:-15}
echo "fuzz: building $out/fuzz_auth"
mkdir -p "$out/auth-seeds" "$out/auth-corpus"
# shellcheck disable=SC2207
apkg=($(pkg-config --cflags --libs libcrypto jansson))
clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    tests/fuzz/fuzz_auth.c broker/auth_store.c proto/codec.c "$out/gen/proto/verity.pb-c.c" \
    storage/errors.c "${apkg[@]}" "${pkg[@]}" -o "$out/fuzz_auth"
printf '%s' '{"version":1,"keys":[{"id":"0123456789abcdef","tenant":"acme","principal":"svc-a","salt":"00112233445566778899aabbccddeeff","hash":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","created_ms":1}],"certs":[{"subject":"verity-client","tenant":"acme","principal":"svc-a"}],"acls":[{"tenant":"acme","principal":"*","resource":"topic:orders*","ops":["produce","consume"],"effect":"deny"}],"quotas":[{"tenant":"acme","principal":"*","produce_bytes_per_s":100}]}' > "$out/auth-seeds/full"
printf '%s' '{"version":1,"acls":[{"tenant":"ops","principal":"prom","resource":"cluster:metrics","ops":["describe"],"effect":"allow"}],"quotas":[{"tenant":"acme","principal":"+","requests_per_s":20,"connections":2,"storage_bytes":65536,"fetch_bytes_per_s":1}]}' > "$out/auth-seeds/cluster-quotas"
printf '%s' '{"version":1,"roles":[{"tenant":"acme","principal":"svc","role":"readers"}],"acls":[{"tenant":"acme","principal":"role:readers","resource":"topic:*","ops":["consume"],"effect":"allow"}]}' > "$out/auth-seeds/roles"
set +e
(cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz_auth -max_total_time="$asecs" -max_len=16384 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/auth-" \
    "$out/auth-corpus" "$out/auth-seeds")
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "fuzz: fuzz_auth FAILED (exit $rc); inputs in $out/artifacts" >&2
    exit "$rc"
fi
echo "fuzz: fuzz_auth no crash in ${asecs}s"

# ---- a change of the security store (issue 14): the body of POST
# /v1/security and the auth_change records of the metadata log
# (auth_change_parse). AUTH_FUZZ_SECONDS as well.
echo "fuzz: building $out/fuzz_auth_change"
mkdir -p "$out/authch-seeds" "$out/authch-corpus"
clang "${cflags[@]}" -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    tests/fuzz/fuzz_auth_change.c broker/auth_store.c proto/codec.c "$out/gen/proto/verity.pb-c.c" \
    storage/errors.c "${apkg[@]}" "${pkg[@]}" -o "$out/fuzz_auth_change"
n=0
for c in '{"op":"key_create","tenant":"acme","principal":"svc"}' \
    '{"op":"acl_add","tenant":"acme","principal":"role:readers","resource":"topic:orders*","ops":["describe","consume"],"effect":"deny"}' \
    '{"op":"acl_remove","tenant":"acme","principal":"*","resource":"cluster:security","ops":"admin,describe","effect":"allow"}' \
    '{"op":"role_grant","tenant":"acme","principal":"svc","role":"readers"}' \
    '{"op":"quota_set","tenant":"acme","principal":"+","storage_bytes":65536,"requests_per_s":3}' \
    '{"op":"cert_add","subject":"verity-client","tenant":"acme","principal":"svc"}' \
    '{"op":"key_revoke","id":"0123456789abcdef"}'; do
    printf '\000%s' "$c" > "$out/authch-seeds/req$n"
    n=$((n + 1))
done
printf '\001%s' '{"op":"key_add","id":"0123456789abcdef","tenant":"acme","principal":"svc","salt":"00112233445566778899aabbccddeeff","hash":"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff","created_ms":1}' > "$out/authch-seeds/log0"
printf '\001%s' '{"op":"quota_set","tenant":"acme","principal":"svc","produce_bytes_per_s":1,"fetch_bytes_per_s":2,"requests_per_s":3,"connections":4,"storage_bytes":0}' > "$out/authch-seeds/log1"
set +e
(cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz_auth_change -max_total_time="$asecs" -max_len=4096 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/authch-" \
    "$out/authch-corpus" "$out/authch-seeds")
rc=$?
set -e
if [ "$rc" -ne 0 ]; then
    echo "fuzz: fuzz_auth_change FAILED (exit $rc); inputs in $out/artifacts" >&2
    exit "$rc"
fi
echo "fuzz: fuzz_auth_change no crash in ${asecs}s"
