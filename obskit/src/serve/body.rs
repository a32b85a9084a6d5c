//! The body read timeout: [`BodyTimeout`], the request extension a [`Server`](super::Server)
//! puts on every request, and [`TimedBody`], which applies it.

use std::fmt;
use std::future::Future as _;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use super::conn::Shared;

/// The body read timeout of one request and the connection it came on: a request extension
/// every request served by a [`Server`](super::Server) carries.
///
/// Obskit's [`RequestBody`](crate::http::RequestBody) applies it by itself, so the handlers of
/// [`Obskit::serve`](crate::Obskit::serve) need nothing. A service that reads
/// `Request<Incoming>` directly wraps the body with [`TimedBody::wrap_request`].
///
/// When a body read has waited longer than the timeout for its next piece, the connection
/// fails: the read then ends with the body's own error type (hyper's "connection error"), and
/// the connection is closed, counted as `reason="body_timeout"`.
#[derive(Clone)]
pub struct BodyTimeout {
    timeout: Duration,
    shared: Arc<Shared>,
}

impl fmt::Debug for BodyTimeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyTimeout")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl BodyTimeout {
    pub(crate) fn new(timeout: Duration, shared: Arc<Shared>) -> BodyTimeout {
        BodyTimeout { timeout, shared }
    }

    /// The timeout.
    pub fn duration(&self) -> Duration {
        self.timeout
    }

    /// A watch for one body.
    pub(crate) fn timer(self) -> BodyTimer {
        BodyTimer {
            timeout: self,
            sleep: None,
            armed: false,
        }
    }
}

/// Times one body's reads: armed at the first read that has to wait, disarmed by every piece
/// that arrives. The sleep is allocated once and reset afterwards.
pub(crate) struct BodyTimer {
    timeout: BodyTimeout,
    sleep: Option<Pin<Box<Sleep>>>,
    armed: bool,
}

impl BodyTimer {
    /// Called after each poll of the body with whether it was pending.
    pub(crate) fn observe(&mut self, pending: bool, cx: &mut Context<'_>) {
        if !pending {
            self.armed = false;
            return;
        }
        if self.timeout.shared.has_failed() {
            return;
        }
        if !self.armed {
            let deadline = Instant::now() + self.timeout.timeout;
            match &mut self.sleep {
                Some(sleep) => sleep.as_mut().reset(deadline),
                None => self.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
            }
            self.armed = true;
        }
        let Some(sleep) = &mut self.sleep else {
            return;
        };
        if sleep.as_mut().poll(cx).is_ready() {
            // The connection's reads now fail: hyper ends the body with its error and closes.
            self.armed = false;
            self.timeout.shared.fail();
        }
    }
}

impl fmt::Debug for BodyTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BodyTimer")
            .field("timeout", &self.timeout.timeout)
            .field("armed", &self.armed)
            .finish()
    }
}

pin_project_lite::pin_project! {
    /// A request body under the body read timeout of the [`Server`](super::Server) that
    /// received it (see [`BodyTimeout`]); without one, just the body.
    ///
    /// ```
    /// use http_body_util::{BodyExt, Full};
    /// use obskit::serve::TimedBody;
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() {
    /// // A request that did not come through a `Server` carries no timeout: nothing changes.
    /// let request = http::Request::new(Full::new(bytes::Bytes::from_static(b"hello")));
    /// let request = TimedBody::wrap_request(request);
    /// assert!(request.body().timeout().is_none());
    /// let bytes = request.into_body().collect().await.unwrap().to_bytes();
    /// assert_eq!(&bytes[..], b"hello");
    /// # }
    /// ```
    pub struct TimedBody<B> {
        #[pin]
        inner: B,
        timer: Option<BodyTimer>,
    }
}

impl<B> TimedBody<B> {
    /// `inner`, timed by `timeout` if there is one.
    pub fn new(inner: B, timeout: Option<BodyTimeout>) -> TimedBody<B> {
        TimedBody {
            inner,
            timer: timeout.map(BodyTimeout::timer),
        }
    }

    /// The request with its body timed by the [`BodyTimeout`] extension it carries (which is
    /// taken out of the extensions).
    pub fn wrap_request(mut request: Request<B>) -> Request<TimedBody<B>> {
        let timeout = request.extensions_mut().remove::<BodyTimeout>();
        request.map(|body| TimedBody::new(body, timeout))
    }

    /// The timeout applied, if any.
    pub fn timeout(&self) -> Option<Duration> {
        self.timer.as_ref().map(|t| t.timeout.timeout)
    }

    /// The wrapped body.
    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B> fmt::Debug for TimedBody<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TimedBody")
            .field("timer", &self.timer)
            .finish_non_exhaustive()
    }
}

impl<B: Body> Body for TimedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if let Some(timer) = this.timer {
            timer.observe(polled.is_pending(), cx);
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
