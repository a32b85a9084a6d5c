//! The recent-span buffer behind `/debug/traces`: the last N finished spans of this process,
//! grouped into traces on demand, and a record of the slowest traces of the last hour.
//!
//! It exists so that an on-call engineer can see the last slow or failed request of one instance
//! with no tracing backend running. Memory is bounded three ways: at most N spans (the oldest are
//! overwritten), at most [`DEFAULT_MAX_BYTES`] bytes of spans by default (each span's
//! [`FinishedSpan::approximate_bytes`]; spans let go early to stay within it are counted in
//! `obskit_spans_dropped_total{reason="recent_bytes"}`), and at most [`SLOW_PER_MINUTE`] trace
//! summaries per minute for [`SLOW_MINUTES_KEPT`] minutes. Spans are stored as they end and
//! masked only when shown (attribute keys that look secret show `***`, secrets are masked by
//! their shape in every string), so the hot path does no formatting; the stored values never
//! leave the process unmasked.
//!
//! A report never holds up a span's end: under the lock it only copies pointers to the spans
//! it may show (spans are stored behind `Arc`), and it groups and encodes them after letting go.
//!
//! Unsampled spans reach this buffer only when they failed or were slow (see the trace module),
//! marked `"sampled": false` and without attributes: an exporter drops them, the local view
//! shows them.
//!
//! ```
//! use std::sync::Arc;
//! use obskit::trace::{self, RecentSpans, TraceQuery};
//!
//! let recent = RecentSpans::new(100);
//! trace::set_sink(Arc::new(recent.clone()));
//! {
//!     let root = trace::span("GET /api/orders").attr("db.password", "hunter2").start();
//!     let _entered = root.enter();
//!     let _query = trace::span("cassandra_query").attr("db.system.name", "cassandra").start();
//! }
//! trace::clear_sink();
//!
//! let report = recent.report(&TraceQuery::default());
//! let trace = &report["traces"][0];
//! assert_eq!(trace["root"], "GET /api/orders");
//! assert_eq!(trace["span_count"], 2);
//! assert_eq!(trace["spans"][0]["attributes"]["db.password"], "***");
//! assert_eq!(report["slowest"]["traces"][0]["root"], "GET /api/orders");
//! ```

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use super::limits::truncated;
use super::{AttrValue, FinishedSpan, SpanKind, SpanSink, SpanStatus};
use crate::metrics::Counter;
use crate::secrets::mask_secrets;

/// How many spans a buffer holds unless told otherwise.
pub const DEFAULT_CAPACITY: usize = 2048;
/// How many bytes of spans a buffer holds unless told otherwise: 8 MiB.
pub const DEFAULT_MAX_BYTES: usize = 8 << 20;
/// The longest attribute value a report shows, in bytes; longer ones end in `…`.
pub const REPORT_VALUE_LENGTH: usize = 1024;
/// How many of the slowest traces are remembered per minute.
pub const SLOW_PER_MINUTE: usize = 10;
/// How many minutes of slowest traces are remembered.
pub const SLOW_MINUTES_KEPT: usize = 60;

/// A bounded ring buffer of finished spans; a [`SpanSink`]. Cheap to clone (clones share the
/// buffer).
#[derive(Clone)]
pub struct RecentSpans {
    inner: Arc<Mutex<State>>,
}

impl fmt::Debug for RecentSpans {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let state = self.lock();
        f.debug_struct("RecentSpans")
            .field("capacity", &state.capacity)
            .field("max_bytes", &state.max_bytes)
            .field("held", &state.spans.len())
            .field("bytes", &state.bytes)
            .finish()
    }
}

struct State {
    capacity: usize,
    max_bytes: usize,
    /// The sum of the held spans' sizes.
    bytes: usize,
    /// Each span with the size it was counted at.
    spans: VecDeque<(Arc<FinishedSpan>, usize)>,
    /// Where spans let go for the byte bound are counted.
    dropped: Option<Counter>,
    /// Per minute (since the epoch), its slowest local roots, slowest first.
    slow: VecDeque<(u64, Vec<SlowTrace>)>,
}

/// A summary of one slow trace, as seen from this process: its local root span.
#[derive(Clone, Debug)]
struct SlowTrace {
    trace_id: u128,
    root: String,
    start: SystemTime,
    end: SystemTime,
    duration: Duration,
    error: bool,
    status_code: Option<i64>,
}

impl RecentSpans {
    /// A buffer of `capacity` spans (at least 1) and [`DEFAULT_MAX_BYTES`] bytes.
    ///
    /// ```
    /// let recent = obskit::trace::RecentSpans::new(16);
    /// assert_eq!(recent.capacity(), 16);
    /// assert_eq!(recent.len(), 0);
    /// ```
    pub fn new(capacity: usize) -> RecentSpans {
        let capacity = capacity.max(1);
        RecentSpans {
            inner: Arc::new(Mutex::new(State {
                capacity,
                max_bytes: DEFAULT_MAX_BYTES,
                bytes: 0,
                dropped: None,
                // Grown as spans come: a large capacity costs nothing until it is used.
                spans: VecDeque::new(),
                slow: VecDeque::new(),
            })),
        }
    }

    /// The process-wide buffer that [`crate::Obskit`] installs and `/debug/traces` serves.
    /// Spans are process-wide (one sink), so their buffer is too.
    ///
    /// ```
    /// let a = obskit::trace::RecentSpans::global();
    /// let b = obskit::trace::RecentSpans::global();
    /// assert!(a.same_as(&b));
    /// ```
    pub fn global() -> &'static RecentSpans {
        static GLOBAL: OnceLock<RecentSpans> = OnceLock::new();
        GLOBAL.get_or_init(|| RecentSpans::new(DEFAULT_CAPACITY))
    }

    /// Whether both handles share one buffer.
    pub fn same_as(&self, other: &RecentSpans) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic while holding the lock leaves the buffer consistent (each step is one push or
        // pop), so a poisoned lock is still usable.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// How many spans it holds at most.
    pub fn capacity(&self) -> usize {
        self.lock().capacity
    }

    /// Changes how many spans it holds at most (at least 1), dropping the oldest if needed.
    ///
    /// ```
    /// let recent = obskit::trace::RecentSpans::new(16);
    /// recent.set_capacity(4);
    /// assert_eq!(recent.capacity(), 4);
    /// ```
    pub fn set_capacity(&self, capacity: usize) {
        let mut state = self.lock();
        state.capacity = capacity.max(1);
        while state.spans.len() > state.capacity {
            drop(state.pop_oldest());
        }
        let capacity = state.capacity;
        state.spans.shrink_to(capacity);
    }

    /// How many bytes of spans it holds at most.
    pub fn max_bytes(&self) -> usize {
        self.lock().max_bytes
    }

    /// Changes how many bytes of spans it holds at most, letting the oldest go if needed.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use obskit::trace::{self, RecentSpans};
    ///
    /// let recent = RecentSpans::new(100);
    /// recent.set_max_bytes(8_000);
    /// trace::set_sink(Arc::new(recent.clone()));
    /// for _ in 0..10 {
    ///     drop(trace::span("big").attr("blob", "x".repeat(1500)).start());
    /// }
    /// trace::clear_sink();
    /// assert!(recent.bytes() <= 8_000);
    /// assert!(recent.len() < 10);
    /// ```
    pub fn set_max_bytes(&self, max_bytes: usize) {
        let mut state = self.lock();
        state.max_bytes = max_bytes.max(1);
        state.trim_to_bytes(&mut Vec::new());
    }

    /// How many bytes the held spans take (their [`FinishedSpan::approximate_bytes`]).
    pub fn bytes(&self) -> usize {
        super::flush();
        self.lock().bytes
    }

    /// Counts in `counter` every span let go early to stay within the byte bound (what
    /// [`crate::Obskit`] does with `obskit_spans_dropped_total{reason="recent_bytes"}`).
    pub fn count_drops_in(&self, counter: Counter) {
        self.lock().dropped = Some(counter);
    }

    /// How many spans it holds now (every span ended so far is handed on first: [`super::flush`]).
    pub fn len(&self) -> usize {
        super::flush();
        self.lock().spans.len()
    }

    /// Whether it holds no span.
    pub fn is_empty(&self) -> bool {
        super::flush();
        self.lock().spans.is_empty()
    }

    /// The `/debug/traces` report for `query`:
    /// `{"capacity", "spans_held", "traces": [...], "slowest": {"minutes", "traces": [...]}}`.
    /// Traces are newest first (by their last span's end); each lists its spans by start time.
    pub fn report(&self, query: &TraceQuery) -> Value {
        // What has ended on any thread is in the report.
        super::flush();
        // Under the lock: pointers and small summaries only. Grouping, masking and encoding,
        // which take time in proportion to what is held, happen after the lock is released.
        let (capacity, held, spans, slow) = {
            let state = self.lock();
            let spans: Vec<Arc<FinishedSpan>> =
                state.spans.iter().map(|(span, _)| Arc::clone(span)).collect();
            let slow: Vec<SlowTrace> = state.slow.iter().flat_map(|(_, t)| t).cloned().collect();
            (state.capacity, state.spans.len(), spans, slow)
        };
        let now = SystemTime::now();

        let held_traces: HashSet<u128> = spans.iter().map(|s| s.context.trace_id).collect();
        let mut groups: Vec<Group<'_>> = Vec::new();
        let mut index: HashMap<u128, usize> = HashMap::new();
        for span in spans.iter().rev() {
            if query.trace_id.is_some_and(|id| id != span.context.trace_id) {
                continue;
            }
            let slot = *index.entry(span.context.trace_id).or_insert_with(|| {
                groups.push(Group::default());
                groups.len() - 1
            });
            groups[slot].spans.push(span);
        }
        // Summaries first; only the traces shown are encoded.
        let mut traces: Vec<(Summary, &mut Group<'_>)> = groups
            .iter_mut()
            .filter_map(|group| Some((group.summarize()?, group)))
            .filter(|(summary, _)| {
                query.min_duration.is_none_or(|min| summary.duration >= min)
                    && match query.status {
                        StatusFilter::Any => true,
                        StatusFilter::Error => summary.error,
                        StatusFilter::Ok => !summary.error,
                    }
            })
            .collect();
        traces.sort_by_key(|(summary, _)| std::cmp::Reverse(summary.end));
        let traces: Vec<Value> = traces
            .into_iter()
            .take(query.limit)
            .map(|(summary, group)| group.to_json(&summary))
            .collect();

        let window = Duration::from_secs(60 * query.slowest_minutes as u64);
        let since = now.checked_sub(window).unwrap_or(UNIX_EPOCH);
        let mut slowest: Vec<&SlowTrace> = slow.iter().filter(|t| t.end >= since).collect();
        slowest.sort_by_key(|t| std::cmp::Reverse(t.duration));
        let slowest: Vec<Value> = slowest
            .into_iter()
            .take(SLOW_PER_MINUTE)
            .map(|t| {
                json!({
                    "trace_id": format!("{:032x}", t.trace_id),
                    "root": shown_str(&t.root),
                    "start": rfc3339(t.start),
                    "duration_ms": millis(t.duration),
                    "error": t.error,
                    "http.response.status_code": t.status_code,
                    "spans_held": held_traces.contains(&t.trace_id),
                })
            })
            .collect();

        json!({
            "capacity": capacity,
            "spans_held": held,
            "traces": traces,
            "slowest": { "minutes": query.slowest_minutes, "traces": slowest },
        })
    }
}

impl SpanSink for RecentSpans {
    fn on_end(&self, span: FinishedSpan) {
        // As a batch of one: sized and boxed before the lock, what it lets go freed after.
        let bytes = span.approximate_bytes();
        let span = Arc::new(span);
        let mut let_go = Vec::new();
        self.lock().keep(span, bytes, &mut let_go);
    }

    /// The collector's path: every span of the batch is sized and boxed before the lock is
    /// taken, the lock is taken once, and the spans let go for the new ones are freed after it
    /// is released. The lock covers pushes and pops only, so a report waits for no allocation.
    fn on_end_batch(&self, spans: Vec<FinishedSpan>) {
        let sized: Vec<(Arc<FinishedSpan>, usize)> = spans
            .into_iter()
            .map(|span| {
                let bytes = span.approximate_bytes();
                (Arc::new(span), bytes)
            })
            .collect();
        let mut let_go = Vec::with_capacity(sized.len());
        let mut state = self.lock();
        for (span, bytes) in sized {
            state.keep(span, bytes, &mut let_go);
        }
        drop(state);
        drop(let_go);
    }
}

impl State {
    /// Holds `span`, whose size is `bytes`. The spans let go to make room (the oldest) are
    /// moved into `let_go`, for the caller to free once the lock is released.
    fn keep(&mut self, span: Arc<FinishedSpan>, bytes: usize, let_go: &mut Vec<Arc<FinishedSpan>>) {
        // A local root (no parent, or the server span of a request from another process) ends
        // its trace's part in this process: remember it if it is among the slowest of its
        // minute.
        if span.parent_span_id.is_none() || span.kind == SpanKind::Server {
            remember_if_slow(&mut self.slow, &span);
        }
        if self.spans.len() >= self.capacity {
            let_go.extend(self.pop_oldest());
        }
        self.bytes += bytes;
        self.spans.push_back((span, bytes));
        self.trim_to_bytes(let_go);
    }

    fn pop_oldest(&mut self) -> Option<Arc<FinishedSpan>> {
        let (span, bytes) = self.spans.pop_front()?;
        self.bytes -= bytes;
        Some(span)
    }

    /// Lets the oldest spans go (into `let_go`) until the rest fit in `max_bytes`, counting
    /// each.
    fn trim_to_bytes(&mut self, let_go: &mut Vec<Arc<FinishedSpan>>) {
        while self.bytes > self.max_bytes {
            let Some(span) = self.pop_oldest() else { break };
            let_go.push(span);
            if let Some(counter) = &self.dropped {
                counter.inc();
            }
        }
    }
}

fn remember_if_slow(slow: &mut VecDeque<(u64, Vec<SlowTrace>)>, span: &FinishedSpan) {
    let end = span.end;
    let minute = end
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() / 60)
        .unwrap_or(0);
    if slow.back().is_none_or(|(m, _)| *m < minute) {
        slow.push_back((minute, Vec::with_capacity(SLOW_PER_MINUTE)));
        while slow.len() > SLOW_MINUTES_KEPT {
            slow.pop_front();
        }
    }
    // Spans end nearly in order; one ending in an earlier minute goes to that minute if kept.
    let Some((_, traces)) = slow.iter_mut().rev().find(|(m, _)| *m <= minute) else {
        return;
    };
    if traces.len() == SLOW_PER_MINUTE && traces.last().is_some_and(|t| t.duration >= span.duration) {
        return;
    }
    let status_code = match span.attribute("http.response.status_code") {
        Some(AttrValue::I64(code)) => Some(*code),
        _ => None,
    };
    let entry = SlowTrace {
        trace_id: span.context.trace_id,
        root: span.name.to_string(),
        start: span.start,
        end: span.end,
        duration: span.duration,
        error: matches!(span.status, SpanStatus::Error(_)),
        status_code,
    };
    let at = traces.partition_point(|t| t.duration >= span.duration);
    traces.insert(at, entry);
    traces.truncate(SLOW_PER_MINUTE);
}

/// Which traces the report shows. Parsed from the `/debug/traces` query string by
/// [`TraceQuery::parse`].
#[derive(Clone, Debug, PartialEq)]
pub struct TraceQuery {
    /// Only traces lasting at least this long (`?min_duration_ms=`).
    pub min_duration: Option<Duration>,
    /// Only failed or only successful traces (`?status=error|ok`).
    pub status: StatusFilter,
    /// At most this many traces (`?limit=`, default 20, at most 1000).
    pub limit: usize,
    /// Only this trace (`?trace_id=`, 32 lowercase hex digits).
    pub trace_id: Option<u128>,
    /// The slowest traces of how many last minutes (`?slowest_minutes=`, default 15, at most
    /// [`SLOW_MINUTES_KEPT`]).
    pub slowest_minutes: usize,
}

/// A filter on trace status. A trace failed when any of its spans did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StatusFilter {
    /// All traces.
    #[default]
    Any,
    /// Traces with an error span.
    Error,
    /// Traces without one.
    Ok,
}

impl Default for TraceQuery {
    fn default() -> Self {
        TraceQuery {
            min_duration: None,
            status: StatusFilter::Any,
            limit: 20,
            trace_id: None,
            slowest_minutes: 15,
        }
    }
}

impl TraceQuery {
    /// The largest `?limit=`.
    pub const MAX_LIMIT: usize = 1000;

    /// Parses a query string (`min_duration_ms=250&status=error&limit=5`). Unknown parameters
    /// are ignored; a known one with a bad value is an error naming it.
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::trace::{StatusFilter, TraceQuery};
    /// let query = TraceQuery::parse(Some("min_duration_ms=2.5&status=error&limit=5")).unwrap();
    /// assert_eq!(query.min_duration, Some(Duration::from_micros(2500)));
    /// assert_eq!(query.status, StatusFilter::Error);
    /// assert_eq!(query.limit, 5);
    /// assert!(TraceQuery::parse(Some("limit=lots")).is_err());
    /// ```
    pub fn parse(query: Option<&str>) -> Result<TraceQuery, String> {
        let mut out = TraceQuery::default();
        for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            match key {
                "min_duration_ms" => {
                    let ms: f64 = value
                        .parse()
                        .ok()
                        .filter(|ms: &f64| ms.is_finite() && *ms >= 0.0 && *ms < 1e12)
                        .ok_or("min_duration_ms must be a non-negative number of milliseconds")?;
                    out.min_duration = Some(Duration::from_secs_f64(ms / 1000.0));
                }
                "status" => {
                    out.status = match value {
                        "error" => StatusFilter::Error,
                        "ok" => StatusFilter::Ok,
                        "any" | "" => StatusFilter::Any,
                        _ => return Err("status must be error, ok or any".to_string()),
                    }
                }
                "limit" => {
                    out.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|l| (1..=Self::MAX_LIMIT).contains(l))
                        .ok_or(format!("limit must be between 1 and {}", Self::MAX_LIMIT))?;
                }
                "trace_id" => {
                    let valid =
                        value.len() == 32 && value.bytes().all(|c| matches!(c, b'0'..=b'9' | b'a'..=b'f'));
                    let id = valid
                        .then(|| u128::from_str_radix(value, 16).ok())
                        .flatten()
                        .filter(|id| *id != 0)
                        .ok_or("trace_id must be 32 lowercase hex digits, not all zero")?;
                    out.trace_id = Some(id);
                }
                "slowest_minutes" => {
                    out.slowest_minutes = value
                        .parse::<usize>()
                        .ok()
                        .filter(|m| (1..=SLOW_MINUTES_KEPT).contains(m))
                        .ok_or(format!(
                            "slowest_minutes must be between 1 and {SLOW_MINUTES_KEPT}"
                        ))?;
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

#[derive(Default)]
struct Group<'a> {
    /// Newest (last ended) first.
    spans: Vec<&'a FinishedSpan>,
}

struct Summary {
    start: SystemTime,
    end: SystemTime,
    duration: Duration,
    error: bool,
}

impl Group<'_> {
    /// Sorts the spans by start and sums the trace up; `None` for an empty group.
    fn summarize(&mut self) -> Option<Summary> {
        self.spans.sort_by_key(|s| s.start);
        let start = self.spans.iter().map(|s| s.start).min()?;
        let end = self.spans.iter().map(|s| s.end).max()?;
        let error = self
            .spans
            .iter()
            .any(|s| matches!(s.status, SpanStatus::Error(_)));
        Some(Summary {
            start,
            end,
            duration: end.duration_since(start).unwrap_or_default(),
            error,
        })
    }

    fn to_json(&self, summary: &Summary) -> Value {
        let first = self.spans[0];
        let held: HashSet<u64> = self.spans.iter().map(|s| s.context.span_id).collect();
        // The root as seen here: the earliest span whose parent is not held (it is remote, or
        // was overwritten in the buffer).
        let root = self
            .spans
            .iter()
            .find(|s| s.parent_span_id.is_none_or(|p| !held.contains(&p)))
            .copied()
            .unwrap_or(first);
        json!({
            "trace_id": format!("{:032x}", first.context.trace_id),
            "root": shown_str(&root.name),
            "start": rfc3339(summary.start),
            "duration_ms": millis(summary.duration),
            "span_count": self.spans.len(),
            "error": summary.error,
            "sampled": root.context.sampled,
            "spans": self.spans.iter().map(|s| span_json(s, summary.start)).collect::<Vec<_>>(),
        })
    }
}

fn span_json(span: &FinishedSpan, trace_start: SystemTime) -> Value {
    let (status, message) = match &span.status {
        SpanStatus::Unset => ("unset", None),
        SpanStatus::Ok => ("ok", None),
        SpanStatus::Error(message) => ("error", Some(shown_str(message))),
    };
    let kind = match span.kind {
        SpanKind::Internal => "internal",
        SpanKind::Server => "server",
        SpanKind::Client => "client",
    };
    let links: Vec<Value> = span
        .links
        .iter()
        .map(|link| {
            json!({
                "trace_id": format!("{:032x}", link.context.trace_id),
                "span_id": format!("{:016x}", link.context.span_id),
                "attributes": attributes_json(&link.attributes),
            })
        })
        .collect();
    let events: Vec<Value> = span
        .events
        .iter()
        .map(|event| {
            json!({
                "name": shown_str(&event.name),
                "offset_ms": millis(event.time.duration_since(trace_start).unwrap_or_default()),
                "attributes": attributes_json(&event.attributes),
                "dropped_attributes_count": event.dropped_attributes_count,
            })
        })
        .collect();
    let mut json = json!({
        "span_id": format!("{:016x}", span.context.span_id),
        "parent_span_id": span.parent_span_id.map(|p| format!("{p:016x}")),
        "name": shown_str(&span.name),
        "kind": kind,
        "offset_ms": millis(span.start.duration_since(trace_start).unwrap_or_default()),
        "duration_ms": millis(span.duration),
        "status": status,
        "status_message": message,
        "attributes": attributes_json(&span.attributes),
        "events": events,
        "links": links,
        "dropped_attributes_count": span.dropped.attributes,
        "dropped_events_count": span.dropped.events,
        "dropped_links_count": span.dropped.links,
    });
    // Taken while a labelling CPU capture ran: its samples, top frames and trace profile.
    if let Some(samples) = crate::profile::span_samples::lookup(span.context.span_id) {
        json["cpu_samples"] = json!(samples);
    }
    json
}

/// A string as a report shows it: secrets masked by shape, cut to [`REPORT_VALUE_LENGTH`].
fn shown_str(value: &str) -> String {
    cut_for_report(&mask_secrets(value))
}

/// `value` cut to [`REPORT_VALUE_LENGTH`] bytes, marked with `…` when cut.
fn cut_for_report(value: &str) -> String {
    if value.len() <= REPORT_VALUE_LENGTH {
        return value.to_string();
    }
    format!("{}…", truncated(value, REPORT_VALUE_LENGTH))
}

/// Attributes as a JSON object, masked as exported spans are ([`super::masked_attr`]: by key
/// name and by value shape), strings cut to [`REPORT_VALUE_LENGTH`].
fn attributes_json(attributes: &[(std::borrow::Cow<'static, str>, AttrValue)]) -> Map<String, Value> {
    let mut map = Map::new();
    for (key, value) in attributes {
        let shown = match &*super::masked_attr(key, value) {
            AttrValue::Str(s) => Value::from(cut_for_report(s)),
            AttrValue::I64(v) => Value::from(*v),
            AttrValue::F64(v) => Value::from(*v),
            AttrValue::Bool(v) => Value::from(*v),
        };
        // A key set twice shows its last value, as `FinishedSpan::attribute` reads it.
        map.insert(key.to_string(), shown);
    }
    map
}

/// Milliseconds with microsecond precision.
fn millis(duration: Duration) -> f64 {
    (duration.as_micros() as f64) / 1000.0
}

/// `2026-11-24T13:59:20.123456Z`.
pub(crate) fn rfc3339(time: SystemTime) -> String {
    let since = time.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = since.as_secs();
    let (days, rem) = (secs / 86_400, secs % 86_400);
    // Howard Hinnant's civil_from_days.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:06}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60,
        since.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanContext, SpanEvent};
    use std::borrow::Cow;

    /// One base time for all test spans, so that offsets are exact.
    static BASE: OnceLock<SystemTime> = OnceLock::new();

    fn span(trace: u128, id: u64, parent: Option<u64>, start_ms: u64, duration_ms: u64) -> FinishedSpan {
        FinishedSpan {
            name: Cow::Owned(format!("span-{id}")),
            context: SpanContext {
                trace_id: trace,
                span_id: id,
                sampled: true,
            },
            parent_span_id: parent,
            kind: SpanKind::Internal,
            start: *BASE.get_or_init(|| SystemTime::now() - Duration::from_secs(1))
                + Duration::from_millis(start_ms),
            end: *BASE.get().unwrap() + Duration::from_millis(start_ms + duration_ms),
            duration: Duration::from_millis(duration_ms),
            attributes: crate::trace::Attributes::new(),
            events: Vec::new(),
            links: Vec::new(),
            status: SpanStatus::Unset,
            dropped: Default::default(),
        }
    }

    #[test]
    fn bounded_grouped_newest_first() {
        let recent = RecentSpans::new(5);
        recent.on_end(span(1, 11, Some(10), 0, 5));
        recent.on_end(span(1, 10, None, 0, 10));
        let mut failed = span(2, 21, Some(20), 20, 50);
        failed.status = SpanStatus::Error("db down at postgres://u:pw@h/db".into());
        recent.on_end(failed);
        recent.on_end(span(2, 20, None, 15, 60));
        recent.on_end(span(3, 30, None, 100, 1));
        assert_eq!(recent.len(), 5);
        let report = recent.report(&TraceQuery::default());
        let ids: Vec<&str> = report["traces"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["trace_id"].as_str().unwrap())
            .collect();
        assert_eq!(
            ids,
            [
                format!("{:032x}", 3),
                format!("{:032x}", 2),
                format!("{:032x}", 1)
            ]
        );
        let two = &report["traces"][1];
        assert_eq!(two["root"], "span-20");
        assert_eq!(two["duration_ms"], 60.0);
        assert_eq!(two["error"], true);
        assert_eq!(two["spans"][0]["name"], "span-20", "spans by start time");
        assert_eq!(two["spans"][1]["offset_ms"], 5.0);
        assert_eq!(
            two["spans"][1]["status_message"],
            "db down at postgres://u:***@h/db"
        );
        assert_eq!(two["spans"][1]["parent_span_id"], format!("{:016x}", 20));

        // One more span overwrites the oldest (trace 1's child): its trace now shows one span.
        recent.on_end(span(4, 40, None, 200, 1));
        assert_eq!(recent.len(), 5);
        let report = recent.report(&TraceQuery::default());
        let one = report["traces"].as_array().unwrap().last().unwrap().clone();
        assert_eq!(one["span_count"], 1);
        recent.set_capacity(2);
        assert_eq!(recent.len(), 2);
    }

    #[test]
    fn filters() {
        let recent = RecentSpans::new(100);
        recent.on_end(span(1, 10, None, 0, 10));
        let mut failed = span(2, 20, None, 0, 300);
        failed.status = SpanStatus::Error("boom".into());
        recent.on_end(failed);
        recent.on_end(span(3, 30, None, 0, 500));
        let ids = |query: &str| -> Vec<String> {
            let report = recent.report(&TraceQuery::parse(Some(query)).unwrap());
            report["traces"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| {
                    t["trace_id"]
                        .as_str()
                        .unwrap()
                        .trim_start_matches('0')
                        .to_string()
                })
                .collect()
        };
        assert_eq!(ids(""), ["3", "2", "1"]);
        assert_eq!(ids("min_duration_ms=300"), ["3", "2"]);
        assert_eq!(ids("status=error"), ["2"]);
        assert_eq!(ids("status=ok&min_duration_ms=11"), ["3"]);
        assert_eq!(ids("limit=1"), ["3"]);
        assert_eq!(ids(&format!("trace_id={:032x}", 1)), ["1"]);
        for bad in [
            "limit=0",
            "limit=1001",
            "status=bad",
            "min_duration_ms=-1",
            "trace_id=XYZ",
            "slowest_minutes=61",
        ] {
            assert!(TraceQuery::parse(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn attributes_are_masked() {
        let recent = RecentSpans::new(10);
        let mut s = span(1, 1, None, 0, 1);
        s.attributes = vec![
            (Cow::Borrowed("db.password"), AttrValue::from("hunter2")),
            (Cow::Borrowed("api_key"), AttrValue::I64(1234)),
            (
                Cow::Borrowed("db.connection_string"),
                AttrValue::from("postgres://u:pw@h/db"),
            ),
            (Cow::Borrowed("http.response.status_code"), AttrValue::I64(200)),
        ]
        .into();
        s.events = vec![SpanEvent {
            name: Cow::Borrowed("exception"),
            time: s.start,
            attributes: vec![(Cow::Borrowed("session_token"), AttrValue::from("abc"))],
            dropped_attributes_count: 0,
        }];
        recent.on_end(s);
        let report = recent.report(&TraceQuery::default());
        let attributes = &report["traces"][0]["spans"][0]["attributes"];
        assert_eq!(attributes["db.password"], "***");
        assert_eq!(attributes["api_key"], "***");
        assert_eq!(attributes["db.connection_string"], "postgres://u:***@h/db");
        assert_eq!(attributes["http.response.status_code"], 200);
        assert_eq!(
            report["traces"][0]["spans"][0]["events"][0]["attributes"]["session_token"],
            "***"
        );
        let text = report.to_string();
        assert!(!text.contains("hunter2") && !text.contains("pw@") && !text.contains("1234"));
    }

    #[test]
    fn slowest_survive_the_ring() {
        let recent = RecentSpans::new(2);
        for i in 1..=30u64 {
            recent.on_end(span(u128::from(i), i, None, 0, i));
        }
        let report = recent.report(&TraceQuery::default());
        let slowest = report["slowest"]["traces"].as_array().unwrap();
        assert_eq!(slowest.len(), SLOW_PER_MINUTE);
        assert_eq!(slowest[0]["duration_ms"], 30.0);
        assert_eq!(slowest[9]["duration_ms"], 21.0);
        assert_eq!(slowest[0]["spans_held"], true);
        assert_eq!(slowest[9]["spans_held"], false);
        // Children are not roots.
        let recent = RecentSpans::new(10);
        recent.on_end(span(1, 2, Some(1), 0, 500));
        assert!(recent.report(&TraceQuery::default())["slowest"]["traces"]
            .as_array()
            .unwrap()
            .is_empty());
    }

    #[test]
    fn a_batch_keeps_what_the_same_spans_one_by_one_keep() {
        // Spans of uneven sizes, more than the capacity, with a byte bound that lets some go
        // sooner. Held: the longest run of the newest that fits both bounds, the same as when
        // the spans come one at a time, with the same let-go count.
        let spans = || -> Vec<FinishedSpan> {
            (1..=12u64)
                .map(|i| {
                    let mut span = span(1, i, Some(100), 0, 1);
                    let blob = "x".repeat(if i % 3 == 0 { 3000 } else { 10 });
                    span.attributes.push(("blob".into(), AttrValue::from(blob)));
                    span
                })
                .collect()
        };
        let sizes: Vec<usize> = spans().iter().map(FinishedSpan::approximate_bytes).collect();
        let (capacity, max_bytes) = (6, sizes[8..].iter().sum::<usize>() + 100);
        let mut expected = Vec::new();
        let mut bytes = 0;
        for (i, size) in sizes.iter().enumerate().rev() {
            if expected.len() == capacity || bytes + size > max_bytes {
                break;
            }
            bytes += size;
            expected.insert(0, i as u64 + 1);
        }
        assert!(expected.len() < capacity, "the byte bound decides: {expected:?}");

        let held = |batched: bool| {
            let recent = RecentSpans::new(capacity);
            recent.set_max_bytes(max_bytes);
            let dropped = crate::metrics::Registry::new()
                .counter("recent_dropped_total", "test")
                .unwrap();
            recent.count_drops_in(dropped.clone());
            recent.on_end(span(1, 99, Some(100), 0, 1));
            if batched {
                recent.on_end_batch(spans());
            } else {
                spans().into_iter().for_each(|span| recent.on_end(span));
            }
            let state = recent.lock();
            let ids: Vec<u64> = state.spans.iter().map(|(s, _)| s.context.span_id).collect();
            (ids, state.bytes, dropped.get())
        };
        let (ids, held_bytes, dropped) = held(true);
        assert_eq!(ids, expected);
        assert_eq!(held_bytes, bytes);
        assert!(dropped > 0, "some were let go for bytes");
        assert_eq!(held(false), (ids, held_bytes, dropped));
    }

    #[test]
    fn timestamps() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00.000000Z");
        let t = UNIX_EPOCH + Duration::from_micros(1_795_960_760_123_456);
        assert_eq!(rfc3339(t), "2026-11-29T13:59:20.123456Z");
        let leap = UNIX_EPOCH + Duration::from_secs(951_782_400); // 2000-02-29
        assert_eq!(rfc3339(leap), "2000-02-29T00:00:00.000000Z");
    }
}
