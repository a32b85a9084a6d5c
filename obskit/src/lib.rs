//! # obskit
//!
//! An observability kit for Rust services: Prometheus metrics with a cardinality guard, RED
//! metrics for HTTP, `#[instrumented]` functions under the autometrics names, spans, health and
//! debug endpoints, all wired by one builder.
#![warn(missing_docs)]

pub mod debug;
pub mod health;
pub mod http;
pub mod metrics;
pub mod secrets;
pub mod trace;

// macros: pub use obskit_macros::instrumented;

#[doc(hidden)]
#[path = "private.rs"]
pub mod __private;
