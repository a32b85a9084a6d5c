#!/usr/bin/env bash
# Tests of the monitoring stack (monitoring/): configs checked by the real tools, alert rules
# unit-tested, every dashboard and alert expression parsed by Prometheus's parser and checked
# against the metric catalogue, and the daemons run for real on 127.0.0.1 (free ports, temp
# dirs, stopped at exit): Prometheus + Alertmanager delivering an alert to a Telegram stand-in,
# nginx + prometheus-nginx-exporter + mtail in front of stub services.
# Phase 2 (when the `shop` launcher and scripts/loadtest.sh exist): the shop, a short Locust load
# (with monitoring/tests/shop_conditions.py beside it: the client errors and the delivered order
# a short clean run lacks) and two real Prometheus servers scraping it, one per scrape
# configuration (the project's prometheus.yml, jobs `backend`...; the seed's prometheus.seed.yml,
# jobs `backend-service`...); monitoring/tests/live_e2e.py evaluates every expression on the
# shop's own metrics through each one's HTTP API: each must return data under both.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-tools.sh
export PATH="$PATH:/usr/sbin"
# The checkers import each other (live_e2e.py uses check_metrics.py): no __pycache__ in the tree.
export PYTHONDONTWRITEBYTECODE=1

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
m=monitoring

# Both scrape configurations the dashboards and rules support: the project's and the seed's.
configs="project seed"
config_file() { if [ "$1" = seed ]; then echo "$m/prometheus/prometheus.seed.yml"; else echo "$m/prometheus/prometheus.yml"; fi; }
# A compose configuration made loopback (monitoring/tests/loopback_config.py): the shop's hosts at
# the given addresses, jobs without a server here dropped.
#   loopback CONFIG OUT INTERVAL ALERTMANAGER RULES BACKEND CART ORDER USER LOCUST
# RULES: rule files, comma-separated.
loopback() {
  local rules=() files=() f
  IFS=, read -ra files <<<"$5"
  for f in "${files[@]}"; do rules+=(--rules "$f"); done
  python3 "$m/tests/loopback_config.py" "$(config_file "$1")" "$2" --interval "$3" --alertmanager "$4" \
    "${rules[@]}" backend="$6" cart="$7" order="$8" user="$9" locust="${10}"
}

echo "== monitoring: promtool check config / rules (prometheus.yml and the seed's prometheus.seed.yml)"
cp "$m/prometheus/alert.rules.yml" "$tmp/alert.rules.yml"
for c in $configs; do
  promtool check config "$(config_file "$c")"
  loopback "$c" "$tmp/$c.local.yml" 5s 127.0.0.1:9093 "$tmp/alert.rules.yml" \
    127.0.0.1:8000 127.0.0.1:8001 127.0.0.1:8002 127.0.0.1:8003 127.0.0.1:9646
  promtool check config "$tmp/$c.local.yml"
done
promtool check rules "$m/prometheus/alert.rules.yml" "$m/prometheus/slo.rules.yml" "$m/tests/autometrics/autometrics.rules.yml"

echo "== monitoring: the objectives' rules and tests are what obskit-gen writes from the code (drift test)"
cargo run -q -p obskit-gen --locked -- --check

echo "== monitoring: promtool test rules (every alert fires and stays quiet; every burn-rate alert at its rate)"
(cd "$m/prometheus" && promtool test rules tests/*.yml)

echo "== monitoring: amtool check-config"
# Debian's Alertmanager is 0.25, without telegram bot_token_file (0.26): check a copy where only
# that line becomes a throwaway bot_token (the compose stack runs 0.27 on the committed file).
sed 's#bot_token_file: .*#bot_token: "0:not-a-token"#' "$m/alertmanager/alertmanager.yml" > "$tmp/alertmanager.yml"
amtool check-config "$tmp/alertmanager.yml"

echo "== monitoring: metric names of every expression against the catalogue; Prometheus's parser on each"
python3 "$m/tools/check_metrics.py" --self-test
python3 "$m/tools/check_metrics.py" --promtool-rules "$tmp/all-expressions.rules.yml" --exprs-json "$tmp/exprs.json"
promtool check rules "$tmp/all-expressions.rules.yml"

echo "== monitoring: dashboard structure"
python3 "$m/tools/check_dashboards.py"

echo "== monitoring: docker-compose.yml"
python3 "$m/tests/compose_check.py"

echo "== monitoring: real Prometheus + Alertmanager, alert delivered to a Telegram stand-in"
timeout 240 python3 "$m/tests/alert_e2e.py"

echo "== monitoring: real nginx gateway, prometheus-nginx-exporter, mtail"
timeout 180 python3 "$m/tests/nginx_e2e.py"

if [ -f services/shop/Cargo.toml ] && [ -f scripts/lib/shop.sh ] && [ -f scripts/loadtest.sh ]; then
  echo "== monitoring: phase 2, the running shop under Locust scraped by two real Prometheus servers (project's and seed's job names)"
  . scripts/lib/shop.sh
  prom_pids=()
  conditions_pid=""
  phase2_stop() {
    if [ -n "$conditions_pid" ]; then kill -TERM "$conditions_pid" 2>/dev/null || true; wait "$conditions_pid" 2>/dev/null || true; fi
    for pid in "${prom_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; done
    shop_stop
    rm -rf "$tmp"
  }
  trap phase2_stop EXIT
  shop_start "$tmp/shop"
  # The rules both compose Prometheus servers load, and autometrics' published SLO rules as they
  # are (monitoring/tests/autometrics/): live_e2e.py checks they record series for the objectives.
  cp "$m/prometheus/alert.rules.yml" "$m/prometheus/slo.rules.yml" "$m/tests/autometrics/autometrics.rules.yml" "$tmp/"
  prom_args=()
  for c in $configs; do
    port=$(free_port)
    loopback "$c" "$tmp/$c.live.yml" 2s "127.0.0.1:$(free_port)" "$tmp/alert.rules.yml,$tmp/slo.rules.yml,$tmp/autometrics.rules.yml" \
      "127.0.0.1:$BACKEND_PORT" "127.0.0.1:$CART_PORT" "127.0.0.1:$ORDER_PORT" "127.0.0.1:$USER_PORT" \
      "127.0.0.1:$LOCUST_METRICS_PORT"
    promtool check config "$tmp/$c.live.yml" >/dev/null
    prometheus --config.file="$tmp/$c.live.yml" --storage.tsdb.path="$tmp/prom-$c" \
      --web.listen-address="127.0.0.1:$port" --enable-feature=exemplar-storage >"$tmp/prometheus-$c.log" 2>&1 &
    prom_pids+=($!)
    prom_args+=(--prometheus "$c=http://127.0.0.1:$port")
    for _ in $(seq 1 120); do curl -fs "http://127.0.0.1:$port/-/ready" >/dev/null 2>&1 && break; sleep 0.5; done
  done
  # Beside Locust, not through it (its run must keep zero failures): 4xx answers from every
  # service and one order followed to DELIVERED, all inside the panels' 1-minute windows.
  python3 "$m/tests/shop_conditions.py" "$GATEWAY_URL" >"$tmp/conditions.log" 2>&1 &
  conditions_pid=$!
  shop_load --users 10 --spawn-rate 5 --run-time 25s
  conditions_rc=0
  wait "$conditions_pid" || conditions_rc=$?
  conditions_pid=""
  cat "$tmp/conditions.log"
  [ "$conditions_rc" -eq 0 ] || { echo "monitoring: shop_conditions.py failed" >&2; exit 1; }
  timeout 300 python3 "$m/tests/live_e2e.py" "$tmp/exprs.json" "${prom_args[@]}" \
    backend="http://127.0.0.1:$BACKEND_PORT/metrics" cart="http://127.0.0.1:$CART_PORT/metrics" \
    order="http://127.0.0.1:$ORDER_PORT/metrics" user="http://127.0.0.1:$USER_PORT/metrics"
else
  echo "== monitoring: phase 2 skipped (the shop launcher or scripts/loadtest.sh is missing)"
fi
echo "monitoring: all checks passed"
