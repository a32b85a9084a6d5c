#!/usr/bin/env bash
# Runs each example as a user would (`cargo run --example`), on a free loopback port, checks what
# it serves through real HTTP (and `/metrics` with promtool), and stops it. Bounded: each example
# gets 60 s to start and the whole check stops itself.
set -euo pipefail
cd "$(dirname "$0")/.."

cargo build -q -p obskit-examples --examples --locked
workdir=$(mktemp -d)
pid=""
cleanup() { [ -n "$pid" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$workdir"; }
trap cleanup EXIT

fail() { echo "check-examples: $*" >&2; exit 1; }

# start EXAMPLE [BINARY]: runs it (target/debug/examples/EXAMPLE unless BINARY, a path under
# target/debug, is given) with ADDR=127.0.0.1:0 and sets $base to the URL it prints.
start() {
  local out="$workdir/$1.out" binary="${2:-examples/$1}"
  (cd "$workdir" && ADDR=127.0.0.1:0 exec timeout 120 "$OLDPWD/target/debug/$binary") >"$out" 2>&1 &
  pid=$!
  for _ in $(seq 1 600); do
    base=$(sed -n 's/^listening on \(http:[^ ]*\)$/\1/p' "$out" | head -1)
    [ -n "$base" ] && return 0
    kill -0 "$pid" 2>/dev/null || fail "$1 exited early: $(cat "$out")"
    sleep 0.1
  done
  fail "$1 did not start"
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
expect() { # expect STATUS METHOD PATH
  local got
  got=$(curl -s -o "$workdir/body" -w '%{http_code}' -X "$2" "$base$3")
  [ "$got" = "$1" ] || fail "$2 $3: expected $1, got $got: $(cat "$workdir/body")"
}
metrics_has() { grep -qF -- "$1" "$workdir/metrics" || fail "/metrics lacks: $1"; }
scrape() {
  curl -sf "$base/metrics" >"$workdir/metrics"
  promtool check metrics <"$workdir/metrics" || fail "promtool check metrics failed"
}

echo "-- minimal_server"
start minimal_server
expect 200 GET /hello/world
grep -q "hello, world" "$workdir/body" || fail "unexpected body: $(cat "$workdir/body")"
expect 404 GET /nothing/here
expect 200 GET /health
expect 200 GET /health/live
expect 200 GET /debug/metrics
expect 200 GET /debug/config
scrape
metrics_has 'http_requests_total{endpoint="/hello/{name}",method="GET",status="200"} 1'
metrics_has 'http_requests_total{endpoint="unmatched",method="GET",status="404"} 1'
metrics_has 'function_calls_total{function="hello",module="minimal_server",result="ok"} 2'
metrics_has 'build_info{'
stop

echo "-- business_metrics"
start business_metrics
expect 201 POST '/orders?category=books&value=42.5'
expect 422 POST '/orders?value=abc'
for i in $(seq 1 30); do expect 200 GET "/products/$i?category=cat$i"; done
expect 200 GET /health
touch "$workdir/payments.down"
expect 503 GET /health
rm "$workdir/payments.down"
expect 200 GET /health
scrape
metrics_has 'orders_created_total 1'
metrics_has 'order_value_bucket{le="50"} 1'
metrics_has 'product_views_total{category="__overflow__"} 10'
metrics_has 'obskit_metric_label_overflow_total{metric="product_views_total"} 10'
metrics_has 'http_requests_total{endpoint="/products/{id}",method="GET",status="200"} 30'
stop
echo "-- grpc_server"
# grpc SKU STATUS: one unary call over HTTP/2 (prior knowledge), its frame built by python3;
# STATUS is the grpc-status expected in the headers or trailers (curl writes both to -D).
grpc() {
  python3 -c 'import sys,struct; s=sys.argv[1].encode(); m=(b"\x0a"+bytes([len(s)])+s) if s else b""; sys.stdout.buffer.write(b"\x00"+struct.pack(">I",len(m))+m)' "$1" >"$workdir/grpc.req"
  curl -s --http2-prior-knowledge -H 'content-type: application/grpc' -H 'te: trailers' \
    --data-binary @"$workdir/grpc.req" -D "$workdir/grpc.head" -o "$workdir/body" "$base/shop.Inventory/GetStock" \
    || fail "grpc $1: curl failed"
  tr -d '\r' <"$workdir/grpc.head" | grep -qx "grpc-status: $2" || fail "grpc $1: expected grpc-status $2: $(cat "$workdir/grpc.head")"
}
start grpc_server
grpc book-1 0
grep -q "book-1" "$workdir/body" || fail "the reply does not name the sku"
grpc unreachable 14
grpc "" 3
scrape
metrics_has 'http_requests_total{endpoint="/shop.Inventory/GetStock",method="POST",status="200"} 1'
metrics_has 'http_requests_total{endpoint="/shop.Inventory/GetStock",method="POST",status="503"} 1'
metrics_has 'http_requests_total{endpoint="/shop.Inventory/GetStock",method="POST",status="400"} 1'
metrics_has 'function_calls_total{function="get_stock",module="grpc_server",result="error"} 2'
metrics_has 'function_calls_total{function="get_stock",module="grpc_server",result="ok"} 1'
# The UNAVAILABLE call's server span is in error, with its gRPC code; the OK call's log line
# carries the trace id of a span in /debug/traces.
curl -sf "$base/debug/traces?status=error" >"$workdir/traces"
python3 - "$workdir/traces" "$workdir/grpc_server.out" <<'PY' || fail "gRPC span or log line not as expected"
import json, sys
traces = json.load(open(sys.argv[1]))["traces"]
spans = [s for t in traces for s in t["spans"]]
assert any(s["attributes"].get("rpc.grpc.status_code") == 14 for s in spans), spans
lines = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
record = next(l for l in lines if l["message"] == "stock looked up")
assert record["fields"]["sku"] == "book-1" and len(record["trace_id"]) == 32, record
PY
stop
echo "-- axum (examples/axum: a workspace of its own, built into this target directory)"
root=$PWD
(
  cd examples/axum
  cargo fmt -- --check
  CARGO_TARGET_DIR="$root/target" cargo clippy -q --locked -- -D warnings
  CARGO_TARGET_DIR="$root/target" cargo build -q --locked
)
start axum obskit-axum-example
expect 200 GET /api/products
expect 200 GET /api/products/7
grep -q '"price_cents":700' "$workdir/body" || fail "unexpected product: $(cat "$workdir/body")"
expect 404 GET /api/products/0
expect 200 GET /api/products/3/reviews/2
# Off axum's routes: the admin surface, merged as the router's fallback.
expect 404 GET /no/such/page
grep -q '"error":"not_found"' "$workdir/body" || fail "the fallback is not obskit's: $(cat "$workdir/body")"
expect 200 GET /health/live
expect 200 GET /debug/config
scrape
metrics_has 'http_requests_total{endpoint="/api/products",method="GET",status="200"} 1'
metrics_has 'http_requests_total{endpoint="/api/products/{id}",method="GET",status="200"} 1'
metrics_has 'http_requests_total{endpoint="/api/products/{id}",method="GET",status="404"} 1'
metrics_has 'http_requests_total{endpoint="/api/products/{id}/reviews/{review}",method="GET",status="200"} 1'
metrics_has 'http_requests_total{endpoint="unmatched",method="GET",status="404"} 1'
metrics_has 'function_calls_total{function="get_product",module="obskit_axum_example",result="error"} 1'
metrics_has 'function_calls_total{function="get_product",module="obskit_axum_example",result="ok"} 1'
# The server span is named by axum's template, the handler's span is its child, and the 404's
# log line carries that trace's id.
curl -sf "$base/debug/traces?limit=50" >"$workdir/traces"
python3 - "$workdir/traces" "$workdir/axum.out" <<'PY' || fail "axum spans or log line not as expected"
import json, sys
traces = {t["trace_id"]: t["spans"] for t in json.load(open(sys.argv[1]))["traces"]}
lines = [json.loads(l) for l in open(sys.argv[2]) if l.startswith("{")]
record = next(l for l in lines if l["message"] == "no such product")
assert record["fields"]["product_id"] == 0, record
spans = traces[record["trace_id"]]
server = next(s for s in spans if s["name"] == "GET /api/products/{id}")
handler = next(s for s in spans if s["name"] == "get_product")
assert handler["parent_span_id"] == server["span_id"], spans
assert record["span_id"] == handler["span_id"], (record, handler)
PY
stop
echo "check-examples: all examples behaved"
