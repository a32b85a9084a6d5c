//! Calls between the shop's services: one pooled `reqwest` client per service, with connect and
//! request timeouts, and the base URLs of the other services from the environment.
//!
//! Every call should go out through [`obskit::trace::TracedRequest::send_traced`], so that the
//! called service continues the caller's trace (a checkout is one trace across cart, backend
//! and order).

use std::time::Duration;

/// Base URL of the backend (products): `BACKEND_URL`, default `http://127.0.0.1:8000`.
pub const BACKEND_URL_ENV: &str = "BACKEND_URL";
/// Base URL of the cart service: `CART_URL`, default `http://127.0.0.1:8001`.
pub const CART_URL_ENV: &str = "CART_URL";
/// Base URL of the order service: `ORDER_URL`, default `http://127.0.0.1:8002`.
pub const ORDER_URL_ENV: &str = "ORDER_URL";
/// Base URL of the user service: `USER_URL`, default `http://127.0.0.1:8003`.
pub const USER_URL_ENV: &str = "USER_URL";

/// How long a connection attempt to another service may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a whole call to another service may take, answer included.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);

/// A pooled client for calls to other services, with [`CONNECT_TIMEOUT`] and
/// [`REQUEST_TIMEOUT`]. Build one per service at start and clone it (clones share the pool).
///
/// ```
/// let client = shop_common::client::service_client();
/// let _request = client.get("http://127.0.0.1:8000/api/categories");
/// ```
pub fn service_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .timeout(REQUEST_TIMEOUT)
        .pool_idle_timeout(Duration::from_secs(30))
        .build()
        // Building fails only when the TLS backend cannot start; plain HTTP needs none.
        .unwrap_or_else(|_| reqwest::Client::new())
}

/// Registers a health check named `name` that asks `{base_url}/health/live` of a service this
/// one calls (the seed's `check_dependent_services`): 200 is healthy, another status degraded,
/// no answer unhealthy. The check is non-critical, so a dependency that is down degrades this
/// service rather than failing it: it still answers what does not need the dependency. Asking
/// the liveness probe, not `/health`, keeps the check cheap and free of cycles between services.
///
/// ```
/// let health = obskit::health::HealthChecks::new("cart-service", "0.1.0");
/// let client = shop_common::client::service_client();
/// shop_common::client::register_dependency_check(&health, "backend", "http://127.0.0.1:8000", client);
/// ```
pub fn register_dependency_check(
    health: &obskit::health::HealthChecks,
    name: &str,
    base_url: &str,
    client: reqwest::Client,
) {
    let url = format!("{base_url}/health/live");
    let options = obskit::health::CheckOptions::new()
        .timeout(Duration::from_secs(3))
        .non_critical();
    health.register_with(name, options, move || {
        let request = client.get(&url);
        async move {
            use obskit::health::CheckOutcome;
            match request.send().await {
                Ok(response) => CheckOutcome::from_http_status(response.status()),
                Err(e) => CheckOutcome::unhealthy(format!("no answer: {e}")),
            }
        }
    });
}
