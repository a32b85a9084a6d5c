//! The service kit: what every shop service does the same way, decided once.
//!
//! - [`SERVICES`]: the four services, their ports, the variables that move them, the gateway's
//!   prefixes. The launcher, the gateway and the upstream URLs all read this one table.
//! - [`ServiceConfig`]: the configuration base every service reads once at start: the listen
//!   address (`SHOP_LISTEN_HOST`, `{NAME}_PORT`), the store ([`StoreChoice`]: `SCYLLA_NODES` or
//!   SQLite under `SHOP_DATA_DIR`), the token keys (`JWT_SECRET`), the body cap, the metrics
//!   registry, and the other services' URLs (`{NAME}_URL`, one key style for all).
//! - [`Service`] and [`main`]: a service crate says how to add its own settings to the base and
//!   how to run; its binary is one call, `shop_common::service::main::<cart::Cart>()`, and the
//!   launcher's `shop serve cart` is the same call.
//! - [`ServiceConfig::open_store`] and [`ServiceConfig::obskit`]: the store and the obskit
//!   builder with the entries and checks every service shares, so that `/debug/config` and
//!   `/health` name the engine the configuration chose (they once said `sqlite` on ScyllaDB).

use std::fmt;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use obskit::health::CheckOutcome;
use obskit::metrics::Registry;
use tokio::net::TcpListener;

use crate::auth::JwtKeys;
use crate::store::{QueryMetrics, ScyllaConfig, Store, StoreError};

/// Errors of a service's start and run.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Where the environment is read from: the process's in the binaries, a table in tests.
pub type Lookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// One of the shop's four services.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Short name: log prefixes, `shop serve <name>`, the database file `{name}.db`.
    pub name: &'static str,
    /// The name in metrics, spans and health reports (`cart-service`).
    pub service_name: &'static str,
    /// Environment variable with its port.
    pub port_env: &'static str,
    /// Its port when that variable is unset.
    pub default_port: u16,
    /// Environment variable through which the other services find it.
    pub url_env: &'static str,
    /// The contract's prefix the gateway routes to it.
    pub prefix: &'static str,
}

impl ServiceSpec {
    /// Its base URL as `lookup` gives it in [`ServiceSpec::url_env`] (trailing slashes trimmed),
    /// else `http://127.0.0.1:{default_port}`.
    ///
    /// ```
    /// let lookup = |name: &str| (name == "ORDER_URL").then(|| "http://orders:9/".to_string());
    /// assert_eq!(shop_common::service::ORDER.url_from(&lookup), "http://orders:9");
    /// assert_eq!(shop_common::service::CART.url_from(&lookup), "http://127.0.0.1:8001");
    /// ```
    pub fn url_from(&self, lookup: Lookup<'_>) -> String {
        match lookup(self.url_env) {
            Some(url) if !url.trim().is_empty() => url.trim().trim_end_matches('/').to_string(),
            _ => format!("http://127.0.0.1:{}", self.default_port),
        }
    }
}

/// The backend: products, categories, stock.
pub const BACKEND: ServiceSpec = ServiceSpec {
    name: "backend",
    service_name: "backend-service",
    port_env: "BACKEND_PORT",
    default_port: 8000,
    url_env: crate::client::BACKEND_URL_ENV,
    prefix: "/api/",
};
/// The cart service.
pub const CART: ServiceSpec = ServiceSpec {
    name: "cart",
    service_name: "cart-service",
    port_env: "CART_PORT",
    default_port: 8001,
    url_env: crate::client::CART_URL_ENV,
    prefix: "/cart-api/",
};
/// The order service.
pub const ORDER: ServiceSpec = ServiceSpec {
    name: "order",
    service_name: "order-service",
    port_env: "ORDER_PORT",
    default_port: 8002,
    url_env: crate::client::ORDER_URL_ENV,
    prefix: "/order-api/",
};
/// The user service.
pub const USER: ServiceSpec = ServiceSpec {
    name: "user",
    service_name: "user-service",
    port_env: "USER_PORT",
    default_port: 8003,
    url_env: crate::client::USER_URL_ENV,
    prefix: "/user-api/",
};

/// The shop's services, in start order (dependencies first: the cart calls the backend and the
/// order service, the user service calls the order and cart services).
pub const SERVICES: [ServiceSpec; 4] = [BACKEND, ORDER, CART, USER];

/// The service called `name`.
///
/// ```
/// assert_eq!(shop_common::service::by_name("cart").map(|s| s.default_port), Some(8001));
/// assert!(shop_common::service::by_name("payments").is_none());
/// ```
pub fn by_name(name: &str) -> Option<&'static ServiceSpec> {
    SERVICES.iter().find(|s| s.name == name)
}

/// The store the configuration chose: ScyllaDB when `SCYLLA_NODES` is set, else the embedded
/// SQLite file of the service.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreChoice {
    /// The SQLite database at this path (created with its directory if missing).
    Sqlite(PathBuf),
    /// The Cassandra/ScyllaDB cluster.
    Scylla(ScyllaConfig),
}

impl StoreChoice {
    /// `SCYLLA_NODES` (with `SCYLLA_KEYSPACE`, `SCYLLA_REPLICATION_FACTOR`) as `lookup` finds
    /// them, else `{data_dir}/{name}.db`.
    ///
    /// ```
    /// use shop_common::service::StoreChoice;
    /// let none = |_: &str| None;
    /// let choice = StoreChoice::from_lookup(&none, "data".as_ref(), "cart").unwrap();
    /// assert_eq!(choice.engine(), "sqlite");
    /// assert_eq!(choice.to_string(), "sqlite data/cart.db");
    /// let scylla = |name: &str| (name == "SCYLLA_NODES").then(|| "10.0.0.5".to_string());
    /// let choice = StoreChoice::from_lookup(&scylla, "data".as_ref(), "cart").unwrap();
    /// assert_eq!(choice.engine(), "scylla");
    /// assert_eq!(choice.to_string(), "scylla 10.0.0.5:9042 keyspace store");
    /// ```
    pub fn from_lookup(lookup: Lookup<'_>, data_dir: &Path, name: &str) -> Result<StoreChoice, StoreError> {
        let scylla = ScyllaConfig::from_values(
            lookup(crate::store::SCYLLA_NODES_ENV).as_deref(),
            lookup(crate::store::SCYLLA_KEYSPACE_ENV).as_deref(),
            lookup(crate::store::SCYLLA_REPLICATION_FACTOR_ENV).as_deref(),
        )?;
        Ok(match scylla {
            Some(config) => StoreChoice::Scylla(config),
            None => StoreChoice::Sqlite(data_dir.join(format!("{name}.db"))),
        })
    }

    /// The engine's name, as `/health` and `/debug/config` report it (`db.system` of the
    /// store's spans says the same).
    pub fn engine(&self) -> &'static str {
        match self {
            StoreChoice::Sqlite(_) => "sqlite",
            StoreChoice::Scylla(_) => "scylla",
        }
    }
}

impl fmt::Display for StoreChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreChoice::Sqlite(path) => write!(f, "sqlite {}", path.display()),
            StoreChoice::Scylla(c) => write!(f, "scylla {} keyspace {}", c.nodes.join(","), c.keyspace),
        }
    }
}

/// The base URLs of the other services (`BACKEND_URL`, `CART_URL`, `ORDER_URL`, `USER_URL`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Upstreams {
    /// The backend's.
    pub backend: String,
    /// The cart service's.
    pub cart: String,
    /// The order service's.
    pub order: String,
    /// The user service's.
    pub user: String,
}

impl Upstreams {
    /// Each from its `{NAME}_URL`, else the service's default port on 127.0.0.1.
    pub fn from_lookup(lookup: Lookup<'_>) -> Upstreams {
        Upstreams {
            backend: BACKEND.url_from(lookup),
            cart: CART.url_from(lookup),
            order: ORDER.url_from(lookup),
            user: USER.url_from(lookup),
        }
    }
}

impl Upstreams {
    /// The base URL of `service`.
    ///
    /// ```
    /// use shop_common::service::{Upstreams, ORDER};
    /// assert_eq!(Upstreams::default().of(&ORDER), "http://127.0.0.1:8002");
    /// ```
    pub fn of(&self, service: &ServiceSpec) -> &str {
        match service.name {
            "backend" => &self.backend,
            "cart" => &self.cart,
            "order" => &self.order,
            _ => &self.user,
        }
    }
}

impl Default for Upstreams {
    /// Every service on its default port on 127.0.0.1.
    fn default() -> Upstreams {
        Upstreams::from_lookup(&|_| None)
    }
}

/// What every service is configured with, read once at start ([`ServiceConfig::from_lookup`]).
#[derive(Clone, Debug)]
pub struct ServiceConfig {
    /// The address to listen on: `$SHOP_LISTEN_HOST:${NAME}_PORT` (`127.0.0.1` and the
    /// service's default port when unset).
    pub listen: SocketAddr,
    /// The data directory (`SHOP_DATA_DIR`, default `./data`).
    pub data_dir: PathBuf,
    /// The store the configuration chose.
    pub store: StoreChoice,
    /// Keys that mint and verify the shop's tokens (`JWT_SECRET`, shared by all four).
    pub jwt: JwtKeys,
    /// Cap on request bodies; larger ones get 413.
    pub body_limit: usize,
    /// Registry for the service's metrics. A service declares its business metrics in it, so a
    /// registry serves one run of the service per process: the binaries use the global one
    /// (which honours `OBSKIT_LABEL_LIMIT`), tests that start a service twice give each run a
    /// fresh [`Registry::new`].
    pub registry: Registry,
    /// The other services' base URLs.
    pub upstreams: Upstreams,
}

impl ServiceConfig {
    /// The base of `spec` from `lookup`, with tokens that live `token_ttl`; an error naming the
    /// variable when one is malformed. `JWT_SECRET` unset gives a random secret for this process
    /// only, with a warning.
    ///
    /// ```
    /// use std::time::Duration;
    /// use shop_common::service::{ServiceConfig, CART};
    /// let lookup = |name: &str| match name {
    ///     "CART_PORT" => Some("9001".to_string()),
    ///     "JWT_SECRET" => Some("a shared secret".to_string()),
    ///     "ORDER_URL" => Some("http://orders.internal:8002".to_string()),
    ///     _ => None,
    /// };
    /// let config = ServiceConfig::from_lookup(&CART, &lookup, Duration::from_secs(300)).unwrap();
    /// assert_eq!(config.listen.to_string(), "127.0.0.1:9001");
    /// assert_eq!(config.store.engine(), "sqlite");
    /// assert_eq!(config.upstreams.order, "http://orders.internal:8002");
    /// assert_eq!(config.upstreams.backend, "http://127.0.0.1:8000");
    /// ```
    pub fn from_lookup(
        spec: &ServiceSpec,
        lookup: Lookup<'_>,
        token_ttl: Duration,
    ) -> Result<ServiceConfig, String> {
        let listen = SocketAddr::new(
            crate::listen_host_from(lookup)?,
            crate::port_from(lookup, spec.port_env, spec.default_port)?,
        );
        let data_dir = crate::data_dir_from(lookup);
        let store = StoreChoice::from_lookup(lookup, &data_dir, spec.name).map_err(|e| e.to_string())?;
        Ok(ServiceConfig {
            listen,
            store,
            data_dir,
            jwt: JwtKeys::from_secret_or_random(lookup(crate::auth::JWT_SECRET_ENV).as_deref(), token_ttl),
            body_limit: crate::http::DEFAULT_BODY_LIMIT,
            registry: Registry::global().clone(),
            upstreams: Upstreams::from_lookup(lookup),
        })
    }

    /// A base for running `spec` in-process (tests, examples): SQLite under `data_dir`, the given
    /// keys, a fresh registry, an ephemeral port on 127.0.0.1, the other services on their
    /// default ports (set [`ServiceConfig::upstreams`] to where they run).
    pub fn local(spec: &ServiceSpec, data_dir: &Path, jwt: JwtKeys) -> ServiceConfig {
        ServiceConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            data_dir: data_dir.to_path_buf(),
            store: StoreChoice::Sqlite(data_dir.join(format!("{}.db", spec.name))),
            jwt,
            body_limit: crate::http::DEFAULT_BODY_LIMIT,
            registry: Registry::new(),
            upstreams: Upstreams::default(),
        }
    }

    /// Opens the chosen store, its query metrics declared in [`ServiceConfig::registry`].
    pub async fn open_store(&self) -> Result<Store, BoxError> {
        let metrics = QueryMetrics::declare(&self.registry)?;
        let store = match &self.store {
            StoreChoice::Sqlite(path) => Store::open_sqlite(path, metrics).await?,
            StoreChoice::Scylla(config) => Store::open_scylla(config, metrics).await?,
        };
        Ok(store)
    }

    /// obskit's builder for `spec` with what every service shows: its name and `version`, the
    /// registry, `routes`, and the `store`, `http.body_limit` and `upstream.<name>` entries of
    /// `/debug/config` (one per service it `calls`). The service adds its own entries, builds,
    /// then registers its checks ([`ServiceConfig::register_store_check`],
    /// [`ServiceConfig::register_dependency_checks`]).
    pub fn obskit(
        &self,
        spec: &ServiceSpec,
        version: &str,
        routes: Vec<String>,
        calls: &[ServiceSpec],
    ) -> obskit::ObskitBuilder {
        let mut builder = obskit::Obskit::builder()
            .service(spec.service_name)
            .version(version)
            .registry(self.registry.clone())
            .routes(routes)
            .config_entry("store", &self.store)
            .config_entry("http.body_limit", self.body_limit);
        for called in calls {
            builder = builder.config_entry(format!("upstream.{}", called.name), self.upstreams.of(called));
        }
        builder
    }

    /// Registers the `database` health check every service has: the store answers a ping; its
    /// detail names the engine.
    pub fn register_store_check(&self, obskit: &obskit::Obskit, store: &Store) {
        let store = store.clone();
        let engine = self.store.engine();
        obskit.health().register("database", move || {
            let store = store.clone();
            async move {
                match store.ping().await {
                    Ok(()) => CheckOutcome::healthy().with_detail("store", engine),
                    Err(e) => CheckOutcome::unhealthy(e.to_string()).with_detail("store", engine),
                }
            }
        });
    }

    /// Registers one non-critical health check per service it `calls`, through `client` (see
    /// [`crate::client::register_dependency_check`]).
    pub fn register_dependency_checks(
        &self,
        obskit: &obskit::Obskit,
        client: &reqwest::Client,
        calls: &[ServiceSpec],
    ) {
        for called in calls {
            crate::client::register_dependency_check(
                obskit.health(),
                called.name,
                self.upstreams.of(called),
                client.clone(),
            );
        }
    }
}

/// A shop service as the kit runs it.
pub trait Service {
    /// Which service this is.
    const SPEC: ServiceSpec;
    /// How long the tokens it mints or expects live.
    const TOKEN_TTL: Duration;
    /// Its whole configuration: the base and its own settings.
    type Config: Send + 'static;

    /// Its configuration: `base` and its own settings from `lookup`.
    fn configure(base: ServiceConfig, lookup: Lookup<'_>) -> Result<Self::Config, String>;

    /// Serves on `listener` until `shutdown` resolves.
    fn run(
        config: Self::Config,
        listener: TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> impl Future<Output = Result<(), BoxError>> + Send;
}

/// Reads the configuration of `S` from the environment once, binds its address and serves until
/// Ctrl-C or SIGTERM. An error is printed and gives a failing exit code.
pub async fn main<S: Service>() -> ExitCode {
    match serve::<S>().await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // Fatal, and maybe from before obskit (and its logger) was built, or from building it.
            eprintln!("{}: {e}", S::SPEC.service_name);
            ExitCode::FAILURE
        }
    }
}

/// [`main`] without the exit code: the launcher's `shop serve <name>` calls this.
pub async fn serve<S: Service>() -> Result<(), BoxError> {
    // The logs first, so that what configuring finds (a missing secret, a bad value) is logged:
    // the obskit built later finds them installed (once a process) and keeps them.
    let log_settings = obskit::log::LogSettings::from_env_source(&obskit::settings::ProcessEnv)?;
    obskit::log::Logs::install(
        &log_settings,
        S::SPEC.service_name,
        obskit::metrics::Registry::global(),
    )?;
    let env = |name: &str| std::env::var(name).ok();
    let base = ServiceConfig::from_lookup(&S::SPEC, &env, S::TOKEN_TTL)?;
    let listen = base.listen;
    let config = S::configure(base, &env)?;
    let listener = TcpListener::bind(listen).await?;
    tracing::info!(address = %listener.local_addr()?, "listening");
    S::run(config, listener, obskit::shutdown_signal()).await
}
