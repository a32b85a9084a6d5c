//! `#[profiled]` shapes that must compile, without a single warning from the expansion.
#![deny(warnings, unused_qualifications, unused_results, unreachable_pub)]
#![allow(clippy::needless_lifetimes)]

use std::fmt::Display;

use obskit::{instrumented, profiled};

/// A type whose methods are profiled.
#[derive(Debug, Default)]
pub struct Cart {
    items: Vec<u64>,
}

/// An error for `?`.
#[derive(Debug)]
pub struct Error;

impl Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("bad input")
    }
}

impl From<std::num::ParseIntError> for Error {
    fn from(_: std::num::ParseIntError) -> Self {
        Error
    }
}

impl Cart {
    /// `&mut self`, returning a borrow of it.
    #[profiled(name = "cart_add", every = "30s", duration = "1s", calls = 10)]
    pub fn add(&mut self, item: u64) -> &mut Vec<u64> {
        self.items.push(item);
        &mut self.items
    }

    /// `?` and an early `return`.
    #[profiled(every = "1h", duration = "500ms", frequency = 250)]
    pub fn parse_total(&self, text: &str) -> Result<u64, Error> {
        if text.is_empty() {
            return Ok(0);
        }
        Ok(text.parse::<u64>()? + self.items.iter().sum::<u64>())
    }

    /// An `async` method borrowing `self`, with `?`.
    #[profiled(name = "checkout")]
    pub async fn checkout(&self, code: &str) -> Result<u64, Error> {
        let discount: u64 = code.parse()?;
        Ok(self.items.iter().sum::<u64>().saturating_sub(discount))
    }
}

/// Generics, `impl Trait` in and out, a where clause.
#[profiled(every = "2m")]
pub fn describe<T>(value: T, extra: impl Display) -> impl Display
where
    T: Display,
{
    format!("{value} {extra}")
}

/// Stacked with `#[instrumented]`, both orders.
#[instrumented(err)]
#[profiled(name = "both_a")]
pub fn both_a(n: u64) -> Result<u64, Error> {
    Ok(n)
}

/// The other order.
#[profiled(name = "both_b")]
#[instrumented]
pub async fn both_b(n: u64) -> u64 {
    n
}

/// Unit and `unsafe`.
#[profiled]
pub unsafe fn raw(p: *const u8) {
    let _ = unsafe { *p };
}

fn main() {
    let mut cart = Cart::default();
    let _ = cart.add(3);
    let _ = cart.parse_total("4");
    let _ = describe(1, "x").to_string();
    let _ = both_a(1);
    let _ = both_b(1);
    let _ = cart.checkout("1");
    let byte = 1u8;
    unsafe { raw(&byte) };
}
