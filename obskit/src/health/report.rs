//! The report a health endpoint answers with.

use std::collections::BTreeMap;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

use super::{HealthStatus, Severity};

/// A health report: the seed's `HealthStatus` dataclass plus `uptime_seconds`.
///
/// ```
/// use obskit::health::{CheckOutcome, HealthChecks};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let checks = HealthChecks::new("cart", "1.0.0");
/// checks.register("redis", || async { CheckOutcome::healthy() });
/// let json = serde_json::to_value(checks.report().await).unwrap();
/// assert_eq!(json["service"], "cart");
/// assert_eq!(json["status"], "healthy");
/// assert_eq!(json["version"], "1.0.0");
/// assert!(json["timestamp"].as_f64().unwrap() > 1.7e9);
/// assert!(json["uptime_seconds"].as_f64().unwrap() >= 0.0);
/// assert_eq!(json["checks"]["redis"]["status"], "healthy");
/// assert!(json["checks"]["redis"]["latency_ms"].is_number());
/// # });
/// ```
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct HealthReport {
    /// The service name.
    pub service: String,
    /// The overall status: the worst contribution of the checks, `healthy` without checks.
    pub status: HealthStatus,
    /// The service version.
    pub version: String,
    /// When the report was made, in seconds since the Unix epoch.
    pub timestamp: f64,
    /// How long the process has been running, in seconds.
    pub uptime_seconds: f64,
    /// The result of each check that ran, by name.
    pub checks: BTreeMap<String, CheckResult>,
}

impl HealthReport {
    /// The HTTP status code to answer with: 200 for `healthy` and `degraded`, 503 for
    /// `unhealthy`.
    ///
    /// ```
    /// use obskit::health::{CheckOutcome, HealthChecks};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// assert_eq!(checks.report().await.http_status(), 200);
    /// checks.register("redis", || async { CheckOutcome::unhealthy("down") });
    /// assert_eq!(checks.report().await.http_status(), 503);
    /// # });
    /// ```
    pub fn http_status(&self) -> u16 {
        self.status.http_status()
    }
}

/// The result of one check in a [`HealthReport`]. Serialises as an object with `status`,
/// `message` (when there is one), `latency_ms`, `critical`, `cached` (only when the result came
/// from the cache) and the check's details flattened next to them.
///
/// ```
/// use obskit::health::{CheckOutcome, HealthChecks, HealthStatus};
///
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let checks = HealthChecks::new("backend", "1.0.0");
/// checks.register("database", || async {
///     CheckOutcome::healthy().with_detail("connection", "ok")
/// });
/// let report = checks.report().await;
/// let database = &report.checks["database"];
/// assert_eq!(database.status, HealthStatus::Healthy);
/// assert!(database.critical);
/// assert_eq!(
///     serde_json::to_value(database).unwrap(),
///     serde_json::json!({
///         "status": "healthy",
///         "latency_ms": database.latency_ms,
///         "critical": true,
///         "connection": "ok",
///     })
/// );
/// # });
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct CheckResult {
    /// The check's own status.
    pub status: HealthStatus,
    /// Why, when the check said so (or timed out, or panicked).
    pub message: Option<String>,
    /// How long the run took, in milliseconds; for a cached result, how long the run that
    /// produced it took.
    pub latency_ms: f64,
    /// Whether the check is [`Severity::Critical`].
    pub critical: bool,
    /// Whether the result was reused from the check's cache instead of running it.
    pub cached: bool,
    /// The check's details.
    pub details: Map<String, Value>,
}

/// Keys of a check object that belong to the report; details of these names are not shown,
/// so that a detail can never forge a check's status.
const RESERVED_KEYS: &[&str] = &["status", "message", "latency_ms", "critical", "cached"];

impl CheckResult {
    /// What this result contributes to the overall status: its status, capped at `degraded`
    /// for a non-critical check.
    ///
    /// ```
    /// use obskit::health::{CheckOptions, CheckOutcome, HealthChecks, HealthStatus};
    ///
    /// # tokio::runtime::Runtime::new().unwrap().block_on(async {
    /// let checks = HealthChecks::new("cart", "1.0.0");
    /// checks.register_with("recommendations", CheckOptions::new().non_critical(), || async {
    ///     CheckOutcome::unhealthy("down")
    /// });
    /// let report = checks.report().await;
    /// assert_eq!(report.checks["recommendations"].status, HealthStatus::Unhealthy);
    /// assert_eq!(report.checks["recommendations"].contribution(), HealthStatus::Degraded);
    /// # });
    /// ```
    pub fn contribution(&self) -> HealthStatus {
        let severity = if self.critical {
            Severity::Critical
        } else {
            Severity::NonCritical
        };
        severity.cap(self.status)
    }
}

impl Serialize for CheckResult {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(None)?;
        map.serialize_entry("status", &self.status)?;
        if let Some(message) = &self.message {
            map.serialize_entry("message", message)?;
        }
        map.serialize_entry("latency_ms", &self.latency_ms)?;
        map.serialize_entry("critical", &self.critical)?;
        if self.cached {
            map.serialize_entry("cached", &true)?;
        }
        for (key, value) in &self.details {
            if !RESERVED_KEYS.contains(&key.as_str()) {
                map.serialize_entry(key, value)?;
            }
        }
        map.end()
    }
}
