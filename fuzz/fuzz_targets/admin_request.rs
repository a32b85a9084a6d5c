//! Whole requests to the admin surface (`AdminSurface::handle`), as a client sends them: any
//! path and query (endpoint matching, `/debug/traces?…`, `/profiles/{name}`), any `Accept`
//! (the `/metrics` negotiation), any `Authorization`. Never a panic, never a 500; a JSON answer
//! is valid JSON; an invalid profile name is a 400; the configured secrets never show.
//!
//! Input: the request target (`/path?query`) on the first line, then `name:value` header lines.
//! `/debug/pprof/profile` is asked with HEAD, which answers at once: a GET would take a CPU
//! capture of a second or more (its query is fuzzed by `admin_query`).
#![no_main]

use std::sync::OnceLock;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::BodyExt;
use libfuzzer_sys::fuzz_target;
use obskit::admin::{AdminSurface, PeerAddr};
use obskit::health::HealthChecks;
use obskit::metrics::Registry;
use obskit::profile::ProfileStore;
use obskit::trace::RecentSpans;

const SECRET: &str = "fuzz-Secret-9f3c1d";

struct Harness {
    runtime: tokio::runtime::Runtime,
    admin: AdminSurface,
}

fn harness() -> &'static Harness {
    static HARNESS: OnceLock<Harness> = OnceLock::new();
    HARNESS.get_or_init(|| {
        let registry = Registry::new();
        let requests = registry
            .counter_vec("fuzz_requests_total", "Requests", &["endpoint"])
            .expect("a fresh registry");
        requests.with(&["/api/products/{id}"]).inc();
        let admin = AdminSurface::new(registry, HealthChecks::new("fuzz", "1.0.0"))
            .recent_spans(RecentSpans::new(16))
            .profile_store(ProfileStore::in_memory(4, 1 << 20))
            .config(vec![
                ("DATABASE_PASSWORD".to_string(), SECRET.to_string()),
                (
                    "DATABASE_URL".to_string(),
                    format!("postgres://svc:{SECRET}@db:5432/shop"),
                ),
                ("PORT".to_string(), "8000".to_string()),
            ]);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a current-thread runtime");
        Harness { runtime, admin }
    })
}

fuzz_target!(|data: &[u8]| {
    let mut lines = data.split(|&b| b == b'\n');
    let target = lines.next().unwrap_or_default();
    let Ok(uri) = http::Uri::try_from(target) else {
        return;
    };
    let path = uri.path().to_string();
    let method = if path.trim_end_matches('/') == "/debug/pprof/profile" {
        Method::HEAD
    } else {
        Method::GET
    };
    let mut request = Request::builder()
        .method(method)
        .uri(uri)
        .body(())
        .expect("a valid request");
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let (name, value) = (&line[..colon], &line[colon + 1..]);
        let name = match name {
            b"a" => header::ACCEPT,
            b"z" => header::AUTHORIZATION,
            other => match HeaderName::from_bytes(other) {
                Ok(name) => name,
                Err(_) => continue,
            },
        };
        if let Ok(value) = HeaderValue::from_bytes(value) {
            request.headers_mut().append(name, value);
        }
    }
    request
        .extensions_mut()
        .insert(PeerAddr("127.0.0.1:40000".parse().expect("an address")));

    let harness = harness();
    let (status, content_type, body) = harness.runtime.block_on(async {
        let response = harness.admin.handle(request).await;
        let content_type = response.headers().get(header::CONTENT_TYPE).cloned();
        let status = response.status();
        let body: Bytes = response
            .into_body()
            .collect()
            .await
            .expect("a full body")
            .to_bytes();
        (status, content_type, body)
    });

    assert_ne!(status, 500, "{path}: {}", String::from_utf8_lossy(&body));
    if !AdminSurface::is_admin_path(&path) {
        assert_eq!(status, 404, "{path}");
    }
    if content_type.as_ref().is_some_and(|t| t == "application/json") {
        if let Err(e) = serde_json::from_slice::<serde_json::Value>(&body) {
            panic!("{path}: invalid JSON ({e}): {}", String::from_utf8_lossy(&body));
        }
    }
    // Access is checked first (a forwarding header, or a `Host` that is not loopback): 403.
    let refused = status == 401 || status == 403;
    if let (Some(name), false) = (path.strip_prefix("/profiles/"), refused) {
        let name = name.trim_end_matches('/');
        if name.contains(['/', '%', '\\']) || name.contains("..") {
            assert_eq!(status, 400, "{path}");
        }
    }
    let text = String::from_utf8_lossy(&body);
    assert!(!text.contains(SECRET), "{path}: a configured secret was shown");
});
