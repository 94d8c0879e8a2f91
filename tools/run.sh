#!/usr/bin/env bash
# Starts a single-node verityd on loopback in the foreground, with its data
# under the project (./data), until Ctrl-C (SIGINT: in-flight requests are
# answered, logs synced and checkpointed, exit 0).
#
# usage: bash tools/run.sh [BUILD_DIR]      (make run calls it)
# env:   VERITY_DATA_DIR (default <project>/data), VERITY_LISTEN
#        (127.0.0.1:9720), VERITY_HTTP (127.0.0.1:9721), and any other
#        VERITY_<KEY> of docs/OPERATIONS.md.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${1:-build}
case "$build" in
    /*) ;;
    *) build="$root/$build" ;;
esac
bin="$build/bin/verityd"
cli="$build/bin/verity"
if [ ! -x "$bin" ]; then
    echo "run: $bin not found; build first (make all, or make run)" >&2
    exit 1
fi

data=${VERITY_DATA_DIR:-$root/data}
listen=${VERITY_LISTEN:-127.0.0.1:9720}
http=${VERITY_HTTP:-127.0.0.1:9721}
mkdir -p "$data"

cat <<MSG
verityd (single node)
  data directory  $data
  protocol        $listen
  admin HTTP      http://$http/health  /ready  /metrics  /v1/topics
  signing key     $data/keys/verity.key (generated on first start)
try, in another terminal:
  $cli topic create demo --partitions 3 --broker $listen
  echo hello | $cli produce demo --broker $listen
  $cli consume demo --broker $listen
Ctrl-C stops the broker cleanly.
MSG

exec "$bin" --data-dir "$data" --listen "$listen" --http "$http"
