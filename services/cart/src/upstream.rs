//! The cart's calls to the backend and the order service, each through
//! [`TracedRequest::send_traced`] so that a checkout is one trace across the three services,
//! and each failure mapped to the answer the cart gives: 503 when the other service does not
//! answer, 502 when it answers something the contract does not allow.

use std::time::Duration;

use http::StatusCode;
use obskit::trace::TracedRequest;
use serde::Deserialize;
use serde_json::{json, Value};
use shop_common::auth::ROLE_SERVICE;
use shop_common::http::ApiError;
use shop_common::store::{CartItem, Product};

use crate::{App, SERVICE_NAME};

/// 503 `backend_unavailable`.
fn backend_unavailable(e: reqwest::Error) -> ApiError {
    eprintln!("{SERVICE_NAME}: the backend did not answer: {e}");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
        "the product service is not answering; try again later",
    )
}

/// 502 `bad_gateway`, with what was wrong in the log.
fn bad_gateway(service: &str, detail: impl std::fmt::Display) -> ApiError {
    eprintln!("{SERVICE_NAME}: unexpected answer from the {service}: {detail}");
    ApiError::new(
        StatusCode::BAD_GATEWAY,
        "bad_gateway",
        format!("the {service} gave an unexpected answer; try again later"),
    )
}

/// `s` as one URL path segment: everything but RFC 3986's unreserved characters escaped, so
/// that an id holding `/`, `?` or `#` cannot reach another route.
pub(crate) fn path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The error message of a JSON error body, if it is one.
async fn error_message(response: reqwest::Response) -> Option<String> {
    #[derive(Deserialize)]
    struct ErrorBody {
        message: String,
    }
    response.json::<ErrorBody>().await.ok().map(|b| b.message)
}

/// The product `id` as the backend has it now: 404 when it does not exist.
pub(crate) async fn product(app: &App, id: &str) -> Result<Product, ApiError> {
    // URLs resolve `.` and `..` segments (escaped or not): such an id would name another
    // path, and no product has one.
    if id.bytes().all(|b| b == b'.') {
        return Err(ApiError::not_found(format!("no product {id}")));
    }
    let url = format!("{}/api/products/{}", app.backend_url, path_segment(id));
    let response = app
        .client
        .get(url)
        .send_traced()
        .await
        .map_err(backend_unavailable)?;
    match response.status() {
        StatusCode::OK => response
            .json::<Product>()
            .await
            .map_err(|e| bad_gateway("product service", e)),
        StatusCode::NOT_FOUND => Err(ApiError::not_found(format!("no product {id}"))),
        status => Err(bad_gateway("product service", status)),
    }
}

/// The stock lines of a cart, for reservations.
fn stock_lines(items: &[CartItem]) -> Value {
    let lines: Vec<Value> = items
        .iter()
        .map(|i| json!({ "product_id": i.product_id, "quantity": i.quantity }))
        .collect();
    json!({ "items": lines })
}

/// A fresh service token: minting is microseconds, so every call gets one rather than
/// sharing a cached token that could expire in flight.
fn service_token(app: &App) -> Result<String, ApiError> {
    app.jwt
        .mint(SERVICE_NAME, SERVICE_NAME, ROLE_SERVICE)
        .map_err(ApiError::internal)
}

/// Takes the units of every line at the backend, all or nothing. 409 `stock_changed` when a
/// product is short of stock or gone; nothing was taken then.
pub(crate) async fn reserve(app: &App, items: &[CartItem]) -> Result<(), ApiError> {
    let response = app
        .client
        .post(format!("{}/api/stock/reserve", app.backend_url))
        .bearer_auth(service_token(app)?)
        .json(&stock_lines(items))
        .send_traced()
        .await
        .map_err(backend_unavailable)?;
    match response.status() {
        StatusCode::OK => Ok(()),
        StatusCode::CONFLICT => {
            let why = error_message(response)
                .await
                .unwrap_or_else(|| "a product is short of stock".to_string());
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "stock_changed",
                format!("the stock changed since the cart was filled: {why}"),
            ))
        }
        StatusCode::NOT_FOUND => {
            let why = error_message(response)
                .await
                .unwrap_or_else(|| "a product is gone".to_string());
            Err(ApiError::new(
                StatusCode::CONFLICT,
                "stock_changed",
                format!("a product of the cart is no longer sold: {why}"),
            ))
        }
        status => Err(bad_gateway("product service", status)),
    }
}

/// Gives back the units [`reserve`] took (the order could not be created). Retried a few
/// times: units not given back stay missing from the catalogue. The error says why the last
/// attempt failed.
pub(crate) async fn release(app: &App, items: &[CartItem]) -> Result<(), String> {
    let body = stock_lines(items);
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_millis(100 << attempt)).await;
        }
        let token = service_token(app).map_err(|e| e.message)?;
        let sent = app
            .client
            .post(format!("{}/api/stock/release", app.backend_url))
            .bearer_auth(token)
            .json(&body)
            .send_traced()
            .await;
        match sent {
            Ok(response) if response.status().is_success() => return Ok(()),
            // A client error will not change on retry.
            Ok(response) if response.status().is_client_error() => {
                return Err(format!("the backend refused the release: {}", response.status()))
            }
            Ok(response) => last = format!("the backend answered {}", response.status()),
            Err(e) => last = format!("no answer from the backend: {e}"),
        }
    }
    Err(last)
}

/// Creates the order at the order service, with a service token (the order service checks that
/// a token names the order's user, and a service may act for anyone); its JSON on 201. 503
/// `order_service_unavailable` without an answer, 502 for any other answer.
pub(crate) async fn create_order(app: &App, user_id: &str, items: &[CartItem]) -> Result<Value, ApiError> {
    let response = app
        .client
        .post(format!("{}/order-api/orders", app.order_url))
        .bearer_auth(service_token(app)?)
        .json(&json!({ "user_id": user_id, "items": items }))
        .send_traced()
        .await
        .map_err(|e| {
            eprintln!("{SERVICE_NAME}: the order service did not answer: {e}");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "order_service_unavailable",
                "the order service is not answering; the cart is kept, try again later",
            )
        })?;
    match response.status() {
        StatusCode::CREATED => {
            let order: Value = response
                .json()
                .await
                .map_err(|e| bad_gateway("order service", e))?;
            if order.get("id").is_some_and(|id| id.is_string()) {
                Ok(order)
            } else {
                Err(bad_gateway(
                    "order service",
                    format!("201 without an order id: {order}"),
                ))
            }
        }
        status => Err(bad_gateway("order service", status)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_inside_their_path_segment() {
        assert_eq!(path_segment("a1-b_c.d~"), "a1-b_c.d~");
        assert_eq!(path_segment("../x?y#z"), "..%2Fx%3Fy%23z");
        assert_eq!(path_segment("é"), "%C3%A9");
    }
}
