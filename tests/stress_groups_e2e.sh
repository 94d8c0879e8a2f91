#!/usr/bin/env bash
# Runs the groups end-to-end suite RUNS times in a row while LOAD busy loops
# (default: one per core) keep every core busy; stops at the first failure.
# Usage: tests/stress_groups_e2e.sh BUILD_DIR [RUNS]   (make stress-groups)
set -euo pipefail
build=${1:-build}
runs=${2:-30}
load=${LOAD:-$(nproc)}
pids=()
stop_load() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap stop_load EXIT
for _ in $(seq "$load"); do
    ( while :; do :; done ) &
    pids+=("$!")
done
echo "stress-groups: $runs runs of test_groups_e2e with $load busy loops (PIDs ${pids[*]})"
start=$(date +%s)
for i in $(seq "$runs"); do
    t0=$(date +%s)
    if ! VERITY_BIN_DIR="$(cd "$build/bin" && pwd)" "$build/tests/test_groups_e2e" \
            >"$build/stress-groups-$i.log" 2>&1; then
        echo "stress-groups: run $i FAILED (log: $build/stress-groups-$i.log)"
        grep -E 'FAILED|^ +[0-9]+\. ' "$build/stress-groups-$i.log" | head -20
        exit 1
    fi
    echo "stress-groups: run $i passed in $(( $(date +%s) - t0 )) s"
    rm -f "$build/stress-groups-$i.log"
done
echo "stress-groups: $runs of $runs passed in $(( $(date +%s) - start )) s under $load busy loops"
