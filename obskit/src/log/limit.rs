//! Per-callsite rate limiting: each `tracing` callsite (one `info!(...)` line in the source) may
//! emit at most a fixed number of records a second; the rest are suppressed and counted, and the
//! callsite's next emitted record says how many of its records were suppressed before it.
//!
//! The state lives in a fixed table of slots claimed by callsite address (open addressing, a
//! few probes), so the limiter allocates nothing and takes no lock: a burst from one hot error
//! path cannot drown the others, nor grow memory.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

use crate::clock::{self, Tick};

/// Records a callsite may emit a second by default.
pub const DEFAULT_RECORDS_PER_SECOND: u32 = 100;

/// Slots in the table: more than the callsites a service usually enables.
const SLOTS: usize = 1024;
/// Slots tried past a callsite's home slot before it shares the overflow slot.
const PROBES: usize = 8;

struct Slot {
    /// The callsite's address (0: free).
    owner: AtomicUsize,
    /// The current second (high 32 bits) and the records emitted in it (low 32 bits).
    window: AtomicU64,
    /// Records suppressed since the callsite last emitted one.
    suppressed: AtomicU64,
}

impl Slot {
    const fn new() -> Slot {
        Slot {
            owner: AtomicUsize::new(0),
            window: AtomicU64::new(0),
            suppressed: AtomicU64::new(0),
        }
    }
}

/// What the limiter decided for one record.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Decision {
    /// Emit it; the number is how many of this callsite's records were suppressed before it.
    Emit { suppressed_before: u64 },
    /// Suppress it.
    Suppress,
}

/// A per-callsite limit of records a second (0: no limit).
pub(crate) struct RateLimiter {
    per_second: u32,
    slots: Box<[Slot]>,
    /// Callsites that found no slot of their own share this one (and its budget).
    overflow: Slot,
    start: Tick,
}

impl RateLimiter {
    pub(crate) fn new(per_second: u32) -> RateLimiter {
        RateLimiter {
            per_second,
            slots: (0..SLOTS).map(|_| Slot::new()).collect(),
            overflow: Slot::new(),
            start: Tick::now(),
        }
    }

    /// Decides for one record of the callsite at `callsite` (its metadata's address).
    pub(crate) fn check(&self, callsite: usize) -> Decision {
        if self.per_second == 0 {
            return Decision::Emit { suppressed_before: 0 };
        }
        let second = clock::ticks_as_nanos(self.start.ticks_until(Tick::now())) / 1_000_000_000;
        self.check_at(callsite, second)
    }

    /// [`check`](Self::check) in the given second since the limiter started.
    fn check_at(&self, callsite: usize, second: u64) -> Decision {
        let slot = self.slot(callsite);
        // The window's second wraps after 136 years of uptime: harmless.
        let second = u64::from(second as u32);
        let mut current = slot.window.load(Ordering::Relaxed);
        loop {
            let (window, count) = (current >> 32, current & 0xffff_ffff);
            let next = if window != second {
                (second << 32) | 1
            } else if count < u64::from(self.per_second) {
                current + 1
            } else {
                slot.suppressed.fetch_add(1, Ordering::Relaxed);
                return Decision::Suppress;
            };
            match slot
                .window
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => break,
                Err(actual) => current = actual,
            }
        }
        let suppressed_before = if slot.suppressed.load(Ordering::Relaxed) == 0 {
            0
        } else {
            slot.suppressed.swap(0, Ordering::Relaxed)
        };
        Decision::Emit { suppressed_before }
    }

    /// The callsite's slot: its own when one is free or already its own within a few probes,
    /// else the shared overflow slot.
    fn slot(&self, callsite: usize) -> &Slot {
        // Fibonacci hashing of the address (callsites are statics, a few bytes apart).
        let home = (callsite as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 54;
        for probe in 0..PROBES {
            let slot = &self.slots[(home as usize + probe) % SLOTS];
            let owner = slot.owner.load(Ordering::Relaxed);
            if owner == callsite {
                return slot;
            }
            if owner == 0 {
                match slot
                    .owner
                    .compare_exchange(0, callsite, Ordering::Relaxed, Ordering::Relaxed)
                {
                    Ok(_) => return slot,
                    Err(actual) if actual == callsite => return slot,
                    Err(_) => {}
                }
            }
        }
        &self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const EMIT: Decision = Decision::Emit { suppressed_before: 0 };

    #[test]
    fn a_callsite_past_its_budget_is_suppressed_and_the_count_reported_later() {
        let limiter = RateLimiter::new(5);
        let (hot, quiet) = (0x1000, 0x2000);
        let decisions: Vec<Decision> = (0..8).map(|_| limiter.check_at(hot, 7)).collect();
        assert_eq!(decisions[..5], [EMIT; 5]);
        assert_eq!(decisions[5..], [Decision::Suppress; 3]);
        assert_eq!(
            limiter.check_at(quiet, 7),
            EMIT,
            "another callsite keeps its own budget"
        );
        // The next second: the hot callsite emits again and says what it lost, once.
        assert_eq!(limiter.check_at(hot, 8), Decision::Emit { suppressed_before: 3 });
        assert_eq!(limiter.check_at(hot, 8), EMIT);
    }

    #[test]
    fn the_clock_moves_the_window() {
        let limiter = RateLimiter::new(1);
        assert_eq!(limiter.check(0x1000), EMIT);
        let mut suppressed = 0;
        // Within a second or two of the first record, the next second's record comes through.
        let outcome = loop {
            match limiter.check(0x1000) {
                Decision::Suppress => suppressed += 1,
                emitted => break emitted,
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        };
        assert_eq!(
            outcome,
            Decision::Emit {
                suppressed_before: suppressed
            }
        );
    }

    #[test]
    fn no_limit_emits_everything() {
        let limiter = RateLimiter::new(0);
        for _ in 0..10_000 {
            assert_eq!(limiter.check(0x1000), EMIT);
        }
    }

    #[test]
    fn callsites_beyond_the_table_share_the_overflow_budget() {
        let limiter = RateLimiter::new(1);
        let emitted = (1..=SLOTS * 2)
            .filter(|callsite| limiter.check_at(callsite * 64, 0) == EMIT)
            .count();
        // Every slot is claimed by one callsite, and the rest share the overflow slot's one
        // record a second.
        assert_eq!(emitted, SLOTS + 1);
    }
}
