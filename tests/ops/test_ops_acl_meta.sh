#!/usr/bin/env bash
# Issue 14: the security store managed over the network, kept in the
# metadata log (one broker here; tests/ops/test_ops_acl_cluster.sh: three).
#   - bootstrap: auth_file (verity auth, on the host) holds the first admin
#     key (admin on cluster:security) and a tenant owner;
#   - `verity auth key create --http` makes a key over the network (shown
#     once; the log holds the hash only), `verity acl|role --http` change
#     rules; an open connection of the client gains and loses access at its
#     next request, roles apply, deny wins across principal, '*' and roles
#     and across auth_file and the network; a revoked key's open connection
#     is refused (tests/ops/acl_conn.py);
#   - a non-admin key is refused EDENIED, an unknown one EAUTH; an
#     auth_file entry cannot be removed over the network (EFILE);
#   - the audit trail names the admin that made each change (by=ops/admin);
#   - a restart (clean: from the meta snapshot; kill -9: replaying the
#     log past it) keeps every change; auth_file still combines with it.
. "$(dirname "$0")/lib.sh"
ops_init acl_meta
SRC=$(cd "$(dirname "$0")/../.." && pwd)
export VERITY_AUTH_FILE=$OPS_TMP/auth.json
A() { "$VERITY" auth "$@"; }

KADM=$(A key create --tenant ops --principal admin 2>/dev/null)
KOWN=$(A key create --tenant acme --principal owner 2>/dev/null)
quiet A acl add --tenant ops --principal admin --resource cluster:security --ops admin,describe
quiet A acl add --tenant ops --principal admin --resource cluster:audit --ops consume
quiet A acl add --tenant acme --principal owner --resource 'topic:*' --ops all
quiet A acl add --tenant acme --principal svc --resource topic:frozen --ops describe --deny

start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 0 || exit 1
export VERITY_BROKER=$S_addr
H=$S_http
for t in orders secret frozen later; do
    quiet env VERITY_API_KEY="$KOWN" timeout 20 "$VERITY" topic create $t
done

# a key made over the network
out=$(VERITY_API_KEY=$KADM timeout 20 "$VERITY" auth --http "$H" --json key create --tenant acme \
    --principal svc 2>/dev/null)
KSVC=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$out" 2>/dev/null)
KSVC_ID=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["id"])' "$out" 2>/dev/null)
check "key create --http prints a key once" eval '[[ "$KSVC" == vk_* ]]'
check "the network key is not in auth_file" eval '! grep -q "$KSVC_ID" "$VERITY_AUTH_FILE"'
check "the meta log holds the hash, not the secret" \
    eval '! grep -rqa "${KSVC##*_}" "$OPS_TMP/s/__meta"'
check "key list --http shows it with source meta" \
    eval 'VERITY_API_KEY=$KADM "$VERITY" auth --http "$H" key list | grep -q "$KSVC_ID  acme/svc  meta"'
check "the network key authenticates" \
    eval 'VERITY_API_KEY=$KSVC timeout 20 "$VERITY" topic list >/dev/null 2>&1'
check "list needs describe on cluster:security: a tenant key gets EDENIED" \
    eval 'VERITY_API_KEY=$KSVC "$VERITY" acl --http "$H" list 2>&1 | grep -q EDENIED'

# one open connection through the changes
python3 "$SRC/tests/ops/acl_conn.py" "$S_addr" "$H" "$VERITY" "$KADM" "$KSVC" "$KSVC_ID" \
    >"$OPS_TMP/conn.txt" 2>&1
while IFS= read -r line; do
    case $line in
    ok:*) ok "${line#ok: }" ;;
    FAIL:*) bad "${line#FAIL: }" ;;
    *) echo "  $line" ;;
    esac
done <"$OPS_TMP/conn.txt"
check "acl_conn.py ran to its end" grep -q "open connection is refused" "$OPS_TMP/conn.txt"

# quotas, certificate mappings over the network
check "quota set --http" quiet env VERITY_API_KEY="$KADM" "$VERITY" auth --http "$H" quota set \
    --tenant acme --principal owner --requests-per-s 1000
check "quota set --http keeps the fields not given" eval 'VERITY_API_KEY=$KADM "$VERITY" auth \
    --http "$H" quota set --tenant acme --principal owner --connections 50 >/dev/null &&
    VERITY_API_KEY=$KADM "$VERITY" auth --http "$H" quota list |
    grep -q "acme/owner .*requests_per_s=1000 connections=50"'
check "cert add --http" quiet env VERITY_API_KEY="$KADM" "$VERITY" auth --http "$H" cert add \
    --subject svc-client --tenant acme --principal svc
check "cert add of a mapped subject: EEXIST" eval 'VERITY_API_KEY=$KADM "$VERITY" auth --http "$H" \
    cert add --subject svc-client --tenant acme --principal x 2>&1 | grep -q EEXIST'
check "a malformed change: EINVAL, nothing changed" eval '[ "$(curl -s -o /dev/null -w "%{http_code}" \
    -H "Authorization: Bearer $KADM" -d "{\"op\":\"acl_add\",\"tenant\":\"a~b\"}" \
    http://$H/v1/security)" = 400 ]'

# the audit trail names who made each change
audit() { VERITY_API_KEY=$KADM timeout 20 "$VERITY" consume __audit --json 2>/dev/null; }
check "audit: acl_added by ops/admin" \
    wait_for 10 eval 'audit | grep -q "acl_added.*by.*ops/admin"'
check "audit: key_created and key_revoked by ops/admin" eval 'audit |
    grep -q "key_created.*by.*ops/admin" && audit | grep -q "key_revoked.*by.*ops/admin"'
check "audit: role_granted by ops/admin" eval 'audit | grep -q "role_granted.*ops/admin"'

acls_before=$(VERITY_API_KEY=$KADM "$VERITY" acl --http "$H" list | sort)
roles_before=$(VERITY_API_KEY=$KADM "$VERITY" role --http "$H" list | sort)
check "there are network ACLs to keep" eval 'grep -c " meta$" <<<"$acls_before" | grep -qv "^0$"'

# restart 1: clean (the meta snapshot holds the entries)
stop_broker "$S_pid"
check "clean stop wrote a meta snapshot" test -s "$OPS_TMP/s/__meta/meta.snap"
start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 0 || exit 1
H=$S_http
export VERITY_BROKER=$S_addr
check "after a clean restart: the same ACLs" \
    eval '[ "$(VERITY_API_KEY=$KADM "$VERITY" acl --http "$H" list | sort)" = "$acls_before" ]'
check "after a clean restart: the same roles" \
    eval '[ "$(VERITY_API_KEY=$KADM "$VERITY" role --http "$H" list | sort)" = "$roles_before" ]'
check "after a clean restart: the revoked key stays refused" \
    eval '! VERITY_API_KEY=$KSVC timeout 20 "$VERITY" topic list >/dev/null 2>&1'

# a change after the snapshot, then kill -9: replayed from the log
out=$(VERITY_API_KEY=$KADM timeout 20 "$VERITY" auth --http "$H" --json key create --tenant acme \
    --principal svc 2>/dev/null)
KSVC2=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["key"])' "$out" 2>/dev/null)
quiet env VERITY_API_KEY="$KADM" "$VERITY" acl --http "$H" add --tenant acme --principal svc \
    --resource topic:orders --ops consume
stop_broker "$S_pid" KILL
start_broker S "$OPS_TMP/s" --auth-file "$VERITY_AUTH_FILE" --auth-fail-delay-ms 0 || exit 1
H=$S_http
export VERITY_BROKER=$S_addr
check "after kill -9: a key made after the snapshot works, with its ACL" \
    eval 'VERITY_API_KEY=$KSVC2 timeout 20 "$VERITY" offsets orders >/dev/null 2>&1'
check "after kill -9: its ACL (describe, consume on orders) holds" eval 'VERITY_API_KEY=$KADM \
    "$VERITY" acl --http "$H" list | grep -q "allow  acme/svc  topic:orders  consume  meta"'
check "after kill -9: auth_file's deny on frozen still wins" eval '! VERITY_API_KEY=$KSVC2 \
    timeout 20 "$VERITY" topic describe frozen >/dev/null 2>&1'
# auth_file keeps working with the meta entries: a file change + SIGHUP
check "later: denied before the file rule" eval '! VERITY_API_KEY=$KSVC2 \
    timeout 20 "$VERITY" topic describe later >/dev/null 2>&1'
quiet A acl add --tenant acme --principal svc --resource topic:later --ops describe
kill -HUP "$S_pid"
check "SIGHUP: a file rule adds to the network rules" wait_for 10 eval 'VERITY_API_KEY=$KSVC2 \
    timeout 20 "$VERITY" topic describe later >/dev/null 2>&1'
check "SIGHUP kept the network rules" eval 'VERITY_API_KEY=$KADM "$VERITY" acl --http "$H" list |
    grep -q "topic:orders  consume  meta"'

stop_broker "$S_pid"
ops_done
