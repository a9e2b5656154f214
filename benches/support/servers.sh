# Sourced by the HTTP benchmarks (load.sh, http_instructions.sh,
# overload.sh, slowloris.sh): builds the examples they run (EXAMPLES,
# default the bare, hardened and peer servers; PROFILE, default release),
# sets BIN to their directory, and starts and stops one server at a time.
# FEATURES (default none) are the crate features they are built with.

EXAMPLES=${EXAMPLES:-"hardened_server bare_server peer_server"}
PROFILE=${PROFILE:-release}
FEATURES=${FEATURES:-}
# shellcheck disable=SC2046 # one --example per name
cargo build --profile "$PROFILE" ${FEATURES:+--features "$FEATURES"} \
    $(printf -- '--example %s ' $EXAMPLES) >&2
TARGET_DIR=${CARGO_TARGET_DIR:-target}
BIN="$TARGET_DIR/$([ "$PROFILE" = dev ] && echo debug || echo "$PROFILE")/examples"

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
