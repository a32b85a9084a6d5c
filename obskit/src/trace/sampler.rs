//! Head sampling: whether a new span is `sampled` (exported). The decision is made when a span
//! starts, from two process-wide atomics, so it costs one load more per recorded span.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::names::env;
use crate::settings::{EnvError, EnvSource, ProcessEnv};

/// The OpenTelemetry samplers of `OTEL_TRACES_SAMPLER`. A span that is not sampled records no
/// attributes and is not exported (it shows in `/debug/traces` only if it failed or was slow:
/// see the trace module), and its `traceparent` tells the services it calls not to sample
/// either.
///
/// ```
/// use obskit::trace::Sampler;
/// assert_eq!(Sampler::from_vars(None, None).unwrap(), Sampler::ParentBasedAlwaysOn);
/// assert_eq!(Sampler::from_vars(Some("traceidratio"), Some("0.25")).unwrap(), Sampler::TraceIdRatio(0.25));
/// assert!(Sampler::from_vars(Some("traceidratio"), Some("2")).is_err());
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub enum Sampler {
    /// Every span.
    AlwaysOn,
    /// No span.
    AlwaysOff,
    /// A fraction of traces, decided from the trace id (so every service decides alike).
    TraceIdRatio(f64),
    /// A span with a parent follows it; a root span is sampled (the default).
    #[default]
    ParentBasedAlwaysOn,
    /// A span with a parent follows it; a root span is not sampled.
    ParentBasedAlwaysOff,
    /// A span with a parent follows it; a root span by trace-id ratio.
    ParentBasedTraceIdRatio(f64),
}

/// Root spans are sampled when the low 64 bits of their trace id are below this, or always
/// when it is `u64::MAX`.
static THRESHOLD: AtomicU64 = AtomicU64::new(u64::MAX);
static PARENT_BASED: AtomicBool = AtomicBool::new(true);

impl Sampler {
    /// Parses `OTEL_TRACES_SAMPLER` and `OTEL_TRACES_SAMPLER_ARG` (the ratio, default 1.0).
    pub fn from_env() -> Result<Sampler, EnvError> {
        Self::from_env_source(&ProcessEnv)
    }

    /// Parses the two variables read through `env`.
    pub fn from_env_source(env: &impl EnvSource) -> Result<Sampler, EnvError> {
        Self::from_vars(
            env.get(env::OTEL_TRACES_SAMPLER).as_deref(),
            env.get(env::OTEL_TRACES_SAMPLER_ARG).as_deref(),
        )
    }

    /// Parses the values of the two variables.
    pub fn from_vars(sampler: Option<&str>, arg: Option<&str>) -> Result<Sampler, EnvError> {
        let ratio = || -> Result<f64, EnvError> {
            match arg {
                None => Ok(1.0),
                Some(arg) => arg
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| {
                        EnvError::new(
                            env::OTEL_TRACES_SAMPLER_ARG,
                            format!("`{arg}` is not a ratio between 0 and 1"),
                        )
                    }),
            }
        };
        Ok(match sampler {
            None | Some("parentbased_always_on") => Sampler::ParentBasedAlwaysOn,
            Some("always_on") => Sampler::AlwaysOn,
            Some("always_off") => Sampler::AlwaysOff,
            Some("traceidratio") => Sampler::TraceIdRatio(ratio()?),
            Some("parentbased_always_off") => Sampler::ParentBasedAlwaysOff,
            Some("parentbased_traceidratio") => Sampler::ParentBasedTraceIdRatio(ratio()?),
            Some(other) => {
                return Err(EnvError::new(
                    env::OTEL_TRACES_SAMPLER,
                    format!(
                        "`{other}` is not supported; use always_on, always_off, traceidratio or their parentbased_ forms"
                    ),
                ))
            }
        })
    }

    /// Makes this the process-wide sampler.
    ///
    /// ```
    /// use obskit::trace::{self, Sampler, SpanContext};
    /// let sampled_parent = SpanContext { trace_id: 42, span_id: 1, sampled: true };
    /// Sampler::ParentBasedAlwaysOff.install();
    /// assert!(!trace::sample(None, 42), "a root span is not sampled");
    /// assert!(trace::sample(Some(&sampled_parent), 42), "a child follows its parent");
    /// Sampler::AlwaysOff.install();
    /// assert!(!trace::sample(Some(&sampled_parent), 42), "not parent-based: nothing is sampled");
    /// Sampler::default().install();
    /// ```
    pub fn install(self) {
        let (threshold, parent_based) = match self {
            Sampler::AlwaysOn => (u64::MAX, false),
            Sampler::AlwaysOff => (0, false),
            Sampler::TraceIdRatio(r) => (threshold(r), false),
            Sampler::ParentBasedAlwaysOn => (u64::MAX, true),
            Sampler::ParentBasedAlwaysOff => (0, true),
            Sampler::ParentBasedTraceIdRatio(r) => (threshold(r), true),
        };
        THRESHOLD.store(threshold, Ordering::Relaxed);
        PARENT_BASED.store(parent_based, Ordering::Relaxed);
    }
}

fn threshold(ratio: f64) -> u64 {
    if ratio >= 1.0 {
        u64::MAX
    } else if ratio <= 0.0 {
        0
    } else {
        // 2^64 * ratio, below u64::MAX since ratio < 1.
        (ratio * 18_446_744_073_709_551_616.0) as u64
    }
}

/// Whether a span of trace `trace_id` with `parent` is sampled under the installed sampler.
#[inline]
pub fn sample(parent: Option<&super::SpanContext>, trace_id: u128) -> bool {
    if let Some(parent) = parent {
        if PARENT_BASED.load(Ordering::Relaxed) {
            return parent.sampled;
        }
    }
    let threshold = THRESHOLD.load(Ordering::Relaxed);
    threshold == u64::MAX || (trace_id as u64) < threshold
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parsing() {
        let parse = |s, a| Sampler::from_vars(Some(s), a);
        assert_eq!(parse("always_on", None).unwrap(), Sampler::AlwaysOn);
        assert_eq!(parse("always_off", None).unwrap(), Sampler::AlwaysOff);
        assert_eq!(parse("traceidratio", None).unwrap(), Sampler::TraceIdRatio(1.0));
        assert_eq!(
            parse("parentbased_always_off", None).unwrap(),
            Sampler::ParentBasedAlwaysOff
        );
        assert_eq!(
            parse("parentbased_traceidratio", Some("0.1")).unwrap(),
            Sampler::ParentBasedTraceIdRatio(0.1)
        );
        assert_eq!(
            parse("jaeger_remote", None).unwrap_err().name,
            "OTEL_TRACES_SAMPLER"
        );
        assert_eq!(
            parse("traceidratio", Some("-0.1")).unwrap_err().name,
            "OTEL_TRACES_SAMPLER_ARG"
        );
        assert_eq!(
            parse("traceidratio", Some("half")).unwrap_err().name,
            "OTEL_TRACES_SAMPLER_ARG"
        );
    }

    #[test]
    fn thresholds() {
        assert_eq!(threshold(1.0), u64::MAX);
        assert_eq!(threshold(0.0), 0);
        assert_eq!(threshold(0.5), 1 << 63);
        // A quarter of evenly spread ids fall below a 0.25 threshold.
        let t = threshold(0.25);
        let below = (0..1000u64)
            .filter(|i| i.wrapping_mul(0x9E37_79B9_7F4A_7C15) < t)
            .count();
        assert!((200..300).contains(&below), "{below}");
    }
}
