//! Serving: [`Obskit::serve`] runs the service and, when configured, the admin listener, on
//! obskit's hardened accept loop ([`crate::serve::Server`]).

use std::error::Error as StdError;
use std::future::Future;

use bytes::Bytes;
use http::{Request, Response};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::Service;
use tokio::net::TcpListener;

use super::{AdminListener, Obskit};
use crate::admin::Dispatch;
use crate::http::RequestBody;

type BoxError = Box<dyn StdError + Send + Sync>;

impl Obskit {
    /// Serves `service` on `listener` with the RED layer and the admin surface until Ctrl-C
    /// (SIGINT) or SIGTERM, then shuts down gracefully.
    pub async fn serve<S, B>(&self, listener: TcpListener, service: S) -> std::io::Result<()>
    where
        S: Service<Request<RequestBody<Incoming>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        self.serve_with_shutdown(listener, service, shutdown_signal())
            .await
    }

    /// Like [`Obskit::serve`], stopping when `shutdown` resolves.
    pub async fn serve_with_shutdown<S, B>(
        &self,
        listener: TcpListener,
        service: S,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()>
    where
        S: Service<Request<RequestBody<Incoming>>, Response = Response<B>> + Clone + Send + Sync + 'static,
        S::Future: Send + 'static,
        S::Error: Into<BoxError>,
        B: Body<Data = Bytes> + Send + 'static,
        B::Error: Into<BoxError>,
    {
        // The runtime that serves is the one `/metrics` reports.
        self.inner.runtime.watch_current();
        let (stop_admin, admin_stopped) = tokio::sync::watch::channel(false);
        let admin_task = match self.inner.settings.admin_listener {
            AdminListener::SamePort => None,
            AdminListener::Separate(addr) => {
                let admin_listener = TcpListener::bind(addr).await?;
                let admin = self.inner.admin.service();
                let layered = self.inner.layer.wrap_hyper(admin);
                let server = self.inner.server.clone();
                let mut stopped = admin_stopped.clone();
                Some(tokio::spawn(async move {
                    let until = async move {
                        let _ = stopped.wait_for(|stop| *stop).await;
                    };
                    server.serve(admin_listener, layered, until).await
                }))
            }
        };
        let admin = match self.inner.settings.admin_listener {
            AdminListener::SamePort => Some(self.inner.admin.clone()),
            AdminListener::Separate(_) => None,
        };
        let dispatch = Dispatch {
            admin,
            inner: service,
        };
        // With the admin surface on a listener of its own, the service port's paths are all the
        // service's, `/metrics` included: none is excluded from its RED metrics there.
        let layer = match self.inner.settings.admin_listener {
            AdminListener::SamePort => self.inner.layer.clone(),
            AdminListener::Separate(_) => self.inner.layer.clone().exclude_admin(false),
        };
        let layered = layer.wrap_hyper(dispatch);
        let result = self.inner.server.clone().serve(listener, layered, shutdown).await;
        let _ = stop_admin.send(true);
        if let Some(task) = admin_task {
            let _ = task.await;
        }
        // What the last requests traced and logged goes out before the process goes, within
        // bounds.
        self.flush_traces(self.inner.settings.shutdown_timeout).await;
        self.flush_logs(self.inner.settings.shutdown_timeout).await;
        result
    }
}

/// Resolves on Ctrl-C (SIGINT) or, on Unix, SIGTERM (what orchestrators send).
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}
