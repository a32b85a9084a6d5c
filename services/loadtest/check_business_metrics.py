"""Checks that every business metric of the shop has a non-zero sample on its service's
/metrics, polling until a timeout (the order lifecycle and cart abandonment happen some seconds
after the load that causes them).

    python3 check_business_metrics.py [--timeout S] backend=URL cart=URL order=URL user=URL

Exits 0 when all are there; 1, listing what is missing, otherwise. For histograms a non-zero
sample is a `_count` above zero.
"""

import argparse
import sys
import time
import urllib.request

# The list, by the service that exports each (with bounded labels only).
EXPECTED = {
    "backend": [
        "product_views_total",
        "category_requests_total",
        "admin_operations_total",
        "cassandra_query_duration_seconds_count",
    ],
    "cart": [
        "cart_items_added_total",
        "cart_checkout_total",
        "cart_abandonment_total",
        "cart_total_value_count",
        "cassandra_query_duration_seconds_count",
    ],
    "order": [
        "orders_created_total",
        "order_status_changes_total",
        "order_completion_seconds_count",
        "delivery_time_seconds_count",
        "cassandra_query_duration_seconds_count",
    ],
    "user": [
        "user_registrations_total",
        "login_attempts_total",
        "jwt_operations_total",
        "profile_aggregation_seconds_count",
        "cassandra_query_duration_seconds_count",
    ],
}


def samples(text):
    """(name, value) of every sample line of a Prometheus text exposition."""
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name_and_labels, _, rest = line.partition(" ")
        if "{" in line:
            name_and_labels, _, rest = line.partition("}")
            rest = rest.strip()
        name = name_and_labels.split("{", 1)[0]
        try:
            yield name, float(rest.split()[0])
        except (ValueError, IndexError):
            continue


def missing(urls):
    out = []
    for service, names in EXPECTED.items():
        try:
            with urllib.request.urlopen(urls[service], timeout=5) as response:
                text = response.read().decode()
        except Exception as e:  # a service that does not answer misses everything
            out.extend(f"{service}: {n} ({e})" for n in names)
            continue
        nonzero = {name for name, value in samples(text) if value > 0}
        out.extend(f"{service}: {n}" for n in names if n not in nonzero)
    return out


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=60)
    parser.add_argument("urls", nargs="+", help="service=URL of its /metrics")
    args = parser.parse_args()
    urls = dict(u.split("=", 1) for u in args.urls)
    deadline = time.monotonic() + args.timeout
    while True:
        gone = missing(urls)
        if not gone:
            total = sum(len(v) for v in EXPECTED.values())
            print(f"business metrics: all {total} have a non-zero sample")
            return 0
        if time.monotonic() >= deadline:
            print("business metrics without a non-zero sample:\n  " + "\n  ".join(gone))
            return 1
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
