#!/usr/bin/env bash
# Issue 14, transport: TLS on the client port and the admin HTTP port, with
# real binaries and certificates from deploy/gen-certs.sh.
#   - produce / consume over TLS (a fetch larger than the copy chunk), the
#     admin API over HTTPS;
#   - refused, logged, and the broker keeps serving: plaintext to a TLS port,
#     a client that trusts another CA, a TLS 1.1-only client, a server
#     certificate that expired, a missing or foreign client certificate
#     where one is required; each on the client port and the admin port;
#   - a broker with TLS configured but unreadable does not start;
#   - SIGHUP reloads the certificates without dropping an open connection,
#     and a reload from a broken file keeps the old ones.
. "$(dirname "$0")/lib.sh"
ops_init tls
SRC=${VERITY_SRC_DIR:-.}
certs=$OPS_TMP/certs
bash "$SRC/deploy/gen-certs.sh" "$certs" >/dev/null
check "gen-certs made the CA, broker, client and expired certificates" \
    test -s "$certs/ca.pem" -a -s "$certs/broker.pem" -a -s "$certs/client.pem" -a -s "$certs/expired.pem"
check "expired.pem is expired" eval '! openssl x509 -in "$certs/expired.pem" -noout -checkend 0 >/dev/null'

TLS=(--tls-ca "$certs/ca.pem")
MTLS=(--tls-ca "$certs/ca.pem" --tls-cert "$certs/client.pem" --tls-key "$certs/client.key")
log_has() { grep -q -- "$2" "$OPS_TMP/$1.log"; }
# failures NAME: the count of tls_handshake_failed lines in NAME's log
failures() { grep -c 'event=tls_handshake_failed' "$OPS_TMP/$1.log"; }
# wait_failed NAME N PATTERN: a failure line after the first N matches PATTERN
new_failure() {
    grep 'event=tls_handshake_failed' "$OPS_TMP/$1.log" | tail -n +$(($2 + 1)) | grep -q -- "$3"
}
wait_failed() { wait_for 10 new_failure "$@"; }
serves() { # serves ADDR: a TLS client still gets an answer
    timeout 20 "$VERITY" topic list --broker "$1" "${MTLS[@]}" >/dev/null 2>&1
}

# ---- refuses to start with TLS configured but unreadable -------------------
out=$(timeout 20 "$VERITYD" --data-dir "$OPS_TMP/bad" --listen 127.0.0.1:0 --http off \
      --tls-cert "$OPS_TMP/nonexistent.pem" --tls-key "$certs/broker.key" 2>&1)
rc=$?
check "missing tls_cert: verityd exits non-zero ($rc)" test $rc -ne 0
check "missing tls_cert: logged tls_config_failed naming the file" \
    grep -q 'tls_config_failed.*nonexistent.pem' <<<"$out"
out=$(timeout 20 "$VERITYD" --data-dir "$OPS_TMP/bad" --listen 127.0.0.1:0 --http off \
      --tls-cert "$certs/broker.pem" --tls-key "$certs/client.key" 2>&1)
check "key of another certificate: refused" grep -q 'tls_config_failed' <<<"$out"
out=$(timeout 20 "$VERITYD" --data-dir "$OPS_TMP/bad" --listen 127.0.0.1:0 --http off \
      --tls-cert "$certs/broker.pem" --tls-key "$certs/broker.key" --tls-client-auth required 2>&1)
check "tls_client_auth required without tls_ca: refused" grep -q 'needs tls_ca' <<<"$out"

# ---- broker A: TLS, client certificates optional --------------------------
cp "$certs/broker.pem" "$OPS_TMP/live.pem"
cp "$certs/broker.key" "$OPS_TMP/live.key"
start_broker A "$OPS_TMP/a" --tls-cert "$OPS_TMP/live.pem" --tls-key "$OPS_TMP/live.key" \
    --tls-ca "$certs/ca.pem" --tls-client-auth optional --frame-timeout-ms 2000 || exit 1
check "broker_started says tls=optional" log_has A 'broker_started.*tls=optional'
check "create topic over TLS" quiet timeout 20 "$VERITY" topic create t --broker "$A_addr" "${TLS[@]}"
# 3000 records of 300 bytes: the fetch answer spans many 64 KiB copy chunks.
python3 -c '
import sys
for i in range(3000): sys.stdout.write("%06d-%s\n" % (i, "x" * 293))' >"$OPS_TMP/in.txt"
timeout 60 "$VERITY" produce t --broker "$A_addr" "${TLS[@]}" <"$OPS_TMP/in.txt" >/dev/null 2>&1
check "produce 3000 records over TLS" test $? -eq 0
VERITY_TLS_CA=$certs/ca.pem timeout 60 "$VERITY" consume t --broker "$A_addr" >"$OPS_TMP/out.txt" 2>/dev/null
check "consume over TLS (VERITY_TLS_CA) returns every record, in order" cmp -s "$OPS_TMP/in.txt" "$OPS_TMP/out.txt"
timeout 60 "$VERITY" consume t --broker "$A_addr" "${MTLS[@]}" --count 10 >"$OPS_TMP/out2.txt" 2>/dev/null
check "consume with a client certificate" cmp -s <(head -10 "$OPS_TMP/in.txt") "$OPS_TMP/out2.txt"
check "admin /health over HTTPS" quiet curl -sf --max-time 10 --cacert "$certs/ca.pem" "https://$A_http/health"
check "admin /metrics: verity_tls_enabled 1" eval \
    'curl -sf --max-time 10 --cacert "$certs/ca.pem" "https://$A_http/metrics" | grep -q "^verity_tls_enabled 1"'

# Client port negatives.
n=$(failures A)
out=$(timeout 20 "$VERITY" topic list --broker "$A_addr" 2>&1)
check "client port, plaintext client: refused" test $? -ne 0
check "client port, plaintext client: logged" wait_failed A "$n" 'port=client.*wrong version number'
check "  and A keeps serving" serves "$A_addr"

n=$(failures A)
out=$(timeout 20 "$VERITY" topic list --broker "$A_addr" --tls-ca "$certs/other-ca.pem" 2>&1)
rc=$?
check "client port, client trusting another CA: refused ($rc)" test $rc -ne 0
check "  the client says why" grep -q 'certificate verify failed' <<<"$out"
check "  logged" wait_failed A "$n" 'port=client.*unknown ca'
check "  and A keeps serving" serves "$A_addr"

n=$(failures A)
echo | timeout 10 openssl s_client -connect "$A_addr" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' \
    >"$OPS_TMP/s11.txt" 2>&1
check "client port, TLS 1.1-only client: no session" eval '! grep -q "Cipher is TLS\|Protocol  : TLSv1.1" "$OPS_TMP/s11.txt" || grep -q "alert protocol version" "$OPS_TMP/s11.txt"'
check "  logged (unsupported protocol)" wait_failed A "$n" 'port=client.*unsupported protocol'
n=$(failures A)
echo | timeout 10 openssl s_client -connect "$A_addr" -tls1 -cipher 'DEFAULT:@SECLEVEL=0' >/dev/null 2>&1
check "client port, TLS 1.0-only client: logged" wait_failed A "$n" 'port=client.*unsupported protocol'
check "  and A keeps serving" serves "$A_addr"

n=$(failures A)
echo | timeout 10 openssl s_client -connect "$A_addr" -tls1_2 -CAfile "$certs/ca.pem" >"$OPS_TMP/s12.txt" 2>&1
check "client port, TLS 1.2 is accepted" grep -q 'Protocol  : TLSv1.2' "$OPS_TMP/s12.txt"
echo | timeout 10 openssl s_client -connect "$A_addr" -CAfile "$certs/ca.pem" >"$OPS_TMP/s13.txt" 2>&1
check "client port, TLS 1.3 preferred" grep -q 'New, TLSv1.3' "$OPS_TMP/s13.txt"
check "client port, no compression" grep -q 'Compression: NONE' "$OPS_TMP/s12.txt"

n=$(failures A)
exec 3<>"/dev/tcp/${A_addr%:*}/${A_addr#*:}" # connects, never says a word
check "client port, a handshake that never starts: closed after frame_timeout_ms, logged" \
    wait_failed A "$n" 'port=client.*handshake not complete within frame_timeout_ms'
exec 3<&- 3>&-
check "  and A keeps serving" serves "$A_addr"

# Admin port negatives.
n=$(failures A)
curl -s --max-time 10 "http://$A_http/health" >/dev/null 2>&1
check "admin port, plaintext HTTP: refused" test $? -ne 0
check "  logged" wait_failed A "$n" 'port=admin.*http request'
n=$(failures A)
curl -s --max-time 10 --cacert "$certs/other-ca.pem" "https://$A_http/health" >/dev/null 2>&1
check "admin port, client trusting another CA: refused" test $? -ne 0
check "  logged" wait_failed A "$n" 'port=admin.*unknown ca'
n=$(failures A)
echo | timeout 10 openssl s_client -connect "$A_http" -tls1_1 -cipher 'DEFAULT:@SECLEVEL=0' >/dev/null 2>&1
check "admin port, TLS 1.1-only client: logged" wait_failed A "$n" 'port=admin.*unsupported protocol'
check "  and the admin port keeps serving" quiet curl -sf --max-time 10 --cacert "$certs/ca.pem" "https://$A_http/health"
check "/metrics counts the refused handshakes" eval \
    '[ "$(curl -sf --max-time 10 --cacert "$certs/ca.pem" "https://$A_http/metrics" | sed -n "s/^verity_tls_handshake_failures_total //p")" -ge "$(failures A)" ]'

# ---- SIGHUP: reload without dropping an open connection --------------------
conns() { curl -sf --max-time 10 --cacert "$certs/ca.pem" "https://$A_http/metrics" |
          sed -n 's/^verity_connections_total //p'; }
timeout 120 "$VERITY" consume t --broker "$A_addr" "${TLS[@]}" --from latest --follow \
    >"$OPS_TMP/follow.txt" 2>"$OPS_TMP/follow.err" &
follow_pid=$!
OPS_PIDS+=("$follow_pid")
wait_for 10 eval '[ -n "$(conns)" ]'
sleep 1 # (not synchronisation: gives a dropped consumer time to reconnect, which the count would show)
c0=$(conns)
# A new certificate for the same names, here the same file written again.
cp "$certs/broker.pem" "$OPS_TMP/live.pem.new" && mv "$OPS_TMP/live.pem.new" "$OPS_TMP/live.pem"
kill -HUP "$A_pid"
check "SIGHUP: tls_reloaded logged" wait_for 10 log_has A 'event=tls_reloaded'
sleep 1 # (as above: time for a reconnect to happen if the reload had dropped it)
c1=$(conns)
check "no connection dropped by the reload: connections_total $c0 -> $c1" test "$c1" -eq "$c0"
echo after-reload | timeout 20 "$VERITY" produce t --broker "$A_addr" "${TLS[@]}" >/dev/null 2>&1
check "the following consumer (connected before the reload) gets a record produced after it" \
    wait_for 20 grep -q after-reload "$OPS_TMP/follow.txt"
check "the consumer is still running" kill -0 "$follow_pid"
echo "not a certificate" >"$OPS_TMP/live.pem"
kill -HUP "$A_pid"
check "SIGHUP with a broken file: tls_reload_failed logged" wait_for 10 log_has A 'event=tls_reload_failed'
check "  and new TLS connections still use the old certificate" serves "$A_addr"
kill "$follow_pid" 2>/dev/null; wait "$follow_pid" 2>/dev/null
check "A stops cleanly" stop_broker "$A_pid" TERM

# ---- broker B: an expired server certificate ------------------------------
start_broker B "$OPS_TMP/b" --tls-cert "$certs/expired.pem" --tls-key "$certs/expired.key" || exit 1
out=$(timeout 20 "$VERITY" topic list --broker "$B_addr" "${TLS[@]}" 2>&1)
rc=$?
check "expired server certificate: the client refuses ($rc)" test $rc -ne 0
check "  and says why" grep -q 'certificate has expired' <<<"$out"
check "  the broker logs the client's alert" wait_for 10 log_has B 'port=client.*certificate expired'
curl -s --max-time 10 --cacert "$certs/ca.pem" "https://$B_http/health" >/dev/null 2>&1
check "expired server certificate on the admin port: curl refuses" test $? -ne 0
check "  the broker logs it" wait_for 10 log_has B 'port=admin.*certificate expired'
out=$(timeout 20 "$VERITY" topic list --broker "localhost:${B_addr#*:}" "${TLS[@]}" \
      --tls-server-name wrong.example 2>&1)
check "wrong host name: the client refuses" grep -q 'hostname mismatch\|certificate has expired' <<<"$out"
check "B stops cleanly" stop_broker "$B_pid" TERM

# ---- broker C: client certificates required --------------------------------
start_broker C "$OPS_TMP/c" --tls-cert "$certs/broker.pem" --tls-key "$certs/broker.key" \
    --tls-ca "$certs/ca.pem" --tls-client-auth required || exit 1
check "broker_started says tls=required" log_has C 'broker_started.*tls=required'
check "with a client certificate: served" serves "$C_addr"
n=$(failures C)
out=$(timeout 20 "$VERITY" topic list --broker "$C_addr" "${TLS[@]}" 2>&1)
rc=$?
check "client port, no client certificate: refused ($rc)" test $rc -ne 0
check "  the client says TLS" grep -q 'TLS handshake failed' <<<"$out"
check "  logged" wait_failed C "$n" 'port=client.*did not return a certificate'
n=$(failures C)
out=$(timeout 20 "$VERITY" topic list --broker "$C_addr" --tls-ca "$certs/ca.pem" \
      --tls-cert "$certs/other-client.pem" --tls-key "$certs/other-client.key" 2>&1)
check "client port, certificate from another CA: refused" test $? -ne 0
check "  logged" wait_failed C "$n" 'port=client.*certificate verify failed'
check "  and C keeps serving" serves "$C_addr"
n=$(failures C)
curl -s --max-time 10 --cacert "$certs/ca.pem" "https://$C_http/health" >/dev/null 2>&1
check "admin port, no client certificate: refused" test $? -ne 0
check "  logged" wait_failed C "$n" 'port=admin'
check "admin port, with a client certificate: served" quiet curl -sf --max-time 10 \
    --cacert "$certs/ca.pem" --cert "$certs/client.pem" --key "$certs/client.key" "https://$C_http/health"
check "C stops cleanly" stop_broker "$C_pid" TERM

# ---- plaintext stays the default -------------------------------------------
start_broker D "$OPS_TMP/d" || exit 1
check "without tls_cert the broker is plaintext (tls=off)" log_has D 'broker_started.*tls=off'
check "plaintext client served" quiet timeout 20 "$VERITY" topic list --broker "$D_addr"
check "a TLS client to a plaintext broker fails with a TLS error" eval \
    'timeout 20 "$VERITY" topic list --broker "$D_addr" "${TLS[@]}" 2>&1 | grep -q "TLS handshake failed"'
check "D stops cleanly" stop_broker "$D_pid" TERM

ops_done
