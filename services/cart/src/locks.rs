//! One lock per user (striped), so that the calls of one user on this instance run one at a
//! time: a line added while that user's checkout waits for the order service is neither
//! emptied with the ordered lines nor lost, and two adds cannot both pass the stock check.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;

use std::sync::Arc;

use tokio::sync::{Mutex, OwnedMutexGuard};

/// Stripes: a fixed set of locks, a user mapped to one by hash. Two users sharing a stripe only
/// wait for each other briefly; a fixed set needs no clean-up, whatever the number of users.
const STRIPES: usize = 1024;

/// The per-user locks of the service.
pub(crate) struct UserLocks {
    stripes: Vec<Arc<Mutex<()>>>,
    hasher: RandomState,
}

impl UserLocks {
    pub(crate) fn new() -> UserLocks {
        UserLocks {
            stripes: (0..STRIPES).map(|_| Arc::new(Mutex::new(()))).collect(),
            hasher: RandomState::new(),
        }
    }

    /// Waits for the user's lock; released when the guard drops. The guard is owned, so that
    /// a checkout's task holds it for as long as the checkout runs, whatever happens to the
    /// request that started it.
    pub(crate) async fn lock(&self, user_id: &str) -> OwnedMutexGuard<()> {
        let stripe = self.hasher.hash_one(user_id) as usize % self.stripes.len();
        Arc::clone(&self.stripes[stripe]).lock_owned().await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_user_waits_for_itself_and_not_for_everyone() {
        let locks = UserLocks::new();
        let held = locks.lock("ann").await;
        let again = tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("ann")).await;
        assert!(again.is_err(), "the same user waits");
        // Some other user lands on another stripe and does not wait.
        let mut free = 0;
        for i in 0..10 {
            let name = format!("user-{i}");
            if let Ok(guard) =
                tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock(&name)).await
            {
                drop(guard);
                free += 1;
            }
        }
        assert!(free >= 9, "{free}");
        drop(held);
        let _ = locks.lock("ann").await;
    }
}
