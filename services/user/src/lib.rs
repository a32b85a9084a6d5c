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
//!
//! The seed labels `login_attempts_total` by `username` as well; that label is dropped. One
//! series per username is unbounded cardinality (every registration adds series that never go
//! away), a failed login would mint a series for whatever name a client types (an attacker
//! could fill the registry, and the cardinality guard would then drop the labels of real
//! series), and usernames are personal data that do not belong in a metrics store kept for
//! months and readable by everyone with dashboard access. Per-user login forensics belong in
//! logs or traces, not in a time series.
//!
//! # Admin bootstrap
//!
//! With `SHOP_ADMIN_USERNAME` and `SHOP_ADMIN_PASSWORD` set (and optionally
//! `SHOP_ADMIN_EMAIL`), [`run`] creates that administrator at start when no user of that name
//! exists. Only administrators can create other administrators afterwards.
#![warn(missing_docs)]

mod handlers;
mod profile;

use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Method;
use obskit::metrics::{buckets, CounterVec, Histogram, Registry};
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
}

/// The user service as the service kit runs it: `shop_common::service::main::<user::Users>()`,
/// with the `SHOP_ADMIN_*` bootstrap variables besides the kit's settings; tokens live
/// [`TOKEN_TTL`].
pub struct Users;

impl Service for Users {
    const SPEC: ServiceSpec = shop_common::service::USER;
    const TOKEN_TTL: Duration = TOKEN_TTL;
    type Config = Config;

    fn configure(base: ServiceConfig, lookup: Lookup<'_>) -> Result<Config, String> {
        Ok(Config {
            base,
            admin: AdminBootstrap::from_lookup(lookup),
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
                "user_registrations_total",
                "Users registered, by role",
                &["role"],
            )?,
            login_attempts: registry.counter_vec(
                "login_attempts_total",
                "Login attempts, by outcome (success or failure)",
                &["status"],
            )?,
            jwt_operations: registry.counter_vec(
                "jwt_operations_total",
                "JWT operations (issue, verify), by outcome",
                &["operation", "status"],
            )?,
            profile_aggregation: registry.histogram(
                "profile_aggregation_seconds",
                "Time to aggregate a user profile from the user, orders and cart",
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
    /// Bounds concurrent argon2 work (see `handlers::hashing`).
    pub hashing: tokio::sync::Semaphore,
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
async fn bootstrap_admin(store: &Store, admin: &AdminBootstrap) -> Result<(), BoxError> {
    if admin.password.chars().count() < MIN_PASSWORD_CHARS {
        return Err(format!("{ADMIN_PASSWORD_ENV} must be at least {MIN_PASSWORD_CHARS} characters").into());
    }
    match store.user_by_username(&admin.username).await {
        Ok(user) => {
            if user.role != ROLE_ADMIN {
                eprintln!(
                    "{SERVICE_NAME}: WARNING: {ADMIN_USERNAME_ENV} names an existing user who is not an \
                     administrator; left unchanged"
                );
            }
            return Ok(());
        }
        Err(StoreError::NotFound) => {}
        Err(e) => return Err(e.into()),
    }
    let password = admin.password.clone();
    let hash = tokio::task::spawn_blocking(move || shop_common::auth::hash_password(&password)).await??;
    match store
        .create_user(&admin.username, &admin.email, &hash, ROLE_ADMIN)
        .await
    {
        Ok(_) => {
            eprintln!("{SERVICE_NAME}: created the administrator {:?}", admin.username);
            Ok(())
        }
        // Another instance created it meanwhile, or the e-mail belongs to someone else.
        Err(StoreError::Conflict(what)) => {
            eprintln!("{SERVICE_NAME}: WARNING: could not create the administrator: {what}");
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
    let base = &config.base;
    let store = base.open_store().await?;
    if let Some(admin) = &config.admin {
        bootstrap_admin(&store, admin).await?;
    }
    let metrics = Metrics::declare(&base.registry)?;
    let router = router();
    let obskit = base
        .obskit(
            &Users::SPEC,
            env!("CARGO_PKG_VERSION"),
            router.templates(),
            &CALLS,
        )
        .config_entry("jwt.ttl_seconds", base.jwt.ttl().as_secs())
        .build()?;
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
        // Two per core: enough to keep the cores busy while one hash waits for its thread.
        hashing: tokio::sync::Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get()) * 2),
    });
    obskit
        .serve_with_shutdown(listener, router.into_service(app), shutdown)
        .await?;
    Ok(())
}
