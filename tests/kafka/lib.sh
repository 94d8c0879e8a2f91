# Shared by tests/kafka/*.sh: sourced after BUILD is set and NAME names the
# test (its temporary directory). Gives BIN, SRC, PY, ROOT (removed at exit
# unless VERITY_TEST_KEEP is set), PID (the broker the test started, killed
# at exit), fail, ok, free_port and wait_for.
BIN=$BUILD/bin
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=/usr/bin/python3
ROOT=$(mktemp -d "/tmp/verity-$NAME.XXXXXX")
PID=0
cleanup() {
    if [ "$PID" != 0 ] && kill -0 "$PID" 2>/dev/null; then kill -KILL "$PID" || true; fi
    if [ -z "${VERITY_TEST_KEEP:-}" ]; then rm -rf "$ROOT"; else echo "kept $ROOT"; fi
}
trap cleanup EXIT
fail() { echo "FAIL: $*"; echo "--- verityd log tail"; tail -20 "$ROOT/verityd.log" || true; exit 1; }
ok() { echo "ok: $*"; }
free_port() { $PY -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
# wait_for SECONDS CMD...: polls CMD every 50 ms until it succeeds or time runs out.
wait_for() {
    local deadline=$((SECONDS + $1)); shift
    until "$@"; do [ $SECONDS -lt $deadline ] || return 1; sleep 0.05; done
}
