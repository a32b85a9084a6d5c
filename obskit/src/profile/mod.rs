//! CPU profiles: the one-profiler-at-a-time [`Capture`], the bounded [`ProfileStore`], and the
//! two encodings every capture produces, a flamegraph SVG and a pprof protobuf. Heap profiles,
//! from jemalloc's sampling profiler, are in `heap` (feature `heap-profiling`), stored and
//! encoded the same way.
//!
//! Captures come from two places: `GET /debug/pprof/profile` on the admin surface (the whole
//! process, like Go's `net/http/pprof`) and `#[profiled]` functions (only the samples taken
//! while the function runs, see [`crate::profiled`]).
//!
//! # One capture at a time
//!
//! The sampler is pprof-rs: a process-wide `SIGPROF` timer (`setitimer(ITIMER_PROF)`) whose
//! handler walks the interrupted stack. There is one such timer per process, and pprof-rs has a
//! history of deadlocks and crashes when its profiler is started twice or torn down under load,
//! so obskit allows one [`Capture`] at a time: a second attempt is refused at once with
//! [`CaptureError::Busy`] (never queued, never blocked), and counted in
//! `obskit_profiles_skipped_total{reason="busy"}`.
//!
//! # Sampling rate
//!
//! 99 Hz by default, at most 250 Hz ([`MAX_FREQUENCY`]): `ITIMER_PROF` advances with the kernel
//! tick (250 Hz here), and above it samples are lost, not gained (at ~1000 Hz only a quarter of
//! the CPU time was recorded, at 99 and 250 Hz over 99 %). 99 rather than 100 keeps the
//! sampler out of lockstep with periodic work.
//!
//! # Readable, symbolised profiles
//!
//! Function names come from the binary's debug information. The workspace builds release and
//! bench profiles with `debug = "line-tables-only"`, which keeps names, files and lines (inlined
//! functions included) for a fraction of full debug info; a service that wants readable
//! profiles sets the same in its own `Cargo.toml`:
//!
//! ```toml
//! [profile.release]
//! debug = "line-tables-only"
//! ```
//!
//! Without it, frames show as addresses or `Unknown`. With it, functions that were compiled as
//! functions of their own show with their full path (from the symbol table); functions inlined
//! into others show with their short name only (`wrapping_mul`, `parse`), and the body of an
//! `async fn`, inlined into its state machine's `poll`, as `{async_fn#0}`: line tables name
//! inlined code but not its module. `#[profiled]` roots every sample at the function's label,
//! so its own name is always there; mark a hot helper `#[inline(never)]` to see it named in full
//! (checked in release builds by the profiling tests).
//!
//! The frames of the profiler itself (the
//! signal handler and the unwinder) are trimmed from every sample, and samples whose thread was
//! idling in the runtime (tokio's park loop, `epoll_wait`, futex waits) are dropped, so the
//! flamegraph shows work, not waiting.
//!
//! # Samples labelled by span
//!
//! An on-demand capture ([`CaptureOptions::span_labels`]) labels each sample with the span
//! current on the sampled thread: pprof labels `trace_id`, `span_name` and `http.route`, so
//! `go tool pprof -tagfocus trace_id=…` keeps one trace's work. While it runs, each poll of a
//! span's future runs under two frames of obskit's that stand for the span (one pair per span,
//! 4096 per capture); the capture reads the span back from the innermost pair and cuts the
//! frames out. A frame, because pprof-rs's sampler records the stack and the thread only, and
//! merges a thread's samples of one stack. What each span took is kept for `/debug/traces`
//! (its samples and top frames, and a link to its trace's part of the capture).
//!
//! # Limits
//!
//! Unix only (pprof-rs). pprof-rs keeps its samples in a temporary file once they outgrow
//! memory, so `TMPDIR` must be writable while a capture runs; obskit's own store needs no
//! filesystem at all.
//!
//! # Metrics
//!
//! - `obskit_profiles_captured_total{function}`: captures finished and stored (`function` is the
//!   `#[profiled]` name, or `on_demand`);
//! - `obskit_profiles_skipped_total{reason}`: captures not taken: `busy` (another was running),
//!   `error` (the profiler failed to start or to report);
//! - `obskit_profile_store_bytes`: bytes held by the process-wide store.
//!
//! ```
//! # #[cfg(feature = "profiling")] {
//! use std::time::Duration;
//! use obskit::profile::{Capture, CaptureOptions, ProfileStore};
//!
//! let capture = Capture::start(CaptureOptions::new("example")).unwrap();
//! // Only one at a time: a second attempt is refused at once.
//! assert!(Capture::start(CaptureOptions::new("other")).is_err());
//! let deadline = std::time::Instant::now() + Duration::from_millis(200);
//! let mut x = 0u64;
//! while std::time::Instant::now() < deadline {
//!     x = x.wrapping_mul(31).wrapping_add(7); // some CPU work to sample
//! }
//! std::hint::black_box(x);
//! let profile = capture.finish().unwrap();
//! assert!(profile.svg().starts_with(b"<?xml"));
//!
//! let store = ProfileStore::in_memory(10, 1 << 20);
//! let names = store.insert(&profile);
//! assert_eq!(store.list().len(), 2); // the pprof protobuf and the flamegraph
//! assert!(store.get(&names[0]).is_ok());
//! # }
//! ```

mod capture;
mod endpoint;
#[cfg(feature = "heap-profiling")]
pub mod heap;
pub(crate) mod labels;
mod metrics;
#[cfg(feature = "profiling")]
mod proto;
mod site;
pub(crate) mod span_samples;
mod store;

pub(crate) use capture::set_service;
pub use capture::{
    Capture, CaptureError, CaptureOptions, Profile, ProfileType, DEFAULT_FREQUENCY, MAX_FREQUENCY,
};
pub(crate) use endpoint::{pprof_heap, pprof_profile, ProfileQuery};
pub use metrics::register_metrics;
pub(crate) use metrics::ON_DEMAND;
pub use site::{current_function, ProfileSite, Profiled};
pub use store::{
    ProfileData, ProfileInfo, ProfileKind, ProfileStore, StoreError, DEFAULT_MAX_BYTES, DEFAULT_MAX_PROFILES,
};

/// The `trace_id` of a `/profiles/{name}?trace_id=…` query: 32 hex digits, or none asked for.
pub(crate) fn trace_filter(query: Option<&str>) -> Result<Option<u128>, String> {
    let Some(value) = query
        .unwrap_or("")
        .split('&')
        .find_map(|pair| pair.strip_prefix("trace_id="))
    else {
        return Ok(None);
    };
    if value.len() != 32 || !value.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err("trace_id must be 32 hex digits".to_string());
    }
    u128::from_str_radix(value, 16)
        .map(Some)
        .map_err(|_| "trace_id must be 32 hex digits".to_string())
}

/// A stored pprof profile cut to the samples labelled with `trace_id` (see [`CaptureOptions::span_labels`]).
pub(crate) fn of_trace(data: &ProfileData, trace_id: u128) -> Result<bytes::Bytes, String> {
    if data.info.kind != ProfileKind::Pprof {
        return Err("only pprof files (.pb) are cut to one trace".to_string());
    }
    #[cfg(feature = "profiling")]
    {
        proto::samples_of_trace(&data.bytes, trace_id).map(bytes::Bytes::from)
    }
    #[cfg(not(feature = "profiling"))]
    {
        let _ = trace_id;
        Err(crate::features::not_built("profiling"))
    }
}

/// Makes jemalloc the process's allocator, started with its heap profiler on (obskit's
/// `heap-profiling` feature): declare it once, in the binary. See [`profile::heap`](crate::profile::heap).
///
/// ```ignore
/// obskit::heap_profiling_allocator!();
///
/// fn main() { /* `/debug/pprof/heap` now answers heap profiles */ }
/// ```
#[cfg(feature = "heap-profiling")]
#[macro_export]
macro_rules! heap_profiling_allocator {
    () => {
        #[global_allocator]
        static OBSKIT_GLOBAL_ALLOCATOR: $crate::profile::heap::Jemalloc = $crate::profile::heap::Jemalloc;

        /// The options jemalloc reads when it starts, before `main` (its `malloc_conf`).
        #[unsafe(export_name = "_rjem_malloc_conf")]
        static OBSKIT_MALLOC_CONF: $crate::profile::heap::MallocConf = $crate::profile::heap::MALLOC_CONF;
    };
}

/// Without obskit's `heap-profiling` feature there is no jemalloc to declare.
#[cfg(not(feature = "heap-profiling"))]
#[macro_export]
macro_rules! heap_profiling_allocator {
    () => {
        compile_error!("obskit::heap_profiling_allocator!() needs obskit's `heap-profiling` cargo feature");
    };
}

/// The unit tests that start captures take turns: one profiler per process.
#[cfg(all(test, feature = "profiling"))]
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
