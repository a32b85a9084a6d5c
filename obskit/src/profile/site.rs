//! The runtime of `#[profiled]`: the capture policy of one function, and the marker frame that
//! attributes samples to it.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;

use super::capture::{Capture, CaptureOptions};
use super::store::ProfileStore;

/// The name of the marker frame's function, searched for in every sample's stack.
const MARKER: &str = "obskit_profiled_frame";

/// The site whose capture is running (null when none, or when the capture is on-demand).
static CURRENT: AtomicPtr<ProfileSite> = AtomicPtr::new(std::ptr::null_mut());

/// The label of the `#[profiled]` function whose capture is running, if one is.
///
/// ```
/// assert_eq!(obskit::profile::current_function(), None);
/// ```
pub fn current_function() -> Option<&'static str> {
    let current = CURRENT.load(Ordering::Acquire);
    // SAFETY: `CURRENT` only ever holds null or a `&'static ProfileSite`.
    unsafe { current.as_ref() }.map(|site| site.name)
}

/// Milliseconds since the first profiled call, on a cheap clock.
fn now_ms() -> u64 {
    static START: OnceLock<quanta::Instant> = OnceLock::new();
    let start = *START.get_or_init(quanta::Instant::now);
    quanta::Instant::now().duration_since(start).as_millis() as u64
}

/// The capture policy of one `#[profiled]` function, in a `static` the macro emits: at most
/// one capture per `every`, each lasting `duration` or until `calls` marked calls have
/// finished, whichever comes first. A due call starts the capture on a thread of its own; the
/// calls that start while it runs are marked.
///
/// ```
/// use obskit::profile::ProfileSite;
///
/// static SITE: ProfileSite = ProfileSite::new("checkout", "shop::cart", 60_000, 5_000, 0, 99);
///
/// fn checkout(items: &[u64]) -> u64 {
///     SITE.call(|| items.iter().sum())
/// }
/// assert_eq!(checkout(&[1, 2, 3]), 6);
/// ```
#[derive(Debug)]
pub struct ProfileSite {
    name: &'static str,
    module: &'static str,
    every_ms: u64,
    duration_ms: u64,
    /// Calls per capture; `u64::MAX` for no bound.
    calls: u64,
    frequency: u32,
    /// When (in [`now_ms`]) the next capture may start.
    next_due_ms: AtomicU64,
    /// Calls the running capture may still mark.
    calls_left: AtomicU64,
    /// Marked calls finished (returned, panicked, or dropped) in the running capture.
    calls_done: AtomicU64,
}

impl ProfileSite {
    /// A site for `name` in `module`: at most one capture per `every_ms`, each lasting at most
    /// `duration_ms` and (if `calls` is not 0) until `calls` marked calls have finished,
    /// sampled at `frequency` Hz. The first call starts the first capture.
    pub const fn new(
        name: &'static str,
        module: &'static str,
        every_ms: u64,
        duration_ms: u64,
        calls: u64,
        frequency: u32,
    ) -> Self {
        ProfileSite {
            name,
            module,
            every_ms,
            duration_ms,
            calls: if calls == 0 { u64::MAX } else { calls },
            frequency,
            next_due_ms: AtomicU64::new(0),
            calls_left: AtomicU64::new(0),
            calls_done: AtomicU64::new(0),
        }
    }

    /// The function's label.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// The function's module.
    pub fn module(&self) -> &'static str {
        self.module
    }

    /// Whether this call runs marked: a capture of this site is running (started now if one is
    /// due) and has calls left. Costs one atomic load and a clock read when nothing is due.
    #[inline]
    fn enter(&'static self) -> bool {
        // Without a sampler nothing is ever due: a `#[profiled]` function just runs.
        if !cfg!(feature = "profiling") || !crate::instrumentation::is_enabled() {
            return false;
        }
        if std::ptr::eq(CURRENT.load(Ordering::Acquire), self) {
            return self.take_call();
        }
        let now = now_ms();
        let due = self.next_due_ms.load(Ordering::Relaxed);
        if now < due {
            return false;
        }
        self.begin(now, due)
    }

    fn take_call(&self) -> bool {
        self.calls_left
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .is_ok()
    }

    /// Claims the interval and starts a capture on a thread of its own; the calling call itself
    /// is not marked. Starting the sampler takes ~0.5 ms, and the first time in a process far
    /// longer (pprof-rs loads the symbol tables): no call waits for it.
    #[cold]
    fn begin(&'static self, now: u64, due: u64) -> bool {
        // Claim this interval: one attempt per `every`, whether or not the profiler is free
        // (a busy profiler is a skip, counted, not a retry on every call).
        if self
            .next_due_ms
            .compare_exchange(
                due,
                now + self.every_ms.max(1),
                Ordering::AcqRel,
                Ordering::Relaxed,
            )
            .is_err()
        {
            return false;
        }
        // Without a thread, this interval passes without a capture.
        let _ = std::thread::Builder::new()
            .name("obskit-profile".into())
            .spawn(move || self.run());
        false
    }

    /// The capture's own thread: starts the capture, waits it out, then encodes and stores it,
    /// so that no call of the function pays for any of it.
    fn run(&'static self) {
        let options = CaptureOptions::new(self.name)
            .frequency(self.frequency)
            .attribute_to_marker(MARKER);
        // Busy: counted as skipped by `start`; the next attempt is the next interval's.
        let Ok(capture) = Capture::start(options) else {
            return;
        };
        self.calls_done.store(0, Ordering::Release);
        self.calls_left.store(self.calls, Ordering::Release);
        CURRENT.store(self as *const ProfileSite as *mut ProfileSite, Ordering::Release);
        let deadline = std::time::Instant::now() + Duration::from_millis(self.duration_ms);
        loop {
            let now = std::time::Instant::now();
            if now >= deadline || self.calls_done.load(Ordering::Acquire) >= self.calls {
                break;
            }
            // Polling for the call bound every 10 ms is cheaper than waking from every call.
            std::thread::sleep((deadline - now).min(Duration::from_millis(10)));
        }
        CURRENT.store(std::ptr::null_mut(), Ordering::Release);
        if let Ok(profile) = capture.finish() {
            ProfileStore::global().insert(&profile);
        }
    }

    /// Runs a sync function's body, marked when a capture of this function is running.
    #[inline]
    pub fn call<R, F: FnOnce() -> R>(&'static self, body: F) -> R {
        if !self.enter() {
            return body();
        }
        let _done = Done(self);
        let mut body = Some(body);
        let mut output = None;
        obskit_profiled_frame(&mut || output = body.take().map(|f| f()));
        output.expect("the marked body ran")
    }

    /// Wraps an `async fn`'s body: each poll of a call that started during a capture of this
    /// function runs marked. Whether a call is marked is decided at its first poll.
    #[inline]
    pub fn future<F: Future>(&'static self, body: F) -> Profiled<F> {
        Profiled {
            site: self,
            marked: None,
            done: None,
            inner: body,
        }
    }
}

/// Counts a marked call as finished when dropped: after it returns, while it unwinds, or when
/// its future is dropped unfinished, so that a `calls` bound always ends the capture.
struct Done(&'static ProfileSite);

impl Drop for Done {
    fn drop(&mut self) {
        self.0.calls_done.fetch_add(1, Ordering::AcqRel);
    }
}

/// The marker frame: never inlined, and not a tail call (the `black_box` after the call), so it
/// is on the stack, under its own name, exactly while a marked body runs.
#[inline(never)]
pub(crate) fn obskit_profiled_frame(body: &mut dyn FnMut()) {
    body();
    std::hint::black_box(());
}

pin_project_lite::pin_project! {
    /// An `async fn` body under `#[profiled]`. See [`ProfileSite::future`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Profiled<F> {
        site: &'static ProfileSite,
        marked: Option<bool>,
        done: Option<Done>,
        #[pin]
        inner: F,
    }
}

impl<F: Future> Future for Profiled<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let site = *this.site;
        let marked = *this.marked.get_or_insert_with(|| {
            let marked = site.enter();
            if marked {
                *this.done = Some(Done(site));
            }
            marked
        });
        if !marked {
            return this.inner.poll(cx);
        }
        let mut inner = Some(this.inner);
        let mut output = Poll::Pending;
        obskit_profiled_frame(&mut || {
            if let Some(inner) = inner.take() {
                output = inner.poll(cx);
            }
        });
        if output.is_ready() {
            *this.done = None;
        }
        output
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(feature = "profiling")]
    use crate::profile::SERIAL;

    #[cfg(feature = "profiling")]
    #[inline(never)]
    fn spin(ms: u64) -> u64 {
        let until = std::time::Instant::now() + Duration::from_millis(ms);
        let mut x = 1u64;
        while std::time::Instant::now() < until {
            for _ in 0..1000 {
                x = std::hint::black_box(x.wrapping_mul(0x9E37_79B9_7F4A_7C15).rotate_left(7));
            }
        }
        x
    }

    /// Not a tail call, and not identical to `spin`: its own frame in release builds too.
    #[cfg(feature = "profiling")]
    #[inline(never)]
    fn noise(ms: u64) -> u64 {
        std::hint::black_box(spin(ms) ^ 1)
    }

    /// Without a sampler a `#[profiled]` function just runs: nothing is due, nothing stored.
    #[cfg(not(feature = "profiling"))]
    #[test]
    fn without_the_sampler_a_site_runs_its_calls_and_captures_nothing() {
        static SITE: ProfileSite = ProfileSite::new("unsampled_site", "m", 1, 1_000, 1, 99);
        let store = ProfileStore::global();
        for i in 0..3 {
            assert_eq!(SITE.call(|| i * 2), i * 2);
            std::thread::sleep(Duration::from_millis(5));
        }
        assert!(current_function().is_none());
        assert!(!store.list().iter().any(|p| p.function == "unsampled_site"));
        assert_eq!(
            Capture::start(CaptureOptions::new("x")).unwrap_err(),
            crate::profile::CaptureError::NotBuilt
        );
    }

    #[cfg(feature = "profiling")]
    #[test]
    fn one_capture_per_interval_bounded_by_calls_and_attributed() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        static SITE: ProfileSite = ProfileSite::new("unit_site", "m", 3_600_000, 5_000, 2, 250);
        let store = ProfileStore::global();
        let before = store.list().iter().filter(|p| p.function == "unit_site").count();
        // The first call starts the capture (on its own thread) and is not marked itself.
        assert_eq!(SITE.call(|| 7), 7);
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while current_function() != Some("unit_site") && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(1));
        }
        // Work on another thread at the same time must not be attributed.
        let noise = std::thread::spawn(|| noise(600));
        for _ in 0..4 {
            SITE.call(|| spin(150));
        }
        noise.join().unwrap();
        // Two calls were marked; the capture's thread stops within ~10 ms and stores it.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        let stored = loop {
            let list: Vec<_> = store
                .list()
                .into_iter()
                .filter(|p| p.function == "unit_site")
                .collect();
            if list.len() > before || std::time::Instant::now() > deadline {
                break list;
            }
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(stored.len(), before + 2, "one capture, stored both ways");
        assert!(
            stored[0].duration_seconds < 1.0,
            "ended after 2 calls, not after 5 s"
        );
        let svg = store.get(&stored[0].name).unwrap().bytes;
        let svg = String::from_utf8_lossy(&svg);
        assert!(svg.contains("spin"));
        assert!(!svg.contains("noise"), "another thread's work is not attributed");
        assert!(svg.contains("unit_site"), "rooted at the function's label");
        // Within the same interval, no second capture.
        assert!(!SITE.enter());
    }
}
