//! The bench variants' bodies and set-ups, shared by the criterion benches (`benches/`) and the
//! instruction counter (`src/bin/instructions.rs`), so that times and instruction counts are
//! taken of the same code.
//!
//! - [`functions`]: the `fn_call/*` functions (bare, obskit, autometrics, tracing).
//! - [`traced`]: the `traced_call/*` functions and the exporters behind them (obskit's OTLP sink,
//!   tracing-opentelemetry, fastrace with fastrace-opentelemetry), all exporting over OTLP/HTTP
//!   to [`receiver::accepting_receiver`].
//! - [`http_services`]: the `http_request/*` services (bare, obskit's RED layer, the peer layers)
//!   and the one-request driver both harnesses call.

pub mod functions;
pub mod http_services;
pub mod receiver;
pub mod traced;
