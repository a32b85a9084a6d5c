//! The service the layer makes (for tower and for hyper): matches the request, starts its
//! recording and calls the inner service.

use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{header, Request, Response};
use http_body::Body;

use super::body::{RequestBody, RequestSize, ResponseBody};
use super::future::ResponseFuture;
use super::guard::{server_span, RequestGuard};
use super::matcher::Spans;
use super::routes::method_index;
use super::shared::Shared;
use crate::trace;
use crate::trace::propagation::RemoteContext;

/// The service [`HttpMetricsLayer`](super::HttpMetricsLayer) makes: records each request it passes to `S`.
///
/// It implements tower's `Service` when `S` does, and hyper's `Service` when `S` does, for
/// `Request<ReqBody>`, calling `S` with `Request<RequestBody<ReqBody>>` and answering with
/// `Response<ResponseBody<ResBody>>`. Cloning it clones `S` and one reference count.
///
/// If `S` returns `Err`, the request is counted with status 500 and the error is passed on
/// unchanged. If the response future is dropped before it completes, the request is counted
/// with status 499 ("client closed request") and leaves nothing in flight.
///
/// ```
/// use std::convert::Infallible;
/// use obskit::http::{HttpMetrics, HttpMetricsLayer, HttpMetricsService};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = obskit::metrics::Registry::new();
/// let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap());
/// let failing = tower::service_fn(|_req: http::Request<_>| async {
///     Err::<http::Response<http_body_util::Empty<bytes::Bytes>>, _>("database down")
/// });
/// let service: HttpMetricsService<_> = tower::Layer::layer(&layer, failing);
/// let result = service.oneshot(http::Request::new(http_body_util::Empty::<bytes::Bytes>::new())).await;
/// assert_eq!(result.unwrap_err(), "database down");
/// assert!(registry.encode_text().contains(r#"http_requests_total{endpoint="unmatched",method="GET",status="500"} 1"#));
/// # }
/// ```
#[derive(Clone)]
pub struct HttpMetricsService<S> {
    inner: S,
    shared: Arc<Shared>,
}

impl<S: fmt::Debug> fmt::Debug for HttpMetricsService<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMetricsService")
            .field("inner", &self.inner)
            .finish_non_exhaustive()
    }
}

impl<S> HttpMetricsService<S> {
    pub(crate) fn new(inner: S, shared: Arc<Shared>) -> HttpMetricsService<S> {
        HttpMetricsService { inner, shared }
    }

    /// The wrapped service.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap());
    /// let service = layer.wrap_hyper(42u32);
    /// assert_eq!(*service.get_ref(), 42);
    /// ```
    pub fn get_ref(&self) -> &S {
        &self.inner
    }
}

/// Starts recording `request` and calls the inner service with it, the server span current
/// meanwhile (a service may do real work before returning its future).
fn start<B: Body, F>(
    shared: &Arc<Shared>,
    request: Request<B>,
    call: impl FnOnce(Request<RequestBody<B>>) -> F,
) -> ResponseFuture<F> {
    let (request, guard) = begin(shared, request);
    let inner = {
        let _entered = guard
            .as_ref()
            .and_then(RequestGuard::span)
            .map(trace::Span::enter);
        call(request)
    };
    ResponseFuture::new(inner, guard)
}

/// Matches the request, starts recording it unless it is excluded, and wraps its body.
///
/// The path is matched once, for both the `endpoint` label and the [`MatchedRoute`]
/// (super::MatchedRoute) handed to the inner service in the body; the match itself allocates
/// nothing.
fn begin<B: Body>(
    shared: &Arc<Shared>,
    mut request: Request<B>,
) -> (Request<RequestBody<B>>, Option<RequestGuard>) {
    let config = &shared.config;
    let path = request.uri().path();
    // Off: routes are still matched (handlers read `MatchedRoute`), nothing is recorded.
    let excluded = !crate::instrumentation::is_enabled() || shared.is_excluded(path);
    // A framework that routed the request says which route it is; else the path is matched,
    // even when excluded: the inner service routes on the match.
    let framework = config
        .template_from
        .and_then(|from| from(request.extensions()))
        .map(|template| shared.framework_route(template));
    let (route, matched) = match framework {
        Some(row) => (Some(row), None),
        None => {
            let mut spans = Spans::new();
            let route = config.routes.match_path(path, &mut spans);
            (
                route,
                route.map(|index| config.routes.matched(index, path, &spans)),
            )
        }
    };
    let recording = (!excluded).then(|| start_recording(shared, &request, route));
    // Only a request served by `crate::serve` has extensions at this point; the others skip
    // the map lookup.
    let body_timer = if request.extensions().is_empty() {
        None
    } else {
        request
            .extensions_mut()
            .remove::<crate::serve::BodyTimeout>()
            .map(crate::serve::BodyTimeout::timer)
    };
    if config.insert_matched_route {
        if let Some(matched) = &matched {
            request.extensions_mut().insert(matched.clone());
        }
    }
    let (size, guard) = match recording {
        Some((size, guard, remote)) => {
            if let Some(remote) = remote {
                // For handlers that call other services: `tracestate` and `baggage` go on.
                request.extensions_mut().insert(remote);
            }
            (size, Some(guard))
        }
        None => (None, None),
    };
    (
        request.map(|body| RequestBody::wrapped(body, size, body_timer, matched)),
        guard,
    )
}

/// Resolves the request's handles, opens its span (a child of the caller's, from the
/// propagation headers, which are read only while spans are recorded) and counts it in
/// flight.
fn start_recording<B: Body>(
    shared: &Arc<Shared>,
    request: &Request<B>,
    route: Option<usize>,
) -> (Option<RequestSize>, RequestGuard, Option<RemoteContext>) {
    let method = method_index(request.method());
    let slot = shared.slot(route, method);
    let handles = shared.handles(slot);
    // A body already at its end (a GET, say) has nothing to read: its size, 0, is recorded now
    // (with the in-flight increment, below), and the body goes unwatched (no handle carried
    // along with it).
    let empty_body = request.body().is_end_stream();
    let size = if empty_body {
        None
    } else {
        let content_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        Some(RequestSize::new(handles.request_size.clone(), content_length))
    };
    // In flight from here, out only by the guard's `Drop`: one to one.
    handles.record_start(empty_body);
    // The guard moves from the future to the response body and with the response through
    // every future above this one: it is small (its span boxed, and only when there is one), so
    // those moves are cheap and a request without a span allocates nothing here.
    let mut guard = RequestGuard::new(Arc::clone(shared), slot);
    guard.http2 = request.version() == http::Version::HTTP_2;
    let remote = if trace::is_enabled() {
        let remote =
            Some(RemoteContext::extract(request.headers())).filter(|r| *r != RemoteContext::default());
        let parent = remote.as_ref().and_then(|r| r.parent);
        let names = route.map(|_| handles.route_names);
        let mut span = server_span(request.method(), method, names, request.uri().path(), parent);
        if span.is_recording() {
            request_attributes(&mut span, request);
        }
        guard.set_span(span);
        remote
    } else {
        None
    };
    guard.track_in_flight();
    (size, guard, remote)
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for HttpMetricsService<S>
where
    S: tower_service::Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<ReqBody>) -> Self::Future {
        start(&self.shared, request, |request| self.inner.call(request))
    }
}

impl<S, ReqBody, ResBody> hyper::service::Service<Request<ReqBody>> for HttpMetricsService<S>
where
    S: hyper::service::Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
    ReqBody: Body,
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, request: Request<ReqBody>) -> Self::Future {
        start(&self.shared, request, |request| self.inner.call(request))
    }
}

/// The OpenTelemetry HTTP server attributes read from the request head beyond those
/// [`server_span`] sets: `server.address` and `server.port` (from `Host`, or the URI's authority
/// in HTTP/2), `user_agent.original` and `network.protocol.version`.
fn request_attributes<B>(span: &mut trace::Span, request: &Request<B>) {
    let authority = request
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .or_else(|| request.uri().authority().map(|a| a.as_str()));
    // Borrowed: only the part the request value limit keeps is copied.
    if let Some(authority) = authority {
        let (address, port) = split_authority(authority);
        span.set_request_attr("server.address", address);
        if let Some(port) = port {
            span.set_attr("server.port", i64::from(port));
        }
    }
    if let Some(agent) = request
        .headers()
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
    {
        span.set_request_attr("user_agent.original", agent);
    }
    let version = match request.version() {
        http::Version::HTTP_09 => "0.9",
        http::Version::HTTP_10 => "1.0",
        http::Version::HTTP_11 => "1.1",
        http::Version::HTTP_2 => "2",
        http::Version::HTTP_3 => "3",
        _ => return,
    };
    span.set_attr("network.protocol.version", version);
}

/// `host:port`, `[v6]:port` or a bare host, into the host (without brackets) and the port.
pub(crate) fn split_authority(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((host, after)) = rest.split_once(']') {
            return (host, after.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((host, port)) if !host.contains(':') => match port.parse() {
            Ok(port) => (host, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}
