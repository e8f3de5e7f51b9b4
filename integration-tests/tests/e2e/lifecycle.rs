//! A server's life beyond the happy path, through `gantry up` on the real Docker engine: the
//! embedded defaults of a first run, a start cancelled from the progress page, a server that
//! dies and is noticed, JSON logs and a graceful shutdown that lets requests finish.

use std::time::Duration;

use anyhow::{Context, ensure};
use gantry_integration_tests::{
    DockerCleanup, TestGantry, ensure_busybox_image, follow_redirects, poll_until, xsrf_field,
};
use reqwest::Client;
use serde_json::{Value, json};
use tokio::time::Instant;

use crate::notebook::notebook_image;

const PASSWORD: &str = "correct horse battery";

/// A gantry with one busybox profile running `script` (a shell command line).
fn gantry_running(instance: &str, script: &str, hub: &str) -> anyhow::Result<TestGantry> {
    let image = ensure_busybox_image()?;
    TestGantry::new(&format!(
        "{hub}\nservers_api_port = {}\n\
         [docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.tiny]\ndisplay_name = \"Tiny\"\nimage = \"{image}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", {}]\n",
        gantry_integration_tests::free_port()?,
        json!(script)
    ))
}

/// busybox httpd answering under the user's prefix, after `delay` seconds.
fn httpd_after(delay: u32) -> String {
    format!(
        "sleep {delay}; mkdir -p /www/user/$JUPYTERHUB_USER && \
         echo hello $JUPYTERHUB_USER > /www/user/$JUPYTERHUB_USER/index.html && \
         exec /bin/busybox httpd -f -p 8888 -h /www"
    )
}

fn container_ids(instance: &str) -> anyhow::Result<Vec<String>> {
    let output = std::process::Command::new("docker")
        .args([
            "ps",
            "-q",
            "--filter",
            &format!("label=gantry.instance={instance}"),
        ])
        .output()?;
    ensure!(output.status.success(), "docker ps failed");
    Ok(String::from_utf8_lossy(&output.stdout)
        .split_whitespace()
        .map(str::to_owned)
        .collect())
}

async fn start_default(client: &Client, base: &str, xsrf: &str, user: &str) -> anyhow::Result<()> {
    let response = client
        .post(format!("{base}/hub/api/users/{user}/server"))
        .header("origin", base)
        .header("x-xsrftoken", xsrf)
        .json(&json!({}))
        .send()
        .await?;
    ensure!(response.status() == 202, "start: {}", response.status());
    Ok(())
}

async fn progress_text(client: &Client, base: &str, user: &str) -> anyhow::Result<String> {
    let response = client
        .get(format!("{base}/hub/api/users/{user}/server/progress"))
        .send()
        .await?;
    ensure!(response.status() == 200, "progress: {}", response.status());
    tokio::time::timeout(Duration::from_secs(180), response.text())
        .await
        .context("the progress stream did not end within 180 s")?
        .context("reading the progress stream")
}

#[tokio::test]
async fn gantry_up_without_a_configuration_file_starts_jupyterlab_on_the_default_profile()
-> anyhow::Result<()> {
    // The default profile's image, gantry/notebook:latest, as build.sh leaves it.
    notebook_image()?;
    let cleanup = DockerCleanup::new("gantry");
    let mut gantry = TestGantry::embedded()?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    ensure!(
        gantry.data_dir().join("gantry.sqlite").is_file(),
        "no SQLite database in ./gantry-data:\n{}",
        gantry.log_text()
    );
    let (alice, xsrf) = gantry.login("alice", PASSWORD).await?;

    let spawn = alice
        .get(format!("{base}/hub/spawn"))
        .send()
        .await?
        .text()
        .await?;
    assert!(spawn.contains("JupyterLab"), "{spawn}");
    assert!(spawn.contains("value=\"default\""), "{spawn}");

    start_default(&alice, &base, &xsrf, "alice").await?;
    let events = progress_text(&alice, &base, "alice").await?;
    assert!(
        events.contains("\"ready\":true"),
        "{events}\n{}",
        gantry.log_text()
    );
    let (lab, hops) = follow_redirects(&alice, &base, "/user/alice/lab").await?;
    assert_eq!(lab.status(), 200, "{hops:#?}\n{}", gantry.log_text());
    assert!(lab.text().await?.contains("jupyter-config-data"));

    // The home folder is the per-user volume the default profile names.
    let inspect = std::process::Command::new("docker")
        .args(["volume", "inspect", "gantry-home-alice"])
        .output()?;
    assert!(inspect.status.success(), "no volume gantry-home-alice");

    let stop = alice
        .delete(format!("{base}/hub/api/users/alice/server"))
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .send()
        .await?;
    assert_eq!(stop.status(), 204);
    assert_eq!(cleanup.containers(), 0);
    let _ = std::process::Command::new("docker")
        .args(["volume", "rm", "gantry-home-alice"])
        .output();
    Ok(())
}

#[tokio::test]
async fn a_start_is_cancelled_from_the_progress_page_and_leaves_nothing_behind()
-> anyhow::Result<()> {
    let instance = format!("gt-e2e-cancel-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    // A server that never answers: the start waits for it until cancelled.
    let mut gantry = gantry_running(&instance, "exec /bin/busybox sleep 600", "")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    let (alice, xsrf) = gantry.login("alice", PASSWORD).await?;
    start_default(&alice, &base, &xsrf, "alice").await?;

    // The progress page offers Cancel, a form with the session's CSRF token.
    let page = alice
        .get(format!("{base}/hub/spawn-pending"))
        .send()
        .await?
        .text()
        .await?;
    assert!(page.contains("action=\"/hub/stop\""), "{page}");
    assert!(page.contains(">Cancel<"), "{page}");
    let page_xsrf = xsrf_field(&page)?;
    // Wait until the start has got as far as a running container.
    poll_until(
        "the container to run",
        Instant::now() + Duration::from_secs(60),
        || async { Ok((cleanup.containers() == 1).then_some(())) },
    )
    .await?;

    // Without the CSRF token, nothing happens.
    let forged = alice
        .post(format!("{base}/hub/stop"))
        .header("origin", &base)
        .form(&[("server", "")])
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    let model: Value = alice
        .get(format!("{base}/hub/api/users/alice"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(model["servers"][""]["pending"], "spawn", "{model:#}");

    let cancel = alice
        .post(format!("{base}/hub/stop"))
        .header("origin", &base)
        .form(&[("_xsrf", page_xsrf.as_str()), ("server", "")])
        .send()
        .await?;
    assert_eq!(cancel.status(), 303, "{}", gantry.log_text());
    // The aborted start task may still be between two engine calls when the stop removes
    // the container; whatever it left is gone within the bound.
    poll_until(
        "the cancelled start's container to go",
        Instant::now() + Duration::from_secs(30),
        || async { Ok((cleanup.containers() == 0).then_some(())) },
    )
    .await
    .context("the cancelled start left a container")?;
    let model: Value = alice
        .get(format!("{base}/hub/api/users/alice"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(model["servers"], json!({}), "{model:#}");
    assert!(gantry.log_text().contains("start cancelled"));
    Ok(())
}

#[tokio::test]
async fn a_server_that_dies_is_noticed_unrouted_and_shown_to_its_user() -> anyhow::Result<()> {
    let instance = format!("gt-e2e-dies-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_running(&instance, &httpd_after(0), "poll_interval_secs = 1")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    let (alice, xsrf) = gantry.login("alice", PASSWORD).await?;
    start_default(&alice, &base, &xsrf, "alice").await?;
    let events = progress_text(&alice, &base, "alice").await?;
    assert!(events.contains("\"ready\":true"), "{events}");
    let hello = alice.get(format!("{base}/user/alice/")).send().await?;
    assert_eq!(hello.status(), 200);

    // The container is killed behind gantry's back.
    let ids = container_ids(&instance)?;
    assert_eq!(ids.len(), 1);
    let killed = std::process::Command::new("docker")
        .args(["kill", &ids[0]])
        .output()?;
    assert!(killed.status.success());

    let home = poll_until(
        "the home page to show the server died",
        Instant::now() + Duration::from_secs(30),
        || async {
            let home = alice
                .get(format!("{base}/hub/home"))
                .send()
                .await?
                .text()
                .await?;
            Ok(home.contains("exit code 137").then_some(home))
        },
    )
    .await
    .with_context(|| gantry.log_text())?;
    assert!(home.contains("stopped on its own"), "{home}");
    let gone = alice.get(format!("{base}/user/alice/")).send().await?;
    assert_eq!(gone.status(), 503, "the dead server's route is gone");
    let model: Value = alice
        .get(format!("{base}/hub/api/users/alice"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(model["servers"][""]["ready"], false, "{model:#}");
    assert!(
        model["servers"][""]["failed"]
            .as_str()
            .is_some_and(|m| m.contains("exit code 137")),
        "{model:#}"
    );
    // The server is shown failed first, then its container is removed.
    poll_until(
        "the dead container to be cleaned up",
        Instant::now() + Duration::from_secs(30),
        || async { Ok((cleanup.containers() == 0).then_some(())) },
    )
    .await?;

    // Its user starts it again.
    start_default(&alice, &base, &xsrf, "alice").await?;
    let events = progress_text(&alice, &base, "alice").await?;
    assert!(events.contains("\"ready\":true"), "{events}");
    assert_eq!(
        alice
            .get(format!("{base}/user/alice/"))
            .send()
            .await?
            .status(),
        200
    );
    Ok(())
}

#[tokio::test]
async fn json_logs_and_a_shutdown_that_finishes_requests_in_flight() -> anyhow::Result<()> {
    let instance = format!("gt-e2e-drain-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    // The server answers 3 s after it starts: its progress stream is open that long.
    let mut gantry = gantry_running(&instance, &httpd_after(3), "log_format = \"json\"")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    let (alice, xsrf) = gantry.login("alice", PASSWORD).await?;
    start_default(&alice, &base, &xsrf, "alice").await?;
    let progress = alice
        .get(format!("{base}/hub/api/users/alice/server/progress"))
        .send()
        .await?;
    assert_eq!(progress.status(), 200);

    // SIGTERM while the stream is open: gantry stops taking connections but lets this
    // request run to its end (the server's ready event) before it exits.
    let stopper = tokio::task::spawn_blocking(move || {
        let status = gantry.stop();
        (status, gantry)
    });
    let events = tokio::time::timeout(Duration::from_secs(60), progress.text())
        .await
        .context("the progress stream did not end")??;
    let (status, gantry) = stopper.await?;
    let log = gantry.log_text();
    assert!(events.contains("\"ready\":true"), "{events}\n{log}");
    let status = status.context("gantry was not running")?;
    assert!(status.success(), "gantry exited with {status}:\n{log}");
    assert!(
        alice
            .get(format!("{base}/hub/health"))
            .send()
            .await
            .is_err(),
        "gantry still answers after it stopped"
    );
    // The notebook outlives gantry, for the next start to adopt.
    assert_eq!(container_ids(&instance)?.len(), 1, "{log}");
    drop(cleanup);

    // Every line is one JSON object with a level and a message.
    let mut messages = Vec::new();
    for line in log.lines().filter(|l| !l.trim().is_empty()) {
        let value: Value =
            serde_json::from_str(line).with_context(|| format!("not a JSON log line: {line}"))?;
        assert!(value["level"].is_string(), "{line}");
        assert!(value["timestamp"].is_string(), "{line}");
        messages.push(value["fields"]["message"].as_str().unwrap_or("").to_owned());
    }
    for expected in ["gantry is up", "shutting down", "stopped"] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "no {expected:?} in {messages:#?}"
        );
    }
    Ok(())
}
