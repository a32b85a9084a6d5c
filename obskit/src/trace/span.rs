//! The span API: [`span`] → [`SpanBuilder`] → [`Span`], and spans attached to futures.
//!
//! A span is in one of three states, decided when it is built (from its parent, then the
//! [`Sampler`](super::Sampler)):
//! - *disabled*, with no sink installed: nothing is read, timed or allocated;
//! - *unsampled*: it has a trace id and span id (so that propagation says `sampled=0`
//!   downstream) and is timed, but records no attribute or event, allocates nothing and formats
//!   nothing. It reaches the sink only if it ends in error or is slow
//!   ([`set_unsampled_slow_threshold`](super::set_unsampled_slow_threshold));
//! - *recording* (sampled): everything is recorded and the span always reaches the sink.

use std::borrow::Cow;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use crate::clock::Tick;
use crate::debug::in_flight;

use super::poll::{self, PollTime};
use super::{
    current, limits, random_ids, restore_current, sample, set_current, sink, AttrValue, Attributes,
    CurrentSpan, DroppedCounts, FinishedSpan, SpanContext, SpanEvent, SpanKind, SpanLink, SpanStatus,
};

/// What every span knows: enough for `/debug/traces` to show an unsampled one.
struct Core {
    name: Cow<'static, str>,
    kind: SpanKind,
    parent_span_id: Option<u64>,
    /// Ids and sampling decided when built.
    context: SpanContext,
    status: SpanStatus,
    /// Set by [`SpanBuilder::start`].
    started: Option<Tick>,
    /// The span's entry in `/debug/requests` while it is open: only a span with a `'static`
    /// name has one (see [`crate::debug::in_flight`]).
    in_flight: Option<in_flight::Ticket>,
}

impl Core {
    /// Lists the started span in `/debug/requests` until it ends.
    #[inline]
    fn track_in_flight(&mut self) {
        if let (Cow::Borrowed(name), Some(started)) = (&self.name, self.started) {
            self.in_flight = in_flight::open(in_flight::Entry::span(name, started, self.context));
        }
    }
}

/// What only a recording span has.
#[derive(Default)]
struct Recorded {
    attributes: Attributes,
    events: Vec<SpanEvent>,
    links: Vec<SpanLink>,
    dropped: DroppedCounts,
}

/// An enabled span, built or started: one inline value from [`span`] to the sink, so that
/// building, starting and ending move it as little as possible and an unsampled one allocates
/// nothing (a sampled one nothing for its first [`INLINE_ATTRIBUTES`](super::INLINE_ATTRIBUTES)
/// attributes, only for more, and for events or links when it has some).
struct Live {
    core: Core,
    /// Present only when the span is sampled. Inline, not boxed: spans are built where they
    /// stay (see [`start_span_in`]), so their size costs little, where a box cost every
    /// sampled span an allocation and a free (callgrind: 133 of a sampled call's 1 357
    /// instructions, against 5 more for an unsampled one, which writes the larger value).
    recorded: Option<Recorded>,
}

impl Live {
    /// Gives a sampled span its recorded part.
    #[inline(always)]
    fn record_if_sampled(&mut self) {
        if self.core.context.sampled {
            self.recorded = Some(Recorded::default());
        }
    }

    #[inline]
    fn decide(&mut self, parent: Option<&SpanContext>) {
        self.core.context.sampled = sample(parent, self.core.context.trace_id);
        match (self.core.context.sampled, &self.recorded) {
            (true, None) => self.recorded = Some(Recorded::default()),
            (false, Some(_)) => self.recorded = None,
            _ => {}
        }
    }
}

/// Starts building a span named `name`. Disabled (free) when no sink is installed; when the
/// span is not sampled (its parent's decision, or the sampler's for a root span), the builder's
/// attribute methods do nothing, so check [`SpanBuilder::is_recording`] before computing a
/// costly value.
#[inline(always)]
pub fn span(name: impl Into<Cow<'static, str>>) -> SpanBuilder {
    if !sink::is_enabled() {
        return SpanBuilder { live: None };
    }
    let mut builder = SpanBuilder {
        live: Some(live(name.into(), None)),
    };
    if let Some(live) = &mut builder.live {
        live.record_if_sampled();
    }
    builder
}

/// Starts a span named `name`, a child of the current span, at `started` (a clock reading
/// already taken for the same moment) or now, in `span` (a disabled one): [`span`] and
/// [`SpanBuilder::start`] in one, for the macro expansion, which then sets attributes on the
/// started span only if it records. Written where the span stays: a span returned by value or
/// moved from a builder is copied (it is a large value), and the copy reads back fields just
/// written, a store-forwarding stall on every call.
#[doc(hidden)]
#[inline(always)]
pub fn start_span_in(span: &mut Span, name: impl Into<Cow<'static, str>>, started: Option<Tick>) {
    if !sink::is_enabled() {
        return;
    }
    let started = started.unwrap_or_else(Tick::now);
    span.live = Some(live(name.into(), Some(started)));
    if let Some(live) = &mut span.live {
        live.record_if_sampled();
        live.core.track_in_flight();
    }
}

/// An enabled span named `name`, a child of the current span, with its ids and sampling
/// decided: every field computed first and the value written once (no field is written and
/// then read back). Its recorded part is added afterwards, where the span stays
/// ([`Live::record_if_sampled`]): allocating it here would be a call in the middle of building
/// the value, around which the fields are spilled to a temporary and then copied (a
/// store-forwarding stall on every span, unsampled ones included).
#[inline(always)]
fn live(name: Cow<'static, str>, started: Option<Tick>) -> Live {
    let parent = current();
    let (trace_id, span_id) = match parent {
        Some(p) => (p.trace_id, random_ids::<1>()[0]),
        None => {
            let [high, low, span_id] = random_ids::<3>();
            ((u128::from(high) << 64) | u128::from(low), span_id)
        }
    };
    let sampled = sample(parent.as_ref(), trace_id);
    Live {
        core: Core {
            name,
            kind: SpanKind::Internal,
            parent_span_id: parent.map(|p| p.span_id),
            context: SpanContext {
                trace_id,
                span_id,
                sampled,
            },
            status: SpanStatus::Unset,
            started,
            in_flight: None,
        },
        recorded: None,
    }
}

/// A span being described before it starts. See [`span`].
#[must_use = "a span builder does nothing until started"]
pub struct SpanBuilder {
    /// `None`: disabled.
    live: Option<Live>,
}

impl SpanBuilder {
    fn recorded(&mut self) -> Option<&mut Recorded> {
        self.live.as_mut().and_then(|l| l.recorded.as_mut())
    }

    /// Whether the span will record attributes and events (a sink is installed and the span is
    /// sampled).
    #[inline]
    pub fn is_recording(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.recorded.is_some())
    }

    /// Sets an attribute (OpenTelemetry semantic-convention names where one exists), within the
    /// [`SpanLimits`](super::SpanLimits): a string longer than the value length limit is cut,
    /// and an attribute past the count limit is left out and counted. Does nothing on a span
    /// that is not recording; set the [`parent`](Self::parent) first, since it decides that.
    pub fn attr(mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) -> Self {
        if let Some(recorded) = self.recorded() {
            recorded.push_attr(key.into(), value.into());
        }
        self
    }

    /// Makes room for `count` attributes in all (up to the attribute count limit) at once, for
    /// a span that will get more than the inline room holds: one allocation instead of the
    /// storage growing as they are set. Does nothing on a span that is not recording.
    pub fn reserve_attributes(mut self, count: usize) -> Self {
        if let Some(recorded) = self.recorded() {
            let count = count.min(limits::attribute_count());
            let additional = count.saturating_sub(recorded.attributes.len());
            recorded.attributes.reserve(additional);
        }
        self
    }

    /// Sets an attribute whose value came from a client: see [`Span::set_request_attr`].
    pub fn request_attr(mut self, key: &'static str, value: &str) -> Self {
        if let Some(recorded) = self.recorded() {
            recorded.push_request_attr(key, value);
        }
        self
    }

    /// Links the span to `context` (within the link count limit).
    pub fn link(mut self, context: SpanContext, attributes: Vec<(Cow<'static, str>, AttrValue)>) -> Self {
        if let Some(recorded) = self.recorded() {
            if recorded.links.len() < limits::link_count() {
                let attributes = limited_attributes(attributes, limits::attribute_count()).0;
                recorded.links.push(SpanLink { context, attributes });
            } else {
                recorded.dropped.links = recorded.dropped.links.saturating_add(1);
            }
        }
        self
    }

    /// Sets the span kind.
    pub fn kind(mut self, kind: SpanKind) -> Self {
        if let Some(live) = &mut self.live {
            live.core.kind = kind;
        }
        self
    }

    /// Makes `parent` the parent instead of the current span (a remote parent, for one). The
    /// sampling decision is taken again for it; attributes set before are dropped when that
    /// changes it, so call this first.
    pub fn parent(mut self, parent: SpanContext) -> Self {
        if let Some(live) = &mut self.live {
            live.core.parent_span_id = Some(parent.span_id);
            live.core.context.trace_id = parent.trace_id;
            live.decide(Some(&parent));
        }
        self
    }

    /// Starts the span: it is timed from now and ends when dropped.
    #[inline(always)]
    pub fn start(mut self) -> Span {
        // The disabled span returned on its own: writing `None` is one store, where moving the
        // whole (large) option would copy it.
        let Some(live) = &mut self.live else {
            return Span { live: None };
        };
        // Set in place and the option moved whole: taking `Live` out of it and wrapping it
        // again shifts every field (the option's tag moves), so the copy could not be elided.
        live.core.started = Some(Tick::now());
        live.core.track_in_flight();
        Span { live: self.live }
    }
}

/// A started span. It ends when dropped and is then handed to the
/// [`SpanSink`](super::SpanSink) (an unsampled one only if it failed or was slow).
pub struct Span {
    /// `None`: disabled.
    live: Option<Live>,
}

impl fmt::Debug for Span {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.core() {
            Some(core) => f
                .debug_struct("Span")
                .field("name", &core.name)
                .field("context", &core.context)
                .finish(),
            None => f.write_str("Span(disabled)"),
        }
    }
}

impl Span {
    /// A span that records nothing.
    pub const fn disabled() -> Span {
        Span { live: None }
    }

    fn core(&self) -> Option<&Core> {
        self.live.as_ref().map(|l| &l.core)
    }

    fn core_mut(&mut self) -> Option<&mut Core> {
        self.live.as_mut().map(|l| &mut l.core)
    }

    fn recorded(&mut self) -> Option<&mut Recorded> {
        self.live.as_mut().and_then(|l| l.recorded.as_mut())
    }

    /// Whether this span records attributes and events (it is sampled). Check it before
    /// computing costly attributes.
    #[inline]
    pub fn is_recording(&self) -> bool {
        self.live.as_ref().is_some_and(|l| l.recorded.is_some())
    }

    /// The span's identity, unless it is disabled: an unsampled span has one too (with
    /// `sampled: false`), so that the services it calls follow its decision.
    pub fn context(&self) -> Option<SpanContext> {
        self.core().map(|c| c.context)
    }

    /// Sets an attribute, within the [`SpanLimits`](super::SpanLimits) (see
    /// [`SpanBuilder::attr`]).
    pub fn set_attr(&mut self, key: impl Into<Cow<'static, str>>, value: impl Into<AttrValue>) {
        if let Some(recorded) = self.recorded() {
            recorded.push_attr(key.into(), value.into());
        }
    }

    /// Sets an attribute whose value came from a client (a header, the path): cut to the lower
    /// [`SpanLimits::request_value_length`](super::SpanLimits) before the general limits apply.
    pub fn set_request_attr(&mut self, key: &'static str, value: &str) {
        if let Some(recorded) = self.recorded() {
            recorded.push_request_attr(key, value);
        }
    }

    /// Adds an event, within the event count limit; its attributes within the event attribute
    /// count limit and the value length limit.
    pub fn add_event(
        &mut self,
        name: impl Into<Cow<'static, str>>,
        attributes: Vec<(Cow<'static, str>, AttrValue)>,
    ) {
        if let Some(recorded) = self.recorded() {
            if recorded.events.len() >= limits::event_count() {
                recorded.dropped.events = recorded.dropped.events.saturating_add(1);
                return;
            }
            let (attributes, dropped) = limited_attributes(attributes, limits::event_attribute_count());
            recorded.events.push(SpanEvent {
                name: limits::truncate_str(name.into(), limits::value_length()),
                time: Tick::now().wall_clock(),
                attributes,
                dropped_attributes_count: dropped,
            });
        }
    }

    /// Sets the status. Kept on an unsampled span too: an error is what hands it to the sink.
    pub fn set_status(&mut self, status: SpanStatus) {
        if let Some(core) = self.core_mut() {
            core.status = match status {
                // An error message may quote what a client sent: it is held to the value limit.
                SpanStatus::Error(mut message) if message.len() > limits::value_length() => {
                    message.truncate(limits::truncated(&message, limits::value_length()).len());
                    SpanStatus::Error(message)
                }
                other => other,
            };
        }
    }

    /// Marks the span failed with `error`: status `Error` with its message, and (when recording)
    /// an `exception` event carrying `exception.message` and `exception.type` (OpenTelemetry
    /// conventions).
    pub fn record_error(&mut self, error: &dyn fmt::Display, error_type: &'static str) {
        if self.core().is_none() {
            return;
        }
        let message = error.to_string();
        if self.is_recording() {
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
        }
        self.set_status(SpanStatus::Error(message));
    }

    /// Records how long this span's future spent in its polls ([`super::poll`]'s three
    /// attributes), once: `poll` is then off. Nothing for a span that does not record.
    pub(crate) fn record_poll_time(&mut self, poll: &mut PollTime) {
        if !poll.is_on() {
            return;
        }
        let taken = std::mem::take(poll);
        let Some(started) = self.core().and_then(|c| c.started) else {
            return;
        };
        if !self.is_recording() {
            return;
        }
        let busy = taken.busy_nanos();
        let wall = started.nanos_until(Tick::now());
        let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
        self.set_attr(poll::BUSY_NS, as_i64(busy));
        self.set_attr(poll::IDLE_NS, as_i64(wall.saturating_sub(busy)));
        self.set_attr(poll::POLLS, i64::from(taken.polls()));
    }

    /// Makes this span current on this thread until the guard drops.
    #[inline]
    pub fn enter(&self) -> Entered<'_> {
        Entered {
            previous: self.live.as_ref().map(|l| set_current(&l.core.context)),
            _span: std::marker::PhantomData,
        }
    }

    /// Runs `poll` (a poll of this span's future) so that a running CPU capture labels its
    /// samples with this span (and the route `route` gives, for a server span): see
    /// `profile::labels`. Outside a capture, one relaxed load.
    #[inline]
    pub(crate) fn poll_labelled<R>(
        &self,
        route: impl FnOnce() -> Option<&'static str>,
        poll: impl FnOnce() -> R,
    ) -> R {
        if !crate::profile::labels::active() {
            return poll();
        }
        match &self.live {
            Some(live) => crate::profile::labels::poll_in(live.core.context, &live.core.name, route(), poll),
            None => poll(),
        }
    }

    /// Runs `f` with this span current.
    pub fn in_scope<R>(&self, f: impl FnOnce() -> R) -> R {
        let _entered = self.enter();
        f()
    }

    /// Ends the span now and returns the clock reading it ended at (`None` for a disabled
    /// span, which reads no clock), so that an instrumented call's timer can finish at the
    /// same reading. For the macro expansion; dropping a span ends it too.
    #[doc(hidden)]
    #[inline]
    pub fn end_now(mut self) -> Option<Tick> {
        self.end_in_place()
    }

    /// [`end_now`](Self::end_now) for a span that is not owned: it is left disabled.
    ///
    /// Written so that the common spans are never moved (a span is a large value): a disabled
    /// one is only tested, and an unsampled one that the sink does not keep is dropped in place.
    #[inline(always)]
    pub(crate) fn end_in_place(&mut self) -> Option<Tick> {
        self.live.as_ref()?;
        Some(self.end_enabled())
    }

    #[inline]
    fn end_enabled(&mut self) -> Tick {
        let ended = Tick::now();
        if let Some(live) = &self.live {
            if live.recorded.is_none() && !unsampled_kept(&live.core, ended) {
                self.live = None;
                return ended;
            }
        }
        if let Some(Live { core, recorded }) = self.live.take() {
            finish(core, recorded.unwrap_or_default(), ended);
        }
        ended
    }
}

impl Drop for Span {
    #[inline(always)]
    fn drop(&mut self) {
        self.end_in_place();
    }
}

impl Recorded {
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

/// The finished span of `core`, ended at `ended`, with what a recording span collected.
fn finished(mut core: Core, recorded: Recorded, ended: Tick) -> FinishedSpan {
    if std::thread::panicking() && core.status == SpanStatus::Unset {
        // Dropped while unwinding: the work this span covers did not complete.
        core.status = SpanStatus::Error("panicked".to_string());
    }
    let started = core.started.unwrap_or(ended);
    let duration = Duration::from_nanos(started.nanos_until(ended));
    // Both ends from one anchor and the monotonic clock: a child lies within its parent on the
    // exported timeline, and the end never precedes the start.
    let start = started.wall_clock();
    FinishedSpan {
        name: limits::truncate_str(core.name, limits::value_length()),
        context: core.context,
        parent_span_id: core.parent_span_id,
        kind: core.kind,
        start,
        end: start + duration,
        duration,
        attributes: recorded.attributes,
        events: recorded.events,
        links: recorded.links,
        status: core.status,
        dropped: recorded.dropped,
    }
}

#[cold]
fn finish(core: Core, recorded: Recorded, ended: Tick) {
    sink::deliver(finished(core, recorded, ended));
}

/// Whether an unsampled span ending at `ended` reaches the sink: only when it failed (or
/// unwound) or was slow. That is what `/debug/traces` shows of the work the sampler left out,
/// decided from the end's clock read.
#[inline]
fn unsampled_kept(core: &Core, ended: Tick) -> bool {
    let failed = || matches!(core.status, SpanStatus::Error(_)) || std::thread::panicking();
    let slow = || {
        core.started
            .is_some_and(|s| s.nanos_until(ended) >= sink::unsampled_slow_threshold_nanos())
    };
    slow() || failed()
}

/// Restores the previously current span when dropped. See [`Span::enter`].
pub struct Entered<'a> {
    /// What was current before; `None` for a disabled span, which changed nothing.
    previous: Option<CurrentSpan>,
    _span: std::marker::PhantomData<&'a Span>,
}

impl Drop for Entered<'_> {
    #[inline]
    fn drop(&mut self) {
        if let Some(previous) = self.previous {
            restore_current(previous);
        }
    }
}

pin_project_lite::pin_project! {
    /// A future whose span is current while it is polled, and ends when the future completes
    /// or is dropped. A recording span also gets the time spent in the future's polls, beside
    /// its wall time ([`super::poll`]): whether it waited or computed.
    pub struct Instrumented<F> {
        #[pin]
        inner: F,
        span: Span,
        poll: PollTime,
    }

    impl<F> PinnedDrop for Instrumented<F> {
        fn drop(this: Pin<&mut Self>) {
            // Completed or cancelled, the span ends now: with what its polls took.
            let this = this.project();
            this.span.record_poll_time(this.poll);
        }
    }
}

impl<F: Future> Future for Instrumented<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let _entered = this.span.enter();
        let inner = this.inner;
        let poll = this.poll;
        this.span
            .poll_labelled(|| None, || poll.measure(|| inner.poll(cx)))
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
        let poll = PollTime::new(span.is_recording());
        Instrumented {
            inner: self,
            span,
            poll,
        }
    }
}

impl<F: Future> InstrumentExt for F {}
