#!/usr/bin/env python3
"""The single source of truth check: every metric name in every alert rule, dashboard panel and
dashboard variable query must be one that something in the stack exports, as listed in
monitoring/metrics/catalogue.yml.

  check_metrics.py [--promtool-rules OUT.yml] [--exprs-json OUT.json] [--live-names FILE]

--promtool-rules  writes every expression (Grafana variables substituted) as a recording rule,
                  so that `promtool check rules OUT.yml` parses them all with Prometheus's own
                  parser.
--exprs-json      writes [{source, expr, raw, variables, metrics, sources}] for the live
                  evaluation (phase 2): `raw` as written, with the dashboard's template
                  `variables` (name, label_values selector and label, allValue) that the live
                  check resolves against each Prometheus the way Grafana does.
--live-names      a file of metric names scraped from the running shop, one per line: every
                  name the catalogue attributes to the shop's sources (verified: brief) must be
                  in it (the catalogue is then checked against reality, not only the reverse).
Exit status 1 with a list of offenders when a name is unknown."""
import argparse
import glob
import json
import os
import re
import sys

import yaml

MONITORING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Values Grafana substitutes; any valid value does for parsing and name extraction.
GRAFANA_VARS = {"__rate_interval": "1m", "__interval": "1m", "__range": "1h", "__range_s": "3600",
                "__interval_ms": "60000", "__range_ms": "3600000"}

KEYWORDS = {
    "and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right",
    "offset", "bool", "inf", "nan", "atan2",
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk",
    "topk", "quantile",
}
LABEL_LIST_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right"}


# The rule files Prometheus loads (prometheus.yml's rule_files): their expressions are checked
# like the dashboards', and the series the objectives' file records are names boards may use.
RULE_FILES = ["prometheus/alert.rules.yml", "prometheus/slo.rules.yml"]
# Recorded by slo.rules.yml (written by obskit-gen from the objectives in code).
RECORDED_SOURCE = "objectives"


def recorded_names():
    path = os.path.join(MONITORING, "prometheus/slo.rules.yml")
    return {rule["record"] for group in yaml.safe_load(open(path))["groups"]
            for rule in group["rules"] if "record" in rule}


def load_catalogue():
    cat = yaml.safe_load(open(os.path.join(MONITORING, "metrics/catalogue.yml")))["sources"]
    names = {}
    for source, spec in cat.items():
        for n in spec.get("counters", []) + spec.get("gauges", []):
            names[n] = source
        for h in spec.get("histograms", []):
            for suffix in ("_bucket", "_sum", "_count"):
                names[h + suffix] = source
    for n in recorded_names():
        names[n] = RECORDED_SOURCE
    return cat, names


def substitute_grafana(expr, values=None):
    """Grafana's built-ins by GRAFANA_VARS, template variables by `values` (name -> text, as
    resolved against a live Prometheus) or, without it, by `.*` (they sit in regex matchers)."""
    def repl(m):
        name = m.group(1) or m.group(2)
        name = name.split(":")[0]
        if name in GRAFANA_VARS:
            return GRAFANA_VARS[name]
        if values is None:
            return ".*"
        return values[name]  # a variable the dashboard does not define fails loudly
    return re.sub(r"\$\{([A-Za-z0-9_:]+)\}|\$([A-Za-z_][A-Za-z0-9_]*)", repl, expr)


def metric_names(expr):
    """Metric names a PromQL expression selects: identifiers that are not functions, keywords,
    label names (inside {...}, by/without/on/ignoring lists) or durations."""
    names, i, n = [], 0, len(expr)
    while i < n:
        c = expr[i]
        if c in "\"'`":
            j = i + 1
            while j < n and expr[j] != c:
                j += 2 if expr[j] == "\\" else 1
            i = j + 1
        elif c == "{":
            depth_str = None
            j = i + 1
            while j < n:
                if depth_str:
                    if expr[j] == "\\":
                        j += 1
                    elif expr[j] == depth_str:
                        depth_str = None
                elif expr[j] in "\"'`":
                    depth_str = expr[j]
                elif expr[j] == "}":
                    break
                j += 1
            i = j + 1
        elif c == "[":
            i = expr.index("]", i) + 1
        elif c == "#":
            i = expr.find("\n", i) if "\n" in expr[i:] else n
        elif c.isalpha() or c in "_:":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in "_:"):
                j += 1
            word = expr[i:j]
            k = j
            while k < n and expr[k].isspace():
                k += 1
            nxt = expr[k] if k < n else ""
            if word.lower() in LABEL_LIST_KEYWORDS and nxt == "(":
                i = expr.index(")", k) + 1
                continue
            if word.lower() == "offset":
                i = k
                while i < n and (expr[i].isalnum() or expr[i] in "-_"):
                    i += 1
                continue
            if word.lower() not in KEYWORDS and nxt != "(":
                names.append(word)
            i = j
        elif c.isdigit() or c == ".":
            j = i
            while j < n and (expr[j].isalnum() or expr[j] in ".+-" and expr[j - 1] in "eE"):
                j += 1
            i = max(j, i + 1)
        else:
            i += 1
    return names


# A shop service's scrape job is `backend` in prometheus.yml and `backend-service` in the seed's
# prometheus.seed.yml: an expression that names it works under one of them only. Services are
# found by build_info{service_name} (dashboards: `$job`); only `up`, which a dead or missing
# target has without any build_info, may name jobs, and then both names.
SHOP_JOB = re.compile(r"(backend|cart|order|user)")
JOB_MATCHER = re.compile(r'([a-zA-Z_:][a-zA-Z0-9_:]*)?\{[^}]*?\bjob\s*(=~|=|!=|!~)\s*"([^"]*)"')


def job_name_selectors(expr):
    """Selectors (other than on `up`) that pick a shop service by a literal job name."""
    return [m.group(0) for m in JOB_MATCHER.finditer(expr)
            if m.group(1) != "up" and "$" not in m.group(3) and SHOP_JOB.search(m.group(3))]


def rule_exprs(path):
    for group in yaml.safe_load(open(path))["groups"]:
        for rule in group["rules"]:
            yield f"{os.path.relpath(path, MONITORING)}:{rule.get('alert') or rule.get('record')}", rule["expr"], [], "alert" in rule


def dashboard_exprs(path):
    dash = json.load(open(path))
    rel = os.path.relpath(path, MONITORING)
    variables = []
    for var in dash.get("templating", {}).get("list", []):
        if var.get("type") == "query":
            q = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
            m = re.fullmatch(r"\s*label_values\((.*),\s*([A-Za-z_][A-Za-z0-9_]*)\)\s*", q)
            if not m:
                raise SystemExit(f"{rel}: variable {var['name']}: unsupported query {q!r}")
            # a variable's query may use the variables above it (endpoint's uses $job)
            yield f"{rel}:var {var['name']}", m.group(1), list(variables), False
            variables.append({"name": var["name"], "selector": m.group(1), "label": m.group(2),
                              "all_value": var.get("allValue") if var.get("includeAll") else None})

    def panels(ps):
        for p in ps:
            yield p
            yield from panels(p.get("panels", []))
    for p in panels(dash["panels"]):
        for t in p.get("targets", []):
            if "expr" in t:
                yield f"{rel}:panel {p['id']} {p['title']!r} {t['refId']}", t["expr"], variables, False


def self_test():
    """The extractor on tricky expressions, and the seed's wrong names refused."""
    cases = {
        'sum by (job, le) (rate(a_bucket{job="x", le=~"0.5|1"}[5m] offset 1h)) / on (job) group_left(le) b': ["a_bucket", "b"],
        'histogram_quantile(0.99, sum without (instance) (rate(c{s="a{b}"}[$__rate_interval]))) > 1e3': ["c"],
        'absent(up{job="x"}) or vector(0) and d unless count by (x) (e)': ["up", "d", "e"],
        'label_replace(f, "dst", "$1", "src", "(.*)") * bool 2': ["f"],
    }
    for expr, want in cases.items():
        got = metric_names(substitute_grafana(expr))
        assert got == want, f"{expr}: {got} != {want}"
    assert job_name_selectors('rate(a{job="cart", x="y"}[1m]) + b{x="1",job=~"order-service"}') == \
        ['a{job="cart"', 'b{x="1",job=~"order-service"']
    assert job_name_selectors('up{job=~"cart|cart-service"} + a{job=~"$job"} + c{job="locust"} + d{endpoint="/cart"}') == []
    _, known = load_catalogue()
    for seed_name in ("cart_value_distribution_bucket", "order_status_changes", "profile_aggregation_duration_bucket",
                      "org_apache_cassandra_metrics_ClientRequest_Read_Latency_99thPercentile",
                      "nginx_http_request_duration_seconds_bucket", "jaeger_tracer_spans_bucket",
                      "cassandra_query_duration_sum", "http_requests_concurrent"):
        assert seed_name not in known, seed_name
    print("  ok: extractor and job-name self-test; the seed's non-existent names are not in the catalogue")


def main():
    if sys.argv[1:] == ["--self-test"]:
        return self_test()
    ap = argparse.ArgumentParser()
    ap.add_argument("--promtool-rules")
    ap.add_argument("--exprs-json")
    ap.add_argument("--live-names")
    args = ap.parse_args()

    cat, known = load_catalogue()
    items = []
    for path in RULE_FILES:
        items += list(rule_exprs(os.path.join(MONITORING, path)))
    for path in sorted(glob.glob(os.path.join(MONITORING, "grafana/dashboards/*.json"))):
        items += list(dashboard_exprs(path))

    errors, out, rules = [], [], []
    allowed = known
    for source, expr, variables, is_alert in items:
        concrete = substitute_grafana(expr)
        names = metric_names(concrete)
        if not names:
            errors.append(f"{source}: no metric name found in {expr!r}")
        for sel in job_name_selectors(expr):
            errors.append(f"{source}: {sel} selects a service by its job name, which differs between "
                          "prometheus.yml and the seed's config (use $job or build_info{service_name})")
        for name in names:
            if name not in allowed:
                errors.append(f"{source}: {name} is not exported by anything in the stack")
        out.append({"source": source, "expr": concrete, "raw": expr, "variables": variables, "alert": is_alert,
                    "metrics": sorted(set(names)),
                    "sources": sorted({allowed.get(n, "?") for n in names})})
        rules.append({"record": f"check:expr_{len(rules)}", "expr": concrete})

    if args.live_names:
        live = {line.strip() for line in open(args.live_names) if line.strip()}
        shop_sources = [s for s, spec in cat.items() if spec.get("verified") == "brief" and s != "locust"]
        for name, source in sorted(known.items()):
            if source in shop_sources and name not in live:
                errors.append(f"catalogue lists {name} ({source}) but the running shop does not export it")

    if args.promtool_rules:
        with open(args.promtool_rules, "w") as f:
            yaml.safe_dump({"groups": [{"name": "every-dashboard-and-alert-expression", "rules": rules}]}, f, width=1000)
    if args.exprs_json:
        with open(args.exprs_json, "w") as f:
            json.dump(out, f, indent=1)

    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    by_source = {}
    for item in out:
        for s in item["sources"]:
            by_source[s] = by_source.get(s, 0) + 1
    print(f"  ok: {len(out)} expressions, every metric name in the catalogue "
          f"(expressions per source: {', '.join(f'{k} {v}' for k, v in sorted(by_source.items()))})")


if __name__ == "__main__":
    main()
