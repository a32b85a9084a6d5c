//! Settings: what the builder's choices and the environment resolve to, once, when
//! [`ObskitBuilder::build`](crate::ObskitBuilder::build) runs.
//!
//! Every variable obskit reads goes through one parser ([`EnvSource`]) with one error type
//! ([`EnvError`], naming the variable and the problem); a choice made in code wins over the
//! environment, and the environment over obskit's defaults. The result, [`Settings`], is what
//! the service runs with, and exactly what `/debug/config` lists under `config`
//! ([`Settings::entries`]).
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")] async fn main() {
//! let env = |name: &str| match name {
//!     "OTEL_SERVICE_NAME" => Some("checkout".to_string()),
//!     "OTEL_TRACES_SAMPLER" => Some("traceidratio".to_string()),
//!     "OTEL_TRACES_SAMPLER_ARG" => Some("0.25".to_string()),
//!     _ => None,
//! };
//! let settings = obskit::Obskit::builder().version("1.2.0").settings_from(&env).unwrap();
//! assert_eq!(settings.service.name, "checkout");
//! assert_eq!(settings.service.version, "1.2.0");
//! assert_eq!(settings.sampler, obskit::trace::Sampler::TraceIdRatio(0.25));
//! let entries = settings.entries();
//! assert!(entries.iter().any(|(k, v)| k == "trace.sampler" && v.contains("0.25")));
//!
//! let bad = |name: &str| (name == "OTEL_ATTRIBUTE_COUNT_LIMIT").then(|| "lots".to_string());
//! let bad = obskit::Obskit::builder().settings_from(&bad);
//! assert!(bad.unwrap_err().to_string().starts_with("environment variable OTEL_ATTRIBUTE_COUNT_LIMIT:"));
//! # }
//! ```

mod env;
mod resource;

use std::time::Duration;

pub use env::{parse_duration, parse_switch, EnvError, EnvSource, ProcessEnv};
pub use resource::{
    parse_resource_attributes, random_instance_id, resource_attributes, RESOURCE_ATTRIBUTES_ENV,
};

use crate::admin::{AdminAccess, AllowedHosts};
use crate::serve::ServerSettings;
use crate::trace::{OtlpConfig, Sampler, SpanLimits};
use crate::AdminListener;

/// Who the service is: the resource every exported span carries, and `build_info`'s labels.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceIdentity {
    /// `service.name`.
    pub name: String,
    /// `service.version`.
    pub version: String,
    /// `deployment.environment.name`.
    pub environment: String,
    /// The commit the binary was built from (`build_info{commit}`), possibly empty.
    pub commit: String,
    /// `service.instance.id`: from `OTEL_RESOURCE_ATTRIBUTES`, else random per process start.
    pub instance_id: String,
    /// The whole resource, the four standard attributes first, then the other attributes of
    /// `OTEL_RESOURCE_ATTRIBUTES` as given.
    pub resource: Vec<(String, String)>,
}

/// Everything an [`Obskit`](crate::Obskit) runs with. See the [module](self) docs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Who the service is.
    pub service: ServiceIdentity,
    /// Who may call the protected admin endpoints.
    pub admin_access: AdminAccess,
    /// Hosts besides loopback names that loopback-only admin endpoints answer to.
    pub admin_allowed_hosts: AllowedHosts,
    /// Where the admin surface is served.
    pub admin_listener: AdminListener,
    /// Whether admin requests count in the RED metrics.
    pub measure_admin_requests: bool,
    /// The service's route templates.
    pub routes: Vec<String>,
    /// Whether responses carry `traceparent`.
    pub response_traceparent: bool,
    /// How many finished spans `/debug/traces` keeps (0: none).
    pub recent_spans: usize,
    /// How many bytes of spans `/debug/traces` keeps at most.
    pub recent_spans_bytes: usize,
    /// How much one span may hold.
    pub span_limits: SpanLimits,
    /// Where spans are exported, if anywhere.
    pub otlp: Option<OtlpConfig>,
    /// Which spans are sampled.
    pub sampler: Sampler,
    /// The accept loop's limits and timeouts.
    pub server: ServerSettings,
    /// How long [`Obskit::serve`](crate::Obskit::serve) waits for the last spans' export.
    pub shutdown_timeout: Duration,
    /// Whether the memory health check is registered.
    pub memory_check: bool,
    /// How often health checks refresh `obskit_health_status`.
    pub health_interval: Duration,
    /// How often process figures are sampled.
    pub process_stats_interval: Duration,
    /// Whether obskit records anything at all.
    pub instrumentation: bool,
    /// How `tracing` events become log records; `None`: obskit installs no logs. (Feature
    /// `tracing-bridge`.)
    #[cfg(feature = "tracing-bridge")]
    pub logs: Option<crate::log::LogSettings>,
    /// The heap profiler's mean bytes between samples, set when the [`Obskit`](crate::Obskit) is
    /// built (`OBSKIT_HEAP_PROFILE_INTERVAL_BYTES`; `0` stops sampling); `None` leaves jemalloc's
    /// own (feature `heap-profiling`, see [`crate::profile`]).
    pub heap_profile_interval_bytes: Option<u64>,
    /// The service's own entries for `/debug/config` (`ObskitBuilder::config_entry`).
    pub extra: Vec<(String, String)>,
}

impl Settings {
    /// The settings as `/debug/config` lists them: one `(key, value)` per setting, then the
    /// service's own entries. Values are masked when shown, not here.
    pub fn entries(&self) -> Vec<(String, String)> {
        let access = match &self.admin_access {
            AdminAccess::Token(_) => "bearer token (OBSKIT_ADMIN_TOKEN)".to_string(),
            AdminAccess::LoopbackOnly if self.admin_allowed_hosts.is_empty() => {
                "loopback clients only, addressing a loopback name".to_string()
            }
            AdminAccess::LoopbackOnly => format!(
                "loopback clients only, addressing a loopback name or {}",
                self.admin_allowed_hosts.describe()
            ),
        };
        let listener = match self.admin_listener {
            AdminListener::SamePort => "service port".to_string(),
            AdminListener::Separate(addr) => addr.to_string(),
        };
        let otlp = match &self.otlp {
            Some(config) => config.describe("spans"),
            None => "off (no OTEL_EXPORTER_OTLP_ENDPOINT)".to_string(),
        };
        let mut entries: Vec<(String, String)> = [
            ("service.name", self.service.name.clone()),
            ("service.version", self.service.version.clone()),
            ("deployment.environment.name", self.service.environment.clone()),
            ("service.commit", self.service.commit.clone()),
            ("service.instance.id", self.service.instance_id.clone()),
            ("admin.access", access),
            ("admin.listener", listener),
            ("admin.measured", self.measure_admin_requests.to_string()),
            ("http.routes", self.routes.join(" ")),
            ("http.response_traceparent", self.response_traceparent.to_string()),
            ("trace.recent_spans", self.recent_spans.to_string()),
            ("trace.recent_spans_bytes", self.recent_spans_bytes.to_string()),
            ("trace.span_limits", format!("{:?}", self.span_limits)),
            ("trace.otlp", otlp),
            ("trace.sampler", format!("{:?}", self.sampler)),
            ("shutdown.export_timeout", format!("{:?}", self.shutdown_timeout)),
            ("health.memory_check", self.memory_check.to_string()),
            ("health.interval", format!("{:?}", self.health_interval)),
            (
                "process.stats_interval",
                format!("{:?}", self.process_stats_interval),
            ),
            (
                "instrumentation",
                if self.instrumentation { "on" } else { "off" }.to_string(),
            ),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        entries.extend(self.server.config_entries());
        #[cfg(feature = "tracing-bridge")]
        match &self.logs {
            Some(logs) => entries.extend(logs.entries()),
            None => entries.push(("log".to_string(), "off (ObskitBuilder::logs(false))".to_string())),
        }
        #[cfg(not(feature = "tracing-bridge"))]
        entries.push(("log".to_string(), crate::features::not_built("tracing-bridge")));
        let heap = if cfg!(feature = "heap-profiling") {
            match self.heap_profile_interval_bytes {
                Some(0) => "off".to_string(),
                Some(bytes) => format!("a sample per {bytes} bytes (rounded down to a power of two)"),
                None => "jemalloc's interval (512 KiB unless _RJEM_MALLOC_CONF says otherwise)".to_string(),
            }
        } else {
            crate::features::not_built("heap-profiling")
        };
        entries.push(("profile.heap".to_string(), heap));
        entries.push(("obskit.features".to_string(), crate::FEATURES.join(" ")));
        entries.extend(self.extra.iter().cloned());
        entries
    }
}
