//! Cost per call of `#[instrumented]` against its peers, and of the RED layer per request
//! against a bare service, measured side by side in one run.
//!
//! `cargo bench -p obskit-benches --bench overhead`; figures and method in BENCHMARKS.md.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::measurement::WallTime;
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion};
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};

// The function under test in every variant: two black-boxed u64s added.
#[inline(never)]
fn bare(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

#[obskit::instrumented]
#[inline(never)]
fn obskit_instrumented(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

#[obskit::instrumented]
#[inline(never)]
fn obskit_instrumented_result(a: u64, b: u64) -> Result<u64, &'static str> {
    black_box(a).checked_add(black_box(b)).ok_or("overflow")
}

#[tracing::instrument]
#[inline(never)]
fn tracing_instrumented(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

#[autometrics::autometrics]
#[inline(never)]
fn autometrics_instrumented(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

fn function_calls(c: &mut Criterion) {
    let mut group = c.benchmark_group("fn_call");
    group.bench_function("bare", |b| b.iter(|| bare(black_box(1), black_box(2))));
    group.bench_function("obskit_instrumented", |b| {
        b.iter(|| obskit_instrumented(black_box(1), black_box(2)))
    });
    group.bench_function("obskit_instrumented_result", |b| {
        b.iter(|| obskit_instrumented_result(black_box(1), black_box(2)))
    });
    group.bench_function("tracing_instrument_no_subscriber", |b| {
        b.iter(|| tracing_instrumented(black_box(1), black_box(2)))
    });
    group.bench_function("autometrics", |b| {
        b.iter(|| autometrics_instrumented(black_box(1), black_box(2)))
    });
    // Last, because a global subscriber cannot be removed again: a `Registry` with no layers,
    // the cheapest subscriber that records spans. (A scoped `with_default` dispatcher measured
    // erratically, 90 ns to 2 us, as callsite interest was re-evaluated.)
    tracing::subscriber::set_global_default(tracing_subscriber::registry()).expect("first subscriber");
    group.bench_function("tracing_instrument_registry", |b| {
        b.iter(|| tracing_instrumented(black_box(1), black_box(2)))
    });
    group.finish();
}

async fn hello<B>(_request: http::Request<B>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
}

fn middleware(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    let registry = obskit::metrics::Registry::new();
    let metrics = obskit::http::HttpMetrics::new(&registry).expect("metrics");
    let routes = obskit::http::Routes::new(["/api/products", "/api/products/{id}", "/api/categories"])
        .expect("routes");
    let layer = obskit::http::HttpMetricsLayer::new(metrics).routes(routes);

    let bare_service = tower::service_fn(hello::<Full<Bytes>>);
    let layered_service = layer
        .clone()
        .layer(tower::service_fn(hello::<obskit::http::RequestBody<Full<Bytes>>>));
    let layered_no_match = layer
        .clone()
        .insert_matched_route(false)
        .layer(tower::service_fn(hello::<obskit::http::RequestBody<Full<Bytes>>>));
    let layered_extension = layer
        .insert_matched_route(true)
        .layer(tower::service_fn(hello::<obskit::http::RequestBody<Full<Bytes>>>));

    let mut group = c.benchmark_group("http_request");
    bench_service(&mut group, &runtime, "bare_service", bare_service, false);
    bench_service(
        &mut group,
        &runtime,
        "with_red_layer",
        layered_service.clone(),
        false,
    );
    bench_service(
        &mut group,
        &runtime,
        "with_red_layer_no_matched_route_extension",
        layered_no_match,
        false,
    );
    // The match also inserted as a request extension (off by default: it is in the body).
    bench_service(
        &mut group,
        &runtime,
        "with_red_layer_matched_route_extension",
        layered_extension,
        false,
    );
    // As served by a server that puts something in the extensions first (obskit's own server
    // does: its body timeout, which the layer takes out again); the bare service pays for the
    // same first extension.
    bench_service(
        &mut group,
        &runtime,
        "bare_service_served_extensions",
        bare_service,
        true,
    );
    bench_service(
        &mut group,
        &runtime,
        "with_red_layer_served_extensions",
        layered_service,
        true,
    );
    group.finish();
}

/// What a server may have put into a request's extensions before the service sees it.
#[derive(Clone)]
struct ServerExtension;

/// One request per iteration: built, served in-process, its body collected.
fn bench_service<S, B>(
    group: &mut BenchmarkGroup<'_, WallTime>,
    runtime: &tokio::runtime::Runtime,
    name: &str,
    service: S,
    served_extensions: bool,
) where
    S: Service<http::Request<Full<Bytes>>, Response = http::Response<B>> + Clone,
    S::Error: std::fmt::Debug,
    B: Body,
    B::Error: std::fmt::Debug,
{
    group.bench_function(name, |b| {
        b.iter(|| {
            runtime.block_on(async {
                let mut request = http::Request::get("/api/products/42")
                    .body(Full::new(Bytes::from_static(b"")))
                    .expect("request");
                if served_extensions {
                    request.extensions_mut().insert(ServerExtension);
                }
                let response = service.clone().oneshot(request).await.unwrap();
                black_box(response.into_body().collect().await.unwrap());
            })
        })
    });
}

/// The peer RED layers of issue 13 (bodies shared with the instruction counter,
/// obskit_benches::http_services): tower-http's trace layer recording into the `metrics` crate's
/// Prometheus recorder, and OpenTelemetry's tower instrumentation (metrics only) into an SDK
/// meter provider.
fn peer_middleware(c: &mut Criterion) {
    use obskit_benches::http_services;
    let runtime = http_services::runtime();
    let _handle = http_services::install_metrics_prometheus_recorder();
    http_services::install_opentelemetry_meter_provider();
    let mut group = c.benchmark_group("http_request");
    let tower_http = http_services::tower_http_metrics();
    group.bench_function("tower_http_trace_metrics", |b| {
        b.iter(|| http_services::serve_one(&runtime, &tower_http))
    });
    let opentelemetry_tower = http_services::opentelemetry_tower_metrics();
    group.bench_function("opentelemetry_tower_metrics", |b| {
        b.iter(|| http_services::serve_one(&runtime, &opentelemetry_tower))
    });
    group.finish();
}

criterion_group!(benches, function_calls, middleware, peer_middleware);
criterion_main!(benches);
