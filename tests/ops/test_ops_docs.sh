#!/usr/bin/env bash
# Issue 8 item 9: docs/OPERATIONS.md names every log event the broker and
# the storage layer emit, and every request type of verity_requests_total
# (read from a running broker's /metrics); storage lines are structured.
. "$(dirname "$0")/lib.sh"
ops_init docs
src=${VERITY_SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
doc=$src/docs/OPERATIONS.md

events=$(cd "$src" && cat broker/*.c broker/group/*.c storage/*.c | \
    perl -0ne 'while (/(?:\bblog\(BLOG_[A-Z]+|\bslog\("[a-z]+")\s*,\s*"([a-z_]+)"/g) { print "$1\n" }' | sort -u)
missing=""
for e in $events; do grep -q "\`$e\`" "$doc" || missing="$missing $e"; done
check "every log event is documented (missing:${missing:- none})" test -z "$missing"

start_broker A "$OPS_TMP/a" || exit 1
types=$(curl -s "http://$A_http/metrics" | sed -n 's/^verity_requests_total{type="\([a-z_]*\)"}.*/\1/p' | sort -u)
missing=""
for t in $types; do grep -q "verity_requests_total.*[ (,]$t[,)]" "$doc" || missing="$missing $t"; done
check "every request type of verity_requests_total is documented (missing:${missing:- none})" test -z "$missing"
m=$(curl -s "http://$A_http/metrics")
for name in process_resident_memory_bytes process_open_fds process_start_time_seconds verity_build_info verity_partitions_in_error verity_partitions_read_only; do
    check "metric $name is exported" grep -q "^$name" <<<"$m"
done
check "metric rows documented" eval 'grep -q process_resident_memory_bytes "$doc" && grep -q verity_build_info "$doc"'
stop_broker "$A_pid" TERM

# A torn tail: the storage layer's line is in the structured format.
"$VERITY" topic create x >/dev/null 2>&1 || true
seg=$(ls "$OPS_TMP"/a/topics 2>/dev/null | head -1)
start_broker B "$OPS_TMP/b" || exit 1
echo one | "$VERITY" produce t --broker "$B_addr" >/dev/null 2>&1 || \
    { "$VERITY" topic create t --broker "$B_addr" >/dev/null; echo one | "$VERITY" produce t --broker "$B_addr" >/dev/null; }
stop_broker "$B_pid" KILL
seg=$(ls "$OPS_TMP"/b/topics/t/0/*.log | head -1)
printf 'torn-tail-bytes' >>"$seg"
start_broker B "$OPS_TMP/b" || exit 1
stop_broker "$B_pid" TERM
check "a cut tail is logged as a structured line (event=log_tail_cut)" \
    grep -q '^ts=.* level=warn event=log_tail_cut dir=' "$OPS_TMP/B.log"
check "no raw 'verity: ...' lines from storage" eval '! grep -q "^verity: " "$OPS_TMP/B.log"'
ops_done
