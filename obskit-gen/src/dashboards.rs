//! One Grafana dashboard per objective, over the series `slo.rules.yml` records: per indicator,
//! the indicator itself (the share of good calls), the error budget left over the budget's
//! period, and the burn rate over each window the alerts use, with the alerts' rates drawn.

use serde_json::{json, Value};

use obskit::objectives::Objective;

use super::rules::{record_name, BUDGET_PERIOD, PAIRS, WINDOWS};
use super::{budget, Sli};

/// The provisioned Prometheus datasource (monitoring/grafana/provisioning/datasources).
fn datasource() -> Value {
    json!({"type": "prometheus", "uid": "prometheus"})
}

/// The dashboard's file name under monitoring/grafana/dashboards/, without `.json`.
pub(crate) fn file_stem(objective: &Objective) -> String {
    format!("objective-{}", objective.name())
}

fn target(ref_id: &str, expr: String, legend: &str) -> Value {
    json!({
        "refId": ref_id,
        "datasource": datasource(),
        "expr": expr,
        "legendFormat": legend,
        "range": true,
        "instant": false,
        "exemplar": false,
        "editorMode": "code"
    })
}

/// A panel at (x, y) of size (w, h).
struct Place(i64, i64, i64, i64);

fn panel(id: i64, kind: &str, title: &str, description: String, place: Place) -> Value {
    let Place(x, y, w, h) = place;
    json!({
        "id": id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": datasource(),
        "gridPos": {"h": h, "w": w, "x": x, "y": y},
    })
}

fn steps(steps: &[(&str, Option<f64>)]) -> Value {
    let steps: Vec<Value> = steps
        .iter()
        .map(|(color, value)| json!({"color": color, "value": value}))
        .collect();
    json!({"mode": "absolute", "steps": steps})
}

fn stat_options() -> Value {
    json!({
        "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": false},
        "colorMode": "value",
        "graphMode": "area",
        "justifyMode": "auto",
        "orientation": "auto",
        "textMode": "auto"
    })
}

fn timeseries_custom(thresholds_drawn: bool) -> Value {
    json!({
        "drawStyle": "line",
        "lineWidth": 1,
        "fillOpacity": 0,
        "showPoints": "never",
        "spanNulls": false,
        "thresholdsStyle": {"mode": if thresholds_drawn { "line" } else { "off" }}
    })
}

/// The panels of one indicator, from row `y` down; returns them and the next free row.
fn indicator_panels(objective: &Objective, sli: Sli, first_id: i64, y: i64) -> (Vec<Value>, i64) {
    let name = objective.name();
    let kind = sli.kind();
    let selector = format!("{{objective_name=\"{name}\",objective_kind=\"{kind}\"}}");
    let budget_text = budget(sli.percentile());
    let target_ratio: f64 = 1.0 - budget_text.parse::<f64>().expect("a budget is a number");
    let (what, good) = match sli {
        Sli::SuccessRate(p) => (
            format!("Success rate: {} % of calls succeed", p.as_str()),
            "calls that succeeded".to_string(),
        ),
        Sli::Latency(t, p) => (
            format!("Latency: {} % of calls within {} s", p.as_str(), t.as_str()),
            format!("calls that took at most {} s", t.as_str()),
        ),
    };
    let record = |window: &str| format!("{}{selector}", record_name(window));
    let mut panels = Vec::new();

    let mut sli_now = panel(
        first_id,
        "stat",
        &format!("{what}: now (1h)"),
        format!("The share of {good} over the last hour; red below the target."),
        Place(0, y, 6, 6),
    );
    sli_now["targets"] = json!([target("A", format!("1 - {}", record("1h")), kind)]);
    sli_now["options"] = stat_options();
    sli_now["fieldConfig"] = json!({
        "defaults": {
            "unit": "percentunit",
            "decimals": 3,
            "color": {"mode": "thresholds"},
            "thresholds": steps(&[("red", None), ("green", Some(target_ratio))])
        },
        "overrides": []
    });
    panels.push(sli_now);

    let mut budget_left = panel(
        first_id + 1,
        "stat",
        &format!("Error budget left ({BUDGET_PERIOD})"),
        format!(
            "1 - (share of bad calls over {BUDGET_PERIOD}) / budget ({budget_text}): what is left of \
             the {BUDGET_PERIOD} budget; 0 % or less means the objective is missed."
        ),
        Place(6, y, 6, 6),
    );
    budget_left["targets"] = json!([target(
        "A",
        format!("1 - {} / {budget_text}", record(BUDGET_PERIOD)),
        kind
    )]);
    budget_left["options"] = stat_options();
    budget_left["fieldConfig"] = json!({
        "defaults": {
            "unit": "percentunit",
            "decimals": 1,
            "color": {"mode": "thresholds"},
            "thresholds": steps(&[("red", None), ("orange", Some(0.25)), ("green", Some(0.5))])
        },
        "overrides": []
    });
    panels.push(budget_left);

    let mut sli_over_time = panel(
        first_id + 2,
        "timeseries",
        &format!("{what}: over time"),
        format!(
            "The share of {good}, over 5 minutes and over an hour; the line is the target ({target_ratio})."
        ),
        Place(12, y, 12, 6),
    );
    sli_over_time["targets"] = json!([
        target("A", format!("1 - {}", record("5m")), "5m"),
        target("B", format!("1 - {}", record("1h")), "1h"),
    ]);
    sli_over_time["fieldConfig"] = json!({
        "defaults": {
            "unit": "percentunit",
            "custom": timeseries_custom(true),
            "color": {"mode": "palette-classic"},
            "thresholds": steps(&[("red", None), ("green", Some(target_ratio))])
        },
        "overrides": []
    });
    panels.push(sli_over_time);

    let mut burn = panel(
        first_id + 3,
        "timeseries",
        "Burn rate by window",
        format!(
            "How fast the budget burns: the share of bad calls over each window divided by the budget \
             ({budget_text}); 1 spends exactly the {BUDGET_PERIOD} budget. Alert ObjectiveErrorBudgetBurn \
             fires when a long and a short window are both above their pair's rate: {}.",
            PAIRS
                .iter()
                .map(|(long, short, rate, severity)| format!("{long}/{short} at {rate}x ({severity})"))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Place(0, y + 6, 24, 8),
    );
    let alert_windows: Vec<&str> = WINDOWS.iter().copied().filter(|w| *w != BUDGET_PERIOD).collect();
    let targets: Vec<Value> = alert_windows
        .iter()
        .enumerate()
        .map(|(i, window)| {
            let ref_id = char::from(b'A' + u8::try_from(i).expect("fewer than 26 windows")).to_string();
            target(&ref_id, format!("{} / {budget_text}", record(window)), window)
        })
        .collect();
    burn["targets"] = Value::Array(targets);
    let mut rates: Vec<(&str, Option<f64>)> = vec![("green", None)];
    rates.extend(PAIRS.iter().rev().map(|(_, _, rate, severity)| {
        (
            if *severity == "critical" { "red" } else { "orange" },
            Some(*rate),
        )
    }));
    burn["fieldConfig"] = json!({
        "defaults": {
            "unit": "none",
            "decimals": 2,
            "custom": timeseries_custom(true),
            "color": {"mode": "palette-classic"},
            "thresholds": steps(&rates)
        },
        "overrides": []
    });
    panels.push(burn);
    (panels, y + 14)
}

/// The dashboard of `objective`, as the JSON file Grafana provisions.
pub(crate) fn dashboard(objective: &Objective) -> String {
    let name = objective.name();
    let mut panels = Vec::new();
    let mut y = 0;
    for (i, sli) in Sli::of(objective).into_iter().enumerate() {
        let first_id = i64::try_from(i).expect("few indicators") * 10 + 1;
        let (more, next) = indicator_panels(objective, sli, first_id, y);
        panels.extend(more);
        y = next;
    }
    let dashboard = json!({
        "uid": file_stem(objective),
        "title": format!("Objective: {name}"),
        "description": format!(
            "Generated by obskit-gen from the objective `{name}` declared in services/shop-common/src/objectives.rs \
             (do not edit; run `cargo run -p obskit-gen`). Reads the series of monitoring/prometheus/slo.rules.yml. \
             Runbook: monitoring/RUNBOOK.md, \"Objective: {name}\"."
        ),
        "tags": ["shop", "objective"],
        "schemaVersion": 39,
        "version": 1,
        "editable": false,
        "graphTooltip": 1,
        "time": {"from": "now-6h", "to": "now"},
        "refresh": "30s",
        "timezone": "browser",
        "fiscalYearStartMonth": 0,
        "liveNow": false,
        "weekStart": "",
        "timepicker": {},
        "links": [],
        "annotations": {"list": [{
            "builtIn": 1,
            "datasource": {"type": "grafana", "uid": "-- Grafana --"},
            "enable": true,
            "hide": true,
            "iconColor": "rgba(0, 211, 255, 1)",
            "name": "Annotations & Alerts",
            "type": "dashboard"
        }]},
        "templating": {"list": []},
        "panels": panels
    });
    let mut text = serde_json::to_string_pretty(&dashboard).expect("a JSON value serializes");
    text.push('\n');
    text
}
