//! The layer, the service it produces (for tower and for hyper) and its response future.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use http::{header, Request, Response};
use http_body::Body;

use super::body::{RequestBody, RequestSize, ResponseBody};
use super::guard::{server_span, Outcome, RequestGuard};
use super::metrics::{HandleTable, Handles, HttpMetrics};
use super::routes::{method_index, MatchedRoute, Routes, METHOD_COUNT, METHOD_LABELS, UNMATCHED_ENDPOINT};
use crate::trace;
use crate::trace::propagation::{self, RemoteContext};

/// A [`tower_layer::Layer`] recording HTTP RED metrics (see [`HttpMetrics`]) and a server span
/// for every request, labelled by route template. Fits axum (`Router::layer`), tonic
/// (`Server::builder().layer`), any tower stack, and plain hyper through
/// [`HttpMetricsLayer::wrap_hyper`].
///
/// Cheap to clone, and the services it makes are cheap to clone too (one reference count), so
/// wrapping a service per connection costs nothing worth measuring.
///
/// ```
/// use std::convert::Infallible;
/// use http_body_util::{BodyExt, Full};
/// use obskit::http::{HttpMetrics, HttpMetricsLayer, Routes};
/// use obskit::metrics::Registry;
/// use tower::{Layer, ServiceExt};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let registry = Registry::new();
/// let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
///     .routes(Routes::new(["/api/products", "/api/products/{id}"]).unwrap())
///     .exclude_admin(true);
///
/// let service = layer.layer(tower::service_fn(|_req: http::Request<_>| async {
///     Ok::<_, Infallible>(http::Response::new(Full::new(bytes::Bytes::from_static(b"{}"))))
/// }));
/// let request = http::Request::get("/api/products/42").body(Full::<bytes::Bytes>::default()).unwrap();
/// let response = service.oneshot(request).await.unwrap();
/// response.into_body().collect().await.unwrap();
///
/// let text = registry.encode_text();
/// assert!(text.contains(r#"http_requests_total{endpoint="/api/products/{id}",method="GET",status="200"} 1"#));
/// # }
/// ```
#[derive(Clone)]
pub struct HttpMetricsLayer {
    shared: Arc<Shared>,
}

impl fmt::Debug for HttpMetricsLayer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpMetricsLayer")
            .field("routes", &self.shared.config.routes)
            .field("excluded", &self.shared.config.excluded)
            .field("exclude_admin", &self.shared.config.exclude_admin)
            .field("insert_matched_route", &self.shared.config.insert_matched_route)
            .field("response_traceparent", &self.shared.config.response_traceparent)
            .finish_non_exhaustive()
    }
}

impl HttpMetricsLayer {
    /// A layer recording into `metrics`, with no routes (every request is
    /// [`UNMATCHED_ENDPOINT`] until [`routes`](HttpMetricsLayer::routes) is set) and no
    /// excluded paths (the admin routes included, see [`exclude_admin`](HttpMetricsLayer::exclude_admin)).
    ///
    /// ```
    /// let metrics = obskit::http::HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap();
    /// let layer = obskit::http::HttpMetricsLayer::new(metrics);
    /// assert!(!layer.is_excluded("/metrics"));
    /// ```
    pub fn new(metrics: HttpMetrics) -> HttpMetricsLayer {
        HttpMetricsLayer {
            shared: Shared::new(Config {
                metrics,
                routes: Routes::default(),
                excluded: Box::default(),
                exclude_admin: false,
                insert_matched_route: true,
                response_traceparent: false,
            }),
        }
    }

    /// Sets the route templates that become the `endpoint` label (replacing any set before).
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer, Routes};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap())
    ///     .routes(Routes::new(["/api/products/{id}"]).unwrap());
    /// assert_eq!(layer.get_routes().endpoint("/api/products/1"), "/api/products/{id}");
    /// ```
    pub fn routes(self, routes: Routes) -> HttpMetricsLayer {
        // A new handle table: slots are indexed by route, so the old one does not fit.
        self.reconfigure(|config| config.routes = routes)
    }

    /// Sets the path prefixes whose requests record nothing (no metrics, no span), replacing
    /// any set before. A prefix matches on segment boundaries: `/debug` excludes `/debug` and
    /// `/debug/pprof/profile` but not `/debugger`. A trailing `/` is ignored (so `/` excludes
    /// everything), and a missing leading `/` is added. Excluded requests still get their
    /// [`MatchedRoute`](super::MatchedRoute): exclusion is about recording, not routing.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap())
    ///     .exclude_paths(["/metrics", "/health/"]);
    /// assert!(layer.is_excluded("/metrics"));
    /// assert!(layer.is_excluded("/health/live"));
    /// assert!(!layer.is_excluded("/metrics-old"));
    /// assert!(!layer.is_excluded("/api/health"));
    /// ```
    pub fn exclude_paths<I>(self, prefixes: I) -> HttpMetricsLayer
    where
        I: IntoIterator,
        I::Item: AsRef<str>,
    {
        let excluded = prefixes
            .into_iter()
            .map(|prefix| {
                let trimmed = prefix.as_ref().trim_end_matches('/');
                let normalized = if trimmed.starts_with('/') || trimmed.is_empty() {
                    trimmed.to_string()
                } else {
                    format!("/{trimmed}")
                };
                normalized.into_boxed_str()
            })
            .collect();
        self.reconfigure(|config| config.excluded = excluded)
    }

    /// Whether requests for the obskit admin routes record nothing (default: no), so that
    /// scrapes and probes do not dominate a service's RED metrics. Exactly the paths of
    /// [`ADMIN_ROUTES`](crate::admin::ADMIN_ROUTES) are excluded, the same table that decides
    /// what the admin surface serves: a service's own `/health/deep` or `/debug-info` is
    /// recorded. [`Obskit::layer`](crate::Obskit::layer) has it on unless
    /// [`measure_admin_requests`](crate::ObskitBuilder::measure_admin_requests) is set.
    /// Independent of [`exclude_paths`](HttpMetricsLayer::exclude_paths), which adds prefixes
    /// of your own.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap())
    ///     .exclude_admin(true)
    ///     .exclude_paths(["/internal"]);
    /// assert!(layer.is_excluded("/health/ready"));
    /// assert!(layer.is_excluded("/profiles/cpu.svg"));
    /// assert!(layer.is_excluded("/internal/cache"));
    /// assert!(!layer.is_excluded("/health/deep"));
    /// assert!(!layer.is_excluded("/debug-info"));
    /// ```
    pub fn exclude_admin(self, exclude: bool) -> HttpMetricsLayer {
        self.reconfigure(|config| config.exclude_admin = exclude)
    }

    /// Whether the [`MatchedRoute`](super::MatchedRoute) is put into each request's extensions
    /// (the default). Turn it off when the inner service routes by itself (axum, tonic) and
    /// never reads it: the extension costs a few small allocations per request (the extension
    /// map, the entry, the parameter values), and without it the request path allocates
    /// nothing while spans are off.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer, Routes};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap())
    ///     .routes(Routes::new(["/api/products/{id}"]).unwrap())
    ///     .insert_matched_route(false);
    /// # let _ = layer;
    /// ```
    pub fn insert_matched_route(self, insert: bool) -> HttpMetricsLayer {
        self.reconfigure(|config| config.insert_matched_route = insert)
    }

    /// Whether responses carry a `traceparent` header naming the request's server span
    /// (default: no). A load tester or a browser can then correlate a slow response with its
    /// trace without any backend. Off by default because it tells every client the trace ids
    /// of the service's traces; only requests that record a span (a span sink is installed,
    /// the path is not excluded) get the header.
    ///
    /// ```
    /// use std::sync::Arc;
    /// use http_body_util::Full;
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// use obskit::trace::{self, propagation::parse_traceparent, FinishedSpan, SpanSink};
    /// use tower::{Layer, ServiceExt};
    ///
    /// struct Discard;
    /// impl SpanSink for Discard {
    ///     fn on_end(&self, _span: FinishedSpan) {}
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// trace::set_sink(Arc::new(Discard));
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap())
    ///     .response_traceparent(true);
    /// let service = layer.layer(tower::service_fn(|_req: http::Request<_>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::<bytes::Bytes>::default()))
    /// }));
    /// let request = http::Request::get("/")
    ///     .header("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    ///     .body(Full::<bytes::Bytes>::default())
    ///     .unwrap();
    /// let response = service.oneshot(request).await.unwrap();
    /// let returned = response.headers()["traceparent"].to_str().unwrap();
    /// let context = parse_traceparent(returned).unwrap();
    /// assert_eq!(context.trace_id, 0x4bf92f3577b34da6a3ce929d0e0e4736, "the caller's trace");
    /// assert_ne!(context.span_id, 0x00f067aa0ba902b7, "the server span, child of the caller's");
    /// trace::clear_sink();
    /// # }
    /// ```
    pub fn response_traceparent(self, enabled: bool) -> HttpMetricsLayer {
        self.reconfigure(|config| config.response_traceparent = enabled)
    }

    /// A layer with a changed copy of this one's configuration (and a fresh handle table).
    fn reconfigure(self, change: impl FnOnce(&mut Config)) -> HttpMetricsLayer {
        let mut config = self.shared.config.clone();
        change(&mut config);
        HttpMetricsLayer {
            shared: Shared::new(config),
        }
    }

    /// Whether requests for `path` are excluded from recording.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap())
    ///     .exclude_paths(["/profiles"]);
    /// assert!(layer.is_excluded("/profiles/cpu-1.pb.gz"));
    /// ```
    pub fn is_excluded(&self, path: &str) -> bool {
        self.shared.is_excluded(path)
    }

    /// The route templates in use.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap());
    /// assert!(layer.get_routes().is_empty());
    /// ```
    pub fn get_routes(&self) -> &Routes {
        &self.shared.config.routes
    }

    /// The metric families this layer records into.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// let metrics = HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap();
    /// let layer = HttpMetricsLayer::new(metrics);
    /// let _same: &HttpMetrics = layer.metrics();
    /// ```
    pub fn metrics(&self) -> &HttpMetrics {
        &self.shared.config.metrics
    }

    /// Wraps a hyper service (one built with [`hyper::service::service_fn`], say) for
    /// `serve_connection`: the same as [`Layer::layer`](tower_layer::Layer::layer), without
    /// importing the trait. [`HttpMetricsService`] implements both hyper's `Service` (`&self`)
    /// and tower's (`&mut self`); which one applies follows from the wrapped service.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http::{Request, Response};
    /// use http_body_util::{BodyExt, Empty, Full};
    /// use hyper::body::Incoming;
    /// use hyper::server::conn::http1;
    /// use hyper::service::service_fn;
    /// use hyper_util::rt::TokioIo;
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer, RequestBody, Routes};
    /// use obskit::metrics::Registry;
    ///
    /// async fn hello(_req: Request<RequestBody<Incoming>>) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
    ///     Ok(Response::new(Full::from("hello")))
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = Registry::new();
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
    ///     .routes(Routes::new(["/hello"]).unwrap());
    /// let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    /// let addr = listener.local_addr().unwrap();
    /// let server = tokio::spawn(async move {
    ///     let (stream, _) = listener.accept().await.unwrap();
    ///     let service = layer.wrap_hyper(service_fn(hello));
    ///     http1::Builder::new().serve_connection(TokioIo::new(stream), service).await
    /// });
    ///
    /// // A bare hyper client, to keep the example self-contained.
    /// let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    /// let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
    /// tokio::spawn(conn);
    /// let request = Request::get("/hello").header("host", "localhost").body(Empty::<bytes::Bytes>::new()).unwrap();
    /// let response = sender.send_request(request).await.unwrap();
    /// assert_eq!(&response.into_body().collect().await.unwrap().to_bytes()[..], b"hello");
    /// drop(sender);
    /// server.await.unwrap().unwrap();
    ///
    /// assert!(registry.encode_text().contains(r#"http_requests_total{endpoint="/hello",method="GET",status="200"} 1"#));
    /// # }
    /// ```
    pub fn wrap_hyper<S>(&self, service: S) -> HttpMetricsService<S> {
        HttpMetricsService {
            inner: service,
            shared: Arc::clone(&self.shared),
        }
    }
}

impl<S> tower_layer::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;

    fn layer(&self, inner: S) -> HttpMetricsService<S> {
        self.wrap_hyper(inner)
    }
}

/// What a layer is configured with.
#[derive(Clone)]
struct Config {
    metrics: HttpMetrics,
    routes: Routes,
    excluded: Box<[Box<str>]>,
    exclude_admin: bool,
    insert_matched_route: bool,
    response_traceparent: bool,
}

/// What every service of one layer shares: immutable after construction except for the
/// once-initialised handle slots, so the request path takes no lock.
pub(crate) struct Shared {
    config: Config,
    handles: HandleTable,
}

impl Shared {
    fn new(config: Config) -> Arc<Shared> {
        // One row per template plus one for unmatched paths, one column per method label.
        let handles = HandleTable::new((config.routes.len() + 1) * METHOD_COUNT);
        Arc::new(Shared { config, handles })
    }

    pub(crate) fn metrics(&self) -> &HttpMetrics {
        &self.config.metrics
    }

    /// The `endpoint` label of route `index`; the index one past the last template is the
    /// unmatched row.
    pub(crate) fn endpoint(&self, index: usize) -> &str {
        self.config.routes.template(index).unwrap_or(UNMATCHED_ENDPOINT)
    }

    pub(crate) fn handles(&self, slot: usize) -> &Handles {
        self.handles.get(slot, || {
            Handles::resolve(
                &self.config.metrics,
                METHOD_LABELS[slot % METHOD_COUNT],
                self.endpoint(slot / METHOD_COUNT),
            )
        })
    }

    pub(crate) fn response_traceparent(&self) -> bool {
        self.config.response_traceparent
    }

    fn is_excluded(&self, path: &str) -> bool {
        // The admin question is the table's, asked as the dispatcher asks it.
        (self.config.exclude_admin && crate::admin::AdminRoute::find(path).is_some())
            || self.config.excluded.iter().any(|prefix| {
                path.strip_prefix(&**prefix)
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
            })
    }

    /// Matches the request, starts recording it unless it is excluded, and wraps its body.
    fn begin<B>(
        self: &Arc<Self>,
        mut request: Request<B>,
    ) -> (Request<RequestBody<B>>, Option<RequestGuard>) {
        let path = request.uri().path();
        let routes = &self.config.routes;
        // Off: routes are still matched (handlers read `MatchedRoute`), nothing is recorded.
        let excluded = self.is_excluded(path) || !crate::instrumentation::is_enabled();
        let (route, matched) = if self.config.insert_matched_route {
            let matched = routes.find(path);
            (matched.as_ref().map(MatchedRoute::index), matched)
        } else if excluded {
            (None, None)
        } else {
            (routes.index_of(path), None)
        };
        let recording = (!excluded).then(|| self.start_recording(&request, route));
        let body_timer = request
            .extensions_mut()
            .remove::<crate::serve::BodyTimeout>()
            .map(crate::serve::BodyTimeout::timer);
        if let Some(matched) = matched {
            request.extensions_mut().insert(matched);
        }
        match recording {
            Some((size, guard, remote)) => {
                if let Some(remote) = remote {
                    // For handlers that call other services: `tracestate` and `baggage` go on.
                    request.extensions_mut().insert(remote);
                }
                (
                    request.map(|body| RequestBody::recording(body, size).with_timer(body_timer)),
                    Some(guard),
                )
            }
            None => (
                request.map(|body| RequestBody::new(body).with_timer(body_timer)),
                None,
            ),
        }
    }

    /// Resolves the request's handles, opens its span (a child of the caller's, from the
    /// propagation headers, which are read only while spans are recorded) and counts it in
    /// flight.
    fn start_recording<B>(
        self: &Arc<Self>,
        request: &Request<B>,
        route: Option<usize>,
    ) -> (RequestSize, RequestGuard, Option<RemoteContext>) {
        let routes = &self.config.routes;
        let method = method_index(request.method());
        let slot = route.unwrap_or(routes.len()) * METHOD_COUNT + method;
        let handles = self.handles(slot);
        let template = route.and_then(|r| routes.template(r));
        let remote = if trace::is_enabled() {
            Some(RemoteContext::extract(request.headers())).filter(|r| *r != RemoteContext::default())
        } else {
            None
        };
        let parent = remote.as_ref().and_then(|r| r.parent);
        let mut span = server_span(request.method(), method, template, request.uri().path(), parent);
        if span.is_recording() {
            request_attributes(&mut span, request);
        }
        let content_length = request
            .headers()
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        let size = RequestSize::new(handles.request_size.clone(), content_length);
        // Incremented here, decremented only by the guard's `Drop`: one to one.
        handles.in_flight.inc();
        (size, RequestGuard::new(Arc::clone(self), slot, span), remote)
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

/// The service [`HttpMetricsLayer`] makes: records each request it passes to `S`.
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
fn start<B, F>(
    shared: &Arc<Shared>,
    request: Request<B>,
    call: impl FnOnce(Request<RequestBody<B>>) -> F,
) -> ResponseFuture<F> {
    let (request, guard) = shared.begin(request);
    let inner = {
        let _entered = guard.as_ref().map(|g| g.span.enter());
        call(request)
    };
    ResponseFuture { inner, guard }
}

impl<S, ReqBody, ResBody> tower_service::Service<Request<ReqBody>> for HttpMetricsService<S>
where
    S: tower_service::Service<Request<RequestBody<ReqBody>>, Response = Response<ResBody>>,
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
    ResBody: Body,
{
    type Response = Response<ResponseBody<ResBody>>;
    type Error = S::Error;
    type Future = ResponseFuture<S::Future>;

    fn call(&self, request: Request<ReqBody>) -> Self::Future {
        start(&self.shared, request, |request| self.inner.call(request))
    }
}

pin_project_lite::pin_project! {
    /// The future of [`HttpMetricsService`]: the inner service's future, with the server span
    /// current while it is polled. Dropping it before it completes records the request as
    /// cancelled (status 499) and releases its in-flight count.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer, ResponseFuture};
    /// use tower::{Layer, Service};
    ///
    /// let registry = obskit::metrics::Registry::new();
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap());
    /// let mut service = layer.layer(tower::service_fn(|_req: http::Request<_>| async {
    ///     std::future::pending::<Result<http::Response<http_body_util::Empty<bytes::Bytes>>, std::convert::Infallible>>().await
    /// }));
    /// let future: ResponseFuture<_> = service.call(http::Request::new(http_body_util::Empty::<bytes::Bytes>::new()));
    /// drop(future); // the client went away
    /// let text = registry.encode_text();
    /// assert!(text.contains(r#"http_requests_in_flight{endpoint="unmatched",method="GET"} 0"#));
    /// assert!(text.contains(r#"http_requests_total{endpoint="unmatched",method="GET",status="499"} 1"#));
    /// ```
    pub struct ResponseFuture<F> {
        #[pin]
        inner: F,
        guard: Option<RequestGuard>,
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("recording", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

impl<F, B, E> Future for ResponseFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    B: Body,
{
    type Output = Result<Response<ResponseBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let result = {
            let _entered = this.guard.as_ref().map(|g| g.span.enter());
            ready!(this.inner.poll(cx))
        };
        let mut guard = this.guard.take();
        match result {
            Ok(mut response) => {
                if let Some(guard) = &mut guard {
                    if let Some(traceparent) = guard.response_traceparent() {
                        response
                            .headers_mut()
                            .insert(propagation::TRACEPARENT, traceparent);
                    }
                    guard.outcome = Outcome::Response(response.status());
                    // A body that is already at its end is never polled by hyper (it is
                    // dropped after the head is written): that is a complete response.
                    guard.body_complete = response.body().is_end_stream();
                }
                Poll::Ready(Ok(response.map(|body| ResponseBody::new(body, guard))))
            }
            Err(error) => {
                if let Some(guard) = &mut guard {
                    guard.outcome = Outcome::ServiceError;
                }
                // Dropping the guard here records the request as a 500.
                drop(guard);
                Poll::Ready(Err(error))
            }
        }
    }
}
