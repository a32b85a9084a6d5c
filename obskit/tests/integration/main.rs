//! One integration-test binary for the whole crate (each test binary links the whole tree, so
//! there is one). Modules by concern.

mod admin_routes;
mod common;
mod hardening;
mod health_debug;
mod http_layer;
mod macros;
mod otlp;
mod profiling;
mod server;
mod span_limits;
mod traces;
