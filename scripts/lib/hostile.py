"""The hostile cases of issue 12 against a running shop (scripts/test-hostile.sh starts it).

    python3 hostile.py checkout    carts whose checkouts meet client timeouts and a paused
                                   order service; after recovery no unit is lost or doubled
    python3 hostile.py logins      hundreds of logins whose clients hang up; the user service's
                                   memory and threads stay bounded, a real login still succeeds
    python3 hostile.py gateway     silent connections and partial request heads are closed by
                                   the gateway within its head timeout

Every case prints its figures and exits non-zero when an invariant or a stated bound fails.
The environment is scripts/lib/shop.sh's: GATEWAY_URL, SHOP_PID, the *_PORT variables,
SHOP_ADMIN_USERNAME / SHOP_ADMIN_PASSWORD.
"""

import http.client
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.parse

GATEWAY = urllib.parse.urlsplit(os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"))
HOST, PORT = GATEWAY.hostname, GATEWAY.port


def call(method, path, body=None, token=None, timeout=10.0):
    """One request through the gateway: (status, parsed JSON or None). Raises on a timeout."""
    conn = http.client.HTTPConnection(HOST, PORT, timeout=timeout)
    try:
        headers = {"content-type": "application/json"}
        if token:
            headers["authorization"] = f"Bearer {token}"
        data = json.dumps(body).encode() if body is not None else None
        conn.request(method, path, body=data, headers=headers)
        response = conn.getresponse()
        raw = response.read()
        try:
            return response.status, json.loads(raw) if raw else None
        except ValueError:
            return response.status, None
    finally:
        conn.close()


def child_pid(service):
    """The pid of the launcher's child `shop serve <service>`."""
    out = subprocess.run(
        ["pgrep", "-P", os.environ["SHOP_PID"], "-f", f"serve {service}$"],
        capture_output=True, text=True, check=False,
    ).stdout.split()
    if len(out) != 1:
        sys.exit(f"no single child process for {service}: {out}")
    return int(out[0])


def rss_and_threads(pid):
    """(RSS in MB, thread count) of `pid`, from /proc."""
    rss_kb = threads = 0
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_kb = int(line.split()[1])
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss_kb / 1024.0, threads


def admin_token():
    status, body = call("POST", "/user-api/login", {
        "username": os.environ["SHOP_ADMIN_USERNAME"],
        "password": os.environ["SHOP_ADMIN_PASSWORD"],
    })
    if status != 200:
        sys.exit(f"admin login failed: {status} {body}")
    return body["access_token"]


class Failures:
    """Collects the invariants that did not hold, to print them all before failing."""

    def __init__(self):
        self.items = []

    def check(self, ok, message):
        print(("ok   " if ok else "FAIL ") + message)
        if not ok:
            self.items.append(message)

    def exit(self):
        if self.items:
            sys.exit(f"{len(self.items)} invariant(s) failed")


def checkout_case():
    carts, stock = 24, 30
    token = admin_token()
    status, product = call("POST", "/api/products", {
        "name": "Hostile Widget", "description": "counted by test-hostile.sh",
        "price": 3.5, "category": "Gadgets", "stock": stock,
    }, token=token)
    if status != 201:
        sys.exit(f"creating the product failed: {status} {product}")
    pid = product["id"]
    run = f"{int(time.time())}-{random.randrange(1 << 30):x}"
    users = [f"hostile-{run}-{i}" for i in range(carts)]
    for user in users:
        status, body = call("POST", f"/cart-api/cart/{user}/add", {"product_id": pid, "quantity": 1})
        if status != 200:
            sys.exit(f"adding to {user}'s cart failed: {status} {body}")

    order_pid = child_pid("order")
    outcomes = {"answered": 0, "client timeout": 0}
    lock = threading.Lock()

    def checkout(user, timeout):
        try:
            call("POST", f"/cart-api/cart/{user}/checkout", timeout=timeout)
            kind = "answered"
        except (socket.timeout, TimeoutError, OSError):
            kind = "client timeout"
        with lock:
            outcomes[kind] += 1

    # Half the checkouts meet the order service paused for 2 s, the other half clients that
    # give up after 1 to 200 ms.
    threads = [threading.Thread(target=checkout, args=(u, 10.0)) for u in users[:carts // 2]]
    threads += [threading.Thread(target=checkout, args=(u, random.uniform(0.001, 0.2))) for u in users[carts // 2:]]
    os.kill(order_pid, signal.SIGSTOP)
    try:
        for t in threads:
            t.start()
            time.sleep(0.01)
        time.sleep(2.0)
    finally:
        os.kill(order_pid, signal.SIGCONT)
    for t in threads:
        t.join()
    print(f"checkouts: {outcomes}")

    # Recovery finishes or compensates what was in flight; poll until the books balance.
    deadline = time.time() + float(os.environ.get("HOSTILE_RECOVERY_S", "60"))
    while True:
        _, product_now = call("GET", f"/api/products/{pid}")
        taken = stock - product_now["stock"]
        ordered, kept, emptied_with_one, duplicates, bad = 0, 0, 0, 0, []
        for user in users:
            _, orders = call("GET", f"/order-api/users/{user}/orders")
            live = [o for o in orders if o["status"] != "CANCELLED"]
            units = sum(i["quantity"] for o in live for i in o["items"] if i["product_id"] == pid)
            ordered += units
            _, cart = call("GET", f"/cart-api/cart/{user}")
            in_cart = sum(i["quantity"] for i in cart["items"])
            if len(live) > 1:
                duplicates += 1
            if in_cart == 0 and len(live) == 1:
                emptied_with_one += 1
            elif in_cart == 1 and not live:
                kept += 1
            else:
                bad.append((user, in_cart, len(live)))
        balanced = taken == ordered and not bad and duplicates == 0
        if balanced or time.time() > deadline:
            break
        time.sleep(1.0)
    print(f"stock taken {taken}, units in live orders {ordered}; carts emptied with one order "
          f"{emptied_with_one}, kept with none {kept}, neither {len(bad)}, with duplicates {duplicates}")
    failures = Failures()
    failures.check(taken == ordered, f"units taken from stock ({taken}) == units in live orders ({ordered})")
    failures.check(not bad, f"every cart emptied with exactly one order or kept with none (not: {bad[:3]})")
    failures.check(duplicates == 0, "no cart has two orders")
    failures.exit()


def logins_case():
    aborted = int(os.environ.get("HOSTILE_ABORTED_LOGINS", "600"))
    user = f"flood-{int(time.time())}-{random.randrange(1 << 30):x}"
    password = "correct horse battery"
    status, body = call("POST", "/user-api/register", {
        "username": user, "email": f"{user}@example.invalid", "password": password,
    })
    if status != 201:
        sys.exit(f"register failed: {status} {body}")
    pid = child_pid("user")
    before = rss_and_threads(pid)
    peak = list(before)
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            rss, threads = rss_and_threads(pid)
            peak[0], peak[1] = max(peak[0], rss), max(peak[1], threads)
            time.sleep(0.05)

    sampler = threading.Thread(target=sample)
    sampler.start()
    # Straight to the user service, as the issue measured it (the gateway passes the hang-up on).
    # Each login names another unknown user (which costs a hash all the same, so that unknown
    # and known names answer alike): the per-username limit must not be what saves the service.
    user_port = int(os.environ["USER_PORT"])

    def abort_one():
        body = json.dumps({"username": f"ghost-{random.randrange(1 << 40):x}", "password": "wrong password!"}).encode()
        request = (f"POST /user-api/login HTTP/1.1\r\nHost: 127.0.0.1:{user_port}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode() + body
        with socket.create_connection(("127.0.0.1", user_port), timeout=5) as s:
            s.sendall(request)
            time.sleep(0.003)

    started = time.time()
    workers = [threading.Thread(target=lambda: [abort_one() for _ in range(aborted // 40)]) for _ in range(40)]
    for w in workers:
        w.start()
    time.sleep(0.5)
    # A real login in the middle of the flood.
    login_started = time.time()
    real = None
    while time.time() - login_started < 30:
        status, _ = call("POST", "/user-api/login", {"username": user, "password": password}, timeout=30)
        if status == 200:
            real = time.time() - login_started
            break
        time.sleep(0.2)  # 503 or 429: the service says to come back
    for w in workers:
        w.join()
    flood = time.time() - started
    time.sleep(2.0)
    stop.set()
    sampler.join()
    after = rss_and_threads(pid)
    print(f"{aborted} aborted logins in {flood:.1f} s; user service RSS {before[0]:.0f} MB before, "
          f"{peak[0]:.0f} MB peak, {after[0]:.0f} MB after; threads {before[1]}, {peak[1]}, {after[1]}")
    print(f"a real login during the flood: {'%.2f s' % real if real is not None else 'never'}")
    failures = Failures()
    # Hashing memory is bounded by the workers times argon2's 19 MiB; 200 MB leaves room for
    # the allocator and the rest of the service (before the bound, 600 hung-up logins took the
    # service from 46 to 276 MB here, and to 2.9 GB in a release build).
    failures.check(peak[0] < 200, f"peak RSS {peak[0]:.0f} MB < 200 MB")
    failures.check(peak[1] < 30, f"peak threads {peak[1]} < 30 (600 hung-up logins grew 5 to 36 before the bound)")
    failures.check(real is not None and real < 10, "a real login succeeded within 10 s")
    failures.exit()


def gateway_case():
    head_timeout = float(os.environ.get("HOSTILE_GATEWAY_HEAD_TIMEOUT_S", "30"))
    grace = float(os.environ.get("HOSTILE_GATEWAY_GRACE_S", "10"))
    count = 100
    conns = []
    for i in range(2 * count):
        s = socket.create_connection((HOST, PORT), timeout=head_timeout + grace + 5)
        if i % 2:  # half a request head, then nothing
            s.sendall(b"GET /api/categories HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        conns.append((("silent", "partial head")[i % 2], s, time.time()))
    closed = {"silent": [], "partial head": []}
    still_open = {"silent": 0, "partial head": 0}
    for kind, s, opened in conns:
        try:
            while s.recv(4096):
                pass
            closed[kind].append(time.time() - opened)
        except (socket.timeout, TimeoutError):
            still_open[kind] += 1
        except OSError:
            closed[kind].append(time.time() - opened)
        finally:
            s.close()
    failures = Failures()
    for kind in closed:
        latest = max(closed[kind], default=float("nan"))
        print(f"{kind}: {len(closed[kind])} of {count} closed by the gateway, the last after {latest:.1f} s; "
              f"{still_open[kind]} still open at {head_timeout + grace + 5:.0f} s")
        failures.check(still_open[kind] == 0 and latest <= head_timeout + grace,
                       f"{kind} connections closed within the head timeout ({head_timeout:.0f} s + {grace:.0f} s)")
    failures.exit()


if __name__ == "__main__":
    cases = {"checkout": checkout_case, "logins": logins_case, "gateway": gateway_case}
    if len(sys.argv) != 2 or sys.argv[1] not in cases:
        sys.exit(f"usage: hostile.py {'|'.join(cases)}")
    cases[sys.argv[1]]()
