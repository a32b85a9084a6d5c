//! Sync shapes that must compile, without a single warning from the expansion.
#![deny(warnings)]
// Lints about the shapes themselves (the point of this file), not about the expansion.
#![allow(
    clippy::multiple_bound_locations,
    clippy::boxed_local,
    clippy::missing_safety_doc
)]

use std::fmt::Debug;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;

use obskit::instrumented;

#[derive(Debug, Default)]
pub struct Thing {
    items: Vec<u8>,
}

impl Thing {
    /// Doc comments stay.
    #[instrumented]
    #[must_use]
    #[inline]
    pub fn new() -> Self {
        Thing::default()
    }

    #[instrumented]
    pub fn by_ref(&self) -> usize {
        self.items.len()
    }

    #[instrumented]
    pub fn by_mut(&mut self, item: u8) -> &mut Vec<u8> {
        self.items.push(item);
        &mut self.items
    }

    #[instrumented]
    pub fn by_mut_result(&mut self) -> Result<&mut u8, String> {
        self.items.first_mut().ok_or_else(|| "empty".to_string())
    }

    #[instrumented]
    pub fn by_value(mut self) -> Vec<u8> {
        self.items.push(0);
        self.items
    }

    #[instrumented]
    pub fn boxed(self: Box<Self>) -> usize {
        self.items.len()
    }

    #[instrumented]
    pub fn arc(self: Arc<Self>) -> Result<usize, String> {
        Ok(self.items.len())
    }

    #[instrumented]
    pub fn rc(self: &Rc<Self>) -> usize {
        Rc::strong_count(self)
    }

    #[instrumented]
    pub fn pinned(self: Pin<&mut Self>) -> usize {
        self.items.len()
    }

    #[instrumented]
    pub fn lifetimes<'a, 'b: 'a>(&'a self, other: &'b str) -> Result<&'a str, String>
    where
        'b: 'a,
    {
        if self.items.is_empty() {
            Ok(other)
        } else {
            Err(other.to_string())
        }
    }
}

#[instrumented]
pub fn generic<T: Debug + Clone, const N: usize>(values: [T; N]) -> Result<Vec<T>, String>
where
    T: PartialEq,
{
    Ok(values.to_vec())
}

#[instrumented(skip(f, iter))]
pub fn impl_trait_args(f: impl Fn(u8) -> u8, iter: impl IntoIterator<Item = u8>) -> Vec<u8> {
    iter.into_iter().map(f).collect()
}

#[instrumented]
pub fn returns_impl_trait(n: u8) -> impl Iterator<Item = u8> + Clone {
    0..n
}

#[instrumented]
pub fn result_of_impl_trait(n: u8) -> Result<impl Iterator<Item = u8>, std::io::Error> {
    Ok(0..n)
}

#[instrumented]
pub fn returns_box_dyn(fail: bool) -> Result<u8, Box<dyn std::error::Error>> {
    if fail {
        Err("failed")?;
    }
    Ok("7".parse::<u8>()?)
}

#[instrumented]
pub(crate) unsafe fn unsafe_fn(ptr: *const u8) -> Result<u8, ()> {
    if ptr.is_null() {
        return Err(());
    }
    Ok(unsafe { *ptr })
}

#[instrumented]
pub extern "C" fn extern_c(x: u32) -> u32 {
    x + 1
}

#[instrumented(err)]
pub fn r#type(r#in: u8) -> Result<u8, String> {
    Ok(r#in)
}

#[instrumented]
pub fn inner_attributes(x: u8) -> u8 {
    #![allow(clippy::identity_op)]
    x + 0
}

#[instrumented]
pub fn diverges(message: &str) -> ! {
    panic!("{message}")
}

#[instrumented]
#[track_caller]
pub fn track_caller() -> u32 {
    std::panic::Location::caller().line()
}

#[instrumented]
pub fn nested(x: u8) -> u8 {
    #[instrumented]
    fn inner(x: u8) -> u8 {
        x * 2
    }
    inner(x) + 1
}

#[instrumented]
pub fn unit_with_early_return(x: u8) {
    if x == 0 {
        return;
    }
    let _ = x;
}

#[instrumented(skip_all, name = "custom", fields(a.b = 1, "c.d" = "e", f = %x, g = ?x), err(Debug), metrics = false)]
pub fn every_option(x: u8) -> Result<(), std::fmt::Error> {
    let _ = x;
    Ok(())
}

#[instrumented]
pub fn patterns((a, b): (u8, u8), [c, ..]: [u8; 3], _: u8, _unused: u8) -> u8 {
    a + b + c
}

pub trait Service {
    #[instrumented]
    fn default_body(&self) -> Result<u8, String> {
        self.required()
    }

    fn required(&self) -> Result<u8, String>;
}

impl Service for Thing {
    #[instrumented(err)]
    fn required(&self) -> Result<u8, String> {
        self.items.first().copied().ok_or_else(|| "empty".into())
    }
}

macro_rules! make {
    ($name:ident, $ret:ty) => {
        #[instrumented(err)]
        pub fn $name(x: u8) -> $ret {
            Ok(x)
        }
    };
}

make!(from_macro_rules, Result<u8, String>);

fn main() {
    let mut thing = Thing::new();
    thing.by_mut(1);
    let _ = thing.by_mut_result();
    let _ = thing.by_ref();
    let _ = thing.lifetimes("x");
    let _ = Box::new(Thing::new()).boxed();
    let _ = Arc::new(Thing::new()).arc();
    let _ = Rc::new(Thing::new()).rc();
    let _ = Pin::new(&mut Thing::new()).pinned();
    let _ = thing.default_body();
    let _ = thing.by_value();
    let _ = generic([1u8, 2]);
    let _ = impl_trait_args(|x| x, [1]);
    let _ = returns_impl_trait(3).clone().count();
    let _ = result_of_impl_trait(3);
    let _ = returns_box_dyn(false);
    let _ = unsafe { unsafe_fn(&1) };
    let _ = extern_c(1);
    let _ = r#type(1);
    let _ = inner_attributes(1);
    let _ = track_caller();
    let _ = nested(1);
    unit_with_early_return(0);
    let _ = every_option(1);
    let _ = patterns((1, 2), [3, 4, 5], 6, 7);
    let _ = from_macro_rules(1);
    if std::env::args().count() > 100 {
        diverges("never");
    }
}
