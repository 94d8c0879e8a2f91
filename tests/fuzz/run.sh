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
# Then builds and runs tests/fuzz/fuzz_proof.c (proof decoders) for
# PROOF_FUZZ_SECONDS (default 15).
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
