//! Process figures for `/debug/metrics`: memory, CPU, threads, descriptors, connections.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use serde::Serialize;
use sysinfo::{MemoryRefreshKind, Pid, ProcessRefreshKind, ProcessesToUpdate, System};
use tokio::task::AbortHandle;
use tokio::time::MissedTickBehavior;

use super::procfs;
use super::ConnectionStats;
use crate::health::process_uptime;

/// What `/debug/metrics` shows: the seed's `memory`, `cpu` and `connections` figures and more.
/// A figure the platform does not give is `None`, serialised as `null` (threads, descriptors
/// and established TCP connections come from Linux's `/proc`).
///
/// ```
/// use obskit::debug::{ConnectionStats, ProcessStats};
///
/// let snapshot = ProcessStats::sample_now(&ConnectionStats::new());
/// let json = serde_json::to_value(&snapshot).unwrap();
/// assert_eq!(json["pid"], std::process::id());
/// assert!(json["cpu"].get("process_percent").is_some());
/// assert!(json["memory"].get("rss_bytes").is_some());
/// assert_eq!(json["connections"]["open"], 0);
/// ```
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ProcessSnapshot {
    /// The process id.
    pub pid: u32,
    /// How long the process has been running, in seconds.
    pub uptime_seconds: f64,
    /// Memory figures.
    pub memory: MemorySnapshot,
    /// CPU figures.
    pub cpu: CpuSnapshot,
    /// Threads of the process.
    pub threads: Option<u64>,
    /// Open file descriptors (sockets included).
    pub open_fds: Option<u64>,
    /// Connection figures.
    pub connections: ConnectionsSnapshot,
}

/// Memory figures of a [`ProcessSnapshot`].
///
/// ```
/// use obskit::debug::{ConnectionStats, ProcessStats};
///
/// let memory = ProcessStats::sample_now(&ConnectionStats::new()).memory;
/// # if cfg!(target_os = "linux") {
/// assert!(memory.rss_bytes.unwrap() > 0);
/// assert!(memory.virtual_bytes.unwrap() >= memory.rss_bytes.unwrap());
/// assert!((0.0..=100.0).contains(&memory.system_used_percent.unwrap()));
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct MemorySnapshot {
    /// Resident set size of the process, in bytes (the seed's `rss`).
    pub rss_bytes: Option<u64>,
    /// Virtual memory size of the process, in bytes (the seed's `vms`).
    pub virtual_bytes: Option<u64>,
    /// System memory in use, in percent (the seed's `percent`, as the health check counts it).
    pub system_used_percent: Option<f64>,
}

/// CPU figures of a [`ProcessSnapshot`], measured over the last sampling window.
///
/// ```
/// use obskit::debug::{ConnectionStats, ProcessStats};
///
/// let cpu = ProcessStats::sample_now(&ConnectionStats::new()).cpu;
/// # if cfg!(target_os = "linux") {
/// assert!(cpu.logical_cores.unwrap() >= 1);
/// assert!(cpu.window_seconds.unwrap() >= 0.2);
/// # }
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CpuSnapshot {
    /// CPU time used by the process over the window, in percent of one core, as `top` and
    /// psutil show it: up to `100 × logical_cores`. `None` until one window has passed.
    pub process_percent: Option<f64>,
    /// Busy time of the whole system over the window, in percent of all cores (0 to 100).
    pub system_percent: Option<f64>,
    /// Logical CPU cores of the host (the seed's `count`).
    pub logical_cores: Option<usize>,
    /// How long the window the percentages cover was, in seconds.
    pub window_seconds: Option<f64>,
}

/// Connection figures of a [`ProcessSnapshot`].
///
/// ```
/// use obskit::debug::{ConnectionStats, ProcessStats};
///
/// let connections = ConnectionStats::new();
/// let _guard = connections.opened();
/// let snapshot = ProcessStats::sample_now(&connections).connections;
/// assert_eq!((snapshot.open, snapshot.accepted_total), (1, 1));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct ConnectionsSnapshot {
    /// Connections the server holds open now (from [`ConnectionStats`]).
    pub open: u64,
    /// Connections the server accepted since start (from [`ConnectionStats`]).
    pub accepted_total: u64,
    /// TCP connections of the process in state ESTABLISHED, in any direction: the server's,
    /// and the client connections to databases and other services.
    pub established_tcp: Option<u64>,
}

/// Samples process figures for `/debug/metrics`.
///
/// CPU percentages need two readings some time apart; a background task on the Tokio runtime
/// takes one every interval, so a snapshot shows the CPU use over the last full interval
/// (never the meaningless figure of a first reading). The other figures are read when a
/// snapshot is asked for, so they are current and cost nothing while nobody looks. Dropping
/// the `ProcessStats` stops the task.
///
/// ```
/// use std::time::Duration;
/// use obskit::debug::{ConnectionStats, ProcessStats};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let stats = ProcessStats::start(ProcessStats::DEFAULT_INTERVAL, ConnectionStats::new());
/// // Before the first interval has passed there is no CPU figure yet.
/// assert_eq!(stats.snapshot().cpu.process_percent, None);
/// let json = serde_json::to_value(stats.snapshot()).unwrap();
/// assert!(json["uptime_seconds"].as_f64().unwrap() >= 0.0);
/// # });
/// ```
pub struct ProcessStats {
    pid: u32,
    interval: Duration,
    connections: ConnectionStats,
    cpu: Arc<Mutex<CpuSnapshot>>,
    /// Reads memory on demand; a `System` of its own so that it never waits for the sampler.
    probe: Mutex<Probe>,
    task: AbortHandle,
}

impl std::fmt::Debug for ProcessStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessStats")
            .field("pid", &self.pid)
            .field("interval", &self.interval)
            .field("connections", &self.connections)
            .finish_non_exhaustive()
    }
}

impl Drop for ProcessStats {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl ProcessStats {
    /// How often CPU use is sampled unless told otherwise.
    ///
    /// ```
    /// assert_eq!(obskit::debug::ProcessStats::DEFAULT_INTERVAL.as_secs(), 1);
    /// ```
    pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(1);

    /// The shortest interval: sysinfo does not re-read system CPU times more often than this.
    ///
    /// ```
    /// assert_eq!(obskit::debug::ProcessStats::MIN_INTERVAL.as_millis(), 200);
    /// ```
    pub const MIN_INTERVAL: Duration = sysinfo::MINIMUM_CPU_UPDATE_INTERVAL;

    /// Starts sampling CPU use every `interval` (raised to [`ProcessStats::MIN_INTERVAL`]) on
    /// the current Tokio runtime; `connections` are the counters the server increments.
    ///
    /// # Panics
    ///
    /// Outside a Tokio runtime, as [`tokio::spawn`] does; use [`ProcessStats::sample_now`]
    /// there.
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::debug::{ConnectionStats, ProcessStats};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let connections = ConnectionStats::new();
    /// let stats = ProcessStats::start(Duration::from_millis(200), connections.clone());
    /// let _guard = connections.opened();
    /// tokio::time::sleep(Duration::from_millis(500)).await;
    /// let snapshot = stats.snapshot();
    /// assert_eq!(snapshot.connections.open, 1);
    /// # if cfg!(target_os = "linux") {
    /// assert!(snapshot.cpu.process_percent.is_some());
    /// # }
    /// # });
    /// ```
    pub fn start(interval: Duration, connections: ConnectionStats) -> ProcessStats {
        let interval = interval.max(Self::MIN_INTERVAL);
        // Anchor the uptime clock at start-up rather than at the first snapshot.
        let _ = process_uptime();
        // The baseline reading is taken now, so the first tick already yields a figure.
        let mut sampler = CpuSampler::new();
        let cpu = Arc::new(Mutex::new(sampler.figures()));
        let published = Arc::clone(&cpu);
        let task = tokio::spawn(async move {
            let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + interval, interval);
            // After a stall, sample once and carry on: a burst of back-to-back readings would
            // measure windows too short to mean anything.
            ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
            loop {
                ticks.tick().await;
                // Reading /proc/stat and /proc/self/stat takes microseconds: no need for
                // spawn_blocking.
                let figures = sampler.sample();
                *published.lock().unwrap_or_else(PoisonError::into_inner) = figures;
            }
        })
        .abort_handle();
        ProcessStats {
            pid: std::process::id(),
            interval,
            connections,
            cpu,
            probe: Mutex::new(Probe::new()),
            task,
        }
    }

    /// The sampling interval in use (after raising it to [`ProcessStats::MIN_INTERVAL`]).
    ///
    /// ```
    /// use std::time::Duration;
    /// use obskit::debug::{ConnectionStats, ProcessStats};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let stats = ProcessStats::start(Duration::from_millis(10), ConnectionStats::new());
    /// assert_eq!(stats.interval(), ProcessStats::MIN_INTERVAL);
    /// # });
    /// ```
    pub fn interval(&self) -> Duration {
        self.interval
    }

    /// The connection counters shown in snapshots.
    ///
    /// ```
    /// use obskit::debug::{ConnectionStats, ProcessStats};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let stats = ProcessStats::start(ProcessStats::DEFAULT_INTERVAL, ConnectionStats::new());
    /// let _guard = stats.connections().opened();
    /// assert_eq!(stats.snapshot().connections.open, 1);
    /// # });
    /// ```
    pub fn connections(&self) -> &ConnectionStats {
        &self.connections
    }

    /// The figures now: CPU from the last full interval, everything else read on the spot. Reads
    /// a few small `/proc` files, plus `/proc/self/net/tcp{,6}` when the process has sockets:
    /// well under a millisecond for a typical service, more with tens of thousands of sockets.
    ///
    /// ```
    /// use obskit::debug::{ConnectionStats, ProcessStats};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let stats = ProcessStats::start(ProcessStats::DEFAULT_INTERVAL, ConnectionStats::new());
    /// let snapshot = stats.snapshot();
    /// assert_eq!(snapshot.pid, std::process::id());
    /// # if cfg!(target_os = "linux") {
    /// assert!(snapshot.threads.unwrap() >= 1);
    /// assert!(snapshot.open_fds.unwrap() >= 3);
    /// # }
    /// # });
    /// ```
    pub fn snapshot(&self) -> ProcessSnapshot {
        let cpu = *self.cpu.lock().unwrap_or_else(PoisonError::into_inner);
        let memory = self.probe.lock().unwrap_or_else(PoisonError::into_inner).memory();
        assemble(self.pid, cpu, memory, &self.connections)
    }

    /// One snapshot without a runtime or a background task: takes two CPU readings 200 ms
    /// apart, **blocking the calling thread** meanwhile. For tools and tests; a service uses
    /// [`ProcessStats::start`] (in async code, this would stall a runtime worker).
    ///
    /// ```
    /// use obskit::debug::{ConnectionStats, ProcessStats};
    ///
    /// let snapshot = ProcessStats::sample_now(&ConnectionStats::new());
    /// # if cfg!(target_os = "linux") {
    /// assert!(snapshot.cpu.process_percent.unwrap() >= 0.0);
    /// assert!(snapshot.cpu.system_percent.is_some());
    /// # }
    /// ```
    pub fn sample_now(connections: &ConnectionStats) -> ProcessSnapshot {
        let mut sampler = CpuSampler::new();
        std::thread::sleep(Self::MIN_INTERVAL);
        let cpu = sampler.sample();
        let memory = Probe::new().memory();
        assemble(std::process::id(), cpu, memory, connections)
    }
}

fn assemble(
    pid: u32,
    cpu: CpuSnapshot,
    memory: MemorySnapshot,
    connections: &ConnectionStats,
) -> ProcessSnapshot {
    let fds = procfs::fd_table();
    let established_tcp = fds
        .as_ref()
        .and_then(|fds| procfs::established_tcp(&fds.socket_inodes));
    ProcessSnapshot {
        pid,
        uptime_seconds: round2(process_uptime().as_secs_f64()),
        memory,
        cpu,
        threads: procfs::thread_count(),
        open_fds: fds.map(|fds| fds.count),
        connections: ConnectionsSnapshot {
            open: connections.open(),
            accepted_total: connections.accepted_total(),
            established_tcp,
        },
    }
}

fn round2(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

fn current_pid() -> Pid {
    Pid::from_u32(std::process::id())
}

/// Reads memory figures on demand.
struct Probe {
    system: Option<System>,
}

impl Probe {
    fn new() -> Self {
        Probe {
            system: System::new().ok(),
        }
    }

    fn memory(&mut self) -> MemorySnapshot {
        let Some(system) = self.system.as_mut() else {
            return MemorySnapshot {
                rss_bytes: None,
                virtual_bytes: None,
                system_used_percent: None,
            };
        };
        let pid = current_pid();
        system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_memory().without_tasks(),
        );
        let process = system.process(pid);
        let total = system.total_memory();
        MemorySnapshot {
            rss_bytes: process.map(|p| p.memory()),
            virtual_bytes: process.map(|p| p.virtual_memory()),
            system_used_percent: (total > 0)
                .then(|| round2(system.used_memory() as f64 / total as f64 * 100.0)),
        }
    }
}

/// Two readings apart make a CPU figure: process CPU time and system busy time, each over the
/// wall time between the readings.
struct CpuSampler {
    system: Option<System>,
    /// When the previous reading was taken and the process's CPU time then, in milliseconds.
    previous: Option<(Instant, u64)>,
    /// Whether sysinfo holds a previous system reading, so that its system figure is a delta.
    primed: bool,
    last: CpuSnapshot,
}

impl CpuSampler {
    /// A sampler holding its baseline reading.
    fn new() -> Self {
        let mut sampler = CpuSampler {
            system: System::new().ok(),
            previous: None,
            primed: false,
            last: CpuSnapshot {
                process_percent: None,
                system_percent: None,
                logical_cores: None,
                window_seconds: None,
            },
        };
        sampler.sample();
        sampler
    }

    /// The figures of the last reading.
    fn figures(&self) -> CpuSnapshot {
        self.last
    }

    fn sample(&mut self) -> CpuSnapshot {
        let Some(system) = self.system.as_mut() else {
            return self.last;
        };
        let pid = current_pid();
        // System CPU times first: the process refresh below would otherwise read them itself
        // (sysinfo needs them for its own per-process figure, which is not used here).
        system.refresh_cpu_usage();
        system.refresh_processes_specifics(
            ProcessesToUpdate::Some(&[pid]),
            true,
            ProcessRefreshKind::nothing().with_cpu().without_tasks(),
        );
        let now = Instant::now();
        let cpu_time_ms = system.process(pid).map(|p| p.accumulated_cpu_time());

        let mut figures = CpuSnapshot {
            process_percent: None,
            system_percent: None,
            logical_cores: Some(system.cpus().len()).filter(|&n| n > 0),
            window_seconds: None,
        };
        if let (Some((then, before_ms)), Some(after_ms)) = (self.previous, cpu_time_ms) {
            let window = now.duration_since(then);
            if !window.is_zero() {
                // accumulated_cpu_time is the sum over all threads, hence "percent of one core".
                let used = Duration::from_millis(after_ms.saturating_sub(before_ms));
                figures.process_percent = Some(round2(used.as_secs_f64() / window.as_secs_f64() * 100.0));
                figures.window_seconds = Some(round2(window.as_secs_f64()));
            }
        }
        if self.primed {
            figures.system_percent = Some(round2(f64::from(system.global_cpu_usage())));
        }
        self.primed = true;
        self.previous = cpu_time_ms.map(|ms| (now, ms));
        self.last = figures;
        figures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_reading_has_no_percentages() {
        let sampler = CpuSampler::new();
        let figures = sampler.figures();
        assert_eq!(figures.process_percent, None);
        assert_eq!(figures.system_percent, None);
        assert_eq!(figures.window_seconds, None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn busy_thread_shows_in_the_process_figure() {
        let mut sampler = CpuSampler::new();
        let until = Instant::now() + Duration::from_millis(300);
        // Spin on this thread: the window is all busy time for at least one core.
        while Instant::now() < until {
            std::hint::black_box(0u64.wrapping_add(1));
        }
        let figures = sampler.sample();
        // CPU time has 10 ms resolution; 300 ms of spinning is far above it.
        assert!(figures.process_percent.unwrap() > 0.0, "{figures:?}");
        assert!(figures.window_seconds.unwrap() >= 0.3);
        assert!(figures.system_percent.is_some());
        assert!(figures.logical_cores.unwrap() >= 1);
    }

    #[tokio::test]
    async fn dropping_stops_the_sampler() {
        let stats = ProcessStats::start(Duration::from_millis(200), ConnectionStats::new());
        let task = stats.task.clone();
        assert!(!task.is_finished());
        drop(stats);
        // Aborting completes at the task's next poll; yield until the runtime has done it.
        for _ in 0..100 {
            if task.is_finished() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("sampler task still running after drop");
    }

    #[test]
    fn rounding() {
        assert_eq!(round2(12.3456), 12.35);
        assert_eq!(round2(0.0), 0.0);
    }
}
