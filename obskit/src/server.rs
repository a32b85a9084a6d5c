//! Serving a hyper service with obskit around it: the accept loop, per-connection peer address,
//! connection counting, the admin surface on the same port, and graceful shutdown.

use std::convert::Infallible;
use std::error::Error as StdError;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use http_body_util::{Either, Full};
use hyper::body::Incoming;
use hyper::service::Service;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

use crate::admin::{AdminSurface, PeerAddr};
use crate::debug::ConnectionStats;

type BoxError = Box<dyn StdError + Send + Sync>;

/// How long a client may take to send a request head before the connection is closed
/// (a slow-loris guard).
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// How long graceful shutdown waits for open connections before giving up on them.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(10);

/// Routes admin paths to the admin surface and everything else to the service.
#[derive(Clone)]
pub(crate) struct Dispatch<S> {
    pub(crate) admin: Option<AdminSurface>,
    pub(crate) inner: S,
}

impl<S, RB, B> Service<Request<RB>> for Dispatch<S>
where
    S: Service<Request<RB>, Response = Response<B>>,
    RB: Send + 'static,
{
    type Response = Response<Either<Full<Bytes>, B>>;
    type Error = S::Error;
    type Future = DispatchFuture<S::Future>;

    fn call(&self, request: Request<RB>) -> Self::Future {
        match &self.admin {
            Some(admin) if AdminSurface::is_admin_path(request.uri().path()) => {
                let admin = admin.clone();
                DispatchFuture::Admin {
                    future: Box::pin(async move { admin.handle(request).await }),
                }
            }
            _ => DispatchFuture::Inner {
                future: self.inner.call(request),
            },
        }
    }
}

pin_project_lite::pin_project! {
    /// The future of [`Dispatch`]: the admin answer or the service's.
    #[project = DispatchProj]
    pub(crate) enum DispatchFuture<F> {
        Admin { future: Pin<Box<dyn Future<Output = Response<Full<Bytes>>> + Send>> },
        Inner { #[pin] future: F },
    }
}

impl<F, B, E> Future for DispatchFuture<F>
where
    F: Future<Output = Result<Response<B>, E>>,
{
    type Output = Result<Response<Either<Full<Bytes>, B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match self.project() {
            DispatchProj::Admin { future } => future.as_mut().poll(cx).map(|r| Ok(r.map(Either::Left))),
            DispatchProj::Inner { future } => future.poll(cx).map(|r| r.map(|r| r.map(Either::Right))),
        }
    }
}

/// Accepts connections until `shutdown` resolves, serving each with `service` (HTTP/1.1 and
/// HTTP/2), then waits up to ten seconds for open connections to finish.
pub(crate) async fn serve_loop<S, B>(
    listener: TcpListener,
    service: S,
    connections: ConnectionStats,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()>
where
    S: Service<Request<Incoming>, Response = Response<B>> + Clone + Send + Sync + 'static,
    S::Future: Send + 'static,
    S::Error: Into<BoxError>,
    B: Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    let graceful = GracefulShutdown::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(error) => {
                    // Running out of file descriptors must not end the server: back off, retry.
                    eprintln!("obskit: accept failed: {error}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        let _ = stream.set_nodelay(true);
        let connection_guard = connections.opened();
        let service = service.clone();
        let per_connection = hyper::service::service_fn(move |mut request: Request<Incoming>| {
            request.extensions_mut().insert(PeerAddr(peer));
            service.call(request)
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), per_connection)
            .into_owned();
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            // Errors here are per-connection (a client reset, a malformed request line): hyper
            // has already answered what could be answered.
            let _ = connection.await;
            drop(connection_guard);
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(SHUTDOWN_GRACE) => {}
    }
    Ok(())
}

/// The admin surface alone, as a service (for a separate admin listener).
pub(crate) fn admin_only(admin: AdminSurface) -> Dispatch<NotFound> {
    Dispatch {
        admin: Some(admin),
        inner: NotFound,
    }
}

/// Answers every request with a JSON 404: what a separate admin listener says to non-admin paths.
#[derive(Clone, Copy)]
pub(crate) struct NotFound;

impl<RB> Service<Request<RB>> for NotFound {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

    fn call(&self, _request: Request<RB>) -> Self::Future {
        std::future::ready(Ok(crate::admin::error(
            http::StatusCode::NOT_FOUND,
            "not_found",
            "this listener serves only the admin endpoints",
        )))
    }
}
