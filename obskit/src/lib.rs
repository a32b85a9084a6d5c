//! # obskit
//!
//! An observability kit for Rust services: Prometheus metrics with a cardinality guard, RED
//! metrics for HTTP, `#[instrumented]` functions under the autometrics names, spans, health and
//! debug endpoints, CPU profiles (`#[profiled]`, `/debug/pprof/profile`, `/profiles/`), all
//! wired by one builder.
#![warn(missing_docs)]

pub mod admin;
mod builder;
mod clock;
pub mod debug;
#[cfg(feature = "otlp")]
mod export;
mod features;
pub mod health;
pub mod http;
pub mod instrumentation;
#[cfg(feature = "tracing-bridge")]
pub mod log;
pub mod metrics;
pub mod names;
pub mod objectives;
pub mod profile;
pub mod secrets;
pub mod serve;
pub mod settings;
pub mod trace;

pub use builder::{shutdown_signal, AdminListener, BuildError, Obskit, ObskitBuilder, ADMIN_ADDR_ENV};
pub use features::FEATURES;

/// Records every call of a function as autometrics 1.0 metrics (`function_calls_total`,
/// `function_calls_duration_seconds`, `function_calls_concurrent`) and a span.
///
/// Options: `name = "..."`, `skip(param, ...)`, `skip_all`, `fields(key = value, ...)`, `err`,
/// `err(Debug)`, `error_if = f`, `ok_if = f`, `metrics = false`; the full reference follows. A 5xx
/// response counts as an error of its handler by default.
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

/// Captures CPU profiles of a function, by policy: at most one capture per interval, each
/// bounded in time (and optionally in calls), with only the samples taken while the function
/// runs. Each capture is stored in [`profile::ProfileStore::global`] as a flamegraph SVG and a
/// pprof protobuf, listed by `/profiles/`.
///
/// # Options
///
/// Comma-separated, in any order, each at most once, all optional:
///
/// - `name = "checkout"`: the label (default: the function's name), used in
///   `obskit_profiles_captured_total{function}`, the stored files' names and the flamegraph's
///   title;
/// - `every = "60s"`: at most one capture per interval (default `"60s"`). The first call
///   starts the first capture; the first call after the interval, the next. The capture starts
///   on a thread of its own (starting the sampler takes ~0.5 ms, and far longer the first time
///   in a process, while pprof-rs loads symbol tables), so the call that starts it is not
///   waited for, and not sampled: the calls starting once it runs are;
/// - `duration = "5s"`: how long a capture samples (default `"5s"`, at most `"60s"`, never
///   longer than `every`);
/// - `calls = 100`: mark at most this many calls per capture, and end the capture as soon as
///   they have finished, if before `duration` (default: no bound);
/// - `frequency = 99`: the sampling rate in Hz (default 99, at most 250).
///
/// Durations are written `"500ms"`, `"5s"`, `"2m"`, `"1h"`. Wrong values are compile errors.
///
/// # One profiler per process
///
/// A capture due while another runs (another function's, or `/debug/pprof/profile`) is
/// skipped, counted in `obskit_profiles_skipped_total{reason="busy"}`, and not retried before
/// the next interval. A call never waits for the profiler.
///
/// # What the samples show, and how exactly
///
/// The sampler (`SIGPROF`) interrupts whichever thread is on the CPU, in any task. A call that
/// starts during its function's capture runs its body (or, for an `async fn`, each poll of its
/// future) inside a marker frame, `obskit_profiled_frame`, which is on that thread's stack
/// exactly while the body runs, and not while the thread runs other tasks between polls. A
/// sample counts for the function when its stack holds the marker; the stack is then cut
/// there and rooted at the function's label. So, within a capture:
///
/// - work of other threads, and of other tasks on the same worker between polls, is excluded
///   exactly (a thread-local variable would not do: the signal handler only sees the stack);
/// - everything the body calls on its own thread is included, including nested `#[profiled]`
///   functions;
/// - work the body hands elsewhere (`tokio::spawn`, `spawn_blocking`, another thread) is not;
/// - calls already in progress when a capture starts are not marked, the call that started it
///   included (the marker is decided when a call starts, or at an `async fn`'s first poll);
/// - it is a statistical CPU profile: at 99 Hz a 5 s capture holds at most ~500 samples per
///   busy core; time spent waiting (I/O, locks, `.await`) takes no samples; samples landing
///   inside libc, libgcc or the vDSO are skipped by the sampler (so `memcpy`-heavy work is
///   under-counted), and a stack deeper than 128 frames from the leaf to the marker is lost.
///
/// # Cost
///
/// Outside a capture, a call costs one atomic load and a clock read (~10-20 ns). During one,
/// a dynamic call through the marker frame per call or poll, plus the sampling itself.
/// Encoding and storing happen on the capture's own thread, never in a call.
///
/// ```
/// # #[cfg(feature = "profiling")] {
/// use std::time::{Duration, Instant};
///
/// #[obskit::profiled(name = "doc_checkout", every = "1h", duration = "300ms", calls = 3)]
/// fn checkout(items: &[u64]) -> u64 {
///     let until = Instant::now() + Duration::from_millis(100);
///     let mut total = items.iter().sum::<u64>();
///     while Instant::now() < until {
///         total = std::hint::black_box(total.wrapping_mul(31).wrapping_add(7));
///     }
///     total
/// }
///
/// checkout(&[1]); // due: starts a capture, on a thread of its own
/// let deadline = Instant::now() + Duration::from_secs(10);
/// while obskit::profile::current_function() != Some("doc_checkout") && Instant::now() < deadline {
///     std::thread::sleep(Duration::from_millis(1));
/// }
/// for _ in 0..3 {
///     checkout(&[1, 2, 3]); // marked: their samples are the profile
/// }
/// // The capture ended when its third marked call returned; its thread encodes and stores it.
/// let store = obskit::profile::ProfileStore::global();
/// let deadline = Instant::now() + Duration::from_secs(10);
/// while store.list().len() < 2 && Instant::now() < deadline {
///     std::thread::sleep(Duration::from_millis(20));
/// }
/// let stored = store.list();
/// assert_eq!(stored.len(), 2); // a flamegraph and a pprof protobuf
/// assert!(stored.iter().all(|p| p.function == "doc_checkout"));
/// # }
/// ```
///
/// `async fn`s work the same way:
///
/// ```
/// #[obskit::profiled(every = "10m", duration = "2s")]
/// async fn load(id: u64) -> Result<String, std::io::Error> {
///     Ok(format!("item {id}"))
/// }
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// assert_eq!(load(7).await.unwrap(), "item 7");
/// # });
/// ```
pub use obskit_macros::profiled;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
