//! A cancelled order gives its stock back to the backend, once.
//!
//! Cancelling journals the restock in the order's store in the same step as the status change
//! ([`Store::cancel_order`](shop_common::store::Store::cancel_order)); this module then asks the
//! backend to release the reservation the order's checkout made (`POST /api/stock/release`
//! `{reservation_id}`, which gives back what that reservation took at most once, however often
//! it is asked) and marks the restock done. The cancel handler starts a pass at once; a pass
//! every [`PERIOD`] finishes what a crash or an unreachable backend left pending. Orders that
//! did not come from a checkout took no stock, so they have nothing to give back.

use std::sync::Arc;
use std::time::Duration;

use obskit::trace::TracedRequest;
use serde_json::json;
use shop_common::auth::ROLE_SERVICE;
use shop_common::store::PendingRestock;
use tokio::sync::watch;

use crate::{App, SERVICE_NAME};

/// How often pending restocks are retried.
pub(crate) const PERIOD: Duration = Duration::from_secs(1);
/// Most restocks one pass handles.
const BATCH: u32 = 100;

/// Gives back the stock of every pending restock every [`PERIOD`] until `stop` turns true.
pub(crate) async fn run(app: Arc<App>, mut stop: watch::Receiver<bool>) {
    let mut ticker = tokio::time::interval(PERIOD);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        if *stop.borrow_and_update() {
            return;
        }
        tokio::select! {
            biased;
            changed = stop.changed() => if changed.is_err() { return },
            _ = ticker.tick() => pass(&app).await,
        }
    }
}

/// One pass over the pending restocks; failures are logged and retried by the next pass.
pub(crate) async fn pass(app: &App) {
    let pending = match app.store.pending_restocks(BATCH).await {
        Ok(pending) => pending,
        Err(e) => {
            tracing::warn!(error = %e, "pending restocks not read");
            return;
        }
    };
    for restock in pending {
        if let Err(e) = give_back(app, &restock).await {
            tracing::warn!(
                order_id = %restock.order_id,
                checkout_id = %restock.checkout_id,
                error = %e,
                "stock of a cancelled order not given back yet, retried"
            );
        }
    }
}

/// Releases the order's reservation at the backend, then marks the restock done. A release
/// that succeeded before a crash is simply asked again: the backend gives back nothing twice.
async fn give_back(app: &App, restock: &PendingRestock) -> Result<(), String> {
    let token = app
        .jwt
        .mint(SERVICE_NAME, SERVICE_NAME, ROLE_SERVICE)
        .map_err(|e| e.to_string())?;
    let response = app
        .client
        .post(format!("{}/api/stock/release", app.backend_url))
        .bearer_auth(token)
        .json(&json!({ "reservation_id": restock.checkout_id }))
        .send_traced()
        .await
        .map_err(|e| format!("no answer from the backend: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("the backend answered {}", response.status()));
    }
    app.store
        .restock_done(&restock.order_id)
        .await
        .map_err(|e| e.to_string())
}
