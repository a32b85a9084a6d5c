//! Connection counters the server bumps as it accepts and closes connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Counts of the server's connections: open now, and accepted since start. Cheap to clone:
/// clones share the counters, so the server increments the same figures `/debug/metrics`
/// reads.
///
/// ```
/// use obskit::debug::ConnectionStats;
///
/// let stats = ConnectionStats::new();
/// let for_server = stats.clone();
/// let guard = for_server.opened();
/// assert_eq!((stats.open(), stats.accepted_total()), (1, 1));
/// drop(guard);
/// assert_eq!((stats.open(), stats.accepted_total()), (0, 1));
/// ```
#[derive(Clone, Debug, Default)]
pub struct ConnectionStats {
    counters: Arc<Counters>,
}

#[derive(Debug, Default)]
struct Counters {
    open: AtomicU64,
    accepted_total: AtomicU64,
}

impl ConnectionStats {
    /// Both counts at zero.
    ///
    /// ```
    /// let stats = obskit::debug::ConnectionStats::new();
    /// assert_eq!(stats.open(), 0);
    /// ```
    pub fn new() -> Self {
        ConnectionStats::default()
    }

    /// Counts a connection just accepted: `accepted_total` goes up for good, `open` until the
    /// returned guard is dropped, so keep the guard in the connection's task. Two atomic adds.
    ///
    /// ```
    /// let stats = obskit::debug::ConnectionStats::new();
    /// let first = stats.opened();
    /// let second = stats.opened();
    /// drop(first);
    /// assert_eq!(stats.open(), 1);
    /// assert_eq!(stats.accepted_total(), 2);
    /// # drop(second);
    /// ```
    pub fn opened(&self) -> ConnectionGuard {
        // Relaxed: each counter is a figure of its own; nothing is published through them.
        self.counters.accepted_total.fetch_add(1, Ordering::Relaxed);
        self.counters.open.fetch_add(1, Ordering::Relaxed);
        ConnectionGuard {
            counters: Arc::clone(&self.counters),
        }
    }

    /// Connections open now.
    ///
    /// ```
    /// let stats = obskit::debug::ConnectionStats::new();
    /// let _guard = stats.opened();
    /// assert_eq!(stats.open(), 1);
    /// ```
    pub fn open(&self) -> u64 {
        self.counters.open.load(Ordering::Relaxed)
    }

    /// Connections accepted since the counters were created.
    ///
    /// ```
    /// let stats = obskit::debug::ConnectionStats::new();
    /// drop(stats.opened());
    /// assert_eq!(stats.accepted_total(), 1);
    /// ```
    pub fn accepted_total(&self) -> u64 {
        self.counters.accepted_total.load(Ordering::Relaxed)
    }
}

/// Keeps one connection counted as open; dropping it closes the connection in the figures.
///
/// ```
/// let stats = obskit::debug::ConnectionStats::new();
/// {
///     let _guard = stats.opened();
///     assert_eq!(stats.open(), 1);
/// }
/// assert_eq!(stats.open(), 0);
/// ```
#[must_use = "the connection counts as open only while the guard lives"]
#[derive(Debug)]
pub struct ConnectionGuard {
    counters: Arc<Counters>,
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        self.counters.open.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_moved_across_threads() {
        let stats = ConnectionStats::new();
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let guard = stats.opened();
                std::thread::spawn(move || drop(guard))
            })
            .collect();
        for handle in handles {
            handle.join().unwrap();
        }
        assert_eq!(stats.open(), 0);
        assert_eq!(stats.accepted_total(), 8);
    }
}
