//! Outgoing HTTP calls with `reqwest`: a client span per request, and the W3C trace context
//! injected so that the called service continues the trace.
//!
//! A thin extension trait on [`reqwest::RequestBuilder`] rather than `reqwest-middleware` plus
//! `reqwest-tracing`: `reqwest-tracing` records through the `tracing` crate and
//! `tracing-opentelemetry` (its newest release supports OpenTelemetry only up to 0.32), so its
//! spans would never reach obskit's sink, `/debug/traces` or exporter, and it would bring a
//! second OpenTelemetry version; `reqwest-middleware` alone would only change the client type
//! every call site uses. The trait keeps `reqwest::Client` as it is: `.send()` becomes
//! `.send_traced()`.
//!
//! The span follows the OpenTelemetry HTTP client conventions: named after the method, kind
//! `Client`, with `http.request.method`, `server.address`, `server.port`, `url.full` (with any
//! credentials masked), `http.response.status_code`, and `error.type` plus an error status for
//! a status of 400 or more or a transport error. It ends when the response head arrives.

use std::future::Future;

use super::propagation::RemoteContext;
use super::{current, span, SpanContext, SpanKind, SpanStatus};
use crate::secrets::mask_secrets;

/// Sends a `reqwest` request inside a client span, with `traceparent` (and the given
/// `tracestate` and `baggage`) injected.
///
/// ```no_run
/// use obskit::trace::TracedRequest;
/// # async fn checkout(client: &reqwest::Client) -> reqwest::Result<()> {
/// let response = client.get("http://backend:8000/api/products/42").send_traced().await?;
/// # let _ = response; Ok(()) }
/// ```
pub trait TracedRequest {
    /// Sends the request in a client span that is a child of the current span.
    fn send_traced(self) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send;

    /// Like [`send_traced`](TracedRequest::send_traced), also passing on the `tracestate` and
    /// `baggage` of the request being served (the [`RemoteContext`] request extension).
    fn send_traced_with(
        self,
        remote: &RemoteContext,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send;
}

impl TracedRequest for reqwest::RequestBuilder {
    fn send_traced(self) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send {
        send(self, None)
    }

    fn send_traced_with(
        self,
        remote: &RemoteContext,
    ) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send {
        send(self, Some(remote.clone()))
    }
}

/// Reads the current span now, when the call is made: the returned future may be first polled
/// where another span (or none) is current.
fn send(
    builder: reqwest::RequestBuilder,
    remote: Option<RemoteContext>,
) -> impl Future<Output = reqwest::Result<reqwest::Response>> + Send {
    send_in(builder, remote, current())
}

async fn send_in(
    builder: reqwest::RequestBuilder,
    remote: Option<RemoteContext>,
    parent: Option<SpanContext>,
) -> reqwest::Result<reqwest::Response> {
    let (client, request) = builder.build_split();
    let mut request = request?;
    let method = request.method().as_str().to_string();
    let url = request.url();
    let mut builder = span(method.clone()).kind(SpanKind::Client);
    // The parent first: it decides whether the span records the attributes.
    if let Some(parent) = parent {
        builder = builder.parent(parent);
    }
    builder = builder.attr("http.request.method", method);
    if builder.is_recording() {
        if let Some(host) = url.host_str() {
            builder = builder.attr("server.address", host.to_string());
        }
        if let Some(port) = url.port_or_known_default() {
            builder = builder.attr("server.port", i64::from(port));
        }
        builder = builder.attr("url.full", mask_secrets(url.as_str()).into_owned());
    }
    let mut client_span = builder.start();
    // The called service's parent is the client span; without a recording span (no sink),
    // the current span's context still goes on, so that the trace is not broken downstream.
    let context = client_span.context().or(parent);
    remote
        .unwrap_or_default()
        .inject(context.as_ref(), request.headers_mut());

    // Nothing inside reqwest opens spans, so the client span need not be current while the
    // request runs; it lives in this future and ends when it completes or is dropped.
    let result = client.execute(request).await;
    if client_span.is_recording() {
        match &result {
            Ok(response) => {
                let status = response.status();
                client_span.set_attr("http.response.status_code", i64::from(status.as_u16()));
                if status.is_client_error() || status.is_server_error() {
                    client_span.set_attr("error.type", status.as_str().to_string());
                    client_span.set_status(SpanStatus::Error(status.to_string()));
                }
            }
            Err(error) => {
                let kind = if error.is_timeout() {
                    "timeout"
                } else if error.is_connect() {
                    "connect"
                } else {
                    "request"
                };
                client_span.set_attr("error.type", kind);
                client_span.record_error(&mask_secrets(&error.to_string()), "reqwest::Error");
            }
        }
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::trace::tests::{Collect, SINK_LOCK};
    use crate::trace::{clear_sink, set_sink, AttrValue};
    use std::sync::Arc;

    // The sink is process-wide: the lock serialises the tests that install one, across awaits.
    #[allow(clippy::await_holding_lock)]
    #[tokio::test]
    async fn a_failed_call_is_an_error_span_under_the_current_one() {
        let _lock = SINK_LOCK.lock().unwrap_or_else(|p| p.into_inner());
        let sink = Arc::new(Collect::default());
        set_sink(sink.clone());
        let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://user:pw@{}/x?q=1", closed.local_addr().unwrap());
        drop(closed);
        let parent = span("caller").start();
        let parent_context = parent.context().unwrap();
        let sending = {
            let _entered = parent.enter();
            reqwest::Client::new().post(url).send_traced()
        };
        assert!(sending.await.is_err());
        drop(parent);
        clear_sink();
        let spans = sink.0.lock().unwrap();
        let client = spans.iter().find(|s| s.name == "POST").expect("a client span");
        assert_eq!(client.kind, SpanKind::Client);
        assert_eq!(client.parent_span_id, Some(parent_context.span_id));
        assert_eq!(client.attribute("error.type"), Some(&AttrValue::from("connect")));
        assert_eq!(
            client.attribute("server.address"),
            Some(&AttrValue::from("127.0.0.1"))
        );
        let full = client.attribute("url.full").unwrap().to_string();
        // reqwest moves URL credentials into an `Authorization` header; none reach the span.
        assert!(!full.contains("pw") && !full.contains("user"), "{full}");
        assert!(
            full.starts_with("http://127.0.0.1:") && full.ends_with("/x?q=1"),
            "{full}"
        );
        assert!(matches!(client.status, SpanStatus::Error(_)));
        assert_eq!(client.events[0].name, "exception");
    }
}
