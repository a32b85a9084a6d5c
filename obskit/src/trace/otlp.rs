//! OTLP export: a [`SpanSink`] that converts obskit's spans into the OpenTelemetry SDK's
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

use std::borrow::Cow;
use std::fmt;
use std::time::Duration;

use opentelemetry::trace::{
    SpanContext as OtelSpanContext, SpanId, SpanKind as OtelSpanKind, Status, TraceFlags, TraceId,
    TraceState as OtelTraceState,
};
use opentelemetry::{InstrumentationScope, KeyValue, Value};
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::trace::{SpanData, SpanEvents, SpanExporter as _, SpanLinks};
use opentelemetry_sdk::Resource;

use super::{masked_attr, AttrValue, FinishedSpan, SpanKind, SpanSink, SpanStatus};
use crate::export::{ExportQueue, Exporter, QueueCounters};
use crate::metrics::Counter;
use crate::settings::{EnvError, EnvSource, ProcessEnv};

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
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                env.get("OTEL_EXPORTER_OTLP_PROTOCOL"),
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
        } else if let Some(base) = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") {
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
        if let Some(bytes) = positive("OBSKIT_EXPORT_QUEUE_BYTES")? {
            config.queue_bytes = bytes;
        }
        if let Some(ms) = env.parse::<u64>(vars.schedule_delay)? {
            config.interval = Duration::from_millis(ms.max(1));
        }
        for name in [vars.export_timeout, "OTEL_EXPORTER_OTLP_TIMEOUT", vars.timeout] {
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

    /// The resource attributes (`service.name`, ...) as the exporters take them.
    pub(crate) fn resource(attributes: &[(String, String)]) -> Resource {
        Resource::builder_empty()
            .with_attributes(
                attributes
                    .iter()
                    .map(|(k, v)| KeyValue::new(k.clone(), v.clone())),
            )
            .build()
    }

    /// The bounds and batching of the export queue.
    pub(crate) fn queue_limits(&self) -> crate::export::QueueLimits {
        crate::export::QueueLimits {
            items: self.queue_size,
            bytes: self.queue_bytes,
            max_batch: self.max_batch,
            interval: self.interval,
        }
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
                endpoint: "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                protocol: "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                timeout: "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
                http_path: "/v1/traces",
                queue_size: "OTEL_BSP_MAX_QUEUE_SIZE",
                max_batch: "OTEL_BSP_MAX_EXPORT_BATCH_SIZE",
                schedule_delay: "OTEL_BSP_SCHEDULE_DELAY",
                export_timeout: "OTEL_BSP_EXPORT_TIMEOUT",
            },
            OtlpSignal::Logs => SignalVariables {
                endpoint: "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT",
                protocol: "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL",
                timeout: "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT",
                http_path: "/v1/logs",
                queue_size: "OTEL_BLRP_MAX_QUEUE_SIZE",
                max_batch: "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE",
                schedule_delay: "OTEL_BLRP_SCHEDULE_DELAY",
                export_timeout: "OTEL_BLRP_EXPORT_TIMEOUT",
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
    fn queue_counters(&self) -> QueueCounters {
        QueueCounters {
            exported: self.exported.clone(),
            dropped_queue_full: self.dropped_queue_full.clone(),
            dropped_queue_bytes: self.dropped_queue_bytes.clone(),
            dropped_export_failed: self.dropped_export_failed.clone(),
        }
    }

    /// Declares the counters in `registry`.
    ///
    /// ```
    /// let registry = obskit::metrics::Registry::new();
    /// let counters = obskit::trace::ExportCounters::new(&registry).unwrap();
    /// counters.dropped_queue_full.inc();
    /// assert!(registry.encode_text().contains(r#"obskit_spans_dropped_total{reason="queue_full"} 1"#));
    /// ```
    pub fn new(registry: &crate::metrics::Registry) -> Result<ExportCounters, crate::metrics::Error> {
        let exported = registry.counter(
            "obskit_spans_exported_total",
            "Spans handed to the OTLP exporter successfully",
        )?;
        let dropped = registry.counter_vec(
            "obskit_spans_dropped_total",
            "Spans not exported: the export queue was full, or the export failed",
            &["reason"],
        )?;
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

/// Exports finished spans over OTLP from a bounded queue. See the [module](self) docs.
///
/// ```no_run
/// # #[tokio::main] async fn main() {
/// use std::sync::Arc;
/// use std::time::Duration;
/// use obskit::trace::{self, ExportCounters, OtlpConfig, OtlpProtocol, OtlpSink};
///
/// let registry = obskit::metrics::Registry::new();
/// let config = OtlpConfig::new("http://otel-collector:4317", OtlpProtocol::Grpc);
/// let resource = vec![("service.name".to_string(), "backend".to_string())];
/// let sink = Arc::new(OtlpSink::start(&config, resource, ExportCounters::new(&registry).unwrap()).unwrap());
/// trace::set_sink(sink.clone());
/// // ... serve ...
/// let flushed = tokio::task::spawn_blocking(move || sink.flush(Duration::from_secs(5))).await.unwrap();
/// # let _ = flushed; }
/// ```
pub struct OtlpSink {
    queue: ExportQueue<FinishedSpan>,
}

impl fmt::Debug for OtlpSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OtlpSink").finish_non_exhaustive()
    }
}

impl OtlpSink {
    /// Builds the exporter and starts its background thread. `resource` holds the resource
    /// attributes (`service.name`, `service.version`, `deployment.environment.name`,
    /// `service.instance.id`...). The exporter connects lazily: building succeeds with the
    /// collector down. A gRPC exporter must be built inside a tokio runtime, which then carries
    /// its connections.
    pub fn start(
        config: &OtlpConfig,
        resource: Vec<(String, String)>,
        counters: ExportCounters,
    ) -> Result<OtlpSink, OtlpError> {
        let failed = |e: &dyn fmt::Display| OtlpError(format!("OTLP exporter for {}: {e}", config.endpoint));
        let mut exporter = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::SpanExporter::builder()
                .with_tonic()
                .with_endpoint(&config.endpoint)
                .with_protocol(Protocol::Grpc)
                .with_timeout(config.export_timeout)
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::SpanExporter::builder()
                .with_http()
                .with_endpoint(&config.endpoint)
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(config.export_timeout)
                .build(),
        }
        .map_err(|e| failed(&e))?;
        exporter.set_resource(&OtlpConfig::resource(&resource));

        let exporter = Spans {
            exporter,
            scope: InstrumentationScope::builder("obskit")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        };
        let queue = ExportQueue::start(
            "obskit-otlp",
            exporter,
            config.queue_limits(),
            counters.queue_counters(),
        )
        .map_err(|e| failed(&e))?;
        Ok(OtlpSink { queue })
    }

    /// Exports everything queued so far, waiting at most `timeout`. Returns whether it
    /// finished in time. Blocks the calling thread: from async code, call it through
    /// `tokio::task::spawn_blocking` (a gRPC exporter needs the runtime meanwhile).
    pub fn flush(&self, timeout: Duration) -> bool {
        self.queue.flush(timeout)
    }

    /// Queues the sampled ones of `spans` as one message, within both bounds; a span past
    /// either is dropped and counted.
    fn enqueue(&self, spans: impl IntoIterator<Item = FinishedSpan>) {
        self.queue
            .offer(spans.into_iter().filter(|span| span.context.sampled).map(|span| {
                let bytes = span.approximate_bytes();
                (span, bytes)
            }));
    }
}

impl SpanSink for OtlpSink {
    fn on_end(&self, span: FinishedSpan) {
        self.enqueue([span]);
    }

    fn on_end_batch(&self, spans: Vec<FinishedSpan>) {
        self.enqueue(spans);
    }
}

/// The span exporter the queue's thread drives.
struct Spans {
    exporter: opentelemetry_otlp::SpanExporter,
    scope: InstrumentationScope,
}

impl Exporter for Spans {
    type Item = FinishedSpan;
    type Exported = SpanData;

    fn convert(&self, span: FinishedSpan) -> SpanData {
        to_span_data(span, &self.scope)
    }

    fn export(&mut self, batch: Vec<SpanData>) -> bool {
        // The exporters' futures complete without a runtime of their own (the HTTP one uses a
        // blocking client; tonic's connection tasks run on the runtime it was built in), which
        // is how the SDK's own batch processor drives them.
        futures_executor::block_on(self.exporter.export(batch)).is_ok()
    }

    fn shutdown(&mut self) {
        let _ = self.exporter.shutdown();
    }
}

fn otel_value(value: AttrValue) -> Value {
    match value {
        AttrValue::Str(s) => Value::String(s.into()),
        AttrValue::I64(v) => Value::I64(v),
        AttrValue::F64(v) => Value::F64(v),
        AttrValue::Bool(v) => Value::Bool(v),
    }
}

fn attributes(attributes: impl IntoIterator<Item = (Cow<'static, str>, AttrValue)>) -> Vec<KeyValue> {
    attributes
        .into_iter()
        .map(|(key, value)| {
            let value = match masked_attr(&key, &value) {
                Cow::Borrowed(_) => otel_value(value),
                Cow::Owned(masked) => otel_value(masked),
            };
            KeyValue::new(key, value)
        })
        .collect()
}

/// The SDK's form of a finished span.
pub(crate) fn to_span_data(span: FinishedSpan, scope: &InstrumentationScope) -> SpanData {
    let flags = if span.context.sampled {
        TraceFlags::SAMPLED
    } else {
        TraceFlags::default()
    };
    let mut events = SpanEvents::default();
    events.events = span
        .events
        .into_iter()
        .map(|event| {
            opentelemetry::trace::Event::new(
                event.name,
                event.time,
                attributes(event.attributes),
                event.dropped_attributes_count,
            )
        })
        .collect();
    events.dropped_count = span.dropped.events;
    let mut links = SpanLinks::default();
    links.links = span
        .links
        .into_iter()
        .map(|link| {
            let context = OtelSpanContext::new(
                TraceId::from(link.context.trace_id),
                SpanId::from(link.context.span_id),
                if link.context.sampled {
                    TraceFlags::SAMPLED
                } else {
                    TraceFlags::default()
                },
                false,
                OtelTraceState::default(),
            );
            opentelemetry::trace::Link::new(context, attributes(link.attributes), 0)
        })
        .collect();
    links.dropped_count = span.dropped.links;
    SpanData {
        span_context: OtelSpanContext::new(
            TraceId::from(span.context.trace_id),
            SpanId::from(span.context.span_id),
            flags,
            false,
            OtelTraceState::default(),
        ),
        parent_span_id: span.parent_span_id.map_or(SpanId::INVALID, SpanId::from),
        // A server span's parent is the caller's span, in another process.
        parent_span_is_remote: span.parent_span_id.is_some() && span.kind == SpanKind::Server,
        span_kind: match span.kind {
            SpanKind::Internal => OtelSpanKind::Internal,
            SpanKind::Server => OtelSpanKind::Server,
            SpanKind::Client => OtelSpanKind::Client,
        },
        name: span.name,
        start_time: span.start,
        end_time: span.end,
        attributes: attributes(span.attributes),
        dropped_attributes_count: span.dropped.attributes,
        events,
        links,
        status: match span.status {
            SpanStatus::Unset => Status::Unset,
            SpanStatus::Ok => Status::Ok,
            SpanStatus::Error(message) => Status::error(crate::secrets::mask_secrets(&message).into_owned()),
        },
        instrumentation_scope: scope.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::{SpanContext, SpanEvent};
    use std::time::{Instant, SystemTime};

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

    #[test]
    fn conversion_keeps_ids_links_status_and_masks_secrets() {
        let start = SystemTime::now();
        let span = FinishedSpan {
            name: Cow::Borrowed("GET /api/orders/{id}"),
            context: SpanContext {
                trace_id: 0x4bf92f3577b34da6a3ce929d0e0e4736,
                span_id: 0x1234,
                sampled: true,
            },
            parent_span_id: Some(0x00f067aa0ba902b7),
            kind: SpanKind::Server,
            start,
            end: start + Duration::from_millis(7),
            duration: Duration::from_millis(7),
            attributes: vec![
                (Cow::Borrowed("http.response.status_code"), AttrValue::I64(503)),
                (Cow::Borrowed("db.password"), AttrValue::from("hunter2")),
                (Cow::Borrowed("url.full"), AttrValue::from("http://u:pw@h/x")),
            ]
            .into(),
            events: vec![SpanEvent {
                name: Cow::Borrowed("exception"),
                time: start,
                attributes: vec![(Cow::Borrowed("exception.message"), AttrValue::from("boom"))],
                dropped_attributes_count: 1,
            }],
            links: vec![crate::trace::SpanLink {
                context: SpanContext {
                    trace_id: 7,
                    span_id: 8,
                    sampled: true,
                },
                attributes: Vec::new(),
            }],
            status: SpanStatus::Error("503 Service Unavailable".into()),
            dropped: crate::trace::DroppedCounts {
                attributes: 3,
                events: 2,
                links: 1,
            },
        };
        let scope = InstrumentationScope::builder("obskit").build();
        let data = to_span_data(span, &scope);
        assert_eq!(
            data.span_context.trace_id(),
            TraceId::from(0x4bf92f3577b34da6a3ce929d0e0e4736)
        );
        assert_eq!(data.span_context.span_id(), SpanId::from(0x1234));
        assert!(data.span_context.is_sampled());
        assert_eq!(data.parent_span_id, SpanId::from(0x00f067aa0ba902b7));
        assert!(data.parent_span_is_remote);
        assert_eq!(data.span_kind, OtelSpanKind::Server);
        assert_eq!(
            data.end_time.duration_since(data.start_time).unwrap(),
            Duration::from_millis(7)
        );
        assert_eq!(data.status, Status::error("503 Service Unavailable"));
        let value = |key: &str| {
            data.attributes
                .iter()
                .find(|kv| kv.key.as_str() == key)
                .map(|kv| kv.value.clone())
        };
        assert_eq!(value("http.response.status_code"), Some(Value::I64(503)));
        assert_eq!(value("db.password"), Some(Value::from("***")));
        assert_eq!(value("url.full"), Some(Value::from("http://u:***@h/x")));
        assert_eq!(data.events.events[0].name, "exception");
        // What the span limits left out travels with the span.
        assert_eq!(data.dropped_attributes_count, 3);
        assert_eq!(data.events.dropped_count, 2);
        assert_eq!(data.events.events[0].dropped_attributes_count, 1);
        assert_eq!(data.links.dropped_count, 1);
        assert_eq!(data.links.links[0].span_context.span_id(), SpanId::from(8));
    }

    /// The gRPC exporter builds inside a (current-thread) runtime, connects lazily, and a
    /// collector that is not there costs a counted failure, not a hang or a panic.
    #[tokio::test]
    async fn grpc_to_an_absent_collector_fails_and_counts() {
        let registry = crate::metrics::Registry::new();
        let counters = ExportCounters::new(&registry).unwrap();
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", closed.local_addr().unwrap());
        drop(closed);
        let config = OtlpConfig::new(endpoint, OtlpProtocol::Grpc);
        let sink = std::sync::Arc::new(OtlpSink::start(&config, Vec::new(), counters.clone()).unwrap());
        sink.on_end(FinishedSpan {
            name: Cow::Borrowed("x"),
            context: SpanContext {
                trace_id: 1,
                span_id: 1,
                sampled: true,
            },
            parent_span_id: None,
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            end: SystemTime::now(),
            duration: Duration::ZERO,
            attributes: crate::trace::Attributes::new(),
            events: Vec::new(),
            status: SpanStatus::Unset,
            links: Vec::new(),
            dropped: Default::default(),
        });
        let flushing = std::sync::Arc::clone(&sink);
        let flushed = tokio::task::spawn_blocking(move || flushing.flush(Duration::from_secs(10)))
            .await
            .unwrap();
        assert!(flushed);
        assert_eq!(counters.dropped_export_failed.get(), 1);
        assert_eq!(counters.exported.get(), 0);
    }

    #[test]
    fn a_full_queue_drops_and_counts_without_blocking() {
        let registry = crate::metrics::Registry::new();
        let counters = ExportCounters::new(&registry).unwrap();
        // A collector that never answers: the kernel completes the connection (backlog) but
        // nobody reads, so each export of one span takes the whole export timeout, during which
        // the queue of one fills up.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/v1/traces", silent.local_addr().unwrap());
        let mut config = OtlpConfig::new(endpoint, OtlpProtocol::HttpProtobuf);
        config.queue_size = 1;
        config.max_batch = 1;
        config.export_timeout = Duration::from_millis(500);
        let sink = OtlpSink::start(
            &config,
            vec![("service.name".into(), "t".into())],
            counters.clone(),
        )
        .unwrap();
        let span = |sampled| FinishedSpan {
            name: Cow::Borrowed("x"),
            context: SpanContext {
                trace_id: 1,
                span_id: 1,
                sampled,
            },
            parent_span_id: None,
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            end: SystemTime::now(),
            duration: Duration::ZERO,
            attributes: crate::trace::Attributes::new(),
            events: Vec::new(),
            status: SpanStatus::Unset,
            links: Vec::new(),
            dropped: Default::default(),
        };
        let started = Instant::now();
        for _ in 0..100 {
            sink.on_end(span(true));
            sink.on_end(span(false));
        }
        assert!(started.elapsed() < Duration::from_secs(1), "on_end never waits");
        assert!(
            counters.dropped_queue_full.get() >= 95,
            "{}",
            counters.dropped_queue_full.get()
        );
        // A batch (what the span collector hands over) is held to the same bound, span by span:
        // one fits at most, and only if the queue had room.
        let before = counters.dropped_queue_full.get();
        sink.on_end_batch((0..100).map(|i| span(i % 2 == 0)).collect());
        assert!(
            counters.dropped_queue_full.get() - before >= 49,
            "{} of 50 sampled spans dropped",
            counters.dropped_queue_full.get() - before
        );
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(counters.exported.get(), 0);
        let dropped = counters.dropped_queue_full.get() + counters.dropped_export_failed.get();
        assert_eq!(
            dropped, 150,
            "every sampled span is either dropped or failed, none unsampled"
        );
    }

    #[test]
    fn the_queue_is_bounded_in_bytes_too() {
        let registry = crate::metrics::Registry::new();
        let counters = ExportCounters::new(&registry).unwrap();
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}/v1/traces", silent.local_addr().unwrap());
        let mut config = OtlpConfig::new(endpoint, OtlpProtocol::HttpProtobuf);
        // Room for many spans by count, for about three of these by bytes.
        config.queue_size = 1000;
        config.queue_bytes = 3 * 10_000 + 5_000;
        config.export_timeout = Duration::from_millis(300);
        let sink = OtlpSink::start(&config, Vec::new(), counters.clone()).unwrap();
        let big = || FinishedSpan {
            name: Cow::Borrowed("big"),
            context: SpanContext {
                trace_id: 1,
                span_id: 1,
                sampled: true,
            },
            parent_span_id: None,
            kind: SpanKind::Internal,
            start: SystemTime::now(),
            end: SystemTime::now(),
            duration: Duration::ZERO,
            attributes: vec![(Cow::Borrowed("blob"), AttrValue::from("x".repeat(10_000)))].into(),
            events: Vec::new(),
            status: SpanStatus::Unset,
            links: Vec::new(),
            dropped: Default::default(),
        };
        for _ in 0..50 {
            sink.on_end(big());
        }
        let by_bytes = counters.dropped_queue_bytes.get();
        assert!(by_bytes >= 45, "{by_bytes}");
        assert_eq!(counters.dropped_queue_full.get(), 0);
        assert!(sink.queue.held_bytes() <= config.queue_bytes);
        // Once the batch is done with (here: failed), its bytes are free again.
        assert!(sink.flush(Duration::from_secs(10)));
        assert_eq!(sink.queue.held_bytes(), 0);
        assert_eq!(by_bytes + counters.dropped_export_failed.get(), 50);
    }
}
