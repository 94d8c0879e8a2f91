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
#     held requests released).
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
quiet A quota set --tenant acme --principal alice --produce-bytes-per-s 262144
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
m=$(grep -c 'level=error' "$OPS_TMP/S.log")
check "no error logged" test "$m" = 0
stop_broker "$S_pid"
check "clean stop" test $? = 0
ops_done
