#!/usr/bin/env bash
# tools/bench.sh BUILD_DIR - the peer benchmark's four workloads against
# Verity, in both modes, the way /work/shared/bench-peers/peer.sh runs the
# peers: three sessions per mode, each on a freshly started verityd (free
# loopback port, empty temporary data directory, stopped by its PID):
#
#   session 1: W1 then W3 (W3 reads what W1 wrote)
#   session 2: W2
#   session 3: W4
#
# and, for each consumer-group mode in GROUP_MODES, the two workloads that
# consume through a group (verity bench --group MODE):
#   session 4: W1 then W3 through the group (W1's line is not reported again)
#   session 5: W4 through the group
# Their lines carry workload=W3-<mode> / W4-<mode>.
#
# Modes are topic durabilities: durable = `always` (ack after an fdatasync
# that covers the message, group commit allowed), relaxed = `os`.
#
# Environment: RUNS (default 1) repeats everything and reports medians;
# WORKLOAD_TIMEOUT (default 300 s) bounds each `verity bench` call;
# GROUP_MODES (default "ordered shared", empty to skip) the group sessions.
# Prints every RESULT line, then a table of medians; the lead copies it into
# docs/PERFORMANCE.md. Exit 1 when a workload failed.
set -u

BUILD=${1:-build}
RUNS=${RUNS:-1}
WORKLOAD_TIMEOUT=${WORKLOAD_TIMEOUT:-300}
GROUP_MODES=${GROUP_MODES-ordered shared}
VERITYD=$BUILD/bin/verityd
VERITY=$BUILD/bin/verity

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

[ -x "$VERITYD" ] || die "$VERITYD not built (run: make BUILD=$BUILD)"
[ -x "$VERITY" ] || die "$VERITY not built (run: make BUILD=$BUILD)"

SERVER_PID=
DATA_DIR=
RAW=$(mktemp /tmp/verity-bench-results.XXXXXX)
FAILED=0

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

free_port() {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        port_busy "$p" || { echo "$p"; return 0; }
    done
    return 1
}

stop_server() {   # by PID only, then remove the data directory
    if [ -n "$SERVER_PID" ]; then
        kill -TERM "$SERVER_PID" 2>/dev/null
        local i
        for i in $(seq 1 100); do
            kill -0 "$SERVER_PID" 2>/dev/null || break
            sleep 0.1
        done
        kill -0 "$SERVER_PID" 2>/dev/null && kill -KILL "$SERVER_PID" 2>/dev/null
        wait "$SERVER_PID" 2>/dev/null
        SERVER_PID=
    fi
    if [ -n "$DATA_DIR" ]; then
        rm -rf "$DATA_DIR"
        DATA_DIR=
    fi
}

cleanup() { stop_server; rm -f "$RAW"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

start_server() {
    local port i
    port=$(free_port) || die "no free port"
    DATA_DIR=$(mktemp -d /tmp/verity-bench.XXXXXX)
    "$VERITYD" --data-dir "$DATA_DIR/data" --listen "127.0.0.1:$port" --http off \
        --log-level warn >"$DATA_DIR/verityd.log" 2>&1 &
    SERVER_PID=$!
    BROKER=127.0.0.1:$port
    for i in $(seq 1 200); do
        kill -0 "$SERVER_PID" 2>/dev/null || die "verityd exited at start: $(tail -3 "$DATA_DIR/verityd.log")"
        "$VERITY" broker status --broker "$BROKER" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    die "verityd not ready after 20 s"
}

# Group sessions: W1 only feeds W3 (not reported again); W3 / W4 are renamed
# after the group mode.
relabel() {
    if [ -n "$1" ]; then
        sed -e '/workload=W1 /d' -e "s/workload=\(W[34]\)/workload=\1-$1/"
    else
        cat
    fi
}

# session MODE RUN WORKLOADS [GROUP_MODE]: fresh broker, one `verity bench`
# call (through a consumer group of GROUP_MODE when given).
session() {
    local mode=$1 run=$2 wl=$3 group=${4:-} out rc
    local gargs=()
    [ -n "$group" ] && gargs=(--group "$group")
    start_server
    log "verity/$mode run $run: $wl${group:+ through a $group group} (broker $BROKER, pid $SERVER_PID)"
    out=$(timeout -k 5 "$WORKLOAD_TIMEOUT" "$VERITY" bench --broker "$BROKER" --mode "$mode" \
        --workload "$wl" --broker-pid "$SERVER_PID" "${gargs[@]}") && rc=0 || rc=$?
    if [ $rc -ne 0 ]; then
        log "FAILED: verity $mode $wl $group (rc=$rc; 124 or 137 = killed after ${WORKLOAD_TIMEOUT}s)"
        FAILED=1
    fi
    grep -E '^(RESULT|FAILED) ' <<<"$out" | relabel "$group" | sed "s/\$/ run=$run/" | tee -a "$RAW"
    stop_server
    sync
}

log "verity $("$VERITY" --version 2>/dev/null | cut -d' ' -f2), $RUNS run(s), $(nproc) cores"
for run in $(seq 1 "$RUNS"); do
    for mode in durable relaxed; do
        session "$mode" "$run" W1,W3
        session "$mode" "$run" W2
        session "$mode" "$run" W4
        for group in $GROUP_MODES; do
            session "$mode" "$run" W1,W3 "$group"
            session "$mode" "$run" W4 "$group"
        done
    done
done

echo
echo "Medians over $RUNS run(s); latencies in us; srv_cpu_s = broker CPU seconds"
awk '
function median(k,    n, i, j, t, v) {
    n = cnt[k]; if (n == 0) return ""
    for (i = 1; i <= n; i++) v[i] = vals[k, i] + 0
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
/^RESULT / {
    delete kv
    for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    m = kv["mode"]; w = kv["workload"]; modes[m] = 1
    if (w ~ /-/) { groups = 1; g = w; sub(/^W[34]-/, "", g); gmodes[g] = 1 }
    for (k in kv) { key = m SUBSEP w SUBSEP k; vals[key, ++cnt[key]] = kv[k] }
}
/^FAILED / { failed = failed " " $0 }
function f(m, w, k, fmt,    x) { x = median(m SUBSEP w SUBSEP k); return x == "" ? "-" : sprintf(fmt, x) }
END {
    printf "%-8s | %-22s | %-9s | %-22s | %-28s | %-8s\n", "mode", "W1 msg/s (MB/s)", "W3 msg/s",
           "W2 p50/p99/p999", "W4 p50/p99/p999 (max)", "disk_MB"
    for (m in modes) {
        printf "%-8s | %-22s | %-9s | %-22s | %-28s | %-8s\n", m,
            f(m, "W1", "msgs_per_s", "%.0f") " (" f(m, "W1", "MB_per_s", "%.1f") ")",
            f(m, "W3", "msgs_per_s", "%.0f"),
            f(m, "W2", "p50_us", "%.0f") "/" f(m, "W2", "p99_us", "%.0f") "/" f(m, "W2", "p999_us", "%.0f"),
            f(m, "W4", "p50_us", "%.0f") "/" f(m, "W4", "p99_us", "%.0f") "/" f(m, "W4", "p999_us", "%.0f") " (" f(m, "W4", "max_us", "%.0f") ")",
            f(m, "W1", "disk_MB", "%.0f")
        printf "%-8s   srv_cpu_s W1 %s  W3 %s  W2 %s  W4 %s;  W2 msgs/s %s;  W4 send_rate %s\n", "",
            f(m, "W1", "srv_cpu_s", "%.2f"), f(m, "W3", "srv_cpu_s", "%.2f"),
            f(m, "W2", "srv_cpu_s", "%.2f"), f(m, "W4", "srv_cpu_s", "%.2f"),
            f(m, "W2", "msgs_per_s", "%.0f"), f(m, "W4", "send_rate", "%.0f")
    }
    if (groups) {
        printf "\nThrough a consumer group (fetch up to 1000, ack each batch with the next fetch):\n"
        printf "%-8s | %-8s | %-9s | %-28s | %s\n", "mode", "group", "W3 msg/s", "W4 p50/p99/p999 (max)",
               "srv_cpu_s W3 / W4"
        for (m in modes)
            for (g in gmodes)
                printf "%-8s | %-8s | %-9s | %-28s | %s / %s\n", m, g,
                    f(m, "W3-" g, "msgs_per_s", "%.0f"),
                    f(m, "W4-" g, "p50_us", "%.0f") "/" f(m, "W4-" g, "p99_us", "%.0f") "/" f(m, "W4-" g, "p999_us", "%.0f") " (" f(m, "W4-" g, "max_us", "%.0f") ")",
                    f(m, "W3-" g, "srv_cpu_s", "%.2f"), f(m, "W4-" g, "srv_cpu_s", "%.2f")
    }
    if (failed != "") print "FAILED:" failed
}' "$RAW"
echo "W3 in the first table is a plain fetch by one reader (no group, no acks); the group rows are the peers' W3."
exit $FAILED
