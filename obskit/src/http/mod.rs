//! HTTP RED metrics (rate, errors, duration) for hyper 1.x services: a [`tower_layer::Layer`]
//! that also wraps plain hyper services, labelling every request by its route template.
//!
//! [`HttpMetricsLayer`] records into five families ([`HttpMetrics`]): requests by method,
//! endpoint and status, duration, requests in flight, request and response body sizes. The
//! `endpoint` label is always a template of [`Routes`] or `unmatched`, and non-standard methods
//! are `other`, so clients cannot grow the number of series. A request counts until its
//! response body ends (or is dropped), so streamed responses are timed and sized in full, and a
//! request that is cancelled leaves nothing in flight. When a span sink is installed
//! ([`crate::trace`]), each request also gets a server span covering the response body.
//!
//! The layer matches the path anyway, so it hands the match to the inner service in the request
//! body it wraps ([`MatchedRoute::of`] reads it): a hand-written router dispatches on it
//! instead of matching again.
//!
//! ```
//! use std::convert::Infallible;
//! use http::{Request, Response, StatusCode};
//! use http_body_util::{BodyExt, Empty, Full};
//! use hyper::body::Incoming;
//! use hyper::server::conn::http1;
//! use hyper::service::service_fn;
//! use hyper_util::rt::TokioIo;
//! use obskit::http::{HttpMetrics, HttpMetricsLayer, MatchedRoute, RequestBody, Routes};
//! use obskit::metrics::Registry;
//!
//! async fn shop(req: Request<RequestBody<Incoming>>) -> Result<Response<Full<bytes::Bytes>>, Infallible> {
//!     let route = MatchedRoute::of(&req);
//!     let response = match route.map(|r| (r.template(), r.param("id"))) {
//!         Some(("/api/products", _)) => Response::new(Full::from("[]")),
//!         Some(("/api/products/{id}", Some(id))) => Response::new(Full::from(format!("{{\"id\":{id}}}"))),
//!         _ => Response::builder().status(StatusCode::NOT_FOUND).body(Full::default()).unwrap(),
//!     };
//!     Ok(response)
//! }
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() {
//! let registry = Registry::new();
//! let layer = HttpMetricsLayer::new(HttpMetrics::new(&registry).unwrap())
//!     .routes(Routes::new(["/api/products", "/api/products/{id}"]).unwrap())
//!     .exclude_admin(true);
//!
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
//! let addr = listener.local_addr().unwrap();
//! tokio::spawn(async move {
//!     loop {
//!         let Ok((stream, _)) = listener.accept().await else { break };
//!         // Per connection: one reference count.
//!         let service = layer.wrap_hyper(service_fn(shop));
//!         tokio::spawn(http1::Builder::new().serve_connection(TokioIo::new(stream), service));
//!     }
//! });
//!
//! let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
//! let (mut client, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
//! tokio::spawn(conn);
//! for path in ["/api/products/1", "/api/products/2", "/no/such/page"] {
//!     let req = Request::get(path).header("host", "shop").body(Empty::<bytes::Bytes>::new()).unwrap();
//!     client.send_request(req).await.unwrap().into_body().collect().await.unwrap();
//! }
//!
//! let text = registry.encode_text();
//! assert!(text.contains(r#"http_requests_total{endpoint="/api/products/{id}",method="GET",status="200"} 2"#));
//! assert!(text.contains(r#"http_requests_total{endpoint="unmatched",method="GET",status="404"} 1"#));
//! assert!(!text.contains("/api/products/1\""), "raw paths never become labels");
//! # }
//! ```
//!
//! With axum or tonic, add the layer like any other (`Router::layer`, `Server::builder().layer`);
//! the inner service then sees `Request<RequestBody<B>>`, which both accept since they are
//! generic over the request body. Behind axum's router, the layer can take each request's
//! template from axum's `MatchedPath`
//! ([`HttpMetricsLayer::route_template_from`]; `examples/axum/`).

mod body;
mod framework;
mod future;
mod grpc;
mod guard;
mod layer;
mod matcher;
mod metrics;
mod routes;
mod service;
mod shared;

pub use body::{RequestBody, ResponseBody};
pub use framework::LEARNED_TEMPLATES;
pub use future::ResponseFuture;
pub use layer::HttpMetricsLayer;
pub use metrics::HttpMetrics;
pub(crate) use routes::method_label_at;
pub use routes::{method_label, MatchedRoute, RouteError, Routes, OTHER_METHOD, UNMATCHED_ENDPOINT};
pub use service::HttpMetricsService;

#[cfg(test)]
mod tests;
