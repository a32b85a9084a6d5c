//! The admin surface: `/metrics`, `/health`, `/health/live`, `/health/ready`, `/debug/metrics`,
//! `/debug/config`, `/debug/traces`, `/debug/pprof/profile`, `/profiles/` and `/profiles/{name}`,
//! and their protection.
//!
//! `/metrics` and `/health*` are open (scrapers and orchestrators need them). Everything under
//! `/debug` and `/profiles` is protected: when an admin token is configured (`OBSKIT_ADMIN_TOKEN`) it must come
//! as `Authorization: Bearer <token>`, from any client; without a token, only loopback clients
//! are served. A request that carries `Forwarded`, `X-Forwarded-For` or `X-Real-IP` came through
//! a proxy, so its loopback peer says nothing about the real client: it is refused too.
//!
//! # Profiles
//!
//! - `GET /debug/pprof/profile?seconds=N` samples the whole process for `N` seconds (default 10,
//!   at most 60) and answers the pprof protobuf (`application/octet-stream`, as an attachment),
//!   which `go tool pprof -top FILE` or `go tool pprof -http=: FILE` reads; `&format=svg` answers
//!   the flamegraph instead; `&frequency=HZ` sets the sampling rate (default 99, at most 250).
//!   Only one capture runs at a time in a process: a request arriving while one runs (another
//!   request's, or a `#[profiled]` function's) is answered `409 Conflict` at once. The capture
//!   is also kept in the profile store. A client that disconnects stops its capture.
//! - `GET /profiles/` lists the stored profiles as JSON, newest first: name, function, kind
//!   (`pprof` or `flamegraph`), size, created, duration, sample count, download URL.
//! - `GET /profiles/{name}` downloads one, with its content type and a `Content-Disposition`
//!   naming the file. Names are made by the store and looked up in its index: anything it could
//!   not have made (`..`, `/`, `%2e`, NUL, ...) is 400, a well-formed unknown name 404, and no
//!   path is ever built from the request (see [`crate::profile::ProfileStore`]).
//!
//! The peer address comes from the [`PeerAddr`] request extension, which [`crate::Obskit::serve`]
//! inserts; a request without it is not treated as loopback.
//!
//! ```
//! use obskit::admin::{AdminAccess, AdminSurface, PeerAddr};
//! use obskit::health::HealthChecks;
//! use obskit::metrics::Registry;
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let admin = AdminSurface::new(Registry::new(), HealthChecks::new("demo", "1.0.0"))
//!     .access(AdminAccess::LoopbackOnly);
//! let mut request = http::Request::get("/debug/config").body(()).unwrap();
//! request.extensions_mut().insert(PeerAddr("10.1.2.3:5555".parse().unwrap()));
//! let response = admin.handle(request).await;
//! assert_eq!(response.status(), 403);
//! # });
//! ```

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::debug::{self, ProcessStats};
use crate::health::HealthChecks;
use crate::metrics::{accepts_openmetrics, Registry, OPENMETRICS_CONTENT_TYPE, TEXT_CONTENT_TYPE};
use crate::profile::{Capture, CaptureError, CaptureOptions, ProfileStore, StoreError};
use crate::trace::{RecentSpans, TraceQuery};

/// The address of the client that sent a request, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// Who may call the protected admin endpoints (`/debug/*`, `/profiles*`).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum AdminAccess {
    /// Any client presenting this Bearer token.
    Token(String),
    /// Only clients connected from a loopback address, not through a proxy.
    #[default]
    LoopbackOnly,
}

impl fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Never print the token, not even in a debug dump of the configuration.
            AdminAccess::Token(_) => f.write_str("Token(***)"),
            AdminAccess::LoopbackOnly => f.write_str("LoopbackOnly"),
        }
    }
}

/// Environment variable holding the admin Bearer token.
pub const ADMIN_TOKEN_ENV: &str = "OBSKIT_ADMIN_TOKEN";

impl AdminAccess {
    /// `Token` when `OBSKIT_ADMIN_TOKEN` is set and not empty, else `LoopbackOnly`.
    ///
    /// ```
    /// let access = obskit::admin::AdminAccess::from_env();
    /// # let _ = access;
    /// ```
    pub fn from_env() -> Self {
        match std::env::var(ADMIN_TOKEN_ENV) {
            Ok(token) if !token.trim().is_empty() => AdminAccess::Token(token.trim().to_string()),
            _ => AdminAccess::LoopbackOnly,
        }
    }

    /// Checks a request against this policy.
    fn check<B>(&self, request: &Request<B>) -> Result<(), Refusal> {
        match self {
            AdminAccess::Token(expected) => {
                let presented = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, token) = v.split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                    });
                match presented {
                    Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
                    Some(_) => Err(Refusal::BadToken),
                    None => Err(Refusal::NoToken),
                }
            }
            AdminAccess::LoopbackOnly => {
                let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
                    .iter()
                    .any(|h| request.headers().contains_key(*h));
                let loopback = request
                    .extensions()
                    .get::<PeerAddr>()
                    .is_some_and(|peer| peer.0.ip().to_canonical().is_loopback());
                if loopback && !forwarded {
                    Ok(())
                } else {
                    Err(Refusal::NotLoopback)
                }
            }
        }
    }
}

enum Refusal {
    NoToken,
    BadToken,
    NotLoopback,
}

/// Compares without an early exit, so the time taken says nothing about how much matched.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// The admin endpoints of one service. Cheap to clone.
#[derive(Clone)]
pub struct AdminSurface {
    inner: Arc<Inner>,
}

struct Inner {
    registry: Registry,
    health: HealthChecks,
    stats: Option<Arc<ProcessStats>>,
    config: Vec<(String, String)>,
    traces: Option<RecentSpans>,
    access: AdminAccess,
    profiles: Option<ProfileStore>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Endpoint {
    Metrics,
    Health,
    Live,
    Ready,
    DebugMetrics,
    DebugConfig,
    DebugTraces,
    PprofProfile,
    DebugUnknown,
    ProfileList,
    ProfileFile,
}

impl Endpoint {
    fn parse(path: &str) -> Option<Endpoint> {
        let path = if path.len() > 1 {
            path.trim_end_matches('/')
        } else {
            path
        };
        Some(match path {
            "/metrics" => Endpoint::Metrics,
            "/health" => Endpoint::Health,
            "/health/live" => Endpoint::Live,
            "/health/ready" => Endpoint::Ready,
            "/debug/metrics" => Endpoint::DebugMetrics,
            "/debug/config" => Endpoint::DebugConfig,
            "/debug/traces" => Endpoint::DebugTraces,
            "/debug/pprof/profile" => Endpoint::PprofProfile,
            p if p == "/debug" || p.starts_with("/debug/") => Endpoint::DebugUnknown,
            "/profiles" => Endpoint::ProfileList,
            p if p.starts_with("/profiles/") => Endpoint::ProfileFile,
            _ => return None,
        })
    }

    fn protected(self) -> bool {
        matches!(
            self,
            Endpoint::DebugMetrics
                | Endpoint::DebugConfig
                | Endpoint::DebugTraces
                | Endpoint::PprofProfile
                | Endpoint::DebugUnknown
                | Endpoint::ProfileList
                | Endpoint::ProfileFile
        )
    }
}

impl AdminSurface {
    /// An admin surface over a registry and health checks, loopback-only until told otherwise,
    /// without process figures (see [`AdminSurface::process_stats`]).
    pub fn new(registry: Registry, health: HealthChecks) -> Self {
        AdminSurface {
            inner: Arc::new(Inner {
                registry,
                health,
                stats: None,
                config: Vec::new(),
                traces: None,
                access: AdminAccess::LoopbackOnly,
                profiles: None,
            }),
        }
    }

    fn update(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => f(inner),
            None => {
                let old = &self.inner;
                let mut inner = Inner {
                    registry: old.registry.clone(),
                    health: old.health.clone(),
                    stats: old.stats.clone(),
                    config: old.config.clone(),
                    traces: old.traces.clone(),
                    access: old.access.clone(),
                    profiles: old.profiles.clone(),
                };
                f(&mut inner);
                self.inner = Arc::new(inner);
            }
        }
        self
    }

    /// Sets who may call the protected endpoints.
    pub fn access(self, access: AdminAccess) -> Self {
        self.update(|i| i.access = access)
    }

    /// The process sampler behind `/debug/metrics`.
    pub fn process_stats(self, stats: Arc<ProcessStats>) -> Self {
        self.update(|i| i.stats = Some(stats))
    }

    /// The effective configuration shown (masked) by `/debug/config`.
    pub fn config(self, entries: Vec<(String, String)>) -> Self {
        self.update(|i| i.config = entries)
    }

    /// The recent-span buffer behind `/debug/traces` (without it, the endpoint answers 503).
    ///
    /// ```
    /// use obskit::admin::{AdminSurface, PeerAddr};
    /// use obskit::trace::{RecentSpans, SpanSink};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let recent = RecentSpans::new(64);
    /// let admin = AdminSurface::new(obskit::metrics::Registry::new(), obskit::health::HealthChecks::new("demo", "1"))
    ///     .recent_spans(recent.clone());
    /// let mut request = http::Request::get("/debug/traces?status=error&limit=5").body(()).unwrap();
    /// request.extensions_mut().insert(PeerAddr("127.0.0.1:4000".parse().unwrap()));
    /// assert_eq!(admin.handle(request).await.status(), 200);
    /// # });
    /// ```
    pub fn recent_spans(self, recent: RecentSpans) -> Self {
        self.update(|i| i.traces = Some(recent))
    }

    /// The store behind `/profiles/` (and where on-demand captures are kept). Without it, the
    /// process-wide [`ProfileStore::global`], where `#[profiled]` captures go.
    pub fn profile_store(self, store: ProfileStore) -> Self {
        self.update(|i| i.profiles = Some(store))
    }

    fn profiles(&self) -> ProfileStore {
        self.inner.profiles.clone().unwrap_or_else(ProfileStore::global)
    }

    /// Whether `path` belongs to the admin surface.
    ///
    /// ```
    /// use obskit::admin::AdminSurface;
    /// assert!(AdminSurface::is_admin_path("/metrics"));
    /// assert!(AdminSurface::is_admin_path("/debug/config"));
    /// assert!(AdminSurface::is_admin_path("/profiles/"));
    /// assert!(!AdminSurface::is_admin_path("/metricsfoo"));
    /// assert!(!AdminSurface::is_admin_path("/api/products"));
    /// ```
    pub fn is_admin_path(path: &str) -> bool {
        Endpoint::parse(path).is_some()
    }

    /// Answers one admin request. Paths outside the admin surface get a JSON 404.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        let Some(endpoint) = Endpoint::parse(request.uri().path()) else {
            return error(StatusCode::NOT_FOUND, "not_found", "no such endpoint");
        };
        if endpoint.protected() {
            if let Err(refusal) = self.inner.access.check(&request) {
                return match refusal {
                    Refusal::NoToken | Refusal::BadToken => {
                        let mut response = error(
                            StatusCode::UNAUTHORIZED,
                            "unauthorized",
                            "admin endpoints need `Authorization: Bearer <OBSKIT_ADMIN_TOKEN>`",
                        );
                        response
                            .headers_mut()
                            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
                        response
                    }
                    Refusal::NotLoopback => error(
                        StatusCode::FORBIDDEN,
                        "forbidden",
                        "admin endpoints answer only to direct loopback clients unless OBSKIT_ADMIN_TOKEN is set",
                    ),
                };
            }
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "admin endpoints answer GET and HEAD",
            );
            response
                .headers_mut()
                .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
            return response;
        }
        match endpoint {
            Endpoint::Metrics => {
                // OpenMetrics (with exemplars) only when asked for: Prometheus 3 refuses content
                // types it did not accept, and 0.0.4 text is what every other scraper reads.
                let openmetrics = request
                    .headers()
                    .get_all(header::ACCEPT)
                    .iter()
                    .filter_map(|v| v.to_str().ok())
                    .any(accepts_openmetrics);
                if openmetrics {
                    let body = self.inner.registry.encode_openmetrics();
                    with_type(StatusCode::OK, OPENMETRICS_CONTENT_TYPE, body.into())
                } else {
                    let body = self.inner.registry.encode_text();
                    with_type(StatusCode::OK, TEXT_CONTENT_TYPE, body.into())
                }
            }
            Endpoint::Health => {
                let report = self.inner.health.report().await;
                json(status_of(report.http_status()), &report)
            }
            Endpoint::Live => {
                let report = self.inner.health.liveness();
                json(status_of(report.http_status()), &report)
            }
            Endpoint::Ready => {
                let report = self.inner.health.readiness().await;
                json(status_of(report.http_status()), &report)
            }
            Endpoint::DebugMetrics => match &self.inner.stats {
                Some(stats) => json(StatusCode::OK, &stats.snapshot()),
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "process figures are sampled only when served through obskit",
                ),
            },
            Endpoint::DebugConfig => {
                let entries: Vec<(&str, String)> = self
                    .inner
                    .config
                    .iter()
                    .map(|(k, v)| (k.as_str(), v.clone()))
                    .collect();
                json(StatusCode::OK, &debug::config_report(&entries))
            }
            Endpoint::DebugTraces => match &self.inner.traces {
                Some(recent) => match TraceQuery::parse(request.uri().query()) {
                    Ok(query) => json(StatusCode::OK, &recent.report(&query)),
                    Err(problem) => error(StatusCode::BAD_REQUEST, "bad_query", &problem),
                },
                None => error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "not_configured",
                    "no recent-span buffer is installed",
                ),
            },
            // A HEAD would take a whole capture (and the process's only profiler) for nothing.
            Endpoint::PprofProfile if request.method() == Method::HEAD => {
                let mut response = error(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    "/debug/pprof/profile answers GET only: each request takes a capture",
                );
                response
                    .headers_mut()
                    .insert(header::ALLOW, HeaderValue::from_static("GET"));
                response
            }
            Endpoint::PprofProfile => self.pprof_profile(request.uri().query()).await,
            Endpoint::DebugUnknown => error(
                StatusCode::NOT_FOUND,
                "not_found",
                "no such debug endpoint; try /debug/metrics, /debug/config, /debug/traces or /debug/pprof/profile",
            ),
            Endpoint::ProfileList => json(
                StatusCode::OK,
                &serde_json::json!({ "profiles": self.profiles().list() }),
            ),
            Endpoint::ProfileFile => {
                // The raw path, not percent-decoded: a stored name never contains `%`, so an
                // encoded one is refused as it is, and never decoded into a path.
                let name = request.uri().path()["/profiles/".len()..].trim_end_matches('/');
                match self.profiles().get(name) {
                    Ok(data) => {
                        let mut response = with_type(StatusCode::OK, data.content_type(), data.bytes.clone());
                        if let Ok(value) = HeaderValue::from_str(&data.content_disposition()) {
                            response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
                        }
                        response
                    }
                    Err(StoreError::InvalidName) => error(
                        StatusCode::BAD_REQUEST,
                        "invalid_name",
                        "not a profile name; names are listed by /profiles/",
                    ),
                    Err(StoreError::NotFound) => error(StatusCode::NOT_FOUND, "not_found", "no such profile"),
                    Err(StoreError::Io(_)) => error(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "unreadable",
                        "the profile could not be read back",
                    ),
                }
            }
        }
    }

    /// `GET /debug/pprof/profile`.
    async fn pprof_profile(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let query = match ProfileQuery::parse(query.unwrap_or("")) {
            Ok(query) => query,
            Err(message) => return error(StatusCode::BAD_REQUEST, "bad_request", &message),
        };
        let options = CaptureOptions::new(crate::profile::ON_DEMAND).frequency(query.frequency);
        // Starting the sampler blocks for ~0.5 ms (far longer the first time in a process):
        // off the async workers. A busy profiler still answers at once.
        let started = tokio::task::spawn_blocking(move || Capture::start(options).map(OffThread::map))
            .await
            .unwrap_or_else(|_| Err(CaptureError::Profiler("the start task failed".into())));
        let mut capture = match started {
            Ok(capture) => capture,
            Err(CaptureError::Busy) => {
                return error(
                    StatusCode::CONFLICT,
                    "profile_in_progress",
                    "a CPU profile is already being captured in this process (only one can run at a time); retry when it finishes",
                )
            }
            Err(CaptureError::Profiler(e)) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "profiler_failed",
                    &format!("the CPU profiler could not start: {e}"),
                )
            }
        };
        // Dropping this future (the client went away) drops the capture, which stops it.
        tokio::time::sleep(query.duration).await;
        let capture = capture.0.take().expect("held until here");
        // Symbolising is CPU work for up to a few hundred milliseconds: off the async workers.
        let finished = tokio::task::spawn_blocking(move || capture.finish()).await;
        let profile = match finished {
            Ok(Ok(profile)) => profile,
            Ok(Err(e)) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "profiler_failed",
                    &e.to_string(),
                )
            }
            Err(_) => {
                return error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "profiler_failed",
                    "the capture's encoding task failed",
                )
            }
        };
        let names = self.profiles().insert(&profile);
        let (content_type, body, extension) = if query.svg {
            ("image/svg+xml", profile.svg().clone(), "svg")
        } else {
            ("application/octet-stream", profile.pprof().clone(), "pb")
        };
        let mut response = with_type(StatusCode::OK, content_type, body);
        let file = names
            .into_iter()
            .find(|n| n.ends_with(&format!(".{extension}")))
            .unwrap_or_else(|| format!("on_demand.{extension}"));
        if let Ok(value) = HeaderValue::from_str(&format!("attachment; filename=\"{file}\"")) {
            response.headers_mut().insert(header::CONTENT_DISPOSITION, value);
        }
        response
    }
}

/// Holds an on-demand capture; if the request is dropped mid-capture, stops it on a blocking
/// thread (stopping pprof-rs's profiler takes tens of milliseconds).
struct OffThread(Option<Capture>);

impl OffThread {
    fn map(capture: Capture) -> OffThread {
        OffThread(Some(capture))
    }
}

impl Drop for OffThread {
    fn drop(&mut self) {
        if let Some(capture) = self.0.take() {
            match tokio::runtime::Handle::try_current() {
                Ok(handle) => drop(handle.spawn_blocking(move || drop(capture))),
                Err(_) => drop(capture),
            }
        }
    }
}

/// The query of `/debug/pprof/profile`.
#[derive(Debug, PartialEq)]
struct ProfileQuery {
    duration: std::time::Duration,
    frequency: u32,
    svg: bool,
}

/// The default capture length of `/debug/pprof/profile`, in seconds (Go's too).
const DEFAULT_PROFILE_SECONDS: u64 = 10;
/// The longest capture `/debug/pprof/profile` takes, in seconds.
const MAX_PROFILE_SECONDS: u64 = 60;

impl ProfileQuery {
    fn parse(query: &str) -> Result<ProfileQuery, String> {
        let mut parsed = ProfileQuery {
            duration: std::time::Duration::from_secs(DEFAULT_PROFILE_SECONDS),
            frequency: crate::profile::DEFAULT_FREQUENCY,
            svg: false,
        };
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "seconds" => {
                    let seconds: u64 = value.parse().ok().filter(|s| *s > 0).ok_or_else(|| {
                        format!("seconds must be a positive integer (at most {MAX_PROFILE_SECONDS})")
                    })?;
                    parsed.duration = std::time::Duration::from_secs(seconds.min(MAX_PROFILE_SECONDS));
                }
                "frequency" => {
                    let hz: u32 = value.parse().ok().filter(|hz| *hz > 0).ok_or_else(|| {
                        format!(
                            "frequency must be a positive integer in Hz (at most {})",
                            crate::profile::MAX_FREQUENCY
                        )
                    })?;
                    parsed.frequency = hz.min(crate::profile::MAX_FREQUENCY);
                }
                "format" => {
                    parsed.svg = match value {
                        "svg" | "flamegraph" => true,
                        "pprof" | "proto" | "protobuf" => false,
                        _ => return Err("format must be pprof or svg".to_string()),
                    }
                }
                _ => {}
            }
        }
        Ok(parsed)
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

fn with_type(status: StatusCode, content_type: &'static str, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// A JSON response.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> Response<Full<Bytes>> {
    match serde_json::to_vec_pretty(value) {
        Ok(body) => with_type(status, "application/json", body.into()),
        Err(_) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "could not encode the response",
        ),
    }
}

/// A JSON error `{"error": code, "message": ...}`.
pub(crate) fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    let body = serde_json::json!({ "error": code, "message": message });
    with_type(status, "application/json", body.to_string().into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;

    fn surface(access: AdminAccess) -> AdminSurface {
        AdminSurface::new(Registry::new(), HealthChecks::new("t", "0")).access(access)
    }

    fn request(path: &str, peer: &str, headers: &[(&str, &str)]) -> Request<()> {
        let mut builder = Request::get(path);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        let mut request = builder.body(()).unwrap();
        request.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
        request
    }

    async fn status(admin: &AdminSurface, req: Request<()>) -> u16 {
        admin.handle(req).await.status().as_u16()
    }

    #[tokio::test]
    async fn loopback_policy() {
        let admin = surface(AdminAccess::LoopbackOnly);
        assert_eq!(
            status(&admin, request("/debug/config", "127.0.0.1:1", &[])).await,
            200
        );
        assert_eq!(
            status(&admin, request("/debug/config", "[::1]:1", &[])).await,
            200
        );
        assert_eq!(
            status(&admin, request("/debug/config", "[::ffff:127.0.0.1]:1", &[])).await,
            200
        );
        assert_eq!(
            status(&admin, request("/debug/config", "10.0.0.8:1", &[])).await,
            403
        );
        assert_eq!(
            status(
                &admin,
                request("/debug/config", "127.0.0.1:1", &[("x-forwarded-for", "1.2.3.4")])
            )
            .await,
            403
        );
        let mut no_peer = Request::get("/debug/config").body(()).unwrap();
        no_peer.extensions_mut().clear();
        assert_eq!(status(&admin, no_peer).await, 403);
        // Open endpoints stay open.
        assert_eq!(status(&admin, request("/metrics", "10.0.0.8:1", &[])).await, 200);
        assert_eq!(
            status(&admin, request("/health/live", "10.0.0.8:1", &[])).await,
            200
        );
    }

    #[tokio::test]
    async fn token_policy_applies_to_loopback_too() {
        let admin = surface(AdminAccess::Token("s3cret".into()));
        assert_eq!(
            status(&admin, request("/debug/metrics", "127.0.0.1:1", &[])).await,
            401
        );
        assert_eq!(
            status(
                &admin,
                request(
                    "/debug/config",
                    "127.0.0.1:1",
                    &[("authorization", "Bearer nope")]
                )
            )
            .await,
            401
        );
        assert_eq!(
            status(
                &admin,
                request(
                    "/debug/config",
                    "10.0.0.8:1",
                    &[("authorization", "Bearer s3cret")]
                )
            )
            .await,
            200
        );
        assert_eq!(
            status(
                &admin,
                request(
                    "/debug/config",
                    "10.0.0.8:1",
                    &[("authorization", "bearer s3cret")]
                )
            )
            .await,
            200
        );
        // Unknown debug paths do not reveal themselves to unauthenticated callers.
        assert_eq!(
            status(&admin, request("/debug/nothing", "10.0.0.8:1", &[])).await,
            401
        );
    }

    #[tokio::test]
    async fn methods_and_unknown_paths() {
        let admin = surface(AdminAccess::LoopbackOnly);
        let mut post = request("/metrics", "127.0.0.1:1", &[]);
        *post.method_mut() = Method::POST;
        let response = admin.handle(post).await;
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "GET, HEAD");
        let response = admin.handle(request("/nope", "127.0.0.1:1", &[])).await;
        assert_eq!(response.status(), 404);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["error"], "not_found");
    }

    #[test]
    fn profile_query() {
        use std::time::Duration;
        let q = ProfileQuery::parse("").unwrap();
        assert_eq!(
            (q.duration, q.frequency, q.svg),
            (Duration::from_secs(10), 99, false)
        );
        let q = ProfileQuery::parse("seconds=600&frequency=1000&format=svg&debug=1").unwrap();
        assert_eq!(
            (q.duration, q.frequency, q.svg),
            (Duration::from_secs(60), 250, true)
        );
        for bad in [
            "seconds=0",
            "seconds=-1",
            "seconds=abc",
            "frequency=0",
            "format=png",
        ] {
            assert!(ProfileQuery::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn profiles_are_protected_and_names_checked() {
        let store = ProfileStore::in_memory(4, 1 << 20);
        let names = store.insert(&crate::profile::Profile::from_parts("f", b"pb", b"<svg/>"));
        let admin = surface(AdminAccess::LoopbackOnly).profile_store(store);
        for path in ["/profiles/", "/profiles", "/debug/pprof/profile?seconds=1"] {
            assert_eq!(
                status(&admin, request(path, "10.0.0.8:1", &[])).await,
                403,
                "{path}"
            );
        }
        let response = admin.handle(request("/profiles/", "127.0.0.1:1", &[])).await;
        assert_eq!(response.status(), 200);
        let body = response.into_body().collect().await.unwrap().to_bytes();
        let value: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(value["profiles"][0]["name"], names[1]);
        assert_eq!(value["profiles"][0]["kind"], "flamegraph");
        assert_eq!(value["profiles"][1]["kind"], "pprof");
        let response = admin
            .handle(request(&format!("/profiles/{}", names[0]), "127.0.0.1:1", &[]))
            .await;
        assert_eq!(response.status(), 200);
        assert_eq!(response.headers()["content-type"], "application/octet-stream");
        assert_eq!(
            response.headers()["content-disposition"],
            format!("attachment; filename=\"{}\"", names[0]).as_str()
        );
        assert_eq!(
            status(
                &admin,
                request("/profiles/..%2f..%2fetc%2fpasswd", "127.0.0.1:1", &[])
            )
            .await,
            400
        );
        assert_eq!(
            status(&admin, request("/profiles/nope.svg", "127.0.0.1:1", &[])).await,
            404
        );
        assert_eq!(
            status(
                &admin,
                request("/debug/pprof/profile?seconds=x", "127.0.0.1:1", &[])
            )
            .await,
            400
        );
        let mut head = request("/debug/pprof/profile?seconds=1", "127.0.0.1:1", &[]);
        *head.method_mut() = Method::HEAD;
        let response = admin.handle(head).await;
        assert_eq!(response.status(), 405);
        assert_eq!(response.headers()["allow"], "GET");
    }

    #[test]
    fn token_is_never_printed() {
        assert_eq!(format!("{:?}", AdminAccess::Token("abc".into())), "Token(***)");
    }

    #[test]
    fn constant_time_eq_works() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
