#!/usr/bin/env bash
# Tests of the monitoring stack (monitoring/): configs checked by the real tools, alert rules
# unit-tested, every dashboard and alert expression parsed by Prometheus's parser and checked
# against the metric catalogue, and the daemons run for real on 127.0.0.1 (free ports, temp
# dirs, stopped at exit): Prometheus + Alertmanager delivering an alert to a Telegram stand-in,
# nginx + prometheus-nginx-exporter + mtail in front of stub services.
# Phase 2 (when the `shop` launcher and scripts/loadtest.sh exist): monitoring/tests/live_e2e.py
# runs the shop, a short Locust load (with monitoring/tests/shop_conditions.py beside it: the
# client errors and the delivered order a short clean run lacks) and a real Prometheus with the
# local config, and evaluates every expression on the shop's own metrics through the HTTP API:
# each must return data.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-tools.sh
export PATH="$PATH:/usr/sbin"

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
m=monitoring

echo "== monitoring: promtool check config / rules"
promtool check config "$m/prometheus/prometheus.yml"
# the loopback template, with its placeholders filled the way live_e2e.py fills them
cp "$m/prometheus/alert.rules.yml" "$tmp/alert.rules.yml"
SCRAPE_INTERVAL=5s ALERTMANAGER_ADDR=127.0.0.1:9093 RULES_FILE="$tmp/alert.rules.yml" \
  BACKEND_ADDR=127.0.0.1:8000 CART_ADDR=127.0.0.1:8001 ORDER_ADDR=127.0.0.1:8002 \
  USER_ADDR=127.0.0.1:8003 LOCUST_ADDR=127.0.0.1:9646 \
  python3 -c 'import os,sys; sys.path.insert(0, "monitoring/tests"); from harness import substitute; print(substitute(open("monitoring/prometheus/prometheus.local.yml.tmpl").read(), os.environ))' \
  > "$tmp/prometheus.local.yml"
promtool check config "$tmp/prometheus.local.yml"
promtool check rules "$m/prometheus/alert.rules.yml"

echo "== monitoring: promtool test rules (every alert fires and stays quiet)"
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
  echo "== monitoring: phase 2, the running shop under Locust scraped by a real Prometheus"
  . scripts/lib/shop.sh
  prom_pid=""
  conditions_pid=""
  phase2_stop() {
    if [ -n "$conditions_pid" ]; then kill -TERM "$conditions_pid" 2>/dev/null || true; wait "$conditions_pid" 2>/dev/null || true; fi
    if [ -n "$prom_pid" ]; then kill -TERM "$prom_pid" 2>/dev/null || true; wait "$prom_pid" 2>/dev/null || true; fi
    shop_stop
    rm -rf "$tmp"
  }
  trap phase2_stop EXIT
  shop_start "$tmp/shop"
  prom_port=$(free_port)
  cp "$m/prometheus/alert.rules.yml" "$tmp/live.rules.yml"
  SCRAPE_INTERVAL=2s ALERTMANAGER_ADDR="127.0.0.1:$(free_port)" RULES_FILE="$tmp/live.rules.yml" \
    BACKEND_ADDR="127.0.0.1:$BACKEND_PORT" CART_ADDR="127.0.0.1:$CART_PORT" ORDER_ADDR="127.0.0.1:$ORDER_PORT" \
    USER_ADDR="127.0.0.1:$USER_PORT" LOCUST_ADDR="127.0.0.1:$LOCUST_METRICS_PORT" \
    python3 -c 'import os,sys; sys.path.insert(0, "monitoring/tests"); from harness import substitute; print(substitute(open("monitoring/prometheus/prometheus.local.yml.tmpl").read(), os.environ))' \
    > "$tmp/prometheus.live.yml"
  promtool check config "$tmp/prometheus.live.yml" >/dev/null
  prometheus --config.file="$tmp/prometheus.live.yml" --storage.tsdb.path="$tmp/prom-live" \
    --web.listen-address="127.0.0.1:$prom_port" --enable-feature=exemplar-storage >"$tmp/prometheus.log" 2>&1 &
  prom_pid=$!
  for _ in $(seq 1 120); do curl -fs "http://127.0.0.1:$prom_port/-/ready" >/dev/null 2>&1 && break; sleep 0.5; done
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
  timeout 300 python3 "$m/tests/live_e2e.py" "$tmp/exprs.json" "http://127.0.0.1:$prom_port" \
    backend="http://127.0.0.1:$BACKEND_PORT/metrics" cart="http://127.0.0.1:$CART_PORT/metrics" \
    order="http://127.0.0.1:$ORDER_PORT/metrics" user="http://127.0.0.1:$USER_PORT/metrics"
else
  echo "== monitoring: phase 2 skipped (the shop launcher or scripts/loadtest.sh is missing)"
fi
echo "monitoring: all checks passed"
