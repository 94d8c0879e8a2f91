#!/usr/bin/env bash
# Issue 14: API keys, tenants, ACLs, quotas, certificate identity, with the
# real verityd and verity CLI.
#   - `verity auth`: a key's text shown once, only a salted hash stored;
#     --help, --json; a broker with a missing or broken auth_file refuses
#     to start; without auth_file nothing changes (no Authenticate needed);
#   - before authentication: every request ERR_AUTH, a frame over 4 KiB or
#     a 2 GiB length prefix closes the connection, a wrong key is answered
#     after auth_fail_delay_ms, the deadline closes a silent connection;
#   - the cross-tenant matrix: tenant B on tenant A's objects (produce,
#     consume, describe, list, delete, group create/describe/delete) gets the
#     same answer as for an object that does not exist; A gets its own;
#   - ACLs: allow, default deny, deny winning, prefixes, revocation of a key
#     and removal of a rule taking effect on an open connection;
#   - a client certificate mapped to a principal (mutual TLS);
#   - a produce quota throttles its principal to the rate while another
#     tenant's produce is not slowed.
. "$(dirname "$0")/lib.sh"
ops_init auth
SRC=${VERITY_SRC_DIR:-.}
export VERITY_AUTH_FILE=$OPS_TMP/auth.json
A() { "$VERITY" auth "$@"; }

# ---- the store -------------------------------------------------------------
check "verity auth --help" quiet "$VERITY" auth --help
check "verity acl --help" quiet "$VERITY" acl --help
KA=$(A key create --tenant acme --principal svc-a 2>/dev/null)
check "key create prints a vk_ key" grep -Eq '^vk_[0-9a-f]{16}_[0-9a-f]{64}$' <<<"$KA"
secret=${KA##*_}
check "the store holds no secret" eval '! grep -q "$secret" "$VERITY_AUTH_FILE"'
check "the store is mode 0600" test "$(stat -c %a "$VERITY_AUTH_FILE")" = 600
KJ=$(A --json key create --tenant beta --principal svc-b 2>/dev/null)
KB=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$KJ")
check "key create --json gives the key" grep -Eq '^vk_' <<<"$KB"
KA2=$(A key create --tenant acme --principal reader 2>/dev/null)
KA3=$(A key create --tenant acme --principal temp 2>/dev/null)
check "key create refuses a bad tenant" eval '! A key create --tenant "a~b" --principal x 2>/dev/null'
n=$(A --json key list | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["keys"]))')
check "key list --json: 4 keys ($n)" test "$n" = 4
check "acl add (svc-a: all on topics and groups)" \
    quiet A acl add --tenant acme --principal svc-a --resource 'topic:*' --ops all
quiet A acl add --tenant acme --principal svc-a --resource 'group:*' --ops all
quiet A acl add --tenant beta --principal svc-b --resource 'topic:*' --ops all
quiet A acl add --tenant beta --principal svc-b --resource 'group:*' --ops all
# reader: consume/describe on orders-* but deny on orders-secret (deny wins)
quiet A acl add --tenant acme --principal reader --resource 'topic:orders*' --ops consume,describe
quiet A acl add --tenant acme --principal reader --resource 'topic:orders-secret' --ops consume --deny
quiet A acl add --tenant acme --principal temp --resource 'topic:*' --ops all
check "acl add refuses a bad op" eval '! A acl add --tenant acme --principal x --resource topic:a --ops fly 2>/dev/null'
check "acl add refuses a bad resource" eval '! A acl add --tenant acme --principal x --resource queue:a --ops all 2>/dev/null'
n=$(A --json acl list --tenant acme | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["acls"]))')
check "acl list --tenant acme: 5 rules ($n)" test "$n" = 5

# ---- refusal to start -----------------------------------------------------
out=$(timeout 20 "$VERITYD" --data-dir "$OPS_TMP/bad" --listen 127.0.0.1:0 --http off \
      --auth-file "$OPS_TMP/none.json" 2>&1)
check "missing auth_file: refused (auth_config_failed)" grep -q 'auth_config_failed' <<<"$out"
echo '{"version": 1, "keys": [{"id": "zz"}]}' >"$OPS_TMP/broken.json"
out=$(timeout 20 "$VERITYD" --data-dir "$OPS_TMP/bad" --listen 127.0.0.1:0 --http off \
      --auth-file "$OPS_TMP/broken.json" 2>&1)
check "broken auth_file: refused naming the entry" grep -q 'auth_config_failed.*keys\[0\]' <<<"$out"

start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 300 \
    --auth-timeout-ms 1500 || exit 1
export VERITY_BROKER=$S_addr
as() { local k=$1; shift; VERITY_API_KEY=$k timeout 20 "$@"; }

# ---- before authentication --------------------------------------------------
out=$(timeout 20 "$VERITY" topic list 2>&1)
check "no key: refused with EAUTH" grep -q 'authentication required' <<<"$out"
t0=$(date +%s%N)
out=$(VERITY_API_KEY=vk_0000000000000000_$(printf '%064d' 0) timeout 20 "$VERITY" topic list 2>&1)
t1=$(date +%s%N)
check "wrong key: refused with EAUTH" grep -q 'authentication required or failed' <<<"$out"
check "wrong key: answered after auth_fail_delay_ms ($(((t1 - t0) / 1000000)) ms)" \
    test $(((t1 - t0) / 1000000)) -ge 300
check "wrong key: logged auth_failed" grep -q 'event=auth_failed' "$OPS_TMP/S.log"
preauth=$(python3 - "$S_addr" <<'PY'
import socket, struct, sys, time
host, port = sys.argv[1].rsplit(":", 1)
def closed(s, t=5):
    s.settimeout(t)
    try:
        while True:
            d = s.recv(65536)
            if not d:
                return True
    except (ConnectionResetError, BrokenPipeError):
        return True
    except socket.timeout:
        return False
res = []
# a 2 GiB length prefix
s = socket.create_connection((host, int(port))); s.sendall(struct.pack(">II", 2**31, 4))
res.append("big:" + str(closed(s)))
# 8 KiB frame before authentication (under max_frame_bytes)
s = socket.create_connection((host, int(port))); s.sendall(struct.pack(">II", 8192, 4))
res.append("8k:" + str(closed(s)))
# silent connection: closed by the authentication deadline
s = socket.create_connection((host, int(port))); t = time.time()
res.append("silent:" + str(closed(s, 10)) + ":" + str(int((time.time() - t) * 1000)))
print(" ".join(res))
PY
)
check "2 GiB length prefix before authentication: closed ($preauth)" grep -q 'big:True' <<<"$preauth"
check "8 KiB frame before authentication: closed" grep -q '8k:True' <<<"$preauth"
check "silent connection closed by auth_timeout_ms" grep -q 'silent:True' <<<"$preauth"

# ---- within a tenant ----------------------------------------------------------
check "A creates orders" quiet as "$KA" "$VERITY" topic create orders
check "A creates orders-secret" quiet as "$KA" "$VERITY" topic create orders-secret
check "A produces" quiet as "$KA" sh -c "printf 'a\nb\n' | '$VERITY' produce orders"
check "A consumes its records" test "$(as "$KA" "$VERITY" consume orders --count 2 2>/dev/null | tr '\n' ,)" = "a,b,"
check "A creates a group" quiet as "$KA" "$VERITY" group create g1 --topic orders
check "A describes its group" quiet as "$KA" "$VERITY" group describe g1
check "A lists its topic as 'orders'" eval 'as "$KA" "$VERITY" topic list --json 2>/dev/null | grep -q "\"orders\""'
check "A's topic is stored inside the tenant" test -d "$OPS_TMP/s/topics/acme~orders"

# ---- the cross-tenant matrix: B on A's objects = B on nothing ---------------
same() { # same WHAT CMD...: the answer for A's object equals the one for a missing one
    local what=$1; shift
    local o1 o2 r1 r2
    o1=$(as "$KB" "$@" orders 2>&1); r1=$?
    o2=$(as "$KB" "$@" ghost 2>&1); r2=$?
    o2=${o2//ghost/orders}
    if [ $r1 -ne 0 ] && [ $r1 = $r2 ] && [ "$o1" = "$o2" ]; then ok "B $what A's object: refused like a missing one ($r1)"
    else bad "B $what A's object: '$o1' ($r1) vs missing: '$o2' ($r2)"; fi
}
same "consume" "$VERITY" consume --count 1
same "describe" "$VERITY" topic describe
same "delete" "$VERITY" topic delete
same "offsets" "$VERITY" offsets
same "group describe" "$VERITY" group describe
same "group delete" "$VERITY" group delete
out=$(as "$KB" "$VERITY" topic list --json 2>&1)
check "B's topic list does not show A's topics" eval '! grep -q orders <<<"$out"'
out=$(as "$KB" "$VERITY" group list --json 2>&1)
check "B's group list does not show A's groups" eval '! grep -q g1 <<<"$out"'
out=$(as "$KB" "$VERITY" topic create "acme~orders" 2>&1)
check "B cannot name A's object with the separator" grep -qi 'invalid\|tenant separator' <<<"$out"
check "B creates its own orders" quiet as "$KB" "$VERITY" topic create orders
check "B produces to its own orders" quiet as "$KB" sh -c "printf 'z\n' | '$VERITY' produce orders"
check "B reads only its record" test "$(as "$KB" "$VERITY" consume orders 2>/dev/null | tr '\n' ,)" = "z,"
check "A still reads only its records" test "$(as "$KA" "$VERITY" consume orders 2>/dev/null | tr '\n' ,)" = "a,b,"
check "A's group create on B-only topic name fails like missing" \
    eval '! as "$KA" "$VERITY" group create g2 --topic nothere >/dev/null 2>&1'

# ---- ACLs ---------------------------------------------------------------------
check "reader may consume orders (prefix allow)" quiet as "$KA2" "$VERITY" consume orders --count 1
out=$(as "$KA2" "$VERITY" consume orders-secret --count 1 2>&1)
check "reader may not consume orders-secret (deny wins)" grep -q 'denied by the principal' <<<"$out"
out=$(as "$KA2" sh -c "printf 'x\n' | '$VERITY' produce orders" 2>&1)
check "reader may not produce (default deny)" grep -qi 'denied\|may not' <<<"$out"
out=$(as "$KA2" "$VERITY" topic create other 2>&1)
check "reader may not create topics (admin)" grep -q 'denied' <<<"$out"
check "acl_denied logged" grep -q 'event=acl_denied.*principal=reader' "$OPS_TMP/S.log"
quiet as "$KA" "$VERITY" topic create zz-other
out=$(as "$KA2" "$VERITY" topic list 2>&1)
check "reader's list shows orders*, not the topics it has no right on" \
    eval 'grep -q "^orders " <<<"$out" && ! grep -q "zz-other" <<<"$out"'
out=$(as "$KA" "$VERITY" topic list 2>&1)
check "svc-a's list shows zz-other" grep -q zz-other <<<"$out"

# revocation and rule removal on an open connection: a follower holds one
# connection; after the change and SIGHUP its next fetch is refused.
follow_until_refused() { # KEY LOG: starts a follower in the background
    (VERITY_API_KEY=$1 timeout 30 "$VERITY" consume orders --follow >"$2" 2>&1; echo "rc=$?" >>"$2") \
        </dev/null >/dev/null 2>&1 &
    echo $!
}
f1=$(follow_until_refused "$KA3" "$OPS_TMP/f1.txt")
wait_for 10 grep -q '^b$' "$OPS_TMP/f1.txt"
conns_before=$(grep -c 'event=auth_ok.*principal=temp' "$OPS_TMP/S.log")
id3=$(cut -d_ -f2 <<<"$KA3")
quiet A key revoke "$id3"
kill -HUP "$S_pid"
wait_for 10 grep -q 'event=auth_reloaded' "$OPS_TMP/S.log"
quiet as "$KA" sh -c "printf 'c\n' | '$VERITY' produce orders"
check "revoked key: the open follower is refused" wait_for 15 grep -q 'authentication required' "$OPS_TMP/f1.txt"
check "revoked key: auth_revoked logged" grep -q 'event=auth_revoked.*principal=temp' "$OPS_TMP/S.log"
check "revoked key: no new connection was needed ($conns_before auth_ok)" test "$conns_before" -ge 1
kill "$f1" 2>/dev/null; wait "$f1" 2>/dev/null
out=$(as "$KA3" "$VERITY" topic list 2>&1)
check "revoked key: new connections refused" grep -q 'authentication required' <<<"$out"
f2=$(follow_until_refused "$KA2" "$OPS_TMP/f2.txt")
wait_for 10 grep -q '^c$' "$OPS_TMP/f2.txt"
quiet A acl remove --tenant acme --principal reader --resource 'topic:orders*' --ops consume,describe
kill -HUP "$S_pid"
wait_for 10 test "$(grep -c 'event=auth_reloaded' "$OPS_TMP/S.log")" -ge 2
quiet as "$KA" sh -c "printf 'd\n' | '$VERITY' produce orders"
check "removed rule: the open follower is denied" wait_for 15 grep -q 'denied' "$OPS_TMP/f2.txt"
check "removed rule: acl_denied logged for the open connection" \
    grep -q 'event=acl_denied.*principal=reader.*type=fetch.*orders' "$OPS_TMP/S.log"
kill "$f2" 2>/dev/null; wait "$f2" 2>/dev/null

# ---- quotas ------------------------------------------------------------------
# 256 KiB/s for acme/svc-a: 1.25 MiB takes >= ~4 s (1 s of burst); beta's
# 1.25 MiB is not slowed.
python3 -c '
import sys
for i in range(5000): sys.stdout.write("%06d-%s\n" % (i, "q" * 254))' >"$OPS_TMP/q.txt"
quiet A quota set --tenant acme --principal svc-a --produce-bytes-per-s 262144
kill -HUP "$S_pid"
wait_for 10 test "$(grep -c 'event=auth_reloaded' "$OPS_TMP/S.log")" -ge 3
quiet as "$KA" "$VERITY" topic create qa
quiet as "$KB" "$VERITY" topic create qb
t0=$(date +%s%N)
quiet as "$KB" "$VERITY" produce qb "$OPS_TMP/q.txt"
t1=$(date +%s%N)
quiet as "$KA" "$VERITY" produce qa "$OPS_TMP/q.txt"
t2=$(date +%s%N)
mb=$(stat -c %s "$OPS_TMP/q.txt")
exp_ms=$(( (mb - 262144) * 1000 / 262144 ))
a_ms=$(((t2 - t1) / 1000000)); b_ms=$(((t1 - t0) / 1000000))
check "quota: acme/svc-a throttled ($a_ms ms for $mb bytes; >= 90% of $exp_ms ms)" test $a_ms -ge $((exp_ms * 9 / 10))
check "quota: acme/svc-a not slowed far past the rate ($a_ms ms <= 2 x $exp_ms + 3000)" test $a_ms -le $((exp_ms * 2 + 3000))
check "quota: beta unaffected ($b_ms ms)" test $b_ms -lt $((exp_ms / 2))
check "quota: all of acme's records arrived" test "$(as "$KA" "$VERITY" consume qa 2>/dev/null | wc -l)" = 5000

# ---- a client certificate as the principal -----------------------------------
certs=$OPS_TMP/certs
bash "$SRC/deploy/gen-certs.sh" "$certs" >/dev/null
quiet A cert add --subject verity-client --tenant acme --principal svc-a
start_broker T "$OPS_TMP/t" --auth-file "$VERITY_AUTH_FILE" --tls-cert "$certs/broker.pem" \
    --tls-key "$certs/broker.key" --tls-ca "$certs/ca.pem" --tls-client-auth optional || exit 1
MTLS=(--tls-ca "$certs/ca.pem" --tls-cert "$certs/client.pem" --tls-key "$certs/client.key")
check "mTLS: the certificate's principal creates a topic" \
    quiet timeout 20 "$VERITY" topic create certtopic --broker "$T_addr" "${MTLS[@]}"
check "mTLS: stored in the certificate's tenant" test -d "$OPS_TMP/t/topics/acme~certtopic"
check "mTLS: auth_ok method=cert logged" grep -q 'event=auth_ok.*method=cert' "$OPS_TMP/T.log"
out=$(timeout 20 "$VERITY" topic list --broker "$T_addr" --tls-ca "$certs/ca.pem" 2>&1)
check "TLS without a client certificate or key: EAUTH" grep -q 'authentication required' <<<"$out"
check "TLS with a key and no certificate works" \
    quiet as "$KB" "$VERITY" topic list --broker "$T_addr" --tls-ca "$certs/ca.pem"

# ---- the default stays open --------------------------------------------------
VERITY_AUTH_FILE= start_broker P "$OPS_TMP/p" || exit 1
check "no auth_file: no key needed" quiet timeout 20 "$VERITY" topic create free --broker "$P_addr"
check "no auth_file: a client with a key is refused clearly" \
    eval 'VERITY_API_KEY=$KA timeout 20 "$VERITY" topic list --broker "$P_addr" 2>&1 | grep -q "not configured\|not supported"'
stop_broker "$S_pid"; stop_broker "$T_pid"; stop_broker "$P_pid"
ops_done
