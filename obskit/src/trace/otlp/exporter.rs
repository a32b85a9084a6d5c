//! The OTLP exporter of spans (feature `otlp`): obskit's spans as the SDK's `SpanData`, through
//! `opentelemetry-otlp`, from the bounded queue of `crate::export`.

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

use super::{ExportCounters, OtlpConfig, OtlpError, OtlpProtocol};
use crate::export::{ExportQueue, Exporter, QueueCounters};
use crate::trace::{masked_attr, AttrValue, FinishedSpan, SpanKind, SpanSink, SpanStatus};

impl OtlpConfig {
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

impl ExportCounters {
    fn queue_counters(&self) -> QueueCounters {
        QueueCounters {
            exported: self.exported.clone(),
            dropped_queue_full: self.dropped_queue_full.clone(),
            dropped_queue_bytes: self.dropped_queue_bytes.clone(),
            dropped_export_failed: self.dropped_export_failed.clone(),
        }
    }
}

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
