//! The cart service binary: the service kit's settings (`shop_common::service::ServiceConfig`:
//! `CART_PORT`, default 8001, `SHOP_LISTEN_HOST`, `SHOP_DATA_DIR` or `SCYLLA_NODES`,
//! `JWT_SECRET`, `BACKEND_URL`, `ORDER_URL`) and `CART_ABANDON_AFTER_SECONDS` (default 1800).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shop_common::service::main::<cart::Cart>().await
}
