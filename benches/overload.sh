#!/usr/bin/env bash
# Overload over HTTP: `GET /db` (a simulated pool of 16 connections, 20 ms a
# query: capacity about 800 queries/s) driven by examples/db_load at 1x, 4x
# and 16x its capacity in closed loop (16, 64, 256 clients, each sending
# again at once whatever the answer: they ignore Retry-After) and in open
# loop at 16x its rate (12,800 requests/s), against:
#   - peer: examples/peer_server (tower-http + tower_governor): no limit;
#   - queue: the same with tower's ConcurrencyLimit of 16 (queues);
#   - shed: the same with LoadShed over ConcurrencyLimit of 16 (a hand-tuned
#     fixed cap);
#   - harden: examples/hardened_server, the preset's defaults (the adaptive
#     in-flight limit and its queue, no tuning) but a quota one address
#     cannot spend;
#   - harden-noqueue: the same with `[overload] queue_limit = 0` (the excess
#     shed at once, as before the queue).
# Every server logs a line per request (JSON, to /dev/null). The generator
# runs on the same cores as the server; its CPU share is printed.
#
#   benches/overload.sh                     # 10 s measured per run after 3 s warm-up
#   SECONDS_PER_RUN=20 STACKS="peer harden" LOADS="1 16" benches/overload.sh
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_PER_RUN=${SECONDS_PER_RUN:-10}
WARMUP=${WARMUP:-3}
STACKS=${STACKS:-"peer queue shed harden-noqueue harden"}
LOADS=${LOADS:-"unloaded 1 4 16 open16"}
PORT=${PORT:-3950}
POOL=${POOL:-16}
QUERY_MS=${QUERY_MS:-20}

EXAMPLES="hardened_server peer_server db_load"
# shellcheck source=support/servers.sh
. benches/support/servers.sh
noqueue_config=$(mktemp)
trap 'stop_server; rm -f "$noqueue_config"' EXIT
{ cat benches/load.toml; printf '\n[overload]\nqueue_limit = 0\n'; } >"$noqueue_config"

start() { # STACK
    export HARDEN_DB_POOL=$POOL HARDEN_DB_QUERY_MS=$QUERY_MS RUST_LOG=info
    case $1 in
    peer) env PEER_ADDR="127.0.0.1:$PORT" PEER_QUOTA=1000000000:1000000000 \
        "$BIN/peer_server" >/dev/null 2>&1 & ;;
    queue) env PEER_ADDR="127.0.0.1:$PORT" PEER_QUOTA=1000000000:1000000000 PEER_LIMIT="queue:$POOL" \
        "$BIN/peer_server" >/dev/null 2>&1 & ;;
    shed) env PEER_ADDR="127.0.0.1:$PORT" PEER_QUOTA=1000000000:1000000000 PEER_LIMIT="shed:$POOL" \
        "$BIN/peer_server" >/dev/null 2>&1 & ;;
    harden) env HARDEN_ADDR="127.0.0.1:$PORT" HARDEN_CONFIG=benches/load.toml \
        "$BIN/hardened_server" >/dev/null 2>&1 & ;;
    harden-noqueue) env HARDEN_ADDR="127.0.0.1:$PORT" HARDEN_CONFIG="$noqueue_config" \
        "$BIN/hardened_server" >/dev/null 2>&1 & ;;
    *) echo "unknown stack $1" >&2; exit 2 ;;
    esac
    SERVER_PID=$!
    wait_for_port "$PORT"
}

load() { # LOAD: prints db_load's line
    local env=(DB_LOAD_ADDR="127.0.0.1:$PORT" DB_LOAD_SECONDS="$SECONDS_PER_RUN" DB_LOAD_WARMUP_SECONDS="$WARMUP")
    case $1 in
    unloaded) env "${env[@]}" DB_LOAD_CLIENTS=1 "$BIN/db_load" ;;
    open*) env "${env[@]}" DB_LOAD_RATE=$(( ${1#open} * POOL * 1000 / QUERY_MS )) \
        "$BIN/db_load" ;;
    *) env "${env[@]}" DB_LOAD_CLIENTS=$(( $1 * POOL )) "$BIN/db_load" ;;
    esac
}

capacity=$(( POOL * 1000 / QUERY_MS ))
echo "GET /db: pool $POOL x $QUERY_MS ms = $capacity queries/s; ${SECONDS_PER_RUN}s measured after ${WARMUP}s; $(nproc) cores; $(date -u +%F)"
printf '%-14s %-9s %9s %8s %8s %8s %7s %9s\n' stack load goodput "of cap" "p50 ms" "p99 ms" shed "gen cpu"
for stack in $STACKS; do
    for load in $LOADS; do
        # A fresh server per run: no learnt limit, no backlog carried over.
        start "$stack"
        line=$(load "$load")
        stop_server
        echo "$stack $load $line" >&2
        get() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$line"; }
        goodput=$(get goodput)
        share=$(awk -v g="$goodput" -v c="$capacity" 'BEGIN { printf "%.2f", g / c }')
        label=$load
        case $load in
        unloaded) label="1 client" ;;
        open*) label="open ${load#open}x" ;;
        *) label="${load}x" ;;
        esac
        printf '%-14s %-9s %9s %8s %8s %8s %7s %9s\n' "$stack" "$label" "$goodput" "$share" \
            "$(get p50_ms)" "$(get p99_ms)" "$(get shed_share)" "$(get cpu_cores)"
    done
done
