//! OTLP export (the exporter needs the `otlp` feature; its configuration is always read, so a
//! build without it can say what it would have exported): a [`SpanSink`] that converts obskit's spans into the OpenTelemetry SDK's
//! `SpanData` and exports them with `opentelemetry-otlp` (gRPC or HTTP/protobuf), so Jaeger or
//! any OpenTelemetry Collector receives them.
//!
//! obskit keeps its own span API as the fast path (one atomic load when disabled, no SDK
//! machinery per span) and meets OpenTelemetry only here, off the request path:
//!
//! - [`SpanSink::on_end`] and [`SpanSink::on_end_batch`] only try to put the spans into a
//!   queue bounded twice: in spans ([`OtlpConfig::queue_size`]) and in bytes
//!   ([`OtlpConfig::queue_bytes`], counting the batch being exported too). Past either bound a
//!   span is dropped and counted (`obskit_spans_dropped_total{reason="queue_full"}` or
//!   `{reason="queue_bytes"}`): a slow or absent collector never slows or fails a request, and
//!   memory stays bounded. The spans one drain of the span rings gathered go as one message, so
//!   the worker is woken once for them.
//! - A background thread drains the queue in batches (up to [`OtlpConfig::max_batch`] spans, or
//!   whatever arrived within [`OtlpConfig::interval`]), converts them, masks secret-looking
//!   attributes as `/debug/traces` does, and exports. Spans of a batch that failed to export are
//!   counted as `reason="export_failed"`; the exporter is not retried, so one outage costs at
//!   most one export timeout per batch. Memory is bounded by the queue plus one batch.
//! - Unsampled spans (`sampled == false`) are not exported: they were recorded only for the
//!   in-process view.
//!
//! The queue and its thread are shared with OTLP logs ([`crate::log`]), in `crate::export`.
//!
//! ```
//! use obskit::trace::{OtlpConfig, OtlpProtocol};
//! let config = OtlpConfig::new("http://127.0.0.1:4318/v1/traces", OtlpProtocol::HttpProtobuf);
//! assert_eq!(config.queue_size, 2048);
//! ```

use std::fmt;
use std::time::Duration;

use crate::metrics::Counter;
use crate::names::env;
use crate::settings::{EnvError, EnvSource, ProcessEnv};

#[cfg(feature = "otlp")]
mod exporter;
#[cfg(feature = "otlp")]
pub use exporter::OtlpSink;

/// The OTLP transport.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpProtocol {
    /// OTLP over gRPC (tonic), conventionally on port 4317.
    Grpc,
    /// OTLP over HTTP with protobuf bodies, conventionally on port 4318 at `/v1/traces`.
    HttpProtobuf,
}

/// Where and how spans are exported.
#[derive(Clone, Debug, PartialEq)]
pub struct OtlpConfig {
    /// The traces endpoint: for HTTP the full URL (`http://collector:4318/v1/traces`), for gRPC
    /// the collector's address (`http://collector:4317`).
    pub endpoint: String,
    /// The transport.
    pub protocol: OtlpProtocol,
    /// How many spans may wait for export; beyond that they are dropped and counted
    /// (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub queue_size: usize,
    /// How many bytes the queued spans and the batch being exported may hold together; beyond
    /// that new spans are dropped and counted (`OBSKIT_EXPORT_QUEUE_BYTES`, default 16 MiB).
    pub queue_bytes: usize,
    /// The most spans sent in one export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch: usize,
    /// How long a span may wait before a partial batch is sent (`OTEL_BSP_SCHEDULE_DELAY`, in
    /// milliseconds).
    pub interval: Duration,
    /// How long one export may take before it is given up (`OTEL_EXPORTER_OTLP_TRACES_TIMEOUT`,
    /// else `OTEL_EXPORTER_OTLP_TIMEOUT`, else `OTEL_BSP_EXPORT_TIMEOUT`, in milliseconds).
    pub export_timeout: Duration,
}

impl OtlpConfig {
    /// A configuration with the OpenTelemetry batch-processor defaults (queue 2048, batches of
    /// 512, every 5 s... except the interval: 1 s, so traces show up while one is looking).
    pub fn new(endpoint: impl Into<String>, protocol: OtlpProtocol) -> OtlpConfig {
        OtlpConfig {
            endpoint: endpoint.into(),
            protocol,
            queue_size: 2048,
            queue_bytes: Self::DEFAULT_QUEUE_BYTES,
            max_batch: 512,
            interval: Duration::from_secs(1),
            export_timeout: Duration::from_secs(5),
        }
    }

    /// The default byte bound of the queue: 16 MiB.
    pub const DEFAULT_QUEUE_BYTES: usize = 16 << 20;

    /// Reads the standard variables: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is), else
    /// `OTEL_EXPORTER_OTLP_ENDPOINT` (plus `/v1/traces` for HTTP);
    /// `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL`, else `OTEL_EXPORTER_OTLP_PROTOCOL`: `grpc` or
    /// `http/protobuf` (the default, as the specification says); the batch processor's
    /// `OTEL_BSP_*` variables and the export timeouts (see the fields), and
    /// `OBSKIT_EXPORT_QUEUE_BYTES`. `Ok(None)` when no endpoint is set: then nothing is exported
    /// and nothing connects anywhere.
    ///
    /// ```
    /// // With no OTEL_EXPORTER_OTLP_* variable set:
    /// # if std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").is_none() && std::env::var_os("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").is_none() {
    /// assert_eq!(obskit::trace::OtlpConfig::from_env().unwrap(), None);
    /// # }
    /// ```
    pub fn from_env() -> Result<Option<OtlpConfig>, EnvError> {
        Self::from_env_source(&ProcessEnv)
    }

    /// Reads the variables of [`OtlpConfig::from_env`] through `env`.
    pub fn from_env_source(env: &impl EnvSource) -> Result<Option<OtlpConfig>, EnvError> {
        Self::for_signal(OtlpSignal::Traces, env)
    }

    /// Reads the variables of `signal` through `env`: its own endpoint, protocol and timeout
    /// variables (`OTEL_EXPORTER_OTLP_{TRACES,LOGS}_*`) over the general ones, and its batch
    /// processor's (`OTEL_BSP_*` for spans, `OTEL_BLRP_*` for log records). `Ok(None)` when no
    /// endpoint is set.
    ///
    /// ```
    /// use obskit::trace::{OtlpConfig, OtlpProtocol, OtlpSignal};
    /// let env = |name: &str| match name {
    ///     "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318".to_string()),
    ///     "OTEL_BLRP_MAX_QUEUE_SIZE" => Some("100".to_string()),
    ///     _ => None,
    /// };
    /// let logs = OtlpConfig::for_signal(OtlpSignal::Logs, &env).unwrap().unwrap();
    /// assert_eq!(logs.endpoint, "http://collector:4318/v1/logs");
    /// assert_eq!((logs.protocol, logs.queue_size), (OtlpProtocol::HttpProtobuf, 100));
    /// ```
    pub fn for_signal(signal: OtlpSignal, env: &impl EnvSource) -> Result<Option<OtlpConfig>, EnvError> {
        let vars = signal.variables();
        let (protocol_var, protocol) = match env.get(vars.protocol) {
            Some(p) => (vars.protocol, Some(p)),
            None => (
                env::OTEL_EXPORTER_OTLP_PROTOCOL,
                env.get(env::OTEL_EXPORTER_OTLP_PROTOCOL),
            ),
        };
        let protocol = match protocol.as_deref() {
            None | Some("http/protobuf") => OtlpProtocol::HttpProtobuf,
            Some("grpc") => OtlpProtocol::Grpc,
            Some(other) => {
                return Err(EnvError::new(
                    protocol_var,
                    format!("`{other}` is not supported; use grpc or http/protobuf"),
                ))
            }
        };
        let endpoint = if let Some(endpoint) = env.get(vars.endpoint) {
            endpoint
        } else if let Some(base) = env.get(env::OTEL_EXPORTER_OTLP_ENDPOINT) {
            match protocol {
                OtlpProtocol::HttpProtobuf => format!("{}{}", base.trim_end_matches('/'), vars.http_path),
                OtlpProtocol::Grpc => base,
            }
        } else {
            return Ok(None);
        };
        let mut config = OtlpConfig::new(endpoint, protocol);
        let positive = |name: &'static str| -> Result<Option<usize>, EnvError> {
            match env.parse::<usize>(name)? {
                Some(0) => Err(EnvError::new(name, "must be at least 1")),
                other => Ok(other),
            }
        };
        if let Some(size) = positive(vars.queue_size)? {
            config.queue_size = size;
        }
        if let Some(batch) = positive(vars.max_batch)? {
            config.max_batch = batch;
        }
        // The specification: a batch larger than the queue is the queue (the default batch
        // too, under a small queue size).
        config.max_batch = config.max_batch.min(config.queue_size);
        if let Some(bytes) = positive(env::OBSKIT_EXPORT_QUEUE_BYTES)? {
            config.queue_bytes = bytes;
        }
        if let Some(ms) = env.parse::<u64>(vars.schedule_delay)? {
            config.interval = Duration::from_millis(ms.max(1));
        }
        for name in [vars.export_timeout, env::OTEL_EXPORTER_OTLP_TIMEOUT, vars.timeout] {
            // Most specific last, so that it wins.
            if let Some(ms) = env.parse::<u64>(name)? {
                config.export_timeout = Duration::from_millis(ms.max(1));
            }
        }
        Ok(Some(config))
    }

    /// The configuration as `/debug/config` shows it, counting the queue in `items` (`spans`,
    /// `records`).
    pub(crate) fn describe(&self, items: &str) -> String {
        format!(
            "{:?} {} (queue {} {items}, {} bytes; batches of {} every {:?}; timeout {:?})",
            self.protocol,
            self.endpoint,
            self.queue_size,
            self.queue_bytes,
            self.max_batch,
            self.interval,
            self.export_timeout
        )
    }
}

/// An OpenTelemetry signal obskit exports over OTLP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OtlpSignal {
    /// Spans.
    Traces,
    /// Log records.
    Logs,
}

/// The variables that configure one signal's exporter, as the specification names them.
struct SignalVariables {
    endpoint: &'static str,
    protocol: &'static str,
    timeout: &'static str,
    http_path: &'static str,
    queue_size: &'static str,
    max_batch: &'static str,
    schedule_delay: &'static str,
    export_timeout: &'static str,
}

impl OtlpSignal {
    fn variables(self) -> SignalVariables {
        match self {
            OtlpSignal::Traces => SignalVariables {
                endpoint: env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
                protocol: env::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
                timeout: env::OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
                http_path: "/v1/traces",
                queue_size: env::OTEL_BSP_MAX_QUEUE_SIZE,
                max_batch: env::OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
                schedule_delay: env::OTEL_BSP_SCHEDULE_DELAY,
                export_timeout: env::OTEL_BSP_EXPORT_TIMEOUT,
            },
            OtlpSignal::Logs => SignalVariables {
                endpoint: env::OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
                protocol: env::OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
                timeout: env::OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
                http_path: "/v1/logs",
                queue_size: env::OTEL_BLRP_MAX_QUEUE_SIZE,
                max_batch: env::OTEL_BLRP_MAX_EXPORT_BATCH_SIZE,
                schedule_delay: env::OTEL_BLRP_SCHEDULE_DELAY,
                export_timeout: env::OTEL_BLRP_EXPORT_TIMEOUT,
            },
        }
    }
}

/// The counters an [`OtlpSink`] keeps: spans exported, and spans dropped by reason.
#[derive(Clone, Debug)]
pub struct ExportCounters {
    /// `obskit_spans_exported_total`.
    pub exported: Counter,
    /// `obskit_spans_dropped_total{reason="queue_full"}`.
    pub dropped_queue_full: Counter,
    /// `obskit_spans_dropped_total{reason="queue_bytes"}`: the export queue's byte bound.
    pub dropped_queue_bytes: Counter,
    /// `obskit_spans_dropped_total{reason="recent_bytes"}`: spans the recent-span buffer let
    /// go before their turn to keep within its byte bound.
    pub dropped_recent_bytes: Counter,
    /// `obskit_spans_dropped_total{reason="export_failed"}`.
    pub dropped_export_failed: Counter,
}

impl ExportCounters {
    /// Declares the counters in `registry`.
    ///
    /// ```
    /// let registry = obskit::metrics::Registry::new();
    /// let counters = obskit::trace::ExportCounters::new(&registry).unwrap();
    /// counters.dropped_queue_full.inc();
    /// assert!(registry.encode_text().contains(r#"obskit_spans_dropped_total{reason="queue_full"} 1"#));
    /// ```
    pub fn new(registry: &crate::metrics::Registry) -> Result<ExportCounters, crate::metrics::Error> {
        use crate::names::{OBSKIT_SPANS_DROPPED_TOTAL as DROPPED, OBSKIT_SPANS_EXPORTED_TOTAL as EXPORTED};
        let exported = registry.counter(EXPORTED.name, EXPORTED.help)?;
        let dropped = registry.counter_vec(DROPPED.name, DROPPED.help, DROPPED.labels)?;
        Ok(ExportCounters {
            exported,
            dropped_queue_full: dropped.with(&["queue_full"]),
            dropped_queue_bytes: dropped.with(&["queue_bytes"]),
            dropped_recent_bytes: dropped.with(&["recent_bytes"]),
            dropped_export_failed: dropped.with(&["export_failed"]),
        })
    }
}

/// Why an exporter could not be built.
#[derive(Debug)]
pub struct OtlpError(String);

impl fmt::Display for OtlpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for OtlpError {}

impl OtlpError {
    /// A build without the `otlp` feature asked to export `items` (`spans`, `records`) to `config`:
    /// refused out loud rather than dropped in silence.
    #[cfg(not(feature = "otlp"))]
    pub(crate) fn not_built(config: &OtlpConfig, items: &str) -> OtlpError {
        OtlpError(format!(
            "{items} would be exported to {}, but {}",
            config.endpoint,
            crate::features::not_built("otlp")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configuration_from_the_standard_variables() {
        let vars = |pairs: &'static [(&'static str, &'static str)]| {
            move |name: &str| pairs.iter().find(|(k, _)| *k == name).map(|(_, v)| v.to_string())
        };
        assert_eq!(OtlpConfig::from_env_source(&vars(&[])).unwrap(), None);
        let http =
            OtlpConfig::from_env_source(&vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318/")]))
                .unwrap()
                .unwrap();
        assert_eq!(http.endpoint, "http://otel:4318/v1/traces");
        assert_eq!(http.protocol, OtlpProtocol::HttpProtobuf);
        let grpc = OtlpConfig::from_env_source(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://jaeger:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (grpc.endpoint.as_str(), grpc.protocol),
            ("http://jaeger:4317", OtlpProtocol::Grpc)
        );
        let specific = OtlpConfig::from_env_source(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:9999/custom"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(specific.endpoint, "http://traces:9999/custom");
        assert_eq!(specific.protocol, OtlpProtocol::HttpProtobuf);
        let bad = OtlpConfig::from_env_source(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
        ]));
        assert_eq!(bad.unwrap_err().name, "OTEL_EXPORTER_OTLP_PROTOCOL");
        // Found by the `otel_env` fuzz target: a small queue holds the default batch too.
        let small = OtlpConfig::from_env_source(&vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_BSP_MAX_QUEUE_SIZE", "100"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!((small.queue_size, small.max_batch), (100, 100));
    }
}
