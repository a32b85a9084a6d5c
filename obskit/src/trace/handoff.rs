//! The hand-off of finished spans from the threads that end them to the sink, without a lock
//! or a locked instruction on the ending thread.
//!
//! Each thread that ends a span gets a single-producer single-consumer ring (`rtrb`: a push is
//! a slot write and a release store). A collector thread drains every ring into the installed
//! sink every [`DRAIN_INTERVAL`], and sooner when a thread has pushed [`WAKE_EVERY`] spans;
//! [`flush`] drains them at once (what `/debug/traces`, [`set_sink`](super::set_sink) and
//! [`clear_sink`](super::clear_sink) do first, so a reader sees every span that has ended).
//! So the masking, copying and queueing the sinks do run on the collector thread, off the
//! request path.
//!
//! Bounds: a ring holds [`RING_CAPACITY`] spans. When a thread's ring is full, the span is
//! handed to the sink on the ending thread, as before there was a ring: nothing is lost, and
//! memory stays bounded by the rings and the sinks' own bounds. A thread that exits leaves its
//! ring behind; the next drain empties it and lets it go, so its spans are delivered too.

use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};
use std::thread::Thread;
use std::time::Duration;

use rtrb::{Consumer, Producer, RingBuffer};

use super::{sink, FinishedSpan};

/// Spans one thread may have waiting for the collector.
pub const RING_CAPACITY: usize = 256;

/// How often the collector drains the rings when no thread asks it to sooner.
pub const DRAIN_INTERVAL: Duration = Duration::from_millis(50);

/// A thread wakes the collector after this many pushes: rings are drained well before they
/// fill at any rate a collector can keep up with, and waking costs one unpark per this many
/// spans.
const WAKE_EVERY: u32 = 64;

struct Local {
    producer: Producer<FinishedSpan>,
    pushed: u32,
}

thread_local! {
    static LOCAL: RefCell<Option<Local>> = const { RefCell::new(None) };
}

/// Every thread's ring, the consumer ends. Locked when a thread makes its ring and by drains.
static RINGS: Mutex<Vec<Consumer<FinishedSpan>>> = Mutex::new(Vec::new());

static COLLECTOR: OnceLock<Thread> = OnceLock::new();

/// Held by a drain from its first pop to the end of its delivery, so that a [`flush`] that
/// returns has seen every span delivered: without it, a flush could find the rings already
/// emptied by the collector, whose delivery was still under way (and a sink cleared just after
/// would lose those spans).
static DELIVERING: Mutex<()> = Mutex::new(());

/// Queues `span` on this thread's ring; gives it back when the ring is full or the thread is
/// being torn down, for the caller to deliver at once.
#[inline]
#[must_use = "a span given back must be delivered"]
pub(super) fn push(span: FinishedSpan) -> Option<FinishedSpan> {
    let mut span = Some(span);
    let _ = LOCAL.try_with(|local| {
        let Ok(mut local) = local.try_borrow_mut() else {
            return;
        };
        let local = local.get_or_insert_with(new_ring);
        let Some(taken) = span.take() else { return };
        match local.producer.push(taken) {
            Ok(()) => {
                local.pushed = local.pushed.wrapping_add(1);
                if local.pushed % WAKE_EVERY == 0 {
                    wake();
                }
            }
            Err(rtrb::PushError::Full(back)) => {
                span = Some(back);
                wake();
            }
        }
    });
    span
}

#[cold]
fn new_ring() -> Local {
    let (producer, consumer) = RingBuffer::new(RING_CAPACITY);
    RINGS.lock().unwrap_or_else(|p| p.into_inner()).push(consumer);
    collector();
    Local { producer, pushed: 0 }
}

/// The collector thread, started with the first ring.
fn collector() -> &'static Thread {
    COLLECTOR.get_or_init(|| {
        std::thread::Builder::new()
            .name("obskit-spans".into())
            .spawn(|| loop {
                std::thread::park_timeout(DRAIN_INTERVAL);
                flush();
            })
            .expect("spawning the span collector thread")
            .thread()
            .clone()
    })
}

fn wake() {
    if let Some(thread) = COLLECTOR.get() {
        thread.unpark();
    }
}

/// Hands every span that has ended so far, on any thread, to the installed sink. Returns how
/// many it handed on.
///
/// ```
/// use obskit::trace::{self, RecentSpans};
/// let recent = RecentSpans::new(8);
/// trace::set_sink(std::sync::Arc::new(recent.clone()));
/// drop(trace::span("work").start());
/// trace::flush();
/// assert_eq!(recent.len(), 1);
/// # trace::clear_sink();
/// ```
pub fn flush() -> usize {
    let _delivering = DELIVERING.lock().unwrap_or_else(|p| p.into_inner());
    let drained = {
        let mut rings = RINGS.lock().unwrap_or_else(|p| p.into_inner());
        // Abandoned first: once the producer is gone nothing more arrives, so a ring that is
        // then empty can go. Counted before taking any: the spans are moved once, into a
        // vector of the right size (growing it would copy every span taken so far again), and
        // each ring is read as one chunk, its read position published once.
        let waiting: Vec<(bool, usize)> = rings
            .iter()
            .map(|ring| (ring.is_abandoned(), ring.slots()))
            .collect();
        let mut drained = Vec::with_capacity(waiting.iter().map(|&(_, count)| count).sum());
        for (ring, &(_, count)) in rings.iter_mut().zip(&waiting) {
            if let Ok(chunk) = ring.read_chunk(count) {
                drained.extend(chunk);
            }
        }
        let mut waiting = waiting.iter();
        rings.retain(|_| waiting.next().is_some_and(|&(abandoned, _)| !abandoned));
        drained
    };
    // Delivered outside the rings' lock: a sink that ends a span of its own would otherwise
    // wait on the lock that the span's own ring needs. (A sink must not flush, install or clear
    // sinks from `on_end`: this drain holds `DELIVERING` meanwhile.)
    let count = drained.len();
    sink::deliver_all(drained);
    count
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::sync::Arc;

    use super::*;
    use crate::trace::tests::{Collect, SINK_LOCK};
    use crate::trace::{self, SpanKind};

    #[test]
    fn every_span_reaches_the_sink_once_from_threads_that_exit_and_rings_that_fill() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        trace::set_sink(sink.clone());
        // More spans per thread than a ring holds, ended faster than the collector drains:
        // some go through the ring, some are handed over at once when it is full.
        let per_thread = RING_CAPACITY + 50;
        let threads: Vec<_> = (0..8)
            .map(|_| {
                std::thread::spawn(move || {
                    for _ in 0..per_thread {
                        drop(trace::span("handoff").kind(SpanKind::Internal).start());
                    }
                    // The thread exits here, leaving whatever is still in its ring.
                })
            })
            .collect();
        for thread in threads {
            thread.join().unwrap();
        }
        flush();
        trace::clear_sink();
        let spans = sink.0.lock().unwrap();
        let ids: HashSet<u64> = spans
            .iter()
            .filter(|s| s.name == "handoff")
            .map(|s| s.context.span_id)
            .collect();
        let handoff_spans = spans.iter().filter(|s| s.name == "handoff").count();
        assert_eq!(handoff_spans, 8 * per_thread, "every span delivered");
        assert_eq!(ids.len(), handoff_spans, "none delivered twice");
        // The exited threads' rings were let go once drained.
        drop(spans);
        flush();
        let live_rings = RINGS.lock().unwrap().len();
        assert!(live_rings < 8, "{live_rings} rings kept for exited threads");
    }
}
