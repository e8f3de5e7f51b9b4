//! Users' last activity as JupyterHub keeps it, and the real `jupyterhub-idle-culler` with
//! `--cull-users=True` reading it.
//!
//! Accounts are written into the database before `gantry up` with a creation time a day
//! back (and one with an activity two hours back), so a culler timeout of an hour separates
//! the idle from the active by hours, never by how fast the test runs.

use std::time::Duration;

use anyhow::{Context, ensure};
use gantry_auth::store::NewUser;
use gantry_auth::{NamePolicy, PasswordParams, Passwords, Store, StoreOptions, UserName};
use gantry_integration_tests::TestGantry;
use jiff::{SignedDuration, Timestamp};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The token the culler and the test act with, `GANTRY_ADMIN_TOKEN`'s, owned by `admin`.
fn admin_token() -> String {
    "ac7e1d1e".repeat(8)
}

/// The accounts of both tests, created a day ago in `gantry`'s database: `admin` (who owns
/// [`admin_token`]), `veteran` (a local password, to log in), `holder` (to use a token of
/// their own), `dormant` (never active) and `lapsed` (last active two hours ago).
async fn seed(gantry: &TestGantry) -> anyhow::Result<()> {
    let dir = gantry.data_dir();
    std::fs::create_dir_all(&dir).context("cannot create the data folder")?;
    let store = Store::open_sqlite(&dir.join("gantry.sqlite"), &StoreOptions::default())
        .await
        .context("cannot open the test database")?;
    store.migrate().await?;
    let day_ago = Timestamp::now() - SignedDuration::from_hours(24);
    let passwords = Passwords::new(PasswordParams::default())?;
    for (name, admin, password) in [
        ("admin", true, false),
        ("veteran", false, true),
        ("holder", false, false),
        ("dormant", false, false),
        ("lapsed", false, false),
    ] {
        let new = NewUser {
            name: UserName::parse(name, NamePolicy::default())?,
            password_hash: password.then(|| passwords.hash(PASSWORD)).transpose()?,
            admin,
            approved: true,
        };
        let user = store.create_user(&new, day_ago).await?;
        if name == "lapsed" {
            let two_hours_ago = Timestamp::now() - SignedDuration::from_hours(2);
            store.record_user_activity(user.id, two_hours_ago).await?;
        }
    }
    store.close().await;
    Ok(())
}

/// A seeded gantry, started with [`admin_token`].
async fn seeded_gantry() -> anyhow::Result<TestGantry> {
    let mut gantry = TestGantry::new("")?;
    seed(&gantry).await?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", &admin_token());
    gantry.start().await?;
    Ok(gantry)
}

/// `GET /hub/api/users/{name}` with the admin token: the status and the body.
async fn user_model(gantry: &TestGantry, name: &str) -> anyhow::Result<(u16, Value)> {
    let response = reqwest::Client::new()
        .get(format!("{}/hub/api/users/{name}", gantry.url()))
        .header("authorization", format!("token {}", admin_token()))
        .send()
        .await?;
    let status = response.status().as_u16();
    let body = if status == 200 {
        response.json().await?
    } else {
        Value::Null
    };
    Ok((status, body))
}

async fn last_activity(gantry: &TestGantry, name: &str) -> anyhow::Result<Value> {
    let (status, model) = user_model(gantry, name).await?;
    ensure!(status == 200, "GET /hub/api/users/{name}: {status}");
    Ok(model["last_activity"].clone())
}

/// A token of `name`'s own (`self`), made by the admin.
async fn token_of(gantry: &TestGantry, name: &str) -> anyhow::Result<String> {
    let made: Value = reqwest::Client::new()
        .post(format!("{}/hub/api/users/{name}/tokens", gantry.url()))
        .header("authorization", format!("token {}", admin_token()))
        .json(&json!({"note": "the test's"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(made["token"].as_str().context("no token")?.to_owned())
}

#[tokio::test]
async fn the_user_model_reports_activity() -> anyhow::Result<()> {
    let gantry = seeded_gantry().await?;
    let base = gantry.url();
    for name in ["veteran", "holder", "dormant"] {
        assert_eq!(last_activity(&gantry, name).await?, Value::Null, "{name}");
    }
    // The store's activity comes through as it was written, in JupyterHub's format.
    let lapsed = last_activity(&gantry, "lapsed").await?;
    let lapsed = lapsed.as_str().context("lapsed has an activity")?;
    ensure!(
        lapsed.ends_with('Z') && lapsed.parse::<Timestamp>().is_ok(),
        "{lapsed}"
    );

    // A login.
    gantry.login("veteran", PASSWORD).await?;
    assert!(last_activity(&gantry, "veteran").await?.is_string());

    // The user's own API call with their token. Making the token is the admin's doing,
    // not theirs.
    let token = token_of(&gantry, "holder").await?;
    assert_eq!(last_activity(&gantry, "holder").await?, Value::Null);
    let me: Value = reqwest::Client::new()
        .get(format!("{base}/hub/api/user"))
        .header("authorization", format!("token {token}"))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(me["name"], "holder");
    assert!(me["last_activity"].is_string(), "{me}");
    assert!(last_activity(&gantry, "holder").await?.is_string());

    // An activity report, as jupyterhub-singleuser sends one (here by the admin, whose own
    // activity it is not): the reported time, exactly.
    let reported = "2026-01-02T03:04:05.000000Z";
    let answer = reqwest::Client::new()
        .post(format!("{base}/hub/api/users/dormant/activity"))
        .header("authorization", format!("token {}", admin_token()))
        .json(&json!({"last_activity": reported, "servers": {}}))
        .send()
        .await?;
    assert_eq!(answer.status(), 200, "{}", answer.text().await?);
    assert_eq!(last_activity(&gantry, "dormant").await?, reported);
    // An earlier report does not take it back.
    let answer = reqwest::Client::new()
        .post(format!("{base}/hub/api/users/dormant/activity"))
        .header("authorization", format!("token {}", admin_token()))
        .json(&json!({"last_activity": "2025-01-01T00:00:00.000000Z"}))
        .send()
        .await?;
    assert_eq!(answer.status(), 200);
    assert_eq!(last_activity(&gantry, "dormant").await?, reported);

    // The admin acting is active too.
    assert!(last_activity(&gantry, "admin").await?.is_string());
    Ok(())
}

/// The culler's verdict on `name` in its log: `Some(true)` culled, `Some(false)` spared,
/// `None` not decided yet.
fn verdict(log: &str, name: &str) -> Option<bool> {
    if log.contains(&format!("Culling user {name} ")) {
        Some(true)
    } else if log.contains(&format!("Not culling user {name} ")) {
        Some(false)
    } else {
        None
    }
}

#[tokio::test]
async fn jupyterhub_idle_culler_deletes_only_idle_users() -> anyhow::Result<()> {
    let gantry = seeded_gantry().await?;
    let base = gantry.url();
    // Active now: veteran logs in, holder calls the API with a token of their own; the admin
    // is active through the culler's own requests. newcomer was created a moment ago and
    // never active: the culler judges them by their creation, which is recent.
    gantry.login("veteran", PASSWORD).await?;
    let token = token_of(&gantry, "holder").await?;
    reqwest::Client::new()
        .get(format!("{base}/hub/api/user"))
        .header("authorization", format!("token {token}"))
        .send()
        .await?
        .error_for_status()?;
    reqwest::Client::new()
        .post(format!("{base}/hub/api/users/newcomer"))
        .header("authorization", format!("token {}", admin_token()))
        .send()
        .await?
        .error_for_status()?;

    let mut culler =
        std::process::Command::new(gantry_integration_tests::venv()?.join("bin/python"));
    culler
        .args(["-m", "jupyterhub_idle_culler"])
        .arg(format!("--url={base}/hub/api"))
        // An hour: the idle accounts have been idle for two hours or a day, the active
        // ones for seconds. `--cull-admin-users` is left at its default, true.
        .args(["--cull-users=True", "--timeout=3600", "--cull-every=1"])
        .args(["--concurrency=1", "--IdleCuller.log_level=DEBUG"])
        .env("JUPYTERHUB_API_TOKEN", admin_token());
    let log = tempfile::NamedTempFile::new()?;
    let mut culler =
        gantry_integration_tests::ChildGuard::spawn("jupyterhub-idle-culler", culler, log.path())?;
    let everyone = [
        "admin", "dormant", "holder", "lapsed", "newcomer", "veteran",
    ];
    // Wait for a verdict on everyone (one pass of the culler).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    loop {
        culler.ensure_running()?;
        let log = culler.log_text();
        if everyone.iter().all(|name| verdict(&log, name).is_some()) {
            break;
        }
        ensure!(
            tokio::time::Instant::now() < deadline,
            "the culler did not judge every user within a minute:\n{log}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let log = culler.log_text();
    for (name, culled) in [
        ("admin", false),
        ("veteran", false),
        ("holder", false),
        ("newcomer", false),
        ("dormant", true),
        ("lapsed", true),
    ] {
        assert_eq!(verdict(&log, name), Some(culled), "{name}:\n{log}");
    }
    // What the culler decided happened: the idle are gone, the others are there.
    for (name, status) in [
        ("admin", 200),
        ("veteran", 200),
        ("holder", 200),
        ("newcomer", 200),
        ("dormant", 404),
        ("lapsed", 404),
    ] {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let (got, _) = user_model(&gantry, name).await?;
            if got == status {
                break;
            }
            ensure!(
                tokio::time::Instant::now() < deadline,
                "{name}: {got}, not {status}\n{}",
                culler.log_text()
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
    // And nothing failed: no delete of the token's own owner refused, no other error.
    let log = culler.log_text();
    assert!(!log.contains("Error processing"), "{log}");
    assert!(!log.contains("Traceback"), "{log}");
    Ok(())
}
