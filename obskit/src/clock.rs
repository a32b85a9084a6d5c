//! The one clock every timing in obskit reads: call timers, request guards and spans.
//!
//! A [`Tick`] is a raw reading of the fastest clock source (`quanta`: the TSC where it is
//! invariant, else the OS monotonic clock), not yet scaled to nanoseconds. Scaling costs a
//! 128-bit multiplication, and `quanta::Instant` pays it at every read; a duration needs it only
//! once, on the difference, so the hot paths keep ticks and scale when they record.

use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, SystemTime};

/// The calibrated clock, made once per process (quanta measures the TSC against the OS clock).
/// Only the slow paths reach it: the hot paths read [`SOURCE`] and [`NANOS_PER_2_32_TICKS`].
fn clock() -> &'static quanta::Clock {
    static CLOCK: OnceLock<quanta::Clock> = OnceLock::new();
    CLOCK.get_or_init(|| {
        let clock = quanta::Clock::new();
        calibrate(&clock);
        clock
    })
}

/// Where a reading comes from, once [`clock`] has looked: until then [`UNKNOWN`].
static SOURCE: AtomicU8 = AtomicU8::new(UNKNOWN);
const UNKNOWN: u8 = 0;
/// The time-stamp counter, read inline with `rdtsc`: the reading quanta's counter clock takes,
/// without the two calls and the clock-kind match around it (32 of an instrumented call's 231
/// instructions, by callgrind).
const TSC: u8 = 1;
/// Whatever quanta chose instead (the OS monotonic clock): read through quanta.
const QUANTA: u8 = 2;

/// Nanoseconds in 2³² ticks, so that scaling a difference is one multiplication and a shift
/// (the relative error is 2⁻³² of a tick's length, well under a nanosecond a second).
static NANOS_PER_2_32_TICKS: AtomicU64 = AtomicU64::new(0);

/// Decides the inline source and the scale from `clock`, before any reading is handed out.
fn calibrate(clock: &quanta::Clock) {
    NANOS_PER_2_32_TICKS.store(clock.delta_as_nanos(0, 1 << 32), Ordering::Relaxed);
    SOURCE.store(if raw_is_tsc(clock) { TSC } else { QUANTA }, Ordering::Release);
}

/// Whether quanta's raw reading is the time-stamp counter: a reading taken between two counter
/// reads lies between them only if it counts in the same unit from the same origin (the OS
/// clock counts nanoseconds since boot, several times fewer than the counter's cycles).
fn raw_is_tsc(clock: &quanta::Clock) -> bool {
    #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
    {
        // SAFETY: `rdtsc` exists on every x86-64 processor (the target has SSE2).
        let before = unsafe { std::arch::x86_64::_rdtsc() };
        let raw = clock.raw();
        let after = unsafe { std::arch::x86_64::_rdtsc() };
        (before..=after).contains(&raw)
    }
    #[cfg(not(all(target_arch = "x86_64", target_feature = "sse2")))]
    {
        let _ = clock;
        false
    }
}

/// A raw clock reading. Ordered like the time it was taken at, on one machine. Public only for
/// the macro expansion (`obskit::__private`), which hands a call timer's reading to its span.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct Tick(u64);

impl Tick {
    /// Now.
    #[inline(always)]
    pub(crate) fn now() -> Tick {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse2"))]
        if SOURCE.load(Ordering::Acquire) == TSC {
            // SAFETY: as in `raw_is_tsc`.
            return Tick(unsafe { std::arch::x86_64::_rdtsc() });
        }
        Tick::now_through_quanta()
    }

    /// The first reading of the process (which calibrates), or every reading where the
    /// counter is not the source.
    #[inline(never)]
    fn now_through_quanta() -> Tick {
        Tick(clock().raw())
    }

    /// The reading as a number, to keep in an atomic ([`crate::debug::in_flight`]).
    #[inline(always)]
    pub(crate) fn raw(self) -> u64 {
        self.0
    }

    /// A reading kept by [`raw`](Self::raw).
    #[inline(always)]
    pub(crate) fn from_raw(raw: u64) -> Tick {
        Tick(raw)
    }

    /// Nanoseconds from `self` to `later`; 0 if `later` is not after it.
    #[inline(always)]
    pub(crate) fn nanos_until(self, later: Tick) -> u64 {
        ticks_as_nanos(self.ticks_until(later))
    }

    /// Raw ticks from `self` to `later`, unscaled; 0 if `later` is not after it. What a
    /// histogram whose bounds are [`TickBounds`] records.
    #[inline(always)]
    pub(crate) fn ticks_until(self, later: Tick) -> u64 {
        later.0.saturating_sub(self.0)
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

/// Nanoseconds in `ticks` ticks (a difference of readings, or a sum of differences).
#[inline(always)]
pub(crate) fn ticks_as_nanos(ticks: u64) -> u64 {
    // A tick exists only after `clock()` calibrated, so the scale is set.
    let scale = NANOS_PER_2_32_TICKS.load(Ordering::Relaxed);
    ((u128::from(ticks) * u128::from(scale)) >> 32) as u64
}

/// Histogram bounds given in nanoseconds, compared in raw ticks: a call or request then
/// buckets its tick difference directly and adds it to its sum unscaled, and the scaling (a
/// 128-bit multiplication on the path from the clock read to the bucket) is paid once, by the
/// scrape, on the sum.
pub(crate) struct TickBounds<const N: usize> {
    nanos: [u64; N],
    ticks: OnceLock<[u64; N]>,
}

impl<const N: usize> TickBounds<N> {
    /// Inclusive upper bounds in nanoseconds, ascending.
    pub(crate) const fn new(nanos: [u64; N]) -> Self {
        TickBounds {
            nanos,
            ticks: OnceLock::new(),
        }
    }

    /// The bounds in ticks: bound `i` is the most ticks that scale to at most `nanos[i]`
    /// nanoseconds, so that `ticks <= bound` exactly when `ticks_as_nanos(ticks) <= nanos[i]`.
    #[inline(always)]
    pub(crate) fn ticks(&self) -> &[u64; N] {
        match self.ticks.get() {
            Some(ticks) => ticks,
            None => self.calibrated(),
        }
    }

    #[cold]
    fn calibrated(&self) -> &[u64; N] {
        self.ticks.get_or_init(|| {
            clock(); // calibrates, if nothing has read the clock yet
            let scale = u128::from(NANOS_PER_2_32_TICKS.load(Ordering::Relaxed).max(1));
            self.nanos.map(|nanos| {
                // The largest t with floor(t * scale / 2^32) <= nanos.
                let ticks = ((u128::from(nanos) + 1) << 32).saturating_sub(1) / scale;
                u64::try_from(ticks).unwrap_or(u64::MAX)
            })
        })
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
        let nanos = start.nanos_until(Tick::now());
        let real = wall.elapsed().as_nanos() as u64;
        // Within 5 ms of the OS clock's own reading of the same interval.
        assert!(nanos >= 20_000_000, "{nanos} ns for a 20 ms sleep");
        assert!(nanos.abs_diff(real) < 5_000_000, "{nanos} ns vs {real} ns");
        assert_eq!(Tick::now().nanos_until(start), 0, "a later tick is never before");
    }

    #[test]
    fn inline_readings_scale_as_quanta_does() {
        let start = Tick::now();
        assert_ne!(
            SOURCE.load(Ordering::Relaxed),
            UNKNOWN,
            "decided by the first reading"
        );
        // The same source: a reading taken through quanta lies between two inline ones.
        let through_quanta = Tick::now_through_quanta();
        assert!(start <= through_quanta && through_quanta <= Tick::now());
        for delta in [1u64, 999, 3_000_000, 1 << 32, 7 << 40] {
            let ours = start.nanos_until(Tick(start.0 + delta));
            let quanta = clock().delta_as_nanos(start.0, start.0 + delta);
            // One shift of rounding apart at most, and proportionally less than a nanosecond a
            // second.
            assert!(
                ours.abs_diff(quanta) <= 1 + quanta / 1_000_000_000,
                "{delta}: {ours} vs {quanta}"
            );
        }
    }

    #[test]
    fn tick_bounds_bucket_as_nanoseconds_do() {
        static BOUNDS: TickBounds<4> = TickBounds::new([0, 1, 5_000_000, 10_000_000_000]);
        let ticks = BOUNDS.ticks();
        for (&nanos, &bound) in BOUNDS.nanos.iter().zip(ticks) {
            assert!(ticks_as_nanos(bound) <= nanos, "{bound} ticks for {nanos} ns");
            assert!(ticks_as_nanos(bound + 1) > nanos, "{bound} ticks for {nanos} ns");
        }
        assert!(ticks.windows(2).all(|w| w[0] <= w[1]), "{ticks:?}");
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
