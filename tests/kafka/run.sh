#!/usr/bin/env bash
# Kafka listener suite (issue 15) with the real clients from Debian's
# packages: kcat, python3-confluent-kafka (librdkafka), python3-kafka.
#
#   tests/kafka/run.sh BUILD_DIR [quick|full]
#
# quick (make test-kafka, part of make test): 100,000 kcat messages, an
# idempotent producer of KAFKA_IDEM_N (20,000) messages with one kill -9;
# full (make test-kafka-full): 1,000,000 messages with three kill -9s.
# A real verityd on free loopback ports; stopped by PID; every wait polls a
# condition with a deadline.
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
MODE=${2:-quick}
NAME=kafka
. "$(dirname "$0")/lib.sh"
HERE=$(cd "$(dirname "$0")" && pwd)
KC="$PY $HERE/kclients.py"
if [ "$MODE" = full ]; then IDEM_N=${KAFKA_IDEM_N:-1000000}; KILLS=3; else IDEM_N=${KAFKA_IDEM_N:-20000}; KILLS=1; fi
PORT=$(free_port); KPORT=$(free_port)
BROKER=127.0.0.1:$PORT; BOOT=127.0.0.1:$KPORT
DATA=$ROOT/data

start() {
    "$BIN/verityd" --data-dir "$DATA" --listen "$BROKER" --http off --kafka-listen "$BOOT" \
        --default-durability group --log-level info >>"$ROOT/verityd.log" 2>&1 &
    PID=$!
    local deadline=$((SECONDS + 20))
    until $PY -c "import socket; socket.create_connection(('127.0.0.1',$KPORT),1)" 2>/dev/null; do
        kill -0 "$PID" 2>/dev/null || fail "verityd exited"
        [ $SECONDS -lt $deadline ] || fail "verityd did not listen within 20 s"
        sleep 0.05
    done
}
stop() { # stop SIG
    kill "-$1" "$PID"
    wait "$PID" || true
    PID=0
}
V() { "$BIN/verity" "$@" --broker "$BROKER"; }

start
V topic create kc --partitions 3 >/dev/null
V topic create x --partitions 1 >/dev/null
V topic create idem --partitions 3 >/dev/null
V topic create kp --partitions 2 >/dev/null
V topic create bad --partitions 1 >/dev/null

# 1. kcat -L lists topics and partitions.
kcat -b "$BOOT" -L > "$ROOT/L.txt"
grep -q 'topic "kc" with 3 partitions' "$ROOT/L.txt" || fail "kcat -L: kc missing"
grep -q 'partition 2, leader 1, replicas: 1, isrs: 1' "$ROOT/L.txt" || fail "kcat -L: partitions"
echo "ok: kcat -L lists topics and partitions"

# 2. 100,000 keyed messages with headers, back byte for byte.
N=100000
awk -v n=$N 'BEGIN { for (i = 0; i < n; i++) printf "key-%06d\tvalue %d %s\n", i, i, substr("abcdefghijklmnopqrstuvwxyz", 1 + i % 26) }' > "$ROOT/in.txt"
kcat -b "$BOOT" -P -t kc -K $'\t' -H trace=abc -H n=42 -l "$ROOT/in.txt"
kcat -b "$BOOT" -C -t kc -o beginning -e -q -f '%k\t%s\n' > "$ROOT/out.txt"
sort "$ROOT/in.txt" > "$ROOT/in.sorted"; sort "$ROOT/out.txt" > "$ROOT/out.sorted"
cmp -s "$ROOT/in.sorted" "$ROOT/out.sorted" || fail "kcat round trip differs ($(wc -l < "$ROOT/out.txt") lines)"
kcat -b "$BOOT" -C -t kc -o beginning -e -q -f '%h\n' | sort | uniq -c | grep -q "$N trace=abc,n=42" \
    || fail "headers not preserved"
echo "ok: kcat produced $N keyed messages with headers, consumed back byte for byte"

# 3. Cross-protocol: kcat -> verity consume; verity produce -> kcat.
kcat -b "$BOOT" -C -t kc -o beginning -e -q -f '%k\t%s\t%h\t%T\n' > "$ROOT/kc.kcat"
V consume kc --format json > "$ROOT/kc.verity"
$KC crosscheck "$ROOT/kc.kcat" "$ROOT/kc.verity"
# ... and by a Verity consumer group (leased, acknowledged): the same records.
V consume kc --group vgkc --format json > "$ROOT/kc.vgroup"
$KC crosscheck "$ROOT/kc.kcat" "$ROOT/kc.vgroup"
awk 'BEGIN { for (i = 0; i < 1000; i++) printf "vk%d|native value %d\n", i, i }' |
    V produce x --key-separator '|' --header origin=verity --header n=7 >/dev/null
kcat -b "$BOOT" -C -t x -o beginning -e -q -f '%k\t%s\t%h\t%T\n' > "$ROOT/x.kcat"
V consume x --format json > "$ROOT/x.verity"
[ "$(wc -l < "$ROOT/x.kcat")" = 1000 ] || fail "kcat read $(wc -l < "$ROOT/x.kcat") of 1000 native records"
$KC crosscheck "$ROOT/x.kcat" "$ROOT/x.verity"
echo "ok: cross-protocol records identical both ways (kcat -> verity consume and a Verity group; verity produce -> kcat)"

# 3b. kcat -G: two balanced consumers in one group split the partitions.
V topic create ks --partitions 3 >/dev/null
kcat -b "$BOOT" -G kgsplit ks -o beginning -q -u -f '%p %k\n' > "$ROOT/ga.out" 2>"$ROOT/ga.err" &
GA=$!
kcat -b "$BOOT" -G kgsplit ks -o beginning -q -u -f '%p %k\n' > "$ROOT/gb.out" 2>"$ROOT/gb.err" &
GB=$!
deadline=$((SECONDS + 60))
until grep -q 'group=kgsplit generation=[0-9]* members=2' "$ROOT/verityd.log"; do
    [ $SECONDS -lt $deadline ] || fail "kcat -G: two members never joined"
    sleep 0.05
done
awk 'BEGIN { for (i = 0; i < 300; i++) printf "g%03d\tv\n", i }' | kcat -b "$BOOT" -P -t ks -K $'\t'
deadline=$((SECONDS + 60))
until [ "$(cat "$ROOT/ga.out" "$ROOT/gb.out" | wc -l)" -ge 300 ]; do
    [ $SECONDS -lt $deadline ] || fail "kcat -G: read $(cat "$ROOT/ga.out" "$ROOT/gb.out" | wc -l) of 300"
    sleep 0.05
done
kill -TERM $GA $GB; wait $GA $GB || true
[ "$(cat "$ROOT/ga.out" "$ROOT/gb.out" | awk '{print $2}' | sort -u | wc -l)" = 300 ] || fail "kcat -G: keys lost"
[ "$(cat "$ROOT/ga.out" "$ROOT/gb.out" | wc -l)" = 300 ] || fail "kcat -G: a message read twice"
pa=$(awk '{print $1}' "$ROOT/ga.out" | sort -u | tr '\n' ' '); pb=$(awk '{print $1}' "$ROOT/gb.out" | sort -u | tr '\n' ' ')
[ -n "$pa" ] && [ -n "$pb" ] || fail "kcat -G: one member got nothing ($pa | $pb)"
for p in $pa; do case " $pb " in *" $p "*) fail "kcat -G: partition $p read by both";; esac; done
echo "ok: kcat -G: two consumers split the partitions ($pa| $pb)"

# 4. confluent-kafka idempotent producer across kill -9 and restart.
$KC idem "$BOOT" idem "$IDEM_N" "$ROOT/acked.txt" > "$ROOT/idem.out" 2>&1 &
PPID_IDEM=$!
for k in $(seq 1 $KILLS); do
    # Kill once the log holds about k/(KILLS+1) of the messages.
    target=$((IDEM_N * k / (KILLS + 1)))
    deadline=$((SECONDS + 300))
    while :; do
        total=$(V offsets idem --json 2>/dev/null | $PY -c 'import json,sys; print(sum(p["end_offset"] for p in json.load(sys.stdin)["partitions"]))' 2>/dev/null || echo 0)
        [ "$total" -ge "$target" ] && break
        kill -0 $PPID_IDEM 2>/dev/null || break
        [ $SECONDS -lt $deadline ] || fail "producer made no progress"
        sleep 0.05
    done
    stop KILL
    echo "   killed verityd -9 at ~$total records; restarting"
    start
done
wait $PPID_IDEM || { cat "$ROOT/idem.out"; fail "idempotent producer failed"; }
cat "$ROOT/idem.out"
$KC readback "$BOOT" idem "$ROOT/acked.txt"
echo "ok: idempotent producer across $KILLS kill -9: every acknowledged message once, in order"

# 5. kafka-python: producer, group consumer, commit; offsets after restart.
$KC kp_produce "$BOOT" kp 2000
$KC kp_group "$BOOT" kp kpg 2000 "$ROOT/kp.pos"
stop TERM
start
$KC kp_committed "$BOOT" kp kpg "$ROOT/kp.pos"
echo "ok: kafka-python round trip, committed offsets survive a restart"

# 5b. verity group list/describe show the Kafka group's offsets and lag.
$KC kp_produce "$BOOT" kp 10
V group list --json > "$ROOT/glist.json"
V group describe kpg --json > "$ROOT/gdesc.json"
V offsets kp --json > "$ROOT/kp.offsets"
$KC describe_check "$ROOT/glist.json" "$ROOT/gdesc.json" "$ROOT/kp.offsets" kp kpg "$ROOT/kp.pos" 10
lag=$($PY -c 'import json,sys; print(sum(p["unacked"] for p in json.load(open(sys.argv[1]))["partitions"]))' "$ROOT/gdesc.json")
V group describe kpg --kafka | grep -q "^total lag $lag\$" || fail "describe --kafka: no total lag $lag"
if V group describe no-such-kafka-group --kafka 2>"$ROOT/nf.err"; then fail "describe of a missing Kafka group succeeded"; fi
grep -q 'no Kafka group no-such-kafka-group' "$ROOT/nf.err" || fail "missing group: $(cat "$ROOT/nf.err")"
echo "ok: verity group list/describe show the Kafka group's committed offsets and lag"

# 6. A confluent-kafka group of three with manual commits; one killed -9.
V topic create g3 --partitions 6 >/dev/null
$KC fill "$BOOT" g3 6000
$KC group3 "$BOOT" g3 grp3 6000 "$ROOT"
echo "ok: group of three: a killed member's partitions move, none lost, no committed message re-read"

# 6b. The Fetch read-ahead answers what a conversion on demand answers.
$KC readahead 127.0.0.1 "$KPORT" kc
echo "ok: Fetch answers from the read-ahead are byte-identical to conversions on demand"

# 7. Bad input on the Kafka port.
$KC badinput 127.0.0.1 "$KPORT" bad
echo "ok: bad input answered with typed errors or a close; broker serving"

# 8. Every log written through the Kafka listener verifies.
stop TERM
for d in "$DATA"/topics/*/* "$DATA/__kafka_offsets"; do
    "$BIN/verity" log verify "$d" >/dev/null || fail "verity log verify $d"
done
echo "ok: verity log verify passes on every partition and the offsets log"
echo "kafka suite ($MODE): all passed"
