//! The log level at run time: the `EnvFilter` directives read at start (`RUST_LOG`), replaced
//! for a while by `PUT /debug/log-level` and put back by themselves when that while is over.

use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use tracing_subscriber::{reload, EnvFilter, Registry};

/// How long a level change lasts when the request names no `ttl`.
pub const DEFAULT_LEVEL_TTL: Duration = Duration::from_secs(10 * 60);
/// The longest a level change may last: a forgotten `debug` must not stay for days.
pub const MAX_LEVEL_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// The most bytes of directives a change may hold.
const MAX_DIRECTIVES_BYTES: usize = 4096;

/// The directives obskit filters with when `RUST_LOG` is unset.
pub const DEFAULT_DIRECTIVES: &str = "info";

/// Why a level change was refused; nothing changed.
#[derive(Debug, PartialEq, Eq)]
pub struct LevelError(pub String);

impl std::fmt::Display for LevelError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for LevelError {}

/// Parses `EnvFilter` directives, naming what is wrong with them.
pub(crate) fn parse_directives(directives: &str) -> Result<EnvFilter, LevelError> {
    if directives.trim().is_empty() {
        return Err(LevelError(
            "directives must not be empty (say `info`, say `warn,cart=debug`)".into(),
        ));
    }
    if directives.len() > MAX_DIRECTIVES_BYTES {
        return Err(LevelError(format!(
            "directives are longer than {MAX_DIRECTIVES_BYTES} bytes"
        )));
    }
    EnvFilter::builder()
        .parse(directives)
        .map_err(|e| LevelError(format!("invalid directives {directives:?}: {e}")))
}

/// A change in force and when it ends.
struct Change {
    directives: String,
    until: Instant,
    expires_at: SystemTime,
}

struct State {
    /// What the filter goes back to: the start-up directives.
    default: String,
    change: Option<Change>,
    /// The revert thread is running.
    watching: bool,
    closed: bool,
}

struct Shared {
    state: Mutex<State>,
    /// Wakes the revert thread when a change is made or the levels go away.
    changed: Condvar,
    handle: reload::Handle<EnvFilter, Registry>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The run-time log level of a [`Logs`](super::Logs): what `/debug/log-level` reads and
/// changes. Cheap to clone.
#[derive(Clone)]
pub struct LogLevels {
    shared: Arc<Shared>,
    _closer: Arc<Closer>,
}

/// Stops the revert thread when the last [`LogLevels`] goes.
struct Closer(Arc<Shared>);

impl Drop for Closer {
    fn drop(&mut self) {
        self.0.lock().closed = true;
        self.0.changed.notify_all();
    }
}

/// What `GET /debug/log-level` shows.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize)]
pub struct LevelReport {
    /// The directives in force.
    pub directives: String,
    /// The start-up directives, in force again when a change expires.
    pub default: String,
    /// When the change in force ends (RFC 3339), if one is.
    pub expires_at: Option<String>,
    /// Seconds until then.
    pub expires_in_seconds: Option<u64>,
}

impl LogLevels {
    pub(crate) fn new(default: String, handle: reload::Handle<EnvFilter, Registry>) -> LogLevels {
        let shared = Arc::new(Shared {
            state: Mutex::new(State {
                default,
                change: None,
                watching: false,
                closed: false,
            }),
            changed: Condvar::new(),
            handle,
        });
        LogLevels {
            _closer: Arc::new(Closer(Arc::clone(&shared))),
            shared,
        }
    }

    /// The directives in force and, for a change, when it ends.
    pub fn report(&self) -> LevelReport {
        let state = self.shared.lock();
        let now = Instant::now();
        LevelReport {
            directives: state
                .change
                .as_ref()
                .map_or(&state.default, |c| &c.directives)
                .clone(),
            default: state.default.clone(),
            expires_at: state.change.as_ref().map(|c| crate::trace::rfc3339(c.expires_at)),
            expires_in_seconds: state
                .change
                .as_ref()
                .map(|c| c.until.saturating_duration_since(now).as_secs()),
        }
    }

    /// Filters with `directives` for `ttl` (at most [`MAX_LEVEL_TTL`]), then with the default
    /// again. Refused, changing nothing, when the directives do not parse or the ttl is out of
    /// range.
    pub fn set(&self, directives: &str, ttl: Duration) -> Result<LevelReport, LevelError> {
        if ttl.is_zero() || ttl > MAX_LEVEL_TTL {
            return Err(LevelError(format!(
                "ttl must be more than 0 and at most {} s",
                MAX_LEVEL_TTL.as_secs()
            )));
        }
        let filter = parse_directives(directives)?;
        {
            let mut state = self.shared.lock();
            self.shared
                .handle
                .reload(filter)
                .map_err(|e| LevelError(format!("the filter could not be replaced: {e}")))?;
            state.change = Some(Change {
                directives: directives.to_string(),
                until: Instant::now() + ttl,
                expires_at: SystemTime::now() + ttl,
            });
            if !state.watching {
                state.watching = true;
                let shared = Arc::clone(&self.shared);
                let spawned = std::thread::Builder::new()
                    .name("obskit-log-level".to_string())
                    .spawn(move || revert_when_due(&shared));
                if spawned.is_err() {
                    // No thread to revert it: the change is not made.
                    state.watching = false;
                    state.change = None;
                    let _ = self.shared.handle.reload(EnvFilter::new(&state.default));
                    return Err(LevelError(
                        "no thread could be started to revert the change".into(),
                    ));
                }
            }
        }
        self.shared.changed.notify_all();
        Ok(self.report())
    }

    /// Puts the default directives back now.
    pub fn reset(&self) -> LevelReport {
        {
            let mut state = self.shared.lock();
            revert(&self.shared, &mut state);
        }
        self.shared.changed.notify_all();
        self.report()
    }
}

fn revert(shared: &Shared, state: &mut State) {
    if state.change.take().is_some() {
        // The default parsed at start-up, so it parses again.
        let _ = shared.handle.reload(EnvFilter::new(&state.default));
    }
}

/// The revert thread: sleeps until the change in force is due, reverts it, and ends when the
/// levels are dropped.
fn revert_when_due(shared: &Arc<Shared>) {
    let mut state = shared.lock();
    loop {
        if state.closed {
            return;
        }
        let wait = match &state.change {
            Some(change) => match change.until.checked_duration_since(Instant::now()) {
                Some(left) if !left.is_zero() => left,
                _ => {
                    revert(shared, &mut state);
                    continue;
                }
            },
            // Nothing to revert: sleep until a change comes (or the levels go).
            None => Duration::from_secs(3600),
        };
        state = shared
            .changed
            .wait_timeout(state, wait)
            .unwrap_or_else(|p| p.into_inner())
            .0;
    }
}

/// A ttl as the request gives it: what [`parse_duration`](crate::settings::parse_duration)
/// reads (`500ms`, `30s`, `10m`, `2h`), except that a bare number is seconds (`90`), as people
/// say a ttl.
pub fn parse_ttl(text: &str) -> Result<Duration, LevelError> {
    let text = text.trim();
    let parsed = if !text.is_empty() && text.bytes().all(|b| b.is_ascii_digit()) {
        text.parse().ok().map(Duration::from_secs)
    } else {
        crate::settings::parse_duration(text)
    };
    parsed.ok_or_else(|| LevelError(format!("ttl {text:?} is not a duration (say 90, 30s, 10m or 2h)")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttls_read_as_people_write_them() {
        assert_eq!(parse_ttl("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_ttl("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_ttl("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_ttl("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_ttl("2h"), Ok(Duration::from_secs(7200)));
        for bad in ["", "ten", "5d", "-5", "1.5h", "99999999999999999999h"] {
            assert!(parse_ttl(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn bad_directives_are_named() {
        let e = parse_directives("cart=loud").unwrap_err();
        assert!(e.0.contains("cart=loud"), "{e}");
        assert!(parse_directives("  ").is_err());
        assert!(parse_directives(&"a".repeat(5000)).is_err());
        assert!(parse_directives("warn,cart::saga=debug").is_ok());
    }
}
