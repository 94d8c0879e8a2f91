#!/usr/bin/env bash
# Issue 8 item 2: honest partial failure. A topic that cannot fit in the
# descriptor limit is refused up front naming the limit (nothing created);
# a partition that fails to open answers at once with its typed error, and
# /ready and verity_partitions_in_error report it; the soft fd limit is
# raised to the hard one at start.
. "$(dirname "$0")/lib.sh"
ops_init partitions

# 1. A broker whose hard limit is 300 descriptors.
(ulimit -n 300; exec "$VERITYD" --data-dir "$OPS_TMP/a" --listen 127.0.0.1:0 \
    --http 127.0.0.1:0 --log-level info >"$OPS_TMP/A.log" 2>&1) &
A_pid=$!
OPS_PIDS+=("$A_pid")
wait_for 20 grep -q broker_started "$OPS_TMP/A.log"
A_addr=$(sed -n 's/.*broker_started.* listen=\([^ ]*\).*/\1/p' "$OPS_TMP/A.log")
A_http=$(sed -n 's/.*broker_started.* http=\([^ ]*\).*/\1/p' "$OPS_TMP/A.log")
out=$("$VERITY" topic create big --partitions 1024 --broker "$A_addr" 2>&1); rc=$?
check "1024 partitions over the fd limit: refused, exit 1 ($rc)" test $rc -eq 1
check "the refusal names the limit ($out)" grep -q "RLIMIT_NOFILE" <<<"$out"
check "nothing was created" eval '! "$VERITY" topic list --broker "$A_addr" | grep -q big'
check "no partition_open_failed in the log" eval '! grep -q partition_open_failed "$OPS_TMP/A.log"'
out=$("$VERITY" topic create small --partitions 4 --broker "$A_addr" 2>&1); rc=$?
check "a topic that fits is created" test $rc -eq 0
code=$(curl -s -o /dev/null -w '%{http_code}' "http://$A_http/ready")
check "/ready 200 with every partition open ($code)" test "$code" = 200
stop_broker "$A_pid" TERM

# 2. The soft limit is raised to the hard one.
(ulimit -S -n 128; exec "$VERITYD" --data-dir "$OPS_TMP/b" --listen 127.0.0.1:0 \
    --http 127.0.0.1:0 --log-level info >"$OPS_TMP/B.log" 2>&1) &
B_pid=$!
OPS_PIDS+=("$B_pid")
wait_for 20 grep -q broker_started "$OPS_TMP/B.log"
hard=$(ulimit -H -n)
soft=$(awk '/Max open files/ {print $4}' "/proc/$B_pid/limits")
check "soft fd limit raised to the hard limit ($soft = $hard)" test "$soft" = "$hard"
stop_broker "$B_pid" TERM

# 3. A partition damaged in the middle fails to open: it answers at once.
data=$OPS_TMP/c
start_broker C "$data" || exit 1
"$VERITY" topic create t --partitions 2 --broker "$C_addr" >/dev/null
for i in $(seq 1 20); do echo "record $i" | "$VERITY" produce t --partition 1 --broker "$C_addr" >/dev/null 2>&1; done
stop_broker "$C_pid" TERM
seg=$(ls "$data"/topics/t/1/*.log | head -1)
size=$(stat -c %s "$seg")
printf 'XXXXXXXXXXXXXXXX' | dd of="$seg" bs=1 seek=$((size / 3)) conv=notrunc status=none
start_broker C "$data" || exit 1
t0=$(date +%s%N)
out=$(echo x | "$VERITY" produce t --partition 1 --timeout-ms 20000 --broker "$C_addr" 2>&1); rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "produce to the broken partition fails ($rc)" test $rc -ne 0
check "... at once (${ms} ms < 3000), not after its timeout" test "$ms" -lt 3000
check "... with the typed error ($out)" grep -q "ECORRUPT\|corrupt\|CRC" <<<"$out"
out=$(echo y | "$VERITY" produce t --partition 0 --broker "$C_addr" 2>&1)
check "the healthy partition still takes produces" test $? -eq 0
code=$(curl -s -o "$OPS_TMP/ready.txt" -w '%{http_code}' "http://$C_http/ready")
check "/ready 503 with a partition in error ($code: $(cat "$OPS_TMP/ready.txt"))" test "$code" = 503
m=$(curl -s "http://$C_http/metrics" | awk '/^verity_partitions_in_error / {print $2}')
check "verity_partitions_in_error = 1 ($m)" test "$m" = 1
out=$("$VERITY" log verify "$data/topics/t/1" 2>&1)
check "log verify names the damaged log and a repair step" \
    eval 'grep -q "damaged log: $data/topics/t/1" <<<"$out" && grep -q "^repair:" <<<"$out"'
stop_broker "$C_pid" TERM
ops_done
