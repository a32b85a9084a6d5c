//! A minimal instrumented hyper server: RED metrics by route template, `#[instrumented]`
//! function metrics, `/health*`, `/debug/*` and `/metrics`, in one builder call.
//!
//! ```text
//! cargo run -p obskit-examples --example minimal_server
//! curl localhost:3000/hello/world
//! curl localhost:3000/metrics
//! ```
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Request, Response, StatusCode};
use obskit::http::{MatchedRoute, RequestBody};

#[obskit::instrumented(skip(request))]
async fn hello(request: Request<RequestBody<Incoming>>) -> Result<Response<Full<Bytes>>, Infallible> {
    // The RED layer already matched the route: reuse its parameters instead of parsing again.
    let name = MatchedRoute::of(&request).and_then(|r| r.param("name"));
    let response = match name {
        Some(name) => Response::new(Full::new(Bytes::from(format!("hello, {name}\n")))),
        None => Response::builder()
            .status(StatusCode::NOT_FOUND)
            .body(Full::new(Bytes::from_static(b"not found\n")))
            .expect("static response is valid"),
    };
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let obskit = obskit::Obskit::builder()
        .service("minimal")
        .version(env!("CARGO_PKG_VERSION"))
        .routes(["/hello/{name}"])
        .build()?;
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    obskit.serve(listener, hyper::service::service_fn(hello)).await?;
    Ok(())
}
