//! On a port the admin surface shares with the service: each request goes to one or the other,
//! decided by one lookup in [`ADMIN_ROUTES`](super::ADMIN_ROUTES).

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{Either, Full};
use hyper::service::Service;

use super::{AdminRoute, AdminSurface};

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
        let Some(admin) = &self.admin else {
            return DispatchFuture::Inner {
                future: self.inner.call(request),
            };
        };
        // The one decision for this request: the admin surface answers the route it was given
        // and does not look again.
        match AdminRoute::find(request.uri().path()) {
            Some(route) => {
                let admin = admin.clone();
                DispatchFuture::Admin {
                    future: Box::pin(async move { admin.serve(route, request).await }),
                }
            }
            None => DispatchFuture::Inner {
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

#[cfg(test)]
mod tests {
    use std::convert::Infallible;

    use http_body_util::BodyExt;

    use super::*;
    use crate::health::HealthChecks;
    use crate::metrics::Registry;

    /// A service that answers `service:{path}`.
    #[derive(Clone, Copy)]
    struct Echo;

    impl<RB> Service<Request<RB>> for Echo {
        type Response = Response<Full<Bytes>>;
        type Error = Infallible;
        type Future = std::future::Ready<Result<Response<Full<Bytes>>, Infallible>>;

        fn call(&self, request: Request<RB>) -> Self::Future {
            let body = format!("service:{}", request.uri().path());
            std::future::ready(Ok(Response::new(Full::new(Bytes::from(body)))))
        }
    }

    async fn body_of<S>(service: &S, path: &str) -> (u16, String)
    where
        S: Service<Request<()>, Response = Response<Either<Full<Bytes>, Full<Bytes>>>, Error = Infallible>,
    {
        let response = service.call(Request::get(path).body(()).unwrap()).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    fn admin() -> AdminSurface {
        AdminSurface::new(Registry::new(), HealthChecks::new("t", "0"))
    }

    #[tokio::test]
    async fn only_table_paths_reach_the_admin_surface() {
        let dispatch = Dispatch {
            admin: Some(admin()),
            inner: Echo,
        };
        for path in [
            "/health/deep",
            "/debug-info",
            "/debug/unknown",
            "/metricsfoo",
            "/api/x",
            "/",
        ] {
            assert_eq!(
                body_of(&dispatch, path).await,
                (200, format!("service:{path}")),
                "{path}"
            );
        }
        let (status, body) = body_of(&dispatch, "/health/live").await;
        assert_eq!(status, 200);
        assert!(body.contains("\"status\""), "{body}");
        // Protected, and this request has no peer address: refused by the admin surface, not
        // passed on.
        let (status, body) = body_of(&dispatch, "/debug/config").await;
        assert_eq!(status, 403, "{body}");
        // Without an admin surface, every path is the service's.
        let plain = Dispatch {
            admin: None,
            inner: Echo,
        };
        assert_eq!(
            body_of(&plain, "/health/live").await,
            (200, "service:/health/live".to_string())
        );
    }
}
