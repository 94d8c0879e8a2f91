#!/usr/bin/env bash
# Issue 14: quotas beyond produce/fetch bytes per principal (those are in
# test_ops_auth.sh), with the real verityd and verity CLI:
#   - requests_per_s of a principal: its requests are throttled to the rate
#     (the broker's own request count over the elapsed time), another
#     tenant's are not;
#   - connections of a principal: one over is refused with ERR_QUOTA naming
#     the quota, and admitted again once a connection closes;
#   - storage_bytes of a tenant ("+"): a produce that would pass it is
#     refused naming the quota; another tenant still produces;
#   - produce_bytes_per_s of a tenant as a whole ("+"): two principals
#     producing at once share the rate;
#   - quota_exceeded logged and audited, verity_quota_* counted.
. "$(dirname "$0")/lib.sh"
ops_init quota
export VERITY_AUTH_FILE=$OPS_TMP/auth.json
A() { "$VERITY" auth "$@"; }
as() { local k=$1; shift; VERITY_API_KEY=$k timeout 60 "$@"; }

KA=$(A key create --tenant acme --principal svc-a 2>/dev/null)
KC=$(A key create --tenant acme --principal svc-c 2>/dev/null)
KB=$(A key create --tenant beta --principal svc-b 2>/dev/null)
KG=$(A key create --tenant gamma --principal svc-g 2>/dev/null)
KD1=$(A key create --tenant delta --principal d1 2>/dev/null)
KD2=$(A key create --tenant delta --principal d2 2>/dev/null)
for t in acme beta gamma delta; do
    quiet A acl add --tenant $t --principal '*' --resource 'topic:*' --ops all
done
check "quota set --requests-per-s" quiet A quota set --tenant acme --principal svc-a --requests-per-s 20
check "quota set --connections" quiet A quota set --tenant acme --principal svc-c --connections 2
check "quota set --storage-bytes on the tenant ('+')" \
    quiet A quota set --tenant gamma --principal + --storage-bytes 65536
check "quota set refuses --storage-bytes on a principal" \
    eval '! A quota set --tenant gamma --principal svc-g --storage-bytes 1 2>/dev/null'
quiet A quota set --tenant delta --principal + --produce-bytes-per-s 262144
n=$(A --json quota list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["quotas"]))')
check "quota list --json: 4 quotas ($n)" test "$n" = 4
check "quota list shows requests_per_s" eval 'A quota list | grep -q "acme/svc-a.*requests_per_s=20"'

start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" || exit 1
export VERITY_BROKER=$S_addr
H=http://$S_http
KO=$(A key create --tenant ops --principal prom 2>/dev/null)
quiet A acl add --tenant ops --principal prom --resource cluster:metrics --ops describe
kill -HUP "$S_pid"
wait_for 10 grep -q 'event=auth_reloaded' "$OPS_TMP/S.log"
metrics() { curl -s -H "Authorization: Bearer $KO" "$H/metrics"; }
# Requests the broker answered, Hello and Authenticate aside (they are free).
requests() {
    metrics | awk '/^verity_requests_total\{/ && !/hello|authenticate/ { n += $2 } END { print n + 0 }'
}
quiet as "$KA" "$VERITY" topic create ra
quiet as "$KB" "$VERITY" topic create rb

# ---- requests_per_s -------------------------------------------------------------
# 100 ListTopics one after another on one connection (tests/ops/req_rate.py).
rate() { python3 "$(dirname "$0")/req_rate.py" "$S_addr" "$1" 100; }
ob=$(rate "$KB"); oa=$(rate "$KA")

b_ms=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ms"])' "$ob")
a_ms=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["ms"])' "$oa")
exp_ms=$(( (100 - 20) * 1000 / 20 ))
echo "  (100 requests: beta $ob; acme/svc-a at 20/s with 1 s of burst: $oa, >= $exp_ms ms expected)"
check "requests_per_s: acme/svc-a throttled ($a_ms ms >= 90% of $exp_ms)" test "$a_ms" -ge $((exp_ms * 9 / 10))
check "requests_per_s: not far past the rate ($a_ms ms <= 110% of $exp_ms + 1000)" \
    test "$a_ms" -le $((exp_ms * 11 / 10 + 1000))
check "requests_per_s: every request answered without error" grep -q '"errors": {}' <<<"$oa"
check "requests_per_s: beta unaffected ($b_ms ms < 1000)" test "$b_ms" -lt 1000
check "requests_per_s: throttled requests counted" \
    eval 'metrics | grep -Eq "^verity_quota_throttled_total [1-9]"'

# ---- connections ------------------------------------------------------------------
quiet as "$KC" "$VERITY" topic create cc
follow() {
    (VERITY_API_KEY=$KC timeout 60 "$VERITY" consume cc --follow >/dev/null 2>&1) </dev/null >/dev/null 2>&1 &
    echo $!
}
n0=$(grep -c 'event=auth_ok.*principal=svc-c' "$OPS_TMP/S.log")
f1=$(follow); f2=$(follow)
wait_for 15 test "$(grep -c 'event=auth_ok.*principal=svc-c' "$OPS_TMP/S.log")" -ge $((n0 + 2))
out=$(as "$KC" "$VERITY" topic list 2>&1)
check "connections: the third is refused with ERR_QUOTA" grep -q 'quota exceeded' <<<"$out"
check "connections: the broker's message names the quota (audit reason)" wait_for 10 \
    eval 'as "$KA" "$VERITY" consume __audit --json 2>/dev/null | grep -q "connections 2 of acme/svc-c"'
check "connections: quota_exceeded logged" grep -q 'event=quota_exceeded.*principal=svc-c.*quota=connections' "$OPS_TMP/S.log"
check "connections: svc-a of the same tenant is not limited" quiet as "$KA" "$VERITY" topic list
kill "$f1" 2>/dev/null; wait "$f1" 2>/dev/null
check "connections: admitted again after one closes" wait_for 15 quiet as "$KC" "$VERITY" topic list
kill "$f2" 2>/dev/null; wait "$f2" 2>/dev/null

# ---- storage_bytes ------------------------------------------------------------------
python3 -c '
import sys
for i in range(40): sys.stdout.write("%04d-%s\n" % (i, "s" * 1019))' >"$OPS_TMP/s.txt"
quiet as "$KG" "$VERITY" topic create sg
check "storage_bytes: 40 KiB into a 64 KiB tenant is stored" quiet as "$KG" "$VERITY" produce sg "$OPS_TMP/s.txt"
out=$(as "$KG" "$VERITY" produce sg "$OPS_TMP/s.txt" 2>&1); rc=$?
check "storage_bytes: 40 KiB more is refused (rc $rc)" test $rc -ne 0
check "storage_bytes: refused with ERR_QUOTA" grep -q 'quota exceeded' <<<"$out"
check "storage_bytes: the broker's message names the quota (audit reason)" wait_for 10 \
    eval 'as "$KG" "$VERITY" consume __audit --json 2>/dev/null | grep -q "storage_bytes 65536 of gamma"'
check "storage_bytes: a small produce still fits" quiet as "$KG" sh -c "printf 'x\n' | '$VERITY' produce sg"
n=$(as "$KG" "$VERITY" consume sg 2>/dev/null | wc -l)
# The CLI may split the second 40 KiB into batches; those that fit went in.
check "storage_bytes: the tenant's topic holds between 41 and 64 records of 1 KiB ($n)" \
    eval 'test "$n" -ge 41 && test "$n" -le 64'
check "storage_bytes: another tenant still produces" quiet as "$KB" "$VERITY" produce rb "$OPS_TMP/s.txt"
check "storage_bytes: refusal counted" eval 'metrics | grep -Eq "^verity_quota_refused_total [1-9]"'
check "storage_bytes: quota_exceeded logged" grep -q 'event=quota_exceeded.*tenant=gamma.*quota=storage_bytes' "$OPS_TMP/S.log"

# ---- produce_bytes_per_s of the tenant as a whole ------------------------------------
python3 -c '
import sys
for i in range(2500): sys.stdout.write("%06d-%s\n" % (i, "q" * 254))' >"$OPS_TMP/q.txt"
quiet as "$KD1" "$VERITY" topic create dq
t0=$(date +%s%N)
(as "$KD1" "$VERITY" produce dq "$OPS_TMP/q.txt" >/dev/null 2>&1; echo $? >"$OPS_TMP/d1.rc") &
p1=$!
(as "$KD2" "$VERITY" produce dq "$OPS_TMP/q.txt" >/dev/null 2>&1; echo $? >"$OPS_TMP/d2.rc") &
p2=$!
wait $p1 $p2
t1=$(date +%s%N)
total=$((2 * $(stat -c %s "$OPS_TMP/q.txt")))
exp_ms=$(( (total - 262144) * 1000 / 262144 ))
d_ms=$(((t1 - t0) / 1000000))
check "tenant produce rate: both principals' produces succeeded" \
    test "$(cat "$OPS_TMP/d1.rc")$(cat "$OPS_TMP/d2.rc")" = 00
check "tenant produce rate: $total bytes from two principals took $d_ms ms (>= 90% of $exp_ms)" \
    test $d_ms -ge $((exp_ms * 9 / 10))
check "tenant produce rate: not far past the rate ($d_ms <= 2 x $exp_ms + 3000)" \
    test $d_ms -le $((exp_ms * 2 + 3000))

# ---- audit ------------------------------------------------------------------------------
check "quota refusals are in the tenant's audit trail" \
    wait_for 10 eval 'as "$KG" "$VERITY" consume __audit --json 2>/dev/null | grep -q quota_exceeded'
stop_broker "$S_pid"
ops_done
