//! Servers through `gantry up` on the real Docker engine: start over the JupyterHub-shaped
//! API, follow the progress stream, reach the server through the proxy behind the gate,
//! survive a gantry restart, stop.

use std::time::Duration;

use anyhow::{Context, ensure};
use gantry_integration_tests::{DockerCleanup, TestGantry, browser_client, ensure_busybox_image};
use reqwest::Client;
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// A gantry with one profile: busybox httpd serving "hello <user>" under the user's prefix.
fn gantry_with_profile(instance: &str, image: &str) -> anyhow::Result<TestGantry> {
    let script = "mkdir -p /www/user/$JUPYTERHUB_USER && \
                  echo hello $JUPYTERHUB_USER > /www/user/$JUPYTERHUB_USER/index.html && \
                  exec /bin/busybox httpd -f -p 8888 -h /www";
    TestGantry::new(&format!(
        "[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.tiny]\ndisplay_name = \"Tiny\"\ndescription = \"busybox httpd\"\n\
         image = \"{image}\"\ncmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n"
    ))
}

async fn login(gantry: &TestGantry, user: &str) -> anyhow::Result<(Client, String)> {
    gantry.login(user, PASSWORD).await
}

/// Reads the progress stream to its end; returns every event.
async fn progress(client: &Client, url: &str) -> anyhow::Result<Vec<Value>> {
    let response = client.get(url).send().await?;
    ensure!(response.status() == 200, "progress: {}", response.status());
    ensure!(
        response.headers()["content-type"] == "text/event-stream",
        "progress content type"
    );
    let text = tokio::time::timeout(Duration::from_secs(120), response.text())
        .await
        .context("the progress stream did not end within 120 s")??;
    text.split("\n\n")
        .filter_map(|chunk| chunk.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).context("event JSON"))
        .collect()
}

#[tokio::test]
async fn a_server_starts_is_reached_through_the_gate_survives_a_restart_and_stops()
-> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_with_profile(&instance, image)?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;
    let base = gantry.url();
    let api = |path: &str| format!("{base}/hub/api{path}");

    // Not running yet: alice gets the 503 page that offers a start (and nothing starts).
    let page = alice
        .get(format!("{}/user/alice/", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 503);
    assert!(page.text().await?.contains("/hub/spawn"));
    assert_eq!(cleanup.containers(), 0, "a GET must never start a server");

    // An unknown profile is refused; the real one starts.
    let start = |body: Value| {
        alice
            .post(api("/users/alice/server"))
            .header("origin", gantry.url())
            .header("x-xsrftoken", &xsrf)
            .json(&body)
            .send()
    };
    assert_eq!(start(json!({"profile": "huge"})).await?.status(), 400);
    assert_eq!(start(json!({"profile": "tiny"})).await?.status(), 202);
    let events = progress(&alice, &api("/users/alice/server/progress")).await?;
    let last = events.last().context("no events")?;
    assert_eq!(last["ready"], true, "{events:#?}\n{}", gantry.log_text());
    assert_eq!(last["url"], "/user/alice/");
    let percents: Vec<u64> = events
        .iter()
        .filter_map(|e| e["progress"].as_u64())
        .collect();
    assert!(
        percents.windows(2).all(|w| w[0] <= w[1]),
        "progress goes forward: {percents:?}"
    );

    let model: Value = alice.get(api("/users/alice")).send().await?.json().await?;
    assert_eq!(model["server"], "/user/alice/");
    assert_eq!(model["servers"][""]["ready"], true);
    assert_eq!(model["servers"][""]["user_options"]["profile"], "tiny");

    // Through the proxy: the owner passes.
    let page = alice
        .get(format!("{}/user/alice/", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    assert_eq!(page.text().await?.trim(), "hello alice");

    // Bob may not, and cannot tell whether alice's server exists; nobody is sent to log in.
    let (bob, _) = login(&gantry, "bob").await?;
    assert_eq!(
        bob.get(format!("{}/user/alice/", gantry.url()))
            .send()
            .await?
            .status(),
        404
    );
    assert_eq!(
        bob.get(format!("{}/user/carol/", gantry.url()))
            .send()
            .await?
            .status(),
        404
    );
    let anonymous = browser_client()?
        .get(format!("{}/user/alice/", gantry.url()))
        .send()
        .await?;
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        anonymous.headers()["location"],
        "/hub/login?next=%2Fuser%2Falice%2F"
    );
    let api_anonymous = reqwest::Client::new()
        .get(format!("{}/user/alice/api/status", gantry.url()))
        .header("accept", "application/json")
        .send()
        .await?;
    assert_eq!(api_anonymous.status(), 403);

    // A gantry restart leaves the container running and routes it again.
    gantry.restart().await?;
    let page = alice
        .get(format!("{}/user/alice/", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 200, "{}", gantry.log_text());
    assert_eq!(cleanup.containers(), 1);

    // Stop: the route goes and the container with it.
    let stopped = alice
        .delete(api("/users/alice/server"))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &xsrf)
        .send()
        .await?;
    assert_eq!(stopped.status(), 204);
    assert_eq!(
        alice
            .get(format!("{}/user/alice/", gantry.url()))
            .send()
            .await?
            .status(),
        503
    );
    assert_eq!(cleanup.containers(), 0);
    Ok(())
}

#[tokio::test]
async fn the_spawn_pages_start_a_server() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-pages-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_with_profile(&instance, image)?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;

    let spawn = alice
        .get(format!("{}/hub/spawn", gantry.url()))
        .send()
        .await?;
    assert_eq!(spawn.status(), 200);
    let page = spawn.text().await?;
    assert!(
        page.contains("Tiny") && page.contains("value=\"tiny\""),
        "{page}"
    );

    // A named server from the form, without the CSRF token: refused.
    let forged = alice
        .post(format!("{}/hub/spawn", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("profile", "tiny"), ("server", "lab")])
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    let started = alice
        .post(format!("{}/hub/spawn", gantry.url()))
        .header("origin", gantry.url())
        .form(&[
            ("_xsrf", xsrf.as_str()),
            ("profile", "tiny"),
            ("server", "lab"),
        ])
        .send()
        .await?;
    assert_eq!(started.status(), 303);
    assert_eq!(
        started.headers()["location"],
        "/hub/spawn-pending?server=lab"
    );
    let pending = alice
        .get(format!("{}/hub/spawn-pending?server=lab", gantry.url()))
        .send()
        .await?;
    let pending = pending.text().await?;
    assert!(
        pending.contains("/hub/api/users/alice/servers/lab/progress"),
        "{pending}"
    );
    let events = progress(
        &alice,
        &format!("{}/hub/api/users/alice/servers/lab/progress", gantry.url()),
    )
    .await?;
    assert_eq!(
        events.last().context("events")?["ready"],
        true,
        "{events:#?}"
    );

    // The home page lists it with Open and Stop.
    let home = alice
        .get(format!("{}/hub/home", gantry.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        home.contains("href=\"/user/alice/lab/\"") && home.contains("Stop"),
        "{home}"
    );
    let stop = alice
        .post(format!("{}/hub/stop", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("_xsrf", xsrf.as_str()), ("server", "lab")])
        .send()
        .await?;
    assert_eq!(stop.status(), 303);
    Ok(())
}

/// A server idle past its profile's `idle_timeout` is stopped and unrouted; one whose
/// profile has none keeps running beside it.
#[tokio::test]
async fn idle_servers_are_culled_and_others_kept() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-cull-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let serve = "mkdir -p /www/user/$JUPYTERHUB_USER && \
                 echo hello > /www/user/$JUPYTERHUB_USER/index.html && \
                 exec /bin/busybox httpd -f -p 8888 -h /www";
    let profile = |id: &str, extra: &str| {
        format!(
            "[profiles.{id}]\ndisplay_name = \"{id}\"\nimage = \"{image}\"\n\
             cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{serve}\"]\n{extra}\n"
        )
    };
    let mut gantry = TestGantry::new(&format!(
        "cull_interval_secs = 1\n[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n{}{}",
        profile("brief", "idle_timeout = \"3s\""),
        profile("lasting", "")
    ))?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    for (user, profile) in [("alice", "brief"), ("bob", "lasting")] {
        let (client, xsrf) = login(&gantry, user).await?;
        let started = client
            .post(format!("{base}/hub/api/users/{user}/server"))
            .header("origin", &base)
            .header("x-xsrftoken", &xsrf)
            .json(&json!({"profile": profile}))
            .send()
            .await?;
        assert_eq!(started.status(), 202);
        let events = progress(
            &client,
            &format!("{base}/hub/api/users/{user}/server/progress"),
        )
        .await?;
        assert_eq!(
            events.last().context("events")?["ready"],
            true,
            "{events:#?}"
        );
    }
    let (alice, _) = login(&gantry, "alice").await?;
    let (bob, _) = login(&gantry, "bob").await?;
    assert_eq!(
        alice
            .get(format!("{base}/user/alice/"))
            .send()
            .await?
            .status(),
        200
    );

    // Within a minute the idle one is gone (3 s idle, checked every second).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = alice
            .get(format!("{base}/hub/api/users/alice"))
            .send()
            .await?;
        let model: Value = status.json().await?;
        if model["servers"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
        {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "alice's idle server was not culled: {model}\n{}",
            gantry.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(gantry.log_text().contains("server culled"));
    assert_eq!(
        alice
            .get(format!("{base}/user/alice/"))
            .send()
            .await?
            .status(),
        503
    );
    // Bob's profile has no idle_timeout: his server runs on.
    assert_eq!(
        bob.get(format!("{base}/user/bob/")).send().await?.status(),
        200
    );
    assert_eq!(cleanup.containers(), 1);
    Ok(())
}

/// JupyterHub's own `jupyterhub-idle-culler` (from PyPI) against gantry's API: it lists the
/// users with ready servers (paginated) with an admin token and stops the idle one.
#[tokio::test]
async fn jupyterhub_idle_culler_culls_through_the_api() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-culler-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_with_profile(&instance, image)?;
    let token = "c0ffee00".repeat(8);
    gantry.set_env("GANTRY_ADMIN_TOKEN", &token);
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    for user in ["alice", "bob"] {
        let (client, xsrf) = login(&gantry, user).await?;
        let started = client
            .post(format!("{base}/hub/api/users/{user}/server"))
            .header("origin", &base)
            .header("x-xsrftoken", &xsrf)
            .json(&json!({"profile": "tiny"}))
            .send()
            .await?;
        assert_eq!(started.status(), 202);
        let events = progress(
            &client,
            &format!("{base}/hub/api/users/{user}/server/progress"),
        )
        .await?;
        assert_eq!(
            events.last().context("events")?["ready"],
            true,
            "{events:#?}"
        );
    }

    // The list API as the culler reads it: admins only, filtered, paginated.
    let admin = reqwest::Client::new();
    let list = |query: &str| {
        admin
            .get(format!("{base}/hub/api/users{query}"))
            .header("authorization", format!("token {token}"))
            .header("accept", "application/jupyterhub-pagination+json")
            .send()
    };
    let page: Value = list("?state=ready&limit=1").await?.json().await?;
    assert_eq!(page["_pagination"]["total"], 2, "{page}");
    assert_eq!(page["items"].as_array().map(Vec::len), Some(1));
    let next = page["_pagination"]["next"]["url"]
        .as_str()
        .context("next page")?;
    assert!(
        next.starts_with(&format!("{base}/hub/api/users?")),
        "{next}"
    );
    let inactive: Value = list("?state=inactive").await?.json().await?;
    assert_eq!(
        inactive["_pagination"]["total"], 1,
        "only the admin has no server: {inactive}"
    );
    let (bob, _) = login(&gantry, "bob").await?;
    assert_eq!(
        bob.get(format!("{base}/hub/api/users"))
            .send()
            .await?
            .status(),
        403
    );

    // The metrics: the hub's and the proxy's, for read:metrics (here: an admin) only.
    let metrics = admin
        .get(format!("{base}/hub/metrics"))
        .header("authorization", format!("token {token}"))
        .send()
        .await?;
    assert_eq!(metrics.status(), 200);
    let metrics = metrics.text().await?;
    for line in [
        "gantry_servers_running 2",
        "gantry_users_active 2",
        "gantry_spawn_duration_seconds_count 2",
        "gantry_spawn_failures_total 0",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "{line:?} not in\n{metrics}"
        );
    }
    assert!(
        metrics.contains("gantry_proxy_responses_total"),
        "{metrics}"
    );
    assert_eq!(
        bob.get(format!("{base}/hub/metrics"))
            .send()
            .await?
            .status(),
        403
    );
    assert_eq!(
        reqwest::get(format!("{base}/hub/metrics")).await?.status(),
        403
    );

    // Keep bob's server busy through the proxy while the culler runs; alice's sits idle.
    let mut culler =
        std::process::Command::new(gantry_integration_tests::venv()?.join("bin/python"));
    culler
        .args(["-m", "jupyterhub_idle_culler"])
        .arg(format!("--url={base}/hub/api"))
        .args(["--timeout=4", "--cull-every=1", "--concurrency=1"])
        .env("JUPYTERHUB_API_TOKEN", &token);
    let log = tempfile::NamedTempFile::new()?;
    let mut culler =
        gantry_integration_tests::ChildGuard::spawn("jupyterhub-idle-culler", culler, log.path())?;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        culler.ensure_running()?;
        assert_eq!(
            bob.get(format!("{base}/user/bob/")).send().await?.status(),
            200
        );
        let model: Value = admin
            .get(format!("{base}/hub/api/users/alice"))
            .header("authorization", format!("token {token}"))
            .send()
            .await?
            .json()
            .await?;
        if model["servers"]
            .as_object()
            .is_some_and(serde_json::Map::is_empty)
        {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the culler did not stop alice's server: {model}\n{}",
            culler.log_text()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        culler.log_text().contains("Culling server alice"),
        "{}",
        culler.log_text()
    );
    assert!(
        !culler.log_text().contains("Culling server bob"),
        "{}",
        culler.log_text()
    );
    assert_eq!(cleanup.containers(), 1, "bob's server is still there");
    Ok(())
}
