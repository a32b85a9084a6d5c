//! The cart's calls to the backend and the order service, each through
//! [`TracedRequest::send_traced`] so that a checkout is one trace across the three services,
//! and each failure mapped to the answer the cart gives: 503 when the other service does not
//! answer, 502 when it answers something the contract does not allow.

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
    tracing::warn!(error = %e, "the backend did not answer");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "backend_unavailable",
        "the product service is not answering; try again later",
    )
}

/// 502 `bad_gateway`, with what was wrong in the log.
fn bad_gateway(service: &str, detail: impl std::fmt::Display) -> ApiError {
    tracing::warn!(upstream = service, error = %detail, "unexpected answer");
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

/// The body of a reservation: its idempotency key (the checkout id) and the cart's lines.
fn reservation_body(checkout_id: &str, items: &[CartItem]) -> Value {
    let lines: Vec<Value> = items
        .iter()
        .map(|i| json!({ "product_id": i.product_id, "quantity": i.quantity }))
        .collect();
    json!({ "reservation_id": checkout_id, "items": lines })
}

/// A fresh service token: minting is microseconds, so every call gets one rather than
/// sharing a cached token that could expire in flight.
fn service_token(app: &App) -> Result<String, ApiError> {
    app.jwt
        .mint(SERVICE_NAME, SERVICE_NAME, ROLE_SERVICE)
        .map_err(ApiError::internal)
}

/// How a remote step of the checkout ended, when it did not succeed.
#[derive(Debug)]
pub(crate) enum StepError {
    /// The other service refused, or never received the call (the connection was not even
    /// made): the step certainly did not happen.
    Refused(ApiError),
    /// No clear answer (a timeout, a server error, a reply the contract does not allow): the
    /// step may have happened. Never taken as "it did not".
    Ambiguous(ApiError),
}

impl StepError {
    pub(crate) fn into_api(self) -> ApiError {
        match self {
            StepError::Refused(e) | StepError::Ambiguous(e) => e,
        }
    }
}

/// Takes the units of every line at the backend under `checkout_id`, all or nothing; a repeat
/// under the same id takes nothing twice. [`StepError::Refused`] with 409 `stock_changed` when
/// a product is short of stock or gone (nothing was taken then).
pub(crate) async fn reserve(app: &App, checkout_id: &str, items: &[CartItem]) -> Result<(), StepError> {
    let sent = app
        .client
        .post(format!("{}/api/stock/reserve", app.backend_url))
        .bearer_auth(service_token(app).map_err(StepError::Refused)?)
        .json(&reservation_body(checkout_id, items))
        .send_traced()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Err(StepError::Refused(backend_unavailable(e))),
        Err(e) => return Err(StepError::Ambiguous(backend_unavailable(e))),
    };
    match response.status() {
        StatusCode::OK => Ok(()),
        StatusCode::CONFLICT => {
            let why = error_message(response)
                .await
                .unwrap_or_else(|| "a product is short of stock".to_string());
            Err(StepError::Refused(ApiError::new(
                StatusCode::CONFLICT,
                "stock_changed",
                format!("the stock changed since the cart was filled: {why}"),
            )))
        }
        StatusCode::NOT_FOUND => {
            let why = error_message(response)
                .await
                .unwrap_or_else(|| "a product is gone".to_string());
            Err(StepError::Refused(ApiError::new(
                StatusCode::CONFLICT,
                "stock_changed",
                format!("a product of the cart is no longer sold: {why}"),
            )))
        }
        status if status.is_client_error() => Err(StepError::Refused(bad_gateway("product service", status))),
        status => Err(StepError::Ambiguous(bad_gateway("product service", status))),
    }
}

/// Gives back what the reservation `checkout_id` took, and refuses that id for any later
/// reserve; idempotent at the backend (a repeat gives back nothing twice), so a failure is
/// simply retried later by the recovery sweep. The error says why it failed.
pub(crate) async fn release(app: &App, checkout_id: &str) -> Result<(), String> {
    let token = service_token(app).map_err(|e| e.message)?;
    let response = app
        .client
        .post(format!("{}/api/stock/release", app.backend_url))
        .bearer_auth(token)
        .json(&json!({ "reservation_id": checkout_id }))
        .send_traced()
        .await
        .map_err(|e| format!("no answer from the backend: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the backend answered {}", response.status()))
    }
}

/// 503 `order_service_unavailable`.
fn order_unavailable(e: impl std::fmt::Display) -> ApiError {
    tracing::warn!(error = %e, "the order service did not answer");
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "order_service_unavailable",
        "the order service is not answering; the cart is kept, try again later",
    )
}

/// The order JSON of a reply, checked to carry an id.
async fn order_of(response: reqwest::Response) -> Result<Value, ApiError> {
    let order: Value = response
        .json()
        .await
        .map_err(|e| bad_gateway("order service", e))?;
    if order.get("id").is_some_and(|id| id.is_string()) {
        Ok(order)
    } else {
        Err(bad_gateway("order service", format!("no order id in {order}")))
    }
}

/// What the order service said of a checkout's order.
pub(crate) enum Created {
    /// The order (created now or by an earlier call with the same checkout id).
    Order(Value),
    /// The checkout was aborted: no order will ever exist for it.
    Aborted,
}

/// Creates the checkout's order at the order service (idempotent per checkout id: a repeat
/// answers the same order).
pub(crate) async fn create_order(
    app: &App,
    checkout_id: &str,
    user_id: &str,
    items: &[CartItem],
) -> Result<Created, StepError> {
    let sent = app
        .client
        .post(format!("{}/order-api/orders", app.order_url))
        .bearer_auth(service_token(app).map_err(StepError::Refused)?)
        .json(&json!({ "user_id": user_id, "items": items, "checkout_id": checkout_id }))
        .send_traced()
        .await;
    let response = match sent {
        Ok(response) => response,
        Err(e) if e.is_connect() => return Err(StepError::Refused(order_unavailable(e))),
        Err(e) => return Err(StepError::Ambiguous(order_unavailable(e))),
    };
    match response.status() {
        StatusCode::CREATED | StatusCode::OK => order_of(response)
            .await
            .map(Created::Order)
            .map_err(StepError::Ambiguous),
        StatusCode::CONFLICT => Ok(Created::Aborted),
        status if status.is_client_error() => Err(StepError::Refused(bad_gateway("order service", status))),
        status => Err(StepError::Ambiguous(bad_gateway("order service", status))),
    }
}

/// Makes the order service refuse `checkout_id` for good; `Ok(None)` once it does,
/// `Ok(Some(order))` when the checkout's order exists already. The error says why it failed.
pub(crate) async fn abort(app: &App, checkout_id: &str) -> Result<Option<Value>, String> {
    let token = service_token(app).map_err(|e| e.message)?;
    let response = app
        .client
        .post(format!(
            "{}/order-api/checkouts/{}/abort",
            app.order_url,
            path_segment(checkout_id)
        ))
        .bearer_auth(token)
        .send_traced()
        .await
        .map_err(|e| format!("no answer from the order service: {e}"))?;
    if !response.status().is_success() {
        return Err(format!("the order service answered {}", response.status()));
    }
    let body: Value = response.json().await.map_err(|e| e.to_string())?;
    match (body.get("aborted").and_then(Value::as_bool), body.get("order")) {
        (Some(true), _) => Ok(None),
        (Some(false), Some(order)) if order.get("id").is_some_and(|id| id.is_string()) => {
            Ok(Some(order.clone()))
        }
        _ => Err(format!("unexpected abort answer: {body}")),
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
