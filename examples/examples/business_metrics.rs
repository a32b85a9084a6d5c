//! Business metrics next to the RED metrics: counters, a gauge and a histogram declared once
//! with fixed label names, a health check of a dependency, and the cardinality guard folding a
//! client's unbounded label values into `__overflow__`.
//!
//! ```text
//! cargo run -p obskit-examples --example business_metrics
//! curl -X POST 'localhost:3000/orders?category=books&value=42.5'
//! curl 'localhost:3000/products/7?category=books'
//! curl localhost:3000/metrics | grep -E 'orders|product_views|overflow'
//! ```
use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::Full;
use hyper::{body::Incoming, Method, Request, Response, StatusCode};
use obskit::health::CheckOutcome;
use obskit::http::RequestBody;
use obskit::metrics::{Counter, CounterVec, Gauge, Histogram, Registry};

/// The shop's business metrics, declared once at start-up.
#[derive(Clone)]
struct ShopMetrics {
    orders_created: Counter,
    order_value: Histogram,
    product_views: CounterVec,
    open_carts: Gauge,
}

impl ShopMetrics {
    fn declare(registry: &Registry) -> Result<Self, obskit::metrics::Error> {
        Ok(ShopMetrics {
            orders_created: registry.counter("orders_created_total", "Orders created")?,
            order_value: registry.histogram(
                "order_value",
                "Order value at checkout, in currency units",
                &[10.0, 50.0, 100.0, 200.0, 500.0, 1000.0],
            )?,
            // `category` is a bounded set; a product id would not be, and never becomes a label.
            product_views: registry.counter_vec(
                "product_views_total",
                "Product pages viewed",
                &["category"],
            )?,
            open_carts: registry.gauge("open_carts", "Carts with items and no order yet")?,
        })
    }
}

fn query<'a>(request: &'a Request<RequestBody<Incoming>>, key: &str) -> Option<&'a str> {
    request.uri().query()?.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == key).then_some(v)
    })
}

fn text(status: StatusCode, body: String) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}

#[obskit::instrumented(skip(metrics, request))]
async fn handle(
    metrics: ShopMetrics,
    request: Request<RequestBody<Incoming>>,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let path = request.uri().path();
    let response = match (request.method(), path) {
        (&Method::POST, "/orders") => match query(&request, "value").and_then(|v| v.parse::<f64>().ok()) {
            Some(value) if value.is_finite() && value >= 0.0 => {
                metrics.orders_created.inc();
                metrics.order_value.observe(value);
                metrics.open_carts.dec();
                text(StatusCode::CREATED, format!("order of {value} created\n"))
            }
            _ => text(
                StatusCode::UNPROCESSABLE_ENTITY,
                "value must be a non-negative number\n".into(),
            ),
        },
        (&Method::GET, p) if p.starts_with("/products/") => {
            let category = query(&request, "category").unwrap_or("unknown");
            metrics.product_views.with(&[category]).inc();
            metrics.open_carts.inc();
            text(StatusCode::OK, format!("product in {category}\n"))
        }
        _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
    };
    Ok(response)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    // A registry of our own, with a small label-set limit to show the guard at work.
    let registry = Registry::with_label_limit(20);
    let metrics = ShopMetrics::declare(&registry)?;
    let obskit = obskit::Obskit::builder()
        .service("business-metrics")
        .registry(registry)
        .routes(["/orders", "/products/{id}"])
        .build()?;

    // A dependency check: unhealthy while a file `payments.down` exists in the working directory.
    obskit.health().register("payments", || async {
        if std::path::Path::new("payments.down").exists() {
            CheckOutcome::unhealthy("payments provider unreachable")
        } else {
            CheckOutcome::healthy()
        }
    });

    let addr = std::env::var("ADDR").unwrap_or_else(|_| "127.0.0.1:3000".into());
    let listener = tokio::net::TcpListener::bind(&addr).await?;
    println!("listening on http://{}", listener.local_addr()?);
    let service = hyper::service::service_fn(move |request| handle(metrics.clone(), request));
    obskit.serve(listener, service).await?;
    Ok(())
}
