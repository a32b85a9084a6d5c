//! The `http_request/*` services: one handler answering "hello", bare or behind obskit's RED
//! layer or a peer's, and the one-request driver both harnesses call.
//!
//! Every layered variant matches the request's path against the same three route templates, so
//! each records its metrics under a route label, not the raw path.

use std::convert::Infallible;
use std::fmt::Debug;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body::Body;
use http_body_util::{BodyExt, Full};
use tower::{Layer, Service, ServiceExt};

/// The route templates every layered variant knows; requests go to the second.
pub const ROUTES: [&str; 3] = ["/api/products", "/api/products/{id}", "/api/categories"];
/// The path every `http_request/*` iteration requests.
pub const REQUEST_PATH: &str = "/api/products/42";

/// Request body type of every variant.
pub type RequestBody = Full<Bytes>;

async fn hello<B>(_request: http::Request<B>) -> Result<http::Response<Full<Bytes>>, Infallible> {
    Ok(http::Response::new(Full::new(Bytes::from_static(b"hello"))))
}

/// One request: built, served in-process on `runtime`, its body collected.
pub fn serve_one<S, B>(runtime: &tokio::runtime::Runtime, service: &S)
where
    S: Service<http::Request<RequestBody>, Response = http::Response<B>> + Clone,
    S::Error: Debug,
    B: Body,
    B::Error: Debug,
{
    runtime.block_on(async {
        let request = http::Request::get(REQUEST_PATH)
            .body(Full::new(Bytes::from_static(b"")))
            .expect("request");
        let response = service.clone().oneshot(request).await.unwrap();
        black_box(response.into_body().collect().await.unwrap());
    })
}

/// The runtime requests are served on: one thread, as in a criterion iteration.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("runtime")
}

pub fn bare(
) -> impl Service<http::Request<RequestBody>, Response = http::Response<Full<Bytes>>, Error = Infallible> + Clone
{
    tower::service_fn(hello::<RequestBody>)
}

/// The handler behind obskit's RED layer: as configured by default (`None`), or with the
/// `MatchedRoute` extension insert set on or off.
pub fn obskit_red_layer(
    insert_matched_route: Option<bool>,
) -> impl Service<
    http::Request<RequestBody>,
    Response = http::Response<impl Body<Error = impl Debug>>,
    Error = impl Debug,
> + Clone {
    let registry = obskit::metrics::Registry::new();
    let metrics = obskit::http::HttpMetrics::new(&registry).expect("metrics");
    let routes = obskit::http::Routes::new(ROUTES).expect("routes");
    let layer = obskit::http::HttpMetricsLayer::new(metrics).routes(routes);
    let layer = match insert_matched_route {
        Some(insert) => layer.insert_matched_route(insert),
        None => layer,
    };
    layer.layer(tower::service_fn(hello::<obskit::http::RequestBody<RequestBody>>))
}

fn route_router() -> Arc<matchit::Router<&'static str>> {
    let mut router = matchit::Router::new();
    for route in ROUTES {
        router.insert(route, route).expect("route template");
    }
    Arc::new(router)
}

fn method_label(method: &http::Method) -> &'static str {
    match *method {
        http::Method::GET => "GET",
        http::Method::POST => "POST",
        http::Method::PUT => "PUT",
        http::Method::DELETE => "DELETE",
        http::Method::PATCH => "PATCH",
        http::Method::HEAD => "HEAD",
        _ => "_OTHER",
    }
}

/// Installs the `metrics` crate's Prometheus recorder process-wide, with histograms (not its
/// default summaries), so the peer records what obskit's RED layer records.
pub fn install_metrics_prometheus_recorder() -> metrics_exporter_prometheus::PrometheusHandle {
    let recorder = metrics_exporter_prometheus::PrometheusBuilder::new()
        .set_buckets(&[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0])
        .expect("buckets")
        .build_recorder();
    let handle = recorder.handle();
    metrics::set_global_recorder(recorder).expect("first metrics recorder");
    handle
}

/// tower-http's `TraceLayer` as the request hooks of a `metrics`-crate RED layer (the common
/// pairing where axum-prometheus is not used): its span and log events are off (`Span::none`, `()` hooks), `on_request` counts
/// the request by method and matched route, `on_response` records the duration by status.
/// (`on_response` sees only the response, so the route cannot label the histogram without a
/// layer of one's own.) Needs [`install_metrics_prometheus_recorder`] first.
pub fn tower_http_metrics() -> impl Service<
    http::Request<RequestBody>,
    Response = http::Response<impl Body<Error = impl Debug>>,
    Error = impl Debug,
> + Clone {
    let router = route_router();
    tower_http::trace::TraceLayer::new_for_http()
        .make_span_with(|_: &http::Request<RequestBody>| tracing::Span::none())
        // No log events either: the layer is only the metrics' hooks.
        .on_body_chunk(())
        .on_eos(())
        .on_failure(())
        .on_request(move |request: &http::Request<RequestBody>, _: &tracing::Span| {
            let route = router
                .at(request.uri().path())
                .map(|m| *m.value)
                .unwrap_or("_unmatched");
            metrics::counter!(
                "http_server_requests_total",
                "method" => method_label(request.method()),
                "route" => route
            )
            .increment(1);
        })
        .on_response(
            |response: &http::Response<Full<Bytes>>, latency: Duration, _: &tracing::Span| {
                metrics::histogram!(
                    "http_server_request_duration_seconds",
                    "status" => response.status().as_str().to_owned()
                )
                .record(latency.as_secs_f64());
            },
        )
        .layer(tower::service_fn(hello::<RequestBody>))
}

/// Installs an SDK meter provider process-wide (a manual reader: collected only when read, as
/// a Prometheus scrape would), for OpenTelemetry's tower instrumentation.
pub fn install_opentelemetry_meter_provider() {
    let provider = opentelemetry_sdk::metrics::SdkMeterProvider::builder()
        .with_reader(opentelemetry_sdk::metrics::ManualReader::builder().build())
        .build();
    opentelemetry::global::set_meter_provider(provider);
}

/// OpenTelemetry's tower instrumentation (opentelemetry-instrumentation-tower), metrics only
/// (its spans off, as obskit's RED layer records no span), `http.route` from the same
/// templates. Needs [`install_opentelemetry_meter_provider`] first.
pub fn opentelemetry_tower_metrics() -> impl Service<
    http::Request<RequestBody>,
    Response = http::Response<impl Body<Error = impl Debug>>,
    Error = impl Debug,
> + Clone {
    let router = route_router();
    opentelemetry_instrumentation_tower::http::server::LayerBuilder::builder()
        .with_tracing(false)
        .with_route_extractor_fn(move |request: &http::Request<RequestBody>| {
            router
                .at(request.uri().path())
                .ok()
                .map(|m| (*m.value).to_string())
        })
        .build()
        .expect("OpenTelemetry tower layer")
        .layer(tower::service_fn(hello::<RequestBody>))
}
