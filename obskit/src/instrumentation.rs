//! The process-wide instrumentation switch: `OBSKIT_INSTRUMENTATION=off` turns obskit's
//! recording off without a rebuild, so a service can be measured with and without it side by
//! side (the shop's benchmark does), or run bare while an incident is being chased.
//!
//! Off means: the HTTP layer still matches routes (handlers rely on [`MatchedRoute`]) but
//! records no request, `#[instrumented]` functions record no call, `#[profiled]` functions
//! start no capture, and the builder installs no span sink, so spans are not created. The
//! admin surface keeps answering (`/metrics` shows what was declared, `/health` still checks).
//! Each check is one relaxed atomic load.
//!
//! [`MatchedRoute`]: crate::http::MatchedRoute

use std::sync::atomic::{AtomicBool, Ordering};

/// Environment variable read by [`ObskitBuilder::build`](crate::ObskitBuilder::build):
/// `off`, `false`, `0` or `disabled` turn instrumentation off; `on`, `true`, `1`, `enabled` or
/// unset leave it on.
pub const INSTRUMENTATION_ENV: &str = crate::names::env::OBSKIT_INSTRUMENTATION;

static DISABLED: AtomicBool = AtomicBool::new(false);

/// Turns recording on or off for the whole process.
///
/// ```
/// obskit::instrumentation::set_enabled(false);
/// assert!(!obskit::instrumentation::is_enabled());
/// obskit::instrumentation::set_enabled(true);
/// assert!(obskit::instrumentation::is_enabled());
/// ```
pub fn set_enabled(enabled: bool) {
    DISABLED.store(!enabled, Ordering::Relaxed);
}

/// Whether obskit records calls, requests and profiles (on unless turned off).
///
/// ```
/// assert!(obskit::instrumentation::is_enabled());
/// ```
#[inline(always)]
pub fn is_enabled() -> bool {
    !DISABLED.load(Ordering::Relaxed)
}

/// Parses a value of [`INSTRUMENTATION_ENV`]; `None` for a value that is neither on nor off.
///
/// ```
/// use obskit::instrumentation::parse_switch;
/// assert_eq!(parse_switch(" OFF "), Some(false));
/// assert_eq!(parse_switch("1"), Some(true));
/// assert_eq!(parse_switch("maybe"), None);
/// ```
pub use crate::settings::parse_switch;
