//! Debug figures: the logic behind `/debug/metrics`, `/debug/config`, `/debug/requests`
//! ([`in_flight`]) and `/debug/tasks` ([`tasks`]).
//!
//! [`ProcessStats`] samples the process (memory, CPU, threads, descriptors, connections) and
//! [`config_report`] lists the environment and the effective configuration with every secret
//! masked. Both return plain values; the admin router serialises them.
//!
//! ```
//! # #[cfg(feature = "process-metrics")] {
//! use obskit::debug::{config_report, ConnectionStats, ProcessStats};
//!
//! # tokio::runtime::Runtime::new().unwrap().block_on(async {
//! let connections = ConnectionStats::new();
//! let stats = ProcessStats::start(ProcessStats::DEFAULT_INTERVAL, connections.clone());
//! let metrics = serde_json::to_value(stats.snapshot()).unwrap();
//! assert_eq!(metrics["pid"], std::process::id());
//!
//! let config = config_report(&[("database.url", "postgres://app:hunter2@db/store".to_string())]);
//! assert_eq!(config["config"]["database.url"], "postgres://app:***@db/store");
//! # });
//! # }
//! ```

mod config;
mod connections;
pub mod in_flight;
#[cfg(feature = "process-metrics")]
mod process;
#[cfg(feature = "process-metrics")]
mod procfs;
pub mod tasks;

pub use config::config_report;
pub use connections::{ConnectionGuard, ConnectionStats};
#[cfg(feature = "process-metrics")]
pub use process::{ConnectionsSnapshot, CpuSnapshot, MemorySnapshot, ProcessSnapshot, ProcessStats};
