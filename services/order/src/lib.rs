//! The shop's order service (port 8002): orders, their status history and the lifecycle that
//! advances them, on the shared storage interface, served with obskit.
//!
//! [`run`] serves until its shutdown future resolves, so tests start the service in-process on
//! a port of their choosing; the binary calls it with Ctrl-C/SIGTERM. Beside the HTTP calls it
//! runs the [`lifecycle`] task, which moves orders `CREATED -> PAID -> SHIPPED -> DELIVERED`
//! on a configurable clock so that a running shop produces the order metrics by itself.
//!
//! # Business metrics, and the labels they lost
//!
//! The seed declares `orders_created_total` with a `user_id` label and `order_status_changes`
//! with `status` and `order_id`. Both identifiers are dropped: every user and every order would
//! be a series of its own, which grows without bound with the shop's traffic (and obskit's
//! cardinality guard would fold them into an overflow series anyway). What the dashboards need
//! (creation rate, transitions by status, completion and delivery times) survives without them;
//! finding one order's history is what `GET /order-api/orders/{id}` is for.
//!
//! | metric | labels | recorded when |
//! | --- | --- | --- |
//! | `orders_created_total` | none | an order is created |
//! | `order_status_changes_total` | `status` (the status entered) | an order changes status, by a client or by the lifecycle task (creation is not a change) |
//! | `order_completion_seconds` | none (buckets 60, 120, 180, 300) | an order reaches `DELIVERED`: delivered at − created at |
//! | `delivery_time_seconds` | none (buckets 1800, 3600, 5400, 7200: the seed's 30 to 120 minutes) | an order reaches `DELIVERED`: delivered at − shipped at |
#![warn(missing_docs)]

mod handlers;
pub mod lifecycle;
mod restock;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use obskit::metrics::{Counter, CounterVec, Histogram, Registry};
use obskit::names::{Metric, MetricKind};
use shop_common::auth::{require_auth_from, OwnerGuard, REQUIRE_AUTH_ENV};
use shop_common::router::Router;
use shop_common::service::{BoxError, Lookup, Service, ServiceConfig, ServiceSpec};
use shop_common::store::{Order, Store};
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The service name in metrics, spans and health reports.
pub const SERVICE_NAME: &str = shop_common::service::ORDER.service_name;
/// Environment variable with the lifecycle step in seconds (a decimal number; `0` disables the
/// lifecycle task).
pub const LIFECYCLE_STEP_ENV: &str = "ORDER_LIFECYCLE_STEP_SECONDS";
/// Lifecycle step when `ORDER_LIFECYCLE_STEP_SECONDS` is unset or invalid.
pub const DEFAULT_LIFECYCLE_STEP: Duration = Duration::from_secs(60);

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// What every service is configured with (the kit's base). Its keys verify the Bearer
    /// tokens of order calls.
    pub base: ServiceConfig,
    /// Whether every order call needs a token (`SHOP_REQUIRE_AUTH`, default false); status
    /// changes need an admin token either way.
    pub require_auth: bool,
    /// How long an order stays in `CREATED`, `PAID` and `SHIPPED` before the lifecycle task
    /// moves it on; `None` disables the task (orders then move only through the API).
    pub lifecycle_step: Option<Duration>,
}

impl Config {
    /// The lifecycle step that the value of `ORDER_LIFECYCLE_STEP_SECONDS` asks for: unset or
    /// empty gives the default (60 s), `0` disables the task (`None`), a positive number of
    /// seconds is that step. Anything else (not a number, negative, too large) gives the
    /// default with a warning, so that a typo cannot stop the shop from starting.
    pub fn lifecycle_step_from(raw: Option<&str>) -> Option<Duration> {
        let raw = match raw.map(str::trim) {
            None | Some("") => return Some(DEFAULT_LIFECYCLE_STEP),
            Some(raw) => raw,
        };
        match raw.parse::<f64>() {
            Ok(0.0) => None,
            Ok(seconds) if seconds > 0.0 => match Duration::try_from_secs_f64(seconds) {
                Ok(step) => Some(step),
                Err(_) => {
                    tracing::warn!(
                        setting = LIFECYCLE_STEP_ENV,
                        value = raw,
                        using_seconds = DEFAULT_LIFECYCLE_STEP.as_secs(),
                        "too large; using the default"
                    );
                    Some(DEFAULT_LIFECYCLE_STEP)
                }
            },
            _ => {
                tracing::warn!(
                    setting = LIFECYCLE_STEP_ENV,
                    value = raw,
                    using_seconds = DEFAULT_LIFECYCLE_STEP.as_secs(),
                    "not a number of seconds (0 disables the lifecycle); using the default"
                );
                Some(DEFAULT_LIFECYCLE_STEP)
            }
        }
    }
}

/// The order service as the service kit runs it: `shop_common::service::main::<order::Orders>()`,
/// with `ORDER_LIFECYCLE_STEP_SECONDS` (default 60, `0` disables) and `SHOP_REQUIRE_AUTH`
/// (default false) besides the kit's settings.
pub struct Orders;

impl Service for Orders {
    const SPEC: ServiceSpec = shop_common::service::ORDER;
    /// Tokens are the user service's: an hour.
    const TOKEN_TTL: Duration = Duration::from_secs(3600);
    type Config = Config;

    fn configure(base: ServiceConfig, lookup: Lookup<'_>) -> Result<Config, String> {
        Ok(Config {
            base,
            lifecycle_step: Config::lifecycle_step_from(lookup(LIFECYCLE_STEP_ENV).as_deref()),
            require_auth: require_auth_from(lookup(REQUIRE_AUTH_ENV).as_deref()),
        })
    }

    fn run(
        config: Config,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        run(config, listener, shutdown)
    }
}

/// Bucket bounds of `order_completion_seconds` (the seed's).
const COMPLETION_BUCKETS: &[f64] = &[60.0, 120.0, 180.0, 300.0];
/// Bucket bounds of `delivery_time_seconds`: the seed's 30, 60, 90 and 120 minutes. The seed named
/// the metric `delivery_time_minutes`; Prometheus wants base units (`promtool check metrics`
/// flags `_minutes`), so the time is recorded in seconds and the buckets say the same minutes.
const DELIVERY_BUCKETS: &[f64] = &[1800.0, 3600.0, 5400.0, 7200.0];

/// `orders_created_total`.
pub const ORDERS_CREATED_TOTAL: Metric = Metric {
    name: "orders_created_total",
    kind: MetricKind::Counter,
    help: "Orders created",
    labels: &[],
};
/// `order_status_changes_total{status}`.
pub const ORDER_STATUS_CHANGES_TOTAL: Metric = Metric {
    name: "order_status_changes_total",
    kind: MetricKind::Counter,
    help: "Order status changes, by the status entered",
    labels: &["status"],
};
/// `order_completion_seconds` (buckets `COMPLETION_BUCKETS`).
pub const ORDER_COMPLETION_SECONDS: Metric = Metric {
    name: "order_completion_seconds",
    kind: MetricKind::Histogram,
    help: "Time from an order's creation to its delivery",
    labels: &[],
};
/// `delivery_time_seconds` (buckets `DELIVERY_BUCKETS`).
pub const DELIVERY_TIME_SECONDS: Metric = Metric {
    name: "delivery_time_seconds",
    kind: MetricKind::Histogram,
    help: "Time from an order's shipping to its delivery",
    labels: &[],
};

/// Every business metric the order service registers (beside obskit's own).
pub const METRICS: &[Metric] = &[
    ORDERS_CREATED_TOTAL,
    ORDER_STATUS_CHANGES_TOTAL,
    ORDER_COMPLETION_SECONDS,
    DELIVERY_TIME_SECONDS,
];

/// The order service's business metrics (see the crate documentation for why no label carries
/// a user or order id).
#[derive(Clone)]
pub(crate) struct Metrics {
    /// `orders_created_total`: orders created.
    pub orders_created: Counter,
    /// `order_status_changes_total{status}`: status changes, by the status entered.
    pub status_changes: CounterVec,
    /// `order_completion_seconds`: from creation to delivery.
    pub completion: Histogram,
    /// `delivery_time_seconds`: from shipping to delivery.
    pub delivery: Histogram,
}

impl Metrics {
    fn declare(registry: &Registry) -> Result<Metrics, obskit::metrics::Error> {
        Ok(Metrics {
            orders_created: registry.counter(ORDERS_CREATED_TOTAL.name, ORDERS_CREATED_TOTAL.help)?,
            status_changes: registry.counter_vec(
                ORDER_STATUS_CHANGES_TOTAL.name,
                ORDER_STATUS_CHANGES_TOTAL.help,
                ORDER_STATUS_CHANGES_TOTAL.labels,
            )?,
            completion: registry.histogram(
                ORDER_COMPLETION_SECONDS.name,
                ORDER_COMPLETION_SECONDS.help,
                COMPLETION_BUCKETS,
            )?,
            delivery: registry.histogram(
                DELIVERY_TIME_SECONDS.name,
                DELIVERY_TIME_SECONDS.help,
                DELIVERY_BUCKETS,
            )?,
        })
    }

    /// Records that `order` has just entered its current status (whoever moved it), with the
    /// completion and delivery times when that status is `DELIVERED`.
    pub fn record_transition(&self, order: &Order) {
        self.status_changes.with(&[&order.status]).inc();
        if order.status != lifecycle::DELIVERED {
            return;
        }
        // The entry just appended is the last; the shipping is the last SHIPPED before it.
        let Some(delivered_at) = order.history.last().map(|c| c.at) else {
            return;
        };
        self.completion
            .observe((delivered_at - order.created_at).max(0.0));
        if let Some(shipped_at) = order
            .history
            .iter()
            .rev()
            .find(|c| c.status == lifecycle::SHIPPED)
            .map(|c| c.at)
        {
            self.delivery.observe((delivered_at - shipped_at).max(0.0));
        }
    }
}

/// What every handler gets.
pub(crate) struct App {
    pub store: Store,
    /// Who may act on which user's orders.
    pub guard: OwnerGuard,
    pub metrics: Metrics,
    pub body_limit: usize,
    /// Verifies callers' tokens (aborting a checkout needs a service or admin token) and mints
    /// the service tokens of the restock calls.
    pub jwt: shop_common::auth::JwtKeys,
    pub client: reqwest::Client,
    /// Base URL of the backend (`BACKEND_URL`), where a cancelled order's stock goes back.
    pub backend_url: String,
}

fn router() -> Router<Arc<App>> {
    use handlers::*;
    Router::new()
        .route(Method::POST, "/order-api/orders", create_order)
        .route(Method::GET, "/order-api/orders/{id}", get_order)
        .route(Method::PUT, "/order-api/orders/{id}/status", set_status)
        .route(Method::GET, "/order-api/users/{user_id}/orders", user_orders)
        .route(
            Method::POST,
            "/order-api/checkouts/{checkout_id}/abort",
            abort_checkout,
        )
}

/// The service the order service calls: the backend, where a cancelled order's stock goes
/// back.
const CALLS: [ServiceSpec; 1] = [shop_common::service::BACKEND];

/// Opens the store, starts the lifecycle task (unless disabled) and serves the order service
/// on `listener` until `shutdown` resolves; the lifecycle task stops at the same moment.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let base = &config.base;
    let store = base.open_store().await?;
    let metrics = Metrics::declare(&base.registry)?;
    let router = router();
    let step = config
        .lifecycle_step
        .map(|s| format!("{} s", s.as_secs_f64()))
        .unwrap_or_else(|| "disabled".to_string());
    let obskit = base
        .obskit(
            &Orders::SPEC,
            env!("CARGO_PKG_VERSION"),
            router.templates(),
            &CALLS,
        )
        .config_entry("order.lifecycle_step", step)
        .config_entry("auth.require", config.require_auth)
        .build()?;
    base.register_store_check(&obskit, &store);

    // One stop signal for both the server and the lifecycle task: the server's shutdown future
    // raises it, and it is raised again after the server returns (an error included) so the
    // task never outlives `run`.
    let (stop_tx, stop_rx) = watch::channel(false);
    let stop_tx = Arc::new(stop_tx);
    let lifecycle_task = config.lifecycle_step.map(|step| {
        tokio::spawn(lifecycle::run(
            store.clone(),
            metrics.clone(),
            step,
            stop_rx.clone(),
        ))
    });
    let server_stop = Arc::clone(&stop_tx);
    let shutdown = async move {
        shutdown.await;
        server_stop.send_replace(true);
    };

    let app = Arc::new(App {
        store,
        guard: OwnerGuard::new(config.base.jwt.clone(), config.require_auth),
        metrics,
        body_limit: config.base.body_limit,
        jwt: config.base.jwt,
        client: shop_common::client::service_client(),
        backend_url: config.base.upstreams.backend,
    });
    let restock_task = tokio::spawn(restock::run(Arc::clone(&app), stop_rx.clone()));
    let served = obskit
        .serve_with_shutdown(listener, router.into_service(app), shutdown)
        .await;
    stop_tx.send_replace(true);
    if let Err(e) = restock_task.await {
        tracing::error!(error = %e, "the restock task failed");
    }
    if let Some(task) = lifecycle_task {
        // The task only ends by the signal; a join error means it panicked, which is logged
        // rather than turned into a failed shutdown.
        if let Err(e) = task.await {
            tracing::error!(error = %e, "the lifecycle task failed");
        }
    }
    served?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lists_exactly_what_the_order_service_registers() {
        let registry = Registry::new();
        let metrics = Metrics::declare(&registry).unwrap();
        metrics.orders_created.inc();
        metrics.status_changes.with(&[lifecycle::DELIVERED]).inc();
        metrics.completion.observe(90.0);
        metrics.delivery.observe(3600.0);
        shop_common::testing::assert_declares_exactly(&registry, METRICS);
    }
}
