//! Integration tests: a real instrumented server (`Obskit::serve`) on a free loopback port,
//! driven through real HTTP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use obskit::admin::AdminAccess;
use obskit::health::CheckOutcome;
use obskit::http::RequestBody;
use obskit::metrics::Registry;
use obskit::{AdminListener, Obskit};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::common::{free_addr, Served};

const ROUTES: [&str; 3] = ["/api/products", "/api/products/{id}", "/api/categories"];

async fn shop_handler(request: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path().to_string();
    let (status, body) = match path.as_str() {
        "/api/products" => (StatusCode::OK, "[]".to_string()),
        "/api/categories" => (StatusCode::OK, r#"["books"]"#.to_string()),
        p if p.starts_with("/api/products/") => match p["/api/products/".len()..].parse::<u32>() {
            Ok(id) => (StatusCode::OK, format!(r#"{{"id":{id}}}"#)),
            Err(_) => (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.to_string()),
        },
        _ => (StatusCode::NOT_FOUND, r#"{"error":"not_found"}"#.to_string()),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    Ok(response)
}

/// A served Obskit on a free port, with reqwest requests.
struct TestServer(Served);

impl std::ops::Deref for TestServer {
    type Target = Served;
    fn deref(&self) -> &Served {
        &self.0
    }
}

impl TestServer {
    async fn start(builder: obskit::ObskitBuilder) -> TestServer {
        TestServer(Served::start(builder, |request| Box::pin(shop_handler(request))).await)
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    async fn get(&self, path: &str) -> (u16, String) {
        let response = reqwest::get(self.url(path)).await.expect("request");
        let status = response.status().as_u16();
        (status, response.text().await.unwrap_or_default())
    }

    async fn metrics(&self) -> String {
        let (status, body) = self.get("/metrics").await;
        assert_eq!(status, 200);
        body
    }

    async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

fn builder() -> obskit::ObskitBuilder {
    Obskit::builder()
        .service("test-shop")
        .version("1.2.3")
        .registry(Registry::new())
        .routes(ROUTES)
        .admin_access(AdminAccess::LoopbackOnly)
        .process_stats_interval(Duration::from_millis(200))
        // No span sink: the sink is process-wide and the span tests (`macros`, `traces`) own it.
        .recent_spans(0)
}

fn count_series(metrics: &str, family: &str) -> usize {
    metrics
        .lines()
        .filter(|l| l.starts_with(&format!("{family}{{")))
        .count()
}

fn value_of(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

#[tokio::test]
async fn red_metrics_use_route_templates() {
    let server = TestServer::start(builder()).await;
    for id in [1, 2, 3] {
        assert_eq!(server.get(&format!("/api/products/{id}")).await.0, 200);
    }
    assert_eq!(server.get("/api/products/abc").await.0, 404);
    assert_eq!(server.get("/api/products").await.0, 200);
    assert_eq!(server.get("/no/such/route").await.0, 404);
    let client = reqwest::Client::new();
    let purge = reqwest::Method::from_bytes(b"PURGE").unwrap();
    client
        .request(purge, server.url("/api/products/9"))
        .send()
        .await
        .unwrap();
    client
        .post(server.url("/api/products"))
        .body(vec![b'x'; 3000])
        .send()
        .await
        .unwrap();

    let metrics = server.metrics().await;
    let templ = r#"endpoint="/api/products/{id}""#;
    assert_eq!(
        value_of(
            &metrics,
            &format!(r#"http_requests_total{{{templ},method="GET",status="200"}}"#)
        ),
        Some(3.0),
        "{metrics}"
    );
    assert_eq!(
        value_of(
            &metrics,
            &format!(r#"http_requests_total{{{templ},method="GET",status="404"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &metrics,
            r#"http_requests_total{endpoint="unmatched",method="GET",status="404"}"#
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &metrics,
            &format!(r#"http_requests_total{{{templ},method="other",status="200"}}"#)
        ),
        Some(1.0)
    );
    assert_eq!(
        value_of(
            &metrics,
            &format!(r#"http_request_duration_seconds_count{{{templ},method="GET"}}"#)
        ),
        Some(4.0)
    );
    assert_eq!(
        value_of(
            &metrics,
            &format!(r#"http_requests_in_flight{{{templ},method="GET"}}"#)
        ),
        Some(0.0)
    );
    assert_eq!(
        value_of(
            &metrics,
            r#"http_request_size_bytes_sum{endpoint="/api/products",method="POST"}"#
        ),
        Some(3000.0)
    );
    // `{"id":1}` is 8 bytes; three of them.
    assert_eq!(
        value_of(
            &metrics,
            &format!(r#"http_response_size_bytes_sum{{{templ},method="GET"}}"#)
        ),
        Some(8.0 * 3.0 + 21.0),
        "{metrics}"
    );
    // No raw path ever becomes a label value; admin requests are not counted by default.
    assert!(!metrics.contains("/api/products/1\""));
    assert!(!metrics.contains("endpoint=\"/metrics\""));
    assert!(metrics.contains(
        r#"build_info{commit="",environment="development",service_name="test-shop",version="1.2.3"} 1"#
    ));
    server.shutdown().await;
}

#[tokio::test]
async fn unknown_paths_add_no_series() {
    let server = TestServer::start(builder()).await;
    server.get("/api/products/1").await;
    let before = server.metrics().await;
    let client = reqwest::Client::new();
    let mut seed: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..10_000u32 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let path = format!("/{:x}/{i}/{}", seed, seed % 977);
        let status = client.get(server.url(&path)).send().await.unwrap().status();
        assert_eq!(status, 404);
    }
    let after = server.metrics().await;
    let total_before: usize = [
        "http_requests_total",
        "http_request_duration_seconds_count",
        "http_requests_in_flight",
    ]
    .iter()
    .map(|f| count_series(&before, f))
    .sum();
    let total_after: usize = [
        "http_requests_total",
        "http_request_duration_seconds_count",
        "http_requests_in_flight",
    ]
    .iter()
    .map(|f| count_series(&after, f))
    .sum();
    assert!(
        total_after <= total_before + 3,
        "10,000 unknown paths added {} series",
        total_after - total_before
    );
    assert_eq!(
        value_of(
            &after,
            r#"http_requests_total{endpoint="unmatched",method="GET",status="404"}"#
        ),
        Some(10_000.0)
    );
    server.shutdown().await;
}

#[tokio::test]
async fn metrics_pass_promtool() {
    let server = TestServer::start(builder()).await;
    server.get("/api/products/7").await;
    server.get("/api/categories").await;
    server.get("/nope").await;
    let metrics = server.metrics().await;
    crate::common::promtool_check_metrics(&metrics);
    server.shutdown().await;
}

#[tokio::test]
async fn health_flips_with_a_failing_check_and_recovers() {
    let server = TestServer::start(builder().memory_check(false)).await;
    let database_up = Arc::new(AtomicBool::new(true));
    let flag = Arc::clone(&database_up);
    server.obskit.health().register("database", move || {
        let up = flag.load(Ordering::SeqCst);
        async move {
            if up {
                CheckOutcome::healthy()
            } else {
                CheckOutcome::unhealthy("connection refused")
            }
        }
    });
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 200, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "healthy");
    assert_eq!(report["checks"]["database"]["status"], "healthy");

    database_up.store(false, Ordering::SeqCst);
    let (status, body) = server.get("/health").await;
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(report["status"], "unhealthy");
    assert_eq!(report["checks"]["database"]["message"], "connection refused");
    assert_eq!(server.get("/health/ready").await.0, 503);
    // Liveness does not depend on dependencies.
    assert_eq!(server.get("/health/live").await.0, 200);

    database_up.store(true, Ordering::SeqCst);
    assert_eq!(server.get("/health").await.0, 200);
    assert_eq!(server.get("/health/ready").await.0, 200);
    server.shutdown().await;
}

#[tokio::test]
async fn a_hanging_check_times_out_and_the_endpoint_answers() {
    let server = TestServer::start(builder().memory_check(false)).await;
    server.obskit.health().register_with(
        "hangs",
        obskit::health::CheckOptions::default().timeout(Duration::from_millis(300)),
        || async {
            std::future::pending::<()>().await;
            CheckOutcome::healthy()
        },
    );
    let started = std::time::Instant::now();
    let (status, body) = server.get("/health").await;
    // Generous bound: the point is that it answers at all, not how fast.
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(status, 503, "{body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        report["checks"]["hangs"]["message"]
            .as_str()
            .unwrap()
            .contains("timed out"),
        "{body}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn debug_config_masks_secrets() {
    crate::common::set_secret_env();
    let server = TestServer::start(builder().config_entry("database.password", "hunter2-config")).await;
    let (status, body) = server.get("/debug/config").await;
    assert_eq!(status, 200);
    for secret in crate::common::SECRET_VALUES {
        assert!(!body.contains(secret), "/debug/config leaked {secret}: {body}");
    }
    assert!(!body.contains("hunter2-config"));
    let config: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        config["environment"]["OBSKIT_IT_DATABASE_URL"],
        "postgres://u:***@h/db"
    );
    assert_eq!(config["environment"]["OBSKIT_IT_AWS_SECRET_ACCESS_KEY"], "***");
    assert_eq!(config["environment"]["OBSKIT_IT_JWT_SIGNING_KEY"], "***");
    assert_eq!(config["environment"]["obskit_it_api_key"], "***");
    assert_eq!(config["config"]["service.name"], "test-shop");
    server.shutdown().await;
}

#[tokio::test]
async fn debug_endpoints_require_the_token_when_one_is_set() {
    let server = TestServer::start(builder().admin_access(AdminAccess::Token("t0ken-for-test".into()))).await;
    let client = reqwest::Client::new();
    let protected: &[&str] = if cfg!(feature = "process-metrics") {
        &["/debug/config", "/debug/metrics"]
    } else {
        &["/debug/config"]
    };
    for &path in protected {
        let tokenless = client.get(server.url(path)).send().await.unwrap();
        assert_eq!(tokenless.status(), 401, "{path} without token");
        let wrong = client
            .get(server.url(path))
            .bearer_auth("wrong")
            .send()
            .await
            .unwrap();
        assert_eq!(wrong.status(), 401, "{path} with a wrong token");
        let right = client
            .get(server.url(path))
            .bearer_auth("t0ken-for-test")
            .send()
            .await
            .unwrap();
        assert_eq!(right.status(), 200, "{path} with the token");
    }
    // Open endpoints stay open.
    assert_eq!(server.get("/metrics").await.0, 200);
    assert_eq!(server.get("/health/live").await.0, 200);
    server.shutdown().await;

    // Without a token, a request relayed by a proxy is not a loopback client.
    let server = TestServer::start(builder()).await;
    let relayed = client
        .get(server.url("/debug/config"))
        .header("x-forwarded-for", "203.0.113.9")
        .send()
        .await
        .unwrap();
    assert_eq!(relayed.status(), 403);
    assert_eq!(server.get("/debug/config").await.0, 200);
    server.shutdown().await;
}

#[cfg(feature = "process-metrics")]
#[tokio::test]
async fn debug_metrics_reports_process_figures() {
    let server = TestServer::start(builder()).await;
    // Two sampling intervals so CPU is measured over an interval.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, body) = server.get("/debug/metrics").await;
    assert_eq!(status, 200, "{body}");
    let figures: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(figures["memory"]["rss_bytes"].as_u64().unwrap() > 0, "{body}");
    assert!(figures["threads"].as_u64().unwrap() >= 1, "{body}");
    assert!(figures["open_fds"].as_u64().unwrap() >= 3, "{body}");
    assert!(figures["connections"]["open"].as_u64().unwrap() >= 1, "{body}");
    assert!(figures["uptime_seconds"].as_f64().unwrap() >= 0.0, "{body}");
    server.shutdown().await;
}

/// Sends raw bytes on a fresh connection and returns whatever comes back (possibly nothing).
async fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let _ = stream.write_all(bytes).await;
    let _ = stream.shutdown().await;
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_never_break_the_server() {
    let server = TestServer::start(builder()).await;
    let long_header = format!(
        "GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(200_000)
    );
    let cases: Vec<Vec<u8>> = vec![
        b"\x00\x01\x02\x03garbage\r\n\r\n".to_vec(),
        b"GET\r\n\r\n".to_vec(),
        b"GET /api/products/\xff\xfe HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"GET /%zz%00../../etc/passwd HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
        b"POST /api/products HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n".to_vec(),
        b"POST /api/products HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc".to_vec(),
        b"POST /api/products HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n".to_vec(),
        b"GET /metrics HTTP/9.9\r\n\r\n".to_vec(),
        b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n\x00\x00\x00\x04garbage".to_vec(),
        b"GET /debug/config HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer \xff\r\n\r\n".to_vec(),
        long_header.into_bytes(),
    ];
    for case in &cases {
        let _ = raw(server.addr, case).await;
    }
    // Still serving, with correct answers.
    assert_eq!(server.get("/api/products/5").await.0, 200);
    assert_eq!(server.get("/health/live").await.0, 200);
    let metrics = server.metrics().await;
    assert!(!metrics.contains("passwd"));
    server.shutdown().await;
}

#[tokio::test]
async fn separate_admin_listener() {
    let admin_addr = free_addr();
    let server = TestServer::start(builder().admin_listener(AdminListener::Separate(admin_addr))).await;
    // The service port no longer serves admin paths: they reach the service (its own 404).
    assert_eq!(server.get("/metrics").await.0, 404);
    assert_eq!(server.get("/api/products/1").await.0, 200);
    // The admin port does; it may need a moment to bind.
    let mut metrics = None;
    for _ in 0..50 {
        if let Ok(response) = reqwest::get(format!("http://{admin_addr}/metrics")).await {
            metrics = Some(response.text().await.unwrap());
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = metrics.expect("admin listener answers");
    assert!(metrics.contains(r#"endpoint="/api/products/{id}""#), "{metrics}");
    let other = reqwest::get(format!("http://{admin_addr}/api/products/1"))
        .await
        .unwrap();
    assert_eq!(other.status(), 404);
    server.shutdown().await;
    // Both listeners are closed after shutdown.
    assert!(TcpStream::connect(admin_addr).await.is_err());
}
