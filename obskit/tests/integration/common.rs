//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;

/// Tests that install a span sink, or need to know which one is installed, hold this lock: the
/// sink is process-wide. (Servers built by other tests use `.recent_spans(0)` and install none.)
pub static SINK_LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// A free loopback address: bind port 0 and read the port back.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}

/// Runs `promtool check metrics` on an exposition and fails the test on any error or warning
/// (promtool is installed by `scripts/ensure-tools.sh`).
pub fn promtool_check_metrics(exposition: &str) {
    use std::io::Write;
    use std::process::{Command, Stdio};
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool is installed (run scripts/ensure-tools.sh)");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success() && said.trim().is_empty(),
        "promtool check metrics complained:\n{said}\n--- exposition ---\n{exposition}"
    );
}

/// Parses an OpenMetrics exposition with the strict parser of the Python `prometheus_client`
/// (installed by `scripts/ensure-tools.sh`; promtool 2.42 reads only the 0.0.4 format) and
/// fails the test on any error. Returns how many samples carry an exemplar.
pub fn openmetrics_check(exposition: &str) -> usize {
    use std::io::Write;
    use std::process::{Command, Stdio};
    const SCRIPT: &str = "import sys\n\
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse\n\
families = list(parse(sys.stdin.read()))\n\
print(sum(1 for f in families for s in f.samples if s.exemplar))\n";
    let mut child = Command::new("python3")
        .args(["-c", SCRIPT])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3 is installed");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(exposition.as_bytes())
        .unwrap();
    let output = child.wait_with_output().unwrap();
    assert!(
        output.status.success(),
        "the OpenMetrics parser refused the exposition:\n{}\n--- exposition ---\n{exposition}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().parse().unwrap()
}

/// Secret values planted in the environment by [`set_secret_env`]; none may ever be served.
pub const SECRET_VALUES: [&str; 4] = ["pw@h", "AKIAsecretvalue", "jwt-signing-secret", "apikeyvalue"];

/// Plants secret-looking variables (unique names, so parallel tests do not collide), once.
pub fn set_secret_env() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // SAFETY (edition 2021 allows it safely): set once, before any test reads these names.
        std::env::set_var("OBSKIT_IT_DATABASE_URL", "postgres://u:pw@h/db");
        std::env::set_var("OBSKIT_IT_AWS_SECRET_ACCESS_KEY", "AKIAsecretvalue");
        std::env::set_var("OBSKIT_IT_JWT_SIGNING_KEY", "jwt-signing-secret");
        std::env::set_var("obskit_it_api_key", "apikeyvalue");
    });
}

/// A service handler as the tests write them.
pub type Handler = fn(
    hyper::Request<obskit::http::RequestBody<hyper::body::Incoming>>,
) -> std::pin::Pin<
    Box<
        dyn std::future::Future<
                Output = Result<
                    hyper::Response<http_body_util::Full<bytes::Bytes>>,
                    std::convert::Infallible,
                >,
            > + Send,
    >,
>;

/// An Obskit served with a handler on a free loopback port (`Obskit::serve_with_shutdown`),
/// stopped by [`Served::shutdown`] or, failing that, aborted when dropped.
pub struct Served {
    pub addr: SocketAddr,
    pub obskit: obskit::Obskit,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Served {
    pub async fn start(builder: obskit::ObskitBuilder, handler: Handler) -> Served {
        let obskit = builder.build().expect("obskit builds");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let served = obskit.clone();
        let task = tokio::spawn(async move {
            let shutdown = async move {
                let _ = stopped.await;
            };
            served
                .serve_with_shutdown(listener, hyper::service::service_fn(handler), shutdown)
                .await
        });
        Served {
            addr,
            obskit,
            stop: Some(stop),
            task: Some(task),
        }
    }

    /// Stops the server and checks that it returns cleanly, within a generous bound.
    pub async fn shutdown(mut self) {
        let _ = self.stop.take().unwrap().send(());
        let result = tokio::time::timeout(std::time::Duration::from_secs(15), self.task.take().unwrap())
            .await
            .expect("server stops after the shutdown signal");
        result.expect("serve task").expect("serve returns Ok");
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}
