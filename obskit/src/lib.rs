//! # obskit
//!
//! An observability kit for Rust services: Prometheus metrics with a cardinality guard, RED
//! metrics for HTTP, `#[instrumented]` functions under the autometrics names, spans, health and
//! debug endpoints, all wired by one builder.
#![warn(missing_docs)]

pub mod admin;
mod builder;
pub mod debug;
pub mod health;
pub mod http;
pub mod metrics;
pub mod profile;
pub mod secrets;
mod server;
pub mod trace;

pub use builder::{shutdown_signal, AdminListener, BuildError, Obskit, ObskitBuilder, ADMIN_ADDR_ENV};

/// Records every call of a function as autometrics 1.0 metrics (`function_calls_total`,
/// `function_calls_duration_seconds`, `function_calls_concurrent`) and a span.
///
/// Options: `name = "..."`, `skip(param, ...)`, `skip_all`, `fields(key = value, ...)`, `err`,
/// `err(Debug)`, `metrics = false`; the full reference follows.
///
/// ```
/// use std::sync::{Arc, Mutex};
/// use obskit::instrumented;
/// use obskit::trace::{self, AttrValue, FinishedSpan, SpanSink, SpanStatus};
///
/// #[derive(Debug)]
/// struct NotFound(u64);
/// impl std::fmt::Display for NotFound {
///     fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
///         write!(f, "no user {}", self.0)
///     }
/// }
///
/// /// Doc comments and other attributes stay on the function.
/// #[instrumented(err, skip(password), fields(user.id = id))]
/// fn log_in(id: u64, password: &str) -> Result<String, NotFound> {
///     if id == 0 {
///         return Err(NotFound(id)); // `return` and `?` keep their meaning
///     }
///     Ok(format!("session for {id}"))
/// }
///
/// // Metrics, in the global registry that `/metrics` serves:
/// assert!(log_in(7, "hunter2").is_ok());
/// assert!(log_in(0, "hunter2").is_err());
/// let text = obskit::metrics::Registry::global().encode_text();
/// let labels = format!(r#"function="log_in",module="{}""#, module_path!());
/// assert!(text.contains(&format!(r#"function_calls_total{{{labels},result="ok"}} 1"#)));
/// assert!(text.contains(&format!(r#"function_calls_total{{{labels},result="error"}} 1"#)));
/// assert!(text.contains(&format!(r#"function_calls_duration_seconds_count{{{labels}}} 2"#)));
///
/// // Spans, once a sink is installed:
/// #[derive(Default)]
/// struct Collect(Mutex<Vec<FinishedSpan>>);
/// impl SpanSink for Collect {
///     fn on_end(&self, span: FinishedSpan) {
///         self.0.lock().unwrap().push(span);
///     }
/// }
/// let sink = Arc::new(Collect::default());
/// trace::set_sink(sink.clone());
/// let _ = log_in(0, "hunter2");
/// trace::clear_sink();
/// let spans = sink.0.lock().unwrap();
/// assert_eq!(spans[0].name, "log_in");
/// assert_eq!(spans[0].attribute("user.id"), Some(&AttrValue::I64(0)));
/// assert_eq!(spans[0].attribute("password"), None); // skipped
/// assert_eq!(spans[0].status, SpanStatus::Error("no user 0".into()));
/// ```
pub use obskit_macros::instrumented;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
