//! The expansion stays quiet in a crate that turns on many allow-by-default lints, forbids
//! `unsafe`, and stacks other attribute macros on top.
#![forbid(unsafe_code)]
#![deny(
    warnings,
    rust_2018_idioms,
    unused_qualifications,
    unused_results,
    unreachable_pub,
    trivial_casts,
    trivial_numeric_casts,
    single_use_lifetimes,
    unused_lifetimes,
    let_underscore_drop,
    unit_bindings,
    unused_extern_crates,
    variant_size_differences
)]

use obskit::instrumented;

#[derive(Debug)]
struct Error;

#[instrumented(err(Debug))]
async fn fallible(fail: bool) -> Result<u8, Error> {
    if fail {
        return Err(Error);
    }
    Ok(1)
}

#[instrumented]
async fn unit(_x: u8) {}

#[instrumented]
fn sync_unit(_x: u8) {}

#[instrumented(err)]
fn sync_fallible(x: &str) -> Result<u8, std::num::ParseIntError> {
    x.parse()
}

#[instrumented(skip_all)]
#[tokio::main(flavor = "current_thread")]
async fn main() {
    unit(1).await;
    sync_unit(1);
    let _ = fallible(false).await;
    let _ = sync_fallible("1");
}
