//! The admin surface: `/metrics`, `/health`, `/health/live`, `/health/ready`, `/debug/metrics`,
//! `/debug/config`, `/debug/traces`, `/debug/log-level`, `/debug/requests`, `/debug/tasks`,
//! `/debug/pprof/profile`, `/debug/pprof/heap`, `/debug/pprof/allocs`, `/profiles/` and
//! `/profiles/{name}`, and their protection.
//!
//! # Routes
//!
//! One table, [`ADMIN_ROUTES`], lists them: path (or prefix), endpoint, protection and methods.
//! The RED layer's admin exclusion, the dispatcher that shares a port with the service and
//! [`AdminSurface::handle`] all decide from it, so a path is either an admin route everywhere or
//! the service's everywhere. Only the table's paths are admin: `/health/deep`, `/debug-info`,
//! `/metricsfoo` or `/debug/anything-else` belong to the service, which serves them, and they
//! count in its RED metrics.
//!
//! # Protection
//!
//! `/metrics` and `/health*` are open (scrapers and orchestrators need them). The `/debug/...`
//! and `/profiles...` routes are protected: when an admin token is configured
//! (`OBSKIT_ADMIN_TOKEN`) it must come as `Authorization: Bearer <token>`, from any client;
//! without a token, only loopback clients are served. A request that carries `Forwarded`,
//! `X-Forwarded-For` or `X-Real-IP` came through a proxy, so its loopback peer says nothing
//! about the real client: it is refused too. And in that loopback mode the request must be
//! addressed to a loopback name (`localhost`, `127.0.0.1`, `[::1]`, any port) or to a host
//! allowed by [`ObskitBuilder::admin_allowed_hosts`](crate::ObskitBuilder::admin_allowed_hosts)
//! or `OBSKIT_ADMIN_ALLOWED_HOSTS`, so that a web page cannot reach them through DNS rebinding
//! (see [`AllowedHosts`] and [`is_loopback_authority`] for the details).
//!
//! # Profiles
//!
//! - `GET /debug/pprof/profile?seconds=N` samples the whole process for `N` seconds (default 10,
//!   at most 60) and answers the pprof protobuf (`application/octet-stream`, as an attachment),
//!   which `go tool pprof -top FILE` or `go tool pprof -http=: FILE` reads; `&format=svg` answers
//!   the flamegraph instead; `&frequency=HZ` sets the sampling rate (default 99, at most 250).
//!   Only one capture runs at a time in a process: a request arriving while one runs (another
//!   request's, or a `#[profiled]` function's) is answered `409 Conflict` at once. The capture
//!   is also kept in the profile store. A client that disconnects stops its capture. `HEAD` is
//!   `405`: it would take a capture for nothing. Its samples are labelled with the span they
//!   were taken in (`trace_id`, `span_name`, `http.route`; `&labels=off` leaves them out), see
//!   [`CaptureOptions::span_labels`](crate::profile::CaptureOptions::span_labels).
//! - `GET /debug/pprof/heap` and `GET /debug/pprof/allocs` answer heap profiles from jemalloc's
//!   sampling profiler (feature `heap-profiling`, see `profile::heap`): pprof protobufs
//!   with Go's heap sample types, led by in-use and by allocated bytes; `?format=svg` for the
//!   flamegraph. Kept in the store too; one at a time (409); `HEAD` is `405`. Without jemalloc's
//!   profiler they answer 501, saying what is missing.
//! - `GET /profiles/` lists the stored profiles as JSON, newest first: name, function, kind
//!   (`pprof` or `flamegraph`), profile type (`cpu` or `heap`), size, created, duration, sample
//!   count, sampling rate, download URL.
//! - `GET /profiles/{name}` downloads one, with its content type and a `Content-Disposition`
//!   naming the file. Names are made by the store and looked up in its index: anything it could
//!   not have made (`..`, `/`, `%2e`, NUL, ...) is 400, a well-formed unknown name 404, and no
//!   path is ever built from the request (see [`crate::profile::ProfileStore`]). With
//!   `?trace_id=` (32 hex digits), a labelled CPU capture's pprof file is cut to that trace's
//!   samples (the link `/debug/traces` gives beside each span the capture labelled).
//!
//! # A hung service
//!
//! - `GET /debug/requests` lists the requests in flight and the spans open, oldest first, each
//!   request with the open spans of its trace ([`crate::debug::in_flight`]); `?limit=N`.
//! - `GET /debug/tasks` answers a tokio task dump: where each task of the runtime waits
//!   ([`crate::debug::tasks`], which says the build it needs; otherwise `501`). One at a time
//!   (`409`), within `?timeout=` seconds (`503` past it: a worker is blocked). `HEAD` is `405`.
//!
//! # Log level
//!
//! - `GET /debug/log-level` shows the `EnvFilter` directives in force, the start-up ones
//!   (`RUST_LOG`) and, while a change is in force, when it ends.
//! - `PUT /debug/log-level?directives=warn,cart=debug&ttl=10m` filters with those directives
//!   for `ttl` (seconds, or `30s`, `10m`, `2h`; default 10 minutes, at most 24 hours), after which
//!   the start-up directives are back by themselves. Directives that do not parse, or a ttl out
//!   of range, get a `400` naming the problem, and change nothing. Values are percent-decoded:
//!   `curl -X PUT -G --data-urlencode 'directives=info,cart[checkout]=debug' URL` sends any.
//! - `DELETE /debug/log-level` puts the start-up directives back now.
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
//!
//! // A loopback peer, but the request names another host: a page that rebound its name.
//! let mut request = http::Request::get("/debug/config")
//!     .header("host", "evil.example:8080")
//!     .body(())
//!     .unwrap();
//! request.extensions_mut().insert(PeerAddr("127.0.0.1:5555".parse().unwrap()));
//! assert_eq!(admin.handle(request).await.status(), 403);
//! # });
//! ```

mod access;
mod dispatch;
mod handlers;
mod routes;
mod service;
#[cfg(test)]
mod tests;

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::Full;

use access::Refusal;
pub use access::{
    is_loopback_authority, AdminAccess, AllowedHosts, ADMIN_ALLOWED_HOSTS_ENV, ADMIN_TOKEN_ENV,
};
pub(crate) use dispatch::Dispatch;
pub use routes::{AdminEndpoint, AdminRoute, PathMatch, Protection, ADMIN_ROUTES};
pub use service::{AdminFuture, AdminService};

#[cfg(feature = "process-metrics")]
use crate::debug::ProcessStats;
use crate::health::HealthChecks;
#[cfg(feature = "tracing-bridge")]
use crate::log::LogLevels;
use crate::metrics::Registry;
use crate::profile::ProfileStore;
use crate::trace::RecentSpans;

/// The address of the client that sent a request, as a request extension.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PeerAddr(pub SocketAddr);

/// The admin endpoints of one service. Cheap to clone.
#[derive(Clone)]
pub struct AdminSurface {
    inner: Arc<Inner>,
}

#[derive(Clone)]
struct Inner {
    registry: Registry,
    health: HealthChecks,
    #[cfg(feature = "process-metrics")]
    stats: Option<Arc<ProcessStats>>,
    config: Vec<(String, String)>,
    traces: Option<RecentSpans>,
    #[cfg(feature = "tracing-bridge")]
    log_levels: Option<LogLevels>,
    access: AdminAccess,
    allowed_hosts: AllowedHosts,
    profiles: Option<ProfileStore>,
}

impl AdminSurface {
    /// An admin surface over a registry and health checks, loopback-only until told otherwise,
    /// without process figures (see [`AdminSurface::process_stats`]).
    pub fn new(registry: Registry, health: HealthChecks) -> Self {
        AdminSurface {
            inner: Arc::new(Inner {
                registry,
                health,
                #[cfg(feature = "process-metrics")]
                stats: None,
                config: Vec::new(),
                traces: None,
                #[cfg(feature = "tracing-bridge")]
                log_levels: None,
                access: AdminAccess::LoopbackOnly,
                allowed_hosts: AllowedHosts::default(),
                profiles: None,
            }),
        }
    }

    fn update(mut self, f: impl FnOnce(&mut Inner)) -> Self {
        f(Arc::make_mut(&mut self.inner));
        self
    }

    /// Sets who may call the protected endpoints.
    pub fn access(self, access: AdminAccess) -> Self {
        self.update(|i| i.access = access)
    }

    /// Sets the hosts, besides loopback names, that protected endpoints answer to in
    /// [`AdminAccess::LoopbackOnly`] mode (none by default). Token mode does not look at the
    /// host.
    ///
    /// ```
    /// use obskit::admin::{AdminSurface, AllowedHosts, PeerAddr};
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let admin = AdminSurface::new(obskit::metrics::Registry::new(), obskit::health::HealthChecks::new("demo", "1"))
    ///     .allowed_hosts(AllowedHosts::new(["devbox.lan"]));
    /// let mut request = http::Request::get("/debug/config").header("host", "devbox.lan:8080").body(()).unwrap();
    /// request.extensions_mut().insert(PeerAddr("127.0.0.1:4000".parse().unwrap()));
    /// assert_eq!(admin.handle(request).await.status(), 200);
    /// # });
    /// ```
    pub fn allowed_hosts(self, hosts: AllowedHosts) -> Self {
        self.update(|i| i.allowed_hosts = hosts)
    }

    /// The process sampler behind `/debug/metrics`. (Feature `process-metrics`.)
    #[cfg(feature = "process-metrics")]
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

    /// The run-time log level behind `/debug/log-level` (without it, the endpoint answers 503).
    /// (Feature `tracing-bridge`.)
    #[cfg(feature = "tracing-bridge")]
    pub fn log_levels(self, levels: LogLevels) -> Self {
        self.update(|i| i.log_levels = Some(levels))
    }

    /// The store behind `/profiles/` (and where on-demand captures are kept). Without it, the
    /// process-wide [`ProfileStore::global`], where `#[profiled]` captures go.
    pub fn profile_store(self, store: ProfileStore) -> Self {
        self.update(|i| i.profiles = Some(store))
    }

    fn profiles(&self) -> ProfileStore {
        self.inner.profiles.clone().unwrap_or_else(ProfileStore::global)
    }

    /// Whether `path` belongs to the admin surface: whether [`ADMIN_ROUTES`] holds it.
    ///
    /// ```
    /// use obskit::admin::AdminSurface;
    /// assert!(AdminSurface::is_admin_path("/metrics"));
    /// assert!(AdminSurface::is_admin_path("/debug/config"));
    /// assert!(AdminSurface::is_admin_path("/profiles/"));
    /// assert!(!AdminSurface::is_admin_path("/metricsfoo"));
    /// assert!(!AdminSurface::is_admin_path("/health/deep"));
    /// assert!(!AdminSurface::is_admin_path("/debug/unknown"));
    /// assert!(!AdminSurface::is_admin_path("/api/products"));
    /// ```
    pub fn is_admin_path(path: &str) -> bool {
        AdminRoute::find(path).is_some()
    }

    /// This surface as a tower (and hyper) service: see [`AdminService`].
    pub fn service(&self) -> AdminService {
        AdminService::new(self.clone())
    }

    /// Answers one admin request. Paths outside [`ADMIN_ROUTES`] get a JSON 404.
    pub async fn handle<B>(&self, request: Request<B>) -> Response<Full<Bytes>> {
        match AdminRoute::find(request.uri().path()) {
            Some(route) => self.serve(route, request).await,
            None => error(StatusCode::NOT_FOUND, "not_found", "no such endpoint"),
        }
    }

    /// Answers a request for `route`, already resolved: access first (so that a refused
    /// caller learns nothing more, not even which methods exist), then the method.
    pub(crate) async fn serve<B>(
        &self,
        route: &'static AdminRoute,
        request: Request<B>,
    ) -> Response<Full<Bytes>> {
        if route.is_protected() {
            if let Err(refusal) = self.inner.access.check(&request, &self.inner.allowed_hosts) {
                return refused(refusal);
            }
        }
        if !route.allows(request.method()) {
            let allow = route.allow_header();
            let mut response = error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                &format!("{} answers {allow} only", route.path),
            );
            if let Ok(value) = HeaderValue::from_str(&allow) {
                response.headers_mut().insert(header::ALLOW, value);
            }
            return response;
        }
        // The body is dropped unread: no admin endpoint takes one, and the head alone is `Sync`,
        // so the answer's future is `Send` whatever the body type.
        let (head, _body) = request.into_parts();
        self.answer(route.endpoint, &head).await
    }
}

/// The answer to a caller the access policy refused.
fn refused(refusal: Refusal) -> Response<Full<Bytes>> {
    match refusal {
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
        // The Host is not echoed: the caller knows what it sent.
        Refusal::ForeignHost => error(
            StatusCode::FORBIDDEN,
            "host_not_allowed",
            "without OBSKIT_ADMIN_TOKEN, admin endpoints answer only requests addressed to localhost, \
             127.0.0.1 or [::1] (a defence against DNS rebinding); allow another host with \
             OBSKIT_ADMIN_ALLOWED_HOSTS",
        ),
    }
}

fn status_of(code: u16) -> StatusCode {
    StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

/// A response of `content_type`, never cached.
pub(crate) fn with_type(
    status: StatusCode,
    content_type: &'static str,
    body: Bytes,
) -> Response<Full<Bytes>> {
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
