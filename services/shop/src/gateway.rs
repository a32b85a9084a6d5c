//! The local gateway: one port that routes the contract's prefixes to the four services, as
//! nginx does in production (`monitoring/nginx/`).
//!
//! It forwards method, path, query, headers (W3C `traceparent`, `tracestate` and `baggage`
//! included, so a trace started by a client continues through the gateway) and a streamed
//! body, adds `X-Forwarded-For` and `Forwarded`, and streams the answer back. An unknown prefix
//! is a JSON 404; a service that does not answer is a JSON 502, one that answers too slowly a
//! JSON 504. The services' admin surfaces (`/metrics`, `/debug/*`, `/profiles/`) are not routed:
//! they stay on the services' own ports.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;

type GatewayBody = BoxBody<Bytes, hyper::Error>;

/// How long the gateway waits for a service's answer head.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// Headers that describe one hop and must not be forwarded (RFC 9110 section 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// A prefix and the service address it routes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// Path prefix with its trailing slash, e.g. `/cart-api/`.
    pub prefix: String,
    /// Where the service listens.
    pub upstream: SocketAddr,
}

/// The routing table: first matching prefix wins.
///
/// ```
/// use shop::gateway::{Route, Routes};
/// let routes = Routes::new(vec![Route { prefix: "/api/".into(), upstream: "127.0.0.1:8000".parse().unwrap() }]);
/// assert_eq!(routes.find("/api/products").map(|r| r.upstream.port()), Some(8000));
/// assert!(routes.find("/apix").is_none());
/// assert!(routes.find("/metrics").is_none());
/// ```
#[derive(Clone, Debug)]
pub struct Routes(Vec<Route>);

impl Routes {
    /// A table of `routes`.
    pub fn new(routes: Vec<Route>) -> Routes {
        Routes(routes)
    }

    /// The route whose prefix starts `path`; a path equal to the prefix without its slash
    /// (`/api`) matches too.
    pub fn find(&self, path: &str) -> Option<&Route> {
        self.0
            .iter()
            .find(|r| path.starts_with(&r.prefix) || path == r.prefix.trim_end_matches('/'))
    }
}

fn json_error(status: StatusCode, code: &str, message: &str) -> Response<GatewayBody> {
    let body = serde_json::json!({ "error": code, "message": message }).to_string();
    let mut response = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// Forwards one request. Never fails: every problem is an answer.
async fn forward(
    routes: Arc<Routes>,
    client: Client<HttpConnector, Incoming>,
    peer: SocketAddr,
    mut request: Request<Incoming>,
) -> Response<GatewayBody> {
    let Some(route) = routes.find(request.uri().path()) else {
        return json_error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no service serves this path (prefixes: /api/, /cart-api/, /order-api/, /user-api/)",
        );
    };
    let path_and_query = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    let Ok(uri) = format!("http://{}{}", route.upstream, path_and_query).parse::<Uri>() else {
        return json_error(
            StatusCode::BAD_REQUEST,
            "bad_request",
            "the request target is not a valid URI",
        );
    };
    let original_host = request.headers().get(HOST).cloned();
    *request.uri_mut() = uri;
    let headers = request.headers_mut();
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(HOST);
    let client_ip = peer.ip().to_string();
    let forwarded_for = match headers.get("x-forwarded-for").and_then(|v| v.to_str().ok()) {
        Some(previous) => format!("{previous}, {client_ip}"),
        None => client_ip.clone(),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(HeaderName::from_static("x-forwarded-for"), value);
    }
    let forwarded = match original_host.as_ref().and_then(|h| h.to_str().ok()) {
        Some(host) if !host.contains(['"', ';', ',']) => format!("for=\"{client_ip}\";host=\"{host}\""),
        _ => format!("for=\"{client_ip}\""),
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded) {
        headers.insert(HeaderName::from_static("forwarded"), value);
    }
    match tokio::time::timeout(UPSTREAM_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            for name in HOP_BY_HOP {
                parts.headers.remove(name);
            }
            Response::from_parts(parts, body.boxed())
        }
        Ok(Err(e)) => {
            eprintln!("gateway: {} did not answer: {e}", route.upstream);
            json_error(
                StatusCode::BAD_GATEWAY,
                "bad_gateway",
                "the service behind this path did not answer; try again later",
            )
        }
        Err(_) => json_error(
            StatusCode::GATEWAY_TIMEOUT,
            "gateway_timeout",
            "the service behind this path answered too slowly",
        ),
    }
}

/// Serves the gateway on `listener` until `shutdown` resolves; open connections are then
/// given a moment to finish.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let routes = Arc::new(routes);
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(Duration::from_secs(2)));
    connector.set_nodelay(true);
    let client: Client<HttpConnector, Incoming> = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait, do not spin.
                    eprintln!("gateway: accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let routes = Arc::clone(&routes);
        let client = client.clone();
        let service = hyper::service::service_fn(move |request| {
            let routes = Arc::clone(&routes);
            let client = client.clone();
            async move { Ok::<_, Infallible>(forward(routes, client, peer, request).await) }
        });
        let connection = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
            .serve_connection(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), graceful.shutdown()).await;
    Ok(())
}
