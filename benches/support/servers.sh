# Sourced by benches/load.sh and benches/http_instructions.sh: builds the
# example servers (bare, hardened, peer) and starts and stops one at a time.

cargo build --release --example hardened_server --example bare_server \
    --example peer_server >&2
TARGET_DIR=${CARGO_TARGET_DIR:-target}

SERVER_PID=
stop_server() {
    if [ -n "$SERVER_PID" ]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}

# wait_for_port PORT [TENTHS]: waits up to TENTHS tenths of a second
# (default 100) for a server to listen on 127.0.0.1:PORT.
wait_for_port() {
    for _ in $(seq 1 "${2:-100}"); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    echo "server on port $1 did not start" >&2
    exit 1
}
