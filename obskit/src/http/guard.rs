//! What one recorded request holds while it is in flight, and the recording done when it ends.

use std::sync::Arc;

use http::{Method, StatusCode};

use super::grpc;
use super::routes::{span_name_method, RouteNames, HEAD_INDEX, METHOD_COUNT, METHOD_LABELS, OTHER_INDEX};
use super::shared::Shared;
use crate::clock::{self, Tick};
use crate::debug::in_flight;
use crate::trace::propagation::traceparent_header;
use crate::trace::{self, Span, SpanContext, SpanKind, SpanStatus};

/// The status counted for a request whose future was dropped before the service produced a
/// response (the client went away, a timeout layer outside gave up, the server shut down).
/// 499 is nginx's "client closed request": no real response carries it, so it cannot be
/// confused with one, and counting these requests keeps slow endpoints whose clients give up
/// visible in the latency and error panels instead of silently vanishing from them.
pub(crate) const CLIENT_CLOSED_REQUEST: StatusCode = match StatusCode::from_u16(499) {
    Ok(status) => status,
    Err(_) => panic!("499 is a valid status code"),
};

/// How far a request got.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// No response head yet.
    Pending,
    /// The service answered with this status.
    Response(StatusCode),
    /// The service returned `Err`: counted as 500.
    ServiceError,
}

/// Holds one in-flight request: created (and the in-flight gauge incremented) when the request
/// enters, carried by the response future and then by the response body, and dropped exactly
/// once, wherever that happens: at the end of the body, when hyper drops the body early (client
/// gone, HEAD, 204/304), or with the future if it is cancelled or fails. Its `Drop` does all
/// the recording, so no path can skip it or do it twice.
pub(crate) struct RequestGuard {
    shared: Arc<Shared>,
    slot: usize,
    start: Tick,
    pub(crate) outcome: Outcome,
    pub(crate) response_bytes: u64,
    /// The response body reached its end (or had none).
    pub(crate) body_complete: bool,
    /// The response body yielded an error.
    pub(crate) body_failed: bool,
    /// The request came over HTTP/2, so the response may be gRPC's (which needs HTTP/2): only
    /// then are its headers looked at for a `grpc-status`.
    pub(crate) http2: bool,
    /// A gRPC response's `grpc-status`, when its headers carry one ([`super::grpc`]).
    pub(crate) grpc_code: Option<u8>,
    /// The server span, boxed: `None` (free) when no span sink is installed. A span is large
    /// (about 400 bytes, its first attributes inline); boxed only when there is one, the guard
    /// stays small enough to move with the response through the futures above this layer
    /// without an allocation of its own.
    span: Option<Box<Span>>,
    /// The request's entry in `/debug/requests`, closed when the guard drops.
    in_flight: Option<in_flight::Ticket>,
}

impl RequestGuard {
    /// Starts recording a request for the given handle slot; the caller has incremented the
    /// in-flight gauge (so the increment and this guard's decrement pair up one to one). The
    /// guard has no span until [`set_span`](Self::set_span).
    pub(crate) fn new(shared: Arc<Shared>, slot: usize) -> RequestGuard {
        RequestGuard {
            shared,
            slot,
            start: Tick::now(),
            outcome: Outcome::Pending,
            response_bytes: 0,
            body_complete: false,
            body_failed: false,
            http2: false,
            grpc_code: None,
            span: None,
            in_flight: None,
        }
    }

    /// Lists the request in `/debug/requests` until the guard drops, with its server span's ids
    /// (so call it once the span is set).
    pub(crate) fn track_in_flight(&mut self) {
        let context = self.span().and_then(Span::context);
        let route = self.route();
        let entry = in_flight::Entry::request(self.slot % METHOD_COUNT, route, self.start, context);
        self.in_flight = in_flight::open(entry);
    }

    /// The request's server span, ended when the guard drops; a disabled one is not kept.
    pub(crate) fn set_span(&mut self, span: Span) {
        self.span = span.context().is_some().then(|| Box::new(span));
    }

    /// The request's route template (or the label standing for one: `unmatched`, `__overflow__`).
    pub(crate) fn route(&self) -> &'static str {
        self.shared.endpoint(self.slot)
    }

    /// The server span, if the request has one.
    pub(crate) fn span(&self) -> Option<&Span> {
        self.span.as_deref()
    }

    /// The `traceparent` to return on the response, when the layer is configured to and the
    /// request has a span.
    pub(crate) fn response_traceparent(&self) -> Option<http::HeaderValue> {
        if !self.shared.response_traceparent() {
            return None;
        }
        self.span()?.context().map(|context| traceparent_header(&context))
    }

    fn finish_span(&mut self) {
        let Some(span) = self.span.as_deref_mut() else {
            return;
        };
        match self.outcome {
            Outcome::Pending => span.add_event("request cancelled before a response", Vec::new()),
            Outcome::ServiceError => {
                let status = StatusCode::INTERNAL_SERVER_ERROR;
                span.set_attr("http.response.status_code", i64::from(status.as_u16()));
                span.set_attr("error.type", "service_error");
                span.set_status(SpanStatus::Error(
                    "the service returned an error instead of a response".to_string(),
                ));
            }
            Outcome::Response(status) => {
                span.set_attr("http.response.status_code", i64::from(status.as_u16()));
                if let Some(code) = self.grpc_code {
                    span.set_attr("rpc.grpc.status_code", i64::from(code));
                    if grpc::is_server_error(code) {
                        span.set_attr("error.type", i64::from(code).to_string());
                        span.set_status(SpanStatus::Error(format!("grpc-status {code}")));
                    }
                }
                if status.is_server_error() {
                    // OpenTelemetry HTTP conventions: 5xx is a server span error, and
                    // `error.type` is the status code.
                    span.set_attr("error.type", status.as_str().to_string());
                    span.set_status(SpanStatus::Error(status.to_string()));
                }
                if self.body_failed {
                    span.set_status(SpanStatus::Error("the response body failed".to_string()));
                } else if !self.body_complete && self.slot % METHOD_COUNT != HEAD_INDEX {
                    // HEAD bodies are dropped unread by design; any other early drop means the
                    // client did not get the whole response.
                    span.add_event("response body dropped before its end", Vec::new());
                }
            }
        }
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        let status = match self.outcome {
            Outcome::Pending => CLIENT_CLOSED_REQUEST,
            // A gRPC call's outcome is its `grpc-status`, under the HTTP status it stands for.
            Outcome::Response(status) => self.grpc_code.map_or(status, grpc::http_status),
            Outcome::ServiceError => StatusCode::INTERNAL_SERVER_ERROR,
        };
        let shared = &*self.shared;
        let method = Shared::method(self.slot);
        let endpoint = shared.endpoint(self.slot);
        let handles = shared.handles(self.slot);
        let ticks = self.start.ticks_until(Tick::now());
        handles.record_end(ticks, self.response_bytes);
        // The trace of a sampled request becomes its bucket's exemplar: the jump from a latency
        // spike on a dashboard to the trace behind it. Unsampled traces are not exported, so
        // pointing at them would lead nowhere.
        if let Some(context) = self.span().and_then(Span::context).filter(|c| c.sampled) {
            handles.duration_exemplars.record(
                clock::ticks_as_nanos(ticks) as f64 / 1e9,
                context.trace_id,
                Some(context.span_id),
            );
        }
        handles.count_request(shared.metrics(), method, endpoint, status);
        // An unsampled span keeps its status (attributes and events are no-ops on it): an
        // error is what shows it in `/debug/traces`.
        self.finish_span();
        // The span ends (and goes to the sink) when the fields drop, right after this.
    }
}

/// Opens the server span of a request, or a disabled one (without formatting or allocating)
/// when no span sink is installed. Names and attributes follow the OpenTelemetry HTTP server
/// conventions: `{method} {route}`, just `{method}` without a route, and `HTTP` for a
/// non-standard method, whose `http.request.method` is then `_OTHER`.
///
/// `parent` is the caller's span from the request's `traceparent`: the server span joins its
/// trace and inherits its `sampled` flag.
pub(crate) fn server_span(
    method: &Method,
    method_index: usize,
    route: Option<RouteNames>,
    path: &str,
    parent: Option<SpanContext>,
) -> Span {
    if !trace::is_enabled() {
        return Span::disabled();
    }
    let method_attr = if method_index == OTHER_INDEX {
        "_OTHER"
    } else {
        METHOD_LABELS[method_index]
    };
    let name = match route {
        Some(route) => route.span_name,
        None => span_name_method(method_index),
    };
    let mut builder = trace::span(name);
    if let Some(parent) = parent {
        builder = builder.parent(parent);
    }
    let mut span = builder
        .kind(SpanKind::Server)
        // Room for every attribute a server span gets (`request_attributes` and the response's
        // included) in one allocation, rather than the inline room and then growth.
        .reserve_attributes(SERVER_SPAN_ATTRIBUTES)
        .start();
    // Set on the started span, in place: each builder call takes and gives back the whole
    // builder, a copy of a few hundred bytes when it is not inlined.
    if span.is_recording() {
        span.set_attr("http.request.method", method_attr);
        if method_index == OTHER_INDEX {
            span.set_request_attr("http.request.method_original", method.as_str());
        }
        if let Some(route) = route {
            span.set_attr("http.route", route.template);
        }
        // The path is the client's: held to the request value limit (SpanLimits).
        span.set_request_attr("url.path", path);
    }
    span
}

/// How many attributes a server span usually ends with: method, route, path, address, port,
/// user agent, protocol version, status code (and the original method, or an error type).
const SERVER_SPAN_ATTRIBUTES: usize = 10;
