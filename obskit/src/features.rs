//! Which optional parts this build of obskit has (its cargo features), and the one sentence a
//! build without a part says when that part is asked for: the builder's errors, `/debug/config`
//! and the admin endpoints' `501` answers all use it.

/// The cargo features compiled into this build of obskit, as `/debug/config` lists them
/// (`obskit.features`).
///
/// ```
/// // The default build has them all but `taskdump` (which needs `--cfg tokio_unstable`).
/// # #[cfg(all(feature = "otlp", feature = "profiling", feature = "process-metrics", feature = "tracing-bridge", feature = "reqwest"))]
/// assert_eq!(obskit::FEATURES[..5], ["otlp", "profiling", "process-metrics", "tracing-bridge", "reqwest"]);
/// ```
pub const FEATURES: &[&str] = &[
    #[cfg(feature = "otlp")]
    "otlp",
    #[cfg(feature = "profiling")]
    "profiling",
    #[cfg(feature = "process-metrics")]
    "process-metrics",
    #[cfg(feature = "tracing-bridge")]
    "tracing-bridge",
    #[cfg(feature = "reqwest")]
    "reqwest",
    #[cfg(feature = "taskdump")]
    "taskdump",
    #[cfg(feature = "heap-profiling")]
    "heap-profiling",
];

/// What is said of a part this build leaves out.
pub(crate) fn not_built(feature: &str) -> String {
    format!("this build of obskit leaves out its `{feature}` cargo feature")
}
