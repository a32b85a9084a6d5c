//! The runtime API that `obskit-macros` expands into. Not a stable interface: it is public
//! only so that macro expansions in other crates can reach it, and changes without notice.

use std::fmt;
use std::sync::atomic::{AtomicU8, Ordering};

pub use crate::clock::Tick;
pub use crate::metrics::function::{CallTimer, FunctionSite};
pub use crate::profile::ProfileSite;
pub use crate::trace::poll::PollTime;
pub use crate::trace::{span, start_span_in, InstrumentExt, Instrumented, Span, SpanBuilder};

/// The key of a parameter or field the expansion records, with whether it looks like a secret
/// (`password`, `token`, ...; [`is_secret_key`](crate::secrets::is_secret_key)), decided on the
/// first call and kept: the key is a constant of the call site, and the check costs a few
/// hundred instructions, more than the rest of recording the attribute. The expansion declares
/// one `static` per key.
pub struct AttrKey {
    key: &'static str,
    /// [`UNDECIDED`], [`PLAIN`] or [`SECRET`].
    secret: AtomicU8,
}

const UNDECIDED: u8 = 0;
const PLAIN: u8 = 1;
const SECRET: u8 = 2;

impl AttrKey {
    /// The key, undecided.
    pub const fn new(key: &'static str) -> AttrKey {
        AttrKey {
            key,
            secret: AtomicU8::new(UNDECIDED),
        }
    }

    /// Whether values under this key are masked.
    #[inline]
    pub fn is_secret(&self) -> bool {
        match self.secret.load(Ordering::Relaxed) {
            PLAIN => false,
            SECRET => true,
            _ => self.decide(),
        }
    }

    #[cold]
    fn decide(&self) -> bool {
        let secret = crate::secrets::is_secret_key(self.key);
        // Racing threads store the same answer.
        self.secret
            .store(if secret { SECRET } else { PLAIN }, Ordering::Relaxed);
        secret
    }
}

/// A parameter or field recorded as a span attribute with its `Debug` form, masked when its
/// name looks like a secret (`password`, `token`, ...), as in `/debug/config`.
pub fn debug_attr(key: &AttrKey, value: &dyn fmt::Debug) -> crate::trace::AttrValue {
    if key.is_secret() {
        crate::trace::AttrValue::from(crate::secrets::MASK)
    } else {
        crate::trace::AttrValue::from(format!("{value:?}"))
    }
}

/// A parameter on its way to becoming a span attribute: integers, floats and booleans are
/// recorded as such, anything else by its `Debug` form. The expansion writes
/// `(&Param(&value)).obskit_kind().attr(name, &value)` with [`TypedAttr`] and [`DebugAttr`] in
/// scope; method resolution picks [`TypedAttr`] when the type has it (it needs one reference
/// less: autoref specialisation), so `n: u64` is `I64(7)`, not the string `"7"`, and costs no
/// formatting. The `Debug` path puts no bound on the type, so that a parameter that is not
/// `Debug` is reported as such by [`DebugKind::attr`].
pub struct Param<'a, T: ?Sized>(pub &'a T);

/// The typed path of [`Param`].
pub trait TypedAttr {
    /// Chooses [`TypedKind`].
    fn obskit_kind(&self) -> TypedKind {
        TypedKind
    }
}

/// The `Debug` path of [`Param`].
pub trait DebugAttr {
    /// Chooses [`DebugKind`].
    fn obskit_kind(&self) -> DebugKind {
        DebugKind
    }
}

/// The types recorded as typed attribute values.
pub trait Primitive: Copy + Into<crate::trace::AttrValue> {}
macro_rules! primitive {
    ($($t:ty),*) => {$( impl Primitive for $t {} )*};
}
primitive!(i8, i16, i32, i64, isize, u8, u16, u32, u64, usize, f32, f64, bool);

impl<T: Primitive> TypedAttr for Param<'_, T> {}
impl<T: ?Sized> DebugAttr for &Param<'_, T> {}

/// Records a [`Primitive`] as its typed value.
pub struct TypedKind;

impl TypedKind {
    /// The attribute value, masked when `name` looks like a secret.
    #[inline]
    pub fn attr<T: Primitive>(self, key: &AttrKey, value: &T) -> crate::trace::AttrValue {
        if key.is_secret() {
            crate::trace::AttrValue::from(crate::secrets::MASK)
        } else {
            (*value).into()
        }
    }
}

/// Records anything else by its `Debug` form ([`debug_attr`]).
pub struct DebugKind;

impl DebugKind {
    /// The attribute value, masked when `name` looks like a secret.
    #[inline]
    pub fn attr(self, key: &AttrKey, value: &dyn fmt::Debug) -> crate::trace::AttrValue {
        debug_attr(key, value)
    }
}

/// Records an `Err` on the span with the error's `Display` form (`#[instrumented(err)]`).
pub fn record_err_display<T, E: fmt::Display>(span: &mut Span, result: &Result<T, E>) {
    if let Err(error) = result {
        span.record_error(error, std::any::type_name::<E>());
    }
}

/// Records an `Err` on the span with the error's `Debug` form (`#[instrumented(err(Debug))]`).
pub fn record_err_debug<T, E: fmt::Debug>(span: &mut Span, result: &Result<T, E>) {
    if let Err(error) = result {
        span.record_error(&DebugAsDisplay(error), std::any::type_name::<E>());
    }
}

struct DebugAsDisplay<'a, E>(&'a E);

impl<E: fmt::Debug> fmt::Display for DebugAsDisplay<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}

// The expansion's control-flow helpers: running a sync body so its value can be inspected,
// finishing timers on drop, and handing an async body's span back for `err`.

/// A field recorded with its `Display` form (`fields(key = %value)`), masked like
/// [`debug_attr`] when its name looks like a secret.
pub fn display_attr(key: &AttrKey, value: &dyn fmt::Display) -> crate::trace::AttrValue {
    if key.is_secret() {
        crate::trace::AttrValue::from(crate::secrets::MASK)
    } else {
        crate::trace::AttrValue::from(value.to_string())
    }
}

/// Calls `f` once and returns its value.
///
/// A sync function whose return value the expansion must see (it returns `Result`, or has
/// `err`) runs its body in a `move` closure, so that `return` and `?` keep their meaning.
/// Passing the closure here rather than calling it in place makes it `FnOnce`: the body may then
/// return borrows of captured `&mut` parameters (`Ok(&mut self.field)`), which an `FnMut`
/// closure could not. The expansion names `R` with a turbofish, so the body is type-checked
/// against the declared return type exactly as the function body was.
#[inline(always)]
pub fn call_once<R, F: FnOnce() -> R>(f: F) -> R {
    f()
}

/// Ends the call's span where it lies and returns the end's clock reading (`None` for a
/// disabled span); the span is left disabled, so its own drop at the end of the scope does
/// nothing. `Span::end_now` takes the span by value, and that move copied it (two `memcpy`
/// calls, 64 of the 252 instructions of `fn_call/obskit_instrumented_result`).
#[inline(always)]
pub fn end_span(span: &mut Span) -> Option<Tick> {
    span.end_in_place()
}

/// Borrows the [`CallTimer`] of a sync function that cannot fail (it does not return `Result`),
/// and its span by reference (not moved: a span is a large value), and finishes both when
/// dropped: `ok` on any normal return, including early `return`s, and an error when dropped
/// while unwinding from a panic. The body then runs in place, unchanged. The span ends first
/// and the timer finishes at the span's end reading.
#[must_use = "the call is recorded when this guard drops"]
pub struct FinishOnDrop<'a> {
    // Both borrowed, not moved in: a move copies the timer through the stack in two halves
    // and reads it back whole, a store-forwarding stall that cost a third of the call's time
    // (`fn_call/obskit_instrumented`: 33 ns moved, 23 ns borrowed).
    timer: &'a mut CallTimer,
    span: &'a mut Span,
}

impl<'a> FinishOnDrop<'a> {
    /// Guards `timer` and `span` until the end of the call.
    #[inline(always)]
    pub fn new(timer: &'a mut CallTimer, span: &'a mut Span) -> Self {
        FinishOnDrop { timer, span }
    }

    /// The call's span, to enter it.
    #[inline(always)]
    pub fn span(&self) -> &Span {
        self.span
    }
}

impl Drop for FinishOnDrop<'_> {
    #[inline]
    fn drop(&mut self) {
        let ended = self.span.end_in_place();
        if !std::thread::panicking() {
            self.timer.finish_in_place(true, ended);
        }
        // Unwinding: the timer, dropped after this guard, records the call as an error.
    }
}

pin_project_lite::pin_project! {
    /// The body of an `async fn` with metrics or under `#[instrumented(err)]`: like
    /// [`Instrumented`] (its span is current during each poll, and gets the polls' time), but
    /// hands the span back with the output, so that the expansion can record an `Err` on it
    /// before it ends, and the polls' time, for the call's busy-time histogram. See [`in_span`].
    #[must_use = "futures do nothing unless polled"]
    pub struct InSpan<F> {
        #[pin]
        inner: F,
        span: Span,
        poll: PollTime,
    }

    impl<F> PinnedDrop for InSpan<F> {
        fn drop(this: Pin<&mut Self>) {
            // Cancelled: the span ends here, with what its polls took.
            let this = this.project();
            this.span.record_poll_time(this.poll);
        }
    }
}

/// Runs `future` with `span` current during each poll; resolves to its output, the span and the
/// time its polls took, timed when `timed` (the call is recorded) or when the span records.
#[inline]
pub fn in_span<F: std::future::Future>(future: F, span: Span, timed: bool) -> InSpan<F> {
    let poll = PollTime::new(timed || span.is_recording());
    InSpan {
        inner: future,
        span,
        poll,
    }
}

impl<F: std::future::Future> std::future::Future for InSpan<F> {
    type Output = (F::Output, Span, PollTime);

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let output = {
            let _entered = this.span.enter();
            let inner = this.inner;
            let poll = &mut *this.poll;
            std::task::ready!(this
                .span
                .poll_labelled(|| None, || poll.measure(|| inner.poll(cx))))
        };
        let poll = *this.poll;
        this.span.record_poll_time(this.poll);
        let span = std::mem::replace(this.span, Span::disabled());
        std::task::Poll::Ready((output, span, poll))
    }
}

/// What `#[instrumented]` counts as an error when no `error_if` / `ok_if` says: the most
/// specific rule the returned value's type has, chosen at compile time by autoref (the macro
/// calls `(&&&Returned(&value)).is_ok_call()`, and method lookup tries the impls on
/// `&&Returned<T>` first, then `&Returned<T>`, then `Returned<T>`):
///
/// 1. an HTTP response (`http::Response<B>`, hyper's too), a `StatusCode`, or a `Result` of a
///    response: a 5xx status or an `Err` is an error, what users feel as the server failing
///    (4xx are the client's);
/// 2. any other `Result`: `Err` is an error;
/// 3. anything else: never an error (a panic still is).
pub mod outcome {
    /// The value a call returned, borrowed for its classification.
    pub struct Returned<'a, T>(pub &'a T);

    /// Rule 1: responses and statuses.
    pub trait ResponseOutcome {
        /// Whether the call succeeded.
        fn is_ok_call(&self) -> bool;
    }

    /// Rule 2: results.
    pub trait ResultOutcome {
        /// Whether the call succeeded.
        fn is_ok_call(&self) -> bool;
    }

    /// Rule 3: everything else.
    pub trait AnyOutcome {
        /// Whether the call succeeded.
        fn is_ok_call(&self) -> bool;
    }

    impl<B> ResponseOutcome for &&Returned<'_, http::Response<B>> {
        #[inline(always)]
        fn is_ok_call(&self) -> bool {
            !self.0.status().is_server_error()
        }
    }

    impl ResponseOutcome for &&Returned<'_, http::StatusCode> {
        #[inline(always)]
        fn is_ok_call(&self) -> bool {
            !self.0.is_server_error()
        }
    }

    impl<B, E> ResponseOutcome for &&Returned<'_, Result<http::Response<B>, E>> {
        #[inline(always)]
        fn is_ok_call(&self) -> bool {
            self.0.as_ref().is_ok_and(|r| !r.status().is_server_error())
        }
    }

    impl<T, E> ResultOutcome for &Returned<'_, Result<T, E>> {
        #[inline(always)]
        fn is_ok_call(&self) -> bool {
            self.0.is_ok()
        }
    }

    impl<T> AnyOutcome for Returned<'_, T> {
        #[inline(always)]
        fn is_ok_call(&self) -> bool {
            true
        }
    }
}

/// The internal parsers of client input that are not public, for the fuzz targets in `fuzz/`
/// (which can only reach obskit's public items). Not an interface either.
#[doc(hidden)]
pub mod fuzz {
    use std::time::Duration;

    /// The `/debug/pprof/profile` query (`seconds`, `frequency`, `format`): the capture's
    /// length, its frequency in Hz, and whether the answer is an SVG flame graph.
    pub fn profile_query(query: &str) -> Result<(Duration, u32, bool), String> {
        crate::profile::ProfileQuery::parse(query).map(|q| (q.duration, q.frequency, q.svg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::AttrValue;

    #[test]
    fn attr_keys_decide_once_and_keep_the_answer() {
        let secret = AttrKey::new("api_token");
        let plain = AttrKey::new("count");
        assert_eq!(secret.secret.load(Ordering::Relaxed), UNDECIDED);
        for _ in 0..3 {
            assert!(secret.is_secret());
            assert!(!plain.is_secret());
        }
        assert_eq!(secret.secret.load(Ordering::Relaxed), SECRET);
        assert_eq!(plain.secret.load(Ordering::Relaxed), PLAIN);
        // A typed value under a secret key is masked like any other, on every call.
        for _ in 0..2 {
            assert_eq!(
                TypedKind.attr(&secret, &7u32),
                AttrValue::from(crate::secrets::MASK)
            );
            assert_eq!(TypedKind.attr(&plain, &7u32), AttrValue::I64(7));
            assert_eq!(debug_attr(&secret, &"x"), AttrValue::from(crate::secrets::MASK));
        }
    }
}
