//! The shop's backend service (port 8000): categories, products, admin writes and restocking,
//! on the shared storage interface, served with obskit.
//!
//! [`run`] serves until its shutdown future resolves, so tests start the service in-process on
//! a port of their choosing; the binary calls it with Ctrl-C/SIGTERM.
#![warn(missing_docs)]

mod handlers;
mod seed;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use obskit::health::CheckOutcome;
use obskit::metrics::{CounterVec, Registry};
use shop_common::auth::JwtKeys;
use shop_common::router::Router;
use shop_common::store::{QueryMetrics, Store};
use tokio::net::TcpListener;

/// Environment variable with the port to listen on.
pub const PORT_ENV: &str = "BACKEND_PORT";
/// Port when `BACKEND_PORT` is unset.
pub const DEFAULT_PORT: u16 = 8000;
/// The service name in metrics, spans and health reports.
pub const SERVICE_NAME: &str = "backend-service";

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Directory of the database file (`backend.db`).
    pub data_dir: PathBuf,
    /// Keys that verify admin tokens (the user service mints them with the same secret).
    pub jwt: JwtKeys,
    /// Cap on request bodies; larger ones get 413.
    pub body_limit: usize,
    /// Registry for the service's metrics. [`run`] declares the business metrics in it, so a
    /// registry serves one run of the service per process: the binary uses the global one
    /// (which honours `OBSKIT_LABEL_LIMIT`), tests that start the service twice give each run
    /// a fresh [`Registry::new`]; `/metrics` shows the global function metrics of
    /// `#[instrumented]` beside a fresh one anyway.
    pub registry: Registry,
}

impl Config {
    /// The configuration from the environment: `SHOP_DATA_DIR` (default `./data`) and
    /// `JWT_SECRET` (random per start, with a warning, when unset), on the global registry.
    pub fn from_env() -> Config {
        Config {
            data_dir: shop_common::data_dir_from_env(),
            jwt: JwtKeys::from_env(Duration::from_secs(3600)),
            body_limit: shop_common::http::DEFAULT_BODY_LIMIT,
            registry: Registry::global().clone(),
        }
    }
}

/// The address to listen on: `$SHOP_LISTEN_HOST:$BACKEND_PORT`, default `127.0.0.1:8000`.
pub fn listen_addr_from_env() -> Result<SocketAddr, BoxError> {
    Ok(shop_common::listen_addr_from_env(PORT_ENV, DEFAULT_PORT)?)
}

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
        Ok(Metrics {
            product_views: registry.counter_vec(
                "product_views_total",
                "Product detail pages served, by category",
                &["category"],
            )?,
            category_requests: registry.counter_vec(
                "category_requests_total",
                "Product listings served, by requested category",
                &["category"],
            )?,
            admin_operations: registry.counter_vec(
                "admin_operations_total",
                "Successful admin operations on the catalogue",
                &["operation"],
            )?,
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
    let query_metrics = QueryMetrics::declare(&config.registry)?;
    let db_path = config.data_dir.join("backend.db");
    let store = Store::open_configured(&config.data_dir, "backend", query_metrics).await?;
    if store.seed_catalogue(seed::catalogue()).await? {
        eprintln!("{SERVICE_NAME}: seeded the catalogue in {}", db_path.display());
    }
    let metrics = Metrics::declare(&config.registry)?;
    let router = router();
    let obskit = obskit::Obskit::builder()
        .service(SERVICE_NAME)
        .version(env!("CARGO_PKG_VERSION"))
        .registry(config.registry.clone())
        .routes(router.templates())
        .config_entry("store.path", db_path.display())
        .config_entry("http.body_limit", config.body_limit)
        .build()?;
    let health_store = store.clone();
    obskit.health().register("database", move || {
        let store = health_store.clone();
        async move {
            match store.ping().await {
                Ok(()) => CheckOutcome::healthy().with_detail("store", "sqlite"),
                Err(e) => CheckOutcome::unhealthy(e.to_string()),
            }
        }
    });
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
