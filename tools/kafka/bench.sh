#!/usr/bin/env bash
# W1 and W3 through the Kafka listener (librdkafka, tools/kafka/kafka_bench.c)
# next to the native protocol (`verity bench`), same broker, same sitting,
# RUNS (3) alternating rounds, each on a fresh one-partition topic with
# durability always (the "durable" mode of docs/PERFORMANCE.md).
#
# usage: bash tools/kafka/bench.sh [BUILD_DIR]     (make bench-kafka)
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
RUNS=${RUNS:-3}
ROOT=$(mktemp -d /tmp/verity-kbench.XXXXXX)
PID=0
trap '[ "$PID" != 0 ] && kill "$PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$ROOT"' EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
P=$(port); K=$(port)
"$BUILD/bin/verityd" --data-dir "$ROOT/data" --listen 127.0.0.1:$P --http off \
    --kafka-listen 127.0.0.1:$K --log-level warn 2>"$ROOT/log" &
PID=$!
deadline=$((SECONDS + 20))
until python3 -c "import socket; socket.create_connection(('127.0.0.1',$K),1)" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "bench: verityd did not start"; exit 1; }
    sleep 0.05
done
echo "# $(date -u '+%Y-%m-%d %H:%M UTC'), $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
for r in $(seq 1 "$RUNS"); do
    "$BUILD/bin/verity" bench --broker 127.0.0.1:$P --workload W1,W3 --mode durable 2>/dev/null |
        awk -v r="$r" '/^RESULT/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                        printf "native run %s %s %s msg/s\n", r, f["workload"], f["msgs_per_s"] }'
    t="kb$r"
    "$BUILD/bin/verity" topic create "$t" --partitions 1 --durability always --broker 127.0.0.1:$P >/dev/null
    "$BUILD/bin/kafka_bench" 127.0.0.1:$K "$t" --json |
        python3 -c "import json,sys; d=json.load(sys.stdin); print('kafka  run $r W1 %d msg/s' % d['w1_msgs_per_s']); print('kafka  run $r W3 %d msg/s' % d['w3_msgs_per_s'])"
done
