//! Integration tests of the admin route table on a real server (`Obskit::serve_with_shutdown`):
//! only the table's paths are the admin surface's, everything else is served by the service
//! and counted in its RED metrics; and in loopback mode the protected routes refuse requests
//! addressed to a foreign host (DNS rebinding).

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::Duration;

use crate::common::Served;
use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use obskit::admin::{AdminAccess, AdminEndpoint, PathMatch, ADMIN_ROUTES};
use obskit::http::RequestBody;
use obskit::metrics::Registry;
use obskit::Obskit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The service's own routes, beside admin-looking paths on purpose.
const ROUTES: [&str; 4] = ["/health/deep", "/debug-info", "/debug/{*rest}", "/api/items"];

/// Answers `service:{path}`: whatever says so was served by the service, not the admin surface.
async fn service(request: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = format!("service:{}", request.uri().path());
    Ok(Response::new(Full::new(Bytes::from(body))))
}

/// A served Obskit on a free loopback port, with raw HTTP/1.1 requests.
struct Server(Served);

impl Server {
    async fn start(builder: obskit::ObskitBuilder) -> Server {
        Server(Served::start(builder, |request| Box::pin(service(request))).await)
    }

    /// `method path` over HTTP/1.1 with the given `Host` (none when `None`); status and body.
    async fn request(&self, method: &str, path: &str, host: Option<&str>, extra: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(self.0.addr).await.expect("connect");
        let host = host.map(|h| format!("Host: {h}\r\n")).unwrap_or_default();
        let head = format!("{method} {path} HTTP/1.1\r\n{host}{extra}Connection: close\r\n\r\n");
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut raw = Vec::new();
        tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut raw))
            .await
            .expect("the server answers")
            .unwrap();
        let text = String::from_utf8_lossy(&raw).into_owned();
        let status = text
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("no status line for {path}: {text}"));
        let body = text
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        (status, body)
    }

    /// `GET path` addressed to `127.0.0.1:port`, as curl or a scraper would.
    async fn get(&self, path: &str) -> (u16, String) {
        let host = self.0.addr.to_string();
        self.request("GET", path, Some(&host), "").await
    }

    async fn shutdown(self) {
        self.0.shutdown().await;
    }
}

fn builder() -> obskit::ObskitBuilder {
    Obskit::builder()
        .service("admin-routes")
        .version("1.0.0")
        .registry(Registry::new())
        .routes(ROUTES)
        .admin_access(AdminAccess::LoopbackOnly)
        // Explicitly none, whatever OBSKIT_ADMIN_ALLOWED_HOSTS says.
        .admin_allowed_hosts(Vec::<String>::new())
        .memory_check(false)
        // No span sink: the sink is process-wide and the span tests own it.
        .recent_spans(0)
}

fn value_of(metrics: &str, series: &str) -> Option<f64> {
    metrics
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn requests(endpoint: &str, status: u16) -> String {
    format!(r#"http_requests_total{{endpoint="{endpoint}",method="GET",status="{status}"}}"#)
}

#[tokio::test]
async fn service_routes_under_admin_looking_prefixes_are_served_and_counted() {
    let server = Server::start(builder()).await;
    for path in [
        "/health/deep",
        "/debug-info",
        "/debug/unknown",
        "/metricsfoo",
        "/healthz",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!((status, body.as_str()), (200, format!("service:{path}").as_str()));
    }
    // Admin routes meanwhile, which must not count.
    for path in [
        "/health",
        "/health/live",
        "/health/ready",
        "/metrics",
        "/debug/config",
    ] {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}: {body}");
        assert!(
            !body.starts_with("service:"),
            "{path} reached the service: {body}"
        );
    }
    let (_, metrics) = server.get("/metrics").await;
    assert_eq!(
        value_of(&metrics, &requests("/health/deep", 200)),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value_of(&metrics, &requests("/debug-info", 200)),
        Some(1.0),
        "{metrics}"
    );
    assert_eq!(
        value_of(&metrics, &requests("/debug/{*rest}", 200)),
        Some(1.0),
        "{metrics}"
    );
    // `/metricsfoo` and `/healthz`; not one of the admin requests.
    assert_eq!(
        value_of(&metrics, &requests("unmatched", 200)),
        Some(2.0),
        "{metrics}"
    );
    let recorded: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .collect();
    assert_eq!(recorded.len(), 4, "{}", recorded.join("\n"));
    server.shutdown().await;
}

#[tokio::test]
async fn every_table_route_is_served_by_the_admin_surface() {
    let server = Server::start(builder()).await;
    for route in ADMIN_ROUTES {
        let path = match route.matching {
            PathMatch::Exact => route.path.to_string(),
            PathMatch::Prefix => format!("{}nonexistent-20260101T000000Z-0001.svg", route.path),
        };
        // A method the route does not answer: the admin surface says so (and names the ones
        // it does), where the service would have answered `service:...`. No capture is taken.
        let (status, body) = server
            .request("PATCH", &path, Some(&server.0.addr.to_string()), "")
            .await;
        assert_eq!(status, 405, "{path}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).expect("a JSON error");
        assert_eq!(error["error"], "method_not_allowed", "{path}");
        if route.endpoint == AdminEndpoint::PprofProfile {
            continue;
        }
        let (status, body) = server.get(&path).await;
        assert!(!body.starts_with("service:"), "{path} reached the service");
        let expected = match route.endpoint {
            AdminEndpoint::ProfileFile => 404,
            // No recent-span buffer in these servers.
            AdminEndpoint::DebugTraces => 503,
            // Parts the build leaves out.
            AdminEndpoint::DebugLogLevel if cfg!(not(feature = "tracing-bridge")) => 501,
            AdminEndpoint::DebugMetrics if cfg!(not(feature = "process-metrics")) => 501,
            AdminEndpoint::DebugTasks if !obskit::debug::tasks::SUPPORTED => 501,
            // With the feature, this binary runs on jemalloc's profiler (main.rs).
            AdminEndpoint::PprofHeap | AdminEndpoint::PprofAllocs
                if cfg!(not(feature = "heap-profiling")) =>
            {
                501
            }
            _ => 200,
        };
        assert_eq!(status, expected, "{path}: {body}");
    }
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        !metrics.lines().any(|l| l.starts_with("http_requests_total{")),
        "admin requests were counted:\n{metrics}"
    );
    server.shutdown().await;
}

#[cfg(feature = "tracing-bridge")]
#[tokio::test]
async fn the_log_level_changes_over_http_for_a_while_and_reverts() {
    let server = Server::start(builder()).await;
    let host = server.0.addr.to_string();
    let (status, body) = server.get("/debug/log-level").await;
    assert_eq!(status, 200, "{body}");
    let before: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(before["expires_at"].is_null(), "{before}");
    let (status, body) = server
        .request(
            "PUT",
            "/debug/log-level?directives=info%2Cobskit%3Ddebug&ttl=1s",
            Some(&host),
            "",
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = server.get("/debug/log-level").await;
    let changed: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(changed["directives"], "info,obskit=debug");
    assert_eq!(changed["default"], before["directives"]);
    // Back by itself once the ttl is over.
    let deadline = std::time::Instant::now() + Duration::from_secs(15);
    loop {
        let (_, body) = server.get("/debug/log-level").await;
        let now: serde_json::Value = serde_json::from_str(&body).unwrap();
        if now["expires_at"].is_null() {
            assert_eq!(now["directives"], before["directives"]);
            break;
        }
        assert!(std::time::Instant::now() < deadline, "not reverted: {now}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, body) = server
        .request(
            "PUT",
            "/debug/log-level?directives=obskit%3Dloud",
            Some(&host),
            "",
        )
        .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("obskit=loud"), "the problem is named: {body}");
    server.shutdown().await;
}

#[tokio::test]
async fn measured_admin_requests_are_counted() {
    let server = Server::start(builder().measure_admin_requests(true)).await;
    assert_eq!(server.get("/health/live").await.0, 200);
    assert_eq!(server.get("/health/live").await.0, 200);
    let (_, metrics) = server.get("/metrics").await;
    // Two probes (the scrape itself is still in flight while it encodes).
    assert_eq!(
        value_of(&metrics, &requests("unmatched", 200)),
        Some(2.0),
        "{metrics}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn loopback_mode_refuses_foreign_hosts() {
    let server = Server::start(builder()).await;
    let port = server.0.addr.port();
    for host in [
        "evil.example".to_string(),
        format!("evil.example:{port}"),
        format!("localhost.evil.example:{port}"),
        format!("0.0.0.0:{port}"),
    ] {
        let (status, body) = server.request("GET", "/debug/config", Some(&host), "").await;
        assert_eq!(status, 403, "{host}: {body}");
        let error: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(error["error"], "host_not_allowed", "{host}");
        assert!(!body.contains("evil"), "the host is not echoed: {body}");
    }
    for host in [
        format!("127.0.0.1:{port}"),
        format!("localhost:{port}"),
        format!("[::1]:{port}"),
        "localhost".to_string(),
    ] {
        let (status, body) = server.request("GET", "/debug/config", Some(&host), "").await;
        assert_eq!(status, 200, "{host}: {body}");
    }
    // HTTP/1.0 without a Host: no browser sends that.
    let mut stream = TcpStream::connect(server.0.addr).await.unwrap();
    stream
        .write_all(b"GET /debug/config HTTP/1.0\r\n\r\n")
        .await
        .unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.0 200"), "{text}");
    // Open routes answer whatever the host.
    let (status, _) = server
        .request("GET", "/health/live", Some("evil.example"), "")
        .await;
    assert_eq!(status, 200);
    server.shutdown().await;
}

/// `GET uri` over HTTP/2 (prior knowledge): the URI's authority becomes `:authority`.
async fn h2_get(addr: SocketAddr, uri: &str) -> u16 {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (mut sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .expect("h2 handshake");
    tokio::spawn(connection);
    let request = Request::get(uri).body(Empty::<Bytes>::new()).unwrap();
    let response = sender.send_request(request).await.expect("h2 response");
    let status = response.status().as_u16();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn the_http2_authority_is_checked_too() {
    let server = Server::start(builder()).await;
    let port = server.0.addr.port();
    assert_eq!(
        h2_get(server.0.addr, &format!("http://evil.example:{port}/debug/config")).await,
        403
    );
    assert_eq!(
        h2_get(server.0.addr, &format!("http://localhost:{port}/debug/config")).await,
        200
    );
    server.shutdown().await;
}

#[tokio::test]
async fn allowed_hosts_and_token_mode() {
    let server = Server::start(builder().admin_allowed_hosts(["devbox.lan"])).await;
    let port = server.0.addr.port();
    let allowed = format!("devbox.lan:{port}");
    assert_eq!(
        server.request("GET", "/debug/config", Some(&allowed), "").await.0,
        200
    );
    let (status, config) = server.get("/debug/config").await;
    assert_eq!(status, 200);
    assert!(
        config.contains("devbox.lan"),
        "/debug/config names the allowed hosts: {config}"
    );
    let other = format!("devbox2.lan:{port}");
    assert_eq!(
        server.request("GET", "/debug/config", Some(&other), "").await.0,
        403
    );
    server.shutdown().await;

    // Token mode: the token is the proof, the host is not looked at.
    let server = Server::start(builder().admin_access(AdminAccess::Token("t0ken-for-test".into()))).await;
    let token = "Authorization: Bearer t0ken-for-test\r\n";
    let (status, body) = server
        .request("GET", "/debug/config", Some("evil.example"), token)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        server
            .request("GET", "/debug/config", Some("evil.example"), "")
            .await
            .0,
        StatusCode::UNAUTHORIZED.as_u16()
    );
    server.shutdown().await;
}
