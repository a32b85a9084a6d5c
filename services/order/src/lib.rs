//! The shop's order service: orders, their status history and the lifecycle that advances them (port 8002).
#![warn(missing_docs)]

/// Environment variable with the port to listen on.
pub const PORT_ENV: &str = "ORDER_PORT";
/// Port when `ORDER_PORT` is unset.
pub const DEFAULT_PORT: u16 = 8002;
