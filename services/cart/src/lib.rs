//! The shop's cart service: carts, stock checks with the backend, checkout through the order service (port 8001).
#![warn(missing_docs)]

/// Environment variable with the port to listen on.
pub const PORT_ENV: &str = "CART_PORT";
/// Port when `CART_PORT` is unset.
pub const DEFAULT_PORT: u16 = 8001;
