//! The shop's backend service (port 8000): categories, products, admin writes and restocking,
//! on the shared storage interface, served with obskit.
//!
//! [`run`] serves until its shutdown future resolves, so tests start the service in-process on
//! a port of their choosing; the binary calls it with Ctrl-C/SIGTERM.
#![warn(missing_docs)]

mod handlers;
mod seed;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use obskit::metrics::{CounterVec, Registry};
use obskit::names::{Metric, MetricKind};
use shop_common::auth::JwtKeys;
use shop_common::router::Router;
use shop_common::service::{BoxError, Lookup, Service, ServiceConfig, ServiceSpec};
use shop_common::store::Store;
use tokio::net::TcpListener;

/// The service name in metrics, spans and health reports.
pub const SERVICE_NAME: &str = shop_common::service::BACKEND.service_name;

/// How long the tokens it checks may live: the user service's, an hour.
const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// How the service runs: the kit's base, nothing of its own.
pub type Config = ServiceConfig;

/// The backend as the service kit runs it: `shop_common::service::main::<backend::Backend>()`.
pub struct Backend;

impl Service for Backend {
    const SPEC: ServiceSpec = shop_common::service::BACKEND;
    const TOKEN_TTL: Duration = TOKEN_TTL;
    type Config = Config;

    fn configure(base: ServiceConfig, _lookup: Lookup<'_>) -> Result<Config, String> {
        Ok(base)
    }

    fn run(
        config: Config,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        run(config, listener, shutdown)
    }
}

/// `product_views_total{category}`.
pub const PRODUCT_VIEWS_TOTAL: Metric = Metric {
    name: "product_views_total",
    kind: MetricKind::Counter,
    help: "Product detail pages served, by category",
    labels: &["category"],
};
/// `category_requests_total{category}`.
pub const CATEGORY_REQUESTS_TOTAL: Metric = Metric {
    name: "category_requests_total",
    kind: MetricKind::Counter,
    help: "Product listings served, by requested category",
    labels: &["category"],
};
/// `admin_operations_total{operation}`.
pub const ADMIN_OPERATIONS_TOTAL: Metric = Metric {
    name: "admin_operations_total",
    kind: MetricKind::Counter,
    help: "Successful admin operations on the catalogue",
    labels: &["operation"],
};

/// Every business metric the backend registers (beside obskit's own).
pub const METRICS: &[Metric] = &[
    PRODUCT_VIEWS_TOTAL,
    CATEGORY_REQUESTS_TOTAL,
    ADMIN_OPERATIONS_TOTAL,
];

/// The backend's business metrics. No label carries an identifier (product or user id):
/// identifiers would make one series per product or user.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// `product_views_total{category}`: product detail pages served.
    pub product_views: CounterVec,
    /// `category_requests_total{category}`: product listings served, by the category asked
    /// (`all` without one, `unknown` for a category that does not exist).
    pub category_requests: CounterVec,
    /// `admin_operations_total{operation}`: successful admin writes
    /// (`create`, `update`, `delete`, `restock`).
    pub admin_operations: CounterVec,
}

impl Metrics {
    fn declare(registry: &Registry) -> Result<Metrics, obskit::metrics::Error> {
        let counter_vec = |m: Metric| registry.counter_vec(m.name, m.help, m.labels);
        Ok(Metrics {
            product_views: counter_vec(PRODUCT_VIEWS_TOTAL)?,
            category_requests: counter_vec(CATEGORY_REQUESTS_TOTAL)?,
            admin_operations: counter_vec(ADMIN_OPERATIONS_TOTAL)?,
        })
    }
}

/// What every handler gets.
pub(crate) struct App {
    pub store: Store,
    pub jwt: JwtKeys,
    pub metrics: Metrics,
    pub body_limit: usize,
}

fn router() -> Router<Arc<App>> {
    use handlers::*;
    Router::new()
        .route(Method::GET, "/api/categories", list_categories)
        .route(Method::GET, "/api/products", list_products)
        .route(Method::POST, "/api/products", create_product)
        .route(Method::GET, "/api/products/{id}", get_product)
        .route(Method::PUT, "/api/products/{id}", update_product)
        .route(Method::DELETE, "/api/products/{id}", delete_product)
        .route(Method::POST, "/api/products/{id}/restock", restock_product)
        .route(Method::POST, "/api/stock/reserve", reserve_stock)
        .route(Method::POST, "/api/stock/release", release_stock)
}

/// Opens the store (seeding the catalogue on first start) and serves the backend on `listener`
/// until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let store = config.open_store().await?;
    let seeded = store.seed_catalogue(seed::catalogue()).await?;
    let metrics = Metrics::declare(&config.registry)?;
    let router = router();
    let mut obskit = config.obskit(&Backend::SPEC, env!("CARGO_PKG_VERSION"), router.templates(), &[]);
    // The product pages' objective is on their route: every method, measured by the RED layer.
    for objective in shop_common::objectives::ROUTES {
        obskit = obskit.route_objective(objective);
    }
    let obskit = obskit.build()?;
    // Told only now: the log goes through the logger that building obskit installed.
    if seeded {
        tracing::info!(store = %config.store, "seeded the catalogue");
    }
    config.register_store_check(&obskit, &store);
    let app = Arc::new(App {
        store,
        jwt: config.jwt,
        metrics,
        body_limit: config.body_limit,
    });
    obskit
        .serve_with_shutdown(listener, router.into_service(app), shutdown)
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lists_exactly_what_the_backend_registers() {
        let registry = Registry::new();
        let metrics = Metrics::declare(&registry).unwrap();
        metrics.product_views.with(&["books"]).inc();
        metrics.category_requests.with(&["all"]).inc();
        metrics.admin_operations.with(&["create"]).inc();
        shop_common::testing::assert_declares_exactly(&registry, METRICS);
    }
}
