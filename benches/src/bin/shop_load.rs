//! A closed-loop load generator for the shop's benchmark (`scripts/bench-shop.sh`): `C`
//! workers, each sending its next request as soon as the last one answered, for `S` seconds,
//! through the gateway. Prints one JSON line: completed operations per second and the p50/p99
//! latency of one operation.
//!
//! ```text
//! shop_load products URL [SECONDS] [WORKERS]   GET /api/products?category=<first>&limit=20
//! shop_load purchase URL [SECONDS] [WORKERS]   list, add to cart, check out (one operation)
//! ```
//!
//! Written in Rust rather than run with Locust: on a 2-core machine a Python generator would
//! measure itself more than the shop.

use std::time::{Duration, Instant};

use reqwest::{Client, StatusCode};
use serde_json::{json, Value};

type BoxError = Box<dyn std::error::Error + Send + Sync>;

struct Outcome {
    latencies: Vec<Duration>,
    errors: u64,
}

async fn products(client: Client, base: String, until: Instant, category: String) -> Outcome {
    let url = format!("{base}/api/products?category={category}&limit=20");
    let mut outcome = Outcome {
        latencies: Vec::new(),
        errors: 0,
    };
    while Instant::now() < until {
        let started = Instant::now();
        let answered = match client.get(&url).send().await {
            Ok(r) if r.status() == StatusCode::OK => r.bytes().await.is_ok(),
            _ => false,
        };
        if answered {
            outcome.latencies.push(started.elapsed());
        } else {
            outcome.errors += 1;
        }
    }
    outcome
}

async fn expect(response: reqwest::Result<reqwest::Response>, status: StatusCode) -> Result<Value, BoxError> {
    let response = response?;
    let got = response.status();
    let body = response.bytes().await?;
    if got != status {
        return Err(format!("{got}: {}", String::from_utf8_lossy(&body)).into());
    }
    Ok(serde_json::from_slice(&body).unwrap_or(Value::Null))
}

async fn register(client: &Client, base: &str, worker: usize) -> Result<String, BoxError> {
    let name = format!("bench_{}_{worker}", std::process::id());
    let user = expect(
        client
            .post(format!("{base}/user-api/register"))
            .json(&json!({"username": name, "email": format!("{name}@example.com"), "password": "benchpass123"}))
            .send()
            .await,
        StatusCode::CREATED,
    )
    .await?;
    user["id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| "no id".into())
}

/// One purchase: list products, add one unit of one of them, check out.
async fn purchase_once(client: &Client, base: &str, user: &str, pick: usize) -> Result<(), BoxError> {
    let products = expect(
        client.get(format!("{base}/api/products?limit=20")).send().await,
        StatusCode::OK,
    )
    .await?;
    let list = products.as_array().ok_or("not a list")?;
    let product = &list.get(pick % list.len().max(1)).ok_or("no products")?["id"];
    expect(
        client
            .post(format!("{base}/cart-api/cart/{user}/add"))
            .json(&json!({"product_id": product, "quantity": 1}))
            .send()
            .await,
        StatusCode::OK,
    )
    .await?;
    expect(
        client
            .post(format!("{base}/cart-api/cart/{user}/checkout"))
            .send()
            .await,
        StatusCode::CREATED,
    )
    .await?;
    Ok(())
}

async fn purchase(client: Client, base: String, until: Instant, worker: usize) -> Outcome {
    let mut outcome = Outcome {
        latencies: Vec::new(),
        errors: 0,
    };
    let user = match register(&client, &base, worker).await {
        Ok(user) => user,
        Err(e) => {
            eprintln!("shop_load: registering worker {worker}: {e}");
            outcome.errors += 1;
            return outcome;
        }
    };
    let mut pick = worker;
    while Instant::now() < until {
        let started = Instant::now();
        match purchase_once(&client, &base, &user, pick).await {
            Ok(()) => outcome.latencies.push(started.elapsed()),
            Err(e) => {
                if outcome.errors == 0 {
                    eprintln!("shop_load: worker {worker}: {e}");
                }
                outcome.errors += 1;
            }
        }
        pick += 7;
    }
    outcome
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1000.0
}

#[tokio::main]
async fn main() -> Result<(), BoxError> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: shop_load products|purchase URL [SECONDS] [WORKERS]";
    let scenario = args.first().ok_or(usage)?.clone();
    let base = args.get(1).ok_or(usage)?.trim_end_matches('/').to_string();
    let seconds: u64 = args.get(2).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let workers: usize = args.get(3).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let client = Client::builder()
        .timeout(Duration::from_secs(30))
        .no_proxy()
        .build()?;
    let category = {
        let categories = expect(
            client.get(format!("{base}/api/categories")).send().await,
            StatusCode::OK,
        )
        .await?;
        categories[0].as_str().ok_or("no categories")?.to_string()
    };
    // Purchases register their users before the clock starts.
    let started = Instant::now()
        + if scenario == "purchase" {
            Duration::from_secs(2)
        } else {
            Duration::ZERO
        };
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for worker in 0..workers {
        let (client, base) = (client.clone(), base.clone());
        tasks.push(match scenario.as_str() {
            "products" => tokio::spawn(products(client, base, until, category.clone())),
            "purchase" => tokio::spawn(purchase(client, base, until, worker)),
            _ => return Err(usage.into()),
        });
    }
    let mut latencies = Vec::new();
    let mut errors = 0;
    for task in tasks {
        let outcome = task.await?;
        latencies.extend(outcome.latencies);
        errors += outcome.errors;
    }
    latencies.sort_unstable();
    let elapsed = until.saturating_duration_since(started).as_secs_f64();
    println!(
        "{}",
        json!({
            "scenario": scenario,
            "operations": latencies.len(),
            "per_second": latencies.len() as f64 / elapsed,
            "p50_ms": percentile(&latencies, 50.0),
            "p99_ms": percentile(&latencies, 99.0),
            "errors": errors,
        })
    );
    Ok(())
}
