#!/usr/bin/env bash
# Instructions per request through the preset (`benches/stack.rs`, stack
# `b_harden`) under valgrind's callgrind: free of timing noise, so a change
# that adds work to the request path shows as a number, on any machine load.
#
#   benches/instructions.sh                 # prints one line per case
#   benches/instructions.sh --check FILE    # also fails if a case grew past
#                                           # FILE's count by more than
#                                           # TOLERANCE_PERCENT (default 2)
#
# Cases: admitted with logging on (tracing-subscriber's JSON formatter, and
# this crate's `json_log` writing the same line) and off, a refused 413
# (declared length), a refused 429 (spent quota), a panicking handler (500)
# with RUST_BACKTRACE unset and set, and a request shed by a full in-flight
# limit (503): at once with the queue off, and after waiting its hold in
# the queue (logging off: the paused clock moves 100 ms a request, so
# every such line would be written, which is not a flood's steady state). Each case is a flood: the failures' lines
# are throttled (20 a second per error.type by default), so most are
# counted, not written. Each is (C(N2) - C(N1)) / (N2 - N1): the
# difference of two runs leaves start-up and shutdown out.
set -euo pipefail
cd "$(dirname "$0")/.."

N1=${N1:-500}
N2=${N2:-1500}
TOLERANCE_PERCENT=${TOLERANCE_PERCENT:-2}
check_file=""
if [[ "${1:-}" == "--check" ]]; then
  check_file=${2:?"--check needs a baseline file"}
fi

command -v valgrind >/dev/null || { echo "instructions.sh: valgrind is not installed" >&2; exit 2; }

# The bench executable's path, from cargo's own report of it: built as it
# is by default, and with `json-log` for the case written by this crate's
# formatter (only that case runs on that build: the feature moves the code
# of the other cases by up to 2 %, as any rebuild can).
stack_bench() { # CARGO_ARGS...
  cargo bench --bench stack "$@" --no-run 2>&1 | sed -n 's/.*Executable .*(\(.*stack-[0-9a-f]*\)).*/\1/p' | tail -n 1
}
default_bin=$(stack_bench)
json_log_bin=$(stack_bench --features json-log)
for exe in "$default_bin" "$json_log_bin"; do
  [[ -x "$exe" ]] || { echo "instructions.sh: no stack bench executable found" >&2; exit 2; }
done
bin=$default_bin

collected() { # ENV... -- prints the instructions callgrind collected
  env "$@" valgrind --tool=callgrind --callgrind-out-file=/dev/null "$bin" 2>&1 >/dev/null |
    sed -n 's/.*Collected : \([0-9]*\).*/\1/p'
}

per_request() { # ENV...
  local low high
  low=$(collected "$@" STACK_PROFILE="b_harden:$N1")
  high=$(collected "$@" STACK_PROFILE="b_harden:$N2")
  echo $(( (high - low) / (N2 - N1) ))
}

declare -A count
count[admitted_logged]=$(per_request STACK_LOG=sink)
count[admitted_no_log]=$(per_request STACK_LOG=off)
count[refused_413_logged]=$(per_request STACK_LOG=sink STACK_REQUEST=413)
count[refused_429_logged]=$(per_request STACK_LOG=sink STACK_REQUEST=429)
count[panic_logged]=$(per_request -u RUST_BACKTRACE STACK_LOG=sink STACK_REQUEST=panic)
count[panic_logged_backtrace]=$(per_request RUST_BACKTRACE=1 STACK_LOG=sink STACK_REQUEST=panic)
count[shed_503_logged]=$(per_request STACK_LOG=sink STACK_REQUEST=503)
count[shed_503_queued_no_log]=$(per_request STACK_LOG=off STACK_REQUEST=503-queued)
bin=$json_log_bin
count[admitted_logged_json_log]=$(per_request STACK_LOG=sink STACK_SUBSCRIBER=json-log)

status=0
for case in admitted_logged admitted_no_log admitted_logged_json_log refused_413_logged \
  refused_429_logged panic_logged panic_logged_backtrace shed_503_logged shed_503_queued_no_log; do
  line="$case ${count[$case]}"
  if [[ -n "$check_file" ]]; then
    baseline=$(awk -v c="$case" '$1 == c { print $2 }' "$check_file")
    if [[ -z "$baseline" ]]; then
      line="$line (no baseline)"
    else
      limit=$(( baseline + baseline * TOLERANCE_PERCENT / 100 ))
      line="$line (baseline $baseline, limit $limit)"
      if (( count[$case] > limit )); then
        line="$line GREW"
        status=1
      fi
    fi
  fi
  echo "$line"
done
exit $status
