#!/usr/bin/env bash
# W1 and W3 through the Kafka listener (librdkafka, tools/kafka/kafka_bench.c)
# next to the native protocol (`verity bench`), same broker, same sitting,
# RUNS (3) alternating rounds, each on a fresh one-partition topic with
# durability always (the "durable" mode of docs/PERFORMANCE.md).
#
# usage: bash tools/kafka/bench.sh [BUILD_DIR]     (make bench-kafka)
#   KAFKA_BENCH=PATH   another kafka_bench binary (to compare two in one sitting)
#   KAFKA_BENCH_ARGS   extra kafka_bench options (kafka_bench --help)
# Each line also gives the broker's CPU on the workload's clock (srv_cpu) and
# the client's (cli_cpu: every libverity or librdkafka thread).
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
KB=${KAFKA_BENCH:-$BUILD/bin/kafka_bench}
KB_PID=(); "$KB" --help | grep -q -- --broker-pid && KB_PID=(--broker-pid) # older builds lack it
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
    "$BUILD/bin/verity" bench --broker 127.0.0.1:$P --broker-pid $PID --workload W1,W3 --mode durable 2>/dev/null |
        awk -v r="$r" '/^RESULT/ { for (i = 1; i <= NF; i++) { split($i, kv, "="); f[kv[1]] = kv[2] }
                        printf "native run %s %s %s msg/s srv_cpu %s s cli_cpu %s s\n", r, f["workload"], f["msgs_per_s"], f["srv_cpu_s"], f["cli_cpu_s"] }'
    t="kb$r"
    "$BUILD/bin/verity" topic create "$t" --partitions 1 --durability always --broker 127.0.0.1:$P >/dev/null
    # shellcheck disable=SC2086
    "$KB" 127.0.0.1:$K "$t" --json ${KB_PID[@]:+"${KB_PID[@]}" $PID} ${KAFKA_BENCH_ARGS:-} |
        python3 -c "import json,sys; d=json.load(sys.stdin)
for w in ('w1', 'w3'):
    print('kafka  run $r %s %d msg/s srv_cpu %.2f s cli_cpu %.2f s' % (w.upper(), d[w + '_msgs_per_s'], d.get(w + '_broker_cpu_s', -1), d.get(w + '_client_cpu_s', -1)))"
done
echo "# end $(date -u '+%H:%M UTC'), load average $(cut -d' ' -f1-3 /proc/loadavg)"
