use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::json;

use super::*;

use HealthStatus::{Degraded, Healthy, Unhealthy};

fn outcome(status: HealthStatus) -> CheckOutcome {
    match status {
        Healthy => CheckOutcome::healthy(),
        Degraded => CheckOutcome::degraded("d"),
        Unhealthy => CheckOutcome::unhealthy("u"),
    }
}

#[tokio::test]
async fn aggregation_table() {
    use Severity::{Critical, NonCritical};
    // (checks as (status, severity), expected overall)
    let table: &[(&[(HealthStatus, Severity)], HealthStatus)] = &[
        (&[], Healthy),
        (&[(Healthy, Critical)], Healthy),
        (&[(Healthy, NonCritical)], Healthy),
        (&[(Degraded, Critical)], Degraded),
        (&[(Degraded, NonCritical)], Degraded),
        (&[(Unhealthy, Critical)], Unhealthy),
        (&[(Unhealthy, NonCritical)], Degraded),
        (&[(Healthy, Critical), (Unhealthy, NonCritical)], Degraded),
        (&[(Degraded, Critical), (Unhealthy, NonCritical)], Degraded),
        (&[(Unhealthy, NonCritical), (Unhealthy, NonCritical)], Degraded),
        (&[(Unhealthy, Critical), (Healthy, NonCritical)], Unhealthy),
        (
            &[
                (Degraded, NonCritical),
                (Unhealthy, Critical),
                (Healthy, Critical),
            ],
            Unhealthy,
        ),
    ];
    for (checks_spec, expected) in table {
        let checks = HealthChecks::new("svc", "1");
        for (i, &(status, severity)) in checks_spec.iter().enumerate() {
            checks.register_with(
                format!("c{i}"),
                CheckOptions::new().severity(severity),
                move || async move { outcome(status) },
            );
        }
        let report = checks.report().await;
        assert_eq!(report.status, *expected, "{checks_spec:?}");
        assert_eq!(report.checks.len(), checks_spec.len());
        for (i, &(status, severity)) in checks_spec.iter().enumerate() {
            let result = &report.checks[&format!("c{i}")];
            assert_eq!(result.status, status, "a check keeps its own status");
            assert_eq!(result.critical, severity == Critical);
        }
        let http = if *expected == Unhealthy { 503 } else { 200 };
        assert_eq!(report.http_status(), http);
    }
}

#[test]
fn worst_and_cap() {
    assert_eq!(HealthStatus::worst([Degraded, Healthy]), Degraded);
    assert_eq!(HealthStatus::worst([Degraded, Unhealthy, Healthy]), Unhealthy);
    assert_eq!(HealthStatus::worst(std::iter::empty()), Healthy);
    for status in [Healthy, Degraded, Unhealthy] {
        assert_eq!(Severity::Critical.cap(status), status);
    }
    assert_eq!(Severity::NonCritical.cap(Degraded), Degraded);
}

#[test]
fn status_serialises_lowercase_and_round_trips() {
    for (status, text) in [
        (Healthy, "healthy"),
        (Degraded, "degraded"),
        (Unhealthy, "unhealthy"),
    ] {
        assert_eq!(serde_json::to_value(status).unwrap(), json!(text));
        assert_eq!(
            serde_json::from_value::<HealthStatus>(json!(text)).unwrap(),
            status
        );
        assert_eq!(status.to_string(), text);
    }
}

#[tokio::test]
async fn checks_run_concurrently() {
    // Each check waits until the other one has started: run one after the other, they would
    // both time out.
    let barrier = Arc::new(tokio::sync::Barrier::new(2));
    let checks = HealthChecks::new("svc", "1");
    for name in ["a", "b"] {
        let barrier = Arc::clone(&barrier);
        checks.register_with(
            name,
            CheckOptions::new().timeout(Duration::from_secs(30)),
            move || {
                let barrier = Arc::clone(&barrier);
                async move {
                    barrier.wait().await;
                    CheckOutcome::healthy()
                }
            },
        );
    }
    let report = checks.report().await;
    assert_eq!(report.status, Healthy, "{report:?}");
}

#[tokio::test]
async fn a_hanging_check_times_out() {
    let checks = HealthChecks::new("svc", "1");
    checks.register("fast", || async { CheckOutcome::healthy() });
    checks.register_with(
        "hanging",
        CheckOptions::new().timeout(Duration::from_millis(30)),
        std::future::pending::<CheckOutcome>,
    );
    let report = checks.report().await;
    let hanging = &report.checks["hanging"];
    assert_eq!(hanging.status, Unhealthy);
    assert_eq!(hanging.message.as_deref(), Some("timed out after 30ms"));
    assert!(hanging.latency_ms >= 30.0, "{}", hanging.latency_ms);
    assert_eq!(report.checks["fast"].status, Healthy);
    assert_eq!(report.status, Unhealthy);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_check_blocking_its_thread_is_given_up() {
    let checks = HealthChecks::new("svc", "1");
    checks.register_with(
        "blocking",
        CheckOptions::new().timeout(Duration::from_millis(20)),
        || async {
            // A synchronous call inside async code: the check's timeout cannot fire.
            std::thread::sleep(Duration::from_millis(1500));
            CheckOutcome::healthy()
        },
    );
    let report = checks.report().await;
    let blocking = &report.checks["blocking"];
    assert_eq!(blocking.status, Unhealthy);
    assert_eq!(blocking.message.as_deref(), Some("timed out after 20ms"));
    // Given up at timeout + grace, not when the sleep ends.
    assert!(blocking.latency_ms < 1500.0, "{}", blocking.latency_ms);
}

#[tokio::test]
async fn a_panicking_check_is_reported_not_propagated() {
    let checks = HealthChecks::new("svc", "1");
    checks.register("str", || async { panic!("boom") });
    checks.register("string", || async { panic!("{} {}", "formatted", 42) });
    checks.register_with("soft", CheckOptions::new().non_critical(), || async {
        panic!("soft")
    });
    checks.register("fine", || async { CheckOutcome::healthy() });
    let report = checks.report().await;
    assert_eq!(
        report.checks["str"].message.as_deref(),
        Some("check panicked: boom")
    );
    assert_eq!(
        report.checks["string"].message.as_deref(),
        Some("check panicked: formatted 42")
    );
    assert_eq!(report.checks["soft"].status, Unhealthy);
    assert_eq!(report.checks["soft"].contribution(), Degraded);
    assert_eq!(report.checks["fine"].status, Healthy);
    assert_eq!(report.status, Unhealthy);
}

fn counting_check(
    checks: &HealthChecks,
    name: &str,
    options: CheckOptions,
    work: Duration,
    status: HealthStatus,
) -> Arc<AtomicUsize> {
    let runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&runs);
    checks.register_with(name, options, move || {
        counter.fetch_add(1, Ordering::SeqCst);
        async move {
            tokio::time::sleep(work).await;
            outcome(status)
        }
    });
    runs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cached_check_is_single_flight_under_concurrent_callers() {
    let checks = HealthChecks::new("svc", "1");
    let runs = counting_check(
        &checks,
        "expensive",
        CheckOptions::new().cache_for(Duration::from_secs(3600)),
        Duration::from_millis(100),
        Healthy,
    );
    let mut callers = tokio::task::JoinSet::new();
    for _ in 0..10 {
        let checks = checks.clone();
        callers.spawn(async move { checks.report().await });
    }
    let mut cached = 0;
    while let Some(report) = callers.join_next().await {
        let result = &report.unwrap().checks["expensive"];
        assert_eq!(result.status, Healthy);
        cached += usize::from(result.cached);
    }
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "one run for ten concurrent callers"
    );
    assert_eq!(
        cached, 9,
        "every caller but the one that ran it got the cached result"
    );
    // And later callers within the TTL too.
    checks.report().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn cached_result_expires_after_its_ttl() {
    let checks = HealthChecks::new("svc", "1");
    let runs = counting_check(
        &checks,
        "c",
        CheckOptions::new().cache_for(Duration::from_millis(20)),
        Duration::ZERO,
        Healthy,
    );
    checks.report().await;
    assert_eq!(runs.load(Ordering::SeqCst), 1);
    // Sleeping past the TTL makes the result stale whatever the scheduling.
    tokio::time::sleep(Duration::from_millis(60)).await;
    let report = checks.report().await;
    assert!(!report.checks["c"].cached);
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn failures_and_timeouts_are_cached_too() {
    let checks = HealthChecks::new("svc", "1");
    let runs = counting_check(
        &checks,
        "slow",
        CheckOptions::new()
            .timeout(Duration::from_millis(20))
            .cache_for(Duration::from_secs(3600)),
        Duration::from_secs(3600),
        Healthy,
    );
    let first = checks.report().await;
    assert_eq!(
        first.checks["slow"].message.as_deref(),
        Some("timed out after 20ms")
    );
    let second = checks.report().await;
    assert!(second.checks["slow"].cached);
    assert_eq!(
        second.checks["slow"].message.as_deref(),
        Some("timed out after 20ms")
    );
    assert_eq!(
        runs.load(Ordering::SeqCst),
        1,
        "a dependency that hangs is not hammered"
    );
}

#[tokio::test]
async fn uncached_checks_run_every_time() {
    let checks = HealthChecks::new("svc", "1");
    let runs = counting_check(&checks, "c", CheckOptions::new(), Duration::ZERO, Healthy);
    checks.report().await;
    checks.report().await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn readiness_and_liveness_select_checks() {
    let checks = HealthChecks::new("svc", "1");
    checks.register("db", || async { CheckOutcome::degraded("slow") });
    checks.register_with(
        "host",
        CheckOptions::new().kind(CheckKind::Diagnostic),
        || async { CheckOutcome::unhealthy("full") },
    );

    let full = checks.report().await;
    assert_eq!(full.checks.len(), 2);
    assert_eq!(full.status, Unhealthy);

    let ready = checks.readiness().await;
    assert_eq!(ready.checks.keys().collect::<Vec<_>>(), ["db"]);
    assert_eq!(ready.status, Degraded);

    let live = checks.liveness();
    assert!(live.checks.is_empty());
    assert_eq!(live.status, Healthy);
    assert_eq!(live.http_status(), 200);
}

#[tokio::test]
async fn registering_a_name_again_replaces_the_check() {
    let checks = HealthChecks::new("svc", "1");
    checks.register("db", || async { CheckOutcome::unhealthy("old") });
    checks.register("db", || async { CheckOutcome::healthy() });
    let report = checks.report().await;
    assert_eq!(report.checks.len(), 1);
    assert_eq!(report.status, Healthy);
    assert!(checks.unregister("db"));
    assert!(checks.report().await.checks.is_empty());
}

#[tokio::test]
async fn report_json_shape() {
    let checks = HealthChecks::new("backend", "1.0.0");
    checks.register("database", || async {
        CheckOutcome::healthy()
            .with_detail("connection", "ok")
            // Reserved: must not overwrite the real status.
            .with_detail("status", "healthy")
            .with_detail("latency_ms", -1)
    });
    checks.register_with("cart", CheckOptions::new().non_critical(), || async {
        CheckOutcome::from_http_status(http::StatusCode::BAD_GATEWAY)
    });
    let report = checks.report().await;
    let value = serde_json::to_value(&report).unwrap();
    let object = value.as_object().unwrap();
    assert_eq!(
        object.keys().collect::<Vec<_>>(),
        [
            "checks",
            "service",
            "status",
            "timestamp",
            "uptime_seconds",
            "version"
        ]
    );
    assert_eq!(value["status"], "degraded");
    assert_eq!(value["service"], "backend");

    let database = value["checks"]["database"].as_object().unwrap();
    assert_eq!(database["status"], "healthy");
    assert_eq!(database["connection"], "ok");
    assert!(database["latency_ms"].as_f64().unwrap() >= 0.0);
    assert!(!database.contains_key("message"));
    assert!(!database.contains_key("cached"));
    // serialize_map would emit duplicate keys; a reserved detail must not appear at all.
    let text = serde_json::to_string(&report.checks["database"]).unwrap();
    assert_eq!(text.matches("\"status\"").count(), 1, "{text}");
    assert_eq!(text.matches("\"latency_ms\"").count(), 1, "{text}");

    let cart = &value["checks"]["cart"];
    assert_eq!(cart["status"], "degraded");
    assert_eq!(cart["message"], "answered 502 Bad Gateway");
    assert_eq!(cart["response_code"], 502);
    assert_eq!(cart["critical"], false);
}

#[test]
fn outcomes_from_results() {
    let ok: CheckOutcome = Ok::<(), String>(()).into();
    assert_eq!(ok, CheckOutcome::healthy());
    let err: CheckOutcome = Err::<(), _>(std::io::Error::other("refused")).into();
    assert_eq!(err, CheckOutcome::unhealthy("refused"));
}

#[test]
fn health_checks_debug_lists_names_only() {
    let checks = HealthChecks::new("svc", "1");
    checks.register("db", || async { CheckOutcome::healthy() });
    let text = format!("{checks:?}");
    assert!(text.contains("\"db\""), "{text}");
    assert!(text.contains("svc"), "{text}");
}

/// The `obskit_health_status` series of `registry` alone (not the global one), by `check`.
fn gauge_series(registry: &crate::metrics::Registry) -> BTreeMap<String, i64> {
    registry
        .prometheus()
        .gather()
        .into_iter()
        .filter(|family| family.name() == HEALTH_STATUS_METRIC)
        .flat_map(|family| family.get_metric().to_vec())
        .map(|metric| {
            let check = metric
                .get_label()
                .iter()
                .find(|label| label.name() == "check")
                .map(|label| label.value().to_string())
                .expect("every series has a check label");
            (check, metric.get_gauge().get_value() as i64)
        })
        .collect()
}

/// A check whose status the test sets, counting its runs.
fn switchable_check(
    checks: &HealthChecks,
    name: &str,
    options: CheckOptions,
) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let status = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let (read, count) = (Arc::clone(&status), Arc::clone(&runs));
    checks.register_with(name, options, move || {
        count.fetch_add(1, Ordering::SeqCst);
        let status = [Healthy, Degraded, Unhealthy][read.load(Ordering::SeqCst)];
        async move { outcome(status) }
    });
    (status, runs)
}

fn set(switch: &AtomicUsize, status: HealthStatus) {
    switch.store(status.gauge_value() as usize, Ordering::SeqCst);
}

fn watched(checks: &HealthChecks) -> crate::metrics::Registry {
    let registry = crate::metrics::Registry::new();
    HealthGauge::register(&registry).unwrap().watch(checks);
    registry
}

#[tokio::test]
async fn gauge_follows_a_check_flipping_healthy_unhealthy_healthy() {
    let checks = HealthChecks::new("svc", "1");
    let (database, _) = switchable_check(&checks, "database", CheckOptions::new());
    checks.register("cache", || async { CheckOutcome::healthy() });
    let registry = watched(&checks);

    for (status, value) in [(Healthy, 0), (Unhealthy, 2), (Healthy, 0)] {
        set(&database, status);
        checks.report().await;
        let series = gauge_series(&registry);
        assert_eq!(series["database"], value, "{status}: {series:?}");
        assert_eq!(series["overall"], value, "{status}: {series:?}");
        assert_eq!(series["cache"], 0, "{series:?}");
        assert_eq!(series.len(), 3, "{series:?}");
    }
}

#[tokio::test]
async fn gauge_shows_degraded_as_one_and_caps_non_critical_in_overall() {
    let checks = HealthChecks::new("svc", "1");
    let (replica, _) = switchable_check(&checks, "replica", CheckOptions::new());
    let (recommendations, _) =
        switchable_check(&checks, "recommendations", CheckOptions::new().non_critical());
    let registry = watched(&checks);

    set(&replica, Degraded);
    checks.report().await;
    let series = gauge_series(&registry);
    assert_eq!(series["replica"], 1, "{series:?}");
    assert_eq!(series["overall"], 1, "{series:?}");

    // A non-critical check shows its own status; the overall one is what /health says.
    set(&replica, Healthy);
    set(&recommendations, Unhealthy);
    let report = checks.report().await;
    let series = gauge_series(&registry);
    assert_eq!(series["recommendations"], 2, "{series:?}");
    assert_eq!(series["overall"], 1, "{series:?}");
    assert_eq!(series["overall"], report.status.gauge_value());
    assert_eq!(series["replica"], 0, "{series:?}");
}

#[tokio::test]
async fn unregistered_check_disappears_from_the_gauge() {
    let checks = HealthChecks::new("svc", "1");
    let (order, _) = switchable_check(&checks, "order", CheckOptions::new());
    checks.register("cart", || async { CheckOutcome::healthy() });
    let registry = watched(&checks);
    set(&order, Unhealthy);
    checks.report().await;
    assert_eq!(gauge_series(&registry)["order"], 2);

    assert!(checks.unregister("order"));
    // Gone from the very next scrape, before any refresh...
    let series = gauge_series(&registry);
    assert!(!series.contains_key("order"), "{series:?}");
    assert!(series.contains_key("cart"), "{series:?}");
    // ...and the overall status recovers with the next report.
    checks.report().await;
    let series = gauge_series(&registry);
    assert!(!series.contains_key("order"), "{series:?}");
    assert_eq!(series["overall"], 0, "{series:?}");
    assert_eq!(series.len(), 2, "{series:?}");
    assert!(!registry.encode_text().contains(r#"check="order""#));
}

#[tokio::test]
async fn a_scrape_runs_no_check_and_shows_nothing_before_the_first_report() {
    let checks = HealthChecks::new("svc", "1");
    let (_, runs) = switchable_check(&checks, "database", CheckOptions::new());
    let registry = watched(&checks);
    for _ in 0..3 {
        assert!(gauge_series(&registry).is_empty());
        assert!(!registry.encode_text().contains(HEALTH_STATUS_METRIC));
    }
    assert_eq!(runs.load(Ordering::SeqCst), 0, "scrapes never run checks");

    // Readiness is a partial report: it does not feed the gauge.
    checks.readiness().await;
    assert!(gauge_series(&registry).is_empty());

    checks.report().await;
    assert_eq!(runs.load(Ordering::SeqCst), 2);
    for _ in 0..3 {
        assert_eq!(gauge_series(&registry).len(), 2);
    }
    assert_eq!(runs.load(Ordering::SeqCst), 2, "scrapes read the last report");
}

#[tokio::test]
async fn a_check_named_overall_does_not_shadow_the_aggregate() {
    let checks = HealthChecks::new("svc", "1");
    checks.register_with(
        OVERALL_CHECK_LABEL,
        CheckOptions::new().non_critical(),
        || async { CheckOutcome::unhealthy("down") },
    );
    let registry = watched(&checks);
    checks.report().await;
    let series = gauge_series(&registry);
    assert_eq!(series.len(), 1, "{series:?}");
    assert_eq!(series["overall"], 1, "the aggregate, not the check: {series:?}");
}

#[tokio::test]
async fn gauge_of_dropped_checks_is_empty() {
    let checks = HealthChecks::new("svc", "1");
    checks.register("database", || async { CheckOutcome::healthy() });
    let registry = watched(&checks);
    checks.report().await;
    assert_eq!(gauge_series(&registry).len(), 2);
    drop(checks);
    assert!(gauge_series(&registry).is_empty());
}

#[tokio::test]
async fn refresher_keeps_the_gauge_current_and_stops_when_dropped() {
    let checks = HealthChecks::new("svc", "1");
    let (database, runs) = switchable_check(&checks, "database", CheckOptions::new());
    let registry = watched(&checks);
    let refresher = checks.refresh_every(HealthRefresher::MIN_INTERVAL);

    // No report is asked for here: the refresher alone must bring each value.
    for (status, value) in [(Healthy, 0), (Unhealthy, 2), (Degraded, 1), (Healthy, 0)] {
        set(&database, status);
        let mut seen = None;
        for _ in 0..400 {
            seen = gauge_series(&registry).get("database").copied();
            if seen == Some(value) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert_eq!(seen, Some(value), "{status}");
        assert_eq!(gauge_series(&registry)["overall"], value, "{status}");
    }

    drop(refresher);
    // Let a report that was under way when the task was aborted settle, then watch.
    tokio::time::sleep(HealthRefresher::MIN_INTERVAL * 2).await;
    let after_drop = runs.load(Ordering::SeqCst);
    tokio::time::sleep(HealthRefresher::MIN_INTERVAL * 6).await;
    assert_eq!(runs.load(Ordering::SeqCst), after_drop, "the task stopped");
}

#[tokio::test]
async fn later_report_wins_over_an_earlier_one_finishing_last() {
    let checks = HealthChecks::new("svc", "1");
    let slow_runs = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&slow_runs);
    // The first run is slow and unhealthy, later runs fast and healthy.
    checks.register("database", move || {
        let first = counter.fetch_add(1, Ordering::SeqCst) == 0;
        async move {
            if first {
                tokio::time::sleep(Duration::from_millis(300)).await;
                CheckOutcome::unhealthy("stale")
            } else {
                CheckOutcome::healthy()
            }
        }
    });
    let slow = tokio::spawn({
        let checks = checks.clone();
        async move { checks.report().await }
    });
    while slow_runs.load(Ordering::SeqCst) == 0 {
        tokio::task::yield_now().await;
    }
    let fast = checks.report().await;
    assert_eq!(fast.status, Healthy);
    assert_eq!(slow.await.unwrap().status, Unhealthy);
    assert_eq!(
        checks.last_report().unwrap().status,
        Healthy,
        "the newer report is kept"
    );
}
