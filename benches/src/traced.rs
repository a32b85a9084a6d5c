//! The `traced_call/*` functions and the tracers behind them. Every tracer exports over
//! OTLP/HTTP (protobuf) to the same accepting receiver, batched off the calling thread, so each
//! variant pays for its real export path.

use std::borrow::Cow;
use std::hint::black_box;
use std::sync::Arc;

use obskit::trace::{self, ExportCounters, OtlpConfig, OtlpProtocol, OtlpSink, Sampler};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler as OtelSampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

#[obskit::instrumented]
#[inline(never)]
pub fn obskit_traced(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

#[tracing::instrument]
#[inline(never)]
pub fn tracing_traced(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

/// fastrace's equivalent of the two functions above: a root span (a new trace, as an
/// instrumented call without a parent is) carrying the two arguments as properties.
/// (`#[fastrace::trace]` alone records nothing without a local parent, so the root is explicit.)
#[inline(never)]
pub fn fastrace_traced(a: u64, b: u64) -> u64 {
    let root = fastrace::Span::root("fastrace_traced", fastrace::prelude::SpanContext::random())
        .with_properties(|| [("a", a.to_string()), ("b", b.to_string())]);
    let _guard = root.set_local_parent();
    black_box(a) + black_box(b)
}

/// The OTLP/HTTP span exporter every peer tracer uses.
fn otlp_exporter(endpoint: &str) -> opentelemetry_otlp::SpanExporter {
    opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .expect("OTLP/HTTP exporter")
}

/// Installs obskit's OTLP sink process-wide; the caller installs the sampler.
pub fn install_obskit_sink(endpoint: &str) -> Arc<OtlpSink> {
    let registry = obskit::metrics::Registry::new();
    let config = OtlpConfig::new(endpoint.to_string(), OtlpProtocol::HttpProtobuf);
    let resource = vec![("service.name".to_string(), "bench".to_string())];
    let sink = Arc::new(
        OtlpSink::start(
            &config,
            resource,
            ExportCounters::new(&registry).expect("counters"),
        )
        .expect("OTLP sink"),
    );
    trace::set_sink(sink.clone());
    sink
}

/// obskit's own subscriber (`obskit::log`), writing its records nowhere: with `bridged`, every
/// `tracing` span becomes an obskit span (`OBSKIT_TRACING_SPANS=trace`); without, none does.
pub fn obskit_log_subscriber(bridged: bool) -> obskit::log::LogSubscriber {
    let settings = obskit::log::LogSettings {
        span_targets: bridged.then(|| "trace".to_string()),
        ..obskit::log::LogSettings::default()
    };
    obskit::log::Logs::to_writer(
        &settings,
        "bench",
        &obskit::metrics::Registry::new(),
        Box::new(std::io::sink()),
    )
    .expect("logs")
    .subscriber()
}

/// Installs obskit's sampler: every span, or none.
pub fn install_obskit_sampler(sampled: bool) {
    if sampled {
        Sampler::AlwaysOn.install()
    } else {
        Sampler::AlwaysOff.install()
    }
}

/// A span shaped like a request's server span (its kind, its ten attributes' room, eight
/// attributes, three of them strings from the client), ended: what the recent-span buffer
/// behind `/debug/traces` receives for each sampled request.
#[inline(never)]
pub fn obskit_server_like_span() {
    let mut span = trace::span("GET /api/products")
        .kind(trace::SpanKind::Server)
        .reserve_attributes(10)
        .attr("http.request.method", "GET")
        .attr("http.route", "/api/products")
        .request_attr("url.path", black_box("/api/products"))
        .request_attr("server.address", black_box("127.0.0.1"))
        .attr("server.port", 8080i64)
        .request_attr("user_agent.original", black_box("shop_load/1"))
        .attr("network.protocol.version", "1.1")
        .start();
    span.set_attr("http.response.status_code", 200i64);
}

/// Installs a recent-span buffer of the default capacity as the only sink (the shop's spans
/// when no exporter is configured), already full, so that each span it keeps lets the oldest
/// go, as in a service that has run for a while.
pub fn install_full_recent_spans() -> trace::RecentSpans {
    let recent = trace::RecentSpans::new(trace::DEFAULT_CAPACITY);
    trace::set_sink(Arc::new(recent.clone()));
    install_obskit_sampler(true);
    for _ in 0..trace::DEFAULT_CAPACITY + 64 {
        obskit_server_like_span();
        if recent.len() == trace::DEFAULT_CAPACITY {
            break;
        }
    }
    trace::flush();
    recent
}

/// A tracing-opentelemetry provider with the batch exporter; keep it to shut it down.
pub fn tracing_opentelemetry_provider(endpoint: &str, sampled: bool) -> SdkTracerProvider {
    let sampler = if sampled {
        OtelSampler::AlwaysOn
    } else {
        OtelSampler::AlwaysOff
    };
    SdkTracerProvider::builder()
        .with_batch_exporter(otlp_exporter(endpoint))
        .with_sampler(sampler)
        .build()
}

/// The subscriber `tracing_traced` is measured under: a registry with the OpenTelemetry layer.
pub fn tracing_opentelemetry_subscriber(
    provider: &SdkTracerProvider,
) -> impl tracing::Subscriber + Send + Sync {
    tracing_subscriber::registry().with(tracing_opentelemetry::layer().with_tracer(provider.tracer("bench")))
}

/// Installs fastrace's global reporter: fastrace-opentelemetry over the same OTLP exporter.
/// fastrace collects finished spans on its own thread and reports them in batches.
pub fn install_fastrace_reporter(endpoint: &str) {
    let reporter = fastrace_opentelemetry::OpenTelemetryReporter::new(
        otlp_exporter(endpoint),
        Cow::Owned(
            opentelemetry_sdk::Resource::builder()
                .with_service_name("bench")
                .build(),
        ),
        opentelemetry::InstrumentationScope::builder("bench").build(),
    );
    fastrace::set_reporter(reporter, fastrace::collector::Config::default());
}
