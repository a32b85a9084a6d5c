//! Metrics: a registry handle owned by the service, declaration helpers with fixed label names,
//! a cardinality guard on every labelled metric, and Prometheus text exposition.
//!
//! Built on the [`prometheus`] crate's data model, so anything that speaks it (custom
//! [`prometheus::core::Collector`]s, [`prometheus::Registry::gather`]) keeps working.
//!
//! ```
//! use obskit::metrics::{Registry, buckets};
//!
//! let registry = Registry::new();
//! let views = registry
//!     .counter_vec("product_views_total", "Product pages viewed", &["category"])
//!     .unwrap();
//! let cart_value = registry
//!     .histogram("cart_total_value", "Cart value at checkout", &[10.0, 50.0, 100.0, 500.0])
//!     .unwrap();
//!
//! views.with(&["books"]).inc();
//! cart_value.observe(42.0);
//!
//! let text = registry.encode_text();
//! assert!(text.contains(r#"product_views_total{category="books"} 1"#));
//! assert!(buckets::HTTP_LATENCY_SECONDS.len() > 5);
//! ```

pub(crate) mod cells;
pub(crate) mod exposition;
pub(crate) mod function;
mod guard;
mod openmetrics;
pub(crate) mod render;
pub mod runtime;

use std::fmt;
use std::sync::{Arc, OnceLock};

use prometheus::core::{Collector, MetricVec, MetricVecBuilder};
use prometheus::{HistogramOpts, IntCounterVec, Opts};

pub use exposition::TEXT_CONTENT_TYPE;
pub use function::DURATION_BUCKETS_SECONDS;
pub(crate) use guard::LabelGuard;
pub use guard::OVERFLOW_LABEL_VALUE;
pub use openmetrics::{accepts_openmetrics, ExemplarStore, HistogramExemplars, OPENMETRICS_CONTENT_TYPE};

/// A monotonically increasing integer counter (`_total`).
pub type Counter = prometheus::IntCounter;
/// A value that goes up and down.
pub type Gauge = prometheus::Gauge;
/// An integer gauge: cheaper than [`Gauge`] where the value is a count.
pub type IntGauge = prometheus::IntGauge;
/// A histogram with fixed buckets.
pub type Histogram = prometheus::Histogram;

/// A counter with fixed label names, guarded against unbounded label sets.
pub type CounterVec = Labeled<prometheus::IntCounterVec>;
/// A gauge with fixed label names, guarded against unbounded label sets.
pub type GaugeVec = Labeled<prometheus::GaugeVec>;
/// An integer gauge with fixed label names, guarded against unbounded label sets.
pub type IntGaugeVec = Labeled<prometheus::IntGaugeVec>;
/// A histogram with fixed label names, guarded against unbounded label sets.
pub type HistogramVec = Labeled<prometheus::HistogramVec>;

/// How many distinct label sets one metric may hold before new ones fold into the overflow
/// series, unless [`Registry::with_label_limit`] says otherwise.
pub const DEFAULT_LABEL_LIMIT: usize = 1000;

/// Environment variable that sets the label-set limit of [`Registry::global`].
pub const LABEL_LIMIT_ENV: &str = crate::names::env::OBSKIT_LABEL_LIMIT;

/// Name of the counter that counts label sets folded into an overflow series.
pub const LABEL_OVERFLOW_METRIC: &str = crate::names::OBSKIT_METRIC_LABEL_OVERFLOW_TOTAL.name;

/// Bucket layouts that suit common measurements.
pub mod buckets {
    /// Latency of a web API, in seconds: 5 ms to 10 s (the layout Prometheus clients and
    /// autometrics use, so published dashboards line up).
    pub const HTTP_LATENCY_SECONDS: &[f64] = &[
        0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    ];
    /// Sizes of HTTP bodies, in bytes: 64 B to 16 MiB, by powers of four.
    pub const HTTP_SIZE_BYTES: &[f64] = &[
        64.0, 256.0, 1024.0, 4096.0, 16384.0, 65536.0, 262144.0, 1048576.0, 4194304.0, 16777216.0,
    ];

    /// `bounds` times `scale`, rounded: bucket bounds in the integer unit per-thread cells count
    /// (nanoseconds for seconds, bytes for bytes), so that a call or request compares integers.
    pub(crate) const fn scaled<const N: usize>(bounds: &[f64], scale: f64) -> [u64; N] {
        let mut out = [0u64; N];
        let mut i = 0;
        while i < N {
            out[i] = (bounds[i] * scale + 0.5) as u64;
            i += 1;
        }
        out
    }
}

/// Why a metric could not be declared.
#[derive(Debug)]
pub enum Error {
    /// The name breaks a Prometheus naming convention that `promtool check metrics` enforces.
    Naming {
        /// The refused name.
        name: String,
        /// Which convention it breaks.
        reason: &'static str,
    },
    /// The `prometheus` crate refused it: a duplicate name, an invalid label name, bad buckets.
    Prometheus(prometheus::Error),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Naming { name, reason } => write!(f, "metric name `{name}`: {reason}"),
            Error::Prometheus(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for Error {}

impl From<prometheus::Error> for Error {
    fn from(e: prometheus::Error) -> Self {
        Error::Prometheus(e)
    }
}

/// A handle on a set of metrics, cheap to clone (all clones share the same metrics).
///
/// A service owns its registry; tests build their own with [`Registry::new`] and so never see
/// another test's series. [`Registry::global`] is the process-wide default that
/// `#[instrumented]` records into; [`Registry::encode_text`] of any registry also includes the
/// global function metrics, so one `/metrics` shows both.
#[derive(Clone)]
pub struct Registry {
    inner: Arc<Inner>,
}

struct Inner {
    prometheus: prometheus::Registry,
    label_limit: usize,
    overflow: IntCounterVec,
    is_global: bool,
    exemplars: ExemplarStore,
}

impl Default for Registry {
    fn default() -> Self {
        Registry::new()
    }
}

impl fmt::Debug for Registry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Registry")
            .field("label_limit", &self.inner.label_limit)
            .field("is_global", &self.inner.is_global)
            .finish_non_exhaustive()
    }
}

impl Registry {
    /// An empty registry with the default label-set limit.
    ///
    /// ```
    /// let registry = obskit::metrics::Registry::new();
    /// registry.counter("jobs_done_total", "Jobs done").unwrap().inc();
    /// assert!(registry.encode_text().contains("jobs_done_total 1"));
    /// ```
    pub fn new() -> Self {
        Registry::with_label_limit(DEFAULT_LABEL_LIMIT)
    }

    /// An empty registry whose labelled metrics hold at most `limit` label sets each.
    ///
    /// ```
    /// let registry = obskit::metrics::Registry::with_label_limit(2);
    /// let c = registry.counter_vec("hits_total", "Hits", &["user"]).unwrap();
    /// for user in ["a", "b", "c", "d"] {
    ///     c.with(&[user]).inc();
    /// }
    /// assert_eq!(c.with(&["__overflow__"]).get(), 2);
    /// ```
    pub fn with_label_limit(limit: usize) -> Self {
        Registry::build(limit.max(1), false)
    }

    fn build(label_limit: usize, is_global: bool) -> Self {
        let prometheus = prometheus::Registry::new();
        let overflow = IntCounterVec::new(
            Opts::new(
                LABEL_OVERFLOW_METRIC,
                crate::names::OBSKIT_METRIC_LABEL_OVERFLOW_TOTAL.help,
            ),
            crate::names::OBSKIT_METRIC_LABEL_OVERFLOW_TOTAL.labels,
        )
        .expect("static metric definition is valid");
        prometheus
            .register(Box::new(overflow.clone()))
            .expect("fresh registry has no duplicate");
        Registry {
            inner: Arc::new(Inner {
                prometheus,
                label_limit,
                overflow,
                is_global,
                exemplars: ExemplarStore::default(),
            }),
        }
    }

    /// The process-wide default registry: where `#[instrumented]` records, and what
    /// [`crate::Obskit`] uses unless given another.
    ///
    /// Its label-set limit is [`DEFAULT_LABEL_LIMIT`], or `OBSKIT_LABEL_LIMIT` when that is set
    /// to a positive number when the global registry is first used.
    pub fn global() -> &'static Registry {
        static GLOBAL: OnceLock<Registry> = OnceLock::new();
        GLOBAL.get_or_init(|| {
            let limit = std::env::var(LABEL_LIMIT_ENV)
                .ok()
                .and_then(|v| v.trim().parse::<usize>().ok())
                .filter(|&limit| limit > 0)
                .unwrap_or(DEFAULT_LABEL_LIMIT);
            let registry = Registry::build(limit, true);
            registry
                .register_collector(Box::new(function::FunctionMetricsCollector))
                .expect("function metrics are registered once");
            registry
        })
    }

    /// Whether this handle is the process-wide default registry (or a clone of it).
    pub fn is_global(&self) -> bool {
        self.inner.is_global
    }

    /// The label-set limit of this registry's labelled metrics.
    pub fn label_limit(&self) -> usize {
        self.inner.label_limit
    }

    /// Declares an unlabelled counter. The name must end in `_total`.
    pub fn counter(&self, name: &str, help: &str) -> Result<Counter, Error> {
        check_name(name, Kind::Counter)?;
        let counter = Counter::with_opts(Opts::new(name, help))?;
        self.register_collector(Box::new(counter.clone()))?;
        Ok(counter)
    }

    /// Declares a counter with fixed label names. The name must end in `_total`.
    ///
    /// ```
    /// let registry = obskit::metrics::Registry::new();
    /// let logins = registry
    ///     .counter_vec("login_attempts_total", "Logins", &["status"])
    ///     .unwrap();
    /// logins.with(&["success"]).inc();
    /// ```
    pub fn counter_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<CounterVec, Error> {
        check_name(name, Kind::Counter)?;
        let vec = prometheus::IntCounterVec::new(Opts::new(name, help), labels)?;
        self.labeled(vec, name, labels.len())
    }

    /// Declares an unlabelled gauge.
    pub fn gauge(&self, name: &str, help: &str) -> Result<Gauge, Error> {
        check_name(name, Kind::Gauge)?;
        let gauge = Gauge::with_opts(Opts::new(name, help))?;
        self.register_collector(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    /// Declares an unlabelled integer gauge.
    pub fn int_gauge(&self, name: &str, help: &str) -> Result<IntGauge, Error> {
        check_name(name, Kind::Gauge)?;
        let gauge = IntGauge::with_opts(Opts::new(name, help))?;
        self.register_collector(Box::new(gauge.clone()))?;
        Ok(gauge)
    }

    /// Declares a gauge with fixed label names.
    pub fn gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<GaugeVec, Error> {
        check_name(name, Kind::Gauge)?;
        let vec = prometheus::GaugeVec::new(Opts::new(name, help), labels)?;
        self.labeled(vec, name, labels.len())
    }

    /// Declares an integer gauge with fixed label names.
    pub fn int_gauge_vec(&self, name: &str, help: &str, labels: &[&str]) -> Result<IntGaugeVec, Error> {
        check_name(name, Kind::Gauge)?;
        let vec = prometheus::IntGaugeVec::new(Opts::new(name, help), labels)?;
        self.labeled(vec, name, labels.len())
    }

    /// Declares an unlabelled histogram with the given bucket upper bounds.
    pub fn histogram(&self, name: &str, help: &str, buckets: &[f64]) -> Result<Histogram, Error> {
        check_name(name, Kind::Histogram)?;
        let histogram = Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))?;
        self.register_collector(Box::new(histogram.clone()))?;
        Ok(histogram)
    }

    /// Declares a histogram with fixed label names and the given bucket upper bounds.
    ///
    /// ```
    /// use obskit::metrics::{buckets, Registry};
    /// use obskit::names::CASSANDRA_QUERY_DURATION_SECONDS as QUERIES;
    /// let registry = Registry::new();
    /// let latency = registry
    ///     .histogram_vec(QUERIES.name, QUERIES.help, QUERIES.labels, buckets::HTTP_LATENCY_SECONDS)
    ///     .unwrap();
    /// latency.with(&["products", "SELECT"]).observe(0.003);
    /// ```
    pub fn histogram_vec(
        &self,
        name: &str,
        help: &str,
        labels: &[&str],
        buckets: &[f64],
    ) -> Result<HistogramVec, Error> {
        check_name(name, Kind::Histogram)?;
        let vec =
            prometheus::HistogramVec::new(HistogramOpts::new(name, help).buckets(buckets.to_vec()), labels)?;
        self.labeled(vec, name, labels.len())
    }

    /// Registers any [`Collector`] (an escape hatch for metrics obskit does not declare itself).
    pub fn register_collector(&self, collector: Box<dyn Collector>) -> Result<(), Error> {
        self.inner.prometheus.register(collector)?;
        Ok(())
    }

    /// The underlying `prometheus` registry.
    pub fn prometheus(&self) -> &prometheus::Registry {
        &self.inner.prometheus
    }

    /// Every metric family of this registry, plus the global function metrics when this is not
    /// the global registry, sorted by name.
    pub fn gather(&self) -> Vec<prometheus::proto::MetricFamily> {
        let mut families = self.inner.prometheus.gather();
        if !self.inner.is_global {
            families.extend(Registry::global().inner.prometheus.gather());
            exposition::merge_families(&mut families);
        }
        families
    }

    /// The registry in Prometheus text format 0.0.4.
    pub fn encode_text(&self) -> String {
        exposition::encode_text(&self.gather())
    }

    /// The exemplars of this registry's histograms (trace ids of sampled observations).
    pub fn exemplars(&self) -> &ExemplarStore {
        &self.inner.exemplars
    }

    /// The registry in OpenMetrics text 1.0, with exemplars (see [`ExemplarStore`]).
    ///
    /// ```
    /// let registry = obskit::metrics::Registry::new();
    /// registry.counter("jobs_done_total", "Jobs done").unwrap().inc();
    /// let text = registry.encode_openmetrics();
    /// assert!(text.contains("# TYPE jobs_done counter\n"));
    /// assert!(text.contains("jobs_done_total 1\n"));
    /// assert!(text.ends_with("# EOF\n"));
    /// ```
    pub fn encode_openmetrics(&self) -> String {
        // The global registry's families (function metrics) come with this one's: so do their
        // exemplars.
        let global = Registry::global();
        let mut stores = vec![&self.inner.exemplars];
        if !self.inner.is_global {
            stores.push(&global.inner.exemplars);
        }
        openmetrics::encode(&self.gather(), &stores)
    }

    /// A cardinality guard with this registry's limit, counting its folds under `name` in
    /// `obskit_metric_label_overflow_total`: for families stored outside `prometheus` (the HTTP
    /// RED families) that guard their label sets as the declared ones do.
    pub(crate) fn label_guard(&self, name: &str) -> Arc<LabelGuard> {
        let overflow = self.inner.overflow.with_label_values(&[name]);
        Arc::new(LabelGuard::new(self.inner.label_limit, overflow))
    }

    fn labeled<T: MetricVecBuilder + 'static>(
        &self,
        vec: MetricVec<T>,
        name: &str,
        label_count: usize,
    ) -> Result<Labeled<MetricVec<T>>, Error>
    where
        MetricVec<T>: Collector + Clone,
    {
        self.register_collector(Box::new(vec.clone()))?;
        Ok(Labeled {
            vec,
            guard: self.label_guard(name),
            overflow_values: vec![OVERFLOW_LABEL_VALUE; label_count],
        })
    }
}

/// A metric with fixed label names whose distinct label sets are capped (see the
/// [module docs](self)). Cheap to clone; clones share series and guard.
pub struct Labeled<V> {
    vec: V,
    guard: Arc<LabelGuard>,
    overflow_values: Vec<&'static str>,
}

impl<V: Clone> Clone for Labeled<V> {
    fn clone(&self) -> Self {
        Labeled {
            vec: self.vec.clone(),
            guard: Arc::clone(&self.guard),
            overflow_values: self.overflow_values.clone(),
        }
    }
}

impl<T: MetricVecBuilder> Labeled<MetricVec<T>> {
    /// The series for these label values, in declaration order. A new label set past the
    /// metric's limit returns the overflow series (every label `__overflow__`) instead.
    ///
    /// A wrong number of values is a programming error; it returns the overflow series too,
    /// rather than panicking on a request path.
    pub fn with(&self, values: &[&str]) -> T::M {
        if values.len() == self.overflow_values.len() && self.guard.admit(values) {
            if let Ok(metric) = self.vec.get_metric_with_label_values(values) {
                return metric;
            }
        }
        self.vec
            .get_metric_with_label_values(&self.overflow_values)
            .expect("overflow label values match the label names")
    }

    /// How many distinct label sets this metric holds (not counting the overflow series).
    pub fn label_sets(&self) -> usize {
        self.guard.len()
    }

    /// The most label sets this metric will hold before folding new ones into the overflow.
    pub fn label_limit(&self) -> usize {
        self.guard.limit()
    }
}

#[derive(Clone, Copy, PartialEq)]
enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// The conventions `promtool check metrics` lints for, refused at declaration time so that a
/// service cannot publish a metric that fails the lint.
fn check_name(name: &str, kind: Kind) -> Result<(), Error> {
    let fail = |reason| {
        Err(Error::Naming {
            name: name.to_string(),
            reason,
        })
    };
    let valid_chars = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_' || c == ':');
    if !valid_chars {
        return fail("use snake_case: lowercase ASCII letters, digits and underscores");
    }
    match kind {
        Kind::Counter if !name.ends_with("_total") => return fail("counter names end in `_total`"),
        Kind::Gauge | Kind::Histogram if name.ends_with("_total") => {
            return fail("`_total` is reserved for counters")
        }
        _ => {}
    }
    for suffix in ["_sum", "_count", "_bucket"] {
        if name.ends_with(suffix) {
            return fail("`_sum`, `_count` and `_bucket` are reserved for histogram series");
        }
    }
    for prefix in ["milli", "micro", "nano", "centi", "kilo", "mega"] {
        for unit in ["seconds", "bytes", "meters", "grams"] {
            if name.contains(&format!("{prefix}{unit}")) {
                return fail("use base units (`_seconds`, `_bytes`)");
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counter_names_must_end_in_total() {
        let r = Registry::new();
        assert!(matches!(r.counter("requests", "x"), Err(Error::Naming { .. })));
        assert!(r.counter("requests_total", "x").is_ok());
        assert!(matches!(r.gauge("queue_total", "x"), Err(Error::Naming { .. })));
        assert!(matches!(
            r.histogram("latency_milliseconds", "x", &[1.0]),
            Err(Error::Naming { .. })
        ));
        assert!(matches!(r.gauge("BadName", "x"), Err(Error::Naming { .. })));
        assert!(matches!(r.gauge("x_count", "x"), Err(Error::Naming { .. })));
    }

    #[test]
    fn duplicate_declaration_is_an_error() {
        let r = Registry::new();
        r.counter_vec("dup_total", "x", &["a"]).unwrap();
        assert!(matches!(
            r.counter_vec("dup_total", "x", &["a"]),
            Err(Error::Prometheus(_))
        ));
    }

    #[test]
    fn overflow_folds_new_label_sets_and_counts_them() {
        let r = Registry::with_label_limit(5);
        let c = r.counter_vec("views_total", "x", &["category", "kind"]).unwrap();
        for i in 0..1000 {
            c.with(&[&format!("cat{i}"), "a"]).inc();
        }
        assert_eq!(c.label_sets(), 5);
        let text = r.encode_text();
        assert!(
            text.contains(r#"views_total{category="__overflow__",kind="__overflow__"} 995"#),
            "{text}"
        );
        assert!(
            text.contains(r#"obskit_metric_label_overflow_total{metric="views_total"} 995"#),
            "{text}"
        );
        let series = text.lines().filter(|l| l.starts_with("views_total{")).count();
        assert_eq!(series, 6);
    }

    #[test]
    fn a_million_distinct_values_keep_the_metric_bounded() {
        let r = Registry::with_label_limit(100);
        let c = r
            .counter_vec("requests_by_user_total", "x", &["user_id"])
            .unwrap();
        for i in 0..1_000_000u32 {
            c.with(&[&i.to_string()]).inc();
        }
        // What holds memory: the guard's set of hashes and the series. Both stay at the limit.
        assert_eq!(c.label_sets(), 100);
        let text = r.encode_text();
        assert_eq!(
            text.lines()
                .filter(|l| l.starts_with("requests_by_user_total{"))
                .count(),
            101
        );
        assert!(text.contains(r#"requests_by_user_total{user_id="__overflow__"} 999900"#));
        assert!(
            text.contains(r#"obskit_metric_label_overflow_total{metric="requests_by_user_total"} 999900"#)
        );
    }

    #[test]
    fn wrong_label_count_goes_to_overflow_instead_of_panicking() {
        let r = Registry::new();
        let c = r.counter_vec("odd_total", "x", &["a", "b"]).unwrap();
        c.with(&["only-one"]).inc();
        assert_eq!(c.with(&[OVERFLOW_LABEL_VALUE, OVERFLOW_LABEL_VALUE]).get(), 1);
    }

    #[test]
    fn registries_are_isolated() {
        let a = Registry::new();
        let b = Registry::new();
        a.counter("only_in_a_total", "x").unwrap().inc();
        assert!(!b.encode_text().contains("only_in_a_total"));
        // The same name may be declared in both.
        b.counter("only_in_a_total", "x").unwrap();
    }

    #[test]
    fn histogram_vec_uses_given_buckets() {
        let r = Registry::new();
        let h = r
            .histogram_vec("cart_total_value", "x", &["currency"], &[10.0, 50.0])
            .unwrap();
        h.with(&["eur"]).observe(20.0);
        let text = r.encode_text();
        assert!(
            text.contains(r#"cart_total_value_bucket{currency="eur",le="10"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"cart_total_value_bucket{currency="eur",le="50"} 1"#),
            "{text}"
        );
    }
}
