#!/usr/bin/env bash
# Issue 8 item 1: one owner per data directory. A second verityd and a
# writing `verity log` command on a live directory exit at once naming the
# owner's PID; the live broker's logs verify afterwards; a lock left by a
# killed broker does not block the next start.
. "$(dirname "$0")/lib.sh"
ops_init lock
data=$OPS_TMP/data

start_broker A "$data" || exit 1
check "create topic" "$VERITY" topic create t --partitions 2 --broker "$A_addr"
seq 1 50 | "$VERITY" produce t --broker "$A_addr" >/dev/null
check "produce to A" test $? -eq 0

# A second broker on the same directory and the same ports.
t0=$SECONDS
out=$("$VERITYD" --data-dir "$data" --listen "$A_addr" --http off --log-level info 2>&1)
rc=$?
check "second verityd exits non-zero ($rc)" test $rc -ne 0
check "second verityd names the owner's PID $A_pid" grep -q "data directory in use by PID $A_pid" <<<"$out"
check "second verityd ran no recovery" eval '! grep -q "recover\|torn" <<<"$out"'
check "second verityd exits at once" test $((SECONDS - t0)) -le 5
# On other ports it must be refused just the same.
out=$("$VERITYD" --data-dir "$data" --listen 127.0.0.1:0 --http off 2>&1 &
      p=$!; sleep 0; for i in $(seq 1 100); do kill -0 $p 2>/dev/null || break; sleep 0.05; done
      if kill -0 $p 2>/dev/null; then kill -KILL $p; echo STILL_RUNNING; fi; wait $p)
check "second verityd on other ports refused" grep -q "data directory in use by PID $A_pid" <<<"$out"

# A writing log command on a live partition.
out=$(echo x | "$VERITY" log write "$data/topics/t/0" 2>&1)
rc=$?
check "log write on live partition exits 1 ($rc)" test $rc -eq 1
check "log write names the owner's PID" grep -q "in use by PID $A_pid" <<<"$out"

seq 51 100 | "$VERITY" produce t --broker "$A_addr" >/dev/null
check "A still answers produces" test $? -eq 0
check "A stops cleanly" stop_broker "$A_pid" TERM
for d in "$data/__meta" "$data/topics/t/0" "$data/topics/t/1"; do
    check "log verify ${d#$data/}" quiet "$VERITY" log verify "$d"
done

# A killed broker's lock file stays; the next start is not blocked.
start_broker B "$data" || exit 1
stop_broker "$B_pid" KILL
check "lock file left by the killed broker" test -e "$data/verity.lock"
start_broker C "$data"
check "restart after kill -9 starts" test $? -eq 0
stop_broker "$C_pid" TERM
# With the broker stopped, log write may write (and takes the same lock).
out=$(echo y | "$VERITY" log write "$OPS_TMP/standalone" 2>&1)
check "log write on a free directory works" test $? -eq 0
ops_done
