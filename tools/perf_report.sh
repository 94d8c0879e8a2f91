#!/usr/bin/env bash
# tools/perf_report.sh BUILD_DIR - what `make bench` runs.
#
#   1. `verity log bench` (storage: disk probe, appends, always latency,
#      reopen after kill -9, random reads, memory); BIG_GIB sets the size of
#      the big log (default 5).
#   2. tools/bench.sh (the peer workloads W1-W4 against fresh verityd
#      brokers, durable and relaxed), RUNS times (default 3).
#   3. With WITH_PEERS=1, ../shared/bench-peers/run.sh in the same sitting,
#      so every ratio to Redis Streams and NATS JetStream comes from one run.
#
# REPORT_ONLY=1 runs nothing and rewrites the section from the raw output
# already in build/bench/.
#
# The figures are written between the markers `<!-- bench:begin -->` and
# `<!-- bench:end -->` in docs/PERFORMANCE.md (the text around them is kept),
# with the date, the machine and the exact commands. Raw output stays in
# build/bench/. Exit 1 when a benchmark failed.
set -u

BUILD=${1:-build}
BIG_GIB=${BIG_GIB:-5}
RUNS=${RUNS:-3}
WITH_PEERS=${WITH_PEERS:-0}
REPORT_ONLY=${REPORT_ONLY:-0}
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
out="$root/$BUILD/bench"
doc="$root/docs/PERFORMANCE.md"
mkdir -p "$out"
cd "$root" || exit 1

log() { echo "[$(date +%H:%M:%S)] $*" >&2; }
failed=0

if [ "$REPORT_ONLY" != 1 ]; then
log "storage: $BUILD/bin/verity log bench --big-gib $BIG_GIB"
if ! "$BUILD/bin/verity" log bench --big-gib "$BIG_GIB" > "$out/storage.txt" 2> "$out/storage.err"; then
    log "storage bench failed: $(tail -1 "$out/storage.err")"
    failed=1
fi
cat "$out/storage.txt"

log "broker: RUNS=$RUNS tools/bench.sh $BUILD"
if ! RUNS=$RUNS bash tools/bench.sh "$BUILD" > "$out/broker.txt" 2> "$out/broker.err"; then
    log "broker bench failed (see $out/broker.err)"
    failed=1
fi
cat "$out/broker.txt"

peers_dir="$root/../shared/bench-peers"
if [ "$WITH_PEERS" = 1 ]; then
    if [ -f "$peers_dir/run.sh" ]; then
        log "peers: RUNS=$RUNS $peers_dir/run.sh"
        # run.sh reads PEERS as its list of peers: never pass ours down.
        if ! (cd "$peers_dir" && env -u PEERS RUNS="$RUNS" bash ./run.sh) > "$out/peers.txt" 2> "$out/peers.err"; then
            log "peer bench failed (see $out/peers.err)"
            failed=1
        fi
        cat "$out/peers.txt"
    else
        log "peers: $peers_dir/run.sh not found; skipped"
    fi
fi
fi

cpu=$(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//')
{
    echo "<!-- bench:begin -->"
    echo "### Figures from \`make bench\` ($(date -u '+%Y-%m-%d %H:%M UTC'))"
    echo
    echo "Machine: $(nproc) cores ($cpu), $(free -g | awk '/^Mem:/{print $2}') GiB, kernel $(uname -r)," \
         "data under /tmp on $(df -h /tmp | awk 'NR==2{print $1}')."
    echo "Commands: \`$BUILD/bin/verity log bench --big-gib $BIG_GIB\`; \`RUNS=$RUNS bash tools/bench.sh $BUILD\`" \
         "$( [ -s "$out/peers.txt" ] && echo "; \`RUNS=$RUNS ../shared/bench-peers/run.sh\` right after, same sitting")."
    echo
    echo "Storage (\`verity log bench\`):"
    echo
    echo '```'
    cat "$out/storage.txt"
    echo '```'
    echo
    echo "Broker (\`tools/bench.sh\`, medians of $RUNS):"
    echo
    echo '```'
    sed -n '/^Medians over/,$p' "$out/broker.txt" | grep -v '^RESULT' || true
    echo '```'
    if [ -s "$out/peers.txt" ]; then
        echo
        echo "Peers (\`../shared/bench-peers/run.sh\`, medians of $RUNS):"
        echo
        echo '```'
        grep '^PROBE probe=' "$out/peers.txt" || true
        sed -n '/^peer   mode/,/^# run.sh took/p' "$out/peers.txt"
        echo '```'
    fi
    echo "<!-- bench:end -->"
} > "$out/section.md"

if [ -f "$doc" ] && grep -q '<!-- bench:begin -->' "$doc"; then
    awk -v sec="$out/section.md" '
        /<!-- bench:begin -->/ { while ((getline l < sec) > 0) print l; skip = 1; next }
        /<!-- bench:end -->/ { skip = 0; next }
        !skip { print }' "$doc" > "$doc.tmp" && mv "$doc.tmp" "$doc"
else
    { [ -f "$doc" ] && cat "$doc"; echo; cat "$out/section.md"; } > "$doc.tmp" && mv "$doc.tmp" "$doc"
fi
log "wrote the figures into docs/PERFORMANCE.md (raw output in $out)"
exit $failed
