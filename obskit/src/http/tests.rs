//! Unit tests of the layer driven through `tower::ServiceExt::oneshot`.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body::{Body, Frame};
use http_body_util::{BodyExt, Empty, Full};
use tower::{Layer, Service, ServiceExt};

use super::*;
use crate::metrics::Registry;
use crate::trace::{self, AttrValue, SpanKind, SpanStatus};

const ROUTES: [&str; 3] = ["/api/products", "/api/products/{id}", "/files/{*path}"];

fn layer(registry: &Registry) -> HttpMetricsLayer {
    HttpMetricsLayer::new(HttpMetrics::new(registry).unwrap()).routes(Routes::new(ROUTES).unwrap())
}

/// The value of one series in the text exposition, e.g. `http_requests_total{...}`.
fn sample(registry: &Registry, series: &str) -> Option<f64> {
    let text = registry.encode_text();
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

fn series(family: &str, endpoint: &str, method: &str) -> String {
    format!(r#"{family}{{endpoint="{endpoint}",method="{method}"}}"#)
}

fn requests(endpoint: &str, method: &str, status: u16) -> String {
    format!(r#"http_requests_total{{endpoint="{endpoint}",method="{method}",status="{status}"}}"#)
}

fn get(path: &str) -> Request<Full<Bytes>> {
    Request::get(path).body(Full::default()).unwrap()
}

/// A body yielding the given chunks one frame at a time, and only then `None` (it never says
/// `is_end_stream` early, unlike `Full`).
struct Frames(VecDeque<Bytes>);

impl Frames {
    fn new(chunks: &[&'static str]) -> Frames {
        Frames(chunks.iter().map(|c| Bytes::from_static(c.as_bytes())).collect())
    }
}

impl Body for Frames {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        Poll::Ready(self.0.pop_front().map(|chunk| Ok(Frame::data(chunk))))
    }
}

fn ok<B>(body: B) -> Result<Response<B>, Infallible> {
    Ok(Response::new(body))
}

#[tokio::test]
async fn endpoint_is_the_template_unmatched_or_other() {
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(|_req: Request<_>| async {
        ok(Full::new(Bytes::from_static(b"ok")))
    }));
    for path in [
        "/api/products/1",
        "/api/products/2",
        "/files/a/b.txt",
        "/wp-admin/x",
        "/api/products/1/x",
    ] {
        let response = service.clone().oneshot(get(path)).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let purge = Request::builder()
        .method(Method::from_bytes(b"PURGE").unwrap())
        .uri("/api/products")
        .body(Full::default())
        .unwrap();
    let response = service.clone().oneshot(purge).await.unwrap();
    response.into_body().collect().await.unwrap();

    assert_eq!(
        sample(&registry, &requests("/api/products/{id}", "GET", 200)),
        Some(2.0)
    );
    assert_eq!(
        sample(&registry, &requests("/files/{*path}", "GET", 200)),
        Some(1.0)
    );
    assert_eq!(sample(&registry, &requests("unmatched", "GET", 200)), Some(2.0));
    assert_eq!(
        sample(&registry, &requests("/api/products", "other", 200)),
        Some(1.0)
    );
    let text = registry.encode_text();
    assert!(!text.contains("/api/products/1\""), "{text}");
    assert!(!text.contains("PURGE"), "{text}");
}

#[tokio::test]
async fn the_match_reaches_the_inner_service() {
    let registry = Registry::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let service = layer(&registry).layer(tower::service_fn(
        move |req: Request<RequestBody<Full<Bytes>>>| {
            let route = MatchedRoute::of(&req).cloned();
            record.lock().unwrap().push(route.map(|r| {
                let params: Vec<(String, String)> = r.params().map(|(k, v)| (k.into(), v.into())).collect();
                (r.template().to_string(), r.index(), params)
            }));
            async { ok(Empty::<Bytes>::new()) }
        },
    ));
    for path in ["/api/products/42", "/api/products", "/nope"] {
        service.clone().oneshot(get(path)).await.unwrap();
    }
    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0],
        Some((
            "/api/products/{id}".to_string(),
            1,
            vec![("id".to_string(), "42".to_string())]
        ))
    );
    assert_eq!(seen[1], Some(("/api/products".to_string(), 0, vec![])));
    assert_eq!(seen[2], None);
}

#[tokio::test]
async fn the_match_goes_in_the_body_and_into_the_extensions_only_when_asked() {
    for insert in [false, true] {
        let registry = Registry::new();
        let service = layer(&registry)
            .insert_matched_route(insert)
            .layer(tower::service_fn(
                move |req: Request<RequestBody<Full<Bytes>>>| async move {
                    let in_body = req.body().matched_route().map(|m| m.template().to_string());
                    assert_eq!(in_body.as_deref(), Some("/api/products/{id}"));
                    let extension = req.extensions().get::<MatchedRoute>();
                    assert_eq!(extension.is_some(), insert, "an extension only when asked");
                    if let Some(extension) = extension {
                        assert_eq!(extension.param("id"), Some("5"));
                    }
                    assert_eq!(MatchedRoute::of(&req).and_then(|m| m.param("id")), Some("5"));
                    ok(Empty::<Bytes>::new())
                },
            ));
        service.oneshot(get("/api/products/5")).await.unwrap();
        assert_eq!(
            sample(&registry, &requests("/api/products/{id}", "GET", 200)),
            Some(1.0)
        );
    }
}

#[tokio::test]
async fn request_size_is_what_the_handler_read_to_the_end() {
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(
        |req: Request<RequestBody<Frames>>| async move {
            let read = req.into_body().collect().await.unwrap().to_bytes();
            ok(Full::new(read))
        },
    ));
    // The header lies: what was read wins.
    let request = Request::post("/api/products")
        .header("content-length", "1000")
        .body(Frames::new(&["abc", "de", "f"]))
        .unwrap();
    let response = service.oneshot(request).await.unwrap();
    assert_eq!(
        &response.into_body().collect().await.unwrap().to_bytes()[..],
        b"abcdef"
    );
    let sum = series("http_request_size_bytes_sum", "/api/products", "POST");
    let count = series("http_request_size_bytes_count", "/api/products", "POST");
    assert_eq!(sample(&registry, &sum), Some(6.0));
    assert_eq!(sample(&registry, &count), Some(1.0), "recorded once");
}

#[tokio::test]
async fn a_body_already_at_its_end_is_counted_once_as_zero_bytes() {
    let registry = Registry::new();
    let service =
        layer(&registry).layer(tower::service_fn(
            |_req: Request<RequestBody<Full<Bytes>>>| async move {
                ok(Full::new(Bytes::from_static(b"12345678")))
            },
        ));
    for _ in 0..3 {
        let response = service.clone().oneshot(get("/api/products")).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let sum = series("http_request_size_bytes_sum", "/api/products", "GET");
    let count = series("http_request_size_bytes_count", "/api/products", "GET");
    assert_eq!(sample(&registry, &sum), Some(0.0));
    assert_eq!(sample(&registry, &count), Some(3.0), "once per request");
    // The smallest bucket's bound is inclusive: 0 bytes and 8 bytes are both at most 64.
    let small = "http_request_size_bytes_bucket{endpoint=\"/api/products\",method=\"GET\",le=\"64\"}";
    assert_eq!(sample(&registry, small), Some(3.0));
    let response_sum = series("http_response_size_bytes_sum", "/api/products", "GET");
    assert_eq!(sample(&registry, &response_sum), Some(24.0));
}

#[tokio::test]
async fn request_size_falls_back_to_content_length_then_zero() {
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(
        |req: Request<RequestBody<Frames>>| async move {
            // Reads one frame of three, then gives up on the rest.
            let mut body = req.into_body();
            let _first = body.frame().await;
            drop(body);
            ok(Empty::<Bytes>::new())
        },
    ));
    let with_length = Request::put("/api/products/1")
        .header("content-length", "9")
        .body(Frames::new(&["abc", "def", "ghi"]))
        .unwrap();
    service.clone().oneshot(with_length).await.unwrap();
    let sum = series("http_request_size_bytes_sum", "/api/products/{id}", "PUT");
    assert_eq!(sample(&registry, &sum), Some(9.0));

    let without_length = Request::put("/api/products/1")
        .body(Frames::new(&["abc", "def"]))
        .unwrap();
    service.oneshot(without_length).await.unwrap();
    assert_eq!(sample(&registry, &sum), Some(9.0));
    let count = series("http_request_size_bytes_count", "/api/products/{id}", "PUT");
    assert_eq!(sample(&registry, &count), Some(2.0));
}

#[tokio::test]
async fn streamed_response_is_in_flight_until_its_body_ends() {
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(|_req: Request<_>| async {
        ok(Frames::new(&["one ", "two ", "three"]))
    }));
    let response = service.oneshot(get("/files/big.bin")).await.unwrap();
    let in_flight = series("http_requests_in_flight", "/files/{*path}", "GET");
    assert_eq!(sample(&registry, &in_flight), Some(1.0));
    assert_eq!(
        sample(&registry, &requests("/files/{*path}", "GET", 200)),
        None,
        "not counted before the end"
    );

    let mut body = response.into_body();
    body.frame().await.unwrap().unwrap();
    assert_eq!(sample(&registry, &in_flight), Some(1.0));
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"two three");

    assert_eq!(sample(&registry, &in_flight), Some(0.0));
    assert_eq!(
        sample(&registry, &requests("/files/{*path}", "GET", 200)),
        Some(1.0)
    );
    let size = series("http_response_size_bytes_sum", "/files/{*path}", "GET");
    assert_eq!(sample(&registry, &size), Some(13.0));
    let duration = series("http_request_duration_seconds_count", "/files/{*path}", "GET");
    assert_eq!(sample(&registry, &duration), Some(1.0));
}

#[tokio::test]
async fn bodies_dropped_unread_are_recorded_once_with_the_head_status() {
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(
        |req: Request<RequestBody<Full<Bytes>>>| async move {
            let status = if req.method() == Method::DELETE {
                StatusCode::NO_CONTENT
            } else {
                StatusCode::OK
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Frames::new(&["unsent"]))
                    .unwrap(),
            )
        },
    ));
    // What hyper does for HEAD and for a client that goes away: drop the body unpolled.
    let head = Request::head("/api/products").body(Full::default()).unwrap();
    drop(service.clone().oneshot(head).await.unwrap());
    let delete = Request::delete("/api/products/3").body(Full::default()).unwrap();
    drop(service.clone().oneshot(delete).await.unwrap());

    assert_eq!(
        sample(&registry, &requests("/api/products", "HEAD", 200)),
        Some(1.0)
    );
    assert_eq!(
        sample(&registry, &requests("/api/products/{id}", "DELETE", 204)),
        Some(1.0)
    );
    let size = series("http_response_size_bytes_sum", "/api/products", "HEAD");
    assert_eq!(sample(&registry, &size), Some(0.0));
    for (endpoint, method) in [("/api/products", "HEAD"), ("/api/products/{id}", "DELETE")] {
        assert_eq!(
            sample(&registry, &series("http_requests_in_flight", endpoint, method)),
            Some(0.0)
        );
        let count = series("http_request_duration_seconds_count", endpoint, method);
        assert_eq!(sample(&registry, &count), Some(1.0));
    }
}

#[tokio::test]
async fn service_errors_count_as_500_and_pass_through() {
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(|_req: Request<_>| async {
        Err::<Response<Empty<Bytes>>, _>("boom")
    }));
    assert_eq!(service.oneshot(get("/api/products")).await.unwrap_err(), "boom");
    assert_eq!(
        sample(&registry, &requests("/api/products", "GET", 500)),
        Some(1.0)
    );
    let in_flight = series("http_requests_in_flight", "/api/products", "GET");
    assert_eq!(sample(&registry, &in_flight), Some(0.0));
}

#[tokio::test]
async fn a_cancelled_request_leaves_nothing_in_flight() {
    let registry = Registry::new();
    let mut service = layer(&registry).layer(tower::service_fn(|_req: Request<_>| async {
        std::future::pending::<Result<Response<Empty<Bytes>>, Infallible>>().await
    }));
    let in_flight = series("http_requests_in_flight", "/api/products/{id}", "GET");
    let future = service.call(get("/api/products/9"));
    assert_eq!(sample(&registry, &in_flight), Some(1.0));
    // Polled once, then abandoned, as when a client disconnects or a timeout fires.
    let timed_out = tokio::time::timeout(std::time::Duration::from_millis(5), future).await;
    assert!(timed_out.is_err());
    assert_eq!(sample(&registry, &in_flight), Some(0.0));
    assert_eq!(
        sample(&registry, &requests("/api/products/{id}", "GET", 499)),
        Some(1.0)
    );
}

#[tokio::test]
async fn excluded_paths_record_nothing_on_segment_boundaries() {
    let registry = Registry::new();
    let routes = Routes::new(["/health/{probe}", "/metrics"]).unwrap();
    let matched = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&matched);
    let service = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
        .routes(routes)
        .exclude_admin(true)
        .layer(tower::service_fn(
            move |req: Request<RequestBody<Full<Bytes>>>| {
                let template = MatchedRoute::of(&req).map(|m| m.template().to_string());
                record.lock().unwrap().push(template);
                async { ok(Full::new(Bytes::from_static(b"x"))) }
            },
        ));
    for path in [
        "/metrics",
        "/metrics/",
        "/health/ready",
        "/debug/pprof/profile",
        "/profiles/cpu",
    ] {
        let response = service.clone().oneshot(get(path)).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    let text = registry.encode_text();
    assert!(!text.lines().any(|l| l.starts_with("http_")), "{text}");
    // Exclusion is about recording, not routing.
    assert_eq!(matched.lock().unwrap()[2].as_deref(), Some("/health/{probe}"));

    // Only the admin table's paths are excluded: a service's own routes beside them count.
    for path in [
        "/metricsx",
        "/debugger",
        "/api/profiles",
        "/health/deep",
        "/debug-info",
        "/debug/unknown",
    ] {
        let response = service.clone().oneshot(get(path)).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(sample(&registry, &requests("unmatched", "GET", 200)), Some(5.0));
    assert_eq!(
        sample(&registry, &requests("/health/{probe}", "GET", 200)),
        Some(1.0)
    );
}

#[tokio::test]
async fn label_sets_stay_bounded_and_rare_statuses_are_counted() {
    let registry = Registry::new();
    let layer = layer(&registry);
    let metrics = layer.metrics().clone();
    let service = layer.layer(tower::service_fn(
        |req: Request<RequestBody<Full<Bytes>>>| async move {
            let status = if req.uri().query() == Some("teapot") {
                StatusCode::IM_A_TEAPOT
            } else {
                StatusCode::OK
            };
            Ok::<_, Infallible>(
                Response::builder()
                    .status(status)
                    .body(Empty::<Bytes>::new())
                    .unwrap(),
            )
        },
    ));
    for i in 0..500 {
        let mut path = if i % 2 == 0 {
            format!("/api/products/{i}")
        } else {
            format!("/random/{i}/{}", i * 31)
        };
        if i % 20 < 2 {
            path.push_str("?teapot");
        }
        service.clone().oneshot(get(&path)).await.unwrap();
    }
    assert_eq!(metrics.duration.label_sets(), 2);
    assert_eq!(metrics.in_flight.label_sets(), 2);
    // One in ten requests of each endpoint is a teapot: 2 endpoints x 2 statuses.
    assert_eq!(metrics.requests.label_sets(), 4);
    assert_eq!(
        sample(&registry, &requests("/api/products/{id}", "GET", 418)),
        Some(25.0)
    );
    assert_eq!(sample(&registry, &requests("unmatched", "GET", 418)), Some(25.0));
}

// The sink is process-wide: the lock serialises the tests that install one, across awaits.
#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn server_span_covers_the_body_and_records_the_status() {
    let _lock = trace::tests::SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Arc::new(trace::tests::Collect::default());
    trace::set_sink(sink.clone());

    let registry = Registry::new();
    let current_in_handler = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&current_in_handler);
    let service = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
        .routes(Routes::new(["/span-test/{id}"]).unwrap())
        .layer(tower::service_fn(
            move |_req: Request<RequestBody<Full<Bytes>>>| {
                let record = Arc::clone(&record);
                async move {
                    record.lock().unwrap().push(trace::current());
                    Ok::<_, Infallible>(
                        Response::builder()
                            .status(StatusCode::SERVICE_UNAVAILABLE)
                            .body(Frames::new(&["down", "!"]))
                            .unwrap(),
                    )
                }
            },
        ));
    let response = service.clone().oneshot(get("/span-test/5")).await.unwrap();
    let ours = |sink: &trace::tests::Collect| {
        sink.0
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.name.contains("/span-test/"))
            .cloned()
            .collect::<Vec<_>>()
    };
    assert!(
        ours(&sink).is_empty(),
        "the span stays open while the body streams"
    );
    response.into_body().collect().await.unwrap();

    let purge = Request::builder()
        .method(Method::from_bytes(b"PURGE").unwrap())
        .uri("/span-test/6")
        .body(Full::default())
        .unwrap();
    service
        .oneshot(purge)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    trace::clear_sink();

    let spans = ours(&sink);
    assert_eq!(spans.len(), 2);
    let span = &spans[0];
    assert_eq!(span.name, "GET /span-test/{id}");
    assert_eq!(span.kind, SpanKind::Server);
    assert_eq!(current_in_handler.lock().unwrap()[0], Some(span.context));
    assert_eq!(
        span.attribute("http.request.method"),
        Some(&AttrValue::from("GET"))
    );
    assert_eq!(
        span.attribute("http.route"),
        Some(&AttrValue::from("/span-test/{id}"))
    );
    assert_eq!(span.attribute("url.path"), Some(&AttrValue::from("/span-test/5")));
    assert_eq!(
        span.attribute("http.response.status_code"),
        Some(&AttrValue::I64(503))
    );
    assert!(matches!(span.status, SpanStatus::Error(_)), "{:?}", span.status);

    let other = &spans[1];
    assert_eq!(other.name, "HTTP /span-test/{id}");
    assert_eq!(
        other.attribute("http.request.method"),
        Some(&AttrValue::from("_OTHER"))
    );
    assert_eq!(
        other.attribute("http.request.method_original"),
        Some(&AttrValue::from("PURGE"))
    );
    assert_eq!(
        other.attribute("http.response.status_code"),
        Some(&AttrValue::I64(503))
    );
}

#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn no_span_is_made_without_a_sink() {
    let _lock = trace::tests::SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    trace::clear_sink();
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(|_req: Request<_>| async {
        assert_eq!(trace::current(), None);
        ok(Empty::<Bytes>::new())
    }));
    service.oneshot(get("/api/products")).await.unwrap();
}

#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn failed_and_cancelled_requests_end_their_spans() {
    let _lock = trace::tests::SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Arc::new(trace::tests::Collect::default());
    trace::set_sink(sink.clone());
    let registry = Registry::new();
    let service = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
        .routes(Routes::new(["/span-fail", "/span-hang"]).unwrap())
        .layer(tower::service_fn(
            |req: Request<RequestBody<Full<Bytes>>>| async move {
                if req.uri().path() == "/span-fail" {
                    return Err("boom");
                }
                std::future::pending::<Result<Response<Empty<Bytes>>, &str>>().await
            },
        ));
    assert!(service.clone().oneshot(get("/span-fail")).await.is_err());
    let hang = service.oneshot(get("/span-hang"));
    assert!(tokio::time::timeout(std::time::Duration::from_millis(5), hang)
        .await
        .is_err());
    trace::clear_sink();

    let spans = sink.0.lock().unwrap();
    let failed = spans.iter().find(|s| s.name == "GET /span-fail").unwrap();
    assert_eq!(
        failed.attribute("http.response.status_code"),
        Some(&AttrValue::I64(500))
    );
    assert!(matches!(failed.status, SpanStatus::Error(_)));
    let cancelled = spans.iter().find(|s| s.name == "GET /span-hang").unwrap();
    assert_eq!(cancelled.attribute("http.response.status_code"), None);
    assert_eq!(cancelled.events[0].name, "request cancelled before a response");
}

#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn server_span_continues_the_callers_trace() {
    use crate::trace::propagation::{parse_traceparent, RemoteContext};

    let _lock = trace::tests::SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Arc::new(trace::tests::Collect::default());
    trace::set_sink(sink.clone());
    let registry = Registry::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = Arc::clone(&seen);
    let inner = tower::service_fn(move |req: Request<RequestBody<Full<Bytes>>>| {
        record
            .lock()
            .unwrap()
            .push((trace::current(), req.extensions().get::<RemoteContext>().cloned()));
        async { ok(Full::<Bytes>::default()) }
    });
    let plain = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
        .routes(Routes::new(["/propagate"]).unwrap())
        .layer(inner.clone());
    let answering = HttpMetricsLayer::new(HttpMetrics::new(&Registry::new()).unwrap())
        .routes(Routes::new(["/propagate"]).unwrap())
        .response_traceparent(true)
        .layer(inner);
    let with = |traceparent: &str| {
        Request::get("/propagate")
            .header("traceparent", traceparent)
            .header("tracestate", "congo=t61rcWkgMzE")
            .header("baggage", "user.tier=gold")
            .body(Full::default())
            .unwrap()
    };
    let sampled = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let unsampled = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-00";

    let response = plain.clone().oneshot(with(sampled)).await.unwrap();
    assert!(
        !response.headers().contains_key("traceparent"),
        "no response traceparent unless asked for"
    );
    response.into_body().collect().await.unwrap();
    let response = answering.clone().oneshot(with(unsampled)).await.unwrap();
    let returned = parse_traceparent(response.headers()["traceparent"].to_str().unwrap()).unwrap();
    response.into_body().collect().await.unwrap();
    // A malformed traceparent (uppercase hex) starts a new trace and drops the tracestate.
    let response = answering
        .oneshot(with("00-4BF92F3577B34DA6A3CE929D0E0E4736-00F067AA0BA902B7-01"))
        .await
        .unwrap();
    let fresh = parse_traceparent(response.headers()["traceparent"].to_str().unwrap()).unwrap();
    response.into_body().collect().await.unwrap();
    trace::clear_sink();

    let spans: Vec<_> = sink
        .0
        .lock()
        .unwrap()
        .iter()
        .filter(|s| s.name == "GET /propagate")
        .cloned()
        .collect();
    // The unsampled request's span is fast and ok: it does not reach the sink (trace module
    // docs), but its identity still goes back in the response.
    assert_eq!(spans.len(), 2);
    assert_eq!(spans[0].context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736);
    assert_eq!(spans[0].parent_span_id, Some(0x00f067aa0ba902b7));
    assert!(spans[0].context.sampled);
    assert_eq!(returned.trace_id, 0x0af7651916cd43dd8448eb211c80319c);
    assert!(!returned.sampled, "the caller's sampling decision is kept");
    assert_ne!(
        returned.span_id, 0xb7ad6b7169203331,
        "the response names the server span"
    );
    assert_eq!(spans[1].parent_span_id, None);
    assert_eq!(fresh, spans[1].context);
    assert!(fresh.sampled);

    let seen = seen.lock().unwrap();
    assert_eq!(
        seen[0].0,
        Some(spans[0].context),
        "the server span is current in the handler"
    );
    let remote = seen[0]
        .1
        .as_ref()
        .expect("the remote context is a request extension");
    assert_eq!(remote.trace_state.get("congo"), Some("t61rcWkgMzE"));
    assert_eq!(remote.baggage.as_deref(), Some("user.tier=gold"));
    let remote = seen[2].1.as_ref().unwrap();
    assert_eq!(remote.parent, None);
    assert!(remote.trace_state.is_empty());
    assert_eq!(
        remote.baggage.as_deref(),
        Some("user.tier=gold"),
        "baggage passes regardless"
    );
}

#[test]
fn authorities_split_into_address_and_port() {
    use super::service::split_authority;
    assert_eq!(split_authority("shop.example:8080"), ("shop.example", Some(8080)));
    assert_eq!(split_authority("shop.example"), ("shop.example", None));
    assert_eq!(split_authority("[::1]:9000"), ("::1", Some(9000)));
    assert_eq!(split_authority("[::1]"), ("::1", None));
    assert_eq!(split_authority("host:notaport"), ("host:notaport", None));
}

#[allow(clippy::await_holding_lock)]
#[tokio::test]
async fn server_span_has_the_request_head_attributes() {
    let _lock = trace::tests::SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let sink = Arc::new(trace::tests::Collect::default());
    trace::set_sink(sink.clone());
    let service = HttpMetricsLayer::new(HttpMetrics::new(&Registry::new()).unwrap())
        .routes(Routes::new(["/head-attrs"]).unwrap())
        .layer(tower::service_fn(|_req: Request<_>| async {
            ok(Empty::<Bytes>::new())
        }));
    let request = Request::get("/head-attrs")
        .header("host", "shop.example:8080")
        .header("user-agent", "locust/2.0")
        .body(Full::<Bytes>::default())
        .unwrap();
    service
        .oneshot(request)
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap();
    trace::clear_sink();
    let spans = sink.0.lock().unwrap();
    let span = spans.iter().find(|s| s.name == "GET /head-attrs").unwrap();
    assert_eq!(
        span.attribute("server.address"),
        Some(&AttrValue::from("shop.example"))
    );
    assert_eq!(span.attribute("server.port"), Some(&AttrValue::I64(8080)));
    assert_eq!(
        span.attribute("user_agent.original"),
        Some(&AttrValue::from("locust/2.0"))
    );
    assert_eq!(
        span.attribute("network.protocol.version"),
        Some(&AttrValue::from("1.1"))
    );
}

#[tokio::test]
async fn a_grpc_failure_counts_under_the_http_status_its_code_stands_for() {
    let registry = Registry::new();
    let service = layer(&registry).layer(tower::service_fn(
        |request: Request<RequestBody<Full<Bytes>>>| async move {
            let code = request.uri().query().unwrap_or("0").to_string();
            let response = Response::builder()
                .header("content-type", "application/grpc")
                .header("grpc-status", code)
                .body(Empty::<Bytes>::new())
                .unwrap();
            Ok::<_, Infallible>(response)
        },
    ));
    let call = |query: &str, version: http::Version| {
        let mut request = Request::post(format!("/api/products?{query}"))
            .body(Full::default())
            .unwrap();
        *request.version_mut() = version;
        service.clone().oneshot(request)
    };
    for (query, version) in [
        ("14", http::Version::HTTP_2),
        ("5", http::Version::HTTP_2),
        ("0", http::Version::HTTP_2),
        // Not over HTTP/2: not gRPC, whatever the headers say.
        ("14", http::Version::HTTP_11),
    ] {
        let response = call(query, version).await.unwrap();
        response.into_body().collect().await.unwrap();
    }
    assert_eq!(
        sample(&registry, &requests("/api/products", "POST", 503)),
        Some(1.0)
    );
    assert_eq!(
        sample(&registry, &requests("/api/products", "POST", 404)),
        Some(1.0)
    );
    assert_eq!(
        sample(&registry, &requests("/api/products", "POST", 200)),
        Some(2.0)
    );
}

/// What a framework's router leaves in the extensions (axum's `MatchedPath`).
#[derive(Clone)]
struct FrameworkMatch(String);

fn framework_template(extensions: &http::Extensions) -> Option<&str> {
    extensions.get::<FrameworkMatch>().map(|m| m.0.as_str())
}

#[tokio::test]
async fn a_framework_template_is_the_endpoint_learned_once_and_bounded() {
    let registry = Registry::new();
    let service = layer(&registry)
        .route_template_from(framework_template)
        .layer(tower::service_fn(
            |req: Request<RequestBody<Full<Bytes>>>| async move {
                // The framework routed it: no match of the layer's own rides along.
                let routed_by_framework = req.extensions().get::<FrameworkMatch>().is_some();
                assert!(!routed_by_framework || MatchedRoute::of(&req).is_none());
                ok(Full::new(Bytes::from_static(b"ok")))
            },
        ));
    let call = |path: &str, template: Option<String>| {
        let mut request = get(path);
        if let Some(template) = template {
            request.extensions_mut().insert(FrameworkMatch(template));
        }
        service.clone().oneshot(request)
    };
    // A declared template keeps its row; an undeclared one is learned; without a template the
    // path is matched as before.
    call("/api/products/7", Some("/api/products/{id}".into()))
        .await
        .unwrap();
    call("/users/7", Some("/users/{id}".into())).await.unwrap();
    call("/users/8", Some("/users/{id}".into())).await.unwrap();
    call("/api/products", None).await.unwrap();
    call("/nowhere", None).await.unwrap();
    assert_eq!(
        sample(&registry, &requests("/api/products/{id}", "GET", 200)),
        Some(1.0)
    );
    assert_eq!(sample(&registry, &requests("/users/{id}", "GET", 200)), Some(2.0));
    assert_eq!(
        sample(&registry, &requests("/api/products", "GET", 200)),
        Some(1.0)
    );
    assert_eq!(
        sample(&registry, &requests(UNMATCHED_ENDPOINT, "GET", 200)),
        Some(1.0)
    );
    // A hook handing out raw paths fills the table, then everything else is one series.
    for i in 0..LEARNED_TEMPLATES + 50 {
        call(&format!("/raw/{i}"), Some(format!("/raw/{i}")))
            .await
            .unwrap();
    }
    let text = registry.encode_text();
    let endpoints: std::collections::HashSet<&str> = text
        .lines()
        .filter(|l| l.starts_with("http_requests_total{"))
        .filter_map(|l| l.split("endpoint=\"").nth(1)?.split('"').next())
        .collect();
    // The declared two seen, unmatched, the learned table (one of its rows is /users/{id}), and
    // the overflow row.
    assert_eq!(endpoints.len(), 2 + 1 + LEARNED_TEMPLATES + 1, "{endpoints:?}");
    let overflowed = sample(
        &registry,
        &requests(crate::metrics::OVERFLOW_LABEL_VALUE, "GET", 200),
    );
    // 178 raw templates: 127 fit beside /users/{id}, 51 do not.
    assert_eq!(
        overflowed,
        Some((LEARNED_TEMPLATES + 50 - (LEARNED_TEMPLATES - 1)) as f64),
        "{text}"
    );
}

#[tokio::test]
async fn a_route_objective_labels_its_requests_and_latency_series_only() {
    use crate::objectives::{Objective, ObjectiveLatency, ObjectivePercentile, RouteObjective};
    const PAGE: RouteObjective = RouteObjective::new(
        "/api/products/{id}",
        Objective::new("page")
            .success_rate(ObjectivePercentile::P99_9)
            .latency(ObjectiveLatency::Ms250, ObjectivePercentile::P99),
    );
    let registry = Registry::new();
    let service = layer(&registry)
        .route_objective(PAGE)
        .unwrap()
        .layer(tower::service_fn(|req: Request<_>| async move {
            let status = if req.uri().path().ends_with("/broken") {
                503
            } else {
                200
            };
            let mut response = Response::new(Full::new(Bytes::from_static(b"ok")));
            *response.status_mut() = StatusCode::from_u16(status).unwrap();
            Ok::<_, Infallible>(response)
        }));
    for path in ["/api/products/1", "/api/products/broken", "/api/products"] {
        service.clone().oneshot(get(path)).await.unwrap();
    }
    let page = r#"endpoint="/api/products/{id}",method="GET""#;
    let objective = r#"objective_name="page",objective_percentile="99.9""#;
    for status in [200, 503] {
        assert_eq!(
            sample(
                &registry,
                &format!(r#"http_requests_total{{{page},{objective},status="{status}"}}"#)
            ),
            Some(1.0),
            "{}",
            registry.encode_text()
        );
    }
    let latency = r#"objective_latency_threshold="0.25",objective_name="page",objective_percentile="99""#;
    assert_eq!(
        sample(
            &registry,
            &format!(r#"http_request_duration_seconds_count{{{page},{latency}}}"#)
        ),
        Some(2.0)
    );
    // Another route, and the other families, carry no objective label.
    assert_eq!(
        sample(&registry, &requests("/api/products", "GET", 200)),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &registry,
            &series("http_requests_in_flight", "/api/products/{id}", "GET")
        ),
        Some(0.0)
    );
    // A template that is not a route is refused: its series would never exist.
    let typo = RouteObjective::new("/api/product/{id}", PAGE.objective());
    let err = layer(&Registry::new()).route_objective(typo).unwrap_err();
    assert_eq!(err.template(), "/api/product/{id}");
}
