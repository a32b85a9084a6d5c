//! The launcher side of `shop`: settles the shared configuration, starts the four services as
//! children of this binary, prefixes their logs, waits until each answers its liveness probe,
//! serves the gateway, and stops everything on Ctrl-C or SIGTERM (or when a child dies).

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::process::Stdio;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::Empty;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::process::{Child, Command};

use crate::gateway::{self, Route, Routes};
use crate::{BoxError, ServiceSpec, SERVICES};

/// Environment variable with the gateway's port (default 8080).
pub const GATEWAY_PORT_ENV: &str = "GATEWAY_PORT";
/// The gateway's port when `GATEWAY_PORT` is unset.
pub const DEFAULT_GATEWAY_PORT: u16 = 8080;
/// How long the services get to answer their liveness probes after start.
const START_TIMEOUT: Duration = Duration::from_secs(60);
/// How long a service gets to stop after SIGTERM before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// What the launcher settled before starting anything.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The address everything listens on.
    pub host: IpAddr,
    /// Each service with its port.
    pub services: Vec<(ServiceSpec, u16)>,
    /// The gateway's port.
    pub gateway_port: u16,
    /// Environment every child gets on top of the launcher's own.
    pub child_env: Vec<(String, String)>,
    /// Whether `JWT_SECRET` was unset, so a random one was made for this run.
    pub generated_secret: bool,
}

impl Plan {
    /// The plan from environment lookups `env` (the process environment in `main`).
    ///
    /// One JWT secret for all four services: the user service mints tokens the others verify,
    /// so when `JWT_SECRET` is unset a random one is made here, once, rather than one per
    /// service. The services find each other through `BACKEND_URL`, `CART_URL`, `ORDER_URL`
    /// and `USER_URL`, set to the ports chosen here unless given.
    ///
    /// ```
    /// let plan = shop::launcher::Plan::from_lookup(&|name| match name {
    ///     "CART_PORT" => Some("9001".to_string()),
    ///     _ => None,
    /// }).unwrap();
    /// assert_eq!(plan.gateway_port, 8080);
    /// assert!(plan.generated_secret);
    /// assert!(plan.child_env.contains(&("CART_URL".to_string(), "http://127.0.0.1:9001".to_string())));
    /// ```
    pub fn from_lookup(env: &dyn Fn(&str) -> Option<String>) -> Result<Plan, BoxError> {
        let host = shop_common::listen_host_from(env)?;
        let reach = reachable(host);
        let mut services = Vec::new();
        let mut child_env = Vec::new();
        for spec in SERVICES {
            let port = shop_common::port_from(env, spec.port_env, spec.default_port)?;
            services.push((spec, port));
            child_env.push((spec.port_env.to_string(), port.to_string()));
            let url = env(spec.url_env)
                .filter(|u| !u.trim().is_empty())
                .unwrap_or_else(|| format!("http://{}", SocketAddr::new(reach, port)));
            child_env.push((spec.url_env.to_string(), url));
        }
        let gateway_port = shop_common::port_from(env, GATEWAY_PORT_ENV, DEFAULT_GATEWAY_PORT)?;
        let mut ports: Vec<u16> = services.iter().map(|(_, p)| *p).collect();
        ports.push(gateway_port);
        ports.sort_unstable();
        if ports.windows(2).any(|w| w[0] == w[1]) {
            return Err(format!("two parts of the shop are given the same port: {ports:?}").into());
        }
        let secret_env = shop_common::auth::JWT_SECRET_ENV;
        let generated_secret = env(secret_env).filter(|s| !s.is_empty()).is_none();
        if generated_secret {
            child_env.push((secret_env.to_string(), random_secret()?));
        }
        Ok(Plan {
            host,
            services,
            gateway_port,
            child_env,
            generated_secret,
        })
    }

    fn reach(&self, port: u16) -> SocketAddr {
        SocketAddr::new(reachable(self.host), port)
    }
}

/// Where this machine reaches a server listening on `host`: services listening on all
/// interfaces are reached through loopback.
fn reachable(host: IpAddr) -> IpAddr {
    if host.is_unspecified() {
        IpAddr::from([127, 0, 0, 1])
    } else {
        host
    }
}

fn random_secret() -> Result<String, BoxError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| format!("the OS random source failed: {e}"))?;
    Ok(bytes.iter().map(|b| format!("{b:02x}")).collect())
}

/// Copies `reader` to this process's stderr line by line, each line prefixed with `name`: the
/// launcher's own output, which builds no obskit and so has no logger (nor needs one).
fn prefix_lines(name: &'static str, reader: impl AsyncRead + Unpin + Send + 'static) {
    tokio::spawn(async move {
        let mut lines = BufReader::new(reader).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            eprintln!("[{name:<7}] {line}");
        }
    });
}

fn spawn_child(spec: &ServiceSpec, plan: &Plan) -> Result<Child, BoxError> {
    let exe = std::env::current_exe()?;
    let mut command = Command::new(exe);
    command
        .arg("serve")
        .arg(spec.name)
        .envs(plan.child_env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
    // A child's stdout is a pipe to us, so its logger would pick JSON; when the person running
    // the shop reads our stderr in a terminal, ask for readable lines instead. Otherwise (a file,
    // CI) the children pick for themselves, and an explicit OBSKIT_LOG_FORMAT is inherited.
    if std::io::stderr().is_terminal() && std::env::var_os(obskit::log::LOG_FORMAT_ENV).is_none() {
        command.env(obskit::log::LOG_FORMAT_ENV, "text");
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Should the launcher itself die, its children are not left behind.
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("starting {}: {e}", spec.name))?;
    if let Some(stdout) = child.stdout.take() {
        prefix_lines(spec.name, stdout);
    }
    if let Some(stderr) = child.stderr.take() {
        prefix_lines(spec.name, stderr);
    }
    Ok(child)
}

/// Polls `http://addr/health/live` until it answers 200 or `deadline` passes.
async fn wait_live(addr: SocketAddr, deadline: Instant) -> bool {
    let client: Client<_, Empty<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let Ok(uri) = format!("http://{addr}/health/live").parse::<http::Uri>() else {
        return false;
    };
    while Instant::now() < deadline {
        if let Ok(Ok(response)) = tokio::time::timeout(Duration::from_secs(2), client.get(uri.clone())).await
        {
            if response.status().is_success() {
                return true;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    false
}

/// Sends SIGTERM (graceful stop: the services flush spans and close connections), then kills
/// what is still running after [`STOP_TIMEOUT`].
async fn stop_children(children: &mut [(&'static str, Child)]) {
    for (_, child) in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) with a pid this process spawned and has not yet reaped.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for (name, child) in children.iter_mut() {
        match tokio::time::timeout(STOP_TIMEOUT, child.wait()).await {
            Ok(_) => {}
            Err(_) => {
                // The launcher's own terminal output (it has no logger).
                eprintln!("shop: {name} did not stop within {STOP_TIMEOUT:?}; killing it");
                let _ = child.kill().await;
            }
        }
    }
}

/// Waits until any child exits; its name and status.
async fn first_exit(children: &mut [(&'static str, Child)]) -> (&'static str, String) {
    loop {
        for (name, child) in children.iter_mut() {
            if let Ok(Some(status)) = child.try_wait() {
                return (name, status.to_string());
            }
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Runs the shop until Ctrl-C or SIGTERM. An error when a service fails to start, or when one
/// exits on its own while the shop runs (the others are stopped first).
pub async fn run(plan: Plan) -> Result<(), BoxError> {
    // The gateway's records (an upstream that did not answer): the launcher builds no `Obskit`,
    // so it installs obskit's logs itself, configured by the same variables as the services'.
    let log_settings = obskit::log::LogSettings::from_env_source(&obskit::settings::ProcessEnv)?;
    obskit::log::Logs::install(&log_settings, "gateway", &obskit::metrics::Registry::new())?;
    if plan.generated_secret {
        // The launcher's own terminal output, like `shop: ready` below.
        eprintln!(
            "shop: WARNING: {} is not set; the services share a random secret made for this run, \
             so tokens stop working when the shop restarts",
            shop_common::auth::JWT_SECRET_ENV
        );
    }
    let gateway_addr = SocketAddr::new(plan.host, plan.gateway_port);
    let gateway_listener = tokio::net::TcpListener::bind(gateway_addr)
        .await
        .map_err(|e| format!("gateway: binding {gateway_addr}: {e}"))?;
    let mut children: Vec<(&'static str, Child)> = Vec::new();
    let deadline = Instant::now() + START_TIMEOUT;
    for (spec, port) in &plan.services {
        match spawn_child(spec, &plan) {
            Ok(child) => children.push((spec.name, child)),
            Err(e) => {
                stop_children(&mut children).await;
                return Err(e);
            }
        }
        // Dependencies first: a service's health checks find the ones it calls running.
        if !wait_live(plan.reach(*port), deadline).await {
            stop_children(&mut children).await;
            return Err(format!(
                "{} did not become live on port {port} within {START_TIMEOUT:?}",
                spec.name
            )
            .into());
        }
    }
    let routes = Routes::new(
        plan.services
            .iter()
            .map(|(spec, port)| Route {
                prefix: spec.prefix.to_string(),
                upstream: plan.reach(*port),
            })
            .collect(),
    );
    let (stop_gateway, gateway_stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway_task = tokio::spawn(gateway::serve(gateway_listener, routes, async move {
        let _ = gateway_stopped.await;
    }));

    println!("shop: ready");
    println!(
        "  gateway   http://{}  ({})",
        plan.reach(plan.gateway_port),
        prefixes(&plan)
    );
    for (spec, port) in &plan.services {
        let base = plan.reach(*port);
        println!(
            "  {:<9} http://{base}{}  metrics http://{base}/metrics  health http://{base}/health  profiles http://{base}/profiles/",
            spec.name, spec.prefix
        );
    }
    println!("  stop with Ctrl-C");

    let outcome = tokio::select! {
        () = obskit::shutdown_signal() => {
            eprintln!("shop: stopping");
            Ok(())
        }
        (name, status) = first_exit(&mut children) => {
            Err(format!("{name} exited on its own ({status}); stopping the shop").into())
        }
    };
    let _ = stop_gateway.send(());
    let _ = gateway_task.await;
    stop_children(&mut children).await;
    outcome
}

fn prefixes(plan: &Plan) -> String {
    plan.services
        .iter()
        .map(|(spec, _)| spec.prefix)
        .collect::<Vec<_>>()
        .join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(vars: &[(&str, &str)]) -> Result<Plan, BoxError> {
        let vars: Vec<(String, String)> = vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Plan::from_lookup(&move |name| vars.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    fn child_var(plan: &Plan, name: &str) -> Option<String> {
        plan.child_env
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }

    #[test]
    fn defaults_are_the_contracts_ports_on_loopback() {
        let plan = plan(&[]).unwrap();
        let ports: Vec<u16> = plan.services.iter().map(|(_, p)| *p).collect();
        assert_eq!(ports, [8000, 8002, 8001, 8003]);
        assert_eq!(plan.host, IpAddr::from([127, 0, 0, 1]));
        assert_eq!(
            child_var(&plan, "ORDER_URL").as_deref(),
            Some("http://127.0.0.1:8002")
        );
        // One secret for all four, made once.
        assert_eq!(child_var(&plan, "JWT_SECRET").map(|s| s.len()), Some(64));
    }

    #[test]
    fn given_secret_and_urls_are_left_alone_and_wildcard_hosts_are_reached_on_loopback() {
        let plan = plan(&[
            ("JWT_SECRET", "from-the-operator"),
            ("CART_URL", "http://cart.internal:8001"),
            ("SHOP_LISTEN_HOST", "0.0.0.0"),
        ])
        .unwrap();
        assert!(!plan.generated_secret);
        assert_eq!(child_var(&plan, "JWT_SECRET"), None, "inherited, not replaced");
        assert_eq!(
            child_var(&plan, "CART_URL").as_deref(),
            Some("http://cart.internal:8001")
        );
        assert_eq!(
            child_var(&plan, "BACKEND_URL").as_deref(),
            Some("http://127.0.0.1:8000")
        );
    }

    #[test]
    fn bad_ports_hosts_and_clashes_are_refused_with_the_variable_named() {
        let e = plan(&[("CART_PORT", "eighty")]).unwrap_err().to_string();
        assert!(e.contains("CART_PORT"), "{e}");
        let e = plan(&[("SHOP_LISTEN_HOST", "localhost:1")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("SHOP_LISTEN_HOST"), "{e}");
        let e = plan(&[("GATEWAY_PORT", "8000")]).unwrap_err().to_string();
        assert!(e.contains("same port"), "{e}");
    }
}
