//! The function under test in every `fn_call/*` variant: two black-boxed u64s added, bare or
//! instrumented by obskit or a peer.

use std::hint::black_box;

#[inline(never)]
pub fn bare(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

#[obskit::instrumented]
#[inline(never)]
pub fn obskit_instrumented(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

#[obskit::instrumented]
#[inline(never)]
pub fn obskit_instrumented_result(a: u64, b: u64) -> Result<u64, &'static str> {
    black_box(a).checked_add(black_box(b)).ok_or("overflow")
}

#[tracing::instrument]
#[inline(never)]
pub fn tracing_instrumented(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

#[autometrics::autometrics]
#[inline(never)]
pub fn autometrics_instrumented(a: u64, b: u64) -> u64 {
    black_box(a) + black_box(b)
}

/// The cheapest subscriber that records spans: a `Registry` with no layers, installed
/// process-wide (a global subscriber cannot be removed again, so callers install it last).
pub fn install_tracing_registry() {
    tracing::subscriber::set_global_default(tracing_subscriber::registry()).expect("first subscriber");
}
