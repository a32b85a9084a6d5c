//! The recovery sweep: at start and every [`PERIOD`], every checkout journaled as unfinished
//! for longer than [`GRACE`] is driven to `done` or `released` by [`saga::drive`] (as the
//! [`Driver::Recovery`]), under the user's lock, so that a checkout cut at any step by a crash,
//! a restart or a service that did not answer is finished. The grace leaves a checkout that a
//! request is running right now to that request (the lock would make the sweep wait for it
//! anyway; the grace only saves the wait).

use std::sync::Arc;
use std::time::Duration;

use shop_common::store::{checkout_state, now_seconds};
use tokio::sync::watch;

use crate::saga::{self, Driver};
use crate::App;

/// How often the sweep runs.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);
/// How old an unfinished checkout must be before the sweep takes it on.
pub(crate) const GRACE: Duration = Duration::from_secs(2);
/// Most checkouts one pass takes on.
const BATCH: u32 = 100;

/// Sweeps until `stop` changes (or its sender is gone); the first pass runs at once.
pub(crate) async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // One log line per run of failures, not one per tick.
    let mut failing = false;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            _ = stop.changed() => return,
        }
        let before = now_seconds() - GRACE.as_secs_f64();
        let unfinished = match app.store.unfinished_checkouts(None, before, BATCH).await {
            Ok(unfinished) => {
                failing = false;
                unfinished
            }
            Err(e) => {
                if !failing {
                    tracing::warn!(error = %e, "unfinished checkouts not read");
                }
                failing = true;
                continue;
            }
        };
        for checkout in unfinished {
            if *stop.borrow() {
                return;
            }
            let _serialised = app.locks.lock(&checkout.user_id).await;
            // Read again under the lock: a request may have finished it meanwhile.
            let checkout = match app.store.checkout(&checkout.id).await {
                Ok(c) if !checkout_state::is_final(&c.state) => c,
                Ok(_) => continue,
                Err(e) => {
                    tracing::warn!(checkout_id = %checkout.id, error = %e, "unfinished checkout not read");
                    continue;
                }
            };
            // Its outcome is in the journal; nobody waits for an answer.
            let _ = saga::drive(&app, checkout, Driver::Recovery).await;
        }
    }
}
