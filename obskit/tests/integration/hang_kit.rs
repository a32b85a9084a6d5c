//! The hang kit on a real server: `/debug/requests` lists a request that is stuck, with the open
//! span it is stuck in; `/debug/tasks` dumps where the runtime's tasks wait; the `tokio_*`
//! figures in `/metrics` follow the load.

use std::convert::Infallible;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response};
use obskit::http::RequestBody;
use obskit::instrumented;
use obskit::metrics::Registry;
use obskit::Obskit;
use serde_json::Value;

use crate::common::{Served, SINK_LOCK};

/// Lets the `/slow` requests go.
static RELEASE: tokio::sync::Notify = tokio::sync::Notify::const_new();

/// The line of the `.await` `/slow` requests wait at (a task dump names it).
const SLOW_AWAIT_LINE: u32 = line!() + 3;
#[instrumented]
async fn hang_kit_slow_step() {
    RELEASE.notified().await;
}

/// Holds a worker for `ms` milliseconds.
fn spin(ms: u64) {
    let started = Instant::now();
    let mut x = 1u64;
    while started.elapsed() < Duration::from_millis(ms) {
        x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
    }
}

async fn service(request: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    match request.uri().path() {
        "/slow" => hang_kit_slow_step().await,
        "/spin" => spin(30),
        "/hold" => tokio::time::sleep(Duration::from_millis(800)).await,
        _ => {}
    }
    Ok(Response::new(Full::new(Bytes::from_static(b"done"))))
}

async fn start() -> Served {
    let builder = Obskit::builder()
        .service("hang-kit")
        .version("1.0.0")
        .registry(Registry::new())
        .routes(["/slow", "/spin", "/hold"]);
    Served::start(builder, |request| Box::pin(service(request))).await
}

async fn get(server: &Served, path: &str) -> reqwest::Response {
    reqwest::get(format!("http://{}{path}", server.addr))
        .await
        .expect("the server answers")
}

async fn requests_report(server: &Served) -> Value {
    get(server, "/debug/requests").await.json().await.unwrap()
}

/// The `/slow` entries of a `/debug/requests` report.
fn slow_requests(report: &Value) -> Vec<Value> {
    report["requests"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["route"] == "/slow")
        .cloned()
        .collect()
}

// The guard is held by the test's own thread, which `block_on` never leaves.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_request_is_listed_with_the_span_it_waits_in_and_the_task_dump_names_its_await() {
    // Spans need the process-wide sink, which span tests swap: not while this runs.
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let server = start().await;
    let stuck = tokio::spawn(reqwest::get(format!("http://{}/slow", server.addr)));

    let deadline = Instant::now() + Duration::from_secs(10);
    let first = loop {
        // Listed from its head on; its span opens once the handler has reached it.
        let report = requests_report(&server).await;
        if slow_requests(&report)
            .iter()
            .any(|r| !r["open_spans"].as_array().unwrap().is_empty())
        {
            break report;
        }
        assert!(
            Instant::now() < deadline,
            "the stuck request is never listed: {report:#}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let slow = &slow_requests(&first)[0];
    assert_eq!(slow["method"], "GET", "{first:#}");
    assert!(
        slow["trace_id"].as_str().is_some_and(|t| t.len() == 32),
        "{first:#}"
    );
    let spans = slow["open_spans"].as_array().unwrap();
    assert!(
        spans
            .iter()
            .any(|s| s["name"] == "hang_kit_slow_step" && s["trace_id"] == slow["trace_id"]),
        "the request's open span, in its trace: {first:#}"
    );
    // The `/debug/requests` request itself is in flight too, younger: oldest first.
    let ages: Vec<f64> = first["requests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["age_seconds"].as_f64().unwrap())
        .collect();
    assert!(ages.windows(2).all(|w| w[0] >= w[1]), "oldest first: {ages:?}");

    tokio::time::sleep(Duration::from_millis(300)).await;
    let later = requests_report(&server).await;
    let age = |report: &Value| slow_requests(report)[0]["age_seconds"].as_f64().unwrap();
    assert!(
        age(&later) >= age(&first) + 0.25,
        "it ages: {first:#} then {later:#}"
    );
    assert!(
        !later.to_string().contains("/debug/requests?"),
        "no query or path is shown"
    );

    // Where it waits, in a task dump (a build with `--cfg tokio_unstable` and `taskdump`).
    let dump = get(&server, "/debug/tasks").await;
    if obskit::debug::tasks::SUPPORTED {
        assert_eq!(dump.status(), 200);
        let dump: Value = dump.json().await.unwrap();
        let at = format!("hang_kit.rs:{SLOW_AWAIT_LINE}:");
        let traces: Vec<&str> = dump["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace"].as_str().unwrap())
            .collect();
        assert!(
            traces.iter().any(|t| t.contains(&at)),
            "a task waits at {at}: {traces:#?}"
        );
    } else {
        assert_eq!(dump.status(), 501);
        let body: Value = dump.json().await.unwrap();
        assert!(
            body["message"].as_str().unwrap().contains("tokio_unstable"),
            "{body}"
        );
    }
    // A dump pauses every worker: never for a HEAD.
    let head = reqwest::Client::new()
        .head(format!("http://{}/debug/tasks", server.addr))
        .send()
        .await
        .unwrap();
    assert_eq!(head.status(), 405);
    let bad = get(&server, "/debug/tasks?timeout=0").await;
    assert_eq!(bad.status(), 400);
    assert_eq!(get(&server, "/debug/requests?limit=0").await.status(), 400);

    RELEASE.notify_waiters();
    let answered = stuck.await.unwrap().unwrap();
    assert_eq!(answered.status(), 200);
    let after = requests_report(&server).await;
    assert!(
        slow_requests(&after).is_empty(),
        "an answered request is gone: {after:#}"
    );
    assert!(
        !after["other_spans"].to_string().contains("hang_kit_slow_step"),
        "and so is its span: {after:#}"
    );
    server.shutdown().await;
}

fn value(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series).and_then(|rest| rest.strip_prefix(' ')))
        .unwrap_or_else(|| panic!("{series} in {metrics}"))
        .parse()
        .unwrap()
}

fn busy_seconds(metrics: &str) -> f64 {
    (0..2)
        .map(|w| {
            value(
                metrics,
                &format!("tokio_worker_busy_seconds_total{{worker=\"{w}\"}}"),
            )
        })
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_runtime_figures_follow_the_load() {
    let server = start().await;
    let metrics = || async { get(&server, "/metrics").await.text().await.unwrap() };
    let idle = metrics().await;
    assert_eq!(value(&idle, "tokio_workers"), 2.0, "{idle}");
    crate::common::promtool_check_metrics(&idle);

    // Requests that wait: each holds a connection task (and its request) alive.
    // Few: they are slow traces, and the process-wide `/debug/traces` keeps ten a minute.
    let held: Vec<_> = (0..8)
        .map(|_| tokio::spawn(reqwest::get(format!("http://{}/hold", server.addr))))
        .collect();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let holding = metrics().await;
    assert!(
        value(&holding, "tokio_alive_tasks") >= value(&idle, "tokio_alive_tasks") + 8.0,
        "8 requests held: {idle}\n---\n{holding}"
    );
    for request in held {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }

    // Requests that compute: 20 × 30 ms of a worker's time.
    let spun: Vec<_> = (0..20)
        .map(|_| tokio::spawn(reqwest::get(format!("http://{}/spin", server.addr))))
        .collect();
    for request in spun {
        assert_eq!(request.await.unwrap().unwrap().status(), 200);
    }
    tokio::task::spawn_blocking(|| ()).await.unwrap();
    // A worker hands its figures to the runtime when it parks or every few dozen tasks: a
    // moment after the load.
    let deadline = Instant::now() + Duration::from_secs(10);
    let after = loop {
        let after = metrics().await;
        if busy_seconds(&after) >= busy_seconds(&idle) + 0.5 {
            break after;
        }
        assert!(
            Instant::now() < deadline,
            "600 ms of work shows as busy time: {idle}\n---\n{after}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(value(&after, "tokio_worker_park_total{worker=\"0\"}") > 0.0);
    #[cfg(tokio_unstable)]
    assert!(value(&after, "tokio_blocking_threads") >= 1.0, "{after}");
    server.shutdown().await;
}
