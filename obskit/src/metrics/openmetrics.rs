//! OpenMetrics text exposition with exemplars, over the `prometheus` crate's data model.
//!
//! `prometheus` 0.14 writes only the 0.0.4 text format and has no exemplars, and the crates that
//! have them (`prometheus-client`) bring a second data model that the registry, the cardinality
//! guard and every declared metric would have to move to. So obskit keeps `prometheus` as the
//! store and adds two small pieces: an [`ExemplarStore`] holding, per histogram series and
//! bucket, the last observation made inside a sampled trace, and an encoder writing the gathered
//! families as OpenMetrics 1.0 text with those exemplars attached to their buckets. The exemplar
//! store is only written on the sampled-span path, so a request without tracing pays nothing.
//!
//! ```
//! use obskit::metrics::{Registry, OPENMETRICS_CONTENT_TYPE};
//! let registry = Registry::new();
//! let latency = registry.histogram("job_seconds", "Job latency", &[0.1, 1.0]).unwrap();
//! latency.observe(0.05);
//! registry
//!     .exemplars()
//!     .histogram("job_seconds", &[], &[0.1, 1.0])
//!     .record(0.05, 0x4bf92f3577b34da6a3ce929d0e0e4736, Some(0x00f067aa0ba902b7));
//! let text = registry.encode_openmetrics();
//! assert!(text.contains(r#"job_seconds_bucket{le="0.1"} 1 # {trace_id="4bf92f3577b34da6a3ce929d0e0e4736",span_id="00f067aa0ba902b7"} 0.05 "#));
//! assert!(text.ends_with("# EOF\n"));
//! # let _ = OPENMETRICS_CONTENT_TYPE;
//! ```

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use prometheus::proto::{MetricFamily, MetricType};

/// `Content-Type` of OpenMetrics text 1.0.0.
pub const OPENMETRICS_CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// One exemplar: an observed value and the trace it was observed in.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Exemplar {
    value: f64,
    trace_id: u128,
    span_id: Option<u64>,
    time: SystemTime,
}

/// The exemplars of one histogram series: the last one per bucket (the `+Inf` bucket last).
#[derive(Debug)]
pub struct HistogramExemplars {
    bounds: Vec<f64>,
    cells: Vec<Mutex<Option<Exemplar>>>,
}

impl HistogramExemplars {
    /// Records `value`, observed in trace `trace_id` (in span `span_id`, when known), as its
    /// bucket's exemplar, replacing the previous one.
    pub fn record(&self, value: f64, trace_id: u128, span_id: Option<u64>) {
        // The bucket a value counts in first: the first upper bound at or above it.
        let index = self.bounds.partition_point(|bound| *bound < value);
        let exemplar = Exemplar {
            value,
            trace_id,
            span_id,
            time: SystemTime::now(),
        };
        *self.cells[index].lock().unwrap_or_else(|p| p.into_inner()) = Some(exemplar);
    }

    fn get(&self, upper_bound: f64) -> Option<Exemplar> {
        let index = if upper_bound.is_infinite() {
            self.bounds.len()
        } else {
            self.bounds.iter().position(|b| *b == upper_bound)?
        };
        *self.cells[index].lock().unwrap_or_else(|p| p.into_inner())
    }
}

type SeriesKey = (String, Vec<(String, String)>);

/// The exemplars of a registry's histograms, by family name and label set. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct ExemplarStore {
    series: Arc<Mutex<HashMap<SeriesKey, Arc<HistogramExemplars>>>>,
}

impl ExemplarStore {
    /// The exemplar cells of series `family{labels}`, whose buckets are `bounds`: resolve once
    /// and keep the handle, like a metric handle.
    pub fn histogram(
        &self,
        family: &str,
        labels: &[(&str, &str)],
        bounds: &[f64],
    ) -> Arc<HistogramExemplars> {
        let key = key(family, labels.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(series.entry(key).or_insert_with(|| {
            Arc::new(HistogramExemplars {
                bounds: bounds.to_vec(),
                cells: (0..=bounds.len()).map(|_| Mutex::new(None)).collect(),
            })
        }))
    }

    fn find(&self, family: &str, labels: &[prometheus::proto::LabelPair]) -> Option<Arc<HistogramExemplars>> {
        let key = key(
            family,
            labels
                .iter()
                .map(|l| (l.name().to_string(), l.value().to_string())),
        );
        self.series
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
            .cloned()
    }
}

fn key(family: &str, labels: impl Iterator<Item = (String, String)>) -> SeriesKey {
    let mut labels: Vec<(String, String)> = labels.collect();
    labels.sort();
    (family.to_string(), labels)
}

/// Whether an `Accept` header asks for OpenMetrics (any range naming it with a non-zero
/// quality). Prometheus sends one when it scrapes with exemplar storage enabled.
///
/// ```
/// use obskit::metrics::accepts_openmetrics;
/// assert!(accepts_openmetrics("application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"));
/// assert!(!accepts_openmetrics("text/plain;version=0.0.4;q=1,*/*;q=0.1"));
/// assert!(!accepts_openmetrics("application/openmetrics-text;q=0"));
/// ```
pub fn accepts_openmetrics(accept: &str) -> bool {
    accept.split(',').any(|range| {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or("");
        media.eq_ignore_ascii_case("application/openmetrics-text")
            && parts.all(|p| {
                p.strip_prefix("q=")
                    .is_none_or(|q| q.parse::<f64>().map(|q| q > 0.0).unwrap_or(false))
            })
    })
}

/// Writes `families` as OpenMetrics text 1.0, with the exemplars of the first of `stores` that
/// has the series, ending in `# EOF`.
pub(crate) fn encode(families: &[MetricFamily], stores: &[&ExemplarStore]) -> String {
    let mut out = String::with_capacity(8192);
    for family in families.iter().filter(|f| !f.get_metric().is_empty()) {
        let name = family.name();
        let (kind, family_name) = match family.get_field_type() {
            // OpenMetrics names the counter family without `_total` and its sample with it.
            MetricType::COUNTER => ("counter", name.strip_suffix("_total").unwrap_or(name)),
            MetricType::GAUGE => ("gauge", name),
            MetricType::HISTOGRAM => ("histogram", name),
            MetricType::SUMMARY => ("summary", name),
            MetricType::UNTYPED => ("unknown", name),
        };
        let _ = writeln!(out, "# TYPE {family_name} {kind}");
        let _ = writeln!(out, "# HELP {family_name} {}", escape(family.help()));
        for metric in family.get_metric() {
            let labels = metric.get_label();
            match family.get_field_type() {
                MetricType::COUNTER => {
                    sample(
                        &mut out,
                        &format!("{family_name}_total"),
                        labels,
                        None,
                        metric.get_counter().get_value(),
                    );
                    out.push('\n');
                }
                MetricType::GAUGE => {
                    sample(&mut out, name, labels, None, metric.get_gauge().get_value());
                    out.push('\n');
                }
                MetricType::UNTYPED => {
                    // Only custom collectors make untyped families; the accessor is deprecated
                    // for being protobuf-specific, which is what `gather` gives anyway.
                    #[allow(deprecated)]
                    let value = metric.get_untyped().get_value();
                    sample(&mut out, name, labels, None, value);
                    out.push('\n');
                }
                MetricType::SUMMARY => {
                    let summary = metric.get_summary();
                    for quantile in summary.get_quantile() {
                        let q = number(quantile.quantile());
                        sample(&mut out, name, labels, Some(("quantile", &q)), quantile.value());
                        out.push('\n');
                    }
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        labels,
                        None,
                        summary.sample_sum(),
                    );
                    out.push('\n');
                    sample(
                        &mut out,
                        &format!("{name}_count"),
                        labels,
                        None,
                        summary.sample_count() as f64,
                    );
                    out.push('\n');
                }
                MetricType::HISTOGRAM => {
                    let histogram = metric.get_histogram();
                    let exemplars = stores.iter().find_map(|store| store.find(name, labels));
                    let bucket_name = format!("{name}_bucket");
                    let write_bucket = |out: &mut String, bound: f64, count: u64| {
                        let le = number(bound);
                        sample(out, &bucket_name, labels, Some(("le", &le)), count as f64);
                        if let Some(exemplar) = exemplars.as_ref().and_then(|e| e.get(bound)) {
                            let time = exemplar.time.duration_since(UNIX_EPOCH).unwrap_or_default();
                            let _ = write!(out, " # {{trace_id=\"{:032x}\"", exemplar.trace_id);
                            if let Some(span_id) = exemplar.span_id {
                                let _ = write!(out, ",span_id=\"{span_id:016x}\"");
                            }
                            let _ = write!(
                                out,
                                "}} {} {}.{:03}",
                                number(exemplar.value),
                                time.as_secs(),
                                time.subsec_millis()
                            );
                        }
                        out.push('\n');
                    };
                    let mut has_inf = false;
                    for bucket in histogram.get_bucket() {
                        has_inf |= bucket.upper_bound().is_infinite();
                        write_bucket(&mut out, bucket.upper_bound(), bucket.cumulative_count());
                    }
                    if !has_inf {
                        write_bucket(&mut out, f64::INFINITY, histogram.get_sample_count());
                    }
                    sample(
                        &mut out,
                        &format!("{name}_sum"),
                        labels,
                        None,
                        histogram.get_sample_sum(),
                    );
                    out.push('\n');
                    sample(
                        &mut out,
                        &format!("{name}_count"),
                        labels,
                        None,
                        histogram.get_sample_count() as f64,
                    );
                    out.push('\n');
                }
            }
        }
    }
    out.push_str("# EOF\n");
    out
}

/// `name{labels,extra} value`, without the line end.
fn sample(
    out: &mut String,
    name: &str,
    labels: &[prometheus::proto::LabelPair],
    extra: Option<(&str, &str)>,
    value: f64,
) {
    out.push_str(name);
    let pairs = labels.iter().map(|l| (l.name(), l.value())).chain(extra);
    let mut first = true;
    for (key, value) in pairs {
        out.push(if first { '{' } else { ',' });
        first = false;
        let _ = write!(out, "{key}=\"{}\"", escape(value));
    }
    if !first {
        out.push('}');
    }
    out.push(' ');
    out.push_str(&number(value));
}

/// A number as OpenMetrics writes it: `+Inf`, `-Inf`, `NaN`, else the shortest exact form.
fn number(value: f64) -> String {
    if value.is_nan() {
        "NaN".to_string()
    } else if value.is_infinite() {
        if value > 0.0 { "+Inf" } else { "-Inf" }.to_string()
    } else {
        format!("{value}")
    }
}

/// Escapes a label value or help text: backslash, double quote and line feed.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Registry;

    #[test]
    fn families_in_openmetrics_form() {
        let registry = Registry::new();
        registry
            .counter("jobs_total", "Jobs \"done\"\nso far")
            .unwrap()
            .inc_by(3);
        registry.gauge("temperature_celsius", "T").unwrap().set(-1.5);
        let h = registry
            .histogram_vec("job_seconds", "Latency", &["queue"], &[0.1, 1.0])
            .unwrap();
        h.with(&["a\\b"]).observe(0.5);
        h.with(&["a\\b"]).observe(5.0);
        let exemplars = registry
            .exemplars()
            .histogram("job_seconds", &[("queue", "a\\b")], &[0.1, 1.0]);
        exemplars.record(0.5, 7, Some(9));
        exemplars.record(5.0, 8, None);
        let text = registry.encode_openmetrics();
        assert!(
            text.contains("# TYPE jobs counter\n# HELP jobs Jobs \\\"done\\\"\\nso far\njobs_total 3\n"),
            "{text}"
        );
        assert!(text.contains("# TYPE temperature_celsius gauge\n"));
        assert!(text.contains("temperature_celsius -1.5\n"));
        assert!(
            text.contains("job_seconds_bucket{queue=\"a\\\\b\",le=\"0.1\"} 0\n"),
            "{text}"
        );
        assert!(text.contains(&format!(
            "job_seconds_bucket{{queue=\"a\\\\b\",le=\"1\"}} 1 # {{trace_id=\"{:032x}\",span_id=\"{:016x}\"}} 0.5 ",
            7, 9
        )));
        assert!(
            text.contains(&format!("le=\"+Inf\"}} 2 # {{trace_id=\"{:032x}\"}} 5 ", 8)),
            "{text}"
        );
        assert!(text.contains("job_seconds_sum{queue=\"a\\\\b\"} 5.5\n"));
        assert!(text.contains("job_seconds_count{queue=\"a\\\\b\"} 2\n"));
        assert!(text.ends_with("# EOF\n"));
        assert_eq!(text.matches("# EOF").count(), 1);
    }

    #[test]
    fn exemplar_buckets() {
        let store = ExemplarStore::default();
        let e = store.histogram("h", &[], &[0.1, 1.0]);
        e.record(0.1, 1, None); // exactly on a bound: that bucket
        e.record(0.2, 2, None);
        e.record(99.0, 3, None);
        assert_eq!(e.get(0.1).unwrap().trace_id, 1);
        assert_eq!(e.get(1.0).unwrap().trace_id, 2);
        assert_eq!(e.get(f64::INFINITY).unwrap().trace_id, 3);
        assert!(e.get(0.5).is_none());
        assert!(Arc::ptr_eq(&e, &store.histogram("h", &[], &[0.1, 1.0])));
    }
}
