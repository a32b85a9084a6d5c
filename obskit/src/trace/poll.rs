//! Waiting or computing: how long a future spent being polled, beside how long it lived.
//!
//! A slow async span either waited (on a lock, the network, a queue: its future was parked) or
//! computed (its polls took the time, and held a worker thread meanwhile). The wall time alone
//! cannot tell them apart; the sum of the polls' durations can. [`PollTime`] adds up the polls of
//! one future, and the span of that future gets three attributes when it ends:
//!
//! | attribute | value |
//! |---|---|
//! | [`BUSY_NS`] (`time.busy_ns`) | nanoseconds spent inside `poll` |
//! | [`IDLE_NS`] (`time.idle_ns`) | the span's wall time less that |
//! | [`POLLS`] (`time.polls`) | how many times the future was polled |
//!
//! (`time.busy` and `time.idle` are what `tracing-subscriber` prints for a closed span, and
//! tokio-console shows.) An `#[instrumented]` async function also records the busy time of each
//! call in `function_calls_busy_duration_seconds`, beside `function_calls_duration_seconds`.
//!
//! Only what is recorded pays: a future whose span is unsampled and whose function has no metrics
//! reads no clock on its polls; otherwise each poll costs two clock reads.

use crate::clock::Tick;

/// `time.busy_ns`: the nanoseconds a span's future spent being polled.
pub const BUSY_NS: &str = "time.busy_ns";
/// `time.idle_ns`: the span's wall time less [`BUSY_NS`]: what it spent waiting.
pub const IDLE_NS: &str = "time.idle_ns";
/// `time.polls`: how many times the span's future was polled.
pub const POLLS: &str = "time.polls";

/// The polls of one future, added up: see the [module](self).
#[derive(Clone, Copy, Debug, Default)]
pub struct PollTime {
    /// Whether polls are timed at all.
    on: bool,
    busy_ticks: u64,
    polls: u32,
}

impl PollTime {
    /// A sum that times each poll when `on`, or does nothing (reads no clock).
    #[inline(always)]
    pub(crate) fn new(on: bool) -> Self {
        PollTime {
            on,
            busy_ticks: 0,
            polls: 0,
        }
    }

    /// Runs one poll, timing it when on.
    #[inline(always)]
    pub(crate) fn measure<R>(&mut self, poll: impl FnOnce() -> R) -> R {
        if !self.on {
            return poll();
        }
        let started = Tick::now();
        let out = poll();
        self.busy_ticks += started.ticks_until(Tick::now());
        self.polls = self.polls.saturating_add(1);
        out
    }

    /// Whether polls were timed.
    pub fn is_on(&self) -> bool {
        self.on
    }

    /// The time spent in polls, in clock ticks.
    pub(crate) fn busy_ticks(&self) -> u64 {
        self.busy_ticks
    }

    /// The time spent in polls, in nanoseconds.
    pub fn busy_nanos(&self) -> u64 {
        crate::clock::ticks_as_nanos(self.busy_ticks)
    }

    /// How many polls were timed.
    pub fn polls(&self) -> u32 {
        self.polls
    }
}
