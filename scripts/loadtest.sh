#!/usr/bin/env bash
# Runs the shop's Locust load test headless against a running gateway.
#
#   scripts/loadtest.sh [--host URL] [--users N] [--spawn-rate R] [--run-time 30s] [--csv PREFIX]
#
# Defaults: http://127.0.0.1:8080, 20 users, spawn rate 5/s, 30 s. Locust (and prometheus-client
# for its exporter) is installed into a project-local virtual environment, .venv/loadtest, on
# first use. Exits non-zero when any request failed. The `locust_*` metrics are served on
# LOCUST_METRICS_PORT (default 9646) while it runs. For the admin flow (restocking), export
# SHOP_ADMIN_USERNAME and SHOP_ADMIN_PASSWORD as given to the shop.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"

host="http://127.0.0.1:8080"
users=20
spawn_rate=5
run_time=30s
csv=()
while [ $# -gt 0 ]; do
  case "$1" in
    --host) host="$2"; shift 2 ;;
    --users) users="$2"; shift 2 ;;
    --spawn-rate) spawn_rate="$2"; shift 2 ;;
    --run-time) run_time="$2"; shift 2 ;;
    --csv) csv=(--csv "$2"); shift 2 ;;
    *) echo "loadtest: unknown argument $1" >&2; exit 2 ;;
  esac
done

venv="$root/.venv/loadtest"
if ! "$venv/bin/python" -c 'import locust, prometheus_client' >/dev/null 2>&1; then
  echo "loadtest: installing Locust into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check 'locust>=2.30,<3' 'prometheus-client>=0.20'
fi

# A run is bounded by --run-time; the outer timeout only guards against a hung load generator.
seconds() {  # 90, 90s, 2m, 1h (Locust's forms) in seconds
  local v="${1%[smh]}"
  case "$1" in *m) echo $((v * 60)) ;; *h) echo $((v * 3600)) ;; *) echo "$v" ;; esac
}
exec timeout --kill-after=10 "$(( $(seconds "$run_time") + 120 ))" \
  "$venv/bin/locust" -f "$root/services/loadtest/locustfile.py" --headless \
  --host "$host" --users "$users" --spawn-rate "$spawn_rate" --run-time "$run_time" \
  --stop-timeout 10 --exit-code-on-error 1 --only-summary "${csv[@]}"
