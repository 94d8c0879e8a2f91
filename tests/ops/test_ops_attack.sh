#!/usr/bin/env bash
# Issue 8 items 3 and 4: unauthenticated clients cannot take the memory or
# lock everyone out, and running out of descriptors does not flood the log.
# Each attack runs against a real verityd (tests/ops/attack.py, loopback,
# bounded); the operator's `verity broker status` must succeed during it,
# and memory and descriptors must come back after it.
#   ATTACK_FIGURES=FILE appends each attack's JSON result to FILE.
. "$(dirname "$0")/lib.sh"
ops_init attack
ATTACK="python3 $(dirname "$0")/attack.py"
figures=${ATTACK_FIGURES:-$OPS_TMP/figures.jsonl}
MiB=1024

field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); v=d
for k in sys.argv[2].split("."): v=v[k]
print(int(v) if isinstance(v,bool) or isinstance(v,(int,float)) else v)' "$1" "$2"; }
attack() { # attack NAME ARGS...: runs one attack, keeps its JSON in $res
    local name=$1; shift
    res=$(timeout 120 $ATTACK "$@" --verity "$VERITY")
    echo "  $name: $res"
    echo "{\"attack\":\"$name\",\"result\":$res}" >>"$figures"
}

# 1. 100 connections each announce a 16 MiB frame and send 10 MiB of it.
start_broker A "$OPS_TMP/a" || exit 1
attack partial-frames partial --broker "$A_addr" --pid "$A_pid" -n 100 --frame-mb 16 --part-mb 10 --seconds 10
check "partial frames: status answered during the attack" test "$(field "$res" status_during.ok)" = 1
check "partial frames: peak RSS $(( $(field "$res" peak_rss_kb) / MiB )) MiB <= 400 MiB (buffer_bytes_max 256 MiB)" \
    test "$(field "$res" peak_rss_kb)" -le $((400 * MiB))
check "partial frames: RSS back within 64 MiB of the baseline after ($(( $(field "$res" after_rss_kb) / MiB )) MiB)" \
    test "$(field "$res" after_rss_kb)" -le $(( $(field "$res" baseline_rss_kb) + 64 * MiB ))
fds_back() { [ "$(ls /proc/$1/fd | wc -l)" -le $(( $2 + 4 )) ]; }
check "partial frames: every connection closed after (descriptors back)" \
    wait_for 10 fds_back "$A_pid" "$(field "$res" baseline_fds)"

# 2. 5,000 idle connections from one address.
attack idle-5000 idle --broker "$A_addr" --pid "$A_pid" -n 5000
check "idle: at most max_connections_per_addr (1024) kept open ($(field "$res" open_after_accept))" \
    test "$(field "$res" open_after_accept)" -le 1024
check "idle: status answered during the attack" test "$(field "$res" status_during.ok)" = 1
check "idle: peak RSS <= 200 MiB" test "$(field "$res" peak_rss_kb)" -le $((200 * MiB))

# 3. The admin HTTP port: 200 idle connections hold at most max_http_connections.
attack http-idle-200 http-idle --http "$A_http" --broker "$A_addr" --pid "$A_pid" -n 200
check "http: broker descriptors capped (max_http_connections 64): $(field "$res" broker_fds_during)" \
    test "$(field "$res" broker_fds_during)" -le $(( $(field "$res" baseline_fds) + 64 + 4 ))
out=$(curl -s -o /dev/null -w '%{http_code}' -X POST "http://$A_http/metrics" 2>/dev/null || true)
check "POST to the admin port answers 405 ($out)" test "$out" = 405
stop_broker "$A_pid" TERM

# 4. Slowloris: a frame at one byte a second is closed at frame_timeout_ms.
# 5. Reserved slots: one client fills every other slot, the operator gets in.
start_broker B "$OPS_TMP/b" --frame-timeout-ms 3000 --max-connections 600 \
    --max-connections-per-addr 100000 || exit 1
attack slowloris-50 slowloris --broker "$B_addr" --pid "$B_pid" -n 50 --seconds 10
check "slowloris: all 50 closed ($(field "$res" closed))" test "$(field "$res" closed)" -eq 50
check "slowloris: closed within frame_timeout_ms + 2 s ($(field "$res" max_close_s) s)" \
    python3 -c "import sys; sys.exit(0 if $(field "$res" max_close_s) <= 5 else 1)"
check "slowloris: status answered during the attack" test "$(field "$res" status_during.ok)" = 1
attack reserved-slots idle --broker "$B_addr" --pid "$B_pid" -n 1000
check "reserved: the client got max_connections - reserved_connections (568): $(field "$res" open_after_accept)" \
    test "$(field "$res" open_after_accept)" -eq 568
check "reserved: the operator's status got in" test "$(field "$res" status_during.ok)" = 1
stop_broker "$B_pid" TERM

# 6. Out of descriptors: accept fails with EMFILE; the broker backs off and
# logs at most about one line a second, then serves again.
(ulimit -n 64; exec "$VERITYD" --data-dir "$OPS_TMP/c" --listen 127.0.0.1:0 --http off \
    --log-level info >"$OPS_TMP/C.log" 2>&1) &
C_pid=$!
OPS_PIDS+=("$C_pid")
wait_for 20 grep -q broker_started "$OPS_TMP/C.log"
C_addr=$(sed -n 's/.*broker_started.* listen=\([^ ]*\).*/\1/p' "$OPS_TMP/C.log")
t0=$SECONDS
attack emfile-200 idle --broker "$C_addr" --pid "$C_pid" -n 200 --status-timeout 15
secs=$((SECONDS - t0 + 1))
lines=$(grep -c 'event=accept_failed' "$OPS_TMP/C.log")
check "EMFILE: accept_failed was logged ($lines lines)" test "$lines" -ge 1
check "EMFILE: at most one accept_failed line a second ($lines in ${secs} s)" test "$lines" -le $((secs + 1))
check "EMFILE: no libevent line flood" test "$(grep -c 'accept()' "$OPS_TMP/C.log")" -le $((secs + 1))
check "EMFILE: status answered after the attack" test "$(field "$res" status_after.ok)" = 1
stop_broker "$C_pid" TERM
ops_done
