//! One CPU capture: start, the process-wide guard, symbolisation, trimming, encoding. The
//! sampler is pprof-rs's (feature `profiling`); a build without it refuses every capture with
//! [`CaptureError::NotBuilt`].

#[cfg(feature = "profiling")]
use std::collections::HashMap;
use std::fmt;
#[cfg(feature = "profiling")]
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
#[cfg(feature = "profiling")]
use pprof::protos::Message;
#[cfg(feature = "profiling")]
use pprof::{Frames, Symbol};

#[cfg(feature = "profiling")]
use super::labels;
#[cfg(feature = "profiling")]
use super::metrics::{count_skip, metrics, SKIP_BUSY, SKIP_ERROR};
use super::span_samples::SpanCpu;
#[cfg(feature = "profiling")]
use super::span_samples::{TopFrame, TOP_FRAMES};

/// The default sampling rate, in Hz.
pub const DEFAULT_FREQUENCY: u32 = 99;

/// The highest sampling rate obskit accepts, in Hz: the kernel tick. Faster rates lose samples.
pub const MAX_FREQUENCY: u32 = 250;

/// Set while a [`Capture`] owns the process's `SIGPROF` profiler.
static ACTIVE: AtomicBool = AtomicBool::new(false);

/// The service named in flamegraph titles; set by [`crate::Obskit`]'s builder.
static SERVICE: RwLock<Option<String>> = RwLock::new(None);

pub(crate) fn set_service(name: &str) {
    *SERVICE.write().unwrap_or_else(|p| p.into_inner()) = Some(name.to_string());
}

#[cfg(feature = "profiling")]
pub(super) fn service() -> String {
    if let Some(name) = SERVICE.read().unwrap_or_else(|p| p.into_inner()).clone() {
        return name;
    }
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_stem().map(|s| s.to_string_lossy().into_owned()))
        .unwrap_or_else(|| "unknown_service".to_string())
}

/// What to capture. See [`Capture::start`].
#[derive(Clone, Debug)]
pub struct CaptureOptions {
    function: String,
    frequency: u32,
    service: Option<String>,
    /// Keep only samples whose stack passes through a frame whose name contains this, cut the
    /// stack there and root it at `function` (how `#[profiled]` attributes samples).
    marker: Option<&'static str>,
    /// Label each sample with the span it was taken in.
    span_labels: bool,
}

impl CaptureOptions {
    /// A capture labelled `function` (the `function` label of
    /// `obskit_profiles_captured_total`, and part of the stored profiles' names), at
    /// [`DEFAULT_FREQUENCY`].
    pub fn new(function: impl Into<String>) -> Self {
        CaptureOptions {
            function: function.into(),
            frequency: DEFAULT_FREQUENCY,
            service: None,
            marker: None,
            span_labels: false,
        }
    }

    /// Labels each sample with the span current on its thread (pprof labels `trace_id`,
    /// `span_name`, and `http.route` for the spans of a request), so that
    /// `go tool pprof -tagfocus trace_id=…` keeps one trace's work. Off by default; the
    /// on-demand captures of `/debug/pprof/profile` turn it on. While such a capture runs, each
    /// poll of a span's future costs a lock and two calls more (see `BENCHMARKS.md`).
    pub fn span_labels(mut self, on: bool) -> Self {
        self.span_labels = on;
        self
    }

    /// The sampling rate in Hz, clamped to `1..=`[`MAX_FREQUENCY`].
    ///
    /// ```
    /// let options = obskit::profile::CaptureOptions::new("f").frequency(1000);
    /// assert_eq!(options.sampling_frequency(), 250);
    /// ```
    pub fn frequency(mut self, hz: u32) -> Self {
        self.frequency = hz.clamp(1, MAX_FREQUENCY);
        self
    }

    /// The service named in the flamegraph's title. Without it, the name given to
    /// [`crate::Obskit`], else the executable's name.
    pub fn service(mut self, service: impl Into<String>) -> Self {
        self.service = Some(service.into());
        self
    }

    /// The sampling rate in Hz.
    pub fn sampling_frequency(&self) -> u32 {
        self.frequency
    }

    pub(crate) fn attribute_to_marker(mut self, marker: &'static str) -> Self {
        self.marker = Some(marker);
        self
    }
}

/// Why a capture could not be taken or finished.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CaptureError {
    /// Another capture is running in this process; only one `SIGPROF` profiler can.
    Busy,
    /// The profiler failed (to start, to report, or to encode).
    Profiler(String),
    /// This build of obskit leaves out its `profiling` feature: there is no sampler.
    NotBuilt,
}

impl fmt::Display for CaptureError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CaptureError::Busy => f.write_str("a CPU profile is already being captured in this process"),
            CaptureError::Profiler(e) => write!(f, "CPU profiler failed: {e}"),
            CaptureError::NotBuilt => f.write_str(&crate::features::not_built("profiling")),
        }
    }
}

impl std::error::Error for CaptureError {}

/// A running CPU capture: owns the process's `SIGPROF` profiler until it is finished or
/// dropped (dropping it discards the samples), like pprof-rs's `ProfilerGuard`, which it wraps.
///
/// At most one exists at a time in a process: [`Capture::start`] refuses a second one at once.
#[must_use = "the capture stops when dropped"]
pub struct Capture {
    #[cfg(feature = "profiling")]
    guard: Option<pprof::ProfilerGuard<'static>>,
    /// Without a sampler no capture exists: a value of this type cannot be made.
    #[cfg(not(feature = "profiling"))]
    never: std::convert::Infallible,
    options: CaptureOptions,
    /// Whether this capture labels samples by span (and so must stop the labelling).
    #[cfg(feature = "profiling")]
    labelling: bool,
    started_at: SystemTime,
    started: Instant,
}

impl fmt::Debug for Capture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Capture")
            .field("options", &self.options)
            .field("started_at", &self.started_at)
            .finish_non_exhaustive()
    }
}

impl Capture {
    /// Starts sampling every thread of the process, unless a capture is already running:
    /// then fails at once with [`CaptureError::Busy`] and counts the skip in
    /// `obskit_profiles_skipped_total{reason="busy"}`.
    pub fn start(options: CaptureOptions) -> Result<Capture, CaptureError> {
        #[cfg(not(feature = "profiling"))]
        {
            let _ = options;
            Err(CaptureError::NotBuilt)
        }
        #[cfg(feature = "profiling")]
        Capture::start_sampler(options)
    }

    #[cfg(feature = "profiling")]
    fn start_sampler(options: CaptureOptions) -> Result<Capture, CaptureError> {
        if ACTIVE
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            count_skip(SKIP_BUSY);
            return Err(CaptureError::Busy);
        }
        // pprof-rs's advice: never unwind from inside these libraries, whose code the unwinder
        // itself runs (a sample landing in libgcc's unwinder or in a libc lock can deadlock).
        // Samples landing there are skipped; they are also where idle threads wait.
        let built = pprof::ProfilerGuardBuilder::default()
            .frequency(options.frequency as i32)
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build();
        match built {
            Ok(guard) => Ok(Capture {
                labelling: options.span_labels && {
                    labels::begin();
                    true
                },
                guard: Some(guard),
                options,
                started_at: SystemTime::now(),
                started: Instant::now(),
            }),
            Err(e) => {
                ACTIVE.store(false, Ordering::Release);
                count_skip(SKIP_ERROR);
                Err(CaptureError::Profiler(e.to_string()))
            }
        }
    }

    /// Whether a capture is running in this process.
    ///
    /// ```
    /// # #[cfg(feature = "profiling")] {
    /// use obskit::profile::{Capture, CaptureOptions};
    /// let capture = Capture::start(CaptureOptions::new("doc")).unwrap();
    /// assert!(Capture::running());
    /// drop(capture);
    /// assert!(!Capture::running());
    /// # }
    /// ```
    pub fn running() -> bool {
        ACTIVE.load(Ordering::Acquire)
    }

    /// The capture's label.
    pub fn function(&self) -> &str {
        &self.options.function
    }

    /// How long the capture has been running.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Never called in this build: without the `profiling` feature no capture exists.
    #[cfg(not(feature = "profiling"))]
    pub fn finish(self) -> Result<Profile, CaptureError> {
        match self.never {}
    }

    /// Stops sampling, then symbolises, trims and encodes the samples, and counts the capture
    /// in `obskit_profiles_captured_total{function}` (store it with [`super::ProfileStore`]).
    ///
    /// The profiler is stopped and released before the slow part (symbolisation), so the next
    /// capture may start while this one is being encoded, and the encoding is not sampled.
    #[cfg(feature = "profiling")]
    pub fn finish(mut self) -> Result<Profile, CaptureError> {
        let guard = self
            .guard
            .take()
            .expect("a capture holds its guard until finished");
        let unresolved = guard.report().build_unresolved();
        drop(guard);
        let labelled = self.stop_labelling();
        ACTIVE.store(false, Ordering::Release);
        let unresolved = match unresolved {
            Ok(report) => report,
            Err(e) => {
                count_skip(SKIP_ERROR);
                return Err(CaptureError::Profiler(e.to_string()));
            }
        };
        let duration = self.started.elapsed();
        let mut data: HashMap<Frames, isize> = HashMap::new();
        let mut by_span: HashMap<(Frames, Option<usize>), isize> = HashMap::new();
        let mut samples = 0u64;
        for (key, count) in unresolved.data {
            let mut frames = Frames::from(key);
            let slot = labels::take_slot(&mut frames.frames, |frame| {
                frame
                    .iter()
                    .find_map(|symbol| symbol.name.as_deref().and_then(labels::slot_frame))
            });
            frames.frames.retain(|frame| !frame_matches(frame, LABEL_FRAMES));
            if !trim(&mut frames, &self.options) {
                continue;
            }
            // Samples of one stack on one thread merge into one entry (the time of a sample is
            // part of `Frames`' identity, but says nothing the profile shows).
            frames.sample_timestamp = self.started_at;
            samples += count.max(0) as u64;
            *by_span.entry((frames.clone(), slot)).or_insert(0) += count;
            *data.entry(frames).or_insert(0) += count;
        }
        let mut timing = unresolved.timing;
        timing.duration = duration;
        let report = pprof::Report { data, timing };
        let service = self.options.service.clone().unwrap_or_else(service);
        let title = title(&self.options.function, &service, self.started_at, duration);
        let encoded = catch_unwind(AssertUnwindSafe(|| encode(&report, &by_span, &labelled, &title)));
        let (pprof, svg) = match encoded {
            Ok(Ok(pair)) => pair,
            Ok(Err(e)) => {
                count_skip(SKIP_ERROR);
                return Err(CaptureError::Profiler(e));
            }
            Err(_) => {
                count_skip(SKIP_ERROR);
                return Err(CaptureError::Profiler("encoding panicked".into()));
            }
        };
        metrics()
            .captured
            .with_label_values(&[&self.options.function])
            .inc();
        Ok(Profile {
            profile_type: ProfileType::Cpu,
            sample_interval_bytes: 0,
            function: self.options.function.clone(),
            service,
            started_at: self.started_at,
            duration,
            frequency: self.options.frequency,
            samples,
            pprof,
            svg,
            span_cpu: span_cpu(&by_span, &labelled.labels),
        })
    }

    /// Stops labelling samples by span, if this capture did, and hands over the spans.
    #[cfg(feature = "profiling")]
    fn stop_labelling(&mut self) -> labels::Labelled {
        if std::mem::take(&mut self.labelling) {
            labels::end()
        } else {
            labels::Labelled::default()
        }
    }
}

impl Drop for Capture {
    fn drop(&mut self) {
        #[cfg(feature = "profiling")]
        if let Some(guard) = self.guard.take() {
            // Stop the timer and the handler first, then let the next capture in.
            drop(guard);
            self.stop_labelling();
            ACTIVE.store(false, Ordering::Release);
        }
    }
}

/// What a profile measures.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProfileType {
    /// CPU time, sampled at a frequency ([`Capture`]).
    Cpu,
    /// Heap allocations, sampled by bytes allocated (`profile::heap`, feature `heap-profiling`).
    Heap,
}

/// A finished capture, encoded both ways.
#[derive(Clone)]
pub struct Profile {
    profile_type: ProfileType,
    /// The heap's sampling interval in bytes (0 for CPU captures).
    sample_interval_bytes: u64,
    function: String,
    service: String,
    started_at: SystemTime,
    duration: Duration,
    frequency: u32,
    samples: u64,
    pprof: Bytes,
    svg: Bytes,
    /// What each labelled span took (labelling captures only).
    span_cpu: Vec<SpanCpu>,
}

impl fmt::Debug for Profile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Profile")
            .field("function", &self.function)
            .field("service", &self.service)
            .field("started_at", &self.started_at)
            .field("duration", &self.duration)
            .field("samples", &self.samples)
            .field("pprof_bytes", &self.pprof.len())
            .field("svg_bytes", &self.svg.len())
            .finish()
    }
}

impl Profile {
    /// A profile made of given parts (for tests of what stores and serves profiles).
    #[cfg(test)]
    pub(crate) fn from_parts(function: &str, pprof: &[u8], svg: &[u8]) -> Profile {
        Profile {
            profile_type: ProfileType::Cpu,
            sample_interval_bytes: 0,
            function: function.to_string(),
            service: "test".to_string(),
            started_at: SystemTime::now(),
            duration: Duration::from_millis(10),
            frequency: DEFAULT_FREQUENCY,
            samples: 1,
            pprof: Bytes::copy_from_slice(pprof),
            svg: Bytes::copy_from_slice(svg),
            span_cpu: Vec::new(),
        }
    }

    /// A heap profile made at `at` (it covers no window of its own: its counts are from
    /// when sampling started).
    #[cfg(feature = "heap-profiling")]
    pub(super) fn heap(
        function: &str,
        service: String,
        at: SystemTime,
        sample_interval_bytes: u64,
        stacks: u64,
        pprof: Bytes,
        svg: Bytes,
    ) -> Profile {
        Profile {
            profile_type: ProfileType::Heap,
            sample_interval_bytes,
            function: function.to_string(),
            service,
            started_at: at,
            duration: Duration::ZERO,
            frequency: 0,
            samples: stacks,
            pprof,
            svg,
            span_cpu: Vec::new(),
        }
    }

    /// What it measures.
    pub fn profile_type(&self) -> ProfileType {
        self.profile_type
    }
    /// A heap profile's sampling interval, in bytes (`None` for CPU captures).
    pub fn sample_interval_bytes(&self) -> Option<u64> {
        (self.profile_type == ProfileType::Heap).then_some(self.sample_interval_bytes)
    }
    /// The capture's label (the `#[profiled]` name, `on_demand`, or `heap` and `allocs` for
    /// heap profiles).
    pub fn function(&self) -> &str {
        &self.function
    }
    /// The service named in the title.
    pub fn service(&self) -> &str {
        &self.service
    }
    /// When sampling started.
    pub fn started_at(&self) -> SystemTime {
        self.started_at
    }
    /// How long sampling ran.
    pub fn duration(&self) -> Duration {
        self.duration
    }
    /// The sampling rate, in Hz (0 for heap profiles).
    pub fn frequency(&self) -> u32 {
        self.frequency
    }
    /// Samples kept after trimming (for heap profiles: the allocating stacks sampled).
    pub fn samples(&self) -> u64 {
        self.samples
    }
    /// The pprof protobuf (`perftools.profiles.Profile`, not gzipped): `go tool pprof -top FILE`.
    pub fn pprof(&self) -> &Bytes {
        &self.pprof
    }
    /// The flamegraph, an SVG document.
    pub fn svg(&self) -> &Bytes {
        &self.svg
    }
    /// What each span labelled by the capture took.
    pub(crate) fn span_cpu(&self) -> &[SpanCpu] {
        &self.span_cpu
    }
}

#[cfg(feature = "profiling")]
fn encode(
    report: &pprof::Report,
    by_span: &HashMap<(Frames, Option<usize>), isize>,
    labelled: &labels::Labelled,
    title: &str,
) -> Result<(Bytes, Bytes), String> {
    let timing = &report.timing;
    let pprof = super::proto::cpu_profile(
        by_span,
        &labelled.labels,
        labelled.unlabelled,
        timing.frequency,
        timing.start_time,
        timing.duration,
    )
    .write_to_bytes()
    .map_err(|e| e.to_string())?;
    let svg = if report.data.is_empty() {
        // inferno writes nothing at all for no samples; a profile must still open.
        empty_svg(title)
    } else {
        let mut options = pprof::flamegraph::Options::default();
        options.title = title.to_string();
        options.count_name = "samples".to_string();
        let mut svg = Vec::new();
        report
            .flamegraph_with_options(&mut svg, &mut options)
            .map_err(|e| e.to_string())?;
        svg
    };
    Ok((Bytes::from(pprof), Bytes::from(svg)))
}

/// Each labelled span's samples (those taken while it was the innermost span current) and their
/// innermost functions, most sampled first.
#[cfg(feature = "profiling")]
fn span_cpu(by_span: &HashMap<(Frames, Option<usize>), isize>, labels: &[labels::SpanLabel]) -> Vec<SpanCpu> {
    let mut per_slot: HashMap<usize, (u64, HashMap<String, u64>)> = HashMap::new();
    for ((frames, slot), count) in by_span {
        let (Some(slot), Ok(count)) = (slot, u64::try_from(*count)) else {
            continue;
        };
        let (samples, leaves) = per_slot.entry(*slot).or_default();
        *samples += count;
        if let Some(leaf) = frames.frames.first().and_then(|frame| frame.first()) {
            *leaves.entry(leaf.name()).or_default() += count;
        }
    }
    per_slot
        .into_iter()
        .filter_map(|(slot, (samples, leaves))| {
            let label = labels.get(slot)?;
            let mut top: Vec<TopFrame> = leaves
                .into_iter()
                .map(|(function, samples)| TopFrame { function, samples })
                .collect();
            top.sort_by(|a, b| {
                b.samples
                    .cmp(&a.samples)
                    .then_with(|| a.function.cmp(&b.function))
            });
            top.truncate(TOP_FRAMES);
            Some(SpanCpu {
                span_id: label.span_id,
                trace_id: label.trace_id,
                samples,
                top_frames: top,
            })
        })
        .collect()
}

#[cfg(feature = "profiling")]
pub(super) fn empty_svg(title: &str) -> Vec<u8> {
    format!(
        concat!(
            r#"<?xml version="1.0" standalone="no"?>"#,
            "\n",
            r#"<svg version="1.1" width="1200" height="60" xmlns="http://www.w3.org/2000/svg">"#,
            r#"<text x="600" y="24" text-anchor="middle" font-size="17">{}</text>"#,
            r#"<text x="600" y="48" text-anchor="middle" font-size="12">no samples</text></svg>"#,
            "\n"
        ),
        xml_escape(title)
    )
    .into_bytes()
}

#[cfg(feature = "profiling")]
fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

/// `checkout · shop · 2026-11-24 14:03:05–14:03:10 UTC (5.0 s)`.
#[cfg(feature = "profiling")]
fn title(function: &str, service: &str, started_at: SystemTime, duration: Duration) -> String {
    let start = rfc3339(started_at);
    let end = rfc3339(started_at + duration);
    // Drop the date from the end when it is the start's.
    let end_short = if end[..10] == start[..10] {
        &end[11..]
    } else {
        &end[..]
    };
    format!(
        "CPU: {function} · {service} · {} {}–{} UTC ({:.1} s)",
        &start[..10],
        &start[11..19],
        &end_short[..end_short.len().min(8)],
        duration.as_secs_f64()
    )
}

/// `YYYY-MM-DDTHH:MM:SSZ` (UTC), without a date library.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// Howard Hinnant's `civil_from_days`: days since 1970-01-01 to (year, month, day).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// Frames of the sampler itself, found on the leaf side of every sample (pprof-rs drops its
/// signal handler's frame, not the unwinder's frames above it).
#[cfg(feature = "profiling")]
const PROFILER_FRAMES: &[&str] = &[
    "backtrace::",
    "pprof::",
    "<pprof::",
    "<backtrace::",
    "__restore_rt",
    "_Unwind_",
    "__libc_sigaction",
];

/// The span-label machinery's own frames (`super::labels`), found between a span's poll and
/// the future it polls, and dropped from every sample once its span is read.
#[cfg(feature = "profiling")]
const LABEL_FRAMES: &[&str] = &[
    "obskit::profile::labels::",
    "obskit::trace::span::Span::poll_labelled",
];

/// A sample whose leaf-side frames include one of these was taken on a thread waiting for work
/// (the runtime's idle loop), not doing any.
#[cfg(feature = "profiling")]
const IDLE_FRAMES: &[&str] = &[
    "tokio::runtime::park::",
    "tokio::runtime::scheduler::multi_thread::park::",
    "tokio::runtime::scheduler::multi_thread::worker::Context::park",
    "tokio::runtime::io::driver::Driver::turn",
    "tokio::runtime::time::Driver::park",
    "mio::poll::Poll::poll",
    "std::thread::park",
    "std::thread::sleep",
    "std::sys::pal::unix::futex::futex_wait",
    "std::sys::sync::condvar",
    "parking_lot_core::",
    "epoll_wait",
    "__futex_abstimed_wait",
    "nanosleep",
];

/// How many leaf-side frames are looked at for idleness: a worker parks near the leaf; deeper,
/// `park` names mean something else.
#[cfg(feature = "profiling")]
const IDLE_DEPTH: usize = 12;

#[cfg(feature = "profiling")]
fn frame_matches(frame: &[Symbol], patterns: &[&str]) -> bool {
    frame.iter().any(|symbol| {
        let name = symbol.name();
        patterns.iter().any(|p| name.contains(p))
    })
}

/// Trims one sample in place; `false` drops it.
#[cfg(feature = "profiling")]
fn trim(frames: &mut Frames, options: &CaptureOptions) -> bool {
    // `frames.frames[0]` is the leaf (innermost); the last is the thread's entry point.
    let profiler = frames
        .frames
        .iter()
        .take_while(|frame| frame_matches(frame, PROFILER_FRAMES))
        .count();
    frames.frames.drain(..profiler);
    if frames.frames.is_empty() {
        return false;
    }
    if let Some(marker) = options.marker {
        let Some(at) = frames
            .frames
            .iter()
            .position(|frame| frame.iter().any(|s| s.name().contains(marker)))
        else {
            return false;
        };
        // Everything below the marker is the caller's and the runtime's; the function's own
        // label becomes the root, so that it shows even when its body was inlined.
        frames.frames.truncate(at);
        frames.frames.push(vec![Symbol {
            name: Some(options.function.clone().into_bytes()),
            addr: None,
            lineno: None,
            filename: None,
        }]);
        true
    } else {
        !frames
            .frames
            .iter()
            .take(IDLE_DEPTH)
            .any(|frame| frame_matches(frame, IDLE_FRAMES))
    }
}

#[cfg(all(test, feature = "profiling"))]
mod tests {
    use super::*;

    use crate::profile::SERIAL;

    #[inline(never)]
    fn burn(until: Instant) -> u64 {
        let mut x = 1u64;
        while Instant::now() < until {
            for _ in 0..1000 {
                x = x
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
            }
        }
        std::hint::black_box(x)
    }

    #[test]
    fn second_capture_is_refused_and_counted() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let busy = || metrics().skipped.with_label_values(&[SKIP_BUSY]).get();
        let before = busy();
        let first = Capture::start(CaptureOptions::new("unit_first")).unwrap();
        assert_eq!(
            Capture::start(CaptureOptions::new("unit_second")).unwrap_err(),
            CaptureError::Busy
        );
        assert_eq!(busy(), before + 1);
        drop(first);
        let again = Capture::start(CaptureOptions::new("unit_again")).unwrap();
        drop(again);
    }

    #[test]
    fn capture_samples_cpu_work() {
        let _serial = SERIAL.lock().unwrap_or_else(|p| p.into_inner());
        let captured = || metrics().captured.with_label_values(&["unit_burn"]).get();
        let before = captured();
        let capture = Capture::start(CaptureOptions::new("unit_burn").service("svc<&>")).unwrap();
        burn(Instant::now() + Duration::from_millis(600));
        let profile = capture.finish().unwrap();
        assert!(!Capture::running());
        assert_eq!(captured(), before + 1);
        assert!(profile.samples() > 10, "{profile:?}");
        let svg = String::from_utf8(profile.svg().to_vec()).unwrap();
        assert!(svg.contains("burn"), "the hot function is in the flamegraph");
        assert!(
            svg.contains("unit_burn · svc&lt;&amp;&gt;"),
            "title names function and service"
        );
        assert!(!svg.contains("perf_signal_handler"));
        assert!(!profile.pprof().is_empty());
    }

    #[test]
    fn dates() {
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(rfc3339(t), "2026-11-18T11:06:40Z");
        assert_eq!(
            rfc3339(UNIX_EPOCH + Duration::from_secs(951_782_400)),
            "2000-02-29T00:00:00Z"
        );
    }

    #[test]
    fn title_names_function_service_and_window() {
        let t = UNIX_EPOCH + Duration::from_secs(1_795_000_000);
        assert_eq!(
            title("checkout", "shop", t, Duration::from_secs(5)),
            "CPU: checkout · shop · 2026-11-18 11:06:40–11:06:45 UTC (5.0 s)"
        );
    }

    #[test]
    fn empty_flamegraph_is_still_a_document() {
        let svg = String::from_utf8(empty_svg("a <b> & c")).unwrap();
        assert!(svg.contains("a &lt;b&gt; &amp; c"));
        assert!(svg.trim_end().ends_with("</svg>"));
    }

    fn symbol(name: &str) -> Vec<Symbol> {
        vec![Symbol {
            name: Some(name.as_bytes().to_vec()),
            addr: None,
            lineno: None,
            filename: None,
        }]
    }

    fn frames(names: &[&str]) -> Frames {
        Frames {
            frames: names.iter().map(|n| symbol(n)).collect(),
            thread_name: "t".into(),
            thread_id: 1,
            sample_timestamp: UNIX_EPOCH,
        }
    }

    fn names(f: &Frames) -> Vec<String> {
        f.frames.iter().map(|s| s[0].name()).collect()
    }

    #[test]
    fn trimming() {
        let process = CaptureOptions::new("on_demand");
        let mut f = frames(&["backtrace::trace", "pprof::x", "app::hot", "app::main"]);
        assert!(trim(&mut f, &process));
        assert_eq!(names(&f), ["app::hot", "app::main"]);
        let mut idle = frames(&["epoll_wait", "mio::poll::Poll::poll", "tokio::runtime::x"]);
        assert!(!trim(&mut idle, &process));

        let marked = CaptureOptions::new("checkout").attribute_to_marker("obskit::marker");
        let mut f = frames(&[
            "app::hot",
            "app::checkout::{{closure}}",
            "obskit::marker",
            "tokio::run",
        ]);
        assert!(trim(&mut f, &marked));
        assert_eq!(names(&f), ["app::hot", "app::checkout::{{closure}}", "checkout"]);
        let mut other = frames(&["app::other", "tokio::run"]);
        assert!(
            !trim(&mut other, &marked),
            "samples outside the function are dropped"
        );
    }
}
