//! [`ServerSettings`]: every limit and timeout of a served connection, with nginx-like defaults.

use std::time::Duration;

/// The limits and timeouts of a [`Server`](super::Server): how long a client may take to send a
/// request head, to send its body, or to stay idle; how many connections are served at once;
/// how large a request head may be; the HTTP/2 limits; and how long a graceful shutdown waits.
///
/// The defaults follow nginx's where nginx has one (`client_header_timeout`,
/// `client_body_timeout`, `keepalive_timeout`, `large_client_header_buffers`,
/// `http2_max_concurrent_streams`), tightened where a JSON API needs less:
///
/// | setting | default | nginx's |
/// | --- | --- | --- |
/// | [`head_timeout`](Self::head_timeout) | 30 s, from accept (or from the first byte after an idle spell) | `client_header_timeout 60s` |
/// | [`body_timeout`](Self::body_timeout) | 60 s between two body reads | `client_body_timeout 60s` |
/// | [`idle_timeout`](Self::idle_timeout) | 75 s without a request in progress | `keepalive_timeout 75s` |
/// | [`max_connections`](Self::max_connections) | 10 000, or 3/4 of the soft open-file limit if lower | `worker_connections 512` per worker |
/// | [`max_header_bytes`](Self::max_header_bytes) | 32 KiB (request line and headers) | `large_client_header_buffers 4 8k` |
/// | [`max_headers`](Self::max_headers) | 100 | none |
/// | [`h2_max_concurrent_streams`](Self::h2_max_concurrent_streams) | 128 | `http2_max_concurrent_streams 128` |
/// | [`h2_keep_alive_interval`](Self::h2_keep_alive_interval) | a PING after 30 s without frames | none |
/// | [`h2_keep_alive_timeout`](Self::h2_keep_alive_timeout) | 20 s for the PING's answer | none |
/// | [`h2_max_pending_accept_reset_streams`](Self::h2_max_pending_accept_reset_streams) | 20 | none |
/// | [`h2_max_local_error_reset_streams`](Self::h2_max_local_error_reset_streams) | 1024 | none |
/// | [`shutdown_drain`](Self::shutdown_drain) | 10 s | `worker_shutdown_timeout`, unset |
///
/// ```
/// use std::time::Duration;
/// use obskit::serve::ServerSettings;
///
/// let settings = ServerSettings::default()
///     .head_timeout(Duration::from_secs(10))
///     .max_connections(2_000);
/// assert_eq!(settings.head_timeout_value(), Duration::from_secs(10));
/// assert_eq!(settings.max_connections_value(), 2_000);
/// assert_eq!(settings.idle_timeout_value(), Duration::from_secs(75));
/// ```
#[derive(Clone, Debug, PartialEq, Eq)]
#[must_use]
pub struct ServerSettings {
    pub(crate) head_timeout: Duration,
    pub(crate) body_timeout: Duration,
    pub(crate) idle_timeout: Duration,
    pub(crate) max_connections: usize,
    pub(crate) max_header_bytes: usize,
    pub(crate) max_headers: usize,
    pub(crate) h2_max_concurrent_streams: u32,
    pub(crate) h2_keep_alive_interval: Option<Duration>,
    pub(crate) h2_keep_alive_timeout: Duration,
    pub(crate) h2_max_pending_accept_reset_streams: usize,
    pub(crate) h2_max_local_error_reset_streams: usize,
    pub(crate) shutdown_drain: Duration,
}

/// hyper's floor for its HTTP/1 read buffer, which is what bounds a request head.
const MIN_HEADER_BYTES: usize = 8 * 1024;

impl Default for ServerSettings {
    fn default() -> Self {
        ServerSettings {
            head_timeout: ServerSettings::DEFAULT_HEAD_TIMEOUT,
            body_timeout: ServerSettings::DEFAULT_BODY_TIMEOUT,
            idle_timeout: ServerSettings::DEFAULT_IDLE_TIMEOUT,
            max_connections: default_max_connections(),
            max_header_bytes: ServerSettings::DEFAULT_MAX_HEADER_BYTES,
            max_headers: ServerSettings::DEFAULT_MAX_HEADERS,
            h2_max_concurrent_streams: 128,
            h2_keep_alive_interval: Some(Duration::from_secs(30)),
            h2_keep_alive_timeout: Duration::from_secs(20),
            h2_max_pending_accept_reset_streams: 20,
            h2_max_local_error_reset_streams: 1024,
            shutdown_drain: ServerSettings::DEFAULT_SHUTDOWN_DRAIN,
        }
    }
}

/// 10 000 connections, or three quarters of the soft open-file limit when that is lower: each
/// connection holds a descriptor, and the rest are kept for upstream connections, files and the
/// listener itself, so that the cap, not `EMFILE`, is what stops accepting.
fn default_max_connections() -> usize {
    const CAP: usize = 10_000;
    match soft_open_file_limit() {
        Some(limit) => (limit / 4 * 3).clamp(1, CAP),
        None => CAP,
    }
}

/// The soft `Max open files` of this process, from Linux's `/proc/self/limits`.
fn soft_open_file_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    line["Max open files".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

impl ServerSettings {
    /// Default of [`head_timeout`](Self::head_timeout): 30 s.
    pub const DEFAULT_HEAD_TIMEOUT: Duration = Duration::from_secs(30);
    /// Default of [`body_timeout`](Self::body_timeout): 60 s.
    pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(60);
    /// Default of [`idle_timeout`](Self::idle_timeout): 75 s.
    pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(75);
    /// Default of [`max_header_bytes`](Self::max_header_bytes): 32 KiB.
    pub const DEFAULT_MAX_HEADER_BYTES: usize = 32 * 1024;
    /// Default of [`max_headers`](Self::max_headers): 100.
    pub const DEFAULT_MAX_HEADERS: usize = 100;
    /// Default of [`shutdown_drain`](Self::shutdown_drain): 10 s.
    pub const DEFAULT_SHUTDOWN_DRAIN: Duration = Duration::from_secs(10);

    /// How long a client has to send a complete request head: from accept for the first
    /// request, so a connection that sends nothing at all is closed too, and from the first
    /// byte of the next request on a kept-alive HTTP/1 connection. For HTTP/2 it bounds the time
    /// from accept to the first request. The connection is closed without an answer (nginx
    /// does the same: the client was too slow to be worth one).
    pub fn head_timeout(mut self, timeout: Duration) -> Self {
        self.head_timeout = timeout;
        self
    }

    /// How long a request body may stall: the time a handler waits for the next piece of the
    /// body (nginx's `client_body_timeout`, timed between two reads, not over the whole body).
    /// When it passes, the handler's body read fails and the connection is closed (for
    /// HTTP/2, with every stream on it: a client that stalls one stream is not served others).
    /// A handler that does not read the body is not timed.
    pub fn body_timeout(mut self, timeout: Duration) -> Self {
        self.body_timeout = timeout;
        self
    }

    /// How long a connection may stay open with no request in progress after one was answered
    /// (HTTP/1 keep-alive, or an HTTP/2 connection without streams). Then the connection is
    /// closed gracefully (HTTP/2 sends `GOAWAY`). Keep it above the idle timeout of a load
    /// balancer in front (60 s for most), so that the balancer, not the server, closes first.
    pub fn idle_timeout(mut self, timeout: Duration) -> Self {
        self.idle_timeout = timeout;
        self
    }

    /// How many connections are served at once (at least 1). Past it the server stops
    /// accepting: new connections wait in the kernel's listen backlog, costing neither a task
    /// nor buffers, and are accepted as others close. Each wait is counted in
    /// `obskit_server_connection_waits_total`. Per listener: the admin listener has its own.
    pub fn max_connections(mut self, max: usize) -> Self {
        self.max_connections = max.max(1);
        self
    }

    /// How large an HTTP/1 request head (request line and headers) may be, in bytes (at least
    /// 8 KiB, hyper's floor for its read buffer); past it the answer is `431 Request Header
    /// Fields Too Large`. It is also the size of HTTP/2's `SETTINGS_MAX_HEADER_LIST_SIZE`.
    pub fn max_header_bytes(mut self, max: usize) -> Self {
        self.max_header_bytes = max.max(MIN_HEADER_BYTES);
        self
    }

    /// How many headers an HTTP/1 request may carry (at least 1); past it the answer is `431`.
    pub fn max_headers(mut self, max: usize) -> Self {
        self.max_headers = max.max(1);
        self
    }

    /// How many HTTP/2 streams a client may open at once on one connection (at least 1).
    pub fn h2_max_concurrent_streams(mut self, max: u32) -> Self {
        self.h2_max_concurrent_streams = max.max(1);
        self
    }

    /// After how long without frames an HTTP/2 connection is sent a PING; `None` sends none.
    pub fn h2_keep_alive_interval(mut self, interval: Option<Duration>) -> Self {
        self.h2_keep_alive_interval = interval;
        self
    }

    /// How long the answer to that PING may take before the connection is closed.
    pub fn h2_keep_alive_timeout(mut self, timeout: Duration) -> Self {
        self.h2_keep_alive_timeout = timeout;
        self
    }

    /// How many HTTP/2 streams the client may open and reset before the server has accepted
    /// them, at once, before the connection is closed (the "rapid reset" flood, CVE-2023-44487).
    pub fn h2_max_pending_accept_reset_streams(mut self, max: usize) -> Self {
        self.h2_max_pending_accept_reset_streams = max;
        self
    }

    /// How many HTTP/2 streams the server may reset because of the client's protocol errors
    /// before the connection is closed (CVE-2024-27316 and the like).
    pub fn h2_max_local_error_reset_streams(mut self, max: usize) -> Self {
        self.h2_max_local_error_reset_streams = max;
        self
    }

    /// How long a graceful shutdown waits for the requests in progress to finish; the
    /// connections still open then are closed.
    pub fn shutdown_drain(mut self, deadline: Duration) -> Self {
        self.shutdown_drain = deadline;
        self
    }

    /// The request-head timeout.
    pub fn head_timeout_value(&self) -> Duration {
        self.head_timeout
    }

    /// The body stall timeout.
    pub fn body_timeout_value(&self) -> Duration {
        self.body_timeout
    }

    /// The keep-alive idle timeout.
    pub fn idle_timeout_value(&self) -> Duration {
        self.idle_timeout
    }

    /// The connection cap.
    pub fn max_connections_value(&self) -> usize {
        self.max_connections
    }

    /// The request-head size limit, in bytes.
    pub fn max_header_bytes_value(&self) -> usize {
        self.max_header_bytes
    }

    /// The header count limit.
    pub fn max_headers_value(&self) -> usize {
        self.max_headers
    }

    /// The shutdown drain deadline.
    pub fn shutdown_drain_value(&self) -> Duration {
        self.shutdown_drain
    }

    /// One line per setting, `(key, value)`, for `/debug/config`.
    pub(crate) fn config_entries(&self) -> Vec<(String, String)> {
        let h2_ping = match self.h2_keep_alive_interval {
            Some(interval) => format!("{interval:?} (answer within {:?})", self.h2_keep_alive_timeout),
            None => "off".to_string(),
        };
        [
            ("server.head_timeout", format!("{:?}", self.head_timeout)),
            ("server.body_timeout", format!("{:?}", self.body_timeout)),
            ("server.idle_timeout", format!("{:?}", self.idle_timeout)),
            ("server.max_connections", self.max_connections.to_string()),
            ("server.max_header_bytes", self.max_header_bytes.to_string()),
            ("server.max_headers", self.max_headers.to_string()),
            (
                "server.h2_max_concurrent_streams",
                self.h2_max_concurrent_streams.to_string(),
            ),
            ("server.h2_keep_alive", h2_ping),
            ("server.shutdown_drain", format!("{:?}", self.shutdown_drain)),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floors_apply() {
        let settings = ServerSettings::default()
            .max_connections(0)
            .max_header_bytes(10)
            .max_headers(0);
        assert_eq!(settings.max_connections_value(), 1);
        assert_eq!(settings.max_header_bytes_value(), MIN_HEADER_BYTES);
        assert_eq!(settings.max_headers_value(), 1);
    }

    #[test]
    fn default_cap_fits_the_descriptor_limit() {
        let max = ServerSettings::default().max_connections_value();
        assert!((1..=10_000).contains(&max), "{max}");
        if let Some(limit) = soft_open_file_limit() {
            assert!(max < limit.max(2), "{max} connections for {limit} descriptors");
        }
    }
}
