//! Heap profiles from jemalloc's sampling profiler: what is allocated and not freed (`heap`),
//! and everything allocated since profiling started (`allocs`), by allocating stack, as Go's
//! `net/http/pprof` serves them.
//!
//! # Switching the allocator
//!
//! Heap profiles need jemalloc as the process's allocator, started with its profiler on. With
//! obskit's `heap-profiling` cargo feature, one line in the binary does both:
//!
//! ```toml
//! obskit = { version = "0.1", features = ["heap-profiling"] }
//! ```
//!
//! ```ignore
//! obskit::heap_profiling_allocator!();
//! ```
//!
//! The macro declares the `#[global_allocator]` (`tikv-jemallocator`) and the `malloc_conf`
//! jemalloc reads when it starts, before `main`: [`MALLOC_CONF`] (profiling on, cumulative
//! counts kept, one sample per 512 KiB allocated on average). jemalloc's own variable
//! `_RJEM_MALLOC_CONF` still overrides it at start (`_RJEM_MALLOC_CONF=prof_active:false`).
//! Without the macro (or with profiling off at start) `/debug/pprof/heap` answers 501 and says
//! which.
//!
//! # Sampling
//!
//! jemalloc samples one allocation per `interval` bytes allocated on average (a power of two;
//! 512 KiB by default, as Go's `MemProfileRate`), and records its stack; counts are scaled back
//! up by each stack's sampling odds. `OBSKIT_HEAP_PROFILE_INTERVAL_BYTES` sets the interval
//! when the [`crate::Obskit`] is built, and `0` stops sampling
//! ([`set_sample_interval`] does it in code). Changing the interval forgets what was sampled
//! before.
//!
//! # What it costs
//!
//! Measured in BENCHMARKS.md ("Issue 16: heap profiles"), on the shop: as fast as on glibc's
//! malloc, and about 0.90 to 0.97 of jemalloc without its profiler. Stopping sampling does not
//! win that back; starting jemalloc with `prof:false` does. A sampled allocation walks its
//! stack. Keeping cumulative counts (`prof_accum`, for `allocs`) keeps every sampled stack for
//! the life of the process: bounded by the number of distinct allocating stacks in the code, not
//! by traffic.
//!
//! # Serving
//!
//! `GET /debug/pprof/heap` and `GET /debug/pprof/allocs` (protected like every `/debug` route)
//! answer a pprof protobuf with Go's four sample types, which `go tool pprof -top FILE` reads
//! (in-use bytes by default for `heap`, allocated bytes for `allocs`); `?format=svg` answers a
//! flamegraph. Each is kept in `/profiles` beside CPU captures. Frames are resolved in the
//! process, from the binary's line tables, like CPU captures: build with
//! `debug = "line-tables-only"` for names (see [`crate::profile`]). One dump at a time (409).

mod ctl;
mod encode;
mod jeheap;

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::capture::{empty_svg, rfc3339, service, Profile};
use super::metrics::{count_skip, metrics, SKIP_BUSY, SKIP_ERROR};

/// jemalloc's allocator, made global by [`heap_profiling_allocator!`](crate::heap_profiling_allocator).
pub use tikv_jemallocator::Jemalloc;

/// The options jemalloc starts with under [`heap_profiling_allocator!`](crate::heap_profiling_allocator):
/// `prof:true,prof_active:true,prof_accum:true,lg_prof_sample:19`.
pub const MALLOC_CONF: MallocConf =
    MallocConf(c"prof:true,prof_active:true,prof_accum:true,lg_prof_sample:19".as_ptr());

/// A C string jemalloc reads at start: its `malloc_conf` symbol is a `const char *`.
#[repr(transparent)]
pub struct MallocConf(#[doc(hidden)] pub *const std::ffi::c_char);

// SAFETY: it points to a string literal, never written.
unsafe impl Sync for MallocConf {}

/// The default sampling interval: 512 KiB.
pub const DEFAULT_INTERVAL_BYTES: u64 = 1 << 19;

/// The widest interval [`set_sample_interval`] takes: 1 GiB.
pub const MAX_INTERVAL_BYTES: u64 = 1 << 30;

/// Which counts a heap profile leads with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeapView {
    /// Allocated and not yet freed (`/debug/pprof/heap`).
    InUse,
    /// Allocated since profiling started, freed or not (`/debug/pprof/allocs`).
    Allocs,
}

impl HeapView {
    /// The profile's label in `/profiles` and `obskit_profiles_captured_total{function}`.
    pub fn label(self) -> &'static str {
        match self {
            HeapView::InUse => "heap",
            HeapView::Allocs => "allocs",
        }
    }

    /// The pprof sample type `go tool pprof` shows by default.
    fn sample_type(self) -> &'static str {
        match self {
            HeapView::InUse => "inuse_space",
            HeapView::Allocs => "alloc_space",
        }
    }
}

/// Why no heap profile was made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HeapError {
    /// jemalloc is not the allocator, or started without its profiler (or, for `allocs`,
    /// without cumulative counts): answered 501 with the reason.
    NotEnabled(String),
    /// Another dump is being made: answered 409.
    Busy,
    /// jemalloc or the encoding failed: answered 500.
    Failed(String),
}

impl fmt::Display for HeapError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HeapError::NotEnabled(why) => f.write_str(why),
            HeapError::Busy => f.write_str("a heap profile is already being made; retry when it is done"),
            HeapError::Failed(e) => write!(f, "the heap profile failed: {e}"),
        }
    }
}

impl std::error::Error for HeapError {}

const NOT_STARTED: &str = "jemalloc's heap profiler is off: the binary must declare \
     `obskit::heap_profiling_allocator!()` (or start jemalloc with `prof:true` in \
     `_RJEM_MALLOC_CONF`)";

/// Whether allocations are being sampled now.
pub fn sampling() -> bool {
    ctl::started_with_profiling() && ctl::sampling()
}

/// The mean bytes between samples, or `None` when jemalloc's profiler is off.
pub fn sample_interval() -> Option<u64> {
    ctl::started_with_profiling().then(ctl::sample_interval)
}

/// Samples every `bytes` allocated on average from now on (rounded down to a power of two, at
/// most [`MAX_INTERVAL_BYTES`]), or stops sampling for `0`. A new interval forgets every
/// sample taken before it; stopping keeps them.
///
/// ```
/// // Without `obskit::heap_profiling_allocator!()` in this binary, jemalloc's profiler is off.
/// # #[cfg(feature = "heap-profiling")]
/// assert!(obskit::profile::heap::set_sample_interval(1 << 20).is_err());
/// ```
pub fn set_sample_interval(bytes: u64) -> Result<(), HeapError> {
    if !ctl::started_with_profiling() {
        return Err(HeapError::NotEnabled(NOT_STARTED.to_string()));
    }
    if bytes == 0 {
        return ctl::set_sampling(false);
    }
    let lg = bytes.min(MAX_INTERVAL_BYTES).ilog2();
    if 1u64 << lg != ctl::sample_interval() {
        ctl::reset(lg)?;
    }
    ctl::set_sampling(true)
}

/// Makes a heap profile of the process now: jemalloc dumps its samples, which are resolved to
/// functions and encoded as a pprof protobuf and a flamegraph (then stored by the caller).
/// Blocking work (tens to hundreds of milliseconds, most of it resolving frames the first
/// time): call it off the async workers. One at a time: a second call meanwhile is
/// [`HeapError::Busy`].
pub fn dump(view: HeapView) -> Result<Profile, HeapError> {
    if !ctl::started_with_profiling() {
        return Err(HeapError::NotEnabled(NOT_STARTED.to_string()));
    }
    if view == HeapView::Allocs && !ctl::keeps_allocated_counts() {
        return Err(HeapError::NotEnabled(
            "jemalloc started without cumulative counts (`prof_accum`), which `allocs` needs".to_string(),
        ));
    }
    static DUMPING: AtomicBool = AtomicBool::new(false);
    if DUMPING.swap(true, Ordering::AcqRel) {
        count_skip(SKIP_BUSY);
        return Err(HeapError::Busy);
    }
    struct Release;
    impl Drop for Release {
        fn drop(&mut self) {
            DUMPING.store(false, Ordering::Release);
        }
    }
    let _release = Release;
    let made = std::panic::catch_unwind(|| encode_now(view))
        .unwrap_or_else(|_| Err(HeapError::Failed("encoding panicked".into())));
    match made {
        Ok(profile) => {
            metrics().captured.with_label_values(&[view.label()]).inc();
            Ok(profile)
        }
        Err(e) => {
            count_skip(SKIP_ERROR);
            Err(e)
        }
    }
}

fn encode_now(view: HeapView) -> Result<Profile, HeapError> {
    let now = SystemTime::now();
    let text = ctl::dump()?;
    let dump = jeheap::parse(&text).map_err(HeapError::Failed)?;
    let resolved = encode::resolve(&dump);
    let time_nanos = now.duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i64;
    let pprof = encode::pprof(&dump, &resolved, view, time_nanos).map_err(HeapError::Failed)?;
    let service = service();
    let title = title(view, &service, now, dump.sample_interval);
    let lines = encode::folded(&dump, &resolved, view);
    let svg = if lines.is_empty() {
        empty_svg(&title)
    } else {
        let mut options = pprof::flamegraph::Options::default();
        options.title = title;
        options.count_name = "bytes".to_string();
        let mut svg = Vec::new();
        pprof::flamegraph::from_lines(&mut options, lines.iter().map(String::as_str), &mut svg)
            .map_err(|e| HeapError::Failed(e.to_string()))?;
        svg
    };
    Ok(Profile::heap(
        view.label(),
        service,
        now,
        dump.sample_interval,
        dump.stacks.len() as u64,
        Bytes::from(pprof),
        Bytes::from(svg),
    ))
}

fn title(view: HeapView, service: &str, at: SystemTime, interval: u64) -> String {
    let what = match view {
        HeapView::InUse => "Heap in use",
        HeapView::Allocs => "Allocated since start",
    };
    let at = rfc3339(at);
    format!(
        "{what} · {service} · {} {} UTC (a sample per {} KiB)",
        &at[..10],
        &at[11..19],
        interval / 1024
    )
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn without_the_allocator_the_profiler_is_off_and_says_how_to_turn_it_on() {
        // The library's unit tests run on the system allocator.
        assert_eq!(sample_interval(), None);
        assert!(!sampling());
        match dump(HeapView::InUse) {
            Err(HeapError::NotEnabled(why)) => assert!(why.contains("heap_profiling_allocator!"), "{why}"),
            other => panic!("{other:?}"),
        }
        assert!(matches!(
            set_sample_interval(1 << 20),
            Err(HeapError::NotEnabled(_))
        ));
    }

    #[test]
    fn titles_say_what_and_how_finely() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            title(HeapView::InUse, "shop", t, 524_288),
            "Heap in use · shop · 2026-11-18 11:06:40 UTC (a sample per 512 KiB)"
        );
    }
}
