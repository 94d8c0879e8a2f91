#!/usr/bin/env bash
# Test certificates for a TLS broker (NOT for production: the CA key sits
# next to the certificates, unencrypted).
#
#   deploy/gen-certs.sh DIR
#
# Writes into DIR:
#   ca.pem, ca.key                test CA (EC P-256, 10 days)
#   broker.pem, broker.key        broker: SAN IP:127.0.0.1, DNS:localhost
#   client.pem, client.key        client certificate (CN=verity-client), for mTLS
#   expired.pem, expired.key      broker certificate (same SANs) that expired yesterday
#   other-ca.pem, other-ca.key    a second, unrelated CA (wrong-CA tests)
#   other-client.pem/.key         client certificate signed by the other CA
#   peer.pem, peer.key            broker-to-broker (peer_tls_cert): server and client use,
#                                 SAN IP:127.0.0.1, DNS:localhost
#   peer-wronghost.pem/.key       the same use for another name only (DNS:other.example)
#   peer-other-ca.pem/.key        a peer certificate signed by the other CA
# Needs only the openssl command line tool.
set -euo pipefail
dir=${1:?usage: gen-certs.sh DIR}
mkdir -p "$dir"
cd "$dir"
days=10

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null; chmod 600 "$1"; }

ca() { # ca NAME CN
    key "$1.key"
    openssl req -new -x509 -key "$1.key" -out "$1.pem" -days $days -subj "/CN=$2" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
}

# leaf NAME CA CN EXT START END   (START/END: openssl ca style YYYYMMDDHHMMSSZ, or "" for now+days)
leaf() {
    local name=$1 ca=$2 cn=$3 ext=$4
    key "$name.key"
    openssl req -new -key "$name.key" -out "$name.csr" -subj "/CN=$cn"
    printf '%s\n' "$ext" > "$name.ext"
    openssl x509 -req -in "$name.csr" -CA "$ca.pem" -CAkey "$ca.key" -CAcreateserial \
        -out "$name.pem" -days $days -extfile "$name.ext" 2>/dev/null
    rm -f "$name.csr" "$name.ext"
}

server_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,DNS:localhost'
peer_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=serverAuth,clientAuth
subjectAltName=IP:127.0.0.1,DNS:localhost'
client_ext='basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=clientAuth'

ca ca "Verity Test CA"
ca other-ca "Some Other CA"
leaf broker ca localhost "$server_ext"
leaf client ca verity-client "$client_ext"
leaf other-client other-ca verity-client "$client_ext"
leaf peer ca verity-peer "$peer_ext"
leaf peer-wronghost ca other.example "${peer_ext%subjectAltName*}subjectAltName=DNS:other.example"
leaf peer-other-ca other-ca verity-peer "$peer_ext"

# The expired certificate: valid from 3 days ago to yesterday. `openssl x509
# -req` cannot back-date, so sign with `openssl ca` and explicit dates.
key expired.key
openssl req -new -key expired.key -out expired.csr -subj "/CN=localhost"
mkdir -p .ca-db
: > .ca-db/index.txt
printf '%s\n' "$server_ext" > expired.ext
start=$(date -u -d '3 days ago' +%Y%m%d%H%M%SZ)
end=$(date -u -d '1 day ago' +%Y%m%d%H%M%SZ)
cat > .ca-db/ca.cnf <<CNF
[ ca ]
default_ca = test
[ test ]
database = .ca-db/index.txt
new_certs_dir = .ca-db
serial = .ca-db/serial
default_md = sha256
policy = any
unique_subject = no
[ any ]
commonName = supplied
CNF
openssl rand -hex 8 > .ca-db/serial
openssl ca -batch -config .ca-db/ca.cnf -cert ca.pem -keyfile ca.key -in expired.csr \
    -out expired.pem -startdate "$start" -enddate "$end" -extfile expired.ext -notext 2>/dev/null
rm -rf .ca-db expired.csr expired.ext ca.srl other-ca.srl
echo "gen-certs: wrote $(ls "$PWD" | tr '\n' ' ')"
