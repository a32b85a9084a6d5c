#!/usr/bin/env bash
# The shop under load, as the README's main job runs it: starts `shop` on free loopback ports,
# runs the Locust flows (20 users, 30 s) against its gateway, which must end with zero failures,
# then checks that every business metric has a non-zero sample on the services' /metrics, and
# lints every service's /metrics with `promtool check metrics` (Prometheus's naming rules:
# base units, `_total` counters, help texts): 0 findings, each finding printed. The lint runs
# after the business-metric check on purpose: a labelled family appears on /metrics only once
# traffic has touched it, so only then does the lint see every business metric.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure-tools.sh
. scripts/lib/shop.sh

data_dir="$(mktemp -d /tmp/shop-load.XXXXXX)"
trap 'shop_stop; rm -rf "$data_dir"' EXIT

shop_start "$data_dir"
echo "== shop ready on $GATEWAY_URL; Locust: 20 users, 30 s"
shop_load --users 20 --spawn-rate 5 --run-time 30s
echo "== business metrics"
shop_check_business_metrics 60
echo "== promtool check metrics on every service's /metrics"
shop_promtool_check_metrics
