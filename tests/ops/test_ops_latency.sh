#!/usr/bin/env bash
# Issue 16, the measuring tools: the sampled path trace (trace_sample,
# GET /debug/trace) holds ordered stage times for produced and fetched
# batches; the request histogram has its buckets; `verity bench --plot`
# writes a well-formed SVG with the peers of the same mode beside the run.
. "$(dirname "$0")/lib.sh"
ops_init latency

start_broker A "$OPS_TMP/a" --trace-sample 1 || exit 1
quiet "$VERITY" topic create t --durability always --broker "$A_addr"
for i in 1 2 3 4 5; do echo "m$i" | "$VERITY" produce t --broker "$A_addr" >/dev/null; done
out=$("$VERITY" consume t --count 5 --broker "$A_addr" 2>&1)
check "the five records read back" test "$(grep -c '^m' <<<"$out")" -eq 5
tr=$(curl -s "http://$A_http/debug/trace")
rows=$(grep -c '^TRACE topic=t ' <<<"$tr")
check "trace_sample 1: every produce is traced ($rows rows)" test "$rows" -eq 5
# Every stage reached, in order: recv <= append0 <= append1 <= sync1 <= commit
# <= answer, sync0 <= sync1, commit <= deliver (durability always: a sync each).
bad=$(awk '/^TRACE topic=t / {
    for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] + 0 }
    if (!(v["recv"] > 0 && v["recv"] <= v["append0"] && v["append0"] <= v["append1"] &&
          v["sync0"] > 0 && v["sync0"] <= v["sync1"] && v["append1"] <= v["sync1"] &&
          v["sync1"] <= v["commit"] && v["commit"] <= v["answer"] && v["commit"] <= v["deliver"]))
        print $0
}' <<<"$tr")
check "stage times are set and ordered${bad:+ (not: $bad)}" test -z "$bad"
check "offsets 0..4 are the traced rows" \
    test "$(sed -n 's/^TRACE topic=t .* offset=\([0-9]*\) .*/\1/p' <<<"$tr" | tr '\n' ' ')" = "0 1 2 3 4 "
m=$(curl -s "http://$A_http/metrics")
# The buckets exist (their counts depend on the machine's load: 1 ms is not
# a promise on a shared 2-core box); +Inf holds every produce (five at least).
check "produce latency histogram has second buckets" \
    grep -q '^verity_request_duration_seconds_bucket{type="produce",le="0.001"} [0-9]' <<<"$m"
check "and its +Inf bucket equals its count" eval '
    inf=$(sed -n "s/^verity_request_duration_seconds_bucket{type=\"produce\",le=\"+Inf\"} //p" <<<"$m")
    cnt=$(sed -n "s/^verity_request_duration_seconds_count{type=\"produce\"} //p" <<<"$m")
    test -n "$inf" && test "$inf" = "$cnt" && test "$cnt" -ge 5'
stop_broker "$A_pid" TERM

start_broker B "$OPS_TMP/b" || exit 1
check "without trace_sample the trace is empty" eval \
    'curl -s "http://$B_http/debug/trace" | grep -q "trace_sample is 0"'
check "and no row is kept" eval '! curl -s "http://$B_http/debug/trace" | grep -q "^TRACE"'

# --plot with a peers file: W2 relaxed (20,000 one-at-a-time produces).
peers=$OPS_TMP/peers.txt
cat >"$peers" <<'P'
RESULT peer=redis mode=relaxed workload=W2 msgs=20000 p50_us=68 p99_us=120 p999_us=188 max_us=900 run=1
RESULT peer=redis mode=relaxed workload=W2 msgs=20000 p50_us=70 p99_us=140 p999_us=200 max_us=950 run=2
RESULT peer=redis mode=durable workload=W2 msgs=20000 p50_us=194 p99_us=291 p999_us=384 max_us=999 run=1
garbage line
P
out=$("$VERITY" bench --broker "$B_addr" --workload W2 --mode relaxed --plot "$OPS_TMP/w2.svg" \
    --peers "$peers" 2>/dev/null); rc=$?
check "bench W2 --plot succeeds" test $rc -eq 0
check "it prints p50/p99/p999/max" grep -q 'workload=W2 .*p50_us=.*p99_us=.*p999_us=.*max_us=' <<<"$out"
check "the SVG is well-formed XML" python3 -c 'import sys, xml.dom.minidom as m; m.parse(sys.argv[1])' "$OPS_TMP/w2.svg"
check "it draws the run and the relaxed peer (median of 2)" eval \
    'grep -q "verity relaxed" "$OPS_TMP/w2.svg" && grep -q "redis relaxed (median of 2)" "$OPS_TMP/w2.svg"'
check "not the peer of the other mode" eval '! grep -q "redis durable" "$OPS_TMP/w2.svg"'
"$VERITY" bench --broker "$B_addr" --workload W2 --peers "$peers" >/dev/null 2>&1
check "--peers without --plot is a usage error" test $? -eq 2
out=$("$VERITY" bench --broker "$B_addr" --workload W2 --plot "$OPS_TMP/none.svg" --peers /nonexistent 2>&1); rc=$?
check "an unreadable --peers fails before any workload" eval 'test $rc -eq 1 && grep -q "peers /nonexistent" <<<"$out" && test ! -e "$OPS_TMP/none.svg"'
stop_broker "$B_pid" TERM
ops_done
