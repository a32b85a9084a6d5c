//! Which span each CPU sample was taken in, as pprof labels: `trace_id`, `span_name` and, for
//! the spans of a request (its server span and the spans polled inside it), `http.route`.
//!
//! While a capture runs, every poll of a span's future (an `#[instrumented]` async call, a future
//! under `.instrument(span)`, a request's service future under the RED layer) goes through a
//! frame of obskit's that stands for that span: one of [`LABELS`] slots, taken by the span at its
//! first poll during the capture and kept until the capture ends. The sampler records that
//! frame with the rest of the stack, and the capture reads the span back from it. The innermost
//! such frame is the span current when the sample was taken. Because the frame is on the stack
//! of whichever thread polls, the label follows a task across worker threads.
//!
//! Why frames and not a thread-local read in the signal handler: the sampler is pprof-rs's,
//! whose handler records only the stack and the thread, and merges the samples of one stack on
//! one thread (their times are not kept). A frame is part of the stack, so it survives the merge.
//!
//! A slot is two nested calls, one of [`WIDTH`] "high" functions and one of [`WIDTH`] "low"
//! ones, so that `WIDTH²` spans are told apart by `2 × WIDTH` functions. A slot is never given to
//! a second span within one capture (two spans sharing it would merge); spans polled after the
//! slots run out are not labelled, and counted.
//!
//! Cost: outside a capture, one relaxed load per poll. During one, a lock of the slot table and
//! two indirect calls per poll (BENCHMARKS.md, "Issue 16: CPU samples labelled by span").

// Without the sampler (feature `profiling`) no capture labels: only `active()` is used.
#![cfg_attr(not(feature = "profiling"), allow(dead_code, unused_imports))]

use std::borrow::Cow;
use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, OnceLock};

use crate::trace::SpanContext;

/// Functions per level.
const WIDTH: usize = 64;

/// Spans labelled per capture.
pub const LABELS: usize = WIDTH * WIDTH;

/// Set while a capture labels its samples.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The spans given a slot during the running capture.
static TABLE: Mutex<Table> = Mutex::new(Table {
    labels: Vec::new(),
    by_span: None,
    unlabelled: 0,
});

/// The span a label stands for.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SpanLabel {
    /// Its trace.
    pub trace_id: u128,
    /// The span.
    pub span_id: u64,
    /// Its name.
    pub span_name: Cow<'static, str>,
    /// The route template of the request the span is part of (its server span, or a span polled
    /// inside it).
    pub route: Option<&'static str>,
}

impl SpanLabel {
    /// The trace id as pprof labels and `/debug/traces` write it: 32 lowercase hex digits.
    pub fn trace_id_hex(&self) -> String {
        format!("{:032x}", self.trace_id)
    }
}

struct Table {
    /// Slot `i` is `labels[i]`.
    labels: Vec<SpanLabel>,
    by_span: Option<HashMap<u64, u16>>,
    unlabelled: u64,
}

/// What a finished capture's labelling saw: the span of each slot, and how many spans were
/// polled once the slots ran out.
#[derive(Debug, Default)]
pub(crate) struct Labelled {
    pub(crate) labels: Vec<SpanLabel>,
    pub(crate) unlabelled: u64,
}

/// Whether a capture labels its samples now.
#[inline(always)]
pub(crate) fn active() -> bool {
    ACTIVE.load(Ordering::Relaxed)
}

/// Starts labelling (a capture starts): every slot is free.
pub(crate) fn begin() {
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    table.labels.clear();
    table.by_span = Some(HashMap::new());
    table.unlabelled = 0;
    ACTIVE.store(true, Ordering::Release);
}

/// Stops labelling (the capture stopped sampling) and hands over the slots' spans.
pub(crate) fn end() -> Labelled {
    ACTIVE.store(false, Ordering::Release);
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    table.by_span = None;
    Labelled {
        labels: std::mem::take(&mut table.labels),
        unlabelled: std::mem::take(&mut table.unlabelled),
    }
}

/// Runs `poll` (a poll of the future of the span `context`, named `name`) under the span's slot
/// frames. Called once [`active`] said a capture labels (a capture that ended meanwhile finds
/// no table, and the poll just runs).
#[inline]
// A `Cow`, not a `&str`: a name fixed in the code is kept by cloning the `Cow` (no allocation).
#[allow(clippy::ptr_arg)]
pub(crate) fn poll_in<R>(
    context: SpanContext,
    name: &Cow<'static, str>,
    route: Option<&'static str>,
    poll: impl FnOnce() -> R,
) -> R {
    // A span polled inside a request's server span takes the request's route.
    let route = route.or_else(|| ROUTE.get());
    match slot_of(context, name, route) {
        Some(slot) => {
            let _route = RouteScope::enter(route);
            run_in_slot(slot, poll)
        }
        None => poll(),
    }
}

/// Makes `route` this thread's request route until dropped (a poll that panics included).
struct RouteScope(Option<&'static str>);

impl RouteScope {
    fn enter(route: Option<&'static str>) -> RouteScope {
        RouteScope(ROUTE.replace(route))
    }
}

impl Drop for RouteScope {
    fn drop(&mut self) {
        ROUTE.set(self.0);
    }
}

thread_local! {
    /// The route of the request being polled on this thread, while a capture labels.
    static ROUTE: Cell<Option<&'static str>> = const { Cell::new(None) };
}

/// The span's slot: the one it took earlier in this capture, or a new one.
#[cold]
#[allow(clippy::ptr_arg)] // as `poll_in`'s
fn slot_of(context: SpanContext, name: &Cow<'static, str>, route: Option<&'static str>) -> Option<usize> {
    let mut table = TABLE.lock().unwrap_or_else(|p| p.into_inner());
    let Table {
        labels,
        by_span,
        unlabelled,
    } = &mut *table;
    // Ended meanwhile: the capture stopped between the check and the lock.
    let by_span = by_span.as_mut()?;
    if let Some(&slot) = by_span.get(&context.span_id) {
        return Some(usize::from(slot));
    }
    if labels.len() == LABELS {
        *unlabelled += 1;
        return None;
    }
    let slot = labels.len();
    labels.push(SpanLabel {
        trace_id: context.trace_id,
        span_id: context.span_id,
        span_name: name.clone(),
        route,
    });
    by_span.insert(context.span_id, slot as u16);
    Some(slot)
}

#[inline(never)]
fn run_in_slot<R>(slot: usize, poll: impl FnOnce() -> R) -> R {
    let mut poll = Some(poll);
    let mut out = None;
    let mut low = || {
        if let Some(poll) = poll.take() {
            out = Some(poll());
        }
    };
    let mut high = || LOW[slot % WIDTH](&mut low);
    HIGH[slot / WIDTH](&mut high);
    match out {
        Some(out) => out,
        // Each level calls what it is given exactly once.
        None => unreachable!("a slot frame did not run its poll"),
    }
}

/// A slot frame of the first level. Never inlined, and not a tail call (the `black_box` after
/// the call), so that it is a frame of its own under the poll, where the sampler sees it.
#[inline(never)]
fn high<const H: usize>(next: &mut dyn FnMut()) {
    next();
    std::hint::black_box(H);
}

/// A slot frame of the second level.
#[inline(never)]
fn low<const L: usize>(next: &mut dyn FnMut()) {
    next();
    std::hint::black_box(L);
}

type Frame = fn(&mut dyn FnMut());

macro_rules! frames {
    ($f:ident: $($n:literal)*) => {
        [$($f::<$n> as Frame),*]
    };
}

static HIGH: [Frame; WIDTH] = frames!(high:
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);
static LOW: [Frame; WIDTH] = frames!(low:
    0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20 21 22 23 24 25 26 27 28 29 30 31
    32 33 34 35 36 37 38 39 40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59 60 61 62 63);

/// Which slot-frame function a symbol stands for, by its name as linked (`sys_name`, mangled):
/// `(high?, index)`. Each monomorphised slot function has a linked name of its own (the legacy
/// mangling's hash differs with the const parameter), learnt by resolving each function's own
/// address; a demangled name would not tell them apart, nor would a symbol address (the
/// symboliser's are not the function pointers').
#[cfg(feature = "profiling")]
pub(crate) fn slot_frame(linked_name: &[u8]) -> Option<(bool, usize)> {
    static BY_NAME: OnceLock<HashMap<Vec<u8>, (bool, usize)>> = OnceLock::new();
    BY_NAME
        .get_or_init(|| {
            let high = HIGH.iter().enumerate().map(|(i, f)| (*f, (true, i)));
            let low = LOW.iter().enumerate().map(|(i, f)| (*f, (false, i)));
            high.chain(low)
                .filter_map(|(f, which)| Some((linked_name_of(f)?, which)))
                .collect()
        })
        .get(linked_name)
        .copied()
}

/// A slot function's name as linked, from the symboliser.
#[cfg(feature = "profiling")]
fn linked_name_of(f: Frame) -> Option<Vec<u8>> {
    let mut found = None;
    // The symboliser takes an address as a return address and looks one byte before it: one
    // past the function's start is its first byte.
    backtrace::resolve((f as usize + 1) as *mut std::ffi::c_void, |symbol| {
        if found.is_none() {
            found = symbol.name().map(|name| name.as_bytes().to_vec());
        }
    });
    found
}

/// Reads a sample's slot and removes the slot frames from its stack. `frames` are innermost
/// first; `slot_frame_of` says which slot function a frame is, if it is one. The innermost
/// complete slot (a low frame, then its high frame) is the span current when the sample was
/// taken.
#[cfg(feature = "profiling")]
pub(crate) fn take_slot<F>(
    frames: &mut Vec<F>,
    slot_frame_of: impl Fn(&F) -> Option<(bool, usize)>,
) -> Option<usize> {
    let mut slot = None;
    let mut low = None;
    frames.retain(|frame| {
        let Some((is_high, index)) = slot_frame_of(frame) else {
            return true;
        };
        match (is_high, low) {
            (false, _) if slot.is_none() => low = Some(index),
            (true, Some(l)) if slot.is_none() => slot = Some(index * WIDTH + l),
            _ => {}
        }
        false
    });
    slot
}

#[cfg(test)]
mod tests {
    use super::*;

    fn context(span_id: u64) -> SpanContext {
        SpanContext {
            trace_id: 0xabc,
            span_id,
            sampled: true,
        }
    }

    #[test]
    fn a_span_keeps_its_slot_and_a_full_table_counts_the_rest() {
        // Labelling is process-wide, like the sampler: the capture tests take turns.
        #[cfg(feature = "profiling")]
        let _turn = crate::profile::SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let name = Cow::Borrowed("work");
        // Outside a capture, nothing is recorded (the table is not there).
        assert_eq!(poll_in(context(1), &name, None, || 7), 7);
        begin();
        assert_eq!(poll_in(context(1), &name, Some("/a"), || 8), 8);
        // A span polled inside a request's takes its route.
        let inner = poll_in(context(1), &name, Some("/a"), || {
            poll_in(context(2), &name, None, || 10)
        });
        assert_eq!(inner, 10);
        for span in 3..=(LABELS as u64 + 5) {
            poll_in(context(span), &name, None, || ());
        }
        let labelled = end();
        assert_eq!(labelled.labels.len(), LABELS);
        // Spans 1 to LABELS + 5: the last five found the slots taken.
        assert_eq!(labelled.unlabelled, 5);
        assert_eq!(labelled.labels[0].span_id, 1);
        assert_eq!(labelled.labels[0].route, Some("/a"));
        assert_eq!(labelled.labels[0].trace_id_hex(), format!("{:032x}", 0xabc));
        assert_eq!(labelled.labels[1].span_id, 2);
        assert_eq!(labelled.labels[1].route, Some("/a"));
        assert_eq!(labelled.labels[2].route, None);
        assert!(end().labels.is_empty());
    }

    #[cfg(feature = "profiling")]
    #[test]
    fn slot_frames_are_read_innermost_first_and_removed() {
        // Frames as linked names: own code, then span 70's slot (low 6, high 1), more code, then
        // an outer span's slot (low 0, high 0).
        let name = |f: Frame| linked_name_of(f).expect("the slot functions resolve");
        let own = |n: &str| n.as_bytes().to_vec();
        let mut frames = vec![
            own("a"),
            own("b"),
            name(LOW[6]),
            name(HIGH[1]),
            own("c"),
            name(LOW[0]),
            name(HIGH[0]),
            own("main"),
        ];
        assert_ne!(
            name(LOW[6]),
            name(LOW[7]),
            "each slot function has a name of its own"
        );
        let slot = take_slot(&mut frames, |f| slot_frame(f));
        assert_eq!(slot, Some(WIDTH + 6));
        assert_eq!(frames, [own("a"), own("b"), own("c"), own("main")]);
        let mut plain = vec![own("a")];
        assert_eq!(take_slot(&mut plain, |f| slot_frame(f)), None);
        assert_eq!(plain, [own("a")]);
    }
}
