//! GPUs and the spawn page through `gantry up` on the real Docker engine, with GPUs handed out
//! through the stand-in `nvidia` runtime that `.ci/fake-nvidia-runtime.sh` registers: the
//! page says how many GPUs are free and disables a profile that cannot start now, the
//! metrics count total and allocated GPUs, and the page remembers the last profile started.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, ensure};
use gantry_integration_tests::{DockerCleanup, TestGantry, ensure_busybox_image};
use reqwest::Client;
use reqwest::cookie::Jar;
use serde_json::Value;

const PASSWORD: &str = "correct horse battery";

/// A gantry with two GPUs (`0`, `1`) given through the `nvidia` runtime, and four profiles:
/// one GPU, two GPUs, none, and one for a group nobody is in.
fn gantry_with_gpus(instance: &str, image: &str) -> anyhow::Result<TestGantry> {
    let script = "mkdir -p /www/user/$JUPYTERHUB_USER && \
                  echo hello > /www/user/$JUPYTERHUB_USER/index.html && \
                  exec /bin/busybox httpd -f -p 8888 -h /www";
    let profile = |id: &str, extra: &str| {
        format!(
            "[profiles.{id}]\ndisplay_name = \"{id}\"\nimage = \"{image}\"\n\
             cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n{extra}\n"
        )
    };
    TestGantry::new(&format!(
        "[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         gpu_request = \"runtime\"\ngpus = [\"0\", \"1\"]\n{}{}{}{}",
        profile("gpu1", "gpus = 1"),
        profile("gpu2", "gpus = 2"),
        profile("tiny", ""),
        profile("staff", "allowed_groups = [\"staff\"]"),
    ))
}

/// Fails unless the engine has the `nvidia` runtime.
fn require_nvidia_runtime() -> anyhow::Result<()> {
    let output = std::process::Command::new("docker")
        .args(["info", "--format", "{{json .Runtimes}}"])
        .output()
        .context("cannot run the docker CLI")?;
    let runtimes = String::from_utf8_lossy(&output.stdout);
    ensure!(
        runtimes.contains("\"nvidia\""),
        "the engine has no `nvidia` runtime ({runtimes}): run .ci/fake-nvidia-runtime.sh"
    );
    Ok(())
}

/// A logged-in browser whose cookie jar the test can write to; returns it with the jar and
/// the session's CSRF token.
async fn login(gantry: &TestGantry, user: &str) -> anyhow::Result<(Client, Arc<Jar>, String)> {
    let jar = Arc::new(Jar::default());
    let client = Client::builder()
        .cookie_provider(Arc::clone(&jar))
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()?;
    let xsrf = gantry.login_with(&client, user, PASSWORD).await?;
    Ok((client, jar, xsrf))
}

/// The spawn page's HTML.
async fn spawn_page(client: &Client, base: &str) -> anyhow::Result<String> {
    let page = client.get(format!("{base}/hub/spawn")).send().await?;
    ensure!(page.status() == 200, "spawn page: {}", page.status());
    Ok(page.text().await?)
}

/// The profile radio buttons that are checked, by id.
fn checked(page: &str) -> Vec<String> {
    page.split("<input type=\"radio\" name=\"profile\" value=\"")
        .skip(1)
        .filter_map(|rest| {
            let (id, attrs) = rest.split_once('"')?;
            let attrs = attrs.split('>').next()?;
            attrs.contains(" checked").then(|| id.to_owned())
        })
        .collect()
}

/// The value of metric line `name` (no labels).
fn metric(text: &str, name: &str) -> Option<i64> {
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
}

/// Starts `server` with `profile` from the spawn form; returns the `Set-Cookie` values.
async fn start(
    client: &Client,
    base: &str,
    xsrf: &str,
    profile: &str,
    server: &str,
) -> anyhow::Result<Vec<String>> {
    let response = client
        .post(format!("{base}/hub/spawn"))
        .header("origin", base)
        .form(&[("_xsrf", xsrf), ("profile", profile), ("server", server)])
        .send()
        .await?;
    ensure!(response.status() == 303, "spawn: {}", response.status());
    let cookies = response
        .headers()
        .get_all("set-cookie")
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect();
    let path = if server.is_empty() {
        "server/progress".to_owned()
    } else {
        format!("servers/{server}/progress")
    };
    let progress = client
        .get(format!("{base}/hub/api/users/alice/{path}"))
        .send()
        .await?;
    let text = tokio::time::timeout(Duration::from_secs(120), progress.text())
        .await
        .context("the progress stream did not end within 120 s")??;
    let last: Value = text
        .split("\n\n")
        .filter_map(|chunk| chunk.strip_prefix("data: "))
        .last()
        .map(serde_json::from_str)
        .context("no progress events")??;
    ensure!(last["ready"] == true, "{profile} did not start: {text}");
    Ok(cookies)
}

#[tokio::test]
async fn the_spawn_page_shows_free_gpus_and_remembers_the_profile() -> anyhow::Result<()> {
    require_nvidia_runtime()?;
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-gpu-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_with_gpus(&instance, image)?;
    gantry.add_user("alice", PASSWORD, true)?;
    gantry.start().await?;
    let base = gantry.url();
    let (alice, jar, xsrf) = login(&gantry, "alice").await?;
    let metrics = || async {
        let text = alice
            .get(format!("{base}/hub/metrics"))
            .send()
            .await?
            .text()
            .await?;
        let pair = (
            metric(&text, "gantry_gpus_total"),
            metric(&text, "gantry_gpus_allocated"),
        );
        anyhow::Ok(pair)
    };

    // Nothing runs: both GPU profiles see two of two free; the first profile is checked.
    let page = spawn_page(&alice, &base).await?;
    assert_eq!(page.matches("GPU: 2 of 2 free").count(), 2, "{page}");
    assert!(!page.contains(" disabled"), "{page}");
    assert!(
        !page.contains("value=\"staff\""),
        "a forbidden profile is listed"
    );
    assert_eq!(checked(&page), ["gpu1"]);
    assert_eq!(metrics().await?, (Some(2), Some(0)));

    // A one-GPU server: one of two free; the two-GPU profile is disabled and says why; the
    // profile just started is remembered, in a cookie for the hub's pages only.
    let cookies = start(&alice, &base, &xsrf, "gpu1", "").await?;
    let cookie = cookies
        .iter()
        .find(|c| c.starts_with("gantry-profile="))
        .context("no profile cookie")?;
    for part in [
        "gantry-profile=gpu1",
        "Path=/hub/",
        "HttpOnly",
        "SameSite=Lax",
    ] {
        assert!(cookie.contains(part), "{part} not in {cookie}");
    }
    let page = spawn_page(&alice, &base).await?;
    assert_eq!(page.matches("GPU: 1 of 2 free").count(), 2, "{page}");
    assert!(page.contains("value=\"gpu2\" disabled"), "{page}");
    assert!(
        page.contains("Not available now: it needs 2 GPUs and 1 of 2 are free."),
        "{page}"
    );
    assert_eq!(checked(&page), ["gpu1"]);
    assert_eq!(metrics().await?, (Some(2), Some(1)));
    assert_eq!(cleanup.containers(), 1);

    // Another profile started last is checked next time.
    start(&alice, &base, &xsrf, "tiny", "lab").await?;
    assert_eq!(checked(&spawn_page(&alice, &base).await?), ["tiny"]);

    // A remembered profile the user may not use, or that does not exist, is ignored.
    let url: reqwest::Url = base.parse()?;
    for forged in ["staff", "nope", "gpu2"] {
        jar.add_cookie_str(&format!("gantry-profile={forged}; Path=/hub/"), &url);
        let page = spawn_page(&alice, &base).await?;
        assert_eq!(checked(&page), ["gpu1"], "with {forged} remembered");
        assert!(!page.contains("value=\"staff\""));
    }

    // Stopped: both GPUs free again.
    for server in ["", "lab"] {
        let stopped = alice
            .post(format!("{base}/hub/stop"))
            .header("origin", &base)
            .form(&[("_xsrf", xsrf.as_str()), ("server", server)])
            .send()
            .await?;
        assert_eq!(stopped.status(), 303);
    }
    let page = spawn_page(&alice, &base).await?;
    assert_eq!(page.matches("GPU: 2 of 2 free").count(), 2, "{page}");
    assert_eq!(metrics().await?, (Some(2), Some(0)));
    assert_eq!(cleanup.containers(), 0);
    Ok(())
}
