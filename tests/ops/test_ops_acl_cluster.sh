#!/usr/bin/env bash
# Issue 14: the security store in the replicated metadata (__meta) of a
# 3-broker cluster (verity cluster start, every broker with the same
# bootstrap auth_file through VERITY_AUTH_FILE):
#   - a key made and an ACL added through one broker's admin port (the CLI
#     follows a 421 to the primary of __meta) are enforced by every broker,
#     on an open connection too (the key authenticates everywhere, the
#     client is denied before the rule and allowed after on each broker);
#   - a rule removed and a key revoked through another broker stop working
#     on all three;
#   - a broker restarted afterwards (its log replayed) enforces the same;
#   - the audit topics: every broker applies their create_topic records (no
#     meta_record_skipped), each broker appends its own events (its own
#     partition), and a tenant's __audit and the broker-wide one read
#     through any broker hold the events of all three brokers.
. "$(dirname "$0")/lib.sh"
ops_init acl_cluster
export VERITY_AUTH_FILE=$OPS_TMP/auth.json
export VERITY_AUTH_FAIL_DELAY_MS=0
A() { "$VERITY" auth "$@"; }
D=$OPS_TMP/c
export OPS_DIR=$(cd "$(dirname "$0")" && pwd)

KADM=$(A key create --tenant ops --principal admin 2>/dev/null)
KOWN=$(A key create --tenant acme --principal owner 2>/dev/null)
quiet A acl add --tenant ops --principal admin --resource cluster:security --ops admin,describe
quiet A acl add --tenant acme --principal owner --resource 'topic:*' --ops all
KAUD=$(A key create --tenant ops --principal auditor 2>/dev/null)
quiet A acl add --tenant ops --principal auditor --resource cluster:audit --ops consume

cluster_stop() { timeout 60 "$VERITY" cluster stop --dir "$D" >/dev/null 2>&1; }
trap 'cluster_stop; ops_cleanup' EXIT
if ! timeout 60 "$VERITY" cluster start --nodes 3 --dir "$D" --verityd "$VERITYD" --json \
    >"$OPS_TMP/start.json" 2>"$OPS_TMP/start.err"; then
    bad "cluster start"; cat "$OPS_TMP/start.err"; ops_done; exit 1
fi
field() { python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["brokers"][int(sys.argv[2])][sys.argv[3]])' "$OPS_TMP/start.json" "$@"; }
L=() H=()
for i in 0 1 2; do L[i]=$(field $i listen); H[i]=$(field $i http); done
BOOT=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["bootstrap"])' "$OPS_TMP/start.json")
ok "3 brokers started with auth_file"

# the topic, by the tenant's owner (any broker: the client follows NOT_LEADER)
check "owner creates topic orders" wait_for 30 eval 'VERITY_API_KEY=$KOWN VERITY_BROKER=$BOOT \
    timeout 20 "$VERITY" topic create orders >/dev/null 2>&1 ||
    VERITY_API_KEY=$KOWN VERITY_BROKER=$BOOT timeout 20 "$VERITY" topic describe orders >/dev/null 2>&1'

# a key made through broker 2
adm() { VERITY_API_KEY=$KADM timeout 30 "$VERITY" "$@"; }
KS=
mk_key() { # mk_key I: a key for acme/svc made through broker I
    local out
    out=$(adm auth --http "${H[$1]}" --json key create --tenant acme --principal svc 2>/dev/null) || return 1
    KS=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$out")
}
check "key create through broker 2" wait_for 30 mk_key 1
KS_ID=${KS:3:16}

desc_on() { # desc_on I: svc describes orders on broker I
    VERITY_API_KEY=$KS VERITY_BROKER=${L[$1]} timeout 20 "$VERITY" topic describe orders >/dev/null 2>&1
}
auth_on() { # auth_on I: svc's key authenticates on broker I (topic list)
    VERITY_API_KEY=$KS VERITY_BROKER=${L[$1]} timeout 20 "$VERITY" topic list >/dev/null 2>&1
}
for i in 0 1 2; do
    check "broker $((i + 1)): the new key authenticates" wait_for 15 auth_on $i
    check "broker $((i + 1)): svc denied before the ACL" eval '! desc_on '$i
done

# the audit trail: svc's denials above happened on each broker
audit_nodes() { # audit_nodes KEY I: the nodes whose acl_denied of svc KEY reads in __audit via broker I
    VERITY_API_KEY=$1 VERITY_BROKER=${L[$2]} timeout 20 "$VERITY" consume __audit --json 2>/dev/null |
        python3 -c '
import json, sys
nodes = set()
for line in sys.stdin:
    try:
        v = json.loads(json.loads(line)["value"])
    except Exception:
        continue
    if v.get("event") == "acl_denied" and v.get("principal") == "svc":
        nodes.add(v.get("node"))
print(",".join(str(n) for n in sorted(x for x in nodes if x is not None)))'
}
for i in 0 1 2; do
    check "broker $((i + 1)): acme's __audit holds svc's denials from brokers 1,2,3" \
        wait_for 20 eval 'test "$(audit_nodes "$KOWN" '$i')" = 1,2,3'
    check "broker $((i + 1)): the broker-wide __audit holds them too" \
        wait_for 20 eval 'test "$(audit_nodes "$KAUD" '$i')" = 1,2,3'
done
check "every broker applied every create_topic record (no meta_record_skipped)" \
    eval '! grep -h "meta_record_skipped" "$D"/node*.log'
all_created() { # every broker logged the creation of acme's audit topic
    local n
    for n in 1 2 3; do grep -q "topic_created topic=acme~__audit" "$D/node$n.log" || return 1; done
}
check "each broker holds acme's audit topic" all_created

# an open connection on broker 3 through the change
exec 3< <(VERITY_API_KEY=$KS VERITY_BROKER=${L[2]} timeout 60 python3 - "${L[2]}" "$KS" <<'EOF'
import os, socket, struct, sys, time
sys.path.insert(0, os.environ["OPS_DIR"])
from vwire import envelope, field as f, fields, frame, recv_exact
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=30)
def call(n, num, body):
    s.sendall(frame(envelope(n, num, body)))
    flen, elen = struct.unpack(">II", recv_exact(s, 8))
    raw = recv_exact(s, flen - 4)[:elen]
    return next((v for k, _, v in fields(raw) if k == 3), 0)
call(1, 100, f(1, 1) + f(2, 1) + f(3, b"acl_cluster"))
print("auth", call(2, 160, f(1, sys.argv[2])), flush=True)
print("before", call(3, 105, f(1, "orders")), flush=True)
for i in range(200):  # until the rule made on another broker arrives
    e = call(10 + i, 105, f(1, "orders"))
    if e == 0:
        break
    time.sleep(0.1)
print("after", e, flush=True)
EOF
)
read -r -t 30 line <&3; check "open connection on broker 3 authenticated" test "$line" = "auth 0"
read -r -t 30 line <&3; check "open connection on broker 3 denied before the rule" test "$line" = "before 25"

check "acl add through broker 1" wait_for 30 eval 'adm acl --http "${H[0]}" add --tenant acme \
    --principal svc --resource topic:orders --ops describe >/dev/null 2>&1'
for i in 0 1 2; do
    check "broker $((i + 1)) enforces the ACL added through broker 1" wait_for 15 desc_on $i
done
read -r -t 30 line <&3; check "the open connection on broker 3 gains access" test "$line" = "after 0"
exec 3<&-

all_list() { # every broker lists the rule
    local h
    for h in "${H[@]}"; do
        adm acl --http "$h" list | grep -q "allow  acme/svc  topic:orders  describe  meta" || return 1
    done
}
check "every broker lists the rule (source meta)" all_list

check "acl remove through broker 3" wait_for 30 eval 'adm acl --http "${H[2]}" remove --tenant acme \
    --principal svc --resource topic:orders --ops describe >/dev/null 2>&1'
for i in 0 1 2; do
    check "broker $((i + 1)): the removed rule stops working" wait_for 15 eval '! desc_on '$i
done
check "acl add again, key revoke through broker 2" wait_for 30 eval 'adm acl --http "${H[0]}" add \
    --tenant acme --principal svc --resource topic:orders --ops describe >/dev/null 2>&1 &&
    adm auth --http "${H[1]}" key revoke $KS_ID >/dev/null 2>&1'
for i in 0 1 2; do
    check "broker $((i + 1)): the revoked key is refused" wait_for 15 eval '! auth_on '$i
done

# broker 3 restarted: replays the metadata log
check "restart broker 3" quiet timeout 60 "$VERITY" cluster restart --dir "$D" --id 3
check "restarted broker 3 lists the rule" wait_for 30 eval 'adm acl --http "${H[2]}" list 2>/dev/null |
    grep -q "allow  acme/svc  topic:orders  describe  meta"'
check "restarted broker 3 refuses the revoked key" eval '! auth_on 2'
KS_OLD=$KS
check "a new key through broker 3 works on broker 1" eval 'wait_for 30 mk_key 2 &&
    [ "$KS" != "$KS_OLD" ] && wait_for 15 desc_on 0'
cluster_stop
ops_done
