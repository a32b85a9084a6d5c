//! Contract tests of the backend (`shop-api.md`, backend section): the service runs in-process
//! on 127.0.0.1:0 with a temporary data directory, and every call and every listed failure is
//! checked through real HTTP.

use std::ops::Deref;
use std::path::Path;
use std::time::Duration;

use obskit::metrics::Registry;
use reqwest::Method;
use serde_json::{json, Value};
use shop_common::auth::{Claims, JwtKeys, ROLE_ADMIN, ROLE_CUSTOMER, ROLE_SERVICE};
use shop_common::service::{Service, ServiceConfig};
use shop_common::store::{QueryMetrics, Store, StoreError};
use shop_common::testing::{assert_error, sample, unix_now, RunningService, TempDataDir as DataDir};

const SECRET: &[u8] = b"contract-test-secret";

fn keys() -> JwtKeys {
    JwtKeys::new(SECRET, Duration::from_secs(600))
}

fn admin_token() -> String {
    keys().mint("admin-1", "root", ROLE_ADMIN).unwrap()
}

fn customer_token() -> String {
    keys().mint("user-1", "ann", ROLE_CUSTOMER).unwrap()
}

/// A backend running in this process; the calls are [`RunningService`]'s.
struct Running(RunningService);

impl Deref for Running {
    type Target = RunningService;

    fn deref(&self) -> &RunningService {
        &self.0
    }
}

impl Running {
    async fn start(data_dir: &Path) -> Running {
        let config = ServiceConfig::local(&backend::Backend::SPEC, data_dir, keys());
        Running(
            RunningService::start("the backend", |listener, shutdown| {
                backend::run(config, listener, shutdown)
            })
            .await,
        )
    }

    async fn stop(self) {
        self.0.stop().await;
    }
}

fn new_product() -> Value {
    json!({"name": "Contract Widget", "description": "made in a test", "price": 12.5, "category": "Gadgets", "stock": 10})
}

#[tokio::test]
async fn catalogue_reads() {
    let dir = DataDir::new("reads");
    let shop = Running::start(&dir.0).await;

    let (status, categories) = shop.get("/api/categories").await;
    assert_eq!(status, 200);
    let categories: Vec<String> = serde_json::from_value(categories).unwrap();
    assert!(categories.len() >= 4, "{categories:?}");

    let (status, products) = shop.get("/api/products").await;
    assert_eq!(status, 200);
    let products = products.as_array().unwrap().clone();
    assert_eq!(products.len(), 20, "limit defaults to 20");
    for key in ["id", "name", "description", "price", "category", "stock"] {
        assert!(products[0].get(key).is_some(), "{key} in {:?}", products[0]);
    }
    assert!(products.iter().all(|p| p["stock"].as_i64().unwrap() >= 1000));

    let category = &categories[0];
    let (status, in_category) = shop
        .get(&format!("/api/products?category={category}&limit=100"))
        .await;
    assert_eq!(status, 200);
    let in_category = in_category.as_array().unwrap();
    assert!(!in_category.is_empty());
    assert!(in_category.iter().all(|p| p["category"] == category.as_str()));

    let (_, page1) = shop.get("/api/products?limit=5&page=1").await;
    let (_, page2) = shop.get("/api/products?limit=5&page=2").await;
    assert_eq!(page1.as_array().unwrap().len(), 5);
    assert_eq!(page2.as_array().unwrap().len(), 5);
    assert_ne!(page1[0]["id"], page2[0]["id"]);
    let (status, far) = shop.get("/api/products?page=1000").await;
    assert_eq!((status.as_u16(), far), (200, json!([])));
    let (status, none) = shop.get("/api/products?category=No%20Such%20Thing").await;
    assert_eq!((status.as_u16(), none), (200, json!([])));
    let (status, max) = shop.get("/api/products?limit=100").await;
    assert_eq!(status, 200);
    assert!(max.as_array().unwrap().len() > 20);

    for bad in [
        "page=0",
        "page=-1",
        "page=abc",
        "page=1.5",
        "limit=0",
        "limit=101",
        "limit=x",
    ] {
        assert_error(
            shop.get(&format!("/api/products?{bad}")).await,
            422,
            "invalid_field",
        );
    }

    let id = products[0]["id"].as_str().unwrap();
    let (status, one) = shop.get(&format!("/api/products/{id}")).await;
    assert_eq!(status, 200);
    assert_eq!(one, products[0]);
    assert_error(shop.get("/api/products/no-such-product").await, 404, "not_found");

    assert_error(shop.get("/api/no-such-call").await, 404, "not_found");
    assert_error(
        shop.call(Method::PATCH, "/api/products", None, None).await,
        405,
        "method_not_allowed",
    );

    let (status, health) = shop.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(health["checks"]["database"]["status"], "healthy", "{health}");
    // The engine as the kit chose it, in both places (they once said `sqlite` on ScyllaDB).
    assert_eq!(health["checks"]["database"]["store"], "sqlite", "{health}");
    let (status, config) = shop.get("/debug/config").await;
    assert_eq!(status, 200);
    let store = config["config"]["store"].as_str().unwrap_or_default();
    assert!(
        store.starts_with("sqlite ") && store.ends_with("backend.db"),
        "{config}"
    );
    shop.stop().await;
}

#[tokio::test]
async fn admin_calls_need_an_admin_token() {
    let dir = DataDir::new("auth");
    let shop = Running::start(&dir.0).await;
    let (_, products) = shop.get("/api/products?limit=1").await;
    let id = products[0]["id"].as_str().unwrap().to_string();

    let now = unix_now();
    let expired = keys()
        .mint_claims(&Claims {
            sub: "admin-1".into(),
            username: "root".into(),
            role: ROLE_ADMIN.into(),
            iat: now - 7200,
            exp: now - 3600,
        })
        .unwrap();
    let forged = JwtKeys::new(b"someone else's secret", Duration::from_secs(600))
        .mint("admin-1", "root", ROLE_ADMIN)
        .unwrap();
    let calls = [
        (Method::POST, "/api/products".to_string(), Some(new_product())),
        (
            Method::PUT,
            format!("/api/products/{id}"),
            Some(json!({"price": 1.0})),
        ),
        (Method::DELETE, format!("/api/products/{id}"), None),
        (
            Method::POST,
            format!("/api/products/{id}/restock"),
            Some(json!({"quantity": 5})),
        ),
    ];
    for (method, path, body) in &calls {
        for token in [
            None,
            Some("not-a-jwt".to_string()),
            Some(expired.clone()),
            Some(forged.clone()),
        ] {
            let got = shop
                .call(method.clone(), path, token.as_deref(), body.clone())
                .await;
            assert_error(got, 401, "unauthorized");
        }
        let got = shop
            .call(method.clone(), path, Some(&customer_token()), body.clone())
            .await;
        assert_error(got, 403, "forbidden");
    }
    // Nothing changed.
    let (_, same) = shop.get(&format!("/api/products/{id}")).await;
    assert_eq!(same, products[0]);
    shop.stop().await;
}

#[tokio::test]
async fn admin_writes_validation_and_metrics() {
    let dir = DataDir::new("writes");
    let shop = Running::start(&dir.0).await;
    let admin = admin_token();
    let admin = Some(admin.as_str());

    let (status, created) = shop
        .call(Method::POST, "/api/products", admin, Some(new_product()))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["name"], "Contract Widget");
    assert_eq!(created["stock"], 10);
    let (status, fetched) = shop.get(&format!("/api/products/{id}")).await;
    assert_eq!((status.as_u16(), &fetched), (200, &created));
    let (_, categories) = shop.get("/api/categories").await;
    assert!(categories.as_array().unwrap().contains(&json!("Gadgets")));

    let path = format!("/api/products/{id}");
    let (status, updated) = shop
        .call(
            Method::PUT,
            &path,
            admin,
            Some(json!({"price": 15.0, "name": "Widget II"})),
        )
        .await;
    assert_eq!(status, 200, "{updated}");
    assert_eq!(
        (updated["price"].as_f64(), &updated["name"]),
        (Some(15.0), &json!("Widget II"))
    );
    assert_eq!(updated["category"], "Gadgets", "fields not given are kept");

    let restock = format!("/api/products/{id}/restock");
    let (status, restocked) = shop
        .call(Method::POST, &restock, admin, Some(json!({"quantity": 90})))
        .await;
    assert_eq!(status, 200, "{restocked}");
    assert_eq!(restocked["stock"], 100);

    // 422: invalid fields.
    for body in [
        json!({"price": 1.0, "category": "Gadgets"}),
        json!({"name": "", "price": 1.0, "category": "Gadgets"}),
        json!({"name": "x", "price": -1.0, "category": "Gadgets"}),
        json!({"name": "x", "price": 1.0, "category": "  "}),
        json!({"name": "x", "price": 1.0, "category": "Gadgets", "stock": -1}),
        json!({"name": "x".repeat(201), "price": 1.0, "category": "Gadgets"}),
        json!({"name": "x", "price": "cheap", "category": "Gadgets"}),
        json!([1, 2, 3]),
    ] {
        let got = shop
            .call(Method::POST, "/api/products", admin, Some(body.clone()))
            .await;
        assert_eq!(got.0, 422, "{body} -> {:?}", got.1);
        assert_error(got, 422, "invalid_field");
    }
    assert_error(
        shop.call(Method::PUT, &path, admin, Some(json!({}))).await,
        422,
        "invalid_field",
    );
    for quantity in [json!(0), json!(-5), json!(2_000_000), json!("many")] {
        let got = shop
            .call(
                Method::POST,
                &restock,
                admin,
                Some(json!({ "quantity": quantity })),
            )
            .await;
        assert_error(got, 422, "invalid_field");
    }

    // 400: not JSON at all.
    for body in [&b"{\"name\": "[..], b"not json", b""] {
        let got = shop
            .raw(Method::POST, "/api/products", admin, body.to_vec())
            .await;
        assert_error(got, 400, "malformed_json");
    }
    assert_error(
        shop.raw(Method::PUT, &path, admin, b"{oops".to_vec()).await,
        400,
        "malformed_json",
    );

    // 413: a body over the cap, however valid it would be.
    let mut big = new_product();
    big["description"] = json!("x".repeat(100 * 1024));
    let got = shop
        .raw(
            Method::POST,
            "/api/products",
            admin,
            serde_json::to_vec(&big).unwrap(),
        )
        .await;
    assert_error(got, 413, "payload_too_large");

    // 404 on unknown products.
    let missing = "/api/products/no-such-product";
    assert_error(
        shop.call(Method::PUT, missing, admin, Some(json!({"price": 1.0})))
            .await,
        404,
        "not_found",
    );
    assert_error(
        shop.call(Method::DELETE, missing, admin, None).await,
        404,
        "not_found",
    );
    assert_error(
        shop.call(
            Method::POST,
            &format!("{missing}/restock"),
            admin,
            Some(json!({"quantity": 1})),
        )
        .await,
        404,
        "not_found",
    );

    // Delete: 204, then it is gone.
    let (status, body) = shop.call(Method::DELETE, &path, admin, None).await;
    assert_eq!((status.as_u16(), body), (204, Value::Null));
    assert_error(shop.get(&path).await, 404, "not_found");
    assert_error(
        shop.call(Method::DELETE, &path, admin, None).await,
        404,
        "not_found",
    );

    // Business and query metrics after the calls, from the service's own /metrics.
    let (_, listing) = shop.get("/api/products?category=Books&limit=1").await;
    let book = listing[0]["id"].as_str().unwrap().to_string();
    assert_eq!(shop.get(&format!("/api/products/{book}")).await.0, 200);
    let text = shop
        .client
        .get(shop.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for (series, at_least) in [
        (r#"product_views_total{category="Books"}"#, 1.0),
        (r#"category_requests_total{category="Books"}"#, 1.0),
        (r#"admin_operations_total{operation="create"}"#, 1.0),
        (r#"admin_operations_total{operation="update"}"#, 1.0),
        (r#"admin_operations_total{operation="restock"}"#, 1.0),
        (r#"admin_operations_total{operation="delete"}"#, 1.0),
        (
            r#"cassandra_query_duration_seconds_count{operation="SELECT",table="products"}"#,
            1.0,
        ),
        (
            r#"cassandra_query_duration_seconds_count{operation="INSERT",table="products"}"#,
            1.0,
        ),
        // The product pages' route objective (shop_common::objectives::PRODUCT_PAGE), on the
        // RED series of their route.
        (
            r#"http_requests_total{endpoint="/api/products/{id}",method="GET",objective_name="product-page",objective_percentile="99.9",status="200"}"#,
            1.0,
        ),
        (
            r#"http_request_duration_seconds_bucket{endpoint="/api/products/{id}",method="GET",objective_latency_threshold="0.1",objective_name="product-page",objective_percentile="99",le="0.1"}"#,
            1.0,
        ),
    ] {
        let value = sample(&text, series).unwrap_or_else(|| panic!("{series} missing in\n{text}"));
        assert!(value >= at_least, "{series} = {value}");
    }
    assert!(!text.contains(&id), "identifiers never become labels");
    // Every handler is `#[instrumented]`: its calls show in the function metrics.
    for function in [
        "list_categories",
        "list_products",
        "get_product",
        "create_product",
        "update_product",
        "delete_product",
        "restock_product",
    ] {
        let series = format!(
            r#"function_calls_total{{function="{function}",module="backend::handlers",result="ok"}}"#
        );
        assert!(
            sample(&text, &series).is_some_and(|v| v >= 1.0),
            "{series} missing"
        );
    }
    shop.stop().await;
}

#[tokio::test]
async fn a_restart_keeps_what_was_written() {
    let dir = DataDir::new("restart");
    let shop = Running::start(&dir.0).await;
    let admin = admin_token();
    let (status, created) = shop
        .call(Method::POST, "/api/products", Some(&admin), Some(new_product()))
        .await;
    assert_eq!(status, 201);
    let (_, before) = shop.get("/api/products?limit=100").await;
    shop.stop().await;

    let shop = Running::start(&dir.0).await;
    let id = created["id"].as_str().unwrap();
    let (status, fetched) = shop.get(&format!("/api/products/{id}")).await;
    assert_eq!((status.as_u16(), &fetched), (200, &created));
    let (_, after) = shop.get("/api/products?limit=100").await;
    assert_eq!(before, after, "the catalogue is seeded once, not on every start");
    shop.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stock_never_goes_negative_under_50_concurrent_decrements() {
    let dir = DataDir::new("stock");
    let shop = Running::start(&dir.0).await;
    let mut product = new_product();
    product["stock"] = json!(10);
    let (_, created) = shop
        .call(Method::POST, "/api/products", Some(&admin_token()), Some(product))
        .await;
    let id = created["id"].as_str().unwrap().to_string();

    // A second store on the same file, as another process would open it, racing for the last
    // ten units while the service keeps serving.
    let store = Store::open_sqlite(
        &dir.0.join("backend.db"),
        QueryMetrics::declare(&Registry::new()).unwrap(),
    )
    .await
    .unwrap();
    let tasks: Vec<_> = (0..50)
        .map(|_| {
            let store = store.clone();
            let id = id.clone();
            tokio::spawn(async move { store.decrement_stock(vec![(id, 1)]).await })
        })
        .collect();
    let (mut taken, mut refused) = (0, 0);
    for task in tasks {
        match task.await.unwrap() {
            Ok(()) => taken += 1,
            Err(StoreError::InsufficientStock { available: 0, .. }) => refused += 1,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((taken, refused), (10, 40));
    let (status, after) = shop.get(&format!("/api/products/{id}")).await;
    assert_eq!((status.as_u16(), &after["stock"]), (200, &json!(0)));
    shop.stop().await;
}

#[tokio::test]
async fn queries_are_child_spans_of_the_handler_span_of_the_request() {
    use std::sync::{Arc, Mutex};

    use obskit::trace::{AttrValue, FinishedSpan, SpanKind, SpanSink};

    #[derive(Default)]
    struct Collect(Mutex<Vec<FinishedSpan>>);
    impl SpanSink for Collect {
        fn on_end(&self, span: FinishedSpan) {
            self.0.lock().unwrap().push(span);
        }
    }

    let dir = DataDir::new("spans");
    let shop = Running::start(&dir.0).await;
    let (_, listing) = shop.get("/api/products?limit=1").await;
    let id = listing[0]["id"].as_str().unwrap().to_string();

    // The sink is process-wide: spans of the other tests running meanwhile land in it too, so
    // the assertions pick this request's trace by the product id.
    let sink = Arc::new(Collect::default());
    obskit::trace::set_sink(sink.clone());
    assert_eq!(shop.get(&format!("/api/products/{id}")).await.0, 200);
    obskit::trace::clear_sink();

    let spans = std::mem::take(&mut *sink.0.lock().unwrap());
    let path = format!("/api/products/{id}");
    let server = spans
        .iter()
        .find(|s| {
            s.kind == SpanKind::Server && s.attribute("url.path") == Some(&AttrValue::from(path.clone()))
        })
        .unwrap_or_else(|| panic!("no server span for {path} in {spans:#?}"));
    let handler = spans
        .iter()
        .find(|s| s.parent_span_id == Some(server.context.span_id))
        .expect("the handler span under the request's server span");
    assert_eq!(handler.name, "get_product");
    let query = spans
        .iter()
        .find(|s| s.parent_span_id == Some(handler.context.span_id))
        .expect("a query span under the handler span");
    assert_eq!(query.name, "SELECT products");
    assert_eq!(query.kind, SpanKind::Client);
    assert_eq!(query.context.trace_id, server.context.trace_id);
    for (key, value) in [
        ("db.system.name", "sqlite"),
        ("db.namespace", "backend"),
        ("db.collection.name", "products"),
        ("db.operation.name", "SELECT"),
    ] {
        assert_eq!(query.attribute(key), Some(&AttrValue::from(value)), "{key}");
    }
    shop.stop().await;
}

#[tokio::test]
async fn stock_reservations_need_a_service_token_and_are_all_or_nothing() {
    let dir = DataDir::new("reserve");
    let shop = Running::start(&dir.0).await;
    let admin = admin_token();
    let service = keys().mint("cart-service", "cart-service", ROLE_SERVICE).unwrap();
    let service = Some(service.as_str());
    let mut ids = Vec::new();
    for stock in [10, 3] {
        let mut product = new_product();
        product["stock"] = json!(stock);
        let (status, created) = shop
            .call(Method::POST, "/api/products", Some(&admin), Some(product))
            .await;
        assert_eq!(status, 201, "{created}");
        ids.push(created["id"].as_str().unwrap().to_string());
    }
    let (a, b) = (ids[0].as_str(), ids[1].as_str());
    let stock_of = |id: &str| {
        let path = format!("/api/products/{id}");
        let shop = &shop;
        async move { shop.get(&path).await.1["stock"].as_i64().unwrap() }
    };
    let lines = |a_units: i64, b_units: i64| {
        json!({"items": [
            {"product_id": a, "quantity": a_units},
            {"product_id": b, "quantity": b_units},
        ]})
    };
    let reserve = "/api/stock/reserve";
    let release = "/api/stock/release";

    // 401 without a token or with a forged one, 403 for a customer: nothing moves.
    for path in [reserve, release] {
        assert_error(
            shop.call(Method::POST, path, None, Some(lines(1, 1))).await,
            401,
            "unauthorized",
        );
        let forged = JwtKeys::new(b"another secret", Duration::from_secs(60))
            .mint("cart-service", "cart-service", ROLE_SERVICE)
            .unwrap();
        assert_error(
            shop.call(Method::POST, path, Some(&forged), Some(lines(1, 1)))
                .await,
            401,
            "unauthorized",
        );
        assert_error(
            shop.call(Method::POST, path, Some(&customer_token()), Some(lines(1, 1)))
                .await,
            403,
            "forbidden",
        );
    }
    assert_eq!((stock_of(a).await, stock_of(b).await), (10, 3));

    // 200: both lines taken at once.
    let (status, body) = shop.call(Method::POST, reserve, service, Some(lines(4, 2))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reserved"][0], json!({"product_id": a, "quantity": 4}));
    assert_eq!((stock_of(a).await, stock_of(b).await), (6, 1));

    // 409 naming the product short of stock; the line that would fit is not taken either.
    let got = shop.call(Method::POST, reserve, service, Some(lines(1, 2))).await;
    assert!(got.1["message"].as_str().unwrap().contains(b), "{:?}", got.1);
    assert_error(got, 409, "insufficient_stock");
    assert_eq!((stock_of(a).await, stock_of(b).await), (6, 1));
    // Two lines of one product count together.
    let twice = json!({"items": [
        {"product_id": b, "quantity": 1},
        {"product_id": b, "quantity": 1},
    ]});
    assert_error(
        shop.call(Method::POST, reserve, service, Some(twice)).await,
        409,
        "insufficient_stock",
    );
    assert_eq!(stock_of(b).await, 1);

    // 404 for an unknown product, with nothing taken or given back.
    let unknown = json!({"items": [
        {"product_id": a, "quantity": 1},
        {"product_id": "no-such-product", "quantity": 1},
    ]});
    for path in [reserve, release] {
        let got = shop
            .call(Method::POST, path, service, Some(unknown.clone()))
            .await;
        assert!(
            got.1["message"].as_str().unwrap().contains("no-such-product"),
            "{:?}",
            got.1
        );
        assert_error(got, 404, "not_found");
    }
    assert_eq!(stock_of(a).await, 6);

    // 422 for bad lines, 400 for bodies that are not JSON.
    for body in [
        json!({"items": []}),
        json!({}),
        json!({"items": [{"product_id": a, "quantity": 0}]}),
        json!({"items": [{"product_id": a, "quantity": -3}]}),
        json!({"items": [{"product_id": a, "quantity": 2_000_000}]}),
        json!({"items": [{"product_id": "", "quantity": 1}]}),
        json!({"items": [{"product_id": "x".repeat(200), "quantity": 1}]}),
        json!({"items": [{"quantity": 1}]}),
    ] {
        for path in [reserve, release] {
            let got = shop.call(Method::POST, path, service, Some(body.clone())).await;
            assert_eq!(got.0, 422, "{path} {body} -> {:?}", got.1);
            assert_error(got, 422, "invalid_field");
        }
    }
    assert_error(
        shop.raw(Method::POST, reserve, service, b"{items".to_vec()).await,
        400,
        "malformed_json",
    );

    // Release gives the units back; an admin may move stock by hand too.
    let (status, body) = shop.call(Method::POST, release, service, Some(lines(4, 2))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"][1], json!({"product_id": b, "quantity": 2}));
    assert_eq!((stock_of(a).await, stock_of(b).await), (10, 3));
    let (status, _) = shop
        .call(Method::POST, reserve, Some(&admin), Some(lines(10, 3)))
        .await;
    assert_eq!(status, 200);
    assert_eq!((stock_of(a).await, stock_of(b).await), (0, 0));

    let text = shop
        .client
        .get(shop.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for function in ["reserve_stock", "release_stock"] {
        let series = format!(
            r#"function_calls_total{{function="{function}",module="backend::handlers",result="ok"}}"#
        );
        assert!(
            sample(&text, &series).is_some_and(|v| v >= 1.0),
            "{series} missing"
        );
    }
    shop.stop().await;
}

#[tokio::test]
async fn a_reservation_id_takes_stock_once_and_gives_it_back_once() {
    let dir = DataDir::new("reservation-id");
    let shop = Running::start(&dir.0).await;
    let admin = admin_token();
    let service = keys().mint("cart-service", "cart-service", ROLE_SERVICE).unwrap();
    let service = Some(service.as_str());
    let mut product = new_product();
    product["stock"] = json!(10);
    let (status, created) = shop
        .call(Method::POST, "/api/products", Some(&admin), Some(product))
        .await;
    assert_eq!(status, 201, "{created}");
    let id = created["id"].as_str().unwrap().to_string();
    let stock = || async {
        shop.get(&format!("/api/products/{id}")).await.1["stock"]
            .as_i64()
            .unwrap()
    };
    let reserve = |key: &str, units: i64| json!({"reservation_id": key, "items": [{"product_id": id, "quantity": units}]});
    let release = |key: &str| json!({"reservation_id": key});

    // Taken once, however often it is asked (a retried or timed-out reserve).
    let (status, body) = shop
        .call(
            Method::POST,
            "/api/stock/reserve",
            service,
            Some(reserve("co-1", 4)),
        )
        .await;
    assert_eq!(
        (status.as_u16(), &body["repeated"]),
        (200, &json!(false)),
        "{body}"
    );
    for _ in 0..3 {
        let (status, body) = shop
            .call(
                Method::POST,
                "/api/stock/reserve",
                service,
                Some(reserve("co-1", 4)),
            )
            .await;
        assert_eq!(
            (status.as_u16(), &body["repeated"]),
            (200, &json!(true)),
            "{body}"
        );
    }
    assert_eq!(stock().await, 6);

    // Given back once: a repeated release restocks nothing.
    let (status, body) = shop
        .call(Method::POST, "/api/stock/release", service, Some(release("co-1")))
        .await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["released"], json!([{"product_id": id, "quantity": 4}]));
    let (status, body) = shop
        .call(Method::POST, "/api/stock/release", service, Some(release("co-1")))
        .await;
    assert_eq!((status.as_u16(), &body["released"]), (200, &json!([])), "{body}");
    assert_eq!(stock().await, 10);
    // Released, the id takes nothing any more: a reserve still on its way is harmless.
    assert_error(
        shop.call(
            Method::POST,
            "/api/stock/reserve",
            service,
            Some(reserve("co-1", 4)),
        )
        .await,
        409,
        "reservation_released",
    );
    assert_eq!(stock().await, 10);

    // A release that comes before its reserve (the reserve timed out and never arrived)
    // refuses the id for good.
    let (status, body) = shop
        .call(Method::POST, "/api/stock/release", service, Some(release("co-2")))
        .await;
    assert_eq!((status.as_u16(), &body["released"]), (200, &json!([])), "{body}");
    assert_error(
        shop.call(
            Method::POST,
            "/api/stock/reserve",
            service,
            Some(reserve("co-2", 1)),
        )
        .await,
        409,
        "reservation_released",
    );
    // A reserve refused for short stock records nothing: the id may be tried again.
    assert_error(
        shop.call(
            Method::POST,
            "/api/stock/reserve",
            service,
            Some(reserve("co-3", 11)),
        )
        .await,
        409,
        "insufficient_stock",
    );
    let (status, _) = shop
        .call(
            Method::POST,
            "/api/stock/reserve",
            service,
            Some(reserve("co-3", 10)),
        )
        .await;
    assert_eq!(status, 200);
    assert_eq!(stock().await, 0);
    // A bad id is refused and changes nothing; a customer may not release.
    assert_error(
        shop.call(Method::POST, "/api/stock/release", service, Some(release("a/b")))
            .await,
        422,
        "invalid_field",
    );
    assert_error(
        shop.call(
            Method::POST,
            "/api/stock/release",
            Some(&customer_token()),
            Some(release("co-3")),
        )
        .await,
        403,
        "forbidden",
    );
    assert_eq!(stock().await, 0);
    shop.stop().await;
}
