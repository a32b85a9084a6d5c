#!/usr/bin/env bash
# Does scraping /metrics slow the requests served beside it? The bench-only example server
# (examples/examples/bench_scrape_server.rs, release, BENCH_SERIES series present) pinned to
# CPU 0; `wrk --latency` on CPU 1 against /hello/{name}; rounds alternate without and with a
# loop on CPU 1 fetching /metrics every 100 ms (a scrape rendered on the server's one core).
#
#   bash scripts/bench-scrape-load.sh [ROUNDS] [SECONDS] [CONNECTIONS] [SERIES]
#
# Prints, per round and mode, requests per second and wrk's p50 and p99 in ms, and the scrapes
# made with their mean time as curl saw it.
set -euo pipefail
cd "$(dirname "$0")/.."
rounds=${1:-3}
secs=${2:-10}
connections=${3:-16}
series=${4:-10000}

# wrk from Debian, installed once (apt-get update at most once a machine, as ensure-tools.sh).
if ! command -v wrk >/dev/null 2>&1; then
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  stamp=/var/lib/apt/periodic/obskit-apt-updated
  if [ ! -f "$stamp" ]; then
    $SUDO apt-get update -qq
    $SUDO mkdir -p "$(dirname "$stamp")" && $SUDO touch "$stamp"
  fi
  echo "bench-scrape-load: installing wrk" >&2
  $SUDO apt-get install -y -qq --no-install-recommends wrk >/dev/null
fi

cargo build --release -q --locked -p obskit-examples --example bench_scrape_server
work=$(mktemp -d /tmp/bench-scrape-load.XXXXXX)
server=""
scraper=""
cleanup() {
  if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; fi
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
url="http://127.0.0.1:$port"
BENCH_SERIES="$series" ADDR="127.0.0.1:$port" taskset -c 0 target/release/examples/bench_scrape_server \
  >"$work/server.log" 2>&1 &
server=$!
for _ in $(seq 1 100); do
  curl -fsS -o /dev/null "$url/hello/world" 2>/dev/null && break
  sleep 0.1
done
curl -fsS -o "$work/metrics" "$url/metrics"
idle=$(for _ in 1 2 3 4 5; do curl -fsS -o /dev/null -w '%{time_total}\n' "$url/metrics"; done |
  awk '{ s += $1 } END { printf "%.2f", 1000 * s / NR }')
echo "/metrics: $(grep -vc '^#' "$work/metrics") series, $(wc -c <"$work/metrics") bytes, $idle ms a scrape on the idle server (mean of 5, curl)"

# Fetches /metrics every 100 ms until killed; one line per scrape: curl's total time in s.
scrape_loop() {
  while :; do
    curl -fsS -o /dev/null -w '%{time_total}\n' "$url/metrics" >>"$work/scrapes" || true
    sleep 0.1
  done
}

# wrk's "Latency Distribution" percentile ($1: 50% or 99%) in ms.
percentile_ms() {
  awk -v p="$1" '$1 == p { v = $2; u = v; sub(/[0-9.]+/, "", u); sub(/[a-z]+$/, "", v);
    f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : 1; printf "%.3f", v * f }' "$work/wrk"
}

taskset -c 1 wrk -t1 -c"$connections" -d2s "$url/hello/world" >/dev/null # warm-up
printf '%-8s %5s %10s %9s %9s %8s %14s\n' mode round "req/s" "p50 ms" "p99 ms" scrapes "scrape mean ms"
for round in $(seq 1 "$rounds"); do
  for mode in quiet scraped; do
    : >"$work/scrapes"
    if [ "$mode" = scraped ]; then
      taskset -c 1 bash -c "$(declare -f scrape_loop); url=$url work=$work; scrape_loop" &
      scraper=$!
    fi
    taskset -c 1 wrk -t1 -c"$connections" -d"${secs}s" --latency "$url/hello/world" >"$work/wrk"
    if [ -n "$scraper" ]; then kill "$scraper" 2>/dev/null || true; wait "$scraper" 2>/dev/null || true; scraper=""; fi
    rps=$(awk '/^Requests\/sec/ { print $2 }' "$work/wrk")
    scrapes=$(wc -l <"$work/scrapes")
    mean=$(awk '{ s += $1 } END { if (NR) printf "%.2f", 1000 * s / NR; else print "-" }' "$work/scrapes")
    printf '%-8s %5s %10s %9s %9s %8s %14s\n' "$mode" "$round" "$rps" "$(percentile_ms 50%)" \
      "$(percentile_ms 99%)" "$scrapes" "$mean"
  done
done
echo "machine: $(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -1), $(nproc) cores; server on CPU 0, wrk ($connections connections) and scraper on CPU 1"
