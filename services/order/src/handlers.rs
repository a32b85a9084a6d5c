//! The order service's calls, one handler each. Handlers answer `Err(ApiError)` for every
//! failure, so `function_calls_total{result="error"}` counts client errors (404, 409, 422) as
//! well as server errors; the RED metrics' `status` label tells them apart.

use std::sync::Arc;

use http::StatusCode;
use obskit::http::MatchedRoute;
use serde::Deserialize;
use shop_common::auth::{OwnerGuard, ROLE_ADMIN, ROLE_SERVICE};
use shop_common::http::{json_response, read_json, ApiError, Page};
use shop_common::router::{server_failed, Reply, Request};
use shop_common::store::{CheckoutOrder, OrderItem, StoreError};

use crate::lifecycle::{self, CANCELLED, CREATED};
use crate::{restock, App};

/// Most lines one order may have (a cart is a few lines; this only bounds abuse).
const MAX_ITEMS: usize = 100;
/// Most units of one line.
const MAX_QUANTITY: i64 = 10_000;
/// Highest unit price accepted (the backend's cap on product prices).
const MAX_PRICE: f64 = 1_000_000.0;
/// Longest user id and product id, in characters (the shop's ids are 36-character UUIDs).
const MAX_ID_CHARS: usize = 128;
/// Longest product name, in characters (the backend's cap).
const MAX_NAME_CHARS: usize = 200;
/// How often a status change is retried when another writer moved the order first but the
/// change is still legal from where it went (a cancel racing the lifecycle's `CREATED ->
/// PAID`): more than enough, since every retry follows a real change and the chain is short.
const STATUS_ATTEMPTS: usize = 4;

fn path_param(request: &Request, name: &str) -> Result<String, ApiError> {
    MatchedRoute::of(request)
        .and_then(|m| m.param(name))
        .map(shop_common::http::percent_decode)
        .ok_or_else(|| ApiError::not_found(format!("no {name} in the path")))
}

fn order_not_found(id: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no order {id}")),
        e => e.into(),
    }
}

/// A required text field: trimmed, not empty, at most `max` characters.
fn text(value: Option<String>, key: &str, max: usize) -> Result<String, ApiError> {
    let value = value.ok_or_else(|| ApiError::invalid(format!("`{key}` is required")))?;
    let value = value.trim();
    if value.is_empty() {
        return Err(ApiError::invalid(format!("`{key}` must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "`{key}` must be at most {max} characters"
        )));
    }
    Ok(value.to_string())
}

/// One line as a client may send it; all optional so that a missing field gets a 422 naming it.
#[derive(Deserialize)]
struct ItemInput {
    product_id: Option<String>,
    name: Option<String>,
    price: Option<f64>,
    quantity: Option<i64>,
}

/// `POST /order-api/orders` body.
#[derive(Deserialize)]
struct OrderInput {
    user_id: Option<String>,
    items: Option<Vec<ItemInput>>,
    /// The cart's checkout id: at most one order per id, ever.
    checkout_id: Option<String>,
}

/// A checkout id, checked: 1 to 128 ASCII letters, digits, `-`, `_` or `.`.
fn checkout_id(raw: &str) -> Result<String, ApiError> {
    let valid = (1..=MAX_ID_CHARS).contains(&raw.len())
        && raw
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(ApiError::invalid(format!(
            "`checkout_id` must be 1 to {MAX_ID_CHARS} ASCII letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(raw.to_string())
}

fn checkout_aborted(id: &str) -> ApiError {
    ApiError::new(
        http::StatusCode::CONFLICT,
        "checkout_aborted",
        format!("checkout {id} was aborted: it gets no order"),
    )
}

/// Roles that may abort a checkout: the cart (a service) and administrators.
const ABORT_ROLES: &[&str] = &[ROLE_SERVICE, ROLE_ADMIN];

impl ItemInput {
    fn validate(self, index: usize) -> Result<OrderItem, ApiError> {
        let key = |field: &str| format!("items[{index}].{field}");
        let price = self
            .price
            .ok_or_else(|| ApiError::invalid(format!("`{}` is required", key("price"))))?;
        if !price.is_finite() || !(0.0..=MAX_PRICE).contains(&price) {
            return Err(ApiError::invalid(format!(
                "`{}` must be from 0 to {MAX_PRICE}",
                key("price")
            )));
        }
        let quantity = self
            .quantity
            .ok_or_else(|| ApiError::invalid(format!("`{}` is required", key("quantity"))))?;
        if !(1..=MAX_QUANTITY).contains(&quantity) {
            return Err(ApiError::invalid(format!(
                "`{}` must be a whole number from 1 to {MAX_QUANTITY}",
                key("quantity")
            )));
        }
        Ok(OrderItem {
            product_id: text(self.product_id, &key("product_id"), MAX_ID_CHARS)?,
            name: text(self.name, &key("name"), MAX_NAME_CHARS)?,
            price,
            quantity,
        })
    }
}

/// `POST /order-api/orders` `{user_id, items, checkout_id?}`: creates an order in `CREATED`;
/// 201 with it. With a `checkout_id` the call is idempotent: repeated, it answers 200 with the
/// order the first call created (never a second one); after the checkout was aborted, 409
/// `checkout_aborted`. A token must name the body's `user_id` (the cart's service token acts
/// for anyone).
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn create_order(app: Arc<App>, request: Request) -> Reply {
    let caller = app.guard.caller(request.headers())?;
    let input: OrderInput = read_json(request, app.body_limit).await?;
    let checkout = input.checkout_id.as_deref().map(checkout_id).transpose()?;
    let user_id = text(input.user_id, "user_id", MAX_ID_CHARS)?;
    OwnerGuard::may_act_for(caller.as_ref(), &user_id)?;
    let items = input
        .items
        .ok_or_else(|| ApiError::invalid("`items` is required"))?;
    if items.is_empty() {
        return Err(ApiError::invalid("`items` must not be empty"));
    }
    if items.len() > MAX_ITEMS {
        return Err(ApiError::invalid(format!(
            "an order has at most {MAX_ITEMS} items"
        )));
    }
    let items = items
        .into_iter()
        .enumerate()
        .map(|(i, item)| item.validate(i))
        .collect::<Result<Vec<_>, _>>()?;
    let Some(checkout) = checkout else {
        let order = app.store.create_order(&user_id, items, CREATED).await?;
        app.metrics.orders_created.inc();
        tracing::info!(order_id = %order.id, "order created");
        return Ok(json_response(StatusCode::CREATED, &order));
    };
    match app
        .store
        .create_checkout_order(&checkout, &user_id, items, CREATED)
        .await?
    {
        CheckoutOrder::Created(order) => {
            app.metrics.orders_created.inc();
            tracing::info!(order_id = %order.id, checkout_id = %checkout, "order created");
            Ok(json_response(StatusCode::CREATED, &order))
        }
        CheckoutOrder::Existing(order) => Ok(json_response(StatusCode::OK, &order)),
        CheckoutOrder::Aborted => Err(checkout_aborted(&checkout)),
    }
}

/// `POST /order-api/checkouts/{checkout_id}/abort` (service or admin token): makes sure no
/// order is ever created for the checkout. Idempotent: 200 `{aborted: true}` once the id is
/// refused for good, or 200 `{aborted: false, order}` when the checkout's order exists already
/// (the cart then goes forward with it instead of giving the stock back).
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn abort_checkout(app: Arc<App>, request: Request) -> Reply {
    app.jwt.require_role(request.headers(), ABORT_ROLES)?;
    let id = checkout_id(&path_param(&request, "checkout_id")?)?;
    let body = match app.store.abort_checkout(&id).await? {
        Some(order) => serde_json::json!({ "aborted": false, "order": order }),
        None => serde_json::json!({ "aborted": true }),
    };
    Ok(json_response(StatusCode::OK, &body))
}

/// `GET /order-api/orders/{id}`: one order with its status history; a token must name the
/// order's user (checked after the lookup, the token itself before it).
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn get_order(app: Arc<App>, request: Request) -> Reply {
    let caller = app.guard.caller(request.headers())?;
    let id = path_param(&request, "id")?;
    let order = app.store.order(&id).await.map_err(order_not_found(&id))?;
    OwnerGuard::may_act_for(caller.as_ref(), &order.user_id)?;
    Ok(json_response(StatusCode::OK, &order))
}

/// `GET /order-api/users/{user_id}/orders?page=&limit=`: one page of the user's orders, newest
/// first, as a JSON array (an empty one past the last page or for a user without orders: the
/// order service does not know which users exist). `page` from 1, `limit` 1 to 100
/// (default 20), as in the product list; 422 otherwise.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn user_orders(app: Arc<App>, request: Request) -> Reply {
    let user_id = path_param(&request, "user_id")?;
    app.guard.owner(request.headers(), &user_id)?;
    let Page { page, limit } = Page::from_query(request.uri().query())?;
    let orders = app.store.user_orders(&user_id, page, limit).await?;
    Ok(json_response(StatusCode::OK, &orders))
}

/// `PUT /order-api/orders/{id}/status` body.
#[derive(Deserialize)]
struct StatusInput {
    status: Option<String>,
}

/// `PUT /order-api/orders/{id}/status` `{status}`: moves the order; 200 with it, 409 when the
/// lifecycle does not allow the move from the order's current status. For admins only
/// (401 without a valid token, 403 for another role), whatever `SHOP_REQUIRE_AUTH` says: a
/// customer must not mark an order paid or delivered.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn set_status(app: Arc<App>, request: Request) -> Reply {
    app.guard.admin(request.headers())?;
    let id = path_param(&request, "id")?;
    let input: StatusInput = read_json(request, app.body_limit).await?;
    let requested = input
        .status
        .ok_or_else(|| ApiError::invalid("`status` is required"))?;
    let target = lifecycle::parse_status(&requested).ok_or_else(|| {
        ApiError::invalid(format!(
            "`status` must be one of {}, not {requested:?}",
            lifecycle::STATUSES.join(", ")
        ))
    })?;
    let mut current = app.store.order(&id).await.map_err(order_not_found(&id))?.status;
    for _ in 0..STATUS_ATTEMPTS {
        if !lifecycle::is_allowed(&current, target) {
            return Err(illegal(&id, &current, target));
        }
        // Compare-and-set: the move applies only if the order is still where it was read, so
        // a client and the lifecycle task (or two clients) never both move it.
        let moved = if target == CANCELLED {
            // The restock is journaled with the cancel, and started now rather than at the
            // next pass; the pass finishes it should this one fail.
            app.store.cancel_order(&id, &current, target).await
        } else {
            app.store.set_order_status(&id, &current, target).await
        };
        match moved {
            Ok(order) => {
                app.metrics.record_transition(&order);
                if target == CANCELLED && order.checkout_id.is_some() {
                    let app = Arc::clone(&app);
                    tokio::spawn(async move { restock::pass(&app).await });
                }
                return Ok(json_response(StatusCode::OK, &order));
            }
            Err(StoreError::Stale { current: now }) => current = now,
            Err(e) => return Err(order_not_found(&id)(e)),
        }
    }
    Err(ApiError::conflict(format!(
        "order {id} kept changing status; try again"
    )))
}

fn illegal(id: &str, from: &str, to: &str) -> ApiError {
    ApiError::conflict(format!(
        "order {id} is {from} and cannot become {to} (lifecycle: CREATED -> PAID -> SHIPPED -> \
         DELIVERED, CANCELLED only before SHIPPED)"
    ))
}
