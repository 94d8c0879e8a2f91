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
