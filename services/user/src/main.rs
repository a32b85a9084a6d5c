//! The user service binary: the service kit's settings (`shop_common::service::ServiceConfig`:
//! `USER_PORT`, default 8003, `SHOP_LISTEN_HOST`, `SHOP_DATA_DIR` or `SCYLLA_NODES`,
//! `JWT_SECRET`, `ORDER_URL`, `CART_URL`) and the `SHOP_ADMIN_*` bootstrap variables.

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shop_common::service::main::<user::Users>().await
}
