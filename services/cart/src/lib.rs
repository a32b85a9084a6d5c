//! The shop's cart service (port 8001): carts checked against the backend's stock, and checkout
//! through the backend (stock reservation) and the order service, served with obskit.
//!
//! [`run`] serves until its shutdown future resolves, so tests start the service in-process on
//! a port of their choosing; the binary calls it with Ctrl-C/SIGTERM.
//!
//! # Calls
//!
//! | call | success | failures |
//! | --- | --- | --- |
//! | `POST /cart-api/cart/{user_id}/add` `{product_id, quantity}` | 200 the cart | 404 unknown product, 409 not enough stock for the resulting line, 422, 503 backend unreachable |
//! | `GET /cart-api/cart/{user_id}` | 200 `{user_id, items: [{product_id, name, price, quantity}], total}` | 422 bad user id |
//! | `PUT /cart-api/cart/{user_id}/update` `{product_id, quantity}` | 200 the cart (0 removes the line) | 404 not in the cart, 409, 422, 503 |
//! | `POST /cart-api/cart/{user_id}/checkout` | 201 the order | 400 empty cart, 409 `stock_changed`, 502 bad answer / 503 no answer from the order service or the backend |
//!
//! A Bearer token, when sent, must be valid (401) and name the path's user (403); admins and
//! service tokens may act for anyone. `SHOP_REQUIRE_AUTH=true` makes the token mandatory on
//! every call (401 without); the default stays open for the seed's load test. The check is
//! [`shop_common::auth::OwnerGuard`], first thing in every handler. The cart calls the order
//! service with its own service token.
//!
//! A user id is 1 to 64 characters of ASCII letters, digits, `-`, `_` and `.` (422 otherwise);
//! a line holds 1 to [`MAX_LINE_QUANTITY`] units.
//!
//! # Checkout
//!
//! A saga (the `saga` module), journaled in the cart's store before any remote call and run in
//! a task of its own, so that a client that hangs up cuts nothing: the lines are reserved at
//! the backend under the checkout id (`POST /api/stock/reserve`, all or nothing, idempotent per
//! id, with a short-lived service token minted with the shared `JWT_SECRET`), the order is
//! created at the order service with the same id (one order per checkout id, ever), and the
//! ordered lines leave the cart. When the order cannot be created, the order service is first
//! made to refuse the checkout id for good (`POST /order-api/checkouts/{id}/abort`; if the
//! order exists after all, the checkout goes forward), then the reservation is released
//! (`POST /api/stock/release`, once per id) and the cart is kept: 503 when the order service
//! does not answer, 502 when it answers what the contract does not allow, 409 `stock_changed`
//! when the stock is short. A recovery sweep (the `recovery` module, at start and every
//! second) finishes what a crash or a silent service left unfinished. Calls of one user are
//! serialised in this process (the checkout's task holds the user's lock until it ends), so a
//! line added while a checkout runs is neither lost nor ordered by accident.
//!
//! # Abandonment
//!
//! A cart is *abandoned* when it holds lines and nothing happened to it for
//! [`Config::abandon_after`] (`CART_ABANDON_AFTER_SECONDS`, default 1800). What counts as
//! something happening: a line added, changed or removed, or a checkout attempted; viewing the
//! cart does not. Each idle period is counted once in `cart_abandonment_total{stage}`, with
//! `stage="checkout"` when the last thing that happened was a failed checkout attempt, and
//! `stage="browsing"` otherwise. A successful checkout empties the cart, which then cannot be
//! abandoned. A background sweeper (every quarter of `abandon_after`, at least every 100 ms)
//! claims the idle carts in the store, which marks them counted in the same transaction; the
//! activity (last time, checkout attempted, counted) lives in the store, so a restart neither
//! forgets idle carts nor counts them twice.
//!
//! # Metrics
//!
//! Besides obskit's RED and function metrics: `cart_items_added_total{category}` (units added,
//! by the product's category), `cart_checkout_total` (successful checkouts; the seed's
//! `user_id` label is dropped, one series per user would be unbounded),
//! `cart_abandonment_total{stage}`, and `cart_total_value`, a histogram of the order totals of
//! successful checkouts (buckets 10, 50, 100, 200, 500, 1000).
#![warn(missing_docs)]

mod handlers;
mod locks;
mod recovery;
mod saga;
mod upstream;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use obskit::metrics::{Counter, CounterVec, Histogram, Registry};
use obskit::names::{Metric, MetricKind};
use shop_common::auth::{require_auth_from, JwtKeys, OwnerGuard, REQUIRE_AUTH_ENV};
use shop_common::router::Router;
use shop_common::service::{BoxError, Lookup, Service, ServiceConfig, ServiceSpec};
use shop_common::store::Store;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The service name in metrics, spans and health reports (and the subject of its service
/// tokens).
pub const SERVICE_NAME: &str = shop_common::service::CART.service_name;
/// Environment variable with the idle time, in whole seconds, after which a cart with lines
/// counts as abandoned.
pub const ABANDON_AFTER_ENV: &str = "CART_ABANDON_AFTER_SECONDS";
/// [`Config::abandon_after`] when `CART_ABANDON_AFTER_SECONDS` is unset.
pub const DEFAULT_ABANDON_AFTER: Duration = Duration::from_secs(1800);
/// Most units one cart line may hold (more is refused with 422, whatever the stock).
pub const MAX_LINE_QUANTITY: i64 = 10_000;

/// How long the service tokens the cart mints for the backend live: long enough for one
/// checkout, short enough that a leaked one is soon useless.
const SERVICE_TOKEN_TTL: Duration = Duration::from_secs(300);

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// What every service is configured with (the kit's base). Its keys mint the cart's
    /// service tokens for the backend's stock calls; its upstreams name the backend and the
    /// order service.
    pub base: ServiceConfig,
    /// Idle time after which a cart with lines counts as abandoned.
    pub abandon_after: Duration,
    /// Whether every cart call needs a Bearer token (`SHOP_REQUIRE_AUTH`, default false).
    pub require_auth: bool,
}

impl Config {
    /// Parses `CART_ABANDON_AFTER_SECONDS`: a whole number of seconds from 1; unset or blank
    /// gives [`DEFAULT_ABANDON_AFTER`], anything else the default with a warning.
    ///
    /// ```
    /// use std::time::Duration;
    /// assert_eq!(cart::Config::abandon_after_from(Some("60")), Duration::from_secs(60));
    /// assert_eq!(cart::Config::abandon_after_from(None), cart::DEFAULT_ABANDON_AFTER);
    /// assert_eq!(cart::Config::abandon_after_from(Some("0")), cart::DEFAULT_ABANDON_AFTER);
    /// ```
    pub fn abandon_after_from(raw: Option<&str>) -> Duration {
        let Some(raw) = raw.map(str::trim).filter(|r| !r.is_empty()) else {
            return DEFAULT_ABANDON_AFTER;
        };
        match raw.parse::<u64>() {
            Ok(seconds) if seconds >= 1 => Duration::from_secs(seconds),
            _ => {
                tracing::warn!(
                    setting = ABANDON_AFTER_ENV,
                    value = raw,
                    using_seconds = DEFAULT_ABANDON_AFTER.as_secs(),
                    "not a whole number of seconds from 1; using the default"
                );
                DEFAULT_ABANDON_AFTER
            }
        }
    }
}

/// The cart as the service kit runs it: `shop_common::service::main::<cart::Cart>()`, with
/// `CART_ABANDON_AFTER_SECONDS` (default 1800) and `SHOP_REQUIRE_AUTH` (default false) besides
/// the kit's settings.
pub struct Cart;

impl Service for Cart {
    const SPEC: ServiceSpec = shop_common::service::CART;
    const TOKEN_TTL: Duration = SERVICE_TOKEN_TTL;
    type Config = Config;

    fn configure(base: ServiceConfig, lookup: Lookup<'_>) -> Result<Config, String> {
        Ok(Config {
            base,
            abandon_after: Config::abandon_after_from(lookup(ABANDON_AFTER_ENV).as_deref()),
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

/// Stages of `cart_abandonment_total`.
pub(crate) const STAGE_BROWSING: &str = "browsing";
/// See [`STAGE_BROWSING`].
pub(crate) const STAGE_CHECKOUT: &str = "checkout";

/// Buckets of `cart_total_value` (the seed's).
const TOTAL_VALUE_BUCKETS: &[f64] = &[10.0, 50.0, 100.0, 200.0, 500.0, 1000.0];

/// `cart_items_added_total{category}`.
pub const CART_ITEMS_ADDED_TOTAL: Metric = Metric {
    name: "cart_items_added_total",
    kind: MetricKind::Counter,
    help: "Units added to carts, by product category",
    labels: &["category"],
};
/// `cart_checkout_total`.
pub const CART_CHECKOUT_TOTAL: Metric = Metric {
    name: "cart_checkout_total",
    kind: MetricKind::Counter,
    help: "Successful checkouts",
    labels: &[],
};
/// `cart_abandonment_total{stage}`.
pub const CART_ABANDONMENT_TOTAL: Metric = Metric {
    name: "cart_abandonment_total",
    kind: MetricKind::Counter,
    help: "Carts with items left idle past the abandonment time, by the stage they were left in",
    labels: &["stage"],
};
/// `cart_total_value` (buckets `TOTAL_VALUE_BUCKETS`).
pub const CART_TOTAL_VALUE: Metric = Metric {
    name: "cart_total_value",
    kind: MetricKind::Histogram,
    help: "Order total of successful checkouts",
    labels: &[],
};

/// Every business metric the cart registers (beside obskit's own).
pub const METRICS: &[Metric] = &[
    CART_ITEMS_ADDED_TOTAL,
    CART_CHECKOUT_TOTAL,
    CART_ABANDONMENT_TOTAL,
    CART_TOTAL_VALUE,
];

/// The cart's business metrics. No label carries an identifier.
#[derive(Clone)]
pub(crate) struct Metrics {
    /// `cart_items_added_total{category}`: units added to carts.
    pub items_added: CounterVec,
    /// `cart_checkout_total`: successful checkouts.
    pub checkouts: Counter,
    /// `cart_abandonment_total{stage}`: carts counted as abandoned.
    pub abandonment: CounterVec,
    /// `cart_total_value`: order totals of successful checkouts.
    pub total_value: Histogram,
}

impl Metrics {
    fn declare(registry: &Registry) -> Result<Metrics, obskit::metrics::Error> {
        let metrics = Metrics {
            items_added: registry.counter_vec(
                CART_ITEMS_ADDED_TOTAL.name,
                CART_ITEMS_ADDED_TOTAL.help,
                CART_ITEMS_ADDED_TOTAL.labels,
            )?,
            checkouts: registry.counter(CART_CHECKOUT_TOTAL.name, CART_CHECKOUT_TOTAL.help)?,
            abandonment: registry.counter_vec(
                CART_ABANDONMENT_TOTAL.name,
                CART_ABANDONMENT_TOTAL.help,
                CART_ABANDONMENT_TOTAL.labels,
            )?,
            total_value: registry.histogram(
                CART_TOTAL_VALUE.name,
                CART_TOTAL_VALUE.help,
                TOTAL_VALUE_BUCKETS,
            )?,
        };
        // Both stages exist from the start, so that rate() sees a 0 before the first count.
        for stage in [STAGE_BROWSING, STAGE_CHECKOUT] {
            metrics.abandonment.with(&[stage]);
        }
        Ok(metrics)
    }
}

/// What every handler gets.
pub(crate) struct App {
    pub store: Store,
    pub jwt: JwtKeys,
    /// Who may act on which user's cart.
    pub guard: OwnerGuard,
    pub metrics: Metrics,
    pub body_limit: usize,
    pub client: reqwest::Client,
    pub backend_url: String,
    pub order_url: String,
    pub locks: locks::UserLocks,
}

fn router() -> Router<Arc<App>> {
    use handlers::*;
    Router::new()
        .route(Method::GET, "/cart-api/cart/{user_id}", get_cart)
        .route(Method::POST, "/cart-api/cart/{user_id}/add", add_item)
        .route(Method::PUT, "/cart-api/cart/{user_id}/update", update_item)
        .route(Method::POST, "/cart-api/cart/{user_id}/checkout", checkout)
}

/// The services the cart calls: the backend (products, stock) and the order service.
const CALLS: [ServiceSpec; 2] = [shop_common::service::BACKEND, shop_common::service::ORDER];

/// Opens the store, starts the abandonment sweeper and serves the cart service on `listener`
/// until `shutdown` resolves; the sweeper stops with it.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let base = &config.base;
    let store = base.open_store().await?;
    let metrics = Metrics::declare(&base.registry)?;
    let client = shop_common::client::service_client();
    let router = router();
    let obskit = base
        .obskit(&Cart::SPEC, env!("CARGO_PKG_VERSION"), router.templates(), &CALLS)
        .config_entry("abandon_after_seconds", config.abandon_after.as_secs_f64())
        .config_entry("auth.require", config.require_auth)
        .build()?;
    base.register_store_check(&obskit, &store);
    base.register_dependency_checks(&obskit, &client, &CALLS);

    let (stop_sweeper, sweeper_stopped) = watch::channel(false);
    let sweeper = tokio::spawn(sweep_abandoned(
        store.clone(),
        metrics.clone(),
        config.abandon_after,
        sweeper_stopped,
    ));
    let app = Arc::new(App {
        store,
        guard: OwnerGuard::new(config.base.jwt.clone(), config.require_auth),
        jwt: config.base.jwt,
        metrics,
        body_limit: config.base.body_limit,
        client,
        backend_url: config.base.upstreams.backend,
        order_url: config.base.upstreams.order,
        locks: locks::UserLocks::new(),
    });
    let recovery = tokio::spawn(recovery::run(Arc::clone(&app), stop_sweeper.subscribe()));
    let served = obskit
        .serve_with_shutdown(listener, router.into_service(app), shutdown)
        .await;
    let _ = stop_sweeper.send(true);
    let _ = sweeper.await;
    let _ = recovery.await;
    served?;
    Ok(())
}

/// Most carts claimed per store call; a sweep repeats until fewer come back.
const SWEEP_BATCH: u32 = 500;

/// How often the sweeper looks for abandoned carts: a quarter of `abandon_after` (so a cart is
/// counted at most a quarter late), at least 100 ms apart.
fn sweep_period(abandon_after: Duration) -> Duration {
    (abandon_after / 4).max(Duration::from_millis(100))
}

/// Counts abandoned carts until `stop` changes (or its sender is gone).
async fn sweep_abandoned(
    store: Store,
    metrics: Metrics,
    abandon_after: Duration,
    mut stop: watch::Receiver<bool>,
) {
    let mut ticker = tokio::time::interval(sweep_period(abandon_after));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One log line per run of failures, not one per tick.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let cutoff = shop_common::store::now_seconds() - abandon_after.as_secs_f64();
        loop {
            match store.claim_abandoned_carts(cutoff, SWEEP_BATCH).await {
                Ok(claimed) => {
                    failing = false;
                    for cart in &claimed {
                        let stage = if cart.checkout_attempted {
                            STAGE_CHECKOUT
                        } else {
                            STAGE_BROWSING
                        };
                        metrics.abandonment.with(&[stage]).inc();
                    }
                    if claimed.len() < SWEEP_BATCH as usize {
                        break;
                    }
                }
                Err(e) => {
                    if !failing {
                        tracing::warn!(error = %e, "abandoned carts not counted");
                    }
                    failing = true;
                    break;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lists_exactly_what_the_cart_registers() {
        let registry = Registry::new();
        let metrics = Metrics::declare(&registry).unwrap();
        metrics.items_added.with(&["books"]).inc();
        metrics.checkouts.inc();
        metrics.total_value.observe(42.0);
        shop_common::testing::assert_declares_exactly(&registry, METRICS);
    }

    #[test]
    fn the_sweep_period_is_a_quarter_of_the_idle_time_and_at_least_100_ms() {
        assert_eq!(sweep_period(Duration::from_secs(1800)), Duration::from_secs(450));
        assert_eq!(
            sweep_period(Duration::from_millis(200)),
            Duration::from_millis(100)
        );
    }

    #[test]
    fn abandon_after_is_whole_seconds_from_one() {
        assert_eq!(Config::abandon_after_from(Some(" 90 ")), Duration::from_secs(90));
        for raw in ["", "0", "-5", "1.5", "soon"] {
            let expected = DEFAULT_ABANDON_AFTER;
            assert_eq!(Config::abandon_after_from(Some(raw)), expected, "{raw:?}");
        }
    }
}
