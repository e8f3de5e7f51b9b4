//! Issue 11's probes against `gantry up` on the real Docker engine: a server's credentials
//! survive its user's other starts, racing starts leave the running server a valid token,
//! per-user limits refuse what is past them (and the spawn page says so first), a progress
//! stream ends when its server stops, the spawn-pending page takes only a server of the
//! caller's, and OAuth client ids are unique per server.

use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use gantry_integration_tests::{DockerCleanup, TestGantry, ensure_busybox_image};
use reqwest::Client;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A gantry whose `[hub]` gets `hub_keys`, with one profile `tiny`: busybox httpd, which as
/// PID 1 ignores SIGTERM, so a stop takes the engine's grace period.
pub(crate) fn test_gantry(
    instance: &str,
    image: &str,
    hub_keys: &str,
) -> anyhow::Result<TestGantry> {
    let script = "mkdir -p /www/user/$JUPYTERHUB_USER && \
                  echo hello > /www/user/$JUPYTERHUB_USER/index.html && \
                  exec /bin/busybox httpd -f -p 8888 -h /www";
    TestGantry::new(&format!(
        "{hub_keys}\n[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.tiny]\ndisplay_name = \"Tiny\"\nimage = \"{image}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n"
    ))
}

/// A logged-in API client for `user`: (client, CSRF token).
pub(crate) async fn login(gantry: &TestGantry, user: &str) -> anyhow::Result<(Client, String)> {
    gantry.login(user, PASSWORD).await
}

/// `POST`s a start of `user`'s server `server` ("" for the default one) as `client`.
async fn start(
    gantry: &TestGantry,
    client: &Client,
    xsrf: &str,
    user: &str,
    server: &str,
) -> anyhow::Result<reqwest::Response> {
    let path = if server.is_empty() {
        format!("/hub/api/users/{user}/server")
    } else {
        format!("/hub/api/users/{user}/servers/{server}")
    };
    Ok(client
        .post(format!("{}{path}", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", xsrf)
        .json(&json!({"profile": "tiny"}))
        .send()
        .await?)
}

/// Waits until `user`'s server `server` is ready, by its progress stream.
pub(crate) async fn ready(
    gantry: &TestGantry,
    client: &Client,
    user: &str,
    server: &str,
) -> anyhow::Result<()> {
    let path = if server.is_empty() {
        format!("/hub/api/users/{user}/server/progress")
    } else {
        format!("/hub/api/users/{user}/servers/{server}/progress")
    };
    let events = events(client, &format!("{}{path}", gantry.url())).await?;
    ensure!(
        events.last().is_some_and(|e| e["ready"] == true),
        "{user}/{server} did not start: {events:#?}"
    );
    Ok(())
}

/// Reads a progress stream to its end (failing after two minutes rather than hanging).
async fn events(client: &Client, url: &str) -> anyhow::Result<Vec<Value>> {
    let response = client.get(url).send().await?;
    ensure!(response.status() == 200, "progress: {}", response.status());
    let text = tokio::time::timeout(Duration::from_secs(120), response.text())
        .await
        .context("the progress stream did not end within 120 s")??;
    text.split("\n\n")
        .filter_map(|chunk| chunk.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).context("event JSON"))
        .collect()
}

/// The environment variable `name` of the container running `user`'s server `server`.
pub(crate) fn container_env(
    instance: &str,
    user: &str,
    server: &str,
    name: &str,
) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=gantry.instance={instance}"),
            "--filter",
            &format!("label=gantry.owner={user}"),
            "--filter",
            &format!("label=gantry.server={server}"),
        ])
        .output()?;
    let ids = String::from_utf8_lossy(&output.stdout);
    let ids: Vec<&str> = ids.split_whitespace().collect();
    ensure!(ids.len() == 1, "containers of {user}/{server}: {ids:?}");
    let output = Command::new("docker")
        .args(["inspect", "--format", "{{json .Config.Env}}", ids[0]])
        .output()?;
    let env: Vec<String> = serde_json::from_slice(&output.stdout)?;
    env.iter()
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_owned))
        .with_context(|| format!("{name} is not set in {user}/{server}'s container"))
}

/// The status of `GET /hub/api/user` with `token`.
async fn whoami_status(gantry: &TestGantry, token: &str) -> anyhow::Result<u16> {
    Ok(Client::new()
        .get(format!("{}/hub/api/user", gantry.url()))
        .header("authorization", format!("token {token}"))
        .send()
        .await?
        .status()
        .as_u16())
}

/// The notes of `user`'s tokens.
async fn token_notes(
    gantry: &TestGantry,
    client: &Client,
    user: &str,
) -> anyhow::Result<Vec<String>> {
    let listing: Value = client
        .get(format!("{}/hub/api/users/{user}/tokens", gantry.url()))
        .send()
        .await?
        .json()
        .await?;
    let tokens = listing["api_tokens"]
        .as_array()
        .context("api_tokens")?
        .iter()
        .map(|t| t["note"].as_str().unwrap_or_default().to_owned())
        .collect();
    Ok(tokens)
}

/// The probe: with alice's server `x` running, starting her default server revoked `x`'s
/// token (its note `server token: alice/x` started with `server token: alice/`).
#[tokio::test]
async fn starting_one_server_leaves_another_servers_token_working() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-h-tok-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;

    assert_eq!(
        start(&gantry, &alice, &xsrf, "alice", "x").await?.status(),
        202
    );
    ready(&gantry, &alice, "alice", "x").await?;
    let x_token = container_env(&instance, "alice", "x", "JUPYTERHUB_API_TOKEN")?;
    assert_eq!(whoami_status(&gantry, &x_token).await?, 200);

    assert_eq!(
        start(&gantry, &alice, &xsrf, "alice", "").await?.status(),
        202
    );
    ready(&gantry, &alice, "alice", "").await?;
    let default_token = container_env(&instance, "alice", "", "JUPYTERHUB_API_TOKEN")?;

    assert_eq!(
        whoami_status(&gantry, &x_token).await?,
        200,
        "x's token survives the default server's start"
    );
    assert_eq!(whoami_status(&gantry, &default_token).await?, 200);
    let mut notes = token_notes(&gantry, &alice, "alice").await?;
    notes.sort();
    assert_eq!(notes, ["server token: alice/", "server token: alice/x"]);

    // Stopping the default server ends its token only.
    let stop = alice
        .delete(format!("{}/hub/api/users/alice/server", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &xsrf)
        .send()
        .await?;
    assert_eq!(stop.status(), 204);
    assert_eq!(whoami_status(&gantry, &default_token).await?, 403);
    assert_eq!(whoami_status(&gantry, &x_token).await?, 200);
    Ok(())
}

/// Racing starts of one server: one start mints, the others find it in flight, and the
/// token the running server holds is valid (before, each start revoked the others' fresh
/// token, and the server that ran could hold a revoked one).
#[tokio::test]
async fn racing_starts_leave_the_running_server_a_valid_token() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-h-race-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;

    let starts = (0..8).map(|_| start(&gantry, &alice, &xsrf, "alice", "y"));
    for response in futures_util::future::join_all(starts).await {
        let status = response?.status();
        ensure!(
            status == 202 || status == 201,
            "a racing start answered {status}"
        );
    }
    ready(&gantry, &alice, "alice", "y").await?;
    let token = container_env(&instance, "alice", "y", "JUPYTERHUB_API_TOKEN")?;
    assert_eq!(
        whoami_status(&gantry, &token).await?,
        200,
        "the running server's token works"
    );
    assert_eq!(
        token_notes(&gantry, &alice, "alice").await?,
        ["server token: alice/y"],
        "one token for the one server"
    );
    Ok(())
}

/// The probe: one user started 8 servers with nothing refusing. With the defaults, the
/// fourth running server is refused naming the limit; with `named_server_limit_per_user = 2`
/// the third named one is. The spawn page shows the limits and disables what would break one.
#[tokio::test]
async fn per_user_limits_refuse_past_them_and_the_spawn_page_says_so_first() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-h-lim-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;

    for server in ["", "a", "b"] {
        assert_eq!(
            start(&gantry, &alice, &xsrf, "alice", server)
                .await?
                .status(),
            202
        );
    }
    let refused = start(&gantry, &alice, &xsrf, "alice", "c").await?;
    assert_eq!(refused.status(), 400);
    let message = refused.text().await?;
    assert!(message.contains("max_servers_per_user = 3"), "{message}");
    // The page says so before the user clicks: the profile is disabled with the reason.
    let page = alice
        .get(format!("{}/hub/spawn?server=c", gantry.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("3 of 3 servers running"), "{page}");
    assert!(page.contains(" disabled>"), "{page}");
    assert!(page.contains("max_servers_per_user = 3"), "{page}");
    // Bob's count is his own.
    let (bob, bob_xsrf) = login(&gantry, "bob").await?;
    assert_eq!(
        start(&gantry, &bob, &bob_xsrf, "bob", "").await?.status(),
        202
    );
    drop(gantry);

    let instance = format!("gt-e2e-h-named-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(
        &instance,
        image,
        "named_server_limit_per_user = 2\nmax_servers_per_user = 0",
    )?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;
    for server in ["a", "b", ""] {
        assert_eq!(
            start(&gantry, &alice, &xsrf, "alice", server)
                .await?
                .status(),
            202
        );
    }
    let refused = start(&gantry, &alice, &xsrf, "alice", "c").await?;
    assert_eq!(refused.status(), 400);
    let message = refused.text().await?;
    assert!(
        message.contains("named_server_limit_per_user = 2"),
        "{message}"
    );
    Ok(())
}

/// The probe: a progress stream followed while its server stopped never ended. A server
/// adopted after a restart has no start events; followed while it stops, its stream must
/// end with a `stopped` event.
#[tokio::test]
async fn a_progress_stream_ends_when_its_server_stops() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-h-sse-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;
    assert_eq!(
        start(&gantry, &alice, &xsrf, "alice", "").await?.status(),
        202
    );
    ready(&gantry, &alice, "alice", "").await?;
    gantry.restart().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;

    // The stop takes the engine's grace period (httpd ignores SIGTERM): follow the stream
    // while it is under way.
    let url = gantry.url();
    let stopping = {
        let alice = alice.clone();
        let xsrf = xsrf.clone();
        let url = url.clone();
        tokio::spawn(async move {
            alice
                .delete(format!("{url}/hub/api/users/alice/server"))
                .header("origin", &url)
                .header("x-xsrftoken", &xsrf)
                .send()
                .await
        })
    };
    let mut seen_stopping = false;
    for _ in 0..200 {
        let model: Value = alice
            .get(format!("{url}/hub/api/users/alice"))
            .send()
            .await?
            .json()
            .await?;
        if model["pending"] == "stop" {
            seen_stopping = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    if !seen_stopping {
        bail!("the server never showed as stopping");
    }
    let followed = events(
        &alice,
        &format!("{url}/hub/api/users/alice/server/progress"),
    )
    .await?;
    assert_eq!(
        followed.last().context("no event")?["stopped"],
        true,
        "{followed:#?}"
    );
    assert_eq!(stopping.await??.status(), 204);
    Ok(())
}

/// The probe: `/hub/spawn-pending?server=../../../../user/bob/sse%3F` built a progress URL
/// that resolved into bob's server, whose stream could send the admin's browser anywhere.
#[tokio::test]
async fn the_spawn_pending_page_takes_only_a_server_of_the_callers() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-h-pend-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("root", PASSWORD, true)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.add_user("carol", PASSWORD, false)?;
    gantry.start().await?;
    let (admin, _) = login(&gantry, "root").await?;
    let page = |client: &Client, query: &'static str| {
        let url = format!("{}/hub/spawn-pending?{query}", gantry.url());
        let client = client.clone();
        async move {
            let response = client.get(url).send().await?;
            anyhow::Ok((response.status().as_u16(), response.text().await?))
        }
    };
    for probe in [
        "server=../../../../user/bob/sse%3F",
        "server=..%2F..%2Fuser%2Fbob",
        "server=a/b",
        "server=%2e%2e",
    ] {
        let (status, body) = page(&admin, probe).await?;
        assert_eq!(status, 404, "{probe}: {body}");
        assert!(!body.contains("/user/bob"), "{probe}: {body}");
    }
    let (status, body) = page(&admin, "server=lab").await?;
    assert_eq!(status, 200);
    assert!(
        body.contains("data-progress-url=\"/hub/api/users/root/servers/lab/progress\""),
        "{body}"
    );
    assert!(
        body.contains("data-server-url=\"/user/root/lab/\""),
        "{body}"
    );
    // An admin may watch bob's start (no Cancel: it would stop the admin's own server).
    let (status, body) = page(&admin, "user=bob&server=").await?;
    assert_eq!(status, 200);
    assert!(
        body.contains("data-progress-url=\"/hub/api/users/bob/server/progress\""),
        "{body}"
    );
    assert!(!body.contains("id=\"cancel\""), "{body}");
    // Carol may not.
    let (carol, _) = login(&gantry, "carol").await?;
    let (status, _) = page(&carol, "user=bob&server=").await?;
    assert_eq!(status, 404);
    // The script follows only the page's own server URL or a same-origin /user/ one.
    let script = Client::new()
        .get(format!("{}/hub/static/pending.js", gantry.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        script.contains("parsed.origin !== window.location.origin"),
        "{script}"
    );
    Ok(())
}

/// The probe: user `alice-x`'s default server and alice's server `x` both had the OAuth
/// client id `jupyterhub-user-alice-x`.
#[tokio::test]
async fn oauth_client_ids_are_unique_per_server() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-h-oauth-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("alice-x", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;
    let (alice_x, xsrf_x) = login(&gantry, "alice-x").await?;
    assert_eq!(
        start(&gantry, &alice, &xsrf, "alice", "x").await?.status(),
        202
    );
    assert_eq!(
        start(&gantry, &alice_x, &xsrf_x, "alice-x", "")
            .await?
            .status(),
        202
    );
    ready(&gantry, &alice, "alice", "x").await?;
    ready(&gantry, &alice_x, "alice-x", "").await?;
    let named = container_env(&instance, "alice", "x", "JUPYTERHUB_CLIENT_ID")?;
    let default = container_env(&instance, "alice-x", "", "JUPYTERHUB_CLIENT_ID")?;
    assert_eq!(named, "jupyterhub-user-alice-x");
    assert_eq!(default, "jupyterhub-user-alice%2Dx");
    // Each client answers for its own server: an authorization for one redirects to it.
    for (client, id, prefix) in [
        (&alice, &named, "/user/alice/x/"),
        (&alice_x, &default, "/user/alice-x/"),
    ] {
        let redirect_uri = format!("{prefix}oauth_callback");
        let response = client
            .get(format!("{}/hub/api/oauth2/authorize", gantry.url()))
            .query(&[
                ("client_id", id.as_str()),
                ("redirect_uri", redirect_uri.as_str()),
                ("response_type", "code"),
            ])
            .send()
            .await?;
        assert_eq!(response.status(), 303, "{id}");
        let location = response.headers()["location"].to_str()?;
        assert!(
            location.starts_with(&format!("{prefix}oauth_callback?code=")),
            "{location}"
        );
    }
    Ok(())
}

/// Tokens issued through the OAuth provider carry no more than the visitor holds when the
/// code is exchanged: an admin who authorized a look at alice's server and was demoted
/// before the exchange gets no token for it.
#[tokio::test]
async fn an_oauth_exchange_issues_nothing_the_visitor_no_longer_holds() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-h-oex-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("root", PASSWORD, true)?;
    gantry.add_user("boss", PASSWORD, true)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;
    assert_eq!(
        start(&gantry, &alice, &xsrf, "alice", "").await?.status(),
        202
    );
    ready(&gantry, &alice, "alice", "").await?;
    let client_id = container_env(&instance, "alice", "", "JUPYTERHUB_CLIENT_ID")?;
    let secret = container_env(&instance, "alice", "", "JUPYTERHUB_API_TOKEN")?;
    let redirect_uri = "/user/alice/oauth_callback";

    let (root, _) = login(&gantry, "root").await?;
    let code = |visitor: Client| {
        let url = format!("{}/hub/api/oauth2/authorize", gantry.url());
        let client_id = client_id.clone();
        async move {
            let response = visitor
                .get(url)
                .query(&[
                    ("client_id", client_id.as_str()),
                    ("redirect_uri", redirect_uri),
                    ("response_type", "code"),
                ])
                .send()
                .await?;
            ensure!(response.status() == 303, "authorize: {}", response.status());
            let location = response.headers()["location"].to_str()?.to_owned();
            let code = location
                .split_once("code=")
                .map(|(_, c)| c.split('&').next().unwrap_or_default().to_owned())
                .context("no code")?;
            anyhow::Ok(code)
        }
    };
    let exchange = |code: String| {
        let url = format!("{}/hub/api/oauth2/token", gantry.url());
        let (client_id, secret) = (client_id.clone(), secret.clone());
        async move {
            let response = Client::new()
                .post(url)
                .form(&[
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("client_id", client_id.as_str()),
                    ("client_secret", secret.as_str()),
                    ("redirect_uri", redirect_uri),
                ])
                .send()
                .await?;
            anyhow::Ok((response.status().as_u16(), response.text().await?))
        }
    };
    // While root is an admin, the exchange works.
    let (status, body) = exchange(code(root.clone()).await?).await?;
    assert_eq!(status, 200, "{body}");

    let pending = code(root.clone()).await?;
    let (boss, boss_xsrf) = login(&gantry, "boss").await?;
    let demoted = boss
        .patch(format!("{}/hub/api/users/root", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &boss_xsrf)
        .json(&json!({"admin": false}))
        .send()
        .await?;
    assert_eq!(demoted.status(), 200);
    let (status, body) = exchange(pending).await?;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("invalid_grant"), "{body}");
    Ok(())
}
