"""Phase 2: every dashboard and alert expression on the running shop's own metrics, under each
scrape configuration.

  live_e2e.py EXPRS_JSON --prometheus NAME=URL [--prometheus NAME=URL ...] service=METRICS_URL...

Run by scripts/test-monitoring.sh after the shop (scripts/lib/shop.sh) ran under Locust, scraped
by one real Prometheus per configuration (`project` on prometheus.yml, `seed` on the seed's
prometheus.seed.yml, both made loopback by loopback_config.py): the same services under two job
namings. Checks:
  1. the catalogue against reality: every name it lists for the shop is on some service's
     /metrics (check_metrics.py --live-names);
  2. on each Prometheus, every dashboard's template variables resolve as Grafana resolves them
     (label_values over the last minutes; a single-value variable takes its first value, an
     All one its allValue) and none is empty, in particular `$job`, found by build_info's
     service_name whatever the job is called; then every expression over the shop's metrics,
     with those values, evaluates without error through the HTTP API and returns data (an
     alert's expression without its comparison, i.e. the value it compares).
     There is no list of tolerated empty results: a condition a clean run cannot produce (5xx,
     failed Locust requests) is written into the expression as an explicit zero (`or vector(0)`,
     `or <total> * 0`), and the conditions it can produce (4xx, a DELIVERED order, failing
     handlers) are produced by shop_conditions.py beside the load. The only exception is
     ServiceTargetMissing's absent(), empty by definition while every service has a target.
     Selectors that matched nothing inside an expression that returned data (the explicit
     zeros) are listed;
  3. obskit's trace_id exemplars reach each Prometheus on the backend's latency histogram;
  4. autometrics' published SLO rules (monitoring/tests/autometrics/, loaded as they are beside
     obskit's) record series for every indicator of every function objective the shop declares: their
     success-rate rules for a success-rate objective, their latency rules for a latency one;
expressions over Cassandra, Jaeger or nginx metrics are listed as syntax-checked only."""
import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.parse

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools"))
from check_metrics import substitute_grafana  # noqa: E402
from harness import MONITORING, fail, http_get, ok, prom_query  # noqa: E402

SHOP_SOURCES = {"obskit", "backend", "cart", "order", "user", "locust", "prometheus", "objectives"}
# A sample reaches Prometheus one scrape interval (2 s here) after it happened: an empty result
# is queried again for this long before it counts as no data.
SETTLE_S = 10
# How far back a variable's label_values looks (Grafana: the dashboard's time range).
VARIABLE_RANGE_S = 600
SELECTOR = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)(\{[^}]*\})?')


# A comparison with a number, or with a product of numbers (`> (14.4 * 0.001)`), at the end of an
# expression or of an operand of `and`.
COMPARISON = re.compile(r"\s*(>=|>|==|<=|<)\s*(\(\s*[0-9.e+-]+\s*\*\s*[0-9.e+-]+\s*\)|[0-9.e+-]+)\s*(?=$|\band\b)")


def strip_comparisons(expr):
    """An alert's expression without its comparisons with thresholds: the values it compares."""
    return COMPARISON.sub(" ", expr.strip()).strip()


def selectors(expr, names):
    out = []
    for m in SELECTOR.finditer(expr):
        if m.group(1) in names:
            out.append(m.group(0))
    return out


def label_values(prom, selector, label):
    """Grafana's label_values(selector, label): the label's values on the matching series."""
    now = time.time()
    q = urllib.parse.urlencode({"match[]": selector, "start": now - VARIABLE_RANGE_S, "end": now})
    _, _, body = http_get(f"{prom}/api/v1/series?{q}")
    return sorted({series[label] for series in json.loads(body)["data"] if label in series})


def resolve(prom, config, source, variables, cache):
    """The values Grafana would give the dashboard's variables on this Prometheus."""
    dashboard = source.split(":", 1)[0]
    values = {}
    for var in variables:
        key = (dashboard, var["name"])
        if key not in cache:
            found = label_values(prom, substitute_grafana(var["selector"], values), var["label"])
            if not found:
                fail(f"{config}: {dashboard}: variable ${var['name']} has no value "
                     f"(label_values({var['selector']}, {var['label']}) with {values})")
            cache[key] = var["all_value"] if var["all_value"] is not None else found[0]
            print(f"    {config}: {dashboard} ${var['name']} = {cache[key]}"
                  + (f" (All of {len(found)})" if var["all_value"] is not None else ""))
        values[var["name"]] = cache[key]
    return values


def evaluate(config, prom, exprs):
    evaluated, zeros, absent, other = [], [], [], []
    settle_until = time.monotonic() + SETTLE_S
    cache = {}
    for item in exprs:
        if not set(item["sources"]) <= SHOP_SOURCES:
            other.append((item, "syntax-checked only: " + ",".join(sorted(set(item["sources"]) - SHOP_SOURCES))))
            continue
        expr = substitute_grafana(item["raw"], resolve(prom, config, item["source"], item["variables"], cache))
        if item["alert"]:  # an alert's expression is empty while it does not fire: evaluate its value
            expr = strip_comparisons(expr)
        if item["metrics"] == ["up"] and "absent(" in expr:
            try:
                result = prom_query(prom, expr)
            except Exception as e:  # noqa: BLE001
                fail(f"{config}: {item['source']}: {expr}\n  {e}")
            if result:
                fail(f"{config}: {item['source']}: {expr} is not empty: a shop service has no scrape target: {result}")
            absent.append(item)
            continue
        while True:
            try:
                result = prom_query(prom, expr)
            except Exception as e:  # noqa: BLE001
                fail(f"{config}: {item['source']}: {expr}\n  {e}")
            if result or time.monotonic() > settle_until:
                break
            time.sleep(1)
        # last_over_time: Locust's series are stale once its run ended, but still in the windows.
        empty = [sel for sel in selectors(expr, set(item["metrics"]))
                 if not prom_query(prom, f"count(last_over_time({sel}[10m]))")]
        if not result:
            fail(f"{config}: {item['source']}: no data for {expr}\n  empty selectors: {empty or 'none (the arithmetic removed every series)'}")
        evaluated.append(item)
        if empty:
            zeros.append((item, empty))
    ok(f"{config}: {len(evaluated)} of {len(evaluated) + len(absent)} expressions over the shop's metrics evaluated through the API with data "
       f"({len(absent)} absent() left: empty while every service has a target)")
    for item, empty in zeros:
        print(f"    {config}: explicit zero (nothing matched {', '.join(empty)}): {item['source']}")
    by = {}
    for item, why in other:
        by.setdefault(why, []).append(item["source"])
    for why, sources in sorted(by.items()):
        print(f"    {config}: {why}: {len(sources)} expressions")

    backend_jobs = label_values(prom, 'build_info{service_name="backend-service"}', "job")
    if not backend_jobs:
        fail(f"{config}: no job exports the backend's build_info")
    now = time.time()
    q = urllib.parse.urlencode({"query": f'http_request_duration_seconds_bucket{{job="{backend_jobs[0]}"}}',
                                "start": now - 600, "end": now})
    _, _, body = http_get(f"{prom}/api/v1/query_exemplars?{q}")
    data = json.loads(body)["data"]
    trace_ids = {e["labels"].get("trace_id") for s in data for e in s["exemplars"]}
    trace_ids.discard(None)
    if not trace_ids:
        fail(f"{config}: no trace_id exemplars on http_request_duration_seconds_bucket{{job=\"{backend_jobs[0]}\"}}")
    ok(f"{config}: exemplars: {len(trace_ids)} trace ids on the latency buckets of job {backend_jobs[0]} (the panels' jump to Jaeger)")


# autometrics' Sloth SLO ids by indicator kind (obskit-gen's objective_kind label).
AUTOMETRICS_SLO = {"success_rate": "success-rate", "latency": "latency"}


def declared_indicators():
    """(objective_name, objective_kind) of every indicator slo.rules.yml records over the
    function metrics: autometrics' rules know no other (a route's objective is on the HTTP
    metrics, evaluated with obskit's own rules and board)."""
    import yaml
    rules = yaml.safe_load(open(os.path.join(MONITORING, "prometheus/slo.rules.yml")))
    return sorted({(r["labels"]["objective_name"], r["labels"]["objective_kind"])
                   for g in rules["groups"] for r in g["rules"]
                   if "record" in r and "function_calls" in r["expr"]})


def autometrics_rules(config, prom):
    settle_until = time.monotonic() + SETTLE_S
    for name, kind in declared_indicators():
        for record in ("slo:sli_error:ratio_rate5m", "slo:current_burn_rate:ratio"):
            expr = f'{record}{{objective_name="{name}",sloth_slo=~"{AUTOMETRICS_SLO[kind]}-.*"}}'
            while True:
                result = prom_query(prom, expr)
                if result or time.monotonic() > settle_until:
                    break
                time.sleep(1)
            if not result:
                family = "function_calls_total" if kind == "success_rate" else "function_calls_duration_seconds_count"
                calls = prom_query(prom, f'sum by (objective_name) (rate({family}{{objective_name="{name}"}}[5m]))')
                fail(f"{config}: autometrics' published rules recorded nothing for objective {name} ({kind}): {expr}\n"
                     f"  its calls a second over 5m (the rules need 1/60 at least): {calls}")
        ok(f"{config}: autometrics' published rules: {record} and its SLI recorded for objective {name} ({kind}), "
           f"slo {result[0]['metric'].get('sloth_slo')}, value {result[0]['value'][1]}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exprs_json")
    ap.add_argument("--prometheus", action="append", required=True, help="NAME=URL, one per scrape configuration")
    ap.add_argument("targets", nargs="+", help="service=URL of its /metrics")
    args = ap.parse_args()
    exprs_path = args.exprs_json
    proms = [p.split("=", 1) for p in args.prometheus]
    targets = dict(a.split("=", 1) for a in args.targets)
    live = set()
    for name, url in targets.items():
        _, _, text = http_get(url)
        for line in text.splitlines():
            if line and not line.startswith("#"):
                live.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    names_file = os.path.join(os.path.dirname(exprs_path), "live-names.txt")
    with open(names_file, "w") as f:
        f.write("\n".join(sorted(live)))
    r = subprocess.run([sys.executable, os.path.join(MONITORING, "tools/check_metrics.py"), "--live-names", names_file],
                       capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"catalogue vs the running shop:\n{r.stderr}")
    ok(f"every shop metric in the catalogue is exported by the running shop ({len(live)} names scraped)")

    exprs = json.load(open(exprs_path))
    for config, prom in proms:
        evaluate(config, prom.rstrip("/"), exprs)
        autometrics_rules(config, prom.rstrip("/"))


if __name__ == "__main__":
    main()
