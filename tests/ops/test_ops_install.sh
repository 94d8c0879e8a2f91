#!/usr/bin/env bash
# Issue 8 item 6: `make install DESTDIR=...` installs a unit that
# systemd-analyze accepts, and the installed broker started with the
# installed unit's command line works on a clean data directory (the
# signing key is generated on first start); `verity keygen` makes the key's
# directory.
. "$(dirname "$0")/lib.sh"
ops_init install
src=${VERITY_SRC_DIR:-$(cd "$(dirname "$0")/../.." && pwd)}
stage=$OPS_TMP/stage
build=$(dirname "$BIN")

check "make install DESTDIR=... PREFIX=/usr" \
    quiet make --no-print-directory -C "$src" BUILD="$build" install DESTDIR="$stage" PREFIX=/usr
unit=$stage/usr/lib/systemd/system/verityd.service
for f in "$stage/usr/bin/verityd" "$stage/usr/bin/verity" "$unit" "$stage/etc/verity/verityd.json" \
         "$stage/usr/share/doc/verity/OPERATIONS.md"; do
    check "installed ${f#$stage}" test -e "$f"
done
check "the unit has no @PLACEHOLDER@ left" eval '! grep -q @ "$unit"'
check "the unit makes its own user and state directory" \
    eval 'grep -q "^DynamicUser=yes" "$unit" && grep -q "^StateDirectory=verity" "$unit"'
# systemd-analyze checks the executable path on the real root: verify a copy
# whose ExecStart points into the stage.
mkdir -p "$OPS_TMP/units"
sed "s|^ExecStart=/usr/bin/verityd|ExecStart=$stage/usr/bin/verityd|" "$unit" >"$OPS_TMP/units/verityd.service"
out=$(SYSTEMD_LOG_LEVEL=warning systemd-analyze verify "$OPS_TMP/units/verityd.service" 2>&1); rc=$?
check "systemd-analyze verify accepts the unit ($rc${out:+: $out})" test $rc -eq 0

# The unit's command line, with the stage as root: the config's data_dir
# and addresses are moved to a clean temporary place through the
# environment (which overrides the file).
cmd=$(sed -n 's/^ExecStart=//p' "$unit")
bin=${cmd%% *}
args=${cmd#* }
args=${args//\/etc\//$stage/etc/}
data=$OPS_TMP/state
VERITY_DATA_DIR=$data VERITY_LISTEN=127.0.0.1:0 VERITY_HTTP=127.0.0.1:0 \
    "$stage$bin" $args >"$OPS_TMP/installed.log" 2>&1 &
pid=$!
OPS_PIDS+=("$pid")
check "the installed broker starts with the unit's command line" \
    wait_for 20 grep -q broker_started "$OPS_TMP/installed.log"
http=$(sed -n 's/.*broker_started.* http=\([^ ]*\).*/\1/p' "$OPS_TMP/installed.log")
addr=$(sed -n 's/.*broker_started.* listen=\([^ ]*\).*/\1/p' "$OPS_TMP/installed.log")
check "its signing key was generated on first start" test -s "$data/keys/verity.key"
check "/ready answers 200" test "$(curl -s -o /dev/null -w '%{http_code}' "http://$http/ready")" = 200
check "the installed CLI talks to it" quiet "$stage/usr/bin/verity" topic create demo --broker "$addr"
stop_broker "$pid" TERM
check "... and it stops cleanly (exit 0)" test $? -eq 0

out=$("$VERITY" keygen --out "$OPS_TMP/new/dir/verity" 2>&1)
check "verity keygen creates the key's directory ($out)" test -s "$OPS_TMP/new/dir/verity.key"
check "... private (0700)" test "$(stat -c %a "$OPS_TMP/new/dir")" = 700
ops_done
