//! Body wrappers: the request body counts what the handler reads, the response body carries the
//! request's guard to the end of the response.

use std::fmt;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Buf;
use http_body::{Body, Frame, SizeHint};

use super::guard::RequestGuard;
use super::metrics::CellHistogram;
use super::routes::MatchedRoute;
use crate::trace::Span;

pin_project_lite::pin_project! {
    /// The request body the inner service receives: the original body, counting the bytes the
    /// handler reads so that `http_request_size_bytes` is what was actually received.
    ///
    /// The size is recorded once: the bytes read when the handler reads the body to its end,
    /// otherwise (never read, read partly, failed) the `Content-Length` header, otherwise 0.
    /// It is recorded at the end of the body or when the body is dropped, and at once (as 0)
    /// for a body that is already at its end when the request arrives. Polling costs one
    /// addition per data frame.
    ///
    /// Handlers written against any [`Body`] need no change; a handler that names the type
    /// takes `Request<RequestBody<hyper::body::Incoming>>`.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use obskit::http::RequestBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // `RequestBody::new` records nothing: for calling a handler directly in a test.
    /// let body = RequestBody::new(Full::new(bytes::Bytes::from_static(b"hello")));
    /// let bytes = body.collect().await.unwrap().to_bytes();
    /// assert_eq!(&bytes[..], b"hello");
    /// # }
    /// ```
    pub struct RequestBody<B> {
        #[pin]
        inner: B,
        size: Option<RequestSize>,
        // The server's body read timeout (`crate::serve::BodyTimeout`), when served by one.
        timer: Option<crate::serve::BodyTimer>,
        // The layer's match, handed over in the body the layer wraps anyway: an extension
        // would cost up to three allocations a request (see `HttpMetricsLayer::insert_matched_route`).
        route: Option<MatchedRoute>,
    }
}

/// Records `http_request_size_bytes` exactly once: at the end of the body, or in `Drop`.
pub(crate) struct RequestSize {
    histogram: CellHistogram,
    content_length: Option<u64>,
    read: u64,
    recorded: bool,
}

impl RequestSize {
    pub(crate) fn new(histogram: CellHistogram, content_length: Option<u64>) -> RequestSize {
        RequestSize {
            histogram,
            content_length,
            read: 0,
            recorded: false,
        }
    }

    fn ended(&mut self) {
        if !self.recorded {
            self.recorded = true;
            self.histogram.observe(self.read);
        }
    }
}

impl Drop for RequestSize {
    fn drop(&mut self) {
        if !self.recorded {
            self.histogram.observe(self.content_length.unwrap_or(0));
        }
    }
}

impl<B> RequestBody<B> {
    /// Wraps `inner` without recording anything: what excluded paths get, and what a test
    /// that calls a handler directly can pass.
    ///
    /// ```
    /// let body = obskit::http::RequestBody::new(http_body_util::Empty::<bytes::Bytes>::new());
    /// assert!(http_body::Body::is_end_stream(&body));
    /// ```
    pub fn new(inner: B) -> RequestBody<B> {
        RequestBody {
            inner,
            size: None,
            timer: None,
            route: None,
        }
    }

    /// The body the layer hands to the inner service: its size recorded (`None`: not
    /// recorded, or nothing to read), under the server's body read timeout when served by one,
    /// with the layer's match. Built in one go: a body is moved with every builder step.
    pub(crate) fn wrapped(
        inner: B,
        size: Option<RequestSize>,
        timer: Option<crate::serve::BodyTimer>,
        route: Option<MatchedRoute>,
    ) -> RequestBody<B> {
        RequestBody {
            inner,
            size,
            timer,
            route,
        }
    }

    /// The route the request matched, set by [`HttpMetricsLayer`](super::HttpMetricsLayer):
    /// `None` when no template matched (answer 404), or for a body made with
    /// [`RequestBody::new`]. [`MatchedRoute::of`] reads it from a request.
    ///
    /// ```
    /// let body = obskit::http::RequestBody::new(http_body_util::Empty::<bytes::Bytes>::new());
    /// assert!(body.matched_route().is_none());
    /// ```
    pub fn matched_route(&self) -> Option<&MatchedRoute> {
        self.route.as_ref()
    }

    /// The wrapped body.
    ///
    /// ```
    /// let body = obskit::http::RequestBody::new(http_body_util::Full::new(bytes::Bytes::from("x")));
    /// assert_eq!(http_body::Body::size_hint(body.get_ref()).exact(), Some(1));
    /// ```
    pub fn get_ref(&self) -> &B {
        &self.inner
    }

    /// Unwraps the original body, for a handler that insists on its own body type (a
    /// `Service<Request<hyper::body::Incoming>>`, say). Counting stops here: the request size
    /// is recorded now, from `Content-Length` (or 0), exactly as if the body had been dropped
    /// unread.
    ///
    /// ```
    /// use http_body_util::Full;
    /// use obskit::http::RequestBody;
    /// let request = http::Request::new(RequestBody::new(Full::new(bytes::Bytes::from("x"))));
    /// let original: http::Request<Full<bytes::Bytes>> = request.map(RequestBody::into_inner);
    /// # drop(original);
    /// ```
    pub fn into_inner(self) -> B {
        // Dropping `size` records the fallback size.
        let RequestBody { inner, size, .. } = self;
        drop(size);
        inner
    }
}

impl<B> fmt::Debug for RequestBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("RequestBody");
        if let Some(size) = &self.size {
            s.field("read", &size.read)
                .field("content_length", &size.content_length);
        }
        s.finish_non_exhaustive()
    }
}

impl<B: Body> Body for RequestBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = inner.as_mut().poll_frame(cx);
        if let Some(timer) = this.timer {
            timer.observe(polled.is_pending(), cx);
        }
        if let Some(size) = this.size {
            match &polled {
                Poll::Ready(Some(Ok(frame))) => {
                    if let Some(data) = frame.data_ref() {
                        size.read += data.remaining() as u64;
                    }
                    // A consumer may stop at `is_end_stream` without polling for `None`
                    // (hyper itself does): that is reading to the end too.
                    if inner.is_end_stream() {
                        size.ended();
                    }
                }
                Poll::Ready(None) => size.ended(),
                Poll::Ready(Some(Err(_))) | Poll::Pending => {}
            }
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

pin_project_lite::pin_project! {
    /// The response body the layer returns: the service's body, carrying the request's
    /// recording to the end of the response.
    ///
    /// Duration, response size and the status count are recorded, the in-flight gauge
    /// decremented and the server span ended when this body ends, or when it is dropped first
    /// (the client went away, or hyper does not send a body: HEAD, 204, 304). So a streamed
    /// response is timed and sized in full. The server span is current while the body is
    /// polled, so work a streaming body does is attributed to the request.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// use obskit::metrics::Registry;
    /// use tower::{Layer, ServiceExt};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// let registry = Registry::new();
    /// let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap());
    /// let service = layer.layer(tower::service_fn(|_req: http::Request<_>| async {
    ///     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from_static(b"four"))))
    /// }));
    /// let request = http::Request::new(Full::<bytes::Bytes>::default());
    /// let response = service.oneshot(request).await.unwrap();
    /// // The request is still in flight until its body ends.
    /// assert!(registry.encode_text().contains("http_requests_in_flight{endpoint=\"unmatched\",method=\"GET\"} 1"));
    /// let body = response.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(&body[..], b"four");
    /// assert!(registry.encode_text().contains("http_response_size_bytes_sum{endpoint=\"unmatched\",method=\"GET\"} 4"));
    /// # }
    /// ```
    pub struct ResponseBody<B> {
        #[pin]
        inner: B,
        guard: Option<RequestGuard>,
    }
}

impl<B> ResponseBody<B> {
    pub(crate) fn new(inner: B, guard: Option<RequestGuard>) -> ResponseBody<B> {
        ResponseBody { inner, guard }
    }

    /// The wrapped body.
    ///
    /// ```
    /// # use http_body_util::Full;
    /// # use obskit::http::{HttpMetrics, HttpMetricsLayer};
    /// # use tower::{Layer, ServiceExt};
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// # let layer = HttpMetricsLayer::new(HttpMetrics::new(&obskit::metrics::Registry::new()).unwrap());
    /// # let service = layer.layer(tower::service_fn(|_req: http::Request<_>| async {
    /// #     Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(bytes::Bytes::from_static(b"four"))))
    /// # }));
    /// let response = service.oneshot(http::Request::new(Full::<bytes::Bytes>::default())).await.unwrap();
    /// let inner: &Full<bytes::Bytes> = response.body().get_ref();
    /// assert_eq!(http_body::Body::size_hint(inner).exact(), Some(4));
    /// # }
    /// ```
    pub fn get_ref(&self) -> &B {
        &self.inner
    }
}

impl<B> fmt::Debug for ResponseBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut s = f.debug_struct("ResponseBody");
        if let Some(guard) = &self.guard {
            s.field("bytes", &guard.response_bytes);
        }
        s.finish_non_exhaustive()
    }
}

impl<B: Body> Body for ResponseBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        let this = self.project();
        let mut inner = this.inner;
        let polled = {
            let _entered = this.guard.as_ref().and_then(RequestGuard::span).map(Span::enter);
            inner.as_mut().poll_frame(cx)
        };
        let Some(guard) = this.guard else {
            return polled;
        };
        let ended = match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    guard.response_bytes += data.remaining() as u64;
                }
                // hyper stops at `is_end_stream` after a frame and drops the body without
                // asking for `None`; ending here records before the last bytes are written.
                inner.is_end_stream()
            }
            Poll::Ready(None) => true,
            Poll::Ready(Some(Err(_))) => {
                guard.body_failed = true;
                true
            }
            Poll::Pending => false,
        };
        if ended {
            guard.body_complete = true;
            // Dropping the guard records the request.
            *this.guard = None;
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
