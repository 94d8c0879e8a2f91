#!/usr/bin/env bash
# Throughput of verity-project: N JSON events (default 200000) on a
# 4-partition topic, projected by one worker into SQLite with latest_by_id
# only and with the four-table dealership shape (latest_by_id, timeline,
# sum, tags); into PostgreSQL as well when PGCONN is set (a libpq
# connection string to an empty database you may write to). Prints the
# worker's own figure: first delivered message to last commit, and where
# its time went (the worker's "phases" line, from 2026-12-05).
#
# usage: bash tools/project_bench.sh [BUILD_DIR]      env: N, PGCONN, ONLY
# ONLY: the runs to do, of "sqlite-latest sqlite-four pg-latest pg-four"
# (default all; pg-* need PGCONN).
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
bin=${1:-$root/build}/bin
n=${N:-200000}
dir=$(mktemp -d /tmp/verity-prjbench-XXXXXX)
port=$((20000 + RANDOM % 20000))
export VERITY_BROKER=127.0.0.1:$port
"$bin/verityd" --data-dir "$dir/data" --listen "$VERITY_BROKER" --http off --log-level warn \
    2>"$dir/verityd.log" &
broker=$!
trap 'kill $broker 2>/dev/null; wait $broker 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 100); do "$bin/verity" broker status >/dev/null 2>&1 && break; sleep 0.1; done
"$bin/verity" topic create sales --partitions 4 --durability os >/dev/null
awk -v n="$n" 'BEGIN { for (i = 0; i < n; i++)
  printf "V%07d|{\"type\":\"sale\",\"vehicle_id\":\"V%07d\",\"seller\":\"S%02d\",\"price\":%d.5,\"commission\":%.2f,\"date\":\"2026-%02d-%02dT%02d:00:00Z\",\"model\":\"M%d\"}\n",
    i % (n/10), i % (n/10), i % 13, 10000 + (i % 1000) * 10, (i % 50) * 0.25, i % 12 + 1, i % 28 + 1, i % 24, i % 5 }' |
  "$bin/verity" produce sales --key-separator '|' --linger-ms 5 >/dev/null
one='{"name": "vehicles", "template": "latest_by_id", "key": "/vehicle_id",
      "columns": {"price": {"pointer": "/price", "type": "real"}, "seller": "/seller"}}'
four="$one,
 {\"name\": \"history\", \"template\": \"timeline\", \"key\": \"/vehicle_id\",
  \"columns\": {\"price\": {\"pointer\": \"/price\", \"type\": \"real\"}, \"at\": {\"pointer\": \"/date\", \"type\": \"timestamp\"}}},
 {\"name\": \"commissions\", \"template\": \"sum\", \"group_by\": {\"seller\": \"/seller\",
  \"month\": {\"pointer\": \"/date\", \"type\": \"timestamp\", \"truncate\": \"month\"}},
  \"value\": {\"pointer\": \"/commission\", \"type\": \"real\"}},
 {\"name\": \"units\", \"template\": \"tags\", \"entity\": \"/vehicle_id\", \"tags\": {\"seller\": \"/seller\", \"model\": \"/model\"}}"
run() { # name sink tables
    case " ${ONLY:-sqlite-latest sqlite-four pg-latest pg-four} " in
    *" $1 "*) ;;
    *) return 0 ;;
    esac
    local cfg="$dir/$1.json"
    printf '{"source": {"topics": ["sales"], "group": "%s"}, "sink": %s, "tables": [%s]}\n' \
        "$1" "$2" "$3" >"$cfg"
    "$bin/verity-project" run "$cfg" 2>"$dir/$1.log" &
    local w=$!
    until [ "$("$bin/verity-project" status "$cfg" --json |
               awk -F: '/applied_events/ { s += $2 } END { print s + 0 }')" -ge "$n" ]; do
        sleep 0.2
    done
    kill $w; wait $w || true
    echo "$1: $(grep 'first message to last commit' "$dir/$1.log" | sed 's/.*commit: //')"
    grep 'phases' "$dir/$1.log" | sed 's/^verity-project: /    /' || true
}
run sqlite-latest "{\"sqlite\": \"$dir/a.db\"}" "$one"
run sqlite-four "{\"sqlite\": \"$dir/b.db\"}" "$four"
if [ -n "${PGCONN:-}" ]; then
    run pg-latest "{\"postgres\": \"$PGCONN\"}" "$one"
    psql "$PGCONN" -qc 'DROP TABLE IF EXISTS vehicles, _verity_positions, _verity_meta' >/dev/null
    run pg-four "{\"postgres\": \"$PGCONN\"}" "$four"
fi
