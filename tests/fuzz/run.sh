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
# usage: bash tests/fuzz/run.sh [SECONDS]
# env:   FUZZ_DIR (default build/fuzz), FUZZ_JOBS (parallel jobs, default 1)
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
