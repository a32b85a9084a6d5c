//! OTLP export end to end: real servers built by `Obskit`, real HTTP between them, and an
//! in-test OTLP/HTTP receiver decoding `ExportTraceServiceRequest` with the official
//! `opentelemetry-proto` types. The span sink is process-wide: these tests hold [`SINK_LOCK`]
//! and look only at their own traces.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use obskit::admin::AdminAccess;
use obskit::http::{MatchedRoute, RequestBody};
use obskit::metrics::Registry;
use obskit::trace::{self, OtlpConfig, OtlpProtocol, TracedRequest};
use obskit::Obskit;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode as OtlpStatus, Span};
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::common::SINK_LOCK;

/// An OTLP/HTTP receiver on a free port, keeping every request it decoded.
struct Receiver {
    addr: SocketAddr,
    requests: Arc<Mutex<Vec<ExportTraceServiceRequest>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let store = Arc::clone(&requests);
        let task = tokio::spawn(async move {
            // Connections live in the set, so stopping the receiver closes them too.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let store = Arc::clone(&store);
                let service = hyper::service::service_fn(move |request: Request<Incoming>| {
                    let store = Arc::clone(&store);
                    async move {
                        assert_eq!(request.uri().path(), "/v1/traces");
                        assert_eq!(request.headers()["content-type"], "application/x-protobuf");
                        let body = request.into_body().collect().await.unwrap().to_bytes();
                        let decoded = ExportTraceServiceRequest::decode(body).expect("a valid OTLP request");
                        store.lock().unwrap().push(decoded);
                        let answer = ExportTraceServiceResponse::default().encode_to_vec();
                        Ok::<_, Infallible>(
                            Response::builder()
                                .header("content-type", "application/x-protobuf")
                                .body(Full::new(Bytes::from(answer)))
                                .unwrap(),
                        )
                    }
                });
                connections.spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), service),
                );
            }
        });
        Receiver { addr, requests, task }
    }

    fn config(&self) -> OtlpConfig {
        let mut config = OtlpConfig::new(
            format!("http://{}/v1/traces", self.addr),
            OtlpProtocol::HttpProtobuf,
        );
        config.interval = Duration::from_millis(100);
        config
    }

    /// Every span received, with the resource attributes it came with.
    fn spans(&self) -> Vec<(HashMap<String, String>, Span)> {
        let mut out = Vec::new();
        for request in self.requests.lock().unwrap().iter() {
            for resource_spans in &request.resource_spans {
                let resource: HashMap<String, String> = resource_spans
                    .resource
                    .iter()
                    .flat_map(|r| &r.attributes)
                    .filter_map(|kv| match kv.value.as_ref()?.value.as_ref()? {
                        AnyValue::StringValue(s) => Some((kv.key.clone(), s.clone())),
                        _ => None,
                    })
                    .collect();
                for scope in &resource_spans.scope_spans {
                    for span in &scope.spans {
                        out.push((resource.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    fn stop(self) {
        self.task.abort();
    }
}

/// Where the front service finds the back one.
static BACKEND: OnceLock<String> = OnceLock::new();

#[derive(Debug)]
struct OutOfStock;

impl std::fmt::Display for OutOfStock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("item out of stock")
    }
}

#[obskit::instrumented]
async fn lookup_item(id: u32) -> String {
    format!(r#"{{"id":{id}}}"#)
}

#[obskit::instrumented(err)]
fn reserve_item(_id: u32) -> Result<(), OutOfStock> {
    Err(OutOfStock)
}

/// The outgoing call opens a client span and carries it as `traceparent`.
#[obskit::instrumented]
async fn call_backend(path: String) -> u16 {
    let url = format!("{}{path}", BACKEND.get().expect("backend started"));
    let response = reqwest::Client::new().get(url).send_traced().await.unwrap();
    let status = response.status().as_u16();
    response.bytes().await.unwrap();
    status
}

async fn handler(request: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let route = MatchedRoute::of(&request);
    let id = route
        .and_then(|r| r.param("id"))
        .and_then(|id| id.parse::<u32>().ok());
    let (status, body) = match (route.map(|r| r.template()), id) {
        (Some("/api/items/{id}"), Some(id)) => (200, lookup_item(id).await),
        (Some("/api/reserve/{id}"), Some(id)) => match reserve_item(id) {
            Ok(()) => (200, String::new()),
            Err(e) => (503, e.to_string()),
        },
        (Some("/api/checkout/{id}"), Some(id)) => {
            let backend = call_backend(format!("/api/items/{id}")).await;
            (backend, String::new())
        }
        _ => (404, String::new()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = StatusCode::from_u16(status).unwrap();
    Ok(response)
}

const ROUTES: [&str; 3] = ["/api/items/{id}", "/api/reserve/{id}", "/api/checkout/{id}"];

struct Served {
    obskit: Obskit,
    url: String,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

async fn serve(builder: obskit::ObskitBuilder) -> Served {
    let obskit = builder.build().expect("obskit builds");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = oneshot::channel::<()>();
    let served = obskit.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        served
            .serve_with_shutdown(listener, hyper::service::service_fn(handler), shutdown)
            .await
    });
    Served {
        obskit,
        url,
        stop,
        task,
    }
}

impl Served {
    async fn get(&self, path: &str) -> u16 {
        let response = reqwest::get(format!("{}{path}", self.url)).await.unwrap();
        let status = response.status().as_u16();
        response.bytes().await.unwrap();
        status
    }

    async fn shutdown(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap().unwrap();
    }
}

fn builder(service: &str, otlp: OtlpConfig) -> obskit::ObskitBuilder {
    Obskit::builder()
        .service(service)
        .version("2.0.0")
        .environment("test")
        .registry(Registry::new())
        .routes(ROUTES)
        .admin_access(AdminAccess::LoopbackOnly)
        .recent_spans(0)
        .otlp(Some(otlp))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn value_of(metrics: &str, series: &str) -> f64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

// The sink is process-wide: the lock serialises the tests that depend on it, across awaits.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn spans_reach_the_collector_as_one_trace_across_two_services() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    trace::clear_sink();
    let receiver = Receiver::start().await;
    let backend = serve(builder("backend", receiver.config())).await;
    let _ = BACKEND.set(backend.url.clone());
    // Built last, so its exporter (and resource) receive the process's spans.
    let cart = serve(builder("cart", receiver.config())).await;

    assert_eq!(cart.get("/api/checkout/7").await, 200);
    assert_eq!(backend.get("/api/reserve/7").await, 503);
    // The server spans end just after the client read the bodies; then flush.
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert!(cart.obskit.flush_traces(Duration::from_secs(10)).await);

    let spans = receiver.spans();
    let named = |name: &str| -> &(HashMap<String, String>, Span) {
        let found: Vec<_> = spans.iter().filter(|(_, s)| s.name == name).collect();
        assert_eq!(
            found.len(),
            1,
            "one {name} in {:#?}",
            spans.iter().map(|(_, s)| &s.name).collect::<Vec<_>>()
        );
        found[0]
    };
    let (resource, checkout) = named("GET /api/checkout/{id}");
    assert_eq!(resource["service.name"], "cart");
    assert_eq!(resource["service.version"], "2.0.0");
    assert_eq!(resource["deployment.environment.name"], "test");
    assert_eq!(resource["service.instance.id"].len(), 36);
    let (_, call) = named("call_backend");
    let (_, client) = named("GET");
    let (_, items) = named("GET /api/items/{id}");
    let (_, lookup) = named("lookup_item");

    // One trace: checkout (server) -> call_backend -> GET (client, reqwest) -> items (server,
    // the other service) -> lookup.
    for span in [call, client, items, lookup] {
        assert_eq!(hex(&span.trace_id), hex(&checkout.trace_id));
    }
    assert!(checkout.parent_span_id.is_empty());
    assert_eq!(call.parent_span_id, checkout.span_id);
    assert_eq!(client.parent_span_id, call.span_id);
    assert_eq!(items.parent_span_id, client.span_id);
    assert_eq!(client.kind, SpanKind::Client as i32);
    let attribute = |span: &Span, key: &str| {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.clone())
    };
    assert_eq!(
        attribute(client, "http.response.status_code"),
        Some(AnyValue::IntValue(200))
    );
    assert_eq!(
        attribute(client, "http.request.method"),
        Some(AnyValue::StringValue("GET".into()))
    );
    assert_eq!(
        attribute(client, "server.address"),
        Some(AnyValue::StringValue("127.0.0.1".into()))
    );
    assert_eq!(lookup.parent_span_id, items.span_id);
    assert_eq!(checkout.kind, SpanKind::Server as i32);
    assert_eq!(items.kind, SpanKind::Server as i32);
    assert_eq!(lookup.kind, SpanKind::Internal as i32);
    assert!(checkout.start_time_unix_nano <= call.start_time_unix_nano);
    assert!(call.end_time_unix_nano <= checkout.end_time_unix_nano);

    // Errors carry status: the 503 server span and the failing function with its exception.
    let (_, reserve) = named("GET /api/reserve/{id}");
    let (_, failing) = named("reserve_item");
    assert_eq!(reserve.status.as_ref().unwrap().code, OtlpStatus::Error as i32);
    assert_eq!(failing.status.as_ref().unwrap().code, OtlpStatus::Error as i32);
    assert_eq!(failing.status.as_ref().unwrap().message, "item out of stock");
    assert_eq!(failing.events[0].name, "exception");
    assert_eq!(failing.parent_span_id, reserve.span_id);
    assert_eq!(
        attribute(reserve, "http.response.status_code"),
        Some(AnyValue::IntValue(503))
    );

    let metrics = cart.obskit.registry().encode_text();
    assert!(
        value_of(&metrics, "obskit_spans_exported_total") >= 6.0,
        "{metrics}"
    );

    // /metrics in OpenMetrics form, when asked, carries the checkout's trace id as an
    // exemplar of its latency bucket; plain text otherwise.
    let client = reqwest::Client::new();
    let response = client
        .get(format!("{}/metrics", cart.url))
        .header(
            "accept",
            "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.headers()["content-type"],
        obskit::metrics::OPENMETRICS_CONTENT_TYPE
    );
    let openmetrics = response.text().await.unwrap();
    assert!(crate::common::openmetrics_check(&openmetrics) >= 1);
    let trace_id = hex(&checkout.trace_id);
    let exemplar_line = openmetrics
        .lines()
        .find(|l| {
            l.starts_with(
                r#"http_request_duration_seconds_bucket{endpoint="/api/checkout/{id}",method="GET",le="#,
            ) && l.contains(&format!("# {{trace_id=\"{trace_id}\""))
        })
        .unwrap_or_else(|| panic!("no exemplar of trace {trace_id}:\n{openmetrics}"));
    assert!(exemplar_line.contains(&format!("span_id=\"{}\"", hex(&checkout.span_id))));
    // `#[instrumented]` latencies too: the trace that `lookup_item` ran in, on the other service.
    assert!(
        openmetrics.lines().any(|l| l
            .starts_with(r#"function_calls_duration_seconds_bucket{function="lookup_item","#)
            && l.contains(&format!("# {{trace_id=\"{trace_id}\"}}"))),
        "{openmetrics}"
    );
    let plain = reqwest::get(format!("{}/metrics", cart.url)).await.unwrap();
    assert!(plain.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    let plain = plain.text().await.unwrap();
    assert!(!plain.contains("# EOF") && !plain.contains("trace_id"));
    crate::common::promtool_check_metrics(&plain);

    cart.shutdown().await;
    backend.shutdown().await;
    receiver.stop();
    trace::clear_sink();
}

#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn a_dead_collector_never_fails_requests_and_drops_are_counted() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    trace::clear_sink();
    let receiver = Receiver::start().await;
    let mut config = receiver.config();
    config.queue_size = 8;
    config.max_batch = 4;
    config.export_timeout = Duration::from_millis(500);
    receiver.stop();
    let server = serve(builder("burst", config)).await;

    let started = Instant::now();
    let client = reqwest::Client::new();
    let mut requests = tokio::task::JoinSet::new();
    for i in 0..200 {
        let url = format!("{}/api/items/{i}", server.url);
        let client = client.clone();
        requests.spawn(async move {
            let response = client.get(url).send().await.unwrap();
            let status = response.status().as_u16();
            response.bytes().await.unwrap();
            status
        });
    }
    while let Some(status) = requests.join_next().await {
        assert_eq!(status.unwrap(), 200);
    }
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "requests were slowed by tracing"
    );
    tokio::time::sleep(Duration::from_millis(50)).await;
    server.obskit.flush_traces(Duration::from_secs(10)).await;

    let metrics = server.obskit.registry().encode_text();
    let queue_full = value_of(&metrics, r#"obskit_spans_dropped_total{reason="queue_full"}"#);
    let failed = value_of(&metrics, r#"obskit_spans_dropped_total{reason="export_failed"}"#);
    assert!(
        queue_full + failed >= 400.0,
        "two spans per request are all lost: {metrics}"
    );
    assert_eq!(value_of(&metrics, "obskit_spans_exported_total"), 0.0);
    server.shutdown().await;
    trace::clear_sink();
}
