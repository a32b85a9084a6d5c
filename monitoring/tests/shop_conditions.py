"""Phase 2: the conditions a short Locust run is too clean or too short to produce, produced by
legitimate requests to the running shop, so that every panel shows real data during the run.

  shop_conditions.py GATEWAY_URL

Run by scripts/test-monitoring.sh beside the Locust load (not through it: Locust must keep zero
failures, and these requests fail on purpose). Through the gateway, as any client would:
  - client errors the contract promises, answered by each service: 404 unknown product
    (backend), 409 not enough stock / 422 quantity < 1 / 404 item not in cart (cart), 404
    unknown order / 403 a customer's status change / 409 an admin's illegal transition (order),
    409 username taken / 401 wrong password (user); each fails its handler, so
    function_calls_total{result="error"} too;
  - CHECKOUTS more purchases and LOGINS more logins: autometrics' published SLO rules leave out
    an objective with less than a call a minute over the window (`>= 1/60` on its rate). A short
    run's own checkouts are fewer than that over 5 minutes, and its logins all happen as its
    users start, before the login counter's series is first scraped: Prometheus sees them as
    the series' starting value, not as an increase;
  - one purchase followed until the order lifecycle (ORDER_LIFECYCLE_STEP_SECONDS, 2 s in
    scripts/lib/shop.sh) has moved it to DELIVERED, which is what the order dashboard's
    "delivered", completion-time and delivery-time panels show.
Every answer must be the one the contract (shop-api.md) gives; nothing here injects a fault.
No server error is provoked: a clean run has none, and the 5xx panels read 0 %."""
import json
import os
import sys
import time
import urllib.error
import urllib.request
import uuid

DELIVERY_TIMEOUT_S = 60
# services/cart: a cart line holds at most this many units (more is a 422, not a 409).
MAX_LINE_QUANTITY = 10_000
# Purchases of one unit each besides the one followed to DELIVERED: with it, 10 over the 5-minute
# window are twice autometrics' minimum rate (5).
CHECKOUTS = 9
# Logins besides this script's four, for the same reason (the run's own are not seen); more than
# the checkouts, since the user service's throttle may refuse some of the run's.
LOGINS = 20
# Between two of those: they fall over several of the test Prometheus' 2-second scrapes.
SPREAD_S = 0.5
# Two of the test Prometheus' scrape intervals.
SERIES_SEEN_S = 5


def call(base, method, path, body=None, token=None):
    """(status, decoded JSON or None) of one request; HTTP errors are answers, not exceptions."""
    data = json.dumps(body).encode() if body is not None else None
    headers = {"content-type": "application/json"} if data is not None else {}
    if token:
        headers["authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, None


def expect(base, want, method, path, body=None, token=None):
    status, doc = call(base, method, path, body, token)
    if status != want:
        print(f"FAIL: {method} {path}: {status} (the contract says {want}): {doc}", file=sys.stderr)
        raise SystemExit(1)
    return doc


def main():
    base = sys.argv[1].rstrip("/")
    name = f"monitor_{uuid.uuid4().hex[:16]}"
    password = "monitoring-phase-2"
    user = expect(base, 201, "POST", "/user-api/register",
                  {"username": name, "email": f"{name}@example.com", "password": password})
    uid = user["id"]
    token = expect(base, 200, "POST", "/user-api/login", {"username": name, "password": password})["access_token"]
    expect(base, 409, "POST", "/user-api/register",
           {"username": name, "email": f"{name}@example.com", "password": password})
    expect(base, 401, "POST", "/user-api/login", {"username": name, "password": password + "-wrong"})
    expect(base, 200, "GET", "/user-api/me", token=token)

    products = expect(base, 200, "GET", "/api/products?limit=20")
    expect(base, 404, "GET", f"/api/products/no-such-product-{uuid.uuid4().hex}")
    # Not one of the first ten products: Locust's flows buy and restock those, and a stock
    # changing under this script would turn the 409 below into a 200.
    candidates = [p for p in products[10:] if CHECKOUTS + 2 <= p["stock"] < MAX_LINE_QUANTITY]
    if not candidates:
        print(f"FAIL: no product beyond the first ten with stock to buy among {products}", file=sys.stderr)
        raise SystemExit(1)
    product = candidates[0]

    cart = f"/cart-api/cart/{uid}"
    expect(base, 409, "POST", f"{cart}/add", {"product_id": product["id"], "quantity": product["stock"] + 1})
    expect(base, 422, "POST", f"{cart}/add", {"product_id": product["id"], "quantity": 0})
    expect(base, 404, "PUT", f"{cart}/update", {"product_id": product["id"], "quantity": 1})
    expect(base, 200, "POST", f"{cart}/add", {"product_id": product["id"], "quantity": 1})
    order = expect(base, 201, "POST", f"{cart}/checkout")
    # After the first checkout and login, their series exist; once the test Prometheus has
    # scraped them (2-second interval), every later call counts as an increase.
    time.sleep(SERIES_SEEN_S)
    for i in range(max(CHECKOUTS, LOGINS)):
        if i < LOGINS:
            expect(base, 200, "POST", "/user-api/login", {"username": name, "password": password})
        if i < CHECKOUTS:
            expect(base, 200, "POST", f"{cart}/add", {"product_id": product["id"], "quantity": 1})
            expect(base, 201, "POST", f"{cart}/checkout")
        time.sleep(SPREAD_S)

    expect(base, 404, "GET", f"/order-api/orders/no-such-order-{uuid.uuid4().hex}")
    # Status changes are for admins (services/README.md): a customer's is refused whatever it
    # asks, and an admin's move back to CREATED is illegal from every status, wherever the
    # lifecycle has got to.
    status_path = f"/order-api/orders/{order['id']}/status"
    expect(base, 403, "PUT", status_path, {"status": "CANCELLED"}, token=token)
    admin_name, admin_password = os.environ.get("SHOP_ADMIN_USERNAME"), os.environ.get("SHOP_ADMIN_PASSWORD")
    if not (admin_name and admin_password):
        print("FAIL: SHOP_ADMIN_USERNAME and SHOP_ADMIN_PASSWORD must name the shop's admin "
              "(scripts/lib/shop.sh sets them)", file=sys.stderr)
        raise SystemExit(1)
    admin = expect(base, 200, "POST", "/user-api/login",
                   {"username": admin_name, "password": admin_password})["access_token"]
    expect(base, 409, "PUT", status_path, {"status": "CREATED"}, token=admin)
    deadline = time.monotonic() + DELIVERY_TIMEOUT_S
    status = order["status"]
    while status != "DELIVERED":
        if time.monotonic() > deadline:
            print(f"FAIL: order {order['id']} still {status} after {DELIVERY_TIMEOUT_S}s "
                  "(is ORDER_LIFECYCLE_STEP_SECONDS set?)", file=sys.stderr)
            raise SystemExit(1)
        time.sleep(0.5)
        status = expect(base, 200, "GET", f"/order-api/orders/{order['id']}")["status"]
    expect(base, 200, "GET", f"/user-api/users/{uid}/profile", token=token)
    print(f"  ok: client errors on every service (404, 409, 422, 403, 401), {CHECKOUTS + 1} checkouts, {LOGINS + 4} logins, one order delivered")


if __name__ == "__main__":
    main()
