//! One integration-test binary for the whole crate (each test binary links the whole tree, so
//! there is one). Modules by concern.

mod admin_routes;
mod common;
mod hang_kit;
mod hardening;
mod health_debug;
mod http_layer;
mod macros;
#[cfg(all(feature = "otlp", feature = "reqwest"))]
mod otlp;
#[cfg(feature = "profiling")]
mod profiling;
mod server;
mod span_limits;
mod traces;
