//! The user's journey through `gantry up` in headless Chromium: log in → pick a profile →
//! watch the progress page → JupyterLab loads through the proxy (via gantry's OAuth) → run a
//! cell in a kernel over its WebSocket → stop the server → log out. A failure saves a
//! screenshot (see `Browser`).

use anyhow::{Context, ensure};
use gantry_integration_tests::browser::Browser;
use gantry_integration_tests::{DockerCleanup, TestGantry};

use crate::notebook::notebook_image;

const PASSWORD: &str = "correct horse battery";

#[tokio::test]
async fn a_user_logs_in_starts_jupyterlab_runs_a_cell_stops_and_logs_out() -> anyhow::Result<()> {
    let image = notebook_image()?;
    let instance = format!("gt-e2e-journey-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = TestGantry::new(&format!(
        "servers_api_port = {}\n\
         [docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.small]\ndisplay_name = \"Small\"\ndescription = \"for trials\"\nimage = \"{image}\"\n\
         [profiles.lab]\ndisplay_name = \"JupyterLab\"\ndescription = \"the real thing\"\nimage = \"{image}\"\n",
        gantry_integration_tests::free_port()?
    ))?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    let mut browser = Browser::start().await?;
    browser.set_timeout(std::time::Duration::from_secs(120));

    // Log in.
    browser.goto(&format!("{base}/hub/home")).await?;
    browser.wait_for_url("/hub/login").await?;
    browser.fill("#username", "alice").await?;
    browser.fill("#password", PASSWORD).await?;
    browser
        .click("form[action='/hub/login'] button[type=submit]")
        .await?;
    browser.wait_for_text("h1", "Signed in as alice").await?;

    // Pick the second profile on the spawn page.
    browser.click("a[href='/hub/spawn']").await?;
    browser.wait_for_text("h1", "Start a server").await?;
    browser.click("input[name=profile][value=lab]").await?;
    browser
        .click("form[action='/hub/spawn'] button[type=submit]")
        .await?;

    // The progress page follows the start and then opens the server; JupyterLab loads
    // through the gate and gantry's OAuth provider.
    browser.wait_for_url("/hub/spawn-pending").await?;
    browser
        .wait_for_url("/user/alice/")
        .await
        .context("the progress page never opened the server")?;
    browser
        .wait_until_gone("#jupyterlab-splash")
        .await
        .context("JupyterLab did not load")?;
    browser
        .click(".jp-LauncherCard[data-category='Notebook']")
        .await
        .context("JupyterLab's launcher shows no notebook card")?;
    browser.wait_for_url("/lab/tree/Untitled").await?;
    browser
        .wait_for_text("#jp-main-statusbar", "Python 3 (ipykernel) | Idle")
        .await
        .context("the kernel never became idle")?;
    let editor = ".jp-NotebookPanel .jp-Cell.jp-mod-selected .cm-content";
    browser.click(editor).await?;
    browser.type_into(editor, "print(6*7)").await?;
    browser.shift_enter(editor).await?;
    let output = browser
        .wait_for_text(".jp-NotebookPanel .jp-OutputArea-output", "42")
        .await
        .context("the cell's output never showed 42")?;
    ensure!(output.trim() == "42", "the cell printed {output:?}");

    // Back home: the server is listed with its profile; stop it.
    browser.goto(&format!("{base}/hub/home")).await?;
    browser.wait_for_text("table.servers", "lab").await?;
    browser
        .click("form[action='/hub/stop'] button[type=submit]")
        .await?;
    browser
        .wait_for_text("main", "No server is running")
        .await?;
    ensure!(cleanup.containers() == 0, "the container is still there");

    // Log out.
    browser
        .click("form[action='/hub/logout'] button[type=submit]")
        .await?;
    browser.wait_for_url("/hub/login").await?;
    browser.goto(&format!("{base}/hub/home")).await?;
    browser.wait_for_url("/hub/login").await?;
    browser.pass().await
}
