//! Cost of one `/metrics` scrape: the registry rendered as Prometheus text (and as OpenMetrics
//! text, what Prometheus asks for with exemplars on) with 10 000 series.
//!
//! "Series" counts what Prometheus stores as one: every sample line, so a histogram child is its
//! buckets, `+Inf`, `_sum` and `_count`. The mix: 200 `#[instrumented]` function sites (19 series
//! each), 100 HTTP (method, endpoint) pairs through the RED layer with one status each (45
//! each), and 1 700 children of a user `counter_vec`: 3 800 + 4 500 + 1 700 = 10 000.
//!
//! `cargo bench -p obskit-benches --bench scrape`; figures and method in BENCHMARKS.md.

use std::convert::Infallible;
use std::hint::black_box;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion};
use http_body_util::{BodyExt, Full};
use obskit::__private::FunctionSite;
use tower::{Layer, ServiceExt};

const FUNCTION_SITES: usize = 200;
const HTTP_PAIRS: usize = 100;
const USER_SERIES: usize = 1_700;

async fn hello<B>(_request: http::Request<B>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// A registry holding the bench's 10 000 series, each with a recorded value.
fn populated_registry() -> obskit::metrics::Registry {
    // Above the default label limit, so that no child folds into the overflow series.
    let registry = obskit::metrics::Registry::with_label_limit(10_000);

    for i in 0..FUNCTION_SITES {
        // Sites are `static`s in real code; leaked here to make many.
        let name: &'static str = Box::leak(format!("bench_fn_{i}").into_boxed_str());
        let site: &'static FunctionSite = Box::leak(Box::new(FunctionSite::new(name, "scrape_bench")));
        site.start().finish(true);
    }

    let metrics = obskit::http::HttpMetrics::new(&registry).expect("metrics");
    let templates: Vec<String> = (0..HTTP_PAIRS)
        .map(|i| format!("/api/resource{i}/{{id}}"))
        .collect();
    let routes = obskit::http::Routes::new(templates.iter().map(String::as_str)).expect("routes");
    let service = obskit::http::HttpMetricsLayer::new(metrics)
        .routes(routes)
        .layer(tower::service_fn(hello::<obskit::http::RequestBody<Full<Bytes>>>));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        for i in 0..HTTP_PAIRS {
            let request = http::Request::get(format!("/api/resource{i}/7"))
                .body(Full::new(Bytes::from_static(b"")))
                .expect("request");
            let response = service.clone().oneshot(request).await.expect("response");
            response.into_body().collect().await.expect("body");
        }
    });

    let views = registry
        .counter_vec("bench_views_total", "Views by page", &["page"])
        .expect("counter_vec");
    for i in 0..USER_SERIES {
        views.with(&[&format!("page{i}")]).inc();
    }
    registry
}

/// Series in a text exposition: sample lines, not comments.
fn series(text: &str) -> usize {
    text.lines()
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .count()
}

fn scrape(c: &mut Criterion) {
    let registry = populated_registry();
    let text = registry.encode_text();
    // Other series of the process (the overflow counters, the global registry's) come on top.
    let count = series(&text);
    assert!(count >= 10_000, "only {count} series");
    eprintln!("scrape bench: {count} series, {} bytes of text", text.len());

    let mut group = c.benchmark_group("scrape");
    group.bench_function("text_10k_series", |b| {
        b.iter(|| black_box(registry.encode_text()))
    });
    group.bench_function("openmetrics_10k_series", |b| {
        b.iter(|| black_box(registry.encode_openmetrics()))
    });
    group.finish();
}

criterion_group!(benches, scrape);
criterion_main!(benches);
