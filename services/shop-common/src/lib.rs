//! What the shop's four services share: the storage interface ([`store::Store`]) and its
//! embedded SQLite backend, the contract's JSON errors and bodies ([`http`]), a router over
//! obskit's matched routes ([`router`]), and JWTs and password hashes ([`auth`]); plus
//! [`testing`], the support of the services' contract tests.
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod http;
pub mod router;
pub mod store;
pub mod testing;

use std::net::SocketAddr;
use std::path::PathBuf;

/// Environment variable naming the directory where services keep their data.
pub const DATA_DIR_ENV: &str = "SHOP_DATA_DIR";

/// The data directory: `SHOP_DATA_DIR`, else `./data` under the working directory.
pub fn data_dir_from_env() -> PathBuf {
    std::env::var_os(DATA_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Environment variable with the address services listen on: `127.0.0.1` by default (a shop on
/// a laptop is not for the network), `0.0.0.0` in containers.
pub const LISTEN_HOST_ENV: &str = "SHOP_LISTEN_HOST";

/// `$SHOP_LISTEN_HOST:$port_env` (host default `127.0.0.1`, port `default_port` when the
/// variable is unset or empty); an error naming the variable when either is malformed.
///
/// ```
/// let addr = shop_common::listen_addr_from_env("SHOP_DOC_EXAMPLE_UNSET_PORT", 8001).unwrap();
/// assert_eq!(addr.port(), 8001);
/// ```
pub fn listen_addr_from_env(port_env: &str, default_port: u16) -> Result<SocketAddr, String> {
    let port = match std::env::var(port_env) {
        Ok(p) if !p.trim().is_empty() => p
            .trim()
            .parse::<u16>()
            .map_err(|e| format!("{port_env}={p:?} is not a port: {e}"))?,
        _ => default_port,
    };
    let host = match std::env::var(LISTEN_HOST_ENV) {
        Ok(h) if !h.trim().is_empty() => h
            .trim()
            .parse::<std::net::IpAddr>()
            .map_err(|e| format!("{LISTEN_HOST_ENV}={h:?} is not an IP address: {e}"))?,
        _ => std::net::IpAddr::from([127, 0, 0, 1]),
    };
    Ok(SocketAddr::new(host, port))
}
