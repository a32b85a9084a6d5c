//! What the shop's four services share: the storage interface ([`store::Store`]) and its
//! embedded SQLite backend, the contract's JSON errors and bodies ([`http`]), a router over
//! obskit's matched routes ([`router`]), and JWTs and password hashes ([`auth`]); plus
//! [`service`], the kit every service starts with, and (feature `testing`, for the services'
//! tests only) [`testing`], the support of their contract tests.
#![warn(missing_docs)]

pub mod auth;
pub mod client;
pub mod http;
pub mod objectives;
pub mod router;
pub mod service;
pub mod store;
#[cfg(feature = "testing")]
pub mod testing;

use std::net::IpAddr;
use std::path::PathBuf;

/// Environment variable naming the directory where services keep their data.
pub const DATA_DIR_ENV: &str = "SHOP_DATA_DIR";

/// The data directory as `lookup` finds it in [`DATA_DIR_ENV`], else `./data` under the working
/// directory.
///
/// ```
/// assert_eq!(shop_common::data_dir_from(&|_| None), std::path::PathBuf::from("data"));
/// ```
pub fn data_dir_from(lookup: &dyn Fn(&str) -> Option<String>) -> PathBuf {
    lookup(DATA_DIR_ENV)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("data"))
}

/// Environment variable with the address services listen on: `127.0.0.1` by default (a shop on
/// a laptop is not for the network), `0.0.0.0` in containers.
pub const LISTEN_HOST_ENV: &str = "SHOP_LISTEN_HOST";

/// The port in variable `name` as `lookup` finds it, or `default` when it is unset or empty; an
/// error naming the variable when it is not a port. `lookup` is the process environment in the
/// services and a test's table in tests.
///
/// ```
/// let lookup = |name: &str| (name == "CART_PORT").then(|| "9001".to_string());
/// assert_eq!(shop_common::port_from(&lookup, "CART_PORT", 8001), Ok(9001));
/// assert_eq!(shop_common::port_from(&lookup, "USER_PORT", 8003), Ok(8003));
/// ```
pub fn port_from(lookup: &dyn Fn(&str) -> Option<String>, name: &str, default: u16) -> Result<u16, String> {
    match lookup(name).filter(|v| !v.trim().is_empty()) {
        None => Ok(default),
        Some(v) => v
            .trim()
            .parse::<u16>()
            .map_err(|e| format!("{name}={v:?} is not a port: {e}")),
    }
}

/// The address in [`LISTEN_HOST_ENV`] as `lookup` finds it, `127.0.0.1` when it is unset or
/// empty; an error naming the variable when it is not an IP address.
///
/// ```
/// let lookup = |_: &str| Some("0.0.0.0".to_string());
/// assert!(shop_common::listen_host_from(&lookup).unwrap().is_unspecified());
/// ```
pub fn listen_host_from(lookup: &dyn Fn(&str) -> Option<String>) -> Result<IpAddr, String> {
    match lookup(LISTEN_HOST_ENV).filter(|h| !h.trim().is_empty()) {
        None => Ok(IpAddr::from([127, 0, 0, 1])),
        Some(h) => h
            .trim()
            .parse::<IpAddr>()
            .map_err(|e| format!("{LISTEN_HOST_ENV}={h:?} is not an IP address: {e}")),
    }
}
