//! The order service binary: the service kit's settings (`shop_common::service::ServiceConfig`:
//! `ORDER_PORT`, default 8002, `SHOP_LISTEN_HOST`, `SHOP_DATA_DIR` or `SCYLLA_NODES`,
//! `JWT_SECRET`) and `ORDER_LIFECYCLE_STEP_SECONDS` (default 60, `0` disables the lifecycle).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shop_common::service::main::<order::Orders>().await
}
