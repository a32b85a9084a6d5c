//! One-call setup: [`Obskit::builder`] wires the registry, the RED layer, health checks, process
//! figures and the admin surface for one service, reading the standard environment variables.

use std::error::Error as StdError;
use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::net::TcpListener;

use crate::admin::{AdminAccess, AdminSurface};
use crate::debug::{ConnectionStats, ProcessStats};
use crate::health::{HealthChecks, HealthGauge, HealthRefresher};
use crate::http::{HttpMetrics, HttpMetricsLayer, RequestBody, Routes, ADMIN_PATHS};
use crate::metrics::{IntGaugeVec, Registry};
use crate::profile::ProfileStore;
use crate::server::{self, Dispatch};
use crate::trace::{self, ExportCounters, FanOut, OtlpConfig, OtlpSink, RecentSpans, Sampler, SpanSink};

type BoxError = Box<dyn StdError + Send + Sync>;

/// Environment variable naming a separate admin listener (`127.0.0.1:9000`).
pub const ADMIN_ADDR_ENV: &str = "OBSKIT_ADMIN_ADDR";

/// Where the admin surface is served.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum AdminListener {
    /// On the service's own port, beside its routes (admin paths take precedence).
    #[default]
    SamePort,
    /// On a listener of its own; the service's port then serves only the service.
    Separate(SocketAddr),
}

/// Why [`ObskitBuilder::build`] failed.
#[derive(Debug)]
pub enum BuildError {
    /// A route template was refused.
    Route(String),
    /// A metric could not be registered (a name already taken in the registry, for one).
    Metrics(crate::metrics::Error),
    /// The OTLP exporter could not be built.
    Exporter(crate::trace::OtlpError),
    /// An environment variable had a value that cannot be used.
    Environment {
        /// The variable.
        name: &'static str,
        /// What is wrong with it.
        problem: String,
    },
}

impl fmt::Display for BuildError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BuildError::Route(e) => write!(f, "invalid route template: {e}"),
            BuildError::Metrics(e) => write!(f, "metrics: {e}"),
            BuildError::Exporter(e) => write!(f, "tracing: {e}"),
            BuildError::Environment { name, problem } => write!(f, "environment variable {name}: {problem}"),
        }
    }
}

impl StdError for BuildError {}

impl From<crate::metrics::Error> for BuildError {
    fn from(e: crate::metrics::Error) -> Self {
        BuildError::Metrics(e)
    }
}

/// Configures an [`Obskit`]. See [`Obskit::builder`].
#[must_use]
pub struct ObskitBuilder {
    service: Option<String>,
    version: Option<String>,
    environment: Option<String>,
    commit: Option<String>,
    registry: Option<Registry>,
    routes: Vec<String>,
    access: Option<AdminAccess>,
    admin_listener: Option<AdminListener>,
    measure_admin: bool,
    response_traceparent: bool,
    recent_spans: usize,
    otlp: Option<Option<OtlpConfig>>,
    sampler: Option<Sampler>,
    shutdown_timeout: Duration,
    memory_check: bool,
    health_interval: Duration,
    stats_interval: Duration,
    config: Vec<(String, String)>,
    profiles: Option<ProfileStore>,
    instrumentation: Option<bool>,
}

/// The observability of one service: its registry, RED layer, health checks and admin surface.
///
/// ```no_run
/// use std::convert::Infallible;
/// use http_body_util::Full;
/// use hyper::{body::{Bytes, Incoming}, Request, Response};
/// use obskit::http::RequestBody;
///
/// #[obskit::instrumented(skip(_req))]
/// async fn hello(_req: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
///     Ok(Response::new(Full::new(Bytes::from("hello"))))
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let obskit = obskit::Obskit::builder()
///         .service("hello")
///         .version(env!("CARGO_PKG_VERSION"))
///         .routes(["/hello"])
///         .build()?;
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
///     obskit.serve(listener, hyper::service::service_fn(hello)).await?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Obskit {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    version: String,
    registry: Registry,
    http: HttpMetrics,
    layer: HttpMetricsLayer,
    health: HealthChecks,
    admin: AdminSurface,
    admin_listener: AdminListener,
    connections: ConnectionStats,
    otlp: Option<Arc<OtlpSink>>,
    shutdown_timeout: Duration,
    /// Keeps `obskit_health_status` fresh; dropping the last `Obskit` clone stops it.
    _health_refresher: HealthRefresher,
}

impl fmt::Debug for Obskit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Obskit")
            .field("service", &self.inner.service)
            .field("version", &self.inner.version)
            .field("admin_listener", &self.inner.admin_listener)
            .finish_non_exhaustive()
    }
}

/// Reads `OTEL_RESOURCE_ATTRIBUTES` (`k=v,k2=v2`, values percent-decoded) into pairs.
fn resource_attributes() -> Vec<(String, String)> {
    let Ok(raw) = std::env::var("OTEL_RESOURCE_ATTRIBUTES") else {
        return Vec::new();
    };
    raw.split(',')
        .filter_map(|pair| {
            let (k, v) = pair.split_once('=')?;
            Some((k.trim().to_string(), percent_decode(v.trim())))
        })
        .collect()
}

fn percent_decode(s: &str) -> String {
    fn hex(b: u8) -> Option<u8> {
        (b as char).to_digit(16).map(|d| d as u8)
    }
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let (Some(hi), Some(lo)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A random UUID (version 4) for `service.instance.id`: unique per process start, as the
/// semantic conventions recommend when nothing better identifies the instance.
fn random_instance_id() -> String {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is seeded from the OS; two differently seeded hashes give 128 random bits.
    let a = RandomState::new().hash_one(std::process::id());
    let b = RandomState::new().hash_one(std::time::SystemTime::now());
    let bits = (u128::from(a) << 64 | u128::from(b)) & !(0xf000 << 64) & !(0xc000 << 48);
    let bits = bits | 0x4000 << 64 | 0x8000 << 48;
    let hex = format!("{bits:032x}");
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name)
        .ok()
        .map(|v| v.trim().to_string())
        .filter(|v| !v.is_empty())
}

impl Obskit {
    /// Starts configuring obskit for a service.
    pub fn builder() -> ObskitBuilder {
        ObskitBuilder {
            service: None,
            version: None,
            environment: None,
            commit: None,
            registry: None,
            routes: Vec::new(),
            access: None,
            admin_listener: None,
            measure_admin: false,
            response_traceparent: false,
            recent_spans: crate::trace::DEFAULT_CAPACITY,
            otlp: None,
            sampler: None,
            shutdown_timeout: Duration::from_secs(5),
            memory_check: true,
            health_interval: HealthRefresher::DEFAULT_INTERVAL,
            stats_interval: Duration::from_secs(1),
            config: Vec::new(),
            profiles: None,
            instrumentation: None,
        }
    }

    /// The service name (`service.name`).
    pub fn service(&self) -> &str {
        &self.inner.service
    }

    /// The service version (`service.version`).
    pub fn version(&self) -> &str {
        &self.inner.version
    }

    /// The registry: declare business metrics here.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The health checks: register dependency checks here.
    pub fn health(&self) -> &HealthChecks {
        &self.inner.health
    }

    /// The HTTP RED metrics.
    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.inner.http
    }

    /// The RED layer, for services served by other means (axum, tonic, your own loop).
    pub fn layer(&self) -> HttpMetricsLayer {
        self.inner.layer.clone()
    }

    /// The admin surface, for services served by other means.
    pub fn admin(&self) -> &AdminSurface {
        &self.inner.admin
    }

    /// Exports the spans queued so far, waiting at most `timeout`; true when done in time (or
    /// when nothing is exported). [`Obskit::serve`] does it when the server has stopped.
    pub async fn flush_traces(&self, timeout: Duration) -> bool {
        let Some(otlp) = self.inner.otlp.clone() else {
            return true;
        };
        // The flush blocks a thread; a gRPC exporter needs this runtime meanwhile.
        tokio::task::spawn_blocking(move || otlp.flush(timeout))
            .await
            .unwrap_or(false)
    }

    /// Connection counts as the server keeps them.
    pub fn connections(&self) -> &ConnectionStats {
        &self.inner.connections
    }

    /// Serves `service` on `listener` with the RED layer and the admin surface until Ctrl-C
    /// (SIGINT) or SIGTERM, then shuts down gracefully.
    pub async fn serve<S, B>(&self, listener: TcpListener, service: S) -> std::io::Result<()>
    where
        S: Service<Request<RequestBody<Incoming>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(listener, service, shutdown_signal())
            .await
    }

    /// Like [`Obskit::serve`], stopping when `shutdown` resolves.
    pub async fn serve_with_shutdown<S, B>(
        &self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        S: Service<Request<RequestBody<Incoming>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        let admin_task = match self.inner.admin_listener {
            AdminListener::SamePort => None,
            AdminListener::Separate(addr) => {
                let admin_listener = TcpListener::bind(addr).await?;
                let admin = server::admin_only(self.inner.admin.clone());
                let layered = self.inner.layer.wrap_hyper(admin);
                let connections = self.inner.connections.clone();
                let mut stopped = admin_stopped.clone();
                Some(tokio::spawn(async move {
                    let until = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    server::serve_loop(admin_listener, layered, connections, until).await
                }))
            }
        };
        let admin = match self.inner.admin_listener {
            AdminListener::SamePort => Some(self.inner.admin.clone()),
            AdminListener::Separate(_) => None,
        };
        let dispatch = Dispatch {
            admin,
            inner: service,
        };
        let layered = self.inner.layer.wrap_hyper(dispatch);
        let result = server::serve_loop(listener, layered, self.inner.connections.clone(), shutdown).await;
        let _ = stop_admin.send(true);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        // What the last requests traced is exported before the process goes, within bounds.
        self.flush_traces(self.inner.shutdown_timeout).await;
        result
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what orchestrators send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

impl ObskitBuilder {
    /// The service name. Without it, `OTEL_SERVICE_NAME`, then `service.name` from
    /// `OTEL_RESOURCE_ATTRIBUTES`, then the executable's name.
    pub fn service(mut self, name: impl Into<String>) -> Self {
        self.service = Some(name.into());
        self
    }

    /// The service version. Without it, `service.version` from `OTEL_RESOURCE_ATTRIBUTES`,
    /// else `unknown`.
    pub fn version(mut self, version: impl Into<String>) -> Self {
        self.version = Some(version.into());
        self
    }

    /// The deployment environment. Without it, `deployment.environment.name` from
    /// `OTEL_RESOURCE_ATTRIBUTES`, else `development`.
    pub fn environment(mut self, environment: impl Into<String>) -> Self {
        self.environment = Some(environment.into());
        self
    }

    /// The commit the binary was built from (`build_info{commit}`). Without it, `OBSKIT_COMMIT`.
    pub fn commit(mut self, commit: impl Into<String>) -> Self {
        self.commit = Some(commit.into());
        self
    }

    /// The registry to record into. Without it, the process-wide [`Registry::global`].
    pub fn registry(mut self, registry: Registry) -> Self {
        self.registry = Some(registry);
        self
    }

    /// The service's route templates (`/api/products/{id}`): the `endpoint` label of the RED
    /// metrics. Paths matching none are `endpoint="unmatched"`.
    pub fn routes<I, T>(mut self, routes: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.routes.extend(routes.into_iter().map(Into::into));
        self
    }

    /// Who may call `/debug/*`. Without it, [`AdminAccess::from_env`].
    pub fn admin_access(mut self, access: AdminAccess) -> Self {
        self.access = Some(access);
        self
    }

    /// Where the admin surface is served. Without it, a separate listener when
    /// `OBSKIT_ADMIN_ADDR` is set, else the service's own port.
    pub fn admin_listener(mut self, listener: AdminListener) -> Self {
        self.admin_listener = Some(listener);
        self
    }

    /// Whether requests to the admin surface count in the RED metrics (default: no, so that
    /// scrapes and probes do not dilute the service's own figures).
    pub fn measure_admin_requests(mut self, measure: bool) -> Self {
        self.measure_admin = measure;
        self
    }

    /// Whether responses carry a `traceparent` header naming their server span (default: no).
    /// See [`HttpMetricsLayer::response_traceparent`].
    pub fn response_traceparent(mut self, enabled: bool) -> Self {
        self.response_traceparent = enabled;
        self
    }

    /// How many finished spans `/debug/traces` keeps (default
    /// [`DEFAULT_CAPACITY`](crate::trace::DEFAULT_CAPACITY)); 0 turns the buffer off.
    ///
    /// Spans are process-wide, so the buffer is [`RecentSpans::global`]: the last `build`
    /// sets its capacity. `build` installs it as the span sink (through
    /// [`trace::set_default_sink`], so a sink installed with [`trace::set_sink`] is kept).
    pub fn recent_spans(mut self, capacity: usize) -> Self {
        self.recent_spans = capacity;
        self
    }

    /// Where spans are exported over OTLP; `None` exports nothing. Without it, the standard
    /// variables decide (see [`OtlpConfig::from_env`]): with no endpoint set, nothing is
    /// exported and nothing connects anywhere, and spans still reach `/debug/traces`.
    ///
    /// Spans are process-wide: the exporter of the last `build` receives every span of the
    /// process, with that build's resource attributes (`service.name`, `service.version`,
    /// `deployment.environment.name`, `service.instance.id`, and the rest of
    /// `OTEL_RESOURCE_ATTRIBUTES`).
    pub fn otlp(mut self, config: Option<OtlpConfig>) -> Self {
        self.otlp = Some(config);
        self
    }

    /// The head sampler. Without it, `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG`, by
    /// default parent-based, always on. Process-wide, like spans.
    pub fn sampler(mut self, sampler: Sampler) -> Self {
        self.sampler = Some(sampler);
        self
    }

    /// How long [`Obskit::serve`] waits, after the server stopped, for queued spans to be
    /// exported (default 5 s).
    pub fn shutdown_timeout(mut self, timeout: Duration) -> Self {
        self.shutdown_timeout = timeout;
        self
    }

    /// Whether `/health` includes the seed's memory check (default: yes).
    pub fn memory_check(mut self, enabled: bool) -> Self {
        self.memory_check = enabled;
        self
    }

    /// How often the health checks run in the background to refresh the
    /// `obskit_health_status{check}` gauge (default
    /// [`HealthRefresher::DEFAULT_INTERVAL`], 10 s; at least
    /// [`HealthRefresher::MIN_INTERVAL`]). A `/metrics` scrape shows the last values found and
    /// never runs a check itself, so it stays fast while a dependency hangs; the gauge is at
    /// most one interval (plus the slowest check's timeout) behind `/health`. The task stops
    /// when the last clone of the [`Obskit`] is dropped, or with the runtime.
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::health::CheckOutcome;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let obskit = obskit::Obskit::builder()
    ///     .service("cart")
    ///     .registry(obskit::metrics::Registry::new())
    ///     .memory_check(false)
    ///     .health_interval(Duration::from_millis(100))
    ///     .build()
    ///     .unwrap();
    /// obskit.health().register("redis", || async { CheckOutcome::unhealthy("refused") });
    /// let unhealthy = r#"obskit_health_status{check="redis"} 2"#;
    /// // The first refresh ran at build time, before the check existed: wait for the next.
    /// for _ in 0..500 {
    ///     if obskit.registry().encode_text().contains(unhealthy) {
    ///         break;
    ///     }
    ///     tokio::time::sleep(Duration::from_millis(20)).await;
    /// }
    /// let text = obskit.registry().encode_text();
    /// assert!(text.contains(unhealthy), "{text}");
    /// assert!(text.contains(r#"obskit_health_status{check="overall"} 2"#), "{text}");
    /// # }
    /// ```
    pub fn health_interval(mut self, interval: Duration) -> Self {
        self.health_interval = interval;
        self
    }

    /// How often process figures (CPU percent) are sampled for `/debug/metrics` (default 1 s).
    pub fn process_stats_interval(mut self, interval: Duration) -> Self {
        self.stats_interval = interval;
        self
    }

    /// An entry of the effective configuration shown by `/debug/config` (masked like the
    /// environment: secret-looking keys never show their value).
    pub fn config_entry(mut self, key: impl Into<String>, value: impl fmt::Display) -> Self {
        self.config.push((key.into(), value.to_string()));
        self
    }

    /// Where CPU profiles are kept (`#[profiled]` captures and `/debug/pprof/profile`), served
    /// by `/profiles/`. It becomes the process-wide [`ProfileStore::global`]. Without it, the
    /// global store as it is: in memory, so that a read-only filesystem is no problem.
    ///
    /// ```no_run
    /// # #[tokio::main] async fn main() {
    /// use obskit::profile::ProfileStore;
    /// let obskit = obskit::Obskit::builder()
    ///     .service("shop")
    ///     .profile_store(ProfileStore::in_directory("/var/lib/shop/profiles", 64, 32 << 20).unwrap())
    ///     .build()
    ///     .unwrap();
    /// # let _ = obskit; }
    /// ```
    pub fn profile_store(mut self, store: ProfileStore) -> Self {
        self.profiles = Some(store);
        self
    }

    /// Turns obskit's recording on or off for the process (see [`crate::instrumentation`]);
    /// by default `OBSKIT_INSTRUMENTATION` decides, and it is on when that is unset.
    ///
    /// Off, requests and calls still run and routes still match, but nothing is recorded:
    ///
    /// ```
    /// use tower::{Layer, ServiceExt};
    ///
    /// #[obskit::instrumented]
    /// fn add(a: u64, b: u64) -> u64 { a + b }
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let obskit = obskit::Obskit::builder()
    ///     .registry(obskit::metrics::Registry::new())
    ///     .routes(["/items/{id}"])
    ///     .instrumentation(false)
    ///     .build()
    ///     .unwrap();
    /// assert!(!obskit::instrumentation::is_enabled());
    /// assert_eq!(add(2, 3), 5);
    /// let handler = tower::service_fn(|request: http::Request<_>| async move {
    ///     let matched = request.extensions().get::<obskit::http::MatchedRoute>().is_some();
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(http_body_util::Full::new(
    ///         bytes::Bytes::from(if matched { "matched" } else { "unmatched" }),
    ///     )))
    /// });
    /// let request = http::Request::get("/items/7").body(http_body_util::Empty::<bytes::Bytes>::new()).unwrap();
    /// let response = obskit.layer().layer(handler).oneshot(request).await.unwrap();
    /// let body = http_body_util::BodyExt::collect(response.into_body()).await.unwrap().to_bytes();
    /// assert_eq!(&body[..], b"matched");
    ///
    /// let text = obskit.registry().encode_text();
    /// assert!(!text.contains("http_requests_total{"), "{text}");
    /// // Function metrics live in the global registry.
    /// let global = obskit::metrics::Registry::global().encode_text();
    /// assert!(!global.contains(r#"function="add""#), "{global}");
    /// # }
    /// ```
    pub fn instrumentation(mut self, enabled: bool) -> Self {
        self.instrumentation = Some(enabled);
        self
    }

    /// Wires everything. Must run inside a tokio runtime (process figures are sampled by a
    /// background task).
    pub fn build(self) -> Result<Obskit, BuildError> {
        let attributes = resource_attributes();
        let attribute = |key: &str| attributes.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone());
        let service = self
            .service
            .or_else(|| env_nonempty("OTEL_SERVICE_NAME"))
            .or_else(|| attribute("service.name"))
            .or_else(|| {
                std::env::current_exe()
                    .ok()
                    .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
            })
            .unwrap_or_else(|| "unknown_service".to_string());
        let version = self
            .version
            .or_else(|| attribute("service.version"))
            .unwrap_or_else(|| "unknown".to_string());
        let environment = self
            .environment
            .or_else(|| attribute("deployment.environment.name"))
            .or_else(|| attribute("deployment.environment"))
            .unwrap_or_else(|| "development".to_string());
        let commit = self
            .commit
            .or_else(|| env_nonempty("OBSKIT_COMMIT"))
            .unwrap_or_default();
        let access = self.access.unwrap_or_else(AdminAccess::from_env);
        let admin_listener = match self.admin_listener {
            Some(listener) => listener,
            None => match env_nonempty(ADMIN_ADDR_ENV) {
                Some(addr) => AdminListener::Separate(addr.parse().map_err(|e| BuildError::Environment {
                    name: ADMIN_ADDR_ENV,
                    problem: format!("`{addr}` is not a socket address: {e}"),
                })?),
                None => AdminListener::SamePort,
            },
        };

        let instrumentation = match self.instrumentation {
            Some(enabled) => enabled,
            None => match env_nonempty(crate::instrumentation::INSTRUMENTATION_ENV) {
                None => true,
                Some(value) => {
                    crate::instrumentation::parse_switch(&value).ok_or_else(|| BuildError::Environment {
                        name: crate::instrumentation::INSTRUMENTATION_ENV,
                        problem: format!("`{value}` is neither on nor off"),
                    })?
                }
            },
        };
        crate::instrumentation::set_enabled(instrumentation);

        let registry = self.registry.unwrap_or_else(|| Registry::global().clone());
        let (http, build_info, span_counters, health_gauge) = per_registry_metrics(&registry)?;
        // Profiles are process-wide (one SIGPROF timer per process): their metrics join this
        // registry, and their flamegraphs are titled with this service.
        crate::profile::register_metrics(&registry);
        crate::profile::set_service(&service);
        build_info
            .with(&[&service, &version, &commit, &environment])
            .set(1);

        let routes = Routes::new(self.routes.iter().map(String::as_str))
            .map_err(|e| BuildError::Route(e.to_string()))?;
        let mut layer = HttpMetricsLayer::new(http.clone())
            .routes(routes)
            .response_traceparent(self.response_traceparent);
        if !self.measure_admin {
            layer = layer.exclude_paths(ADMIN_PATHS);
        }

        let health = HealthChecks::new(&service, &version);
        if self.memory_check {
            health.register_memory_check();
        }
        health_gauge.watch(&health);
        let health_refresher = health.refresh_every(self.health_interval);
        let connections = ConnectionStats::default();
        let stats = Arc::new(ProcessStats::start(self.stats_interval, connections.clone()));

        let env_error = |(name, problem): (&'static str, String)| BuildError::Environment { name, problem };
        let otlp_config = match self.otlp {
            Some(config) => config,
            None => OtlpConfig::from_env().map_err(env_error)?,
        };
        let sampler = match self.sampler {
            Some(sampler) => sampler,
            None => Sampler::from_env().map_err(env_error)?,
        };
        // The resource: the standard attributes as resolved above, an instance id (from
        // OTEL_RESOURCE_ATTRIBUTES, else random per process start), then the other attributes
        // given in OTEL_RESOURCE_ATTRIBUTES.
        let instance = attribute("service.instance.id").unwrap_or_else(random_instance_id);
        let mut resource = vec![
            ("service.name".to_string(), service.clone()),
            ("service.version".to_string(), version.clone()),
            ("deployment.environment.name".to_string(), environment.clone()),
            ("service.instance.id".to_string(), instance),
        ];
        for (key, value) in &attributes {
            if !resource.iter().any(|(k, _)| k == key) && key != "deployment.environment" {
                resource.push((key.clone(), value.clone()));
            }
        }

        let mut config = vec![
            ("service.name".to_string(), service.clone()),
            ("service.version".to_string(), version.clone()),
            ("deployment.environment.name".to_string(), environment.clone()),
            (
                "admin.access".to_string(),
                match access {
                    AdminAccess::Token(_) => "bearer token (OBSKIT_ADMIN_TOKEN)".to_string(),
                    AdminAccess::LoopbackOnly => "loopback clients only".to_string(),
                },
            ),
            (
                "admin.listener".to_string(),
                match admin_listener {
                    AdminListener::SamePort => "service port".to_string(),
                    AdminListener::Separate(addr) => addr.to_string(),
                },
            ),
            (
                "metrics.label_limit".to_string(),
                registry.label_limit().to_string(),
            ),
            ("http.routes".to_string(), self.routes.join(" ")),
            ("trace.recent_spans".to_string(), self.recent_spans.to_string()),
            (
                "trace.otlp".to_string(),
                match &otlp_config {
                    Some(c) => format!("{:?} {}", c.protocol, c.endpoint),
                    None => "off (no OTEL_EXPORTER_OTLP_ENDPOINT)".to_string(),
                },
            ),
            ("trace.sampler".to_string(), format!("{sampler:?}")),
            (
                "health.interval".to_string(),
                format!("{:?}", health_refresher.interval()),
            ),
            (
                "instrumentation".to_string(),
                if instrumentation {
                    "on"
                } else {
                    "off (OBSKIT_INSTRUMENTATION)"
                }
                .to_string(),
            ),
        ];
        config.extend(self.config);

        // This service's admin surface serves the store it was given, even if another
        // `Obskit` in the process (a test's) later makes its own store the global one.
        let profiles = match self.profiles {
            Some(store) => {
                ProfileStore::set_global(store.clone());
                store
            }
            None => ProfileStore::global(),
        };
        let (max_files, max_bytes) = profiles.limits();
        config.push((
            "profiles.store".to_string(),
            format!("{max_files} files, {max_bytes} bytes at most"),
        ));
        let mut admin = AdminSurface::new(registry.clone(), health.clone())
            .access(access)
            .process_stats(stats)
            .config(config)
            .profile_store(profiles);
        let mut sinks: Vec<Arc<dyn SpanSink>> = Vec::new();
        if self.recent_spans > 0 {
            let recent = RecentSpans::global();
            recent.set_capacity(self.recent_spans);
            if instrumentation {
                sinks.push(Arc::new(recent.clone()));
            }
            admin = admin.recent_spans(recent.clone());
        }
        // Instrumentation off: no sink at all, so spans are not even created.
        let otlp = match otlp_config {
            Some(config) if instrumentation => {
                let sink = OtlpSink::start(&config, resource, span_counters).map_err(BuildError::Exporter)?;
                let sink = Arc::new(sink);
                sinks.push(sink.clone());
                Some(sink)
            }
            _ => None,
        };
        sampler.install();
        match sinks.len() {
            0 => {}
            1 => {
                trace::set_default_sink(sinks.pop().expect("one sink"));
            }
            _ => {
                trace::set_default_sink(Arc::new(FanOut::new(sinks)));
            }
        }

        Ok(Obskit {
            inner: Arc::new(Inner {
                service,
                version,
                registry,
                http,
                layer,
                health,
                admin,
                admin_listener,
                connections,
                otlp,
                shutdown_timeout: self.shutdown_timeout,
                _health_refresher: health_refresher,
            }),
        })
    }
}

type RegistryMetrics = (HttpMetrics, IntGaugeVec, ExportCounters, HealthGauge);

/// The RED metrics, `build_info`, span export counters and `obskit_health_status` of a
/// registry, declared once per registry: building a
/// second `Obskit` on the global registry (two services in one process, or a restart in a test)
/// reuses them instead of failing on a duplicate name.
fn per_registry_metrics(registry: &Registry) -> Result<RegistryMetrics, BuildError> {
    fn declare(registry: &Registry) -> Result<RegistryMetrics, crate::metrics::Error> {
        let http = HttpMetrics::new(registry)?;
        let spans = ExportCounters::new(registry)?;
        // autometrics' published queries join on build_info; it also tells which version runs.
        let build_info = registry.int_gauge_vec(
            "build_info",
            "Build information of the running service (value 1)",
            &["service_name", "version", "commit", "environment"],
        )?;
        // Watches the checks of the service built last on this registry.
        let health = HealthGauge::register(registry)?;
        Ok((http, build_info, spans, health))
    }
    if registry.is_global() {
        static GLOBAL: Mutex<Option<RegistryMetrics>> = Mutex::new(None);
        let mut global = GLOBAL.lock().unwrap_or_else(|p| p.into_inner());
        if global.is_none() {
            *global = Some(declare(registry)?);
        }
        Ok(global.clone().expect("declared above"))
    } else {
        Ok(declare(registry)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instance_ids_are_uuid_v4() {
        let id = random_instance_id();
        assert_eq!(id.len(), 36);
        assert_eq!(&id[14..15], "4", "{id}");
        assert!(matches!(&id[19..20], "8" | "9" | "a" | "b"), "{id}");
        assert_ne!(id, random_instance_id());
    }

    #[test]
    fn percent_decoding() {
        assert_eq!(percent_decode("a%20b"), "a b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz"), "%zz");
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(percent_decode("x%4"), "x%4");
    }
}
