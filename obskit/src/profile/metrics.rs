//! The metrics about profiling. They live outside any one registry (captures and the store are
//! process-wide, like the `SIGPROF` timer) and are registered into the global registry on first
//! use, and into a service's own registry by [`register_metrics`].

use std::sync::OnceLock;

use prometheus::{IntCounterVec, IntGauge, Opts};

use crate::metrics::Registry;

pub(crate) struct ProfileMetrics {
    pub(crate) captured: IntCounterVec,
    pub(crate) skipped: IntCounterVec,
    pub(crate) store_bytes: IntGauge,
}

/// The `function` label of on-demand captures.
pub(crate) const ON_DEMAND: &str = "on_demand";

/// Skip reasons, the only values of `obskit_profiles_skipped_total{reason}`.
pub(crate) const SKIP_BUSY: &str = "busy";
pub(crate) const SKIP_ERROR: &str = "error";

pub(crate) fn metrics() -> &'static ProfileMetrics {
    static METRICS: OnceLock<ProfileMetrics> = OnceLock::new();
    METRICS.get_or_init(|| {
        use crate::names::{
            OBSKIT_PROFILES_CAPTURED_TOTAL as CAPTURED, OBSKIT_PROFILES_SKIPPED_TOTAL as SKIPPED,
            OBSKIT_PROFILE_STORE_BYTES as STORE_BYTES,
        };
        let captured = IntCounterVec::new(Opts::new(CAPTURED.name, CAPTURED.help), CAPTURED.labels)
            .expect("static metric definition is valid");
        let skipped = IntCounterVec::new(Opts::new(SKIPPED.name, SKIPPED.help), SKIPPED.labels)
            .expect("static metric definition is valid");
        let store_bytes =
            IntGauge::new(STORE_BYTES.name, STORE_BYTES.help).expect("static metric definition is valid");
        // Both reasons exist from the start, so that `rate()` sees the first skip.
        for reason in [SKIP_BUSY, SKIP_ERROR] {
            skipped.with_label_values(&[reason]);
        }
        let metrics = ProfileMetrics {
            captured,
            skipped,
            store_bytes,
        };
        let _ = register_into(Registry::global(), &metrics);
        metrics
    })
}

fn register_into(registry: &Registry, m: &ProfileMetrics) -> Result<(), crate::metrics::Error> {
    registry.register_collector(Box::new(m.captured.clone()))?;
    registry.register_collector(Box::new(m.skipped.clone()))?;
    registry.register_collector(Box::new(m.store_bytes.clone()))?;
    Ok(())
}

/// Registers the profiling metrics into `registry` too (they are always in
/// [`Registry::global`]). [`crate::Obskit`] does this for the registry it is built with.
/// Registering twice into the same registry is harmless.
///
/// ```
/// let registry = obskit::metrics::Registry::new();
/// obskit::profile::register_metrics(&registry);
/// obskit::profile::register_metrics(&registry);
/// assert!(registry.encode_text().contains("obskit_profiles_skipped_total{reason=\"busy\"}"));
/// ```
pub fn register_metrics(registry: &Registry) {
    let m = metrics();
    if !registry.is_global() {
        // A duplicate registration is the only possible error: already registered is fine.
        let _ = register_into(registry, m);
    }
}

#[cfg_attr(not(feature = "profiling"), allow(dead_code))] // only the sampler skips
pub(crate) fn count_skip(reason: &'static str) {
    metrics().skipped.with_label_values(&[reason]).inc();
}
