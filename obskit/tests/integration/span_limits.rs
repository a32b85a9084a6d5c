//! Hostile input against the span pipeline: request heads far larger than any attribute should
//! be, and `/debug/traces` dumps while spans keep ending. The span sink and the recent-span
//! buffer are process-wide: these tests hold [`SINK_LOCK`].

use std::convert::Infallible;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response};
use http_body_util::{Empty, Full};
use obskit::metrics::Registry;
use obskit::trace::{self, AttrValue, RecentSpans, SpanLimits, TraceQuery};
use tower::{Layer, ServiceExt};

use crate::common::SINK_LOCK;

/// The process's resident set, in bytes (Linux).
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn counter(registry: &Registry, series: &str) -> f64 {
    registry
        .encode_text()
        .lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

// The lock only orders this test against the others that install a sink; holding it across
// awaits is the point.
#[allow(clippy::await_holding_lock)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_request_heads_stay_within_the_limits_and_the_byte_bound() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    const REQUESTS: usize = 1_200;
    const HEADER_BYTES: usize = 380 * 1024;
    const BUFFER_BYTES: usize = 512 * 1024;

    let registry = Registry::new();
    let obskit = obskit::Obskit::builder()
        .service("limits-test")
        .registry(registry.clone())
        .routes(["/items/{id}"])
        .recent_spans(2048)
        .recent_spans_bytes(BUFFER_BYTES)
        .span_limits(SpanLimits::default())
        .otlp(None)
        .build()
        .expect("obskit builds");
    let recent = RecentSpans::global();
    let handler = tower::service_fn(|_request: Request<_>| async move {
        Ok::<_, Infallible>(Response::new(Full::new(Bytes::from_static(b"{}"))))
    });
    let service = obskit.layer().layer(handler);

    // One 380 kB value, shared by every request (Bytes clones are cheap): the test measures
    // what obskit keeps, not what the test allocates.
    let agent = HeaderValue::from_maybe_shared(Bytes::from("a".repeat(HEADER_BYTES))).unwrap();
    let host =
        HeaderValue::from_maybe_shared(Bytes::from(format!("{}.example:80", "h".repeat(HEADER_BYTES))))
            .unwrap();
    let long_path = format!("/unknown/{}", "p".repeat(60 * 1024));
    let rss_before = rss_bytes();
    for i in 0..REQUESTS {
        let path = if i % 2 == 0 {
            long_path.as_str()
        } else {
            "/items/7"
        };
        let request = Request::get(path)
            .header(header::USER_AGENT, agent.clone())
            .header(header::HOST, host.clone())
            .body(Empty::<Bytes>::new())
            .unwrap();
        let response = service.clone().oneshot(request).await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let rss_after = rss_bytes();
    let report = recent.report(&TraceQuery {
        limit: TraceQuery::MAX_LIMIT,
        ..TraceQuery::default()
    });
    let encoded = serde_json::to_vec(&report).unwrap().len();
    eprintln!(
        "{REQUESTS} requests with {HEADER_BYTES}-byte User-Agent and Host: buffer holds {} spans in {} bytes \
         (bound {BUFFER_BYTES}); RSS {:.1} MB -> {:.1} MB (+{:.1} MB); /debug/traces?limit=1000 is {} bytes",
        recent.len(),
        recent.bytes(),
        rss_before as f64 / 1e6,
        rss_after as f64 / 1e6,
        (rss_after.saturating_sub(rss_before)) as f64 / 1e6,
        encoded,
    );
    trace::clear_sink();

    assert!(
        recent.bytes() <= BUFFER_BYTES,
        "{} > {BUFFER_BYTES}",
        recent.bytes()
    );
    assert!(
        recent.len() > 100,
        "the buffer still holds spans: {}",
        recent.len()
    );
    // The buffer let spans go early to keep within its bytes, and said so.
    let dropped = counter(&registry, r#"obskit_spans_dropped_total{reason="recent_bytes"}"#);
    assert!(dropped > 0.0, "drops for the byte bound are counted");
    // Every value copied from the request was cut to the request value limit.
    let spans = report["traces"].as_array().unwrap();
    assert!(!spans.is_empty());
    for trace in spans {
        for span in trace["spans"].as_array().unwrap() {
            for key in ["user_agent.original", "url.path", "server.address"] {
                if let Some(value) = span["attributes"][key].as_str() {
                    assert!(
                        value.len() <= SpanLimits::REQUEST_VALUE_LENGTH,
                        "{key}: {}",
                        value.len()
                    );
                }
            }
        }
    }
    // The answer is bounded by the buffer, not by what clients sent.
    assert!(encoded < 4 * BUFFER_BYTES, "{encoded}");
    // A generous bound: without limits this many heads grew the process by ~450 MB.
    assert!(
        rss_after.saturating_sub(rss_before) < 64 << 20,
        "RSS grew by {} bytes",
        rss_after - rss_before
    );
}

#[test]
fn attribute_and_event_limits_cut_and_count() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let recent = RecentSpans::new(16);
    trace::set_sink(Arc::new(recent.clone()));
    SpanLimits {
        attribute_value_length: 8,
        attribute_count: 3,
        event_count: 2,
        link_count: 1,
        event_attribute_count: 1,
        request_value_length: 4,
    }
    .install();
    {
        let mut span = trace::span("limited")
            .attr("a", "0123456789")
            .attr("b", 2)
            .link(
                trace::SpanContext {
                    trace_id: 1,
                    span_id: 2,
                    sampled: true,
                },
                Vec::new(),
            )
            .link(
                trace::SpanContext {
                    trace_id: 1,
                    span_id: 3,
                    sampled: true,
                },
                Vec::new(),
            )
            .start();
        span.set_request_attr("user_agent.original", "curl/8.5.0");
        span.set_attr("d", true);
        span.set_attr("e", 5.0);
        for i in 0..4 {
            span.add_event(
                "retry",
                vec![
                    ("attempt".into(), AttrValue::from(i)),
                    ("extra".into(), AttrValue::from(1)),
                ],
            );
        }
        span.set_status(trace::SpanStatus::Error("é".repeat(10)));
    }
    SpanLimits::default().install();
    trace::clear_sink();

    let report = recent.report(&TraceQuery::default());
    // Found by name: servers of tests running meanwhile may add spans of their own here.
    let span = report["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["spans"].as_array().unwrap())
        .find(|s| s["name"] == "limited")
        .unwrap_or_else(|| panic!("no span `limited`: {report}"));
    assert_eq!(span["attributes"]["a"], "01234567");
    assert_eq!(span["attributes"]["user_agent.original"], "curl");
    assert_eq!(span["attributes"]["b"], 2);
    assert!(
        span["attributes"].get("d").is_none(),
        "past the count limit: {span}"
    );
    assert_eq!(span["dropped_attributes_count"], 2);
    assert_eq!(span["events"].as_array().unwrap().len(), 2);
    assert_eq!(span["dropped_events_count"], 2);
    assert_eq!(span["events"][0]["dropped_attributes_count"], 1);
    assert_eq!(span["links"].as_array().unwrap().len(), 1);
    assert_eq!(span["dropped_links_count"], 1);
    // Cut at a character boundary: four two-byte characters.
    assert_eq!(span["status_message"], "éééé");
}

#[test]
fn span_ends_do_not_wait_for_a_large_dump() {
    let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
    let recent = RecentSpans::new(2048);
    recent.set_max_bytes(64 << 20);
    trace::set_sink(Arc::new(recent.clone()));
    // A full buffer of spans that are costly to show: each value is masked and encoded.
    for i in 0..2048 {
        let mut span = trace::span("filler").start();
        for key in 0..8 {
            span.set_attr(
                format!("attribute.{key}"),
                format!("postgres://user:pw@db/{i}?sslmode=require&{}", "v".repeat(900)),
            );
        }
    }

    let stop = Arc::new(AtomicBool::new(false));
    let ended = Arc::new(AtomicU64::new(0));
    let longest_ns = Arc::new(AtomicU64::new(0));
    let ender = {
        let (stop, ended, longest_ns) = (Arc::clone(&stop), Arc::clone(&ended), Arc::clone(&longest_ns));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let span = trace::span("request").attr("k", "v").start();
                let started = Instant::now();
                drop(span);
                let took = started.elapsed().as_nanos() as u64;
                longest_ns.fetch_max(took, Ordering::Relaxed);
                ended.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    // Let the ender get going, then dump the whole buffer a few times.
    while ended.load(Ordering::Relaxed) < 100 {
        std::thread::yield_now();
    }
    let mut during = Vec::new();
    let mut report_times = Vec::new();
    for _ in 0..3 {
        let before = ended.load(Ordering::Relaxed);
        let started = Instant::now();
        let report = recent.report(&TraceQuery {
            limit: TraceQuery::MAX_LIMIT,
            ..TraceQuery::default()
        });
        let bytes = serde_json::to_vec(&report).unwrap().len();
        report_times.push((started.elapsed(), bytes));
        during.push(ended.load(Ordering::Relaxed) - before);
    }
    stop.store(true, Ordering::Relaxed);
    ender.join().unwrap();
    trace::clear_sink();
    let longest = Duration::from_nanos(longest_ns.load(Ordering::Relaxed));
    eprintln!(
        "dumps (time, bytes): {report_times:?}; spans ended during each dump: {during:?}; \
         longest span end: {longest:?}"
    );
    // Span ends went on while every dump was encoded: none waited for one.
    assert!(during.iter().all(|&n| n > 0), "{during:?}");
}
