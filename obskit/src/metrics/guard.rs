//! The cardinality guard: a cap on the distinct label sets one metric may hold.
//!
//! A label set is admitted while the metric holds fewer than `limit` sets; past that, callers
//! fold it into the overflow series (every label `__overflow__`) and the guard counts the fold
//! in `obskit_metric_label_overflow_total{metric}`. The guard remembers only 64-bit hashes of
//! the sets it admitted, so its memory is bounded by `limit` whatever a client sends.

use std::collections::HashSet;
use std::hash::{BuildHasher, Hash, Hasher, RandomState};
use std::sync::RwLock;

use prometheus::IntCounter;

/// The label value every label of the overflow series carries.
pub const OVERFLOW_LABEL_VALUE: &str = "__overflow__";

/// Tracks the label sets of one metric and decides whether a new one may be created.
pub(crate) struct LabelGuard {
    limit: usize,
    // Keyed per guard so that hash collisions cannot be precomputed by a client.
    hasher: RandomState,
    seen: RwLock<HashSet<u64, IdentityHash>>,
    overflow: IntCounter,
}

impl LabelGuard {
    pub(crate) fn new(limit: usize, overflow: IntCounter) -> Self {
        LabelGuard {
            limit,
            hasher: RandomState::new(),
            seen: RwLock::new(HashSet::with_hasher(IdentityHash)),
            overflow,
        }
    }

    /// Returns `true` when `values` is a label set the metric already holds or may still add,
    /// `false` when the caller must use the overflow series instead.
    pub(crate) fn admit(&self, values: &[&str]) -> bool {
        let mut hasher = self.hasher.build_hasher();
        for value in values {
            value.hash(&mut hasher);
        }
        let key = hasher.finish();
        if self.seen.read().unwrap_or_else(|p| p.into_inner()).contains(&key) {
            return true;
        }
        let mut seen = self.seen.write().unwrap_or_else(|p| p.into_inner());
        if seen.contains(&key) {
            return true;
        }
        if seen.len() < self.limit {
            seen.insert(key);
            true
        } else {
            drop(seen);
            self.overflow.inc();
            false
        }
    }

    /// How many distinct label sets have been admitted.
    pub(crate) fn len(&self) -> usize {
        self.seen.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub(crate) fn limit(&self) -> usize {
        self.limit
    }
}

/// The keys are already SipHash outputs: hashing them again would only cost time.
#[derive(Clone, Copy, Default)]
struct IdentityHash;

impl BuildHasher for IdentityHash {
    type Hasher = IdentityHasher;
    fn build_hasher(&self) -> IdentityHasher {
        IdentityHasher(0)
    }
}

struct IdentityHasher(u64);

impl Hasher for IdentityHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed; this path exists for completeness.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard(limit: usize) -> LabelGuard {
        LabelGuard::new(limit, IntCounter::new("overflow_total", "test").unwrap())
    }

    #[test]
    fn admits_up_to_the_limit_then_refuses_new_sets() {
        let g = guard(3);
        assert!(g.admit(&["a"]));
        assert!(g.admit(&["b"]));
        assert!(g.admit(&["c"]));
        assert!(!g.admit(&["d"]));
        assert_eq!(g.overflow.get(), 1);
        // Known sets stay admitted after the cap is reached.
        assert!(g.admit(&["a"]));
        assert!(g.admit(&["c"]));
        assert_eq!(g.len(), 3);
    }

    #[test]
    fn label_boundaries_are_part_of_the_key() {
        let g = guard(10);
        g.admit(&["ab", "c"]);
        g.admit(&["a", "bc"]);
        assert_eq!(g.len(), 2, "(ab,c) and (a,bc) are different label sets");
    }

    #[test]
    fn memory_is_bounded_by_the_limit() {
        let g = guard(100);
        for i in 0..100_000 {
            g.admit(&[&i.to_string()]);
        }
        assert_eq!(g.len(), 100);
        assert_eq!(g.overflow.get(), 100_000 - 100);
    }
}
