//! The cart service binary: `CART_PORT` (default 8001), `SHOP_DATA_DIR` (default `./data`),
//! `JWT_SECRET` (shared with the other services), `BACKEND_URL`, `ORDER_URL`,
//! `CART_ABANDON_AFTER_SECONDS` (default 1800).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = cart::listen_addr_from_env()?;
    let config = cart::Config::from_env();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "{}: listening on http://{}",
        cart::SERVICE_NAME,
        listener.local_addr()?
    );
    cart::run(config, listener, obskit::shutdown_signal()).await
}
