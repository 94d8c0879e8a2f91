#!/usr/bin/env bash
# Issue 14: mutual TLS between brokers (peer_tls_cert/key/ca), with three
# real verityd on loopback as a cluster.
#   - all three with peer certificates from the test CA: every link comes up,
#     and the peer port speaks TLS 1.2+ and asks for a client certificate;
#   - a broker whose certificate names another host (dialing or accepting),
#     a broker with a certificate of another CA, a plaintext broker: its links
#     stay down, each refusal is logged (tls_handshake_failed port=peer, or
#     peer_refused reason=certificate_name_mismatch), and the other two keep
#     their link;
#   - peer TLS configured but unreadable, or incomplete: the broker refuses to
#     start.
. "$(dirname "$0")/lib.sh"
ops_init peer_tls
SRC=${VERITY_SRC_DIR:-.}
certs=$OPS_TMP/certs
bash "$SRC/deploy/gen-certs.sh" "$certs" >/dev/null

read -r -a P <<<"$(python3 -c '
import socket
ss = [socket.socket() for _ in range(9)]
for s in ss: s.bind(("127.0.0.1", 0))
print(" ".join(str(s.getsockname()[1]) for s in ss))
for s in ss: s.close()')"
NODES="1=127.0.0.1:${P[0]},127.0.0.1:${P[1]},127.0.0.1:${P[2]};2=127.0.0.1:${P[3]},127.0.0.1:${P[4]},127.0.0.1:${P[5]};3=127.0.0.1:${P[6]},127.0.0.1:${P[7]},127.0.0.1:${P[8]}"
peer_port() { echo "${P[$((($1 - 1) * 3 + 1))]}"; }

# node ID CERT [extra flags]: starts broker ID (CERT "" = plaintext links)
node() {
    local id=$1 cert=$2; shift 2
    local log="$OPS_TMP/n$id.log" tls=()
    [ -n "$cert" ] && tls=(--peer-tls-cert "$certs/$cert.pem" --peer-tls-key "$certs/$cert.key"
                           --peer-tls-ca "$certs/ca.pem")
    : >"$log"
    "$VERITYD" --data-dir "$OPS_TMP/d$id" --node-id "$id" --cluster-nodes "$NODES" \
        --log-level info "${tls[@]}" "$@" >>"$log" 2>&1 &
    local pid=$!
    OPS_PIDS+=("$pid")
    eval "N${id}_pid=$pid"
    wait_for 30 grep -q 'event=cluster_started' "$log"
}
stop() { local v="N$1_pid"; stop_broker "${!v}"; }
up() { # up ID OTHER: the link ID -> OTHER is up (last peer_up after the last peer_down)
    awk -v o="node=$2" '$0 ~ "event=peer_up" && index($0, o" ") { s = 1 }
                        $0 ~ "event=peer_down" && index($0, o" ") { s = 0 } END { exit !s }' "$OPS_TMP/n$1.log"
}

# ---- all good ---------------------------------------------------------------------
node 1 peer; node 2 peer; node 3 peer
check "mTLS: link 1-2 up" wait_for 20 up 1 2
check "mTLS: link 1-3 up" wait_for 20 up 1 3
check "mTLS: link 2-3 up" wait_for 20 up 2 3
out=$(timeout 10 openssl s_client -connect "127.0.0.1:$(peer_port 2)" -CAfile "$certs/ca.pem" \
      -cert "$certs/peer.pem" -key "$certs/peer.key" -verify_ip 127.0.0.1 </dev/null 2>&1)
check "the peer port speaks TLS (verified, TLSv1.2+)" \
    eval 'grep -q "Verification: OK" <<<"$out" && grep -Eq "TLSv1\.[23]" <<<"$out"'
out=$(timeout 10 openssl s_client -connect "127.0.0.1:$(peer_port 2)" -CAfile "$certs/ca.pem" \
      -tls1_1 </dev/null 2>&1)
check "TLS 1.1 offered to the peer port: refused (protocol version alert)" \
    eval 'grep -q "alert protocol version" <<<"$out" && ! grep -q "Cipher is [A-Z]" <<<"$out"'
out=$(printf 'x' | timeout 10 openssl s_client -connect "127.0.0.1:$(peer_port 2)" \
      -CAfile "$certs/ca.pem" -ign_eof 2>&1)
check "no client certificate on the peer port: refused" grep -qi 'alert\|errno\|error' <<<"$out"
check "refused handshakes logged (port=peer)" \
    wait_for 10 grep -q 'event=tls_handshake_failed port=peer' "$OPS_TMP/n2.log"

# ---- node 1 with a certificate for another host: 2 and 3 refuse it after HELLO ----
stop 1
node 1 peer-wronghost
check "wrong host name (dialer's certificate): node 2 refuses it" \
    wait_for 20 grep -q 'event=peer_refused node=1 reason=certificate_name_mismatch' "$OPS_TMP/n2.log"
check "wrong host name (dialer's certificate): node 3 refuses it" \
    wait_for 20 grep -q 'event=peer_refused node=1 reason=certificate_name_mismatch' "$OPS_TMP/n3.log"
check "the link 2-3 stays up meanwhile" up 2 3
check "node 1 has no link up" eval '! up 1 2 && ! up 1 3'
stop 1

# ---- node 3 with a certificate for another host: its dialers refuse it -------------
stop 3
node 1 peer
node 3 peer-wronghost
check "wrong host name (acceptor's certificate): node 1 refuses it" \
    wait_for 20 grep -Eq 'event=tls_handshake_failed port=peer node=3 .*(certificate verify failed|hostname|IP address mismatch)' "$OPS_TMP/n1.log"
check "link 1-2 up again with good certificates" wait_for 20 up 1 2
stop 3

# ---- another CA, plaintext -----------------------------------------------------------
node 3 peer-other-ca
check "another CA: node 1 refuses it" \
    wait_for 20 eval 'test $(grep -c "event=tls_handshake_failed port=peer node=3 .*certificate verify failed" "$OPS_TMP/n1.log") -ge 2'
stop 3
node 3 ""
check "plaintext broker: its acceptors' dialers fail the handshake" \
    wait_for 20 eval 'test $(grep -c "event=tls_handshake_failed port=peer node=3" "$OPS_TMP/n1.log") -ge 3'
check "plaintext broker: its links stay down" eval '! up 3 1 && ! up 3 2'
check "after all that, the link 1-2 is up" up 1 2
stop 3

# ---- refusal to start -------------------------------------------------------------
out=$(timeout 20 "$VERITYD" --data-dir "$OPS_TMP/bad" --node-id 3 --cluster-nodes "$NODES" \
      --peer-tls-cert "$certs/none.pem" --peer-tls-key "$certs/peer.key" \
      --peer-tls-ca "$certs/ca.pem" 2>&1)
check "unreadable peer_tls_cert: refused (tls_config_failed port=peer)" \
    grep -q 'tls_config_failed.*port=peer' <<<"$out"
out=$(timeout 20 "$VERITYD" --data-dir "$OPS_TMP/bad" --node-id 3 --cluster-nodes "$NODES" \
      --peer-tls-cert "$certs/peer.pem" 2>&1)
check "peer_tls_cert without key and CA: refused" grep -q 'go together' <<<"$out"
stop 1; stop 2
ops_done
