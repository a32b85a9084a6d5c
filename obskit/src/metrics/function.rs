//! Per-function call metrics under the names of the autometrics 1.0 specification:
//! `function_calls_total{function,module,result}`, `function_calls_duration_seconds{function,module}`
//! and `function_calls_concurrent{function,module}`; and, of async functions,
//! `function_calls_busy_duration_seconds{function,module}`: the time each call spent being polled
//! (see [`crate::trace::poll`]), with the same buckets.
//!
//! Each annotated function owns a `static` [`FunctionSite`] that the macro emits. A call costs
//! two clock reads and four plain (unlocked) additions to the calling thread's own cells (see
//! [`super::cells`]): started, then ended, one bucket and the sum in nanoseconds, plus one more
//! on error. There is no label lookup, no lock and no `lock`-prefixed instruction: the labels
//! are the site's own `&'static str`s, and the threads' cells are summed only when `/metrics` is
//! scraped.
//!
//! The call count is not stored separately: it is the sum of the buckets, and the `ok` count is
//! that sum less the errors, kept monotonic per site so that a scrape that races an erroring
//! call never makes the counter go backwards. In flight is started less ended (a cancelled call
//! ends without a bucket).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::{Arc, Mutex, OnceLock};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{self, MetricFamily, MetricType};

use super::cells;
use super::HistogramExemplars;
use crate::clock::{self, Tick, TickBounds};
use crate::names::{self, label};
use crate::objectives::Objective;

/// Bucket upper bounds of `function_calls_duration_seconds`, in seconds (autometrics' defaults).
pub const DURATION_BUCKETS_SECONDS: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

const BUCKET_COUNT: usize = DURATION_BUCKETS_SECONDS.len();

/// The same bounds in clock ticks, so that a call compares its raw tick difference.
static DURATION_BOUNDS: TickBounds<BUCKET_COUNT> =
    TickBounds::new(super::buckets::scaled(&DURATION_BUCKETS_SECONDS, 1e9));

pub(crate) const CALLS_TOTAL: &str = names::FUNCTION_CALLS_TOTAL.name;
pub(crate) const CALLS_DURATION: &str = names::FUNCTION_CALLS_DURATION_SECONDS.name;
pub(crate) const CALLS_CONCURRENT: &str = names::FUNCTION_CALLS_CONCURRENT.name;
const CALLS_BUSY: &str = names::FUNCTION_CALLS_BUSY_DURATION_SECONDS.name;

/// The metrics of one annotated function. Created in a `static` by `#[instrumented]`.
pub struct FunctionSite {
    function: &'static str,
    module: &'static str,
    /// The objective the function serves (`#[instrumented(objective = ...)]`): its labels.
    objective: Option<Objective>,
    /// Base index of the site's cells ([`cells`]), [`UNALLOCATED`] until the first call.
    cells: AtomicUsize,
    /// The largest `ok` count a scrape has reported (see [`FunctionSite::snapshot`]).
    ok_reported: AtomicU64,
    /// Exemplar cells of this site's duration series, resolved at the first sampled call.
    exemplars: OnceLock<Arc<HistogramExemplars>>,
}

const UNALLOCATED: usize = usize::MAX;

/// The site's cells, by offset from its base.
const STARTED: usize = 0;
const ENDED: usize = 1;
const ERRORS: usize = 2;
/// Non-cumulative: `BUCKETS + i` counts calls in `(bound[i-1], bound[i]]`, the last one
/// everything above the largest bound.
const BUCKETS: usize = 3;
/// The sum of the calls' durations in ticks, scaled when scraped.
const SUM_TICKS: usize = BUCKETS + BUCKET_COUNT + 1;
/// The busy time of async calls ([`CallTimer::finish_polled`]), bucketed like the durations.
const BUSY_BUCKETS: usize = SUM_TICKS + 1;
const BUSY_SUM_TICKS: usize = BUSY_BUCKETS + BUCKET_COUNT + 1;
const SITE_CELLS: usize = BUSY_SUM_TICKS + 1;

static SITES: Mutex<Vec<&'static FunctionSite>> = Mutex::new(Vec::new());

impl FunctionSite {
    /// A site for `function` in `module` (the `function` and `module` label values).
    pub const fn new(function: &'static str, module: &'static str) -> Self {
        FunctionSite {
            function,
            module,
            objective: None,
            cells: AtomicUsize::new(UNALLOCATED),
            ok_reported: AtomicU64::new(0),
            exemplars: OnceLock::new(),
        }
    }

    /// The site of a function serving `objective`: its series carry the objective's labels.
    /// Evaluated by the compiler (the site is a `static`), so an objective without a target is
    /// a compile error.
    pub const fn objective(mut self, objective: Objective) -> Self {
        self.objective = Some(objective.checked());
        self
    }

    /// The labels of the site's `function_calls_duration_seconds` series.
    fn duration_labels(&self) -> Vec<(&'static str, &'static str)> {
        let mut labels = vec![(label::FUNCTION, self.function), (label::MODULE, self.module)];
        if let Some(objective) = self.objective.as_ref().and_then(Objective::duration_labels) {
            labels.extend(objective);
        }
        labels
    }

    /// Starts timing one call. Finish it with [`CallTimer::finish`]; dropping the timer
    /// unfinished (a cancelled future) only releases the in-flight count, and dropping it while
    /// panicking records an error.
    #[inline]
    pub fn start(&'static self) -> CallTimer {
        if !crate::instrumentation::is_enabled() {
            return CallTimer {
                site: self,
                start: None,
            };
        }
        let mut base = self.cells.load(Relaxed);
        if base == UNALLOCATED {
            base = self.register();
        }
        cells::add_many(base, &[(STARTED, 1)]);
        CallTimer {
            site: self,
            start: Some(Tick::now()),
        }
    }

    /// Allocates the site's cells and lists it for the collector, once; returns the cells' base.
    #[cold]
    fn register(&'static self) -> usize {
        let mut sites = SITES.lock().unwrap_or_else(|p| p.into_inner());
        let mut base = self.cells.load(Relaxed);
        if base == UNALLOCATED {
            // A site is a `static`: its cells are never released.
            base = cells::allocate(SITE_CELLS);
            self.cells.store(base, Relaxed);
            sites.push(self);
            drop(sites);
            // The collector lives in the global registry; make sure it exists.
            let _ = super::Registry::global();
        }
        base
    }

    /// Records a call that started on this site (so its cells are allocated) and lasted
    /// `ticks`.
    #[inline(always)]
    fn record(&self, ticks: u64, ok: bool) {
        let index = bucket_of(ticks);
        let base = self.cells.load(Relaxed);
        // The error before the bucket: see `snapshot` for why the order matters.
        if ok {
            cells::add_many(base, &[(BUCKETS + index, 1), (SUM_TICKS, ticks), (ENDED, 1)]);
        } else {
            cells::add_many(
                base,
                &[(ERRORS, 1), (BUCKETS + index, 1), (SUM_TICKS, ticks), (ENDED, 1)],
            );
        }
        if crate::trace::is_enabled() {
            self.record_exemplar(ticks);
        }
    }

    /// Records the busy time of an async call that started on this site.
    #[inline]
    fn record_busy(&self, ticks: u64) {
        let base = self.cells.load(Relaxed);
        cells::add_many(
            base,
            &[(BUSY_BUCKETS + bucket_of(ticks), 1), (BUSY_SUM_TICKS, ticks)],
        );
    }

    /// A call that did not return: an error when unwinding from a panic, else cancelled (a
    /// dropped future): not a call that returned, but no longer in flight.
    #[cold]
    fn record_unfinished(&self, start: Tick) {
        if std::thread::panicking() {
            self.record(start.ticks_until(Tick::now()), false);
        } else {
            cells::add_many(self.cells.load(Relaxed), &[(ENDED, 1)]);
        }
    }

    /// The trace the call ran in becomes its bucket's exemplar. The function's own span has
    /// ended by now, so only the trace id is recorded (the span current here is the caller's).
    #[cold]
    fn record_exemplar(&self, ticks: u64) {
        if let Some(context) = crate::trace::current().filter(|c| c.sampled) {
            let exemplars = self.exemplars.get_or_init(|| {
                super::Registry::global().exemplars().histogram(
                    CALLS_DURATION,
                    &self.duration_labels(),
                    &DURATION_BUCKETS_SECONDS,
                )
            });
            let seconds = clock::ticks_as_nanos(ticks) as f64 / 1e9;
            exemplars.record(seconds, context.trace_id, None);
        }
    }

    /// Reads the site from every thread's cells.
    fn snapshot(&self, reader: &cells::Reader) -> Snapshot {
        let base = self.cells.load(Relaxed);
        if base == UNALLOCATED {
            return Snapshot::default();
        }
        let mut raw = [0u64; SITE_CELLS];
        reader.sum_at(base, &mut raw);
        // An erroring call adds its error before its bucket, but a reader on another core may
        // see the two in either order: `ok` may undercount for a moment (an error counted whose
        // bucket was not yet seen), and then dip below a value already reported. Holding the
        // largest `ok` reported so far keeps the counter monotonic without drift, since every
        // bucket is eventually seen.
        let buckets: [u64; BUCKET_COUNT + 1] = std::array::from_fn(|i| raw[BUCKETS + i]);
        let busy_buckets: [u64; BUCKET_COUNT + 1] = std::array::from_fn(|i| raw[BUSY_BUCKETS + i]);
        let errors = raw[ERRORS];
        let total: u64 = buckets.iter().sum();
        let ok_now = total.saturating_sub(errors);
        let ok = self.ok_reported.fetch_max(ok_now, Relaxed).max(ok_now);
        Snapshot {
            buckets,
            sum_seconds: clock::ticks_as_nanos(raw[SUM_TICKS]) as f64 / 1e9,
            busy_buckets,
            busy_sum_seconds: clock::ticks_as_nanos(raw[BUSY_SUM_TICKS]) as f64 / 1e9,
            ok,
            errors,
            // Started and ended may be seen out of order too: a negative reading shows as 0.
            concurrent: raw[STARTED] as i64 - raw[ENDED] as i64,
        }
    }
}

/// The bucket of a duration in ticks (`BUCKET_COUNT`: above the largest bound).
#[inline(always)]
fn bucket_of(ticks: u64) -> usize {
    DURATION_BOUNDS
        .ticks()
        .iter()
        .position(|&bound| ticks <= bound)
        .unwrap_or(BUCKET_COUNT)
}

#[derive(Default)]
struct Snapshot {
    buckets: [u64; BUCKET_COUNT + 1],
    sum_seconds: f64,
    busy_buckets: [u64; BUCKET_COUNT + 1],
    busy_sum_seconds: f64,
    ok: u64,
    errors: u64,
    concurrent: i64,
}

impl Snapshot {
    fn add(&mut self, other: &Snapshot) {
        for (a, b) in self.buckets.iter_mut().zip(other.buckets) {
            *a += b;
        }
        self.sum_seconds += other.sum_seconds;
        for (a, b) in self.busy_buckets.iter_mut().zip(other.busy_buckets) {
            *a += b;
        }
        self.busy_sum_seconds += other.busy_sum_seconds;
        self.ok += other.ok;
        self.errors += other.errors;
        self.concurrent += other.concurrent;
    }
}

/// One call being timed. See [`FunctionSite::start`].
#[must_use = "a call timer records nothing unless finished"]
pub struct CallTimer {
    site: &'static FunctionSite,
    /// `None` when instrumentation is off: the call is not recorded at all.
    start: Option<Tick>,
}

impl CallTimer {
    /// The clock reading the call started at; `None` when it is not recorded.
    #[inline(always)]
    pub fn started_at(&self) -> Option<Tick> {
        self.start
    }

    /// Records the call as finished, successful or not.
    #[inline(always)]
    pub fn finish(self, ok: bool) {
        self.finish_at(ok, None);
    }

    /// Records the call as finished at `ended`, a clock reading already taken for that moment
    /// (the end of the call's span), or now when there is none.
    #[inline(always)]
    pub fn finish_at(mut self, ok: bool, ended: Option<Tick>) {
        self.finish_in_place(ok, ended);
    }

    /// [`finish_at`](Self::finish_at) for an async call, with the time its polls took (recorded
    /// when they were timed).
    #[inline(always)]
    pub fn finish_polled(mut self, ok: bool, ended: Option<Tick>, poll: &crate::trace::poll::PollTime) {
        if self.start.is_some() && poll.is_on() {
            self.site.record_busy(poll.busy_ticks());
        }
        self.finish_in_place(ok, ended);
    }

    /// [`finish_at`](Self::finish_at) for a timer that is not owned (the macro's guard borrows
    /// it): it records nothing more, and its `Drop` then does nothing.
    #[inline(always)]
    pub fn finish_in_place(&mut self, ok: bool, ended: Option<Tick>) {
        if let Some(start) = self.start.take() {
            self.site
                .record(start.ticks_until(ended.unwrap_or_else(Tick::now)), ok);
        }
    }
}

impl Drop for CallTimer {
    /// Inline: a finished timer (every call that returned) only tests its `start`.
    #[inline]
    fn drop(&mut self) {
        if let Some(start) = self.start {
            self.site.record_unfinished(start);
        }
    }
}

/// Renders every registered site as the three autometrics families. Registered once, in the
/// global registry.
pub(crate) struct FunctionMetricsCollector;

fn descs() -> &'static [Desc; 4] {
    static DESCS: OnceLock<[Desc; 4]> = OnceLock::new();
    DESCS.get_or_init(|| {
        let desc = |name: &str, help: &str, labels: &[&str]| {
            Desc::new(
                name.to_string(),
                help.to_string(),
                labels.iter().map(|l| l.to_string()).collect(),
                Default::default(),
            )
            .expect("static descriptor is valid")
        };
        [
            desc(
                CALLS_TOTAL,
                names::FUNCTION_CALLS_TOTAL.help,
                &[label::FUNCTION, label::MODULE, label::RESULT],
            ),
            desc(
                CALLS_DURATION,
                names::FUNCTION_CALLS_DURATION_SECONDS.help,
                &[label::FUNCTION, label::MODULE],
            ),
            desc(
                CALLS_CONCURRENT,
                names::FUNCTION_CALLS_CONCURRENT.help,
                &[label::FUNCTION, label::MODULE],
            ),
            desc(
                CALLS_BUSY,
                names::FUNCTION_CALLS_BUSY_DURATION_SECONDS.help,
                &[label::FUNCTION, label::MODULE],
            ),
        ]
    })
}

fn labels(pairs: &[(&str, &str)]) -> Vec<proto::LabelPair> {
    pairs
        .iter()
        .map(|(name, value)| {
            let mut pair = proto::LabelPair::default();
            pair.set_name(name.to_string());
            pair.set_value(value.to_string());
            pair
        })
        .collect()
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<proto::Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_string());
    family.set_help(help.to_string());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

/// A histogram over [`DURATION_BUCKETS_SECONDS`] from a snapshot's counts.
fn histogram(counts: &[u64; BUCKET_COUNT + 1], sum_seconds: f64) -> proto::Histogram {
    super::exposition::histogram(&DURATION_BUCKETS_SECONDS, counts, sum_seconds)
}

impl Collector for FunctionMetricsCollector {
    fn desc(&self) -> Vec<&Desc> {
        descs().iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let sites: Vec<&'static FunctionSite> = SITES.lock().unwrap_or_else(|p| p.into_inner()).clone();
        // Two sites may carry the same labels (`name = "..."` on two functions): one series each.
        let mut grouped: BTreeMap<(&str, &str, Option<Objective>), Snapshot> = BTreeMap::new();
        {
            let reader = cells::reader();
            for site in sites {
                grouped
                    .entry((site.function, site.module, site.objective))
                    .or_default()
                    .add(&site.snapshot(&reader));
            }
        }
        let (mut calls, mut durations, mut concurrent, mut busy) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        for ((function, module, objective), snap) in &grouped {
            // Label names in order, as the exposition lists them.
            let objective_calls = objective.as_ref().and_then(Objective::calls_labels);
            let objective_duration = objective.as_ref().and_then(Objective::duration_labels);
            for (result, value) in [("ok", snap.ok), ("error", snap.errors)] {
                // Like autometrics, the error series appears with the first error; except for a
                // success-rate objective, whose rules divide the errors' rate by the calls': with
                // no error series its success rate would be no data instead of 100 %.
                if result == "error" && value == 0 && objective_calls.is_none() {
                    continue;
                }
                let mut counter = proto::Counter::default();
                counter.set_value(value as f64);
                let mut metric = proto::Metric::default();
                let mut pairs = vec![(label::FUNCTION, *function), (label::MODULE, *module)];
                pairs.extend(objective_calls.into_iter().flatten());
                pairs.push((label::RESULT, result));
                metric.set_label(labels(&pairs));
                metric.set_counter(counter);
                calls.push(metric);
            }

            let mut metric = proto::Metric::default();
            let mut pairs = vec![(label::FUNCTION, *function), (label::MODULE, *module)];
            pairs.extend(objective_duration.into_iter().flatten());
            metric.set_label(labels(&pairs));
            metric.set_histogram(histogram(&snap.buckets, snap.sum_seconds));
            durations.push(metric);

            // Sync functions, and async ones before their first completed call, have none.
            if snap.busy_buckets.iter().any(|&count| count > 0) {
                let mut metric = proto::Metric::default();
                metric.set_label(labels(&[(label::FUNCTION, function), (label::MODULE, module)]));
                metric.set_histogram(histogram(&snap.busy_buckets, snap.busy_sum_seconds));
                busy.push(metric);
            }

            let mut gauge = proto::Gauge::default();
            gauge.set_value(snap.concurrent.max(0) as f64);
            let mut metric = proto::Metric::default();
            metric.set_label(labels(&[(label::FUNCTION, function), (label::MODULE, module)]));
            metric.set_gauge(gauge);
            concurrent.push(metric);
        }
        let [d_calls, d_duration, d_concurrent, d_busy] = descs();
        [
            family(CALLS_TOTAL, &d_calls.help, MetricType::COUNTER, calls),
            family(CALLS_DURATION, &d_duration.help, MetricType::HISTOGRAM, durations),
            family(
                CALLS_CONCURRENT,
                &d_concurrent.help,
                MetricType::GAUGE,
                concurrent,
            ),
            family(CALLS_BUSY, &d_busy.help, MetricType::HISTOGRAM, busy),
        ]
        .into_iter()
        .filter(|f| !f.get_metric().is_empty())
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static SITE: FunctionSite = FunctionSite::new("unit_test_fn", "obskit::metrics::function::tests");

    fn series(text: &str, prefix: &str) -> Option<f64> {
        text.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
    }

    #[test]
    fn records_calls_errors_durations_and_in_flight() {
        let t1 = SITE.start();
        let t2 = SITE.start();
        let in_flight = SITE.start();
        t1.finish(true);
        t2.finish(false);
        let text = crate::metrics::Registry::global().encode_text();
        let labels = r#"function="unit_test_fn",module="obskit::metrics::function::tests""#;
        assert_eq!(
            series(&text, &format!("function_calls_total{{{labels},result=\"ok\"}}")),
            Some(1.0),
            "{text}"
        );
        assert_eq!(
            series(
                &text,
                &format!("function_calls_total{{{labels},result=\"error\"}}")
            ),
            Some(1.0)
        );
        assert_eq!(
            series(
                &text,
                &format!("function_calls_duration_seconds_count{{{labels}}}")
            ),
            Some(2.0)
        );
        assert_eq!(
            series(&text, &format!("function_calls_concurrent{{{labels}}}")),
            Some(1.0)
        );
        drop(in_flight); // cancelled: leaves the in-flight gauge, records no call
        let text = crate::metrics::Registry::global().encode_text();
        assert_eq!(
            series(&text, &format!("function_calls_concurrent{{{labels}}}")),
            Some(0.0)
        );
        assert_eq!(
            series(
                &text,
                &format!("function_calls_duration_seconds_count{{{labels}}}")
            ),
            Some(2.0)
        );
    }

    #[test]
    fn buckets_are_chosen_by_nanoseconds() {
        static S: FunctionSite = FunctionSite::new("bucket_fn", "m");
        S.register();
        // Calls are recorded in ticks; the bounds say how many ticks each one is.
        let bounds = DURATION_BOUNDS.ticks();
        let five_ms = bounds[0];
        S.record(five_ms / 2, true); // 2.5 ms -> le 0.005
        S.record(five_ms, true); // exactly 5 ms -> le 0.005 (upper bounds are inclusive)
        S.record(five_ms + 1, true); // just over -> le 0.01
        S.record(bounds[BUCKET_COUNT - 1] * 2, true); // 20 s -> +Inf only
        let snap = S.snapshot(&cells::reader());
        assert_eq!(snap.buckets[0], 2);
        assert_eq!(snap.buckets[1], 1);
        assert_eq!(snap.buckets[BUCKET_COUNT], 1);
        assert_eq!(snap.ok, 4);
        // The sum is scaled back to seconds: 2.5 + 5 + 5 ms + 20 s, to within a few ticks.
        assert!((snap.sum_seconds - 20.0125).abs() < 1e-6, "{}", snap.sum_seconds);
    }

    #[test]
    fn ok_count_never_goes_backwards() {
        static S: FunctionSite = FunctionSite::new("mono_fn", "m");
        let base = S.register();
        S.record(1, true);
        S.record(1, true);
        assert_eq!(S.snapshot(&cells::reader()).ok, 2);
        // An error counted before its bucket (a racing scrape) would make ok dip: it must not.
        cells::add_many(base, &[(ERRORS, 1)]);
        assert_eq!(S.snapshot(&cells::reader()).ok, 2);
    }
}
