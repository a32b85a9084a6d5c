//! The order service binary: `ORDER_PORT` (default 8002), `SHOP_DATA_DIR` (default `./data`),
//! `JWT_SECRET` (shared with the other services), `ORDER_LIFECYCLE_STEP_SECONDS` (default 60,
//! `0` disables the background lifecycle).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = order::listen_addr_from_env()?;
    let config = order::Config::from_env();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "{}: listening on http://{}",
        order::SERVICE_NAME,
        listener.local_addr()?
    );
    order::run(config, listener, obskit::shutdown_signal()).await
}
