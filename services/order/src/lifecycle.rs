//! The order lifecycle: its statuses, which transitions are legal, and the background task that
//! advances orders on a clock.
//!
//! ```text
//! CREATED -> PAID -> SHIPPED -> DELIVERED
//!    |         |
//!    +---------+--> CANCELLED   (any time before SHIPPED)
//! ```
//!
//! The task wakes every quarter step (at least every [`MIN_TICK`]) and moves each order that
//! has been in `CREATED`, `PAID` or `SHIPPED` for at least one step to the next status, with
//! the same compare-and-set as the API: when a client moved the order meanwhile (cancelled it,
//! say), the store answers `Stale` and the task leaves the order alone.

use std::time::Duration;

use shop_common::store::{now_seconds, Store, StoreError};
use tokio::sync::watch;
use tokio::time::MissedTickBehavior;

use crate::Metrics;

/// A new order.
pub const CREATED: &str = "CREATED";
/// Paid for.
pub const PAID: &str = "PAID";
/// Handed to the carrier.
pub const SHIPPED: &str = "SHIPPED";
/// At the customer (final).
pub const DELIVERED: &str = "DELIVERED";
/// Cancelled before shipping (final).
pub const CANCELLED: &str = "CANCELLED";

/// Every status, in lifecycle order.
pub const STATUSES: [&str; 5] = [CREATED, PAID, SHIPPED, DELIVERED, CANCELLED];

/// Most orders of one status the task looks at per tick, so that a backlog is worked off over
/// several ticks instead of in one long burst of writes.
pub const BATCH: u32 = 200;

/// The shortest interval between two passes of the task, however short the step.
pub const MIN_TICK: Duration = Duration::from_millis(100);

/// The status named `name` (any letter case, surrounding blanks ignored), as its constant;
/// `None` for an unknown name.
pub fn parse_status(name: &str) -> Option<&'static str> {
    let name = name.trim();
    STATUSES
        .into_iter()
        .find(|status| status.eq_ignore_ascii_case(name))
}

/// The status that follows `status` in the normal course of an order; `None` for the final
/// ones.
pub fn next(status: &str) -> Option<&'static str> {
    match status {
        CREATED => Some(PAID),
        PAID => Some(SHIPPED),
        SHIPPED => Some(DELIVERED),
        _ => None,
    }
}

/// Whether an order in `from` may move to `to`: the next status of the lifecycle, or
/// `CANCELLED` before shipping.
pub fn is_allowed(from: &str, to: &str) -> bool {
    next(from) == Some(to) || (to == CANCELLED && matches!(from, CREATED | PAID))
}

/// How often the task wakes for a given step.
pub fn tick_for(step: Duration) -> Duration {
    (step / 4).max(MIN_TICK)
}

/// Advances due orders every tick until `stop` turns true (or its sender is gone). A pass in
/// progress is abandoned at the signal: each transition is one transaction, so at worst one
/// order moved without its metric being recorded.
pub(crate) async fn run(store: Store, metrics: Metrics, step: Duration, mut stop: watch::Receiver<bool>) {
    let mut interval = tokio::time::interval(tick_for(step));
    // A slow pass must not be followed by a burst of catch-up passes.
    interval.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        tokio::select! {
            biased;
            changed = stop.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            () = async {
                interval.tick().await;
                if let Err(e) = advance_due(&store, &metrics, step).await {
                    // The next tick tries again; a store that stays down shows in /health.
                    tracing::warn!(error = %e, "lifecycle pass failed");
                }
            } => {}
        }
    }
}

/// One pass: moves every order (at most [`BATCH`] per status) that has been in `CREATED`,
/// `PAID` or `SHIPPED` for at least `step` to the next status; how many it moved.
#[obskit::instrumented(skip(store, metrics, step))]
async fn advance_due(store: &Store, metrics: &Metrics, step: Duration) -> Result<usize, StoreError> {
    let step = step.as_secs_f64();
    let mut moved = 0;
    // Latest status first, so an order moved in this pass is not looked at again in it (it
    // would not be due anyway: it has just entered its status).
    for from in [SHIPPED, PAID, CREATED] {
        let Some(to) = next(from) else { continue };
        // One clock reading per status: orders are compared against the moment they were
        // listed, not against a moment before the query.
        let orders = store.orders_in_status(from, BATCH).await?;
        let now = now_seconds();
        for order in orders {
            let entered = order.history.last().map_or(order.created_at, |c| c.at);
            if now - entered < step {
                continue;
            }
            match store.set_order_status(&order.id, from, to).await {
                Ok(order) => {
                    metrics.record_transition(&order);
                    moved += 1;
                }
                // A client moved or the order vanished meanwhile: nothing to do.
                Err(StoreError::Stale { .. } | StoreError::NotFound) => {}
                Err(e) => return Err(e),
            }
        }
    }
    Ok(moved)
}
