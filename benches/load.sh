#!/usr/bin/env bash
# Load test over HTTP: examples/hardened_server (the Harden preset) against
# examples/bare_server (the same routes, no layers: the baseline) and
# examples/peer_server (the same routes behind tower-http + tower_governor,
# one JSON line per request: the stack a user would assemble instead), one
# after the other on this machine, with wrk. Prints requests/s and p99
# latency of each and their ratios to the bare server and to the peer.
#
#   benches/load.sh                    # GET /, 10 s per run
#   DURATION=30s CONNECTIONS=64 THREADS=2 benches/load.sh
#   ROUNDS=5 benches/load.sh           # five interleaved rounds, and medians
#
# Each run also reports the server's CPU time per request (user + system,
# every thread), which moves less than requests/s on a shared machine.
#
# The hardened server runs five times: with benches/load.toml (every
# default except a per-IP quota wrk cannot spend, so that every request is
# admitted and does the whole job, one JSON log line included, written to
# /dev/null by `telemetry::json_log`, the `json-log` feature, through its
# `BatchWriter`); the same line handed to tracing-appender's worker, as the
# peer's is ("t-appender"); the same line written by tracing-subscriber's
# JSON formatter ("t-s JSON", the peer's formatter, through `BatchWriter`);
# the same with RUST_LOG=off (the layers without the log line: the bare
# server logs nothing); and with the plain defaults (50/s burst 100 per IP:
# wrk's one address is refused almost always; refusals are part of the
# job, their count is printed). The peer runs twice likewise: with a quota
# wrk cannot spend, and with its default (50/s burst 100: 429s).
set -euo pipefail

cd "$(dirname "$0")/.."
DURATION=${DURATION:-10s}
CONNECTIONS=${CONNECTIONS:-32}
THREADS=${THREADS:-1}
# Rounds of every server, one after the other; with more than one, the
# medians are printed last (the VMs these run on are noisy: one round
# means little).
ROUNDS=${ROUNDS:-1}
PATH_UNDER_LOAD=${PATH_UNDER_LOAD:-/}
HARDEN_PORT=${HARDEN_PORT:-3900}
BARE_PORT=${BARE_PORT:-3901}
PEER_PORT=${PEER_PORT:-3902}

if ! command -v wrk >/dev/null; then
    echo "wrk is missing: installing it" >&2
    SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
    $SUDO apt-get update -qq && $SUDO apt-get install -y -qq wrk
fi

# With `json-log`: the hardened server writes its line with this crate's
# formatter, and with tracing-subscriber's when HARDEN_LOG_FORMATTER says so.
FEATURES=${FEATURES:-json-log}
# shellcheck source=support/servers.sh
. benches/support/servers.sh

# run LABEL PORT COMMAND...: starts the server, runs wrk, prints
# "LABEL requests_per_s p99_ms non_2xx cpu_us_per_request" (the server's
# user and system CPU time over the run, every thread, divided by the
# requests wrk counted: less noisy than requests/s on a shared machine).
run() {
    local label=$1 port=$2
    shift 2
    "$@" >/dev/null 2>&1 &
    SERVER_PID=$!
    wait_for_port "$port"
    # Warm up: connections, the allocator, the rate limiter's shards.
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "http://127.0.0.1:$port$PATH_UNDER_LOAD" >/dev/null
    local out cpu_before cpu_after
    cpu_before=$(cpu_ticks "$SERVER_PID")
    out=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency \
        "http://127.0.0.1:$port$PATH_UNDER_LOAD")
    cpu_after=$(cpu_ticks "$SERVER_PID")
    stop_server
    echo "$out" >&2
    local rps p99 non2xx requests cpu_us
    rps=$(echo "$out" | awk '/^Requests\/sec:/ {print $2}')
    p99=$(echo "$out" | awk '$1 == "99%" {print $2}')
    non2xx=$(echo "$out" | awk '/Non-2xx or 3xx responses:/ {print $5}')
    requests=$(echo "$out" | awk '/requests in/ {print $1}')
    cpu_us=$(awk -v t=$((cpu_after - cpu_before)) -v hz="$(getconf CLK_TCK)" -v n="$requests" \
        'BEGIN { printf "%.1f", t / hz * 1e6 / n }')
    echo "$label $rps $(to_ms "$p99") ${non2xx:-0} $cpu_us"
}

# cpu_ticks PID: the process's user + system CPU time, in clock ticks.
cpu_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat"
}

# wrk prints latencies as 812.00us, 1.52ms or 1.01s.
to_ms() {
    awk -v v="$1" 'BEGIN {
        if (v ~ /us$/) { sub(/us$/, "", v); printf "%.3f", v / 1000 }
        else if (v ~ /ms$/) { sub(/ms$/, "", v); printf "%.3f", v }
        else if (v ~ /s$/) { sub(/s$/, "", v); printf "%.3f", v * 1000 }
        else { print v }
    }'
}

# One round: every server once, the peer right after the preset so that
# the pair compared runs under the same conditions. Prints the round's
# table and appends "label requests_per_s vs_bare vs_peer" to $RESULTS.
one_round() {
    local bare harden peer harden_appender harden_ts quiet peer_defaults defaults
    bare=$(run bare "$BARE_PORT" env BARE_ADDR="127.0.0.1:$BARE_PORT" \
        "$BIN/bare_server")
    harden=$(run harden "$HARDEN_PORT" env HARDEN_ADDR="127.0.0.1:$HARDEN_PORT" \
        HARDEN_CONFIG=benches/load.toml RUST_LOG=info \
        "$BIN/hardened_server")
    peer=$(run peer "$PEER_PORT" env PEER_ADDR="127.0.0.1:$PEER_PORT" \
        PEER_QUOTA=1000000000:1000000000 RUST_LOG=info \
        "$BIN/peer_server")
    harden_appender=$(run harden_appender "$HARDEN_PORT" env HARDEN_ADDR="127.0.0.1:$HARDEN_PORT" \
        HARDEN_CONFIG=benches/load.toml RUST_LOG=info HARDEN_LOG_WRITER=tracing-appender \
        "$BIN/hardened_server")
    harden_ts=$(run harden_ts "$HARDEN_PORT" env HARDEN_ADDR="127.0.0.1:$HARDEN_PORT" \
        HARDEN_CONFIG=benches/load.toml RUST_LOG=info HARDEN_LOG_FORMATTER=tracing-subscriber \
        "$BIN/hardened_server")
    quiet=$(run harden_quiet "$HARDEN_PORT" env HARDEN_ADDR="127.0.0.1:$HARDEN_PORT" \
        HARDEN_CONFIG=benches/load.toml RUST_LOG=off \
        "$BIN/hardened_server")
    peer_defaults=$(run peer_defaults "$PEER_PORT" env -u PEER_QUOTA \
        PEER_ADDR="127.0.0.1:$PEER_PORT" RUST_LOG=info \
        "$BIN/peer_server")
    defaults=$(run harden_defaults "$HARDEN_PORT" env -u HARDEN_CONFIG \
        HARDEN_ADDR="127.0.0.1:$HARDEN_PORT" RUST_LOG=info \
        "$BIN/hardened_server")

    echo
    echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION GET $PATH_UNDER_LOAD, $(nproc) cores, $(date -u +%F)"
    printf '%-34s %12s %10s %10s %10s %10s %12s\n' server "requests/s" "p99 ms" "non-2xx" "vs bare" "vs peer" "cpu us/req"
    local bare_rps peer_rps peer_defaults_rps line label rps p99 non2xx cpu_us peer_ref ratio vs_peer
    read -r _ bare_rps _ _ <<<"$bare"
    read -r _ peer_rps _ _ <<<"$peer"
    read -r _ peer_defaults_rps _ _ <<<"$peer_defaults"
    for line in "$bare" "$peer" "$harden" "$harden_appender" "$harden_ts" "$quiet" "$peer_defaults" "$defaults"; do
        read -r label rps p99 non2xx cpu_us <<<"$line"
        # Each preset run beside the peer run doing the same job.
        peer_ref=$peer_rps
        case $label in
        harden_quiet) peer_ref="" ;;
        peer_defaults | harden_defaults) peer_ref=$peer_defaults_rps ;;
        esac
        ratio=$(ratio_of "$rps" "$bare_rps")
        vs_peer=-
        if [ -n "$peer_ref" ]; then
            vs_peer=$(ratio_of "$rps" "$peer_ref")
        fi
        printf '%-34s %12s %10s %10s %10s %10s %12s\n' "$(name_of "$label")" "$rps" "$p99" "$non2xx" \
            "$ratio x" "$vs_peer${peer_ref:+ x}" "$cpu_us"
        echo "$label $rps $ratio $vs_peer $cpu_us" >>"$RESULTS"
    done
}

name_of() {
    case $1 in
    bare) echo "bare axum (baseline)" ;;
    peer) echo "peer (tower-http + governor)" ;;
    harden) echo "Harden (benches/load.toml)" ;;
    harden_appender) echo "Harden (load.toml, t-appender)" ;;
    harden_ts) echo "Harden (load.toml, t-s JSON)" ;;
    harden_quiet) echo "Harden (load.toml, RUST_LOG=off)" ;;
    peer_defaults) echo "peer (defaults: 429s)" ;;
    harden_defaults) echo "Harden (defaults: 429s)" ;;
    esac
}

# ratio_of A B: A / B to two decimals.
ratio_of() {
    awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'
}

# The median of the numbers on standard input ("-" when there are none).
median() {
    sort -g | awk '$1 != "-" { v[n++] = $1 } END {
        if (n == 0) { print "-"; exit }
        if (n % 2) { print v[(n - 1) / 2] } else { printf "%.2f\n", (v[n / 2 - 1] + v[n / 2]) / 2 }
    }'
}

RESULTS=$(mktemp)
trap 'stop_server; rm -f "$RESULTS"' EXIT
for round in $(seq 1 "$ROUNDS"); do
    [ "$ROUNDS" -gt 1 ] && echo "round $round of $ROUNDS" >&2
    one_round
done
if [ "$ROUNDS" -gt 1 ]; then
    echo
    echo "medians of $ROUNDS interleaved rounds (the ratios: medians of each round's ratio)"
    printf '%-34s %12s %10s %10s %12s\n' server "requests/s" "vs bare" "vs peer" "cpu us/req"
    # column_median LABEL N: the median of column N of LABEL's rounds.
    column_median() {
        awk -v l="$1" -v n="$2" '$1 == l { print $n }' "$RESULTS" | median
    }
    for label in bare peer harden harden_appender harden_ts harden_quiet peer_defaults harden_defaults; do
        vs_peer=$(column_median "$label" 4)
        [ "$vs_peer" = - ] || vs_peer="$vs_peer x"
        printf '%-34s %12s %10s %10s %12s\n' "$(name_of "$label")" \
            "$(column_median "$label" 2)" "$(column_median "$label" 3) x" \
            "$vs_peer" "$(column_median "$label" 5)"
    done
fi
