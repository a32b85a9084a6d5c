//! Integration tests: `#[instrumented]`, through real calls.
//!
//! Metrics land in the process-wide registry, shared by every test of this binary: each test
//! instruments functions of its own (unique names), so its series are its own. Spans go to the
//! process-wide sink: span tests hold [`SINK_LOCK`] and keep only the spans they expect by name.

use std::fmt;
use std::future::Future;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};

use obskit::instrumented;
use obskit::metrics::Registry;
use obskit::trace::{self, AttrValue, FinishedSpan, SpanSink, SpanStatus};

const MODULE: &str = module_path!();

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// The value of the series `name{labels}` in the global registry, if present.
fn series(name: &str, labels: &str) -> Option<f64> {
    let text = Registry::global().encode_text();
    let prefix = format!("{name}{{{labels}}} ");
    text.lines()
        .find_map(|line| line.strip_prefix(&prefix))
        .map(|value| value.trim().parse().expect("a number"))
}

fn labels(function: &str, module: &str) -> String {
    format!(r#"function="{function}",module="{module}""#)
}

/// `function_calls_total{function, module, result}` (0 when the series is absent).
fn calls(function: &str, result: &str) -> f64 {
    calls_in(function, MODULE, result)
}

fn calls_in(function: &str, module: &str, result: &str) -> f64 {
    let labels = format!(r#"{},result="{result}""#, labels(function, module));
    series("function_calls_total", &labels).unwrap_or(0.0)
}

/// `function_calls_duration_seconds_count` (0 when absent).
fn duration_count(function: &str) -> f64 {
    series("function_calls_duration_seconds_count", &labels(function, MODULE)).unwrap_or(0.0)
}

fn concurrent(function: &str) -> Option<f64> {
    series("function_calls_concurrent", &labels(function, MODULE))
}

#[track_caller]
fn assert_calls(function: &str, ok: f64, error: f64) {
    assert_eq!(calls(function, "ok"), ok, "ok calls of {function}");
    assert_eq!(calls(function, "error"), error, "error calls of {function}");
    assert_eq!(duration_count(function), ok + error, "durations of {function}");
    assert_eq!(concurrent(function), Some(0.0), "in flight of {function}");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Polls `future` once with a waker that does nothing.
fn poll_once<F: Future>(future: std::pin::Pin<&mut F>) -> Poll<F::Output> {
    future.poll(&mut Context::from_waker(Waker::noop()))
}

/// Span tests run one at a time: the sink is process-wide.
use crate::common::SINK_LOCK;

#[derive(Default)]
struct Collect(Mutex<Vec<FinishedSpan>>);

impl SpanSink for Collect {
    fn on_end(&self, span: FinishedSpan) {
        self.0.lock().unwrap().push(span);
    }
}

/// Installs a collecting sink for the duration of a test; `finish` removes it and returns the
/// spans named in `names`, in the order they ended.
struct Capture {
    sink: Arc<Collect>,
    _lock: MutexGuard<'static, ()>,
}

impl Capture {
    fn start() -> Capture {
        let lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        trace::set_sink(sink.clone());
        Capture { sink, _lock: lock }
    }

    fn finish(self, names: &[&str]) -> Vec<FinishedSpan> {
        trace::clear_sink();
        let spans = self.sink.0.lock().unwrap();
        spans
            .iter()
            .filter(|s| names.contains(&&*s.name))
            .cloned()
            .collect()
    }
}

fn one<'a>(spans: &'a [FinishedSpan], name: &str) -> &'a FinishedSpan {
    let found: Vec<_> = spans.iter().filter(|s| s.name == name).collect();
    assert_eq!(found.len(), 1, "one span named {name} in {spans:#?}");
    found[0]
}

fn str_attr<'a>(span: &'a FinishedSpan, key: &str) -> Option<&'a str> {
    match span.attribute(key)? {
        AttrValue::Str(s) => Some(s),
        other => panic!("{key} is not a string: {other:?}"),
    }
}

#[derive(Debug, PartialEq)]
pub(crate) struct AppError(&'static str);

impl fmt::Display for AppError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "app error: {}", self.0)
    }
}

impl std::error::Error for AppError {}

// ---------------------------------------------------------------------------------------------
// Metrics: sync functions
// ---------------------------------------------------------------------------------------------

#[instrumented]
fn m_sync_add(a: u64, b: u64) -> u64 {
    a + b
}

#[test]
fn sync_fn_counts_ok_calls() {
    assert_eq!(m_sync_add(1, 2), 3);
    assert_eq!(m_sync_add(2, 2), 4);
    assert_eq!(m_sync_add(3, 2), 5);
    assert_calls("m_sync_add", 3.0, 0.0);
    // Like autometrics, there is no error series until the first error.
    let text = Registry::global().encode_text();
    assert!(!text.contains(r#"function="m_sync_add",module="integration::macros",result="error""#));
}

#[instrumented]
fn m_sync_parse(s: &str) -> Result<u32, std::num::ParseIntError> {
    let value: u32 = s.trim().parse()?;
    Ok(value * 2)
}

#[test]
fn sync_result_counts_errors_and_question_mark_returns_early() {
    assert_eq!(m_sync_parse("21"), Ok(42));
    assert!(m_sync_parse("x").is_err());
    assert_eq!(m_sync_parse(" 1 "), Ok(2));
    assert_calls("m_sync_parse", 2.0, 1.0);
}

#[instrumented]
fn m_sync_early(x: i32) -> Result<i32, String> {
    if x < 0 {
        return Err(format!("{x} is negative"));
    }
    if x == 0 {
        return Ok(0);
    }
    for i in 0.. {
        if i == x {
            return Ok(i * 10);
        }
    }
    unreachable!()
}

#[instrumented]
fn m_sync_early_plain(x: i32) -> i32 {
    if x > 5 {
        return 5;
    }
    x
}

#[test]
fn return_keeps_its_meaning() {
    assert_eq!(m_sync_early(-1), Err("-1 is negative".to_string()));
    assert_eq!(m_sync_early(0), Ok(0));
    assert_eq!(m_sync_early(3), Ok(30));
    assert_calls("m_sync_early", 2.0, 1.0);

    assert_eq!(m_sync_early_plain(9), 5);
    assert_eq!(m_sync_early_plain(2), 2);
    assert_calls("m_sync_early_plain", 2.0, 0.0);
}

mod alias {
    /// A crate-local `Result` alias, as with `anyhow::Result`.
    pub type Result<T> = std::result::Result<T, String>;
}

/// Not named `Result`: the macro cannot know it is one, so every return counts as ok.
type Outcome = Result<(), String>;

#[instrumented]
fn m_io_result(fail: bool) -> std::io::Result<usize> {
    if fail {
        Err(std::io::Error::other("disk on fire"))?;
    }
    Ok(1)
}

#[instrumented]
fn m_alias_result(fail: bool) -> alias::Result<u8> {
    if fail {
        Err("nope".to_string())
    } else {
        Ok(1)
    }
}

#[instrumented]
fn m_outcome(fail: bool) -> Outcome {
    if fail {
        Err("not seen as an error".into())
    } else {
        Ok(())
    }
}

#[test]
fn result_is_recognised_by_its_last_path_segment() {
    assert!(m_io_result(true).is_err());
    assert!(m_io_result(false).is_ok());
    assert_calls("m_io_result", 1.0, 1.0);

    assert!(m_alias_result(true).is_err());
    assert_calls("m_alias_result", 0.0, 1.0);

    assert!(m_outcome(true).is_err());
    assert!(m_outcome(false).is_ok());
    assert_calls("m_outcome", 2.0, 0.0);
}

#[instrumented]
fn m_panics(panic: bool) -> u32 {
    if panic {
        panic!("boom");
    }
    1
}

#[instrumented]
fn m_panics_result(panic: bool) -> Result<u32, AppError> {
    if panic {
        panic!("boom");
    }
    Ok(1)
}

#[test]
fn panics_count_as_errors() {
    assert_eq!(m_panics(false), 1);
    assert!(catch_unwind(|| m_panics(true)).is_err());
    assert!(catch_unwind(|| m_panics(true)).is_err());
    assert_calls("m_panics", 1.0, 2.0);

    assert!(catch_unwind(|| m_panics_result(true)).is_err());
    assert_eq!(m_panics_result(false), Ok(1));
    assert_calls("m_panics_result", 1.0, 1.0);
}

#[instrumented(name = "m_renamed_fn")]
fn m_original_name() -> Result<(), AppError> {
    Err(AppError("renamed"))
}

#[instrumented(metrics = false)]
fn m_no_metrics(x: u8) -> Result<u8, AppError> {
    Ok(x)
}

#[instrumented(metrics = false)]
async fn m_no_metrics_async(x: u8) -> u8 {
    x
}

#[test]
fn name_and_metrics_false() {
    let _ = m_original_name();
    assert_calls("m_renamed_fn", 0.0, 1.0);
    assert_eq!(calls("m_original_name", "error"), 0.0);

    assert_eq!(m_no_metrics(3), Ok(3));
    assert_eq!(runtime().block_on(m_no_metrics_async(4)), 4);
    let text = Registry::global().encode_text();
    assert!(!text.contains("m_no_metrics"), "{text}");
}

mod nested {
    use obskit::instrumented;

    #[instrumented]
    pub fn m_in_module() -> i32 {
        7
    }
}

#[test]
fn module_label_is_the_module_path() {
    assert_eq!(nested::m_in_module(), 7);
    assert_eq!(calls_in("m_in_module", "integration::macros::nested", "ok"), 1.0);
}

// ---------------------------------------------------------------------------------------------
// Metrics: async functions
// ---------------------------------------------------------------------------------------------

#[instrumented]
async fn m_async(x: i32) -> Result<i32, AppError> {
    tokio::task::yield_now().await;
    if x < 0 {
        return Err(AppError("negative"));
    }
    let doubled = checked_double(x)?;
    Ok(doubled)
}

fn checked_double(x: i32) -> Result<i32, AppError> {
    x.checked_mul(2).ok_or(AppError("overflow"))
}

#[instrumented]
async fn m_async_unit(log: &Mutex<Vec<u8>>) {
    tokio::task::yield_now().await;
    log.lock().unwrap().push(1);
}

#[test]
fn async_fn_counts_calls() {
    let rt = runtime();
    assert_eq!(rt.block_on(m_async(2)), Ok(4));
    assert_eq!(rt.block_on(m_async(-1)), Err(AppError("negative")));
    assert_eq!(rt.block_on(m_async(i32::MAX)), Err(AppError("overflow")));
    assert_calls("m_async", 1.0, 2.0);

    let log = Mutex::new(Vec::new());
    rt.block_on(m_async_unit(&log));
    assert_eq!(*log.lock().unwrap(), [1]);
    assert_calls("m_async_unit", 1.0, 0.0);
}

#[instrumented]
async fn m_async_pending(rx: tokio::sync::oneshot::Receiver<u32>) -> u32 {
    rx.await.unwrap_or(0)
}

#[test]
fn async_timer_starts_on_first_poll_and_a_dropped_future_leaves_no_call() {
    let (_tx, rx) = tokio::sync::oneshot::channel();
    let future = m_async_pending(rx);
    // Created, not polled: nothing started (the site is not even registered yet).
    assert_eq!(concurrent("m_async_pending"), None);
    let mut future = Box::pin(future);
    assert!(poll_once(future.as_mut()).is_pending());
    assert_eq!(concurrent("m_async_pending"), Some(1.0));
    drop(future);
    assert_eq!(concurrent("m_async_pending"), Some(0.0));
    assert_eq!(duration_count("m_async_pending"), 0.0);
    assert_eq!(
        calls("m_async_pending", "ok") + calls("m_async_pending", "error"),
        0.0
    );

    // The same function completing records one call.
    let (tx, rx) = tokio::sync::oneshot::channel();
    tx.send(5).unwrap();
    assert_eq!(runtime().block_on(m_async_pending(rx)), 5);
    assert_calls("m_async_pending", 1.0, 0.0);
}

#[instrumented]
async fn m_async_panics(panic: bool) -> u32 {
    tokio::task::yield_now().await;
    if panic {
        panic!("async boom");
    }
    1
}

#[test]
fn async_panic_counts_as_error() {
    let rt = runtime();
    // Caught around the poll, the way a task harness does it.
    let mut future = pin!(m_async_panics(true));
    assert!(poll_once(future.as_mut()).is_pending());
    let polled = catch_unwind(AssertUnwindSafe(|| poll_once(future.as_mut())));
    assert!(polled.is_err());
    // A spawned task that panics.
    let joined = rt.block_on(async { tokio::spawn(m_async_panics(true)).await });
    assert!(joined.unwrap_err().is_panic());
    assert_eq!(rt.block_on(m_async_panics(false)), 1);
    assert_calls("m_async_panics", 1.0, 2.0);
}

// ---------------------------------------------------------------------------------------------
// Waiting or computing: an async call's busy time beside its wall time
// ---------------------------------------------------------------------------------------------

#[instrumented]
async fn m_waits() {
    tokio::time::sleep(std::time::Duration::from_millis(150)).await;
}

#[instrumented]
async fn m_computes() -> u64 {
    tokio::task::yield_now().await;
    let started = std::time::Instant::now();
    let mut x = 1u64;
    while started.elapsed() < std::time::Duration::from_millis(150) {
        x = std::hint::black_box(
            x.wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407),
        );
    }
    x
}

#[instrumented(metrics = false)]
async fn m_waits_span_only() {
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
}

fn int_attr(span: &FinishedSpan, key: &str) -> i64 {
    match span.attribute(key) {
        Some(AttrValue::I64(n)) => *n,
        other => panic!("{key} of {}: {other:?}", span.name),
    }
}

#[test]
fn async_calls_record_their_busy_time_beside_their_wall_time() {
    let capture = Capture::start();
    let rt = runtime();
    rt.block_on(m_waits());
    rt.block_on(m_computes());
    rt.block_on(m_waits_span_only());
    let spans = capture.finish(&["m_waits", "m_computes", "m_waits_span_only"]);

    let sum = |family: &str, function: &str| {
        series(&format!("{family}_sum"), &labels(function, MODULE))
            .unwrap_or_else(|| panic!("{family} of {function}"))
    };
    // The calls take 150 ms by tokio's and std's clock; obskit reads its own calibrated clock
    // (quanta), which can run a fraction of a percent apart from them, so the floor is 140 ms.
    let (wall, busy) = (
        sum("function_calls_duration_seconds", "m_waits"),
        sum("function_calls_busy_duration_seconds", "m_waits"),
    );
    assert!(
        wall >= 0.14 && busy < wall / 10.0,
        "a sleeping call waits: wall {wall}, busy {busy}"
    );
    let (wall, busy) = (
        sum("function_calls_duration_seconds", "m_computes"),
        sum("function_calls_busy_duration_seconds", "m_computes"),
    );
    assert!(
        wall >= 0.14 && busy > wall * 0.9 && busy <= wall,
        "a computing call is busy: wall {wall}, busy {busy}"
    );
    assert_eq!(
        series(
            "function_calls_busy_duration_seconds_count",
            &labels("m_computes", MODULE)
        ),
        Some(1.0)
    );
    // Sync functions have no busy series.
    let text = Registry::global().encode_text();
    assert!(!text.contains(r#"function_calls_busy_duration_seconds_count{function="m_in_module""#));

    for (name, computes) in [
        ("m_waits", false),
        ("m_computes", true),
        ("m_waits_span_only", false),
    ] {
        let span = one(&spans, name);
        let (busy, idle) = (int_attr(span, "time.busy_ns"), int_attr(span, "time.idle_ns"));
        let wall = span.duration.as_nanos() as i64;
        assert!(
            int_attr(span, "time.polls") >= 2,
            "{name} was polled more than once"
        );
        // Busy and idle add up to the span's wall time (read a few clock reads apart).
        assert!(
            (busy + idle - wall).abs() < 5_000_000,
            "{name}: {busy} + {idle} vs {wall}"
        );
        if computes {
            assert!(busy > idle * 9, "{name} computed: busy {busy}, idle {idle}");
        } else {
            assert!(idle > busy * 9, "{name} waited: busy {busy}, idle {idle}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Shapes: methods, generics, lifetimes, traits
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Default)]
struct Store {
    items: Vec<u32>,
    name: String,
}

impl Store {
    /// An associated function returning `Self`.
    #[instrumented]
    fn m_new(name: &str) -> Result<Self, AppError> {
        if name.is_empty() {
            return Err(AppError("empty name"));
        }
        Ok(Store {
            items: Vec::new(),
            name: name.to_string(),
        })
    }

    #[instrumented]
    fn m_len(&self) -> usize {
        self.items.len()
    }

    #[instrumented]
    fn m_push(&mut self, item: u32) {
        self.items.push(item);
    }

    /// Returns a borrow of `self` through `?` and an early return.
    #[instrumented]
    fn m_first_mut(&mut self) -> Result<&mut u32, AppError> {
        if self.items.is_empty() {
            return Err(AppError("empty"));
        }
        let first = self.items.first_mut().ok_or(AppError("unreachable"))?;
        Ok(first)
    }

    #[instrumented]
    fn m_name<'a>(&'a self, suffix: &'a str) -> Result<&'a str, AppError> {
        if suffix.is_empty() {
            Ok(&self.name)
        } else {
            Ok(suffix)
        }
    }

    #[instrumented]
    fn m_into_items(self) -> Vec<u32> {
        self.items
    }

    #[instrumented]
    fn m_arc(self: Arc<Self>) -> Result<usize, AppError> {
        Ok(Arc::strong_count(&self))
    }

    #[instrumented(skip(f))]
    fn m_generic<T, F>(&self, value: T, f: F) -> Result<String, AppError>
    where
        T: fmt::Debug + Clone,
        F: Fn(T) -> String,
    {
        Ok(f(value.clone()))
    }

    #[instrumented(skip(items))]
    fn m_impl_trait(&mut self, items: impl IntoIterator<Item = u32>) -> Result<usize, AppError> {
        self.items.extend(items);
        Ok(self.items.len())
    }

    #[instrumented]
    async fn m_async_first(&mut self) -> &mut u32 {
        tokio::task::yield_now().await;
        &mut self.items[0]
    }

    #[instrumented(err)]
    async fn m_async_name(&self) -> Result<&str, AppError> {
        tokio::task::yield_now().await;
        if self.name.is_empty() {
            return Err(AppError("no name"));
        }
        Ok(&self.name)
    }
}

#[instrumented]
pub(crate) unsafe fn m_unsafe_read(ptr: *const u32) -> Result<u32, AppError> {
    if ptr.is_null() {
        return Err(AppError("null"));
    }
    Ok(*ptr)
}

#[instrumented]
fn m_returns_impl(n: u32) -> impl Iterator<Item = u32> {
    0..n
}

#[instrumented]
fn m_result_of_impl(n: u32) -> Result<impl Iterator<Item = u32>, AppError> {
    if n == 0 {
        return Err(AppError("zero"));
    }
    Ok(0..n)
}

#[instrumented]
fn m_patterns((a, b): (u32, u32), Store { items, .. }: Store, _: u8) -> usize {
    (a + b) as usize + items.len()
}

#[instrumented]
fn m_boxed_dyn(fail: bool) -> Result<u32, Box<dyn std::error::Error + Send + Sync>> {
    if fail {
        Err(AppError("dyn"))?;
    }
    let n: u32 = "12".parse()?;
    Ok(n)
}

#[test]
fn methods_generics_and_lifetimes() {
    assert!(Store::m_new("").is_err());
    let mut store = Store::m_new("shop").unwrap();
    assert_calls("m_new", 1.0, 1.0);

    assert!(store.m_first_mut().is_err());
    store.m_push(1);
    store.m_push(2);
    *store.m_first_mut().unwrap() = 10;
    assert_eq!(store.items, [10, 2]);
    assert_eq!(store.m_len(), 2);
    assert_calls("m_push", 2.0, 0.0);
    assert_calls("m_first_mut", 1.0, 1.0);
    assert_calls("m_len", 1.0, 0.0);

    assert_eq!(store.m_name(""), Ok("shop"));
    assert_eq!(store.m_name("x"), Ok("x"));
    assert_eq!(store.m_generic(5u8, |v| format!("<{v}>")), Ok("<5>".to_string()));
    assert_eq!(store.m_impl_trait([3, 4]), Ok(4));
    assert_calls("m_generic", 1.0, 0.0);

    let rt = runtime();
    rt.block_on(async {
        *store.m_async_first().await += 1;
        assert_eq!(store.m_async_name().await, Ok("shop"));
    });
    assert_eq!(store.items[0], 11);
    assert_calls("m_async_first", 1.0, 0.0);
    assert_calls("m_async_name", 1.0, 0.0);

    let arc = Arc::new(Store::default());
    assert_eq!(arc.clone().m_arc(), Ok(2));
    assert_eq!(store.m_into_items(), [11, 2, 3, 4]);

    let value = 9;
    assert_eq!(unsafe { m_unsafe_read(&value) }, Ok(9));
    assert_eq!(unsafe { m_unsafe_read(std::ptr::null()) }, Err(AppError("null")));
    assert_calls("m_unsafe_read", 1.0, 1.0);

    assert_eq!(m_returns_impl(3).sum::<u32>(), 3);
    assert_eq!(m_result_of_impl(4).unwrap().count(), 4);
    assert!(m_result_of_impl(0).is_err());
    assert_calls("m_result_of_impl", 1.0, 1.0);

    assert_eq!(m_patterns((1, 2), Store::default(), 0), 3);
    assert_eq!(m_boxed_dyn(false).unwrap(), 12);
    assert_eq!(m_boxed_dyn(true).unwrap_err().to_string(), "app error: dyn");
    assert_calls("m_boxed_dyn", 1.0, 1.0);
}

trait Repository {
    fn m_get(&self, id: u32) -> Result<u32, AppError>;

    /// A default method body can be instrumented.
    #[instrumented]
    fn m_get_twice(&self, id: u32) -> Result<u32, AppError> {
        Ok(self.m_get(id)? + self.m_get(id)?)
    }

    /// Implementations are `Send` futures: the trait says so, the instrumented impl keeps it.
    fn m_fetch(&self, id: u32) -> impl Future<Output = Result<u32, AppError>> + Send;
}

struct Memory;

impl Repository for Memory {
    #[instrumented]
    fn m_get(&self, id: u32) -> Result<u32, AppError> {
        if id == 0 {
            Err(AppError("missing"))
        } else {
            Ok(id)
        }
    }

    #[instrumented(err)]
    async fn m_fetch(&self, id: u32) -> Result<u32, AppError> {
        tokio::task::yield_now().await;
        self.m_get(id)
    }
}

#[test]
fn trait_impls_and_default_methods() {
    assert_eq!(Memory.m_get_twice(2), Ok(4));
    assert!(Memory.m_get_twice(0).is_err());
    assert_calls("m_get_twice", 1.0, 1.0);
    assert_calls("m_get", 2.0, 1.0);

    let rt = runtime();
    // `tokio::spawn` needs the instrumented future to be `Send + 'static`.
    let handle = rt.spawn(async { Memory.m_fetch(3).await });
    assert_eq!(rt.block_on(handle).unwrap(), Ok(3));
    assert_eq!(rt.block_on(Memory.m_fetch(0)), Err(AppError("missing")));
    assert_calls("m_fetch", 1.0, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Spans
// ---------------------------------------------------------------------------------------------

#[instrumented]
fn s_outer(n: u32) -> u32 {
    s_inner(n) + 1
}

#[instrumented]
fn s_inner(n: u32) -> u32 {
    n * 2
}

#[test]
fn spans_nest_like_sync_calls() {
    let capture = Capture::start();
    assert_eq!(s_outer(4), 9);
    let spans = capture.finish(&["s_outer", "s_inner"]);
    let (outer, inner) = (one(&spans, "s_outer"), one(&spans, "s_inner"));
    assert_eq!(inner.parent_span_id, Some(outer.context.span_id));
    assert_eq!(inner.context.trace_id, outer.context.trace_id);
    assert_eq!(outer.parent_span_id, None);
    assert_eq!(
        str_attr(outer, "code.function.name"),
        Some("integration::macros::s_outer")
    );
    assert_eq!(
        outer.attribute("n"),
        Some(&AttrValue::I64(4)),
        "integers stay integers"
    );
    assert_eq!(outer.status, SpanStatus::Unset);
    // The span is no longer current once the call returned.
    assert_eq!(trace::current(), None);
}

#[instrumented]
fn s_timed_plain() {
    std::thread::sleep(std::time::Duration::from_millis(2));
}

#[instrumented]
fn s_timed_result() -> Result<(), AppError> {
    std::thread::sleep(std::time::Duration::from_millis(2));
    Ok(())
}

#[instrumented(err)]
async fn s_timed_async() -> Result<(), AppError> {
    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    Err(AppError("late"))
}

/// One clock read at each end serves the call timer and the span: the function's recorded
/// duration is its span's, to the nanosecond, in each shape of the expansion.
#[test]
fn a_call_and_its_span_share_their_clock_reads() {
    let capture = Capture::start();
    s_timed_plain();
    s_timed_result().unwrap();
    runtime().block_on(s_timed_async()).unwrap_err();
    let names = ["s_timed_plain", "s_timed_result", "s_timed_async"];
    let spans = capture.finish(&names);
    for name in names {
        let span = one(&spans, name);
        let sum =
            series("function_calls_duration_seconds_sum", &labels(name, MODULE)).expect("a duration sum");
        let recorded = (sum * 1e9).round() as u128;
        assert!(span.duration.as_millis() >= 2, "{name}: {:?}", span.duration);
        assert_eq!(
            recorded,
            span.duration.as_nanos(),
            "{name}: call and span durations"
        );
    }
}

/// Counts how often it is formatted: an unsampled span must not format its arguments.
struct Formatted(&'static AtomicUsize);

impl fmt::Debug for Formatted {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fetch_add(1, Ordering::Relaxed);
        f.write_str("Formatted")
    }
}

#[instrumented]
fn s_unsampled_outer(arg: Formatted, n: u64) -> Result<u64, AppError> {
    s_unsampled_inner(n)
}

#[instrumented(err)]
fn s_unsampled_inner(n: u64) -> Result<u64, AppError> {
    if n == 0 {
        Err(AppError("zero"))
    } else {
        Ok(n)
    }
}

/// The unsampled path: the calls are counted as always, the argument is never formatted, the
/// trace context is still current for the callee (which follows the decision), and only the
/// span that failed reaches the sink, without attributes.
#[test]
fn unsampled_calls_record_metrics_but_no_span_and_format_nothing() {
    static FORMATTED: AtomicUsize = AtomicUsize::new(0);
    let capture = Capture::start();
    trace::Sampler::AlwaysOff.install();
    assert_eq!(s_unsampled_outer(Formatted(&FORMATTED), 3), Ok(3));
    assert_eq!(s_unsampled_outer(Formatted(&FORMATTED), 0), Err(AppError("zero")));
    trace::Sampler::default().install();
    let unsampled = capture.finish(&["s_unsampled_outer", "s_unsampled_inner"]);
    assert_eq!(FORMATTED.load(Ordering::Relaxed), 0, "nothing formatted");
    assert_calls("s_unsampled_outer", 1.0, 1.0);
    assert_calls("s_unsampled_inner", 1.0, 1.0);
    assert_eq!(unsampled.len(), 1, "only the failed span: {unsampled:#?}");
    let failed = &unsampled[0];
    assert_eq!(failed.name, "s_unsampled_inner");
    assert!(!failed.context.sampled);
    assert!(
        matches!(failed.status, SpanStatus::Error(_)),
        "{:?}",
        failed.status
    );
    assert!(failed.attributes.is_empty() && failed.events.is_empty());
    assert!(
        failed.parent_span_id.is_some(),
        "the unsampled outer span was its parent"
    );

    // Sampled again: the same function records its (formatted) argument.
    let capture = Capture::start();
    assert_eq!(s_unsampled_outer(Formatted(&FORMATTED), 5), Ok(5));
    let sampled = capture.finish(&["s_unsampled_outer"]);
    assert_eq!(FORMATTED.load(Ordering::Relaxed), 1);
    assert_eq!(str_attr(&sampled[0], "arg"), Some("Formatted"));
    assert_eq!(sampled[0].attribute("n"), Some(&AttrValue::I64(5)));
}

#[instrumented]
async fn s_async_outer(n: u32) -> u32 {
    tokio::task::yield_now().await;
    let a = s_async_inner(n).await;
    tokio::task::yield_now().await;
    a + s_inner(1)
}

#[instrumented]
async fn s_async_inner(n: u32) -> u32 {
    tokio::task::yield_now().await;
    assert!(trace::current().is_some());
    n * 2
}

#[test]
fn spans_nest_like_async_calls() {
    let capture = Capture::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let result = rt.block_on(async {
        let handle = tokio::spawn(s_async_outer(3));
        assert_eq!(trace::current(), None);
        handle.await.unwrap()
    });
    assert_eq!(result, 8);
    drop(rt);
    let spans = capture.finish(&["s_async_outer", "s_async_inner", "s_inner"]);
    let outer = one(&spans, "s_async_outer");
    let inner = one(&spans, "s_async_inner");
    let sync_inner = one(&spans, "s_inner");
    for child in [inner, sync_inner] {
        assert_eq!(child.parent_span_id, Some(outer.context.span_id));
        assert_eq!(child.context.trace_id, outer.context.trace_id);
    }
    assert_eq!(outer.attribute("n"), Some(&AttrValue::I64(3)));
}

#[derive(Debug)]
struct Credentials {
    user: String,
}

#[instrumented(
    skip(big),
    fields(user.id = id, "http.request.method" = "GET", user.name = %creds.user, shape = ?(1, 2))
)]
fn s_fields(id: u64, creds: &Credentials, big: &[u8], password: &str, label: Option<&str>) -> usize {
    big.len() + password.len() + label.map_or(0, str::len) + creds.user.len()
}

#[instrumented(skip_all, fields(count = items.len()))]
fn s_skip_all(items: &[u32], secret_token: &str) -> usize {
    items.len() + secret_token.len()
}

#[instrumented(fields(session = %session))]
fn s_typed_secret(otp: u32, session: &str) -> u32 {
    otp + session.len() as u32
}

#[instrumented(fields(id = id * 10))]
fn s_field_overrides_param(id: u64) -> u64 {
    id
}

#[test]
fn span_attributes_fields_skip_and_masking() {
    let capture = Capture::start();
    let creds = Credentials { user: "ada".into() };
    s_fields(42, &creds, &[0; 1024], "hunter2", Some("x"));
    s_skip_all(&[1, 2, 3], "t0ken");
    s_field_overrides_param(4);
    // Twice: the second call finds the keys' secrecy already decided.
    s_typed_secret(1234, "abc");
    s_typed_secret(5678, "def");
    let spans = capture.finish(&[
        "s_fields",
        "s_skip_all",
        "s_field_overrides_param",
        "s_typed_secret",
    ]);

    let span = one(&spans, "s_fields");
    assert_eq!(span.attribute("user.id"), Some(&AttrValue::I64(42)));
    assert_eq!(str_attr(span, "http.request.method"), Some("GET"));
    assert_eq!(str_attr(span, "user.name"), Some("ada"));
    assert_eq!(str_attr(span, "shape"), Some("(1, 2)"));
    assert_eq!(span.attribute("id"), Some(&AttrValue::I64(42)));
    assert_eq!(str_attr(span, "creds"), Some(r#"Credentials { user: "ada" }"#));
    assert_eq!(str_attr(span, "label"), Some(r#"Some("x")"#));
    assert_eq!(span.attribute("big"), None, "skipped");
    assert_eq!(str_attr(span, "password"), Some("***"), "masked");

    let span = one(&spans, "s_skip_all");
    assert_eq!(span.attribute("count"), Some(&AttrValue::I64(3)));
    assert_eq!(span.attribute("items"), None);
    assert_eq!(span.attribute("secret_token"), None);
    assert_eq!(
        str_attr(span, "code.function.name"),
        Some("integration::macros::s_skip_all")
    );

    let typed: Vec<_> = spans.iter().filter(|s| s.name == "s_typed_secret").collect();
    assert_eq!(typed.len(), 2);
    for span in typed {
        assert_eq!(
            str_attr(span, "otp"),
            Some("***"),
            "a number under a secret key is masked"
        );
        assert_eq!(str_attr(span, "session"), Some("***"), "a Display field too");
    }

    let span = one(&spans, "s_field_overrides_param");
    assert_eq!(span.attribute("id"), Some(&AttrValue::I64(40)));
    assert_eq!(span.attributes.iter().filter(|(k, _)| k == "id").count(), 1);
}

static FIELD_EVALUATIONS: AtomicUsize = AtomicUsize::new(0);

fn counted(x: u32) -> u32 {
    FIELD_EVALUATIONS.fetch_add(1, Ordering::SeqCst);
    x
}

#[instrumented(fields(counted = counted(x)))]
fn s_lazy_field(x: u32) -> u32 {
    x
}

#[test]
fn fields_are_evaluated_only_when_recording() {
    {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        trace::clear_sink();
        assert_eq!(s_lazy_field(1), 1);
        assert_eq!(FIELD_EVALUATIONS.load(Ordering::SeqCst), 0);
    }
    let capture = Capture::start();
    assert_eq!(s_lazy_field(2), 2);
    let spans = capture.finish(&["s_lazy_field"]);
    assert_eq!(FIELD_EVALUATIONS.load(Ordering::SeqCst), 1);
    assert_eq!(
        one(&spans, "s_lazy_field").attribute("counted"),
        Some(&AttrValue::I64(2))
    );
}

#[derive(Debug)]
enum DbError {
    Timeout { after_ms: u64 },
}

impl fmt::Display for DbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DbError::Timeout { after_ms } => write!(f, "timed out after {after_ms} ms"),
        }
    }
}

#[instrumented(err)]
fn s_err_display(fail: bool) -> Result<u32, DbError> {
    if fail {
        return Err(DbError::Timeout { after_ms: 30 });
    }
    Ok(1)
}

#[instrumented(err(Debug), metrics = false)]
fn s_err_debug() -> Result<(), DbError> {
    Err(DbError::Timeout { after_ms: 5 })
}

#[instrumented(err)]
async fn s_err_async(fail: bool) -> Result<u32, DbError> {
    tokio::task::yield_now().await;
    if fail {
        Err(DbError::Timeout { after_ms: 7 })?;
    }
    Ok(2)
}

#[instrumented(err(Debug), metrics = false)]
async fn s_err_async_debug() -> Result<u32, DbError> {
    Err(DbError::Timeout { after_ms: 8 })
}

#[instrumented]
fn s_result_without_err() -> Result<(), DbError> {
    Err(DbError::Timeout { after_ms: 1 })
}

#[track_caller]
fn assert_failed(span: &FinishedSpan, message: &str) {
    assert_eq!(span.status, SpanStatus::Error(message.to_string()));
    assert_eq!(span.events.len(), 1, "{span:#?}");
    let event = &span.events[0];
    assert_eq!(event.name, "exception");
    let attr = |key: &str| {
        event
            .attributes
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    };
    assert_eq!(
        attr("exception.message"),
        Some(AttrValue::from(message.to_string()))
    );
    assert!(matches!(attr("exception.type"), Some(AttrValue::Str(t)) if t.ends_with("DbError")));
}

#[test]
fn err_marks_the_span_failed() {
    let capture = Capture::start();
    let rt = runtime();
    assert!(s_err_display(true).is_err());
    assert!(s_err_display(false).is_ok());
    assert!(s_err_debug().is_err());
    assert!(rt.block_on(s_err_async(true)).is_err());
    assert!(rt.block_on(s_err_async(false)).is_ok());
    assert!(rt.block_on(s_err_async_debug()).is_err());
    assert!(s_result_without_err().is_err());
    let spans = capture.finish(&[
        "s_err_display",
        "s_err_debug",
        "s_err_async",
        "s_err_async_debug",
        "s_result_without_err",
    ]);

    let by_name = |name: &str| spans.iter().filter(|s| s.name == name).collect::<Vec<_>>();
    let display = by_name("s_err_display");
    assert_failed(display[0], "timed out after 30 ms");
    assert_eq!(display[1].status, SpanStatus::Unset);
    assert!(display[1].events.is_empty());
    assert_failed(one(&spans, "s_err_debug"), "Timeout { after_ms: 5 }");
    let async_spans = by_name("s_err_async");
    assert_failed(async_spans[0], "timed out after 7 ms");
    assert_eq!(async_spans[1].status, SpanStatus::Unset);
    assert_failed(one(&spans, "s_err_async_debug"), "Timeout { after_ms: 8 }");
    // Without `err`, an `Err` counts in the metrics but leaves the span alone.
    assert_eq!(one(&spans, "s_result_without_err").status, SpanStatus::Unset);

    assert_calls("s_err_display", 1.0, 1.0);
    assert_calls("s_err_async", 1.0, 1.0);
    assert_calls("s_result_without_err", 0.0, 1.0);
}

// ---------------------------------------------------------------------------------------------
// Compile errors and tricky shapes (trybuild)
// ---------------------------------------------------------------------------------------------

#[test]
fn ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass/*.rs");
    cases.compile_fail("tests/ui/fail/*.rs");
}

// What counts as an error: a 5xx response by default, or the function's own rule.

fn response(status: u16) -> http::Response<String> {
    http::Response::builder()
        .status(status)
        .body(String::new())
        .unwrap()
}

#[instrumented]
async fn m_async_handler(status: u16) -> Result<http::Response<String>, std::convert::Infallible> {
    Ok(response(status))
}

#[instrumented]
fn m_sync_response(status: u16) -> http::Response<String> {
    response(status)
}

#[instrumented]
fn m_status(status: u16) -> http::StatusCode {
    http::StatusCode::from_u16(status).unwrap()
}

#[test]
fn a_5xx_response_is_an_error_and_a_4xx_is_not() {
    let rt = runtime();
    for status in [200, 404, 503, 500, 201] {
        assert_eq!(rt.block_on(m_async_handler(status)).unwrap().status(), status);
        assert_eq!(m_sync_response(status).status(), status);
        assert_eq!(m_status(status).as_u16(), status);
    }
    assert_calls("m_async_handler", 3.0, 2.0);
    assert_calls("m_sync_response", 3.0, 2.0);
    assert_calls("m_status", 3.0, 2.0);
}

fn is_slow_answer(answer: &u32) -> bool {
    *answer > 100
}

fn found(result: &Result<u32, http::StatusCode>) -> bool {
    // A miss is an answer, not a failure.
    !matches!(result, Err(status) if status.is_server_error())
}

#[instrumented(error_if = is_slow_answer)]
fn m_error_if(answer: u32) -> u32 {
    answer
}

#[instrumented(ok_if = found)]
async fn m_ok_if(status: Option<u16>) -> Result<u32, http::StatusCode> {
    match status {
        None => Ok(1),
        Some(status) => Err(http::StatusCode::from_u16(status).unwrap()),
    }
}

type Checked = Result<(), String>;

// A closure too (its types without top-level commas: options are split on them).
#[instrumented(error_if = |r: &Checked| r.as_ref().is_err_and(|e| e == "fatal"))]
fn m_error_if_closure(error: Option<&str>) -> Checked {
    error.map_or(Ok(()), |e| Err(e.to_string()))
}

#[test]
fn error_if_and_ok_if_decide_the_result_label() {
    m_error_if(7);
    m_error_if(700);
    m_error_if(70);
    assert_calls("m_error_if", 2.0, 1.0);

    let rt = runtime();
    assert!(rt.block_on(m_ok_if(None)).is_ok());
    assert!(rt.block_on(m_ok_if(Some(404))).is_err());
    assert!(rt.block_on(m_ok_if(Some(503))).is_err());
    assert_calls("m_ok_if", 2.0, 1.0);

    assert!(m_error_if_closure(None).is_ok());
    assert!(m_error_if_closure(Some("retry")).is_err());
    assert!(m_error_if_closure(Some("fatal")).is_err());
    assert_calls("m_error_if_closure", 2.0, 1.0);
}
