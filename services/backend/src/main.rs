//! The backend service binary: `BACKEND_PORT` (default 8000), `SHOP_DATA_DIR` (default
//! `./data`), `JWT_SECRET` (shared with the other services).

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let addr = backend::listen_addr_from_env()?;
    let config = backend::Config::from_env();
    let listener = tokio::net::TcpListener::bind(addr).await?;
    eprintln!(
        "{}: listening on http://{}",
        backend::SERVICE_NAME,
        listener.local_addr()?
    );
    backend::run(config, listener, obskit::shutdown_signal()).await
}
