//! Integration tests: health_debug. Library-level: health reports, process figures and the
//! configuration report, without the HTTP layer; and the `obskit_health_status` gauge as a
//! scraper sees it, through a real server's `/metrics`.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use obskit::debug::config_report;
#[cfg(feature = "process-metrics")]
use obskit::debug::{ConnectionStats, ProcessStats};
use obskit::health::{CheckOptions, CheckOutcome, HealthChecks, HealthStatus};

#[tokio::test]
async fn hanging_check_times_out_within_its_timeout() {
    let timeout = Duration::from_millis(300);
    let checks = HealthChecks::new("cart", "1.0.0");
    checks.register("redis", || async { CheckOutcome::healthy() });
    checks.register_with("hangs", CheckOptions::new().timeout(timeout), || async {
        std::future::pending::<()>().await;
        CheckOutcome::healthy()
    });

    let started = Instant::now();
    let report = checks.report().await;
    let elapsed = started.elapsed();

    // Generous margin: the point is that the report does not hang, not how fast it is.
    assert!(elapsed < timeout + Duration::from_secs(1), "{elapsed:?}");
    let hangs = &report.checks["hangs"];
    assert_eq!(hangs.status, HealthStatus::Unhealthy);
    assert_eq!(hangs.message.as_deref(), Some("timed out after 300ms"));
    assert_eq!(report.checks["redis"].status, HealthStatus::Healthy);
    assert_eq!(report.status, HealthStatus::Unhealthy);
    assert_eq!(report.http_status(), 503);
}

#[cfg(feature = "process-metrics")]
#[tokio::test]
async fn seed_report_shape_with_memory_check() {
    let checks = HealthChecks::new("backend", "1.0.0");
    checks.register_memory_check();
    checks.register_with("database", CheckOptions::new().non_critical(), || async {
        CheckOutcome::unhealthy("NoHostAvailable").with_detail("connection", "failed")
    });

    let json = serde_json::to_value(checks.report().await).unwrap();
    assert_eq!(json["service"], "backend");
    assert_eq!(json["version"], "1.0.0");
    // The seed degrades on a failing database.
    assert_ne!(json["status"], "healthy");
    let database = &json["checks"]["database"];
    assert_eq!(database["status"], "unhealthy");
    assert_eq!(database["connection"], "failed");
    let memory = &json["checks"]["memory"];
    assert!(memory["status"].is_string());
    if cfg!(target_os = "linux") {
        let percent = memory["usage_percent"].as_f64().unwrap();
        assert!((0.0..=100.0).contains(&percent));
        assert!(memory["used_bytes"].as_u64().unwrap() <= memory["total_bytes"].as_u64().unwrap());
    }

    // Readiness leaves the memory check out; liveness runs nothing.
    let ready = checks.readiness().await;
    assert_eq!(ready.checks.keys().collect::<Vec<_>>(), ["database"]);
    assert_eq!(ready.status, HealthStatus::Degraded);
    assert_eq!(checks.liveness().status, HealthStatus::Healthy);
}

#[cfg(feature = "process-metrics")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_thread_shows_in_process_cpu_percent() {
    let stats = ProcessStats::start(ProcessStats::MIN_INTERVAL, ConnectionStats::new());
    let stop = Arc::new(AtomicBool::new(false));
    let spinner = {
        let stop = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                std::hint::spin_loop();
            }
        })
    };

    tokio::time::sleep(stats.interval() * 2).await;
    // Two intervals have passed; on a loaded machine the sampler may run late, so allow it
    // plenty of extra time rather than asserting how fast it is.
    let deadline = Instant::now() + Duration::from_secs(10);
    let percent = loop {
        match stats.snapshot().cpu.process_percent {
            Some(percent) if percent > 0.0 => break Some(percent),
            _ if Instant::now() > deadline => break None,
            _ => tokio::time::sleep(stats.interval()).await,
        }
    };
    stop.store(true, Ordering::Relaxed);
    spinner.join().unwrap();

    let percent = percent.expect("a spinning thread shows as CPU use");
    assert!(percent > 0.0);
    let cpu = stats.snapshot().cpu;
    assert!(cpu.logical_cores.unwrap() >= 1);
    assert!(cpu.system_percent.is_some());
}

#[cfg(all(target_os = "linux", feature = "process-metrics"))]
#[tokio::test]
async fn open_fds_rise_with_open_files() {
    let stats = ProcessStats::start(ProcessStats::DEFAULT_INTERVAL, ConnectionStats::new());
    let before = stats.snapshot().open_fds.unwrap();
    // Many at once, so that descriptors other tests close meanwhile cannot hide them.
    let files: Vec<std::fs::File> = (0..64)
        .map(|_| std::fs::File::open("/proc/self/status").unwrap())
        .collect();
    let during = stats.snapshot().open_fds.unwrap();
    drop(files);
    assert!(during > before, "before {before}, with 64 more files {during}");
    assert!(stats.snapshot().threads.unwrap() >= 1);
}

#[cfg(all(target_os = "linux", feature = "process-metrics"))]
#[tokio::test]
async fn connections_are_counted_and_established_tcp_found() {
    let connections = ConnectionStats::new();
    let stats = ProcessStats::start(ProcessStats::DEFAULT_INTERVAL, connections.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = tokio::net::TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (server, _) = listener.accept().await.unwrap();
    let guard = connections.opened();

    let snapshot = stats.snapshot().connections;
    assert_eq!((snapshot.open, snapshot.accepted_total), (1, 1));
    // Both ends belong to this process.
    assert!(snapshot.established_tcp.unwrap() >= 2, "{snapshot:?}");

    drop(guard);
    drop((client, server));
    let snapshot = stats.snapshot().connections;
    assert_eq!((snapshot.open, snapshot.accepted_total), (0, 1));
}

/// Sets an environment variable for the rest of the test binary. The names are unique to this
/// file, so no other test reads or writes them.
fn set_env(key: &str, value: &str) {
    // SAFETY: `set_var` races with C code reading the environment on other threads (it is
    // `unsafe` from edition 2024 on); Rust's own accesses are serialised by std.
    unsafe { std::env::set_var(key, value) };
}

#[test]
fn config_report_never_shows_a_secret() {
    let secrets = [
        ("OBSKIT_HD_DATABASE_URL", "postgres://u:pw-7f3a9c@h/db"),
        ("OBSKIT_HD_AWS_SECRET_ACCESS_KEY", "aws-7f3a9c-wJalrXUtnFEMI"),
        ("OBSKIT_HD_JWT_SIGNING_KEY", "jwt-7f3a9c-signing"),
    ];
    for (key, value) in secrets {
        set_env(key, value);
    }
    set_env("OBSKIT_HD_PLAIN", "plain-value");

    let report = config_report(&[
        ("api_key", "sk-live-7f3a9c".to_string()),
        ("database.url", "postgres://u:cfg-7f3a9c@h/db".to_string()),
        ("port", "8000".to_string()),
    ]);

    let environment = &report["environment"];
    assert_eq!(environment["OBSKIT_HD_DATABASE_URL"], "postgres://u:***@h/db");
    assert_eq!(environment["OBSKIT_HD_AWS_SECRET_ACCESS_KEY"], "***");
    assert_eq!(environment["OBSKIT_HD_JWT_SIGNING_KEY"], "***");
    assert_eq!(environment["OBSKIT_HD_PLAIN"], "plain-value");
    let config = &report["config"];
    assert_eq!(config["api_key"], "***");
    assert_eq!(config["database.url"], "postgres://u:***@h/db");
    assert_eq!(config["port"], "8000");

    // Not in any form, anywhere in the answer.
    let text = serde_json::to_string(&report).unwrap();
    for secret in [
        "pw-7f3a9c",
        "aws-7f3a9c",
        "jwt-7f3a9c",
        "sk-live-7f3a9c",
        "cfg-7f3a9c",
    ] {
        assert!(!text.contains(secret), "{secret} leaked");
    }
}

#[test]
fn config_report_masks_by_key_and_url_only() {
    // The documented limit: only the key rule and the URL rule apply, so a secret copied into
    // a variable with an innocent name is shown. This pins the contract, so that changing it
    // is a decision.
    set_env("OBSKIT_HD2_SESSION_SECRET", "copied-b81d");
    set_env("OBSKIT_HD2_EXTRA_ARGS", "--flag copied-b81d");
    let report = config_report(&[]);
    let environment = &report["environment"];
    assert_eq!(environment["OBSKIT_HD2_SESSION_SECRET"], "***");
    assert_eq!(environment["OBSKIT_HD2_EXTRA_ARGS"], "--flag copied-b81d");
}

/// A service built and served by the builder on a free loopback port, with a short health
/// interval; its handler answers 404 to everything (only the admin surface matters here).
struct HealthServer {
    addr: std::net::SocketAddr,
    obskit: obskit::Obskit,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl HealthServer {
    async fn start() -> HealthServer {
        let obskit = obskit::Obskit::builder()
            .service("health-gauge")
            .version("1.0.0")
            .registry(obskit::metrics::Registry::new())
            .admin_access(obskit::admin::AdminAccess::LoopbackOnly)
            .memory_check(false)
            .health_interval(Duration::from_millis(100))
            // No span sink: the sink is process-wide and the span tests own it.
            .recent_spans(0)
            .build()
            .expect("obskit builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = obskit.clone();
        let handler = hyper::service::service_fn(|_request| async {
            let mut response = http::Response::new(http_body_util::Full::new(bytes::Bytes::new()));
            *response.status_mut() = http::StatusCode::NOT_FOUND;
            Ok::<_, std::convert::Infallible>(response)
        });
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            served.serve_with_shutdown(listener, handler, shutdown).await
        });
        HealthServer {
            addr,
            obskit,
            stop: Some(stop),
            task,
        }
    }

    /// `/metrics` over HTTP. The client timeout only keeps a broken test from hanging: it is
    /// far above anything a working scrape takes, and far below the hanging check's timeout.
    async fn metrics(&self) -> String {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(20))
            .build()
            .unwrap();
        let response = client
            .get(format!("http://{}/metrics", self.addr))
            .send()
            .await
            .expect("/metrics answers while checks run");
        assert_eq!(response.status(), 200);
        response.text().await.unwrap()
    }

    /// Scrapes until `done` holds for the exposition (the refresher runs every 100 ms; a loaded
    /// machine gets plenty of extra time), returning the last exposition seen.
    async fn metrics_until(&self, what: &str, done: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let metrics = self.metrics().await;
            if done(&metrics) {
                return metrics;
            }
            assert!(Instant::now() < deadline, "never saw {what}:\n{metrics}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(mut self) -> obskit::Obskit {
        let _ = self.stop.take().unwrap().send(());
        let served = tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("server stops after the shutdown signal");
        served.expect("serve task").expect("serve returns Ok");
        self.obskit.clone()
    }
}

impl Drop for HealthServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn has_line(metrics: &str, line: &str) -> bool {
    metrics.lines().any(|l| l == line)
}

#[tokio::test]
async fn health_gauge_flips_on_metrics_without_anyone_calling_health() {
    let server = HealthServer::start().await;
    // 0 healthy, 1 degraded, 2 unhealthy, as the gauge counts.
    let database = Arc::new(AtomicUsize::new(0));
    let runs = Arc::new(AtomicUsize::new(0));
    let (state, count) = (Arc::clone(&database), Arc::clone(&runs));
    server.obskit.health().register("database", move || {
        count.fetch_add(1, Ordering::SeqCst);
        let outcome = match state.load(Ordering::SeqCst) {
            0 => CheckOutcome::healthy(),
            1 => CheckOutcome::degraded("replica lag"),
            _ => CheckOutcome::unhealthy("connection refused"),
        };
        async move { outcome }
    });
    server
        .obskit
        .health()
        .register("cache", || async { CheckOutcome::healthy() });

    for (value, name) in [
        (0, "healthy"),
        (2, "unhealthy"),
        (1, "degraded"),
        (0, "healthy again"),
    ] {
        database.store(value, Ordering::SeqCst);
        let metrics = server
            .metrics_until(name, |m| {
                has_line(m, &format!(r#"obskit_health_status{{check="database"}} {value}"#))
                    && has_line(m, &format!(r#"obskit_health_status{{check="overall"}} {value}"#))
            })
            .await;
        assert!(
            has_line(&metrics, r#"obskit_health_status{check="cache"} 0"#),
            "{metrics}"
        );
        assert!(metrics.contains("# TYPE obskit_health_status gauge"), "{metrics}");
        crate::common::promtool_check_metrics(&metrics);
    }

    // Gone as soon as it is unregistered.
    assert!(server.obskit.health().unregister("database"));
    let metrics = server.metrics().await;
    assert!(!metrics.contains(r#"check="database""#), "{metrics}");
    assert!(
        has_line(&metrics, r#"obskit_health_status{check="overall"} 0"#),
        "{metrics}"
    );

    // Once the service is gone, so is its refresher.
    let obskit = server.shutdown().await;
    drop(obskit);
    tokio::time::sleep(Duration::from_millis(300)).await;
    let after = runs.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        runs.load(Ordering::SeqCst),
        after,
        "the background checks stopped"
    );
}

#[tokio::test]
async fn a_hanging_check_never_holds_up_a_scrape() {
    let server = HealthServer::start().await;
    let health = server.obskit.health();
    health.register("database", || async { CheckOutcome::healthy() });
    server
        .metrics_until("the database check", |m| {
            has_line(m, r#"obskit_health_status{check="database"} 0"#)
        })
        .await;

    // The background report now waits a minute for this check; scrapes must not.
    let started = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&started);
    health.register_with(
        "payments",
        CheckOptions::new().timeout(Duration::from_secs(60)),
        move || {
            flag.store(true, Ordering::SeqCst);
            std::future::pending::<CheckOutcome>()
        },
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    while !started.load(Ordering::SeqCst) {
        assert!(Instant::now() < deadline, "the refresher never ran the new check");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for _ in 0..3 {
        // The last known values, without the check still running.
        let metrics = server.metrics().await;
        assert!(
            has_line(&metrics, r#"obskit_health_status{check="database"} 0"#),
            "{metrics}"
        );
        assert!(!metrics.contains(r#"check="payments""#), "{metrics}");
    }
    server.shutdown().await;
}
