#!/usr/bin/env bash
# tools/latency.sh DIR [DIR...] - before/after latency runs in one sitting.
#
# Each DIR holds bin/verityd and bin/verity (a build directory, or a copy of
# an older build's binaries). For each run, and within it for each DIR in
# turn (interleaved, so the machine's load falls on every build alike), a
# fresh verityd on a free loopback port with an empty data directory runs
# one `verity bench` session per entry of SESSIONS, stopped by its PID.
#
# Environment:
#   RUNS      runs (default 3); medians are over runs
#   MODES     default "durable relaxed"
#   SESSIONS  default "W4 W2 W1,W3"; an entry W4:ordered / W4:shared runs W4
#             through a consumer group of that mode
#   PLOT_DIR  when set, the last run's W2/W4 of each DIR and mode is also
#             plotted there (verity bench --plot, with PEERS when set)
#   PEERS     a bench-peers results file for the plots
#   TRACE     when set (e.g. 64), verityd gets --trace-sample TRACE and the
#             W4 sessions print the per-stage breakdown (verity bench --trace)
# Prints every RESULT line tagged build=DIR, then medians per build (with
# the load average at the start and the end of the sitting).
set -u

[ $# -ge 1 ] || { echo "usage: $0 DIR [DIR...]" >&2; exit 2; }
RUNS=${RUNS:-3}
MODES=${MODES:-durable relaxed}
SESSIONS=${SESSIONS:-W4 W2 W1,W3}
WORKLOAD_TIMEOUT=${WORKLOAD_TIMEOUT:-300}

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
die() { log "ERROR: $*"; exit 1; }

for d in "$@"; do
    [ -x "$d/bin/verityd" ] && [ -x "$d/bin/verity" ] || die "$d: no bin/verityd and bin/verity"
done

SERVER_PID=
DATA_DIR=
RAW=$(mktemp /tmp/verity-latency.XXXXXX)

port_busy() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }
free_port() {
    local p i
    for i in $(seq 1 100); do
        p=$((20000 + RANDOM % 40000))
        port_busy "$p" || { echo "$p"; return 0; }
    done
    return 1
}
stop_server() {
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
    [ -n "$DATA_DIR" ] && rm -rf "$DATA_DIR"
    DATA_DIR=
}
trap 'stop_server; rm -f "$RAW"' EXIT
trap 'exit 130' INT TERM

start_server() { # DIR: retries on another port when one was taken meanwhile
    local try
    for try in 1 2 3; do
        start_server_once "$1" && return 0
        stop_server
        log "start failed, retrying"
    done
    die "verityd would not start"
}

start_server_once() { # DIR
    local port hport i targs=()
    port=$(free_port) || die "no free port"
    hport=$(free_port) || die "no free port"
    DATA_DIR=$(mktemp -d /tmp/verity-latency.XXXXXX)
    [ -n "${TRACE:-}" ] && "$1/bin/verityd" --help 2>&1 | grep -q trace.sample &&
        targs=(--trace-sample "$TRACE")
    "$1/bin/verityd" --data-dir "$DATA_DIR/data" --listen "127.0.0.1:$port" \
        --http "127.0.0.1:$hport" --log-level warn "${targs[@]}" >"$DATA_DIR/verityd.log" 2>&1 &
    SERVER_PID=$!
    BROKER=127.0.0.1:$port
    ADMIN=127.0.0.1:$hport
    for i in $(seq 1 200); do
        kill -0 "$SERVER_PID" 2>/dev/null || { log "verityd exited at start: $(tail -1 "$DATA_DIR/verityd.log")"; return 1; }
        "$1/bin/verity" broker status --broker "$BROKER" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    log "verityd not ready after 20 s"
    return 1
}

LOAD0=$(cut -d' ' -f1-3 /proc/loadavg)
log "load average at start: $LOAD0; $RUNS run(s); builds: $*"
for run in $(seq 1 "$RUNS"); do
    for mode in $MODES; do
        for s in $SESSIONS; do
            for d in "$@"; do
                wl=${s%%:*}
                group=; [ "$s" != "$wl" ] && group=${s#*:}
                args=()
                [ -n "$group" ] && args+=(--group "$group")
                if [ -n "${PLOT_DIR:-}" ] && [ "$run" = "$RUNS" ] && [[ $wl == *W[24]* ]] &&
                    "$d/bin/verity" bench --help 2>/dev/null | grep -q -- --plot; then
                    mkdir -p "$PLOT_DIR"
                    args+=(--plot "$PLOT_DIR/$(basename "$d")-$mode-${s//[:,]/-}.svg")
                    [ -n "${PEERS:-}" ] && args+=(--peers "$PEERS")
                fi
                start_server "$d"
                [ -n "${TRACE:-}" ] && [[ $wl == *W4* ]] &&
                    "$d/bin/verity" bench --help 2>/dev/null | grep -q -- --trace && args+=(--trace "$ADMIN")
                log "run $run $mode $s build=$d (load $(cut -d' ' -f1 /proc/loadavg))"
                out=$(timeout -k 5 "$WORKLOAD_TIMEOUT" "$d/bin/verity" bench --broker "$BROKER" \
                    --mode "$mode" --workload "$wl" --broker-pid "$SERVER_PID" "${args[@]}") ||
                    log "FAILED: $d $mode $s"
                [ -n "${TRACE:-}" ] && grep '^TRACE' <<<"$out" | sed "s|\$| build=$d run=$run|" >&2
                grep -E '^(RESULT|FAILED) ' <<<"$out" |
                    sed -e "s/workload=\(W[34]\) /workload=\1${group:+-$group} /" \
                        -e "s|\$| build=$d run=$run|" | tee -a "$RAW"
                stop_server
            done
        done
    done
done
LOAD1=$(cut -d' ' -f1-3 /proc/loadavg)

echo
echo "Medians over $RUNS run(s), latencies in us; load average $LOAD0 at the start, $LOAD1 at the end"
awk '
function median(k,    n, i, j, t, v) {
    n = cnt[k]; if (n == 0) return "-"
    for (i = 1; i <= n; i++) v[i] = vals[k, i] + 0
    for (i = 2; i <= n; i++) { t = v[i]; for (j = i - 1; j >= 1 && v[j] > t; j--) v[j + 1] = v[j]; v[j + 1] = t }
    return (n % 2) ? v[(n + 1) / 2] : (v[n / 2] + v[n / 2 + 1]) / 2
}
function runs(k,    i, s) { s = ""; for (i = 1; i <= cnt[k]; i++) s = s (i > 1 ? " " : "") sprintf("%.0f", vals[k, i]); return s }
/^RESULT / {
    delete kv
    for (i = 2; i <= NF; i++) { split($i, p, "="); kv[p[1]] = p[2] }
    row = kv["build"] SUBSEP kv["mode"] SUBSEP kv["workload"]
    if (!(row in seen)) { seen[row] = 1; order[++nrow] = row }
    for (k in kv) { key = row SUBSEP k; vals[key, ++cnt[key]] = kv[k] }
}
END {
    printf "%-28s %-8s %-10s %-34s %s\n", "build", "mode", "workload", "median", "per run"
    for (r = 1; r <= nrow; r++) {
        split(order[r], f, SUBSEP)
        if (f[3] ~ /^W[13]/)
            printf "%-28s %-8s %-10s %-34s %s\n", f[1], f[2], f[3],
                sprintf("%.0f msg/s", median(order[r] SUBSEP "msgs_per_s")), runs(order[r] SUBSEP "msgs_per_s")
        else
            printf "%-28s %-8s %-10s %-34s p99: %s\n", f[1], f[2], f[3],
                sprintf("p50 %.0f p99 %.0f p999 %.0f max %.0f", median(order[r] SUBSEP "p50_us"),
                    median(order[r] SUBSEP "p99_us"), median(order[r] SUBSEP "p999_us"),
                    median(order[r] SUBSEP "max_us")), runs(order[r] SUBSEP "p99_us")
    }
}' "$RAW"
