//! Per-check options: timeout, kind, severity and cache.

use std::time::Duration;

use super::HealthStatus;

/// Which endpoints run a check.
///
/// `/health/live` runs no check at all: a liveness probe that fails because a dependency is down
/// gets a healthy process restarted, which fixes nothing and adds load while the dependency
/// recovers.
///
/// ```
/// use obskit::health::{CheckKind, CheckOptions};
///
/// let options = CheckOptions::new().kind(CheckKind::Diagnostic);
/// assert_eq!(options.get_kind(), CheckKind::Diagnostic);
/// assert_eq!(CheckKind::default(), CheckKind::Readiness);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum CheckKind {
    /// Something the service needs to serve traffic (a database, a dependent service): runs in
    /// `/health` and `/health/ready`. The default.
    #[default]
    Readiness,
    /// A figure about the process or its host (the memory check): runs in `/health` only. Kept
    /// out of readiness because host-wide pressure would take every instance on the host out of
    /// rotation at once, moving their load onto the remaining instances.
    Diagnostic,
}

/// How much a failing check weighs on the overall status.
///
/// A check contributes its own status, capped by its severity: a [`Severity::Critical`] check
/// passes `degraded` and `unhealthy` through, a [`Severity::NonCritical`] one contributes at most
/// `degraded` (the seed treats a down database or dependent service as degrading the service,
/// not breaking it).
///
/// ```
/// use obskit::health::{HealthStatus, Severity};
///
/// assert_eq!(Severity::Critical.cap(HealthStatus::Unhealthy), HealthStatus::Unhealthy);
/// assert_eq!(Severity::NonCritical.cap(HealthStatus::Unhealthy), HealthStatus::Degraded);
/// assert_eq!(Severity::NonCritical.cap(HealthStatus::Healthy), HealthStatus::Healthy);
/// ```
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Severity {
    /// A failure of this check can make the service unhealthy. The default.
    #[default]
    Critical,
    /// A failure of this check makes the service degraded at worst.
    NonCritical,
}

impl Severity {
    /// What a check of this severity reporting `status` contributes to the overall status.
    ///
    /// ```
    /// use obskit::health::{HealthStatus, Severity};
    ///
    /// assert_eq!(Severity::Critical.cap(HealthStatus::Degraded), HealthStatus::Degraded);
    /// ```
    pub fn cap(self, status: HealthStatus) -> HealthStatus {
        match self {
            Severity::Critical => status,
            Severity::NonCritical => status.min(HealthStatus::Degraded),
        }
    }
}

/// Options of one registered check: a small builder, every method returns the options.
///
/// ```
/// use std::time::Duration;
/// use obskit::health::{CheckOptions, Severity};
///
/// let options = CheckOptions::new()
///     .timeout(Duration::from_secs(5))
///     .non_critical()
///     .cache_for(Duration::from_secs(30));
/// assert_eq!(options.get_timeout(), Duration::from_secs(5));
/// assert_eq!(options.get_severity(), Severity::NonCritical);
/// assert_eq!(options.get_cache_ttl(), Some(Duration::from_secs(30)));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CheckOptions {
    timeout: Duration,
    kind: CheckKind,
    severity: Severity,
    cache_ttl: Option<Duration>,
}

impl Default for CheckOptions {
    fn default() -> Self {
        CheckOptions::new()
    }
}

impl CheckOptions {
    /// How long a check may run unless told otherwise. Orchestrator probes time out too
    /// (Kubernetes: `timeoutSeconds`, 1 s unless set), so give the probe more than the slowest
    /// check's timeout, or cache slow checks with [`CheckOptions::cache_for`].
    ///
    /// ```
    /// assert_eq!(obskit::health::CheckOptions::DEFAULT_TIMEOUT.as_secs(), 2);
    /// ```
    pub const DEFAULT_TIMEOUT: std::time::Duration = Duration::from_secs(2);

    /// The defaults: [`CheckOptions::DEFAULT_TIMEOUT`], [`CheckKind::Readiness`],
    /// [`Severity::Critical`], no cache.
    ///
    /// ```
    /// use obskit::health::{CheckKind, CheckOptions, Severity};
    ///
    /// let options = CheckOptions::new();
    /// assert_eq!(options.get_timeout(), CheckOptions::DEFAULT_TIMEOUT);
    /// assert_eq!(options.get_kind(), CheckKind::Readiness);
    /// assert_eq!(options.get_severity(), Severity::Critical);
    /// assert_eq!(options.get_cache_ttl(), None);
    /// ```
    pub const fn new() -> Self {
        CheckOptions {
            timeout: Self::DEFAULT_TIMEOUT,
            kind: CheckKind::Readiness,
            severity: Severity::Critical,
            cache_ttl: None,
        }
    }

    /// How long the check may run; past it the check counts as `unhealthy` with the message
    /// `timed out after <N>ms`, and the report does not wait for it.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = obskit::health::CheckOptions::new().timeout(Duration::from_millis(300));
    /// assert_eq!(options.get_timeout(), Duration::from_millis(300));
    /// ```
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Which endpoints run the check.
    ///
    /// ```
    /// use obskit::health::{CheckKind, CheckOptions};
    /// assert_eq!(CheckOptions::new().kind(CheckKind::Diagnostic).get_kind(), CheckKind::Diagnostic);
    /// ```
    pub fn kind(mut self, kind: CheckKind) -> Self {
        self.kind = kind;
        self
    }

    /// How much a failure of the check weighs on the overall status.
    ///
    /// ```
    /// use obskit::health::{CheckOptions, Severity};
    /// let options = CheckOptions::new().severity(Severity::NonCritical);
    /// assert_eq!(options.get_severity(), Severity::NonCritical);
    /// ```
    pub fn severity(mut self, severity: Severity) -> Self {
        self.severity = severity;
        self
    }

    /// Shorthand for `.severity(Severity::NonCritical)`: a failure only degrades the service.
    ///
    /// ```
    /// use obskit::health::{CheckOptions, Severity};
    /// assert_eq!(CheckOptions::new().non_critical().get_severity(), Severity::NonCritical);
    /// ```
    pub fn non_critical(self) -> Self {
        self.severity(Severity::NonCritical)
    }

    /// Reuse the check's result for `ttl` after it was obtained, so that frequent probes do not
    /// hammer an expensive dependency. While the result is being refreshed, concurrent reports
    /// wait for that one run instead of starting their own. Failures (including timeouts) are
    /// cached too; a panic is not.
    ///
    /// ```
    /// use std::time::Duration;
    /// let options = obskit::health::CheckOptions::new().cache_for(Duration::from_secs(10));
    /// assert_eq!(options.get_cache_ttl(), Some(Duration::from_secs(10)));
    /// ```
    pub fn cache_for(mut self, ttl: Duration) -> Self {
        self.cache_ttl = Some(ttl);
        self
    }

    /// The timeout.
    ///
    /// ```
    /// use obskit::health::CheckOptions;
    /// assert_eq!(CheckOptions::new().get_timeout(), CheckOptions::DEFAULT_TIMEOUT);
    /// ```
    pub fn get_timeout(&self) -> Duration {
        self.timeout
    }

    /// The kind.
    ///
    /// ```
    /// use obskit::health::{CheckKind, CheckOptions};
    /// assert_eq!(CheckOptions::new().get_kind(), CheckKind::Readiness);
    /// ```
    pub fn get_kind(&self) -> CheckKind {
        self.kind
    }

    /// The severity.
    ///
    /// ```
    /// use obskit::health::{CheckOptions, Severity};
    /// assert_eq!(CheckOptions::new().get_severity(), Severity::Critical);
    /// ```
    pub fn get_severity(&self) -> Severity {
        self.severity
    }

    /// How long a result is reused, if at all.
    ///
    /// ```
    /// use obskit::health::CheckOptions;
    /// assert_eq!(CheckOptions::new().get_cache_ttl(), None);
    /// ```
    pub fn get_cache_ttl(&self) -> Option<Duration> {
        self.cache_ttl
    }
}
