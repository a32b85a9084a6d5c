//! Profiles aggregated from three sources at once: the user record (this service's store), the
//! user's orders (order service) and cart (cart service). A source that fails degrades only its
//! own part, marked `"available": false` with the reason; only the user record is essential.
//! The calls carry the caller's `Authorization` header, so that the order and cart services,
//! when they require a token (`SHOP_REQUIRE_AUTH=true`), see who asks: the user themself or an
//! administrator, the only callers the profile route lets through.

use std::time::Instant;

use http::HeaderValue;
use obskit::trace::TracedRequest;
use reqwest::Url;
use serde_json::{json, Value};
use shop_common::http::ApiError;
use shop_common::store::StoreError;

use crate::handlers::PublicUser;
use crate::App;

/// Largest answer read from the order or cart service. A user's order history is a few
/// kilobytes; the cap keeps a misbehaving service from filling this one's memory.
const MAX_ANSWER_BYTES: usize = 4 * 1024 * 1024;

/// The profile of `user_id`: `{"user": {...}, "orders": {...}, "cart": {...}}`, each of the
/// last two `{"available": true, ...}` or `{"available": false, "error": "..."}`; 404 when the
/// user does not exist. The three reads run concurrently; the whole aggregation is timed into
/// `profile_aggregation_seconds`.
///
/// Profiled at most once every 10 minutes for up to 5 s or 50 calls: the aggregation is
/// mostly waiting on other services, which takes no CPU samples, so what a capture shows is the
/// JSON handling and request building around the waits, and a rare, short capture is enough
/// to see that without keeping the process's only profiler busy.
#[obskit::profiled(name = "profile_aggregation", every = "10m", duration = "5s", calls = 50)]
///
/// `authorization` (the caller's header, a secret: never recorded in the span) is forwarded.
#[obskit::instrumented(skip(app, authorization))]
pub(crate) async fn aggregate_profile(
    app: &App,
    user_id: &str,
    authorization: Option<&HeaderValue>,
) -> Result<Value, ApiError> {
    let started = Instant::now();
    let (user, orders, cart) = tokio::join!(
        app.store.user(user_id),
        orders_part(app, user_id, authorization),
        cart_part(app, user_id, authorization),
    );
    app.metrics
        .profile_aggregation
        .observe(started.elapsed().as_secs_f64());
    let user = user.map_err(|e| match e {
        StoreError::NotFound => ApiError::not_found(format!("no user {user_id}")),
        e => e.into(),
    })?;
    Ok(json!({
        "user": PublicUser::from(&user),
        "orders": orders,
        "cart": cart,
    }))
}

/// `{"available": true, "items": [orders]}` from `GET {ORDER_URL}/order-api/users/{id}/orders`.
async fn orders_part(app: &App, user_id: &str, authorization: Option<&HeaderValue>) -> Value {
    let answer = fetch_json(
        app,
        &app.order_url,
        &["order-api", "users", user_id, "orders"],
        "order",
        authorization,
    )
    .await;
    match answer {
        Ok(Value::Array(items)) => json!({"available": true, "items": items}),
        Ok(_) => unavailable("the order service answered something other than a list of orders"),
        Err(reason) => unavailable(reason),
    }
}

/// `{"available": true, "items": [...], "total": n}` from `GET {CART_URL}/cart-api/cart/{id}`.
async fn cart_part(app: &App, user_id: &str, authorization: Option<&HeaderValue>) -> Value {
    let answer = fetch_json(
        app,
        &app.cart_url,
        &["cart-api", "cart", user_id],
        "cart",
        authorization,
    )
    .await;
    match answer {
        Ok(Value::Object(mut cart)) => match (cart.remove("items"), cart.remove("total")) {
            (Some(items @ Value::Array(_)), Some(total @ Value::Number(_))) => {
                json!({"available": true, "items": items, "total": total})
            }
            _ => unavailable("the cart service answered something other than a cart"),
        },
        Ok(_) => unavailable("the cart service answered something other than a cart"),
        Err(reason) => unavailable(reason),
    }
}

fn unavailable(reason: impl Into<String>) -> Value {
    json!({"available": false, "error": reason.into()})
}

/// `base` with `segments` appended, each percent-encoded: an id with `/` or `?` in it stays
/// one path segment and cannot reach another route of the called service.
fn service_url(base: &str, segments: &[&str]) -> Option<Url> {
    let mut url = Url::parse(base).ok()?;
    url.path_segments_mut().ok()?.pop_if_empty().extend(segments);
    Some(url)
}

/// GETs JSON from another service through the pooled client, in a traced client span, with
/// the caller's `authorization` if any. The error is a sentence for the profile's `error`
/// field; it names the service, not its address.
async fn fetch_json(
    app: &App,
    base: &str,
    segments: &[&str],
    service: &str,
    authorization: Option<&HeaderValue>,
) -> Result<Value, String> {
    let url =
        service_url(base, segments).ok_or_else(|| format!("the {service} service's URL is misconfigured"))?;
    let mut request = app
        .client
        .get(url)
        .header(http::header::ACCEPT, "application/json");
    if let Some(authorization) = authorization {
        request = request.header(http::header::AUTHORIZATION, authorization.clone());
    }
    let mut response = request.send_traced().await.map_err(|e| {
        if e.is_timeout() {
            format!("the {service} service did not answer in time")
        } else if e.is_connect() {
            format!("the {service} service is unreachable")
        } else {
            format!("the call to the {service} service failed")
        }
    })?;
    let status = response.status();
    if status == http::StatusCode::UNAUTHORIZED || status == http::StatusCode::FORBIDDEN {
        return Err(format!(
            "the {service} service refused the caller's token ({status})"
        ));
    }
    if !status.is_success() {
        return Err(format!("the {service} service answered {status}"));
    }
    let mut body = Vec::new();
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                if body.len() + chunk.len() > MAX_ANSWER_BYTES {
                    return Err(format!("the {service} service's answer is too large"));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(None) => break,
            Err(_) => return Err(format!("the {service} service's answer was cut off")),
        }
    }
    serde_json::from_slice(&body).map_err(|_| format!("the {service} service did not answer JSON"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_stay_one_path_segment() {
        let url = service_url(
            "http://127.0.0.1:8002",
            &["order-api", "users", "a/b?c#d", "orders"],
        )
        .unwrap();
        assert_eq!(
            url.as_str(),
            "http://127.0.0.1:8002/order-api/users/a%2Fb%3Fc%23d/orders"
        );
        let url = service_url("http://cart:8001/prefix/", &["cart-api", "cart", "u1"]).unwrap();
        assert_eq!(url.as_str(), "http://cart:8001/prefix/cart-api/cart/u1");
        assert!(service_url("not a url", &["x"]).is_none());
    }
}
