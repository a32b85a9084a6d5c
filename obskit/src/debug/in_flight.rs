//! What the process is doing right now: the requests in flight and the spans open, with their
//! age, behind `/debug/requests`. The first thing to look at in a service that hangs: which
//! requests are stuck, for how long, and in which instrumented function.
//!
//! # What is tracked
//!
//! - every request the RED layer records, from its head to the end of its response body: method,
//!   route template, age, and its server span's ids when it has one;
//! - every enabled span with a name fixed at compile time (`#[instrumented]` functions, and
//!   [`span`](crate::trace::span) called with a `&'static str`), sampled or not. A span whose name
//!   was formatted (a server span: `GET /cart/{id}`) is shown through its request.
//!
//! Nothing a client sent is kept: names are the code's, routes are templates, and ids are ids,
//! so the report needs no masking (the path, headers and attributes stay in the span).
//!
//! # Cost
//!
//! No lock, allocation or `lock`-prefixed instruction on the request path. Each thread owns a
//! slab of slots; opening writes a free slot of the thread's own slab with plain stores, and
//! closing (on whatever thread the future ended up) is one plain store. A reader validates each
//! slot like a seqlock, so it never shows a torn entry: the generation it read before and after
//! copying the slot must match. A thread with all [`SLOTS_PER_THREAD`] slots open tracks no more
//! (counted as `untracked`) until one closes. A thread's slab goes back to a pool when the thread
//! exits, for the next thread, so memory is bounded by the threads alive at once.

use std::sync::atomic::{fence, AtomicU64, AtomicUsize, Ordering};
use std::sync::Mutex;

use serde::Serialize;

use crate::clock::Tick;
use crate::trace::SpanContext;

/// The slots of one thread's slab: entries open at once on one thread (a request opened on a
/// worker thread stays in that worker's slab wherever it is polled).
pub const SLOTS_PER_THREAD: usize = 1024;
/// A power of two, so that the search for a free slot wraps with a mask, not a division.
const SLOT_MASK: usize = SLOTS_PER_THREAD - 1;
const _: () = assert!(SLOTS_PER_THREAD.is_power_of_two());

/// What `/debug/requests` shows by default, and at most (`?limit=`).
pub const DEFAULT_LIMIT: usize = 100;
/// See [`DEFAULT_LIMIT`].
pub const MAX_LIMIT: usize = 1000;

// A slot's stamp: its generation, times four, plus its state. Free (g, 0) → writing (g, 1) →
// live (g, 2) → free (g + 1, 0): the stamp only grows, so a reader that saw the same live stamp
// before and after copying the slot copied one entry whole.
const STATE_MASK: u64 = 3;
const FREE: u64 = 0;
const WRITING: u64 = 1;
const LIVE: u64 = 2;

const KIND_REQUEST: u64 = 0;
const KIND_SPAN: u64 = 1;
const HAS_CONTEXT: u64 = 1 << 16;
const SAMPLED: u64 = 1 << 17;

/// One entry's storage: atomics only (read while another thread may write), one cache line, so
/// that two threads closing neighbouring slots do not share a line.
#[repr(align(64))]
#[derive(Default)]
struct Slot {
    stamp: AtomicU64,
    started: AtomicU64,
    name_ptr: AtomicUsize,
    name_len: AtomicUsize,
    trace_high: AtomicU64,
    trace_low: AtomicU64,
    span_id: AtomicU64,
    /// Kind (low byte), the method's index (second byte), [`HAS_CONTEXT`], [`SAMPLED`].
    meta: AtomicU64,
}

struct Slab {
    slots: Box<[Slot; SLOTS_PER_THREAD]>,
    untracked: AtomicU64,
}

/// Every slab ever made, for the reader; and those whose thread has exited, for the next thread.
static SLABS: Mutex<Vec<&'static Slab>> = Mutex::new(Vec::new());
static POOL: Mutex<Vec<&'static Slab>> = Mutex::new(Vec::new());

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

/// The calling thread's slab and where its next search for a free slot starts.
struct Owner {
    slab: &'static Slab,
    cursor: std::cell::Cell<usize>,
}

impl Owner {
    fn new() -> Owner {
        let slab = lock(&POOL).pop().unwrap_or_else(|| {
            // Never freed: pooled when its thread exits (slots may still be open, closed later
            // from other threads), so the slabs are as many as threads were ever alive at once.
            let slab: &'static Slab = Box::leak(Box::new(Slab {
                slots: (0..SLOTS_PER_THREAD)
                    .map(|_| Slot::default())
                    .collect::<Box<[Slot]>>()
                    .try_into()
                    .unwrap_or_else(|_| unreachable!("SLOTS_PER_THREAD slots")),
                untracked: AtomicU64::new(0),
            }));
            lock(&SLABS).push(slab);
            slab
        });
        Owner {
            slab,
            cursor: std::cell::Cell::new(0),
        }
    }

    fn open(&self, entry: &Entry) -> Option<Ticket> {
        let slots = &self.slab.slots;
        let start = self.cursor.get();
        for probe in 0..SLOTS_PER_THREAD {
            let at = (start + probe) & SLOT_MASK;
            let slot = &slots[at];
            let stamp = slot.stamp.load(Ordering::Acquire);
            // Only this thread opens slots of its slab: a free one stays free until written.
            if stamp & STATE_MASK != FREE {
                continue;
            }
            slot.stamp.store(stamp + WRITING, Ordering::Relaxed);
            fence(Ordering::Release);
            entry.write(slot);
            slot.stamp.store(stamp + LIVE, Ordering::Release);
            self.cursor.set(at + 1);
            return Some(Ticket { slot });
        }
        self.slab.untracked.fetch_add(1, Ordering::Relaxed);
        None
    }
}

impl Drop for Owner {
    fn drop(&mut self) {
        lock(&POOL).push(self.slab);
    }
}

thread_local! {
    static OWNER: Owner = Owner::new();
}

/// What opens an entry.
pub(crate) struct Entry {
    kind: u64,
    method: u8,
    name: &'static str,
    started: Tick,
    context: Option<SpanContext>,
}

impl Entry {
    /// A request: its method (an index of [`crate::http`]'s method labels) and route template.
    pub(crate) fn request(
        method: usize,
        route: &'static str,
        started: Tick,
        context: Option<SpanContext>,
    ) -> Entry {
        Entry {
            kind: KIND_REQUEST,
            method: u8::try_from(method).unwrap_or(u8::MAX),
            name: route,
            started,
            context,
        }
    }

    /// A span named `name`.
    pub(crate) fn span(name: &'static str, started: Tick, context: SpanContext) -> Entry {
        Entry {
            kind: KIND_SPAN,
            method: 0,
            name,
            started,
            context: Some(context),
        }
    }

    fn write(&self, slot: &Slot) {
        let mut meta = self.kind | u64::from(self.method) << 8;
        let (trace_id, span_id) = match self.context {
            Some(context) => {
                meta |= HAS_CONTEXT;
                if context.sampled {
                    meta |= SAMPLED;
                }
                (context.trace_id, context.span_id)
            }
            None => (0, 0),
        };
        slot.started.store(self.started.raw(), Ordering::Relaxed);
        slot.name_ptr
            .store(self.name.as_ptr() as usize, Ordering::Relaxed);
        slot.name_len.store(self.name.len(), Ordering::Relaxed);
        slot.trace_high.store((trace_id >> 64) as u64, Ordering::Relaxed);
        slot.trace_low.store(trace_id as u64, Ordering::Relaxed);
        slot.span_id.store(span_id, Ordering::Relaxed);
        slot.meta.store(meta, Ordering::Relaxed);
    }
}

/// An open entry: closed when dropped, from any thread.
pub(crate) struct Ticket {
    slot: &'static Slot,
}

impl Drop for Ticket {
    #[inline]
    fn drop(&mut self) {
        // Free, next generation: a plain load and store. Only this ticket's holder changes a live
        // slot, and the ticket reached the thread dropping it through whatever moved it there
        // (which orders the opening store before this load).
        let live = self.slot.stamp.load(Ordering::Relaxed);
        self.slot.stamp.store(live + (4 - LIVE), Ordering::Release);
    }
}

/// Opens `entry` on this thread's slab; `None` when the slab is full or the thread is exiting.
#[inline]
pub(crate) fn open(entry: Entry) -> Option<Ticket> {
    OWNER.try_with(|owner| owner.open(&entry)).ok().flatten()
}

/// One open entry, copied out of its slot.
#[derive(Clone, Copy, Debug)]
struct Copied {
    kind: u64,
    method: u8,
    name: &'static str,
    started: u64,
    context: Option<SpanContext>,
}

impl Slot {
    /// The slot's entry, if it is open and was not changed while it was read.
    fn read(&self) -> Option<Copied> {
        let before = self.stamp.load(Ordering::Acquire);
        if before & STATE_MASK != LIVE {
            return None;
        }
        let started = self.started.load(Ordering::Relaxed);
        let name_ptr = self.name_ptr.load(Ordering::Relaxed);
        let name_len = self.name_len.load(Ordering::Relaxed);
        let trace_high = self.trace_high.load(Ordering::Relaxed);
        let trace_low = self.trace_low.load(Ordering::Relaxed);
        let span_id = self.span_id.load(Ordering::Relaxed);
        let meta = self.meta.load(Ordering::Relaxed);
        fence(Ordering::Acquire);
        if self.stamp.load(Ordering::Relaxed) != before {
            return None;
        }
        // SAFETY: the stamp did not change while the fields were read, so they are the ones one
        // `Entry::write` stored, after which the stamp was published live (Release, read here
        // with Acquire): `name_ptr` and `name_len` are the parts of one `&'static str`.
        let name = unsafe {
            std::str::from_utf8_unchecked(std::slice::from_raw_parts(name_ptr as *const u8, name_len))
        };
        let context = (meta & HAS_CONTEXT != 0).then(|| SpanContext {
            trace_id: (u128::from(trace_high) << 64) | u128::from(trace_low),
            span_id,
            sampled: meta & SAMPLED != 0,
        });
        Some(Copied {
            kind: meta & 0xff,
            method: (meta >> 8) as u8,
            name,
            started,
            context,
        })
    }
}

/// `/debug/requests`: the requests in flight, oldest first, each with the open spans of its
/// trace (oldest first: the last is where it is now); then the open spans of no request in
/// flight (background tasks, client calls of a request whose trace is not this process's).
#[derive(Debug, Serialize)]
pub struct InFlightReport {
    /// Requests in flight (all of them, not only those shown).
    pub requests_in_flight: usize,
    /// Spans open (all of them).
    pub spans_open: usize,
    /// Entries not tracked because their thread had [`SLOTS_PER_THREAD`] open, since start.
    pub untracked_total: u64,
    /// The oldest requests, at most `limit`.
    pub requests: Vec<RequestReport>,
    /// The oldest spans outside those requests' traces, at most `limit`.
    pub other_spans: Vec<SpanReport>,
}

/// A request in flight.
#[derive(Debug, Serialize)]
pub struct RequestReport {
    /// `GET`, ... (`_OTHER` for a method outside the standard ones).
    pub method: &'static str,
    /// The route template (or the unmatched label).
    pub route: &'static str,
    /// Seconds since its head arrived.
    pub age_seconds: f64,
    /// Its server span's trace, when it has one.
    pub trace_id: Option<String>,
    /// Its server span.
    pub span_id: Option<String>,
    /// Whether that trace is sampled (exported, and in `/debug/traces`).
    pub sampled: Option<bool>,
    /// The open spans of its trace, oldest first.
    pub open_spans: Vec<SpanReport>,
}

/// An open span.
#[derive(Debug, Serialize)]
pub struct SpanReport {
    /// Its name.
    pub name: &'static str,
    /// Seconds since it started.
    pub age_seconds: f64,
    /// Its trace.
    pub trace_id: String,
    /// Its id.
    pub span_id: String,
    /// Whether it is sampled.
    pub sampled: bool,
}

/// The `limit` of a `/debug/requests` query (`?limit=N`, 1 to [`MAX_LIMIT`]); anything else is
/// refused.
pub fn parse_limit(query: Option<&str>) -> Result<usize, String> {
    let mut limit = DEFAULT_LIMIT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("limit", value)) => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| format!("limit must be a number from 1 to {MAX_LIMIT}"))?;
            }
            _ => {
                return Err(format!(
                    "unknown parameter {pair:?}: say limit=N (1 to {MAX_LIMIT})"
                ))
            }
        }
    }
    Ok(limit)
}

/// What is in flight now: see [`InFlightReport`].
pub fn report(limit: usize) -> InFlightReport {
    let slabs: Vec<&'static Slab> = lock(&SLABS).clone();
    let mut entries = Vec::new();
    let mut untracked_total = 0;
    for slab in slabs {
        untracked_total += slab.untracked.load(Ordering::Relaxed);
        entries.extend(slab.slots.iter().filter_map(Slot::read));
    }
    let now = Tick::now().raw();
    // Oldest first: the smallest start reading. Readings of one clock compare across threads.
    entries.sort_by_key(|e| e.started);
    let age = |e: &Copied| Tick::from_raw(e.started).nanos_until(Tick::from_raw(now)) as f64 / 1e9;
    let span_report = |e: &Copied| SpanReport {
        name: e.name,
        age_seconds: age(e),
        trace_id: format!("{:032x}", e.context.map_or(0, |c| c.trace_id)),
        span_id: format!("{:016x}", e.context.map_or(0, |c| c.span_id)),
        sampled: e.context.is_some_and(|c| c.sampled),
    };
    let (requests, spans): (Vec<Copied>, Vec<Copied>) =
        entries.into_iter().partition(|e| e.kind == KIND_REQUEST);
    let shown: Vec<&Copied> = requests.iter().take(limit).collect();
    let in_shown_trace = |span: &Copied| {
        shown.iter().any(|r| {
            r.context
                .zip(span.context)
                .is_some_and(|(r, s)| r.trace_id == s.trace_id)
        })
    };
    let requests_report = shown
        .iter()
        .map(|r| RequestReport {
            method: crate::http::method_label_at(usize::from(r.method)),
            route: r.name,
            age_seconds: age(r),
            trace_id: r.context.map(|c| format!("{:032x}", c.trace_id)),
            span_id: r.context.map(|c| format!("{:016x}", c.span_id)),
            sampled: r.context.map(|c| c.sampled),
            open_spans: spans
                .iter()
                .filter(|s| {
                    r.context
                        .zip(s.context)
                        .is_some_and(|(r, s)| r.trace_id == s.trace_id)
                })
                .map(span_report)
                .collect(),
        })
        .collect();
    let other_spans = spans
        .iter()
        .filter(|s| !in_shown_trace(s))
        .take(limit)
        .map(span_report)
        .collect();
    InFlightReport {
        requests_in_flight: requests.len(),
        spans_open: spans.len(),
        untracked_total,
        requests: requests_report,
        other_spans,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The full slab's 1024 open spans would be the oldest other spans of a report made beside
    /// it, and push the next test's out of the first `MAX_LIMIT`.
    static ALONE: Mutex<()> = Mutex::new(());

    fn context(trace_id: u128, span_id: u64) -> SpanContext {
        SpanContext {
            trace_id,
            span_id,
            sampled: true,
        }
    }

    #[test]
    fn open_entries_are_reported_oldest_first_with_their_spans_until_closed() {
        let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
        let trace = 0x5eed_0000_0000_0000_0000_0000_0000_0001;
        let older = Tick::now();
        let request = open(Entry::request(
            0,
            "/in-flight-test/{id}",
            older,
            Some(context(trace, 1)),
        ));
        let span = open(Entry::span("in_flight_test_step", Tick::now(), context(trace, 2)));
        let orphan = open(Entry::span("in_flight_test_orphan", Tick::now(), context(7, 3)));
        assert!(request.is_some() && span.is_some() && orphan.is_some());
        let listed = report(MAX_LIMIT);
        let ours = listed
            .requests
            .iter()
            .find(|r| r.route == "/in-flight-test/{id}")
            .expect("the request is listed");
        assert_eq!(ours.method, crate::http::method_label_at(0));
        assert_eq!(ours.trace_id.as_deref(), Some(&*format!("{trace:032x}")));
        assert_eq!(ours.open_spans.len(), 1);
        assert_eq!(ours.open_spans[0].name, "in_flight_test_step");
        assert!(ours.age_seconds >= ours.open_spans[0].age_seconds);
        assert!(listed
            .other_spans
            .iter()
            .any(|s| s.name == "in_flight_test_orphan"));

        // Closed from another thread, as a future that moved would be.
        std::thread::spawn(move || drop((request, span, orphan)))
            .join()
            .unwrap();
        let listed = report(MAX_LIMIT);
        assert!(!listed.requests.iter().any(|r| r.route == "/in-flight-test/{id}"));
        assert!(!listed
            .other_spans
            .iter()
            .any(|s| s.name.starts_with("in_flight_test")));
    }

    #[test]
    fn a_full_slab_tracks_no_more_and_counts_it_and_exited_threads_slabs_are_reused() {
        let _alone = ALONE.lock().unwrap_or_else(|p| p.into_inner());
        std::thread::spawn(|| {
            let tickets: Vec<Ticket> = (0..SLOTS_PER_THREAD)
                .map(|_| open(Entry::span("in_flight_fill", Tick::now(), context(9, 9))).unwrap())
                .collect();
            let untracked = report(1).untracked_total;
            assert!(open(Entry::span("in_flight_fill", Tick::now(), context(9, 9))).is_none());
            assert_eq!(report(1).untracked_total, untracked + 1);
            drop(tickets);
            assert!(open(Entry::span("in_flight_fill", Tick::now(), context(9, 9))).is_some());
        })
        .join()
        .unwrap();
        // An exited thread's slab goes back to the pool for the next thread: 50 threads one
        // after the other make far fewer slabs than 50 (other tests' threads may take some).
        let slabs = lock(&SLABS).len();
        for _ in 0..50 {
            std::thread::spawn(|| drop(open(Entry::span("in_flight_reuse", Tick::now(), context(1, 1)))))
                .join()
                .unwrap();
        }
        assert!(
            lock(&SLABS).len() < slabs + 10,
            "slabs are reused, not made per thread"
        );
    }

    #[test]
    fn slots_read_while_written_are_never_torn() {
        // Two names of different lengths, opened and closed in a loop: a torn read would pair
        // one's pointer with the other's length.
        static SHORT: &str = "s";
        static LONG: &str = "a-much-longer-span-name-for-the-torn-read-test";
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let writer = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::Relaxed) && n < 2_000_000 {
                    let name = if n % 2 == 0 { SHORT } else { LONG };
                    let trace_id = (0xabcd << 64) | u128::from(n);
                    drop(open(Entry::span(name, Tick::now(), context(trace_id, n))));
                    n += 1;
                }
            })
        };
        for _ in 0..200 {
            for span in report(MAX_LIMIT).other_spans {
                if let Some(n) = span.trace_id.strip_prefix("000000000000abcd") {
                    assert!(span.name == SHORT || span.name == LONG, "{:?}", span.name);
                    assert_eq!(n, span.span_id, "ids from one entry");
                }
            }
        }
        stop.store(true, Ordering::Relaxed);
        writer.join().unwrap();
    }

    #[test]
    fn limits_are_checked() {
        assert_eq!(parse_limit(None), Ok(DEFAULT_LIMIT));
        assert_eq!(parse_limit(Some("limit=5")), Ok(5));
        for bad in ["limit=0", "limit=1001", "limit=x", "age=5", "limit"] {
            assert!(parse_limit(Some(bad)).is_err(), "{bad}");
        }
    }
}
