//! The seed's memory check: system memory in use, as `psutil.virtual_memory().percent`.

use std::future::{ready, Ready};

use sysinfo::{MemoryRefreshKind, System};

use super::{CheckOutcome, HealthStatus};

/// The name [`super::HealthChecks::register_memory_check`] registers the memory check under.
///
/// ```
/// assert_eq!(obskit::health::MEMORY_CHECK_NAME, "memory");
/// ```
pub const MEMORY_CHECK_NAME: &str = "memory";

/// The seed's threshold for `degraded`: 80 % of system memory in use.
///
/// ```
/// assert_eq!(obskit::health::DEFAULT_MEMORY_DEGRADED_PERCENT, 80.0);
/// ```
pub const DEFAULT_MEMORY_DEGRADED_PERCENT: f64 = 80.0;

/// The seed's threshold for `unhealthy`: more than 90 % of system memory in use.
///
/// ```
/// assert_eq!(obskit::health::DEFAULT_MEMORY_UNHEALTHY_PERCENT, 90.0);
/// ```
pub const DEFAULT_MEMORY_UNHEALTHY_PERCENT: f64 = 90.0;

/// The status for `usage_percent` of memory in use, with the seed's boundaries: `degraded` from
/// `degraded_at_percent` on (the seed's `< 80` is healthy), `unhealthy` strictly above
/// `unhealthy_above_percent` (the seed's `> 90`).
///
/// ```
/// use obskit::health::{memory_status, HealthStatus};
///
/// assert_eq!(memory_status(79.9, 80.0, 90.0), HealthStatus::Healthy);
/// assert_eq!(memory_status(80.0, 80.0, 90.0), HealthStatus::Degraded);
/// assert_eq!(memory_status(90.0, 80.0, 90.0), HealthStatus::Degraded);
/// assert_eq!(memory_status(90.1, 80.0, 90.0), HealthStatus::Unhealthy);
/// ```
pub fn memory_status(
    usage_percent: f64,
    degraded_at_percent: f64,
    unhealthy_above_percent: f64,
) -> HealthStatus {
    if usage_percent > unhealthy_above_percent {
        HealthStatus::Unhealthy
    } else if usage_percent >= degraded_at_percent {
        HealthStatus::Degraded
    } else {
        HealthStatus::Healthy
    }
}

/// A check of system memory in use (total minus available, as psutil counts it), for
/// [`super::HealthChecks::register_with`]. Details: `usage_percent`, `used_bytes`, `total_bytes`.
///
/// Where the platform gives no memory figures the check is `healthy` with a message saying so:
/// not knowing is no reason to take a service down.
///
/// ```
/// use obskit::health::{memory_check, CheckKind, CheckOptions, HealthChecks};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let checks = HealthChecks::new("cart", "1.0.0");
/// // Stricter than the seed: degraded from 70 %, unhealthy above 85 %.
/// checks.register_with("memory", CheckOptions::new().kind(CheckKind::Diagnostic), memory_check(70.0, 85.0));
/// let report = checks.report().await;
/// # if cfg!(target_os = "linux") {
/// let percent = report.checks["memory"].details["usage_percent"].as_f64().unwrap();
/// assert!((0.0..=100.0).contains(&percent));
/// # }
/// # });
/// ```
pub fn memory_check(
    degraded_at_percent: f64,
    unhealthy_above_percent: f64,
) -> impl Fn() -> Ready<CheckOutcome> + Clone + Send + Sync + 'static {
    // Reading /proc/meminfo takes microseconds: no need to leave the async task for it.
    move || {
        ready(match system_memory() {
            Some((used, total)) => memory_outcome(used, total, degraded_at_percent, unhealthy_above_percent),
            None => CheckOutcome::healthy().with_message("system memory figures are not available here"),
        })
    }
}

/// `(used, total)` bytes of system memory, if the platform tells.
fn system_memory() -> Option<(u64, u64)> {
    let mut system = System::new().ok()?;
    system.refresh_memory_specifics(MemoryRefreshKind::nothing().with_ram());
    let total = system.total_memory();
    (total > 0).then(|| (system.used_memory(), total))
}

/// The outcome for a reading, kept apart from the reading so that thresholds can be tested.
fn memory_outcome(
    used: u64,
    total: u64,
    degraded_at_percent: f64,
    unhealthy_above_percent: f64,
) -> CheckOutcome {
    let percent = used as f64 / total as f64 * 100.0;
    let shown = (percent * 100.0).round() / 100.0;
    let outcome = match memory_status(percent, degraded_at_percent, unhealthy_above_percent) {
        HealthStatus::Healthy => CheckOutcome::healthy(),
        HealthStatus::Degraded => CheckOutcome::degraded(format!(
            "memory usage {shown}% is at or above {degraded_at_percent}%"
        )),
        HealthStatus::Unhealthy => CheckOutcome::unhealthy(format!(
            "memory usage {shown}% is above {unhealthy_above_percent}%"
        )),
    };
    outcome
        .with_detail("usage_percent", shown)
        .with_detail("used_bytes", used)
        .with_detail("total_bytes", total)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;

    #[test]
    fn thresholds_follow_the_seed() {
        // (used GiB of 100, expected status)
        let table = [
            (0, HealthStatus::Healthy),
            (79, HealthStatus::Healthy),
            (80, HealthStatus::Degraded),
            (85, HealthStatus::Degraded),
            (90, HealthStatus::Degraded),
            (91, HealthStatus::Unhealthy),
            (100, HealthStatus::Unhealthy),
        ];
        for (used, expected) in table {
            let outcome = memory_outcome(used * GIB, 100 * GIB, 80.0, 90.0);
            assert_eq!(outcome.status, expected, "{used}%");
            assert_eq!(outcome.details["usage_percent"], used as f64);
            assert_eq!(outcome.details["used_bytes"], used * GIB);
            assert_eq!(outcome.details["total_bytes"], 100 * GIB);
        }
    }

    #[test]
    fn messages_say_which_threshold() {
        let degraded = memory_outcome(85, 100, 80.0, 90.0);
        assert_eq!(
            degraded.message.as_deref(),
            Some("memory usage 85% is at or above 80%")
        );
        let unhealthy = memory_outcome(955, 1000, 80.0, 90.0);
        assert_eq!(
            unhealthy.message.as_deref(),
            Some("memory usage 95.5% is above 90%")
        );
        assert_eq!(memory_outcome(1, 3, 80.0, 90.0).details["usage_percent"], 33.33);
        assert_eq!(memory_outcome(1, 3, 80.0, 90.0).message, None);
    }

    #[test]
    fn custom_thresholds() {
        assert_eq!(memory_status(65.0, 60.0, 70.0), HealthStatus::Degraded);
        assert_eq!(memory_status(70.5, 60.0, 70.0), HealthStatus::Unhealthy);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn reads_the_real_system() {
        let outcome =
            memory_check(DEFAULT_MEMORY_DEGRADED_PERCENT, DEFAULT_MEMORY_UNHEALTHY_PERCENT)().into_inner();
        let total = outcome.details["total_bytes"].as_u64().unwrap();
        let used = outcome.details["used_bytes"].as_u64().unwrap();
        assert!(total > 0 && used <= total);
    }
}
