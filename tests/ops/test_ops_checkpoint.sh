#!/usr/bin/env bash
# Issue 8 item 10: a fresh small log shows a signed checkpoint that verifies
# within checkpoint_interval_ms (here 1 s), not only after 10,000 records or
# at shutdown; nothing is checkpointed while nothing is appended.
. "$(dirname "$0")/lib.sh"
ops_init checkpoint
data=$OPS_TMP/data
start_broker A "$data" --checkpoint-interval-ms 1000 || exit 1
"$VERITY" topic create small --broker "$A_addr" >/dev/null
printf 'a\nb\nc\n' | "$VERITY" produce small --broker "$A_addr" >/dev/null 2>&1
verified() {
    "$VERITY" log verify "$data/topics/small/0" --pubkey "$data/keys/verity.pub" --json 2>/dev/null |
        python3 -c 'import json,sys; d=json.load(sys.stdin); sys.exit(0 if d["ok"] and d["checkpoints_verified"] >= 1 else 1)'
}
check "a signed checkpoint verifies within 5 s of the first append (broker running)" wait_for 5 verified
ends() { "$VERITY" log verify "$data/topics/small/0" --json 2>/dev/null | python3 -c 'import json,sys; print(json.load(sys.stdin)["end_offset"])'; }
e1=$(ends)
# Idle: no further checkpoints. Poll the end offset over 3 intervals.
same=1
for i in $(seq 1 30); do [ "$(ends)" = "$e1" ] || same=0; sleep 0.1; done
check "no checkpoint while nothing is appended (end stays $e1)" test $same -eq 1
stop_broker "$A_pid" TERM
ops_done
