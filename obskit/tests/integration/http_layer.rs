//! Integration tests: the HTTP metrics layer around a real hyper http1 server on a loopback
//! port, driven by reqwest (and a raw socket where a client has to misbehave).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use obskit::http::{HttpMetrics, HttpMetricsLayer, MatchedRoute, RequestBody, Routes};
use obskit::metrics::Registry;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::{JoinHandle, JoinSet};

use crate::common::promtool_check_metrics;

const ROUTES: [&str; 7] = [
    "/api/products",
    "/api/products/{id}",
    "/stream/{chunks}",
    "/slow",
    "/metrics",
    "/health/{probe}",
    "/debug/{*rest}",
];

/// Size of each chunk a `/stream/{chunks}` response sends.
const CHUNK: usize = 1000;

/// A response body fed by a channel: what a handler streaming from another task looks like.
struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|c| Ok(Frame::data(c))))
    }
}

fn full(body: impl Into<Bytes>) -> BoxBody<Bytes, Infallible> {
    Full::new(body.into()).boxed()
}

/// A small shop that routes on the [`MatchedRoute`] the layer hands over.
async fn shop(
    req: Request<RequestBody<Incoming>>,
) -> Result<Response<BoxBody<Bytes, Infallible>>, Infallible> {
    let route = MatchedRoute::of(&req).cloned();
    let template = route.as_ref().map(|r| r.template());
    let response = match (req.method().clone(), template) {
        (Method::GET, Some("/api/products")) if req.headers().contains_key("if-none-match") => {
            // A careless handler: a body on a 304, which hyper must not send.
            Response::builder()
                .status(StatusCode::NOT_MODIFIED)
                .body(full("not sent"))
                .unwrap()
        }
        (Method::GET, Some("/api/products")) => Response::new(full(r#"[{"id":1},{"id":2}]"#)),
        (Method::GET, Some("/api/products/{id}")) => {
            let id = route.as_ref().and_then(|r| r.param("id")).unwrap_or_default();
            Response::new(full(format!(r#"{{"id":"{id}"}}"#)))
        }
        (Method::POST, Some("/api/products")) => {
            let received = req.into_body().collect().await.unwrap().to_bytes().len();
            Response::builder()
                .status(StatusCode::CREATED)
                .body(full(format!(r#"{{"received":{received}}}"#)))
                .unwrap()
        }
        (Method::GET, Some("/stream/{chunks}")) => {
            let chunks: usize = route
                .as_ref()
                .and_then(|r| r.param("chunks")?.parse().ok())
                .unwrap_or(1);
            let (tx, rx) = mpsc::channel(1);
            tokio::spawn(async move {
                for _ in 0..chunks {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    if tx.send(Bytes::from(vec![b'x'; CHUNK])).await.is_err() {
                        break; // the body was dropped: the client went away
                    }
                }
            });
            Response::new(ChannelBody(rx).boxed())
        }
        (Method::GET, Some("/slow")) => std::future::pending().await,
        (_, Some(_)) => Response::new(full("ok")),
        (_, None) => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(full(r#"{"error":"not_found"}"#))
            .unwrap(),
    };
    Ok(response)
}

/// A real hyper http1 server on `127.0.0.1:0`; dropping it aborts the accept loop, which drops
/// the connection tasks with it.
struct TestServer {
    addr: SocketAddr,
    task: JoinHandle<()>,
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestServer {
    async fn start(layer: HttpMetricsLayer) -> TestServer {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    break;
                };
                let service = layer.wrap_hyper(service_fn(shop));
                connections.spawn(async move {
                    // A client reset is an error here, and an expected one in these tests.
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
                while connections.try_join_next().is_some() {}
            }
        });
        TestServer { addr, task }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }
}

/// A registry, its layer (shop routes, admin paths excluded) and a server running it.
async fn setup() -> (Registry, TestServer, reqwest::Client) {
    let registry = Registry::new();
    let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
        .routes(Routes::new(ROUTES).unwrap())
        .exclude_admin(true);
    let server = TestServer::start(layer).await;
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    (registry, server, client)
}

/// The value of one series in the text exposition.
fn sample(registry: &Registry, series: &str) -> Option<f64> {
    registry
        .encode_text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn series(family: &str, endpoint: &str, method: &str) -> String {
    format!(r#"{family}{{endpoint="{endpoint}",method="{method}"}}"#)
}

fn requests(endpoint: &str, method: &str, status: u16) -> String {
    format!(r#"http_requests_total{{endpoint="{endpoint}",method="{method}",status="{status}"}}"#)
}

fn series_count(registry: &Registry, prefix: &str) -> usize {
    registry
        .encode_text()
        .lines()
        .filter(|l| l.starts_with(prefix))
        .count()
}

/// Waits (generously) for `condition`; recording happens on the server's tasks, so a client
/// may see the response a moment before the server has finished with it.
async fn eventually(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(15);
    while !condition() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn all_five_families_are_labelled_by_template() {
    let (registry, server, client) = setup().await;
    for id in [42, 7] {
        let body = client
            .get(server.url(&format!("/api/products/{id}")))
            .send()
            .await
            .unwrap();
        assert_eq!(body.text().await.unwrap(), format!(r#"{{"id":"{id}"}}"#));
    }
    let created = client
        .post(server.url("/api/products"))
        .body(vec![b'p'; 1500])
        .send()
        .await
        .unwrap();
    assert_eq!(created.status(), 201);
    assert_eq!(created.text().await.unwrap(), r#"{"received":1500}"#);
    let missing = client.get(server.url("/nothing/here")).send().await.unwrap();
    assert_eq!(missing.status(), 404);
    missing.bytes().await.unwrap();

    let id = "/api/products/{id}";
    eventually("all requests recorded", || {
        sample(&registry, &requests(id, "GET", 200)) == Some(2.0)
            && sample(&registry, &requests("/api/products", "POST", 201)) == Some(1.0)
            && sample(&registry, &requests("unmatched", "GET", 404)) == Some(1.0)
    })
    .await;
    assert_eq!(
        sample(
            &registry,
            &series("http_request_duration_seconds_count", id, "GET")
        ),
        Some(2.0)
    );
    assert_eq!(
        sample(&registry, &series("http_requests_in_flight", id, "GET")),
        Some(0.0)
    );
    assert_eq!(
        sample(&registry, &series("http_request_size_bytes_count", id, "GET")),
        Some(2.0)
    );
    assert_eq!(
        sample(&registry, &series("http_request_size_bytes_sum", id, "GET")),
        Some(0.0)
    );
    // `{"id":"42"}` and `{"id":"7"}`.
    assert_eq!(
        sample(&registry, &series("http_response_size_bytes_sum", id, "GET")),
        Some(21.0)
    );
    let post = |family| series(family, "/api/products", "POST");
    assert_eq!(
        sample(&registry, &post("http_request_size_bytes_sum")),
        Some(1500.0)
    );
    assert_eq!(
        sample(&registry, &post("http_response_size_bytes_sum")),
        Some(17.0)
    );
    assert_eq!(sample(&registry, &post("http_requests_in_flight")), Some(0.0));

    let text = registry.encode_text();
    for raw in ["/api/products/42", "/api/products/7", "/nothing/here"] {
        assert!(
            !text.contains(&format!("\"{raw}\"")),
            "raw path {raw} became a label:\n{text}"
        );
    }
    promtool_check_metrics(&text);
}

#[tokio::test]
async fn a_streamed_body_counts_its_full_size_and_time() {
    let (registry, server, client) = setup().await;
    let chunks = 5;
    let mut response = client
        .get(server.url(&format!("/stream/{chunks}")))
        .send()
        .await
        .unwrap();
    let first = response.chunk().await.unwrap().unwrap();
    let in_flight = series("http_requests_in_flight", "/stream/{chunks}", "GET");
    assert_eq!(
        sample(&registry, &in_flight),
        Some(1.0),
        "in flight while the body streams"
    );
    assert_eq!(sample(&registry, &requests("/stream/{chunks}", "GET", 200)), None);
    let mut received = first.len();
    while let Some(chunk) = response.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert_eq!(received, chunks * CHUNK);

    eventually("the stream recorded", || {
        sample(&registry, &in_flight) == Some(0.0)
    })
    .await;
    assert_eq!(
        sample(&registry, &requests("/stream/{chunks}", "GET", 200)),
        Some(1.0)
    );
    let size = series("http_response_size_bytes_sum", "/stream/{chunks}", "GET");
    assert_eq!(sample(&registry, &size), Some((chunks * CHUNK) as f64));
    // Five chunks 20 ms apart: the duration covers the body, not just the head.
    let duration = series("http_request_duration_seconds_sum", "/stream/{chunks}", "GET");
    let seconds = sample(&registry, &duration).unwrap();
    assert!(seconds >= 0.05, "duration {seconds}s does not cover the body");
}

#[tokio::test]
async fn random_unknown_paths_add_a_handful_of_series_at_most() {
    let (registry, server, client) = setup().await;
    client
        .get(server.url("/api/products"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    eventually("warm-up recorded", || {
        series_count(&registry, "http_requests_total{") == 1
    })
    .await;
    let families = [
        "http_requests_total{",
        "http_request_duration_seconds_count{",
        "http_requests_in_flight{",
        "http_request_size_bytes_count{",
        "http_response_size_bytes_count{",
    ];
    let before: Vec<usize> = families.iter().map(|f| series_count(&registry, f)).collect();

    let workers = 8;
    let per_worker = 10_000 / workers;
    let mut tasks = JoinSet::new();
    for worker in 0..workers {
        let client = client.clone();
        let base = server.url("");
        tasks.spawn(async move {
            // xorshift: random-looking paths without a dependency.
            let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ (worker as u64 + 1);
            for i in 0..per_worker {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let path = match i % 3 {
                    0 => format!("/{x:x}"),
                    1 => format!("/api/products/{x}/reviews/{i}"),
                    _ => format!("/wp-{:x}/{}.php?q={x}", x >> 40, x % 1000),
                };
                let response = client.get(format!("{base}{path}")).send().await.unwrap();
                assert_eq!(response.status(), 404);
                response.bytes().await.unwrap();
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    eventually("all 10,000 recorded", || {
        sample(&registry, &requests("unmatched", "GET", 404)) == Some((workers * per_worker) as f64)
    })
    .await;
    for (family, before) in families.iter().zip(before) {
        let after = series_count(&registry, family);
        assert!(
            after <= before + 2,
            "{family}: {before} series before, {after} after"
        );
    }
}

#[tokio::test]
async fn an_exotic_method_is_labelled_other() {
    let (registry, server, client) = setup().await;
    let purge = Method::from_bytes(b"PURGE").unwrap();
    let response = client
        .request(purge, server.url("/api/products/3"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.bytes().await.unwrap();
    eventually("the PURGE recorded", || {
        sample(&registry, &requests("/api/products/{id}", "other", 200)) == Some(1.0)
    })
    .await;
    assert!(!registry.encode_text().contains("PURGE"));
}

#[tokio::test]
async fn a_client_leaving_mid_stream_leaves_nothing_in_flight() {
    let (registry, server, client) = setup().await;
    // Long enough (20 ms x 100,000) that only the client going away can end it.
    let mut response = client.get(server.url("/stream/100000")).send().await.unwrap();
    response.chunk().await.unwrap().unwrap();
    response.chunk().await.unwrap().unwrap();
    let in_flight = series("http_requests_in_flight", "/stream/{chunks}", "GET");
    assert_eq!(sample(&registry, &in_flight), Some(1.0));
    drop(response);
    drop(client);

    eventually("the in-flight gauge back to 0", || {
        sample(&registry, &in_flight) == Some(0.0)
    })
    .await;
    // Counted once, with the status the head carried, and what was sent before the end.
    assert_eq!(
        sample(&registry, &requests("/stream/{chunks}", "GET", 200)),
        Some(1.0)
    );
    let size = series("http_response_size_bytes_sum", "/stream/{chunks}", "GET");
    let sent = sample(&registry, &size).unwrap();
    assert!(
        sent >= (2 * CHUNK) as f64 && sent < (100_000 * CHUNK) as f64,
        "{sent}"
    );
}

#[tokio::test]
async fn a_client_leaving_before_the_response_cancels_the_request() {
    let (registry, server, _client) = setup().await;
    let mut socket = TcpStream::connect(server.addr).await.unwrap();
    socket
        .write_all(b"GET /slow HTTP/1.1\r\nhost: test\r\n\r\n")
        .await
        .unwrap();
    let in_flight = series("http_requests_in_flight", "/slow", "GET");
    eventually("the request in flight", || {
        sample(&registry, &in_flight) == Some(1.0)
    })
    .await;
    drop(socket);

    eventually("the in-flight gauge back to 0", || {
        sample(&registry, &in_flight) == Some(0.0)
    })
    .await;
    assert_eq!(sample(&registry, &requests("/slow", "GET", 499)), Some(1.0));
}

#[tokio::test]
async fn head_and_not_modified_responses_send_and_count_no_body() {
    let (registry, server, client) = setup().await;
    let head = client.head(server.url("/api/products")).send().await.unwrap();
    assert_eq!(head.status(), 200);
    assert!(head.bytes().await.unwrap().is_empty());
    let cached = client
        .get(server.url("/api/products"))
        .header("if-none-match", "\"v1\"")
        .send()
        .await
        .unwrap();
    assert_eq!(cached.status(), 304);
    assert!(cached.bytes().await.unwrap().is_empty());

    eventually("both recorded", || {
        sample(&registry, &requests("/api/products", "HEAD", 200)) == Some(1.0)
            && sample(&registry, &requests("/api/products", "GET", 304)) == Some(1.0)
    })
    .await;
    for method in ["HEAD", "GET"] {
        let size = series("http_response_size_bytes_sum", "/api/products", method);
        assert_eq!(sample(&registry, &size), Some(0.0), "{method}");
        let in_flight = series("http_requests_in_flight", "/api/products", method);
        assert_eq!(sample(&registry, &in_flight), Some(0.0), "{method}");
        let count = series("http_request_duration_seconds_count", "/api/products", method);
        assert_eq!(sample(&registry, &count), Some(1.0), "{method}");
    }
}

#[tokio::test]
async fn excluded_paths_record_nothing() {
    let (registry, server, client) = setup().await;
    for path in [
        "/metrics",
        "/health/live",
        "/health/ready",
        "/debug/pprof/profile",
        "/profiles/",
    ] {
        let response = client.get(server.url(path)).send().await.unwrap();
        response.bytes().await.unwrap();
    }
    // A recorded request afterwards, so "nothing recorded" is not just "not recorded yet".
    client
        .get(server.url("/metricsx"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    eventually("/metricsx recorded", || {
        sample(&registry, &requests("unmatched", "GET", 404)) == Some(1.0)
    })
    .await;
    let text = registry.encode_text();
    let recorded: Vec<&str> = text.lines().filter(|l| l.starts_with("http_")).collect();
    assert!(
        recorded.iter().all(|l| l.contains(r#"endpoint="unmatched""#)),
        "excluded paths were recorded:\n{}",
        recorded.join("\n")
    );
}
