//! What the shop's four services share: the storage interface ([`store::Store`]) and its
//! embedded SQLite backend, the contract's JSON errors and bodies ([`http`]), a router over
//! obskit's matched routes ([`router`]), and JWTs and password hashes ([`auth`]).
#![warn(missing_docs)]

pub mod auth;
pub mod http;
pub mod router;
pub mod store;

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
