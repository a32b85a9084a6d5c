//! The five RED metric families, stored in per-thread cells ([`crate::metrics::cells`]), and the
//! per-(route, method) handle cache.
//!
//! A request writes its cells with plain stores of the recording thread's own cells (no lock,
//! no `lock`-prefixed instruction); a collector registered in the [`Registry`] sums them when
//! `/metrics` is scraped. Each (method, endpoint) pair owns one range of cells for its duration,
//! in-flight (started and ended) and size series; each (method, endpoint, status) one cell.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::routes::RouteNames;
use crate::clock::{self, TickBounds};
use crate::metrics::cells::{self, Cells};
use crate::metrics::{
    buckets, Error, ExemplarStore, HistogramExemplars, LabelGuard, Registry, OVERFLOW_LABEL_VALUE,
};
use crate::names::{self, label};
use crate::objectives::Objective;

/// The HTTP RED metric families, declared once in a [`Registry`]:
///
/// | family | type | labels |
/// | --- | --- | --- |
/// | `http_requests_total` | counter | `method`, `endpoint`, `status` |
/// | `http_request_duration_seconds` | histogram ([`buckets::HTTP_LATENCY_SECONDS`]) | `method`, `endpoint` |
/// | `http_requests_in_flight` | integer gauge | `method`, `endpoint` |
/// | `http_request_size_bytes` | histogram ([`buckets::HTTP_SIZE_BYTES`]) | `method`, `endpoint` |
/// | `http_response_size_bytes` | histogram ([`buckets::HTTP_SIZE_BYTES`]) | `method`, `endpoint` |
///
/// They are declared with the registry's helpers, so the cardinality guard applies on top of
/// the bounded labels the layer produces. Declare them once per registry and clone the value
/// (clones share the families): declaring twice in one registry is a duplicate-name error.
///
/// ```
/// use obskit::http::HttpMetrics;
/// use obskit::metrics::Registry;
///
/// let registry = Registry::new();
/// let metrics = HttpMetrics::new(&registry).unwrap();
/// let _layer = obskit::http::HttpMetricsLayer::new(metrics.clone());
/// assert!(HttpMetrics::new(&registry).is_err(), "declared once per registry");
/// ```
#[derive(Clone)]
pub struct HttpMetrics {
    pub(crate) requests: Arc<StatusCounters>,
    pub(crate) duration: Arc<Family>,
    pub(crate) in_flight: Arc<Family>,
    pub(crate) request_size: Arc<Family>,
    pub(crate) response_size: Arc<Family>,
    pairs: Arc<Pairs>,
    /// The routes' objectives by template: their labels are added when `/metrics` is scraped,
    /// so a request pays nothing for them.
    objectives: Arc<RouteObjectives>,
    /// Trace-id exemplars of `http_request_duration_seconds`.
    pub(crate) exemplars: ExemplarStore,
}

impl fmt::Debug for HttpMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMetrics")
            .field("requests_label_sets", &self.requests.label_sets())
            .finish_non_exhaustive()
    }
}

impl HttpMetrics {
    /// Declares the five families in `registry`.
    ///
    /// Fails if one of the names is already declared there.
    ///
    /// ```
    /// let registry = obskit::metrics::Registry::new();
    /// let _metrics = obskit::http::HttpMetrics::new(&registry).unwrap();
    /// let text = registry.encode_text();
    /// // Families without series yet are not written; HELP lines appear with the first request.
    /// assert!(!text.contains("http_requests_total{"));
    /// ```
    pub fn new(registry: &Registry) -> Result<HttpMetrics, Error> {
        let family = |metric: names::Metric| {
            Arc::new(Family {
                name: metric.name,
                help: metric.help,
                guard: registry.label_guard(metric.name),
            })
        };
        let metrics = HttpMetrics {
            exemplars: registry.exemplars().clone(),
            requests: Arc::new(StatusCounters {
                family: family(names::HTTP_REQUESTS_TOTAL),
                series: Mutex::new(HashMap::new()),
            }),
            duration: family(names::HTTP_REQUEST_DURATION_SECONDS),
            in_flight: family(names::HTTP_REQUESTS_IN_FLIGHT),
            request_size: family(names::HTTP_REQUEST_SIZE_BYTES),
            response_size: family(names::HTTP_RESPONSE_SIZE_BYTES),
            pairs: Arc::new(Pairs::default()),
            objectives: Arc::default(),
        };
        registry.register_collector(Box::new(HttpCollector::new(&metrics)?))?;
        Ok(metrics)
    }

    /// Binds `objective` to the endpoint `template` (replacing one bound before).
    pub(crate) fn set_route_objective(&self, template: &str, objective: Objective) {
        let mut objectives = self.objectives.0.write().unwrap_or_else(|p| p.into_inner());
        objectives.insert(Box::from(template), objective);
    }

    /// The cells of one (method, endpoint) pair, created at its first request.
    fn pair(&self, method: &str, endpoint: &str) -> Arc<PairCells> {
        let mut pairs = self.pairs.series.lock().unwrap_or_else(|p| p.into_inner());
        let key = (Box::<str>::from(method), Box::<str>::from(endpoint));
        Arc::clone(pairs.entry(key).or_insert_with(|| {
            Arc::new(PairCells {
                cells: Cells::new(PAIR_CELLS),
            })
        }))
    }
}

/// The routes' objectives, by endpoint template.
#[derive(Default)]
struct RouteObjectives(RwLock<HashMap<Box<str>, Objective>>);

/// One family's name, help and cardinality guard.
pub(crate) struct Family {
    name: &'static str,
    help: &'static str,
    guard: Arc<LabelGuard>,
}

impl Family {
    /// How many distinct label sets this family holds (not counting the overflow series).
    pub(crate) fn label_sets(&self) -> usize {
        self.guard.len()
    }
}

/// The `http_requests_total` series, one cell each, by (method, endpoint, status).
pub(crate) struct StatusCounters {
    pub(crate) family: Arc<Family>,
    series: Mutex<HashMap<[Box<str>; 3], Arc<Cells>>>,
}

impl StatusCounters {
    /// How many distinct label sets the family holds (not counting the overflow series).
    pub(crate) fn label_sets(&self) -> usize {
        self.family.label_sets()
    }

    /// The cell of `(method, endpoint, status)`, or of the overflow series past the limit.
    fn series(&self, method: &str, endpoint: &str, status: &str) -> Arc<Cells> {
        let values = [method, endpoint, status];
        let values = if self.family.guard.admit(&values) {
            values
        } else {
            [OVERFLOW_LABEL_VALUE; 3]
        };
        let key = values.map(Box::<str>::from);
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(series.entry(key).or_insert_with(|| Arc::new(Cells::new(1))))
    }
}

/// The label values of a pair: (method, endpoint).
type PairKey = (Box<str>, Box<str>);

/// The (method, endpoint) pairs' cells.
#[derive(Default)]
struct Pairs {
    series: Mutex<HashMap<PairKey, Arc<PairCells>>>,
}

const LATENCY_BUCKETS: usize = buckets::HTTP_LATENCY_SECONDS.len();
const SIZE_BUCKETS: usize = buckets::HTTP_SIZE_BYTES.len();

/// Where each series of a pair lives in its range. A histogram is its non-cumulative buckets
/// (the last one above every bound) followed by its sum.
const DURATION_AT: usize = 0;
const STARTED_AT: usize = DURATION_AT + LATENCY_BUCKETS + 2;
const ENDED_AT: usize = STARTED_AT + 1;
const REQUEST_SIZE_AT: usize = ENDED_AT + 1;
const RESPONSE_SIZE_AT: usize = REQUEST_SIZE_AT + SIZE_BUCKETS + 2;
const PAIR_CELLS: usize = RESPONSE_SIZE_AT + SIZE_BUCKETS + 2;

/// Durations are recorded in clock ticks (scaled to seconds when scraped), sizes in bytes:
/// integers, so that cells add exactly and a request compares integers, not floats.
static LATENCY_BOUNDS: TickBounds<LATENCY_BUCKETS> =
    TickBounds::new(buckets::scaled(buckets::HTTP_LATENCY_SECONDS, 1e9));
static SIZE_BOUNDS_BYTES: [u64; SIZE_BUCKETS] = buckets::scaled(buckets::HTTP_SIZE_BYTES, 1.0);

/// The cells of one (method, endpoint) pair.
struct PairCells {
    cells: Cells,
}

/// One histogram of a pair: `observe` adds to its bucket and its sum.
#[derive(Clone)]
pub(crate) struct CellHistogram {
    pair: Arc<PairCells>,
    at: usize,
    /// Inclusive upper bounds, in the unit observed (clock ticks, bytes).
    bounds: &'static [u64],
}

impl CellHistogram {
    /// Records one observation, in clock ticks for a duration, bytes for a size (bounds are
    /// inclusive upper bounds, as in Prometheus).
    #[inline]
    pub(crate) fn observe(&self, value: u64) {
        self.pair.cells.add_many(&self.additions(value));
    }

    /// The two additions observing `value` makes, as offsets in the pair's range: one to its
    /// bucket, `value` to the sum.
    #[inline]
    fn additions(&self, value: u64) -> [(usize, u64); 2] {
        let bucket = self.bounds.partition_point(|bound| *bound < value);
        [(self.at + bucket, 1), (self.at + self.bounds.len() + 1, value)]
    }
}

/// Status codes common enough to be worth a cached counter handle per (route, method); any
/// other code is looked up per request, which is correct, only slower.
const CACHED_STATUSES: [u16; 20] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 409, 422, 429, 499, 500, 502, 503, 504,
];

/// The series of one (route, method) pair, resolved once (guard check and the pair lookup
/// happen on first use only).
pub(crate) struct Handles {
    /// The pair's cells, where all the series below live: the in-flight gauge is two of them
    /// (started and ended, both monotonic), written by [`record_start`](Self::record_start)
    /// and [`record_end`](Self::record_end).
    pair: Arc<PairCells>,
    duration: CellHistogram,
    pub(crate) request_size: CellHistogram,
    response_size: CellHistogram,
    /// Exemplar cells of this pair's duration series, written only by sampled requests.
    pub(crate) duration_exemplars: Arc<HistogramExemplars>,
    statuses: [OnceLock<Arc<Cells>>; CACHED_STATUSES.len()],
    /// The server span's names when this pair's route matched (the unmatched row's are unused).
    pub(crate) route_names: RouteNames,
}

impl Handles {
    pub(crate) fn resolve(
        metrics: &HttpMetrics,
        method: &str,
        endpoint: &str,
        route_names: RouteNames,
    ) -> Handles {
        let labels = [method, endpoint];
        // The four families share their labels, so their guards admit the same pairs; each is
        // asked so that each counts its own folds in `obskit_metric_label_overflow_total`.
        let admitted = [
            &metrics.duration,
            &metrics.in_flight,
            &metrics.request_size,
            &metrics.response_size,
        ]
        .map(|family| family.guard.admit(&labels));
        let [method, endpoint] = if admitted.iter().all(|&a| a) {
            labels
        } else {
            [OVERFLOW_LABEL_VALUE; 2]
        };
        let pair = metrics.pair(method, endpoint);
        let histogram = |at, bounds| CellHistogram {
            pair: Arc::clone(&pair),
            at,
            bounds,
        };
        Handles {
            pair: Arc::clone(&pair),
            duration: histogram(DURATION_AT, LATENCY_BOUNDS.ticks()),
            request_size: histogram(REQUEST_SIZE_AT, &SIZE_BOUNDS_BYTES),
            response_size: histogram(RESPONSE_SIZE_AT, &SIZE_BOUNDS_BYTES),
            duration_exemplars: metrics.exemplars.histogram(
                names::HTTP_REQUEST_DURATION_SECONDS.name,
                &[(label::METHOD, method), (label::ENDPOINT, endpoint)],
                buckets::HTTP_LATENCY_SECONDS,
            ),
            statuses: Default::default(),
            route_names,
        }
    }

    /// A request's start: it enters the in-flight count, and a body known to be empty has its
    /// size, 0, recorded at once. The pair's series share one range of cells, so one
    /// thread-local access and one page lookup serve both additions.
    #[inline]
    pub(crate) fn record_start(&self, empty_body: bool) {
        let cells = &self.pair.cells;
        if empty_body {
            let [bucket, sum] = self.request_size.additions(0);
            cells.add_many(&[(STARTED_AT, 1), bucket, sum]);
        } else {
            cells.add(STARTED_AT, 1);
        }
    }

    /// A request's end: its duration and response size, and its leaving the in-flight count,
    /// in one go (see [`record_start`](Self::record_start)).
    #[inline]
    pub(crate) fn record_end(&self, ticks: u64, response_bytes: u64) {
        let [duration_bucket, duration_sum] = self.duration.additions(ticks);
        let [size_bucket, size_sum] = self.response_size.additions(response_bytes);
        self.pair.cells.add_many(&[
            duration_bucket,
            duration_sum,
            (ENDED_AT, 1),
            size_bucket,
            size_sum,
        ]);
    }

    /// Counts one request in the `http_requests_total` series for this pair and `status`.
    pub(crate) fn count_request(
        &self,
        metrics: &HttpMetrics,
        method: &str,
        endpoint: &str,
        status: http::StatusCode,
    ) {
        let lookup = || metrics.requests.series(method, endpoint, status.as_str());
        match CACHED_STATUSES.iter().position(|&s| s == status.as_u16()) {
            Some(i) => self.statuses[i].get_or_init(lookup).add(0, 1),
            None => lookup().add(0, 1),
        }
    }
}

/// One lazily resolved [`Handles`] per (route, method) pair, indexed by
/// `route * METHOD_COUNT + method` where the unmatched route is the last one.
///
/// Lazy so that only pairs that saw traffic become series: an eager table would publish
/// `(routes + 1) * 10` zero series per family and spend the cardinality guard's budget on them.
/// Boxed so an unused slot costs one pointer and a once-flag.
pub(crate) struct HandleTable {
    slots: Box<[OnceLock<Box<Handles>>]>,
}

impl HandleTable {
    pub(crate) fn new(len: usize) -> HandleTable {
        HandleTable {
            slots: (0..len).map(|_| OnceLock::new()).collect(),
        }
    }

    pub(crate) fn get(&self, slot: usize, init: impl FnOnce() -> Handles) -> &Handles {
        self.slots[slot].get_or_init(|| Box::new(init()))
    }
}

/// Renders the five families from the cells when the registry is gathered.
struct HttpCollector {
    requests: Arc<StatusCounters>,
    pair_families: [Arc<Family>; 4],
    pairs: Arc<Pairs>,
    objectives: Arc<RouteObjectives>,
    descs: Vec<Desc>,
}

impl HttpCollector {
    fn new(metrics: &HttpMetrics) -> Result<HttpCollector, Error> {
        let pair_families = [
            Arc::clone(&metrics.duration),
            Arc::clone(&metrics.in_flight),
            Arc::clone(&metrics.request_size),
            Arc::clone(&metrics.response_size),
        ];
        let desc = |family: &Family, labels: &[&str]| {
            Desc::new(
                family.name.to_string(),
                family.help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
        };
        let mut descs = vec![desc(&metrics.requests.family, names::HTTP_REQUESTS_TOTAL.labels)?];
        for family in &pair_families {
            descs.push(desc(family, &[label::METHOD, label::ENDPOINT])?);
        }
        Ok(HttpCollector {
            requests: Arc::clone(&metrics.requests),
            pair_families,
            pairs: Arc::clone(&metrics.pairs),
            objectives: Arc::clone(&metrics.objectives),
            descs,
        })
    }
}

/// Label pairs in name order, as the text format writes them.
fn label_pairs(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect()
}

/// `sum_of` turns the sum cell into the sum in the family's unit.
fn histogram_metric(
    labels: Vec<proto::LabelPair>,
    bounds: &[f64],
    raw: &[u64],
    sum_of: fn(u64) -> f64,
) -> proto::Metric {
    let histogram = crate::metrics::exposition::histogram(bounds, raw, sum_of(raw[bounds.len() + 1]));
    let mut metric = proto::Metric::default();
    metric.set_label(labels);
    metric.set_histogram(histogram);
    metric
}

fn family(source: &Family, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(source.name.to_string());
    family.set_help(source.help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

impl Collector for HttpCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        // Copy the handles out so that the maps' locks (taken by first requests) are not held
        // while the cells are summed.
        let statuses: Vec<([Box<str>; 3], Arc<Cells>)> = {
            let series = self.requests.series.lock().unwrap_or_else(|p| p.into_inner());
            series.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
        };
        let pairs: Vec<(PairKey, Arc<PairCells>)> = {
            let series = self.pairs.series.lock().unwrap_or_else(|p| p.into_inner());
            series.iter().map(|(k, v)| (k.clone(), Arc::clone(v))).collect()
        };
        let objectives = self
            .objectives
            .0
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let objective = |endpoint: &str| objectives.get(endpoint).copied();
        let mut requests = Vec::with_capacity(statuses.len());
        let mut durations = Vec::with_capacity(pairs.len());
        let mut in_flight = Vec::with_capacity(pairs.len());
        let mut request_sizes = Vec::with_capacity(pairs.len());
        let mut response_sizes = Vec::with_capacity(pairs.len());
        let reader = cells::reader();
        let mut one = [0u64; 1];
        for ([method, endpoint, status], cells) in &statuses {
            reader.sum(cells, &mut one);
            let mut counter = proto::Counter::default();
            counter.set_value(one[0] as f64);
            let mut metric = proto::Metric::default();
            let mut pairs = vec![(label::ENDPOINT, &**endpoint), (label::METHOD, &**method)];
            pairs.extend(
                objective(endpoint)
                    .as_ref()
                    .and_then(Objective::calls_labels)
                    .into_iter()
                    .flatten(),
            );
            pairs.push((label::STATUS, status));
            metric.set_label(label_pairs(&pairs));
            metric.set_counter(counter);
            requests.push(metric);
        }
        let mut raw = [0u64; PAIR_CELLS];
        for ((method, endpoint), pair) in &pairs {
            reader.sum(&pair.cells, &mut raw);
            let labels = || label_pairs(&[(label::ENDPOINT, endpoint), (label::METHOD, method)]);
            let latency = buckets::HTTP_LATENCY_SECONDS;
            let sizes = buckets::HTTP_SIZE_BYTES;
            let seconds = |ticks| clock::ticks_as_nanos(ticks) as f64 / 1e9;
            let bytes = |bytes| bytes as f64;
            let mut duration_labels = vec![(label::ENDPOINT, &**endpoint), (label::METHOD, &**method)];
            duration_labels.extend(
                objective(endpoint)
                    .as_ref()
                    .and_then(Objective::duration_labels)
                    .into_iter()
                    .flatten(),
            );
            durations.push(histogram_metric(
                label_pairs(&duration_labels),
                latency,
                &raw[DURATION_AT..],
                seconds,
            ));
            request_sizes.push(histogram_metric(labels(), sizes, &raw[REQUEST_SIZE_AT..], bytes));
            response_sizes.push(histogram_metric(labels(), sizes, &raw[RESPONSE_SIZE_AT..], bytes));
            // Started and ended are read in one pass but may be seen out of order: never below 0.
            let mut gauge = proto::Gauge::default();
            gauge.set_value(raw[STARTED_AT].saturating_sub(raw[ENDED_AT]) as f64);
            let mut metric = proto::Metric::default();
            metric.set_label(labels());
            metric.set_gauge(gauge);
            in_flight.push(metric);
        }
        drop(reader);
        let [duration, flight, request_size, response_size] = &self.pair_families;
        vec![
            family(&self.requests.family, MetricType::COUNTER, requests),
            family(duration, MetricType::HISTOGRAM, durations),
            family(flight, MetricType::GAUGE, in_flight),
            family(request_size, MetricType::HISTOGRAM, request_sizes),
            family(response_size, MetricType::HISTOGRAM, response_sizes),
        ]
    }
}
