//! Where finished spans go: the process-wide [`SpanSink`], installed once at start-up and read
//! by every span that ends, and what is kept of unsampled spans.

use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use super::FinishedSpan;

/// Receives every span that ends while it is installed.
pub trait SpanSink: Send + Sync + 'static {
    /// Called with one finished span: on the thread that ended it when that thread's ring of
    /// spans waiting for the collector is full, and by the default
    /// [`on_end_batch`](Self::on_end_batch) for each span of a batch. Must not block, and must
    /// not end spans or install sinks itself (the sink is held for the call).
    fn on_end(&self, span: FinishedSpan);

    /// Called with the spans that ended on any thread since the last drain of the rings,
    /// gathered off the request path by the span collector thread, or by the thread calling
    /// [`flush`](super::flush). The default hands each to [`on_end`](Self::on_end); a sink that
    /// queues spans for a thread of its own can queue them as one message and wake that thread
    /// once. The same rules as `on_end` apply.
    fn on_end_batch(&self, spans: Vec<FinishedSpan>) {
        for span in spans {
            self.on_end(span);
        }
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

    fn on_end_batch(&self, spans: Vec<FinishedSpan>) {
        if let Some((last, rest)) = self.sinks.split_last() {
            for sink in rest {
                sink.on_end_batch(spans.clone());
            }
            last.on_end_batch(spans);
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
    // Spans that ended before go to the sink that was installed when they ended.
    super::handoff::flush();
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
    super::handoff::flush();
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
    super::handoff::flush();
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

/// An unsampled span that lasts at least this long (in nanoseconds) still reaches the sink,
/// without attributes or events: see [`set_unsampled_slow_threshold`].
static UNSAMPLED_SLOW_NANOS: AtomicU64 = AtomicU64::new(DEFAULT_UNSAMPLED_SLOW.as_nanos() as u64);

/// The default of [`set_unsampled_slow_threshold`].
pub const DEFAULT_UNSAMPLED_SLOW: Duration = Duration::from_secs(1);

/// Sets how long an unsampled span must last to be handed to the sink anyway (so that
/// `/debug/traces` shows the slow requests the sampler left out). Unsampled spans that end in
/// error are always handed on. Either way they carry name, ids, kind, times and status, but no
/// attributes or events: those were never recorded. `Duration::MAX` keeps only the errors.
///
/// ```
/// use std::time::Duration;
/// use obskit::trace;
/// trace::set_unsampled_slow_threshold(Duration::from_millis(250));
/// assert_eq!(trace::unsampled_slow_threshold(), Duration::from_millis(250));
/// trace::set_unsampled_slow_threshold(trace::DEFAULT_UNSAMPLED_SLOW);
/// ```
pub fn set_unsampled_slow_threshold(threshold: Duration) {
    let nanos = u64::try_from(threshold.as_nanos()).unwrap_or(u64::MAX);
    UNSAMPLED_SLOW_NANOS.store(nanos, Ordering::Relaxed);
}

/// The threshold set by [`set_unsampled_slow_threshold`].
pub fn unsampled_slow_threshold() -> Duration {
    Duration::from_nanos(unsampled_slow_threshold_nanos())
}

/// [`unsampled_slow_threshold`] in nanoseconds, as the span's end compares it.
#[inline]
pub(super) fn unsampled_slow_threshold_nanos() -> u64 {
    UNSAMPLED_SLOW_NANOS.load(Ordering::Relaxed)
}

/// Hands a finished span on: through this thread's ring to the collector (see
/// [`super::handoff`]), or at once when the ring is full.
#[inline]
pub(super) fn deliver(span: FinishedSpan) {
    if let Some(span) = super::handoff::push(span) {
        #[cfg(feature = "tracing-bridge")]
        let span = {
            let mut span = span;
            super::late_events::attach(std::slice::from_mut(&mut span));
            span
        };
        // The read guard is held across `on_end` (which must not block) rather than cloning
        // the `Arc`; installing a sink waits for it.
        if let Some(sink) = &SINK.read().unwrap_or_else(|p| p.into_inner()).sink {
            sink.on_end(span);
        }
    }
}

/// Hands spans gathered from the rings to the installed sink, if there still is one.
pub(super) fn deliver_all(spans: Vec<FinishedSpan>) {
    if spans.is_empty() {
        return;
    }
    #[cfg(feature = "tracing-bridge")]
    let spans = {
        let mut spans = spans;
        super::late_events::attach(&mut spans);
        spans
    };
    if let Some(sink) = &SINK.read().unwrap_or_else(|p| p.into_inner()).sink {
        sink.on_end_batch(spans);
    }
}
