//! The cart's calls, one handler each. Handlers answer `Err(ApiError)` for every failure, so
//! `function_calls_total{result="error"}` counts client errors as well as server errors; the
//! RED metrics' `status` label tells them apart.

use std::sync::Arc;

use http::StatusCode;
use obskit::http::MatchedRoute;
use serde::{Deserialize, Serialize};
use shop_common::http::{json_response, read_json, ApiError};
use shop_common::objectives::CHECKOUT;
use shop_common::router::{server_failed, Reply, Request};
use shop_common::store::{now_seconds, CartItem};

use crate::saga::{self, Driver};
use crate::{upstream, App, MAX_LINE_QUANTITY};

/// Longest user id accepted. Ids are the user service's UUIDs (36 characters); the bound
/// keeps keys and logs small whatever a client sends.
const MAX_USER_ID_LEN: usize = 64;
/// Longest product id accepted (the backend's ids are UUIDs too).
const MAX_PRODUCT_ID_LEN: usize = 128;

/// The `{user_id}` of the path, checked: 1 to 64 ASCII letters, digits, `-`, `_` or `.`.
fn user_id(request: &Request) -> Result<String, ApiError> {
    let raw = MatchedRoute::of(request)
        .and_then(|m| m.param("user_id"))
        .map(shop_common::http::percent_decode)
        .ok_or_else(|| ApiError::not_found("no user id in the path"))?;
    let valid = (1..=MAX_USER_ID_LEN).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(ApiError::invalid(format!(
            "the user id must be 1 to {MAX_USER_ID_LEN} ASCII letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(raw)
}

/// A cart as the contract shows it.
#[derive(Serialize)]
struct CartView<'a> {
    user_id: &'a str,
    items: &'a [CartItem],
    total: f64,
}

/// Rounds a sum of money to cents: float sums of prices pick up noise (`0.1 + 0.2`).
fn cents(value: f64) -> f64 {
    (value * 100.0).round() / 100.0
}

pub(crate) fn cart_total(items: &[CartItem]) -> f64 {
    cents(items.iter().map(|i| i.price * i.quantity as f64).sum())
}

/// 200 with the user's cart as the store has it now.
async fn cart_reply(app: &App, user_id: &str) -> Reply {
    let items = app.store.cart(user_id).await?;
    let view = CartView {
        user_id,
        total: cart_total(&items),
        items: &items,
    };
    Ok(json_response(StatusCode::OK, &view))
}

/// Records activity on the cart for the abandonment count. A failure is logged, not answered:
/// the cart itself changed, and losing one activity record only blurs a metric.
async fn touch(app: &App, user_id: &str, checkout_attempted: bool) {
    if let Err(e) = app
        .store
        .touch_cart(user_id, now_seconds(), checkout_attempted)
        .await
    {
        tracing::warn!(user_id = %user_id, error = %e, "cart activity not recorded");
    }
}

/// `{product_id, quantity}` of add and update.
#[derive(Deserialize)]
struct LineInput {
    product_id: String,
    quantity: i64,
}

impl LineInput {
    /// The product id (trimmed) and quantity, with the quantity within `min..=MAX_LINE_QUANTITY`.
    fn validate(self, min: i64) -> Result<(String, i64), ApiError> {
        let product_id = self.product_id.trim().to_string();
        if product_id.is_empty() || product_id.len() > MAX_PRODUCT_ID_LEN {
            return Err(ApiError::invalid(format!(
                "`product_id` must be 1 to {MAX_PRODUCT_ID_LEN} bytes"
            )));
        }
        if !(min..=MAX_LINE_QUANTITY).contains(&self.quantity) {
            return Err(ApiError::invalid(format!(
                "`quantity` must be from {min} to {MAX_LINE_QUANTITY}"
            )));
        }
        Ok((product_id, self.quantity))
    }
}

fn insufficient_stock(name: &str, stock: i64, wanted: i64) -> ApiError {
    ApiError::new(
        StatusCode::CONFLICT,
        "insufficient_stock",
        format!("only {stock} of {name} in stock; the cart would hold {wanted}"),
    )
}

/// `GET /cart-api/cart/{user_id}`: the cart (an empty one when the user has none).
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn get_cart(app: Arc<App>, request: Request) -> Reply {
    let user = user_id(&request)?;
    app.guard.owner(request.headers(), &user)?;
    cart_reply(&app, &user).await
}

/// `POST /cart-api/cart/{user_id}/add` `{product_id, quantity}`: adds units of a product
/// (checked with the backend) to the cart; 200 with the cart.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn add_item(app: Arc<App>, request: Request) -> Reply {
    let user = user_id(&request)?;
    app.guard.owner(request.headers(), &user)?;
    let input: LineInput = read_json(request, app.body_limit).await?;
    let (product_id, quantity) = input.validate(1)?;
    let product = upstream::product(&app, &product_id).await?;

    let _serialised = app.locks.lock(&user).await;
    let items = app.store.cart(&user).await?;
    let in_cart = items
        .iter()
        .find(|i| i.product_id == product.id)
        .map_or(0, |i| i.quantity);
    let wanted = in_cart + quantity;
    if wanted > MAX_LINE_QUANTITY {
        return Err(ApiError::invalid(format!(
            "a cart line holds at most {MAX_LINE_QUANTITY} units; this one would hold {wanted}"
        )));
    }
    if wanted > product.stock {
        return Err(insufficient_stock(&product.name, product.stock, wanted));
    }
    let line = CartItem {
        product_id: product.id.clone(),
        name: product.name.clone(),
        price: product.price,
        quantity: wanted,
    };
    app.store.set_cart_item(&user, line).await?;
    touch(&app, &user, false).await;
    // `quantity` is 1..=MAX_LINE_QUANTITY, checked above.
    app.metrics
        .items_added
        .with(&[&product.category])
        .inc_by(quantity as u64);
    cart_reply(&app, &user).await
}

/// `PUT /cart-api/cart/{user_id}/update` `{product_id, quantity}`: sets the quantity of a line
/// already in the cart (0 removes it); 200 with the cart.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn update_item(app: Arc<App>, request: Request) -> Reply {
    let user = user_id(&request)?;
    app.guard.owner(request.headers(), &user)?;
    let input: LineInput = read_json(request, app.body_limit).await?;
    let (product_id, quantity) = input.validate(0)?;

    let _serialised = app.locks.lock(&user).await;
    let items = app.store.cart(&user).await?;
    let Some(current) = items.into_iter().find(|i| i.product_id == product_id) else {
        return Err(ApiError::not_found(format!(
            "product {product_id} is not in the cart"
        )));
    };
    let line = if quantity == 0 {
        // Removing needs no word from the backend, so it works for a product since deleted.
        CartItem {
            quantity: 0,
            ..current
        }
    } else {
        let product = upstream::product(&app, &product_id).await?;
        if quantity > product.stock {
            return Err(insufficient_stock(&product.name, product.stock, quantity));
        }
        CartItem {
            product_id: product.id,
            name: product.name,
            price: product.price,
            quantity,
        }
    };
    app.store.set_cart_item(&user, line).await?;
    touch(&app, &user, false).await;
    cart_reply(&app, &user).await
}

/// `POST /cart-api/cart/{user_id}/checkout`: checks the cart's lines out as a saga
/// ([`saga`]): journaled first, then run in a task of its own that reserves the stock, creates
/// the order and takes the lines out of the cart, or gives the stock back and keeps the cart.
/// The request waits for that task's outcome (201 with the order); a client that hangs up
/// cuts nothing. When the user has an unfinished checkout (a crash, a client that gave up),
/// that one is finished first and its outcome answered. Profiled as the seed's
/// `checkout_cart`: at most one 5 s capture a minute, of the checkouts starting while it runs.
#[obskit::profiled(name = "checkout_cart", every = "60s", duration = "5s")]
#[obskit::instrumented(skip(app, request), error_if = server_failed, objective = CHECKOUT)]
pub(crate) async fn checkout(app: Arc<App>, request: Request) -> Reply {
    let user = user_id(&request)?;
    app.guard.owner(request.headers(), &user)?;
    // Everything from the lock on runs in a task of its own: dropping the handle (the client
    // hung up) detaches the task, which runs on, so no `.await` of the request can cut the
    // checkout between its journal row and its steps.
    // The task carries a child of this call's span: its calls to the backend and the order
    // service, and its log records, belong to the checkout's trace.
    let saga = obskit::trace::span("checkout_saga").start();
    let task = tokio::spawn(obskit::trace::InstrumentExt::instrument(
        checkout_task(Arc::clone(&app), user),
        saga,
    ));
    let order = match task.await {
        Ok(outcome) => outcome?,
        Err(e) => {
            tracing::error!(error = %e, "checkout task failed, left for recovery");
            return Err(ApiError::internal(
                "the checkout failed; it is finished by recovery",
            ));
        }
    };
    Ok(json_response(StatusCode::CREATED, &order))
}

/// The checkout of `user`'s cart under the user's lock: the user's unfinished checkout if there
/// is one, else a new one journaled before any remote call; then driven by [`saga::drive`].
async fn checkout_task(app: Arc<App>, user: String) -> Result<serde_json::Value, ApiError> {
    let _serialised = app.locks.lock(&user).await;
    let unfinished = app
        .store
        .unfinished_checkouts(Some(&user), f64::INFINITY, 1)
        .await?;
    let checkout = match unfinished.into_iter().next() {
        Some(checkout) => checkout,
        None => {
            let items = app.store.cart(&user).await?;
            if items.is_empty() {
                return Err(ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "empty_cart",
                    "the cart is empty: add products before checking out",
                ));
            }
            // Recorded first: if anything below fails, the cart was left at the checkout stage.
            touch(&app, &user, true).await;
            let checkout = saga::accept(&user, items);
            // Journaled before any remote call: from here on the checkout is finished or
            // compensated, by this task or by the recovery sweep.
            app.store.begin_checkout(checkout.clone()).await?;
            checkout
        }
    };
    saga::drive(&app, checkout, Driver::Request).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_are_rounded_to_cents() {
        let line = |price, quantity| CartItem {
            product_id: "p".into(),
            name: "n".into(),
            price,
            quantity,
        };
        assert_eq!(cart_total(&[line(0.1, 1), line(0.2, 1)]), 0.3);
        assert_eq!(cart_total(&[line(19.99, 3)]), 59.97);
        assert_eq!(cart_total(&[]), 0.0);
    }
}
