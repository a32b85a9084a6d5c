//! Exposition of gathered metric families in the Prometheus text format.

use prometheus::proto::{self, MetricFamily};
use prometheus::{Encoder, TextEncoder};

/// `Content-Type` of the Prometheus text format 0.0.4.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// A histogram over `bounds` from the collectors' non-cumulative bucket counts: `counts[i]` for
/// `(bounds[i-1], bounds[i]]`, and `counts[bounds.len()]` for everything above the largest bound.
pub(crate) fn histogram(bounds: &[f64], counts: &[u64], sum: f64) -> proto::Histogram {
    let mut cumulative = 0;
    let mut buckets = Vec::with_capacity(bounds.len());
    for (bound, count) in bounds.iter().zip(counts) {
        cumulative += count;
        let mut bucket = proto::Bucket::default();
        bucket.set_upper_bound(*bound);
        bucket.set_cumulative_count(cumulative);
        buckets.push(bucket);
    }
    let mut histogram = proto::Histogram::default();
    histogram.set_sample_count(cumulative + counts[bounds.len()]);
    histogram.set_sample_sum(sum);
    histogram.set_bucket(buckets);
    histogram
}

/// Encodes families as Prometheus text. Families without series are skipped.
pub(crate) fn encode_text(families: &[MetricFamily]) -> String {
    let mut buffer = Vec::with_capacity(4096);
    for family in families.iter().filter(|f| !f.get_metric().is_empty()) {
        // Encoding into a Vec only fails for an empty family, which was filtered out above.
        let _ = TextEncoder::new().encode(std::slice::from_ref(family), &mut buffer);
    }
    String::from_utf8(buffer).unwrap_or_default()
}

/// Sorts families by name and folds families of the same name (one from the service's registry,
/// one from the global registry) into one, so the output never repeats a `# TYPE` line. A series
/// present in both (a process-wide metric registered in each registry, like the profiling
/// counters) is kept once: the first, the service registry's, since `sort_by` is stable.
pub(crate) fn merge_families(families: &mut Vec<MetricFamily>) {
    fn label_key(metric: &prometheus::proto::Metric) -> Vec<(String, String)> {
        metric
            .get_label()
            .iter()
            .map(|pair| (pair.name().to_string(), pair.value().to_string()))
            .collect()
    }
    families.sort_by(|a, b| a.name().cmp(b.name()));
    let mut merged: Vec<MetricFamily> = Vec::with_capacity(families.len());
    for family in families.drain(..) {
        match merged.last_mut() {
            Some(last)
                if last.name() == family.name() && last.get_field_type() == family.get_field_type() =>
            {
                let mut metrics = last.take_metric();
                let seen: std::collections::HashSet<_> = metrics.iter().map(label_key).collect();
                metrics.extend(
                    family
                        .get_metric()
                        .iter()
                        .filter(|metric| !seen.contains(&label_key(metric)))
                        .cloned(),
                );
                last.set_metric(metrics);
            }
            _ => merged.push(family),
        }
    }
    *families = merged;
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::core::Collector;

    #[test]
    fn a_series_in_both_registries_is_kept_once() {
        let shared = prometheus::IntCounterVec::new(prometheus::Opts::new("y_total", "h"), &["k"]).unwrap();
        shared.with_label_values(&["busy"]).inc();
        let mut families = shared.collect();
        families.extend(shared.collect());
        merge_families(&mut families);
        let text = encode_text(&families);
        assert_eq!(text.matches(r#"y_total{k="busy"} 1"#).count(), 1, "{text}");
    }

    #[test]
    fn merges_same_name_families() {
        let a = prometheus::IntCounterVec::new(prometheus::Opts::new("x_total", "h"), &["k"]).unwrap();
        let b = prometheus::IntCounterVec::new(prometheus::Opts::new("x_total", "h"), &["k"]).unwrap();
        a.with_label_values(&["1"]).inc();
        b.with_label_values(&["2"]).inc();
        let mut families = a.collect();
        families.extend(b.collect());
        merge_families(&mut families);
        assert_eq!(families.len(), 1);
        let text = encode_text(&families);
        assert_eq!(text.matches("# TYPE x_total counter").count(), 1, "{text}");
        assert!(text.contains(r#"x_total{k="1"} 1"#) && text.contains(r#"x_total{k="2"} 1"#));
    }
}
