#!/usr/bin/env bash
# Builds tests/fuzz/fuzz_project.c (verity-project's config and event
# decoders) with clang -fsanitize=fuzzer,address,undefined and runs it for
# SECONDS (default 60). Exits non-zero on a crash, sanitizer report or leak.
# usage: bash tests/fuzz/run_project.sh [SECONDS]     (make fuzz-project)
set -euo pipefail
secs=${1:-60}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
out=${FUZZ_DIR:-$root/build/fuzz}/project
cd "$root"
mkdir -p "$out/corpus" "$out/seeds" "$out/artifacts"
clang -std=c17 -g -O1 -D_GNU_SOURCE -Iinclude -I. -fno-omit-frame-pointer \
    -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=all \
    tests/fuzz/fuzz_project.c consumer/project/config.c consumer/project/value.c \
    consumer/project/scan.c \
    $(pkg-config --cflags --libs jansson) -o "$out/fuzz_project"
printf '\001{"id":"a","type":"x","t":"x","n":[7],"r":1.5,"b":true,"ts":"2026-12-04T17:44:43.123+01:00","d":"2026-01-02","a/b":{"~c":[1,{"x":null}]},"g":"q","k":1,"v":3}' > "$out/seeds/event"
printf '\001{"id":12,"ts":1796407065118,"op":"del"}' > "$out/seeds/event2"
printf '\002{"id":"a\\u00e9\\ud83d\\ude00","n":[7,-0.5e3],"r":1.5,"a/b":{"~c":[1,{"x":null}]},"g":"q","k":1,"v":3,"id":"b"}' > "$out/seeds/event3"
printf '\002 {"v":1e400,"g":"\xc3\xa9","x":{"y":[true,false,null]}} ' > "$out/seeds/event4"
{ printf '\000'; cat docs/examples/project/*.json 2>/dev/null | head -c 4000 || true; } > "$out/seeds/config"
printf '\000{"source":{"topics":["s"],"group":"g"},"sink":{"sqlite":"a"},"tables":[{"name":"v","template":"latest_by_id","key":"/id","columns":{"p":{"pointer":"/p","type":"real"}}}]}' > "$out/seeds/config2"
set +e
(cd "$out" && ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
    UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
    ./fuzz_project -max_total_time="$secs" -max_len=8192 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -artifact_prefix="$out/artifacts/" "$out/corpus" "$out/seeds")
rc=$?
set -e
[ "$rc" -eq 0 ] || { echo "fuzz-project: FAILED (exit $rc); inputs in $out/artifacts" >&2; exit "$rc"; }
echo "fuzz-project: no crash in ${secs}s"
