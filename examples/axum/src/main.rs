//! An axum service behind obskit: axum routes, obskit's layer labels each request with the route
//! template axum matched (`MatchedPath`), `#[instrumented]` handlers, and obskit's admin routes
//! (`/metrics`, `/health*`, `/debug/*`, `/profiles/`) merged into the router as its fallback, all
//! on obskit's hardened server.
//!
//! ```text
//! cd examples/axum && cargo run
//! curl localhost:3000/api/products/7
//! curl localhost:3000/metrics
//! ```
use axum::extract::{MatchedPath, Path};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Json, Router};
use hyper_util::service::TowerToHyperService;
use serde::Serialize;

#[derive(Serialize)]
struct Product {
    id: u64,
    name: String,
    price_cents: u64,
}

/// Where axum left the template of the route it chose: obskit's `endpoint` label and span name.
fn matched_path(extensions: &http::Extensions) -> Option<&str> {
    extensions.get::<MatchedPath>().map(MatchedPath::as_str)
}

#[obskit::instrumented]
async fn list_products() -> Json<Vec<Product>> {
    Json((1..=3).map(product).collect())
}

/// A product, or 404 (an error of this function: `Err` is its error result).
#[obskit::instrumented]
async fn get_product(Path(id): Path<u64>) -> Result<Json<Product>, StatusCode> {
    if id == 0 || id > 100 {
        tracing::info!(product_id = id, "no such product");
        return Err(StatusCode::NOT_FOUND);
    }
    Ok(Json(product(id)))
}

#[obskit::instrumented]
async fn get_review(Path((id, review)): Path<(u64, u32)>) -> String {
    format!("review {review} of product {id}\n")
}

fn product(id: u64) -> Product {
    Product {
        id,
        name: format!("product {id}"),
        price_cents: 100 * id,
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let obskit = obskit::Obskit::builder()
        .service("axum-shop")
        .version(env!("CARGO_PKG_VERSION"))
        .build()?;
    let app = Router::new()
        .route("/api/products", get(list_products))
        .route("/api/products/{id}", get(get_product))
        .route("/api/products/{id}/reviews/{review}", get(get_review))
        // Every path axum does not route: obskit's admin endpoints, a JSON 404 for the rest.
        .fallback_service(obskit.admin().service())
        // After routing (axum runs `Router::layer` layers once a route is chosen), so the
        // template is axum's own: no route list to keep twice.
        .layer(obskit.layer().route_template_from(matched_path));

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    obskit
        .server()
        .serve(listener, TowerToHyperService::new(app), obskit::shutdown_signal())
        .await?;
    // What the last requests traced and logged goes out before the process does.
    obskit.flush_traces(std::time::Duration::from_secs(5)).await;
    obskit.flush_logs(std::time::Duration::from_secs(5)).await;
    Ok(())
}
