//! The checkout invariant under faults, with the real binaries: the backend, the order service
//! and the cart run as separate processes (`shop serve NAME`) on free loopback ports, and the
//! test cuts checkouts in every way it can: clients that give up after 1 to 200 ms, the order
//! service paused (SIGSTOP) and resumed (SIGCONT) mid-checkout, the cart killed (SIGKILL) and
//! restarted mid-checkout, both at once, and clients that try again. After recovery:
//!
//! - units taken from stock == units in live (not cancelled) orders;
//! - each cart is either emptied with exactly one order or kept whole with none;
//! - no checkout id has two orders;
//!
//! and a cancelled order gives its units back once. The figures are printed.

use shop_common::testing::{free_port, TempDataDir as DataDir};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::PathBuf;
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};
use shop_common::auth::{JwtKeys, ROLE_ADMIN};

const SECRET: &str = "faults-test-secret-shared-by-the-services";
const CARTS: usize = 24;
/// How long recovery may take before the test gives up (a bound against hanging, not a timing
/// assertion: the cart's sweep runs every second after a 2 s grace, and a call to a paused
/// service times out after 5 s).
const PATIENCE: Duration = Duration::from_secs(90);

/// Sends `signal` to a child this test spawned.
fn signal(child: &Child, signal: libc::c_int) {
    // SAFETY: kill(2) on a child this test spawned and has not reaped.
    let rc = unsafe { libc::kill(child.id() as libc::pid_t, signal) };
    assert_eq!(rc, 0, "signal {signal} to {}", child.id());
}

/// One service process; killed (after a SIGCONT, should it be paused) when dropped.
struct Process {
    child: Option<Child>,
    base: String,
}

/// The three services' ports and shared environment.
struct Shop {
    dir: PathBuf,
    ports: HashMap<&'static str, u16>,
}

impl Shop {
    fn url(&self, name: &str) -> String {
        format!("http://127.0.0.1:{}", self.ports[name])
    }

    /// Starts `shop serve NAME` and waits for its liveness probe.
    async fn start(&self, name: &'static str, client: &Client) -> Process {
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.join(format!("{name}.log")))
            .unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_shop"))
            .args(["serve", name])
            .env("SHOP_LISTEN_HOST", "127.0.0.1")
            .env("SHOP_DATA_DIR", &self.dir)
            .env("BACKEND_PORT", self.ports["backend"].to_string())
            .env("ORDER_PORT", self.ports["order"].to_string())
            .env("CART_PORT", self.ports["cart"].to_string())
            .env("BACKEND_URL", self.url("backend"))
            .env("ORDER_URL", self.url("order"))
            .env("JWT_SECRET", SECRET)
            .env("ORDER_LIFECYCLE_STEP_SECONDS", "0")
            .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
            .env_remove("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
            .env_remove("SCYLLA_NODES")
            // Both streams into the log: the service logs on stdout (JSON lines, stdout being
            // a file), and says `listening` or why it stopped on stderr.
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .expect("the shop binary starts");
        let process = Process {
            child: Some(child),
            base: self.url(name),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let probe = client
                .get(format!("{}/health/live", process.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return process;
            }
            assert!(
                Instant::now() < deadline,
                "{name} did not come up: {}",
                self.log_tail(name)
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn log_tail(&self, name: &str) -> String {
        let log = std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

impl Process {
    fn child(&self) -> &Child {
        self.child.as_ref().expect("running")
    }

    /// SIGKILL: the process dies at whatever step it was.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            signal(&child, libc::SIGCONT);
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A small xorshift generator: the test's randomness, seeded per run and printed so that a
/// failing run can be told apart.
struct Rng(u64);

impl Rng {
    fn seeded() -> Rng {
        let mut b = [0u8; 8];
        getrandom::fill(&mut b).unwrap();
        Rng(u64::from_le_bytes(b) | 1)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

async fn json_call(
    client: &Client,
    method: reqwest::Method,
    url: String,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, url).timeout(Duration::from_secs(30));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.expect("the service answers");
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

/// A checkout whose client gives up after `timeout`; the status when it got an answer.
fn checkout(
    client: &Client,
    cart: &str,
    user: &str,
    timeout: Duration,
) -> tokio::task::JoinHandle<Option<u16>> {
    let request = client
        .post(format!("{cart}/cart-api/cart/{user}/checkout"))
        .timeout(timeout);
    tokio::spawn(async move { request.send().await.ok().map(|r| r.status().as_u16()) })
}

/// What the shop holds now.
struct Figures {
    stock: i64,
    /// Per user: the units in the cart.
    carts: Vec<i64>,
    /// Per user: their orders.
    orders: Vec<Vec<Value>>,
}

impl Figures {
    async fn read(client: &Client, shop: &Shop, products: &[String]) -> Figures {
        let mut stock = 0;
        for id in products {
            let (status, product) = json_call(
                client,
                reqwest::Method::GET,
                format!("{}/api/products/{id}", shop.url("backend")),
                None,
                None,
            )
            .await;
            assert_eq!(status, 200, "{product}");
            stock += product["stock"].as_i64().unwrap();
        }
        let mut carts = Vec::new();
        let mut orders = Vec::new();
        for user in users() {
            let (status, cart) = json_call(
                client,
                reqwest::Method::GET,
                format!("{}/cart-api/cart/{user}", shop.url("cart")),
                None,
                None,
            )
            .await;
            assert_eq!(status, 200, "{cart}");
            carts.push(
                cart["items"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|i| i["quantity"].as_i64().unwrap())
                    .sum(),
            );
            let (status, list) = json_call(
                client,
                reqwest::Method::GET,
                format!("{}/order-api/users/{user}/orders", shop.url("order")),
                None,
                None,
            )
            .await;
            assert_eq!(status, 200, "{list}");
            orders.push(list.as_array().unwrap().clone());
        }
        Figures { stock, carts, orders }
    }

    fn live_units(&self) -> i64 {
        self.orders
            .iter()
            .flatten()
            .filter(|o| o["status"] != "CANCELLED")
            .flat_map(|o| o["items"].as_array().unwrap().clone())
            .map(|i| i["quantity"].as_i64().unwrap())
            .sum()
    }

    /// Every violated rule, in words (empty when the invariant holds).
    fn violations(&self, initial_stock: i64, filled: &[i64]) -> Vec<String> {
        let mut wrong = Vec::new();
        let taken = initial_stock - self.stock;
        if taken != self.live_units() {
            wrong.push(format!(
                "{taken} units taken from stock, {} in live orders",
                self.live_units()
            ));
        }
        for (i, (units, orders)) in self.carts.iter().zip(&self.orders).enumerate() {
            let fine = (*units == 0 && orders.len() == 1) || (*units == filled[i] && orders.is_empty());
            if !fine {
                wrong.push(format!(
                    "cart {i}: {units} of {} units left, {} orders",
                    filled[i],
                    orders.len()
                ));
            }
        }
        let mut checkouts = HashSet::new();
        for order in self.orders.iter().flatten() {
            let id = order["checkout_id"].as_str().unwrap_or("").to_string();
            if id.is_empty() || !checkouts.insert(id.clone()) {
                wrong.push(format!("checkout id {id:?} twice or missing"));
            }
        }
        wrong
    }
}

fn users() -> Vec<String> {
    (0..CARTS).map(|i| format!("faults-user-{i}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn checkouts_keep_every_unit_under_timeouts_pauses_and_kills() {
    let dir = DataDir::new("faults");
    let shop = Shop {
        dir: dir.0.clone(),
        ports: [
            ("backend", free_port()),
            ("order", free_port()),
            ("cart", free_port()),
        ]
        .into(),
    };
    let client = Client::new();
    let _backend = shop.start("backend", &client).await;
    let order = shop.start("order", &client).await;
    let mut cart = shop.start("cart", &client).await;
    let mut rng = Rng::seeded();
    println!("seed {:#x}", rng.0);
    let admin = JwtKeys::new(SECRET.as_bytes(), Duration::from_secs(600))
        .mint("faults-admin", "faults-admin", ROLE_ADMIN)
        .unwrap();

    // Three products, 24 carts of 1 to 3 units each.
    let mut products = Vec::new();
    for name in ["Anvil", "Bucket", "Crate"] {
        let (status, product) = json_call(
            &client,
            reqwest::Method::POST,
            format!("{}/api/products", shop.url("backend")),
            Some(&admin),
            Some(json!({"name": name, "description": "", "price": 4.5, "category": "Faults", "stock": 100})),
        )
        .await;
        assert_eq!(status, 201, "{product}");
        products.push(product["id"].as_str().unwrap().to_string());
    }
    let initial_stock = 300;
    let mut filled = Vec::new();
    for (i, user) in users().iter().enumerate() {
        let units = 1 + rng.below(3) as i64;
        let (status, body) = json_call(
            &client,
            reqwest::Method::POST,
            format!("{}/cart-api/cart/{user}/add", shop.url("cart")),
            None,
            Some(json!({"product_id": products[i % 3], "quantity": units})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        filled.push(units);
    }
    let users = users();
    let mut timeout = || Duration::from_millis(1 + rng.below(200));
    let mut answers: Vec<tokio::task::JoinHandle<Option<u16>>> = Vec::new();

    // 1. Carts 0-7 check out while the order service is paused, for 1.5 s.
    signal(order.child(), libc::SIGSTOP);
    for user in &users[0..8] {
        answers.push(checkout(&client, &cart.base, user, timeout()));
    }
    tokio::time::sleep(Duration::from_millis(1500)).await;
    signal(order.child(), libc::SIGCONT);

    // 2. Carts 8-15 check out and the cart is killed under them, then restarted.
    for user in &users[8..16] {
        answers.push(checkout(&client, &cart.base, user, timeout()));
    }
    tokio::time::sleep(Duration::from_millis(30)).await;
    cart.kill();
    cart = shop.start("cart", &client).await;

    // 3. Carts 16-23: the order service paused, the cart killed mid-checkout, restarted,
    //    the order service resumed.
    signal(order.child(), libc::SIGSTOP);
    for user in &users[16..24] {
        answers.push(checkout(&client, &cart.base, user, timeout()));
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    cart.kill();
    cart = shop.start("cart", &client).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    signal(order.child(), libc::SIGCONT);

    let mut answered: HashMap<String, usize> = HashMap::new();
    for answer in answers {
        let key = answer
            .await
            .unwrap()
            .map_or("no answer".to_string(), |s| s.to_string());
        *answered.entry(key).or_default() += 1;
    }
    println!("first attempts: {answered:?}");

    // 4. Every third client tries again, patiently: it gets the outcome of its unfinished
    //    checkout (or a new one for a kept cart), never a second order.
    let mut retried: HashMap<u16, usize> = HashMap::new();
    for user in users.iter().step_by(3) {
        let status = checkout(&client, &cart.base, user, Duration::from_secs(30))
            .await
            .unwrap();
        *retried
            .entry(status.expect("a patient client gets an answer"))
            .or_default() += 1;
    }
    println!("patient retries: {retried:?}");

    // Recovery: wait until the invariant holds, then once more past a full sweep, so that a
    // state passing through is not taken for the end.
    let deadline = Instant::now() + PATIENCE;
    let figures = loop {
        let figures = Figures::read(&client, &shop, &products).await;
        let wrong = figures.violations(initial_stock, &filled);
        if wrong.is_empty() {
            tokio::time::sleep(Duration::from_secs(4)).await;
            break Figures::read(&client, &shop, &products).await;
        }
        assert!(
            Instant::now() < deadline,
            "not recovered after {PATIENCE:?}: {wrong:?}\ncart log:\n{}",
            shop.log_tail("cart")
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let wrong = figures.violations(initial_stock, &filled);
    let ordered = figures.orders.iter().filter(|o| !o.is_empty()).count();
    println!(
        "after recovery: {} units taken from stock, {} in live orders; {ordered} carts emptied with one order, {} kept with none; {} orders for {} checkout ids",
        initial_stock - figures.stock,
        figures.live_units(),
        CARTS - ordered,
        figures.orders.iter().flatten().count(),
        figures.orders.iter().flatten().map(|o| o["checkout_id"].clone()).collect::<HashSet<_>>().len(),
    );
    assert!(wrong.is_empty(), "{wrong:?}");

    // 5. Cancelling gives the units back, once: cancelled twice (the second is refused) and
    //    with the order service killed right after the first cancel and restarted.
    let mut order = order;
    let cancelled: Vec<Value> = figures.orders.iter().flatten().take(3).cloned().collect();
    let mut order_units = 0;
    for o in &cancelled {
        let (status, body) = json_call(
            &client,
            reqwest::Method::PUT,
            format!(
                "{}/order-api/orders/{}/status",
                shop.url("order"),
                o["id"].as_str().unwrap()
            ),
            Some(&admin),
            Some(json!({"status": "CANCELLED"})),
        )
        .await;
        assert_eq!(status, 200, "{body}");
        order_units += o["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| i["quantity"].as_i64().unwrap())
            .sum::<i64>();
    }
    order.kill();
    let order = shop.start("order", &client).await;
    for o in &cancelled {
        let (status, _) = json_call(
            &client,
            reqwest::Method::PUT,
            format!(
                "{}/order-api/orders/{}/status",
                order.base,
                o["id"].as_str().unwrap()
            ),
            Some(&admin),
            Some(json!({"status": "CANCELLED"})),
        )
        .await;
        assert_eq!(status, 409, "a cancelled order cannot be cancelled again");
    }
    let deadline = Instant::now() + PATIENCE;
    let after_cancel = loop {
        let now = Figures::read(&client, &shop, &products).await;
        if now.stock == figures.stock + order_units {
            tokio::time::sleep(Duration::from_secs(3)).await;
            break Figures::read(&client, &shop, &products).await;
        }
        assert!(
            Instant::now() < deadline,
            "the cancelled orders' stock did not come back: {}",
            shop.log_tail("order")
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    println!(
        "after cancelling {} orders: {} units back in stock (expected {order_units}); taken {} == live {}",
        cancelled.len(),
        after_cancel.stock - figures.stock,
        initial_stock - after_cancel.stock,
        after_cancel.live_units()
    );
    assert_eq!(
        after_cancel.stock,
        figures.stock + order_units,
        "given back exactly once"
    );
    assert_eq!(initial_stock - after_cancel.stock, after_cancel.live_units());
    drop(cart);
    drop(order);
}
