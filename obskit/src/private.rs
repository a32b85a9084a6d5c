//! The runtime API that `obskit-macros` expands into. Not a stable interface: it is public
//! only so that macro expansions in other crates can reach it, and changes without notice.

use std::fmt;

pub use crate::metrics::function::{CallTimer, FunctionSite};
pub use crate::trace::{span, InstrumentExt, Instrumented, Span, SpanBuilder};

/// A parameter or field recorded as a span attribute with its `Debug` form, masked when its
/// name looks like a secret (`password`, `token`, ...), as in `/debug/config`.
pub fn debug_attr(name: &'static str, value: &dyn fmt::Debug) -> crate::trace::AttrValue {
    if crate::secrets::is_secret_key(name) {
        crate::trace::AttrValue::from(crate::secrets::MASK)
    } else {
        crate::trace::AttrValue::from(format!("{value:?}"))
    }
}

/// Whether a `Result` is `Ok` (the macro only calls this on functions returning `Result`).
#[inline(always)]
pub fn is_ok<T, E>(result: &Result<T, E>) -> bool {
    result.is_ok()
}

/// Records an `Err` on the span with the error's `Display` form (`#[instrumented(err)]`).
pub fn record_err_display<T, E: fmt::Display>(span: &mut Span, result: &Result<T, E>) {
    if let Err(error) = result {
        span.record_error(error, std::any::type_name::<E>());
    }
}

/// Records an `Err` on the span with the error's `Debug` form (`#[instrumented(err(Debug))]`).
pub fn record_err_debug<T, E: fmt::Debug>(span: &mut Span, result: &Result<T, E>) {
    if let Err(error) = result {
        span.record_error(&DebugAsDisplay(error), std::any::type_name::<E>());
    }
}

struct DebugAsDisplay<'a, E>(&'a E);

impl<E: fmt::Debug> fmt::Display for DebugAsDisplay<'_, E> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", self.0)
    }
}
