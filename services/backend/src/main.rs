//! The backend service binary. Its settings are the service kit's
//! (`shop_common::service::ServiceConfig`): `BACKEND_PORT` (default 8000), `SHOP_LISTEN_HOST`,
//! `SHOP_DATA_DIR` (default `./data`) or `SCYLLA_NODES`, `JWT_SECRET` (shared with the other
//! services).

#[tokio::main]
async fn main() -> std::process::ExitCode {
    shop_common::service::main::<backend::Backend>().await
}
