//! Bench-only: the minimal server with many series present, for scripts/bench-scrape-load.sh
//! (does a `/metrics` scrape slow the requests served beside it?).
//!
//! ```text
//! BENCH_SERIES=10000 ADDR=127.0.0.1:3000 cargo run --release -p obskit-examples --example bench_scrape_server
//! ```
//!
//! `BENCH_SERIES` (default 10 000) declares one counter family with that many label sets, each
//! incremented once, on top of the RED and function metrics; the label limit is raised to fit.
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Request, Response};
use obskit::http::RequestBody;
use obskit::metrics::Registry;

#[obskit::instrumented(skip(_request))]
async fn hello(_request: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    Ok(Response::new(Full::new(Bytes::from_static(b"hello\n"))))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let series: usize = match std::env::var("BENCH_SERIES") {
        Ok(value) => value
            .parse()
            .map_err(|_| format!("BENCH_SERIES={value:?} is not a count"))?,
        Err(_) => 10_000,
    };
    let registry = Registry::with_label_limit(series.max(1));
    let padding = registry.counter_vec(
        "bench_padding_series_total",
        "Series declared only to make /metrics as large as a busy service's",
        &["series"],
    )?;
    for index in 0..series {
        padding.with(&[&index.to_string()]).inc();
    }
    let obskit = obskit::Obskit::builder()
        .service("bench-scrape")
        .version(env!("CARGO_PKG_VERSION"))
        .registry(registry)
        .routes(["/hello/{name}"])
        .build()?;
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    obskit.serve(listener, hyper::service::service_fn(hello)).await?;
    Ok(())
}
