//! A gRPC service (tonic's server core) behind obskit: the RPC method is the endpoint, a failed
//! call counts under the HTTP status its `grpc-status` stands for (`UNAVAILABLE` as 503), the
//! `#[instrumented]` method counts `Err(Status)` as an error, and its log line carries the call's
//! trace id.
//!
//! ```text
//! cargo run -p obskit-examples --example grpc_server
//! grpcurl -plaintext -d '{"sku": "book-1"}' localhost:3000 shop.Inventory/GetStock   # with a .proto
//! curl localhost:3000/metrics
//! ```
//!
//! The messages are written by hand with `prost`'s derive, as `tonic-build` would generate them
//! from this schema (no `protoc` needed to build the example):
//!
//! ```text
//! service Inventory { rpc GetStock(StockRequest) returns (StockReply); }
//! message StockRequest { string sku = 1; }
//! message StockReply { string sku = 1; int64 units = 2; }
//! ```
use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use hyper::{body::Incoming, Request, Response};
use obskit::http::RequestBody;
use tonic::Status;

/// The one method: its path is its route template, so its calls are one bounded series.
const GET_STOCK: &str = "/shop.Inventory/GetStock";

#[derive(Clone, PartialEq, prost::Message)]
pub struct StockRequest {
    #[prost(string, tag = "1")]
    pub sku: String,
}

#[derive(Clone, PartialEq, prost::Message)]
pub struct StockReply {
    #[prost(string, tag = "1")]
    pub sku: String,
    #[prost(int64, tag = "2")]
    pub units: i64,
}

/// The RPC: `Err(Status)` is its error result in `function_calls_total`.
#[obskit::instrumented]
async fn get_stock(request: StockRequest) -> Result<tonic::Response<StockReply>, Status> {
    match request.sku.as_str() {
        "" => Err(Status::invalid_argument("sku is required")),
        // Stands for a dependency that is down.
        "unreachable" => Err(Status::unavailable("the warehouse does not answer")),
        sku => {
            tracing::info!(sku, "stock looked up");
            Ok(tonic::Response::new(StockReply {
                sku: sku.to_string(),
                units: 42,
            }))
        }
    }
}

/// The method as tonic's unary handler takes it (what generated code writes).
#[derive(Clone, Copy)]
struct GetStock;

impl tower_service::Service<tonic::Request<StockRequest>> for GetStock {
    type Response = tonic::Response<StockReply>;
    type Error = Status;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Status>> + Send>>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Status>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: tonic::Request<StockRequest>) -> Self::Future {
        Box::pin(get_stock(request.into_inner()))
    }
}

/// Routes by method path, as a generated server does.
async fn serve_grpc(
    request: Request<RequestBody<Incoming>>,
) -> Result<Response<tonic::body::Body>, Infallible> {
    if request.uri().path() != GET_STOCK {
        return Ok(Status::unimplemented("no such method").into_http());
    }
    let mut grpc = tonic::server::Grpc::new(tonic_prost::ProstCodec::<StockReply, StockRequest>::default());
    Ok(grpc.unary(GetStock, request).await)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let obskit = obskit::Obskit::builder()
        .service("inventory")
        .version(env!("CARGO_PKG_VERSION"))
        .routes([GET_STOCK])
        .build()?;
    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    obskit
        .serve(listener, hyper::service::service_fn(serve_grpc))
        .await?;
    Ok(())
}
