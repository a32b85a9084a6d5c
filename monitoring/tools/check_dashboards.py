#!/usr/bin/env python3
"""Structure checks of the Grafana dashboards, the seven written by hand and one per objective that
obskit-gen writes (no Grafana or schema validator installs
here): current dashboard JSON (schemaVersion >= 36), unique uids and panel ids, datasources by
uid and provisioned, every panel typed, placed, with a unit and targets with refIds; latency
panels on obskit histograms show exemplars; a panel whose description names an alert draws its
threshold at that alert's threshold."""
import glob
import json
import os
import re
import sys

import yaml

MONITORING = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EXPECTED = {"backend", "cart", "order", "user", "nginx", "cassandra", "jaeger"}


def objective_boards():
    """objective-NAME for each objective slo.rules.yml records (obskit-gen writes both)."""
    rules = yaml.safe_load(open(os.path.join(MONITORING, "prometheus/slo.rules.yml")))
    return {f"objective-{rule['labels']['objective_name']}" for group in rules["groups"]
            for rule in group["rules"] if "record" in rule}
PANEL_TYPES = {"timeseries", "stat", "heatmap", "gauge", "table", "bargauge", "text", "row", "traces"}


def alert_thresholds():
    out = {}
    files = [os.path.join(MONITORING, "prometheus/alert.rules.yml")]
    for path in files:
        for group in yaml.safe_load(open(path))["groups"]:
            for rule in group["rules"]:
                m = re.search(r"(>=|>|==)\s*([0-9.e+-]+)\s*$", rule["expr"].strip())
                if m:
                    out[rule["alert"]] = (m.group(1), float(m.group(2)))
    return out


def main():
    errors = []
    err = errors.append
    ds = yaml.safe_load(open(os.path.join(MONITORING, "grafana/provisioning/datasources/datasources.yml")))
    ds_uids = {d["uid"]: d["type"] for d in ds["datasources"]}
    prom = [d for d in ds["datasources"] if d["type"] == "prometheus"]
    dest = prom[0]["jsonData"].get("exemplarTraceIdDestinations", []) if prom else []
    if not any(d.get("datasourceUid") in ds_uids and ds_uids[d["datasourceUid"]] == "jaeger" and d.get("name") == "trace_id" for d in dest):
        err("datasources: Prometheus lacks exemplarTraceIdDestinations trace_id -> the Jaeger datasource")
    prov = yaml.safe_load(open(os.path.join(MONITORING, "grafana/provisioning/dashboards/dashboards.yml")))
    if not prov.get("providers") or prov["providers"][0].get("type") != "file":
        err("dashboards provisioning: no file provider")
    thresholds = alert_thresholds()

    files = sorted(glob.glob(os.path.join(MONITORING, "grafana/dashboards/*.json")))
    names = {os.path.basename(f)[:-5] for f in files}
    expected = EXPECTED | objective_boards()
    if names != expected:
        err(f"dashboards: {sorted(names)} != {sorted(expected)}")
    uids, panels_total = set(), 0
    for path in files:
        rel = os.path.basename(path)
        d = json.load(open(path))
        if "dashboard" in d:
            err(f"{rel}: wrapped in {{dashboard: ...}} (that is the HTTP API's envelope, not a provisioned file)")
        for key in ("uid", "title", "schemaVersion", "panels", "time", "templating", "annotations"):
            if key not in d:
                err(f"{rel}: no {key}")
        if not (36 <= d.get("schemaVersion", 0) <= 41):
            err(f"{rel}: schemaVersion {d.get('schemaVersion')} is not current")
        if d.get("uid") in uids or not re.fullmatch(r"[a-zA-Z0-9_-]{1,40}", d.get("uid", "")):
            err(f"{rel}: uid {d.get('uid')!r} duplicate or invalid")
        uids.add(d.get("uid"))
        for var in d.get("templating", {}).get("list", []):
            if var.get("type") == "query" and var.get("datasource", {}).get("uid") not in ds_uids:
                err(f"{rel}: variable {var.get('name')} datasource not provisioned")
        ids = set()
        occupied = []
        for p in d.get("panels", []):
            panels_total += 1
            where = f"{rel}: panel {p.get('id')} {p.get('title')!r}"
            if p.get("id") in ids or not isinstance(p.get("id"), int):
                err(f"{where}: id duplicate or not an integer")
            ids.add(p.get("id"))
            if p.get("type") not in PANEL_TYPES:
                err(f"{where}: type {p.get('type')} (the seed's `graph` is gone from current Grafana)")
            g = p.get("gridPos", {})
            if not all(isinstance(g.get(k), int) for k in "hwxy") or g["x"] + g["w"] > 24:
                err(f"{where}: gridPos {g}")
            else:
                for (ox, oy, ow, oh, oid) in occupied:
                    if g["x"] < ox + ow and ox < g["x"] + g["w"] and g["y"] < oy + oh and oy < g["y"] + g["h"]:
                        err(f"{where}: overlaps panel {oid}")
                occupied.append((g["x"], g["y"], g["w"], g["h"], p.get("id")))
            if p.get("datasource", {}).get("uid") not in ds_uids:
                err(f"{where}: datasource {p.get('datasource')} is not a provisioned uid")
            defaults = p.get("fieldConfig", {}).get("defaults", {})
            if not defaults.get("unit"):
                err(f"{where}: no unit")
            targets = p.get("targets", [])
            if not targets:
                err(f"{where}: no targets")
            refs = [t.get("refId") for t in targets]
            if len(set(refs)) != len(refs) or None in refs:
                err(f"{where}: refIds {refs}")
            for t in targets:
                if t.get("datasource", {}).get("uid") not in ds_uids:
                    err(f"{where} {t.get('refId')}: datasource not a provisioned uid")
                if not t.get("expr"):
                    err(f"{where} {t.get('refId')}: empty expr")
                if "http_request_duration_seconds_bucket" in t.get("expr", "") and "histogram_quantile" in t["expr"] and not t.get("exemplar"):
                    err(f"{where} {t.get('refId')}: latency panel without exemplars")
                if p.get("type") == "heatmap" and t.get("format") != "heatmap":
                    err(f"{where}: heatmap target not in heatmap format")
            m = re.search(r"Threshold line: alert (\w+)\.", p.get("description", ""))
            if m:
                alert = m.group(1)
                steps = defaults.get("thresholds", {}).get("steps", [])
                if alert not in thresholds:
                    err(f"{where}: names alert {alert}, which has no threshold in alert.rules.yml")
                else:
                    op, value = thresholds[alert]
                    if op == "==" and value == 0:  # `up == 0`: red below 1
                        ok_ = steps and steps[0]["color"] == "red" and any(s.get("value") == 1 for s in steps)
                    else:
                        ok_ = any(s.get("color") == "red" and s.get("value") == value for s in steps)
                    if not ok_:
                        err(f"{where}: thresholds {steps} do not mark alert {alert}'s {op} {value}")
                    if p.get("type") == "timeseries" and defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") == "off":
                        err(f"{where}: threshold for {alert} is not drawn")
    if errors:
        print("\n".join(errors), file=sys.stderr)
        sys.exit(1)
    print(f"  ok: {len(files)} dashboards, {panels_total} panels: schema, uids, datasources, units, "
          "exemplars on latency panels, thresholds at the alert thresholds")


if __name__ == "__main__":
    main()
