//! The shop's user service (port 8003): registration, login with HS256 JWTs, the caller's
//! profile, and profiles aggregated from the order and cart services, served with obskit.
//!
//! [`run`] serves until its shutdown future resolves, so tests start the service in-process on
//! a port of their choosing; the binary calls it with Ctrl-C/SIGTERM.
//!
//! # Metrics
//!
//! Beside obskit's RED and function metrics, the service exports the seed's business metrics:
//!
//! | metric | labels |
//! | --- | --- |
//! | `user_registrations_total` | `role` (`customer`, `admin`) |
//! | `login_attempts_total` | `status` (`success`, `failure`) |
//! | `jwt_operations_total` | `operation` (`issue`, `verify`), `status` (`success`, `failure`) |
//! | `profile_aggregation_seconds` | none (histogram of the whole aggregation) |
//! | `user_password_hashes_total` | `outcome` (`completed`, `abandoned`, `rejected`) |
//! | `user_password_hash_queue_length` | none (gauge: hash jobs waiting for a worker) |
//! | `user_auth_throttled_total` | `reason` (`client_address`, `username`) |
//!
//! The seed labels `login_attempts_total` by `username` as well; that label is dropped. One
//! series per username is unbounded cardinality (every registration adds series that never go
//! away), a failed login would mint a series for whatever name a client types (an attacker
//! could fill the registry, and the cardinality guard would then drop the labels of real
//! series), and usernames are personal data that do not belong in a metrics store kept for
//! months and readable by everyone with dashboard access. Per-user login forensics belong in
//! logs or traces, not in a time series.
//!
//! # Password hashing and login throttling
//!
//! Every argon2 hash (registration, login, the bootstrap administrator) runs on a fixed pool of
//! workers fed by a bounded queue ([`HashSettings`]; see `hashing.rs` for why); a full queue is
//! a 503 with `Retry-After`, and a queued job whose client has gone is skipped. Logins are rate
//! limited per client address and per username ([`LoginLimits`]; see `throttle.rs`, which also
//! says how the client address is found behind the gateway): 429 with `Retry-After`.
//!
//! # Admin bootstrap
//!
//! With `SHOP_ADMIN_USERNAME` and `SHOP_ADMIN_PASSWORD` set (and optionally
//! `SHOP_ADMIN_EMAIL`), [`run`] creates that administrator at start when no user of that name
//! exists. Only administrators can create other administrators afterwards.
#![warn(missing_docs)]

mod allocator;
mod handlers;
mod hashing;
mod profile;
mod throttle;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

pub use hashing::{HashSettings, ARGON2_MEMORY_BYTES};
pub use throttle::{LoginLimits, Rate};

use http::Method;
use obskit::metrics::{buckets, CounterVec, Histogram, Registry};
use obskit::names::{Metric, MetricKind};
use shop_common::auth::{JwtKeys, ROLE_ADMIN, ROLE_CUSTOMER};
use shop_common::router::Router;
use shop_common::service::{BoxError, Lookup, Service, ServiceConfig, ServiceSpec};
use shop_common::store::{Store, StoreError};
use tokio::net::TcpListener;

/// The service name in metrics, spans and health reports.
pub const SERVICE_NAME: &str = shop_common::service::USER.service_name;

/// How long minted tokens live.
pub const TOKEN_TTL: Duration = Duration::from_secs(3600);

/// Environment variable with the bootstrap administrator's username.
pub const ADMIN_USERNAME_ENV: &str = "SHOP_ADMIN_USERNAME";
/// Environment variable with the bootstrap administrator's password.
pub const ADMIN_PASSWORD_ENV: &str = "SHOP_ADMIN_PASSWORD";
/// Environment variable with the bootstrap administrator's e-mail (optional).
pub const ADMIN_EMAIL_ENV: &str = "SHOP_ADMIN_EMAIL";

/// Shortest password accepted, at registration and for the bootstrap administrator.
pub const MIN_PASSWORD_CHARS: usize = 8;

/// The administrator [`run`] creates at start when no user of that name exists.
#[derive(Clone, PartialEq, Eq)]
pub struct AdminBootstrap {
    /// The administrator's username.
    pub username: String,
    /// The administrator's e-mail; `<username>@admin.invalid` when not configured.
    pub email: String,
    /// The administrator's password, hashed before it is stored and never logged.
    pub password: String,
}

impl fmt::Debug for AdminBootstrap {
    /// The password is redacted: `Config` is printed in logs and `/debug/config`-like places.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AdminBootstrap")
            .field("username", &self.username)
            .field("email", &self.email)
            .field("password", &"<redacted>")
            .finish()
    }
}

impl AdminBootstrap {
    /// The bootstrap administrator from `SHOP_ADMIN_USERNAME`, `SHOP_ADMIN_PASSWORD` and
    /// `SHOP_ADMIN_EMAIL` as `lookup` finds them; `None` unless both the username and the
    /// password are set.
    pub fn from_lookup(lookup: Lookup<'_>) -> Option<AdminBootstrap> {
        let var = |name: &str| {
            lookup(name)
                .map(|v| v.trim().to_string())
                .filter(|v| !v.is_empty())
        };
        let username = var(ADMIN_USERNAME_ENV)?;
        // The password is taken as given (not trimmed): spaces may be part of it.
        let password = lookup(ADMIN_PASSWORD_ENV).filter(|v| !v.is_empty())?;
        let email = var(ADMIN_EMAIL_ENV).unwrap_or_else(|| format!("{username}@admin.invalid"));
        Some(AdminBootstrap {
            username,
            email,
            password,
        })
    }
}

/// How the service runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// What every service is configured with (the kit's base). Its keys mint and verify
    /// tokens (the other services verify with the same secret); its upstreams name the order
    /// and cart services the profile aggregates.
    pub base: ServiceConfig,
    /// The administrator to create at start, if any.
    pub admin: Option<AdminBootstrap>,
    /// The argon2 pool's workers and queue.
    pub hashing: HashSettings,
    /// The login rate limits.
    pub login_limits: LoginLimits,
}

/// The user service as the service kit runs it: `shop_common::service::main::<user::Users>()`,
/// with the `SHOP_ADMIN_*` bootstrap variables, `USER_HASH_*` ([`HashSettings`]) and
/// `USER_LOGIN_*`/`USER_TRUSTED_PROXIES` ([`LoginLimits`]) besides the kit's settings, all read
/// once here; tokens live [`TOKEN_TTL`]. A value that cannot be used is an error naming the
/// variable.
pub struct Users;

impl Service for Users {
    const SPEC: ServiceSpec = shop_common::service::USER;
    const TOKEN_TTL: Duration = TOKEN_TTL;
    type Config = Config;

    fn configure(base: ServiceConfig, lookup: Lookup<'_>) -> Result<Config, String> {
        Ok(Config {
            base,
            admin: AdminBootstrap::from_lookup(lookup),
            hashing: HashSettings::from_env(&lookup).map_err(|e| e.to_string())?,
            login_limits: LoginLimits::from_env(&lookup).map_err(|e| e.to_string())?,
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

/// The services the user service calls: the order and cart services (the profile).
const CALLS: [ServiceSpec; 2] = [shop_common::service::ORDER, shop_common::service::CART];

/// `user_registrations_total{role}`.
pub const USER_REGISTRATIONS_TOTAL: Metric = Metric {
    name: "user_registrations_total",
    kind: MetricKind::Counter,
    help: "Users registered, by role",
    labels: &["role"],
};
/// `login_attempts_total{status}`.
pub const LOGIN_ATTEMPTS_TOTAL: Metric = Metric {
    name: "login_attempts_total",
    kind: MetricKind::Counter,
    help: "Login attempts, by outcome (success or failure)",
    labels: &["status"],
};
/// `jwt_operations_total{operation,status}`.
pub const JWT_OPERATIONS_TOTAL: Metric = Metric {
    name: "jwt_operations_total",
    kind: MetricKind::Counter,
    help: "JWT operations (issue, verify), by outcome",
    labels: &["operation", "status"],
};
/// `profile_aggregation_seconds`.
pub const PROFILE_AGGREGATION_SECONDS: Metric = Metric {
    name: "profile_aggregation_seconds",
    kind: MetricKind::Histogram,
    help: "Time to aggregate a user profile from the user, orders and cart",
    labels: &[],
};
/// `user_password_hashes_total{outcome}` (the hash pool's).
pub const USER_PASSWORD_HASHES_TOTAL: Metric = Metric {
    name: "user_password_hashes_total",
    kind: MetricKind::Counter,
    help: "Password hash jobs (argon2), by outcome: completed, abandoned (the client left before a worker was free), rejected (queue full, answered 503)",
    labels: &["outcome"],
};
/// `user_password_hash_queue_length` (the hash pool's).
pub const USER_PASSWORD_HASH_QUEUE_LENGTH: Metric = Metric {
    name: "user_password_hash_queue_length",
    kind: MetricKind::Gauge,
    help: "Password hash jobs waiting for a worker",
    labels: &[],
};
/// `user_auth_throttled_total{reason}` (the login throttle's).
pub const USER_AUTH_THROTTLED_TOTAL: Metric = Metric {
    name: "user_auth_throttled_total",
    kind: MetricKind::Counter,
    help: "Login attempts refused with 429 by a rate limit, by reason (client_address, username)",
    labels: &["reason"],
};

/// Every business metric the user service registers (beside obskit's own).
pub const METRICS: &[Metric] = &[
    USER_REGISTRATIONS_TOTAL,
    LOGIN_ATTEMPTS_TOTAL,
    JWT_OPERATIONS_TOTAL,
    PROFILE_AGGREGATION_SECONDS,
    USER_PASSWORD_HASHES_TOTAL,
    USER_PASSWORD_HASH_QUEUE_LENGTH,
    USER_AUTH_THROTTLED_TOTAL,
];

/// The user service's business metrics. No label carries an identifier or a username (see the
/// crate docs for why the seed's `username` label is dropped).
#[derive(Clone)]
pub(crate) struct Metrics {
    /// `user_registrations_total{role}`: users created, by role.
    pub registrations: CounterVec,
    /// `login_attempts_total{status}`: credential checks, `success` or `failure`.
    pub login_attempts: CounterVec,
    /// `jwt_operations_total{operation,status}`: tokens issued and verified.
    pub jwt_operations: CounterVec,
    /// `profile_aggregation_seconds`: how long aggregating a profile took.
    pub profile_aggregation: Histogram,
}

impl Metrics {
    fn declare(registry: &Registry) -> Result<Metrics, obskit::metrics::Error> {
        let metrics = Metrics {
            registrations: registry.counter_vec(
                USER_REGISTRATIONS_TOTAL.name,
                USER_REGISTRATIONS_TOTAL.help,
                USER_REGISTRATIONS_TOTAL.labels,
            )?,
            login_attempts: registry.counter_vec(
                LOGIN_ATTEMPTS_TOTAL.name,
                LOGIN_ATTEMPTS_TOTAL.help,
                LOGIN_ATTEMPTS_TOTAL.labels,
            )?,
            jwt_operations: registry.counter_vec(
                JWT_OPERATIONS_TOTAL.name,
                JWT_OPERATIONS_TOTAL.help,
                JWT_OPERATIONS_TOTAL.labels,
            )?,
            profile_aggregation: registry.histogram(
                PROFILE_AGGREGATION_SECONDS.name,
                PROFILE_AGGREGATION_SECONDS.help,
                buckets::HTTP_LATENCY_SECONDS,
            )?,
        };
        // Every label value is known in advance: create the series at 0 so that rates and
        // "failures / attempts" ratios exist before the first event.
        for role in [ROLE_CUSTOMER, ROLE_ADMIN] {
            metrics.registrations.with(&[role]);
        }
        for status in ["success", "failure"] {
            metrics.login_attempts.with(&[status]);
            for operation in ["issue", "verify"] {
                metrics.jwt_operations.with(&[operation, status]);
            }
        }
        Ok(metrics)
    }
}

/// What every handler gets.
pub(crate) struct App {
    pub store: Store,
    pub jwt: JwtKeys,
    pub metrics: Metrics,
    pub body_limit: usize,
    /// The pooled client for calls to the order and cart services.
    pub client: reqwest::Client,
    pub order_url: String,
    pub cart_url: String,
    /// Every argon2 hash runs here.
    pub hashing: hashing::HashPool,
    /// The login rate limits.
    pub throttle: throttle::LoginThrottle,
}

fn router() -> Router<Arc<App>> {
    use handlers::*;
    Router::new()
        .route(Method::POST, "/user-api/register", register)
        .route(Method::POST, "/user-api/login", login)
        .route(Method::GET, "/user-api/me", me)
        .route(Method::GET, "/user-api/users/{id}/profile", user_profile)
}

/// Creates the bootstrap administrator unless a user of that name exists.
async fn bootstrap_admin(
    store: &Store,
    hashing: &hashing::HashPool,
    admin: &AdminBootstrap,
) -> Result<(), BoxError> {
    if admin.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("{ADMIN_PASSWORD_ENV} must be at least {MIN_PASSWORD_CHARS} characters").into());
    }
    match store.user_by_username(&admin.username).await {
        Ok(user) => {
            if user.role != ROLE_ADMIN {
                tracing::warn!(
                    setting = ADMIN_USERNAME_ENV,
                    username = %admin.username,
                    "the bootstrap administrator names a user who is not an administrator; left unchanged"
                );
            }
            return Ok(());
        }
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let password = admin.password.clone();
    let hash = hashing
        .run(move || shop_common::auth::hash_password(&password))
        .await
        .map_err(|refused| format!("hashing the administrator's password: {refused:?}"))??;
    match store
        .create_user(&admin.username, &admin.email, &hash, ROLE_ADMIN)
        .await
    {
        Ok(_) => {
            tracing::info!(username = %admin.username, "created the administrator");
            Ok(())
        }
        // Another instance created it meanwhile, or the e-mail belongs to someone else.
        Err(StoreError::Conflict(what)) => {
            tracing::warn!(username = %admin.username, error = %what, "could not create the administrator");
            Ok(())
        }
        Err(e) => Err(e.into()),
    }
}

/// Opens the store, creates the bootstrap administrator if configured, and serves the user
/// service on `listener` until `shutdown` resolves.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), BoxError> {
    let malloc_tuned = allocator::return_freed_memory();
    let base = &config.base;
    let store = base.open_store().await?;
    let hashing = hashing::HashPool::start(config.hashing, &base.registry)?;
    let metrics = Metrics::declare(&base.registry)?;
    let throttle = throttle::LoginThrottle::new(&config.login_limits, &base.registry)?;
    let router = router();
    let obskit = base
        .obskit(
            &Users::SPEC,
            env!("CARGO_PKG_VERSION"),
            router.templates(),
            &CALLS,
        )
        .config_entry("jwt.ttl_seconds", base.jwt.ttl().as_secs())
        .config_entry("hash.workers", config.hashing.workers)
        .config_entry("hash.queue", config.hashing.queue)
        .config_entry("hash.memory_bound_bytes", config.hashing.memory_bound_bytes())
        .config_entry("login.per_address", rate_entry(config.login_limits.per_address))
        .config_entry("login.per_username", rate_entry(config.login_limits.per_username))
        .config_entry("login.limiter_table_bytes", config.login_limits.table_bytes)
        .config_entry(
            "login.trusted_proxies",
            trusted_entry(&config.login_limits.trusted_proxies),
        )
        .build()?;
    // After the build, which installed the logger, so that these lines are logged.
    if !malloc_tuned {
        tracing::warn!("glibc rejected the malloc tuning; freed hash memory may stay in the process");
    }
    if let Some(admin) = &config.admin {
        bootstrap_admin(&store, &hashing, admin).await?;
    }
    base.register_store_check(&obskit, &store);
    // One pooled client for every outgoing call (the health checks' and the handlers').
    let client = shop_common::client::service_client();
    base.register_dependency_checks(&obskit, &client, &CALLS);
    let app = Arc::new(App {
        store,
        jwt: config.base.jwt,
        metrics,
        body_limit: config.base.body_limit,
        client,
        order_url: config.base.upstreams.order,
        cart_url: config.base.upstreams.cart,
        hashing,
        throttle,
    });
    obskit
        .serve_with_shutdown(listener, router.into_service(app), shutdown)
        .await?;
    Ok(())
}

/// A rate as `/debug/config` shows it: `30 then 1/2s`.
fn rate_entry(rate: Rate) -> String {
    format!("{} then 1/{:?}", rate.burst, rate.refill)
}

/// The trusted proxies as `/debug/config` shows them: loopback always, then the listed ones.
fn trusted_entry(proxies: &[std::net::IpAddr]) -> String {
    std::iter::once("loopback".to_string())
        .chain(proxies.iter().map(|ip| ip.to_string()))
        .collect::<Vec<_>>()
        .join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metrics_lists_exactly_what_the_user_service_registers() {
        let registry = Registry::new();
        let _metrics = Metrics::declare(&registry).unwrap();
        let _hashing =
            hashing::HashPool::start(hashing::HashSettings { workers: 1, queue: 1 }, &registry).unwrap();
        let _throttle = throttle::LoginThrottle::new(&throttle::LoginLimits::default(), &registry).unwrap();
        shop_common::testing::assert_declares_exactly(&registry, METRICS);
    }
}
