//! The response future of the service: the inner future, the request's guard handed on to the
//! response body when the head is ready.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use http::Response;
use http_body::Body;

use super::body::ResponseBody;
use super::guard::{Outcome, RequestGuard};
use crate::trace::{propagation, Span};

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

impl<F> ResponseFuture<F> {
    pub(crate) fn new(inner: F, guard: Option<RequestGuard>) -> ResponseFuture<F> {
        ResponseFuture { inner, guard }
    }
}

impl<F> fmt::Debug for ResponseFuture<F> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ResponseFuture")
            .field("recording", &self.guard.is_some())
            .finish_non_exhaustive()
    }
}

/// The inner future's poll while a CPU capture labels its samples: under the server span's
/// label, with the request's route. Out of line: the poll outside a capture stays as it was.
#[cold]
#[inline(never)]
fn poll_labelled<F: Future>(
    guard: Option<&RequestGuard>,
    inner: Pin<&mut F>,
    cx: &mut Context<'_>,
) -> Poll<F::Output> {
    match guard.and_then(|g| Some((g, g.span()?))) {
        Some((guard, span)) => span.poll_labelled(|| Some(guard.route()), || inner.poll(cx)),
        None => inner.poll(cx),
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
            let span = this.guard.as_ref().and_then(RequestGuard::span);
            let _entered = span.map(Span::enter);
            if crate::profile::labels::active() {
                ready!(poll_labelled(this.guard.as_ref(), this.inner, cx))
            } else {
                ready!(this.inner.poll(cx))
            }
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
                    if guard.http2 {
                        guard.grpc_code = super::grpc::status_code(response.headers());
                    }
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
