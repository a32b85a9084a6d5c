//! [`Obskit`]: the handle a service keeps, and what it gives access to.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::admin::AdminSurface;
use crate::debug::ConnectionStats;
use crate::health::{HealthChecks, HealthRefresher};
use crate::http::{HttpMetrics, HttpMetricsLayer};
use crate::metrics::Registry;
use crate::settings::Settings;

/// The observability of one service: its registry, RED layer, health checks and admin surface.
///
/// ```no_run
/// use std::convert::Infallible;
/// use http_body_util::Full;
/// use hyper::{body::{Bytes, Incoming}, Request, Response};
/// use obskit::http::RequestBody;
///
/// #[obskit::instrumented(skip(_req))]
/// async fn hello(_req: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
///     Ok(Response::new(Full::new(Bytes::from("hello"))))
/// }
///
/// #[tokio::main]
/// async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
///     let obskit = obskit::Obskit::builder()
///         .service("hello")
///         .version(env!("CARGO_PKG_VERSION"))
///         .routes(["/hello"])
///         .build()?;
///     let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
///     obskit.serve(listener, hyper::service::service_fn(hello)).await?;
///     Ok(())
/// }
/// ```
#[derive(Clone)]
pub struct Obskit {
    pub(super) inner: Arc<Inner>,
}

pub(super) struct Inner {
    /// What it was built with: `/debug/config` lists the same.
    pub(super) settings: Settings,
    pub(super) registry: Registry,
    pub(super) http: HttpMetrics,
    pub(super) layer: HttpMetricsLayer,
    pub(super) health: HealthChecks,
    pub(super) admin: AdminSurface,
    pub(super) connections: ConnectionStats,
    /// The accept loop's settings and metrics, for the service and the admin listener.
    pub(super) server: crate::serve::Server,
    /// The runtime `/metrics` reports (`tokio_*`): the one it was built in, then the one serving.
    pub(super) runtime: crate::metrics::runtime::RuntimeWatch,
    #[cfg(feature = "otlp")]
    pub(super) otlp: Option<Arc<crate::trace::OtlpSink>>,
    /// The process's logs, when obskit installed them.
    #[cfg(feature = "tracing-bridge")]
    pub(super) logs: Option<crate::log::Logs>,
    /// Keeps `obskit_health_status` fresh; dropping the last `Obskit` clone stops it.
    pub(super) _health_refresher: HealthRefresher,
}

impl fmt::Debug for Obskit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Obskit")
            .field("service", &self.inner.settings.service.name)
            .field("version", &self.inner.settings.service.version)
            .field("admin_listener", &self.inner.settings.admin_listener)
            .finish_non_exhaustive()
    }
}

impl Obskit {
    /// The service name (`service.name`).
    pub fn service(&self) -> &str {
        &self.inner.settings.service.name
    }

    /// The service version (`service.version`).
    pub fn version(&self) -> &str {
        &self.inner.settings.service.version
    }

    /// The registry: declare business metrics here.
    pub fn registry(&self) -> &Registry {
        &self.inner.registry
    }

    /// The health checks: register dependency checks here.
    pub fn health(&self) -> &HealthChecks {
        &self.inner.health
    }

    /// The HTTP RED metrics.
    pub fn http_metrics(&self) -> &HttpMetrics {
        &self.inner.http
    }

    /// The RED layer, for services served by other means (axum, tonic, your own loop).
    pub fn layer(&self) -> HttpMetricsLayer {
        self.inner.layer.clone()
    }

    /// The admin surface, for services served by other means.
    pub fn admin(&self) -> &AdminSurface {
        &self.inner.admin
    }

    /// Exports the spans queued so far, waiting at most `timeout`; true when done in time (or
    /// when nothing is exported). [`Obskit::serve`] does it when the server has stopped.
    pub async fn flush_traces(&self, timeout: Duration) -> bool {
        #[cfg(feature = "otlp")]
        if let Some(otlp) = self.inner.otlp.clone() {
            // The flush blocks a thread; a gRPC exporter needs this runtime meanwhile.
            return tokio::task::spawn_blocking(move || otlp.flush(timeout))
                .await
                .unwrap_or(false);
        }
        let _ = timeout;
        true
    }

    /// The process's logs ([`crate::log`]), when obskit installed them: their run-time level.
    #[cfg(feature = "tracing-bridge")]
    pub fn logs(&self) -> Option<&crate::log::Logs> {
        self.inner.logs.as_ref()
    }

    /// Writes the log records emitted so far, waiting at most `timeout`; true when done in
    /// time (or when obskit installed no logs). [`Obskit::serve`] does it when the server has
    /// stopped, after the spans' export.
    pub async fn flush_logs(&self, timeout: Duration) -> bool {
        #[cfg(feature = "tracing-bridge")]
        if let Some(logs) = self.inner.logs.clone() {
            return tokio::task::spawn_blocking(move || logs.flush(timeout))
                .await
                .unwrap_or(false);
        }
        let _ = timeout;
        true
    }

    /// The accept loop [`Obskit::serve`] uses: its settings, this registry's connection
    /// metrics and the connection counts. A service that serves obskit's layer with its own
    /// routing reuses it: `obskit.server().clone().serve(listener, service, shutdown)`.
    pub fn server(&self) -> &crate::serve::Server {
        &self.inner.server
    }

    /// What this service runs with: the builder's choices over the environment, resolved once
    /// (what `/debug/config` lists).
    pub fn settings(&self) -> &Settings {
        &self.inner.settings
    }

    /// Connection counts as the server keeps them.
    pub fn connections(&self) -> &ConnectionStats {
        &self.inner.connections
    }
}
