//! `/debug/tasks`: a dump of every tokio task of the serving runtime and where each one waits
//! (the `.await` chain it is parked at): the async service's goroutine or thread dump.
//!
//! # Build configuration
//!
//! tokio takes task dumps only in a build with `--cfg tokio_unstable` and its `taskdump` feature,
//! on Linux (x86, x86-64, aarch64, s390x). obskit's `taskdump` feature turns tokio's on; the
//! application sets the flag, in `.cargo/config.toml`:
//!
//! ```toml
//! [build]
//! rustflags = ["--cfg", "tokio_unstable"]
//! ```
//!
//! (or `RUSTFLAGS="--cfg tokio_unstable"`), as the shop's workspace does. In any other build the
//! endpoint answers `501` naming what is missing.
//!
//! # Answers
//!
//! - `200`, JSON: the number of tasks and, for each, its id and its trace (one frame a line);
//! - `409` while another dump runs: a dump pauses every worker and polls every task once more in
//!   a tracing mode, so they are taken one at a time;
//! - `503` when the dump did not finish within `?timeout=` seconds (default
//!   [`DEFAULT_TIMEOUT`], at most [`MAX_TIMEOUT`]). tokio's dump waits for every worker to reach
//!   a point where it can pause: a worker blocked (a synchronous deadlock, a busy loop, a
//!   blocking call on a worker) never does, so this answer is itself a finding;
//! - `400` for any other query.
//!
//! A client that disconnects drops the dump, and the next one may start.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// How long a dump may take by default.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a dump may be allowed to take at most.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(30);

/// Items for a build in which tokio takes task dumps, then for any other: the one place that
/// says which build that is (tokio's own condition for `Handle::dump`).
macro_rules! by_dump_support {
    (supported: { $($yes:item)* } otherwise: { $($no:item)* }) => {
        $(
            #[cfg(all(
                tokio_unstable,
                feature = "taskdump",
                target_os = "linux",
                any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
            ))]
            $yes
        )*
        $(
            #[cfg(not(all(
                tokio_unstable,
                feature = "taskdump",
                target_os = "linux",
                any(target_arch = "aarch64", target_arch = "x86", target_arch = "x86_64", target_arch = "s390x")
            )))]
            $no
        )*
    };
}

/// Why this build takes no dumps, for the `501`.
pub fn unsupported_reason() -> &'static str {
    if !cfg!(feature = "taskdump") {
        "task dumps need obskit's `taskdump` feature and a build with `--cfg tokio_unstable` \
         (RUSTFLAGS or .cargo/config.toml)"
    } else if !cfg!(tokio_unstable) {
        "task dumps need a build with `--cfg tokio_unstable` (RUSTFLAGS or .cargo/config.toml)"
    } else {
        "tokio takes task dumps only on Linux (x86, x86-64, aarch64, s390x)"
    }
}

/// A dump's outcome.
#[derive(Debug)]
pub enum DumpError {
    /// This build cannot take one ([`unsupported_reason`]).
    Unsupported,
    /// Another dump is running.
    Busy,
    /// Not called inside a tokio runtime.
    NoRuntime,
    /// The dump did not finish in time: a worker is likely blocked.
    TimedOut(Duration),
}

/// One task of a dump.
#[derive(Debug, serde::Serialize)]
pub struct TaskTrace {
    /// tokio's task id.
    pub id: String,
    /// Where it waits: the frames of its `.await` chain, outermost first, one a line.
    pub trace: String,
}

/// A whole dump.
#[derive(Debug, serde::Serialize)]
pub struct TaskDump {
    /// How many tasks the runtime had.
    pub tasks_count: usize,
    /// Each of them.
    pub tasks: Vec<TaskTrace>,
}

/// The timeout of a `/debug/tasks` query (`?timeout=SECONDS`, 1 to 30).
pub fn parse_timeout(query: Option<&str>) -> Result<Duration, String> {
    let mut timeout = DEFAULT_TIMEOUT;
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        match pair.split_once('=') {
            Some(("timeout", value)) => {
                timeout = value
                    .parse::<u64>()
                    .ok()
                    .map(Duration::from_secs)
                    .filter(|t| (Duration::from_secs(1)..=MAX_TIMEOUT).contains(t))
                    .ok_or_else(|| {
                        format!(
                            "timeout must be whole seconds from 1 to {}",
                            MAX_TIMEOUT.as_secs()
                        )
                    })?;
            }
            _ => return Err(format!("unknown parameter {pair:?}: say timeout=SECONDS")),
        }
    }
    Ok(timeout)
}

/// Only one dump at a time in a process.
static DUMPING: AtomicBool = AtomicBool::new(false);

/// Holds [`DUMPING`] until dropped (the dump done, timed out, or its client gone).
struct OneAtATime;

impl OneAtATime {
    fn take() -> Option<OneAtATime> {
        DUMPING
            .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
            .is_ok()
            .then_some(OneAtATime)
    }
}

impl Drop for OneAtATime {
    fn drop(&mut self) {
        DUMPING.store(false, Ordering::Release);
    }
}

/// Dumps the tasks of the runtime this is called in, within `timeout`.
pub async fn dump(timeout: Duration) -> Result<TaskDump, DumpError> {
    if !SUPPORTED {
        return Err(DumpError::Unsupported);
    }
    let Some(_one) = OneAtATime::take() else {
        return Err(DumpError::Busy);
    };
    let handle = tokio::runtime::Handle::try_current().map_err(|_| DumpError::NoRuntime)?;
    take(handle, timeout).await
}

by_dump_support! {
    supported: {
        /// Whether this build can take task dumps: see the [module](self).
        pub const SUPPORTED: bool = true;

        async fn take(handle: tokio::runtime::Handle, timeout: Duration) -> Result<TaskDump, DumpError> {
            let dump = tokio::time::timeout(timeout, handle.dump())
                .await
                .map_err(|_| DumpError::TimedOut(timeout))?;
            let tasks: Vec<TaskTrace> = dump
                .tasks()
                .iter()
                .map(|task| TaskTrace {
                    id: task.id().to_string(),
                    trace: task.trace().to_string(),
                })
                .collect();
            Ok(TaskDump {
                tasks_count: tasks.len(),
                tasks,
            })
        }
    }
    otherwise: {
        /// Whether this build can take task dumps: see the [module](self).
        pub const SUPPORTED: bool = false;

        async fn take(_handle: tokio::runtime::Handle, _timeout: Duration) -> Result<TaskDump, DumpError> {
            Err(DumpError::Unsupported)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timeouts_are_checked() {
        assert_eq!(parse_timeout(None), Ok(DEFAULT_TIMEOUT));
        assert_eq!(parse_timeout(Some("timeout=2")), Ok(Duration::from_secs(2)));
        for bad in ["timeout=0", "timeout=31", "timeout=1.5", "seconds=2", "timeout"] {
            assert!(parse_timeout(Some(bad)).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_dump_names_where_each_task_waits_or_says_why_not_one_at_a_time() {
        // One test, so that no other test's dump is running beside it.
        let first = OneAtATime::take().expect("none running");
        assert!(OneAtATime::take().is_none());
        drop(first);

        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async {
            let (_keep, mut closed) = tokio::sync::watch::channel(());
            let parked = tokio::spawn(async move { parked_on_a_channel(&mut closed).await });
            tokio::task::yield_now().await;
            if SUPPORTED {
                let _running = OneAtATime::take().unwrap();
                assert!(matches!(dump(Duration::from_secs(1)).await, Err(DumpError::Busy)));
            }
            match dump(Duration::from_secs(10)).await {
                Ok(dump) => {
                    assert!(std::hint::black_box(SUPPORTED), "a dump from a build without");
                    let text: Vec<&str> = dump.tasks.iter().map(|t| t.trace.as_str()).collect();
                    let at = format!("src/debug/tasks.rs:{PARKED_LINE}:");
                    assert!(
                        text.iter()
                            .any(|t| t.contains(&at) && t.contains("sync/watch.rs")),
                        "the parked task's trace names the line it waits at, {at}: {text:#?}"
                    );
                    assert_eq!(dump.tasks_count, dump.tasks.len());
                }
                Err(DumpError::Unsupported) => assert!(!std::hint::black_box(SUPPORTED)),
                Err(other) => panic!("{other:?}"),
            }
            parked.abort();
        });
    }

    /// The line of the `.await` below: a trace names where a task waits by file and line.
    const PARKED_LINE: u32 = line!() + 3;
    #[inline(never)]
    async fn parked_on_a_channel(closed: &mut tokio::sync::watch::Receiver<()>) {
        let _ = closed.changed().await;
    }
}
