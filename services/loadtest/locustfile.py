"""The shop's load test: the seed's `TracedShoppingUser` flows against the gateway.

Flows (weights from the seed): register and log in on start; browse the catalogue (10); manage
the cart (5); buy (1). Two additions, so that a run exercises every business metric the shop
exports: look at one's own profile (2; the user service aggregates orders and cart), and one
`ShopAdmin` who restocks the products the flows buy (the seed's flows always pick the first
product of a page, so a long run would otherwise drain it).

Tracing: every task is one trace. Each request carries a W3C `traceparent` with the task's
trace id and a fresh parent span id, so the gateway and services continue the trace (the seed
used OpenTelemetry's `requests` instrumentation for the same effect; a header is all the
services need, and it keeps the load generator free of an SDK).

Metrics: the seed's `locust_*` series, served for Prometheus on `LOCUST_METRICS_PORT`
(default 9646; 0 turns the exporter off). Request names group identifiers
(`/api/products/[id]`), so the `endpoint` label stays bounded.
"""

import os
import secrets
import threading
import time
import uuid

from locust import HttpUser, between, events, task
from prometheus_client import Counter, Gauge, Histogram, start_http_server

PASSWORD = "testpass123"

REQUESTS = Counter(
    "locust_requests", "Requests sent by Locust", ["method", "endpoint", "status"]
)
RESPONSE_TIME = Histogram(
    "locust_response_time_seconds",
    "Response time seen by Locust",
    ["method", "endpoint"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
ACTIVE_USERS = Gauge("locust_active_users", "Simulated users running")
RPS = Gauge("locust_requests_per_second", "Requests per second over the last seconds")


@events.init.add_listener
def start_exporter(environment, **_kwargs):
    port = int(os.environ.get("LOCUST_METRICS_PORT", "9646"))
    if port == 0:
        return
    start_http_server(port, addr=os.environ.get("LOCUST_METRICS_HOST", "127.0.0.1"))

    def sample_rps():
        while True:
            runner = environment.runner
            if runner is not None:
                RPS.set(runner.stats.total.current_rps)
                ACTIVE_USERS.set(runner.user_count)
            time.sleep(2)

    threading.Thread(target=sample_rps, daemon=True).start()


@events.request.add_listener
def record_request(request_type, name, response_time, response_length, exception, **_kwargs):
    status = "success" if exception is None else "error"
    REQUESTS.labels(method=request_type, endpoint=name, status=status).inc()
    RESPONSE_TIME.labels(method=request_type, endpoint=name).observe(response_time / 1000)


class Trace:
    """One trace per task: the same trace id on every request of the task."""

    def __init__(self):
        self.trace_id = secrets.token_hex(16)

    def headers(self, token=None):
        headers = {"traceparent": f"00-{self.trace_id}-{secrets.token_hex(8)}-01"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return headers


class TracedShoppingUser(HttpUser):
    wait_time = between(2, 6)

    def on_start(self):
        self.user_id = None
        self.auth_token = None
        self.register_and_login()

    def register_and_login(self):
        trace = Trace()
        # A fresh name per simulated user, so repeated runs on the same data never collide.
        name = f"testuser_{uuid.uuid4().hex[:16]}"
        response = self.client.post(
            "/user-api/register",
            json={"username": name, "email": f"{name}@example.com", "password": PASSWORD},
            headers=trace.headers(),
        )
        if response.status_code != 201:
            return
        user = response.json()
        self.user_id = user["id"]
        login = self.client.post(
            "/user-api/login",
            json={"username": user["username"], "password": PASSWORD},
            headers=trace.headers(),
        )
        if login.status_code == 200:
            self.auth_token = login.json()["access_token"]

    @task(10)
    def browse_products(self):
        trace = Trace()
        categories = self.client.get("/api/categories", headers=trace.headers()).json()
        if not categories:
            return
        category = categories[0]
        self.client.get(
            f"/api/products?category={category}&limit=20",
            headers=trace.headers(),
            name="/api/products?category=[category]&limit=20",
        )
        products = self.client.get(
            f"/api/products?category={category}&limit=5",
            headers=trace.headers(),
            name="/api/products?category=[category]&limit=5",
        ).json()
        if products:
            self.client.get(
                f"/api/products/{products[0]['id']}",
                headers=trace.headers(),
                name="/api/products/[id]",
            )

    @task(5)
    def manage_cart(self):
        if not self.user_id:
            return
        trace = Trace()
        products = self.client.get("/api/products?limit=10", headers=trace.headers()).json()
        if not products:
            return
        product = products[0]
        added = self.client.post(
            f"/cart-api/cart/{self.user_id}/add",
            json={"product_id": product["id"], "quantity": 2},
            headers=trace.headers(),
            name="/cart-api/cart/[user_id]/add",
        )
        if added.status_code == 200:
            self.client.get(
                f"/cart-api/cart/{self.user_id}",
                headers=trace.headers(),
                name="/cart-api/cart/[user_id]",
            )
            self.client.put(
                f"/cart-api/cart/{self.user_id}/update",
                json={"product_id": product["id"], "quantity": 3},
                headers=trace.headers(),
                name="/cart-api/cart/[user_id]/update",
            )

    @task(1)
    def complete_purchase(self):
        if not self.user_id:
            return
        trace = Trace()
        products = self.client.get("/api/products?limit=5", headers=trace.headers()).json()
        if not products:
            return
        self.client.post(
            f"/cart-api/cart/{self.user_id}/add",
            json={"product_id": products[0]["id"], "quantity": 1},
            headers=trace.headers(),
            name="/cart-api/cart/[user_id]/add",
        )
        checkout = self.client.post(
            f"/cart-api/cart/{self.user_id}/checkout",
            headers=trace.headers(),
            name="/cart-api/cart/[user_id]/checkout",
        )
        if checkout.status_code == 201:
            order = checkout.json()
            self.client.get(
                f"/order-api/orders/{order['id']}",
                headers=trace.headers(),
                name="/order-api/orders/[id]",
            )

    @task(2)
    def view_profile(self):
        if not self.auth_token:
            return
        trace = Trace()
        self.client.get("/user-api/me", headers=trace.headers(self.auth_token))
        self.client.get(
            f"/user-api/users/{self.user_id}/profile",
            headers=trace.headers(self.auth_token),
            name="/user-api/users/[id]/profile",
        )


class ShopAdmin(HttpUser):
    """One administrator (the user service creates it from `SHOP_ADMIN_USERNAME` and
    `SHOP_ADMIN_PASSWORD`) who keeps the products the flows buy in stock."""

    fixed_count = 1
    wait_time = between(5, 10)

    def on_start(self):
        self.token = None
        username = os.environ.get("SHOP_ADMIN_USERNAME")
        password = os.environ.get("SHOP_ADMIN_PASSWORD")
        if not (username and password):
            return
        login = self.client.post(
            "/user-api/login", json={"username": username, "password": password}
        )
        if login.status_code == 200:
            self.token = login.json()["access_token"]

    @task
    def restock(self):
        if not self.token:
            return
        trace = Trace()
        for product in self.client.get("/api/products?limit=10", headers=trace.headers()).json()[:1]:
            self.client.post(
                f"/api/products/{product['id']}/restock",
                json={"quantity": 100},
                headers=trace.headers(self.token),
                name="/api/products/[id]/restock",
            )
