//! `/debug/traces` and trace-context propagation through a real server (`Obskit::serve`) and
//! real HTTP. The span sink is process-wide: these tests hold [`SINK_LOCK`], and since the
//! buffer is process-wide too they look only at their own trace ids.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use obskit::admin::AdminAccess;
use obskit::http::{MatchedRoute, RequestBody};
use obskit::metrics::Registry;
use obskit::trace::{self, propagation::parse_traceparent, SpanKind};
use obskit::Obskit;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::SINK_LOCK;

const ROUTES: [&str; 2] = ["/api/orders/{id}", "/api/fail"];

/// A database call as the seed's services make them, with attributes that must never be shown
/// as they are.
#[obskit::instrumented]
async fn load_order(id: String) -> String {
    let _query = trace::span("cassandra_query")
        .kind(SpanKind::Client)
        .attr("db.system.name", "cassandra")
        .attr("db.connection_string", "cassandra://app:s3cr3t-pw@db:9042")
        .attr("auth_token", "tok-very-secret")
        .start();
    if id == "slow" {
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    format!(r#"{{"id":"{id}"}}"#)
}

async fn handler(request: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = MatchedRoute::of(&request);
    let (status, body) = match route.map(|r| (r.template(), r.param("id"))) {
        Some(("/api/orders/{id}", Some(id))) => (StatusCode::OK, load_order(id.to_string()).await),
        Some(("/api/fail", _)) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            r#"{"error":"boom"}"#.to_string(),
        ),
        _ => (StatusCode::NOT_FOUND, String::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

struct Served {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(builder: obskit::ObskitBuilder) -> Served {
        let obskit = builder.build().expect("obskit builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            obskit
                .serve_with_shutdown(listener, hyper::service::service_fn(handler), shutdown)
                .await
        });
        Served {
            addr,
            stop: Some(stop),
            task,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn traces(&self, query: &str) -> Value {
        let response = reqwest::get(self.url(&format!("/debug/traces?{query}")))
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let text = response.text().await.unwrap();
        for secret in ["s3cr3t-pw", "tok-very-secret"] {
            assert!(!text.contains(secret), "{secret} served by /debug/traces");
        }
        serde_json::from_str(&text).unwrap()
    }

    /// The trace `id` once it holds `spans` spans: a server span ends when the server has
    /// dropped the response body, which may be just after the client read all of it.
    async fn trace(&self, id: u128, spans: usize) -> Value {
        for _ in 0..100 {
            let report = self.traces(&format!("trace_id={id:032x}")).await;
            let trace = &report["traces"][0];
            if trace["span_count"] == spans {
                return trace.clone();
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("trace {id:032x} never held {spans} spans");
    }

    async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        self.task.await.unwrap().unwrap();
    }
}

/// Distinctive trace ids, so that spans from other tests' servers are told apart.
fn trace_id(n: u128) -> u128 {
    0x0b5e_7e57_0000_0000_0000_0000_0000_0000 | n
}

fn traceparent(n: u128, sampled: bool) -> String {
    format!(
        "00-{:032x}-{:016x}-0{}",
        trace_id(n),
        0x1000 + n,
        u8::from(sampled)
    )
}

fn ids(report: &Value) -> Vec<u128> {
    report["traces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| u128::from_str_radix(t["trace_id"].as_str().unwrap(), 16).unwrap())
        .filter(|id| id >> 64 == trace_id(0) >> 64)
        .collect()
}

fn span<'a>(trace: &'a Value, name: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == name)
        .unwrap_or_else(|| panic!("no span {name} in {trace:#}"))
}

// The sink is process-wide: the lock serialises the tests that depend on it, across awaits.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn debug_traces_groups_filters_and_masks() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    trace::clear_sink();
    let server = Served::start(
        Obskit::builder()
            .service("traces-test")
            .registry(Registry::new())
            .routes(ROUTES)
            .admin_access(AdminAccess::LoopbackOnly)
            .response_traceparent(true)
            .recent_spans(4096),
    )
    .await;
    let client = reqwest::Client::new();
    let send = |path: &str, n: Option<u128>| {
        let mut request = client.get(server.url(path));
        if let Some(n) = n {
            request = request.header("traceparent", traceparent(n, true));
        }
        request.send()
    };

    let fast = send("/api/orders/1", Some(1)).await.unwrap();
    assert_eq!(fast.status(), 200);
    fast.text().await.unwrap();
    let slow = send("/api/orders/slow", Some(2)).await.unwrap();
    let returned = parse_traceparent(slow.headers()["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(
        returned.trace_id,
        trace_id(2),
        "the response names the caller's trace"
    );
    slow.text().await.unwrap();
    let failed = send("/api/fail", Some(3)).await.unwrap();
    assert_eq!(failed.status(), 500);
    failed.text().await.unwrap();
    // Without a traceparent the server starts a trace; the response says which.
    let fresh = send("/api/orders/2", None).await.unwrap();
    let fresh_context = parse_traceparent(fresh.headers()["traceparent"].to_str().unwrap()).unwrap();
    fresh.text().await.unwrap();

    // One trace: the caller's span -> server span -> #[instrumented] -> hand-made DB span.
    let slow = server.trace(trace_id(2), 3).await;
    let server_span = span(&slow, "GET /api/orders/{id}");
    let load = span(&slow, "load_order");
    let query = span(&slow, "cassandra_query");
    assert_eq!(server_span["kind"], "server");
    assert_eq!(server_span["parent_span_id"], format!("{:016x}", 0x1002));
    assert_eq!(server_span["span_id"], format!("{:016x}", returned.span_id));
    assert_eq!(load["parent_span_id"], server_span["span_id"]);
    assert_eq!(query["parent_span_id"], load["span_id"]);
    assert_eq!(query["kind"], "client");
    assert_eq!(server_span["attributes"]["http.route"], "/api/orders/{id}");
    assert_eq!(server_span["attributes"]["http.response.status_code"], 200);
    assert_eq!(query["attributes"]["db.system.name"], "cassandra");
    assert_eq!(
        query["attributes"]["db.connection_string"],
        "cassandra://app:***@db:9042"
    );
    assert_eq!(query["attributes"]["auth_token"], "***");
    assert!(slow["duration_ms"].as_f64().unwrap() >= 150.0, "{slow:#}");
    assert!(query["duration_ms"].as_f64().unwrap() >= 150.0);
    assert_eq!(slow["error"], false);
    assert_eq!(slow["sampled"], true);

    let failed = server.trace(trace_id(3), 1).await;
    assert_eq!(failed["error"], true);
    assert_eq!(failed["spans"][0]["status"], "error");
    server.trace(fresh_context.trace_id, 3).await;
    server.trace(trace_id(1), 3).await;

    // Newest first, and the filters.
    let all = server.traces("limit=1000").await;
    assert_eq!(ids(&all), [trace_id(3), trace_id(2), trace_id(1)]);
    let position = |id: u128| {
        all["traces"]
            .as_array()
            .unwrap()
            .iter()
            .position(|t| t["trace_id"] == format!("{id:032x}"))
            .unwrap()
    };
    assert!(position(fresh_context.trace_id) < position(trace_id(3)));
    assert_eq!(
        ids(&server.traces("status=error&limit=1000").await),
        [trace_id(3)]
    );
    assert_eq!(
        ids(&server.traces("min_duration_ms=140&limit=1000").await),
        [trace_id(2)]
    );
    assert_eq!(
        ids(&server.traces("status=ok&limit=1000").await),
        [trace_id(2), trace_id(1)]
    );
    assert_eq!(
        server.traces("limit=1").await["traces"].as_array().unwrap().len(),
        1
    );
    let slowest = server.traces("slowest_minutes=5").await;
    let slowest = slowest["slowest"]["traces"].as_array().unwrap();
    // Other tests of this binary serve slow requests too, into the same process-wide buffer: the
    // slow request is listed unless as many slower ones as the list holds were.
    match slowest
        .iter()
        .find(|t| t["trace_id"] == format!("{:032x}", trace_id(2)))
    {
        Some(entry) => {
            assert_eq!(entry["root"], "GET /api/orders/{id}");
            assert_eq!(entry["http.response.status_code"], 200);
        }
        None => {
            assert!(slowest.len() >= obskit::trace::SLOW_PER_MINUTE, "{slowest:#?}");
            assert!(
                slowest
                    .iter()
                    .all(|t| t["duration_ms"].as_f64().unwrap() >= 140.0),
                "only slower traces push the slow request out: {slowest:#?}"
            );
        }
    }

    // Protected like every /debug endpoint, and strict about its parameters.
    let proxied = client
        .get(server.url("/debug/traces"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(proxied.status(), 403);
    let bad = reqwest::get(server.url("/debug/traces?limit=0")).await.unwrap();
    assert_eq!(bad.status(), 400);

    server.shutdown().await;
    trace::clear_sink();
}

/// What `/debug/traces` keeps of unsampled work (trace module docs): a span that failed or was
/// slow, with its name, ids, kind, times and status but no attributes; not a fast ok one.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn unsampled_callers_stay_unsampled_and_only_errors_and_slow_spans_are_kept() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    trace::clear_sink();
    trace::set_unsampled_slow_threshold(Duration::from_millis(100));
    let server = Served::start(
        Obskit::builder()
            .service("traces-test-unsampled")
            .registry(Registry::new())
            .routes(ROUTES)
            .admin_access(AdminAccess::LoopbackOnly),
    )
    .await;
    let client = reqwest::Client::new();
    let send = |path: &str, n: u128| {
        client
            .get(server.url(path))
            .header("traceparent", traceparent(n, false))
            .send()
    };
    let fast = send("/api/orders/9", 9).await.unwrap();
    assert!(
        !fast.headers().contains_key("traceparent"),
        "no header by default"
    );
    fast.text().await.unwrap();
    let failed = send("/api/fail", 10).await.unwrap();
    assert_eq!(failed.status(), 500);
    failed.text().await.unwrap();
    send("/api/orders/slow", 11).await.unwrap().text().await.unwrap();

    let failed = server.trace(trace_id(10), 1).await;
    assert_eq!(failed["sampled"], false);
    assert_eq!(failed["error"], true);
    assert_eq!(failed["spans"][0]["status"], "error");
    assert_eq!(failed["spans"][0]["kind"], "server");

    // Server span, load_order and the DB span all lasted 150 ms: kept, without attributes.
    let slow = server.trace(trace_id(11), 3).await;
    assert_eq!(slow["sampled"], false);
    let query = span(&slow, "cassandra_query");
    assert_eq!(query["parent_span_id"], span(&slow, "load_order")["span_id"]);
    assert!(query["duration_ms"].as_f64().unwrap() >= 150.0);
    assert!(
        query["attributes"].as_object().is_none_or(|a| a.is_empty()),
        "an unsampled span records no attributes: {query:#}"
    );

    // The fast ok request ended before the later ones were sent: had it been kept, it would be
    // there by now.
    let fast = server.traces(&format!("trace_id={:032x}", trace_id(9))).await;
    assert_eq!(fast["traces"].as_array().unwrap().len(), 0, "{fast:#}");
    server.shutdown().await;
    trace::set_unsampled_slow_threshold(trace::DEFAULT_UNSAMPLED_SLOW);
    trace::clear_sink();
}
