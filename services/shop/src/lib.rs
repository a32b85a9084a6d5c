//! Runs the whole shop with one command: the four services as child processes of one binary
//! (`shop serve <service>` is the child side), their logs prefixed with their names, and a
//! local gateway that routes the contract's prefixes, as nginx does in production.
//!
//! Children rather than tasks: each service is a process of its own, as it is in production, so
//! each has its own `/metrics`, its own profiler and its own failure, and stopping one (a test
//! does, to check that checkout survives a missing order service) leaves the others running.
#![warn(missing_docs)]

pub mod gateway;
pub mod launcher;

/// One of the four services: its name, where it listens and which prefix the gateway routes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Short name, used in log prefixes and for `shop serve <name>`.
    pub name: &'static str,
    /// Environment variable with its port.
    pub port_env: &'static str,
    /// Its port when that variable is unset.
    pub default_port: u16,
    /// The contract's prefix the gateway routes to it.
    pub prefix: &'static str,
    /// Environment variable through which the other services find it.
    pub url_env: &'static str,
}

/// The shop's services, in start order (dependencies first: the cart calls the backend and the
/// order service, the user service calls the order and cart services).
pub const SERVICES: [ServiceSpec; 4] = [
    ServiceSpec {
        name: "backend",
        port_env: backend::PORT_ENV,
        default_port: backend::DEFAULT_PORT,
        prefix: "/api/",
        url_env: shop_common::client::BACKEND_URL_ENV,
    },
    ServiceSpec {
        name: "order",
        port_env: order::PORT_ENV,
        default_port: order::DEFAULT_PORT,
        prefix: "/order-api/",
        url_env: shop_common::client::ORDER_URL_ENV,
    },
    ServiceSpec {
        name: "cart",
        port_env: cart::PORT_ENV,
        default_port: cart::DEFAULT_PORT,
        prefix: "/cart-api/",
        url_env: shop_common::client::CART_URL_ENV,
    },
    ServiceSpec {
        name: "user",
        port_env: user::PORT_ENV,
        default_port: user::DEFAULT_PORT,
        prefix: "/user-api/",
        url_env: shop_common::client::USER_URL_ENV,
    },
];

/// The service called `name`.
///
/// ```
/// assert_eq!(shop::service("cart").map(|s| s.default_port), Some(8001));
/// assert!(shop::service("payments").is_none());
/// ```
pub fn service(name: &str) -> Option<&'static ServiceSpec> {
    SERVICES.iter().find(|s| s.name == name)
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the service called `name` in this process until Ctrl-C or SIGTERM: the child side of
/// the launcher, the same as that service's own binary.
pub async fn serve_service(name: &str) -> Result<(), BoxError> {
    /// Each service crate exposes the same four items; this runs one of them.
    macro_rules! run {
        ($krate:ident) => {{
            let addr = $krate::listen_addr_from_env()?;
            let config = $krate::Config::from_env();
            let listener = tokio::net::TcpListener::bind(addr).await?;
            eprintln!(
                "{}: listening on http://{}",
                $krate::SERVICE_NAME,
                listener.local_addr()?
            );
            $krate::run(config, listener, obskit::shutdown_signal()).await
        }};
    }
    match name {
        "backend" => run!(backend),
        "cart" => run!(cart),
        "order" => run!(order),
        "user" => run!(user),
        other => Err(format!("no service called {other:?} (backend, cart, order, user)").into()),
    }
}
