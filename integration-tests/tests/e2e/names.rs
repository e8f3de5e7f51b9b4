//! User names outside ASCII through `gantry up` on the real Docker engine: the REST API
//! addresses a user by the same decoded name it created, end to end (issue 20).

use gantry_integration_tests::{DockerCleanup, ensure_busybox_image};
use serde_json::{Value, json};

use crate::hardening::{container_env, login, ready, test_gantry};

#[tokio::test]
async fn a_user_named_outside_ascii_is_created_read_started_reached_and_deleted()
-> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-names-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    let mut gantry = test_gantry(&instance, image, "")?;
    gantry.add_user("root", crate::gate::PASSWORD, true)?;
    gantry.start().await?;
    let (root, xsrf) = login(&gantry, "root").await?;
    let base = gantry.url();
    let user = format!("{base}/hub/api/users/%C3%BC");

    let created = root
        .post(&user)
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await?;
    assert_eq!(created["name"], "ü");

    let read = root.get(&user).send().await?;
    assert_eq!(read.status(), 200, "GET of the name POST created");
    let listed: Value = root
        .get(format!("{base}/hub/api/users"))
        .send()
        .await?
        .json()
        .await?;
    assert!(
        listed
            .as_array()
            .is_some_and(|users| users.iter().any(|u| u["name"] == "ü")),
        "{listed}"
    );

    let started = root
        .post(format!("{user}/server"))
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .json(&json!({"profile": "tiny"}))
        .send()
        .await?;
    assert_eq!(started.status(), 202);
    ready(&gantry, &root, "%C3%BC", "").await?;
    let model: Value = root.get(&user).send().await?.json().await?;
    let url = model["servers"][""]["url"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert_eq!(url, "/user/%C3%BC/", "{model}");
    // The server compares its prefix with the raw request path, as JupyterHub gives it.
    assert_eq!(
        container_env(&instance, "ü", "", "JUPYTERHUB_SERVICE_PREFIX")?,
        "/user/%C3%BC/"
    );
    let page = root.get(format!("{base}{url}")).send().await?;
    assert_eq!(page.status(), 200, "the owner's server through the gate");

    let stopped = root
        .delete(format!("{user}/server"))
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .send()
        .await?;
    assert!(stopped.status().is_success(), "{}", stopped.status());
    let deleted = root
        .delete(&user)
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    assert_eq!(root.get(&user).send().await?.status(), 404);
    Ok(())
}

/// The probe of issue 20: under `source = "lab-{username}_{servername}"`, user `cva`'s server
/// `2eb_` mounted `lab-cva_2eb_`, the volume of `cva.b`'s default server. Such a source is
/// refused before anything starts, naming the key and the fix; `{servername}` without
/// `{username}` likewise.
#[tokio::test]
async fn a_volume_source_two_servers_could_share_is_refused() -> anyhow::Result<()> {
    for (source, says) in [
        ("lab-{username}_{servername}", "not kept apart"),
        ("lab-{servername}", "without {username}"),
    ] {
        let gantry = gantry_integration_tests::TestGantry::new(&format!(
            "[docker]\ninstance = \"gt-names\"\n\
             [profiles.lab]\ndisplay_name = \"Lab\"\nimage = \"busybox\"\n\
             volumes = [{{ type = \"volume\", source = \"{source}\", target = \"/home/jovyan\" }}]\n"
        ))?;
        let (code, out, err) = gantry.command(&["check-config"], "")?;
        assert_ne!(code, 0, "{source}: {out}{err}");
        assert!(
            err.contains("profiles.lab.volumes[0].source") && err.contains(says),
            "{source}: {err}"
        );
        assert!(err.contains("fix:"), "{err}");
    }
    Ok(())
}

/// The probe of issue 20: a 255-byte user name (the longest there is) was accepted, but its
/// server could never start: the engine refused its volume's name as too long. The volume's
/// value is bounded now, and the server starts.
#[tokio::test]
async fn the_longest_user_name_gets_a_server_with_its_own_volume() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-longname-{}", std::process::id());
    let _cleanup = DockerCleanup::new(&instance);
    // Any HTTP answer counts as ready; a 255-byte name is too long for a path segment of
    // the container's file system, so the server serves nothing under it.
    let script = "exec /bin/busybox httpd -f -p 8888 -h /www";
    let mut gantry = gantry_integration_tests::TestGantry::new(&format!(
        "[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n\
         [profiles.tiny]\ndisplay_name = \"Tiny\"\nimage = \"{image}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n\
         volumes = [{{ type = \"volume\", source = \"{instance}-home-{{username}}\", target = \"/home/me\" }}]\n"
    ))?;
    gantry.add_user("root", crate::gate::PASSWORD, true)?;
    gantry.start().await?;
    let (root, xsrf) = login(&gantry, "root").await?;
    let base = gantry.url();
    let long = format!("{}a", "é".repeat(127));
    assert_eq!(long.len(), 255);
    let segment = format!("{}a", "%C3%A9".repeat(127));
    let user = format!("{base}/hub/api/users/{segment}");
    let created = root
        .post(&user)
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let started = root
        .post(format!("{user}/server"))
        .header("origin", &base)
        .header("x-xsrftoken", &xsrf)
        .json(&json!({"profile": "tiny"}))
        .send()
        .await?;
    assert_eq!(started.status(), 202);
    ready(&gantry, &root, &segment, "").await?;
    let volumes = std::process::Command::new("docker")
        .args([
            "volume",
            "ls",
            "-q",
            "--filter",
            &format!("name={instance}-home-"),
        ])
        .output()?;
    let volumes = String::from_utf8(volumes.stdout)?;
    let names: Vec<&str> = volumes.split_whitespace().collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains("__"), "a cut value: {}", names[0]);
    std::process::Command::new("docker")
        .args(["volume", "rm", "-f", names[0]])
        .output()?;
    Ok(())
}
