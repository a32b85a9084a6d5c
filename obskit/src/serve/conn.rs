//! One connection's watch: which phase it is in (waiting for a head, busy, idle), the deadline
//! of that phase, the I/O wrapper that notices the first byte of a request and can fail the
//! connection, and the response body that marks the end of a request.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, OwnedSemaphorePermit};
use tokio::time::Instant;

use super::metrics::{CloseReason, ServerMetrics};
use crate::debug::ConnectionGuard;

/// How long a connection closed gracefully (idle timeout) or failed (body timeout) may take to
/// go before it is dropped.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(1);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Waiting for a complete request head, until the deadline.
    Head(Instant),
    /// At least one request in progress: no deadline (the body timeout watches bodies).
    Busy,
    /// No request in progress since a response ended, until the deadline.
    Idle(Instant),
    /// A body stalled: the connection fails, and is dropped at the deadline at the latest.
    Failed(Instant),
}

struct State {
    phase: Phase,
    in_flight: usize,
}

/// What the connection's task, its I/O, its request bodies and its responses share.
pub(crate) struct Shared {
    state: Mutex<State>,
    /// Mirrors `phase == Idle` for the read path, which must not take the lock per read.
    idle: AtomicBool,
    /// Set once the first request shows the connection is HTTP/2 (no head timeout after idle
    /// there: PINGs are bytes too).
    h2: AtomicBool,
    /// Set by a stalled body: reads and writes fail from then on, so hyper ends the connection
    /// and hands the handler's body an error.
    failed: AtomicBool,
    /// Wakes the connection's task when the phase changed.
    changed: Notify,
    head_timeout: Duration,
    idle_timeout: Duration,
    /// Held while anything of the connection lives (the I/O of an upgraded connection too).
    _permit: OwnedSemaphorePermit,
    _counted: ConnectionGuard,
    metrics: Option<ServerMetrics>,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some(metrics) = &self.metrics {
            metrics.open.dec();
        }
    }
}

impl Shared {
    pub(crate) fn new(
        head_timeout: Duration,
        idle_timeout: Duration,
        permit: OwnedSemaphorePermit,
        counted: ConnectionGuard,
        metrics: Option<ServerMetrics>,
    ) -> Arc<Shared> {
        if let Some(metrics) = &metrics {
            metrics.accepted.inc();
            metrics.open.inc();
        }
        Arc::new(Shared {
            state: Mutex::new(State {
                phase: Phase::Head(Instant::now() + head_timeout),
                in_flight: 0,
            }),
            idle: AtomicBool::new(false),
            h2: AtomicBool::new(false),
            failed: AtomicBool::new(false),
            changed: Notify::new(),
            head_timeout,
            idle_timeout,
            _permit: permit,
            _counted: counted,
            metrics,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        // The state is a pair of plain values, consistent after any panic: keep using it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn set_phase(&self, state: &mut State, phase: Phase) {
        state.phase = phase;
        self.idle
            .store(matches!(phase, Phase::Idle(_)), Ordering::Relaxed);
        self.changed.notify_one();
    }

    /// A request head arrived: the connection is busy until its response ends (the guard).
    pub(crate) fn request_started(self: &Arc<Self>, h2: bool) -> InFlight {
        if h2 {
            self.h2.store(true, Ordering::Relaxed);
        }
        let mut state = self.lock();
        state.in_flight += 1;
        if !matches!(state.phase, Phase::Busy | Phase::Failed(_)) {
            self.set_phase(&mut state, Phase::Busy);
        }
        InFlight {
            shared: Arc::clone(self),
        }
    }

    fn request_ended(&self) {
        let mut state = self.lock();
        state.in_flight = state.in_flight.saturating_sub(1);
        if state.in_flight == 0 && state.phase == Phase::Busy {
            let deadline = Instant::now() + self.idle_timeout;
            self.set_phase(&mut state, Phase::Idle(deadline));
        }
    }

    /// Bytes arrived on an idle HTTP/1 connection: the next head must be complete in time.
    fn bytes_arrived(&self) {
        if !self.idle.load(Ordering::Relaxed) || self.h2.load(Ordering::Relaxed) {
            return;
        }
        let mut state = self.lock();
        if matches!(state.phase, Phase::Idle(_)) {
            let deadline = Instant::now() + self.head_timeout;
            self.set_phase(&mut state, Phase::Head(deadline));
        }
    }

    /// A request body stalled past the body timeout: fail the connection.
    pub(crate) fn fail(&self) {
        self.failed.store(true, Ordering::Relaxed);
        let mut state = self.lock();
        if !matches!(state.phase, Phase::Failed(_)) {
            let deadline = Instant::now() + CLOSE_GRACE;
            self.set_phase(&mut state, Phase::Failed(deadline));
        }
    }

    pub(crate) fn has_failed(&self) -> bool {
        self.failed.load(Ordering::Relaxed)
    }

    /// The current deadline and what passing it means.
    pub(crate) fn deadline(&self) -> Option<(Instant, CloseReason)> {
        match self.lock().phase {
            Phase::Head(at) => Some((at, CloseReason::HeadTimeout)),
            Phase::Busy => None,
            Phase::Idle(at) => Some((at, CloseReason::IdleTimeout)),
            Phase::Failed(at) => Some((at, CloseReason::BodyTimeout)),
        }
    }

    /// Resolves when the phase changed since the last call.
    pub(crate) async fn changed(&self) {
        self.changed.notified().await;
    }

    pub(crate) fn record_close(&self, reason: CloseReason) {
        if let Some(metrics) = &self.metrics {
            metrics.closed(reason);
        }
    }
}

/// Keeps its connection busy: one request in progress, until its response body is done.
pub(crate) struct InFlight {
    shared: Arc<Shared>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.shared.request_ended();
    }
}

fn failed_error() -> io::Error {
    io::Error::new(io::ErrorKind::TimedOut, "request body timed out")
}

pin_project_lite::pin_project! {
    /// The connection's socket: notices the first bytes of a request after an idle spell, and
    /// fails once a body stalled.
    pub(crate) struct WatchedIo<I> {
        #[pin]
        inner: I,
        shared: Arc<Shared>,
    }
}

impl<I> WatchedIo<I> {
    pub(crate) fn new(inner: I, shared: Arc<Shared>) -> WatchedIo<I> {
        WatchedIo { inner, shared }
    }
}

impl<I: AsyncRead> AsyncRead for WatchedIo<I> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        if this.shared.has_failed() {
            return Poll::Ready(Err(failed_error()));
        }
        let before = buf.filled().len();
        let polled = this.inner.poll_read(cx, buf);
        if matches!(polled, Poll::Ready(Ok(()))) && buf.filled().len() > before {
            this.shared.bytes_arrived();
        }
        polled
    }
}

impl<I: AsyncWrite> AsyncWrite for WatchedIo<I> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        if this.shared.has_failed() {
            return Poll::Ready(Err(failed_error()));
        }
        this.inner.poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        if this.shared.has_failed() {
            return Poll::Ready(Err(failed_error()));
        }
        this.inner.poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.project().inner.poll_shutdown(cx)
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request counted in progress until it is done (ended,
    /// or dropped by hyper), so that the idle timeout starts when the answer has gone.
    pub(crate) struct TrackedBody<B> {
        #[pin]
        inner: B,
        in_flight: Option<InFlight>,
    }
}

impl<B> TrackedBody<B> {
    pub(crate) fn new(inner: B, in_flight: InFlight) -> TrackedBody<B> {
        TrackedBody {
            inner,
            in_flight: Some(in_flight),
        }
    }
}

impl<B> std::fmt::Debug for TrackedBody<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrackedBody").finish_non_exhaustive()
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_frame(cx);
        if matches!(polled, Poll::Ready(None) | Poll::Ready(Some(Err(_)))) {
            // Done: the connection may go idle now, even if hyper keeps the body a while.
            this.in_flight.take();
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
