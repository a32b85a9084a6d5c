//! Test support for the services' contract tests (`services/*/tests/contract.rs`): a temporary
//! data directory, a service running in-process on `127.0.0.1:0` and stopped through its
//! shutdown future, and the HTTP helpers every contract test checks its calls with.
//!
//! Everything here panics on failure, as test code does: it is not for use by the services
//! themselves. It is always compiled because it needs nothing beyond what the crate already
//! depends on (tokio, reqwest, serde_json), and an unused module costs the binaries nothing.
//!
//! ```
//! use shop_common::testing::{assert_error, sample, TempDataDir};
//! use reqwest::StatusCode;
//! use serde_json::json;
//!
//! let dir = TempDataDir::new("doc-module");
//! assert!(dir.path().is_dir());
//! assert_error(
//!     (StatusCode::NOT_FOUND, json!({"error": "not_found", "message": "no such thing"})),
//!     404,
//!     "not_found",
//! );
//! assert_eq!(sample("requests_total 3\n", "requests_total"), Some(3.0));
//! ```

use std::fmt::Debug;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use reqwest::{Client, IntoUrl, Method, RequestBuilder, Response, StatusCode};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// How often [`RunningService::start`] probes `/health/live` before it gives up, and how long
/// it sleeps between probes: 10 s in all, a bound against hanging, not a timing assertion.
const LIVENESS_PROBES: u32 = 400;
const LIVENESS_PAUSE: Duration = Duration::from_millis(25);

/// The timeout of [`RunningService::client`]'s requests: a request that hangs fails the test
/// instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(30);

/// How long [`RunningService::stop`] waits for the service to return.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A temporary data directory under [`std::env::temp_dir`], removed (with what the test wrote
/// in it) when dropped.
///
/// ```
/// use shop_common::testing::TempDataDir;
///
/// let dir = TempDataDir::new("doc");
/// let path = dir.path().to_path_buf();
/// std::fs::write(dir.0.join("a.db"), b"data").unwrap();
/// drop(dir);
/// assert!(!path.exists());
/// ```
pub struct TempDataDir(pub PathBuf);

/// A port that was free on 127.0.0.1 a moment ago (for a process the test starts, which binds
/// it itself).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

impl TempDataDir {
    /// Creates `shop-test-<tag>-<unique id>`: the tag says which test the directory is for,
    /// the id keeps concurrent tests (and runs) apart.
    pub fn new(tag: &str) -> TempDataDir {
        let unique = crate::store::new_id();
        let dir = std::env::temp_dir().join(format!("shop-test-{tag}-{unique}"));
        std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        TempDataDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDataDir {
    fn drop(&mut self) {
        // Best effort: a leftover directory in the temp dir must not fail a test that passed.
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The shutdown future [`RunningService::start`] hands to the service's `run`: it resolves when
/// [`RunningService::stop`] is called (or the `RunningService` is dropped).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A service running in this process on `127.0.0.1:<free port>`, with a client to call it.
///
/// [`start`](RunningService::start) spawns the service's `run(config, listener, shutdown)` and
/// waits until `/health/live` answers; [`stop`](RunningService::stop) resolves the shutdown
/// future and requires `run` to return `Ok` in time, so a service that does not stop cleanly
/// fails the test.
///
/// ```
/// use http::{Method, StatusCode};
/// use obskit::metrics::Registry;
/// use serde_json::json;
/// use shop_common::http::json_response;
/// use shop_common::router::{Reply, Request, Router};
/// use shop_common::testing::RunningService;
///
/// async fn hello(_: (), _: Request) -> Reply {
///     Ok(json_response(StatusCode::OK, &"world"))
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // What a service's `run(config, listener, shutdown)` does, reduced to one route.
/// let shop = RunningService::start("the hello service", |listener, shutdown| async move {
///     let router = Router::new().route(Method::GET, "/hello", hello);
///     let obskit = obskit::Obskit::builder()
///         .service("hello")
///         .registry(Registry::new())
///         .routes(router.templates())
///         .build()?;
///     obskit
///         .serve_with_shutdown(listener, router.into_service(()), shutdown)
///         .await?;
///     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
/// })
/// .await;
/// assert!(shop.base.starts_with("http://127.0.0.1:"));
/// let (status, body) = shop.get("/hello").await;
/// assert_eq!((status.as_u16(), body), (200, json!("world")));
/// shop.stop().await;
/// # }
/// ```
pub struct RunningService {
    /// `http://127.0.0.1:<port>`, for other services' configuration.
    pub base: String,
    /// A client for the calls the helpers do not cover; its requests time out after 30 s.
    pub client: Client,
    name: String,
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
}

impl RunningService {
    /// Binds `127.0.0.1:0`, spawns `run(listener, shutdown)` and waits (up to 10 s) for
    /// `/health/live` to answer 2xx. `name` (`"the backend"`) is for panic messages.
    ///
    /// `run` is typically `|listener, shutdown| backend::run(config, listener, shutdown)`.
    pub async fn start<F, Fut, E>(name: &str, run: F) -> RunningService
    where
        F: FnOnce(TcpListener, Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
        E: Debug + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .unwrap_or_else(|e| panic!("{name}: cannot bind 127.0.0.1:0: {e}"));
        let addr = listener.local_addr().unwrap_or_else(|e| panic!("{name}: {e}"));
        let base = format!("http://{addr}");
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let serving = run(listener, shutdown);
        // The error is kept as its Debug text so that the handle's type does not depend on
        // the service's error type.
        let task = tokio::spawn(async move { serving.await.map_err(|e| format!("{e:?}")) });
        let client = Client::builder()
            .timeout(CLIENT_TIMEOUT)
            .build()
            .unwrap_or_else(|e| panic!("{name}: no HTTP client: {e}"));
        let running = RunningService {
            base,
            client,
            name: name.to_string(),
            stop: Some(stop),
            task,
        };
        for _ in 0..LIVENESS_PROBES {
            if let Ok(r) = running.client.get(running.url("/health/live")).send().await {
                if r.status().is_success() {
                    return running;
                }
            }
            tokio::time::sleep(LIVENESS_PAUSE).await;
        }
        panic!("{name} did not come up at {}", running.base);
    }

    /// `base` followed by `path` (which starts with `/`).
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// Resolves the shutdown future and waits (up to 20 s) for the service to return; panics
    /// when it does not, or when it returns an error.
    pub async fn stop(mut self) {
        // Dropping the client first closes its idle keep-alive connections, which a graceful
        // shutdown would otherwise wait for.
        drop(self.client);
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let name = self.name;
        tokio::time::timeout(STOP_TIMEOUT, self.task)
            .await
            .unwrap_or_else(|_| panic!("{name} stops within {} s", STOP_TIMEOUT.as_secs()))
            .unwrap_or_else(|e| panic!("{name} panicked: {e}"))
            .unwrap_or_else(|e| panic!("{name} failed: {e}"));
    }

    /// Sends `body` as JSON to `path`, with `token` as bearer token; returns the status and
    /// the body parsed as JSON (`Null` when empty). See [`call`].
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call(&self.client, method, self.url(path), token, body).await
    }

    /// `GET path` without a token.
    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.call(Method::GET, path, None, None).await
    }

    /// Sends `body` as it is (malformed or oversized JSON, say) with
    /// `content-type: application/json`, and `token` as bearer token; the answer as
    /// [`read`] gives it.
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Vec<u8>,
    ) -> (StatusCode, Value) {
        let request = self
            .client
            .request(method, self.url(path))
            .header("content-type", "application/json")
            .body(body);
        send(request, token).await
    }

    /// The text of the service's `/metrics`.
    pub async fn metrics(&self) -> String {
        text(&self.client, self.url("/metrics")).await
    }
}

/// Sends `body` as JSON to `url` with `client`, with `token` as bearer token; returns the
/// status and the body parsed as JSON (`Null` when empty). Panics when the request fails or
/// the answer is not JSON: every answer of the contract is.
///
/// ```no_run
/// # async fn example() {
/// use reqwest::{Client, Method};
/// use serde_json::json;
///
/// let client = Client::new();
/// let (status, product) = shop_common::testing::call(
///     &client,
///     Method::POST,
///     "http://127.0.0.1:8001/api/products",
///     Some("<admin token>"),
///     Some(json!({"name": "Widget", "price": 2.5, "category": "Gadgets"})),
/// )
/// .await;
/// assert_eq!(status, 201, "{product}");
/// # }
/// ```
pub async fn call(
    client: &Client,
    method: Method,
    url: impl IntoUrl,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut request = client.request(method, url);
    if let Some(body) = body {
        request = request.json(&body);
    }
    send(request, token).await
}

/// Sends `request` with `token` as bearer token (no `authorization` header without one).
async fn send(request: RequestBuilder, token: Option<&str>) -> (StatusCode, Value) {
    let request = match token {
        Some(token) => request.bearer_auth(token),
        None => request,
    };
    read(request.send().await.unwrap()).await
}

/// The body of `GET url` as text (`/metrics`, say), whatever the status.
///
/// ```no_run
/// # async fn example() {
/// let client = reqwest::Client::new();
/// let text = shop_common::testing::text(&client, "http://127.0.0.1:8001/metrics").await;
/// assert!(text.contains("http_requests_total"));
/// # }
/// ```
pub async fn text(client: &Client, url: impl IntoUrl) -> String {
    client.get(url).send().await.unwrap().text().await.unwrap()
}

/// The status of `response` and its body parsed as JSON (`Null` when empty); panics, showing
/// the body, when it is not JSON.
///
/// ```no_run
/// # async fn example() {
/// let response = reqwest::get("http://127.0.0.1:8001/api/categories").await.unwrap();
/// let (status, categories) = shop_common::testing::read(response).await;
/// assert_eq!(status, 200, "{categories}");
/// # }
/// ```
pub async fn read(response: Response) -> (StatusCode, Value) {
    let status = response.status();
    let bytes = response.bytes().await.unwrap();
    let value = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{status}: not JSON ({e}): {bytes:?}"))
    };
    (status, value)
}

/// Asserts the contract's error shape: status `status`, `"error": code` and a non-empty
/// `message`.
///
/// ```
/// use reqwest::StatusCode;
/// use serde_json::json;
/// use shop_common::testing::assert_error;
///
/// let got = (StatusCode::CONFLICT, json!({"error": "insufficient_stock", "message": "p-1: 2 left"}));
/// assert_error(got, 409, "insufficient_stock");
/// ```
#[track_caller]
pub fn assert_error(got: (StatusCode, Value), status: u16, code: &str) {
    assert_eq!(got.0.as_u16(), status, "{:?}", got.1);
    assert_eq!(got.1["error"], code, "{:?}", got.1);
    assert!(
        got.1["message"].as_str().is_some_and(|m| !m.is_empty()),
        "{:?}",
        got.1
    );
}

/// The value of the series written exactly as `series` (name and labels) in the Prometheus
/// text `text`; `None` when it is not there.
///
/// ```
/// use shop_common::testing::sample;
///
/// let text = "# TYPE orders_total counter\norders_total{status=\"PAID\"} 2\n";
/// assert_eq!(sample(text, r#"orders_total{status="PAID"}"#), Some(2.0));
/// assert_eq!(sample(text, r#"orders_total{status="SHIPPED"}"#), None);
/// ```
pub fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.trim().parse().ok())
}

/// Seconds since the Unix epoch, for hand-made JWT claims.
///
/// ```
/// assert!(shop_common::testing::unix_now() > 1_700_000_000);
/// ```
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

/// Checks that `registry` holds exactly the metric families `declared` lists, beyond obskit's own
/// ([`obskit::names::METRICS`]) and the storage histogram: the same names, each with its
/// declared type and help, and its series carrying exactly its declared labels. A family with
/// labels must have at least one series to be seen (families without series are not
/// gathered), so touch every family before calling this. Panics saying what differs.
///
/// ```
/// use obskit::names::{Metric, MetricKind};
///
/// const JOBS: Metric = Metric { name: "jobs_total", kind: MetricKind::Counter, help: "Jobs", labels: &["queue"] };
/// let registry = obskit::metrics::Registry::new();
/// registry.counter_vec(JOBS.name, JOBS.help, JOBS.labels).unwrap().with(&["a"]).inc();
/// shop_common::testing::assert_declares_exactly(&registry, &[JOBS]);
/// ```
pub fn assert_declares_exactly(registry: &obskit::metrics::Registry, declared: &[obskit::names::Metric]) {
    use std::collections::{BTreeMap, BTreeSet};

    let not_ours = |name: &str| {
        obskit::names::METRICS.iter().any(|m| m.name == name)
            || name == obskit::names::CASSANDRA_QUERY_DURATION_SECONDS.name
    };
    let gathered: BTreeMap<String, (String, String, BTreeSet<String>)> = registry
        .gather()
        .iter()
        .filter(|family| !not_ours(family.name()))
        .map(|family| {
            let labels = family
                .get_metric()
                .iter()
                .flat_map(|metric| metric.get_label().iter().map(|pair| pair.name().to_string()))
                .collect();
            let kind = format!("{:?}", family.get_field_type()).to_ascii_lowercase();
            (
                family.name().to_string(),
                (kind, family.help().to_string(), labels),
            )
        })
        .collect();
    let registered: BTreeSet<&str> = gathered.keys().map(String::as_str).collect();
    let listed: BTreeSet<&str> = declared.iter().map(|m| m.name).collect();
    assert_eq!(
        registered,
        listed,
        "registered but not listed: {:?}; listed but not registered: {:?}",
        registered.difference(&listed).collect::<Vec<_>>(),
        listed.difference(&registered).collect::<Vec<_>>()
    );
    for metric in declared {
        let (kind, help, labels) = &gathered[metric.name];
        assert_eq!(kind, metric.kind.as_str(), "`{}`: registered type", metric.name);
        assert_eq!(help, metric.help, "`{}`: registered help", metric.name);
        let declared_labels: BTreeSet<String> = metric.labels.iter().map(|l| l.to_string()).collect();
        assert_eq!(
            labels, &declared_labels,
            "`{}`: labels its series carry",
            metric.name
        );
    }
}
