#!/usr/bin/env bash
# Client certificates as principals on the Kafka port (issue 14). A real
# verityd with auth_file, TLS (tls_client_auth optional) and the Kafka
# listener; real librdkafka clients (confluent-kafka, tests/kafka/ksasl.py
# with KSASL_TLS) and kcat, no SASL:
#   - alice's certificate (CN verity-client, mapped to acme/alice) produces
#     3,000 messages idempotently and reads them back through a group; the
#     topic is stored inside the tenant, and the native CLI with the same
#     certificate on the native TLS port reads the same records;
#   - bob's certificate (CN kafka-bob, acme/bob, consume only): his produce
#     is refused with TOPIC_AUTHORIZATION_FAILED, his consume works;
#   - no certificate, and a certificate of the CA whose subject is not
#     mapped: no Metadata (kafka_auth_required, auth_cert_unmapped);
#   - eve (tenant other) over SASL_SSL, with and without alice's
#     certificate (SASL's principal wins), sees none of acme's topics;
#   - acme's __audit holds the certificate logins (method cert, port kafka);
#   - alice's mapping removed (SIGHUP) ends her open session and refuses a
#     new one.
#
#   tests/kafka/mtls.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
NAME=kafka-mtls
. "$(dirname "$0")/lib.sh"

certs=$ROOT/certs
bash "$SRC/deploy/gen-certs.sh" "$certs" >/dev/null
leaf() { # leaf NAME CN: a client certificate of the test CA
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$certs/$1.key" 2>/dev/null
    openssl req -new -key "$certs/$1.key" -out "$certs/$1.csr" -subj "/CN=$2" 2>/dev/null
    printf 'basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n' \
        >"$certs/$1.ext"
    openssl x509 -req -in "$certs/$1.csr" -CA "$certs/ca.pem" -CAkey "$certs/ca.key" \
        -CAcreateserial -out "$certs/$1.pem" -days 2 -extfile "$certs/$1.ext" 2>/dev/null
}
leaf bob kafka-bob
leaf stranger kafka-stranger
leaf carol kafka-carol

export VERITY_AUTH_FILE=$ROOT/auth.json
A() { "$BIN/verity" auth "$@" >/dev/null; }
KE=$("$BIN/verity" auth --json key create --tenant other --principal eve |
    $PY -c 'import json,sys; print(json.load(sys.stdin)["key"])')
A cert add --subject verity-client --tenant acme --principal alice
A cert add --subject kafka-bob --tenant acme --principal bob
A cert add --subject kafka-carol --tenant acme --principal carol
A quota set --tenant acme --principal carol --connections 2
A acl add --tenant acme --principal carol --resource 'topic:*' --ops describe
A acl add --tenant acme --principal alice --resource 'topic:*' --ops all
A acl add --tenant acme --principal alice --resource 'group:*' --ops all
A acl add --tenant acme --principal bob --resource 'topic:orders' --ops consume,describe
A acl add --tenant acme --principal bob --resource 'group:*' --ops group
A acl add --tenant other --principal eve --resource 'topic:*' --ops all
A acl add --tenant other --principal eve --resource 'group:*' --ops all

PORT=$(free_port); KPORT=$(free_port)
BROKER=127.0.0.1:$PORT; BOOT=127.0.0.1:$KPORT
"$BIN/verityd" --data-dir "$ROOT/data" --listen "$BROKER" --http off --kafka-listen "$BOOT" \
    --tls-cert "$certs/broker.pem" --tls-key "$certs/broker.key" --tls-ca "$certs/ca.pem" \
    --tls-client-auth optional --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 200 \
    --log-level info >>"$ROOT/verityd.log" 2>&1 &
PID=$!
wait_for 20 $PY -c "import socket; socket.create_connection(('127.0.0.1',$KPORT),1)" 2>/dev/null \
    || fail "verityd did not listen within 20 s"
ok "verityd starts with TLS, auth_file and kafka_listen"

# The native CLI with alice's certificate on the native TLS port.
VA() { "$BIN/verity" "$@" --broker "$BROKER" --tls-ca "$certs/ca.pem" \
    --tls-cert "$certs/client.pem" --tls-key "$certs/client.key"; }
VA topic create orders --partitions 3 >/dev/null || fail "alice could not create orders (native, certificate)"
[ -d "$ROOT/data/topics/acme~orders" ] || fail "orders is not stored inside the tenant"

K() { timeout 120 $PY "$SRC/tests/kafka/ksasl.py" "$BOOT" "$@"; }
ALICE=$certs/ca.pem,$certs/client.pem,$certs/client.key
BOB=$certs/ca.pem,$certs/bob.pem,$certs/bob.key

out=$(KSASL_TLS=$ALICE K roundtrip - - orders 3000) || fail "alice (certificate) round trip: $out"
ok "alice by certificate, no SASL: $out"
grep -q 'event=auth_ok.*principal=alice method=cert subject=verity-client port=kafka' "$ROOT/verityd.log" \
    || fail "the certificate login is not logged (auth_ok method=cert port=kafka)"
n=$(timeout 60 "$BIN/verity" consume orders --count 3000 --broker "$BROKER" --tls-ca "$certs/ca.pem" \
    --tls-cert "$certs/client.pem" --tls-key "$certs/client.key" 2>/dev/null | wc -l)
[ "$n" = 3000 ] || fail "native read of alice's Kafka records: $n of 3000"
ok "the native CLI with the same certificate reads the 3000 records produced over Kafka"

# kcat, certificate only: metadata of the tenant's own topic.
kcat -b "$BOOT" -X security.protocol=ssl -X ssl.ca.location="$certs/ca.pem" \
    -X ssl.certificate.location="$certs/client.pem" -X ssl.key.location="$certs/client.key" \
    -L -m 10 >"$ROOT/kcat.txt" 2>&1 || fail "kcat with alice's certificate: $(tail -3 "$ROOT/kcat.txt")"
grep -q 'topic "orders" with 3 partitions' "$ROOT/kcat.txt" || fail "kcat (alice) does not see orders"
! grep -q '~' "$ROOT/kcat.txt" || fail "kcat sees stored names: $(grep '~' "$ROOT/kcat.txt")"
ok "kcat with alice's certificate lists orders, as the tenant names it"

out=$(KSASL_TLS=$BOB K denied - - orders) || fail "bob (certificate): $out"
ok "bob by certificate: $out"
grep -q 'event=acl_denied.*principal=bob' "$ROOT/verityd.log" || fail "bob's denial not logged"

out=$(KSASL_TLS=$certs/ca.pem K noauth) || fail "no certificate: $out"
ok "TLS without a certificate and without SASL: $out"
grep -q 'event=kafka_auth_required' "$ROOT/verityd.log" || fail "no kafka_auth_required logged"
out=$(KSASL_TLS=$certs/ca.pem,$certs/stranger.pem,$certs/stranger.key K noauth) \
    || fail "unmapped certificate: $out"
grep -q 'event=auth_cert_unmapped.*subject=kafka-stranger port=kafka' "$ROOT/verityd.log" \
    || fail "the unmapped certificate is not logged"
ok "a certificate of the CA with no mapping: no Metadata either (auth_cert_unmapped)"

out=$(KSASL_TLS=$certs/ca.pem K isolated eve "$KE" orders) || fail "eve (SASL_SSL): $out"
ok "eve (tenant other, SASL over TLS): $out"
out=$(KSASL_TLS=$ALICE K isolated eve "$KE" orders) || fail "eve with alice's certificate: $out"
ok "eve's SASL login over alice's certificate is eve: $out"

# The connections quota with certificate logins: carol (--connections 2)
# holds two TLS connections; kcat with her certificate is then left
# unauthenticated and gets no Metadata; once they close it gets it.
CAROL=(-X security.protocol=ssl -X ssl.ca.location="$certs/ca.pem"
       -X ssl.certificate.location="$certs/carol.pem" -X ssl.key.location="$certs/carol.key")
$PY -c '
import socket, ssl, sys, time
c = ssl.create_default_context(cafile=sys.argv[1]); c.check_hostname = False
c.load_cert_chain(sys.argv[2], sys.argv[3])
h, p = sys.argv[4].rsplit(":", 1)
held = [c.wrap_socket(socket.create_connection((h, int(p)), 5)) for _ in range(2)]
time.sleep(120)' "$certs/ca.pem" "$certs/carol.pem" "$certs/carol.key" "$BOOT" &
HOLD=$!
carol_logins() { [ "$(grep -c 'event=auth_ok.*principal=carol method=cert' "$ROOT/verityd.log")" -ge "$1" ]; }
wait_for 15 carol_logins 2 || { kill "$HOLD"; fail "carol's two certificate logins are not logged"; }
if kcat -b "$BOOT" "${CAROL[@]}" -L -m 5 >"$ROOT/kcat-carol.txt" 2>&1; then
    kill "$HOLD"; fail "kcat with carol's certificate got Metadata over her connections quota"
fi
grep -q 'event=quota_exceeded.*principal=carol quota=connections port=kafka' "$ROOT/verityd.log" \
    || { kill "$HOLD"; fail "quota_exceeded quota=connections port=kafka not logged"; }
grep -q 'event=kafka_auth_required.*reason=quota_connections' "$ROOT/verityd.log" \
    || { kill "$HOLD"; fail "kafka_auth_required reason=quota_connections not logged"; }
kill "$HOLD"; wait "$HOLD" 2>/dev/null || true
carol_lists() { kcat -b "$BOOT" "${CAROL[@]}" -L -m 5 >"$ROOT/kcat-carol.txt" 2>&1; }
wait_for 15 carol_lists || fail "kcat with carol's certificate refused after her connections closed"
ok "connections quota with certificates: kcat over carol's 2 connections gets no Metadata (quota_exceeded, kafka_auth_required reason=quota_connections), and does once they close"

audit() { timeout 20 "$BIN/verity" consume __audit --json --broker "$BROKER" --tls-ca "$certs/ca.pem" \
    --tls-cert "$certs/client.pem" --tls-key "$certs/client.key" 2>/dev/null; }
audit_has() { audit >"$ROOT/audit.txt" || true; grep -q "$1" "$ROOT/audit.txt"; } # no SIGPIPE under pipefail
wait_for 10 audit_has "kafka-bob" || fail "bob's certificate login is not in acme's __audit"
audit | $PY -c '
import json, sys
ev = [json.loads(json.loads(l)["value"]) for l in sys.stdin]
ok = [e for e in ev if e.get("event") == "auth_ok" and e.get("method") == "cert"
      and e.get("port") == "kafka" and e.get("principal") in ("alice", "bob")]
sys.exit(0 if len({e["principal"] for e in ok}) == 2 else 1)' \
    || fail "acme's __audit lacks alice's and bob's certificate logins on the Kafka port"
ok "acme's __audit holds the certificate logins (method cert, port kafka)"

out=$(KSASL_TLS=$ALICE K revoke - verity-client orders "$BIN/verity" "$VERITY_AUTH_FILE" "$PID" \
    "$ROOT/verityd.log") || fail "mapping removed: $out"
grep -q 'event=auth_revoked.*principal=alice port=kafka' "$ROOT/verityd.log" || fail "auth_revoked not logged"
ok "alice's mapping removed: $out"

kill -0 "$PID" || fail "verityd died"
kill -TERM "$PID"; wait "$PID" || true; PID=0
for d in "$ROOT"/data/topics/*/*/; do
    "$BIN/verity" log verify "$d" >/dev/null 2>&1 || fail "log verify failed on $d"
done
ok "verity log verify passes on every partition"
echo "kafka mtls: all checks passed"
