//! The user service binary: `USER_PORT` (default 8003), `SHOP_DATA_DIR` (default `./data`),
//! `JWT_SECRET` (shared with the other services), `ORDER_URL`, `CART_URL`, and optionally
//! `SHOP_ADMIN_USERNAME`/`SHOP_ADMIN_PASSWORD`/`SHOP_ADMIN_EMAIL` for the first administrator.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = user::listen_addr_from_env()?;
    let config = user::Config::from_env()?;
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "{}: listening on http://{}",
        user::SERVICE_NAME,
        listener.local_addr()?
    );
    user::run(config, listener, obskit::shutdown_signal()).await
}
