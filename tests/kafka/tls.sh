#!/usr/bin/env bash
# TLS on the Kafka port (issue 14): with tls_cert set, the Kafka listener
# speaks TLS with the same certificate and client-certificate policy as the
# native and admin ports. kcat (librdkafka) with security.protocol=ssl:
#   - produces 2,000 keyed messages and reads them back byte for byte, the
#     native client reads the same records over its own TLS port;
#   - with tls_client_auth required, kcat with the client certificate works,
#     without one it is refused (tls_handshake_failed port=kafka);
#   - plaintext to the TLS Kafka port and a client trusting another CA are
#     refused and logged, and the broker keeps serving.
#
#   tests/kafka/tls.sh BUILD_DIR
set -euo pipefail
BUILD=$(cd "${1:-build}" && pwd)
NAME=kafka-tls
. "$(dirname "$0")/lib.sh"

certs=$ROOT/certs
bash "$SRC/deploy/gen-certs.sh" "$certs" >/dev/null
other=$ROOT/other
bash "$SRC/deploy/gen-certs.sh" "$other" >/dev/null # another CA

PORT=$(free_port); KPORT=$(free_port)
BROKER=127.0.0.1:$PORT; BOOT=127.0.0.1:$KPORT

start() { # start [extra verityd flags]
    "$BIN/verityd" --data-dir "$ROOT/data" --listen "$BROKER" --http off --kafka-listen "$BOOT" \
        --tls-cert "$certs/broker.pem" --tls-key "$certs/broker.key" --tls-ca "$certs/ca.pem" \
        --log-level info "$@" >>"$ROOT/verityd.log" 2>&1 &
    PID=$!
    wait_for 20 $PY -c "import socket; socket.create_connection(('127.0.0.1',$KPORT),1)" 2>/dev/null \
        || fail "verityd did not listen within 20 s"
}
stop() { kill -TERM "$PID"; wait "$PID" || true; PID=0; }
V() { "$BIN/verity" "$@" --broker "$BROKER" --tls-ca "$certs/ca.pem" \
        --tls-cert "$certs/client.pem" --tls-key "$certs/client.key"; }
SSL=(-X security.protocol=ssl -X ssl.ca.location="$certs/ca.pem")
MSSL=("${SSL[@]}" -X ssl.certificate.location="$certs/client.pem" -X ssl.key.location="$certs/client.key")
failures() { grep -c 'event=tls_handshake_failed.*port=kafka' "$ROOT/verityd.log" || true; }
more_failures() { [ "$(failures)" -gt "$1" ]; }

start --tls-client-auth optional
grep -q 'kafka_listening.*tls=on' "$ROOT/verityd.log" || fail "kafka_listening does not say tls=on"
V topic create kt --partitions 2 >/dev/null

awk 'BEGIN { for (i = 0; i < 2000; i++) printf "k%05d\tvalue %d over TLS\n", i, i }' > "$ROOT/in.txt"
timeout 60 kcat -b "$BOOT" "${SSL[@]}" -P -t kt -K $'\t' -l "$ROOT/in.txt" || fail "kcat produce over TLS"
timeout 60 kcat -b "$BOOT" "${SSL[@]}" -C -t kt -o beginning -e -q -f '%k\t%s\n' > "$ROOT/out.txt" \
    || fail "kcat consume over TLS"
cmp -s <(sort "$ROOT/in.txt") <(sort "$ROOT/out.txt") || fail "kcat over TLS: records differ ($(wc -l < "$ROOT/out.txt") read)"
[ "$(V consume kt --format json | wc -l)" = 2000 ] || fail "native consumer over TLS does not read the 2000 records"
echo "ok: kcat over TLS produced 2000 keyed messages and read them back byte for byte; the native client reads them too"

n=$(failures)
if timeout 20 kcat -b "$BOOT" -L -m 5 >/dev/null 2>&1; then fail "plaintext kcat got metadata from the TLS Kafka port"; fi
wait_for 10 more_failures "$n" || fail "plaintext to the TLS Kafka port was not logged"
n=$(failures)
if timeout 20 kcat -b "$BOOT" -X security.protocol=ssl -X ssl.ca.location="$other/ca.pem" -L -m 5 >/dev/null 2>&1; then
    fail "a client trusting another CA got metadata"
fi
wait_for 10 more_failures "$n" || fail "a client trusting another CA was not logged"
timeout 20 kcat -b "$BOOT" "${SSL[@]}" -L -m 5 | grep -q 'topic "kt" with 2 partitions' || fail "broker stopped serving TLS clients"
echo "ok: plaintext and a foreign CA refused on the Kafka port, logged (port=kafka), broker still serving"
stop

start --tls-client-auth required
n=$(failures)
if timeout 20 kcat -b "$BOOT" "${SSL[@]}" -L -m 5 >/dev/null 2>&1; then fail "no client certificate, required: got metadata"; fi
wait_for 10 more_failures "$n" || fail "a missing client certificate was not logged"
timeout 20 kcat -b "$BOOT" "${MSSL[@]}" -C -t kt -o beginning -e -q -f '%k\n' > "$ROOT/m.txt" || fail "mTLS consume"
[ "$(wc -l < "$ROOT/m.txt")" = 2000 ] || fail "mTLS consume read $(wc -l < "$ROOT/m.txt") of 2000"
echo "ok: client certificate required: kcat without one refused, with one reads all 2000"
stop
echo "kafka tls: all checks passed"
