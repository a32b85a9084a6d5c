//! Hardened serving: the accept loop behind [`Obskit::serve`](crate::Obskit::serve) and its
//! admin listener, public for services that embed obskit's layer in their own server.
//!
//! A [`Server`] serves a hyper service (HTTP/1.1 and HTTP/2) on a listener under
//! [`ServerSettings`]:
//!
//! - a request-head timeout that starts at accept, so a connection that sends nothing is
//!   closed as surely as one that sends half a head (hyper's own header timeout starts only
//!   once the protocol is known, that is once bytes arrived), and that starts again at the
//!   first byte of each further request on a kept-alive connection;
//! - a body read timeout between two pieces of a request body ([`BodyTimeout`]);
//! - a keep-alive idle timeout;
//! - a cap on concurrent connections, taken before `accept()`: past it, new connections wait
//!   in the kernel's listen backlog instead of costing a task and buffers;
//! - head size and header count limits (`431`), and HTTP/2's stream, PING and reset-flood
//!   limits;
//! - a graceful shutdown that drains within a deadline, then closes what is left.
//!
//! Each request carries the client's address as a [`PeerAddr`] extension and its body timeout
//! as a [`BodyTimeout`] extension. What happens to connections is counted in
//! [`ServerMetrics`] when given.
//!
//! ```
//! use std::convert::Infallible;
//! use std::time::Duration;
//! use http_body_util::{BodyExt, Empty, Full};
//! use hyper::body::{Bytes, Incoming};
//! use hyper_util::rt::TokioIo;
//! use obskit::admin::PeerAddr;
//! use obskit::serve::{Server, ServerSettings};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! async fn hello(request: http::Request<Incoming>) -> Result<http::Response<Full<Bytes>>, Infallible> {
//!     let peer = request.extensions().get::<PeerAddr>().map(|p| p.0.ip().to_string());
//!     Ok(http::Response::new(Full::from(format!("hello {}", peer.unwrap_or_default()))))
//! }
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! let server = Server::new(ServerSettings::default().head_timeout(Duration::from_secs(5)));
//! let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
//! let serving = tokio::spawn(async move {
//!     let until = async move { let _ = stopped.await; };
//!     server.serve(listener, hyper::service::service_fn(hello), until).await
//! });
//!
//! let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
//! let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
//! tokio::spawn(conn);
//! let request = http::Request::get("/").header("host", "localhost").body(Empty::<Bytes>::new()).unwrap();
//! let response = sender.send_request(request).await.unwrap();
//! let body = response.into_body().collect().await.unwrap().to_bytes();
//! assert_eq!(&body[..], b"hello 127.0.0.1");
//!
//! drop(sender);
//! stop.send(()).unwrap();
//! serving.await.unwrap().unwrap();
//! # }
//! ```

mod body;
mod conn;
mod metrics;
mod settings;

use std::error::Error as StdError;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Semaphore};
use tokio::task::JoinSet;
use tokio::time::Instant;

pub use self::body::{BodyTimeout, TimedBody};
pub use self::metrics::{
    CloseReason, ServerMetrics, ACCEPT_ERRORS, CONNECTIONS_ACCEPTED, CONNECTIONS_CLOSED, CONNECTIONS_OPEN,
    CONNECTION_WAITS, CONNECTION_WAIT_SECONDS,
};
pub use self::settings::ServerSettings;
pub use crate::admin::PeerAddr;

pub(crate) use self::body::BodyTimer;

use self::conn::InFlight;
use self::conn::{Shared, TrackedBody, WatchedIo, CLOSE_GRACE};
use crate::debug::ConnectionStats;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long the accept loop pauses after a failed `accept()` (out of descriptors, say), so
/// that it does not spin.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Serves hyper services on listeners under [`ServerSettings`]. See the [module](self).
///
/// Cheap to clone; clones share the metrics and connection counts, not the connection cap:
/// each [`serve`](Server::serve) call has a cap of its own.
#[derive(Clone, Debug, Default)]
pub struct Server {
    settings: ServerSettings,
    metrics: Option<ServerMetrics>,
    connections: ConnectionStats,
}

impl Server {
    /// A server with these settings, recording no metrics.
    pub fn new(settings: ServerSettings) -> Server {
        Server {
            settings,
            metrics: None,
            connections: ConnectionStats::default(),
        }
    }

    /// Records connection metrics into `metrics`.
    pub fn metrics(mut self, metrics: ServerMetrics) -> Server {
        self.metrics = Some(metrics);
        self
    }

    /// Counts connections into `connections` (what `/debug/metrics` shows).
    pub fn connection_stats(mut self, connections: ConnectionStats) -> Server {
        self.connections = connections;
        self
    }

    /// The settings.
    pub fn settings(&self) -> &ServerSettings {
        &self.settings
    }

    fn builder(&self) -> auto::Builder<TokioExecutor> {
        let s = &self.settings;
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            // The head and idle timeouts are the connection watch's (from accept, which
            // hyper's cannot do, and distinct from each other).
            .header_read_timeout(None)
            .max_buf_size(s.max_header_bytes)
            .max_headers(s.max_headers);
        builder
            .http2()
            .timer(TokioTimer::new())
            .max_concurrent_streams(s.h2_max_concurrent_streams)
            .keep_alive_interval(s.h2_keep_alive_interval)
            .keep_alive_timeout(s.h2_keep_alive_timeout)
            .max_pending_accept_reset_streams(s.h2_max_pending_accept_reset_streams)
            .max_local_error_reset_streams(s.h2_max_local_error_reset_streams)
            .max_header_list_size(u32::try_from(s.max_header_bytes).unwrap_or(u32::MAX));
        builder
    }

    /// Accepts connections on `listener` until `shutdown` resolves, serving each with
    /// `service`; then stops accepting, asks every connection to finish (HTTP/1 after its
    /// current response, HTTP/2 with `GOAWAY`), waits up to the drain deadline, and closes the
    /// connections still open. Returns once every connection is gone.
    ///
    /// A failed `accept()` (out of descriptors) is counted and retried after a pause; it does
    /// not end the server.
    pub async fn serve<S, B>(
        &self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()>,
    ) -> std::io::Result<()>
    where
        S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        let builder = Arc::new(self.builder());
        let slots = Arc::new(Semaphore::new(self.settings.max_connections));
        let (stop, stopping) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut shutdown = std::pin::pin!(shutdown);
        'accept: loop {
            // A slot first: past the cap, connections wait in the kernel's backlog.
            let permit = match Arc::clone(&slots).try_acquire_owned() {
                Ok(permit) => permit,
                Err(_) => {
                    let waited = Instant::now();
                    if let Some(metrics) = &self.metrics {
                        metrics.waits.inc();
                    }
                    let permit = loop {
                        tokio::select! {
                            permit = Arc::clone(&slots).acquire_owned() => break permit,
                            Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                            () = &mut shutdown => break 'accept,
                        }
                    };
                    if let Some(metrics) = &self.metrics {
                        metrics.wait_seconds.observe(waited.elapsed().as_secs_f64());
                    }
                    // The semaphore is never closed.
                    let Ok(permit) = permit else { break 'accept };
                    permit
                }
            };
            let (stream, peer) = loop {
                tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(pair) => break pair,
                        Err(error) => {
                            if let Some(metrics) = &self.metrics {
                                metrics.accept_errors.inc();
                            }
                            eprintln!("obskit: accept failed: {error}");
                            tokio::time::sleep(ACCEPT_BACKOFF).await;
                        }
                    },
                    // Reap finished connections so the set stays as small as what is open.
                    Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
                    () = &mut shutdown => break 'accept,
                }
            };
            let shared = Shared::new(
                self.settings.head_timeout,
                self.settings.idle_timeout,
                permit,
                self.connections.opened(),
                self.metrics.clone(),
            );
            tasks.spawn(serve_connection(
                Arc::clone(&builder),
                stream,
                peer,
                service.clone(),
                self.settings.body_timeout,
                shared,
                stopping.clone(),
            ));
        }
        drop(listener);
        let _ = stop.send(true);
        let drained = tokio::time::timeout(self.settings.shutdown_drain, async {
            while tasks.join_next().await.is_some() {}
        })
        .await;
        if drained.is_err() {
            // Past the deadline: the connections left are cut (each counts as
            // `shutdown_deadline` as its task is dropped).
            tasks.shutdown().await;
        }
        Ok(())
    }
}

/// Serves one connection under its watch until it ends, times out or is cut.
async fn serve_connection<S, B>(
    builder: Arc<auto::Builder<TokioExecutor>>,
    stream: TcpStream,
    peer: std::net::SocketAddr,
    service: S,
    body_timeout: Duration,
    shared: Arc<Shared>,
    mut stopping: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let _ = stream.set_nodelay(true);
    let mut record = RecordClose {
        shared: Arc::clone(&shared),
        reason: None,
    };
    let per_request = PerRequest {
        service,
        shared: Arc::clone(&shared),
        peer,
        body_timeout,
    };
    let io = TokioIo::new(WatchedIo::new(stream, Arc::clone(&shared)));
    let connection = builder.serve_connection_with_upgrades(io, per_request);
    let mut connection = std::pin::pin!(connection);
    let mut draining = false;
    // After a graceful close was asked for a timeout's sake: when to give up and drop.
    let mut closing: Option<(Instant, CloseReason)> = None;
    let reason = loop {
        let deadline = closing.or_else(|| shared.deadline());
        tokio::select! {
            biased;
            result = connection.as_mut() => {
                break match (result, closing) {
                    _ if shared.has_failed() => CloseReason::BodyTimeout,
                    (_, Some((_, reason))) => reason,
                    (_, None) if draining => CloseReason::Shutdown,
                    (Ok(()), None) => CloseReason::Closed,
                    (Err(_), None) => CloseReason::Error,
                };
            }
            () = shared.changed() => {}
            () = sleep_until(deadline.map(|(at, _)| at)) => {
                let Some((_, reason)) = deadline else { continue };
                if closing.is_some() {
                    break reason;
                }
                // The phase may have moved on since the deadline was read.
                match shared.deadline() {
                    Some((at, CloseReason::IdleTimeout)) if at <= Instant::now() => {
                        // Nothing in progress: HTTP/1 closes at once, HTTP/2 says GOAWAY.
                        connection.as_mut().graceful_shutdown();
                        closing = Some((Instant::now() + CLOSE_GRACE, CloseReason::IdleTimeout));
                    }
                    Some((at, reason)) if at <= Instant::now() => break reason,
                    _ => {}
                }
            }
            _ = stopping.changed(), if !draining => {
                draining = true;
                connection.as_mut().graceful_shutdown();
            }
        }
    };
    record.reason = Some(reason);
}

async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Counts the connection's close once, with its reason, or as cut by the drain deadline when
/// its task is dropped before it decided.
struct RecordClose {
    shared: Arc<Shared>,
    reason: Option<CloseReason>,
}

impl Drop for RecordClose {
    fn drop(&mut self) {
        self.shared
            .record_close(self.reason.unwrap_or(CloseReason::ShutdownDeadline));
    }
}

/// The connection's service: marks each request in progress until its response body is done,
/// and gives it its client's address and body timeout.
struct PerRequest<S> {
    service: S,
    shared: Arc<Shared>,
    peer: std::net::SocketAddr,
    body_timeout: Duration,
}

impl<S, B> Service<Request<Incoming>> for PerRequest<S>
where
    S: Service<Request<Incoming>, Response = Response<B>>,
    S::Error: Into<BoxError>,
{
    type Response = Response<TrackedBody<B>>;
    type Error = BoxError;
    type Future = PerRequestFuture<S::Future>;

    fn call(&self, mut request: Request<Incoming>) -> Self::Future {
        let h2 = request.version() == http::Version::HTTP_2;
        let in_flight = self.shared.request_started(h2);
        request.extensions_mut().insert(PeerAddr(self.peer));
        request
            .extensions_mut()
            .insert(BodyTimeout::new(self.body_timeout, Arc::clone(&self.shared)));
        PerRequestFuture {
            future: self.service.call(request),
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`PerRequest`]: the service's, whose response body takes the request's
    /// in-progress mark over.
    struct PerRequestFuture<F> {
        #[pin]
        future: F,
        in_flight: Option<InFlight>,
    }
}

impl<F, B, E> Future for PerRequestFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
    E: Into<BoxError>,
{
    type Output = Result<Response<TrackedBody<B>>, BoxError>;

    fn poll(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        let this = self.project();
        let result = std::task::ready!(this.future.poll(cx));
        std::task::Poll::Ready(match (result, this.in_flight.take()) {
            (Ok(response), Some(in_flight)) => Ok(response.map(|body| TrackedBody::new(body, in_flight))),
            (Ok(_), None) => Err("response future polled after completion".into()),
            (Err(e), _) => Err(e.into()),
        })
    }
}
