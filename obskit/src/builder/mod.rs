//! One-call setup: [`Obskit::builder`] wires the registry, the RED layer, health checks, process
//! figures and the admin surface for one service, reading the standard environment variables.
//!
//! The builder's concerns, a module each: this one holds the choices made in code (the
//! builder's methods); `resolve` turns them and the environment into [`Settings`], once;
//! `wiring` builds an [`Obskit`] from the settings; `handle` is the [`Obskit`] handle and its
//! accessors; `serving` runs its listeners. The resource is parsed in [`crate::settings`].

mod handle;
mod resolve;
mod serving;
mod wiring;

use std::error::Error as StdError;
use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

pub use handle::Obskit;
pub use serving::shutdown_signal;

use crate::admin::{AdminAccess, AllowedHosts};
use crate::health::HealthRefresher;
use crate::metrics::Registry;
use crate::profile::ProfileStore;
use crate::settings::{EnvSource, ProcessEnv, Settings};
use crate::trace::{OtlpConfig, Sampler, SpanLimits};

/// Environment variable naming a separate admin listener (`127.0.0.1:9000`).
pub const ADMIN_ADDR_ENV: &str = crate::names::env::OBSKIT_ADMIN_ADDR;

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
    /// The logs could not be set up.
    #[cfg(feature = "tracing-bridge")]
    Logs(crate::log::LogError),
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
            #[cfg(feature = "tracing-bridge")]
            BuildError::Logs(e) => write!(f, "logs: {e}"),
            BuildError::Environment { name, problem } => write!(f, "environment variable {name}: {problem}"),
        }
    }
}

impl StdError for BuildError {}

impl From<crate::settings::EnvError> for BuildError {
    fn from(e: crate::settings::EnvError) -> Self {
        BuildError::Environment {
            name: e.name,
            problem: e.problem,
        }
    }
}

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
    route_objectives: Vec<crate::objectives::RouteObjective>,
    access: Option<AdminAccess>,
    allowed_hosts: Option<AllowedHosts>,
    admin_listener: Option<AdminListener>,
    measure_admin: bool,
    response_traceparent: bool,
    recent_spans: usize,
    recent_spans_bytes: usize,
    span_limits: Option<SpanLimits>,
    otlp: Option<Option<OtlpConfig>>,
    sampler: Option<Sampler>,
    shutdown_timeout: Duration,
    memory_check: bool,
    health_interval: Duration,
    stats_interval: Duration,
    config: Vec<(String, String)>,
    profiles: Option<ProfileStore>,
    instrumentation: Option<bool>,
    #[cfg(feature = "tracing-bridge")]
    logs: bool,
    server_settings: crate::serve::ServerSettings,
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
            route_objectives: Vec::new(),
            access: None,
            allowed_hosts: None,
            admin_listener: None,
            measure_admin: false,
            response_traceparent: false,
            recent_spans: crate::trace::DEFAULT_CAPACITY,
            recent_spans_bytes: crate::trace::DEFAULT_MAX_BYTES,
            span_limits: None,
            otlp: None,
            sampler: None,
            shutdown_timeout: Duration::from_secs(5),
            memory_check: true,
            health_interval: HealthRefresher::DEFAULT_INTERVAL,
            stats_interval: Duration::from_secs(1),
            config: Vec::new(),
            profiles: None,
            instrumentation: None,
            #[cfg(feature = "tracing-bridge")]
            logs: true,
            server_settings: crate::serve::ServerSettings::default(),
        }
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

    /// An objective of one of the [`routes`](Self::routes) (see
    /// [`RouteObjective`](crate::objectives::RouteObjective)): its RED series carry the
    /// objective's labels. [`build`](Self::build) fails ([`BuildError::Route`]) when its template
    /// is not among the routes.
    ///
    /// ```
    /// use obskit::objectives::{Objective, ObjectivePercentile, RouteObjective};
    ///
    /// const ITEM_PAGE: RouteObjective = RouteObjective::new(
    ///     "/items/{id}",
    ///     Objective::new("item-page").success_rate(ObjectivePercentile::P99),
    /// );
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let typo = RouteObjective::new("/item/{id}", ITEM_PAGE.objective());
    /// let built = obskit::Obskit::builder()
    ///     .registry(obskit::metrics::Registry::new())
    ///     .routes(["/items/{id}"])
    ///     .route_objective(typo)
    ///     .build();
    /// assert!(matches!(built, Err(obskit::BuildError::Route(_))));
    /// # }
    /// ```
    pub fn route_objective(mut self, objective: crate::objectives::RouteObjective) -> Self {
        self.route_objectives.push(objective);
        self
    }

    /// Who may call `/debug/*`. Without it, [`AdminAccess::from_env`].
    pub fn admin_access(mut self, access: AdminAccess) -> Self {
        self.access = Some(access);
        self
    }

    /// The hosts, besides `localhost`, `*.localhost`, `127.x.x.x` and `[::1]`, that the
    /// protected admin endpoints answer to in loopback-only mode (a request addressed to any
    /// other host is refused with 403, a defence against DNS rebinding). Each entry is a host
    /// name or an IP address, optionally with `:port` (IPv6 in brackets). Without it, the
    /// comma-separated list in `OBSKIT_ADMIN_ALLOWED_HOSTS`, else none. Token mode does not
    /// look at the host. See [`AllowedHosts`].
    ///
    /// ```
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let obskit = obskit::Obskit::builder()
    ///     .registry(obskit::metrics::Registry::new())
    ///     .admin_allowed_hosts(["devbox.lan", "tunnel.internal:9000"])
    ///     .build()
    ///     .unwrap();
    /// # let _ = obskit; }
    /// ```
    pub fn admin_allowed_hosts<I, T>(mut self, hosts: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        self.allowed_hosts = Some(AllowedHosts::new(hosts));
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

    /// How many bytes of finished spans `/debug/traces` keeps at most (default
    /// [`DEFAULT_MAX_BYTES`](crate::trace::DEFAULT_MAX_BYTES), 8 MiB): spans let go early to stay
    /// within it are counted in `obskit_spans_dropped_total{reason="recent_bytes"}`.
    pub fn recent_spans_bytes(mut self, bytes: usize) -> Self {
        self.recent_spans_bytes = bytes;
        self
    }

    /// How much one span may hold ([`SpanLimits`]). Without it, the OpenTelemetry variables
    /// (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`, `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, ...) over obskit's
    /// finite defaults. Process-wide, like the sampler: the last `build` sets them.
    pub fn span_limits(mut self, limits: SpanLimits) -> Self {
        self.span_limits = Some(limits);
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

    /// The limits and timeouts of [`Obskit::serve`]'s connections, and of the admin listener's
    /// (head, body and idle timeouts, connection cap, header limits, HTTP/2 limits, shutdown
    /// drain deadline). Without it, [`ServerSettings::default`](crate::serve::ServerSettings),
    /// whose table lists every default. They show in `/debug/config` as `server.*`.
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::serve::ServerSettings;
    ///
    /// # #[tokio::main(flavor = "current_thread")] async fn main() {
    /// let obskit = obskit::Obskit::builder()
    ///     .registry(obskit::metrics::Registry::new())
    ///     .server_settings(ServerSettings::default().idle_timeout(Duration::from_secs(30)))
    ///     .build()
    ///     .unwrap();
    /// assert_eq!(obskit.server().settings().idle_timeout_value(), Duration::from_secs(30));
    /// # }
    /// ```
    pub fn server_settings(mut self, settings: crate::serve::ServerSettings) -> Self {
        self.server_settings = settings;
        self
    }

    /// Whether `/health` includes the seed's memory check (default: yes). A build without the
    /// `process-metrics` feature reads no memory figures, so it has no such check either way.
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
    ///     let matched = obskit::http::MatchedRoute::of(&request).is_some();
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

    /// Whether obskit installs its logs ([`crate::log`]) as the process's `tracing` subscriber:
    /// on by default, configured by `RUST_LOG` and the `OBSKIT_LOG_*` variables, the level
    /// changed at run time by `/debug/log-level`. Off, or when the process already has a
    /// subscriber of its own, obskit installs none and `/debug/log-level` answers 503. Logs stay
    /// on when [`instrumentation`](Self::instrumentation) is off: they are the service's output.
    /// (Feature `tracing-bridge`.)
    #[cfg(feature = "tracing-bridge")]
    pub fn logs(mut self, enabled: bool) -> Self {
        self.logs = enabled;
        self
    }

    /// Wires everything. Must run inside a tokio runtime (process figures are sampled by a
    /// background task).
    pub fn build(self) -> Result<Obskit, BuildError> {
        let settings = self.settings_from(&ProcessEnv)?;
        wiring::wire(self, settings)
    }

    /// What [`build`](Self::build) would run with, with the variables read from `env` instead of
    /// the process environment: the builder's choices over the environment over the defaults.
    /// See [`crate::settings`].
    pub fn settings_from(&self, env: &impl EnvSource) -> Result<Settings, BuildError> {
        resolve::settings(self, env)
    }
}
