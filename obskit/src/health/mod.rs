//! Health checks: the logic behind `/health`, `/health/live` and `/health/ready`.
//!
//! A service registers async checks on [`HealthChecks`]; [`HealthChecks::report`] runs them all
//! concurrently, each bounded by its timeout, and folds their outcomes into one
//! [`HealthReport`] that serialises to the seed's JSON (`service`, `status`, `version`,
//! `timestamp`, `checks`) plus `uptime_seconds`. The admin router only calls these methods and
//! writes the JSON with [`HealthReport::http_status`].
//!
//! | endpoint        | method                      | runs                                       |
//! |-----------------|-----------------------------|--------------------------------------------|
//! | `/health`       | [`HealthChecks::report`]    | every check                                |
//! | `/health/ready` | [`HealthChecks::readiness`] | [`CheckKind::Readiness`] checks            |
//! | `/health/live`  | [`HealthChecks::liveness`]  | nothing: the process answers, so it lives  |
//!
//! The gauge `obskit_health_status{check}` ([`HealthGauge`]: 0 healthy, 1 degraded, 2 unhealthy,
//! `check="overall"` plus one series per registered check) shows the last full report, which a
//! background [`HealthRefresher`] renews every interval, so Prometheus sees what `/health` would
//! say without anyone calling it, and a scrape never waits on a check.
//!
//! ```
//! use std::time::Duration;
//! use obskit::health::{CheckOptions, CheckOutcome, HealthChecks, HealthStatus};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let checks = HealthChecks::new("cart", "1.4.0");
//! checks.register("database", || async { CheckOutcome::healthy().with_detail("connection", "ok") });
//! checks.register_with(
//!     "order-service",
//!     CheckOptions::new().non_critical().timeout(Duration::from_secs(5)),
//!     || async { CheckOutcome::unhealthy("connection refused") },
//! );
//!
//! let report = checks.report().await;
//! // A non-critical dependency that is down degrades the service; it still serves.
//! assert_eq!(report.status, HealthStatus::Degraded);
//! assert_eq!(report.http_status(), 200);
//! let json = serde_json::to_value(&report).unwrap();
//! assert_eq!(json["checks"]["database"]["connection"], "ok");
//! assert_eq!(json["checks"]["order-service"]["status"], "unhealthy");
//! # });
//! ```

mod gauge;
#[cfg(feature = "process-metrics")]
mod memory;
mod options;
mod report;
mod uptime;

use std::any::Any;
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::task::{AbortHandle, JoinError, JoinSet};
use tokio::time::Instant;

pub use gauge::{HealthGauge, HealthRefresher, HEALTH_STATUS_METRIC, OVERALL_CHECK_LABEL};
#[cfg(feature = "process-metrics")]
pub use memory::{
    memory_check, memory_status, DEFAULT_MEMORY_DEGRADED_PERCENT, DEFAULT_MEMORY_UNHEALTHY_PERCENT,
    MEMORY_CHECK_NAME,
};
pub use options::{CheckKind, CheckOptions, Severity};
pub use report::{CheckResult, HealthReport};
pub(crate) use uptime::process_uptime;

/// How healthy something is, ordered by severity: `Healthy < Degraded < Unhealthy`.
///
/// Serialised lowercase, as the seed's `status` strings.
///
/// ```
/// use obskit::health::HealthStatus;
///
/// assert!(HealthStatus::Healthy < HealthStatus::Degraded);
/// assert!(HealthStatus::Degraded < HealthStatus::Unhealthy);
/// assert_eq!(serde_json::to_string(&HealthStatus::Degraded).unwrap(), r#""degraded""#);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthStatus {
    /// Everything works.
    Healthy,
    /// The service works, with something missing or slow.
    Degraded,
    /// The service cannot do its job.
    Unhealthy,
}

impl HealthStatus {
    /// The lowercase name: `healthy`, `degraded` or `unhealthy`.
    ///
    /// ```
    /// assert_eq!(obskit::health::HealthStatus::Unhealthy.as_str(), "unhealthy");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            HealthStatus::Healthy => "healthy",
            HealthStatus::Degraded => "degraded",
            HealthStatus::Unhealthy => "unhealthy",
        }
    }

    /// The HTTP status code a health endpoint answers with: 200 while the service can serve
    /// (`healthy` or `degraded`), 503 when it cannot, so that load balancers and orchestrators
    /// act on the code alone.
    ///
    /// ```
    /// use obskit::health::HealthStatus;
    /// assert_eq!(HealthStatus::Degraded.http_status(), 200);
    /// assert_eq!(HealthStatus::Unhealthy.http_status(), 503);
    /// ```
    pub fn http_status(self) -> u16 {
        match self {
            HealthStatus::Healthy | HealthStatus::Degraded => 200,
            HealthStatus::Unhealthy => 503,
        }
    }

    /// The value of the `obskit_health_status` gauge ([`HealthGauge`]): 0 healthy, 1 degraded,
    /// 2 unhealthy, so that `>= 2` alerts on unhealthy and `max` aggregates like
    /// [`HealthStatus::worst`].
    ///
    /// ```
    /// use obskit::health::HealthStatus;
    /// assert_eq!(HealthStatus::Healthy.gauge_value(), 0);
    /// assert_eq!(HealthStatus::Degraded.gauge_value(), 1);
    /// assert_eq!(HealthStatus::Unhealthy.gauge_value(), 2);
    /// ```
    pub fn gauge_value(self) -> i64 {
        match self {
            HealthStatus::Healthy => 0,
            HealthStatus::Degraded => 1,
            HealthStatus::Unhealthy => 2,
        }
    }

    /// The worst of `statuses`; `Healthy` when there are none.
    ///
    /// ```
    /// use obskit::health::HealthStatus::*;
    /// use obskit::health::HealthStatus;
    ///
    /// assert_eq!(HealthStatus::worst([Healthy, Unhealthy, Degraded]), Unhealthy);
    /// assert_eq!(HealthStatus::worst([]), Healthy);
    /// ```
    pub fn worst(statuses: impl IntoIterator<Item = HealthStatus>) -> HealthStatus {
        statuses.into_iter().max().unwrap_or(HealthStatus::Healthy)
    }
}

impl fmt::Display for HealthStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one run of a check found: a status, an optional message and optional details that are
/// shown next to the status in the report (the memory check's `usage_percent`, a dependency's
/// `response_code`).
///
/// ```
/// use obskit::health::{CheckOutcome, HealthStatus};
///
/// let outcome = CheckOutcome::degraded("replica lag").with_detail("lag_seconds", 12.5);
/// assert_eq!(outcome.status, HealthStatus::Degraded);
/// assert_eq!(outcome.message.as_deref(), Some("replica lag"));
/// assert_eq!(outcome.details["lag_seconds"], 12.5);
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CheckOutcome {
    /// The status found.
    pub status: HealthStatus,
    /// Why, when there is something to say.
    pub message: Option<String>,
    /// Extra figures, flattened into the check's JSON object. The keys `status`, `message`,
    /// `latency_ms`, `critical` and `cached` are the report's own and are not shown.
    pub details: Map<String, Value>,
}

impl CheckOutcome {
    fn new(status: HealthStatus, message: Option<String>) -> Self {
        CheckOutcome {
            status,
            message,
            details: Map::new(),
        }
    }

    /// A healthy outcome without message.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthStatus};
    /// assert_eq!(CheckOutcome::healthy().status, HealthStatus::Healthy);
    /// ```
    pub fn healthy() -> Self {
        CheckOutcome::new(HealthStatus::Healthy, None)
    }

    /// A degraded outcome: works, but not fully.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthStatus};
    /// let outcome = CheckOutcome::degraded("slow responses");
    /// assert_eq!(outcome.status, HealthStatus::Degraded);
    /// ```
    pub fn degraded(message: impl Into<String>) -> Self {
        CheckOutcome::new(HealthStatus::Degraded, Some(message.into()))
    }

    /// An unhealthy outcome: does not work.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthStatus};
    /// let outcome = CheckOutcome::unhealthy("connection refused");
    /// assert_eq!(outcome.status, HealthStatus::Unhealthy);
    /// assert_eq!(outcome.message.as_deref(), Some("connection refused"));
    /// ```
    pub fn unhealthy(message: impl Into<String>) -> Self {
        CheckOutcome::new(HealthStatus::Unhealthy, Some(message.into()))
    }

    /// The same outcome with `message` (replacing any previous one).
    ///
    /// ```
    /// use obskit::health::CheckOutcome;
    /// let outcome = CheckOutcome::healthy().with_message("3 of 3 replicas up");
    /// assert_eq!(outcome.message.as_deref(), Some("3 of 3 replicas up"));
    /// ```
    pub fn with_message(mut self, message: impl Into<String>) -> Self {
        self.message = Some(message.into());
        self
    }

    /// The same outcome with one more detail (replacing a detail of the same key).
    ///
    /// ```
    /// use obskit::health::CheckOutcome;
    /// let outcome = CheckOutcome::healthy().with_detail("connection", "ok").with_detail("pool_size", 16);
    /// assert_eq!(outcome.details["connection"], "ok");
    /// assert_eq!(outcome.details["pool_size"], 16);
    /// ```
    pub fn with_detail(mut self, key: impl Into<String>, value: impl Into<Value>) -> Self {
        self.details.insert(key.into(), value.into());
        self
    }

    /// The outcome of an HTTP health probe of a dependent service, as the seed's
    /// `check_dependent_services` judges it: a 2xx answer is healthy, any other answer degraded,
    /// with the code as the `response_code` detail. A request that got no answer at all is
    /// `CheckOutcome::unhealthy(error.to_string())`, or `Err(error).into()`.
    ///
    /// ```
    /// use http::StatusCode;
    /// use obskit::health::{CheckOutcome, HealthStatus};
    ///
    /// assert_eq!(CheckOutcome::from_http_status(StatusCode::OK).status, HealthStatus::Healthy);
    /// let outcome = CheckOutcome::from_http_status(StatusCode::SERVICE_UNAVAILABLE);
    /// assert_eq!(outcome.status, HealthStatus::Degraded);
    /// assert_eq!(outcome.details["response_code"], 503);
    /// ```
    pub fn from_http_status(status: http::StatusCode) -> Self {
        let outcome = if status.is_success() {
            CheckOutcome::healthy()
        } else {
            CheckOutcome::degraded(format!("answered {status}"))
        };
        outcome.with_detail("response_code", status.as_u16())
    }
}

/// `Ok(())` is healthy, `Err(e)` unhealthy with `e` as the message, so a check can end with
/// `.await.into()`.
///
/// ```
/// use obskit::health::{CheckOutcome, HealthStatus};
///
/// let ok: CheckOutcome = Ok::<(), std::io::Error>(()).into();
/// assert_eq!(ok.status, HealthStatus::Healthy);
/// let err: CheckOutcome = Err::<(), _>("no route to host").into();
/// assert_eq!(err.message.as_deref(), Some("no route to host"));
/// ```
impl<E: fmt::Display> From<Result<(), E>> for CheckOutcome {
    fn from(result: Result<(), E>) -> Self {
        match result {
            Ok(()) => CheckOutcome::healthy(),
            Err(error) => CheckOutcome::unhealthy(error.to_string()),
        }
    }
}

/// How much later than its own timeout a check that does not answer is given up by the report.
/// A check that awaits is stopped by its timeout; this bound is for a check that blocks its
/// worker thread (a synchronous driver call) and so cannot even be timed out.
const BLOCKED_CHECK_GRACE: Duration = Duration::from_millis(100);

type BoxCheckFuture = Pin<Box<dyn Future<Output = CheckOutcome> + Send + 'static>>;
type CheckFn = Box<dyn Fn() -> BoxCheckFuture + Send + Sync + 'static>;

/// One finished (or abandoned) run of a check.
#[derive(Clone, Debug)]
struct Run {
    outcome: CheckOutcome,
    latency: Duration,
    cached: bool,
}

struct Registered {
    options: CheckOptions,
    check: CheckFn,
    /// The last result and when it was obtained, for checks with a cache TTL. An async mutex, held
    /// across the refresh, is what makes concurrent callers wait for one run (single flight).
    cache: tokio::sync::Mutex<Option<(Instant, Run)>>,
}

impl Registered {
    async fn run(self: Arc<Self>) -> Run {
        let Some(ttl) = self.options.get_cache_ttl() else {
            return self.execute().await;
        };
        let mut slot = self.cache.lock().await;
        if let Some((at, run)) = slot.as_ref() {
            if at.elapsed() < ttl {
                return Run {
                    cached: true,
                    ..run.clone()
                };
            }
        }
        let run = self.execute().await;
        *slot = Some((Instant::now(), run.clone()));
        run
    }

    async fn execute(&self) -> Run {
        let started = Instant::now();
        let timeout = self.options.get_timeout();
        let outcome = match tokio::time::timeout(timeout, (self.check)()).await {
            Ok(outcome) => outcome,
            Err(_) => timed_out(timeout),
        };
        Run {
            outcome,
            latency: started.elapsed(),
            cached: false,
        }
    }
}

fn timed_out(timeout: Duration) -> CheckOutcome {
    CheckOutcome::unhealthy(format!("timed out after {}ms", timeout.as_millis()))
}

fn failed(error: JoinError) -> CheckOutcome {
    if error.is_panic() {
        CheckOutcome::unhealthy(format!("check panicked: {}", panic_message(&*error.into_panic())))
    } else {
        CheckOutcome::unhealthy("check was cancelled")
    }
}

fn panic_message(payload: &(dyn Any + Send)) -> &str {
    if let Some(message) = payload.downcast_ref::<&'static str>() {
        message
    } else if let Some(message) = payload.downcast_ref::<String>() {
        message
    } else {
        "non-string panic payload"
    }
}

fn unix_seconds_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The health checks of one service. Cheap to clone: clones share the same checks, so a check
/// registered through one clone (say, once the database pool is up) shows in every report.
///
/// ```
/// use obskit::health::{CheckOutcome, HealthChecks, HealthStatus};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let checks = HealthChecks::new("backend", "2.0.1");
/// let for_router = checks.clone();
/// checks.register("cassandra", || async { CheckOutcome::unhealthy("no host available") });
/// let report = for_router.report().await;
/// assert_eq!(report.status, HealthStatus::Unhealthy);
/// assert_eq!(report.http_status(), 503);
/// # });
/// ```
#[derive(Clone)]
pub struct HealthChecks {
    inner: Arc<Inner>,
}

struct Inner {
    service: String,
    version: String,
    checks: RwLock<BTreeMap<String, Arc<Registered>>>,
    /// The last full report and when it was started (see [`HealthChecks::last_report`]).
    last: RwLock<Option<(Instant, Arc<HealthReport>)>>,
}

impl fmt::Debug for HealthChecks {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let checks = self.inner.checks.read().unwrap_or_else(|e| e.into_inner());
        f.debug_struct("HealthChecks")
            .field("service", &self.inner.service)
            .field("version", &self.inner.version)
            .field("checks", &checks.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl HealthChecks {
    /// No checks yet, for `service` at `version` (both shown in every report).
    ///
    /// ```
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let report = obskit::health::HealthChecks::new("user", "0.9.0").report().await;
    /// assert_eq!(report.service, "user");
    /// assert_eq!(report.version, "0.9.0");
    /// assert!(report.checks.is_empty());
    /// # });
    /// ```
    pub fn new(service: impl Into<String>, version: impl Into<String>) -> Self {
        // Anchor the uptime clock now, at service start-up, rather than at the first probe.
        let _ = process_uptime();
        HealthChecks {
            inner: Arc::new(Inner {
                service: service.into(),
                version: version.into(),
                checks: RwLock::new(BTreeMap::new()),
                last: RwLock::new(None),
            }),
        }
    }

    /// Registers `check` under `name` with the default [`CheckOptions`]: a critical readiness
    /// check with a two-second timeout. A check of the same name is replaced.
    ///
    /// `check` is called once per run and returns the future to await, so it captures its
    /// handles by clone:
    ///
    /// ```
    /// use std::sync::Arc;
    /// use obskit::health::{CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// struct Pool;
    /// impl Pool {
    ///     async fn ping(&self) -> Result<(), String> { Ok(()) }
    /// }
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let pool = Arc::new(Pool);
    /// let checks = HealthChecks::new("backend", "1.0.0");
    /// checks.register("database", move || {
    ///     let pool = Arc::clone(&pool);
    ///     async move { pool.ping().await.into() }
    /// });
    /// assert_eq!(checks.report().await.status, HealthStatus::Healthy);
    /// # });
    /// ```
    pub fn register<F, Fut>(&self, name: impl Into<String>, check: F) -> &Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckOutcome> + Send + 'static,
    {
        self.register_with(name, CheckOptions::new(), check)
    }

    /// Registers `check` under `name` with `options`. A check of the same name is replaced.
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::health::{CheckOptions, CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("order", "3.1.0");
    /// checks.register_with(
    ///     "payment-gateway",
    ///     CheckOptions::new().timeout(Duration::from_millis(50)).non_critical(),
    ///     || std::future::pending::<CheckOutcome>(),
    /// );
    /// let report = checks.report().await;
    /// assert_eq!(report.status, HealthStatus::Degraded);
    /// assert_eq!(report.checks["payment-gateway"].message.as_deref(), Some("timed out after 50ms"));
    /// # });
    /// ```
    pub fn register_with<F, Fut>(&self, name: impl Into<String>, options: CheckOptions, check: F) -> &Self
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = CheckOutcome> + Send + 'static,
    {
        let registered = Registered {
            options,
            check: Box::new(move || Box::pin(check()) as BoxCheckFuture),
            cache: tokio::sync::Mutex::new(None),
        };
        self.inner
            .checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .insert(name.into(), Arc::new(registered));
        self
    }

    /// Registers the seed's memory check under [`MEMORY_CHECK_NAME`]: system memory use at or
    /// above 80 % is degraded, above 90 % unhealthy. It is a [`CheckKind::Diagnostic`] check, so
    /// `/health` shows it and readiness ignores it. For other thresholds, register
    /// [`memory_check`] yourself. (Feature `process-metrics`.)
    ///
    /// ```
    /// use obskit::health::HealthChecks;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// checks.register_memory_check();
    /// let report = checks.report().await;
    /// let memory = &report.checks["memory"];
    /// # if cfg!(target_os = "linux") {
    /// assert!(memory.details["total_bytes"].as_u64().unwrap() > 0);
    /// # }
    /// assert!(checks.readiness().await.checks.is_empty());
    /// # });
    /// ```
    #[cfg(feature = "process-metrics")]
    pub fn register_memory_check(&self) -> &Self {
        self.register_with(
            MEMORY_CHECK_NAME,
            CheckOptions::new().kind(CheckKind::Diagnostic),
            memory_check(DEFAULT_MEMORY_DEGRADED_PERCENT, DEFAULT_MEMORY_UNHEALTHY_PERCENT),
        )
    }

    /// Removes the check registered under `name`; whether there was one.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthChecks};
    ///
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// checks.register("redis", || async { CheckOutcome::healthy() });
    /// assert!(checks.unregister("redis"));
    /// assert!(!checks.unregister("redis"));
    /// ```
    pub fn unregister(&self, name: &str) -> bool {
        self.inner
            .checks
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove(name)
            .is_some()
    }

    /// The full report for `/health`: runs every check concurrently, each bounded by its
    /// timeout, and folds their outcomes into the overall status (the worst contribution, see
    /// [`Severity`]). A check that panics or does not finish in time is reported `unhealthy`;
    /// the report itself never waits much past the longest timeout.
    ///
    /// Must be awaited inside a Tokio runtime: each check runs as its own task, which is what
    /// isolates a panicking check.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// checks.register("flaky", || async { panic!("index out of bounds") });
    /// let report = checks.report().await;
    /// assert_eq!(report.status, HealthStatus::Unhealthy);
    /// assert_eq!(
    ///     report.checks["flaky"].message.as_deref(),
    ///     Some("check panicked: index out of bounds")
    /// );
    /// # });
    /// ```
    pub async fn report(&self) -> HealthReport {
        let started = Instant::now();
        let report = self.run_checks(|_| true).await;
        let mut last = self.inner.last.write().unwrap_or_else(|e| e.into_inner());
        // Of two reports running at once, the one started later knows better, whichever
        // finishes first.
        if last.as_ref().is_none_or(|(at, _)| *at <= started) {
            *last = Some((started, Arc::new(report.clone())));
        }
        report
    }

    /// The last full report ([`HealthChecks::report`]: a `/health` call's or the background
    /// [`HealthRefresher`]'s), without running anything; `None` before the first one. This is
    /// what the [`HealthGauge`] shows. Readiness reports are partial and do not count.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// checks.register("redis", || async { CheckOutcome::unhealthy("down") });
    /// assert!(checks.last_report().is_none());
    /// checks.readiness().await;
    /// assert!(checks.last_report().is_none());
    /// checks.report().await;
    /// assert_eq!(checks.last_report().unwrap().status, HealthStatus::Unhealthy);
    /// # });
    /// ```
    pub fn last_report(&self) -> Option<Arc<HealthReport>> {
        self.inner
            .last
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .map(|(_, report)| Arc::clone(report))
    }

    /// The report for `/health/ready`: like [`HealthChecks::report`], over the
    /// [`CheckKind::Readiness`] checks only (the memory check is left out).
    ///
    /// ```
    /// use obskit::health::{CheckKind, CheckOptions, CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// checks.register("redis", || async { CheckOutcome::healthy() });
    /// checks.register_with("disk", CheckOptions::new().kind(CheckKind::Diagnostic), || async {
    ///     CheckOutcome::unhealthy("95% full")
    /// });
    /// let ready = checks.readiness().await;
    /// assert_eq!(ready.status, HealthStatus::Healthy);
    /// assert_eq!(ready.checks.keys().collect::<Vec<_>>(), ["redis"]);
    /// assert_eq!(checks.report().await.status, HealthStatus::Unhealthy);
    /// # });
    /// ```
    pub async fn readiness(&self) -> HealthReport {
        self.run_checks(|kind| kind == CheckKind::Readiness).await
    }

    /// The report for `/health/live`: the process is running and answering, so it is alive.
    /// No check runs: a liveness probe that fails because a dependency is down only gets a
    /// working process restarted.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// checks.register("database", || async { CheckOutcome::unhealthy("down") });
    /// let live = checks.liveness();
    /// assert_eq!(live.status, HealthStatus::Healthy);
    /// assert!(live.checks.is_empty());
    /// assert!(live.uptime_seconds >= 0.0);
    /// ```
    pub fn liveness(&self) -> HealthReport {
        self.assemble(BTreeMap::new())
    }

    fn assemble(&self, checks: BTreeMap<String, CheckResult>) -> HealthReport {
        let status = HealthStatus::worst(checks.values().map(CheckResult::contribution));
        HealthReport {
            service: self.inner.service.clone(),
            status,
            version: self.inner.version.clone(),
            timestamp: unix_seconds_now(),
            uptime_seconds: round3(process_uptime().as_secs_f64()),
            checks,
        }
    }

    async fn run_checks(&self, include: impl Fn(CheckKind) -> bool) -> HealthReport {
        // Snapshot the registrations so that the lock is not held while checks run.
        let checks: Vec<(String, Arc<Registered>)> = self
            .inner
            .checks
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, check)| include(check.options.get_kind()))
            .map(|(name, check)| (name.clone(), Arc::clone(check)))
            .collect();

        struct Pending {
            index: usize,
            deadline: Instant,
            handle: AbortHandle,
        }

        let started = Instant::now();
        // Dropping the set (say, the client hung up mid-report) aborts every check still running.
        let mut set = JoinSet::new();
        let mut pending = HashMap::with_capacity(checks.len());
        for (index, (_, check)) in checks.iter().enumerate() {
            let deadline = started + check.options.get_timeout() + BLOCKED_CHECK_GRACE;
            let handle = set.spawn(Arc::clone(check).run());
            pending.insert(
                handle.id(),
                Pending {
                    index,
                    deadline,
                    handle,
                },
            );
        }

        let mut runs: Vec<Option<Run>> = vec![None; checks.len()];
        while let Some(next_deadline) = pending.values().map(|p| p.deadline).min() {
            match tokio::time::timeout_at(next_deadline, set.join_next_with_id()).await {
                Ok(Some(Ok((id, run)))) => {
                    if let Some(p) = pending.remove(&id) {
                        runs[p.index] = Some(run);
                    }
                }
                Ok(Some(Err(error))) => {
                    if let Some(p) = pending.remove(&error.id()) {
                        runs[p.index] = Some(Run {
                            outcome: failed(error),
                            latency: started.elapsed(),
                            cached: false,
                        });
                    }
                }
                Ok(None) => break,
                Err(_) => {
                    // Only a check that blocks its thread gets here: its own timeout could not
                    // fire. Give up on it; aborting takes effect if it ever yields.
                    let now = Instant::now();
                    pending.retain(|_, p| {
                        if p.deadline > now {
                            return true;
                        }
                        p.handle.abort();
                        let (_, check) = &checks[p.index];
                        runs[p.index] = Some(Run {
                            outcome: timed_out(check.options.get_timeout()),
                            latency: now - started,
                            cached: false,
                        });
                        false
                    });
                }
            }
        }

        let results = checks
            .into_iter()
            .zip(runs)
            .map(|((name, check), run)| {
                let run = run.unwrap_or_else(|| Run {
                    outcome: CheckOutcome::unhealthy("check did not finish"),
                    latency: started.elapsed(),
                    cached: false,
                });
                let result = CheckResult {
                    status: run.outcome.status,
                    message: run.outcome.message,
                    latency_ms: round3(run.latency.as_secs_f64() * 1000.0),
                    critical: check.options.get_severity() == Severity::Critical,
                    cached: run.cached,
                    details: run.outcome.details,
                };
                (name, result)
            })
            .collect();
        self.assemble(results)
    }
}

/// Rounds to three decimals: microseconds for `latency_ms`, milliseconds for seconds, which is
/// all the precision a health report needs.
fn round3(value: f64) -> f64 {
    (value * 1000.0).round() / 1000.0
}

#[cfg(test)]
mod tests;
