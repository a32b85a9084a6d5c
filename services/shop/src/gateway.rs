//! The local gateway: one port that routes the contract's prefixes to the four services, as
//! nginx does in production (`monitoring/nginx/`).
//!
//! It forwards method, path, query, headers (W3C `traceparent`, `tracestate` and `baggage`
//! included, so a trace started by a client continues through the gateway) and a streamed
//! body, adds `X-Forwarded-For` and `Forwarded`, and streams the answer back. Hop-by-hop headers
//! (RFC 9110 section 7.6.1, and those the `Connection` header names) are dropped both ways. An
//! unknown prefix is a JSON 404; a body over 64 KiB a JSON 413 (refused at the edge, before a
//! service reads it); a service that refuses the connection is a JSON 502; one that cannot be
//! reached in time, or answers too slowly, a JSON 504. The services' admin surfaces
//! (`/metrics`, `/debug/*`, `/profiles/`) are not routed: they stay on the services' own ports.
//!
//! Connections are served by obskit's hardened [`Server`] with the same [`ServerSettings`] as
//! the services (head timeout from accept, body and idle timeouts, connection cap, header
//! limits, graceful shutdown within a deadline); see [`GatewayConfig`].

use std::convert::Infallible;
use std::error::Error as StdError;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderMap, HeaderName, HeaderValue, CONNECTION, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{Request, Response, StatusCode, Uri};
use http_body_util::{combinators::BoxBody, BodyExt, Full, LengthLimitError, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::{connect::HttpConnector, Client};
use hyper_util::rt::TokioExecutor;
use obskit::admin::PeerAddr;
use obskit::serve::{Server, ServerSettings, TimedBody};
use tokio::net::TcpListener;

type BoxError = Box<dyn StdError + Send + Sync>;
type GatewayBody = BoxBody<Bytes, hyper::Error>;
/// What is sent upstream: the client's body, timed and capped.
type UpstreamBody = BoxBody<Bytes, BoxError>;
type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// How long the gateway waits for a service's answer head.
pub const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(30);

/// How long the gateway waits for a connection to a service.
pub const UPSTREAM_CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The largest request body the gateway forwards: the services' own limit
/// ([`shop_common::http::DEFAULT_BODY_LIMIT`], 64 KiB), applied at the edge.
pub const BODY_LIMIT: usize = shop_common::http::DEFAULT_BODY_LIMIT;

/// How the gateway serves and forwards.
///
/// ```
/// use std::time::Duration;
/// let config = shop::gateway::GatewayConfig::default();
/// assert_eq!(config.upstream_timeout, Duration::from_secs(30));
/// assert_eq!(config.body_limit, 64 * 1024);
/// assert_eq!(config.server, obskit::serve::ServerSettings::default());
/// ```
#[derive(Clone, Debug)]
pub struct GatewayConfig {
    /// Client-side limits and timeouts: obskit's defaults, the services' own.
    pub server: ServerSettings,
    /// How long a connection to a service may take (then 504).
    pub upstream_connect_timeout: Duration,
    /// How long a service may take to send its answer head (then 504).
    pub upstream_timeout: Duration,
    /// The largest request body forwarded (then 413).
    pub body_limit: usize,
}

impl Default for GatewayConfig {
    fn default() -> Self {
        GatewayConfig {
            server: ServerSettings::default(),
            upstream_connect_timeout: UPSTREAM_CONNECT_TIMEOUT,
            upstream_timeout: UPSTREAM_TIMEOUT,
            body_limit: BODY_LIMIT,
        }
    }
}

/// Headers that describe one hop and must not be forwarded (RFC 9110 section 7.6.1), besides
/// those the `Connection` header names.
const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-connection",
];

/// Drops the hop-by-hop headers: the fixed list and every name listed in `Connection`.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Whether `error`, or an error it was caused by, is `E` matching `test`.
fn caused_by<E: StdError + 'static>(error: &(dyn StdError + 'static), test: impl Fn(&E) -> bool) -> bool {
    let mut current = Some(error);
    while let Some(e) = current {
        if e.downcast_ref::<E>().is_some_and(&test) {
            return true;
        }
        current = e.source();
    }
    false
}

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
    client: UpstreamClient,
    config: Arc<GatewayConfig>,
    request: Request<Incoming>,
) -> Response<GatewayBody> {
    let peer = request
        .extensions()
        .get::<PeerAddr>()
        .map(|p| p.0)
        .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
    let declared = request
        .headers()
        .get(CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > config.body_limit as u64) {
        return too_large(config.body_limit);
    }
    // The body under the server's body read timeout, and capped for bodies without a length.
    let limit = config.body_limit;
    let mut request = TimedBody::wrap_request(request)
        .map(|body| Limited::new(body, limit).map_err(BoxError::from).boxed());
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
    strip_hop_by_hop(headers);
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
    match tokio::time::timeout(config.upstream_timeout, client.request(request)).await {
        Ok(Ok(response)) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            Response::from_parts(parts, body.boxed())
        }
        Ok(Err(e)) if caused_by::<LengthLimitError>(&e, |_| true) => too_large(limit),
        Ok(Err(e))
            if e.is_connect()
                && caused_by::<std::io::Error>(&e, |io| io.kind() == std::io::ErrorKind::TimedOut) =>
        {
            tracing::warn!(upstream = %route.upstream, error = %e, "upstream not reached in time");
            json_error(
                StatusCode::GATEWAY_TIMEOUT,
                "gateway_timeout",
                "the service behind this path could not be reached in time",
            )
        }
        Ok(Err(e)) => {
            tracing::warn!(upstream = %route.upstream, error = %e, "upstream did not answer");
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

fn too_large(limit: usize) -> Response<GatewayBody> {
    json_error(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        &format!("the body exceeds {limit} bytes"),
    )
}

/// Serves the gateway on `listener` with [`GatewayConfig::default`] until `shutdown` resolves;
/// open connections are then given [`ServerSettings`]' drain deadline to finish.
pub async fn serve(
    listener: TcpListener,
    routes: Routes,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    serve_with(listener, routes, GatewayConfig::default(), shutdown).await
}

/// Like [`serve`], with `config`.
pub async fn serve_with(
    listener: TcpListener,
    routes: Routes,
    config: GatewayConfig,
    shutdown: impl std::future::Future<Output = ()>,
) -> std::io::Result<()> {
    let routes = Arc::new(routes);
    let mut connector = HttpConnector::new();
    connector.set_connect_timeout(Some(config.upstream_connect_timeout));
    connector.set_nodelay(true);
    let client: UpstreamClient = Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(30))
        .build(connector);
    let server = Server::new(config.server.clone());
    let config = Arc::new(config);
    let service = hyper::service::service_fn(move |request| {
        let routes = Arc::clone(&routes);
        let client = client.clone();
        let config = Arc::clone(&config);
        async move { Ok::<_, Infallible>(forward(routes, client, config, request).await) }
    });
    server.serve(listener, service, shutdown).await
}
