//! A tiny router on top of obskit's [`MatchedRoute`]: the RED layer already matched the path
//! against the templates, so dispatch is a lookup of (template, method).
//!
//! ```
//! use http::{Method, StatusCode};
//! use shop_common::http::{json_response, ApiError};
//! use shop_common::router::{Request, Router};
//!
//! async fn hello(name: &'static str, _req: Request) -> shop_common::router::Reply {
//!     Ok(json_response(StatusCode::OK, name))
//! }
//!
//! let router = Router::new()
//!     .route(Method::GET, "/hello", hello)
//!     .route(Method::POST, "/hello", |_, _| async { Err(ApiError::forbidden("read only")) });
//! assert_eq!(router.templates(), ["/hello"]);
//! // Serve with `obskit.serve(listener, router.into_service("world"))`, after passing
//! // `router.templates()` to `Obskit::builder().routes(...)`.
//! ```

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use http::header::ALLOW;
use http::{HeaderValue, Method, Response, StatusCode};
use hyper::body::Incoming;
use obskit::http::{MatchedRoute, RequestBody};

use crate::http::{ApiError, Body};

/// The request a handler receives.
pub type Request = http::Request<RequestBody<Incoming>>;

/// What a handler answers: a response, or an error that becomes the contract's JSON error.
pub type Reply = Result<Response<Body>, ApiError>;

/// Whether a handler's call failed as a user feels it: a 5xx answer, returned as a response or
/// as an error. A 4xx (a missing product, a bad field) is the client's and counts as a call that
/// worked. Handlers say so with `#[obskit::instrumented(error_if = server_failed)]`, so that a
/// 503 checkout is an error of `checkout` in `function_calls_total`.
pub fn server_failed(reply: &Reply) -> bool {
    match reply {
        Ok(response) => response.status().is_server_error(),
        Err(error) => error.status.is_server_error(),
    }
}

type BoxReply = Pin<Box<dyn Future<Output = Reply> + Send>>;
type Handler<S> = Arc<dyn Fn(S, Request) -> BoxReply + Send + Sync>;

struct Route<S> {
    template: String,
    method: Method,
    handler: Handler<S>,
}

/// Handlers by route template and method. Every handler gets a clone of the state `S`.
pub struct Router<S> {
    routes: Vec<Route<S>>,
}

impl<S> Default for Router<S> {
    fn default() -> Self {
        Router { routes: Vec::new() }
    }
}

impl<S: Clone + Send + Sync + 'static> Router<S> {
    /// No routes: everything answers 404.
    pub fn new() -> Self {
        Router::default()
    }

    /// Adds `handler` for `method` on `template` (matchit syntax, as obskit's `Routes`).
    pub fn route<F, Fut>(mut self, method: Method, template: &str, handler: F) -> Self
    where
        F: Fn(S, Request) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Reply> + Send + 'static,
    {
        self.routes.push(Route {
            template: template.to_string(),
            method,
            handler: Arc::new(move |state, request| Box::pin(handler(state, request))),
        });
        self
    }

    /// The distinct templates, in the order first added: give them to
    /// `Obskit::builder().routes(...)` so that the RED layer matches them.
    pub fn templates(&self) -> Vec<String> {
        let mut templates: Vec<String> = Vec::new();
        for route in &self.routes {
            if !templates.contains(&route.template) {
                templates.push(route.template.clone());
            }
        }
        templates
    }

    /// Dispatches one request: 404 when no template matched, 405 (with `Allow`) when the
    /// template has no handler for the method.
    pub async fn dispatch(&self, state: S, request: Request) -> Response<Body> {
        let Some(template) = MatchedRoute::of(&request).map(|m| m.template().to_string()) else {
            return ApiError::not_found(format!("no route for {}", request.uri().path())).into_response();
        };
        let handler = self
            .routes
            .iter()
            .find(|r| r.template == template && r.method == request.method())
            .map(|r| Arc::clone(&r.handler));
        match handler {
            Some(handler) => handler(state, request)
                .await
                .unwrap_or_else(ApiError::into_response),
            None => {
                let allowed: Vec<&str> = self
                    .routes
                    .iter()
                    .filter(|r| r.template == template)
                    .map(|r| r.method.as_str())
                    .collect();
                let mut response = ApiError::new(
                    StatusCode::METHOD_NOT_ALLOWED,
                    "method_not_allowed",
                    format!("{} is not allowed here", request.method()),
                )
                .into_response();
                if let Ok(value) = HeaderValue::from_str(&allowed.join(", ")) {
                    response.headers_mut().insert(ALLOW, value);
                }
                response
            }
        }
    }

    /// A hyper service dispatching with `state`, for `Obskit::serve`.
    pub fn into_service(
        self,
        state: S,
    ) -> impl hyper::service::Service<
        Request,
        Response = Response<Body>,
        Error = Infallible,
        Future = impl Future<Output = Result<Response<Body>, Infallible>> + Send + 'static,
    > + Clone
           + Send
           + Sync
           + 'static {
        let router = Arc::new(self);
        hyper::service::service_fn(move |request: Request| {
            let router = Arc::clone(&router);
            let state = state.clone();
            async move { Ok::<_, Infallible>(router.dispatch(state, request).await) }
        })
    }
}
