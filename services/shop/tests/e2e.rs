//! The whole shop as `cargo run -p shop` runs it: the `shop` binary starts the four services and
//! the gateway on free loopback ports with a temporary data directory, and everything is driven
//! through the gateway over real HTTP: the seed's purchase flow, trace context through the
//! gateway, what the gateway refuses, and a restart that must lose nothing.

use shop_common::testing::{free_port, TempDataDir as DataDir};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

const SECRET: &str = "e2e-test-secret-shared-by-all-four-services";
const ADMIN: (&str, &str) = ("e2e-admin", "e2e-admin-password");

#[derive(Clone, Copy)]
struct Ports {
    backend: u16,
    cart: u16,
    order: u16,
    user: u16,
    gateway: u16,
}

impl Ports {
    fn free() -> Ports {
        Ports {
            backend: free_port(),
            cart: free_port(),
            order: free_port(),
            user: free_port(),
            gateway: free_port(),
        }
    }
}

/// The `shop` binary, running; stopped (SIGTERM, then kill) when dropped.
struct Shop {
    child: Option<Child>,
    gateway: String,
    /// The services' log lines, as the launcher prefixes them on its stderr.
    logs: Arc<Mutex<Vec<String>>>,
}

impl Shop {
    fn start(data: &Path, ports: Ports) -> Shop {
        let mut child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .env("SHOP_LISTEN_HOST", "127.0.0.1")
            .env("SHOP_DATA_DIR", data)
            .env("BACKEND_PORT", ports.backend.to_string())
            .env("CART_PORT", ports.cart.to_string())
            .env("ORDER_PORT", ports.order.to_string())
            .env("USER_PORT", ports.user.to_string())
            .env("GATEWAY_PORT", ports.gateway.to_string())
            .env("JWT_SECRET", SECRET)
            .env("SHOP_ADMIN_USERNAME", ADMIN.0)
            .env("SHOP_ADMIN_PASSWORD", ADMIN.1)
            // No lifecycle during the test: the order's status is checked as created.
            .env("ORDER_LIFECYCLE_STEP_SECONDS", "0")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("OBSKIT_ADMIN_TOKEN")
            .env_remove("SCYLLA_NODES")
            // JSON records, whatever the terminal running the test is.
            .env("OBSKIT_LOG_FORMAT", "json")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the shop binary starts");
        let logs = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        let kept = Arc::clone(&logs);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                eprintln!("{line}");
                kept.lock().unwrap().push(line);
            }
        });
        let stdout = child.stdout.take().unwrap();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                println!("{line}");
                if line.starts_with("shop: ready") {
                    let _ = ready_tx.send(());
                }
            }
        });
        let mut shop = Shop {
            child: Some(child),
            gateway: format!("http://127.0.0.1:{}", ports.gateway),
            logs,
        };
        if ready_rx.recv_timeout(Duration::from_secs(120)).is_err() {
            shop.stop();
            panic!("the shop did not say it was ready within 120 s");
        }
        shop
    }

    /// Stops the shop as Ctrl-C would; whether it exited cleanly.
    fn stop(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        // SAFETY: kill(2) on the child this test spawned and has not reaped.
        unsafe {
            libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = child.try_wait() {
                return status.success();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = child.kill();
        let _ = child.wait();
        false
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.gateway)
    }

    /// The JSON records the services logged so far, with the service each came from (the
    /// launcher's `[name   ] ` prefix).
    fn records(&self) -> Vec<(String, Value)> {
        self.logs
            .lock()
            .unwrap()
            .iter()
            .filter_map(|line| {
                let (name, record) = line.strip_prefix('[')?.split_once("] ")?;
                Some((name.trim().to_string(), serde_json::from_str(record).ok()?))
            })
            .collect()
    }
}

impl Drop for Shop {
    fn drop(&mut self) {
        self.stop();
    }
}

fn client() -> Client {
    Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()
        .unwrap()
}

async fn json_of(response: reqwest::Response, expected: StatusCode) -> Value {
    let status = response.status();
    let text = response.text().await.unwrap();
    assert_eq!(status, expected, "body: {text}");
    serde_json::from_str(&text).unwrap_or(Value::Null)
}

/// GETs `url`; the body as JSON, after checking the answer is 200.
async fn get(client: &Client, url: String) -> Value {
    json_of(client.get(url).send().await.unwrap(), StatusCode::OK).await
}

/// POSTs `body` (none: an empty body) to `url`; the answer as JSON, after checking its status.
async fn post(client: &Client, url: String, body: Option<Value>, expected: StatusCode) -> Value {
    let mut request = client.post(url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    json_of(request.send().await.unwrap(), expected).await
}

/// Registers and logs in a customer through the gateway: (user id, token).
async fn customer(shop: &Shop, client: &Client, name: &str) -> (String, String) {
    let user = post(
        client,
        shop.url("/user-api/register"),
        Some(json!({"username": name, "email": format!("{name}@example.com"), "password": "testpass123"})),
        StatusCode::CREATED,
    )
    .await;
    let login = post(
        client,
        shop.url("/user-api/login"),
        Some(json!({"username": name, "password": "testpass123"})),
        StatusCode::OK,
    )
    .await;
    assert_eq!(login["token_type"], "bearer");
    (
        user["id"].as_str().unwrap().to_string(),
        login["access_token"].as_str().unwrap().to_string(),
    )
}

async fn first_product(shop: &Shop, client: &Client) -> Value {
    let products = get(client, shop.url("/api/products?limit=5")).await;
    products[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shop_serves_the_seeds_flows_through_its_gateway_and_a_restart_loses_nothing() {
    let data = DataDir::new("e2e");
    let ports = Ports::free();
    let mut shop = Shop::start(&data.0, ports);
    let client = client();

    // Browse, as the seed's flow does.
    let categories = get(&client, shop.url("/api/categories")).await;
    let category = categories[0].as_str().expect("seeded categories").to_string();
    let listed = get(
        &client,
        shop.url(&format!("/api/products?category={category}&limit=5")),
    )
    .await;
    assert!(!listed.as_array().unwrap().is_empty());

    // Buy: register, log in, add to cart, check out, follow the order.
    let (user_id, token) = customer(&shop, &client, "e2e_buyer").await;
    let product = first_product(&shop, &client).await;
    let stock_before = product["stock"].as_i64().unwrap();
    let product_id = product["id"].as_str().unwrap().to_string();
    let cart = post(
        &client,
        shop.url(&format!("/cart-api/cart/{user_id}/add")),
        Some(json!({"product_id": product_id, "quantity": 2})),
        StatusCode::OK,
    )
    .await;
    assert_eq!(cart["items"][0]["quantity"], 2);
    let order = post(
        &client,
        shop.url(&format!("/cart-api/cart/{user_id}/checkout")),
        None,
        StatusCode::CREATED,
    )
    .await;
    let order_id = order["id"].as_str().unwrap().to_string();
    assert_eq!(order["status"], "CREATED");
    let fetched = get(&client, shop.url(&format!("/order-api/orders/{order_id}"))).await;
    assert_eq!(fetched["user_id"], user_id.as_str());
    let emptied = get(&client, shop.url(&format!("/cart-api/cart/{user_id}"))).await;
    assert_eq!(emptied["items"], json!([]));
    let after = get(&client, shop.url(&format!("/api/products/{product_id}"))).await;
    assert_eq!(after["stock"].as_i64().unwrap(), stock_before - 2);

    // The checkout's records in the three services carry one trace id, and are events of that
    // trace's spans in `/debug/traces`.
    let records = shop.records();
    let find = |service: &str, message: &str| {
        records
            .iter()
            .find(|(name, r)| name == service && r["message"] == message)
            .map(|(_, r)| r.clone())
            .unwrap_or_else(|| panic!("no {message:?} from {service}: {records:?}"))
    };
    let ordered = find("cart", "checkout ordered");
    assert_eq!(ordered["fields"]["order_id"], order_id.as_str());
    assert_eq!(ordered["level"], "INFO");
    assert_eq!(ordered["service"], "cart-service");
    let checkout_trace = ordered["trace_id"].as_str().expect("a trace id").to_string();
    assert_eq!(checkout_trace.len(), 32);
    assert_eq!(
        find("backend", "stock reserved")["trace_id"],
        checkout_trace.as_str()
    );
    let created = find("order", "order created");
    assert_eq!(created["trace_id"], checkout_trace.as_str());
    assert_eq!(created["fields"]["order_id"], order_id.as_str());
    let cart_traces = get(
        &client,
        format!(
            "http://127.0.0.1:{}/debug/traces?trace_id={checkout_trace}",
            ports.cart
        ),
    )
    .await;
    let events: Vec<&Value> = cart_traces["traces"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|t| t["spans"].as_array().unwrap())
        .flat_map(|s| s["events"].as_array().unwrap())
        .collect();
    assert!(
        events.iter().any(|e| e["name"] == "checkout ordered"),
        "the record is an event of its span: {cart_traces}"
    );

    // The profile aggregates the order and the cart through the other services.
    let profile = json_of(
        client
            .get(shop.url(&format!("/user-api/users/{user_id}/profile")))
            .bearer_auth(&token)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    let profile_text = profile.to_string();
    assert!(profile_text.contains(&order_id), "{profile_text}");

    // Something left in the cart, to find again after the restart.
    post(
        &client,
        shop.url(&format!("/cart-api/cart/{user_id}/add")),
        Some(json!({"product_id": product_id, "quantity": 1})),
        StatusCode::OK,
    )
    .await;

    // The caller's trace continues through the gateway into the service.
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let traced = client
        .get(shop.url("/api/categories"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(traced.status(), StatusCode::OK);
    let traces = get(
        &client,
        format!(
            "http://127.0.0.1:{}/debug/traces?trace_id={trace_id}",
            ports.backend
        ),
    )
    .await;
    assert!(
        traces.to_string().contains("00f067aa0ba902b7"),
        "the server span's parent is the caller's span: {traces}"
    );

    // What the gateway does not route: unknown prefixes and the services' admin surfaces.
    for path in ["/metrics", "/debug/config", "/nope", "/profiles/"] {
        let response = client.get(shop.url(path)).send().await.unwrap();
        assert_eq!(response.status(), StatusCode::NOT_FOUND, "{path}");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "not_found");
    }

    // The first listing, checkout and profile aggregation each started a `#[profiled]`
    // capture (5 s); its flamegraph and pprof land in that service's `/profiles/`.
    for (port, function) in [
        (ports.backend, "list_products"),
        (ports.cart, "checkout_cart"),
        (ports.user, "profile_aggregation"),
    ] {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let listing = get(&client, format!("http://127.0.0.1:{port}/profiles/")).await;
            let text = listing.to_string();
            if text.contains(&format!("\"function\":\"{function}\"")) {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "no profile of {function} on port {port}: {text}"
            );
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    // The hang kit of a running service (the workspace builds with `--cfg tokio_unstable` and the
    // shop with obskit's `taskdump`): the runtime's figures and the async calls' busy time in
    // `/metrics`, what is in flight, and a task dump naming where tasks wait.
    let metrics = client
        .get(format!("http://127.0.0.1:{}/metrics", ports.cart))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "tokio_workers ",
        "tokio_alive_tasks ",
        "tokio_worker_busy_seconds_total{worker=\"0\"} ",
        "tokio_blocking_threads ",
        "function_calls_busy_duration_seconds_count{",
    ] {
        assert!(
            metrics.lines().any(|l| l.starts_with(series)),
            "{series} in {metrics}"
        );
    }
    let in_flight = get(&client, format!("http://127.0.0.1:{}/debug/requests", ports.cart)).await;
    assert!(in_flight["requests"].is_array(), "{in_flight}");
    let dump = get(&client, format!("http://127.0.0.1:{}/debug/tasks", ports.backend)).await;
    let tasks = dump["tasks"].as_array().unwrap();
    assert!(
        tasks
            .iter()
            .any(|t| t["trace"].as_str().unwrap().contains(".rs:")),
        "each task's trace names where it waits: {dump}"
    );

    // The shop runs on jemalloc with its heap profiler on (`heap_profiling_allocator!` in its
    // main.rs): the backend's heap profile is one `go tool pprof` reads, with obskit's own
    // frames resolved in it, and it is kept in `/profiles/`.
    let heap = client
        .get(format!("http://127.0.0.1:{}/debug/pprof/heap", ports.backend))
        .send()
        .await
        .unwrap();
    assert_eq!(heap.status(), StatusCode::OK);
    let heap_file = std::env::temp_dir().join(format!("shop-e2e-heap-{}.pb", std::process::id()));
    std::fs::write(&heap_file, heap.bytes().await.unwrap()).unwrap();
    let top = Command::new("go")
        .args(["tool", "pprof", "-top"])
        .arg(&heap_file)
        .env("HOME", std::env::temp_dir())
        .output()
        .expect("`go` is installed (scripts/ensure-tools.sh)");
    let _ = std::fs::remove_file(&heap_file);
    let top = String::from_utf8_lossy(&top.stdout);
    assert!(
        top.contains("Type: inuse_space") && top.contains("obskit::"),
        "go tool pprof reads the shop's heap profile:\n{top}"
    );
    let listing = get(&client, format!("http://127.0.0.1:{}/profiles/", ports.backend)).await;
    assert!(
        listing.to_string().contains("\"profile_type\":\"heap\""),
        "{listing}"
    );

    // Restart on the same data: users, orders, carts and stock are all still there.
    assert!(shop.stop(), "the shop stops cleanly on SIGTERM");
    let shop = Shop::start(&data.0, ports);
    let login = post(
        &client,
        shop.url("/user-api/login"),
        Some(json!({"username": "e2e_buyer", "password": "testpass123"})),
        StatusCode::OK,
    )
    .await;
    let token_again = login["access_token"].as_str().unwrap().to_string();
    let me = json_of(
        client
            .get(shop.url("/user-api/me"))
            .bearer_auth(&token_again)
            .send()
            .await
            .unwrap(),
        StatusCode::OK,
    )
    .await;
    assert_eq!(me["id"], user_id.as_str());
    get(&client, shop.url(&format!("/order-api/orders/{order_id}"))).await;
    let cart = get(&client, shop.url(&format!("/cart-api/cart/{user_id}"))).await;
    assert_eq!(cart["items"][0]["quantity"], 1);
    let after_restart = get(&client, shop.url(&format!("/api/products/{product_id}"))).await;
    assert_eq!(after_restart["stock"], after["stock"]);
    // The bootstrap admin was created once, not again.
    let admin = client
        .post(shop.url("/user-api/login"))
        .json(&json!({"username": ADMIN.0, "password": ADMIN.1}))
        .send()
        .await
        .unwrap();
    assert_eq!(admin.status(), StatusCode::OK);
}
