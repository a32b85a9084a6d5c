//! The one environment parser: every variable obskit reads goes through [`EnvSource`], and every
//! bad value becomes an [`EnvError`] that names the variable and the problem.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// A variable with a value that cannot be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EnvError {
    /// The variable.
    pub name: &'static str,
    /// What is wrong with its value.
    pub problem: String,
}

impl EnvError {
    /// An error about `name`.
    pub fn new(name: &'static str, problem: impl Into<String>) -> EnvError {
        EnvError {
            name,
            problem: problem.into(),
        }
    }
}

impl fmt::Display for EnvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "environment variable {}: {}", self.name, self.problem)
    }
}

impl std::error::Error for EnvError {}

/// Where variables come from: the process environment ([`ProcessEnv`]), or any
/// `Fn(&str) -> Option<String>` (a test's table). Values are trimmed; an empty value counts as
/// unset.
///
/// ```
/// use std::time::Duration;
/// use obskit::settings::EnvSource;
///
/// let env = |name: &str| match name {
///     "PORT" => Some(" 8080 ".to_string()),
///     "TIMEOUT" => Some("250ms".to_string()),
///     "EMPTY" => Some("".to_string()),
///     "BAD" => Some("eight".to_string()),
///     _ => None,
/// };
/// assert_eq!(env.parse::<u16>("PORT").unwrap(), Some(8080));
/// assert_eq!(env.duration("TIMEOUT").unwrap(), Some(Duration::from_millis(250)));
/// assert_eq!(env.get("EMPTY"), None);
/// let error = env.parse::<u16>("BAD").unwrap_err();
/// assert_eq!(error.to_string(), "environment variable BAD: `eight` cannot be used: invalid digit found in string");
/// ```
pub trait EnvSource {
    /// The raw value of `name`, if set at all.
    fn raw(&self, name: &str) -> Option<String>;

    /// The trimmed value of `name`; `None` when unset or empty.
    fn get(&self, name: &str) -> Option<String> {
        self.raw(name)
            .map(|v| v.trim().to_string())
            .filter(|v| !v.is_empty())
    }

    /// The value of `name` parsed as a `T` (a number, an address).
    fn parse<T>(&self, name: &'static str) -> Result<Option<T>, EnvError>
    where
        Self: Sized,
        T: FromStr,
        T::Err: fmt::Display,
    {
        parse_with(self, name)
    }

    /// The value of `name` as a duration: `500ms`, `10s`, `2m`, `1h`, or a plain number of
    /// milliseconds (what the `OTEL_*` variables use).
    fn duration(&self, name: &'static str) -> Result<Option<Duration>, EnvError>
    where
        Self: Sized,
    {
        self.get(name)
            .map(|value| {
                parse_duration(&value).ok_or_else(|| {
                    EnvError::new(
                        name,
                        format!("`{value}` is not a duration (500ms, 10s, 2m, 1h, or milliseconds)"),
                    )
                })
            })
            .transpose()
    }

    /// The value of `name` as a switch: `on`/`true`/`1`/`yes` or `off`/`false`/`0`/`no`.
    fn switch(&self, name: &'static str) -> Result<Option<bool>, EnvError>
    where
        Self: Sized,
    {
        self.get(name)
            .map(|value| {
                parse_switch(&value)
                    .ok_or_else(|| EnvError::new(name, format!("`{value}` is neither on nor off")))
            })
            .transpose()
    }
}

fn parse_with<T>(env: &dyn EnvSource, name: &'static str) -> Result<Option<T>, EnvError>
where
    T: FromStr,
    T::Err: fmt::Display,
{
    env.get(name)
        .map(|value| {
            value
                .parse::<T>()
                .map_err(|e| EnvError::new(name, format!("`{value}` cannot be used: {e}")))
        })
        .transpose()
}

impl<F: Fn(&str) -> Option<String>> EnvSource for F {
    fn raw(&self, name: &str) -> Option<String> {
        self(name)
    }
}

/// The process environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl EnvSource for ProcessEnv {
    fn raw(&self, name: &str) -> Option<String> {
        std::env::var(name).ok()
    }
}

/// Parses `on`/`off` and their usual spellings, case-insensitively.
pub fn parse_switch(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "on" | "true" | "1" | "yes" | "enabled" => Some(true),
        "off" | "false" | "0" | "no" | "disabled" => Some(false),
        _ => None,
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h`, or a plain number of milliseconds.
///
/// ```
/// use std::time::Duration;
/// use obskit::settings::parse_duration;
/// assert_eq!(parse_duration("1500"), Some(Duration::from_millis(1500)));
/// assert_eq!(parse_duration("2m"), Some(Duration::from_secs(120)));
/// assert_eq!(parse_duration("soon"), None);
/// ```
pub fn parse_duration(value: &str) -> Option<Duration> {
    let value = value.trim();
    let digits = value.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let number: u64 = value[..digits].parse().ok()?;
    let millis = match &value[digits..] {
        "" | "ms" => number,
        "s" => number.checked_mul(1000)?,
        "m" => number.checked_mul(60_000)?,
        "h" => number.checked_mul(3_600_000)?,
        _ => return None,
    };
    Some(Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_variable() {
        let env = |_: &str| Some("99999".to_string());
        let error = env.parse::<u16>("OBSKIT_X").unwrap_err();
        assert_eq!(error.name, "OBSKIT_X");
        assert!(error.problem.contains("too large"), "{error}");
        let error = env.parse::<std::net::SocketAddr>("OBSKIT_ADDR").unwrap_err();
        assert!(error.problem.contains("socket address"), "{error}");
        assert!(env.duration("D").unwrap().is_some());
        assert!((|_: &str| Some("5 s".to_string())).duration("D").is_err());
        assert!(env.switch("S").is_err());
    }

    #[test]
    fn durations_do_not_overflow() {
        assert_eq!(parse_duration("18446744073709551615h"), None);
        assert_eq!(parse_duration("99999999999999999999999"), None);
        assert_eq!(parse_duration("-1s"), None);
    }
}
