//! OTLP logs (the exporter needs the `otlp` feature): when `OTEL_LOGS_EXPORTER=otlp`, every record written also goes to an
//! OpenTelemetry collector as an OTLP log record (gRPC or HTTP/protobuf, the endpoint from the
//! `OTEL_EXPORTER_OTLP_LOGS_*` or general `OTEL_EXPORTER_OTLP_*` variables), with its severity,
//! target, fields and the trace and span ids of the obskit span it happened in.
//!
//! The same discipline as spans ([`crate::export`]): records are offered to a queue bounded in
//! records and bytes, never waited on; a thread of its own converts them and exports batches;
//! what is dropped is counted in `obskit_log_records_dropped_total` (`export_queue_full`,
//! `export_queue_bytes`, `export_failed`), what is exported in
//! `obskit_log_records_exported_total`.

use crate::names::env;
use crate::settings::{EnvError, EnvSource};
use crate::trace::{OtlpConfig, OtlpSignal};

#[cfg(feature = "otlp")]
mod exporter;
#[cfg(feature = "otlp")]
pub(crate) use exporter::{ExportedRecord, LogExport};

/// `otlp` exports log records; `none` (obskit's default: stdout carries them already) does not.
pub const LOGS_EXPORTER_ENV: &str = crate::names::env::OTEL_LOGS_EXPORTER;

/// Where log records are exported, if `OTEL_LOGS_EXPORTER=otlp` says so: the endpoint the OTLP
/// variables name, else the specification's default (`http://localhost:4318/v1/logs`, or
/// `http://localhost:4317` over gRPC).
pub(crate) fn config_from_env(env: &impl EnvSource) -> Result<Option<OtlpConfig>, EnvError> {
    match env.get(LOGS_EXPORTER_ENV).as_deref() {
        None | Some("none") => Ok(None),
        Some("otlp") => Ok(Some(match OtlpConfig::for_signal(OtlpSignal::Logs, env)? {
            Some(config) => config,
            None => {
                // The protocol still decides the default endpoint.
                let defaults = |name: &str| match name {
                    env::OTEL_EXPORTER_OTLP_ENDPOINT => Some(
                        match env
                            .get(env::OTEL_EXPORTER_OTLP_LOGS_PROTOCOL)
                            .or_else(|| env.get(env::OTEL_EXPORTER_OTLP_PROTOCOL))
                            .as_deref()
                        {
                            Some("grpc") => "http://localhost:4317",
                            _ => "http://localhost:4318",
                        }
                        .to_string(),
                    ),
                    other => env.raw(other),
                };
                OtlpConfig::for_signal(OtlpSignal::Logs, &defaults)?.expect("an endpoint is set")
            }
        })),
        Some(other) => Err(EnvError::new(
            LOGS_EXPORTER_ENV,
            format!("`{other}` is not supported; use otlp or none (records always go to stdout)"),
        )),
    }
}
