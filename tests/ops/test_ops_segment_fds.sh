#!/usr/bin/env bash
# Issue 8 item 2: closed segments hold no descriptor of their own; reads
# open them on demand through one bounded cache (segment_fds_max). A broker
# under a 300-descriptor limit takes a partition of more segments than the
# limit, serves a fetch from the start byte for byte, keeps its descriptors
# bounded, and starts again on that directory.
. "$(dirname "$0")/lib.sh"
ops_init segment_fds

data=$OPS_TMP/a
start_limited() { # a broker whose hard descriptor limit is 300
    : >"$OPS_TMP/A.log"
    (ulimit -n 300; exec "$VERITYD" --data-dir "$data" --listen 127.0.0.1:0 --http 127.0.0.1:0 \
        --log-level info --segment-fds-max 8 >"$OPS_TMP/A.log" 2>&1) &
    A_pid=$!
    OPS_PIDS+=("$A_pid")
    wait_for 30 grep -q broker_started "$OPS_TMP/A.log" || { tail -5 "$OPS_TMP/A.log"; return 1; }
    A_addr=$(sed -n 's/.*broker_started.* listen=\([^ ]*\).*/\1/p' "$OPS_TMP/A.log")
    A_http=$(sed -n 's/.*broker_started.* http=\([^ ]*\).*/\1/p' "$OPS_TMP/A.log")
}
fds() { ls "/proc/$A_pid/fd" | wc -l; }
metric() { curl -s "http://$A_http/metrics" | awk -v m="$1" '$1 == m {print $2}'; }

start_limited || exit 1
"$VERITY" topic create t --segment-bytes 4096 --broker "$A_addr" >/dev/null
check "topic with 4 KiB segments created" test $? -eq 0
base=$(fds)
# 360 records of 3 KiB, one produce (one batch, one segment) each: more
# segments than the descriptor limit.
python3 -c '
import sys
for i in range(360):
    sys.stdout.write("record-%05d-" % i + chr(97 + i % 26) * 3000 + "\n")' >"$OPS_TMP/in.txt"
rc=0
while IFS= read -r line; do
    printf '%s\n' "$line" | "$VERITY" produce t --partition 0 --broker "$A_addr" >/dev/null 2>>"$OPS_TMP/produce.err" || rc=1
done <"$OPS_TMP/in.txt"
check "every produce acknowledged" test $rc -eq 0
segs=$(ls "$data"/topics/t/0/*.log | wc -l)
check "more segments ($segs) than the descriptor limit (300)" test "$segs" -gt 300
n=$(fds)
check "descriptors after writing stay bounded ($n, $base at the start)" test "$n" -le $((base + 12))

"$VERITY" consume t --partition 0 --from earliest --broker "$A_addr" >"$OPS_TMP/out.txt" 2>"$OPS_TMP/consume.err"
check "a fetch from the start reads every record ($(wc -l <"$OPS_TMP/out.txt") lines)" \
    cmp -s "$OPS_TMP/in.txt" "$OPS_TMP/out.txt"
n=$(fds)
check "descriptors after reading stay bounded ($n)" test "$n" -le $((base + 12))
open=$(metric verity_segment_fds_open)
check "verity_segment_fds_open within segment_fds_max ($open <= 8)" test "${open:-99}" -le 8
check "verity_segment_fds_max = 8" test "$(metric verity_segment_fds_max)" = 8
ev=$(metric verity_segment_fd_evictions_total)
check "evictions counted ($ev)" test "${ev:-0}" -gt 0
stop_broker "$A_pid" TERM

# Opening the directory checks every closed segment, one at a time.
start_limited || exit 1
check "the broker starts again on $segs segments under the limit" kill -0 "$A_pid"
"$VERITY" consume t --partition 0 --from earliest --broker "$A_addr" >"$OPS_TMP/out2.txt" 2>/dev/null
check "after the restart a fetch from the start reads every record" \
    cmp -s "$OPS_TMP/in.txt" "$OPS_TMP/out2.txt"
n=$(fds)
check "descriptors after the restart stay bounded ($n)" test "$n" -le $((base + 12))
check "no partition_open_failed" eval '! grep -q partition_open_failed "$OPS_TMP/A.log"'
stop_broker "$A_pid" TERM
ops_done
