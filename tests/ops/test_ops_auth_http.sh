#!/usr/bin/env bash
# Issue 14: the admin HTTP port with auth_file (bearer keys, ACLs per route)
# and the audit trail (__audit topics), with the real verityd, verity and
# curl.
#   - /health and /ready stay open; every other path needs a key
#     (Authorization: Bearer) or a mapped client certificate: 401 without,
#     with a wrong key, or through a percent-encoded path;
#   - /metrics, /cluster, /debug/trace need describe on cluster:metrics,
#     cluster:peers, cluster:trace (403 otherwise);
#   - /v1/topics and /v1/groups list only the caller's tenant's objects
#     (every tenant's with cluster:tenants); proofs and tiles of another
#     tenant's topic are 403 whether it exists or not;
#   - a revoked key stops working after SIGHUP;
#   - a wrong bearer key is answered 401 only after auth_fail_delay_ms, a
#     right key at once, also while wrong keys wait (a timer, not a sleep
#     of the event loop); a client hanging up during the delay and a
#     shutdown with answers still waiting are clean;
#   - the audit trail: authentications, failures, denials (protocol and
#     HTTP), admin requests and store changes are records of the tenant's
#     __audit topic (its principals read it as "__audit") and of the
#     broker-wide __audit (read with consume on cluster:audit); clients
#     cannot produce to or delete an audit topic; the records pass
#     `verity log verify` (hash chain).
. "$(dirname "$0")/lib.sh"
ops_init auth_http
SRC=${VERITY_SRC_DIR:-.}
export VERITY_AUTH_FILE=$OPS_TMP/auth.json
A() { "$VERITY" auth "$@"; }
as() { local k=$1; shift; VERITY_API_KEY=$k timeout 20 "$@"; }

KA=$(A key create --tenant acme --principal svc-a 2>/dev/null)
KB=$(A key create --tenant beta --principal svc-b 2>/dev/null)
KP=$(A key create --tenant ops --principal prom 2>/dev/null)
KU=$(A key create --tenant ops --principal auditor 2>/dev/null)
for t in acme:svc-a beta:svc-b; do
    quiet A acl add --tenant "${t%%:*}" --principal "${t##*:}" --resource 'topic:*' --ops all
    quiet A acl add --tenant "${t%%:*}" --principal "${t##*:}" --resource 'group:*' --ops all
done
check "acl add accepts cluster:metrics" \
    quiet A acl add --tenant ops --principal prom --resource cluster:metrics --ops describe
quiet A acl add --tenant ops --principal auditor --resource cluster:audit --ops consume
quiet A acl add --tenant ops --principal auditor --resource cluster:tenants --ops describe
quiet A acl add --tenant ops --principal auditor --resource cluster:peers --ops describe
check "acl add refuses an unknown resource kind" \
    eval '! A acl add --tenant ops --principal x --resource node:a --ops all 2>/dev/null'
check "acl list shows the cluster rule" eval 'A acl list --tenant ops | grep -q "cluster:metrics"'

start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 0 || exit 1
export VERITY_BROKER=$S_addr
H=http://$S_http
code() { # code [KEY] PATH: the HTTP status
    local k=$1 p=$2
    if [ -n "$k" ]; then curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $k" "$H$p"
    else curl -s -o /dev/null -w '%{http_code}' "$H$p"; fi
}
body() { curl -s -H "Authorization: Bearer $1" "$H$2"; }
code_at() { curl -s -o /dev/null -w '%{http_code}' -H "Authorization: Bearer $2" "http://$1$3"; }

quiet as "$KA" "$VERITY" topic create orders
quiet as "$KA" sh -c "printf 'a\nb\n' | '$VERITY' produce orders"
quiet as "$KA" "$VERITY" group create g1 --topic orders
quiet as "$KB" "$VERITY" topic create borders

# ---- the admin port ------------------------------------------------------------
check "/health open" test "$(code '' /health)" = 200
check "/ready open" test "$(code '' /ready)" = 200
check "/metrics without a key: 401" test "$(code '' /metrics)" = 401
check "401 carries WWW-Authenticate: Bearer" \
    eval 'curl -s -D - -o /dev/null "$H/metrics" | grep -qi "^WWW-Authenticate: Bearer"'
check "/m%65trics without a key: 401 (decoded like evhttp)" test "$(code '' /m%65trics)" = 401
check "/metrics with a wrong key: 401" \
    test "$(code "vk_0000000000000000_$(printf '%064d' 0)" /metrics)" = 401
check "/metrics with garbage: 401" test "$(code 'x' /metrics)" = 401
check "/metrics as acme/svc-a (no cluster:metrics): 403" test "$(code "$KA" /metrics)" = 403
check "/metrics as ops/prom: 200" test "$(code "$KP" /metrics)" = 200
check "/cluster as ops/prom (no cluster:peers): 403" test "$(code "$KP" /cluster)" = 403
check "/debug/trace as acme/svc-a: 403" test "$(code "$KA" /debug/trace)" = 403
check "/debug/trace without a key: 401" test "$(code '' /debug/trace)" = 401
check "/cluster without a key: 401" test "$(code '' /cluster)" = 401
check "/v1/topics without a key: 401" test "$(code '' /v1/topics)" = 401
check "an unknown path without a key: 401 (not 404)" test "$(code '' /nothing)" = 401
check "an unknown path with a key: 404" test "$(code "$KA" /nothing)" = 404
out=$(body "$KA" /v1/topics)
check "/v1/topics as acme: its topic" grep -q '"acme~orders"' <<<"$out"
check "/v1/topics as acme: not beta's" eval '! grep -q "beta~" <<<"$out"'
out=$(body "$KB" /v1/topics)
check "/v1/topics as beta: its topic, not acme's" \
    eval 'grep -q "\"beta~borders\"" <<<"$out" && ! grep -q "acme~" <<<"$out"'
out=$(body "$KU" /v1/topics)
check "/v1/topics with cluster:tenants: every tenant" \
    eval 'grep -q "\"beta~borders\"" <<<"$out" && grep -q "\"acme~orders\"" <<<"$out"'
check "/v1/groups as acme: its group" eval 'body "$KA" /v1/groups | grep -q "\"acme~g1\""'
check "/v1/groups as beta: not acme's" eval '! body "$KB" /v1/groups | grep -q "acme~g1"'
P='/v1/proof/checkpoint?partition=0&topic='
check "proof of its own topic: 200" test "$(code "$KA" "${P}acme~orders")" = 200
check "proof of another tenant's topic: 403" test "$(code "$KB" "${P}acme~orders")" = 403
o1=$(body "$KB" "${P}acme~orders"); o2=$(body "$KB" "${P}acme~ghost")
check "proof: another tenant's topic answers like a missing one" test "$o1" = "${o2//ghost/orders}"
check "tile path of another tenant's topic: 403" test "$(code "$KB" /tlog/acme~orders/0/checkpoint)" = 403
check "tile path, encoded separator: 403" test "$(code "$KB" /tlog/acme%7Eorders/0/checkpoint)" = 403
check "tile path of its own topic: 200" test "$(code "$KA" /tlog/acme~orders/0/checkpoint)" = 200
check "http_auth_failed logged" grep -q 'event=http_auth_failed port=admin' "$OPS_TMP/S.log"
# The log keeps 10 failure lines a second (the audit trail 1,000): beta's
# refusal is checked in its audit topic below, any one here.
check "http_denied logged" grep -q 'event=http_denied port=admin.*tenant=' "$OPS_TMP/S.log"
m=$(body "$KP" /metrics)
check "metrics: 401s counted" grep -Eq 'verity_http_auth_refused_total\{reason="unauthenticated"\} [1-9]' <<<"$m"
check "metrics: 403s counted" grep -Eq 'verity_http_auth_refused_total\{reason="denied"\} [1-9]' <<<"$m"
check "metrics: audit events counted" grep -Eq '^verity_audit_events_total [1-9]' <<<"$m"
# The CLI's own admin clients send VERITY_API_KEY as a bearer key.
check "verity cluster status without a key: refused" \
    eval '! VERITY_API_KEY= timeout 20 "$VERITY" cluster status --broker "$S_http" >/dev/null 2>&1'
check "verity cluster status with a key holding cluster:peers: answered" \
    quiet as "$KU" "$VERITY" cluster status --broker "$S_http" --json

# ---- the audit trail -------------------------------------------------------------
quiet as "vk_0123456789abcdef_$(printf '%064d' 0)" "$VERITY" topic list   # unknown key
quiet as "$KA" "$VERITY" consume borders --count 1                       # missing (acme)
audit() { # audit KEY: the audit records the principal reads
    as "$1" "$VERITY" consume __audit --json 2>/dev/null
}
# Wait until both appends (tenant and broker-wide) are visible.
wait_for 10 eval 'audit "$KA" | grep -q "create_topic"'
out=$(audit "$KA")
check "acme reads its __audit: auth_ok of svc-a" grep -q 'auth_ok.*svc-a\|svc-a.*auth_ok' <<<"$out"
check "acme's audit: the admin request create_topic orders" grep -q 'admin_request' <<<"$out"
check "acme's audit: an HTTP refusal is there too" grep -q 'http_denied\|http_auth_failed' <<<"$(audit "$KB")"
check "acme's audit holds nothing of beta" eval '! grep -q "svc-b\|\\\\\"beta\\\\\"" <<<"$out"'
out=$(audit "$KB")
check "beta's audit: its http_denied on acme's proof" grep -q 'http_denied' <<<"$out"
check "beta's audit holds nothing of acme" eval '! grep -q "svc-a" <<<"$out"'
wait_for 10 eval 'audit "$KU" | grep -q "0123456789abcdef"'
out=$(audit "$KU")
check "broker-wide __audit (cluster:audit): the unknown key's auth_failed" \
    grep -q '0123456789abcdef' <<<"$out"
check "broker-wide __audit: both tenants' events" eval 'grep -q svc-a <<<"$out" && grep -q svc-b <<<"$out"'
out=$(as "$KA" sh -c "printf 'forged\n' | '$VERITY' produce __audit" 2>&1)
check "a client cannot produce to its audit topic ($(tail -1 <<<"$out"))" \
    eval '! grep -q "[1-9][0-9]* acknowledged" <<<"$out" && ! audit "$KA" | grep -q forged'
out=$(as "$KA" "$VERITY" topic delete __audit 2>&1)
check "a client cannot delete its audit topic" grep -qi 'internal\|denied' <<<"$out"
check "beta cannot read the broker-wide __audit (reads its own)" \
    eval '! audit "$KB" | grep -q 0123456789abcdef'

# store changes reach the audit trail at SIGHUP
quiet A acl add --tenant acme --principal svc-a --resource 'topic:x*' --ops consume --deny
id=$(cut -d_ -f2 <<<"$KP")
quiet A key revoke "$id"
kill -HUP "$S_pid"
wait_for 10 grep -q 'event=auth_reloaded.*changes=2' "$OPS_TMP/S.log"
check "auth_reloaded counts the changes" grep -q 'event=auth_reloaded.*changes=2' "$OPS_TMP/S.log"
check "revoked key: /metrics 401 after SIGHUP" test "$(code "$KP" /metrics)" = 401
check "acme's audit: acl_added" wait_for 10 eval 'audit "$KA" | grep -q acl_added'
check "ops' audit: key_revoked" wait_for 10 eval 'audit "$KU" | grep -q key_revoked'

stop_broker "$S_pid"
check "the broker-wide audit log verifies (hash chain)" \
    quiet "$VERITY" log verify "$OPS_TMP/s/topics/__audit/0"
check "acme's audit log verifies" quiet "$VERITY" log verify "$OPS_TMP/s/topics/acme~__audit/0"

# ---- a delay after a wrong bearer key (auth_fail_delay_ms) ---------------------
quiet A acl add --tenant ops --principal auditor --resource cluster:metrics --ops describe
start_broker D "$OPS_TMP/d" --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 800 || exit 1
WRONG="vk_0000000000000000_$(printf '%064d' 0)"
ms_of() { # ms_of CURL-ARGS...: prints "CODE MS" of one request to D
    curl -s -o /dev/null -w '%{http_code} %{time_total}\n' "$@" |
        awk '{ printf "%s %d\n", $1, $2 * 1000 }'
}
read -r c ms <<<"$(ms_of -H "Authorization: Bearer $WRONG" "http://$D_http/v1/topics")"
check "wrong key: 401 after auth_fail_delay_ms ($ms ms >= 800)" eval '[ "$c" = 401 ] && [ "$ms" -ge 790 ]'
read -r c ms <<<"$(ms_of -H "Authorization: Basic eDp5" "http://$D_http/v1/topics")"
check "Authorization not Bearer: 401 after the delay too ($ms ms)" eval '[ "$c" = 401 ] && [ "$ms" -ge 790 ]'
read -r c ms <<<"$(ms_of -H "Authorization: Bearer $KA" "http://$D_http/v1/topics")"
check "right key: 200 without the delay ($ms ms < 800)" eval '[ "$c" = 200 ] && [ "$ms" -lt 800 ]'
read -r c ms <<<"$(ms_of "http://$D_http/v1/topics")"
check "no key at all: 401 at once, nothing guessed ($ms ms)" eval '[ "$c" = 401 ] && [ "$ms" -lt 800 ]'
# Four wrong keys waiting at once must not hold up a right one.
delayed() { curl -s -H "Authorization: Bearer $KU" "http://$D_http/metrics" |
    sed -n 's/^verity_http_auth_delayed \([0-9]*\)$/\1/p'; }
wpids=()
for i in 1 2 3 4; do
    ms_of -H "Authorization: Bearer $WRONG" "http://$D_http/metrics" >"$OPS_TMP/late$i" &
    wpids+=($!)
done
wait_for 10 eval '[ "$(delayed)" = 4 ]'
read -r c ms <<<"$(ms_of -H "Authorization: Bearer $KA" "http://$D_http/v1/topics")"
n=$(delayed)
check "right key answered ($ms ms) while $n wrong keys wait (verity_http_auth_delayed)" \
    eval '[ "$c" = 200 ] && [ "$ms" -lt 800 ] && [ "$n" -ge 1 ]'
wait "${wpids[@]}"
check "the four wrong keys: 401 each after the delay" \
    eval '[ "$(cat "$OPS_TMP"/late[1-4] | awk '"'"'$1 == 401 && $2 >= 790'"'"' | wc -l)" = 4 ]'
# A client that gives up during the delay: its timer still fires and frees
# the request evhttp left to us; the broker answers the next.
curl -s -o /dev/null --max-time 0.2 -H "Authorization: Bearer $WRONG" "http://$D_http/metrics"
check "a hung-up client's 401 leaves the waiting list" wait_for 10 eval '[ "$(delayed)" = 0 ]'
check "after a client hung up during the delay: still serving" \
    test "$(code_at "$D_http" "$KA" /v1/topics)" = 200
# Shutdown with a wrong key still waiting: the 401 is written at once but
# the connection closes with evhttp_free before it leaves (curl sees 000);
# what matters is a clean exit and a client that is not left hanging.
ms_of -H "Authorization: Bearer $WRONG" "http://$D_http/metrics" >"$OPS_TMP/late5" &
wpid=$!
wait_for 10 eval '[ "$(delayed)" = 1 ]'
check "shutdown with a 401 waiting: exit 0" stop_broker "$D_pid"
wait "$wpid" 2>/dev/null
check "the waiting client is let go at shutdown, not answered 200 ($(cat "$OPS_TMP/late5"))" \
    grep -Eq '^(401|000) ' "$OPS_TMP/late5"

# ---- mutual TLS on the admin port: a mapped certificate is a principal ---------
certs=$OPS_TMP/certs
bash "$SRC/deploy/gen-certs.sh" "$certs" >/dev/null
quiet A cert add --subject verity-client --tenant ops --principal prom
quiet A acl add --tenant ops --principal prom --resource cluster:metrics --ops describe 2>/dev/null
KSEC=$(A key create --tenant ops --principal secadm 2>/dev/null)
quiet A acl add --tenant ops --principal secadm --resource cluster:security --ops admin,describe
start_broker T "$OPS_TMP/t" --auth-file "$VERITY_AUTH_FILE" --tls-cert "$certs/broker.pem" \
    --tls-key "$certs/broker.key" --tls-ca "$certs/ca.pem" --tls-client-auth optional || exit 1
tc() { curl -s -o /dev/null -w '%{http_code}' --cacert "$certs/ca.pem" "$@"; }
check "TLS admin, mapped client certificate: /metrics 200" \
    test "$(tc --cert "$certs/client.pem" --key "$certs/client.key" "https://$T_http/metrics")" = 200
check "TLS admin, no certificate, no key: 401" test "$(tc "https://$T_http/metrics")" = 401
check "TLS admin, no certificate, a key without the right: 403" \
    test "$(tc -H "Authorization: Bearer $KA" "https://$T_http/metrics")" = 403
# verity auth|acl --http against the TLS admin port (https, --tls-ca)
sec() { VERITY_API_KEY=$KSEC timeout 20 "$VERITY" "$@"; }
check "verity acl --http https://... --tls-ca: a rule added over TLS" \
    quiet sec acl --http "https://$T_http" --tls-ca "$certs/ca.pem" add --tenant acme \
    --principal svc-a --resource topic:tlsnet --ops describe
check "verity acl list over TLS shows it (source meta)" eval 'sec acl --http "https://$T_http" \
    --tls-ca "$certs/ca.pem" list | grep -q "acme/svc-a  topic:tlsnet  describe  meta"'
check "VERITY_TLS_CA alone makes --http HOST:PORT speak TLS" \
    quiet env VERITY_TLS_CA="$certs/ca.pem" VERITY_API_KEY="$KSEC" timeout 20 "$VERITY" auth \
    --http "$T_http" key list
check "plain HTTP to the TLS admin port: refused" \
    eval '! sec acl --http "http://$T_http" list >/dev/null 2>&1'
out=$(sec acl --http "https://$T_http" --tls-ca "$certs/other-ca.pem" list 2>&1)
check "another CA: refused ($(head -1 <<<"$out"))" eval '! grep -q tlsnet <<<"$out" && grep -qi "certificate\|verify" <<<"$out"'
out=$(VERITY_API_KEY= timeout 20 "$VERITY" acl --http "https://$T_http" --tls-ca "$certs/ca.pem" \
    --tls-cert "$certs/client.pem" --tls-key "$certs/client.key" list 2>&1)
check "the client certificate is the principal over TLS (prom: EDENIED, not EAUTH)" grep -q EDENIED <<<"$out"
stop_broker "$T_pid"

# ---- without auth_file the admin port stays open --------------------------------
VERITY_AUTH_FILE= start_broker P "$OPS_TMP/p" || exit 1
check "no auth_file: /metrics open" test "$(curl -s -o /dev/null -w '%{http_code}' "http://$P_http/metrics")" = 200
stop_broker "$P_pid"
ops_done
