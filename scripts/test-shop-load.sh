#!/usr/bin/env bash
# The shop under load, as the README's main job runs it: starts `shop` on free loopback ports,
# runs the Locust flows (20 users, 30 s) against its gateway, which must end with zero failures,
# then checks that every business metric has a non-zero sample on the services' /metrics.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib/shop.sh

data_dir="$(mktemp -d /tmp/shop-load.XXXXXX)"
trap 'shop_stop; rm -rf "$data_dir"' EXIT

shop_start "$data_dir"
echo "== shop ready on $GATEWAY_URL; Locust: 20 users, 30 s"
shop_load --users 20 --spawn-rate 5 --run-time 30s
echo "== business metrics"
shop_check_business_metrics 60
