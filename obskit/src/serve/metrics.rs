//! [`ServerMetrics`]: what the server counts about its connections, named in one place.

use std::fmt;

use crate::metrics::{Counter, Error, Histogram, IntGauge, Registry};
use crate::names;

/// Connections open now (gauge).
pub const CONNECTIONS_OPEN: &str = names::OBSKIT_SERVER_CONNECTIONS_OPEN.name;
/// Connections accepted (counter).
pub const CONNECTIONS_ACCEPTED: &str = names::OBSKIT_SERVER_CONNECTIONS_ACCEPTED_TOTAL.name;
/// Connections closed, by `reason` (counter).
pub const CONNECTIONS_CLOSED: &str = names::OBSKIT_SERVER_CONNECTIONS_CLOSED_TOTAL.name;
/// Times the server found every slot of its connection cap taken and stopped accepting until
/// one freed (counter).
pub const CONNECTION_WAITS: &str = names::OBSKIT_SERVER_CONNECTION_WAITS_TOTAL.name;
/// How long those waits took, in seconds (histogram).
pub const CONNECTION_WAIT_SECONDS: &str = names::OBSKIT_SERVER_CONNECTION_WAIT_SECONDS.name;
/// `accept()` calls that failed, out of descriptors for one (counter).
pub const ACCEPT_ERRORS: &str = names::OBSKIT_SERVER_ACCEPT_ERRORS_TOTAL.name;

/// Wait durations: 1 ms to 30 s.
const WAIT_BUCKETS: &[f64] = &[0.001, 0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0];

/// Why a connection closed: the `reason` label of `obskit_server_connections_closed_total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CloseReason {
    /// `closed`: it ended normally (the client closed it, or a response said `Connection: close`).
    Closed,
    /// `error`: an I/O or protocol error (a reset, a malformed request, `431`).
    Error,
    /// `head_timeout`: no complete request head within the head timeout.
    HeadTimeout,
    /// `body_timeout`: a request body stalled longer than the body timeout.
    BodyTimeout,
    /// `idle_timeout`: no request within the idle timeout.
    IdleTimeout,
    /// `shutdown`: closed by a graceful shutdown, within its drain deadline.
    Shutdown,
    /// `shutdown_deadline`: still open when the drain deadline passed, and cut.
    ShutdownDeadline,
}

impl CloseReason {
    /// Every reason, in label order.
    pub const ALL: [CloseReason; 7] = [
        CloseReason::Closed,
        CloseReason::Error,
        CloseReason::HeadTimeout,
        CloseReason::BodyTimeout,
        CloseReason::IdleTimeout,
        CloseReason::Shutdown,
        CloseReason::ShutdownDeadline,
    ];

    /// The label value.
    ///
    /// ```
    /// assert_eq!(obskit::serve::CloseReason::HeadTimeout.as_str(), "head_timeout");
    /// ```
    pub fn as_str(self) -> &'static str {
        match self {
            CloseReason::Closed => "closed",
            CloseReason::Error => "error",
            CloseReason::HeadTimeout => "head_timeout",
            CloseReason::BodyTimeout => "body_timeout",
            CloseReason::IdleTimeout => "idle_timeout",
            CloseReason::Shutdown => "shutdown",
            CloseReason::ShutdownDeadline => "shutdown_deadline",
        }
    }
}

/// The server's connection metrics, declared once in a [`Registry`]:
///
/// | family | type | labels |
/// | --- | --- | --- |
/// | `obskit_server_connections_open` | integer gauge | |
/// | `obskit_server_connections_accepted_total` | counter | |
/// | `obskit_server_connections_closed_total` | counter | `reason` ([`CloseReason`]) |
/// | `obskit_server_connection_waits_total` | counter | |
/// | `obskit_server_connection_wait_seconds` | histogram (1 ms to 30 s) | |
/// | `obskit_server_accept_errors_total` | counter | |
///
/// A wait starts when the server finds every slot of its connection cap taken: it stops
/// accepting, and new connections wait in the kernel's listen backlog until a slot frees (the
/// histogram observes each pause when it ends; the counter counts it when it starts). Connections the kernel refuses because that
/// backlog is full never reach the process: on Linux, `ListenOverflows` in
/// `/proc/net/netstat` counts them for the host.
///
/// Clones share the families; every listener of a registry records into the same ones.
///
/// ```
/// let registry = obskit::metrics::Registry::new();
/// let _metrics = obskit::serve::ServerMetrics::new(&registry).unwrap();
/// let text = registry.encode_text();
/// assert!(text.contains(r#"obskit_server_connections_closed_total{reason="head_timeout"} 0"#), "{text}");
/// assert!(obskit::serve::ServerMetrics::new(&registry).is_err(), "declared once per registry");
/// ```
#[derive(Clone)]
pub struct ServerMetrics {
    pub(crate) open: IntGauge,
    pub(crate) accepted: Counter,
    closed: [Counter; CloseReason::ALL.len()],
    pub(crate) waits: Counter,
    pub(crate) wait_seconds: Histogram,
    pub(crate) accept_errors: Counter,
}

impl fmt::Debug for ServerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerMetrics")
            .field("open", &self.open.get())
            .field("accepted", &self.accepted.get())
            .finish_non_exhaustive()
    }
}

impl ServerMetrics {
    /// Declares the families in `registry`. Fails if one of the names is already declared.
    pub fn new(registry: &Registry) -> Result<ServerMetrics, Error> {
        let open = registry.int_gauge(CONNECTIONS_OPEN, names::OBSKIT_SERVER_CONNECTIONS_OPEN.help)?;
        let accepted = registry.counter(
            CONNECTIONS_ACCEPTED,
            names::OBSKIT_SERVER_CONNECTIONS_ACCEPTED_TOTAL.help,
        )?;
        let closed_vec = registry.counter_vec(
            CONNECTIONS_CLOSED,
            names::OBSKIT_SERVER_CONNECTIONS_CLOSED_TOTAL.help,
            names::OBSKIT_SERVER_CONNECTIONS_CLOSED_TOTAL.labels,
        )?;
        // Resolved now: the series exist at zero from the start, and recording is one add.
        let closed = CloseReason::ALL.map(|reason| closed_vec.with(&[reason.as_str()]));
        let waits = registry.counter(CONNECTION_WAITS, names::OBSKIT_SERVER_CONNECTION_WAITS_TOTAL.help)?;
        let wait_seconds = registry.histogram(
            CONNECTION_WAIT_SECONDS,
            names::OBSKIT_SERVER_CONNECTION_WAIT_SECONDS.help,
            WAIT_BUCKETS,
        )?;
        let accept_errors = registry.counter(ACCEPT_ERRORS, names::OBSKIT_SERVER_ACCEPT_ERRORS_TOTAL.help)?;
        Ok(ServerMetrics {
            open,
            accepted,
            closed,
            waits,
            wait_seconds,
            accept_errors,
        })
    }

    pub(crate) fn closed(&self, reason: CloseReason) {
        let index = CloseReason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.closed[index].inc();
    }
}
