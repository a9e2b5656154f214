#!/usr/bin/env bash
# Instructions per request over HTTP, free of timing noise: each server runs
# under valgrind's callgrind, answers a warm-up, then REQUESTS keep-alive
# requests from one curl; callgrind counts what the server did for them
# (every thread of it: hyper, the layers, the log writer; not the kernel).
#
#   benches/http_instructions.sh              # 2000 requests per server
#   REQUESTS=5000 benches/http_instructions.sh
#
# Servers: examples/bare_server (the baseline), examples/hardened_server with
# benches/load.toml (every request admitted), logging to /dev/null (the line
# written by `telemetry::json_log` through its `BatchWriter`; the same line
# through tracing-appender's worker, "t-appender"; tracing-subscriber's JSON
# formatter's line, "t-s JSON") and with RUST_LOG=off, and with the plain
# defaults (curl is one address: after the burst, every request is a 429);
# examples/peer_server (tower-http + tower_governor, one JSON line per
# request through tracing-appender) likewise with a quota curl cannot spend
# and with its default (429s), each preset figure beside the peer's doing
# the same job. Callgrind runs the threads one at a time: what a hand-off
# between threads costs in the kernel (a wake, a switch) is not counted;
# `benches/load.sh` measures it. Needs valgrind (installed if missing).
set -euo pipefail

cd "$(dirname "$0")/.."
REQUESTS=${REQUESTS:-2000}
WARM_UP=${WARM_UP:-200}
PORT=${PORT:-3931}

if ! command -v valgrind >/dev/null || ! command -v curl >/dev/null; then
    echo "valgrind or curl is missing: installing them" >&2
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq valgrind curl
fi

# With `json-log`: the hardened server writes its line with this crate's
# formatter, and with tracing-subscriber's when HARDEN_LOG_FORMATTER says so.
FEATURES=${FEATURES:-json-log}
# shellcheck source=support/servers.sh
. benches/support/servers.sh
OUT=$(mktemp -d)
trap 'stop_server; rm -rf "$OUT"' EXIT

# Sends N requests on one connection (curl reuses it across a URL range;
# the query differs, the route does not). A 429 is an answer like any other.
send() {
    curl -sS "http://127.0.0.1:$PORT/?[1-$1]" >/dev/null
}

# measure LABEL COMMAND...: prints "LABEL instructions_per_request".
measure() {
    local label=$1
    shift
    valgrind --tool=callgrind --callgrind-out-file="$OUT/$label" "$@" \
        >/dev/null 2>"$OUT/$label.log" &
    SERVER_PID=$!
    # Valgrind starts a server slowly: up to a minute.
    wait_for_port "$PORT" 600
    send "$WARM_UP"
    callgrind_control -z "$SERVER_PID" >/dev/null 2>&1
    send "$REQUESTS"
    callgrind_control -d "$SERVER_PID" >/dev/null 2>&1
    stop_server
    local total
    total=$(callgrind_annotate "$OUT/$label".* 2>/dev/null |
        awk '/PROGRAM TOTALS/ { gsub(",", "", $1); print $1 }')
    [ -n "$total" ] || { echo "$label: no count from callgrind ($(tail -3 "$OUT/$label.log"))" >&2; exit 1; }
    echo "$label $((total / REQUESTS))"
}

unset HARDEN_CONFIG
export BARE_ADDR="127.0.0.1:$PORT" HARDEN_ADDR="127.0.0.1:$PORT" PEER_ADDR="127.0.0.1:$PORT"
bare=$(measure bare "$BIN/bare_server")
logged=$(HARDEN_CONFIG=benches/load.toml RUST_LOG=info \
    measure harden "$BIN/hardened_server")
logged_appender=$(HARDEN_CONFIG=benches/load.toml RUST_LOG=info HARDEN_LOG_WRITER=tracing-appender \
    measure harden_appender "$BIN/hardened_server")
logged_ts=$(HARDEN_CONFIG=benches/load.toml RUST_LOG=info HARDEN_LOG_FORMATTER=tracing-subscriber \
    measure harden_ts "$BIN/hardened_server")
quiet=$(HARDEN_CONFIG=benches/load.toml RUST_LOG=off \
    measure harden_quiet "$BIN/hardened_server")
defaults=$(RUST_LOG=info measure harden_defaults "$BIN/hardened_server")
peer=$(PEER_QUOTA=1000000000:1000000000 RUST_LOG=info \
    measure peer "$BIN/peer_server")
peer_defaults=$(RUST_LOG=info measure peer_defaults "$BIN/peer_server")

echo
echo "callgrind, $REQUESTS keep-alive GET / after $WARM_UP, $(date -u +%F)"
printf '%-34s %14s %12s %12s\n' server "instr/request" "over bare" "vs peer"
read -r _ bare_ir <<<"$bare"
read -r _ peer_ir <<<"$peer"
read -r _ peer_defaults_ir <<<"$peer_defaults"
for line in "$bare" "$peer" "$logged" "$logged_appender" "$logged_ts" "$quiet" "$peer_defaults" "$defaults"; do
    read -r label ir <<<"$line"
    # Each preset figure beside the peer's doing the same job.
    peer_ref=$peer_ir
    case $label in
    bare) name="bare axum (baseline)" ;;
    peer) name="peer (tower-http + governor)" ;;
    harden) name="Harden (benches/load.toml)" ;;
    harden_appender) name="Harden (load.toml, t-appender)" ;;
    harden_ts) name="Harden (load.toml, t-s JSON)" ;;
    harden_quiet) name="Harden (load.toml, RUST_LOG=off)"; peer_ref="" ;;
    peer_defaults) name="peer (defaults: 429s)"; peer_ref=$peer_defaults_ir ;;
    harden_defaults) name="Harden (defaults: 429s)"; peer_ref=$peer_defaults_ir ;;
    esac
    vs_peer=-
    if [ -n "$peer_ref" ]; then
        vs_peer=$(awk -v a="$ir" -v b="$peer_ref" 'BEGIN { printf "%.2f x", a / b }')
    fi
    printf '%-34s %14s %12s %12s\n' "$name" "$ir" "$((ir - bare_ir))" "$vs_peer"
done
