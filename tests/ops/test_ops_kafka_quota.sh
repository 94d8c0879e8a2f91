#!/usr/bin/env bash
# Issue 14: quotas on the Kafka port. A real verityd with auth_file and the
# Kafka listener, librdkafka producers (tests/ops/kquota.py, SASL/PLAIN):
#   - alice (tenant acme, produce_bytes_per_s 256 KiB/s) sending 1.25 MiB
#     takes the quota's time (>= 90 % of it, one second of burst allowed)
#     and librdkafka reports the broker's throttle_time_ms;
#   - bob (tenant beta, no quota) sending the same is not slowed and sees
#     no throttle; every record of both arrives (read back natively);
#   - a producer that exits while its requests are held leaves the broker
#     serving, and it stops cleanly (run with an ASan build to see the
#     held requests released);
#   - fetch_bytes_per_s (256 KiB/s) on dave (acme): a librdkafka consumer
#     reading alice's 1.25 MiB takes the quota's time and sees
#     throttle_time_ms; bob's consumer (no quota) is not slowed and sees
#     none (dave has his own bucket: the native reads above charged
#     alice's);
#   - storage_bytes (128 KiB) on tenant gamma: carol's Kafka produces past
#     it are refused with POLICY_VIOLATION (quota_exceeded ... port=kafka
#     logged), what was stored stays near the bound, and bob, in another
#     tenant, produces on.
. "$(dirname "$0")/lib.sh"
ops_init kafka_quota
PY=/usr/bin/python3 # confluent-kafka from Debian's python3-confluent-kafka
if ! $PY -c 'import confluent_kafka' 2>/dev/null; then
    bad "python3-confluent-kafka is not installed (make deps)"
    ops_done
    exit 1
fi
export VERITY_AUTH_FILE=$OPS_TMP/auth.json
A() { "$VERITY" auth "$@"; }
KA=$(A key create --tenant acme --principal alice 2>/dev/null)
KB=$(A key create --tenant beta --principal bob 2>/dev/null)
quiet A acl add --tenant acme --principal alice --resource 'topic:*' --ops all
quiet A acl add --tenant beta --principal bob --resource 'topic:*' --ops all
KC=$(A key create --tenant gamma --principal carol 2>/dev/null)
quiet A acl add --tenant gamma --principal carol --resource 'topic:*' --ops all
KD=$(A key create --tenant acme --principal dave 2>/dev/null)
quiet A acl add --tenant acme --principal dave --resource 'topic:*' --ops consume,describe
quiet A quota set --tenant acme --principal alice --produce-bytes-per-s 262144
quiet A quota set --tenant acme --principal dave --fetch-bytes-per-s 262144
quiet A quota set --tenant gamma --principal + --storage-bytes 131072
start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" --kafka-listen 127.0.0.1:0 || exit 1
BOOT=$(grep broker_started "$OPS_TMP/S.log" | sed -n 's/.* kafka=\([^ ]*\).*/\1/p')
check "the Kafka listener is up ($BOOT)" test -n "$BOOT"
VERITY_API_KEY=$KA quiet timeout 20 "$VERITY" topic create qa --broker "$S_addr"
VERITY_API_KEY=$KB quiet timeout 20 "$VERITY" topic create qb --broker "$S_addr"
N=5000 SIZE=256
bytes=$((N * SIZE))
exp_ms=$(( (bytes - 262144) * 1000 / 262144 ))
num() { $PY -c 'import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])' "$1" "$2"; }
rb=$(timeout 120 $PY "$(dirname "$0")/kquota.py" "$BOOT" bob "$KB" qb $N $SIZE)
echo "  bob: $rb"
ra=$(timeout 120 $PY "$(dirname "$0")/kquota.py" "$BOOT" alice "$KA" qa $N $SIZE)
echo "  alice: $ra"
a_ms=$($PY -c 'import json,sys; print(int(json.loads(sys.argv[1])["secs"] * 1000))' "$ra")
b_ms=$($PY -c 'import json,sys; print(int(json.loads(sys.argv[1])["secs"] * 1000))' "$rb")
check "alice: all $N delivered" test "$(num "$ra" delivered)" = $N
check "alice throttled to 256 KiB/s ($a_ms ms for $bytes bytes; >= 90 % of $exp_ms ms)" \
    test "$a_ms" -ge $((exp_ms * 9 / 10))
check "alice not slowed far past the rate ($a_ms ms <= 1.5 x $exp_ms + 2000)" \
    test "$a_ms" -le $((exp_ms * 3 / 2 + 2000))
check "alice's client saw throttle_time_ms ($(num "$ra" throttle_events) events, max $(num "$ra" throttle_ms_max) ms)" \
    test "$(num "$ra" throttle_events)" -ge 1
check "bob: all $N delivered" test "$(num "$rb" delivered)" = $N
check "bob (another tenant, no quota) not slowed ($b_ms ms < $((exp_ms / 2)) ms)" test "$b_ms" -lt $((exp_ms / 2))
check "bob saw no throttle" test "$(num "$rb" throttle_events)" = 0
check "alice's records all stored (read natively)" \
    test "$(VERITY_API_KEY=$KA timeout 30 "$VERITY" consume qa --broker "$S_addr" 2>/dev/null | wc -l)" = $N
# A producer that goes away while its requests are held: released, nothing
# half-done, the broker serves on.
out=$(timeout 60 $PY "$(dirname "$0")/kquota.py" "$BOOT" alice "$KA" qa $N $SIZE abandon)
check "a producer gone during the throttle ($out): the broker serves on" \
    quiet env VERITY_API_KEY="$KB" timeout 20 "$VERITY" topic list --broker "$S_addr"
n2=$(VERITY_API_KEY=$KA timeout 30 "$VERITY" consume qa --broker "$S_addr" 2>/dev/null | wc -l)
check "its held requests were dropped, not appended ($((n2 - N)) of $N stored)" \
    test "$n2" -lt $((2 * N))
# fetch_bytes_per_s: dave reads alice's first N records over Kafka.
rc=$(timeout 120 $PY "$(dirname "$0")/kquota.py" "$BOOT" dave "$KD" qa $N $SIZE consume)
echo "  dave consumes: $rc"
rd=$(timeout 120 $PY "$(dirname "$0")/kquota.py" "$BOOT" bob "$KB" qb $N $SIZE consume)
echo "  bob consumes: $rd"
c_ms=$($PY -c 'import json,sys; print(int(json.loads(sys.argv[1])["secs"] * 1000))' "$rc")
d_ms=$($PY -c 'import json,sys; print(int(json.loads(sys.argv[1])["secs"] * 1000))' "$rd")
# charged in stored bytes (a little more than the values); 64 KiB a fetch
fexp_ms=$(( (bytes - 262144 - 65536) * 1000 / 262144 ))
check "dave: read all $N over Kafka" test "$(num "$rc" read)" = $N
check "dave's fetches throttled to 256 KiB/s ($c_ms ms for $bytes value bytes; >= 90 % of $fexp_ms ms)" \
    test "$c_ms" -ge $((fexp_ms * 9 / 10))
check "dave's fetches not slowed far past the rate ($c_ms ms <= 1.5 x $fexp_ms + 2000)" \
    test "$c_ms" -le $((fexp_ms * 3 / 2 + 2000))
check "dave's consumer saw throttle_time_ms ($(num "$rc" throttle_events) events, max $(num "$rc" throttle_ms_max) ms)" \
    test "$(num "$rc" throttle_events)" -ge 1
check "bob: read all $N" test "$(num "$rd" read)" = $N
check "bob's fetches (no quota) not slowed ($d_ms ms < $((fexp_ms / 2)) ms) and not throttled" \
    eval 'test "$d_ms" -lt $((fexp_ms / 2)) && test "$(num "$rd" throttle_events)" = 0'
# storage_bytes: carol fills tenant gamma past 128 KiB over Kafka.
VERITY_API_KEY=$KC quiet timeout 20 "$VERITY" topic create qc --broker "$S_addr"
rs=$(timeout 120 $PY "$(dirname "$0")/kquota.py" "$BOOT" carol "$KC" qc 2000 $SIZE)
echo "  carol: $rs"
pv=$($PY -c 'import json,sys; print(json.loads(sys.argv[1])["error_names"].get("POLICY_VIOLATION", 0))' "$rs")
check "carol: produces past storage_bytes refused with POLICY_VIOLATION ($pv of 2000)" test "$pv" -ge 1
check "carol: the first ones were stored ($(num "$rs" delivered) delivered)" test "$(num "$rs" delivered)" -ge 1
stored=$(VERITY_API_KEY=$KC timeout 30 "$VERITY" topic describe qc --json --broker "$S_addr" 2>/dev/null |
    $PY -c 'import json,sys; d=json.load(sys.stdin); print(sum(p.get("size_bytes", p.get("bytes", 0)) for p in d["partitions"]))')
check "gamma's stored bytes stay near 128 KiB ($stored <= 131072 + 65536 + 4096)" \
    test "${stored:-999999999}" -le $((131072 + 65536 + 4096))
check "the refusal is logged (quota_exceeded quota=storage_bytes port=kafka)" \
    grep -q 'event=quota_exceeded.*tenant=gamma.*quota=storage_bytes port=kafka' "$OPS_TMP/S.log"
rb2=$(timeout 120 $PY "$(dirname "$0")/kquota.py" "$BOOT" bob "$KB" qb 500 $SIZE)
check "bob (another tenant) produces on: $(num "$rb2" delivered) of 500" test "$(num "$rb2" delivered)" = 500
m=$(grep -c 'level=error' "$OPS_TMP/S.log")
check "no error logged" test "$m" = 0
stop_broker "$S_pid"
check "clean stop" test $? = 0
ops_done
