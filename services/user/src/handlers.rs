//! The user service's calls, one handler each. Handlers answer `Err(ApiError)` for every
//! failure, so `function_calls_total{result="error"}` counts client errors (401, 422) as well
//! as server errors; the RED metrics' `status` label tells them apart. Register and login can
//! also be refused with `Retry-After` (503 when the hash queue is full, 429 when a login limit
//! applies): they run as an inner function answering [`Refusal`], which is still an `Err` for the
//! function metrics and becomes the JSON error with its header.

use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::Duration;

use http::header::{AUTHORIZATION, RETRY_AFTER};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use obskit::admin::PeerAddr;
use obskit::http::MatchedRoute;
use serde::{Deserialize, Serialize};
use shop_common::auth::{Claims, ROLE_ADMIN, ROLE_CUSTOMER};
use shop_common::http::{json_response, read_json, ApiError, Body};
use shop_common::objectives::LOGIN;
use shop_common::router::{server_failed, Reply, Request};
use shop_common::store::{StoreError, User};

use crate::hashing::HashRefusal;
use crate::throttle::Throttled;
use crate::{App, MIN_PASSWORD_CHARS};

/// Longest username, in characters.
const MAX_USERNAME_CHARS: usize = 64;
/// Longest e-mail address (RFC 5321's path limit).
const MAX_EMAIL_CHARS: usize = 254;
/// Longest password, in characters. argon2 takes any length; the cap keeps a 64 KiB body from
/// being a 64 KiB password and makes "too long" a clear 422 rather than a surprise.
const MAX_PASSWORD_CHARS: usize = 128;
/// Longest user id looked up; store ids are 36-character UUIDs, longer ones cannot exist.
const MAX_ID_CHARS: usize = 128;

/// A user as the contract shows it: never the password hash.
#[derive(Serialize)]
pub(crate) struct PublicUser<'a> {
    pub id: &'a str,
    pub username: &'a str,
    pub email: &'a str,
    pub role: &'a str,
}

impl<'a> From<&'a User> for PublicUser<'a> {
    fn from(user: &'a User) -> Self {
        PublicUser {
            id: &user.id,
            username: &user.username,
            email: &user.email,
            role: &user.role,
        }
    }
}

/// Verifies the request's Bearer token and counts the outcome in
/// `jwt_operations_total{operation="verify"}`. A request without an `Authorization` header is
/// refused without counting: no token was there to verify.
pub(crate) fn authenticate(app: &App, headers: &HeaderMap) -> Result<Claims, ApiError> {
    let presented = headers.contains_key(AUTHORIZATION);
    let result = app.jwt.authenticate(headers);
    if presented {
        let status = if result.is_ok() { "success" } else { "failure" };
        app.metrics.jwt_operations.with(&["verify", status]).inc();
    }
    result
}

/// Whether a registration or login failed on the server's side (a 5xx: overloaded, a failed
/// hash job); a wrong password or a taken name is the client's, and counts as a call that worked.
fn refusal_failed(reply: &Result<Response<Body>, Refusal>) -> bool {
    match reply {
        Ok(response) => response.status().is_server_error(),
        Err(refusal) => refusal.error.status.is_server_error(),
    }
}

/// An error answer, with a `Retry-After` when the client should come back later.
#[derive(Debug)]
pub(crate) struct Refusal {
    error: ApiError,
    retry_after: Option<Duration>,
}

impl From<ApiError> for Refusal {
    fn from(error: ApiError) -> Refusal {
        Refusal {
            error,
            retry_after: None,
        }
    }
}

impl From<HashRefusal> for Refusal {
    fn from(refused: HashRefusal) -> Refusal {
        match refused {
            HashRefusal::Busy { retry_after } => Refusal {
                error: ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "overloaded",
                    "too many password checks are waiting; try again shortly",
                ),
                retry_after: Some(retry_after),
            },
            HashRefusal::Failed => ApiError::internal("a password hash job failed").into(),
        }
    }
}

impl From<Throttled> for Refusal {
    fn from(throttled: Throttled) -> Refusal {
        Refusal {
            error: ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "too_many_attempts",
                "too many login attempts; try again later",
            ),
            retry_after: Some(throttled.retry_after),
        }
    }
}

impl Refusal {
    fn into_response(self) -> Response<Body> {
        let mut response = self.error.into_response();
        if let Some(after) = self.retry_after {
            // The one place a wait becomes `Retry-After`: whole seconds rounded up, at least
            // one (RFC 9110 `delay-seconds`), so that a client that obeys it is admitted.
            let seconds = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds.max(1)));
        }
        response
    }
}

/// What the router gets from a handler that can refuse with `Retry-After`.
fn answer(result: Result<Response<Body>, Refusal>) -> Reply {
    Ok(result.unwrap_or_else(Refusal::into_response))
}

/// The client's address as the login limit counts it (see `throttle.rs`). Requests always
/// carry their peer when served by obskit; without one (not served over TCP) all such
/// requests share one bucket.
fn client_of(app: &App, request: &Request) -> IpAddr {
    let peer = request
        .extensions()
        .get::<PeerAddr>()
        .map_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED), |p| p.0.ip());
    app.throttle.client_address(peer, request.headers())
}

/// What a client may send to register; all optional so that a missing field gets a 422 naming
/// it rather than serde's message.
#[derive(Deserialize)]
struct RegisterInput {
    username: Option<String>,
    email: Option<String>,
    password: Option<String>,
    role: Option<String>,
}

fn required(value: Option<String>, key: &str) -> Result<String, ApiError> {
    value.ok_or_else(|| ApiError::invalid(format!("`{key}` is required")))
}

/// A username: 1 to 64 visible ASCII characters (letters, digits, punctuation; no spaces, no
/// control characters, no Unicode look-alikes). Punctuation is allowed widely because the
/// seed's load test builds names from its base URL (`testuser_8080_1403...`, or with `//host`
/// when the URL has no port).
fn validate_username(username: &str) -> Result<(), ApiError> {
    if username.is_empty() {
        return Err(ApiError::invalid("`username` must not be empty"));
    }
    if username.chars().count() > MAX_USERNAME_CHARS {
        return Err(ApiError::invalid(format!(
            "`username` must be at most {MAX_USERNAME_CHARS} characters"
        )));
    }
    if !username.chars().all(|c| c.is_ascii_graphic()) {
        return Err(ApiError::invalid(
            "`username` may hold only ASCII letters, digits and punctuation, without spaces",
        ));
    }
    Ok(())
}

/// A plausible e-mail address: `local@domain.tld`, no spaces or control characters. Whether it
/// is deliverable only a mail can tell.
fn validate_email(email: &str) -> Result<(), ApiError> {
    if email.is_empty() {
        return Err(ApiError::invalid("`email` must not be empty"));
    }
    if email.chars().count() > MAX_EMAIL_CHARS {
        return Err(ApiError::invalid(format!(
            "`email` must be at most {MAX_EMAIL_CHARS} characters"
        )));
    }
    let plausible = email.split_once('@').is_some_and(|(local, domain)| {
        !local.is_empty()
            && !domain.contains('@')
            && domain.contains('.')
            && !domain.starts_with('.')
            && !domain.ends_with('.')
            && !domain.contains("..")
    }) && !email.chars().any(|c| c.is_whitespace() || c.is_control());
    if !plausible {
        return Err(ApiError::invalid(
            "`email` must be an address like name@example.com",
        ));
    }
    Ok(())
}

fn validate_password(password: &str) -> Result<(), ApiError> {
    let chars = password.chars().count();
    if chars < MIN_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!(
            "`password` must be at least {MIN_PASSWORD_CHARS} characters"
        )));
    }
    if chars > MAX_PASSWORD_CHARS {
        return Err(ApiError::invalid(format!(
            "`password` must be at most {MAX_PASSWORD_CHARS} characters"
        )));
    }
    Ok(())
}

/// The role a registration asks for, checked against who asks: anyone may create a customer,
/// only an administrator (by Bearer token) an administrator.
fn requested_role(app: &App, role: Option<&str>, headers: &HeaderMap) -> Result<&'static str, ApiError> {
    match role {
        None | Some(ROLE_CUSTOMER) => Ok(ROLE_CUSTOMER),
        Some(ROLE_ADMIN) => {
            if !headers.contains_key(AUTHORIZATION) {
                return Err(ApiError::forbidden(
                    "only an administrator may create an administrator",
                ));
            }
            let claims = authenticate(app, headers)?;
            if !claims.is_admin() {
                return Err(ApiError::forbidden(
                    "only an administrator may create an administrator",
                ));
            }
            Ok(ROLE_ADMIN)
        }
        Some(_) => Err(ApiError::invalid(format!(
            "`role` must be `{ROLE_CUSTOMER}` or `{ROLE_ADMIN}`"
        ))),
    }
}

/// `POST /user-api/register` `{username, email, password, role?}`: 201 with the new user; 503
/// with `Retry-After` when the hash queue is full.
pub(crate) async fn register(app: Arc<App>, request: Request) -> Reply {
    answer(register_user(app, request).await)
}

#[obskit::instrumented(name = "register", skip(app, request), error_if = refusal_failed)]
async fn register_user(app: Arc<App>, request: Request) -> Result<Response<Body>, Refusal> {
    let headers = request.headers().clone();
    let input: RegisterInput = read_json(request, app.body_limit).await?;
    let role = requested_role(&app, input.role.as_deref(), &headers)?;
    let username = required(input.username, "username")?;
    let email = required(input.email, "email")?.trim().to_string();
    let password = required(input.password, "password")?;
    validate_username(&username)?;
    validate_email(&email)?;
    validate_password(&password)?;
    let hash = app
        .hashing
        .run(move || shop_common::auth::hash_password(&password))
        .await?
        .map_err(ApiError::internal)?;
    // Uniqueness is the store's (one UNIQUE constraint, no check-then-insert race): a taken
    // username or e-mail comes back as `Conflict`, which is 409.
    let user = app
        .store
        .create_user(&username, &email, &hash, role)
        .await
        .map_err(ApiError::from)?;
    app.metrics.registrations.with(&[role]).inc();
    Ok(json_response(StatusCode::CREATED, &PublicUser::from(&user)))
}

#[derive(Deserialize)]
struct LoginInput {
    username: String,
    password: String,
}

#[derive(Serialize)]
struct TokenAnswer {
    access_token: String,
    token_type: &'static str,
    expires_in: u64,
}

/// `POST /user-api/login` `{username, password}`: 200 with a bearer token; 401 with the same
/// answer, after the same work, for an unknown user and a wrong password; 429 with
/// `Retry-After` when the client's address or the username is over its limit, 503 with
/// `Retry-After` when the hash queue is full.
pub(crate) async fn login(app: Arc<App>, request: Request) -> Reply {
    answer(log_in(app, request).await)
}

#[obskit::instrumented(name = "login", skip(app, request), error_if = refusal_failed, objective = LOGIN)]
async fn log_in(app: Arc<App>, request: Request) -> Result<Response<Body>, Refusal> {
    let client = client_of(&app, &request);
    let input: LoginInput = read_json(request, app.body_limit).await?;
    app.throttle.admit(client, &input.username)?;
    // The lookup runs in the hash job, on the worker, not in the request future: the store
    // runs each query on tokio's blocking pool, which starts a thread per concurrent query
    // (100 logins at once whose clients left after 3 ms grew the service to 51 threads). In the
    // job, lookups are bounded by the workers and skipped with the hash when the client has
    // gone. An unknown user costs a hash too (against a dummy): same time, same answer.
    let store = app.store.clone();
    let runtime = tokio::runtime::Handle::current();
    let username = input.username.clone();
    let password = input.password;
    let (user, matches) = app
        .hashing
        .run(move || {
            let user = match runtime.block_on(store.user_by_username(&username)) {
                Ok(user) => Some(user),
                Err(StoreError::NotFound) => None,
                Err(e) => return Err(e),
            };
            let hash = user.as_ref().map(|u| u.password_hash.as_str());
            let matches = shop_common::auth::verify_password_or_dummy(&password, hash);
            Ok((user, matches))
        })
        .await?
        .map_err(ApiError::from)?;
    let user = match user {
        Some(user) if matches => user,
        _ => {
            app.throttle.failed(&input.username);
            app.metrics.login_attempts.with(&["failure"]).inc();
            return Err(ApiError::unauthorized("wrong username or password").into());
        }
    };
    app.throttle.succeeded(&input.username);
    app.metrics.login_attempts.with(&["success"]).inc();
    let token = match app.jwt.mint(&user.id, &user.username, &user.role) {
        Ok(token) => {
            app.metrics.jwt_operations.with(&["issue", "success"]).inc();
            token
        }
        Err(e) => {
            app.metrics.jwt_operations.with(&["issue", "failure"]).inc();
            return Err(ApiError::internal(e).into());
        }
    };
    Ok(json_response(
        StatusCode::OK,
        &TokenAnswer {
            access_token: token,
            token_type: "bearer",
            expires_in: app.jwt.ttl().as_secs(),
        },
    ))
}

/// `GET /user-api/me` (Bearer): the caller's profile.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn me(app: Arc<App>, request: Request) -> Reply {
    let claims = authenticate(&app, request.headers())?;
    let user = app.store.user(&claims.sub).await.map_err(|e| match e {
        // A valid signature for a user this store does not know: the token is no good here.
        StoreError::NotFound => ApiError::unauthorized("the token's user does not exist"),
        e => e.into(),
    })?;
    Ok(json_response(StatusCode::OK, &PublicUser::from(&user)))
}

/// `GET /user-api/users/{id}/profile` (Bearer): the user with their orders and cart, each part
/// marked available or not; 403 for another user's profile unless the caller is an admin.
#[obskit::instrumented(skip(app, request), error_if = server_failed)]
pub(crate) async fn user_profile(app: Arc<App>, request: Request) -> Reply {
    let claims = authenticate(&app, request.headers())?;
    let id = MatchedRoute::of(&request)
        .and_then(|m| m.param("id"))
        .map(shop_common::http::percent_decode)
        .unwrap_or_default();
    // Authorisation before existence: a customer learns nothing about other ids.
    if claims.sub != id && !claims.is_admin() {
        return Err(ApiError::forbidden(
            "only administrators may see another user's profile",
        ));
    }
    if id.is_empty() || id.chars().count() > MAX_ID_CHARS {
        return Err(ApiError::not_found(format!("no user {id:?}")));
    }
    // The caller's own token goes along: the order and cart services check that it names the
    // user (or an admin) when they require tokens (SHOP_REQUIRE_AUTH).
    let authorization = request.headers().get(AUTHORIZATION).cloned();
    let profile = crate::profile::aggregate_profile(&app, &id, authorization.as_ref()).await?;
    Ok(json_response(StatusCode::OK, &profile))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames() {
        assert!(validate_username("ann").is_ok());
        assert!(validate_username("testuser_8080_140312").is_ok());
        assert!(validate_username("testuser_//localhost_1").is_ok());
        assert!(validate_username("").is_err());
        assert!(validate_username("has space").is_err());
        assert!(validate_username("tab\there").is_err());
        assert!(validate_username("ünïcode").is_err());
        assert!(validate_username(&"a".repeat(64)).is_ok());
        assert!(validate_username(&"a".repeat(65)).is_err());
    }

    #[test]
    fn emails() {
        assert!(validate_email("test_1@example.com").is_ok());
        assert!(validate_email("a.b+c@mail.example.org").is_ok());
        for bad in [
            "",
            "plain",
            "@example.com",
            "a@",
            "a@b",
            "a@.com",
            "a@b.",
            "a@b..c",
            "a@b@c.d",
            "a b@c.d",
            "a@b\n.c",
        ] {
            assert!(validate_email(bad).is_err(), "{bad:?}");
        }
        assert!(validate_email(&format!("{}@example.com", "a".repeat(250))).is_err());
    }

    #[test]
    fn passwords() {
        assert!(validate_password("testpass123").is_ok());
        assert!(validate_password("1234567").is_err());
        assert!(validate_password("12345678").is_ok());
        assert!(validate_password(&"p".repeat(129)).is_err());
    }
}
