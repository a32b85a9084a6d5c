//! One integration-test binary for the whole crate (each test binary links the whole tree, so
//! there is one). Modules by concern.

// With obskit's `heap-profiling`, this binary runs on jemalloc with its heap profiler on, as a
// service that enables it does (`heap_profiles` reads its profiles).
#[cfg(feature = "heap-profiling")]
obskit::heap_profiling_allocator!();

mod admin_routes;
mod common;
mod hang_kit;
mod hardening;
mod health_debug;
#[cfg(feature = "profiling")]
mod heap_profiles;
mod http_layer;
mod macros;
#[cfg(all(feature = "otlp", feature = "reqwest"))]
mod otlp;
#[cfg(feature = "profiling")]
mod profiling;
mod server;
mod span_limits;
mod traces;
