//! The `tracing` layer: each event the filter lets through is counted, rate limited, written as
//! a record and queued for the writer thread.

use std::cell::RefCell;
use std::sync::Arc;
#[cfg(feature = "otlp")]
use std::sync::OnceLock;
use std::time::SystemTime;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::Layer;

use super::limit::{Decision, RateLimiter};
#[cfg(feature = "otlp")]
use super::otlp::{ExportedRecord, LogExport};
use super::record::{level_name, write_record, Context, Fields, LogFormat};
use super::writer::LineWriter;
#[cfg(feature = "otlp")]
use crate::export::QueueCounters;
use crate::metrics::{Counter, Registry};

/// The log pipeline's own figures.
#[derive(Clone)]
pub(crate) struct LogCounters {
    /// `obskit_log_records_total{level}`, by [`level_index`].
    records: [Counter; 5],
    /// `obskit_log_records_dropped_total{reason="rate_limited"}`.
    pub(crate) dropped_rate_limited: Counter,
    /// `obskit_log_records_dropped_total{reason="queue_full"}`.
    pub(crate) dropped_queue_full: Counter,
    /// The OTLP export's: `obskit_log_records_exported_total`, and the `export_queue_full`,
    /// `export_queue_bytes` and `export_failed` reasons of the dropped records.
    #[cfg(feature = "otlp")]
    pub(crate) export: QueueCounters,
}

const LEVELS: [Level; 5] = [Level::ERROR, Level::WARN, Level::INFO, Level::DEBUG, Level::TRACE];

fn level_index(level: &Level) -> usize {
    LEVELS.iter().position(|l| l == level).unwrap_or(LEVELS.len() - 1)
}

impl LogCounters {
    pub(crate) fn new(registry: &Registry) -> Result<LogCounters, crate::metrics::Error> {
        use crate::names::{
            OBSKIT_LOG_RECORDS_DROPPED_TOTAL as DROPPED, OBSKIT_LOG_RECORDS_TOTAL as RECORDS,
        };
        let records = registry.counter_vec(RECORDS.name, RECORDS.help, RECORDS.labels)?;
        let dropped = registry.counter_vec(DROPPED.name, DROPPED.help, DROPPED.labels)?;
        #[cfg(feature = "otlp")]
        let exported = registry.counter(
            crate::names::OBSKIT_LOG_RECORDS_EXPORTED_TOTAL.name,
            crate::names::OBSKIT_LOG_RECORDS_EXPORTED_TOTAL.help,
        )?;
        Ok(LogCounters {
            // Lower case, as `tracing`'s own level names in directives.
            records: LEVELS.map(|level| records.with(&[&level_name(&level).to_ascii_lowercase()])),
            dropped_rate_limited: dropped.with(&["rate_limited"]),
            dropped_queue_full: dropped.with(&["queue_full"]),
            #[cfg(feature = "otlp")]
            export: QueueCounters {
                exported,
                dropped_queue_full: dropped.with(&["export_queue_full"]),
                dropped_queue_bytes: dropped.with(&["export_queue_bytes"]),
                dropped_export_failed: dropped.with(&["export_failed"]),
            },
        })
    }
}

struct Inner {
    service: String,
    format: LogFormat,
    limiter: RateLimiter,
    counters: LogCounters,
    writer: LineWriter,
    /// The OTLP export, once started ([`Logs::export_otlp`](super::Logs::export_otlp)).
    #[cfg(feature = "otlp")]
    export: OnceLock<LogExport>,
}

/// obskit's record layer (see the [module](super) documentation). Cheap to clone.
#[derive(Clone)]
pub struct LogLayer {
    inner: Arc<Inner>,
}

impl LogLayer {
    pub(crate) fn new(
        service: String,
        format: LogFormat,
        limiter: RateLimiter,
        counters: LogCounters,
        writer: LineWriter,
    ) -> LogLayer {
        LogLayer {
            inner: Arc::new(Inner {
                service,
                format,
                limiter,
                counters,
                writer,
                #[cfg(feature = "otlp")]
                export: OnceLock::new(),
            }),
        }
    }

    /// Starts exporting records over OTLP, once: `false` when an export was started already.
    #[cfg(feature = "otlp")]
    pub(crate) fn start_export(&self, export: LogExport) -> bool {
        self.inner.export.set(export).is_ok()
    }

    #[cfg(feature = "otlp")]
    pub(crate) fn export_counters(&self) -> QueueCounters {
        self.inner.counters.export.clone()
    }

    /// Exports the queued records, waiting at most `timeout`; true when there is no export.
    pub(crate) fn flush_export(&self, timeout: std::time::Duration) -> bool {
        #[cfg(feature = "otlp")]
        if let Some(export) = self.inner.export.get() {
            return export.flush(timeout);
        }
        let _ = timeout;
        true
    }
}

thread_local! {
    /// The line being written, reused: a record allocates only what its fields need.
    static LINE: RefCell<String> = const { RefCell::new(String::new()) };
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: LayerContext<'_, S>) {
        let inner = &*self.inner;
        let metadata = event.metadata();
        inner.counters.records[level_index(metadata.level())].inc();
        let suppressed_before = match inner
            .limiter
            .check(metadata as *const tracing::Metadata<'static> as usize)
        {
            Decision::Suppress => {
                inner.counters.dropped_rate_limited.inc();
                return;
            }
            Decision::Emit { suppressed_before } => suppressed_before,
        };
        let fields = Fields::of(event);
        let span = crate::trace::current();
        // Inside a sampled span, the record is also an event of that span (an unsampled span
        // records no events).
        if let Some(span) = span.filter(|s| s.sampled) {
            let (name, attributes) = fields.span_event(metadata);
            crate::trace::late_events::add(span.span_id, name, attributes);
        }
        let time = SystemTime::now();
        #[cfg(feature = "otlp")]
        if let Some(export) = inner.export.get() {
            export.offer(ExportedRecord {
                time,
                level: *metadata.level(),
                target: metadata.target().to_string(),
                body: fields.body(metadata),
                attributes: fields.attributes(),
                span,
            });
        }
        let context = Context {
            time,
            service: &inner.service,
            span,
            suppressed_before,
        };
        let write = |line: &mut String| {
            line.clear();
            write_record(line, inner.format, metadata, &fields, &context);
            inner.writer.write_line(line.as_bytes());
            // A record far larger than usual does not stay allocated on this thread.
            if line.capacity() > 64 * 1024 {
                *line = String::new();
            }
        };
        // An event logged while this thread writes one (from a field's `Debug`) gets a line of
        // its own.
        LINE.with(|line| match line.try_borrow_mut() {
            Ok(mut line) => write(&mut line),
            Err(_) => write(&mut String::new()),
        });
    }
}
