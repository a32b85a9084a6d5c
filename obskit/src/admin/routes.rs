//! The admin route table: the one place that says which paths belong to the admin surface.
//!
//! Everything else derives from [`ADMIN_ROUTES`]: the RED layer's admin exclusion
//! ([`HttpMetricsLayer::exclude_admin`](crate::http::HttpMetricsLayer::exclude_admin)), the
//! dispatcher that sends a request to the admin surface or to the service on a shared port, and
//! [`AdminSurface::handle`](super::AdminSurface::handle). A path the table does not hold
//! (`/health/deep`, `/debug-info`, `/metricsfoo`, `/debug/anything-else`) is the service's: it
//! is served by the service and counted in its RED metrics.

use http::Method;

/// What an admin route serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum AdminEndpoint {
    /// `/metrics`: the Prometheus exposition (OpenMetrics when asked for).
    Metrics,
    /// `/health`: every check, with details.
    Health,
    /// `/health/live`: liveness (the process answers).
    Live,
    /// `/health/ready`: readiness (the checks that gate traffic).
    Ready,
    /// `/debug/metrics`: process figures (CPU, memory, threads, descriptors, connections).
    DebugMetrics,
    /// `/debug/config`: the effective configuration and environment, secrets masked.
    DebugConfig,
    /// `/debug/traces`: the recent finished spans.
    DebugTraces,
    /// `/debug/log-level`: the log filter's directives, changed for a while by `PUT`.
    DebugLogLevel,
    /// `/debug/requests`: the requests in flight and the spans open, oldest first.
    DebugRequests,
    /// `/debug/tasks`: a dump of the runtime's tasks and where each waits.
    DebugTasks,
    /// `/debug/pprof/profile`: an on-demand CPU profile of the whole process.
    PprofProfile,
    /// `/debug/pprof/heap`: what is allocated and not freed, by allocating stack.
    PprofHeap,
    /// `/debug/pprof/allocs`: what was allocated since profiling started, by allocating stack.
    PprofAllocs,
    /// `/profiles/`: the list of stored profiles.
    ProfileList,
    /// `/profiles/{name}`: one stored profile.
    ProfileFile,
}

/// How a route's path is compared with a request's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum PathMatch {
    /// The request's path is the route's path (trailing slashes aside).
    Exact,
    /// The request's path starts with the route's path, which ends in `/`, and goes on after it.
    Prefix,
}

/// Who may call a route.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protection {
    /// Anyone: scrapers and orchestrators need these.
    Open,
    /// Only callers the [`AdminAccess`](super::AdminAccess) policy lets in.
    Protected,
}

/// One entry of [`ADMIN_ROUTES`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminRoute {
    /// The path (an [`PathMatch::Exact`] route) or the prefix, ending in `/`
    /// ([`PathMatch::Prefix`]).
    pub path: &'static str,
    /// How `path` is compared.
    pub matching: PathMatch,
    /// What the route serves.
    pub endpoint: AdminEndpoint,
    /// Who may call it.
    pub protection: Protection,
    /// The methods it answers; others get `405` with an `Allow` header listing these.
    pub methods: &'static [Method],
}

/// Read-only endpoints answer `HEAD` as well.
const GET_HEAD: &[Method] = &[Method::GET, Method::HEAD];
/// The log level is read, changed for a while, or put back.
const LOG_LEVEL_METHODS: &[Method] = &[Method::GET, Method::HEAD, Method::PUT, Method::DELETE];
/// Each `/debug/pprof/profile` request takes a capture (and the process's only profiler), each
/// `/debug/tasks` request a dump (pausing every worker), each heap profile a jemalloc dump: a
/// `HEAD` would take one for nothing.
const GET_ONLY: &[Method] = &[Method::GET];

const fn route(
    path: &'static str,
    matching: PathMatch,
    endpoint: AdminEndpoint,
    protection: Protection,
    methods: &'static [Method],
) -> AdminRoute {
    AdminRoute {
        path,
        matching,
        endpoint,
        protection,
        methods,
    }
}

/// The admin surface, route by route. Exact paths also match with trailing slashes
/// (`/metrics/`); the prefix `/profiles/` matches `/profiles/{name}`, and `/profiles/` alone is
/// the list.
///
/// ```
/// use obskit::admin::{AdminEndpoint, Protection, ADMIN_ROUTES};
/// let open: Vec<&str> = ADMIN_ROUTES
///     .iter()
///     .filter(|r| r.protection == Protection::Open)
///     .map(|r| r.path)
///     .collect();
/// assert_eq!(open, ["/metrics", "/health", "/health/live", "/health/ready"]);
/// assert!(ADMIN_ROUTES.iter().any(|r| r.endpoint == AdminEndpoint::PprofProfile));
/// ```
pub const ADMIN_ROUTES: &[AdminRoute] = &[
    route(
        "/metrics",
        PathMatch::Exact,
        AdminEndpoint::Metrics,
        Protection::Open,
        GET_HEAD,
    ),
    route(
        "/health",
        PathMatch::Exact,
        AdminEndpoint::Health,
        Protection::Open,
        GET_HEAD,
    ),
    route(
        "/health/live",
        PathMatch::Exact,
        AdminEndpoint::Live,
        Protection::Open,
        GET_HEAD,
    ),
    route(
        "/health/ready",
        PathMatch::Exact,
        AdminEndpoint::Ready,
        Protection::Open,
        GET_HEAD,
    ),
    route(
        "/debug/metrics",
        PathMatch::Exact,
        AdminEndpoint::DebugMetrics,
        Protection::Protected,
        GET_HEAD,
    ),
    route(
        "/debug/config",
        PathMatch::Exact,
        AdminEndpoint::DebugConfig,
        Protection::Protected,
        GET_HEAD,
    ),
    route(
        "/debug/traces",
        PathMatch::Exact,
        AdminEndpoint::DebugTraces,
        Protection::Protected,
        GET_HEAD,
    ),
    route(
        "/debug/log-level",
        PathMatch::Exact,
        AdminEndpoint::DebugLogLevel,
        Protection::Protected,
        LOG_LEVEL_METHODS,
    ),
    route(
        "/debug/requests",
        PathMatch::Exact,
        AdminEndpoint::DebugRequests,
        Protection::Protected,
        GET_HEAD,
    ),
    route(
        "/debug/tasks",
        PathMatch::Exact,
        AdminEndpoint::DebugTasks,
        Protection::Protected,
        GET_ONLY,
    ),
    route(
        "/debug/pprof/profile",
        PathMatch::Exact,
        AdminEndpoint::PprofProfile,
        Protection::Protected,
        GET_ONLY,
    ),
    route(
        "/debug/pprof/heap",
        PathMatch::Exact,
        AdminEndpoint::PprofHeap,
        Protection::Protected,
        GET_ONLY,
    ),
    route(
        "/debug/pprof/allocs",
        PathMatch::Exact,
        AdminEndpoint::PprofAllocs,
        Protection::Protected,
        GET_ONLY,
    ),
    route(
        "/profiles",
        PathMatch::Exact,
        AdminEndpoint::ProfileList,
        Protection::Protected,
        GET_HEAD,
    ),
    route(
        "/profiles/",
        PathMatch::Prefix,
        AdminEndpoint::ProfileFile,
        Protection::Protected,
        GET_HEAD,
    ),
];

impl AdminRoute {
    /// The admin route `path` belongs to, if any: the one decision every part of obskit makes
    /// from. `path` is the raw request path (not percent-decoded, no query).
    ///
    /// ```
    /// use obskit::admin::{AdminEndpoint, AdminRoute};
    /// assert_eq!(AdminRoute::find("/health/ready/").map(|r| r.endpoint), Some(AdminEndpoint::Ready));
    /// assert_eq!(AdminRoute::find("/profiles/x.svg").map(|r| r.endpoint), Some(AdminEndpoint::ProfileFile));
    /// assert_eq!(AdminRoute::find("/profiles/").map(|r| r.endpoint), Some(AdminEndpoint::ProfileList));
    /// assert!(AdminRoute::find("/health/deep").is_none());
    /// assert!(AdminRoute::find("/debug-info").is_none());
    /// assert!(AdminRoute::find("/debug/unknown").is_none());
    /// ```
    pub fn find(path: &str) -> Option<&'static AdminRoute> {
        // `/metrics/` is `/metrics`, `/profiles/` the list; `/` stays `/` (and matches nothing).
        let trimmed = match path.trim_end_matches('/') {
            "" => path,
            trimmed => trimmed,
        };
        ADMIN_ROUTES.iter().find(|route| match route.matching {
            PathMatch::Exact => trimmed == route.path,
            PathMatch::Prefix => trimmed.len() > route.path.len() && trimmed.starts_with(route.path),
        })
    }

    /// Whether the route answers `method`.
    ///
    /// ```
    /// use obskit::admin::AdminRoute;
    /// let profile = AdminRoute::find("/debug/pprof/profile").unwrap();
    /// assert!(profile.allows(&http::Method::GET));
    /// assert!(!profile.allows(&http::Method::HEAD));
    /// ```
    pub fn allows(&self, method: &Method) -> bool {
        self.methods.contains(method)
    }

    /// The methods it answers, as an `Allow` header value (`GET, HEAD`).
    ///
    /// ```
    /// let metrics = obskit::admin::AdminRoute::find("/metrics").unwrap();
    /// assert_eq!(metrics.allow_header(), "GET, HEAD");
    /// ```
    pub fn allow_header(&self) -> String {
        let names: Vec<&str> = self.methods.iter().map(Method::as_str).collect();
        names.join(", ")
    }

    /// Whether the route is [`Protection::Protected`].
    pub fn is_protected(&self) -> bool {
        self.protection == Protection::Protected
    }
}
