//! Contract tests of the cart service (`shop-api.md`, cart section) with the real backend and
//! the real order service running in-process on 127.0.0.1:0, each with a temporary data
//! directory and a fresh registry; every call and failure is checked through real HTTP.

use std::path::Path;
use std::time::Duration;

use obskit::metrics::Registry;
use reqwest::{Client, Method, StatusCode};
use serde_json::{json, Value};
use shop_common::auth::{JwtKeys, ROLE_ADMIN, ROLE_CUSTOMER, ROLE_SERVICE};
use shop_common::service::{Service as _, ServiceConfig};
use shop_common::store::{now_seconds, CartItem, QueryMetrics, Store};
use shop_common::testing::{assert_error, read, sample, RunningService as Service, TempDataDir as DataDir};

const SECRET: &[u8] = b"cart-contract-secret";

fn keys() -> JwtKeys {
    JwtKeys::new(SECRET, Duration::from_secs(600))
}

fn admin_token() -> String {
    keys().mint("admin-1", "root", ROLE_ADMIN).unwrap()
}

async fn start_backend(dir: &Path) -> Service {
    let config = ServiceConfig::local(&backend::Backend::SPEC, dir, keys());
    Service::start("the backend", |listener, shutdown| {
        backend::run(config, listener, shutdown)
    })
    .await
}

async fn start_order(dir: &Path, backend_url: &str, require_auth: bool) -> Service {
    let mut base = ServiceConfig::local(&order::Orders::SPEC, dir, keys());
    // Where a cancelled order's stock goes back.
    base.upstreams.backend = backend_url.to_string();
    let config = order::Config {
        base,
        require_auth,
        // Orders stay CREATED: the lifecycle is the order service's business, not this test's.
        lifecycle_step: None,
    };
    Service::start("the order service", |listener, shutdown| {
        order::run(config, listener, shutdown)
    })
    .await
}

async fn start_cart(dir: &Path, backend_url: &str, order_url: &str, abandon_after: Duration) -> Service {
    start_cart_with(dir, backend_url, order_url, abandon_after, false).await
}

async fn start_cart_with(
    dir: &Path,
    backend_url: &str,
    order_url: &str,
    abandon_after: Duration,
    require_auth: bool,
) -> Service {
    let mut base = ServiceConfig::local(&cart::Cart::SPEC, dir, keys());
    base.upstreams.backend = backend_url.to_string();
    base.upstreams.order = order_url.to_string();
    let config = cart::Config {
        base,
        abandon_after,
        require_auth,
    };
    Service::start("the cart", |listener, shutdown| {
        cart::run(config, listener, shutdown)
    })
    .await
}

/// The three services on one data directory (one database file each). A test may stop one
/// and take it out (`shop.order.take()`), or swap in another cart.
struct Shop {
    backend: Option<Service>,
    order: Option<Service>,
    cart: Option<Service>,
    client: Client,
}

impl Shop {
    async fn start(dir: &Path) -> Shop {
        Shop::start_with(dir, Duration::from_secs(1800)).await
    }

    async fn start_with(dir: &Path, abandon_after: Duration) -> Shop {
        Shop::start_full(dir, abandon_after, false).await
    }

    /// The shop with `SHOP_REQUIRE_AUTH` as `require_auth` for the cart and the order service.
    async fn start_full(dir: &Path, abandon_after: Duration, require_auth: bool) -> Shop {
        let backend = start_backend(dir).await;
        let order = start_order(dir, &backend.base, require_auth).await;
        let cart = start_cart_with(dir, &backend.base, &order.base, abandon_after, require_auth).await;
        let client = Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        Shop {
            backend: Some(backend),
            order: Some(order),
            cart: Some(cart),
            client,
        }
    }

    fn backend(&self) -> &Service {
        self.backend.as_ref().expect("the backend runs")
    }

    fn order(&self) -> &Service {
        self.order.as_ref().expect("the order service runs")
    }

    fn cart(&self) -> &Service {
        self.cart.as_ref().expect("the cart runs")
    }

    async fn stop(mut self) {
        for service in [self.cart.take(), self.order.take(), self.backend.take()]
            .into_iter()
            .flatten()
        {
            service.stop().await;
        }
    }

    async fn call(
        &self,
        method: Method,
        url: String,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        shop_common::testing::call(&self.client, method, url, token, body).await
    }

    async fn cart_call(&self, method: Method, path: &str, body: Option<Value>) -> (StatusCode, Value) {
        self.call(method, self.cart().url(path), None, body).await
    }

    /// Each of the four cart calls on `user`'s cart with `token`: the statuses of get, add
    /// (one unit of `product`), update (to one unit) and checkout, in that order.
    async fn every_call_as(&self, user: &str, product: &str, token: Option<&str>) -> Vec<u16> {
        let line = json!({"product_id": product, "quantity": 1});
        let calls = [
            (Method::GET, format!("/cart-api/cart/{user}"), None),
            (
                Method::POST,
                format!("/cart-api/cart/{user}/add"),
                Some(line.clone()),
            ),
            (Method::PUT, format!("/cart-api/cart/{user}/update"), Some(line)),
            (Method::POST, format!("/cart-api/cart/{user}/checkout"), None),
        ];
        let mut statuses = Vec::new();
        for (method, path, body) in calls {
            let (status, answer) = self.call(method, self.cart().url(&path), token, body).await;
            if !status.is_success() {
                // The contract's error shape, whatever the refusal.
                assert!(
                    answer["error"].is_string() && answer["message"].is_string(),
                    "{answer}"
                );
            }
            statuses.push(status.as_u16());
        }
        statuses
    }

    async fn add(&self, user: &str, product: &str, quantity: i64) -> (StatusCode, Value) {
        let body = json!({"product_id": product, "quantity": quantity});
        self.cart_call(Method::POST, &format!("/cart-api/cart/{user}/add"), Some(body))
            .await
    }

    async fn update(&self, user: &str, product: &str, quantity: i64) -> (StatusCode, Value) {
        let body = json!({"product_id": product, "quantity": quantity});
        self.cart_call(Method::PUT, &format!("/cart-api/cart/{user}/update"), Some(body))
            .await
    }

    async fn cart_of(&self, user: &str) -> Value {
        let (status, cart) = self
            .cart_call(Method::GET, &format!("/cart-api/cart/{user}"), None)
            .await;
        assert_eq!(status, 200, "{cart}");
        cart
    }

    async fn checkout(&self, user: &str) -> (StatusCode, Value) {
        self.cart_call(Method::POST, &format!("/cart-api/cart/{user}/checkout"), None)
            .await
    }

    /// Creates a product of category `Gadgets` with `stock` units; its id.
    async fn product(&self, name: &str, price: f64, stock: i64) -> String {
        let body = json!({"name": name, "price": price, "category": "Gadgets", "stock": stock});
        let (status, created) = self
            .call(
                Method::POST,
                self.backend().url("/api/products"),
                Some(&admin_token()),
                Some(body),
            )
            .await;
        assert_eq!(status, 201, "{created}");
        created["id"].as_str().unwrap().to_string()
    }

    async fn stock(&self, id: &str) -> i64 {
        let (status, product) = self
            .call(
                Method::GET,
                self.backend().url(&format!("/api/products/{id}")),
                None,
                None,
            )
            .await;
        assert_eq!(status, 200, "{product}");
        product["stock"].as_i64().unwrap()
    }

    async fn set_stock(&self, id: &str, stock: i64) {
        let (status, body) = self
            .call(
                Method::PUT,
                self.backend().url(&format!("/api/products/{id}")),
                Some(&admin_token()),
                Some(json!({ "stock": stock })),
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }

    async fn metrics(&self) -> String {
        metrics_of(&self.client, self.cart()).await
    }
}

async fn metrics_of(client: &Client, service: &Service) -> String {
    shop_common::testing::text(client, service.url("/metrics")).await
}

/// The quantities of a cart, by product id.
fn quantities(cart: &Value) -> Vec<(String, i64)> {
    cart["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| {
            (
                i["product_id"].as_str().unwrap().to_string(),
                i["quantity"].as_i64().unwrap(),
            )
        })
        .collect()
}

/// A second handle on the cart's database, as another process would open it.
async fn cart_store(dir: &Path) -> Store {
    Store::open_sqlite(
        &dir.join("cart.db"),
        QueryMetrics::declare(&Registry::new()).unwrap(),
    )
    .await
    .unwrap()
}

#[tokio::test]
async fn cart_calls_and_their_failures() {
    let dir = DataDir::new("calls");
    let shop = Shop::start(&dir.0).await;
    let widget = shop.product("Widget", 2.5, 5).await;
    let gizmo = shop.product("Gizmo", 10.0, 100).await;

    // An empty cart is a cart.
    let cart = shop.cart_of("ann").await;
    assert_eq!(cart, json!({"user_id": "ann", "items": [], "total": 0.0}));

    // Add: 200 with the cart, name and price from the backend; adding again adds up.
    let (status, cart) = shop.add("ann", &widget, 2).await;
    assert_eq!(status, 200, "{cart}");
    assert_eq!(
        cart,
        json!({"user_id": "ann", "items": [
            {"product_id": widget, "name": "Widget", "price": 2.5, "quantity": 2}
        ], "total": 5.0})
    );
    let (status, cart) = shop.add("ann", &widget, 1).await;
    assert_eq!(status, 200);
    assert_eq!(quantities(&cart), [(widget.clone(), 3)]);
    let (status, cart) = shop.add("ann", &gizmo, 4).await;
    assert_eq!(status, 200);
    assert_eq!(cart["total"], 47.5);
    assert_eq!(shop.cart_of("ann").await, cart);

    // 409 when the line would exceed the stock (3 in the cart + 3 > 5); nothing changes.
    assert_error(shop.add("ann", &widget, 3).await, 409, "insufficient_stock");
    // 404 for a product the backend does not know, whatever its id looks like.
    for unknown in ["no-such-product", "../categories", "a/b?c#d", "..", "%2e%2e"] {
        let got = shop.add("ann", unknown, 1).await;
        assert_error(got, 404, "not_found");
    }
    assert_eq!(shop.cart_of("ann").await, cart);

    // 422: quantities below 1 or absurd, missing or mistyped fields, empty ids.
    let add_path = "/cart-api/cart/ann/add";
    for body in [
        json!({"product_id": widget, "quantity": 0}),
        json!({"product_id": widget, "quantity": -1}),
        json!({"product_id": widget, "quantity": 10_001}),
        json!({"product_id": widget, "quantity": 1e12}),
        json!({"product_id": widget, "quantity": "two"}),
        json!({"product_id": widget, "quantity": 1.5}),
        json!({"product_id": widget}),
        json!({"quantity": 1}),
        json!({"product_id": "", "quantity": 1}),
        json!({"product_id": "x".repeat(200), "quantity": 1}),
        json!([1]),
    ] {
        let got = shop.cart_call(Method::POST, add_path, Some(body.clone())).await;
        assert_eq!(got.0, 422, "{body} -> {:?}", got.1);
        assert_error(got, 422, "invalid_field");
    }
    // 400 for bodies that are not JSON, 413 past the cap.
    for (body, status, code) in [
        (b"{\"product_id\": ".to_vec(), 400, "malformed_json"),
        (b"not json".to_vec(), 400, "malformed_json"),
        (vec![b' '; 100 * 1024], 413, "payload_too_large"),
    ] {
        let response = shop
            .client
            .post(shop.cart().url(add_path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_error(read(response).await, status, code);
    }

    // Update: sets the quantity; 409 past the stock, 404 for a line not in the cart, 422.
    let (status, cart) = shop.update("ann", &widget, 5).await;
    assert_eq!(status, 200, "{cart}");
    let mut expected = vec![(widget.clone(), 5), (gizmo.clone(), 4)];
    expected.sort();
    assert_eq!(quantities(&cart), expected, "lines are sorted by product id");
    assert_error(shop.update("ann", &widget, 6).await, 409, "insufficient_stock");
    assert_error(shop.update("bob", &widget, 1).await, 404, "not_found");
    assert_error(shop.update("ann", "no-such-product", 1).await, 404, "not_found");
    for quantity in [-1, 10_001] {
        assert_error(shop.update("ann", &widget, quantity).await, 422, "invalid_field");
    }
    // 0 removes the line.
    let (status, cart) = shop.update("ann", &widget, 0).await;
    assert_eq!(status, 200);
    assert_eq!(quantities(&cart), [(gizmo.clone(), 4)]);
    assert_eq!(cart["total"], 40.0);

    // Checkout of an empty cart: 400.
    assert_error(shop.checkout("bob").await, 400, "empty_cart");

    // A user id outside the bounds: 422 on every call.
    for user in ["a%20b", "semi;colon", &"u".repeat(65), "%C3%A9"] {
        for (method, suffix, body) in [
            (Method::GET, "", None),
            (
                Method::POST,
                "/add",
                Some(json!({"product_id": gizmo, "quantity": 1})),
            ),
            (
                Method::PUT,
                "/update",
                Some(json!({"product_id": gizmo, "quantity": 1})),
            ),
            (Method::POST, "/checkout", None),
        ] {
            let path = format!("/cart-api/cart/{user}{suffix}");
            let got = shop.cart_call(method, &path, body).await;
            assert_eq!(got.0, 422, "{path} -> {:?}", got.1);
            assert_error(got, 422, "invalid_field");
        }
    }
    assert_eq!(shop.cart_of("A-z_0.9").await["items"], json!([]));

    // Business metrics: units added by category; no identifier is a label.
    let text = shop.metrics().await;
    assert_eq!(
        sample(&text, r#"cart_items_added_total{category="Gadgets"}"#),
        Some(7.0),
        "2 + 1 widgets and 4 gizmos:\n{text}"
    );
    assert!(
        !text.contains(&widget) && !text.contains("ann"),
        "identifiers never become labels"
    );
    for function in ["get_cart", "add_item", "update_item"] {
        let series =
            format!(r#"function_calls_total{{function="{function}",module="cart::handlers",result="ok"}}"#);
        assert!(
            sample(&text, &series).is_some_and(|v| v >= 1.0),
            "{series} missing"
        );
    }
    shop.stop().await;
}

#[tokio::test]
async fn checkout_creates_the_order_empties_the_cart_and_takes_the_stock() {
    let dir = DataDir::new("checkout");
    let shop = Shop::start(&dir.0).await;
    let widget = shop.product("Widget", 2.5, 5).await;
    let gizmo = shop.product("Gizmo", 100.0, 10).await;
    assert_eq!(shop.add("ann", &widget, 2).await.0, 200);
    assert_eq!(shop.add("ann", &gizmo, 3).await.0, 200);

    let (status, order) = shop.checkout("ann").await;
    assert_eq!(status, 201, "{order}");
    assert_eq!(order["user_id"], "ann");
    assert_eq!(order["status"], "CREATED");
    assert_eq!(order["total"], 305.0);
    let mut items: Vec<Value> = order["items"].as_array().unwrap().clone();
    items.sort_by_key(|i| i["name"].as_str().unwrap().to_string());
    assert_eq!(
        items,
        [
            json!({"product_id": gizmo, "name": "Gizmo", "price": 100.0, "quantity": 3}),
            json!({"product_id": widget, "name": "Widget", "price": 2.5, "quantity": 2}),
        ]
    );
    // The order exists at the order service.
    let id = order["id"].as_str().unwrap();
    let (status, stored) = shop
        .call(
            Method::GET,
            shop.order().url(&format!("/order-api/orders/{id}")),
            None,
            None,
        )
        .await;
    assert_eq!((status.as_u16(), &stored["id"]), (200, &order["id"]), "{stored}");
    // The cart is empty, its activity forgotten, the stock taken.
    assert_eq!(shop.cart_of("ann").await["items"], json!([]));
    assert_eq!(cart_store(&dir.0).await.cart_activity("ann").await.unwrap(), None);
    assert_eq!((shop.stock(&widget).await, shop.stock(&gizmo).await), (3, 7));
    // A second checkout finds the cart empty.
    assert_error(shop.checkout("ann").await, 400, "empty_cart");

    // 409 when the stock changed since the cart was filled: the cart is kept, nothing taken.
    assert_eq!(shop.add("bob", &widget, 3).await.0, 200);
    assert_eq!(shop.add("bob", &gizmo, 1).await.0, 200);
    shop.set_stock(&widget, 2).await;
    assert_error(shop.checkout("bob").await, 409, "stock_changed");
    let bob = shop.cart_of("bob").await;
    assert_eq!(quantities(&bob).len(), 2);
    assert_eq!((shop.stock(&widget).await, shop.stock(&gizmo).await), (2, 7));
    // A product deleted since: 409 as well.
    let gone = shop.product("Gone", 1.0, 5).await;
    assert_eq!(shop.add("cid", &gone, 1).await.0, 200);
    let (status, _) = shop
        .call(
            Method::DELETE,
            shop.backend().url(&format!("/api/products/{gone}")),
            Some(&admin_token()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    assert_error(shop.checkout("cid").await, 409, "stock_changed");
    assert_eq!(quantities(&shop.cart_of("cid").await), [(gone.clone(), 1)]);
    // Removing the line of a deleted product needs no backend.
    assert_eq!(shop.update("cid", &gone, 0).await.0, 200);

    // Business metrics: one checkout of 305.
    let text = shop.metrics().await;
    for (series, value) in [
        ("cart_checkout_total", 1.0),
        ("cart_total_value_count", 1.0),
        ("cart_total_value_sum", 305.0),
        (r#"cart_total_value_bucket{le="200"}"#, 0.0),
        (r#"cart_total_value_bucket{le="500"}"#, 1.0),
        (r#"cart_abandonment_total{stage="browsing"}"#, 0.0),
        (r#"cart_abandonment_total{stage="checkout"}"#, 0.0),
    ] {
        assert_eq!(sample(&text, series), Some(value), "{series} in\n{text}");
    }
    // The checkout objective's labels, as autometrics' SLO rules read them (shop_common::objectives).
    let series = r#"function_calls_total{function="checkout",module="cart::handlers",objective_name="checkout",objective_percentile="99.9",result="ok"}"#;
    // Function metrics are process-wide: other tests' checkouts count there too.
    assert!(sample(&text, series).is_some_and(|v| v >= 1.0), "{series}");
    let within = r#"function_calls_duration_seconds_bucket{function="checkout",module="cart::handlers",objective_latency_threshold="1",objective_name="checkout",objective_percentile="99",le="1"}"#;
    assert!(sample(&text, within).is_some_and(|v| v >= 1.0), "{within}");
    shop.stop().await;
}

#[tokio::test]
async fn failures_of_the_other_services_keep_the_cart_and_the_stock() {
    let dir = DataDir::new("down");
    let shop = Shop::start(&dir.0).await;
    let widget = shop.product("Widget", 2.5, 5).await;
    assert_eq!(shop.add("ann", &widget, 2).await.0, 200);
    let before = shop.cart_of("ann").await;

    // An order service answering something else than an order (here the backend, which has no
    // such route): 502, the reservation given back.
    let backend_url = shop.backend().base.clone();
    let confused = start_cart(&dir.0, &backend_url, &backend_url, Duration::from_secs(1800)).await;
    let response = shop
        .client
        .post(confused.url("/cart-api/cart/ann/checkout"))
        .send()
        .await
        .unwrap();
    assert_error(read(response).await, 502, "bad_gateway");
    confused.stop().await;
    assert_eq!(shop.cart_of("ann").await, before);
    assert_eq!(shop.stock(&widget).await, 5);

    // The order service stopped: 503, the cart kept, the stock given back.
    let mut shop = shop;
    shop.order.take().unwrap().stop().await;
    assert_error(shop.checkout("ann").await, 503, "order_service_unavailable");
    assert_eq!(shop.cart_of("ann").await, before);
    assert_eq!(shop.stock(&widget).await, 5);
    // The dependency shows in the health report, which degrades rather than fails.
    let (status, health) = shop
        .call(Method::GET, shop.cart().url("/health"), None, None)
        .await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["status"], "degraded", "{health}");

    // The backend stopped too: adds, updates and checkouts answer 503; the cart is still there.
    shop.backend.take().unwrap().stop().await;
    assert_error(shop.add("ann", &widget, 1).await, 503, "backend_unavailable");
    assert_error(shop.update("ann", &widget, 1).await, 503, "backend_unavailable");
    assert_error(shop.checkout("ann").await, 503, "backend_unavailable");
    assert_eq!(shop.cart_of("ann").await, before);
    // A 5xx answer is an error of its handler (`error_if = server_failed`): the 502 and the two
    // 503 checkouts above (other tests' checkouts share these process-wide series, but their
    // 4xx answers are not errors), and the refused add and update.
    let text = shop.metrics().await;
    // Whatever other labels the series has (checkout's objective's).
    let errors = |function: &str| -> f64 {
        let head = format!(r#"function_calls_total{{function="{function}",module="cart::handlers","#);
        text.lines()
            .filter(|l| l.starts_with(&head) && l.contains(r#"result="error""#))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    assert!(
        errors("checkout") >= 3.0,
        "checkout errors: {}\n{text}",
        errors("checkout")
    );
    assert!(
        errors("add_item") >= 1.0 && errors("update_item") >= 1.0,
        "{text}"
    );
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_checkouts_compete_for_the_last_ten_units() {
    let dir = DataDir::new("race");
    let shop = Shop::start(&dir.0).await;
    let scarce = shop.product("Scarce", 7.0, 10).await;
    let users: Vec<String> = (0..50).map(|i| format!("racer-{i}")).collect();
    for user in &users {
        assert_eq!(
            shop.add(user, &scarce, 1).await.0,
            200,
            "one unit fits for everyone"
        );
    }

    let shop = std::sync::Arc::new(shop);
    let tasks: Vec<_> = users
        .iter()
        .map(|user| {
            let shop = shop.clone();
            let user = user.clone();
            tokio::spawn(async move {
                let got = shop.checkout(&user).await;
                (user, got)
            })
        })
        .collect();
    let (mut winners, mut losers) = (Vec::new(), Vec::new());
    for task in tasks {
        let (user, (status, body)) = task.await.unwrap();
        match status.as_u16() {
            201 => winners.push(user),
            409 => {
                assert_eq!(body["error"], "stock_changed", "{body}");
                losers.push(user)
            }
            other => panic!("{user}: unexpected {other} {body}"),
        }
    }
    assert_eq!((winners.len(), losers.len()), (10, 40));
    assert_eq!(shop.stock(&scarce).await, 0);
    for user in &winners {
        assert_eq!(shop.cart_of(user).await["items"], json!([]));
        let (status, orders) = shop
            .call(
                Method::GET,
                shop.order().url(&format!("/order-api/users/{user}/orders")),
                None,
                None,
            )
            .await;
        assert_eq!(
            (status.as_u16(), orders.as_array().map(Vec::len)),
            (200, Some(1)),
            "{orders}"
        );
    }
    for user in &losers {
        assert_eq!(quantities(&shop.cart_of(user).await), [(scarce.clone(), 1)]);
        let (_, orders) = shop
            .call(
                Method::GET,
                shop.order().url(&format!("/order-api/users/{user}/orders")),
                None,
                None,
            )
            .await;
        assert_eq!(orders, json!([]));
    }
    let text = shop.metrics().await;
    assert_eq!(sample(&text, "cart_checkout_total"), Some(10.0));
    let shop = std::sync::Arc::into_inner(shop).expect("the tasks are done");
    shop.stop().await;
}

/// Polls the cart's `/metrics` until `series` reaches `value` (the sweeper runs on its own
/// clock); panics after a minute.
async fn wait_for(client: &Client, cart: &Service, series: &str, value: f64) -> String {
    for _ in 0..1200 {
        let text = metrics_of(client, cart).await;
        if sample(&text, series).is_some_and(|v| v >= value) {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{series} never reached {value}");
}

#[tokio::test]
async fn abandoned_carts_are_counted_once_by_stage_across_restarts() {
    let dir = DataDir::new("abandon");
    let line = |quantity| CartItem {
        product_id: "p-seeded".into(),
        name: "Seeded".into(),
        price: 3.0,
        quantity,
    };
    // Carts left by an earlier run, written as that run would have: idle for an hour, one at
    // the checkout stage, and one already counted by that run.
    {
        let store = cart_store(&dir.0).await;
        let hour_ago = now_seconds() - 3600.0;
        store.set_cart_item("counted", line(1)).await.unwrap();
        store.touch_cart("counted", hour_ago, false).await.unwrap();
        assert_eq!(
            store
                .claim_abandoned_carts(now_seconds(), 10)
                .await
                .unwrap()
                .len(),
            1
        );
        for (user, attempted) in [("browser", false), ("hesitant", true)] {
            store.set_cart_item(user, line(2)).await.unwrap();
            store.touch_cart(user, hour_ago, attempted).await.unwrap();
        }
    }

    let abandon_after = Duration::from_secs(1);
    let shop = Shop::start_with(&dir.0, abandon_after).await;
    let browsing = r#"cart_abandonment_total{stage="browsing"}"#;
    let checkout = r#"cart_abandonment_total{stage="checkout"}"#;
    let text = wait_for(&shop.client, shop.cart(), checkout, 1.0).await;
    assert_eq!(sample(&text, checkout), Some(1.0));

    // A cart filled now, then left alone past `abandon_after`.
    let widget = shop.product("Widget", 2.5, 50).await;
    assert_eq!(shop.add("idler", &widget, 1).await.0, 200);
    let text = wait_for(&shop.client, shop.cart(), browsing, 2.0).await;
    // By now the sweeper ran many times: each idle cart was counted once, the one counted by
    // the earlier run not at all.
    assert_eq!(
        (sample(&text, browsing), sample(&text, checkout)),
        (Some(2.0), Some(1.0)),
        "{text}"
    );

    // A restart keeps the carts and does not count them again.
    let mut shop = shop;
    shop.cart.take().unwrap().stop().await;
    let cart = start_cart(&dir.0, &shop.backend().base, &shop.order().base, abandon_after).await;
    shop.cart = Some(cart);
    assert_eq!(
        quantities(&shop.cart_of("browser").await),
        [("p-seeded".to_string(), 2)]
    );
    assert_eq!(quantities(&shop.cart_of("idler").await), [(widget.clone(), 1)]);
    // New activity starts a new idle period, counted once more; the old ones stay counted.
    assert_eq!(shop.add("idler", &widget, 1).await.0, 200);
    let text = wait_for(&shop.client, shop.cart(), browsing, 1.0).await;
    // The one counted is the idler's new idle period, not an old cart counted again.
    let idler = cart_store(&dir.0)
        .await
        .cart_activity("idler")
        .await
        .unwrap()
        .unwrap();
    assert!(idler.abandoned, "{idler:?}");
    assert_eq!(
        (sample(&text, browsing), sample(&text, checkout)),
        (Some(1.0), Some(0.0)),
        "{text}"
    );
    shop.stop().await;
}

/// A token on a cart call must be valid and name the path's user; admins and services act for
/// anyone; without a token the cart stays open (the default). A refused call changes nothing.
#[tokio::test]
async fn cart_calls_are_bound_to_the_tokens_user() {
    let dir = DataDir::new("owners");
    let shop = Shop::start(&dir.0).await;
    let widget = shop.product("Widget", 2.5, 100).await;
    let ann = keys().mint("ann", "ann", ROLE_CUSTOMER).unwrap();
    let bob = keys().mint("bob", "bob", ROLE_CUSTOMER).unwrap();
    let service = keys().mint("cart-service", "cart-service", ROLE_SERVICE).unwrap();
    let forged = JwtKeys::new(b"not the secret", Duration::from_secs(600))
        .mint("ann", "ann", ROLE_ADMIN)
        .unwrap();

    // Another user's token, or a forged one: every call refused, nothing changed.
    assert_eq!(shop.add("ann", &widget, 2).await.0, 200, "open without a token");
    assert_eq!(shop.every_call_as("ann", &widget, Some(&bob)).await, [403; 4]);
    assert_eq!(shop.every_call_as("ann", &widget, Some(&forged)).await, [401; 4]);
    assert_eq!(
        shop.every_call_as("ann", &widget, Some("not.a.token")).await,
        [401; 4]
    );
    assert_eq!(quantities(&shop.cart_of("ann").await), [(widget.clone(), 2)]);
    assert_eq!(shop.stock(&widget).await, 100, "no refused checkout took stock");

    // The owner, an admin and a service: every call goes through (the checkout's order is
    // created with the cart's own service token, for the path's user).
    for (who, token) in [("ann", &ann), ("bob", &admin_token()), ("carl", &service)] {
        assert_eq!(
            shop.every_call_as(who, &widget, Some(token)).await,
            [200, 200, 200, 201],
            "{who}"
        );
    }
    assert_eq!(shop.stock(&widget).await, 97);
    let (status, orders) = shop
        .call(
            Method::GET,
            shop.order().url("/order-api/users/ann/orders"),
            Some(&ann),
            None,
        )
        .await;
    assert_eq!(status, 200, "{orders}");
    assert_eq!(orders[0]["user_id"], "ann");
    assert_eq!(
        orders[0]["items"][0]["quantity"], 1,
        "update set the line to one unit"
    );
    shop.stop().await;
}

/// `SHOP_REQUIRE_AUTH=true` on the cart and the order service: no cart call without a token,
/// and a checkout with one still reaches the order service (with the cart's service token).
#[tokio::test]
async fn require_auth_makes_a_token_mandatory_on_every_cart_call() {
    let dir = DataDir::new("require-auth");
    let shop = Shop::start_full(&dir.0, Duration::from_secs(1800), true).await;
    let widget = shop.product("Widget", 2.5, 10).await;
    let ann = keys().mint("ann", "ann", ROLE_CUSTOMER).unwrap();
    assert_eq!(shop.every_call_as("ann", &widget, None).await, [401; 4]);
    assert_eq!(shop.stock(&widget).await, 10);
    assert_eq!(
        shop.every_call_as("ann", &widget, Some(&ann)).await,
        [200, 200, 200, 201]
    );
    assert_eq!(shop.stock(&widget).await, 9);
    let (_, config) = shop
        .call(Method::GET, shop.cart().url("/debug/config"), None, None)
        .await;
    assert!(config.to_string().contains("auth.require"), "{config}");
    shop.stop().await;
}

/// Polls `probe` until it holds (a bound against hanging, not a timing assertion).
async fn eventually<F, Fut>(what: &str, mut probe: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while !probe().await {
        assert!(std::time::Instant::now() < deadline, "{what}: not within 60 s");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkout_runs_on_when_its_client_hangs_up_and_a_cancel_gives_the_stock_back_once() {
    let dir = DataDir::new("saga");
    let shop = Shop::start(&dir.0).await;
    let widget = shop.product("Widget", 3.0, 10).await;
    assert_eq!(shop.add("ann", &widget, 4).await.0, 200);

    // The client sends the whole request and hangs up as soon as the stock is reserved (the
    // checkout is under way; on a fast machine it may be finished already): the request's
    // future is dropped, and the checkout's task runs on. The faults test of the shop cuts
    // checkouts mid-way with real processes.
    {
        use tokio::io::AsyncWriteExt;
        let addr = shop.cart().base.trim_start_matches("http://").to_string();
        let mut socket = tokio::net::TcpStream::connect(&addr).await.unwrap();
        let head =
            format!("POST /cart-api/cart/ann/checkout HTTP/1.1\r\nhost: {addr}\r\ncontent-length: 0\r\n\r\n");
        socket.write_all(head.as_bytes()).await.unwrap();
        socket.flush().await.unwrap();
        eventually("the reservation", || async { shop.stock(&widget).await < 10 }).await;
        drop(socket);
    }
    let orders_of = |user: &'static str| {
        let shop = &shop;
        async move {
            let url = shop.order().url(&format!("/order-api/users/{user}/orders"));
            shop.call(Method::GET, url, None, None).await.1
        }
    };
    eventually("the order of a client that hung up", || async {
        orders_of("ann").await.as_array().is_some_and(|o| o.len() == 1)
            && quantities(&shop.cart_of("ann").await).is_empty()
    })
    .await;
    assert_eq!(shop.stock(&widget).await, 6);
    // Asked again, the cart is empty: no second order.
    assert_error(shop.checkout("ann").await, 400, "empty_cart");
    let order = orders_of("ann").await[0].clone();
    assert!(order["checkout_id"].is_string(), "{order}");

    // Cancelled, the order gives its 4 units back, once (a second cancel is refused).
    let status_url = shop.order().url(&format!(
        "/order-api/orders/{}/status",
        order["id"].as_str().unwrap()
    ));
    let cancel = Some(json!({"status": "CANCELLED"}));
    let (status, body) = shop
        .call(
            Method::PUT,
            status_url.clone(),
            Some(&admin_token()),
            cancel.clone(),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    eventually("the cancelled order's stock back", || async {
        shop.stock(&widget).await == 10
    })
    .await;
    let (status, _) = shop
        .call(Method::PUT, status_url, Some(&admin_token()), cancel)
        .await;
    assert_eq!(status, 409);
    // A pass of the restock task later, still exactly the units once.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(shop.stock(&widget).await, 10);
    shop.stop().await;
}
