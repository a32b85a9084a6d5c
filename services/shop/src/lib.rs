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

pub use shop_common::service::{by_name as service, ServiceSpec, SERVICES};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Runs the service called `name` in this process until Ctrl-C or SIGTERM: the child side of
/// the launcher, the same call as that service's own binary.
///
/// ```
/// # tokio::runtime::Runtime::new().unwrap().block_on(async {
/// let e = shop::serve_service("payments").await.unwrap_err().to_string();
/// assert!(e.contains("no service called"), "{e}");
/// # });
/// ```
pub async fn serve_service(name: &str) -> Result<(), BoxError> {
    use shop_common::service::serve;
    match name {
        "backend" => serve::<backend::Backend>().await,
        "cart" => serve::<cart::Cart>().await,
        "order" => serve::<order::Orders>().await,
        "user" => serve::<user::Users>().await,
        other => Err(format!("no service called {other:?} (backend, cart, order, user)").into()),
    }
}
