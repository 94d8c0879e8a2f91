#!/usr/bin/env bash
# Issue 14, must-show 1: the cross-tenant matrix, with the real verityd
# (TLS, client certificates optional, auth_file), the verity CLI and a
# hand-rolled protocol client (tenant_probe.py).
#   - tenant beta, by API key and by client certificate, on tenant acme's
#     objects: produce, fetch, offsets, describe, delete, list, group
#     create/describe/pending/reset/delete, join (CLI and raw), heartbeat,
#     group fetch, ack, nack, extend, term, leave, DLQ list and replay (by
#     group and by topic), share create: every answer equals the answer for
#     an object that exists nowhere (byte for byte on the raw protocol),
#     and acme's objects are untouched afterwards;
#   - within its tenant each identity does all of it: create, produce,
#     consume, describe, list, a group with a dead-letter topic, join, ack,
#     term (dead letter), DLQ list and replay back to the source topic,
#     share create, delete.
. "$(dirname "$0")/lib.sh"
ops_init tenant_matrix
SRC=${VERITY_SRC_DIR:-.}
PROBE="python3 $(dirname "$0")/tenant_probe.py"
export VERITY_AUTH_FILE=$OPS_TMP/auth.json
verity() { timeout 30 "$VERITY" "$@"; }
A() { verity auth "$@"; }

KA=$(A key create --tenant acme --principal svc-a 2>/dev/null)
KB=$(A key create --tenant beta --principal svc-b 2>/dev/null)
for t in acme:svc-a beta:svc-b beta:svc-bc; do
    quiet A acl add --tenant "${t%%:*}" --principal "${t##*:}" --resource 'topic:*' --ops all
    quiet A acl add --tenant "${t%%:*}" --principal "${t##*:}" --resource 'group:*' --ops all
done
certs=$OPS_TMP/certs
bash "$SRC/deploy/gen-certs.sh" "$certs" >/dev/null
quiet A cert add --subject verity-client --tenant beta --principal svc-bc
start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 0 \
    --tls-cert "$certs/broker.pem" --tls-key "$certs/broker.key" --tls-ca "$certs/ca.pem" \
    --tls-client-auth optional || exit 1
export VERITY_BROKER=$S_addr VERITY_TLS_CA=$certs/ca.pem
unset VERITY_API_KEY VERITY_TLS_CERT VERITY_TLS_KEY
# The identities: acme by key; beta by key (BK) and by certificate (BC).
AK() { (export VERITY_API_KEY=$KA; "$@"); }
BK() { (export VERITY_API_KEY=$KB; "$@"); }
BC() { (export VERITY_TLS_CERT=$certs/client.pem VERITY_TLS_KEY=$certs/client.key; "$@"); }
verity() { timeout 30 "$VERITY" "$@"; }
quiet verity share init --keys "$OPS_TMP/keys"
share() { # share TOPIC: verity share create of one topic
    verity share create --keys "$OPS_TMP/keys" --topic "$1" --field /v=keep \
        --expires-in 1d --recipient r --endpoint https://127.0.0.1:1/v1
}
produce() { printf '%s\n' "${@:2}" | verity produce "$1"; }
# dead_letter GROUP TOPIC: the next message of the group is termed (to its DLQ)
dead_letter() { printf 'term\n' | verity consume "$2" --group "$1" --ack manual --count 1; }

# ---- acme's objects ------------------------------------------------------------
check "acme creates orders" quiet AK verity topic create orders
check "acme produces 3 records" quiet AK produce orders a b c
check "acme creates g1 (dead letters to orders.dlq)" \
    quiet AK verity group create g1 --topic orders --max-deliveries 1 --backoff 0 --dlq orders.dlq
check "acme dead-letters a record (join, fetch, term)" quiet AK dead_letter g1 orders
check "acme's dead letter is in orders.dlq" \
    wait_for 10 eval 'AK verity dlq list --group g1 2>/dev/null | grep -q "value a"'
out=$(AK verity dlq list --group g1 2>&1)
check "acme's dead letter names its source as acme names it ($out)" \
    eval 'grep -q "from orders/0@0" <<<"$out" && ! grep -q "acme~" <<<"$out"'
check "acme creates a share of orders" quiet AK share orders

# ---- beta (by key, by certificate) on acme's objects = on nothing ----------------
same() { # same WHO WHAT CMD...: with the arguments orders, orders.dlq, g1 as they are and
         # as nosuch, nosuch.dlq, g9 (objects of no tenant): the same output and exit code
    local who=$1 what=$2; shift 2
    local a ghost=() o1 o2 r1 r2
    for a in "$@"; do
        case $a in
        orders) ghost+=(nosuch) ;; orders.dlq) ghost+=(nosuch.dlq) ;; g1) ghost+=(g9) ;;
        *) ghost+=("$a") ;;
        esac
    done
    o1=$("$who" "$@" 2>&1); r1=$?
    o2=$("$who" "${ghost[@]}" 2>&1); r2=$?
    o2=${o2//nosuch/orders}; o2=${o2//g9/g1}
    if [ $r1 -le 1 ] && [ $r1 = $r2 ] && [ "$o1" = "$o2" ]; then
        ok "$who $what acme's object: answered like a missing one (exit $r1: $(tail -1 <<<"$o1"))"
    else
        bad "$who $what acme's object: '$o1' ($r1) vs missing: '$o2' ($r2)"
    fi
}
matrix() { # matrix WHO
    local w=$1
    same "$w" "produce to" sh -c 'printf "x\n" | "$0" produce "$1" --timeout-ms 3000' "$VERITY" orders
    same "$w" "consume" verity consume --count 1 orders
    same "$w" "offsets of" verity offsets orders
    same "$w" "describe" verity topic describe orders
    same "$w" "join a group on" verity consume orders --count 1 --group g1
    same "$w" "group create on" verity group create gx --topic orders
    same "$w" "group describe" verity group describe g1
    same "$w" "group pending" verity group pending g1
    same "$w" "group reset" verity group reset --to earliest g1
    same "$w" "DLQ list by group" verity dlq list --group g1
    same "$w" "DLQ list by topic" verity dlq list --topic orders.dlq
    same "$w" "DLQ replay by group" verity dlq replay --group g1
    same "$w" "DLQ replay by topic" verity dlq replay --topic orders.dlq
    same "$w" "share create of" sh -c '"$0" share create --keys "$1" --topic "$2" --field /v=keep --expires-in 1d --recipient r --endpoint https://127.0.0.1:1/v1' "$VERITY" "$OPS_TMP/keys" orders
    same "$w" "group delete" verity group delete g1
    same "$w" "topic delete" verity topic delete orders
    same "$w" "DLQ topic delete" verity topic delete orders.dlq
    local out
    out=$("$w" verity topic list --internal 2>&1)
    check "$w's topic list shows none of acme's" eval '! grep -q "orders" <<<"$out"'
    out=$("$w" verity group list 2>&1)
    check "$w's group list shows none of acme's" eval '! grep -q "g1" <<<"$out"'
    out=$("$w" verity topic create "acme~orders" 2>&1)
    check "$w cannot name acme's object with the separator" grep -qi 'tenant separator\|invalid' <<<"$out"
}
probe() { # probe WHO-ARGS...: every raw request on acme's g1/orders vs g9/nosuch
    local out line
    out=$($PROBE "$S_addr" --ca "$certs/ca.pem" "$@" g1 g9 orders nosuch 2>&1)
    for op in metadata describe_topic list_offsets fetch create_group describe_group group_pending \
              join heartbeat group_fetch ack nack extend term leave reset_group delete_group delete_topic; do
        line=$(grep "^$op " <<<"$out")
        check "raw $op ($1) on acme's object: the same bytes as on a missing one (${line#* })" \
            grep -q ' same=1 ' <<<"$line"
    done
}
matrix BK
matrix BC
probe --api-key "$KB"
probe --cert "$certs/client.pem" --certkey "$certs/client.key"

# ---- acme's objects are untouched ------------------------------------------------
check "acme's orders still holds a,b,c" \
    test "$(AK verity consume orders 2>/dev/null | tr '\n' ,)" = "a,b,c,"
check "acme's g1 still exists" quiet AK verity group describe g1
check "acme's dead letter still waits" eval 'AK verity dlq list --group g1 2>/dev/null | grep -q "value a"'
check "acme replays its dead letter to orders" quiet AK verity dlq replay --group g1
check "the replayed record is back in acme's orders" \
    test "$(AK verity consume orders 2>/dev/null | tr '\n' ,)" = "a,b,c,a,"
check "a second replay moves nothing" \
    eval 'AK verity dlq replay --group g1 2>&1 | grep -q "replayed 0"'

# ---- within its tenant, each identity does all of it ------------------------------
own() { # own WHO NAME
    local w=$1 t=$2 out
    check "$w: topic create $t" quiet "$w" verity topic create "$t"
    check "$w: produce" quiet "$w" produce "$t" p q
    check "$w: consume" test "$("$w" verity consume "$t" 2>/dev/null | tr '\n' ,)" = "p,q,"
    check "$w: describe" quiet "$w" verity topic describe "$t"
    check "$w: offsets" quiet "$w" verity offsets "$t"
    check "$w: list shows it" eval '"$w" verity topic list 2>/dev/null | grep -q "^$t "'
    check "$w: group create with a dead-letter topic" \
        quiet "$w" verity group create "$t-g" --topic "$t" --max-deliveries 1 --backoff 0 --dlq "$t.dlq"
    check "$w: join, fetch, term (dead letter)" quiet "$w" dead_letter "$t-g" "$t"
    check "$w: join, fetch, ack" \
        test "$("$w" verity consume "$t" --group "$t-g" --count 1 2>/dev/null)" = q
    check "$w: group describe" quiet "$w" verity group describe "$t-g"
    check "$w: DLQ list" wait_for 10 eval '"$w" verity dlq list --group "$t-g" 2>/dev/null | grep -q "from $t/0@0"'
    check "$w: DLQ replay" quiet "$w" verity dlq replay --group "$t-g"
    check "$w: the replayed record is back" \
        test "$("$w" verity consume "$t" 2>/dev/null | tr '\n' ,)" = "p,q,p,"
    check "$w: share create" quiet "$w" share "$t"
    check "$w: group delete" quiet "$w" verity group delete "$t-g"
    check "$w: topic delete" quiet "$w" verity topic delete "$t"
}
own AK own-a
own BK own-bk
own BC own-bc
check "beta's objects are stored in beta" test -d "$OPS_TMP/s/topics/beta~own-bk.dlq"
stop_broker "$S_pid"
ops_done
