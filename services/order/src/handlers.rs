//! The order service's calls, one handler each. Handlers answer `Err(ApiError)` for every
//! failure, so `function_calls_total{result="error"}` counts client errors (404, 409, 422) as
//! well as server errors; the RED metrics' `status` label tells them apart.

use std::sync::Arc;

use http::StatusCode;
use obskit::http::MatchedRoute;
use serde::Deserialize;
use shop_common::auth::OwnerGuard;
use shop_common::http::{json_response, read_json, ApiError, Page};
use shop_common::router::{Reply, Request};
use shop_common::store::{OrderItem, StoreError};

use crate::lifecycle::{self, CREATED};
use crate::App;

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
    request
        .extensions()
        .get::<MatchedRoute>()
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
}

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

/// `POST /order-api/orders` `{user_id, items}`: creates an order in `CREATED`; 201 with it. A
/// token must name the body's `user_id` (the cart's service token acts for anyone).
#[obskit::instrumented(skip(app, request))]
pub(crate) async fn create_order(app: Arc<App>, request: Request) -> Reply {
    let caller = app.guard.caller(request.headers())?;
    let input: OrderInput = read_json(request, app.body_limit).await?;
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
    let order = app.store.create_order(&user_id, items, CREATED).await?;
    app.metrics.orders_created.inc();
    Ok(json_response(StatusCode::CREATED, &order))
}

/// `GET /order-api/orders/{id}`: one order with its status history; a token must name the
/// order's user (checked after the lookup, the token itself before it).
#[obskit::instrumented(skip(app, request))]
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
#[obskit::instrumented(skip(app, request))]
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
#[obskit::instrumented(skip(app, request))]
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
        match app.store.set_order_status(&id, &current, target).await {
            Ok(order) => {
                app.metrics.record_transition(&order);
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
