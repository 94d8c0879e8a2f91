#!/usr/bin/env bash
# Export throughput of the sharing gateway, end to end: a fresh verityd, N
# JSON records in a 1-partition topic, a share with three transformations
# (hash, mask, generalise) plus a kept field, every transformed field with
# its salted commitment; one `verity share fetch` over TLS, timed; then
# `verity share verify` on the result (timed too).
#
# usage: bash tools/share_bench.sh [BUILD_DIR] [RECORDS]   (default build 300000)
# needs: openssl (the CLI) for the throwaway TLS certificate.
# env:   PERF_OUT=FILE records the gateway with perf during the fetch,
#        PERF_FETCH_OUT=FILE the fetch client (its CPU figure then includes perf),
#        PERF_VERIFY_OUT=FILE `verity share verify`; PERF_ARGS (default -g).
set -euo pipefail
build=${1:-build}
n=${2:-300000}
bin=$(cd "$build/bin" && pwd)
dir=$(mktemp -d /tmp/verity-share-bench-XXXXXX)
bport=$((20000 + RANDOM % 20000)); gport=$((bport + 1))
export VERITY_BROKER=127.0.0.1:$bport
cleanup() {
    [ -n "${gpid:-}" ] && kill "$gpid" 2>/dev/null && wait "$gpid" 2>/dev/null || true
    [ -n "${bpid:-}" ] && kill "$bpid" 2>/dev/null && wait "$bpid" 2>/dev/null || true
    rm -rf "$dir"
}
trap cleanup EXIT
wait_port() {
    for _ in $(seq 1 400); do
        (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
        sleep 0.05
    done
    echo "port $1 did not open" >&2; return 1
}
"$bin/verityd" --data-dir "$dir/data" --listen "127.0.0.1:$bport" --http off --log-level warn \
    2>"$dir/verityd.log" &
bpid=$!
wait_port "$bport"
"$bin/verity" topic create visits --partitions 1 >/dev/null
python3 - "$n" > "$dir/records.ndjson" <<'PY'
import sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    out.write('{"patient_id":"p%d","card":"4111111111%06d","visit_date":"2026-%02d-%02dT10:00:00Z",'
              '"diagnosis":"dx%d","name":"Patient %d","type":"visit"}\n'
              % (i % 5000, i, i % 12 + 1, i % 28 + 1, i % 97, i))
PY
"$bin/verity" produce visits < "$dir/records.ndjson" >/dev/null
"$bin/verity" share init --keys "$dir/keys" >/dev/null
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$dir/tls.key" \
    -out "$dir/tls.crt" -days 1 -subj /CN=127.0.0.1 -addext subjectAltName=IP:127.0.0.1 2>/dev/null
"$bin/verity" share create --keys "$dir/keys" --topic visits \
    --field /patient_id=hash --field /card=mask:last:4 --field /visit_date=generalise:month \
    --field /diagnosis=keep --expires-in 1d --recipient bench \
    --endpoint "https://127.0.0.1:$gport/v1" --profile "$dir/bench.share" >/dev/null
"$bin/verity-gateway" --keys "$dir/keys" --cert "$dir/tls.crt" --tls-key "$dir/tls.key" \
    --listen "127.0.0.1:$gport" --rate-token 0 --rate-addr 0 >"$dir/gw.log" 2>&1 &
gpid=$!
wait_port "$gport"
[ -n "${PERF_OUT:-}" ] && { perf record ${PERF_ARGS:--g} -o "$PERF_OUT" -p "$gpid" 2>/dev/null & ppid=$!; sleep 0.5; }
cpu() { awk '{print $14 + $15}' "/proc/$1/stat"; }
c0=$(cpu "$gpid")
b0=$(cpu "$bpid")
f0=$(awk '{print $10}' "/proc/$gpid/stat")
t0=$(date +%s.%N)
TIMEFORMAT='%U %S'
fcpu=$( { time ${PERF_FETCH_OUT:+perf record -g -o "$PERF_FETCH_OUT" --} "$bin/verity" share fetch "$dir/bench.share" -o "$dir/export.ndjson" \
            --cacert "$dir/tls.crt" >/dev/null; } 2>&1 | tail -1 | awk '{print $1 + $2}')
t1=$(date +%s.%N)
c1=$(cpu "$gpid")
b1=$(cpu "$bpid")
f1=$(awk '{print $10}' "/proc/$gpid/stat")
hwm=$(awk '/VmHWM/ {print $2}' "/proc/$gpid/status")
[ -n "${ppid:-}" ] && { kill -INT "$ppid"; wait "$ppid" 2>/dev/null || true; }
${PERF_VERIFY_OUT:+perf record ${PERF_ARGS:--g} -o "$PERF_VERIFY_OUT" --} "$bin/verity" share verify "$dir/export.ndjson" --key "$dir/keys/gateway.pub" \
    --log-key "$dir/data/keys/verity.pub" >/dev/null
t2=$(date +%s.%N)
recs=$(($(wc -l < "$dir/export.ndjson") - 2))
bytes=$(stat -c %s "$dir/export.ndjson")
python3 - "$recs" "$bytes" "$t0" "$t1" "$t2" "$c0" "$c1" "$(getconf CLK_TCK)" "$hwm" "$b0" "$b1" "$fcpu" \
    "$(cut -d' ' -f1 /proc/loadavg)" "$((f1 - f0))" <<'PY'
import sys
recs, size = int(sys.argv[1]), int(sys.argv[2])
t0, t1, t2 = map(float, sys.argv[3:6])
cpu = (float(sys.argv[7]) - float(sys.argv[6])) / float(sys.argv[8])
print("records %d, export %.1f MB" % (recs, size / 1e6))
print("fetch (gateway export over TLS): %.2f s, %.0f records/s, %.1f MB/s" % (t1 - t0, recs / (t1 - t0), size / 1e6 / (t1 - t0)))
print("gateway CPU: %.2f s (user+sys), %.0f records per CPU-second" % (cpu, recs / cpu if cpu else 0))
print("gateway peak RSS: %.1f MiB, %s minor page faults during the fetch" % (float(sys.argv[9]) / 1024, sys.argv[14]))
bcpu = (float(sys.argv[11]) - float(sys.argv[10])) / float(sys.argv[8])
print("during the fetch: broker CPU %.2f s, fetch client CPU %.2f s; load average %s"
      % (bcpu, float(sys.argv[12]), sys.argv[13]))
print("verify (offline): %.2f s, %.0f records/s" % (t2 - t1, recs / (t2 - t1)))
PY
