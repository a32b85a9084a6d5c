#!/usr/bin/env bash
# The shop with obskit on and with its instrumentation off by configuration
# (OBSKIT_INSTRUMENTATION=off), side by side in one run: release builds, the shop (its four
# services and gateway) pinned to CPU 0, the load generator (benches/src/bin/shop_load.rs) on
# CPU 1, rounds alternating on/off, each on a fresh data directory.
#
#   bash scripts/bench-shop.sh [ROUNDS] [SECONDS] [WORKERS]
#   BENCH_COMPARE=heap bash scripts/bench-shop.sh ...
#
# BENCH_COMPARE=heap compares the heap profiler instead (instrumentation on in both): jemalloc
# sampling at its default interval (`heap-on`) against sampling stopped
# (`OBSKIT_HEAP_PROFILE_INTERVAL_BYTES=0`, `heap-off`) and jemalloc started without its
# profiler (`_RJEM_MALLOC_CONF=prof:false`, `no-prof`), the shop binary being the same.
# BENCH_BASELINE_SHOP=PATH adds a `baseline` mode: that shop binary (another build, such as the
# commit before a change, built with its own target directory), instrumentation on.
#
# SECONDS defaults to 60: the shop's `#[profiled]` handlers take one 5 s capture a minute, the
# first at their first call, so a 60 s window holds one capture as a minute of service does; a
# 10 s window spends half of itself under the profiler and overstates what obskit costs.
#
# Prints one line per scenario, round and mode: operations per second, p50 and p99 in ms.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-60}
workers=${3:-16}
. scripts/lib/shop.sh

cargo build --release -q --locked -p shop -p obskit-benches --bin shop --bin shop_load
work=$(mktemp -d /tmp/bench-shop.XXXXXX)
trap 'shop_stop; rm -rf "$work"' EXIT

# The shop of scripts/lib/shop.sh, but the release build on CPU 0, no order lifecycle, and
# obskit's instrumentation as MODE says; no collector.
export SHOP_BINARY="$PWD/target/release/shop" SHOP_LAUNCH="taskset -c 0"
export JWT_SECRET=bench-secret-bench-secret ORDER_LIFECYCLE_STEP_SECONDS=0
unset OTEL_EXPORTER_OTLP_ENDPOINT OTEL_EXPORTER_OTLP_TRACES_ENDPOINT
case ${BENCH_COMPARE:-instrumentation} in
  instrumentation) modes=(on off) ;;
  heap) modes=(heap-on heap-off no-prof) ;;
  *) echo "bench-shop: BENCH_COMPARE is instrumentation or heap" >&2; exit 2 ;;
esac
if [ -n "${BENCH_BASELINE_SHOP:-}" ]; then
  modes+=(baseline)
fi
start_release() { # MODE DIR
  unset OBSKIT_HEAP_PROFILE_INTERVAL_BYTES _RJEM_MALLOC_CONF
  SHOP_BINARY="$PWD/target/release/shop"
  case $1 in
    on | off) export OBSKIT_INSTRUMENTATION="$1" ;;
    heap-on) export OBSKIT_INSTRUMENTATION=on OBSKIT_HEAP_PROFILE_INTERVAL_BYTES=524288 ;;
    heap-off) export OBSKIT_INSTRUMENTATION=on OBSKIT_HEAP_PROFILE_INTERVAL_BYTES=0 ;;
    no-prof) export OBSKIT_INSTRUMENTATION=on _RJEM_MALLOC_CONF=prof:false ;;
    baseline) export OBSKIT_INSTRUMENTATION=on && SHOP_BINARY="$BENCH_BASELINE_SHOP" ;;
  esac
  shop_start "$2"
}

printf '%-9s %-8s %5s %12s %9s %9s %7s\n' scenario mode round "ops/s" "p50 ms" "p99 ms" errors
for round in $(seq 1 "$rounds"); do
  for mode in "${modes[@]}"; do
    start_release "$mode" "$work/$round-$mode"
    url="$GATEWAY_URL"
    taskset -c 1 target/release/shop_load products "$url" 2 "$workers" >/dev/null # warm-up
    for scenario in products purchase; do
      taskset -c 1 target/release/shop_load "$scenario" "$url" "$secs" "$workers" |
        python3 -c 'import json,sys; r=json.load(sys.stdin); print("%-9s %-8s %5s %12.1f %9.2f %9.2f %7d" % (r["scenario"], sys.argv[1], sys.argv[2], r["per_second"], r["p50_ms"], r["p99_ms"], r["errors"]))' "$mode" "$round"
    done
    shop_stop
  done
done
