//! The one clock every timing in obskit reads: call timers, request guards and spans.
//!
//! A [`Tick`] is a raw reading of the fastest clock source (`quanta`: the TSC where it is
//! invariant, else the OS monotonic clock), not yet scaled to nanoseconds. Scaling costs a
//! 128-bit multiplication, and `quanta::Instant` pays it at every read; a duration needs it only
//! once, on the difference, so the hot paths keep ticks and scale when they record.

use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

fn clock() -> &'static quanta::Clock {
    // Calibrated once per process (quanta measures the TSC against the OS clock).
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(quanta::Clock::new)
}

/// A raw clock reading. Ordered like the time it was taken at, on one machine. Public only for
/// the macro expansion (`obskit::__private`), which hands a call timer's reading to its span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// Now.
    #[inline(always)]
    pub(crate) fn now() -> Tick {
        Tick(clock().raw())
    }

    /// Nanoseconds from `self` to `later`; 0 if `later` is not after it.
    #[inline(always)]
    pub(crate) fn nanos_until(self, later: Tick) -> u64 {
        clock().delta_as_nanos(self.0, later.0)
    }

    /// Nanoseconds from `self` to now.
    #[inline(always)]
    pub(crate) fn elapsed_nanos(self) -> u64 {
        self.nanos_until(Tick::now())
    }

    /// The wall-clock time of this reading: one system-clock read per process (the anchor),
    /// then this clock, so that a span costs one clock read at each end instead of two. A
    /// wall-clock step after the anchor is not followed: spans keep consistent relative times.
    pub(crate) fn wall_clock(self) -> SystemTime {
        static ANCHOR: OnceLock<(SystemTime, Tick)> = OnceLock::new();
        let &(wall, anchor) = ANCHOR.get_or_init(|| (SystemTime::now(), Tick::now()));
        if self >= anchor {
            wall + Duration::from_nanos(anchor.nanos_until(self))
        } else {
            wall - Duration::from_nanos(self.nanos_until(anchor))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_measure_real_time_in_nanoseconds() {
        let start = Tick::now();
        let wall = std::time::Instant::now();
        std::thread::sleep(Duration::from_millis(20));
        let nanos = start.elapsed_nanos();
        let real = wall.elapsed().as_nanos() as u64;
        // Within 5 ms of the OS clock's own reading of the same interval.
        assert!(nanos >= 20_000_000, "{nanos} ns for a 20 ms sleep");
        assert!(nanos.abs_diff(real) < 5_000_000, "{nanos} ns vs {real} ns");
        assert_eq!(Tick::now().nanos_until(start), 0, "a later tick is never before");
    }

    #[test]
    fn wall_clock_follows_the_ticks_from_one_anchor() {
        let before = Tick::now();
        std::thread::sleep(Duration::from_millis(5));
        let after = Tick::now();
        let (a, b) = (before.wall_clock(), after.wall_clock());
        let step = b.duration_since(a).unwrap();
        // Each end is scaled on its own: the step may differ by a rounding.
        let step = step.as_nanos() as u64;
        assert!(step.abs_diff(before.nanos_until(after)) <= 2, "{step} ns");
        let now = SystemTime::now();
        let off = now.duration_since(b).unwrap_or_else(|e| e.duration());
        assert!(off < Duration::from_secs(1), "{off:?} from the system clock");
    }
}
