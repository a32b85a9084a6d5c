//! `#[instrumented]` with tracing on, sampled and unsampled, against `#[tracing::instrument]`
//! with `tracing-opentelemetry` doing the same: spans batched and exported over OTLP/HTTP to a
//! local receiver that accepts everything, so both pay for the real export path.
//!
//! `cargo bench -p obskit-benches --bench tracing_on`; figures and method in BENCHMARKS.md.
//! A bench binary of its own: the span sink and the tracing subscriber are process-wide.

use std::hint::black_box;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, Criterion};
use obskit::trace::{self, ExportCounters, OtlpConfig, OtlpProtocol, OtlpSink, Sampler};
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::trace::{Sampler as OtelSampler, SdkTracerProvider};
use tracing_subscriber::layer::SubscriberExt;

#[obskit::instrumented]
#[inline(never)]
fn obskit_traced(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

/// An async call whose future is ready at its first poll: what one poll of a span's future costs.
#[obskit::instrumented]
#[inline(never)]
async fn obskit_traced_async(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

/// Polls a future that is ready at once.
fn poll_ready<F: std::future::Future>(future: F) -> F::Output {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match future.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(output) => output,
        std::task::Poll::Pending => unreachable!("the bench's future is ready at once"),
    }
}

#[tracing::instrument]
#[inline(never)]
fn tracing_traced(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

/// An OTLP/HTTP endpoint that answers 200 to every request (keep-alive, one thread per
/// connection), standing in for a collector so exports succeed without measuring a collector.
fn accepting_receiver() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind receiver");
    let addr = listener.local_addr().expect("receiver address");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || {
                let mut writer = stream.try_clone().expect("clone stream");
                let mut reader = BufReader::new(stream);
                loop {
                    let mut length = 0usize;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        if let Some((name, value)) = line.split_once(':') {
                            if name.eq_ignore_ascii_case("content-length") {
                                length = value.trim().parse().unwrap_or(0);
                            }
                        }
                    }
                    let mut body = vec![0; length];
                    if reader.read_exact(&mut body).is_err() {
                        return;
                    }
                    let response = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if writer.write_all(response.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

fn peer_provider(endpoint: &str, sampler: OtelSampler) -> SdkTracerProvider {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_endpoint(endpoint)
        .build()
        .expect("OTLP/HTTP exporter");
    SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(sampler)
        .build()
}

fn traced_calls(c: &mut Criterion) {
    let endpoint = format!("http://{}/v1/traces", accepting_receiver());
    let mut group = c.benchmark_group("traced_call");

    // The baseline of the two below, same binary and run: no sink, so the span is disabled and
    // only the metrics are recorded.
    trace::clear_sink();
    group.bench_function("obskit_metrics_only", |b| {
        b.iter(|| obskit_traced(black_box(1), black_box(2)))
    });

    let registry = obskit::metrics::Registry::new();
    let config = OtlpConfig::new(endpoint.clone(), OtlpProtocol::HttpProtobuf);
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
    Sampler::AlwaysOn.install();
    group.bench_function("obskit_instrumented_sampled", |b| {
        b.iter(|| obskit_traced(black_box(1), black_box(2)))
    });
    Sampler::AlwaysOff.install();
    group.bench_function("obskit_instrumented_unsampled", |b| {
        b.iter(|| obskit_traced(black_box(1), black_box(2)))
    });
    // One sampled async call, polled once: without a CPU capture, during one, and during one
    // that labels its samples by span (issue 16: each poll goes through the span's slot frames).
    Sampler::AlwaysOn.install();
    group.bench_function("obskit_async_sampled", |b| {
        b.iter(|| poll_ready(obskit_traced_async(black_box(1), black_box(2))))
    });
    for (name, labels) in [
        ("obskit_async_sampled_capturing", false),
        ("obskit_async_sampled_capturing_labelled", true),
    ] {
        let options = obskit::profile::CaptureOptions::new("bench").span_labels(labels);
        let capture = obskit::profile::Capture::start(options).expect("a CPU capture starts");
        group.bench_function(name, |b| {
            b.iter(|| poll_ready(obskit_traced_async(black_box(1), black_box(2))))
        });
        drop(capture);
    }
    // `#[tracing::instrument]` under obskit's own subscriber (issue 14): the span bridged into
    // an obskit span, sampled and exported like the ones above, against tracing-opentelemetry
    // below; and with the bridge off, what a library's span costs when no target enables it.
    Sampler::AlwaysOn.install();
    for (name, bridged) in [
        ("tracing_instrument_obskit_bridge_sampled", true),
        ("tracing_instrument_obskit_bridge_off", false),
    ] {
        let _default =
            tracing::subscriber::set_default(obskit_benches::traced::obskit_log_subscriber(bridged));
        group.bench_function(name, |b| b.iter(|| tracing_traced(black_box(1), black_box(2))));
    }
    trace::clear_sink();
    sink.flush(std::time::Duration::from_secs(5));

    for (name, sampler) in [
        ("tracing_opentelemetry_sampled", OtelSampler::AlwaysOn),
        ("tracing_opentelemetry_unsampled", OtelSampler::AlwaysOff),
    ] {
        let provider = peer_provider(&endpoint, sampler);
        let layer = tracing_opentelemetry::layer().with_tracer(provider.tracer("bench"));
        let subscriber = tracing_subscriber::registry().with(layer);
        let _default = tracing::subscriber::set_default(subscriber);
        group.bench_function(name, |b| b.iter(|| tracing_traced(black_box(1), black_box(2))));
        drop(_default);
        let _ = provider.shutdown();
    }
    group.finish();
}

/// The peer tracer of issue 13: fastrace, a root span with the two arguments as properties,
/// reported through fastrace-opentelemetry over the same OTLP/HTTP exporter (the body shared with
/// the instruction counter, obskit_benches::traced).
fn fastrace_calls(c: &mut Criterion) {
    use obskit_benches::{receiver, traced};
    traced::install_fastrace_reporter(&receiver::traces_endpoint(receiver::accepting_receiver()));
    let mut group = c.benchmark_group("traced_call");
    group.bench_function("fastrace_sampled", |b| {
        b.iter(|| traced::fastrace_traced(black_box(1), black_box(2)))
    });
    group.finish();
    fastrace::flush();
}

criterion_group!(benches, traced_calls, fastrace_calls);
criterion_main!(benches);
