//! Contract tests of the user service (`shop-api.md`, user section): the service runs
//! in-process on 127.0.0.1:0 with a temporary data directory, the order and cart services are
//! small stub servers (or closed ports), and every call and every listed failure is checked
//! through real HTTP.

use std::ops::Deref;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use obskit::metrics::Registry;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shop_common::auth::{Claims, JwtKeys, ROLE_ADMIN, ROLE_CUSTOMER};
use shop_common::service::{Service, ServiceConfig};
use shop_common::testing::{assert_error, read, sample, unix_now, RunningService, TempDataDir as DataDir};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use user::{AdminBootstrap, Config};

const SECRET: &[u8] = b"user-contract-test-secret";
const PASSWORD: &str = "testpass123";

fn keys() -> JwtKeys {
    JwtKeys::new(SECRET, Duration::from_secs(3600))
}

/// A base URL where nothing listens: a port that was bound and released.
async fn closed_port_url() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    format!("http://{addr}")
}

/// A stub of the order or cart service: answers every request with a fixed status and JSON
/// body, and records the request lines and headers it saw.
struct Stub {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: JoinHandle<()>,
}

impl Stub {
    async fn start(status: u16, body: Value) -> Stub {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&requests);
        let body = body.to_string();
        let task = tokio::spawn(async move {
            loop {
                let Ok((mut socket, _)) = listener.accept().await else {
                    return;
                };
                let seen = Arc::clone(&seen);
                let body = body.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 1024];
                    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                        match socket.read(&mut buf).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => head.extend_from_slice(&buf[..n]),
                        }
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&head).into_owned());
                    let answer = format!(
                        "HTTP/1.1 {status} Stub\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                        body.len()
                    );
                    let _ = socket.write_all(answer.as_bytes()).await;
                    let _ = socket.shutdown().await;
                });
            }
        });
        Stub { url, requests, task }
    }

    /// The request heads received so far.
    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

struct Setup<'a> {
    data_dir: &'a Path,
    order_url: String,
    cart_url: String,
    admin: Option<AdminBootstrap>,
    registry: Registry,
}

impl<'a> Setup<'a> {
    /// Order and cart services both down unless set.
    async fn new(data_dir: &'a Path) -> Setup<'a> {
        Setup {
            data_dir,
            order_url: closed_port_url().await,
            cart_url: closed_port_url().await,
            admin: None,
            registry: Registry::new(),
        }
    }
}

fn admin_bootstrap() -> AdminBootstrap {
    AdminBootstrap {
        username: "root".into(),
        email: "root@shop.example".into(),
        password: "bootstrap-secret-pw".into(),
    }
}

/// A user service running in this process: [`RunningService`] with the user contract's
/// helpers.
struct Running(RunningService);

impl Deref for Running {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.0
    }
}

impl Running {
    async fn start(setup: Setup<'_>) -> Running {
        let mut base = ServiceConfig::local(&user::Users::SPEC, setup.data_dir, keys());
        base.registry = setup.registry;
        base.upstreams.order = setup.order_url;
        base.upstreams.cart = setup.cart_url;
        let config = Config {
            base,
            admin: setup.admin,
        };
        Running(
            RunningService::start("the user service", |listener, shutdown| {
                user::run(config, listener, shutdown)
            })
            .await,
        )
    }

    async fn stop(self) {
        self.0.stop().await;
    }

    async fn raw_post(&self, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        self.raw(Method::POST, path, None, body).await
    }

    /// [`RunningService::get`] with a token: most reads of the user contract need one.
    async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    async fn register(&self, username: &str, email: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/user-api/register",
            None,
            Some(json!({"username": username, "email": email, "password": PASSWORD})),
        )
        .await
    }

    async fn login(&self, username: &str, password: &str) -> (StatusCode, Value) {
        self.call(
            Method::POST,
            "/user-api/login",
            None,
            Some(json!({"username": username, "password": password})),
        )
        .await
    }

    /// Logs in and returns the access token.
    async fn token(&self, username: &str, password: &str) -> String {
        let (status, body) = self.login(username, password).await;
        assert_eq!(status, 200, "{body}");
        body["access_token"].as_str().unwrap().to_string()
    }
}

#[tokio::test]
async fn register_login_and_me() {
    let dir = DataDir::new("basic");
    let shop = Running::start(Setup::new(&dir.0).await).await;

    let (status, created) = shop.register("ann_1", "ann@example.com").await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert!(!id.is_empty());
    assert_eq!(
        created,
        json!({"id": id, "username": "ann_1", "email": "ann@example.com", "role": "customer"})
    );

    // Login: a bearer token the other services verify with the same secret.
    let (status, login) = shop.login("ann_1", PASSWORD).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(login["token_type"], "bearer");
    assert_eq!(login["expires_in"], 3600);
    let token = login["access_token"].as_str().unwrap();
    let claims = keys().verify(token).unwrap();
    assert_eq!(
        (
            claims.sub.as_str(),
            claims.username.as_str(),
            claims.role.as_str()
        ),
        (id.as_str(), "ann_1", ROLE_CUSTOMER)
    );
    assert_eq!(claims.exp - claims.iat, 3600);
    let other_secret = JwtKeys::new(b"another secret", Duration::from_secs(60));
    assert!(other_secret.verify(token).is_err());

    let (status, me) = shop.get("/user-api/me", Some(token)).await;
    assert_eq!((status.as_u16(), &me), (200, &created));

    // Same answer for a wrong password and an unknown user.
    let wrong = shop.login("ann_1", "wrong-password").await;
    let unknown = shop.login("nobody_here", PASSWORD).await;
    assert_error(wrong.clone(), 401, "unauthorized");
    assert_eq!(wrong, unknown);
    assert_error(shop.login("", "").await, 401, "unauthorized");

    // Taken username (in any case) or e-mail: 409.
    assert_error(shop.register("ann_1", "other@example.com").await, 409, "conflict");
    assert_error(shop.register("ANN_1", "other@example.com").await, 409, "conflict");
    assert_error(shop.register("ann_2", "ann@example.com").await, 409, "conflict");
    assert_error(shop.register("ann_2", "ANN@example.com").await, 409, "conflict");

    // The seed's load-test shapes register fine.
    let (status, _) = shop
        .register("testuser_8080_140312345678", "test_140312345678@example.com")
        .await;
    assert_eq!(status, 201);
    shop.stop().await;
}

#[tokio::test]
async fn invalid_and_malformed_bodies() {
    let dir = DataDir::new("invalid");
    let shop = Running::start(Setup::new(&dir.0).await).await;
    let register = |body: Value| shop.call(Method::POST, "/user-api/register", None, Some(body));
    let long = "a".repeat(65);
    let long_email = format!("{}@example.com", "e".repeat(250));
    let long_password = "p".repeat(129);
    for body in [
        json!({"username": "", "email": "x@example.com", "password": PASSWORD}),
        json!({"username": long, "email": "x@example.com", "password": PASSWORD}),
        json!({"username": "has space", "email": "x@example.com", "password": PASSWORD}),
        json!({"username": "ctl\u{7}", "email": "x@example.com", "password": PASSWORD}),
        json!({"username": "bob", "email": "", "password": PASSWORD}),
        json!({"username": "bob", "email": "not-an-email", "password": PASSWORD}),
        json!({"username": "bob", "email": "bob@nodot", "password": PASSWORD}),
        json!({"username": "bob", "email": long_email, "password": PASSWORD}),
        json!({"username": "bob", "email": "x@example.com", "password": "short"}),
        json!({"username": "bob", "email": "x@example.com", "password": ""}),
        json!({"username": "bob", "email": "x@example.com", "password": long_password}),
        json!({"username": "bob", "email": "x@example.com"}),
        json!({"email": "x@example.com", "password": PASSWORD}),
        json!({"username": 7, "email": "x@example.com", "password": PASSWORD}),
        json!({"username": "bob", "email": "x@example.com", "password": PASSWORD, "role": "root"}),
        json!([1, 2]),
    ] {
        assert_error(register(body.clone()).await, 422, "invalid_field");
    }
    // Nothing invalid was stored.
    assert_error(shop.login("bob", PASSWORD).await, 401, "unauthorized");

    for path in ["/user-api/register", "/user-api/login"] {
        assert_error(
            shop.raw_post(path, b"{\"username\": ".to_vec()).await,
            400,
            "malformed_json",
        );
        assert_error(
            shop.raw_post(path, b"not json".to_vec()).await,
            400,
            "malformed_json",
        );
        assert_error(shop.raw_post(path, Vec::new()).await, 400, "malformed_json");
        let mut huge = br#"{"username": ""#.to_vec();
        huge.extend(std::iter::repeat_n(b'a', 100 * 1024));
        huge.extend(br#"", "password": "x"}"#);
        assert_error(shop.raw_post(path, huge).await, 413, "payload_too_large");
    }
    assert_error(
        shop.call(
            Method::POST,
            "/user-api/login",
            None,
            Some(json!({"username": "bob"})),
        )
        .await,
        422,
        "invalid_field",
    );
    // Wrong method and unknown path keep the JSON error shape.
    assert_error(
        shop.get("/user-api/register", None).await,
        405,
        "method_not_allowed",
    );
    assert_error(shop.get("/user-api/nothing", None).await, 404, "not_found");
    shop.stop().await;
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let dir = DataDir::new("tokens");
    let shop = Running::start(Setup::new(&dir.0).await).await;
    let (_, created) = shop.register("carl", "carl@example.com").await;
    let id = created["id"].as_str().unwrap();
    let now = unix_now();
    let claims = |exp: u64| Claims {
        sub: id.to_string(),
        username: "carl".into(),
        role: ROLE_CUSTOMER.into(),
        iat: now - 7200,
        exp,
    };
    let expired = keys().mint_claims(&claims(now - 60)).unwrap();
    let forged = JwtKeys::new(b"not the secret", Duration::from_secs(60))
        .mint_claims(&claims(now + 600))
        .unwrap();
    let good = keys().mint_claims(&claims(now + 600)).unwrap();
    let ghost = keys().mint("no-such-user", "ghost", ROLE_CUSTOMER).unwrap();
    let profile = format!("/user-api/users/{id}/profile");
    for path in ["/user-api/me", profile.as_str()] {
        assert_error(shop.get(path, None).await, 401, "unauthorized");
        for token in [expired.as_str(), forged.as_str(), "not-a-jwt", "a.b.c"] {
            assert_error(shop.get(path, Some(token)).await, 401, "unauthorized");
        }
        let basic = shop
            .client
            .get(shop.url(path))
            .header("authorization", "Basic Y2FybDpwdw==")
            .send()
            .await
            .unwrap();
        assert_error(read(basic).await, 401, "unauthorized");
    }
    // A well-signed token for a user this store does not know.
    assert_error(shop.get("/user-api/me", Some(&ghost)).await, 401, "unauthorized");
    let (status, me) = shop.get("/user-api/me", Some(&good)).await;
    assert_eq!((status.as_u16(), &me["id"]), (200, &created["id"]));
    shop.stop().await;
}

#[tokio::test]
async fn only_admins_create_admins_and_the_bootstrap_admin_exists() {
    let dir = DataDir::new("admin");
    let mut setup = Setup::new(&dir.0).await;
    setup.admin = Some(admin_bootstrap());
    let shop = Running::start(setup).await;
    let admin = shop.token("root", "bootstrap-secret-pw").await;
    let (status, me) = shop.get("/user-api/me", Some(&admin)).await;
    assert_eq!(status, 200);
    assert_eq!(
        (&me["username"], &me["email"], &me["role"]),
        (&json!("root"), &json!("root@shop.example"), &json!("admin"))
    );

    let ask = |token: Option<String>, name: &str| {
        let body = json!({
            "username": name, "email": format!("{name}@example.com"),
            "password": PASSWORD, "role": "admin",
        });
        let shop = &shop;
        async move {
            shop.call(Method::POST, "/user-api/register", token.as_deref(), Some(body))
                .await
        }
    };
    assert_error(ask(None, "eve").await, 403, "forbidden");
    let (_, _) = shop.register("dora", "dora@example.com").await;
    let customer = shop.token("dora", PASSWORD).await;
    assert_error(ask(Some(customer.clone()), "eve").await, 403, "forbidden");
    let forged = JwtKeys::new(b"nope", Duration::from_secs(60))
        .mint("x", "x", ROLE_ADMIN)
        .unwrap();
    assert_error(ask(Some(forged), "eve").await, 401, "unauthorized");
    assert_error(shop.login("eve", PASSWORD).await, 401, "unauthorized");

    let (status, created) = ask(Some(admin.clone()), "second_admin").await;
    assert_eq!((status.as_u16(), &created["role"]), (201, &json!("admin")));
    let token = shop.token("second_admin", PASSWORD).await;
    assert_eq!(keys().verify(&token).unwrap().role, ROLE_ADMIN);
    // An explicit customer role is fine for anyone.
    let (status, created) = shop
        .call(
            Method::POST,
            "/user-api/register",
            None,
            Some(json!({"username": "fay", "email": "fay@example.com", "password": PASSWORD, "role": "customer"})),
        )
        .await;
    assert_eq!((status.as_u16(), &created["role"]), (201, &json!("customer")));
    shop.stop().await;

    // A restart with the same bootstrap finds the admin and keeps its password.
    let mut setup = Setup::new(&dir.0).await;
    setup.admin = Some(AdminBootstrap {
        password: "a-different-password".into(),
        ..admin_bootstrap()
    });
    let shop = Running::start(setup).await;
    shop.token("root", "bootstrap-secret-pw").await;
    assert_error(
        shop.login("root", "a-different-password").await,
        401,
        "unauthorized",
    );
    shop.stop().await;

    // The password is never printed with the configuration.
    let printed = format!("{:?}", admin_bootstrap());
    assert!(!printed.contains("bootstrap-secret-pw"), "{printed}");
}

#[tokio::test]
async fn a_short_bootstrap_password_stops_the_start() {
    let dir = DataDir::new("shortadmin");
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let mut base = ServiceConfig::local(&user::Users::SPEC, &dir.0, keys());
    base.upstreams.order = closed_port_url().await;
    base.upstreams.cart = closed_port_url().await;
    let config = Config {
        base,
        admin: Some(AdminBootstrap {
            password: "short".into(),
            ..admin_bootstrap()
        }),
    };
    let error = user::run(config, listener, std::future::pending())
        .await
        .unwrap_err()
        .to_string();
    assert!(error.contains("SHOP_ADMIN_PASSWORD"), "{error}");
    assert!(!error.contains("short"), "{error}");
}

#[tokio::test]
async fn profiles_aggregate_orders_and_cart_and_degrade_per_part() {
    let orders_body = json!([{"id": "o1", "user_id": "u", "items": [], "total": 12.5, "status": "CREATED"}]);
    let cart_body = json!({"user_id": "u", "items": [{"product_id": "p1", "name": "Pen", "price": 2.5, "quantity": 2}], "total": 5.0});
    let orders = Stub::start(200, orders_body.clone()).await;
    let cart = Stub::start(200, cart_body.clone()).await;
    let dir = DataDir::new("profile");
    let mut setup = Setup::new(&dir.0).await;
    setup.order_url = orders.url.clone();
    setup.cart_url = cart.url.clone();
    setup.admin = Some(admin_bootstrap());
    let shop = Running::start(setup).await;

    let (_, ann) = shop.register("ann", "ann@example.com").await;
    let (_, bob) = shop.register("bob", "bob@example.com").await;
    let ann_id = ann["id"].as_str().unwrap().to_string();
    let bob_id = bob["id"].as_str().unwrap().to_string();
    let ann_token = shop.token("ann", PASSWORD).await;
    let admin = shop.token("root", "bootstrap-secret-pw").await;
    let path = |id: &str| format!("/user-api/users/{id}/profile");

    // Both parts up.
    let (status, profile) = shop.get(&path(&ann_id), Some(&ann_token)).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["user"], ann);
    assert_eq!(
        profile["orders"],
        json!({"available": true, "items": orders_body})
    );
    assert_eq!(
        profile["cart"],
        json!({"available": true, "items": cart_body["items"], "total": 5.0})
    );
    // The stubs were asked for this user's orders and cart, with the trace context.
    let order_requests = orders.requests();
    assert!(
        order_requests
            .iter()
            .any(|r| r.starts_with(&format!("GET /order-api/users/{ann_id}/orders HTTP/1.1"))),
        "{order_requests:?}"
    );
    assert!(cart
        .requests()
        .iter()
        .any(|r| r.starts_with(&format!("GET /cart-api/cart/{ann_id} HTTP/1.1"))));

    // Another user's profile: 403 for a customer, 200 for an admin; unknown: 404.
    assert_error(shop.get(&path(&bob_id), Some(&ann_token)).await, 403, "forbidden");
    assert_error(
        shop.get(&path("no-such-id"), Some(&ann_token)).await,
        403,
        "forbidden",
    );
    let (status, profile) = shop.get(&path(&bob_id), Some(&admin)).await;
    assert_eq!((status.as_u16(), &profile["user"]), (200, &bob));
    assert_error(
        shop.get(&path("no-such-id"), Some(&admin)).await,
        404,
        "not_found",
    );
    // An id with a slash stays one path segment downstream.
    assert_error(shop.get(&path("a%2Fb"), Some(&admin)).await, 404, "not_found");
    assert!(orders
        .requests()
        .iter()
        .any(|r| r.starts_with("GET /order-api/users/a%2Fb/orders ")));
    assert_error(
        shop.get(&path(&"x".repeat(300)), Some(&admin)).await,
        404,
        "not_found",
    );
    assert_error(shop.get(&path(&ann_id), None).await, 401, "unauthorized");
    shop.stop().await;

    // The order service down (a closed port), the cart up: only the orders part degrades.
    let mut setup = Setup::new(&dir.0).await;
    setup.cart_url = cart.url.clone();
    let shop = Running::start(setup).await;
    let (status, profile) = shop.get(&path(&ann_id), Some(&ann_token)).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["user"], ann);
    assert_eq!(profile["orders"]["available"], false);
    assert!(profile["orders"]["error"]
        .as_str()
        .unwrap()
        .contains("order service"));
    assert!(profile["orders"].get("items").is_none());
    assert_eq!(profile["cart"]["available"], true);
    assert_eq!(profile["cart"]["total"], 5.0);
    // /health: the dependency checks report the order service down, the service degraded.
    let (status, health) = shop.get("/health", None).await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["checks"]["database"]["status"], "healthy");
    assert_eq!(health["checks"]["order"]["status"], "unhealthy");
    assert_eq!(health["status"], "degraded");
    assert!(health["checks"].get("cart").is_some());
    shop.stop().await;

    // The cart service answering 500 and the order service answering garbage: both degrade,
    // the profile still answers.
    let broken_cart = Stub::start(500, json!({"error": "boom"})).await;
    let odd_orders = Stub::start(200, json!({"not": "a list"})).await;
    let mut setup = Setup::new(&dir.0).await;
    setup.order_url = odd_orders.url.clone();
    setup.cart_url = broken_cart.url.clone();
    let shop = Running::start(setup).await;
    let (status, profile) = shop.get(&path(&ann_id), Some(&ann_token)).await;
    assert_eq!(status, 200, "{profile}");
    assert_eq!(profile["user"], ann);
    assert_eq!(profile["cart"]["available"], false);
    assert!(profile["cart"]["error"].as_str().unwrap().contains("500"));
    assert_eq!(profile["orders"]["available"], false);
    shop.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_users() {
    let dir = DataDir::new("restart");
    let shop = Running::start(Setup::new(&dir.0).await).await;
    let (status, created) = shop.register("gus", "gus@example.com").await;
    assert_eq!(status, 201);
    shop.stop().await;

    let shop = Running::start(Setup::new(&dir.0).await).await;
    let token = shop.token("gus", PASSWORD).await;
    let (status, me) = shop.get("/user-api/me", Some(&token)).await;
    assert_eq!((status.as_u16(), &me), (200, &created));
    assert_error(shop.register("gus", "gus2@example.com").await, 409, "conflict");
    shop.stop().await;
}

#[tokio::test]
async fn business_metrics_without_usernames() {
    let cart = Stub::start(200, json!({"user_id": "u", "items": [], "total": 0.0})).await;
    let dir = DataDir::new("metrics");
    let mut setup = Setup::new(&dir.0).await;
    setup.cart_url = cart.url.clone();
    let shop = Running::start(setup).await;

    let (_, created) = shop.register("metric_person_xq", "mp@example.com").await;
    let id = created["id"].as_str().unwrap().to_string();
    let token = shop.token("metric_person_xq", PASSWORD).await;
    assert_eq!(shop.login("metric_person_xq", "bad-password").await.0, 401);
    assert_eq!(shop.login("probing_name_zz", "bad-password").await.0, 401);
    assert_eq!(shop.get("/user-api/me", Some(&token)).await.0, 200);
    assert_eq!(shop.get("/user-api/me", Some("forged.token.here")).await.0, 401);
    let profile = format!("/user-api/users/{id}/profile");
    assert_eq!(shop.get(&profile, Some(&token)).await.0, 200);

    let text = shop.metrics().await;
    for (series, expected) in [
        (r#"user_registrations_total{role="customer"}"#, 1.0),
        (r#"user_registrations_total{role="admin"}"#, 0.0),
        (r#"login_attempts_total{status="success"}"#, 1.0),
        (r#"login_attempts_total{status="failure"}"#, 2.0),
        (r#"jwt_operations_total{operation="issue",status="success"}"#, 1.0),
        (r#"jwt_operations_total{operation="issue",status="failure"}"#, 0.0),
        (
            r#"jwt_operations_total{operation="verify",status="success"}"#,
            2.0,
        ),
        (
            r#"jwt_operations_total{operation="verify",status="failure"}"#,
            1.0,
        ),
        ("profile_aggregation_seconds_count", 1.0),
    ] {
        let value = sample(&text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"));
        assert_eq!(value, expected, "{series}");
    }
    assert!(text.contains("cassandra_query_duration_seconds_count"));
    for secret in ["metric_person_xq", "probing_name_zz", id.as_str(), PASSWORD] {
        assert!(!text.contains(secret), "{secret} appears in /metrics");
    }
    // Every handler and the aggregation are `#[instrumented]`.
    let global = Registry::global().encode_text();
    for (function, module) in [
        ("register", "user::handlers"),
        ("login", "user::handlers"),
        ("me", "user::handlers"),
        ("user_profile", "user::handlers"),
        ("aggregate_profile", "user::profile"),
    ] {
        let series = format!(r#"function_calls_total{{function="{function}",module="{module}","#);
        assert!(
            text.contains(&series) || global.contains(&series),
            "{series} missing"
        );
    }
    shop.stop().await;
}

#[tokio::test]
async fn profile_calls_are_traced_client_spans_under_the_aggregation() {
    use obskit::trace::{AttrValue, FinishedSpan, SpanKind, SpanSink};

    #[derive(Default)]
    struct Collect(Mutex<Vec<FinishedSpan>>);
    impl SpanSink for Collect {
        fn on_end(&self, span: FinishedSpan) {
            self.0.lock().unwrap().push(span);
        }
    }

    let orders = Stub::start(200, json!([])).await;
    let cart = Stub::start(200, json!({"user_id": "u", "items": [], "total": 0})).await;
    let dir = DataDir::new("trace");
    let mut setup = Setup::new(&dir.0).await;
    setup.order_url = orders.url.clone();
    setup.cart_url = cart.url.clone();
    let shop = Running::start(setup).await;
    let (_, created) = shop.register("tracy", "tracy@example.com").await;
    let id = created["id"].as_str().unwrap().to_string();
    let token = shop.token("tracy", PASSWORD).await;

    // The sink is process-wide: spans of the other tests running meanwhile land in it too, so
    // the assertions pick this request's spans by the user id in the called URLs.
    let sink = Arc::new(Collect::default());
    obskit::trace::set_sink(sink.clone());
    let (status, profile) = shop
        .get(&format!("/user-api/users/{id}/profile"), Some(&token))
        .await;
    obskit::trace::clear_sink();
    assert_eq!(status, 200, "{profile}");
    assert_eq!(
        (&profile["orders"]["available"], &profile["cart"]["available"]),
        (&json!(true), &json!(true))
    );

    let spans = std::mem::take(&mut *sink.0.lock().unwrap());
    let client_span = |path: String| {
        spans
            .iter()
            .find(|s| {
                s.kind == SpanKind::Client
                    && matches!(s.attribute("url.full"), Some(AttrValue::Str(url)) if url.ends_with(&path))
            })
            .unwrap_or_else(|| panic!("no client span for {path} in {spans:#?}"))
    };
    let order_call = client_span(format!("/order-api/users/{id}/orders"));
    let cart_call = client_span(format!("/cart-api/cart/{id}"));
    let aggregation = spans
        .iter()
        .find(|s| Some(s.context.span_id) == order_call.parent_span_id)
        .expect("the order call's parent span");
    assert_eq!(aggregation.name, "aggregate_profile");
    assert_eq!(cart_call.parent_span_id, Some(aggregation.context.span_id));
    assert_eq!(order_call.name, "GET");
    assert_eq!(
        order_call.attribute("http.response.status_code"),
        Some(&AttrValue::I64(200))
    );
    // The called services got the trace context: their spans would continue this trace.
    let trace_id = format!("{:032x}", order_call.context.trace_id);
    for stub in [&orders, &cart] {
        let heads = stub.requests();
        assert!(
            heads.iter().any(|h| h
                .to_ascii_lowercase()
                .contains(&format!("traceparent: 00-{trace_id}-"))),
            "{heads:?}"
        );
    }
    shop.stop().await;
}
