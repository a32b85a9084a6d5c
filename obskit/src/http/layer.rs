//! The layer: its configuration, and the services it makes (see `service.rs`).

use std::fmt;
use std::sync::Arc;

use super::metrics::HttpMetrics;
use super::routes::{RouteError, Routes};
use super::service::HttpMetricsService;
use super::shared::{Config, Shared};
use crate::objectives::RouteObjective;

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
                insert_matched_route: false,
                response_traceparent: false,
                template_from: None,
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

    /// Whether the [`MatchedRoute`](super::MatchedRoute) is also put into each request's
    /// extensions (default: no). The inner service always gets it in the request body
    /// ([`MatchedRoute::of`](super::MatchedRoute::of) reads either), which costs nothing beyond
    /// the match: parameter values up to 46 bytes in all are kept inline. Turn this on for an
    /// inner service that reads extensions only, behind a layer that replaces the body (an axum
    /// `Router` nested inside, say). The insert costs the entry's allocation, plus the extension
    /// map's two when the request has no extensions yet (obskit's own server has made the map
    /// already): 900 instructions a request, a third of the layer's cost. Either way a request
    /// costs the layer one allocation: its recording state, boxed because it would otherwise be
    /// copied through every future above the layer.
    ///
    /// ```
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer, Routes};
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap())
    ///     .routes(Routes::new(["/api/products/{id}"]).unwrap())
    ///     .insert_matched_route(true);
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

    /// Takes each request's route template from its extensions, where a framework that routed
    /// it first put it: for a layer that runs after routing, such as one added with axum's
    /// `Router::layer` (axum runs those once it has chosen the route, with `MatchedPath` in the
    /// extensions). `from` returns the template, or `None` when there is none (axum's fallback,
    /// say): such a request is matched against [`routes`](Self::routes) as usual, and is
    /// [`UNMATCHED_ENDPOINT`](super::UNMATCHED_ENDPOINT) when none matches.
    ///
    /// A template among the layer's routes is filed under that route; any other is learned the
    /// first time it is seen, up to [`LEARNED_TEMPLATES`](super::LEARNED_TEMPLATES) of them, so a
    /// framework's templates need not be declared twice. Past that bound requests count under
    /// `__overflow__`: `from` must return templates, never raw paths, and the bound keeps a
    /// wrong hook from growing the series without end. The inner service gets no
    /// [`MatchedRoute`](super::MatchedRoute) for such a request: the framework has its own.
    ///
    /// ```
    /// use std::convert::Infallible;
    /// use http_body_util::Full;
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// use tower::{Layer, ServiceExt};
    ///
    /// /// What a router puts in the extensions (axum: `axum::extract::MatchedPath`).
    /// #[derive(Clone)]
    /// struct Matched(&'static str);
    ///
    /// fn template(extensions: &http::Extensions) -> Option<&str> {
    ///     extensions.get::<Matched>().map(|m| m.0)
    /// }
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = obskit::metrics::Registry::new();
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap()).route_template_from(template);
    /// let service = layer.layer(tower::service_fn(|_req: http::Request<_>| async {
    ///     Ok::<_, Infallible>(http::Response::new(Full::<bytes::Bytes>::default()))
    /// }));
    /// let mut request = http::Request::get("/users/42").body(Full::<bytes::Bytes>::default()).unwrap();
    /// request.extensions_mut().insert(Matched("/users/{id}"));
    /// service.oneshot(request).await.unwrap();
    /// let text = registry.encode_text();
    /// assert!(text.contains(r#"http_requests_total{endpoint="/users/{id}",method="GET",status="200"} 1"#), "{text}");
    /// # }
    /// ```
    pub fn route_template_from(self, from: fn(&http::Extensions) -> Option<&str>) -> HttpMetricsLayer {
        self.reconfigure(|config| config.template_from = Some(from))
    }

    /// Binds a route's [objective](RouteObjective): the `http_requests_total` and
    /// `http_request_duration_seconds` series of its template carry the objective's labels
    /// (see [`RouteObjective`]). They are added when `/metrics` is scraped: a request costs
    /// nothing more. The binding is the metrics' ([`HttpMetrics`]), shared by their clones.
    ///
    /// Fails when the template is not among the layer's [`routes`](HttpMetricsLayer::routes)
    /// (set those first): its series would never exist.
    pub fn route_objective(self, objective: RouteObjective) -> Result<HttpMetricsLayer, RouteError> {
        let template = objective.template();
        if !self.get_routes().templates().any(|t| t == template) {
            return Err(RouteError::new(
                template,
                "an objective's route must be one of the layer's routes",
            ));
        }
        self.metrics()
            .set_route_objective(template, objective.objective());
        Ok(self)
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
        HttpMetricsService::new(service, Arc::clone(&self.shared))
    }
}

impl<S> tower_layer::Layer<S> for HttpMetricsLayer {
    type Service = HttpMetricsService<S>;

    fn layer(&self, inner: S) -> HttpMetricsService<S> {
        self.wrap_hyper(inner)
    }
}
