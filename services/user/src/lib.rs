//! The shop's user service: registration, login with JWTs, profiles aggregated from orders and cart (port 8003).
#![warn(missing_docs)]

/// Environment variable with the port to listen on.
pub const PORT_ENV: &str = "USER_PORT";
/// Port when `USER_PORT` is unset.
pub const DEFAULT_PORT: u16 = 8003;
