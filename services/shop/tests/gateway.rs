//! The gateway alone, in front of stub services on loopback: hardened serving (silent and
//! partial connections closed), hop-by-hop headers, upstream timeouts (504) and the body cap
//! at the edge (413), all as JSON.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response};
use obskit::serve::{Server, ServerSettings};
use shop::gateway::{self, GatewayConfig, Route, Routes};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

const SHORT: Duration = Duration::from_millis(300);

/// A stub service: `/api/slow` answers after 2 s; anything else reads the body and answers with
/// the request's headers and body length as JSON, adding hop-by-hop headers of its own.
async fn stub(request: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    if request.uri().path() == "/api/slow" {
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    let headers: serde_json::Map<String, serde_json::Value> = request
        .headers()
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").into()))
        .collect();
    let length = match request.into_body().collect().await {
        Ok(body) => body.to_bytes().len(),
        Err(_) => 0,
    };
    let body = serde_json::json!({ "headers": headers, "length": length }).to_string();
    Ok(Response::builder()
        .header("connection", "x-upstream-hop")
        .header("x-upstream-hop", "secret")
        .header("keep-alive", "timeout=5")
        .header("x-upstream-kept", "yes")
        .body(Full::new(Bytes::from(body)))
        .unwrap())
}

struct Running {
    addr: SocketAddr,
    stop: Vec<oneshot::Sender<()>>,
    tasks: Vec<tokio::task::JoinHandle<std::io::Result<()>>>,
}

impl Running {
    async fn stop(mut self) {
        for stop in self.stop.drain(..) {
            let _ = stop.send(());
        }
        for task in self.tasks.drain(..) {
            tokio::time::timeout(Duration::from_secs(15), task)
                .await
                .expect("stops")
                .unwrap()
                .unwrap();
        }
    }
}

/// A stub service, and the gateway routing `/api/` to `upstream` (the stub when `None`).
async fn start(config: GatewayConfig, upstream: Option<SocketAddr>) -> Running {
    let mut stop = Vec::new();
    let mut tasks = Vec::new();
    let upstream = match upstream {
        Some(addr) => addr,
        None => {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let (tx, rx) = oneshot::channel::<()>();
            stop.push(tx);
            tasks.push(tokio::spawn(async move {
                let until = async move {
                    let _ = rx.await;
                };
                let settings = ServerSettings::default().shutdown_drain(Duration::from_millis(100));
                Server::new(settings)
                    .serve(listener, hyper::service::service_fn(stub), until)
                    .await
            }));
            addr
        }
    };
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let routes = Routes::new(vec![Route {
        prefix: "/api/".into(),
        upstream,
    }]);
    let (tx, rx) = oneshot::channel::<()>();
    stop.insert(0, tx);
    tasks.insert(
        0,
        tokio::spawn(async move {
            let until = async move {
                let _ = rx.await;
            };
            gateway::serve_with(listener, routes, config, until).await
        }),
    );
    Running { addr, stop, tasks }
}

fn config() -> GatewayConfig {
    GatewayConfig {
        server: ServerSettings::default()
            .head_timeout(SHORT)
            .shutdown_drain(Duration::from_millis(500)),
        ..GatewayConfig::default()
    }
}

/// Reads until the gateway closes the connection; the time that took (`None` past `limit`)
/// and what was read.
async fn read_until_closed(stream: &mut TcpStream, limit: Duration) -> (Option<Duration>, String) {
    let started = Instant::now();
    let mut read = Vec::new();
    let mut buf = [0u8; 8192];
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

/// Sends `request` (raw HTTP/1.1, which must ask `connection: close`) and returns the status
/// and the body parsed as JSON.
async fn exchange(addr: SocketAddr, request: &[u8]) -> (u16, String, serde_json::Value) {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    // The gateway may answer (413) before reading it all: a failed write is no failure here.
    let _ = stream.write_all(request).await;
    let (closed, text) = read_until_closed(&mut stream, Duration::from_secs(10)).await;
    assert!(closed.is_some(), "answered and closed: {text}");
    let (head, body) = text
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("a response: {text:?}"));
    let status = head[9..12].parse().unwrap();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("JSON body ({e}): {body:?}"));
    (status, head.to_ascii_lowercase(), json)
}

#[tokio::test]
async fn silent_and_partial_connections_are_closed() {
    let gateway = start(config(), None).await;
    let mut silent: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        silent.push(TcpStream::connect(gateway.addr).await.unwrap());
    }
    let mut partial: Vec<TcpStream> = Vec::new();
    for _ in 0..20 {
        let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
        stream
            .write_all(b"GET /api/products HTTP/1.1\r\nhost: localhost\r\nx-half: ")
            .await
            .unwrap();
        partial.push(stream);
    }
    let mut slowest = Duration::ZERO;
    for stream in silent.iter_mut().chain(partial.iter_mut()) {
        let (closed, _) = read_until_closed(stream, SHORT * 5).await;
        slowest = slowest.max(closed.expect("closed within five head timeouts"));
    }
    eprintln!("40 silent or half-sent connections closed by the gateway, the last after {slowest:?}");
    let (status, _, _) = exchange(
        gateway.addr,
        b"GET /api/products HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(status, 200, "still serving");
    gateway.stop().await;
}

#[tokio::test]
async fn hop_by_hop_headers_are_dropped_both_ways() {
    let gateway = start(config(), None).await;
    let request = b"GET /api/products HTTP/1.1\r\nhost: shop.test\r\n\
        connection: close, x-client-hop\r\nx-client-hop: secret\r\nkeep-alive: timeout=9\r\n\
        te: trailers\r\nproxy-authorization: Basic eA==\r\nx-end-to-end: kept\r\n\r\n";
    let (status, head, json) = exchange(gateway.addr, request).await;
    assert_eq!(status, 200);
    let seen = &json["headers"];
    eprintln!("the service saw: {seen}");
    for hop in ["x-client-hop", "keep-alive", "te", "proxy-authorization"] {
        assert!(seen.get(hop).is_none(), "{hop} was forwarded: {seen}");
    }
    assert_eq!(seen["x-end-to-end"], "kept");
    assert!(
        seen["forwarded"].as_str().unwrap().contains("host=\"shop.test\""),
        "{seen}"
    );
    assert!(!head.contains("x-upstream-hop"), "{head}");
    assert!(!head.contains("keep-alive"), "{head}");
    assert!(head.contains("x-upstream-kept: yes"), "{head}");
    gateway.stop().await;
}

#[tokio::test]
async fn a_slow_service_is_a_504() {
    let config = GatewayConfig {
        upstream_timeout: SHORT,
        ..config()
    };
    let gateway = start(config, None).await;
    let started = Instant::now();
    let (status, _, json) = exchange(
        gateway.addr,
        b"GET /api/slow HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    eprintln!(
        "slow service answered {status} after {:?}: {json}",
        started.elapsed()
    );
    assert_eq!(status, 504);
    assert_eq!(json["error"], "gateway_timeout");
    gateway.stop().await;
}

#[tokio::test]
async fn an_unreachable_service_is_a_504() {
    // A listener that never accepts, with a backlog of one, filled: further connection
    // attempts get no answer from the kernel, so they time out.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let full = socket.listen(1).unwrap();
    let upstream = full.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(Ok(stream)) =
            tokio::time::timeout(Duration::from_millis(200), TcpStream::connect(upstream)).await
        {
            fillers.push(stream);
        }
    }
    let config = GatewayConfig {
        upstream_connect_timeout: SHORT,
        ..config()
    };
    let gateway = start(config, Some(upstream)).await;
    let started = Instant::now();
    let (status, _, json) = exchange(
        gateway.addr,
        b"GET /api/products HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n",
    )
    .await;
    eprintln!(
        "unreachable service ({} connections filled its backlog): {status} after {:?}: {json}",
        fillers.len(),
        started.elapsed()
    );
    assert_eq!(status, 504, "{json}");
    assert_eq!(json["error"], "gateway_timeout");
    drop(full);
    gateway.stop().await;
}

#[tokio::test]
async fn bodies_over_64_kib_are_refused_at_the_edge() {
    let gateway = start(config(), None).await;
    let big = vec![b'x'; 64 * 1024 + 1];
    // Declared too large: refused before a byte of the body is read.
    let mut request = format!(
        "POST /api/cart HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        big.len()
    )
    .into_bytes();
    request.extend_from_slice(&big);
    let (status, head, json) = exchange(gateway.addr, &request).await;
    assert_eq!(status, 413, "{json}");
    assert_eq!(json["error"], "payload_too_large");
    assert!(head.contains("content-type: application/json"), "{head}");
    // Chunked, with no length: refused once 64 KiB have passed.
    let mut request =
        b"POST /api/cart HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n"
            .to_vec();
    for chunk in big.chunks(16 * 1024) {
        request.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
        request.extend_from_slice(chunk);
        request.extend_from_slice(b"\r\n");
    }
    request.extend_from_slice(b"0\r\n\r\n");
    let (status, _, json) = exchange(gateway.addr, &request).await;
    eprintln!("chunked 64 KiB + 1: {status} {json}");
    assert_eq!(status, 413, "{json}");
    // 64 KiB exactly passes.
    let fits = vec![b'y'; 64 * 1024];
    let mut request = format!(
        "POST /api/cart HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\ncontent-length: {}\r\n\r\n",
        fits.len()
    )
    .into_bytes();
    request.extend_from_slice(&fits);
    let (status, _, json) = exchange(gateway.addr, &request).await;
    assert_eq!(status, 200, "{json}");
    assert_eq!(json["length"], 64 * 1024);
    gateway.stop().await;
}
