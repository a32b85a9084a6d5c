//! CPU profiles: the one-profiler-at-a-time [`Capture`], the bounded [`ProfileStore`], and the
//! two encodings every capture produces, a flamegraph SVG and a pprof protobuf.
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
mod metrics;
mod site;
mod store;

pub(crate) use capture::set_service;
pub use capture::{Capture, CaptureError, CaptureOptions, Profile, DEFAULT_FREQUENCY, MAX_FREQUENCY};
pub(crate) use endpoint::{pprof_profile, ProfileQuery};
pub use metrics::register_metrics;
pub(crate) use metrics::ON_DEMAND;
pub use site::{current_function, ProfileSite, Profiled};
pub use store::{
    ProfileData, ProfileInfo, ProfileKind, ProfileStore, StoreError, DEFAULT_MAX_BYTES, DEFAULT_MAX_PROFILES,
};

/// The unit tests that start captures take turns: one profiler per process.
#[cfg(all(test, feature = "profiling"))]
pub(crate) static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());
