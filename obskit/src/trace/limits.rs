//! Span limits: how much one span may hold, in counts and in bytes.
//!
//! OpenTelemetry defines the limits and their variables (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`,
//! `OTEL_ATTRIBUTE_COUNT_LIMIT`, `OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, `OTEL_SPAN_EVENT_COUNT_LIMIT`,
//! `OTEL_SPAN_LINK_COUNT_LIMIT`, `OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`, `OTEL_LINK_ATTRIBUTE_COUNT_LIMIT`);
//! obskit reads them and keeps the specification's count defaults (128). The specification's
//! default attribute value length is "no limit", which is not acceptable for values copied from
//! requests: a client's 380 kB `User-Agent` would be kept in every span. obskit's default is
//! [`SpanLimits::DEFAULT_VALUE_LENGTH`] bytes, and attributes the HTTP layer copies from a request
//! (user agent, path, URL, host) are capped lower still, at [`SpanLimits::REQUEST_VALUE_LENGTH`].
//!
//! What a limit cuts is counted on the span (`dropped_attributes_count`, `dropped_events_count`,
//! `dropped_links_count`, as OTLP carries them) and shown in `/debug/traces`. Strings are cut at a
//! UTF-8 character boundary.
//!
//! The limits are process-wide, like the sink and the sampler: [`SpanLimits::install`] sets them
//! (the builder does), and a span reads them with relaxed loads when it records an attribute.
//!
//! ```
//! use std::borrow::Cow;
//! use obskit::trace::{AttrValue, SpanLimits};
//!
//! let limits = SpanLimits { attribute_value_length: 4, ..SpanLimits::default() };
//! // "é" is two bytes: the cut falls before it rather than inside it.
//! assert_eq!(limits.truncate(AttrValue::from("abcé")), AttrValue::Str(Cow::Borrowed("abc")));
//! assert_eq!(limits.truncate(AttrValue::I64(12345)), AttrValue::I64(12345));
//! ```

use std::borrow::Cow;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::AttrValue;
use crate::names::env;
use crate::settings::{EnvError, EnvSource};

/// How much one span may hold. See the [module](self) docs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SpanLimits {
    /// The longest string attribute value, in bytes (`OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT`).
    pub attribute_value_length: usize,
    /// The most attributes on a span (`OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT`, else
    /// `OTEL_ATTRIBUTE_COUNT_LIMIT`).
    pub attribute_count: usize,
    /// The most events on a span (`OTEL_SPAN_EVENT_COUNT_LIMIT`).
    pub event_count: usize,
    /// The most links on a span (`OTEL_SPAN_LINK_COUNT_LIMIT`).
    pub link_count: usize,
    /// The most attributes on an event (`OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT`, else
    /// `OTEL_ATTRIBUTE_COUNT_LIMIT`).
    pub event_attribute_count: usize,
    /// The longest value the HTTP layer copies from a request into an attribute (user agent,
    /// path, URL, host): never more than `attribute_value_length`.
    pub request_value_length: usize,
}

impl Default for SpanLimits {
    fn default() -> Self {
        SpanLimits {
            attribute_value_length: Self::DEFAULT_VALUE_LENGTH,
            attribute_count: Self::DEFAULT_COUNT,
            event_count: Self::DEFAULT_COUNT,
            link_count: Self::DEFAULT_COUNT,
            event_attribute_count: Self::DEFAULT_COUNT,
            request_value_length: Self::REQUEST_VALUE_LENGTH,
        }
    }
}

/// The installed limits, one atomic per field, read with relaxed loads on the hot path.
static VALUE_LENGTH: AtomicUsize = AtomicUsize::new(SpanLimits::DEFAULT_VALUE_LENGTH);
static ATTRIBUTE_COUNT: AtomicUsize = AtomicUsize::new(SpanLimits::DEFAULT_COUNT);
static EVENT_COUNT: AtomicUsize = AtomicUsize::new(SpanLimits::DEFAULT_COUNT);
static LINK_COUNT: AtomicUsize = AtomicUsize::new(SpanLimits::DEFAULT_COUNT);
static EVENT_ATTRIBUTE_COUNT: AtomicUsize = AtomicUsize::new(SpanLimits::DEFAULT_COUNT);
static REQUEST_VALUE_LENGTH: AtomicUsize = AtomicUsize::new(SpanLimits::REQUEST_VALUE_LENGTH);

impl SpanLimits {
    /// obskit's default longest attribute value: 2 KiB (OpenTelemetry's is unlimited).
    pub const DEFAULT_VALUE_LENGTH: usize = 2048;
    /// OpenTelemetry's default count limits.
    pub const DEFAULT_COUNT: usize = 128;
    /// The default longest value copied from a request: 256 bytes (a browser's user agent is
    /// 100-150).
    pub const REQUEST_VALUE_LENGTH: usize = 256;

    /// Reads the OpenTelemetry variables through `env`; unset ones keep obskit's defaults. An
    /// unparsable value is an error naming the variable.
    ///
    /// ```
    /// use obskit::trace::SpanLimits;
    /// let env = |name: &str| match name {
    ///     "OTEL_ATTRIBUTE_COUNT_LIMIT" => Some("16".to_string()),
    ///     "OTEL_SPAN_EVENT_COUNT_LIMIT" => Some("4".to_string()),
    ///     _ => None,
    /// };
    /// let limits = SpanLimits::from_env_source(&env).unwrap();
    /// assert_eq!((limits.attribute_count, limits.event_attribute_count, limits.event_count), (16, 16, 4));
    /// assert!(SpanLimits::from_env_source(&|_: &str| Some("lots".to_string())).is_err());
    /// ```
    pub fn from_env_source(env: &impl EnvSource) -> Result<SpanLimits, EnvError> {
        let defaults = SpanLimits::default();
        let general = env.parse::<usize>(env::OTEL_ATTRIBUTE_COUNT_LIMIT)?;
        let count = |name: &'static str| -> Result<Option<usize>, EnvError> { env.parse::<usize>(name) };
        let value_length = env
            .parse::<usize>(env::OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT)?
            .unwrap_or(defaults.attribute_value_length);
        Ok(SpanLimits {
            attribute_value_length: value_length,
            attribute_count: count(env::OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT)?
                .or(general)
                .unwrap_or(defaults.attribute_count),
            event_count: count(env::OTEL_SPAN_EVENT_COUNT_LIMIT)?.unwrap_or(defaults.event_count),
            link_count: count(env::OTEL_SPAN_LINK_COUNT_LIMIT)?.unwrap_or(defaults.link_count),
            event_attribute_count: count(env::OTEL_EVENT_ATTRIBUTE_COUNT_LIMIT)?
                .or(general)
                .unwrap_or(defaults.event_attribute_count),
            request_value_length: defaults.request_value_length.min(value_length),
        })
    }

    /// Makes these the limits of every span started from now on, in the whole process.
    pub fn install(self) {
        VALUE_LENGTH.store(self.attribute_value_length, Ordering::Relaxed);
        ATTRIBUTE_COUNT.store(self.attribute_count, Ordering::Relaxed);
        EVENT_COUNT.store(self.event_count, Ordering::Relaxed);
        LINK_COUNT.store(self.link_count, Ordering::Relaxed);
        EVENT_ATTRIBUTE_COUNT.store(self.event_attribute_count, Ordering::Relaxed);
        REQUEST_VALUE_LENGTH.store(
            self.request_value_length.min(self.attribute_value_length),
            Ordering::Relaxed,
        );
    }

    /// The installed limits.
    pub fn current() -> SpanLimits {
        SpanLimits {
            attribute_value_length: VALUE_LENGTH.load(Ordering::Relaxed),
            attribute_count: ATTRIBUTE_COUNT.load(Ordering::Relaxed),
            event_count: EVENT_COUNT.load(Ordering::Relaxed),
            link_count: LINK_COUNT.load(Ordering::Relaxed),
            event_attribute_count: EVENT_ATTRIBUTE_COUNT.load(Ordering::Relaxed),
            request_value_length: REQUEST_VALUE_LENGTH.load(Ordering::Relaxed),
        }
    }

    /// `value` with a string cut to [`attribute_value_length`](Self::attribute_value_length)
    /// bytes at a character boundary; other values as they are.
    pub fn truncate(&self, value: AttrValue) -> AttrValue {
        truncate_to(value, self.attribute_value_length)
    }
}

/// The installed longest value length (one relaxed load).
#[inline]
pub(crate) fn value_length() -> usize {
    VALUE_LENGTH.load(Ordering::Relaxed)
}

/// The installed attribute count limit.
#[inline]
pub(crate) fn attribute_count() -> usize {
    ATTRIBUTE_COUNT.load(Ordering::Relaxed)
}

/// The installed event count limit.
#[inline]
pub(crate) fn event_count() -> usize {
    EVENT_COUNT.load(Ordering::Relaxed)
}

/// The installed link count limit.
#[inline]
pub(crate) fn link_count() -> usize {
    LINK_COUNT.load(Ordering::Relaxed)
}

/// The installed event attribute count limit.
#[inline]
pub(crate) fn event_attribute_count() -> usize {
    EVENT_ATTRIBUTE_COUNT.load(Ordering::Relaxed)
}

/// The installed limit for values copied from a request.
#[inline]
pub fn request_value_length() -> usize {
    REQUEST_VALUE_LENGTH.load(Ordering::Relaxed)
}

/// `value` cut to at most `max` bytes at a character boundary, when it is a longer string.
#[inline]
pub(crate) fn truncate_to(value: AttrValue, max: usize) -> AttrValue {
    match value {
        AttrValue::Str(s) if s.len() > max => AttrValue::Str(truncate_str(s, max)),
        other => other,
    }
}

/// `s` cut to at most `max` bytes, at the last character boundary at or before `max`.
pub(crate) fn truncate_str(s: Cow<'static, str>, max: usize) -> Cow<'static, str> {
    if s.len() <= max {
        return s;
    }
    let cut = floor_char_boundary(&s, max);
    match s {
        Cow::Borrowed(b) => Cow::Borrowed(&b[..cut]),
        Cow::Owned(mut o) => {
            o.truncate(cut);
            // A 380 kB value cut to 256 bytes should not keep its 380 kB allocation.
            o.shrink_to_fit();
            Cow::Owned(o)
        }
    }
}

/// A `&str` prefix of at most `max` bytes, cut at a character boundary.
pub(crate) fn truncated(s: &str, max: usize) -> &str {
    &s[..floor_char_boundary(s, max)]
}

fn floor_char_boundary(s: &str, max: usize) -> usize {
    if max >= s.len() {
        return s.len();
    }
    // A UTF-8 character is at most 4 bytes: the boundary is within the last 3 bytes before max.
    (max.saturating_sub(3)..=max)
        .rev()
        .find(|&i| s.is_char_boundary(i))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_fall_on_character_boundaries() {
        let s = "aé€😀"; // 1 + 2 + 3 + 4 bytes
        for max in 0..=s.len() + 1 {
            let cut = truncated(s, max);
            assert!(cut.len() <= max, "{max}");
            assert!(s.starts_with(cut));
            // Nothing longer would have fit.
            let next = s[cut.len()..].chars().next().map_or(0, char::len_utf8);
            assert!(cut.len() == s.len() || cut.len() + next > max, "{max}: {cut:?}");
        }
        assert_eq!(truncate_str(Cow::Owned("x".repeat(1000)), 10).len(), 10);
        assert_eq!(truncate_str(Cow::Borrowed("short"), 10), "short");
    }

    #[test]
    fn the_specific_count_variable_wins_over_the_general_one() {
        let env = |name: &str| match name {
            "OTEL_ATTRIBUTE_COUNT_LIMIT" => Some("10".to_string()),
            "OTEL_SPAN_ATTRIBUTE_COUNT_LIMIT" => Some("20".to_string()),
            "OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT" => Some("100".to_string()),
            _ => None,
        };
        let limits = SpanLimits::from_env_source(&env).unwrap();
        assert_eq!(limits.attribute_count, 20);
        assert_eq!(limits.event_attribute_count, 10);
        assert_eq!(limits.attribute_value_length, 100);
        // Request values are never allowed more than the general limit.
        assert_eq!(limits.request_value_length, 100);
        let error = SpanLimits::from_env_source(&|name: &str| {
            (name == "OTEL_SPAN_LINK_COUNT_LIMIT").then(|| "-1".to_string())
        })
        .unwrap_err();
        assert_eq!(error.name, "OTEL_SPAN_LINK_COUNT_LIMIT");
    }

    #[test]
    fn defaults_are_finite() {
        let limits = SpanLimits::from_env_source(&|_: &str| None).unwrap();
        assert_eq!(limits, SpanLimits::default());
        assert!(limits.request_value_length < limits.attribute_value_length);
    }
}
