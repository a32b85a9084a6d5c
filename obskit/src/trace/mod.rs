//! Spans: a small span API that costs one atomic load when nothing consumes spans.
//!
//! A span has a name, a trace id and span id, a parent (the span current on this thread when it
//! was built, or an explicit remote parent), attributes, events and a status. When it ends it is
//! handed to the installed [`SpanSink`]; with no sink installed, [`span`] returns a disabled
//! span and nothing is allocated, timed or formatted.
//!
//! The module: [`span`] and its types in `span.rs`, the sink plumbing in `sink.rs`, sampling,
//! limits, propagation, the `/debug/traces` buffer and the OTLP exporter in their own modules.
//!
//! Sampling is decided when a span is built ([`span`]: the parent's decision, or the
//! [`Sampler`]'s for a root span; again on [`SpanBuilder::parent`]). A sampled span records
//! everything and always reaches the sink. An unsampled span keeps a trace id and span id, so
//! that it is current for its children and propagation tells callees `sampled=0`, and is timed,
//! but its attribute and event methods do nothing: it allocates nothing and formats nothing.
//! It reaches the sink (and so `/debug/traces`; never an exporter) only when it ends in error
//! or lasts at least [`unsampled_slow_threshold`] (default [`DEFAULT_UNSAMPLED_SLOW`]), with its
//! name, ids, kind, times and status and no attributes: the failures and slow work that the
//! sampler left out, decided with one clock read. A fast ok unsampled span leaves no trace.
//!
//! Times: a span reads obskit's one clock (`quanta`'s raw counter) when it starts and ends; its
//! wall-clock start and end are derived from one process-wide anchor (system clock and counter
//! read together once), so a child always lies within its parent on the exported timeline.
//!
//! `#[instrumented]` opens one span per call (entered for the duration of a sync call, or for
//! each poll of an async one), so spans nest the way the calls do.
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use obskit::trace::{self, FinishedSpan, SpanSink};
//!
//! #[derive(Default)]
//! struct Collect(Mutex<Vec<FinishedSpan>>);
//! impl SpanSink for Collect {
//!     fn on_end(&self, span: FinishedSpan) {
//!         self.0.lock().unwrap().push(span);
//!     }
//! }
//!
//! let sink = Arc::new(Collect::default());
//! trace::set_sink(sink.clone());
//! {
//!     let outer = trace::span("get_products").attr("products.category", "books").start();
//!     let _entered = outer.enter();
//!     let _query = trace::span("cassandra_query")
//!         .attr("db.system.name", "cassandra")
//!         .attr("db.collection.name", "products")
//!         .start();
//! }
//! trace::clear_sink();
//! let spans = sink.0.lock().unwrap();
//! assert_eq!(spans[0].name, "cassandra_query");
//! assert_eq!(spans[0].parent_span_id, Some(spans[1].context.span_id));
//! assert_eq!(spans[0].context.trace_id, spans[1].context.trace_id);
//! ```

use std::borrow::Cow;
use std::cell::Cell;
use std::fmt;
use std::time::{Duration, SystemTime};

use crate::secrets::KeyClass;

pub mod attributes;
#[cfg(feature = "reqwest")]
mod client;
mod handoff;
// Log records that became span events wait here for their span: only the `tracing` bridge adds.
#[cfg(feature = "tracing-bridge")]
pub(crate) mod late_events;
mod limits;
pub mod otlp;
pub mod poll;
pub mod propagation;
mod recent;
mod sampler;
mod sink;
mod span;

pub use attributes::{Attributes, INLINE_ATTRIBUTES};
#[cfg(feature = "reqwest")]
pub use client::TracedRequest;
pub use handoff::{flush, DRAIN_INTERVAL, RING_CAPACITY};
pub use limits::{request_value_length, SpanLimits};
#[cfg(feature = "otlp")]
pub use otlp::OtlpSink;
pub use otlp::{ExportCounters, OtlpConfig, OtlpError, OtlpProtocol, OtlpSignal};
pub use sampler::{sample, Sampler};
pub use sink::{
    clear_sink, is_enabled, set_default_sink, set_sink, set_unsampled_slow_threshold,
    unsampled_slow_threshold, FanOut, SpanSink, DEFAULT_UNSAMPLED_SLOW,
};
#[doc(hidden)]
pub use span::start_span_in;
pub use span::{span, Entered, InstrumentExt, Instrumented, Span, SpanBuilder};

#[cfg(feature = "tracing-bridge")]
pub(crate) use recent::rfc3339;
pub use recent::{
    RecentSpans, StatusFilter, TraceQuery, DEFAULT_CAPACITY, DEFAULT_MAX_BYTES, REPORT_VALUE_LENGTH,
    SLOW_MINUTES_KEPT, SLOW_PER_MINUTE,
};

/// The value of a span attribute.
#[derive(Clone, Debug, PartialEq)]
pub enum AttrValue {
    /// A string.
    Str(Cow<'static, str>),
    /// A signed integer.
    I64(i64),
    /// A float.
    F64(f64),
    /// A boolean.
    Bool(bool),
}

impl fmt::Display for AttrValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AttrValue::Str(s) => f.write_str(s),
            AttrValue::I64(v) => write!(f, "{v}"),
            AttrValue::F64(v) => write!(f, "{v}"),
            AttrValue::Bool(v) => write!(f, "{v}"),
        }
    }
}

impl From<&'static str> for AttrValue {
    fn from(v: &'static str) -> Self {
        AttrValue::Str(Cow::Borrowed(v))
    }
}
impl From<String> for AttrValue {
    fn from(v: String) -> Self {
        AttrValue::Str(Cow::Owned(v))
    }
}
impl From<Cow<'static, str>> for AttrValue {
    fn from(v: Cow<'static, str>) -> Self {
        AttrValue::Str(v)
    }
}
impl From<bool> for AttrValue {
    fn from(v: bool) -> Self {
        AttrValue::Bool(v)
    }
}
impl From<f64> for AttrValue {
    fn from(v: f64) -> Self {
        AttrValue::F64(v)
    }
}
impl From<f32> for AttrValue {
    fn from(v: f32) -> Self {
        AttrValue::F64(f64::from(v))
    }
}
macro_rules! int_attr {
    ($($t:ty),*) => {$(
        impl From<$t> for AttrValue {
            fn from(v: $t) -> Self {
                AttrValue::I64(i64::try_from(v).unwrap_or(i64::MAX))
            }
        }
    )*};
}
int_attr!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize);

/// Identifies a span within a trace (W3C trace-context sizes: 128-bit trace, 64-bit span).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct SpanContext {
    /// The trace this span belongs to; never zero.
    pub trace_id: u128,
    /// This span; never zero.
    pub span_id: u64,
    /// Whether the trace is being recorded.
    pub sampled: bool,
}

/// What role a span plays, as in OpenTelemetry.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum SpanKind {
    /// Work inside the process.
    #[default]
    Internal,
    /// Handling an incoming request.
    Server,
    /// Making an outgoing request (HTTP, database).
    Client,
}

/// How a span ended.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub enum SpanStatus {
    /// Nothing was said.
    #[default]
    Unset,
    /// Explicitly successful.
    Ok,
    /// Failed, with a description.
    Error(String),
}

/// Something that happened during a span (an exception, a retry).
#[derive(Clone, Debug, PartialEq)]
pub struct SpanEvent {
    /// Event name, e.g. `exception`.
    pub name: Cow<'static, str>,
    /// When it happened.
    pub time: SystemTime,
    /// Its attributes, e.g. `exception.message`.
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
    /// Attributes left out by the event attribute count limit ([`SpanLimits`]).
    pub dropped_attributes_count: u32,
}

/// A link from a span to another span (a batch job to the requests it serves, a retry to the
/// first attempt), as in OpenTelemetry.
#[derive(Clone, Debug, PartialEq)]
pub struct SpanLink {
    /// The span linked to.
    pub context: SpanContext,
    /// Attributes of the link.
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
}

/// A span that has ended, as handed to the [`SpanSink`].
#[derive(Clone, Debug)]
pub struct FinishedSpan {
    /// Span name.
    pub name: Cow<'static, str>,
    /// Its identity.
    pub context: SpanContext,
    /// The parent span, if any.
    pub parent_span_id: Option<u64>,
    /// Its kind.
    pub kind: SpanKind,
    /// Wall-clock start.
    pub start: SystemTime,
    /// Wall-clock end. Start and end are read from the system clock, as OpenTelemetry does, so
    /// that a child span always lies within its parent on the exported timeline.
    pub end: SystemTime,
    /// How long it lasted, measured on a monotonic clock (immune to wall-clock steps).
    pub duration: Duration,
    /// Attributes, in the order they were set; the first few inline.
    pub attributes: Attributes,
    /// Events, in order.
    pub events: Vec<SpanEvent>,
    /// Links to other spans.
    pub links: Vec<SpanLink>,
    /// How it ended.
    pub status: SpanStatus,
    /// What the [`SpanLimits`] left out.
    pub dropped: DroppedCounts,
}

/// How many attributes, events and links a span's [`SpanLimits`] left out (exported as OTLP's
/// `dropped_*_count` fields, shown in `/debug/traces`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DroppedCounts {
    /// Attributes past the attribute count limit.
    pub attributes: u32,
    /// Events past the event count limit.
    pub events: u32,
    /// Links past the link count limit.
    pub links: u32,
}

impl FinishedSpan {
    /// About how many bytes the span occupies, its strings included: what the recent-span
    /// buffer and the export queue count against their byte bounds.
    ///
    /// ```
    /// # use std::sync::{Arc, Mutex};
    /// # use obskit::trace::{self, FinishedSpan, SpanSink};
    /// # #[derive(Default)] struct Keep(Mutex<Vec<FinishedSpan>>);
    /// # impl SpanSink for Keep { fn on_end(&self, s: FinishedSpan) { self.0.lock().unwrap().push(s) } }
    /// # let keep = Arc::new(Keep::default());
    /// # trace::set_sink(keep.clone());
    /// drop(trace::span("small").start());
    /// drop(trace::span("large").attr("blob", "x".repeat(1000)).start());
    /// # trace::clear_sink();
    /// # let spans = keep.0.lock().unwrap();
    /// let (small, large) = (spans[0].approximate_bytes(), spans[1].approximate_bytes());
    /// assert!(large >= small + 1000);
    /// ```
    pub fn approximate_bytes(&self) -> usize {
        fn attributes_bytes(attributes: &[(Cow<'static, str>, AttrValue)]) -> usize {
            attributes
                .iter()
                .map(|(key, value)| {
                    std::mem::size_of::<(Cow<'static, str>, AttrValue)>()
                        + key.len()
                        + match value {
                            AttrValue::Str(s) => s.len(),
                            _ => 0,
                        }
                })
                .sum()
        }
        let events: usize = self
            .events
            .iter()
            .map(|e| std::mem::size_of::<SpanEvent>() + e.name.len() + attributes_bytes(&e.attributes))
            .sum();
        let links: usize = self
            .links
            .iter()
            .map(|l| std::mem::size_of::<SpanLink>() + attributes_bytes(&l.attributes))
            .sum();
        let status = match &self.status {
            SpanStatus::Error(message) => message.len(),
            _ => 0,
        };
        std::mem::size_of::<FinishedSpan>()
            + self.name.len()
            + attributes_bytes(&self.attributes)
            + events
            + links
            + status
    }

    /// The value of an attribute, if set.
    pub fn attribute(&self, key: &str) -> Option<&AttrValue> {
        self.attributes
            .iter()
            .rev()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v)
    }
}

// A `Cow`, not a `str`: whether the key is static decides whether its class is remembered.
#[allow(clippy::ptr_arg)]
pub(crate) fn masked_attr<'a>(key: &Cow<'static, str>, value: &'a AttrValue) -> Cow<'a, AttrValue> {
    let class = key_class(key);
    match value {
        // A static value's answer is remembered; any other is masked once, below.
        AttrValue::Str(s @ Cow::Borrowed(_)) if class == KeyClass::Plain && static_value_is_clean(s) => {
            Cow::Borrowed(value)
        }
        AttrValue::Str(s) => match class.mask(s) {
            Cow::Borrowed(same) if std::ptr::eq(same, &**s) => Cow::Borrowed(value),
            masked => Cow::Owned(AttrValue::Str(Cow::Owned(masked.into_owned()))),
        },
        _ if class != KeyClass::Plain => Cow::Owned(AttrValue::Str(Cow::Borrowed(crate::secrets::MASK))),
        other => Cow::Borrowed(other),
    }
}

/// Static texts decided per thread at most this many of each kind: they are the call sites'
/// constants, a few hundred in a large service; past it (texts leaked at run time) each use
/// decides again, and memory stays bounded.
const STATIC_TEXTS_REMEMBERED: usize = 4096;

/// A static text's address and length, hashed as the two words they are: SipHash, the standard
/// maps' default, resists keys an attacker picks, and these are the program's own addresses.
type ByAddress<T> =
    std::collections::HashMap<(usize, usize), T, std::hash::BuildHasherDefault<AddressHasher>>;

/// FxHash's step on whole words.
#[derive(Default)]
struct AddressHasher(u64);

impl std::hash::Hasher for AddressHasher {
    fn write(&mut self, bytes: &[u8]) {
        for &byte in bytes {
            self.write_usize(usize::from(byte));
        }
    }

    fn write_usize(&mut self, word: usize) {
        self.0 = (self.0.rotate_left(5) ^ word as u64).wrapping_mul(0x51_7c_c1_b7_27_22_0a_95);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

/// `decide(text)`, remembered in `map` by the text's address when it is static: exporting spans
/// would otherwise classify the same few keys, and mask the same constant values, once for each
/// of their attributes, a few hundred instructions each, on a thread that must keep up with every
/// span the service ends. Decided afresh for a text that is not static.
#[allow(clippy::ptr_arg)] // Borrowed or owned is the point: only a static text is remembered.
fn remembered<T: Copy + 'static>(
    map: &'static std::thread::LocalKey<std::cell::RefCell<ByAddress<T>>>,
    text: &Cow<'static, str>,
    decide: impl Fn(&str) -> T,
) -> T {
    let Cow::Borrowed(text) = text else {
        return decide(text);
    };
    let address = (text.as_ptr() as usize, text.len());
    map.try_with(|map| {
        let mut map = map.borrow_mut();
        if let Some(decided) = map.get(&address) {
            return *decided;
        }
        let decided = decide(text);
        if map.len() < STATIC_TEXTS_REMEMBERED {
            map.insert(address, decided);
        }
        decided
    })
    .unwrap_or_else(|_| decide(text))
}

/// The [`KeyClass`] of an attribute key (the macro's and the HTTP layer's keys are static).
#[allow(clippy::ptr_arg)] // Borrowed or owned is the point: only a static text is remembered.
fn key_class(key: &Cow<'static, str>) -> KeyClass {
    thread_local! {
        static CLASSES: std::cell::RefCell<ByAddress<KeyClass>> = Default::default();
    }
    remembered(&CLASSES, key, KeyClass::of)
}

/// Whether masking by shape leaves `value`, a plain key's static value, as it is: remembered,
/// for the function names, routes and methods that make up most string attributes.
#[allow(clippy::ptr_arg)] // Borrowed or owned is the point: only a static text is remembered.
fn static_value_is_clean(value: &Cow<'static, str>) -> bool {
    thread_local! {
        static CLEAN: std::cell::RefCell<ByAddress<bool>> = Default::default();
    }
    remembered(
        &CLEAN,
        value,
        |text| matches!(KeyClass::Plain.mask(text), Cow::Borrowed(same) if std::ptr::eq(same, text)),
    )
}

/// The current span's identity as the thread keeps it: three plain words, no padding and no
/// niche, so that entering and leaving a span saves and restores whole words. An
/// `Option<SpanContext>` is copied byte by byte around its padding and read back whole, a
/// store-forwarding stall on every enter and every exit (a third of an unsampled span's time).
#[derive(Clone, Copy)]
pub(crate) struct CurrentSpan {
    trace_id: u128,
    /// Zero: no span is current (span ids are never zero).
    span_id: u64,
    sampled: u64,
}

impl CurrentSpan {
    const NONE: CurrentSpan = CurrentSpan {
        trace_id: 0,
        span_id: 0,
        sampled: 0,
    };

    #[inline]
    fn of(context: &SpanContext) -> CurrentSpan {
        CurrentSpan {
            trace_id: context.trace_id,
            span_id: context.span_id,
            sampled: u64::from(context.sampled),
        }
    }

    #[inline]
    fn context(self) -> Option<SpanContext> {
        (self.span_id != 0).then_some(SpanContext {
            trace_id: self.trace_id,
            span_id: self.span_id,
            sampled: self.sampled != 0,
        })
    }
}

thread_local! {
    static CURRENT: Cell<CurrentSpan> = const { Cell::new(CurrentSpan::NONE) };
    /// Zero until this thread's first id: seeded then, so that every access is a plain load
    /// (a `const` thread-local has no lazy-initialisation check).
    static RNG: Cell<u64> = const { Cell::new(0) };
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is seeded from the OS once per process and varies per instance: a fresh
    // 64-bit seed per thread without a dependency on an RNG crate.
    RandomState::new().hash_one(std::thread::current().id()) | 1
}

/// `N` non-zero random u64s (xorshift64*, seeded per thread) from one access to the thread's generator (a root span takes its
/// trace id and span id at once).
#[inline]
fn random_ids<const N: usize>() -> [u64; N] {
    RNG.with(|rng| {
        let mut x = rng.get();
        if x == 0 {
            x = seed();
        }
        let ids = std::array::from_fn(|_| loop {
            x ^= x >> 12;
            x ^= x << 25;
            x ^= x >> 27;
            let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
            if out != 0 {
                break out;
            }
        });
        rng.set(x);
        ids
    })
}

/// The span current on this thread (entered with [`Span::enter`] or polled inside
/// [`Instrumented`]), if any.
#[inline]
pub fn current() -> Option<SpanContext> {
    CURRENT.with(Cell::get).context()
}

/// Makes `context` current on this thread; returns what was current before, for
/// [`restore_current`].
#[inline]
pub(crate) fn set_current(context: &SpanContext) -> CurrentSpan {
    CURRENT.with(|c| c.replace(CurrentSpan::of(context)))
}

/// Makes `previous` (from [`set_current`]) current again.
#[inline]
pub(crate) fn restore_current(previous: CurrentSpan) {
    CURRENT.with(|c| c.set(previous));
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    /// Tests that install a sink run one at a time: the sink is process-wide.
    pub(crate) static SINK_LOCK: Mutex<()> = Mutex::new(());

    #[derive(Default)]
    pub(crate) struct Collect(pub Mutex<Vec<FinishedSpan>>);
    impl SpanSink for Collect {
        fn on_end(&self, span: FinishedSpan) {
            self.0.lock().unwrap().push(span);
        }
    }

    #[test]
    fn keys_classified_once_mask_as_they_did() {
        let masked = AttrValue::from(crate::secrets::MASK);
        // Three rounds: the first classifies the static keys, the others find them cached.
        for _ in 0..3 {
            assert_eq!(
                *masked_attr(&Cow::Borrowed("api_token"), &AttrValue::I64(5)),
                masked
            );
            assert_eq!(
                *masked_attr(&Cow::Owned("api_token".into()), &AttrValue::I64(5)),
                masked
            );
            assert_eq!(
                *masked_attr(&Cow::Borrowed("count"), &AttrValue::I64(5)),
                AttrValue::I64(5)
            );
            assert_eq!(
                *masked_attr(&Cow::Borrowed("note"), &AttrValue::from("password=hunter2")),
                AttrValue::from("password=***"),
                "a plain key's value masked by its shape"
            );
            let route = AttrValue::from("/users/{id}");
            assert!(
                matches!(masked_attr(&Cow::Borrowed("http.route"), &route), Cow::Borrowed(v) if std::ptr::eq(v, &route)),
                "a clean static value is passed on as it is"
            );
            let owned = AttrValue::Str(Cow::Owned("password=hunter2".into()));
            assert_eq!(
                *masked_attr(&Cow::Borrowed("note"), &owned),
                AttrValue::from("password=***"),
                "an owned value is masked by its shape each time"
            );
            assert_eq!(
                *masked_attr(
                    &Cow::Borrowed("OTEL_EXPORTER_OTLP_HEADERS"),
                    &AttrValue::from("authorization=Bearer abc,x-tenant=acme")
                ),
                AttrValue::from("authorization=***,x-tenant=***"),
            );
        }
    }

    #[test]
    fn a_sampled_span_keeps_a_few_attributes_inline() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        let mut s = span("few").attr("code.function.name", "f").start();
        for key in ["a", "b", "c"] {
            s.set_attr(key, 1);
        }
        drop(s);
        let mut s = span("many").start();
        for key in ["a", "b", "c", "d", "e"] {
            s.set_attr(key, 1);
        }
        drop(s);
        flush();
        clear_sink();
        let spans = sink.0.lock().unwrap();
        assert_eq!(spans.len(), 2);
        assert_eq!(spans[0].attributes.len(), INLINE_ATTRIBUTES);
        assert!(spans[0].attributes.is_inline(), "nothing allocated for them");
        assert_eq!(spans[1].attributes.len(), INLINE_ATTRIBUTES + 1);
        assert!(!spans[1].attributes.is_inline());
        assert_eq!(spans[1].attribute("e"), Some(&AttrValue::I64(1)));
    }

    #[test]
    fn disabled_without_sink() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        clear_sink();
        let s = span("x").attr("a", 1).start();
        assert!(!s.is_recording());
        let _e = s.enter();
        assert_eq!(current(), None);
    }

    #[test]
    fn nesting_errors_and_remote_parents() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        let remote = SpanContext {
            trace_id: 42,
            span_id: 7,
            sampled: true,
        };
        {
            let root = span("root").parent(remote).kind(SpanKind::Server).start();
            let _e = root.enter();
            let mut child = span("child").start();
            child.record_error(&"boom", "test::Error");
            assert_eq!(current(), root.context());
        }
        assert_eq!(current(), None);
        clear_sink();
        let spans = sink.0.lock().unwrap();
        let (child, root) = (&spans[0], &spans[1]);
        assert_eq!(root.context.trace_id, 42);
        assert_eq!(root.parent_span_id, Some(7));
        assert_eq!(child.parent_span_id, Some(root.context.span_id));
        assert_eq!(child.status, SpanStatus::Error("boom".into()));
        assert_eq!(child.events[0].name, "exception");
        assert_ne!(child.context.span_id, root.context.span_id);
    }

    #[test]
    fn instrumented_future_is_current_only_while_polled() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let seen = rt.block_on(async {
            let s = span("fut").start();
            let ctx = s.context();
            let inner = async { current() }.instrument(s).await;
            assert_eq!(current(), None);
            (inner, ctx)
        });
        clear_sink();
        assert_eq!(seen.0, seen.1);
        assert_eq!(sink.0.lock().unwrap().len(), 1);
    }

    #[test]
    fn a_span_dropped_while_unwinding_is_an_error() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        let _ = std::panic::catch_unwind(|| {
            let _span = span("unwinds").start();
            panic!("deliberate panic in a test");
        });
        clear_sink();
        let spans = sink.0.lock().unwrap();
        assert_eq!(spans[0].status, SpanStatus::Error("panicked".into()));
    }

    #[test]
    fn sampled_spans_keep_attributes_and_parents_across_threads() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        let parent = span("parent").attr("job.id", 7).start();
        let context = parent.context().unwrap();
        std::thread::scope(|scope| {
            for i in 0..4_i64 {
                scope.spawn(move || {
                    let mut child = span("child")
                        .parent(context)
                        .attr("worker", i)
                        .attr("worker.name", format!("w{i}"))
                        .start();
                    child.set_attr("done", true);
                });
            }
        });
        drop(parent);
        clear_sink();
        let spans = sink.0.lock().unwrap();
        let parent = spans.iter().find(|s| s.name == "parent").unwrap();
        assert_eq!(parent.attribute("job.id"), Some(&AttrValue::I64(7)));
        let mut workers: Vec<i64> = spans
            .iter()
            .filter(|s| s.name == "child")
            .map(|child| {
                assert_eq!(child.parent_span_id, Some(parent.context.span_id));
                assert_eq!(child.context.trace_id, parent.context.trace_id);
                assert!(child.context.sampled);
                assert_eq!(child.attribute("done"), Some(&AttrValue::Bool(true)));
                let AttrValue::I64(i) = child.attribute("worker").unwrap() else {
                    panic!("worker is an integer")
                };
                assert_eq!(
                    child.attribute("worker.name"),
                    Some(&AttrValue::from(format!("w{i}")))
                );
                assert!(child.start >= parent.start && child.end <= parent.end);
                *i
            })
            .collect();
        workers.sort_unstable();
        assert_eq!(workers, [0, 1, 2, 3]);
    }

    #[test]
    fn the_sampling_decision_is_taken_when_the_span_is_built() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        Sampler::ParentBasedAlwaysOff.install();
        let root = span("root").attr("kept", 1).start();
        assert!(!root.is_recording(), "a root span is not sampled");
        let context = root.context().expect("an unsampled span has an identity");
        assert!(!context.sampled);
        let child = root.in_scope(|| span("child").start());
        assert!(!child.is_recording(), "a child follows its parent");
        assert_eq!(child.context().unwrap().trace_id, context.trace_id);
        let remote = SpanContext {
            trace_id: 99,
            span_id: 3,
            sampled: true,
        };
        let adopted = root.in_scope(|| span("adopted").parent(remote).attr("a", 1).start());
        assert!(adopted.is_recording(), "a sampled remote parent decides again");
        drop((child, adopted, root));
        Sampler::default().install();
        clear_sink();
        let spans = sink.0.lock().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| &*s.name).collect();
        assert_eq!(
            names,
            ["adopted"],
            "fast ok unsampled spans do not reach the sink"
        );
        assert_eq!(spans[0].context.trace_id, 99);
        assert_eq!(spans[0].attribute("a"), Some(&AttrValue::I64(1)));
    }

    #[test]
    fn slow_or_failed_unsampled_spans_reach_the_sink_without_attributes() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        set_unsampled_slow_threshold(Duration::from_millis(20));
        let unsampled = SpanContext {
            trace_id: 5,
            span_id: 6,
            sampled: false,
        };
        let mut failed = span("failed").parent(unsampled).kind(SpanKind::Client).start();
        failed.set_attr("ignored", 1);
        failed.record_error(&"refused", "io::Error");
        drop(failed);
        let slow = span("slow").parent(unsampled).start();
        std::thread::sleep(Duration::from_millis(30));
        drop(slow);
        drop(span("fast").parent(unsampled).start());
        set_unsampled_slow_threshold(DEFAULT_UNSAMPLED_SLOW);
        clear_sink();
        let spans = sink.0.lock().unwrap();
        let names: Vec<&str> = spans.iter().map(|s| &*s.name).collect();
        assert_eq!(names, ["failed", "slow"]);
        let failed = &spans[0];
        assert_eq!(failed.status, SpanStatus::Error("refused".into()));
        assert_eq!(failed.kind, SpanKind::Client);
        assert_eq!(failed.parent_span_id, Some(6));
        assert!(!failed.context.sampled);
        assert!(failed.attributes.is_empty() && failed.events.is_empty());
        // 30 ms by std's clock; spans read quanta's, which may run a fraction of a percent apart.
        assert!(spans[1].duration >= Duration::from_millis(29));
        assert_eq!(spans[1].end, spans[1].start + spans[1].duration);
    }

    #[test]
    fn ids_are_random_and_non_zero() {
        let [a, b] = random_ids::<2>();
        let c = random_ids::<1>()[0];
        assert_ne!(b, c);
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
