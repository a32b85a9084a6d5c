//! Logs: `tracing` events as structured records, with the trace id of the obskit span they
//! happened in.
//!
//! Every Rust library logs through the `tracing` crate, and so can a service: `tracing::info!`,
//! `warn!`, `error!` with fields. [`Logs`] is the subscriber that turns those events into
//! records, one line each on stdout:
//!
//! - **JSON** when stdout is not a terminal (a container, a file, a collector): `timestamp`,
//!   `level`, `target`, `service`, `message`, and `trace_id` / `span_id` when the event happened
//!   inside an obskit span (so a log line leads to its trace in `/debug/traces` or Jaeger), then
//!   the event's `fields`. A readable line when stdout is a terminal. `OBSKIT_LOG_FORMAT`
//!   (`json`, `text`, `auto`) decides otherwise.
//! - **Filtered** by `EnvFilter` directives: `RUST_LOG` at start (default [`DEFAULT_DIRECTIVES`]),
//!   changed at run time for a while by `PUT /debug/log-level` ([`LogLevels`]).
//! - **Bounded**: each callsite emits at most [`DEFAULT_RECORDS_PER_SECOND`] records a second
//!   (`OBSKIT_LOG_RATE_LIMIT`, 0 for no limit), the next record saying how many were suppressed
//!   (`log.suppressed`); records wait for stdout in a queue of at most
//!   [`DEFAULT_QUEUE_BYTES`] (`OBSKIT_LOG_QUEUE_BYTES`) written by a thread of their own, so a
//!   request never waits on a slow stdout: what does not fit is dropped.
//! - **Counted**: `obskit_log_records_total{level}` (records the filter let through),
//!   `obskit_log_records_dropped_total{reason="rate_limited"|"queue_full"}`.
//! - **Exported** over OTLP as well when `OTEL_LOGS_EXPORTER=otlp` (the endpoint from the
//!   `OTEL_EXPORTER_OTLP_LOGS_*` or general `OTEL_EXPORTER_OTLP_*` variables, the batching from
//!   `OTEL_BLRP_*`), through a bounded queue as spans are; `obskit_log_records_exported_total`,
//!   drops counted.
//! - **Masked**: field values are masked as `/debug/config` masks them, by key name (`password`,
//!   `token`, ...) and by value shape (a URL's credentials, a bearer token, a JWT), and so is the
//!   message.
//!
//! [`Obskit::builder`](crate::Obskit::builder) installs it as the process's subscriber unless
//! told not to ([`ObskitBuilder::logs`](crate::ObskitBuilder::logs)). Tests, and programs that
//! set their subscriber themselves, use [`Logs::subscriber`] with `tracing`'s scoped
//! `set_default`:
//!
//! ```
//! use std::sync::{Arc, Mutex};
//! use obskit::log::{LogFormat, LogSettings, Logs};
//!
//! #[derive(Clone, Default)]
//! struct Captured(Arc<Mutex<Vec<u8>>>);
//! impl std::io::Write for Captured {
//!     fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
//!         self.0.lock().unwrap().extend_from_slice(buf);
//!         Ok(buf.len())
//!     }
//!     fn flush(&mut self) -> std::io::Result<()> { Ok(()) }
//! }
//!
//! let out = Captured::default();
//! let settings = LogSettings { format: LogFormat::Json, ..LogSettings::default() };
//! let logs = Logs::to_writer(&settings, "cart", &obskit::metrics::Registry::new(), Box::new(out.clone())).unwrap();
//! tracing::subscriber::with_default(logs.subscriber(), || {
//!     tracing::warn!(order_id = 42, password = "hunter2", "checkout retried");
//!     tracing::debug!("not shown at the default level");
//! });
//! logs.flush(std::time::Duration::from_secs(5));
//! let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
//! let line: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
//! assert_eq!(line["level"], "WARN");
//! assert_eq!(line["service"], "cart");
//! assert_eq!(line["message"], "checkout retried");
//! assert_eq!(line["fields"]["order_id"], 42);
//! assert_eq!(line["fields"]["password"], "***");
//! ```

mod layer;
mod level;
mod limit;
mod otlp;
mod record;
mod spans;
#[cfg(test)]
mod tests;
mod writer;

use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::{reload, EnvFilter, Layer as _, Registry};

pub use level::{
    parse_ttl, LevelError, LevelReport, LogLevels, DEFAULT_DIRECTIVES, DEFAULT_LEVEL_TTL, MAX_LEVEL_TTL,
};
pub use limit::DEFAULT_RECORDS_PER_SECOND;
pub use otlp::LOGS_EXPORTER_ENV;
pub use record::LogFormat;
pub use spans::{SpanBridge, TRACING_SPANS_ENV};
pub use writer::DEFAULT_QUEUE_BYTES;

pub use layer::LogLayer;

use layer::LogCounters;
use level::parse_directives;
use limit::RateLimiter;
use writer::LineWriter;

use crate::settings::{EnvError, EnvSource};

/// The filter directives read at start.
pub const RUST_LOG_ENV: &str = crate::names::env::RUST_LOG;
/// `json`, `text` or `auto` (JSON unless stdout is a terminal).
pub const LOG_FORMAT_ENV: &str = crate::names::env::OBSKIT_LOG_FORMAT;
/// Records a callsite may emit a second (0: no limit).
pub const LOG_RATE_LIMIT_ENV: &str = crate::names::env::OBSKIT_LOG_RATE_LIMIT;
/// Bytes of records that may wait for stdout.
pub const LOG_QUEUE_BYTES_ENV: &str = crate::names::env::OBSKIT_LOG_QUEUE_BYTES;

/// How logs are filtered, formatted and bounded.
#[derive(Clone, Debug, PartialEq)]
pub struct LogSettings {
    /// `EnvFilter` directives at start.
    pub directives: String,
    /// How records are written.
    pub format: LogFormat,
    /// Records a callsite may emit a second (0: no limit).
    pub records_per_second: u32,
    /// Bytes of records that may wait for the output.
    pub queue_bytes: usize,
    /// The `tracing` span targets that become obskit spans (`Targets` directives, as
    /// `cart=debug,scylla=info`); `None`: none do.
    pub span_targets: Option<String>,
    /// Where records are also exported over OTLP (`OTEL_LOGS_EXPORTER=otlp`); `None`: nowhere.
    pub otlp: Option<crate::trace::OtlpConfig>,
}

impl Default for LogSettings {
    /// Obskit's defaults, whatever the environment says; JSON unless stdout is a terminal.
    fn default() -> LogSettings {
        LogSettings {
            directives: DEFAULT_DIRECTIVES.to_string(),
            format: format_for_stdout(),
            records_per_second: DEFAULT_RECORDS_PER_SECOND,
            queue_bytes: DEFAULT_QUEUE_BYTES,
            span_targets: None,
            otlp: None,
        }
    }
}

/// JSON for collectors, text for a person at a terminal.
fn format_for_stdout() -> LogFormat {
    if std::io::stdout().is_terminal() {
        LogFormat::Text
    } else {
        LogFormat::Json
    }
}

impl LogSettings {
    /// The settings `RUST_LOG`, `OBSKIT_LOG_FORMAT`, `OBSKIT_LOG_RATE_LIMIT` and
    /// `OBSKIT_LOG_QUEUE_BYTES` make, over the defaults; a bad value is an error naming the
    /// variable.
    ///
    /// ```
    /// use obskit::log::{LogFormat, LogSettings};
    /// let env = |name: &str| match name {
    ///     "RUST_LOG" => Some("warn,cart=debug".to_string()),
    ///     "OBSKIT_LOG_FORMAT" => Some("text".to_string()),
    ///     _ => None,
    /// };
    /// let settings = LogSettings::from_env_source(&env).unwrap();
    /// assert_eq!(settings.directives, "warn,cart=debug");
    /// assert_eq!(settings.format, LogFormat::Text);
    /// let bad = |name: &str| (name == "RUST_LOG").then(|| "cart=loud".to_string());
    /// assert_eq!(LogSettings::from_env_source(&bad).unwrap_err().name, "RUST_LOG");
    /// ```
    pub fn from_env_source(env: &impl EnvSource) -> Result<LogSettings, EnvError> {
        let defaults = LogSettings::default();
        let directives = match env.get(RUST_LOG_ENV) {
            Some(directives) => {
                parse_directives(&directives).map_err(|e| EnvError::new(RUST_LOG_ENV, e.0))?;
                directives
            }
            None => defaults.directives,
        };
        let format = match env.get(LOG_FORMAT_ENV).as_deref() {
            None | Some("auto") => defaults.format,
            Some("json") => LogFormat::Json,
            Some("text") => LogFormat::Text,
            Some(other) => {
                return Err(EnvError::new(
                    LOG_FORMAT_ENV,
                    format!("`{other}` is not json, text or auto"),
                ))
            }
        };
        let span_targets = env.get(TRACING_SPANS_ENV);
        if let Some(targets) = &span_targets {
            parse_targets(targets).map_err(|e| EnvError::new(TRACING_SPANS_ENV, e.0))?;
        }
        Ok(LogSettings {
            otlp: otlp::config_from_env(env)?,
            span_targets,
            directives,
            format,
            records_per_second: env
                .parse(LOG_RATE_LIMIT_ENV)?
                .unwrap_or(defaults.records_per_second),
            queue_bytes: env.parse(LOG_QUEUE_BYTES_ENV)?.unwrap_or(defaults.queue_bytes),
        })
    }

    /// The settings as `/debug/config` lists them.
    pub(crate) fn entries(&self) -> Vec<(String, String)> {
        vec![
            ("log.directives".to_string(), self.directives.clone()),
            (
                "log.format".to_string(),
                match self.format {
                    LogFormat::Json => "json",
                    LogFormat::Text => "text",
                }
                .to_string(),
            ),
            (
                "log.rate_limit".to_string(),
                format!("{} records a second a callsite", self.records_per_second),
            ),
            ("log.queue_bytes".to_string(), self.queue_bytes.to_string()),
            (
                "log.tracing_spans".to_string(),
                self.span_targets.clone().unwrap_or_else(|| "none".to_string()),
            ),
            (
                "log.otlp".to_string(),
                match &self.otlp {
                    Some(config) => config.describe("records"),
                    None => "off (OTEL_LOGS_EXPORTER is not otlp)".to_string(),
                },
            ),
        ]
    }
}

/// The subscriber under the span bridge: the registry of spans, the run-time filter, and
/// obskit's record layer.
type Recording = Layered<LogLayer, Layered<reload::Layer<EnvFilter, Registry>, Registry>>;

/// The subscriber [`Logs::subscriber`] builds: the registry of spans, the run-time filter,
/// obskit's record layer, and the span bridge when span targets are set.
pub type LogSubscriber = Layered<Option<Filtered<SpanBridge, Targets, Recording>>, Recording>;

/// Parses span targets, naming what is wrong with them.
fn parse_targets(targets: &str) -> Result<Targets, LevelError> {
    targets
        .parse()
        .map_err(|e| LevelError(format!("invalid span targets {targets:?}: {e}")))
}

/// A log pipeline: its filter, its layer and its writer. Cheap to clone.
#[derive(Clone)]
pub struct Logs {
    levels: LogLevels,
    layer: LogLayer,
    writer: LineWriter,
    /// The filter layer, handed to the first [`Logs::subscriber`] (a filter belongs to one
    /// subscriber, which its reload handle reaches).
    filter: Arc<Mutex<Option<reload::Layer<EnvFilter, Registry>>>>,
    /// Which `tracing` spans become obskit spans, if any do.
    span_targets: Option<Targets>,
}

impl Logs {
    /// Logs for `service` to stdout, counted in `registry`.
    pub fn new(
        settings: &LogSettings,
        service: &str,
        registry: &crate::metrics::Registry,
    ) -> Result<Logs, LogError> {
        Logs::to_writer(settings, service, registry, Box::new(std::io::stdout()))
    }

    /// Logs for `service` to `output` (a file, a test's buffer), counted in `registry`.
    pub fn to_writer(
        settings: &LogSettings,
        service: &str,
        registry: &crate::metrics::Registry,
        output: Box<dyn std::io::Write + Send>,
    ) -> Result<Logs, LogError> {
        let counters = LogCounters::new(registry).map_err(|e| LogError(format!("metrics: {e}")))?;
        let filter = parse_directives(&settings.directives).map_err(|e| LogError(e.0))?;
        let span_targets = match &settings.span_targets {
            Some(targets) => Some(parse_targets(targets).map_err(|e| LogError(e.0))?),
            None => None,
        };
        let (filter, handle) = reload::Layer::new(filter);
        let writer = LineWriter::start(output, settings.queue_bytes, counters.dropped_queue_full.clone())
            .map_err(|e| LogError(format!("the log writer thread could not start: {e}")))?;
        let layer = LogLayer::new(
            service.to_string(),
            settings.format,
            RateLimiter::new(settings.records_per_second),
            counters,
            writer.clone(),
        );
        Ok(Logs {
            levels: LogLevels::new(settings.directives.clone(), handle),
            layer,
            writer,
            filter: Arc::new(Mutex::new(Some(filter))),
            span_targets,
        })
    }

    /// The subscriber that records through these logs, for `tracing::subscriber::set_default`
    /// (scoped: a test's) or `set_global_default`. Its filter is the one [`LogLevels`] changes.
    ///
    /// # Panics
    ///
    /// When called twice on the same logs: the run-time filter belongs to one subscriber.
    pub fn subscriber(&self) -> LogSubscriber {
        let filter = self
            .filter
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .expect("Logs::subscriber is called once: its filter belongs to one subscriber");
        let bridge = self
            .span_targets
            .clone()
            .map(|targets| SpanBridge.with_filter(targets));
        Registry::default()
            .with(filter)
            .with(self.layer.clone())
            .with(bridge)
    }

    /// The run-time level.
    pub fn levels(&self) -> &LogLevels {
        &self.levels
    }

    /// Exports every record written from now on over OTLP as well, to `config`'s endpoint,
    /// with `resource` (`service.name`, ...) as the exported resource; once (`Ok(false)` when an
    /// export runs already). A gRPC exporter must be started inside a tokio runtime.
    pub fn export_otlp(
        &self,
        config: &crate::trace::OtlpConfig,
        resource: &[(String, String)],
    ) -> Result<bool, LogError> {
        #[cfg(feature = "otlp")]
        {
            let export =
                otlp::LogExport::start(config, resource, self.layer.export_counters()).map_err(LogError)?;
            Ok(self.layer.start_export(export))
        }
        #[cfg(not(feature = "otlp"))]
        {
            let _ = resource;
            Err(LogError(
                crate::trace::OtlpError::not_built(config, "log records").to_string(),
            ))
        }
    }

    /// Waits until the records emitted so far are written (and exported, when they are), or
    /// `timeout` passes; whether they were.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = std::time::Instant::now() + timeout;
        let written = self.writer.flush(timeout);
        written
            && self
                .layer
                .flush_export(deadline.saturating_duration_since(std::time::Instant::now()))
    }

    /// Installs logs for `service` (to stdout, counted in `registry`) as the process's
    /// subscriber, once a process: the logs of the first call are installed and returned by every
    /// later one, whatever it asks. `None` when the process already has a subscriber that is not
    /// obskit's. [`Obskit::builder`](crate::Obskit::builder) calls this; a program that builds no
    /// [`Obskit`](crate::Obskit) (a launcher, a command-line tool) can call it itself.
    ///
    /// ```
    /// use obskit::log::{LogSettings, Logs};
    /// let settings = LogSettings::from_env_source(&obskit::settings::ProcessEnv).unwrap();
    /// let registry = obskit::metrics::Registry::new();
    /// let first = Logs::install(&settings, "launcher", &registry).unwrap();
    /// assert!(first.is_some());
    /// tracing::info!(port = 8080, "gateway listening");
    /// // A second call finds the first logs installed.
    /// assert!(Logs::install(&settings, "other", &registry).unwrap().is_some());
    /// ```
    pub fn install(
        settings: &LogSettings,
        service: &str,
        registry: &crate::metrics::Registry,
    ) -> Result<Option<Logs>, LogError> {
        // A lock, not a once-cell: two first calls at once must not both build logs (the
        // second would register the same counters again).
        static INSTALLED: Mutex<Option<Option<Logs>>> = Mutex::new(None);
        let mut installed = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(logs) = &*installed {
            return Ok(logs.clone());
        }
        let logs = Logs::new(settings, service, registry)?;
        let logs = tracing::subscriber::set_global_default(logs.subscriber())
            .ok()
            .map(|()| logs);
        *installed = Some(logs.clone());
        Ok(logs)
    }
}

/// Why logs could not be set up.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogError(pub String);

impl std::fmt::Display for LogError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LogError {}
