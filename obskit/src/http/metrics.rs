//! The five RED metric families and the per-(route, method) handle cache.

use std::fmt;
use std::sync::{Arc, OnceLock};

use crate::metrics::{
    buckets, Counter, CounterVec, Error, ExemplarStore, Histogram, HistogramExemplars, HistogramVec,
    IntGauge, IntGaugeVec, Registry,
};

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
    pub(crate) requests: CounterVec,
    pub(crate) duration: HistogramVec,
    pub(crate) in_flight: IntGaugeVec,
    pub(crate) request_size: HistogramVec,
    pub(crate) response_size: HistogramVec,
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
        const LABELS: &[&str] = &["method", "endpoint"];
        Ok(HttpMetrics {
            exemplars: registry.exemplars().clone(),
            requests: registry.counter_vec(
                "http_requests_total",
                "HTTP requests handled, by method, route template and status code",
                &["method", "endpoint", "status"],
            )?,
            duration: registry.histogram_vec(
                DURATION_FAMILY,
                "Time from receiving an HTTP request to the end of its response body",
                LABELS,
                buckets::HTTP_LATENCY_SECONDS,
            )?,
            in_flight: registry.int_gauge_vec(
                "http_requests_in_flight",
                "HTTP requests received whose response body has not ended yet",
                LABELS,
            )?,
            request_size: registry.histogram_vec(
                "http_request_size_bytes",
                "HTTP request body size: bytes read when read to the end, else Content-Length, else 0",
                LABELS,
                buckets::HTTP_SIZE_BYTES,
            )?,
            response_size: registry.histogram_vec(
                "http_response_size_bytes",
                "HTTP response body bytes produced",
                LABELS,
                buckets::HTTP_SIZE_BYTES,
            )?,
        })
    }
}

/// Status codes common enough to be worth a cached counter handle per (route, method); any
/// other code is looked up per request, which is correct, only slower.
const DURATION_FAMILY: &str = "http_request_duration_seconds";

const CACHED_STATUSES: [u16; 20] = [
    200, 201, 202, 204, 301, 302, 304, 400, 401, 403, 404, 405, 409, 422, 429, 499, 500, 502, 503, 504,
];

/// The series of one (route, method) pair, resolved once (label hashing, guard check and the
/// `prometheus` map lookup happen on first use only).
pub(crate) struct Handles {
    pub(crate) duration: Histogram,
    pub(crate) in_flight: IntGauge,
    pub(crate) request_size: Histogram,
    pub(crate) response_size: Histogram,
    /// Exemplar cells of this pair's duration series, written only by sampled requests.
    pub(crate) duration_exemplars: Arc<HistogramExemplars>,
    statuses: [OnceLock<Counter>; CACHED_STATUSES.len()],
}

impl Handles {
    pub(crate) fn resolve(metrics: &HttpMetrics, method: &str, endpoint: &str) -> Handles {
        let labels = [method, endpoint];
        Handles {
            duration: metrics.duration.with(&labels),
            in_flight: metrics.in_flight.with(&labels),
            request_size: metrics.request_size.with(&labels),
            response_size: metrics.response_size.with(&labels),
            duration_exemplars: metrics.exemplars.histogram(
                DURATION_FAMILY,
                &[("method", method), ("endpoint", endpoint)],
                buckets::HTTP_LATENCY_SECONDS,
            ),
            statuses: Default::default(),
        }
    }

    /// Counts one request in the `http_requests_total` series for this pair and `status`.
    pub(crate) fn count_request(
        &self,
        metrics: &HttpMetrics,
        method: &str,
        endpoint: &str,
        status: http::StatusCode,
    ) {
        let lookup = || metrics.requests.with(&[method, endpoint, status.as_str()]);
        match CACHED_STATUSES.iter().position(|&s| s == status.as_u16()) {
            Some(i) => self.statuses[i].get_or_init(lookup).inc(),
            None => lookup().inc(),
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
