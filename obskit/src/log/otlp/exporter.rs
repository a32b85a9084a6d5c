//! The OTLP exporter of log records (feature `otlp`).

use std::borrow::Cow;
use std::time::SystemTime;

use opentelemetry::logs::{AnyValue, LogRecord as _, Logger as _, LoggerProvider as _, Severity};
use opentelemetry::trace::{SpanId, TraceFlags, TraceId};
use opentelemetry::InstrumentationScope;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::logs::{LogBatch, LogExporter as _, SdkLogRecord, SdkLogger, SdkLoggerProvider};
use tracing::Level;

use crate::export::{ExportQueue, Exporter, QueueCounters};
use crate::trace::{AttrValue, OtlpConfig, OtlpProtocol, SpanContext};

/// One record as it waits for export: owned, converted on the export thread.
pub(crate) struct ExportedRecord {
    pub(crate) time: SystemTime,
    pub(crate) level: Level,
    pub(crate) target: String,
    pub(crate) body: String,
    pub(crate) attributes: Vec<(Cow<'static, str>, AttrValue)>,
    pub(crate) span: Option<SpanContext>,
}

impl ExportedRecord {
    /// About how many bytes it holds, for the queue's byte bound.
    pub(crate) fn approximate_bytes(&self) -> usize {
        let attributes: usize = self
            .attributes
            .iter()
            .map(|(key, value)| {
                key.len()
                    + match value {
                        AttrValue::Str(s) => s.len(),
                        _ => 8,
                    }
                    + 32
            })
            .sum();
        std::mem::size_of::<Self>() + self.target.len() + self.body.len() + attributes
    }
}

/// The OTLP log export of a [`Logs`](super::Logs).
pub(crate) struct LogExport {
    queue: ExportQueue<ExportedRecord>,
}

impl LogExport {
    /// Builds the exporter and starts its thread; a gRPC exporter must be built inside a tokio
    /// runtime, which then carries its connections.
    pub(crate) fn start(
        config: &OtlpConfig,
        resource: &[(String, String)],
        counters: QueueCounters,
    ) -> Result<LogExport, String> {
        let failed = |e: &dyn std::fmt::Display| format!("OTLP log exporter for {}: {e}", config.endpoint);
        let mut exporter = match config.protocol {
            OtlpProtocol::Grpc => opentelemetry_otlp::LogExporter::builder()
                .with_tonic()
                .with_endpoint(&config.endpoint)
                .with_protocol(Protocol::Grpc)
                .with_timeout(config.export_timeout)
                .build(),
            OtlpProtocol::HttpProtobuf => opentelemetry_otlp::LogExporter::builder()
                .with_http()
                .with_endpoint(&config.endpoint)
                .with_protocol(Protocol::HttpBinary)
                .with_timeout(config.export_timeout)
                .build(),
        }
        .map_err(|e| failed(&e))?;
        exporter.set_resource(&OtlpConfig::resource(resource));
        // A provider without processors: only its logger's record factory is used (the SDK
        // makes records only through a logger); obskit queues and exports them itself.
        let logger = SdkLoggerProvider::builder().build().logger("obskit");
        let exporter = Records {
            exporter,
            logger,
            scope: InstrumentationScope::builder("obskit")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        };
        let queue = ExportQueue::start("obskit-otlp-logs", exporter, config.queue_limits(), counters)
            .map_err(|e| failed(&e))?;
        Ok(LogExport { queue })
    }

    /// Queues one record, never waiting.
    pub(crate) fn offer(&self, record: ExportedRecord) {
        let bytes = record.approximate_bytes();
        self.queue.offer([(record, bytes)]);
    }

    /// Exports what is queued, waiting at most `timeout`.
    pub(crate) fn flush(&self, timeout: std::time::Duration) -> bool {
        self.queue.flush(timeout)
    }
}

/// The log exporter the queue's thread drives.
struct Records {
    exporter: opentelemetry_otlp::LogExporter,
    logger: SdkLogger,
    scope: InstrumentationScope,
}

fn severity(level: &Level) -> (Severity, &'static str) {
    match *level {
        Level::ERROR => (Severity::Error, "ERROR"),
        Level::WARN => (Severity::Warn, "WARN"),
        Level::INFO => (Severity::Info, "INFO"),
        Level::DEBUG => (Severity::Debug, "DEBUG"),
        Level::TRACE => (Severity::Trace, "TRACE"),
    }
}

fn any_value(value: AttrValue) -> AnyValue {
    match value {
        AttrValue::Str(s) => AnyValue::String(s.into_owned().into()),
        AttrValue::I64(v) => AnyValue::Int(v),
        AttrValue::F64(v) => AnyValue::Double(v),
        AttrValue::Bool(v) => AnyValue::Boolean(v),
    }
}

impl Exporter for Records {
    type Item = ExportedRecord;
    type Exported = SdkLogRecord;

    fn convert(&self, record: ExportedRecord) -> SdkLogRecord {
        let mut out = self.logger.create_log_record();
        let (number, text) = severity(&record.level);
        out.set_severity_number(number);
        out.set_severity_text(text);
        out.set_timestamp(record.time);
        out.set_observed_timestamp(record.time);
        out.set_target(record.target);
        out.set_body(AnyValue::String(record.body.into()));
        for (key, value) in record.attributes {
            out.add_attribute(key, any_value(value));
        }
        if let Some(span) = record.span {
            let flags = if span.sampled {
                TraceFlags::SAMPLED
            } else {
                TraceFlags::default()
            };
            out.set_trace_context(
                TraceId::from(span.trace_id),
                SpanId::from(span.span_id),
                Some(flags),
            );
        }
        out
    }

    fn export(&mut self, batch: Vec<SdkLogRecord>) -> bool {
        let refs: Vec<(&SdkLogRecord, &InstrumentationScope)> =
            batch.iter().map(|record| (record, &self.scope)).collect();
        // As for spans: the HTTP exporter's future completes on a blocking client, the gRPC
        // one on the runtime it was built in.
        futures_executor::block_on(self.exporter.export(LogBatch::new(&refs))).is_ok()
    }

    fn shutdown(&mut self) {
        let _ = self.exporter.shutdown();
    }
}
