# Shell functions to run the shop on free loopback ports for a test, drive it with Locust and
# check its business metrics. Source it: `. scripts/lib/shop.sh`.
#
#   shop_start DATA_DIR    builds target/debug/shop if needed, starts it in the background on free
#                          ports with a fast order lifecycle and cart abandonment, waits until it
#                          is ready; exports SHOP_PID, GATEWAY_URL, BACKEND_PORT, CART_PORT,
#                          ORDER_PORT, USER_PORT, GATEWAY_PORT, SHOP_ADMIN_USERNAME/_PASSWORD,
#                          LOCUST_METRICS_PORT, SHOP_LOG. Settings already exported (JWT_SECRET,
#                          ORDER_LIFECYCLE_STEP_SECONDS, ...) are kept. SHOP_BINARY runs another
#                          build (the caller builds it), SHOP_LAUNCH prefixes the command
#                          (`taskset -c 0`).
#   shop_stop              SIGTERM, then waits (killing after 20 s)
#   shop_load [ARGS]       scripts/loadtest.sh against $GATEWAY_URL (20 users, 30 s by default)
#   shop_check_business_metrics [TIMEOUT_S]
#                          every business metric of the shop has a non-zero sample on its
#                          service's /metrics (polls until TIMEOUT_S, default 60)
#   shop_promtool_check_metrics
#                          `promtool check metrics` on every service's /metrics (text format
#                          0.0.4, which promtool reads): prints each finding, fails on any

_shop_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

shop_start() {
  local data_dir="$1"
  local binary="${SHOP_BINARY:-$_shop_root/target/debug/shop}"
  [ -n "${SHOP_BINARY:-}" ] || (cd "$_shop_root" && cargo build -q -p shop --locked)
  export BACKEND_PORT CART_PORT ORDER_PORT USER_PORT GATEWAY_PORT LOCUST_METRICS_PORT
  BACKEND_PORT=$(free_port); CART_PORT=$(free_port); ORDER_PORT=$(free_port)
  USER_PORT=$(free_port); GATEWAY_PORT=$(free_port); LOCUST_METRICS_PORT=$(free_port)
  export SHOP_LISTEN_HOST=127.0.0.1 SHOP_DATA_DIR="$data_dir"
  export JWT_SECRET="${JWT_SECRET:-$(python3 -c 'import secrets; print(secrets.token_hex(32))')}"
  export SHOP_ADMIN_USERNAME="${SHOP_ADMIN_USERNAME:-shopadmin}"
  export SHOP_ADMIN_PASSWORD="${SHOP_ADMIN_PASSWORD:-$(python3 -c 'import secrets; print(secrets.token_hex(12))')}"
  export ORDER_LIFECYCLE_STEP_SECONDS="${ORDER_LIFECYCLE_STEP_SECONDS:-2}"
  export CART_ABANDON_AFTER_SECONDS="${CART_ABANDON_AFTER_SECONDS:-5}"
  export GATEWAY_URL="http://127.0.0.1:$GATEWAY_PORT"
  export SHOP_LOG="$data_dir/shop.log"
  mkdir -p "$data_dir"
  # shellcheck disable=SC2086 # SHOP_LAUNCH is a command prefix, split on purpose
  ${SHOP_LAUNCH:-} "$binary" >"$SHOP_LOG" 2>&1 &
  export SHOP_PID=$!
  local i
  for i in $(seq 1 300); do
    if grep -q '^shop: ready' "$SHOP_LOG" 2>/dev/null; then return 0; fi
    if ! kill -0 "$SHOP_PID" 2>/dev/null; then
      echo "shop exited before it was ready:" >&2; cat "$SHOP_LOG" >&2; return 1
    fi
    sleep 0.2
  done
  echo "shop not ready after 60 s:" >&2; cat "$SHOP_LOG" >&2
  shop_stop
  return 1
}

shop_stop() {
  [ -n "${SHOP_PID:-}" ] || return 0
  kill -TERM "$SHOP_PID" 2>/dev/null || true
  local i
  for i in $(seq 1 100); do
    kill -0 "$SHOP_PID" 2>/dev/null || break
    sleep 0.2
  done
  kill -KILL "$SHOP_PID" 2>/dev/null || true
  wait "$SHOP_PID" 2>/dev/null || true
  SHOP_PID=""
}

shop_load() {
  bash "$_shop_root/scripts/loadtest.sh" --host "$GATEWAY_URL" "$@"
}

shop_check_business_metrics() {
  python3 "$_shop_root/services/loadtest/check_business_metrics.py" --timeout "${1:-60}" \
    backend="http://127.0.0.1:$BACKEND_PORT/metrics" cart="http://127.0.0.1:$CART_PORT/metrics" \
    order="http://127.0.0.1:$ORDER_PORT/metrics" user="http://127.0.0.1:$USER_PORT/metrics"
}

shop_promtool_check_metrics() {
  local service port out rc families findings=0
  for service in backend cart order user; do
    port="${service^^}_PORT"
    port="${!port}"
    # Without an Accept header obskit answers in the 0.0.4 text format, the one promtool lints.
    out="$(curl -fsS "http://127.0.0.1:$port/metrics")" || { echo "$service: /metrics did not answer" >&2; return 1; }
    families=$(grep -c '^# TYPE ' <<<"$out" || true)
    rc=0
    local lint
    lint="$(promtool check metrics <<<"$out" 2>&1)" || rc=$?
    if [ "$rc" -ne 0 ] || [ -n "$lint" ]; then
      echo "$service: promtool check metrics found (exit $rc):"
      sed 's/^/    /' <<<"$lint"
      findings=$((findings + $(grep -c . <<<"$lint" || true) + (rc != 0 && ${#lint} == 0)))
    else
      echo "$service: promtool check metrics: 0 findings on $families metric families"
    fi
  done
  if [ "$findings" -ne 0 ]; then
    echo "promtool check metrics: $findings findings" >&2
    return 1
  fi
}
