//! The CHP-compatible route API.

use gantry_proxy::ProxyConfig;
use serde_json::Value;

use crate::support::*;

fn json(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("not JSON ({e}): {body}"))
}

#[tokio::test]
async fn requests_without_the_token_are_refused() {
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let body = Some(r#"{"target": "http://127.0.0.1:9"}"#);
    assert_eq!(api(&proxy, "GET", "/api/routes", None, None).await.0, 403);
    assert_eq!(
        api(&proxy, "GET", "/api/routes", Some("wrong"), None)
            .await
            .0,
        403
    );
    assert_eq!(
        api(
            &proxy,
            "GET",
            "/api/routes",
            Some("test-token-and-more"),
            None
        )
        .await
        .0,
        403
    );
    assert_eq!(
        api(
            &proxy,
            "POST",
            "/api/routes/user/x",
            Some("test-toke"),
            body
        )
        .await
        .0,
        403
    );
    assert_eq!(api(&proxy, "GET", "/metrics", None, None).await.0, 403);
    assert!(proxy.table.is_empty(), "nothing was added");
}

#[tokio::test]
async fn add_get_list_delete_round_trip() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let body = format!(
        r#"{{"target": "{}", "user": "alice", "server_name": "", "jupyterhub": true}}"#,
        backend.url()
    );
    assert_eq!(
        api(
            &proxy,
            "POST",
            "/api/routes/user/alice",
            Some(TOKEN),
            Some(&body)
        )
        .await
        .0,
        201
    );

    let (status, body) = api(&proxy, "GET", "/api/routes/user/alice/", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    let route = json(&body);
    assert_eq!(route["target"], backend.url());
    assert_eq!(route["user"], "alice");
    assert_eq!(route["jupyterhub"], true);
    assert!(route["last_activity"].as_str().unwrap().ends_with('Z'));

    let (_, body) = api(&proxy, "GET", "/api/routes", Some(TOKEN), None).await;
    let all = json(&body);
    assert_eq!(all.as_object().unwrap().len(), 1);
    assert_eq!(all["/user/alice"]["target"], backend.url());

    assert_eq!(
        get(&proxy.url("/user/alice/x")).await.0,
        200,
        "the route is live at once"
    );
    assert_eq!(
        api(
            &proxy,
            "DELETE",
            "/api/routes/user/alice",
            Some(TOKEN),
            None
        )
        .await
        .0,
        204
    );
    assert_eq!(
        api(
            &proxy,
            "DELETE",
            "/api/routes/user/alice",
            Some(TOKEN),
            None
        )
        .await
        .0,
        404
    );
    assert_eq!(
        api(&proxy, "GET", "/api/routes/user/alice", Some(TOKEN), None)
            .await
            .0,
        404
    );
    assert_eq!(get(&proxy.url("/user/alice/x")).await.0, 404);
}

#[tokio::test]
async fn the_root_route_is_the_default_target() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let body = format!(r#"{{"target": "{}"}}"#, backend.url());
    assert_eq!(
        api(&proxy, "POST", "/api/routes/", Some(TOKEN), Some(&body))
            .await
            .0,
        201
    );
    let (_, listing) = api(&proxy, "GET", "/api/routes", Some(TOKEN), None).await;
    assert_eq!(json(&listing)["/"]["target"], backend.url());
    assert_eq!(get(&proxy.url("/hub/login")).await.0, 200);
}

/// JupyterHub's proxy conformance names (traefik-proxy's `test_check_routes`): keys come back
/// decoded, as CHP's do, and the escaped request path reaches the route.
#[tokio::test]
async fn unusual_user_names_round_trip() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let names = [
        ("zoe", "zoe"),
        ("50fia", "50fia"),
        ("%E7%A7%80%E6%A8%B9", "秀樹"),
        ("~TestJH", "~TestJH"),
        ("has%40", "has@"),
        ("a%20b", "a b"),
    ];
    let body = format!(r#"{{"target": "{}"}}"#, backend.url());
    for (escaped, _) in names {
        let (status, text) = api(
            &proxy,
            "POST",
            &format!("/api/routes/user/{escaped}"),
            Some(TOKEN),
            Some(&body),
        )
        .await;
        assert_eq!(status, 201, "{escaped}: {text}");
    }
    let (_, listing) = api(&proxy, "GET", "/api/routes", Some(TOKEN), None).await;
    let listing = json(&listing);
    for (escaped, decoded) in names {
        assert!(
            listing.get(format!("/user/{decoded}")).is_some(),
            "{decoded} listed: {listing}"
        );
        assert_eq!(
            get(&proxy.url(&format!("/user/{escaped}/api"))).await.0,
            200,
            "{escaped} routed"
        );
    }
}

#[tokio::test]
async fn bad_bodies_and_targets_are_400_and_change_nothing() {
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let cases = [
        ("/api/routes/user/a", "not json"),
        ("/api/routes/user/a", "[1, 2]"),
        (
            "/api/routes/user/a",
            r#"{"nottarget": "http://127.0.0.1:1"}"#,
        ),
        ("/api/routes/user/a", r#"{"target": 5}"#),
        ("/api/routes/user/a", r#"{"target": "/missing-host"}"#),
        ("/api/routes/user/a", r#"{"target": "://missing-scheme"}"#),
        ("/api/routes/user/a", r#"{"target": "ftp://127.0.0.1/"}"#),
        (
            "/api/routes/user/a",
            r#"{"target": "http://a@169.254.169.254/"}"#,
        ),
        (
            "/api/routes/user/a",
            r#"{"target": "http://169.254.169.254/latest"}"#,
        ),
        (
            "/api/routes/user/../hub",
            r#"{"target": "http://127.0.0.1:1"}"#,
        ),
        (
            "/api/routes/user/%2e%2e/hub",
            r#"{"target": "http://127.0.0.1:1"}"#,
        ),
        (
            "/api/routes/user/a%2Fb",
            r#"{"target": "http://127.0.0.1:1"}"#,
        ),
    ];
    for (path, body) in cases {
        let (status, text) = api(&proxy, "POST", path, Some(TOKEN), Some(body)).await;
        assert_eq!(status, 400, "{path} {body}: {text}");
        assert!(json(&text)["message"].is_string());
    }
    let huge = format!(
        r#"{{"target": "http://127.0.0.1:1", "x": "{}"}}"#,
        "a".repeat(100_000)
    );
    assert_eq!(
        api(
            &proxy,
            "POST",
            "/api/routes/user/a",
            Some(TOKEN),
            Some(&huge)
        )
        .await
        .0,
        413
    );
    assert!(proxy.table.is_empty());
}

#[tokio::test]
async fn inactive_since_filters_by_last_activity() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    let body = format!(r#"{{"target": "{}"}}"#, backend.url());
    api(
        &proxy,
        "POST",
        "/api/routes/user/idle",
        Some(TOKEN),
        Some(&body),
    )
    .await;
    let count = |query: &'static str| {
        let proxy = &proxy;
        async move {
            let (status, text) = api(
                proxy,
                "GET",
                &format!("/api/routes?{query}"),
                Some(TOKEN),
                None,
            )
            .await;
            assert_eq!(status, 200, "{query}: {text}");
            json(&text).as_object().unwrap().len()
        }
    };
    assert_eq!(
        count("inactive_since=2000-01-01T00:00:00Z").await,
        0,
        "active since 2000"
    );
    assert_eq!(
        count("inactive_since=2999-01-01T00:00:00.000Z").await,
        1,
        "idle before 2999"
    );
    assert_eq!(count("inactiveSince=2999-01-01").await, 1);
    let (status, _) = api(
        &proxy,
        "GET",
        "/api/routes?inactive_since=last-tuesday",
        Some(TOKEN),
        None,
    )
    .await;
    assert_eq!(status, 400);
}

#[tokio::test]
async fn metrics_are_exported() {
    let backend = EchoBackend::start().await;
    let proxy = TestProxy::start(ProxyConfig::default()).await;
    proxy.route("/", &backend.url());
    get(&proxy.url("/x")).await;
    get(&proxy.url("/%2e%2e/x")).await;
    let (status, text) = api(&proxy, "GET", "/metrics", Some(TOKEN), None).await;
    assert_eq!(status, 200);
    assert!(
        text.contains("gantry_proxy_responses_total{class=\"2xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gantry_proxy_responses_total{class=\"4xx\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gantry_proxy_upstream_latency_seconds_count 1"),
        "{text}"
    );
    assert!(
        text.contains("gantry_proxy_rejected_paths_total 1"),
        "{text}"
    );
    assert!(text.contains("gantry_proxy_open_websockets 0"), "{text}");
}
