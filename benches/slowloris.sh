#!/usr/bin/env bash
# Slow-client attacks over HTTP with slowhttptest, from one address
# (127.0.0.1), against examples/hardened_server (the Harden preset under
# tower_harden::serve, connection cap 1024), examples/peer_server (the
# same routes behind tower-http + tower_governor under axum::serve, the
# stack a user would assemble; its quota raised like ours) and
# examples/bare_server (the same routes under plain axum::serve: no cap,
# no timers), one after the other. Three modes: slow headers (slowloris, -H), slow body (-B) and slow
# read (-X, responses multiplied by pipelining, a tiny advertised window).
# Meanwhile a probe (curl in a loop, from the same address, 5 s timeout)
# records the seconds in which the service did not answer, and the
# server's open file descriptors are sampled.
#
#   benches/slowloris.sh                         # 2,500 connections, 30 s per run
#   CONNECTIONS=3000 LENGTH=60 benches/slowloris.sh
#   PROFILE=dev benches/slowloris.sh             # debug builds (quicker to build)
#   BEFORE=/path/to/hardened_server benches/slowloris.sh   # also an older build
#
# slowhttptest stops early when the server has closed all its connections.
# Prints one line per run: server, mode, seconds run, probes, probes failed, seconds
# unavailable (from each failed probe's start to the next probe), and the
# most file descriptors the server held.
set -euo pipefail

cd "$(dirname "$0")/.."
CONNECTIONS=${CONNECTIONS:-2500}
LENGTH=${LENGTH:-30}
RATE=${RATE:-500}
PROFILE=${PROFILE:-release}
HARDEN_PORT=${HARDEN_PORT:-3920}
BARE_PORT=${BARE_PORT:-3921}
PEER_PORT=${PEER_PORT:-3922}

for tool in slowhttptest curl; do
    if ! command -v "$tool" >/dev/null; then
        echo "$tool is missing: installing it" >&2
        SUDO=$([ "$(id -u)" -eq 0 ] && echo "" || echo sudo)
        $SUDO apt-get update -qq && $SUDO apt-get install -y -qq "$tool"
    fi
done
# Both the attacker's sockets and the peer's (which holds every one).
ulimit -n 20000 2>/dev/null || true

EXAMPLES="hardened_server peer_server bare_server"
# shellcheck source=support/servers.sh
. benches/support/servers.sh
trap stop_server EXIT
# The defaults of examples/harden.toml but a per-IP quota the probe and the
# attacker cannot spend: the rate limit is not what is measured here. The
# second hardened run also turns the in-flight limit off
# (benches/slowloris.toml): `serve`'s connection defences alone.
# Slow read asks for SLOW_READ_PATH (the example's largest answer).
SLOW_READ_PATH=${SLOW_READ_PATH:-/}

# run SERVER PORT MODE: one attack with the probe and the fd sampler.
run() {
    local server=$1 port=$2 mode=$3
    case $server in
        hardened) HARDEN_ADDR=127.0.0.1:$port HARDEN_CONFIG=benches/load.toml RUST_LOG=off \
            "$BIN/hardened_server" >/dev/null 2>&1 & ;;
        before) HARDEN_ADDR=127.0.0.1:$port HARDEN_CONFIG=benches/load.toml RUST_LOG=off \
            "$BEFORE" >/dev/null 2>&1 & ;;
        hardened-no-overload) HARDEN_ADDR=127.0.0.1:$port HARDEN_CONFIG=benches/slowloris.toml \
            RUST_LOG=off "$BIN/hardened_server" >/dev/null 2>&1 & ;;
        peer) PEER_ADDR=127.0.0.1:$port PEER_QUOTA=1000000000:1000000000 RUST_LOG=off \
            "$BIN/peer_server" >/dev/null 2>&1 & ;;
        bare) BARE_ADDR=127.0.0.1:$port "$BIN/bare_server" >/dev/null 2>&1 & ;;
    esac
    SERVER_PID=$!
    wait_for_port "$port"
    local url="http://127.0.0.1:$port/"
    local args=(-c "$CONNECTIONS" -r "$RATE" -l "$LENGTH" -i 10 -p 5)
    case $mode in
        slow-headers) args+=(-H -u "$url") ;;
        slow-body) args+=(-B -u "http://127.0.0.1:$port/echo" -s 8192) ;;
        # Responses to 10 pipelined requests (slowhttptest's most), read 32
        # bytes every 5 s through a window of at most 512 bytes.
        slow-read) args+=(-X -u "http://127.0.0.1:$port$SLOW_READ_PATH" -k 10 -n 5 -w 1 -y 512 -z 32) ;;
    esac
    slowhttptest "${args[@]}" >/dev/null 2>&1 &
    local attack=$!
    local probes=0 failed=0 max_fds=0 fds down_ms=0 t0
    local start=$SECONDS
    # Let the attack open its connections, then probe once a second.
    sleep 2
    while kill -0 "$attack" 2>/dev/null && [ $((SECONDS - start)) -lt $((LENGTH + 5)) ]; do
        probes=$((probes + 1))
        t0=$(date +%s%3N)
        if ! curl -s -o /dev/null --max-time 5 -f "$url"; then
            failed=$((failed + 1))
            # Down from this probe's start to the next probe's.
            down_ms=$((down_ms + $(date +%s%3N) - t0 + 1000))
        fi
        fds=$(ls "/proc/$SERVER_PID/fd" 2>/dev/null | wc -l)
        [ "$fds" -gt "$max_fds" ] && max_fds=$fds
        sleep 1
    done
    local ran=$((SECONDS - start))
    kill "$attack" 2>/dev/null || true
    wait "$attack" 2>/dev/null || true
    stop_server
    printf '%-20s %-13s ran_s %3d  probes %3d  failed %3d  unavailable_s %5.1f  max_fds %5d\n' \
        "$server" "$mode" "$ran" "$probes" "$failed" "$(echo "$down_ms / 1000" | bc -l)" "$max_fds"
}

echo "slowhttptest: $CONNECTIONS connections at $RATE/s from 127.0.0.1, $LENGTH s per run ($PROFILE build)"
for mode in slow-headers slow-body slow-read; do
    run hardened "$HARDEN_PORT" "$mode"
    if [ -n "${BEFORE:-}" ]; then run before "$HARDEN_PORT" "$mode"; fi
    run hardened-no-overload "$HARDEN_PORT" "$mode"
    run peer "$PEER_PORT" "$mode"
    run bare "$BARE_PORT" "$mode"
done
