//! Spans: a small span API that costs one atomic load when nothing consumes spans.
//!
//! A span has a name, a trace id and span id, a parent (the span current on this thread when it
//! started, or an explicit remote parent), attributes, events and a status. When it ends it is
//! handed to the installed [`SpanSink`]; with no sink installed, [`span`] returns a disabled
//! span and nothing is allocated, timed or formatted.
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
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::task::{Context, Poll};
use std::time::{Duration, SystemTime};

mod client;
mod limits;
pub mod otlp;
pub mod propagation;
mod recent;
mod sampler;

pub use client::TracedRequest;
pub use limits::{request_value_length, SpanLimits};
pub use otlp::{ExportCounters, OtlpConfig, OtlpError, OtlpProtocol, OtlpSink};
pub use sampler::{sample, Sampler};

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
    /// Attributes, in the order they were set.
    pub attributes: Vec<(Cow<'static, str>, AttrValue)>,
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

/// Receives every span that ends while it is installed.
pub trait SpanSink: Send + Sync + 'static {
    /// Called once per span, on the thread that ended it. Must not block.
    fn on_end(&self, span: FinishedSpan);
}

/// `value` as it may leave the process (exported, or shown by `/debug/traces`): [`MASK`] when
/// `key` looks secret, whatever the value's type; a string masked by name and by shape
/// ([`crate::secrets::mask_keyed`]).
///
/// [`MASK`]: crate::secrets::MASK
pub(crate) fn masked_attr<'a>(key: &str, value: &'a AttrValue) -> Cow<'a, AttrValue> {
    match value {
        AttrValue::Str(s) => match crate::secrets::mask_keyed(key, s) {
            Cow::Borrowed(same) if std::ptr::eq(same, &**s) => Cow::Borrowed(value),
            masked => Cow::Owned(AttrValue::Str(Cow::Owned(masked.into_owned()))),
        },
        _ if crate::secrets::is_secret_key(key) => {
            Cow::Owned(AttrValue::Str(Cow::Borrowed(crate::secrets::MASK)))
        }
        other => Cow::Borrowed(other),
    }
}

/// Hands every span to several sinks, in order (the recent-span buffer and an exporter, say).
///
/// ```
/// use std::sync::Arc;
/// use obskit::trace::{self, FanOut, RecentSpans};
///
/// let (a, b) = (RecentSpans::new(8), RecentSpans::new(8));
/// trace::set_sink(Arc::new(FanOut::new(vec![Arc::new(a.clone()), Arc::new(b.clone())])));
/// drop(trace::span("work").start());
/// trace::clear_sink();
/// assert_eq!((a.len(), b.len()), (1, 1));
/// ```
pub struct FanOut {
    sinks: Vec<Arc<dyn SpanSink>>,
}

impl FanOut {
    /// A sink forwarding to each of `sinks`.
    pub fn new(sinks: Vec<Arc<dyn SpanSink>>) -> FanOut {
        FanOut { sinks }
    }
}

impl fmt::Debug for FanOut {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FanOut")
            .field("sinks", &self.sinks.len())
            .finish()
    }
}

impl SpanSink for FanOut {
    fn on_end(&self, span: FinishedSpan) {
        if let Some((last, rest)) = self.sinks.split_last() {
            for sink in rest {
                sink.on_end(span.clone());
            }
            // The last one gets the original: one clone fewer.
            last.on_end(span);
        }
    }
}

static ENABLED: AtomicBool = AtomicBool::new(false);
static SINK: RwLock<Installed> = RwLock::new(Installed {
    sink: None,
    default: false,
});

struct Installed {
    sink: Option<Arc<dyn SpanSink>>,
    /// Installed by [`set_default_sink`]: a later default may replace it.
    default: bool,
}

/// Installs the sink that receives finished spans, replacing any previous one.
pub fn set_sink(sink: Arc<dyn SpanSink>) {
    let mut installed = SINK.write().unwrap_or_else(|p| p.into_inner());
    *installed = Installed {
        sink: Some(sink),
        default: false,
    };
    ENABLED.store(true, Ordering::Release);
}

/// Installs `sink` unless a sink was installed with [`set_sink`]: what [`crate::Obskit`] does,
/// so that a sink the application chose is never silently replaced. Returns whether it was
/// installed.
///
/// ```
/// use std::sync::Arc;
/// use obskit::trace::{self, RecentSpans};
///
/// let mine = RecentSpans::new(8);
/// trace::set_sink(Arc::new(mine.clone()));
/// assert!(!trace::set_default_sink(Arc::new(RecentSpans::new(8))));
/// drop(trace::span("work").start());
/// assert_eq!(mine.len(), 1);
/// trace::clear_sink();
/// assert!(trace::set_default_sink(Arc::new(RecentSpans::new(8))));
/// # trace::clear_sink();
/// ```
pub fn set_default_sink(sink: Arc<dyn SpanSink>) -> bool {
    let mut installed = SINK.write().unwrap_or_else(|p| p.into_inner());
    if installed.sink.is_some() && !installed.default {
        return false;
    }
    *installed = Installed {
        sink: Some(sink),
        default: true,
    };
    ENABLED.store(true, Ordering::Release);
    true
}

/// Removes the installed sink: spans become disabled again.
pub fn clear_sink() {
    ENABLED.store(false, Ordering::Release);
    *SINK.write().unwrap_or_else(|p| p.into_inner()) = Installed {
        sink: None,
        default: false,
    };
}

/// Whether a sink is installed, i.e. whether new spans record anything.
#[inline]
pub fn is_enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

thread_local! {
    static CURRENT: Cell<Option<SpanContext>> = const { Cell::new(None) };
    static RNG: Cell<u64> = Cell::new(seed());
}

fn seed() -> u64 {
    use std::hash::{BuildHasher, RandomState};
    // RandomState is seeded from the OS once per process and varies per instance: a fresh
    // 64-bit seed per thread without a dependency on an RNG crate.
    RandomState::new().hash_one(std::thread::current().id()) | 1
}

/// A non-zero random u64 (xorshift64*, seeded per thread).
fn random_u64() -> u64 {
    RNG.with(|rng| loop {
        let mut x = rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        rng.set(x);
        let out = x.wrapping_mul(0x2545_F491_4F6C_DD1D);
        if out != 0 {
            return out;
        }
    })
}

/// The span current on this thread (entered with [`Span::enter`] or polled inside
/// [`Instrumented`]), if any.
pub fn current() -> Option<SpanContext> {
    CURRENT.with(Cell::get)
}

/// Starts building a span named `name`. Disabled (free) when no sink is installed.
#[inline]
pub fn span(name: impl Into<Cow<'static, str>>) -> SpanBuilder {
    if !is_enabled() {
        return SpanBuilder { data: None };
    }
    SpanBuilder {
        data: Some(Box::new(SpanData {
            name: name.into(),
            kind: SpanKind::Internal,
            parent: None,
            attributes: Vec::new(),
            events: Vec::new(),
            links: Vec::new(),
            dropped: DroppedCounts::default(),
            status: SpanStatus::Unset,
            context: SpanContext {
                trace_id: 0,
                span_id: 0,
                sampled: true,
            },
            start: SystemTime::UNIX_EPOCH,
            started: None,
        })),
    }
}

struct SpanData {
    name: Cow<'static, str>,
    kind: SpanKind,
    parent: Option<SpanContext>,
    attributes: Vec<(Cow<'static, str>, AttrValue)>,
    events: Vec<SpanEvent>,
    links: Vec<SpanLink>,
    dropped: DroppedCounts,
    status: SpanStatus,
    context: SpanContext,
    start: SystemTime,
    started: Option<quanta::Instant>,
}

/// A span being described before it starts. See [`span`].
#[must_use = "a span builder does nothing until started"]
pub struct SpanBuilder {
    data: Option<Box<SpanData>>,
}

impl SpanBuilder {
    /// Whether the span will record anything (a sink is installed).
    pub fn is_recording(&self) -> bool {
        self.data.is_some()
    }

    /// Sets an attribute (OpenTelemetry semantic-convention names where one exists), within the
    /// [`SpanLimits`]: a string longer than the value length limit is cut, and an attribute
    /// past the count limit is left out and counted.
    pub fn attr(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) -> Self {
        if let Some(data) = &mut self.data {
            data.push_attr(key.into(), value.into());
        }
        self
    }

    /// Sets an attribute whose value came from a client: see [`Span::set_request_attr`].
    pub fn request_attr(mut self, key: &'static str, value: &str) -> Self {
        if let Some(data) = &mut self.data {
            data.push_request_attr(key, value);
        }
        self
    }

    /// Links the span to `context` (within the link count limit).
    pub fn link(mut self, context: SpanContext, attributes: Vec<(Cow<'static, str>, AttrValue)>) -> Self {
        if let Some(data) = &mut self.data {
            if data.links.len() < limits::link_count() {
                let attributes = limited_attributes(attributes, limits::attribute_count()).0;
                data.links.push(SpanLink { context, attributes });
            } else {
                data.dropped.links = data.dropped.links.saturating_add(1);
            }
        }
        self
    }

    /// Sets the span kind.
    pub fn kind(mut self, kind: SpanKind) -> Self {
        if let Some(data) = &mut self.data {
            data.kind = kind;
        }
        self
    }

    /// Makes `parent` the parent instead of the current span (a remote parent, for one).
    pub fn parent(mut self, parent: SpanContext) -> Self {
        if let Some(data) = &mut self.data {
            data.parent = Some(parent);
        }
        self
    }

    /// Starts the span: it is timed from now and ends when dropped.
    #[inline]
    pub fn start(self) -> Span {
        let Some(mut data) = self.data else {
            return Span { data: None };
        };
        let parent = data.parent.or_else(current);
        data.parent = parent;
        let trace_id = match parent {
            Some(p) => p.trace_id,
            None => (u128::from(random_u64()) << 64) | u128::from(random_u64()),
        };
        data.context = SpanContext {
            trace_id,
            span_id: random_u64(),
            sampled: sample(parent.as_ref(), trace_id),
        };
        data.start = SystemTime::now();
        data.started = Some(quanta::Instant::now());
        Span { data: Some(data) }
    }
}

/// A started span. It ends when dropped and is then handed to the [`SpanSink`].
pub struct Span {
    data: Option<Box<SpanData>>,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.data {
            Some(data) => f
                .debug_struct("Span")
                .field("name", &data.name)
                .field("context", &data.context)
                .finish(),
            None => f.write_str("Span(disabled)"),
        }
    }
}

impl Span {
    /// A span that records nothing.
    pub const fn disabled() -> Span {
        Span { data: None }
    }

    /// Whether this span records anything. Check it before computing costly attributes.
    #[inline]
    pub fn is_recording(&self) -> bool {
        self.data.is_some()
    }

    /// The span's identity, if it is recording.
    pub fn context(&self) -> Option<SpanContext> {
        self.data.as_ref().map(|d| d.context)
    }

    /// Sets an attribute, within the [`SpanLimits`] (see [`SpanBuilder::attr`]).
    pub fn set_attr(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) {
        if let Some(data) = &mut self.data {
            data.push_attr(key.into(), value.into());
        }
    }

    /// Sets an attribute whose value came from a client (a header, the path): cut to the lower
    /// [`SpanLimits::request_value_length`] before the general limits apply.
    pub fn set_request_attr(&mut self, key: &'static str, value: &str) {
        if let Some(data) = &mut self.data {
            data.push_request_attr(key, value);
        }
    }

    /// Adds an event, within the event count limit; its attributes within the event attribute
    /// count limit and the value length limit.
    pub fn add_event(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        attributes: Vec<(Cow<'static, str>, AttrValue)>,
    ) {
        if let Some(data) = &mut self.data {
            if data.events.len() >= limits::event_count() {
                data.dropped.events = data.dropped.events.saturating_add(1);
                return;
            }
            let (attributes, dropped) = limited_attributes(attributes, limits::event_attribute_count());
            data.events.push(SpanEvent {
                name: limits::truncate_str(name.into(), limits::value_length()),
                time: SystemTime::now(),
                attributes,
                dropped_attributes_count: dropped,
            });
        }
    }

    /// Sets the status.
    pub fn set_status(&mut self, status: SpanStatus) {
        if let Some(data) = &mut self.data {
            data.status = match status {
                // An error message may quote what a client sent: it is held to the value limit.
                SpanStatus::Error(mut message) if message.len() > limits::value_length() => {
                    message.truncate(limits::truncated(&message, limits::value_length()).len());
                    SpanStatus::Error(message)
                }
                other => other,
            };
        }
    }

    /// Marks the span failed with `error`: status `Error` with its message, and an `exception`
    /// event carrying `exception.message` and `exception.type` (OpenTelemetry conventions).
    pub fn record_error(&mut self, error: &dyn fmt::Display, error_type: &'static str) {
        if self.data.is_none() {
            return;
        }
        let message = error.to_string();
        self.add_event(
            "exception",
            vec![
                (
                    Cow::Borrowed("exception.message"),
                    AttrValue::Str(Cow::Owned(message.clone())),
                ),
                (
                    Cow::Borrowed("exception.type"),
                    AttrValue::Str(Cow::Borrowed(error_type)),
                ),
            ],
        );
        self.set_status(SpanStatus::Error(message));
    }

    /// Makes this span current on this thread until the guard drops.
    #[inline]
    pub fn enter(&self) -> Entered<'_> {
        let previous = match &self.data {
            Some(data) => CURRENT.with(|c| c.replace(Some(data.context))),
            None => None,
        };
        Entered {
            previous,
            active: self.data.is_some(),
            _span: std::marker::PhantomData,
        }
    }

    /// Runs `f` with this span current.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.enter();
        f()
    }
}

impl Drop for Span {
    #[inline]
    fn drop(&mut self) {
        if let Some(data) = self.data.take() {
            finish(data);
        }
    }
}

impl SpanData {
    #[inline]
    fn push_attr(&mut self, key: Cow<'static, str>, value: AttrValue) {
        if self.attributes.len() < limits::attribute_count() {
            let value = limits::truncate_to(value, limits::value_length());
            self.attributes.push((key, value));
        } else {
            self.dropped.attributes = self.dropped.attributes.saturating_add(1);
        }
    }

    /// A client's value: cut to the request value limit before it is copied at all.
    fn push_request_attr(&mut self, key: &'static str, value: &str) {
        let value = limits::truncated(value, limits::request_value_length());
        self.push_attr(Cow::Borrowed(key), AttrValue::Str(Cow::Owned(value.to_string())));
    }
}

/// `attributes` within `count` entries and the value length limit, and how many were left out.
fn limited_attributes(
    mut attributes: Vec<(Cow<'static, str>, AttrValue)>,
    count: usize,
) -> (Vec<(Cow<'static, str>, AttrValue)>, u32) {
    let dropped = attributes.len().saturating_sub(count);
    attributes.truncate(count);
    let max = limits::value_length();
    let attributes = attributes
        .into_iter()
        .map(|(key, value)| (key, limits::truncate_to(value, max)))
        .collect();
    (attributes, u32::try_from(dropped).unwrap_or(u32::MAX))
}

#[cold]
fn finish(mut data: Box<SpanData>) {
    if std::thread::panicking() && data.status == SpanStatus::Unset {
        // Dropped while unwinding: the work this span covers did not complete.
        data.status = SpanStatus::Error("panicked".to_string());
    }
    let duration = data.started.map(|s| s.elapsed()).unwrap_or_default();
    let finished = FinishedSpan {
        name: limits::truncate_str(data.name, limits::value_length()),
        context: data.context,
        parent_span_id: data.parent.map(|p| p.span_id),
        kind: data.kind,
        start: data.start,
        end: SystemTime::now().max(data.start),
        duration,
        attributes: data.attributes,
        events: data.events,
        links: data.links,
        status: data.status,
        dropped: data.dropped,
    };
    let sink = SINK.read().unwrap_or_else(|p| p.into_inner()).sink.clone();
    if let Some(sink) = sink {
        sink.on_end(finished);
    }
}

/// Restores the previously current span when dropped. See [`Span::enter`].
pub struct Entered<'a> {
    previous: Option<SpanContext>,
    active: bool,
    _span: std::marker::PhantomData<&'a Span>,
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        if self.active {
            CURRENT.with(|c| c.set(self.previous));
        }
    }
}

pin_project_lite::pin_project! {
    /// A future whose span is current while it is polled, and ends when the future completes
    /// or is dropped.
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        span: Span,
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        this.inner.poll(cx)
    }
}

impl<F> Instrumented<F> {
    /// The span, to set attributes or status on it.
    pub fn span_mut(&mut self) -> &mut Span {
        &mut self.span
    }
}

/// Attaches a span to a future.
pub trait InstrumentExt: Future + Sized {
    /// Makes `span` current whenever this future is polled.
    ///
    /// ```
    /// use obskit::trace::{span, InstrumentExt};
    /// # async fn work() {}
    /// # async fn run() {
    /// work().instrument(span("work").start()).await;
    /// # }
    /// ```
    fn instrument(self, span: Span) -> Instrumented<Self> {
        Instrumented { inner: self, span }
    }
}

impl<F: Future> InstrumentExt for F {}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::sync::Mutex;

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
    fn ids_are_random_and_non_zero() {
        let a = random_u64();
        let b = random_u64();
        assert_ne!(a, b);
        assert_ne!(a, 0);
    }
}
