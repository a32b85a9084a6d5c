//! The backend's calls, one handler each. Handlers answer `Err(ApiError)` for every failure,
//! so `function_calls_total{result="error"}` counts client errors (404, 422) as well as server
//! errors; the RED metrics' `status` label tells them apart.

use std::sync::Arc;

use http::StatusCode;
use obskit::http::MatchedRoute;
use serde::Deserialize;
use shop_common::auth::{ROLE_ADMIN, ROLE_SERVICE};
use shop_common::http::{json_response, no_content, query_param, read_json, ApiError, Page};
use shop_common::objectives::PRODUCT_LISTING;
use shop_common::router::{server_failed, Reply, Request};
use shop_common::store::{NewProduct, Product, ProductUpdate, Reservation, StoreError};

use crate::App;

/// Most units one restock call may add.
const MAX_RESTOCK: i64 = 1_000_000;
/// Most units a product may hold.
const MAX_STOCK: i64 = 1_000_000_000;
/// Highest price accepted.
const MAX_PRICE: f64 = 1_000_000.0;

fn path_id(request: &Request) -> Result<String, ApiError> {
    MatchedRoute::of(request)
        .and_then(|m| m.param("id"))
        .map(shop_common::http::percent_decode)
        .ok_or_else(|| ApiError::not_found("no product id in the path"))
}

fn product_not_found(id: &str) -> impl FnOnce(StoreError) -> ApiError + '_ {
    move |e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no product {id}")),
        e => e.into(),
    }
}

/// `GET /api/categories`: the category names, sorted.
#[obskit::instrumented(skip(app, _request), error_if = server_failed)]
pub(crate) async fn list_categories(app: Arc<App>, _request: Request) -> Reply {
    let categories = app.store.categories().await?;
    Ok(json_response(StatusCode::OK, &categories))
}

/// `GET /api/products?category=&page=&limit=`: one page of products, sorted by name. The
/// hottest call of the shop, so profiled: at most one 5 s capture a minute, of the listings
/// that start while it runs (`/profiles/`).
#[obskit::profiled(name = "list_products", every = "60s", duration = "5s")]
#[obskit::instrumented(skip(app, request), error_if = server_failed, objective = PRODUCT_LISTING)]
pub(crate) async fn list_products(app: Arc<App>, request: Request) -> Reply {
    let query = request.uri().query();
    let Page { page, limit } = Page::from_query(query)?;
    let category = query_param(query, "category").filter(|c| !c.is_empty());
    let products = app.store.list_products(category.as_deref(), page, limit).await?;
    // The label is the category only when it exists, so clients cannot mint series; the
    // cardinality guard would cap them anyway.
    let label = match &category {
        None => "all".to_string(),
        Some(c) if !products.is_empty() || app.store.category_exists(c).await? => c.clone(),
        Some(_) => "unknown".to_string(),
    };
    app.metrics.category_requests.with(&[&label]).inc();
    Ok(json_response(StatusCode::OK, &products))
}

/// `GET /api/products/{id}`: one product.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn get_product(app: Arc<App>, request: Request) -> Reply {
    let id = path_id(&request)?;
    let product = app.store.product(&id).await.map_err(product_not_found(&id))?;
    app.metrics.product_views.with(&[&product.category]).inc();
    Ok(json_response(StatusCode::OK, &product))
}

/// The fields a client may send for a product; all optional so that a missing one gets a
/// clear 422 naming it rather than serde's message.
#[derive(Deserialize)]
struct ProductInput {
    name: Option<String>,
    description: Option<String>,
    price: Option<f64>,
    category: Option<String>,
    stock: Option<i64>,
}

fn text_field(
    value: Option<String>,
    key: &str,
    max: usize,
    empty_ok: bool,
) -> Result<Option<String>, ApiError> {
    let Some(value) = value else { return Ok(None) };
    let value = value.trim().to_string();
    if value.is_empty() && !empty_ok {
        return Err(ApiError::invalid(format!("`{key}` must not be empty")));
    }
    if value.chars().count() > max {
        return Err(ApiError::invalid(format!(
            "`{key}` must be at most {max} characters"
        )));
    }
    Ok(Some(value))
}

impl ProductInput {
    fn validate(self) -> Result<ProductUpdate, ApiError> {
        if let Some(price) = self.price {
            if !price.is_finite() || !(0.0..=MAX_PRICE).contains(&price) {
                return Err(ApiError::invalid(format!(
                    "`price` must be from 0 to {MAX_PRICE}"
                )));
            }
        }
        if let Some(stock) = self.stock {
            if !(0..=MAX_STOCK).contains(&stock) {
                return Err(ApiError::invalid(format!(
                    "`stock` must be from 0 to {MAX_STOCK}"
                )));
            }
        }
        Ok(ProductUpdate {
            name: text_field(self.name, "name", 200, false)?,
            description: text_field(self.description, "description", 2000, true)?,
            price: self.price,
            category: text_field(self.category, "category", 100, false)?,
            stock: self.stock,
        })
    }
}

fn required<T>(value: Option<T>, key: &str) -> Result<T, ApiError> {
    value.ok_or_else(|| ApiError::invalid(format!("`{key}` is required")))
}

/// `POST /api/products` (admin): creates a product; 201 with it.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn create_product(app: Arc<App>, request: Request) -> Reply {
    app.jwt.require_admin(request.headers())?;
    let input: ProductInput = read_json(request, app.body_limit).await?;
    let fields = input.validate()?;
    let product = NewProduct {
        name: required(fields.name, "name")?,
        description: fields.description.unwrap_or_default(),
        price: required(fields.price, "price")?,
        category: required(fields.category, "category")?,
        stock: fields.stock.unwrap_or(0),
    };
    let created: Product = app.store.create_product(product).await?;
    app.metrics.admin_operations.with(&["create"]).inc();
    Ok(json_response(StatusCode::CREATED, &created))
}

/// `PUT /api/products/{id}` (admin): changes the fields given; 200 with the product.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn update_product(app: Arc<App>, request: Request) -> Reply {
    app.jwt.require_admin(request.headers())?;
    let id = path_id(&request)?;
    let input: ProductInput = read_json(request, app.body_limit).await?;
    let update = input.validate()?;
    if update == ProductUpdate::default() {
        return Err(ApiError::invalid(
            "give at least one of `name`, `description`, `price`, `category`, `stock`",
        ));
    }
    let product = app
        .store
        .update_product(&id, update)
        .await
        .map_err(product_not_found(&id))?;
    app.metrics.admin_operations.with(&["update"]).inc();
    Ok(json_response(StatusCode::OK, &product))
}

/// `DELETE /api/products/{id}` (admin): 204.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn delete_product(app: Arc<App>, request: Request) -> Reply {
    app.jwt.require_admin(request.headers())?;
    let id = path_id(&request)?;
    app.store
        .delete_product(&id)
        .await
        .map_err(product_not_found(&id))?;
    app.metrics.admin_operations.with(&["delete"]).inc();
    Ok(no_content())
}

#[derive(Deserialize)]
struct RestockInput {
    quantity: i64,
}

/// `POST /api/products/{id}/restock` `{quantity}` (admin): adds stock; 200 with the product.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn restock_product(app: Arc<App>, request: Request) -> Reply {
    app.jwt.require_admin(request.headers())?;
    let id = path_id(&request)?;
    let input: RestockInput = read_json(request, app.body_limit).await?;
    if !(1..=MAX_RESTOCK).contains(&input.quantity) {
        return Err(ApiError::invalid(format!(
            "`quantity` must be from 1 to {MAX_RESTOCK}"
        )));
    }
    let current = app.store.product(&id).await.map_err(product_not_found(&id))?;
    if current.stock + input.quantity > MAX_STOCK {
        return Err(ApiError::invalid(format!("stock would exceed {MAX_STOCK}")));
    }
    let product = app
        .store
        .restock(&id, input.quantity)
        .await
        .map_err(product_not_found(&id))?;
    app.metrics.admin_operations.with(&["restock"]).inc();
    Ok(json_response(StatusCode::OK, &product))
}

/// Most lines one reservation may hold: a cart is dozens of lines, not thousands.
const MAX_STOCK_LINES: usize = 500;
/// Most units one line of a reservation may hold.
const MAX_STOCK_UNITS: i64 = 1_000_000;
/// Longest product id accepted (ids are UUIDs; anything far longer is not one of ours).
const MAX_ID_LEN: usize = 128;

/// Roles allowed to move stock: the shop's services, and administrators by hand.
const STOCK_ROLES: &[&str] = &[ROLE_SERVICE, ROLE_ADMIN];

#[derive(Deserialize)]
struct StockLine {
    product_id: String,
    quantity: i64,
}

#[derive(Deserialize)]
struct StockInput {
    /// The idempotency key of a reservation (the cart's checkout id): a reserve repeated under
    /// it takes nothing twice, a release under it gives back once what it took.
    reservation_id: Option<String>,
    items: Option<Vec<StockLine>>,
}

/// The reservation id of a stock call, checked: 1 to 128 ASCII letters, digits, `-`, `_`, `.`.
fn reservation_id(raw: Option<String>) -> Result<Option<String>, ApiError> {
    let Some(id) = raw else { return Ok(None) };
    let valid = (1..=MAX_ID_LEN).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !valid {
        return Err(ApiError::invalid(format!(
            "`reservation_id` must be 1 to {MAX_ID_LEN} ASCII letters, digits, `-`, `_` or `.`"
        )));
    }
    Ok(Some(id))
}

impl StockInput {
    /// The lines with the same product merged (so one product's units are checked together),
    /// in the order first seen; 422 for an empty list, a bad id or a bad quantity.
    fn validate(self) -> Result<Vec<(String, i64)>, ApiError> {
        let items = self.items.unwrap_or_default();
        if items.is_empty() || items.len() > MAX_STOCK_LINES {
            return Err(ApiError::invalid(format!(
                "`items` must hold 1 to {MAX_STOCK_LINES} lines"
            )));
        }
        let mut lines: Vec<(String, i64)> = Vec::with_capacity(items.len());
        for line in items {
            let id = line.product_id.trim();
            if id.is_empty() || id.len() > MAX_ID_LEN {
                return Err(ApiError::invalid(format!(
                    "`product_id` must be 1 to {MAX_ID_LEN} bytes"
                )));
            }
            if !(1..=MAX_STOCK_UNITS).contains(&line.quantity) {
                return Err(ApiError::invalid(format!(
                    "`quantity` must be from 1 to {MAX_STOCK_UNITS}"
                )));
            }
            match lines.iter_mut().find(|(known, _)| known == id) {
                Some((_, quantity)) => *quantity += line.quantity,
                None => lines.push((id.to_string(), line.quantity)),
            }
        }
        Ok(lines)
    }
}

/// `POST /api/stock/reserve` `{reservation_id?, items: [{product_id, quantity}]}` (service or
/// admin token): takes the units of every line, all or nothing; 200 `{reserved: [...],
/// repeated}`. 409 `insufficient_stock` naming the first product short of stock, 404 for an
/// unknown product; in both cases nothing was taken. Under a `reservation_id` the call is
/// idempotent: repeated, it takes nothing twice (`repeated: true`); after a release of that
/// id it takes nothing at all (409 `reservation_released`).
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn reserve_stock(app: Arc<App>, request: Request) -> Reply {
    app.jwt.require_role(request.headers(), STOCK_ROLES)?;
    let input: StockInput = read_json(request, app.body_limit).await?;
    let key = reservation_id(input.reservation_id.clone())?;
    let lines = input.validate()?;
    let reserved = stock_lines_json(&lines);
    let taken = match &key {
        Some(key) => app.store.reserve_stock(key, lines.clone()).await,
        None => app
            .store
            .decrement_stock(lines.clone())
            .await
            .map(|()| Reservation::Taken),
    };
    let repeated = match taken {
        Ok(Reservation::Taken) => false,
        Ok(Reservation::AlreadyTaken) => true,
        Ok(Reservation::Released) => {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                "reservation_released",
                "this reservation was released: it takes no stock any more",
            ))
        }
        Err(StoreError::NotFound) => {
            // The store does not say which line was missing: find it for the message.
            for (id, _) in &lines {
                app.store.product(id).await.map_err(product_not_found(id))?;
            }
            return Err(ApiError::not_found("a product of the reservation does not exist"));
        }
        Err(e) => return Err(e.into()),
    };
    tracing::info!(
        reservation_id = key.as_deref(),
        lines = lines.len(),
        repeated,
        "stock reserved"
    );
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "reserved": reserved, "repeated": repeated }),
    ))
}

/// `POST /api/stock/release` (service or admin token): gives back units taken by
/// [`reserve_stock`]; 200 `{released: [...]}` with the lines given back by this call.
/// `{reservation_id}`: what that reservation took, once (a repeated release gives back
/// nothing), and the id refused for any later reserve. `{items: [...]}` (no id): those units,
/// each call; 404 when a product does not exist, checked before anything is given back.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn release_stock(app: Arc<App>, request: Request) -> Reply {
    app.jwt.require_role(request.headers(), STOCK_ROLES)?;
    let input: StockInput = read_json(request, app.body_limit).await?;
    if let Some(key) = reservation_id(input.reservation_id.clone())? {
        let released = app.store.release_reservation(&key).await?;
        return Ok(json_response(
            StatusCode::OK,
            &serde_json::json!({ "released": stock_lines_json(&released) }),
        ));
    }
    let lines = input.validate()?;
    for (id, _) in &lines {
        app.store.product(id).await.map_err(product_not_found(id))?;
    }
    let mut released = Vec::with_capacity(lines.len());
    for (id, quantity) in lines {
        match app.store.restock(&id, quantity).await {
            Ok(_) => released.push((id, quantity)),
            Err(StoreError::NotFound) => {}
            Err(e) => return Err(e.into()),
        }
    }
    Ok(json_response(
        StatusCode::OK,
        &serde_json::json!({ "released": stock_lines_json(&released) }),
    ))
}

fn stock_lines_json(lines: &[(String, i64)]) -> serde_json::Value {
    lines
        .iter()
        .map(|(id, quantity)| serde_json::json!({ "product_id": id, "quantity": quantity }))
        .collect()
}
