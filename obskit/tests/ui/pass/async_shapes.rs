//! Async shapes that must compile, without a single warning from the expansion.
#![deny(warnings)]
// Lints about the shapes themselves (the point of this file), not about the expansion.
#![allow(
    clippy::multiple_bound_locations,
    clippy::boxed_local,
    clippy::missing_safety_doc
)]

use std::fmt::Display;
use std::future::Future;
use std::sync::Arc;

use obskit::instrumented;

#[derive(Debug, Default)]
pub struct Store {
    items: Vec<u8>,
}

#[derive(Debug)]
pub struct Error;

impl From<std::num::ParseIntError> for Error {
    fn from(_: std::num::ParseIntError) -> Self {
        Error
    }
}

impl Store {
    #[instrumented]
    pub async fn by_ref(&self) -> usize {
        self.items.len()
    }

    #[instrumented]
    pub async fn by_mut(&mut self) -> &mut Vec<u8> {
        &mut self.items
    }

    #[instrumented(err(Debug))]
    pub async fn by_mut_result(&mut self) -> Result<&mut u8, Error> {
        self.items.first_mut().ok_or(Error)
    }

    #[instrumented]
    pub async fn arc(self: Arc<Self>) -> usize {
        self.items.len()
    }

    #[instrumented]
    pub async fn by_value(self) -> Vec<u8> {
        self.items
    }
}

/// `?` needs the declared return type to convert the error, `into()` its target.
#[instrumented]
pub async fn question_mark(input: &str) -> Result<u32, Error> {
    let value: u32 = input.parse()?;
    if value == 0 {
        return Err(Error);
    }
    Ok(value)
}

/// The output type drives inference inside the body.
#[instrumented]
pub async fn inference() -> Vec<u8> {
    let mut out = Default::default();
    if false {
        return out;
    }
    out.push(1);
    out
}

#[instrumented]
pub async fn into_conversion(fail: bool) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    if fail {
        return Err("failed".into());
    }
    Ok(())
}

#[instrumented]
pub async fn returns_impl_trait() -> impl Display {
    42
}

#[instrumented]
pub async fn result_of_impl_trait() -> Result<impl Display, Error> {
    Ok(42)
}

#[instrumented(skip(f))]
pub async fn generic<T, F>(value: T, f: F) -> Result<T, Error>
where
    T: std::fmt::Debug + Send,
    F: FnOnce(&T) -> bool,
{
    if f(&value) {
        Ok(value)
    } else {
        Err(Error)
    }
}

#[instrumented(skip(fut))]
pub async fn impl_trait_arg(fut: impl Future<Output = u8>) -> u8 {
    fut.await
}

#[instrumented]
pub async unsafe fn unsafe_async(ptr: *const u8) -> u8 {
    unsafe { *ptr }
}

#[instrumented]
pub async fn unit(x: u8) {
    if x == 0 {
        return;
    }
    let _ = x;
}

#[instrumented]
pub async fn patterns((a, b): (u8, u8), _: u8) -> u8 {
    a + b
}

#[instrumented(name = "renamed", skip_all, fields(k = 1), err, metrics = false)]
pub async fn every_option(x: u8) -> Result<u8, std::fmt::Error> {
    Ok(x)
}

trait Repository {
    fn get(&self, id: u64) -> impl Future<Output = Result<u64, Error>> + Send;

    #[instrumented]
    async fn default_body(&self) -> Result<u64, Error> {
        Ok(1)
    }
}

impl Repository for Store {
    #[instrumented(err(Debug))]
    async fn get(&self, id: u64) -> Result<u64, Error> {
        if self.items.is_empty() {
            return Err(Error);
        }
        Ok(id)
    }
}

fn assert_send<T: Send>(_: &T) {}

fn main() {
    let store = Store::default();
    assert_send(&store.get(1));
    assert_send(&question_mark("1"));
    assert_send(&Arc::new(Store::default()).arc());
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    rt.block_on(async {
        let mut store = Store::default();
        store.by_mut().await.push(1);
        let _ = store.by_mut_result().await;
        let _ = store.by_ref().await;
        let _ = store.get(1).await;
        let _ = store.default_body().await;
        let _ = question_mark("1").await;
        let _ = inference().await;
        let _ = into_conversion(true).await;
        let _ = returns_impl_trait().await.to_string();
        let _ = result_of_impl_trait().await;
        let _ = generic(1, |_| true).await;
        let _ = impl_trait_arg(async { 1 }).await;
        let _ = unsafe { unsafe_async(&1).await };
        unit(0).await;
        let _ = patterns((1, 2), 3).await;
        let _ = every_option(1).await;
        let _ = Arc::new(Store::default()).arc().await;
        let _ = store.by_value().await;
    });
}
