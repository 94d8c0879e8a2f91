# Shared helpers of the operator tests (tests/ops/test_ops_*.sh): real
# binaries from $VERITY_BIN_DIR, brokers on loopback port 0 (the bound port
# is read back from the broker's log), every process stopped by its PID.
# Each test sources this file, calls ops_init NAME, and ends with ops_done.
set -u
BIN=${VERITY_BIN_DIR:-build/bin}
VERITYD=$BIN/verityd
VERITY=$BIN/verity
OPS_PASS=0
OPS_FAIL=0
OPS_PIDS=()

ops_init() {
    OPS_NAME=$1
    OPS_TMP=$(mktemp -d "/tmp/verity-ops-$1-XXXXXX")
    trap ops_cleanup EXIT
}

ops_cleanup() {
    local p
    for p in "${OPS_PIDS[@]}"; do
        kill -KILL "$p" 2>/dev/null && wait "$p" 2>/dev/null
    done
    if [ -z "${VERITY_TEST_KEEP:-}" ]; then rm -rf "$OPS_TMP"; else echo "(kept $OPS_TMP)"; fi
}

ok() { OPS_PASS=$((OPS_PASS + 1)); echo "  ok: $*"; }
bad() { OPS_FAIL=$((OPS_FAIL + 1)); echo "  FAIL: $*"; }
check() { # check "what" command...
    local what=$1; shift
    if "$@"; then ok "$what"; else bad "$what"; fi
}

# Runs a command with its output discarded (for check).
quiet() { "$@" >/dev/null 2>&1; }

# Polls `cmd` until it succeeds or SECS pass. 0 or 1.
wait_for() {
    local secs=$1; shift
    local end=$((SECONDS + secs))
    while [ $SECONDS -lt $end ]; do
        "$@" && return 0
        sleep 0.05
    done
    "$@"
}

# start_broker NAME DATA_DIR [extra flags...]: starts verityd on port 0,
# sets NAME_pid, NAME_addr (protocol), NAME_http (admin, when not off).
start_broker() {
    local name=$1 data=$2; shift 2
    local log="$OPS_TMP/$name.log"
    : >"$log"
    "$VERITYD" --data-dir "$data" --listen 127.0.0.1:0 --http 127.0.0.1:0 --log-level info \
        "$@" >>"$log" 2>&1 &
    local pid=$!
    OPS_PIDS+=("$pid")
    eval "${name}_pid=$pid"
    if ! wait_for 30 grep -q 'broker_started' "$log"; then
        echo "  broker $name did not start; log:" >&2
        tail -20 "$log" >&2
        return 1
    fi
    local line addr http
    line=$(grep 'broker_started' "$log" | tail -1)
    addr=$(sed -n 's/.* listen=\([^ ]*\).*/\1/p' <<<"$line")
    http=$(sed -n 's/.* http=\([^ ]*\).*/\1/p' <<<"$line")
    eval "${name}_addr=$addr"
    eval "${name}_http=$http"
}

# stop_broker PID [SIG]: signals and waits for the exit; returns its code.
stop_broker() {
    local pid=$1 sig=${2:-TERM}
    kill "-$sig" "$pid" 2>/dev/null
    local rc=0
    wait "$pid" 2>/dev/null || rc=$?
    return $rc
}

# A plain closing line the CI runner reads, and the exit code.
ops_done() {
    echo "$OPS_NAME: $OPS_PASS passed, $OPS_FAIL failed"
    [ "$OPS_FAIL" -eq 0 ]
}
