//! Contract tests of the order service (`shop-api.md`, order section): the service runs
//! in-process on 127.0.0.1:0 with a temporary data directory, and every call and every listed
//! failure is checked through real HTTP, with the lifecycle task driven by a short step.

use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use order::lifecycle::{self, CANCELLED, CREATED, DELIVERED, PAID, SHIPPED};
use order::Config;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use shop_common::auth::{Claims, JwtKeys, ROLE_ADMIN, ROLE_CUSTOMER, ROLE_SERVICE};
use shop_common::service::{Service, ServiceConfig};
use shop_common::testing::{assert_error, sample, RunningService, TempDataDir as DataDir};

/// The lifecycle step of the tests that let the background task run.
const SHORT_STEP: Duration = Duration::from_millis(200);

/// How long a test waits for the lifecycle before it gives up (a bound against hanging, not a
/// timing assertion: on an idle machine delivery takes about a second).
const PATIENCE: Duration = Duration::from_secs(60);

const SECRET: &[u8] = b"contract-test-secret";

fn keys() -> JwtKeys {
    JwtKeys::new(SECRET, Duration::from_secs(600))
}

/// A token of `user` with `role`, signed with the service's secret.
fn token(user: &str, role: &str) -> String {
    keys().mint(user, user, role).unwrap()
}

fn admin_token() -> String {
    token("root", ROLE_ADMIN)
}

/// An order service running in this process: [`RunningService`] with the order contract's
/// helpers.
struct Running(RunningService);

impl Deref for Running {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.0
    }
}

impl Running {
    /// Starts the service on `data_dir` with the given lifecycle step (`None`: no background
    /// task, so statuses move only through the API and tests are deterministic).
    async fn start(data_dir: &Path, lifecycle_step: Option<Duration>) -> Running {
        Running::start_with(data_dir, lifecycle_step, false).await
    }

    /// [`Running::start`] with `SHOP_REQUIRE_AUTH` as `require_auth`.
    async fn start_with(data_dir: &Path, lifecycle_step: Option<Duration>, require_auth: bool) -> Running {
        let config = Config {
            base: ServiceConfig::local(&order::Orders::SPEC, data_dir, keys()),
            lifecycle_step,
            require_auth,
        };
        Running(
            RunningService::start("the order service", |listener, shutdown| {
                order::run(config, listener, shutdown)
            })
            .await,
        )
    }

    /// Stops the service; it must return (lifecycle task included) and report no error.
    async fn stop(self) {
        self.0.stop().await;
    }

    /// [`RunningService::call`] without a token: order calls are open by default.
    async fn call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.0.call(method, path, None, body).await
    }

    /// [`RunningService::raw`] without a token.
    async fn raw(&self, method: Method, path: &str, body: Vec<u8>) -> (StatusCode, Value) {
        self.0.raw(method, path, None, body).await
    }

    /// Creates an order and returns it, asserting 201.
    async fn create(&self, user_id: &str, items: Value) -> Value {
        let (status, order) = self
            .call(
                Method::POST,
                "/order-api/orders",
                Some(json!({"user_id": user_id, "items": items})),
            )
            .await;
        assert_eq!(status, 201, "{order}");
        order
    }

    /// Moves an order as an admin (status changes are admin-only).
    async fn set_status(&self, id: &str, status: &str) -> (StatusCode, Value) {
        self.set_status_as(id, status, Some(&admin_token())).await
    }

    async fn set_status_as(&self, id: &str, status: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.0
            .call(
                Method::PUT,
                &format!("/order-api/orders/{id}/status"),
                token,
                Some(json!({ "status": status })),
            )
            .await
    }

    async fn order(&self, id: &str) -> Value {
        let (status, order) = self.get(&format!("/order-api/orders/{id}")).await;
        assert_eq!(status, 200, "{order}");
        order
    }

    /// [`RunningService::metrics`], checking the status too.
    async fn metrics(&self) -> String {
        let response = self.client.get(self.url("/metrics")).send().await.unwrap();
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Polls the order until it is in `status`; panics past [`PATIENCE`].
    async fn wait_for(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + PATIENCE;
        loop {
            let order = self.order(id).await;
            if order["status"] == status {
                return order;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "order {id} never reached {status}: {order}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

fn two_items() -> Value {
    json!([
        {"product_id": "p-1", "name": "Widget", "price": 12.5, "quantity": 2},
        {"product_id": "p-2", "name": "Gadget", "price": 3.25, "quantity": 4},
    ])
}

fn one_item() -> Value {
    json!([{"product_id": "p-3", "name": "Book", "price": 9.99, "quantity": 1}])
}

/// The statuses of an order's history, oldest first.
fn history(order: &Value) -> Vec<String> {
    order["history"]
        .as_array()
        .unwrap_or_else(|| panic!("no history: {order}"))
        .iter()
        .map(|c| c["status"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn orders_are_created_read_and_listed_per_user() {
    let dir = DataDir::new("create");
    let shop = Running::start(&dir.0, None).await;

    let order = shop.create("user-a", two_items()).await;
    let id = order["id"].as_str().expect("an id").to_string();
    assert!(!id.is_empty());
    assert_eq!(order["user_id"], "user-a");
    assert_eq!(order["status"], CREATED);
    assert_eq!(order["total"].as_f64(), Some(12.5 * 2.0 + 3.25 * 4.0));
    assert_eq!(order["items"], two_items());
    let created_at = order["created_at"].as_f64().expect("created_at");
    assert!(created_at > 1.0e9, "seconds since the epoch: {order}");
    assert_eq!(history(&order), [CREATED]);
    assert_eq!(order["history"][0]["at"].as_f64(), Some(created_at));

    // Read back as created.
    let (status, fetched) = shop.get(&format!("/order-api/orders/{id}")).await;
    assert_eq!((status.as_u16(), &fetched), (200, &order));
    assert_error(
        shop.get("/order-api/orders/no-such-order").await,
        404,
        "not_found",
    );

    // A user's orders, newest first; others' orders are not among them.
    let second = shop.create("user-a", one_item()).await;
    let third = shop.create("user-a", one_item()).await;
    let other = shop.create("user-b", one_item()).await;
    let (status, list) = shop.get("/order-api/users/user-a/orders").await;
    assert_eq!(status, 200);
    let ids: Vec<&str> = list
        .as_array()
        .expect("an array")
        .iter()
        .map(|o| o["id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        [
            third["id"].as_str().unwrap(),
            second["id"].as_str().unwrap(),
            id.as_str()
        ]
    );
    assert_eq!(list[2], order);
    let (_, list) = shop.get("/order-api/users/user-b/orders").await;
    assert_eq!(list, json!([other]));
    // A user with no orders has an empty list, not a 404.
    assert_eq!(
        shop.get("/order-api/users/nobody/orders").await,
        (StatusCode::OK, json!([]))
    );
    // Path parameters are percent-decoded.
    let spaced = shop.create("ann smith", one_item()).await;
    let (_, list) = shop.get("/order-api/users/ann%20smith/orders").await;
    assert_eq!(list, json!([spaced]));

    let text = shop.metrics().await;
    assert_eq!(sample(&text, "orders_created_total"), Some(5.0), "{text}");
    assert!(!text.contains("user_id=\""), "no identifier becomes a label");
    for function in ["create_order", "get_order", "user_orders"] {
        let series =
            format!(r#"function_calls_total{{function="{function}",module="order::handlers",result="ok"}}"#);
        assert!(
            sample(&text, &series).is_some_and(|v| v >= 1.0),
            "{series} missing"
        );
    }
    let (status, health) = shop.get("/health").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["service"], "order-service", "{health}");
    assert_eq!(health["checks"]["database"]["status"], "healthy", "{health}");
    shop.stop().await;
}

#[tokio::test]
async fn invalid_orders_are_refused_and_nothing_is_stored() {
    let dir = DataDir::new("invalid");
    let shop = Running::start(&dir.0, None).await;
    let item = |product_id: Value, name: Value, price: Value, quantity: Value| json!({"product_id": product_id, "name": name, "price": price, "quantity": quantity});
    let good = || item(json!("p-1"), json!("Widget"), json!(1.5), json!(1));
    let too_many: Vec<Value> = (0..101).map(|_| good()).collect();
    let invalid = [
        json!({"items": [good()]}),
        json!({"user_id": "", "items": [good()]}),
        json!({"user_id": "   ", "items": [good()]}),
        json!({"user_id": "x".repeat(129), "items": [good()]}),
        json!({"user_id": 7, "items": [good()]}),
        json!({"user_id": "u"}),
        json!({"user_id": "u", "items": []}),
        json!({"user_id": "u", "items": "many"}),
        json!({"user_id": "u", "items": too_many}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n"), json!(1.0), json!(0))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n"), json!(1.0), json!(-3))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n"), json!(1.0), json!(1.5))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n"), json!(1.0), json!(10_001))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n"), json!(-0.01), json!(1))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n"), json!(1.0e7), json!(1))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n"), json!("1.0"), json!(1))]}),
        json!({"user_id": "u", "items": [{"product_id": "p", "name": "n", "quantity": 1}]}),
        json!({"user_id": "u", "items": [{"product_id": "p", "name": "n", "price": 1.0}]}),
        json!({"user_id": "u", "items": [item(json!(""), json!("n"), json!(1.0), json!(1))]}),
        json!({"user_id": "u", "items": [item(json!("p".repeat(129)), json!("n"), json!(1.0), json!(1))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!(""), json!(1.0), json!(1))]}),
        json!({"user_id": "u", "items": [item(json!("p"), json!("n".repeat(201)), json!(1.0), json!(1))]}),
        json!({"user_id": "u", "items": [good(), item(json!("p"), json!("n"), json!(null), json!(1))]}),
        json!([]),
        json!(null),
    ];
    for body in invalid {
        let got = shop
            .call(Method::POST, "/order-api/orders", Some(body.clone()))
            .await;
        assert_eq!(got.0, 422, "{body} -> {:?}", got.1);
        assert_error(got, 422, "invalid_field");
    }
    // JSON has no NaN or infinity; a number too large for a double is where a non-finite
    // price could come from, and serde_json refuses it while parsing: 400, never stored.
    assert_error(
        shop.raw(
            Method::POST,
            "/order-api/orders",
            br#"{"user_id":"u","items":[{"product_id":"p","name":"n","price":1e400,"quantity":1}]}"#.to_vec(),
        )
        .await,
        400,
        "malformed_json",
    );

    assert_error(
        shop.raw(
            Method::POST,
            "/order-api/orders",
            b"{\"user_id\": \"u\", \"items\": [".to_vec(),
        )
        .await,
        400,
        "malformed_json",
    );
    assert_error(
        shop.raw(Method::POST, "/order-api/orders", b"not json".to_vec())
            .await,
        400,
        "malformed_json",
    );
    assert_error(
        shop.raw(Method::POST, "/order-api/orders", Vec::new()).await,
        400,
        "malformed_json",
    );
    let mut huge = br#"{"user_id":"u","items":[],"padding":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(br#""}"#);
    assert_error(
        shop.raw(Method::POST, "/order-api/orders", huge).await,
        413,
        "payload_too_large",
    );

    // The longest accepted values are accepted.
    let longest = shop
        .create(
            &"u".repeat(128),
            json!([item(
                json!("p".repeat(128)),
                json!("n".repeat(200)),
                json!(1.0e6),
                json!(10_000)
            )]),
        )
        .await;
    assert_eq!(longest["total"].as_f64(), Some(1.0e10));
    let hundred: Vec<Value> = (0..100).map(|_| good()).collect();
    shop.create("u", json!(hundred)).await;

    let (_, list) = shop.get("/order-api/users/u/orders").await;
    assert_eq!(
        list.as_array().unwrap().len(),
        1,
        "only the valid order of `u`: {list}"
    );
    let text = shop.metrics().await;
    assert_eq!(sample(&text, "orders_created_total"), Some(2.0), "{text}");
    shop.stop().await;
}

#[tokio::test]
async fn status_changes_follow_the_lifecycle() {
    let dir = DataDir::new("status");
    let shop = Running::start(&dir.0, None).await;

    // The whole way through the API, with the history growing at each step.
    let order = shop.create("u", two_items()).await;
    let id = order["id"].as_str().unwrap();
    for (step, status) in [PAID, SHIPPED, DELIVERED].into_iter().enumerate() {
        let (code, moved) = shop.set_status(id, status).await;
        assert_eq!(code, 200, "{moved}");
        assert_eq!(moved["status"], status);
        assert_eq!(moved["id"], id);
        assert_eq!(moved["total"], order["total"]);
        assert_eq!(history(&moved).len(), step + 2);
        assert_eq!(shop.order(id).await, moved);
    }
    let delivered = shop.order(id).await;
    assert_eq!(history(&delivered), [CREATED, PAID, SHIPPED, DELIVERED]);
    let times: Vec<f64> = delivered["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["at"].as_f64().unwrap())
        .collect();
    assert!(times.windows(2).all(|w| w[0] <= w[1]), "{times:?}");

    // Nothing leaves DELIVERED.
    for status in [CREATED, PAID, SHIPPED, DELIVERED, CANCELLED] {
        assert_error(shop.set_status(id, status).await, 409, "conflict");
    }

    // CANCELLED is allowed from CREATED and from PAID, and is final.
    let fresh = shop.create("u", one_item()).await;
    let fresh = fresh["id"].as_str().unwrap();
    let (code, cancelled) = shop.set_status(fresh, CANCELLED).await;
    assert_eq!(code, 200, "{cancelled}");
    assert_eq!(history(&cancelled), [CREATED, CANCELLED]);
    for status in [CREATED, PAID, SHIPPED, DELIVERED, CANCELLED] {
        assert_error(shop.set_status(fresh, status).await, 409, "conflict");
    }
    let paid = shop.create("u", one_item()).await;
    let paid = paid["id"].as_str().unwrap();
    assert_eq!(shop.set_status(paid, PAID).await.0, 200);
    // Status names are read in any letter case.
    let (code, cancelled) = shop.set_status(paid, "cancelled").await;
    assert_eq!(code, 200, "{cancelled}");
    assert_eq!(history(&cancelled), [CREATED, PAID, CANCELLED]);

    // ... but not once SHIPPED; and no step is skipped or taken backwards.
    let shipped = shop.create("u", one_item()).await;
    let shipped = shipped["id"].as_str().unwrap();
    assert_error(shop.set_status(shipped, SHIPPED).await, 409, "conflict");
    assert_error(shop.set_status(shipped, DELIVERED).await, 409, "conflict");
    assert_error(shop.set_status(shipped, CREATED).await, 409, "conflict");
    assert_eq!(shop.set_status(shipped, PAID).await.0, 200);
    assert_error(shop.set_status(shipped, PAID).await, 409, "conflict");
    assert_error(shop.set_status(shipped, CREATED).await, 409, "conflict");
    assert_eq!(shop.set_status(shipped, SHIPPED).await.0, 200);
    assert_error(shop.set_status(shipped, CANCELLED).await, 409, "conflict");
    assert_error(shop.set_status(shipped, PAID).await, 409, "conflict");
    assert_eq!(shop.order(shipped).await["status"], SHIPPED);

    // Unknown orders, unknown statuses, bad bodies.
    assert_error(shop.set_status("no-such-order", PAID).await, 404, "not_found");
    let path = format!("/order-api/orders/{shipped}/status");
    for body in [
        json!({"status": "LOST"}),
        json!({"status": ""}),
        json!({"status": 3}),
        json!({}),
        json!([]),
    ] {
        assert_error(
            shop.0
                .call(Method::PUT, &path, Some(&admin_token()), Some(body))
                .await,
            422,
            "invalid_field",
        );
    }
    assert_error(
        shop.0
            .raw(Method::PUT, &path, Some(&admin_token()), b"{\"status\":".to_vec())
            .await,
        400,
        "malformed_json",
    );
    let mut huge = br#"{"status":"PAID","padding":""#.to_vec();
    huge.extend(std::iter::repeat_n(b'x', 70 * 1024));
    huge.extend(br#""}"#);
    assert_error(
        shop.0.raw(Method::PUT, &path, Some(&admin_token()), huge).await,
        413,
        "payload_too_large",
    );
    assert_eq!(history(&shop.order(shipped).await), [CREATED, PAID, SHIPPED]);

    // The metrics count what really happened: 3 PAID (id, paid, shipped), 2 SHIPPED, 1
    // DELIVERED, 2 CANCELLED; one delivery, observed in both histograms.
    let text = shop.metrics().await;
    for (status, count) in [(PAID, 3.0), (SHIPPED, 2.0), (DELIVERED, 1.0), (CANCELLED, 2.0)] {
        let series = format!(r#"order_status_changes_total{{status="{status}"}}"#);
        assert_eq!(sample(&text, &series), Some(count), "{series}\n{text}");
    }
    assert_eq!(
        sample(&text, r#"order_status_changes_total{status="CREATED"}"#),
        None,
        "creation is not a status change"
    );
    assert_eq!(
        sample(&text, "order_completion_seconds_count"),
        Some(1.0),
        "{text}"
    );
    assert_eq!(sample(&text, "delivery_time_seconds_count"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, r#"order_completion_seconds_bucket{le="60"}"#),
        Some(1.0),
        "{text}"
    );
    assert_eq!(
        sample(&text, r#"delivery_time_seconds_bucket{le="1800"}"#),
        Some(1.0),
        "{text}"
    );
    assert!(!text.contains("order_id"), "no order id becomes a label");
    let series = r#"function_calls_total{function="set_status",module="order::handlers",result="ok"}"#;
    assert!(
        sample(&text, series).is_some_and(|v| v >= 1.0),
        "{series} missing"
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_status_changes_apply_once() {
    let dir = DataDir::new("concurrent");
    let shop = Running::start(&dir.0, None).await;
    let order = shop.create("u", one_item()).await;
    let id = order["id"].as_str().unwrap().to_string();

    // Twenty clients pay the same order at once: exactly one succeeds.
    let shop = std::sync::Arc::new(shop);
    let tasks: Vec<_> = (0..20)
        .map(|_| {
            let shop = std::sync::Arc::clone(&shop);
            let id = id.clone();
            tokio::spawn(async move { shop.set_status(&id, PAID).await.0.as_u16() })
        })
        .collect();
    let mut codes = Vec::new();
    for task in tasks {
        codes.push(task.await.unwrap());
    }
    codes.sort_unstable();
    assert_eq!(codes.iter().filter(|&&c| c == 200).count(), 1, "{codes:?}");
    assert_eq!(codes.iter().filter(|&&c| c == 409).count(), 19, "{codes:?}");
    assert_eq!(history(&shop.order(&id).await), [CREATED, PAID]);

    let text = shop.metrics().await;
    assert_eq!(
        sample(&text, r#"order_status_changes_total{status="PAID"}"#),
        Some(1.0),
        "{text}"
    );
    let shop = std::sync::Arc::into_inner(shop).expect("every task is done");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_lifecycle_delivers_orders_and_a_restart_keeps_them() {
    let dir = DataDir::new("lifecycle");

    // First run without the background task: orders in every state before shipping.
    let shop = Running::start(&dir.0, None).await;
    let waiting = shop.create("u", two_items()).await;
    let cancelled = shop.create("u", one_item()).await;
    let paid = shop.create("u", one_item()).await;
    let waiting_id = waiting["id"].as_str().unwrap().to_string();
    let cancelled_id = cancelled["id"].as_str().unwrap().to_string();
    let paid_id = paid["id"].as_str().unwrap().to_string();
    let cancelled = shop.set_status(&cancelled_id, CANCELLED).await.1;
    assert_eq!(shop.set_status(&paid_id, PAID).await.0, 200);
    shop.stop().await;

    // Second run on the same data with a short step: what was written is still there, and the
    // task carries every open order through to DELIVERED.
    let shop = Running::start(&dir.0, Some(SHORT_STEP)).await;
    let kept = shop.order(&waiting_id).await;
    for field in ["id", "user_id", "items", "total", "created_at"] {
        assert_eq!(kept[field], waiting[field], "{field} after the restart");
    }
    let (_, list) = shop.get("/order-api/users/u/orders").await;
    assert_eq!(list.as_array().unwrap().len(), 3, "{list}");

    let fresh = shop.create("u", one_item()).await;
    let fresh_id = fresh["id"].as_str().unwrap().to_string();
    for id in [&waiting_id, &paid_id, &fresh_id] {
        let delivered = shop.wait_for(id, DELIVERED).await;
        assert_eq!(
            history(&delivered),
            [CREATED, PAID, SHIPPED, DELIVERED],
            "{delivered}"
        );
    }
    // Each status of the fresh order lasted at least one step (the task moves only orders that
    // have been in their status that long).
    let fresh = shop.order(&fresh_id).await;
    let times: Vec<f64> = fresh["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["at"].as_f64().unwrap())
        .collect();
    for pair in times.windows(2) {
        assert!(pair[1] - pair[0] >= SHORT_STEP.as_secs_f64() - 1e-3, "{times:?}");
    }
    // A cancelled order is final: the task leaves it as it was.
    assert_eq!(shop.order(&cancelled_id).await, cancelled);
    // A delivered order stays delivered.
    assert_error(shop.set_status(&fresh_id, CANCELLED).await, 409, "conflict");

    // This run's registry saw: PAID for `waiting` and `fresh` (`paid` was paid in the first
    // run), SHIPPED and DELIVERED for all three; both histograms have three deliveries.
    let text = shop.metrics().await;
    for (status, count) in [(PAID, 2.0), (SHIPPED, 3.0), (DELIVERED, 3.0)] {
        let series = format!(r#"order_status_changes_total{{status="{status}"}}"#);
        assert_eq!(sample(&text, &series), Some(count), "{series}\n{text}");
    }
    assert_eq!(
        sample(&text, r#"order_status_changes_total{status="CANCELLED"}"#),
        None
    );
    assert_eq!(sample(&text, "orders_created_total"), Some(1.0), "{text}");
    assert_eq!(
        sample(&text, "order_completion_seconds_count"),
        Some(3.0),
        "{text}"
    );
    assert_eq!(sample(&text, "delivery_time_seconds_count"), Some(3.0), "{text}");
    // Creation to delivery took at least three steps per order.
    let completion = sample(&text, "order_completion_seconds_sum").unwrap();
    assert!(
        completion >= 3.0 * 3.0 * SHORT_STEP.as_secs_f64() - 0.01,
        "{text}"
    );
    let delivery = sample(&text, "delivery_time_seconds_sum").unwrap();
    assert!(delivery >= 3.0 * SHORT_STEP.as_secs_f64() - 0.01, "{text}");
    for (bucket, count) in [
        ("60", 3.0),
        ("120", 3.0),
        ("180", 3.0),
        ("300", 3.0),
        ("+Inf", 3.0),
    ] {
        let series = format!(r#"order_completion_seconds_bucket{{le="{bucket}"}}"#);
        assert_eq!(sample(&text, &series), Some(count), "{series}\n{text}");
    }
    let series = r#"function_calls_total{function="advance_due",module="order::lifecycle",result="ok"}"#;
    assert!(
        sample(&text, series).is_some_and(|v| v >= 1.0),
        "{series} missing"
    );

    // The task stops with the server (stop() fails if run() does not return).
    shop.stop().await;

    // A third run keeps the delivered orders as they are.
    let shop = Running::start(&dir.0, None).await;
    assert_eq!(shop.order(&fresh_id).await, fresh);
    shop.stop().await;
}

#[tokio::test]
async fn unknown_routes_and_methods() {
    let dir = DataDir::new("routes");
    let shop = Running::start(&dir.0, None).await;
    assert_error(shop.get("/order-api/nothing-here").await, 404, "not_found");
    assert_error(shop.get("/order-api/orders/x/y/z").await, 404, "not_found");
    assert_error(shop.get("/api/products").await, 404, "not_found");
    assert_error(
        shop.call(Method::DELETE, "/order-api/orders/some-id", None).await,
        405,
        "method_not_allowed",
    );
    assert_error(shop.get("/order-api/orders").await, 405, "method_not_allowed");
    assert_error(
        shop.call(Method::GET, "/order-api/orders/some-id/status", None)
            .await,
        405,
        "method_not_allowed",
    );
    shop.stop().await;
}

#[test]
fn lifecycle_rules_and_step_configuration() {
    use lifecycle::{is_allowed, next, parse_status, tick_for, STATUSES};

    let allowed: Vec<(&str, &str)> = STATUSES
        .iter()
        .flat_map(|from| STATUSES.iter().map(move |to| (*from, *to)))
        .filter(|(from, to)| is_allowed(from, to))
        .collect();
    assert_eq!(
        allowed,
        [
            (CREATED, PAID),
            (CREATED, CANCELLED),
            (PAID, SHIPPED),
            (PAID, CANCELLED),
            (SHIPPED, DELIVERED),
        ]
    );
    assert_eq!(next(DELIVERED), None);
    assert_eq!(next(CANCELLED), None);
    assert_eq!(parse_status(" shipped "), Some(SHIPPED));
    assert_eq!(parse_status("LOST"), None);
    assert_eq!(parse_status(""), None);

    let step = Config::lifecycle_step_from;
    assert_eq!(step(None), Some(Duration::from_secs(60)));
    assert_eq!(step(Some("")), Some(Duration::from_secs(60)));
    assert_eq!(step(Some("0")), None);
    assert_eq!(step(Some("0.0")), None);
    assert_eq!(step(Some("0.2")), Some(Duration::from_millis(200)));
    assert_eq!(step(Some(" 90 ")), Some(Duration::from_secs(90)));
    for bad in ["-1", "soon", "NaN", "inf", "1e300"] {
        assert_eq!(step(Some(bad)), Some(Duration::from_secs(60)), "{bad}");
    }
    assert_eq!(tick_for(Duration::from_secs(60)), Duration::from_secs(15));
    assert_eq!(tick_for(Duration::from_millis(200)), Duration::from_millis(100));
}

/// A token on an order call must be valid and name the order's user; admins and services act
/// for anyone; status changes are for admins only. Calls without a token stay open (the
/// default) except status changes.
#[tokio::test]
async fn order_calls_are_bound_to_the_tokens_user() {
    let dir = DataDir::new("owners");
    let shop = Running::start(&dir.0, None).await;
    let ann = token("ann", ROLE_CUSTOMER);
    let bob = token("bob", ROLE_CUSTOMER);
    let admin = admin_token();
    let service = token("cart-service", ROLE_SERVICE);
    let forged = JwtKeys::new(b"not the secret", Duration::from_secs(600))
        .mint("root", "root", ROLE_ADMIN)
        .unwrap();
    let now = shop_common::testing::unix_now();
    let expired = keys()
        .mint_claims(&Claims {
            sub: "ann".into(),
            username: "ann".into(),
            role: ROLE_CUSTOMER.into(),
            iat: now - 120,
            exp: now - 60,
        })
        .unwrap();
    let body = json!({"user_id": "ann", "items": one_item()});
    let create = |token: Option<String>| {
        let body = body.clone();
        let shop = &shop;
        async move {
            shop.0
                .call(Method::POST, "/order-api/orders", token.as_deref(), Some(body))
                .await
        }
    };

    // Creating: the token must name the body's user.
    let (status, order) = create(Some(ann.clone())).await;
    assert_eq!(status, 201, "{order}");
    let id = order["id"].as_str().unwrap().to_string();
    assert_error(create(Some(bob.clone())).await, 403, "forbidden");
    assert_error(create(Some(forged.clone())).await, 401, "unauthorized");
    assert_error(create(Some(expired.clone())).await, 401, "unauthorized");
    assert_error(create(Some("garbage".into())).await, 401, "unauthorized");
    for anyone in [&service, &admin] {
        assert_eq!(create(Some(anyone.clone())).await.0, 201);
    }
    assert_eq!(create(None).await.0, 201, "open without a token by default");

    // Reading one order: its owner, admins and services; nobody else.
    let path = format!("/order-api/orders/{id}");
    for (token, status) in [
        (&ann, 200),
        (&admin, 200),
        (&service, 200),
        (&bob, 403),
        (&forged, 401),
    ] {
        let got = shop.0.call(Method::GET, &path, Some(token), None).await;
        assert_eq!(got.0, status, "{}", got.1);
        if status != 200 {
            assert!(
                got.1["error"].is_string() && got.1["message"].is_string(),
                "{}",
                got.1
            );
        }
    }
    assert_eq!(shop.get(&path).await.0, 200);

    // Listing: the path's user.
    let list = "/order-api/users/ann/orders";
    for (token, status) in [
        (&ann, 200),
        (&admin, 200),
        (&service, 200),
        (&bob, 403),
        (&forged, 401),
    ] {
        let got = shop.0.call(Method::GET, list, Some(token), None).await;
        assert_eq!(got.0, status, "{}", got.1);
    }
    let (_, orders) = shop.0.call(Method::GET, list, Some(&ann), None).await;
    assert_eq!(
        orders.as_array().unwrap().len(),
        4,
        "the refused creates stored nothing: {orders}"
    );

    // Status changes: admins only, token or not, whatever the role of the caller.
    assert_error(shop.set_status_as(&id, PAID, None).await, 401, "unauthorized");
    assert_error(
        shop.set_status_as(&id, PAID, Some(&forged)).await,
        401,
        "unauthorized",
    );
    assert_error(shop.set_status_as(&id, PAID, Some(&ann)).await, 403, "forbidden");
    assert_error(
        shop.set_status_as(&id, PAID, Some(&service)).await,
        403,
        "forbidden",
    );
    assert_eq!(
        history(&shop.order(&id).await),
        [CREATED],
        "refused changes changed nothing"
    );
    let (status, paid) = shop.set_status_as(&id, PAID, Some(&admin)).await;
    assert_eq!((status.as_u16(), &paid["status"]), (200, &json!(PAID)), "{paid}");
    shop.stop().await;
}

/// `SHOP_REQUIRE_AUTH=true`: every order call needs a valid token.
#[tokio::test]
async fn require_auth_makes_a_token_mandatory_on_every_order_call() {
    let dir = DataDir::new("require-auth");
    let shop = Running::start_with(&dir.0, None, true).await;
    let ann = token("ann", ROLE_CUSTOMER);
    let body = json!({"user_id": "ann", "items": one_item()});
    assert_error(
        shop.call(Method::POST, "/order-api/orders", Some(body.clone()))
            .await,
        401,
        "unauthorized",
    );
    let (status, order) = shop
        .0
        .call(Method::POST, "/order-api/orders", Some(&ann), Some(body))
        .await;
    assert_eq!(status, 201, "{order}");
    let path = format!("/order-api/orders/{}", order["id"].as_str().unwrap());
    assert_error(shop.get(&path).await, 401, "unauthorized");
    assert_error(shop.get("/order-api/users/ann/orders").await, 401, "unauthorized");
    // A missing order is not revealed to a caller without a token either.
    assert_error(
        shop.get("/order-api/orders/no-such-order").await,
        401,
        "unauthorized",
    );
    assert_eq!(shop.0.call(Method::GET, &path, Some(&ann), None).await.0, 200);
    let (status, list) = shop
        .0
        .call(Method::GET, "/order-api/users/ann/orders", Some(&ann), None)
        .await;
    assert_eq!((status.as_u16(), list.as_array().map(Vec::len)), (200, Some(1)));
    let (_, config) = shop.get("/debug/config").await;
    assert!(config.to_string().contains("auth.require"), "{config}");
    shop.stop().await;
}

/// `GET /order-api/users/{id}/orders` pages like the product list: `limit` 1 to 100 (default
/// 20), `page` from 1, 422 otherwise, a JSON array newest first.
#[tokio::test]
async fn a_users_orders_are_paged_like_the_product_list() {
    let dir = DataDir::new("pages");
    let shop = Running::start(&dir.0, None).await;
    let mut created = Vec::new();
    for _ in 0..25 {
        created.push(
            shop.create("pager", one_item()).await["id"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    shop.create("other", one_item()).await;
    created.reverse();
    let ids = |query: &str| {
        let shop = &shop;
        let path = format!("/order-api/users/pager/orders{query}");
        async move {
            let (status, list) = shop.get(&path).await;
            assert_eq!(status, 200, "{path}: {list}");
            list.as_array()
                .unwrap_or_else(|| panic!("{path}: an array, not {list}"))
                .iter()
                .map(|o| o["id"].as_str().unwrap().to_string())
                .collect::<Vec<_>>()
        }
    };
    assert_eq!(ids("").await, created[..20], "default: the 20 newest");
    assert_eq!(ids("?page=2").await, created[20..], "page 2 of 20");
    assert!(ids("?page=3").await.is_empty(), "past the end: an empty array");
    assert_eq!(ids("?limit=100").await, created, "all at once");
    let mut paged = Vec::new();
    for page in 1..=3 {
        paged.extend(ids(&format!("?page={page}&limit=10")).await);
    }
    assert_eq!(paged, created, "pages of 10 cover the list once, newest first");
    assert_eq!(ids("?limit=1&page=25").await, created[24..]);
    assert_eq!(
        ids("?page=&limit=").await,
        created[..20],
        "empty values count as absent"
    );
    for bad in [
        "limit=0",
        "limit=101",
        "limit=-1",
        "limit=ten",
        "page=0",
        "page=1.5",
        "page=1000001",
    ] {
        assert_error(
            shop.get(&format!("/order-api/users/pager/orders?{bad}")).await,
            422,
            "invalid_field",
        );
    }
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_gets_one_order_ever_and_none_once_aborted() {
    let dir = DataDir::new("order-checkout");
    let service = Running::start(dir.path(), None).await;
    let token = JwtKeys::new(b"contract-test-secret", Duration::from_secs(600))
        .mint("cart-service", "cart-service", ROLE_SERVICE)
        .unwrap();
    let create = |checkout: &str| json!({"user_id": "ann", "items": one_item(), "checkout_id": checkout});
    let abort = |checkout: &str| format!("/order-api/checkouts/{checkout}/abort");
    let orders_of_ann = || async {
        service
            .call(Method::GET, "/order-api/users/ann/orders", None)
            .await
            .1
    };

    // A retried or timed-out create answers the same order, never a second.
    let (status, first) = service
        .call(Method::POST, "/order-api/orders", Some(create("co-1")))
        .await;
    assert_eq!(status, 201, "{first}");
    assert_eq!(first["checkout_id"], "co-1");
    for _ in 0..3 {
        let (status, again) = service
            .call(Method::POST, "/order-api/orders", Some(create("co-1")))
            .await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again["id"], first["id"]);
    }
    assert_eq!(orders_of_ann().await.as_array().unwrap().len(), 1);

    // Aborting needs a service (or admin) token.
    let (status, _) = service.0.call(Method::POST, &abort("co-1"), None, None).await;
    assert_eq!(status, 401);
    // Aborting a checkout whose order exists answers the order: the cart goes forward.
    let (status, body) = service
        .0
        .call(Method::POST, &abort("co-1"), Some(&token), None)
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["aborted"].clone(), body["order"]["id"].clone()),
        (json!(false), first["id"].clone())
    );

    // Aborted first, the checkout never gets an order; the abort repeats harmlessly.
    for _ in 0..2 {
        let (status, body) = service
            .0
            .call(Method::POST, &abort("co-2"), Some(&token), None)
            .await;
        assert_eq!(
            (status.as_u16(), body["aborted"].clone()),
            (200, json!(true)),
            "{body}"
        );
    }
    assert_error(
        service
            .call(Method::POST, "/order-api/orders", Some(create("co-2")))
            .await,
        409,
        "checkout_aborted",
    );
    assert_eq!(orders_of_ann().await.as_array().unwrap().len(), 1);
    // A bad checkout id is refused and creates nothing.
    assert_error(
        service
            .call(Method::POST, "/order-api/orders", Some(create("a b")))
            .await,
        422,
        "invalid_field",
    );
    assert_eq!(orders_of_ann().await.as_array().unwrap().len(), 1);

    // Kept across a restart.
    service.stop().await;
    let service = Running::start(dir.path(), None).await;
    let (status, again) = service
        .call(Method::POST, "/order-api/orders", Some(create("co-1")))
        .await;
    assert_eq!((status.as_u16(), again["id"].clone()), (200, first["id"].clone()));
    assert_error(
        service
            .call(Method::POST, "/order-api/orders", Some(create("co-2")))
            .await,
        409,
        "checkout_aborted",
    );
    service.stop().await;
}
