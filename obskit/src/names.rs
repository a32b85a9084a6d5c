//! Every metric, label and environment variable name obskit uses, declared here once.
//!
//! The names are an interface: dashboards, alerting rules and deployments spell them, and a
//! rename anywhere breaks them silently. So each is written once, here, and everything else
//! reads it from here: the code that registers a metric (its name, help and label names) or
//! reads a variable, the generated monitoring catalogue (`obskit-gen`), and a test that the
//! README's tables ("Metrics obskit exports", "Configuration") list exactly these, with the
//! same types and labels. Services declare their own business metrics with the same [`Metric`]
//! type (the shop's services each list theirs in a `METRICS` constant).
//!
//! ```
//! use obskit::names::{self, MetricKind};
//!
//! assert_eq!(names::HTTP_REQUESTS_TOTAL.name, "http_requests_total");
//! assert_eq!(names::HTTP_REQUESTS_TOTAL.kind, MetricKind::Counter);
//! assert!(names::METRICS.iter().any(|m| m.name == "function_calls_total"));
//! assert!(names::ENV_VARS.contains(&names::env::OTEL_SERVICE_NAME));
//! ```

/// The Prometheus type of a metric family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum MetricKind {
    /// A monotonic counter (`_total`).
    Counter,
    /// A value that goes up and down.
    Gauge,
    /// Observations in buckets, with their sum and count.
    Histogram,
}

impl MetricKind {
    /// The type as the text exposition's `# TYPE` line writes it: `"counter"`, `"gauge"`,
    /// `"histogram"`.
    pub const fn as_str(self) -> &'static str {
        match self {
            MetricKind::Counter => "counter",
            MetricKind::Gauge => "gauge",
            MetricKind::Histogram => "histogram",
        }
    }
}

/// One metric family: its name, type, help text and every label it can carry.
#[derive(Clone, Copy, Debug)]
pub struct Metric {
    /// The family name, as exposed.
    pub name: &'static str,
    /// Its type.
    pub kind: MetricKind,
    /// The help text it is registered with.
    pub help: &'static str,
    /// Every label a series of the family can carry (some only on some series, such as the
    /// objective labels of the function metrics).
    pub labels: &'static [&'static str],
}

/// The names of the labels on obskit's own metrics.
pub mod label {
    /// The request method (the standard nine, else `other`).
    pub const METHOD: &str = "method";
    /// The route template, or `unmatched`.
    pub const ENDPOINT: &str = "endpoint";
    /// The response status code.
    pub const STATUS: &str = "status";
    /// An instrumented function's name.
    pub const FUNCTION: &str = "function";
    /// An instrumented function's module path.
    pub const MODULE: &str = "module";
    /// A call's result: `ok` or `error`.
    pub const RESULT: &str = "result";
    /// `objective_name`, as autometrics 1.0 names it (`objective.name` with `_` for Prometheus).
    pub const OBJECTIVE_NAME: &str = "objective_name";
    /// `objective_percentile`.
    pub const OBJECTIVE_PERCENTILE: &str = "objective_percentile";
    /// `objective_latency_threshold`.
    pub const OBJECTIVE_LATENCY_THRESHOLD: &str = "objective_latency_threshold";
    /// `build_info`'s service name.
    pub const SERVICE_NAME: &str = "service_name";
    /// `build_info`'s service version.
    pub const VERSION: &str = "version";
    /// `build_info`'s commit.
    pub const COMMIT: &str = "commit";
    /// `build_info`'s deployment environment.
    pub const ENVIRONMENT: &str = "environment";
    /// A health check's name, or `overall`.
    pub const CHECK: &str = "check";
    /// The metric whose label sets overflowed.
    pub const METRIC: &str = "metric";
    /// Why something was dropped, skipped or closed.
    pub const REASON: &str = "reason";
    /// A log record's level.
    pub const LEVEL: &str = "level";
    /// A storage query's table.
    pub const TABLE: &str = "table";
    /// A storage query's operation (the SQL verb).
    pub const OPERATION: &str = "operation";
    /// A tokio worker thread's index.
    pub const WORKER: &str = "worker";

    /// Every label name above.
    pub const ALL: &[&str] = &[
        METHOD,
        ENDPOINT,
        STATUS,
        FUNCTION,
        MODULE,
        RESULT,
        OBJECTIVE_NAME,
        OBJECTIVE_PERCENTILE,
        OBJECTIVE_LATENCY_THRESHOLD,
        SERVICE_NAME,
        VERSION,
        COMMIT,
        ENVIRONMENT,
        CHECK,
        METRIC,
        REASON,
        LEVEL,
        TABLE,
        OPERATION,
        WORKER,
    ];
}

use label::*;

/// `http_requests_total{method,endpoint,status}`.
pub const HTTP_REQUESTS_TOTAL: Metric = Metric {
    name: "http_requests_total",
    kind: MetricKind::Counter,
    help: "HTTP requests handled, by method, route template and status code",
    labels: &[METHOD, ENDPOINT, STATUS],
};

/// `http_request_duration_seconds{method,endpoint}`.
pub const HTTP_REQUEST_DURATION_SECONDS: Metric = Metric {
    name: "http_request_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Time from receiving an HTTP request to the end of its response body",
    labels: &[METHOD, ENDPOINT],
};

/// `http_requests_in_flight{method,endpoint}`.
pub const HTTP_REQUESTS_IN_FLIGHT: Metric = Metric {
    name: "http_requests_in_flight",
    kind: MetricKind::Gauge,
    help: "HTTP requests received whose response body has not ended yet",
    labels: &[METHOD, ENDPOINT],
};

/// `http_request_size_bytes{method,endpoint}`.
pub const HTTP_REQUEST_SIZE_BYTES: Metric = Metric {
    name: "http_request_size_bytes",
    kind: MetricKind::Histogram,
    help: "HTTP request body size: bytes read when read to the end, else Content-Length, else 0",
    labels: &[METHOD, ENDPOINT],
};

/// `http_response_size_bytes{method,endpoint}`.
pub const HTTP_RESPONSE_SIZE_BYTES: Metric = Metric {
    name: "http_response_size_bytes",
    kind: MetricKind::Histogram,
    help: "HTTP response body bytes produced",
    labels: &[METHOD, ENDPOINT],
};

/// `function_calls_total{function,module,result}`, plus the success-rate objective's labels.
pub const FUNCTION_CALLS_TOTAL: Metric = Metric {
    name: "function_calls_total",
    kind: MetricKind::Counter,
    help: "Calls of instrumented functions (autometrics 1.0)",
    labels: &[FUNCTION, MODULE, RESULT, OBJECTIVE_NAME, OBJECTIVE_PERCENTILE],
};

/// `function_calls_busy_duration_seconds{function,module}`: of an async function's calls, the time
/// each spent being polled (computing, holding a worker thread), beside its wall time in
/// [`FUNCTION_CALLS_DURATION_SECONDS`]: what a slow call did not spend waiting.
pub const FUNCTION_CALLS_BUSY_DURATION_SECONDS: Metric = Metric {
    name: "function_calls_busy_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Time each call of an instrumented async function spent being polled, not waiting",
    labels: &[FUNCTION, MODULE],
};

/// `function_calls_duration_seconds{function,module}`, plus the latency objective's labels.
pub const FUNCTION_CALLS_DURATION_SECONDS: Metric = Metric {
    name: "function_calls_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Duration of instrumented function calls (autometrics 1.0)",
    labels: &[
        FUNCTION,
        MODULE,
        OBJECTIVE_NAME,
        OBJECTIVE_PERCENTILE,
        OBJECTIVE_LATENCY_THRESHOLD,
    ],
};

/// `function_calls_concurrent{function,module}`.
pub const FUNCTION_CALLS_CONCURRENT: Metric = Metric {
    name: "function_calls_concurrent",
    kind: MetricKind::Gauge,
    help: "Instrumented function calls in flight (autometrics 1.0)",
    labels: &[FUNCTION, MODULE],
};

/// `build_info{service_name,version,commit,environment}`, valued 1.
pub const BUILD_INFO: Metric = Metric {
    name: "build_info",
    kind: MetricKind::Gauge,
    help: "Build information of the running service (value 1)",
    labels: &[SERVICE_NAME, VERSION, COMMIT, ENVIRONMENT],
};

/// `obskit_health_status{check}`.
pub const OBSKIT_HEALTH_STATUS: Metric = Metric {
    name: "obskit_health_status",
    kind: MetricKind::Gauge,
    help: "Health status as /health reports it, refreshed in the background: \
           0 healthy, 1 degraded, 2 unhealthy; check=\"overall\" is the aggregate",
    labels: &[CHECK],
};

/// `obskit_metric_label_overflow_total{metric}`.
pub const OBSKIT_METRIC_LABEL_OVERFLOW_TOTAL: Metric = Metric {
    name: "obskit_metric_label_overflow_total",
    kind: MetricKind::Counter,
    help: "Label sets folded into the __overflow__ series because a metric reached its label-set limit",
    labels: &[METRIC],
};

/// `obskit_spans_exported_total`.
pub const OBSKIT_SPANS_EXPORTED_TOTAL: Metric = Metric {
    name: "obskit_spans_exported_total",
    kind: MetricKind::Counter,
    help: "Spans handed to the OTLP exporter successfully",
    labels: &[],
};

/// `obskit_spans_dropped_total{reason}`.
pub const OBSKIT_SPANS_DROPPED_TOTAL: Metric = Metric {
    name: "obskit_spans_dropped_total",
    kind: MetricKind::Counter,
    help: "Spans not exported: the export queue was full, or the export failed",
    labels: &[REASON],
};

/// `obskit_log_records_total{level}`.
pub const OBSKIT_LOG_RECORDS_TOTAL: Metric = Metric {
    name: "obskit_log_records_total",
    kind: MetricKind::Counter,
    help: "Log records the filter let through, by level (suppressed and dropped ones included)",
    labels: &[LEVEL],
};

/// `obskit_log_records_dropped_total{reason}`.
pub const OBSKIT_LOG_RECORDS_DROPPED_TOTAL: Metric = Metric {
    name: "obskit_log_records_dropped_total",
    kind: MetricKind::Counter,
    help: "Log records not written or not exported: over their callsite's rate limit, a queue full, or a failed export",
    labels: &[REASON],
};

/// `obskit_log_records_exported_total`.
pub const OBSKIT_LOG_RECORDS_EXPORTED_TOTAL: Metric = Metric {
    name: "obskit_log_records_exported_total",
    kind: MetricKind::Counter,
    help: "Log records handed to the OTLP exporter successfully",
    labels: &[],
};

/// `obskit_profiles_captured_total{function}`.
pub const OBSKIT_PROFILES_CAPTURED_TOTAL: Metric = Metric {
    name: "obskit_profiles_captured_total",
    kind: MetricKind::Counter,
    help: "CPU profiles captured and stored, by profiled function (on_demand for /debug/pprof/profile)",
    labels: &[FUNCTION],
};

/// `obskit_profiles_skipped_total{reason}`.
pub const OBSKIT_PROFILES_SKIPPED_TOTAL: Metric = Metric {
    name: "obskit_profiles_skipped_total",
    kind: MetricKind::Counter,
    help: "CPU profile captures not taken: busy (another capture was running) or error",
    labels: &[REASON],
};

/// `obskit_profile_store_bytes`.
pub const OBSKIT_PROFILE_STORE_BYTES: Metric = Metric {
    name: "obskit_profile_store_bytes",
    kind: MetricKind::Gauge,
    help: "Bytes of profiles held by the process-wide profile store",
    labels: &[],
};

/// `obskit_server_connections_open`: connections open now.
pub const OBSKIT_SERVER_CONNECTIONS_OPEN: Metric = Metric {
    name: "obskit_server_connections_open",
    kind: MetricKind::Gauge,
    help: "Connections the server holds open now",
    labels: &[],
};

/// `obskit_server_connections_accepted_total`.
pub const OBSKIT_SERVER_CONNECTIONS_ACCEPTED_TOTAL: Metric = Metric {
    name: "obskit_server_connections_accepted_total",
    kind: MetricKind::Counter,
    help: "Connections the server accepted",
    labels: &[],
};

/// `obskit_server_connections_closed_total{reason}`.
pub const OBSKIT_SERVER_CONNECTIONS_CLOSED_TOTAL: Metric = Metric {
    name: "obskit_server_connections_closed_total",
    kind: MetricKind::Counter,
    help: "Connections the server closed or saw closed, by reason",
    labels: &[REASON],
};

/// `obskit_server_connection_waits_total`: times every slot of the connection cap was taken.
pub const OBSKIT_SERVER_CONNECTION_WAITS_TOTAL: Metric = Metric {
    name: "obskit_server_connection_waits_total",
    kind: MetricKind::Counter,
    help: "Times the connection cap was reached and accepting paused until a slot freed",
    labels: &[],
};

/// `obskit_server_connection_wait_seconds`: how long those waits took.
pub const OBSKIT_SERVER_CONNECTION_WAIT_SECONDS: Metric = Metric {
    name: "obskit_server_connection_wait_seconds",
    kind: MetricKind::Histogram,
    help: "How long accepting paused at the connection cap",
    labels: &[],
};

/// `obskit_server_accept_errors_total`.
pub const OBSKIT_SERVER_ACCEPT_ERRORS_TOTAL: Metric = Metric {
    name: "obskit_server_accept_errors_total",
    kind: MetricKind::Counter,
    help: "accept() calls that failed",
    labels: &[],
};

/// `tokio_workers`: the runtime's worker threads ([`crate::metrics::runtime`]).
pub const TOKIO_WORKERS: Metric = Metric {
    name: "tokio_workers",
    kind: MetricKind::Gauge,
    help: "Worker threads of the tokio runtime",
    labels: &[],
};

/// `tokio_alive_tasks`: tasks spawned and not finished.
pub const TOKIO_ALIVE_TASKS: Metric = Metric {
    name: "tokio_alive_tasks",
    kind: MetricKind::Gauge,
    help: "Tasks of the tokio runtime spawned and not yet finished",
    labels: &[],
};

/// `tokio_global_queue_depth`: tasks waiting in the runtime's shared queue.
pub const TOKIO_GLOBAL_QUEUE_DEPTH: Metric = Metric {
    name: "tokio_global_queue_depth",
    kind: MetricKind::Gauge,
    help: "Tasks waiting in the tokio runtime's global (injection) queue",
    labels: &[],
};

/// `tokio_worker_busy_seconds_total{worker}`: its rate is the worker's busy ratio.
pub const TOKIO_WORKER_BUSY_SECONDS_TOTAL: Metric = Metric {
    name: "tokio_worker_busy_seconds_total",
    kind: MetricKind::Counter,
    help: "Time each tokio worker spent running tasks; its rate is the worker's busy ratio",
    labels: &[WORKER],
};

/// `tokio_worker_park_total{worker}`: times a worker ran out of work and parked.
pub const TOKIO_WORKER_PARK_TOTAL: Metric = Metric {
    name: "tokio_worker_park_total",
    kind: MetricKind::Counter,
    help: "Times each tokio worker parked, having no task to run",
    labels: &[WORKER],
};

/// `tokio_blocking_threads`: the blocking pool's threads (a build with `--cfg tokio_unstable`).
pub const TOKIO_BLOCKING_THREADS: Metric = Metric {
    name: "tokio_blocking_threads",
    kind: MetricKind::Gauge,
    help: "Threads of the tokio blocking pool (spawn_blocking), busy or idle",
    labels: &[],
};

/// `tokio_idle_blocking_threads`: those of them idle (a build with `--cfg tokio_unstable`).
pub const TOKIO_IDLE_BLOCKING_THREADS: Metric = Metric {
    name: "tokio_idle_blocking_threads",
    kind: MetricKind::Gauge,
    help: "Idle threads of the tokio blocking pool",
    labels: &[],
};

/// `cassandra_query_duration_seconds{table,operation}`: not one of obskit's own (it is not in
/// [`METRICS`]), the shop's storage layer registers it; declared here because obskit's
/// documentation uses it as its example of a labelled histogram.
pub const CASSANDRA_QUERY_DURATION_SECONDS: Metric = Metric {
    name: "cassandra_query_duration_seconds",
    kind: MetricKind::Histogram,
    help: "Duration of storage queries as the client sees them, by table and operation",
    labels: &[TABLE, OPERATION],
};

/// Every metric family obskit itself exports (some only with a feature, or once the part that
/// records them is in use), in the README's order.
pub const METRICS: &[Metric] = &[
    HTTP_REQUESTS_TOTAL,
    HTTP_REQUEST_DURATION_SECONDS,
    HTTP_REQUESTS_IN_FLIGHT,
    HTTP_REQUEST_SIZE_BYTES,
    HTTP_RESPONSE_SIZE_BYTES,
    FUNCTION_CALLS_TOTAL,
    FUNCTION_CALLS_DURATION_SECONDS,
    FUNCTION_CALLS_BUSY_DURATION_SECONDS,
    FUNCTION_CALLS_CONCURRENT,
    BUILD_INFO,
    OBSKIT_HEALTH_STATUS,
    OBSKIT_METRIC_LABEL_OVERFLOW_TOTAL,
    OBSKIT_SPANS_EXPORTED_TOTAL,
    OBSKIT_SPANS_DROPPED_TOTAL,
    OBSKIT_LOG_RECORDS_TOTAL,
    OBSKIT_LOG_RECORDS_DROPPED_TOTAL,
    OBSKIT_LOG_RECORDS_EXPORTED_TOTAL,
    OBSKIT_PROFILES_CAPTURED_TOTAL,
    OBSKIT_PROFILES_SKIPPED_TOTAL,
    OBSKIT_PROFILE_STORE_BYTES,
    OBSKIT_SERVER_CONNECTIONS_OPEN,
    OBSKIT_SERVER_CONNECTIONS_ACCEPTED_TOTAL,
    OBSKIT_SERVER_CONNECTIONS_CLOSED_TOTAL,
    OBSKIT_SERVER_CONNECTION_WAITS_TOTAL,
    OBSKIT_SERVER_CONNECTION_WAIT_SECONDS,
    OBSKIT_SERVER_ACCEPT_ERRORS_TOTAL,
    TOKIO_WORKERS,
    TOKIO_ALIVE_TASKS,
    TOKIO_GLOBAL_QUEUE_DEPTH,
    TOKIO_WORKER_BUSY_SECONDS_TOTAL,
    TOKIO_WORKER_PARK_TOTAL,
    TOKIO_BLOCKING_THREADS,
    TOKIO_IDLE_BLOCKING_THREADS,
];

/// The environment variables obskit reads (each constant is named as its variable).
pub mod env {
    /// The service name when the code sets none.
    pub const OTEL_SERVICE_NAME: &str = "OTEL_SERVICE_NAME";
    /// Resource attributes (`k=v,k2=v2`).
    pub const OTEL_RESOURCE_ATTRIBUTES: &str = "OTEL_RESOURCE_ATTRIBUTES";
    /// The OTLP endpoint of every signal (a path per signal is appended for HTTP).
    pub const OTEL_EXPORTER_OTLP_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";
    /// The OTLP protocol of every signal: `http/protobuf` or `grpc`.
    pub const OTEL_EXPORTER_OTLP_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_PROTOCOL";
    /// The export timeout of every signal, in milliseconds.
    pub const OTEL_EXPORTER_OTLP_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TIMEOUT";
    /// The spans' OTLP endpoint, used as it is.
    pub const OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT";
    /// The spans' OTLP protocol.
    pub const OTEL_EXPORTER_OTLP_TRACES_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL";
    /// The spans' export timeout, in milliseconds.
    pub const OTEL_EXPORTER_OTLP_TRACES_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT";
    /// The span export queue, in spans.
    pub const OTEL_BSP_MAX_QUEUE_SIZE: &str = "OTEL_BSP_MAX_QUEUE_SIZE";
    /// The most spans in one export.
    pub const OTEL_BSP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BSP_MAX_EXPORT_BATCH_SIZE";
    /// How long a span may wait for its batch, in milliseconds.
    pub const OTEL_BSP_SCHEDULE_DELAY: &str = "OTEL_BSP_SCHEDULE_DELAY";
    /// The span batch processor's export timeout, in milliseconds.
    pub const OTEL_BSP_EXPORT_TIMEOUT: &str = "OTEL_BSP_EXPORT_TIMEOUT";
    /// The export queues' byte bound.
    pub const OBSKIT_EXPORT_QUEUE_BYTES: &str = "OBSKIT_EXPORT_QUEUE_BYTES";
    /// `otlp`: log records are exported too; `none`: not.
    pub const OTEL_LOGS_EXPORTER: &str = "OTEL_LOGS_EXPORTER";
    /// The log records' OTLP endpoint, used as it is.
    pub const OTEL_EXPORTER_OTLP_LOGS_ENDPOINT: &str = "OTEL_EXPORTER_OTLP_LOGS_ENDPOINT";
    /// The log records' OTLP protocol.
    pub const OTEL_EXPORTER_OTLP_LOGS_PROTOCOL: &str = "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL";
    /// The log records' export timeout, in milliseconds.
    pub const OTEL_EXPORTER_OTLP_LOGS_TIMEOUT: &str = "OTEL_EXPORTER_OTLP_LOGS_TIMEOUT";
    /// The log record export queue, in records.
    pub const OTEL_BLRP_MAX_QUEUE_SIZE: &str = "OTEL_BLRP_MAX_QUEUE_SIZE";
    /// The most log records in one export.
    pub const OTEL_BLRP_MAX_EXPORT_BATCH_SIZE: &str = "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE";
    /// How long a log record may wait for its batch, in milliseconds.
    pub const OTEL_BLRP_SCHEDULE_DELAY: &str = "OTEL_BLRP_SCHEDULE_DELAY";
    /// The log record batch processor's export timeout, in milliseconds.
    pub const OTEL_BLRP_EXPORT_TIMEOUT: &str = "OTEL_BLRP_EXPORT_TIMEOUT";
    /// The longest string attribute value, in bytes.
    pub const OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT: &str = "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT";
    /// The most attributes on a span or an event, unless a specific limit says otherwise.
    pub const OTEL_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_ATTRIBUTE_COUNT_LIMIT";
    /// The most attributes on a span.
    pub const OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT";
    /// The most events on a span.
    pub const OTEL_SPAN_EVENT_COUNT_LIMIT: &str = "OTEL_SPAN_EVENT_COUNT_LIMIT";
    /// The most links on a span.
    pub const OTEL_SPAN_LINK_COUNT_LIMIT: &str = "OTEL_SPAN_LINK_COUNT_LIMIT";
    /// The most attributes on an event.
    pub const OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT: &str = "OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT";
    /// The head sampler.
    pub const OTEL_TRACES_SAMPLER: &str = "OTEL_TRACES_SAMPLER";
    /// The head sampler's ratio.
    pub const OTEL_TRACES_SAMPLER_ARG: &str = "OTEL_TRACES_SAMPLER_ARG";
    /// The Bearer token of the protected admin endpoints.
    pub const OBSKIT_ADMIN_TOKEN: &str = "OBSKIT_ADMIN_TOKEN";
    /// Hosts besides loopback names that loopback-only admin endpoints answer to.
    pub const OBSKIT_ADMIN_ALLOWED_HOSTS: &str = "OBSKIT_ADMIN_ALLOWED_HOSTS";
    /// The admin surface's own listener address.
    pub const OBSKIT_ADMIN_ADDR: &str = "OBSKIT_ADMIN_ADDR";
    /// The commit in `build_info{commit}`.
    pub const OBSKIT_COMMIT: &str = "OBSKIT_COMMIT";
    /// `off` turns recording off for the process.
    pub const OBSKIT_INSTRUMENTATION: &str = "OBSKIT_INSTRUMENTATION";
    /// The log filter's `EnvFilter` directives at start.
    pub const RUST_LOG: &str = "RUST_LOG";
    /// `json`, `text` or `auto`.
    pub const OBSKIT_LOG_FORMAT: &str = "OBSKIT_LOG_FORMAT";
    /// Records one callsite may emit a second.
    pub const OBSKIT_LOG_RATE_LIMIT: &str = "OBSKIT_LOG_RATE_LIMIT";
    /// Bytes of records that may wait for stdout.
    pub const OBSKIT_LOG_QUEUE_BYTES: &str = "OBSKIT_LOG_QUEUE_BYTES";
    /// `tracing` span targets that become obskit spans.
    pub const OBSKIT_TRACING_SPANS: &str = "OBSKIT_TRACING_SPANS";
    /// Distinct label sets per metric in the global registry.
    pub const OBSKIT_LABEL_LIMIT: &str = "OBSKIT_LABEL_LIMIT";
    /// The heap profiler's mean bytes between samples; `0` stops sampling.
    pub const OBSKIT_HEAP_PROFILE_INTERVAL_BYTES: &str = "OBSKIT_HEAP_PROFILE_INTERVAL_BYTES";
}

/// Every environment variable obskit reads: the constants of [`env`].
pub const ENV_VARS: &[&str] = &[
    env::OTEL_SERVICE_NAME,
    env::OTEL_RESOURCE_ATTRIBUTES,
    env::OTEL_EXPORTER_OTLP_ENDPOINT,
    env::OTEL_EXPORTER_OTLP_PROTOCOL,
    env::OTEL_EXPORTER_OTLP_TIMEOUT,
    env::OTEL_EXPORTER_OTLP_TRACES_ENDPOINT,
    env::OTEL_EXPORTER_OTLP_TRACES_PROTOCOL,
    env::OTEL_EXPORTER_OTLP_TRACES_TIMEOUT,
    env::OTEL_BSP_MAX_QUEUE_SIZE,
    env::OTEL_BSP_MAX_EXPORT_BATCH_SIZE,
    env::OTEL_BSP_SCHEDULE_DELAY,
    env::OTEL_BSP_EXPORT_TIMEOUT,
    env::OBSKIT_EXPORT_QUEUE_BYTES,
    env::OTEL_LOGS_EXPORTER,
    env::OTEL_EXPORTER_OTLP_LOGS_ENDPOINT,
    env::OTEL_EXPORTER_OTLP_LOGS_PROTOCOL,
    env::OTEL_EXPORTER_OTLP_LOGS_TIMEOUT,
    env::OTEL_BLRP_MAX_QUEUE_SIZE,
    env::OTEL_BLRP_MAX_EXPORT_BATCH_SIZE,
    env::OTEL_BLRP_SCHEDULE_DELAY,
    env::OTEL_BLRP_EXPORT_TIMEOUT,
    env::OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT,
    env::OTEL_ATTRIBUTE_COUNT_LIMIT,
    env::OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT,
    env::OTEL_SPAN_EVENT_COUNT_LIMIT,
    env::OTEL_SPAN_LINK_COUNT_LIMIT,
    env::OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT,
    env::OTEL_TRACES_SAMPLER,
    env::OTEL_TRACES_SAMPLER_ARG,
    env::OBSKIT_ADMIN_TOKEN,
    env::OBSKIT_ADMIN_ALLOWED_HOSTS,
    env::OBSKIT_ADMIN_ADDR,
    env::OBSKIT_COMMIT,
    env::OBSKIT_INSTRUMENTATION,
    env::RUST_LOG,
    env::OBSKIT_LOG_FORMAT,
    env::OBSKIT_LOG_RATE_LIMIT,
    env::OBSKIT_LOG_QUEUE_BYTES,
    env::OBSKIT_TRACING_SPANS,
    env::OBSKIT_LABEL_LIMIT,
    env::OBSKIT_HEAP_PROFILE_INTERVAL_BYTES,
];

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    const README: &str = include_str!("../../README.md");
    /// This file, to check that the lists name every constant declared.
    const SOURCE: &str = include_str!("names.rs");

    /// The rows of the first table under the `## {heading}` section, header and separator
    /// left out, each split into its cells.
    fn table_rows(markdown: &str, heading: &str) -> Vec<Vec<String>> {
        let start = format!("## {heading}");
        let mut lines = markdown.lines().skip_while(|line| line.trim_end() != start);
        assert!(lines.next().is_some(), "README.md has no `{start}` section");
        let rows: Vec<Vec<String>> = lines
            .take_while(|line| !line.starts_with("## "))
            .skip_while(|line| !line.starts_with('|'))
            .take_while(|line| line.starts_with('|'))
            .map(|line| {
                let inner = line.trim().trim_start_matches('|').trim_end_matches('|');
                inner.split('|').map(|cell| cell.trim().to_string()).collect()
            })
            .collect();
        assert!(rows.len() > 2, "no table under `{start}`");
        rows.into_iter().skip(2).collect()
    }

    /// The backticked tokens of a cell; with `top_level_only`, only those outside parentheses.
    fn backticked(cell: &str, top_level_only: bool) -> Vec<String> {
        let (mut tokens, mut depth, mut current) = (Vec::new(), 0usize, None::<String>);
        for c in cell.chars() {
            match (&mut current, c) {
                (Some(token), '`') => {
                    if !top_level_only || depth == 0 {
                        tokens.push(std::mem::take(token));
                    }
                    current = None;
                }
                (Some(token), c) => token.push(c),
                (None, '`') => current = Some(String::new()),
                (None, '(') => depth += 1,
                (None, ')') => depth = depth.saturating_sub(1),
                (None, _) => {}
            }
        }
        tokens
    }

    /// What differs between two sets, both ways, or `None`.
    fn difference(a_name: &str, a: &BTreeSet<&str>, b_name: &str, b: &BTreeSet<&str>) -> Option<String> {
        let only_a: Vec<_> = a.difference(b).collect();
        let only_b: Vec<_> = b.difference(a).collect();
        (!only_a.is_empty() || !only_b.is_empty()).then(|| {
            format!("in {a_name} but not {b_name}: {only_a:?}; in {b_name} but not {a_name}: {only_b:?}")
        })
    }

    /// Every way the README's metrics table differs from [`METRICS`].
    fn metrics_table_problems(readme: &str) -> Vec<String> {
        let mut problems = Vec::new();
        let mut listed = BTreeMap::new();
        for row in table_rows(readme, "Metrics obskit exports") {
            let [names, kind, labels] = row.as_slice() else {
                problems.push(format!("a row that is not `| metric | type | labels |`: {row:?}"));
                continue;
            };
            for name in backticked(names, false) {
                listed.insert(name, (kind.clone(), backticked(labels, true)));
            }
        }
        let readme_names: BTreeSet<&str> = listed.keys().map(String::as_str).collect();
        let code_names: BTreeSet<&str> = METRICS.iter().map(|m| m.name).collect();
        if let Some(diff) = difference(
            "the README's metrics table",
            &readme_names,
            "names::METRICS",
            &code_names,
        ) {
            problems.push(format!("metric names differ: {diff}"));
        }
        for metric in METRICS {
            let Some((kind, labels)) = listed.get(metric.name) else {
                continue;
            };
            if !kind.starts_with(metric.kind.as_str()) {
                problems.push(format!(
                    "`{}`: the README's type `{kind}` does not start with `{}`",
                    metric.name,
                    metric.kind.as_str()
                ));
            }
            let readme_labels: BTreeSet<&str> = labels.iter().map(String::as_str).collect();
            let code_labels: BTreeSet<&str> = metric.labels.iter().copied().collect();
            if let Some(diff) = difference("the README", &readme_labels, "names", &code_labels) {
                problems.push(format!("`{}`: labels differ: {diff}", metric.name));
            }
        }
        problems
    }

    /// How the README's configuration table differs from [`ENV_VARS`], if it does.
    fn configuration_table_problem(readme: &str) -> Option<String> {
        let listed: BTreeSet<String> = table_rows(readme, "Configuration")
            .iter()
            .flat_map(|row| backticked(&row[0], false))
            .collect();
        let readme_vars: BTreeSet<&str> = listed.iter().map(String::as_str).collect();
        let code_vars: BTreeSet<&str> = ENV_VARS.iter().copied().collect();
        difference(
            "the README's configuration table",
            &readme_vars,
            "names::ENV_VARS",
            &code_vars,
        )
        .map(|diff| format!("environment variables differ: {diff}"))
    }

    #[test]
    fn the_readme_metrics_table_lists_exactly_the_metrics() {
        let problems = metrics_table_problems(README);
        assert!(
            problems.is_empty(),
            "README.md, `## Metrics obskit exports`:\n{}",
            problems.join("\n")
        );
    }

    #[test]
    fn the_readme_configuration_table_lists_exactly_the_variables() {
        if let Some(problem) = configuration_table_problem(README) {
            panic!("README.md, `## Configuration`: {problem}");
        }
    }

    #[test]
    fn the_checks_catch_a_drifted_readme() {
        // A metric gone, one added, a wrong type, a label missing and one too many.
        let drifted = README
            .replace("| `obskit_profile_store_bytes` | gauge | |\n", "")
            .replace(
                "| `obskit_spans_exported_total` | counter | |",
                "| `obskit_spans_sent_total` | counter | |",
            )
            .replace(
                "| `function_calls_concurrent` | gauge |",
                "| `function_calls_concurrent` | counter |",
            )
            .replace(
                "`service_name`, `version`, `commit`",
                "`service_name`, `version`, `sha`",
            );
        let problems = metrics_table_problems(&drifted).join("\n");
        for expected in [
            r#"in the README's metrics table but not names::METRICS: ["obskit_spans_sent_total"]"#,
            r#"in names::METRICS but not the README's metrics table: ["obskit_profile_store_bytes", "obskit_spans_exported_total"]"#,
            "`function_calls_concurrent`: the README's type `counter` does not start with `gauge`",
            r#"`build_info`: labels differ: in the README but not names: ["sha"]; in names but not the README: ["commit"]"#,
        ] {
            assert!(
                problems.contains(expected),
                "expected {expected:?} in:\n{problems}"
            );
        }
        let drifted = README.replace("| `OBSKIT_COMMIT` |", "| `OBSKIT_SHA` |");
        let problem = configuration_table_problem(&drifted).expect("a difference");
        assert!(
            problem.contains(r#"but not names::ENV_VARS: ["OBSKIT_SHA"]"#),
            "{problem}"
        );
        assert!(problem.contains(r#"table: ["OBSKIT_COMMIT"]"#), "{problem}");
    }

    #[test]
    fn backticked_tokens_in_parentheses_are_not_labels() {
        let cell = "`method` (standard nine, else `other`), `endpoint`; see [objectives](#a-b) `x`";
        assert_eq!(backticked(cell, true), ["method", "endpoint", "x"]);
        assert_eq!(backticked(cell, false), ["method", "other", "endpoint", "x"]);
    }

    #[test]
    fn metric_names_are_unique_and_labels_declared() {
        let mut seen = BTreeSet::new();
        for metric in METRICS.iter().chain([&CASSANDRA_QUERY_DURATION_SECONDS]) {
            assert!(seen.insert(metric.name), "`{}` is declared twice", metric.name);
            let mut labels = BTreeSet::new();
            for label in metric.labels {
                assert!(
                    label::ALL.contains(label),
                    "`{}`: label `{label}` is not in names::label",
                    metric.name
                );
                assert!(
                    labels.insert(label),
                    "`{}`: label `{label}` listed twice",
                    metric.name
                );
            }
            assert!(!metric.help.is_empty(), "`{}` has no help", metric.name);
        }
        let mut vars = BTreeSet::new();
        for var in ENV_VARS {
            assert!(vars.insert(var), "`{var}` is listed twice in ENV_VARS");
        }
    }

    /// The string values of the `pub const NAME: &str = "value";` lines of `pub mod {module}`.
    fn declared_in(module: &str) -> BTreeSet<&'static str> {
        let start = format!("pub mod {module} {{");
        SOURCE
            .lines()
            .skip_while(|line| line.trim() != start)
            .take_while(|line| *line != "}")
            .filter_map(|line| {
                line.trim()
                    .strip_prefix("pub const ")?
                    .split_once(": &str = \"")?
                    .1
                    .strip_suffix("\";")
            })
            .collect()
    }

    #[test]
    fn the_lists_name_every_constant() {
        let labels = declared_in("label");
        let listed: BTreeSet<&str> = label::ALL.iter().copied().collect();
        assert!(labels.len() > 10, "{labels:?}");
        assert_eq!(labels, listed, "label::ALL must list every label constant");
        let vars = declared_in("env");
        let listed: BTreeSet<&str> = ENV_VARS.iter().copied().collect();
        assert!(vars.len() > 10, "{vars:?}");
        assert_eq!(vars, listed, "ENV_VARS must list every env constant");
        for var in &vars {
            assert!(
                SOURCE.contains(&format!("pub const {var}: &str = \"{var}\";")),
                "{var}: named as its variable"
            );
        }
    }
}
