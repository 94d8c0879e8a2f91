#!/usr/bin/env bash
# Issue 8 items 8 and 10 (wording): every program answers --version; `help
# --help` works; a bad argument is named; one JSON document per --json call
# (an empty array when empty); consume takes --json; a name that does not
# resolve is said so; log verify on a missing directory or a directory that
# is no log; plural and off-by-one wording.
. "$(dirname "$0")/lib.sh"
ops_init cli

out=$("$VERITYD" --version 2>&1); rc=$?
check "verityd --version ($out)" eval '[ $rc -eq 0 ] && grep -q "^verityd [0-9]" <<<"$out"'
out=$("$VERITY" --version 2>&1)
check "verity --version" grep -q "^verity [0-9]" <<<"$out"
out=$("$VERITY" topic --version 2>&1)
check "verity topic --version" grep -q "^verity [0-9]" <<<"$out"
out=$("$VERITY" help --help 2>&1); rc=$?
check "verity help --help lists commands" eval '[ $rc -eq 0 ] && grep -q "commands:" <<<"$out"'

out=$("$VERITY" topic create x --partitions 0 --broker 127.0.0.1:1 2>&1); rc=$?
check "--partitions 0 is a usage error ($rc)" test $rc -eq 2
check "--partitions 0 names the argument" grep -q -- "--partitions" <<<"$out"
check "--partitions 0 does not dump the whole usage" test "$(wc -l <<<"$out")" -le 3
out=$("$VERITY" consume t --from garbage --broker 127.0.0.1:1 2>&1); rc=$?
check "--from garbage names the argument and value" \
    eval '[ $rc -eq 2 ] && grep -q -- "--from" <<<"$out" && grep -q garbage <<<"$out"'
out=$("$VERITY" consume 2>&1)
check "consume without a topic says so" grep -q "missing TOPIC" <<<"$out"

out=$("$VERITY" topic list --broker nosuchhost.invalid:9720 2>&1); rc=$?
check "DNS failure says it cannot resolve ($out)" \
    eval 'grep -q "cannot resolve host .nosuchhost.invalid." <<<"$out" && ! grep -q "No such device" <<<"$out"'

out=$("$VERITY" log verify "$OPS_TMP/missing" --json 2>/dev/null); rc=$?
check "log verify /missing exits 1 ($rc)" test $rc -eq 1
check "log verify /missing --json prints one JSON object" \
    eval 'python3 -c "import json,sys; d=json.loads(sys.stdin.read()); assert d[\"ok\"] is False" <<<"$out" 2>/dev/null'
mkdir -p "$OPS_TMP/notalog"; echo hi >"$OPS_TMP/notalog/file"
out=$("$VERITY" log verify "$OPS_TMP/notalog" 2>&1); rc=$?
check "log verify on a non-log says NOT A LOG, not a tamper finding" \
    eval '[ $rc -eq 1 ] && grep -q "NOT A LOG" <<<"$out" && ! grep -q "^FAIL" <<<"$out"'

printf 'a\nb\nc\n' | "$VERITY" log write "$OPS_TMP/lw" >"$OPS_TMP/lw.out" 2>&1
out=$("$VERITY" log verify "$OPS_TMP/lw" 2>&1)
end=$("$VERITY" log verify "$OPS_TMP/lw" --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["end_offset"])')
check "log verify: chain intact through the last offset ($((end - 1)))" \
    grep -q "through offset $((end - 1))," <<<"$out"
check "log verify: '1 segment', not '1 segment(s)'" grep -q " 1 segment," <<<"$out"

data=$OPS_TMP/data
start_broker A "$data" || exit 1
out=$("$VERITY" topic create one --broker "$A_addr" 2>&1)
check "'1 partition', not '1 partitions' ($out)" grep -q "(1 partition," <<<"$out"
out=$(echo x | "$VERITY" produce one --broker "$A_addr" 2>&1)
check "'1 record', not '1 records'" grep -q "produced 1 record to" <<<"$out"

# One JSON document per --json call; an empty array when empty.
is_json() { python3 -c 'import json,sys; json.loads(sys.stdin.read())' <<<"$1" 2>/dev/null; }
is_empty_array() { python3 -c 'import json,sys; assert json.loads(sys.stdin.read()) == []' <<<"$1" 2>/dev/null; }
for c in "topic list" "group list" "dlq list --topic one" "dlq list --topic nosuch.dlq" \
         "offsets one" "broker status"; do
    out=$("$VERITY" $c --json --broker "$A_addr" 2>/dev/null)
    check "'$c --json' is one JSON document" is_json "$out"
done
out=$("$VERITY" group list --json --broker "$A_addr" 2>/dev/null)
check "group list --json with no group is []" is_empty_array "$out"
out=$("$VERITY" dlq list --topic nosuch.dlq --json --broker "$A_addr" 2>/dev/null)
check "dlq list --json with nothing is []" is_empty_array "$out"
out=$("$VERITY" consume one --json --broker "$A_addr" 2>&1); rc=$?
check "consume --json is accepted and prints the record" \
    eval '[ $rc -eq 0 ] && grep -q "\"value\":\"x\"" <<<"$out"'
stop_broker "$A_pid" TERM
ops_done
