//! How long the process has been running.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

#[cfg(feature = "process-metrics")]
use sysinfo::{Pid, ProcessRefreshKind, ProcessesToUpdate, System};

/// Time since the process started. Anchored on first use to the start time the OS reports
/// (whole seconds), then advanced by a monotonic clock so it never jumps with the wall clock;
/// where the OS does not say, counted from the first use.
pub(crate) fn process_uptime() -> Duration {
    static ANCHOR: OnceLock<(Instant, Duration)> = OnceLock::new();
    let (anchored_at, running_before) =
        ANCHOR.get_or_init(|| (Instant::now(), running_for().unwrap_or_default()));
    *running_before + anchored_at.elapsed()
}

#[cfg(feature = "process-metrics")]
fn running_for() -> Option<Duration> {
    let pid = Pid::from_u32(std::process::id());
    let mut system = System::new().ok()?;
    system.refresh_processes_specifics(
        ProcessesToUpdate::Some(&[pid]),
        false,
        ProcessRefreshKind::nothing().without_tasks(),
    );
    let started = Duration::from_secs(system.process(pid)?.start_time());
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .ok()?
        .checked_sub(started)
}

/// Without `process-metrics` the OS is not asked: uptime counts from the first use, which the
/// builder makes at start-up.
#[cfg(not(feature = "process-metrics"))]
fn running_for() -> Option<Duration> {
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uptime_grows() {
        let first = process_uptime();
        std::thread::sleep(Duration::from_millis(5));
        assert!(process_uptime() > first);
    }

    #[cfg(all(target_os = "linux", feature = "process-metrics"))]
    #[test]
    fn uptime_counts_from_process_start() {
        // The test binary started before this test ran; the OS start time has 1 s resolution,
        // so all that can be said is that the figure is plausible.
        assert!(process_uptime() < Duration::from_secs(24 * 3600));
        assert!(running_for().is_some());
    }
}
