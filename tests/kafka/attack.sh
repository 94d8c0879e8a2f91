#!/usr/bin/env bash
# Resource attacks on the Kafka port (issue 15, must-show 5: the native
# broker's bad-input suites, for Kafka frames). tests/ops/attack.py, as
# test_ops_attack.sh runs it against the native port, aimed at the Kafka
# listener of a real verityd (--target); the operator's `verity broker
# status` on the native port must answer during each attack.
#   1. 100 connections each announce a 16 MiB Kafka frame and send 10 MiB
#      of it: the broker's memory stays bounded (peak RSS <= 400 MiB, as on
#      the native port) and comes back after.
#   2. slowloris: 50 connections send a frame one byte a second; each is
#      closed within frame_timeout_ms (3 s here) + 2 s.
#   3. 2,000 idle connections from one address: at most
#      max_connections_per_addr (1024) are kept.
#
#   tests/kafka/attack.sh BUILD_DIR        (part of make test-kafka, ~40 s)
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
NAME=kafka-attack
. "$(dirname "$0")/lib.sh"
ATTACK="$PY $SRC/tests/ops/attack.py"
MiB=1024
PORT=$(free_port); KPORT=$(free_port)
BROKER=127.0.0.1:$PORT; BOOT=127.0.0.1:$KPORT
"$BIN/verityd" --data-dir "$ROOT/data" --listen "$BROKER" --http off --kafka-listen "$BOOT" \
    --frame-timeout-ms 3000 --log-level info >"$ROOT/verityd.log" 2>&1 &
PID=$!
wait_for 20 $PY -c "import socket; socket.create_connection(('127.0.0.1',$KPORT),1)" 2>/dev/null \
    || fail "verityd did not listen within 20 s"
field() { $PY -c 'import json,sys; d=json.loads(sys.argv[1]); v=d
for k in sys.argv[2].split("."): v=v[k]
print(int(v) if isinstance(v,(bool,int,float)) else v)' "$1" "$2"; }
attack() { # attack MODE ARGS...: one attack on the Kafka port, its JSON in $res
    res=$(timeout 120 $ATTACK "$@" --broker "$BROKER" --target "$BOOT" --pid "$PID" --verity "$BIN/verity")
    echo "   $1: $res"
}
check() { # check WHAT CMD...
    local what=$1; shift
    "$@" || fail "$what"
    ok "$what"
}
serving() { # a Kafka client still gets its answers
    timeout 20 kcat -b "$BOOT" -L >/dev/null 2>&1
}

attack partial -n 100 --frame-mb 16 --part-mb 10 --seconds 10
check "partial frames: status answered during the attack" test "$(field "$res" status_during.ok)" = 1
check "partial frames: peak RSS $(( $(field "$res" peak_rss_kb) / MiB )) MiB <= 400 MiB" \
    test "$(field "$res" peak_rss_kb)" -le $((400 * MiB))
check "partial frames: RSS back within 64 MiB of the baseline after ($(( $(field "$res" after_rss_kb) / MiB )) MiB)" \
    test "$(field "$res" after_rss_kb)" -le $(( $(field "$res" baseline_rss_kb) + 64 * MiB ))
check "partial frames: kcat -L answered after" serving

attack slowloris -n 50 --seconds 10
check "slowloris: all 50 closed ($(field "$res" closed))" test "$(field "$res" closed)" -eq 50
check "slowloris: closed within frame_timeout_ms + 2 s ($(field "$res" max_close_s) s)" \
    $PY -c "import sys; sys.exit(0 if $(field "$res" max_close_s) <= 5 else 1)"
check "slowloris: status answered during the attack" test "$(field "$res" status_during.ok)" = 1

attack idle -n 2000
check "idle: at most max_connections_per_addr (1024) kept open ($(field "$res" open_after_accept))" \
    test "$(field "$res" open_after_accept)" -le 1024
check "idle: status answered during the attack" test "$(field "$res" status_during.ok)" = 1
check "idle: kcat -L answered after" serving
kill -0 "$PID" || fail "verityd died"
echo "kafka attack suite: all passed"
