//! Events added to a span from outside its owner: a `tracing` event logged while an obskit span
//! is current ([`crate::log`]) becomes an event of that span, though the code that logged it
//! holds no reference to the span.
//!
//! Such events wait here, by span id, until the span reaches the sink; they are joined to it
//! off the request path, where the collector thread hands spans to the sink. A span's own hot
//! path is untouched: ending a span does not look here, and delivering spans looks only when
//! something waits (one atomic load otherwise). Bounded: at most [`MAX_WAITING`] events wait at
//! once; past that, an event is counted as dropped on its span when the span still gets one.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use std::borrow::Cow;

use super::{limits, AttrValue, FinishedSpan, SpanEvent};
use crate::clock::Tick;

/// Events waiting for their spans, at most.
pub(crate) const MAX_WAITING: usize = 4096;
/// How long events wait for a span that never comes (one that ended while no sink took
/// spans, say) before they may be discarded to make room.
const STALE_AFTER: Duration = Duration::from_secs(600);

struct Waiting {
    events: Vec<SpanEvent>,
    dropped: u32,
    since: Instant,
}

#[derive(Default)]
struct Store {
    by_span: HashMap<u64, Waiting>,
    count: usize,
}

static STORE: Mutex<Option<Store>> = Mutex::new(None);
/// Spans with events waiting: the cheap check before the store's lock.
static WAITING: AtomicUsize = AtomicUsize::new(0);

/// Adds an event named `name` with `attributes`, happening now, to the span with id
/// `span_id` when it reaches the sink; held to the span limits as its own events are.
pub(crate) fn add(span_id: u64, name: String, mut attributes: Vec<(Cow<'static, str>, AttrValue)>) {
    let max_attributes = limits::event_attribute_count();
    let dropped_attributes_count = attributes.len().saturating_sub(max_attributes) as u32;
    attributes.truncate(max_attributes);
    let value_length = limits::value_length();
    for (_, value) in &mut attributes {
        *value = limits::truncate_to(std::mem::replace(value, AttrValue::Bool(false)), value_length);
    }
    let event = SpanEvent {
        name: limits::truncate_str(Cow::Owned(name), value_length),
        time: Tick::now().wall_clock(),
        attributes,
        dropped_attributes_count,
    };
    let mut guard = STORE.lock().unwrap_or_else(|p| p.into_inner());
    let store = guard.get_or_insert_with(Store::default);
    if store.count >= MAX_WAITING {
        let now = Instant::now();
        let before = store.by_span.len();
        store
            .by_span
            .retain(|_, w| now.duration_since(w.since) < STALE_AFTER);
        if store.by_span.len() != before {
            store.count = store.by_span.values().map(|w| w.events.len()).sum();
        }
    }
    let full = store.count >= MAX_WAITING;
    let waiting = store.by_span.entry(span_id).or_insert_with(|| Waiting {
        events: Vec::new(),
        dropped: 0,
        since: Instant::now(),
    });
    if full || waiting.events.len() >= limits::event_count() {
        waiting.dropped = waiting.dropped.saturating_add(1);
    } else {
        waiting.events.push(event);
        store.count += 1;
    }
    WAITING.store(store.by_span.len(), Ordering::Relaxed);
}

/// Joins to each span the events waiting for it, in the order they happened among its own.
pub(super) fn attach(spans: &mut [FinishedSpan]) {
    if WAITING.load(Ordering::Relaxed) == 0 {
        return;
    }
    let mut guard = STORE.lock().unwrap_or_else(|p| p.into_inner());
    let Some(store) = guard.as_mut() else {
        return;
    };
    for span in spans {
        if let Some(waiting) = store.by_span.remove(&span.context.span_id) {
            store.count -= waiting.events.len();
            let room = limits::event_count().saturating_sub(span.events.len());
            let kept = waiting.events.len().min(room);
            let over = (waiting.events.len() - kept) as u32;
            span.events.extend(waiting.events.into_iter().take(kept));
            span.events.sort_by_key(|e| e.time);
            span.dropped.events = span
                .dropped
                .events
                .saturating_add(waiting.dropped)
                .saturating_add(over);
        }
    }
    WAITING.store(store.by_span.len(), Ordering::Relaxed);
}
