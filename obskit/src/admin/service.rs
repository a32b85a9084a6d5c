//! The admin surface as a service of its own, for tower and for hyper: what a separate admin
//! listener serves, and what a framework's router mounts (axum: `Router::fallback_service`).

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;

use super::AdminSurface;

/// Answers every request with the admin surface ([`AdminSurface::handle`]): the endpoints of
/// [`ADMIN_ROUTES`](super::ADMIN_ROUTES), and a JSON 404 for any other path. Made by
/// [`AdminSurface::service`]; cheap to clone.
///
/// Protected endpoints need the client's address in the request's extensions
/// ([`PeerAddr`](super::PeerAddr)), as obskit's server puts it; without it a loopback-only
/// surface refuses them (403), as it refuses anything it cannot place.
///
/// ```
/// use obskit::admin::{AdminSurface, PeerAddr};
/// use tower::ServiceExt;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// let admin = AdminSurface::new(obskit::metrics::Registry::new(), obskit::health::HealthChecks::new("demo", "1"));
/// let live = admin.service().oneshot(http::Request::get("/health/live").body(()).unwrap()).await.unwrap();
/// assert_eq!(live.status(), 200);
/// let other = admin.service().oneshot(http::Request::get("/api/products").body(()).unwrap()).await.unwrap();
/// assert_eq!(other.status(), 404);
/// let mut config = http::Request::get("/debug/config").body(()).unwrap();
/// config.extensions_mut().insert(PeerAddr("127.0.0.1:40000".parse().unwrap()));
/// assert_eq!(admin.service().oneshot(config).await.unwrap().status(), 200);
/// # }
/// ```
#[derive(Clone)]
pub struct AdminService {
    admin: AdminSurface,
}

/// The future of [`AdminService`]: the admin answer, never an error.
pub type AdminFuture = Pin<Box<dyn Future<Output = Result<Response<Full<Bytes>>, Infallible>> + Send>>;

impl AdminService {
    pub(super) fn new(admin: AdminSurface) -> AdminService {
        AdminService { admin }
    }

    fn answer<B: Send + 'static>(&self, request: Request<B>) -> AdminFuture {
        let admin = self.admin.clone();
        Box::pin(async move { Ok(admin.handle(request).await) })
    }
}

impl<B: Send + 'static> tower_service::Service<Request<B>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = AdminFuture;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: Request<B>) -> AdminFuture {
        self.answer(request)
    }
}

impl<B: Send + 'static> hyper::service::Service<Request<B>> for AdminService {
    type Response = Response<Full<Bytes>>;
    type Error = Infallible;
    type Future = AdminFuture;

    fn call(&self, request: Request<B>) -> AdminFuture {
        self.answer(request)
    }
}
