//! Who may call the protected admin routes: [`AdminAccess`], and in loopback mode the `Host`
//! check that keeps a web page from reaching them through DNS rebinding.
//!
//! # DNS rebinding
//!
//! A page on `http://evil.example:8080/` can make its own name resolve to `127.0.0.1` after it
//! loaded; the browser then sends the page's requests to the local service, as same-origin
//! requests whose answers the page may read, from a loopback peer. What gives them away is the
//! `Host` header (or HTTP/2 `:authority`): it still names `evil.example`. So in
//! [`AdminAccess::LoopbackOnly`] mode a protected route also needs the request to be addressed
//! to a loopback name: `localhost` or a name under `.localhost` (RFC 6761: they never leave the
//! machine), an address in `127.0.0.0/8`, or `[::1]`, with any port; or to a host allowed
//! explicitly ([`AllowedHosts`], from [`ObskitBuilder::admin_allowed_hosts`] or
//! `OBSKIT_ADMIN_ALLOWED_HOSTS`). A request with no `Host` at all (HTTP/1.0) is let through:
//! browsers always send one, so it cannot come from a page. `0.0.0.0` is not a loopback address
//! and is refused like any other name.
//!
//! In [`AdminAccess::Token`] mode the token is the proof, whoever sends it, and `Host` is not
//! looked at: a page cannot read a token it does not have.
//!
//! [`ObskitBuilder::admin_allowed_hosts`]: crate::ObskitBuilder::admin_allowed_hosts

use std::fmt;
use std::net::{Ipv4Addr, Ipv6Addr};

use http::{header, Request};

use super::PeerAddr;

/// Who may call the protected admin endpoints (`/debug/...` and `/profiles...` routes of
/// [`ADMIN_ROUTES`](super::ADMIN_ROUTES)).
#[derive(Clone, Default, PartialEq, Eq)]
pub enum AdminAccess {
    /// Any client presenting this Bearer token.
    Token(String),
    /// Only clients connected from a loopback address, not through a proxy, addressing a
    /// loopback name or an allowed host (see [`AllowedHosts`]).
    #[default]
    LoopbackOnly,
}

impl fmt::Debug for AdminAccess {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // Never print the token, not even in a debug dump of the configuration.
            AdminAccess::Token(_) => f.write_str("Token(***)"),
            AdminAccess::LoopbackOnly => f.write_str("LoopbackOnly"),
        }
    }
}

/// Environment variable holding the admin Bearer token.
pub const ADMIN_TOKEN_ENV: &str = crate::names::env::OBSKIT_ADMIN_TOKEN;

/// Environment variable listing, comma-separated, the hosts besides loopback names that
/// loopback-only admin routes answer to (`admin.internal,myhost:9000`).
pub const ADMIN_ALLOWED_HOSTS_ENV: &str = crate::names::env::OBSKIT_ADMIN_ALLOWED_HOSTS;

impl AdminAccess {
    /// `Token` when `OBSKIT_ADMIN_TOKEN` is set and not empty, else `LoopbackOnly`.
    ///
    /// ```
    /// let access = obskit::admin::AdminAccess::from_env();
    /// # let _ = access;
    /// ```
    pub fn from_env() -> Self {
        Self::from_env_source(&crate::settings::ProcessEnv)
    }

    /// [`AdminAccess::from_env`], with `OBSKIT_ADMIN_TOKEN` read through `env`.
    pub fn from_env_source(env: &impl crate::settings::EnvSource) -> Self {
        match env.get(ADMIN_TOKEN_ENV) {
            Some(token) => AdminAccess::Token(token),
            None => AdminAccess::LoopbackOnly,
        }
    }

    /// Checks a request for a protected route against this policy.
    pub(super) fn check<B>(&self, request: &Request<B>, allowed: &AllowedHosts) -> Result<(), Refusal> {
        match self {
            AdminAccess::Token(expected) => {
                let presented = request
                    .headers()
                    .get(header::AUTHORIZATION)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| {
                        let (scheme, token) = v.split_once(' ')?;
                        scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
                    });
                match presented {
                    Some(token) if constant_time_eq(token.as_bytes(), expected.as_bytes()) => Ok(()),
                    Some(_) => Err(Refusal::BadToken),
                    None => Err(Refusal::NoToken),
                }
            }
            AdminAccess::LoopbackOnly => {
                let forwarded = ["forwarded", "x-forwarded-for", "x-real-ip"]
                    .iter()
                    .any(|h| request.headers().contains_key(*h));
                let loopback = request
                    .extensions()
                    .get::<PeerAddr>()
                    .is_some_and(|peer| peer.0.ip().to_canonical().is_loopback());
                if !loopback || forwarded {
                    Err(Refusal::NotLoopback)
                } else if !addressed_to_allowed_host(request, allowed) {
                    Err(Refusal::ForeignHost)
                } else {
                    Ok(())
                }
            }
        }
    }
}

/// Why a request for a protected route was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    NoToken,
    BadToken,
    NotLoopback,
    ForeignHost,
}

/// Compares without an early exit, so the time taken says nothing about how much matched.
pub(super) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= usize::from(x ^ y);
    }
    diff == 0
}

/// Hosts, besides loopback names and addresses, that loopback-only admin routes answer to:
/// for a machine reached under a name of its own through an SSH tunnel or a local proxy
/// that keeps `Host`, say. Each entry is a host name or an IP address (IPv6 in brackets),
/// optionally with `:port`; without a port it allows every port. Names compare
/// case-insensitively, a trailing dot aside. An entry that is not a host never matches
/// anything (the check fails closed).
///
/// ```
/// use obskit::admin::AllowedHosts;
/// let allowed = AllowedHosts::new(["Admin.Internal", "10.0.0.5:9000"]);
/// assert!(allowed.allows("admin.internal:8080"));
/// assert!(allowed.allows("10.0.0.5:9000"));
/// assert!(!allowed.allows("10.0.0.5:9001"));
/// assert!(!allowed.allows("evil.example"));
/// ```
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AllowedHosts {
    entries: Vec<(String, Option<u16>)>,
}

impl AllowedHosts {
    /// The given entries (see the type's documentation for their form); empty ones are skipped.
    pub fn new<I, T>(hosts: I) -> AllowedHosts
    where
        I: IntoIterator<Item = T>,
        T: AsRef<str>,
    {
        let entries = hosts
            .into_iter()
            .filter_map(|entry| {
                let entry = entry.as_ref().trim();
                if entry.is_empty() {
                    return None;
                }
                // An entry that does not parse is kept as a name no Host can equal (it has
                // characters a host cannot have), so it matches nothing.
                Some(match split_host(entry) {
                    Some((host, port)) => (normalize(host), port),
                    None => (format!("invalid entry {entry}"), None),
                })
            })
            .collect();
        AllowedHosts { entries }
    }

    /// The hosts listed, comma-separated, in `OBSKIT_ADMIN_ALLOWED_HOSTS` (none when unset).
    ///
    /// ```
    /// let allowed = obskit::admin::AllowedHosts::from_env();
    /// # let _ = allowed;
    /// ```
    pub fn from_env() -> AllowedHosts {
        Self::from_env_source(&crate::settings::ProcessEnv)
    }

    /// [`AllowedHosts::from_env`], with `OBSKIT_ADMIN_ALLOWED_HOSTS` read through `env`.
    pub fn from_env_source(env: &impl crate::settings::EnvSource) -> AllowedHosts {
        match env.get(ADMIN_ALLOWED_HOSTS_ENV) {
            Some(list) => AllowedHosts::new(list.split(',')),
            None => AllowedHosts::default(),
        }
    }

    /// Whether no host is allowed beyond the loopback names.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Whether `authority` (a `Host` value: `host`, `host:port`, `[v6]:port`) is one of these.
    pub fn allows(&self, authority: &str) -> bool {
        let Some((host, port)) = split_host(authority) else {
            return false;
        };
        let host = normalize(host);
        self.entries
            .iter()
            .any(|(allowed, allowed_port)| *allowed == host && allowed_port.is_none_or(|p| Some(p) == port))
    }

    /// The entries as given back, for `/debug/config`.
    pub(crate) fn describe(&self) -> String {
        let shown: Vec<String> = self
            .entries
            .iter()
            .map(|(host, port)| match port {
                Some(port) if host.contains(':') => format!("[{host}]:{port}"),
                Some(port) => format!("{host}:{port}"),
                None => host.clone(),
            })
            .collect();
        shown.join(",")
    }
}

/// Whether every authority the request names (its `Host` headers and, in HTTP/2 or for an
/// absolute-form target, its URI's authority) is a loopback name or an allowed host. A
/// request naming none passes: no browser sends one.
fn addressed_to_allowed_host<B>(request: &Request<B>, allowed: &AllowedHosts) -> bool {
    let acceptable = |authority: &str| {
        let authority = authority.trim();
        authority.is_empty() || is_loopback_authority(authority) || allowed.allows(authority)
    };
    let hosts_ok = request
        .headers()
        .get_all(header::HOST)
        .iter()
        .all(|value| value.to_str().is_ok_and(acceptable));
    hosts_ok
        && request
            .uri()
            .authority()
            .is_none_or(|authority| acceptable(authority.as_str()))
}

/// Whether `authority` names this machine's loopback: `localhost`, `*.localhost`,
/// `127.x.x.x` or `[::1]` (an IPv4-mapped loopback too), with or without a port.
///
/// ```
/// use obskit::admin::is_loopback_authority;
/// for host in ["localhost", "LOCALHOST:8080", "app.localhost:3000", "localhost.", "127.0.0.1:9", "127.1.2.3", "[::1]:8080", "[::ffff:127.0.0.1]"] {
///     assert!(is_loopback_authority(host), "{host}");
/// }
/// for host in ["evil.example", "localhost.evil.example", "0.0.0.0:80", "10.0.0.1", "[::]:80", "127.0.0.1.evil", "user@localhost", "::1", "evillocalhost"] {
///     assert!(!is_loopback_authority(host), "{host}");
/// }
/// ```
pub fn is_loopback_authority(authority: &str) -> bool {
    let Some((host, _port)) = split_host(authority) else {
        return false;
    };
    let name = normalize(host);
    if name == "localhost" || name.ends_with(".localhost") {
        return true;
    }
    if authority.starts_with('[') {
        return host
            .parse::<Ipv6Addr>()
            .is_ok_and(|ip| ip.to_canonical().is_loopback());
    }
    host.parse::<Ipv4Addr>().is_ok_and(|ip| ip.is_loopback())
}

/// `host`, `host:port` or `[v6]` / `[v6]:port` into the host (without brackets) and the port;
/// `None` for what is no authority a browser would send (userinfo, an unbracketed IPv6
/// address, a port that is not a number, characters a host cannot have).
fn split_host(authority: &str) -> Option<(&str, Option<u16>)> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            after => Some(after.strip_prefix(':')?),
        };
        host.parse::<Ipv6Addr>().ok()?;
        (host, port)
    } else {
        match authority.split_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        Some(port) => Some(port.parse::<u16>().ok()?),
        None => None,
    };
    let host_chars = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | ':');
    (!host.is_empty() && host.chars().all(host_chars)).then_some((host, port))
}

/// Lower case, without the trailing dot of a fully qualified name.
fn normalize(host: &str) -> String {
    host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_authorities() {
        assert_eq!(split_host("localhost"), Some(("localhost", None)));
        assert_eq!(split_host("localhost:80"), Some(("localhost", Some(80))));
        assert_eq!(split_host("[::1]:8080"), Some(("::1", Some(8080))));
        assert_eq!(split_host("[::1]"), Some(("::1", None)));
        for bad in [
            "", ":80", "a:b", "a:99999", "[::1", "[::1]x", "[nope]", "::1", "a b", "u@h", "a/b",
        ] {
            assert_eq!(split_host(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn allowed_hosts_match_host_and_port() {
        let allowed = AllowedHosts::new(["box.lan", " [fd00::1]:9000 ", "", "http://bad/"]);
        assert_eq!(allowed.entries.len(), 3);
        assert!(allowed.allows("BOX.LAN."));
        assert!(allowed.allows("box.lan:1234"));
        assert!(allowed.allows("[fd00::1]:9000"));
        assert!(!allowed.allows("[fd00::1]:9001"));
        assert!(!allowed.allows("[fd00::1]"));
        assert!(!allowed.allows("http://bad/"));
        assert!(!allowed.allows("invalid entry http://bad/"));
        assert!(!allowed.allows("sub.box.lan"));
        assert_eq!(
            allowed.describe(),
            "box.lan,[fd00::1]:9000,invalid entry http://bad/"
        );
        assert!(AllowedHosts::default().is_empty());
    }
}
