#!/usr/bin/env bash
# What a running CPU capture costs a service: the `minimal_server` example (release build,
# RED layer and an #[instrumented] handler) pinned to CPU 0, wrk on CPU 1, alternating runs
# without a profiler and with a 99 Hz `/debug/pprof/profile` capture spanning the whole run, the
# order of the two alternating from round to round.
# Prints req/s and server CPU per request (the steadier figure: req/s moves >10 % run to run).
#
#   bash scripts/bench-profiling.sh [ROUNDS] [SECONDS]
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-10}
command -v wrk >/dev/null || { echo "bench-profiling: needs wrk (apt-get install wrk)" >&2; exit 1; }

cargo build --release -q -p obskit-examples --example minimal_server
workdir=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null || true; rm -rf "$workdir"; }
trap cleanup EXIT

unset OBSKIT_ADMIN_TOKEN OBSKIT_ADMIN_ADDR
ADDR=127.0.0.1:0 taskset -c 0 target/release/examples/minimal_server >"$workdir/out" 2>&1 &
pid=$!
for _ in $(seq 1 100); do
  base=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$workdir/out" | head -1)
  [ -n "$base" ] && break
  sleep 0.1
done
[ -n "$base" ] || { echo "server did not start: $(cat "$workdir/out")" >&2; exit 1; }

hz=$(getconf CLK_TCK)
ticks() { awk '{print $14 + $15}' "/proc/$pid/stat"; }

# Warm-up (and the first capture, which loads symbol tables, out of the measured runs).
taskset -c 1 wrk -t1 -c32 -d3s "$base/hello/world" >/dev/null
curl -sf -o "$workdir/warm.pb" "$base/debug/pprof/profile?seconds=1"

printf '%-8s %5s %12s %14s\n' mode round "req/s" "CPU us/req"
run() { # run MODE ROUND
  local capture_pid=""
  if [ "$1" = capture ]; then
    curl -sf -o "$workdir/capture.pb" "$base/debug/pprof/profile?seconds=$((secs + 3))" &
    capture_pid=$!
    sleep 1
  fi
  local t0 t1
  t0=$(ticks)
  taskset -c 1 wrk -t1 -c32 -d"${secs}s" "$base/hello/world" >"$workdir/wrk"
  t1=$(ticks)
  local requests rps
  requests=$(awk '/requests in/ {print $1}' "$workdir/wrk")
  rps=$(awk '/Requests\/sec/ {print $2}' "$workdir/wrk")
  if [ -n "$capture_pid" ]; then
    wait "$capture_pid"
    [ -s "$workdir/capture.pb" ] || { echo "the capture returned nothing" >&2; exit 1; }
  fi
  awk -v m="$1" -v r="$2" -v rps="$rps" -v n="$requests" -v d="$((t1 - t0))" -v hz="$hz" \
    'BEGIN { printf "%-8s %5d %12.0f %14.2f\n", m, r, rps, d / hz / n * 1e6 }'
}
# The order alternates between rounds, so that whatever the second run of a pair gains (a warmer
# server, a core kept out of idle) falls on each mode equally often.
for round in $(seq 1 "$rounds"); do
  if [ $((round % 2)) -eq 1 ]; then
    run none "$round"; run capture "$round"
  else
    run capture "$round"; run none "$round"
  fi
done
