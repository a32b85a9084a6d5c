//! The checkout as a saga: journaled in the cart's store before any remote call, run in a
//! task of its own (never in the request's future), and finished or compensated whatever
//! happens to the client, the cart service or the other services.
//!
//! ```text
//! accepted --reserve--> reserved --create order--> ordered --lines out of the cart--> done
//!    |                     |
//!    +---------------------+--(abort at the order service, release at the backend)--> released
//! ```
//!
//! Every remote step is idempotent under the checkout id: the backend takes the stock of one
//! reservation id once and gives it back once; the order service creates at most one order
//! per checkout id and, once a checkout is aborted, none ever. So any step may be repeated after
//! a crash or a timeout, and the journal only has to say how far the checkout got.
//!
//! Compensation never treats an ambiguous result (a timeout, a server error) as "no order":
//! before the stock goes back, the order service is asked to refuse the checkout id for good,
//! and when it answers with the order instead, the checkout goes forward. Only a refusal (a
//! 4xx, or a connection that was never made, so the request was never sent) is certain enough
//! to release at once.

use std::sync::Arc;

use http::StatusCode;
use serde_json::Value;
use shop_common::http::ApiError;
use shop_common::store::{checkout_state as state, now_seconds, Checkout, StoreError};

use crate::upstream::{self, Created, StepError};
use crate::App;

/// Who drives a checkout, which decides what an `accepted` one does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Driver {
    /// The request that accepted it, whose client may be waiting: it goes forward.
    Request,
    /// The recovery sweep (the cart stopped or the steps failed): a checkout still `accepted`
    /// is given up (its reservation released), so that a client who saw an error does not
    /// find an order later; one that got as far as `reserved` goes forward.
    Recovery,
}

/// More state changes than the machine has, so a loop that keeps losing races to another
/// driver ends instead of spinning.
const MAX_STEPS: usize = 8;

/// A new journal row for the lines of `user_id`'s cart.
pub(crate) fn accept(user_id: &str, items: Vec<shop_common::store::CartItem>) -> Checkout {
    let now = now_seconds();
    Checkout {
        id: shop_common::store::new_id(),
        user_id: user_id.to_string(),
        items,
        state: state::ACCEPTED.to_string(),
        order: None,
        created_at: now,
        updated_at: now,
    }
}

/// Runs `checkout` as far as it can go now: the order's JSON when it is done, else why not.
/// A checkout that could not be finished (a service that does not answer) stays where the
/// journal says, for the recovery sweep. The caller holds the user's lock.
pub(crate) async fn drive(app: &Arc<App>, mut checkout: Checkout, driver: Driver) -> Result<Value, ApiError> {
    for _ in 0..MAX_STEPS {
        let next = match checkout.state.as_str() {
            state::ACCEPTED => reserve_step(app, &checkout, driver).await,
            state::RESERVED => order_step(app, &checkout).await,
            state::ORDERED => {
                let moved = app
                    .store
                    .advance_checkout(&checkout.id, state::ORDERED, state::DONE, None)
                    .await;
                moved.map_err(Step::Store).map(|()| {
                    record_success(app, &checkout);
                    state::DONE
                })
            }
            state::DONE => return order_json(&checkout),
            state::RELEASED => {
                return Err(ApiError::conflict(
                    "this checkout was given up; the cart is kept, check out again",
                ))
            }
            other => return Err(ApiError::internal(format!("checkout in unknown state {other:?}"))),
        };
        match next {
            Ok(_) | Err(Step::Store(StoreError::Stale { .. })) => {
                // Moved (by this driver or, on a lost race, another): read where it is now.
                checkout = app.store.checkout(&checkout.id).await?;
            }
            Err(Step::Store(e)) => return Err(e.into()),
            Err(Step::Stop(e)) => return Err(e),
        }
    }
    Err(ApiError::internal("the checkout kept changing state"))
}

/// Why a step did not move the checkout.
enum Step {
    /// The journal refused the move (another driver moved it: `Stale`) or failed.
    Store(StoreError),
    /// The checkout ends here for now, with this answer (it may be finished later).
    Stop(ApiError),
}

impl From<StoreError> for Step {
    fn from(e: StoreError) -> Step {
        Step::Store(e)
    }
}

/// `accepted`: reserve the stock (a request) or give the checkout up (the recovery sweep).
async fn reserve_step(app: &Arc<App>, checkout: &Checkout, driver: Driver) -> Result<&'static str, Step> {
    let failure = match driver {
        Driver::Request => match upstream::reserve(app, &checkout.id, &checkout.items).await {
            Ok(()) => {
                app.store
                    .advance_checkout(&checkout.id, state::ACCEPTED, state::RESERVED, None)
                    .await?;
                return Ok(state::RESERVED);
            }
            Err(e) => e.into_api(),
        },
        Driver::Recovery => ApiError::conflict("the checkout was interrupted before its stock was reserved"),
    };
    // Nothing is ordered yet (no create was sent), so releasing is safe; it also refuses the
    // id for a reserve that may still be on its way, whatever the reserve's answer was.
    release_and_close(app, checkout, state::ACCEPTED).await?;
    Err(Step::Stop(failure))
}

/// `reserved`: create the order, or compensate when it certainly does not and will not exist.
async fn order_step(app: &Arc<App>, checkout: &Checkout) -> Result<&'static str, Step> {
    let created = upstream::create_order(app, &checkout.id, &checkout.user_id, &checkout.items).await;
    let failure = match created {
        Ok(Created::Order(order)) => return ordered(app, checkout, &order).await,
        Ok(Created::Aborted) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "order_service_unavailable",
            "the order could not be created; the cart is kept, try again later",
        ),
        Err(StepError::Refused(e)) => e,
        Err(StepError::Ambiguous(e)) => {
            // The order may exist: make sure it never will, or find it.
            match upstream::abort(app, &checkout.id).await {
                Ok(Some(order)) => return ordered(app, checkout, &order).await,
                Ok(None) => e,
                Err(why) => {
                    tracing::error!(
                        checkout_id = %checkout.id,
                        error = %why,
                        "checkout order in doubt, left for recovery"
                    );
                    return Err(Step::Stop(e));
                }
            }
        }
    };
    release_and_close(app, checkout, state::RESERVED).await?;
    Err(Step::Stop(failure))
}

async fn ordered(app: &Arc<App>, checkout: &Checkout, order: &Value) -> Result<&'static str, Step> {
    app.store
        .advance_checkout(
            &checkout.id,
            state::RESERVED,
            state::ORDERED,
            Some(order.to_string()),
        )
        .await?;
    tracing::info!(checkout_id = %checkout.id, order_id = order.get("id").and_then(|id| id.as_str()), "checkout ordered");
    Ok(state::ORDERED)
}

/// Gives the reservation back and journals the checkout `released`; when the backend does not
/// answer, the checkout stays in `from` for the recovery sweep (the answer is the same: the
/// cart is kept).
async fn release_and_close(app: &Arc<App>, checkout: &Checkout, from: &str) -> Result<(), Step> {
    if let Err(why) = upstream::release(app, &checkout.id).await {
        tracing::error!(
            checkout_id = %checkout.id,
            error = %why,
            "checkout stock not released, left for recovery"
        );
        return Ok(());
    }
    app.store
        .advance_checkout(&checkout.id, from, state::RELEASED, None)
        .await?;
    Ok(())
}

/// The journaled order of a finished checkout.
fn order_json(checkout: &Checkout) -> Result<Value, ApiError> {
    checkout
        .order
        .as_deref()
        .and_then(|o| serde_json::from_str(o).ok())
        .ok_or_else(|| ApiError::internal("a finished checkout without its order"))
}

/// The business metrics of a checkout that reached `done` (counted once: only the driver
/// whose move to `done` applied gets here).
fn record_success(app: &App, checkout: &Checkout) {
    app.metrics.checkouts.inc();
    let total = checkout
        .order
        .as_deref()
        .and_then(|o| serde_json::from_str::<Value>(o).ok())
        .and_then(|o| o.get("total").and_then(Value::as_f64))
        .unwrap_or_else(|| crate::handlers::cart_total(&checkout.items));
    app.metrics.total_value.observe(total);
}
