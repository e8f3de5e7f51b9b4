//! A stock single-user server (`jupyterhub-singleuser` from PyPI in the locally built
//! notebook image) started by `gantry up` on the real Docker engine: it reaches the hub API,
//! logs the browser in through gantry's OAuth provider, and serves JupyterLab through the
//! gate; another user's OAuth attempt is refused.

use std::time::Duration;

use anyhow::Context;
use gantry_integration_tests::{DockerCleanup, TestGantry, browser_client, follow_redirects};
use reqwest::{Client, StatusCode};
use serde_json::json;

use crate::notebook::notebook_image;

const PASSWORD: &str = "correct horse battery";

async fn login(gantry: &TestGantry, client: &Client, user: &str) -> anyhow::Result<String> {
    gantry.login_with(client, user, PASSWORD).await
}

#[tokio::test]
async fn jupyterhub_singleuser_logs_in_through_gantry_and_serves_jupyterlab() -> anyhow::Result<()>
{
    let image = notebook_image()?;
    let instance = format!("gt-e2e-su-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = TestGantry::new(&format!(
        "servers_api_port = {}\n\
         [docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.lab]\ndisplay_name = \"JupyterLab\"\nimage = \"{image}\"\n",
        gantry_integration_tests::free_port()?
    ))?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    let alice = browser_client()?;
    let xsrf = login(&gantry, &alice, "alice").await?;

    let started = alice
        .post(format!("{base}/hub/api/users/alice/server"))
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .json(&json!({"profile": "lab"}))
        .send()
        .await?;
    assert_eq!(started.status(), 202);
    let progress = alice
        .get(format!("{base}/hub/api/users/alice/server/progress"))
        .send()
        .await?;
    let events = tokio::time::timeout(Duration::from_secs(180), progress.text())
        .await
        .context("the server did not become ready within 180 s")??;
    assert!(
        events.contains("\"ready\":true"),
        "{events}\n{}",
        gantry.log_text()
    );

    // The browser opens JupyterLab: the single-user server sends it through gantry's OAuth
    // provider and back, then serves the page.
    let (lab, hops) = follow_redirects(&alice, &base, "/user/alice/lab").await?;
    assert_eq!(
        lab.status(),
        StatusCode::OK,
        "{hops:#?}\n{}",
        gantry.log_text()
    );
    assert!(
        hops.iter()
            .any(|h| h.starts_with("/hub/api/oauth2/authorize?")),
        "{hops:#?}"
    );
    assert!(
        hops.iter()
            .any(|h| h.starts_with("/user/alice/oauth_callback?")),
        "{hops:#?}"
    );
    let page = lab.text().await?;
    assert!(
        page.contains("jupyter-config-data"),
        "not the JupyterLab page: {page:.300}"
    );

    // Its API answers the OAuth-authenticated browser (jupyter-server behind the gate).
    let status = alice
        .get(format!("{base}/user/alice/api/status"))
        .send()
        .await?;
    assert_eq!(status.status(), 200);

    // The server reported activity to the hub with its own token.
    let logs = gantry.log_text();
    assert!(!logs.contains("activity\" status=4"), "{logs}");

    // Bob cannot get a code for alice's server even by asking gantry's provider directly.
    let bob = browser_client()?;
    login(&gantry, &bob, "bob").await?;
    let authorize = bob
        .get(format!(
            "{base}/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&redirect_uri=%2Fuser%2Falice%2Foauth_callback&response_type=code&state=x"
        ))
        .send()
        .await?;
    assert_eq!(authorize.status(), 403);
    // Nor send a code anywhere but the registered callback.
    let elsewhere = alice
        .get(format!(
            "{base}/hub/api/oauth2/authorize?client_id=jupyterhub-user-alice&redirect_uri=%2F%2Fevil.example%2F&response_type=code&state=x"
        ))
        .send()
        .await?;
    assert_eq!(elsewhere.status(), 400);

    // Logout ends alice's notebook login too: the token the provider issued is revoked, so
    // the single-user server sends her back through OAuth (to the hub's login page).
    let logout = alice
        .post(format!("{base}/hub/logout"))
        .header("origin", &base)
        .form(&[("_xsrf", xsrf.as_str())])
        .send()
        .await?;
    assert_eq!(logout.status(), 303);
    let after = alice.get(format!("{base}/user/alice/lab")).send().await?;
    assert!(after.status().is_redirection(), "{}", after.status());
    assert!(
        after.headers()["location"]
            .to_str()?
            .starts_with("/hub/login"),
        "{:?}",
        after.headers()
    );

    let stopped = {
        let xsrf = login(&gantry, &alice, "alice").await?;
        alice
            .delete(format!("{base}/hub/api/users/alice/server"))
            .header("origin", &base)
            .header("x-xsrftoken", &xsrf)
            .send()
            .await?
    };
    assert_eq!(stopped.status(), 204);
    assert_eq!(cleanup.containers(), 0);
    Ok(())
}
