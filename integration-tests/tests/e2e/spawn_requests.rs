//! A start's options are checked on every way in (issue 20): the start API takes a JSON
//! object whose one key is `profile`, the spawn form its own fields; anything else is a 400
//! naming the key, and nothing starts. Against `gantry up` on the real Docker engine.

use gantry_integration_tests::{DockerCleanup, ensure_busybox_image};
use serde_json::{Value, json};

use crate::hardening::{login, ready, test_gantry};

#[tokio::test]
async fn a_start_with_options_no_profile_declares_is_refused_naming_them() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-spawnreq-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("alice", crate::gate::PASSWORD, false)?;
    gantry.start().await?;
    let (alice, xsrf) = login(&gantry, "alice").await?;
    let url = format!("{}/hub/api/users/alice/server", gantry.url());
    let post = |body: Value| {
        alice
            .post(&url)
            .header("origin", gantry.url())
            .header("x-xsrftoken", &xsrf)
            .json(&body)
            .send()
    };

    // The probes of issue 20: another hub's spawner keys, and a body that is no object.
    for (body, named) in [
        (json!({"image": "evil:latest"}), "\"image\""),
        (json!({"profile": "tiny", "cmd": ["sh"]}), "\"cmd\""),
        (
            json!({"profile": "tiny", "privileged": true}),
            "\"privileged\"",
        ),
        (
            json!({"profile": "tiny", "volumes": {"/": "/host"}}),
            "\"volumes\"",
        ),
        (json!({"profile": "tiny", "env": {"A": "b"}}), "\"env\""),
        (
            json!({"profile": "tiny", "extra_host_config": {}}),
            "\"extra_host_config\"",
        ),
        (json!(["tiny"]), "an array"),
        (json!({"profile": ["tiny"]}), "an array"),
    ] {
        let response = post(body.clone()).await?;
        assert_eq!(response.status(), 400, "{body}");
        let answer: Value = response.json().await?;
        let message = answer["message"].as_str().unwrap_or_default();
        assert!(message.contains(named), "{body}: {message}");
    }
    let model: Value = alice
        .get(format!("{}/hub/api/users/alice", gantry.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(model["servers"], json!({}), "nothing started: {model}");

    // The spawn form: an extra field is refused on the form's page.
    let page = alice
        .post(format!("{}/hub/spawn", gantry.url()))
        .header("origin", gantry.url())
        .form(&[
            ("_xsrf", xsrf.as_str()),
            ("server", ""),
            ("profile", "tiny"),
            ("image", "evil:latest"),
        ])
        .send()
        .await?;
    assert_eq!(page.status(), 400);
    let text = page.text().await?;
    assert!(
        text.contains("unknown option") && text.contains("image"),
        "{text}"
    );

    // What a start may say starts it.
    assert_eq!(post(json!({"profile": "tiny"})).await?.status(), 202);
    ready(&gantry, &alice, "alice", "").await?;
    Ok(())
}
