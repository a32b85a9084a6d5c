use super::*;
use http::Method;
use http_body_util::BodyExt;

fn surface(access: AdminAccess) -> AdminSurface {
    AdminSurface::new(Registry::new(), HealthChecks::new("t", "0")).access(access)
}

fn request(path: &str, peer: &str, headers: &[(&str, &str)]) -> Request<()> {
    let mut builder = Request::get(path);
    for (k, v) in headers {
        builder = builder.header(*k, *v);
    }
    let mut request = builder.body(()).unwrap();
    request.extensions_mut().insert(PeerAddr(peer.parse().unwrap()));
    request
}

async fn status(admin: &AdminSurface, req: Request<()>) -> u16 {
    admin.handle(req).await.status().as_u16()
}

async fn body_json(response: Response<Full<Bytes>>) -> serde_json::Value {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&body).unwrap()
}

#[tokio::test]
async fn loopback_policy() {
    let admin = surface(AdminAccess::LoopbackOnly);
    for peer in ["127.0.0.1:1", "[::1]:1", "[::ffff:127.0.0.1]:1"] {
        assert_eq!(
            status(&admin, request("/debug/config", peer, &[])).await,
            200,
            "{peer}"
        );
    }
    assert_eq!(
        status(&admin, request("/debug/config", "10.0.0.8:1", &[])).await,
        403
    );
    assert_eq!(
        status(
            &admin,
            request("/debug/config", "127.0.0.1:1", &[("x-forwarded-for", "1.2.3.4")])
        )
        .await,
        403
    );
    let mut no_peer = Request::get("/debug/config").body(()).unwrap();
    no_peer.extensions_mut().clear();
    assert_eq!(status(&admin, no_peer).await, 403);
    // Open endpoints stay open.
    assert_eq!(status(&admin, request("/metrics", "10.0.0.8:1", &[])).await, 200);
    assert_eq!(
        status(&admin, request("/health/live", "10.0.0.8:1", &[])).await,
        200
    );
}

#[tokio::test]
async fn loopback_mode_refuses_foreign_hosts() {
    let admin = surface(AdminAccess::LoopbackOnly);
    for host in [
        "evil.example",
        "evil.example:8080",
        "localhost.evil.example",
        "0.0.0.0:80",
        "10.0.0.8",
    ] {
        let response = admin
            .handle(request("/debug/config", "127.0.0.1:1", &[("host", host)]))
            .await;
        assert_eq!(response.status(), 403, "{host}");
        let value = body_json(response).await;
        assert_eq!(value["error"], "host_not_allowed", "{host}");
        assert!(
            value["message"].as_str().unwrap().contains("DNS rebinding"),
            "{value}"
        );
    }
    for host in [
        "127.0.0.1:8080",
        "localhost:8080",
        "[::1]:8080",
        "localhost",
        "app.localhost:3000",
    ] {
        assert_eq!(
            status(&admin, request("/debug/config", "127.0.0.1:1", &[("host", host)])).await,
            200,
            "{host}"
        );
    }
    // No Host at all (HTTP/1.0): no browser sends that, so it passes.
    assert_eq!(
        status(&admin, request("/debug/config", "127.0.0.1:1", &[])).await,
        200
    );
    // Two Host headers: every one must be acceptable.
    let mut two = request("/debug/config", "127.0.0.1:1", &[("host", "localhost")]);
    two.headers_mut()
        .append(header::HOST, HeaderValue::from_static("evil.example"));
    assert_eq!(status(&admin, two).await, 403);
    // A Host that is not even text.
    let mut binary = request("/debug/config", "127.0.0.1:1", &[]);
    binary
        .headers_mut()
        .insert(header::HOST, HeaderValue::from_bytes(b"\xffhost").unwrap());
    assert_eq!(status(&admin, binary).await, 403);
    // Open endpoints do not look at the host: they answer anyone anyway.
    assert_eq!(
        status(
            &admin,
            request("/metrics", "127.0.0.1:1", &[("host", "evil.example")])
        )
        .await,
        200
    );
}

#[tokio::test]
async fn the_uri_authority_counts_too() {
    // HTTP/2's `:authority` (and an absolute-form HTTP/1 target) lands in the URI.
    let admin = surface(AdminAccess::LoopbackOnly);
    let mut h2 = Request::get("http://evil.example:8080/debug/config")
        .body(())
        .unwrap();
    h2.extensions_mut()
        .insert(PeerAddr("127.0.0.1:1".parse().unwrap()));
    assert_eq!(status(&admin, h2).await, 403);
    let mut h2 = Request::get("http://127.0.0.1:8080/debug/config")
        .body(())
        .unwrap();
    h2.extensions_mut()
        .insert(PeerAddr("127.0.0.1:1".parse().unwrap()));
    assert_eq!(status(&admin, h2).await, 200);
    // A loopback Host does not excuse a foreign authority.
    let mut both = Request::get("http://evil.example/debug/config")
        .header("host", "localhost")
        .body(())
        .unwrap();
    both.extensions_mut()
        .insert(PeerAddr("127.0.0.1:1".parse().unwrap()));
    assert_eq!(status(&admin, both).await, 403);
}

#[tokio::test]
async fn allowed_hosts_are_let_in() {
    let admin =
        surface(AdminAccess::LoopbackOnly).allowed_hosts(AllowedHosts::new(["devbox.lan", "tunnel:9000"]));
    for (host, expected) in [
        ("devbox.lan", 200),
        ("DevBox.Lan:8080", 200),
        ("tunnel:9000", 200),
        ("tunnel:9001", 403),
        ("evil.example", 403),
        ("localhost:1", 200),
    ] {
        assert_eq!(
            status(&admin, request("/debug/config", "127.0.0.1:1", &[("host", host)])).await,
            expected,
            "{host}"
        );
    }
    // An allowed host does not make a remote peer local.
    assert_eq!(
        status(
            &admin,
            request("/debug/config", "10.0.0.8:1", &[("host", "devbox.lan")])
        )
        .await,
        403
    );
}

#[tokio::test]
async fn token_mode_ignores_the_host() {
    let admin = surface(AdminAccess::Token("s3cret".into()));
    for host in ["evil.example", "localhost", "10.0.0.8:80"] {
        assert_eq!(
            status(
                &admin,
                request(
                    "/debug/config",
                    "10.0.0.8:1",
                    &[("host", host), ("authorization", "Bearer s3cret")]
                )
            )
            .await,
            200,
            "{host}"
        );
    }
}

#[tokio::test]
async fn token_policy_applies_to_loopback_too() {
    let admin = surface(AdminAccess::Token("s3cret".into()));
    assert_eq!(
        status(&admin, request("/debug/metrics", "127.0.0.1:1", &[])).await,
        401
    );
    assert_eq!(
        status(
            &admin,
            request(
                "/debug/config",
                "127.0.0.1:1",
                &[("authorization", "Bearer nope")]
            )
        )
        .await,
        401
    );
    for header in ["Bearer s3cret", "bearer s3cret"] {
        assert_eq!(
            status(
                &admin,
                request("/debug/config", "10.0.0.8:1", &[("authorization", header)])
            )
            .await,
            200
        );
    }
    // A protected route refuses before it tells which methods it answers.
    let mut post = request("/debug/config", "10.0.0.8:1", &[]);
    *post.method_mut() = Method::POST;
    assert_eq!(status(&admin, post).await, 401);
}

#[tokio::test]
async fn methods_and_unknown_paths() {
    let admin = surface(AdminAccess::LoopbackOnly);
    let mut post = request("/metrics", "127.0.0.1:1", &[]);
    *post.method_mut() = Method::POST;
    let response = admin.handle(post).await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET, HEAD");
    // Paths outside the table, `/debug/...` ones too, are not the admin surface's.
    for path in [
        "/nope",
        "/debug/nothing",
        "/debug",
        "/health/deep",
        "/debug-info",
        "/metricsfoo",
    ] {
        let response = admin.handle(request(path, "127.0.0.1:1", &[])).await;
        assert_eq!(response.status(), 404, "{path}");
        assert_eq!(body_json(response).await["error"], "not_found");
    }
}

#[test]
fn the_table_decides_every_path() {
    let cases = [
        ("/metrics", Some(AdminEndpoint::Metrics)),
        ("/metrics/", Some(AdminEndpoint::Metrics)),
        ("/health", Some(AdminEndpoint::Health)),
        ("/health/live", Some(AdminEndpoint::Live)),
        ("/health/ready//", Some(AdminEndpoint::Ready)),
        ("/debug/metrics", Some(AdminEndpoint::DebugMetrics)),
        ("/debug/config", Some(AdminEndpoint::DebugConfig)),
        ("/debug/traces", Some(AdminEndpoint::DebugTraces)),
        ("/debug/pprof/profile", Some(AdminEndpoint::PprofProfile)),
        ("/debug/pprof/heap", Some(AdminEndpoint::PprofHeap)),
        ("/debug/pprof/allocs/", Some(AdminEndpoint::PprofAllocs)),
        ("/debug/pprof/heapx", None),
        ("/profiles", Some(AdminEndpoint::ProfileList)),
        ("/profiles/", Some(AdminEndpoint::ProfileList)),
        ("/profiles/a.svg", Some(AdminEndpoint::ProfileFile)),
        ("/profiles/a/b", Some(AdminEndpoint::ProfileFile)),
        ("/", None),
        ("//", None),
        ("", None),
        ("/health/deep", None),
        ("/health/live/x", None),
        ("/healthz", None),
        ("/debug-info", None),
        ("/debug", None),
        ("/debug/", None),
        ("/debug/unknown", None),
        ("/debug/pprof", None),
        ("/metricsfoo", None),
        ("/api/metrics", None),
        ("/profilesx", None),
        ("/%6Detrics", None),
    ];
    for (path, expected) in cases {
        assert_eq!(AdminRoute::find(path).map(|r| r.endpoint), expected, "{path:?}");
    }
    // Each endpoint has exactly one entry, and each entry is found by its own path.
    for route in ADMIN_ROUTES {
        let probe = match route.matching {
            PathMatch::Exact => route.path.to_string(),
            PathMatch::Prefix => format!("{}x", route.path),
        };
        assert_eq!(AdminRoute::find(&probe), Some(route), "{probe}");
        assert_eq!(
            ADMIN_ROUTES
                .iter()
                .filter(|r| r.endpoint == route.endpoint)
                .count(),
            1
        );
        assert_eq!(
            route.is_protected(),
            !matches!(
                route.endpoint,
                AdminEndpoint::Metrics | AdminEndpoint::Health | AdminEndpoint::Live | AdminEndpoint::Ready
            ),
            "{}",
            route.path
        );
    }
}

#[tokio::test]
async fn profiles_are_protected_and_names_checked() {
    let store = ProfileStore::in_memory(4, 1 << 20);
    let names = store.insert(&crate::profile::Profile::from_parts("f", b"pb", b"<svg/>"));
    let admin = surface(AdminAccess::LoopbackOnly).profile_store(store);
    for path in [
        "/profiles/",
        "/profiles",
        "/debug/pprof/profile?seconds=1",
        "/debug/pprof/heap",
        "/debug/pprof/allocs",
    ] {
        assert_eq!(
            status(&admin, request(path, "10.0.0.8:1", &[])).await,
            403,
            "{path}"
        );
    }
    let response = admin.handle(request("/profiles/", "127.0.0.1:1", &[])).await;
    assert_eq!(response.status(), 200);
    let value = body_json(response).await;
    assert_eq!(value["profiles"][0]["name"], names[1]);
    assert_eq!(value["profiles"][0]["kind"], "flamegraph");
    assert_eq!(value["profiles"][1]["kind"], "pprof");
    let response = admin
        .handle(request(&format!("/profiles/{}", names[0]), "127.0.0.1:1", &[]))
        .await;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "application/octet-stream");
    assert_eq!(
        response.headers()["content-disposition"],
        format!("attachment; filename=\"{}\"", names[0]).as_str()
    );
    assert_eq!(
        status(
            &admin,
            request("/profiles/..%2f..%2fetc%2fpasswd", "127.0.0.1:1", &[])
        )
        .await,
        400
    );
    assert_eq!(
        status(&admin, request("/profiles/nope.svg", "127.0.0.1:1", &[])).await,
        404
    );
    assert_eq!(
        status(
            &admin,
            request("/debug/pprof/profile?seconds=x", "127.0.0.1:1", &[])
        )
        .await,
        400
    );
    let mut head = request("/debug/pprof/profile?seconds=1", "127.0.0.1:1", &[]);
    *head.method_mut() = Method::HEAD;
    let response = admin.handle(head).await;
    assert_eq!(response.status(), 405);
    assert_eq!(response.headers()["allow"], "GET");
}

#[test]
fn token_is_never_printed() {
    assert_eq!(format!("{:?}", AdminAccess::Token("abc".into())), "Token(***)");
}

#[test]
fn constant_time_eq_works() {
    use super::access::constant_time_eq;
    assert!(constant_time_eq(b"abc", b"abc"));
    assert!(!constant_time_eq(b"abc", b"abd"));
    assert!(!constant_time_eq(b"abc", b"abcd"));
    assert!(!constant_time_eq(b"", b"a"));
}

/// A part the build leaves out answers 501 and names the feature, whatever the method.
#[tokio::test]
async fn a_part_left_out_of_the_build_answers_501_naming_its_feature() {
    let admin = surface(AdminAccess::LoopbackOnly);
    let mut left_out = Vec::new();
    if cfg!(not(feature = "tracing-bridge")) {
        left_out.push(("/debug/log-level", "tracing-bridge"));
    }
    if cfg!(not(feature = "process-metrics")) {
        left_out.push(("/debug/metrics", "process-metrics"));
    }
    if cfg!(not(feature = "profiling")) {
        left_out.push(("/debug/pprof/profile?seconds=1", "profiling"));
    }
    if cfg!(not(feature = "heap-profiling")) {
        left_out.push(("/debug/pprof/heap", "heap-profiling"));
        left_out.push(("/debug/pprof/allocs?format=svg", "heap-profiling"));
    }
    for (path, feature) in left_out {
        let response = admin.handle(request(path, "127.0.0.1:1", &[])).await;
        assert_eq!(response.status(), 501, "{path}");
        let body = body_json(response).await;
        assert_eq!(body["error"], "not_built", "{path}: {body}");
        assert!(
            body["message"]
                .as_str()
                .unwrap()
                .contains(&format!("`{feature}`")),
            "{body}"
        );
    }
}

#[cfg(feature = "tracing-bridge")]
#[tokio::test]
async fn the_log_level_is_shown_changed_for_a_while_and_put_back() {
    let registry = Registry::new();
    let settings = crate::log::LogSettings {
        directives: "warn".to_string(),
        ..crate::log::LogSettings::default()
    };
    let logs = crate::log::Logs::to_writer(&settings, "t", &registry, Box::new(std::io::sink())).unwrap();
    let _subscriber = logs.subscriber();
    let admin = surface(AdminAccess::LoopbackOnly).log_levels(logs.levels().clone());
    let call = |method: Method, path: &str| {
        let mut request = Request::builder().method(method).uri(path).body(()).unwrap();
        request
            .extensions_mut()
            .insert(PeerAddr("127.0.0.1:1".parse().unwrap()));
        admin.handle(request)
    };

    let shown = body_json(call(Method::GET, "/debug/log-level").await).await;
    assert_eq!(shown["directives"], "warn");
    assert_eq!(shown["default"], "warn");
    assert!(shown["expires_at"].is_null());

    let changed = call(
        Method::PUT,
        "/debug/log-level?directives=info%2Ccart%3Ddebug&ttl=90",
    )
    .await;
    assert_eq!(changed.status(), 200);
    let changed = body_json(changed).await;
    assert_eq!(changed["directives"], "info,cart=debug");
    assert!(changed["expires_in_seconds"].as_u64().unwrap() <= 90);
    assert_eq!(
        body_json(call(Method::GET, "/debug/log-level").await).await["directives"],
        "info,cart=debug"
    );

    for bad in [
        "/debug/log-level?directives=cart%3Dloud",
        "/debug/log-level?directives=debug&ttl=2d",
        "/debug/log-level?directives=debug&ttl=25h",
        "/debug/log-level?level=debug",
        "/debug/log-level",
    ] {
        let response = call(Method::PUT, bad).await;
        assert_eq!(response.status(), 400, "{bad}");
        let body = body_json(response).await;
        assert!(!body["message"].as_str().unwrap().is_empty(), "{bad}: {body}");
    }
    assert_eq!(
        body_json(call(Method::GET, "/debug/log-level").await).await["directives"],
        "info,cart=debug",
        "a refused change changes nothing"
    );

    let reset = body_json(call(Method::DELETE, "/debug/log-level").await).await;
    assert_eq!(reset["directives"], "warn");
    assert_eq!(call(Method::POST, "/debug/log-level").await.status(), 405);

    // Protected like the rest of /debug.
    assert_eq!(
        status(&admin, request("/debug/log-level", "10.0.0.8:1", &[])).await,
        403
    );
    // Without logs, the endpoint says why.
    let none = surface(AdminAccess::LoopbackOnly);
    assert_eq!(
        status(&none, request("/debug/log-level", "127.0.0.1:1", &[])).await,
        503
    );
}
