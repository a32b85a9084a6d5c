//! Integration tests of hardened serving (`obskit::serve`): head, body and idle timeouts, the
//! connection cap, header limits and graceful shutdown, on a real `Obskit::serve` with short
//! timeouts, driven over raw TCP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use obskit::admin::AdminAccess;
use obskit::http::RequestBody;
use obskit::metrics::Registry;
use obskit::serve::ServerSettings;
use obskit::Obskit;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

/// The timeouts the tests configure, short so that the tests are quick.
const SHORT: Duration = Duration::from_millis(300);
/// What the tests wait at most for something that should take `SHORT`.
const BOUND: Duration = Duration::from_millis(1500);

/// `/slow` answers after 500 ms, `/hang` never, `/echo` with the body's length (or the error
/// reading it, which it also reports on `errors`), anything else at once.
async fn handler(
    request: Request<RequestBody<Incoming>>,
    errors: mpsc::UnboundedSender<String>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match request.uri().path() {
        "/slow" => {
            tokio::time::sleep(Duration::from_millis(500)).await;
            "slow done".to_string()
        }
        "/hang" => std::future::pending().await,
        "/echo" => match request.into_body().collect().await {
            Ok(body) => format!("{} bytes", body.to_bytes().len()),
            Err(error) => {
                let _ = errors.send(error.to_string());
                "body failed".to_string()
            }
        },
        _ => "ok".to_string(),
    };
    Ok(Response::new(Full::new(Bytes::from(body))))
}

struct Served {
    addr: SocketAddr,
    registry: Registry,
    errors: mpsc::UnboundedReceiver<String>,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Served {
    async fn start(settings: ServerSettings) -> Served {
        let registry = Registry::new();
        let obskit = Obskit::builder()
            .service("hardening")
            .registry(registry.clone())
            .admin_access(AdminAccess::LoopbackOnly)
            .recent_spans(0)
            .memory_check(false)
            .server_settings(settings)
            .build()
            .expect("obskit builds");
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (errors_tx, errors) = mpsc::unbounded_channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let service = hyper::service::service_fn(move |request| handler(request, errors_tx.clone()));
        let task = tokio::spawn(async move {
            let until = async move {
                let _ = stopped.await;
            };
            obskit.serve_with_shutdown(listener, service, until).await
        });
        Served {
            addr,
            registry,
            errors,
            stop: Some(stop),
            task,
        }
    }

    fn metric(&self, series: &str) -> f64 {
        let text = self.registry.encode_text();
        text.lines()
            .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    }

    fn closed(&self, reason: &str) -> f64 {
        self.metric(&format!(
            "obskit_server_connections_closed_total{{reason=\"{reason}\"}}"
        ))
    }

    /// Waits (bounded) until `series` reaches `value`: the close is counted just after the
    /// socket closes.
    async fn wait_metric(&self, series: &str, value: f64) -> f64 {
        let until = Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.metric(series);
            if now >= value || Instant::now() > until {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    async fn wait_closed(&self, reason: &str, value: f64) -> f64 {
        self.wait_metric(
            &format!("obskit_server_connections_closed_total{{reason=\"{reason}\"}}"),
            value,
        )
        .await
    }

    async fn stop(mut self) -> Duration {
        let started = Instant::now();
        let _ = self.stop.take().unwrap().send(());
        tokio::time::timeout(Duration::from_secs(15), &mut self.task)
            .await
            .expect("the server stops")
            .expect("serve task")
            .expect("serve returns Ok");
        started.elapsed()
    }
}

fn settings() -> ServerSettings {
    ServerSettings::default()
        .head_timeout(SHORT)
        .body_timeout(SHORT)
        .idle_timeout(SHORT)
}

/// Reads until the server closes the connection (EOF or reset); how long that took, or `None`
/// past `limit`. What was read comes back too.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Option<Duration>, String) {
    let started = Instant::now();
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let left = limit.saturating_sub(started.elapsed());
        match tokio::time::timeout(left, stream.read(&mut buf)).await {
            Err(_) => return (None, String::from_utf8_lossy(&read).into_owned()),
            Ok(Ok(0)) | Ok(Err(_)) => {
                return (
                    Some(started.elapsed()),
                    String::from_utf8_lossy(&read).into_owned(),
                )
            }
            Ok(Ok(n)) => read.extend_from_slice(&buf[..n]),
        }
    }
}

/// Sends a GET and reads one response (which must have a `content-length`), keeping the
/// connection open.
async fn get_on(stream: &mut TcpStream, path: &str) -> String {
    let request = format!("GET {path} HTTP/1.1\r\nhost: localhost\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    read_response(stream).await
}

async fn read_response(stream: &mut TcpStream) -> String {
    let mut read = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf))
            .await
            .expect("a response in time")
            .expect("read");
        assert!(
            n > 0,
            "closed before a full response: {:?}",
            String::from_utf8_lossy(&read)
        );
        read.extend_from_slice(&buf[..n]);
        let text = String::from_utf8_lossy(&read).into_owned();
        if let Some(head_end) = text.find("\r\n\r\n") {
            let length = text[..head_end]
                .lines()
                .find_map(|l| {
                    let (name, value) = l.split_once(':')?;
                    name.eq_ignore_ascii_case("content-length")
                        .then(|| value.trim().parse::<usize>().ok())?
                })
                .expect("content-length");
            if read.len() >= head_end + 4 + length {
                return text;
            }
        }
    }
}

async fn plain_get(addr: SocketAddr, path: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    get_on(&mut stream, path).await
}

#[tokio::test]
async fn a_silent_connection_is_closed_at_the_head_timeout() {
    let server = Served::start(settings()).await;
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(server.addr).await.unwrap());
    }
    let mut closes = Vec::new();
    for stream in &mut silent {
        let (closed, read) = read_until_closed(stream, BOUND * 2).await;
        assert_eq!(read, "", "a silent connection gets no answer");
        closes.push(closed.expect("the silent connection is closed"));
    }
    let slowest = closes.iter().max().unwrap();
    eprintln!("20 silent connections closed, the last after {slowest:?} (head timeout {SHORT:?})");
    assert!(*slowest <= BOUND * 2, "{closes:?}");
    assert_eq!(server.wait_closed("head_timeout", 20.0).await, 20.0);
    assert_eq!(server.metric("obskit_server_connections_open"), 0.0);
    assert!(plain_get(server.addr, "/").await.ends_with("ok"), "still serving");
    server.stop().await;
}

#[tokio::test]
async fn a_partial_head_is_closed_at_the_head_timeout() {
    let server = Served::start(settings()).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
        .await
        .unwrap();
    let (closed, read) = read_until_closed(&mut stream, BOUND).await;
    eprintln!("partial head closed after {closed:?}, answer {read:?}");
    assert!(closed.is_some(), "closed within {BOUND:?}");
    assert_eq!(server.wait_closed("head_timeout", 1.0).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn an_idle_keep_alive_connection_is_closed_at_the_idle_timeout() {
    // A head timeout far above the idle one: the close must be the idle timeout's.
    let server = Served::start(settings().head_timeout(Duration::from_secs(30))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut stream, "/").await.ends_with("ok"));
    assert!(get_on(&mut stream, "/").await.ends_with("ok"), "kept alive");
    let (closed, _) = read_until_closed(&mut stream, BOUND).await;
    eprintln!("idle connection closed after {closed:?} (idle timeout {SHORT:?})");
    assert!(closed.is_some(), "closed within {BOUND:?}");
    assert_eq!(server.wait_closed("idle_timeout", 1.0).await, 1.0);
    assert_eq!(server.closed("head_timeout"), 0.0);
    server.stop().await;
}

#[tokio::test]
async fn a_partial_head_after_an_idle_spell_is_closed_at_the_head_timeout() {
    let server = Served::start(settings().idle_timeout(Duration::from_secs(30))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut stream, "/").await.ends_with("ok"));
    stream.write_all(b"GET / HTTP/1.1\r\nhost: ").await.unwrap();
    let (closed, _) = read_until_closed(&mut stream, BOUND).await;
    eprintln!("second, partial head closed after {closed:?}");
    assert!(closed.is_some(), "closed within {BOUND:?}");
    assert_eq!(server.wait_closed("head_timeout", 1.0).await, 1.0);
    server.stop().await;
}

#[tokio::test]
async fn a_stalled_body_is_cut_at_the_body_timeout() {
    let mut server = Served::start(settings().head_timeout(Duration::from_secs(30))).await;
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 10\r\n\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    let mut sent = 0;
    // One byte per twice the timeout: each gap alone is past it.
    let closed = loop {
        if stream.write_all(b"x").await.is_err() {
            break started.elapsed();
        }
        sent += 1;
        let (closed, _) = read_until_closed(&mut stream, SHORT * 2).await;
        if closed.is_some() {
            break started.elapsed();
        }
        assert!(
            sent < 10,
            "the whole body went through, one byte per {:?}",
            SHORT * 2
        );
    };
    eprintln!("stalled body cut after {closed:?} and {sent} bytes (body timeout {SHORT:?})");
    assert!(sent <= 2, "cut at the first stall, not after {sent} bytes");
    let error = tokio::time::timeout(Duration::from_secs(5), server.errors.recv())
        .await
        .expect("the handler saw its body fail")
        .unwrap();
    eprintln!("the handler read: {error}");
    assert_eq!(server.wait_closed("body_timeout", 1.0).await, 1.0);
    // A body that keeps coming is not cut.
    let mut stream = TcpStream::connect(server.addr).await.unwrap();
    stream
        .write_all(b"POST /echo HTTP/1.1\r\nhost: localhost\r\ncontent-length: 4\r\n\r\n")
        .await
        .unwrap();
    for _ in 0..4 {
        tokio::time::sleep(SHORT / 3).await;
        stream.write_all(b"y").await.unwrap();
    }
    assert!(read_response(&mut stream).await.ends_with("4 bytes"));
    server.stop().await;
}

#[tokio::test]
async fn connections_past_the_cap_wait_then_are_served() {
    let long = Duration::from_secs(30);
    let server = Served::start(
        ServerSettings::default()
            .head_timeout(long)
            .idle_timeout(long)
            .max_connections(2),
    )
    .await;
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut first, "/").await.ends_with("ok"));
    assert!(get_on(&mut second, "/").await.ends_with("ok"));
    // The third connects (the kernel's backlog takes it) but is not served while both slots
    // are taken.
    let mut third = TcpStream::connect(server.addr).await.unwrap();
    third
        .write_all(b"GET / HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut buf = [0u8; 64];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut buf)).await;
    assert!(
        early.is_err(),
        "the third connection was served past the cap: {early:?}"
    );
    assert_eq!(
        server
            .wait_metric("obskit_server_connection_waits_total", 1.0)
            .await,
        1.0
    );
    assert_eq!(server.metric("obskit_server_connections_open"), 2.0);
    let released = Instant::now();
    drop(first);
    let answer = read_response(&mut third).await;
    eprintln!(
        "third connection served {:?} after a slot freed; open now {}",
        released.elapsed(),
        server.metric("obskit_server_connections_open")
    );
    assert!(answer.ends_with("ok"), "{answer}");
    // Its own keep-alive connection can read /metrics: the wait was counted and timed.
    let metrics = get_on(&mut third, "/metrics").await;
    // One wait is over (the third's); with both slots taken again, the next one is under way.
    assert!(
        metrics.contains("obskit_server_connection_wait_seconds_count 1"),
        "{metrics}"
    );
    assert!(
        server.metric("obskit_server_connection_waits_total") >= 1.0,
        "{metrics}"
    );
    drop(second);
    drop(third);
    server.stop().await;
}

#[tokio::test]
async fn oversized_heads_get_431_and_the_server_goes_on() {
    let server = Served::start(settings().max_header_bytes(8192).max_headers(10)).await;
    let mut big = TcpStream::connect(server.addr).await.unwrap();
    let value = "v".repeat(16 * 1024);
    let request = format!("GET / HTTP/1.1\r\nhost: localhost\r\nx-big: {value}\r\n\r\n");
    let _ = big.write_all(request.as_bytes()).await;
    let (_, answer) = read_until_closed(&mut big, Duration::from_secs(5)).await;
    eprintln!("16 KiB header: {:?}", answer.lines().next());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    let mut many = TcpStream::connect(server.addr).await.unwrap();
    let headers: String = (0..20).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nhost: localhost\r\n{headers}\r\n");
    let _ = many.write_all(request.as_bytes()).await;
    let (_, answer) = read_until_closed(&mut many, Duration::from_secs(5)).await;
    eprintln!("21 headers: {:?}", answer.lines().next());
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer}");

    // Ten headers pass.
    let mut fine = TcpStream::connect(server.addr).await.unwrap();
    let headers: String = (0..8).map(|i| format!("x-h{i}: {i}\r\n")).collect();
    let request = format!("GET / HTTP/1.1\r\nhost: localhost\r\n{headers}\r\n");
    fine.write_all(request.as_bytes()).await.unwrap();
    assert!(read_response(&mut fine).await.ends_with("ok"));
    assert!(plain_get(server.addr, "/").await.ends_with("ok"), "still serving");
    server.stop().await;
}

#[tokio::test]
async fn shutdown_drains_in_flight_requests_and_cuts_the_rest_at_the_deadline() {
    let long = Duration::from_secs(30);
    let drain = Duration::from_secs(1);
    let server = Served::start(
        ServerSettings::default()
            .head_timeout(long)
            .idle_timeout(long)
            .shutdown_drain(drain),
    )
    .await;
    let mut slow = TcpStream::connect(server.addr).await.unwrap();
    slow.write_all(b"GET /slow HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut hung = TcpStream::connect(server.addr).await.unwrap();
    hung.write_all(b"GET /hang HTTP/1.1\r\nhost: localhost\r\n\r\n")
        .await
        .unwrap();
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    assert!(get_on(&mut idle, "/").await.ends_with("ok"));
    // Both requests are in progress before the shutdown starts.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let registry = server.registry.clone();
    let stopping = tokio::spawn(server.stop());
    let answer = read_response(&mut slow).await;
    assert!(
        answer.ends_with("slow done"),
        "the in-flight request finished: {answer}"
    );
    let (idle_closed, _) = read_until_closed(&mut idle, Duration::from_secs(5)).await;
    assert!(idle_closed.is_some(), "the idle connection is closed at once");
    let took = stopping.await.unwrap();
    let (hung_closed, _) = read_until_closed(&mut hung, Duration::from_secs(5)).await;
    eprintln!("shutdown returned after {took:?} (drain deadline {drain:?}); hung connection closed: {hung_closed:?}");
    assert!(took >= drain, "waited for the hung request until the deadline");
    assert!(took < drain * 5, "{took:?}");
    assert!(hung_closed.is_some(), "the hung connection is cut");
    let text = registry.encode_text();
    assert!(
        text.contains(r#"obskit_server_connections_closed_total{reason="shutdown_deadline"} 1"#),
        "{text}"
    );
    assert!(
        text.contains(r#"obskit_server_connections_closed_total{reason="shutdown"} 2"#),
        "{text}"
    );
    assert!(text.contains("obskit_server_connections_open 0"), "{text}");
}
