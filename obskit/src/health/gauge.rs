//! The `obskit_health_status{check}` gauge: what `/health` would say, for Prometheus, without
//! anyone calling `/health`.
//!
//! Two halves that never wait on each other:
//! - [`HealthRefresher`] runs [`HealthChecks::report`] in the background every interval; every
//!   full report (the refresher's, or a `/health` call's) is remembered by the checks, see
//!   [`HealthChecks::last_report`].
//! - [`HealthGauge`] is a collector in the service's registry that, at scrape time, only reads
//!   that last report: a scrape never runs a check, so a slow or hanging dependency can never
//!   make `/metrics` slow. The price is staleness of at most one interval (plus the slowest
//!   check's timeout).

use std::sync::{Arc, Mutex, PoisonError, RwLock, Weak};
use std::time::Duration;

use prometheus::core::{Collector, Desc};
use prometheus::proto::MetricFamily;
use prometheus::{IntGaugeVec, Opts};
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use super::{HealthChecks, HealthStatus, Inner};
use crate::metrics::Registry;

/// The gauge's name.
///
/// ```
/// assert_eq!(obskit::health::HEALTH_STATUS_METRIC, "obskit_health_status");
/// ```
pub const HEALTH_STATUS_METRIC: &str = crate::names::OBSKIT_HEALTH_STATUS.name;

/// The `check` label value of the aggregate series: the overall status `/health` answers with.
/// A check registered under this name is not exported on its own (its status still counts in
/// the overall one).
///
/// ```
/// assert_eq!(obskit::health::OVERALL_CHECK_LABEL, "overall");
/// ```
pub const OVERALL_CHECK_LABEL: &str = "overall";

const HELP: &str = crate::names::OBSKIT_HEALTH_STATUS.help;

/// The `obskit_health_status{check}` gauge of one registry: one series for the overall status
/// (`check="overall"`) and one per registered check, by its registered name, valued with
/// [`HealthStatus::gauge_value`] (0 healthy, 1 degraded, 2 unhealthy).
///
/// A scrape reads the last full report of the watched [`HealthChecks`]
/// ([`HealthChecks::last_report`]) and never runs a check itself; keep the report fresh with
/// [`HealthChecks::refresh_every`] (the [`Obskit`](crate::Obskit) builder does both, see
/// [`ObskitBuilder::health_interval`](crate::ObskitBuilder::health_interval)). Before the
/// first report there is no series at all, rather than a made-up value. A check that is
/// unregistered disappears from the next scrape. Series are only ever named after registered
/// checks, so the cardinality is bounded by code, never by requests.
///
/// ```
/// use obskit::health::{CheckOutcome, HealthChecks, HealthGauge};
/// use obskit::metrics::Registry;
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let registry = Registry::new();
/// let checks = HealthChecks::new("cart", "1.0.0");
/// checks.register("database", || async { CheckOutcome::degraded("replica lag") });
/// let gauge = HealthGauge::register(&registry).unwrap();
/// gauge.watch(&checks);
/// // No report yet: nothing to say.
/// assert!(!registry.encode_text().contains("obskit_health_status{"));
///
/// checks.report().await; // what the background refresher (or a /health call) does
/// let text = registry.encode_text();
/// assert!(text.contains(r#"obskit_health_status{check="database"} 1"#), "{text}");
/// assert!(text.contains(r#"obskit_health_status{check="overall"} 1"#), "{text}");
/// # });
/// ```
#[derive(Clone)]
pub struct HealthGauge {
    inner: Arc<GaugeInner>,
}

struct GaugeInner {
    /// Not registered anywhere itself: refilled from the last report at every scrape.
    vec: IntGaugeVec,
    /// Weak, so that the registry (the global one lives for ever) does not keep the checks of a
    /// dropped service alive.
    source: RwLock<Weak<Inner>>,
    /// Serialises scrapes: each one resets and refills `vec`.
    collecting: Mutex<()>,
}

impl std::fmt::Debug for HealthGauge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let watching = self
            .inner
            .source
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .strong_count()
            > 0;
        f.debug_struct("HealthGauge")
            .field("watching", &watching)
            .finish_non_exhaustive()
    }
}

/// What the registry holds: scrapes go through here.
struct GaugeCollector(Arc<GaugeInner>);

impl HealthGauge {
    /// Declares `obskit_health_status` in `registry`, watching nothing yet. Fails if the
    /// registry already has a metric of that name.
    ///
    /// ```
    /// use obskit::health::HealthGauge;
    /// use obskit::metrics::Registry;
    ///
    /// let registry = Registry::new();
    /// assert!(HealthGauge::register(&registry).is_ok());
    /// assert!(HealthGauge::register(&registry).is_err(), "one per registry");
    /// ```
    pub fn register(registry: &Registry) -> Result<HealthGauge, crate::metrics::Error> {
        let vec = IntGaugeVec::new(
            Opts::new(HEALTH_STATUS_METRIC, HELP),
            crate::names::OBSKIT_HEALTH_STATUS.labels,
        )?;
        let inner = Arc::new(GaugeInner {
            vec,
            source: RwLock::new(Weak::new()),
            collecting: Mutex::new(()),
        });
        registry.register_collector(Box::new(GaugeCollector(Arc::clone(&inner))))?;
        Ok(HealthGauge { inner })
    }

    /// Shows the statuses of `checks` from now on, in place of whatever was watched before
    /// (on a shared registry, the last service built wins).
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthChecks, HealthGauge};
    /// use obskit::metrics::Registry;
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let registry = Registry::new();
    /// let gauge = HealthGauge::register(&registry).unwrap();
    /// let checks = HealthChecks::new("order", "1.0.0");
    /// checks.register("payments", || async { CheckOutcome::unhealthy("refused") });
    /// checks.report().await;
    /// gauge.watch(&checks);
    /// assert!(registry.encode_text().contains(r#"obskit_health_status{check="payments"} 2"#));
    /// # });
    /// ```
    pub fn watch(&self, checks: &HealthChecks) {
        *self.inner.source.write().unwrap_or_else(PoisonError::into_inner) = Arc::downgrade(&checks.inner);
    }
}

impl Collector for GaugeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.0.vec.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let source = self
            .0
            .source
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .upgrade();
        let series = source
            .map(|inner| HealthChecks { inner }.last_statuses())
            .unwrap_or_default();
        let _collecting = self.0.collecting.lock().unwrap_or_else(PoisonError::into_inner);
        self.0.vec.reset();
        for (check, status) in &series {
            self.0
                .vec
                .with_label_values(&[check.as_str()])
                .set(status.gauge_value());
        }
        self.0.vec.collect()
    }
}

impl HealthChecks {
    /// The series of the gauge: the overall status of the last full report, then the status of
    /// each check in it that is still registered. Empty before the first report.
    fn last_statuses(&self) -> Vec<(String, HealthStatus)> {
        let Some(report) = self.last_report() else {
            return Vec::new();
        };
        let registered = self.inner.checks.read().unwrap_or_else(PoisonError::into_inner);
        let mut series = Vec::with_capacity(report.checks.len() + 1);
        series.push((OVERALL_CHECK_LABEL.to_string(), report.status));
        series.extend(
            report
                .checks
                .iter()
                .filter(|(name, _)| name.as_str() != OVERALL_CHECK_LABEL && registered.contains_key(*name))
                .map(|(name, result)| (name.clone(), result.status)),
        );
        series
    }

    /// Runs [`HealthChecks::report`] now and then every `interval` on the current Tokio
    /// runtime, one report at a time (a report slower than the interval delays the next one
    /// instead of piling up), so that [`HealthChecks::last_report`] and the [`HealthGauge`]
    /// stay fresh without anyone calling `/health`. `interval` is raised to
    /// [`HealthRefresher::MIN_INTERVAL`].
    ///
    /// The task stops when the returned [`HealthRefresher`] is dropped, when every clone of
    /// these checks is gone, or when the runtime shuts down.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does.
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::health::{CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("user", "1.0.0");
    /// checks.register("database", || async { CheckOutcome::degraded("slow") });
    /// let refresher = checks.refresh_every(Duration::from_millis(100));
    /// while checks.last_report().is_none() {
    ///     tokio::time::sleep(Duration::from_millis(10)).await;
    /// }
    /// assert_eq!(checks.last_report().unwrap().status, HealthStatus::Degraded);
    /// drop(refresher); // stops the task
    /// # });
    /// ```
    pub fn refresh_every(&self, interval: Duration) -> HealthRefresher {
        let interval = interval.max(HealthRefresher::MIN_INTERVAL);
        let checks = Arc::downgrade(&self.inner);
        let task = tokio::spawn(async move {
            // The first tick is immediate: the gauge has values right after start-up.
            let mut ticks = tokio::time::interval(interval);
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                let Some(inner) = checks.upgrade() else {
                    break;
                };
                // `report` remembers what it found; the strong handle lives only this long.
                HealthChecks { inner }.report().await;
            }
        })
        .abort_handle();
        HealthRefresher { interval, task }
    }
}

/// The background task started by [`HealthChecks::refresh_every`]; dropping it stops the task.
///
/// ```
/// use std::time::Duration;
/// use obskit::health::{HealthChecks, HealthRefresher};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let refresher = HealthChecks::new("cart", "1.0.0").refresh_every(Duration::from_secs(10));
/// assert_eq!(refresher.interval(), Duration::from_secs(10));
/// assert_eq!(HealthRefresher::DEFAULT_INTERVAL, Duration::from_secs(10));
/// # });
/// ```
#[derive(Debug)]
pub struct HealthRefresher {
    interval: Duration,
    task: AbortHandle,
}

impl HealthRefresher {
    /// How often checks run in the background unless told otherwise: often enough for an
    /// alert with a `for:` of a minute, rarely enough not to load the dependencies.
    ///
    /// ```
    /// assert_eq!(obskit::health::HealthRefresher::DEFAULT_INTERVAL.as_secs(), 10);
    /// ```
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);

    /// The shortest interval: a floor against a zero interval spinning on the dependencies.
    ///
    /// ```
    /// assert_eq!(obskit::health::HealthRefresher::MIN_INTERVAL.as_millis(), 50);
    /// ```
    pub const MIN_INTERVAL: Duration = Duration::from_millis(50);

    /// The interval in use (after raising it to [`HealthRefresher::MIN_INTERVAL`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::health::{HealthChecks, HealthRefresher};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let refresher = HealthChecks::new("cart", "1.0.0").refresh_every(Duration::ZERO);
    /// assert_eq!(refresher.interval(), HealthRefresher::MIN_INTERVAL);
    /// # });
    /// ```
    pub fn interval(&self) -> Duration {
        self.interval
    }
}

impl Drop for HealthRefresher {
    fn drop(&mut self) {
        self.task.abort();
    }
}
