//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::net::SocketAddr;

/// A free loopback address: bind port 0 and read the port back.
pub fn free_addr() -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr")
}
