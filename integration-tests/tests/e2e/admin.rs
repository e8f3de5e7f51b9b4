//! Administration through `gantry up`: the users and groups REST API (JupyterHub's shapes),
//! profiles limited to groups, groups from the OpenID provider, and the admin page with its
//! forms.

use std::time::Duration;

use anyhow::{Context, ensure};
use gantry_integration_tests::{
    DockerCleanup, OidcMock, TestGantry, browser_client, ensure_busybox_image,
};
use reqwest::{Client, Method, Response};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The admin API token registered from `GANTRY_ADMIN_TOKEN` (for the user `admin`).
const ADMIN_TOKEN: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

/// Logs `user` in with the login form; returns the browser and its session's CSRF token.
async fn login(gantry: &TestGantry, user: &str) -> anyhow::Result<(Client, String)> {
    gantry.login(user, PASSWORD).await
}

/// Calls the API with the admin token; returns the status and the JSON body (null if none).
async fn admin_api(
    gantry: &TestGantry,
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = reqwest::Client::new()
        .request(method, format!("{}/hub/api{path}", gantry.url()))
        .header("authorization", format!("token {ADMIN_TOKEN}"));
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await?).await
}

/// Calls the API as a logged-in browser, with its CSRF token.
async fn session_api(
    gantry: &TestGantry,
    (client, xsrf): &(Client, String),
    method: Method,
    path: &str,
    body: Option<Value>,
) -> anyhow::Result<(u16, Value)> {
    let mut request = client
        .request(method, format!("{}/hub/api{path}", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", xsrf);
    if let Some(body) = body {
        request = request.json(&body);
    }
    read(request.send().await?).await
}

async fn read(response: Response) -> anyhow::Result<(u16, Value)> {
    let status = response.status().as_u16();
    let text = response.text().await?;
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

fn names(models: &Value) -> Vec<&str> {
    models
        .as_array()
        .map(|list| list.iter().filter_map(|m| m["name"].as_str()).collect())
        .unwrap_or_default()
}

#[tokio::test]
async fn the_users_api_creates_changes_and_deletes_users() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.add_user("root", PASSWORD, true)?;
    gantry.start().await?;
    use Method as M;

    // Create in bulk: names are normalised, duplicates collapse, 201 with the models.
    let (status, created) = admin_api(
        &gantry,
        M::POST,
        "/users",
        Some(json!({"usernames": ["Carol", "dave", "carol"], "admin": false})),
    )
    .await?;
    assert_eq!(status, 201, "{created}");
    assert_eq!(names(&created), ["carol", "dave"]);
    assert_eq!(created[0]["kind"], "user");
    assert_eq!(created[0]["admin"], false);
    assert_eq!(created[0]["groups"], json!([]));
    assert_eq!(created[0]["servers"], json!({}));

    // All exist: 409. Some new: only those, 201.
    let (status, body) = admin_api(
        &gantry,
        M::POST,
        "/users",
        Some(json!({"usernames": ["carol", "dave"]})),
    )
    .await?;
    assert_eq!(status, 409, "{body}");
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("exists already"),
        "{body}"
    );
    let (status, body) = admin_api(
        &gantry,
        M::POST,
        "/users",
        Some(json!({"usernames": ["dave", "erin"], "admin": true})),
    )
    .await?;
    assert_eq!(status, 201);
    assert_eq!(names(&body), ["erin"]);
    assert_eq!(body[0]["admin"], true);

    // An invalid name is 400, names it, and nobody of the request is created.
    let (status, body) = admin_api(
        &gantry,
        M::POST,
        "/users",
        Some(json!({"usernames": ["fine", "no/pe"]})),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap_or("").contains("no/pe"),
        "{body}"
    );
    assert_eq!(
        admin_api(&gantry, M::GET, "/users/fine", None).await?.0,
        404
    );
    let (status, body) =
        admin_api(&gantry, M::POST, "/users", Some(json!({"usernames": []}))).await?;
    assert_eq!(status, 400, "{body}");

    // One user by path: body optional; 409 when it exists.
    let (status, frank) = admin_api(
        &gantry,
        M::POST,
        "/users/frank",
        Some(json!({"admin": true})),
    )
    .await?;
    assert_eq!(
        (status, &frank["name"], &frank["admin"]),
        (201, &json!("frank"), &json!(true))
    );
    assert_eq!(
        admin_api(&gantry, M::POST, "/users/frank", None).await?.0,
        409
    );
    let (status, gina) = admin_api(&gantry, M::POST, "/users/gina", None).await?;
    assert_eq!((status, &gina["admin"]), (201, &json!(false)));
    assert_eq!(
        admin_api(&gantry, M::POST, "/users/a%3Ab", None).await?.0,
        400
    );

    // PATCH: admin rights, a rename (409 onto a taken name), nothing changed by a refusal.
    let (status, carol) = admin_api(
        &gantry,
        M::PATCH,
        "/users/carol",
        Some(json!({"admin": true})),
    )
    .await?;
    assert_eq!((status, &carol["admin"]), (200, &json!(true)));
    let (status, body) = admin_api(
        &gantry,
        M::PATCH,
        "/users/carol",
        Some(json!({"name": "dave", "admin": false})),
    )
    .await?;
    assert_eq!(status, 409, "{body}");
    let (_, carol) = admin_api(&gantry, M::GET, "/users/carol", None).await?;
    assert_eq!(carol["admin"], true, "a refused PATCH changes nothing");
    let (status, renamed) = admin_api(
        &gantry,
        M::PATCH,
        "/users/carol",
        Some(json!({"name": "Caroline"})),
    )
    .await?;
    assert_eq!((status, &renamed["name"]), (200, &json!("caroline")));
    assert_eq!(
        admin_api(&gantry, M::GET, "/users/carol", None).await?.0,
        404
    );
    assert_eq!(
        admin_api(&gantry, M::GET, "/users/caroline", None).await?.0,
        200
    );
    assert_eq!(
        admin_api(
            &gantry,
            M::PATCH,
            "/users/nobody",
            Some(json!({"admin": true}))
        )
        .await?
        .0,
        404
    );
    let (status, body) = admin_api(
        &gantry,
        M::PATCH,
        "/users/caroline",
        Some(json!({"shoe_size": 9})),
    )
    .await?;
    assert_eq!(status, 400, "unknown fields are refused: {body}");

    // Nobody demotes or deletes themself.
    let (status, body) = admin_api(
        &gantry,
        M::PATCH,
        "/users/admin",
        Some(json!({"admin": false})),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("your own admin rights"),
        "{body}"
    );
    let (status, body) = admin_api(&gantry, M::DELETE, "/users/admin", None).await?;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("your own account"),
        "{body}"
    );

    // A non-admin is refused every one of these, with or without a body.
    let bob = login(&gantry, "bob").await?;
    for (method, path, body) in [
        (M::POST, "/users", Some(json!({"usernames": ["x1"]}))),
        (M::POST, "/users/x2", None),
        (M::PATCH, "/users/bob", Some(json!({"admin": true}))),
        (M::DELETE, "/users/gina", None),
        (M::GET, "/groups", None),
        (M::POST, "/groups/g/users", Some(json!({"users": ["bob"]}))),
        (
            M::DELETE,
            "/groups/g/users",
            Some(json!({"users": ["bob"]})),
        ),
    ] {
        let (status, _) = session_api(&gantry, &bob, method.clone(), path, body).await?;
        assert_eq!(status, 403, "{method} {path}");
    }
    assert_eq!(admin_api(&gantry, M::GET, "/users/x2", None).await?.0, 404);
    let (_, me) = session_api(&gantry, &bob, M::GET, "/user", None).await?;
    assert_eq!(me["admin"], false);

    // An admin's browser session works with its CSRF token, and is refused without it.
    let root = login(&gantry, "root").await?;
    let (status, _) = session_api(&gantry, &root, M::POST, "/users/hank", None).await?;
    assert_eq!(status, 201);
    let forged = root
        .0
        .post(format!("{}/hub/api/users/ivan", gantry.url()))
        .header("origin", gantry.url())
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(
        admin_api(&gantry, M::GET, "/users/ivan", None).await?.0,
        404
    );

    // Deleting bob ends his session and tokens at once.
    let (status, token) = session_api(
        &gantry,
        &bob,
        M::POST,
        "/users/bob/tokens",
        Some(json!({"note": "script"})),
    )
    .await?;
    assert_eq!(status, 201);
    let bob_token = token["token"].as_str().context("token")?.to_owned();
    let (status, _) = admin_api(&gantry, M::DELETE, "/users/bob", None).await?;
    assert_eq!(status, 204);
    assert_eq!(
        session_api(&gantry, &bob, M::GET, "/user", None).await?.0,
        403
    );
    let with_token = reqwest::Client::new()
        .get(format!("{}/hub/api/user", gantry.url()))
        .header("authorization", format!("token {bob_token}"))
        .send()
        .await?;
    assert_eq!(with_token.status(), 403);
    assert_eq!(admin_api(&gantry, M::GET, "/users/bob", None).await?.0, 404);
    assert_eq!(
        admin_api(&gantry, M::DELETE, "/users/bob", None).await?.0,
        404
    );
    // The name is free again, for a new account that inherits nothing.
    let (status, bob2) = admin_api(&gantry, M::POST, "/users/bob", None).await?;
    assert_eq!((status, &bob2["admin"]), (201, &json!(false)));

    // The list shows what changed.
    let (_, list) = admin_api(&gantry, M::GET, "/users", None).await?;
    assert_eq!(
        names(&list),
        [
            "admin", "bob", "caroline", "dave", "erin", "frank", "gina", "hank", "root"
        ]
    );
    Ok(())
}

#[tokio::test]
async fn groups_are_managed_through_the_api() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    gantry.start().await?;
    use Method as M;
    let (status, _) = admin_api(
        &gantry,
        M::POST,
        "/users",
        Some(json!({"usernames": ["alice", "bob", "carol"]})),
    )
    .await?;
    assert_eq!(status, 201);
    let (status, groups) = admin_api(&gantry, M::GET, "/groups", None).await?;
    assert_eq!((status, &groups), (200, &json!([])));

    let (status, group) = admin_api(
        &gantry,
        M::POST,
        "/groups/gpu-users/users",
        Some(json!({"users": ["bob", "Alice"]})),
    )
    .await?;
    assert_eq!(status, 200, "{group}");
    assert_eq!(
        group,
        json!({"kind": "group", "name": "gpu-users", "roles": [], "users": ["alice", "bob"], "properties": {}})
    );
    admin_api(
        &gantry,
        M::POST,
        "/groups/staff/users",
        Some(json!({"users": ["bob"]})),
    )
    .await?;
    let (_, groups) = admin_api(&gantry, M::GET, "/groups", None).await?;
    assert_eq!(names(&groups), ["gpu-users", "staff"]);
    let (status, one) = admin_api(&gantry, M::GET, "/groups/staff", None).await?;
    assert_eq!((status, &one["users"]), (200, &json!(["bob"])));
    assert_eq!(
        admin_api(&gantry, M::GET, "/groups/nope", None).await?.0,
        404
    );

    // The user model carries the groups, in the list too.
    let (_, bob) = admin_api(&gantry, M::GET, "/users/bob", None).await?;
    assert_eq!(bob["groups"], json!(["gpu-users", "staff"]));
    let (_, list) = admin_api(&gantry, M::GET, "/users", None).await?;
    let carol = list
        .as_array()
        .and_then(|l| l.iter().find(|u| u["name"] == "carol"))
        .context("carol listed")?;
    assert_eq!(carol["groups"], json!([]));

    // Unknown users are 400 and change nothing; so are bad bodies and names.
    let (status, body) = admin_api(
        &gantry,
        M::POST,
        "/groups/staff/users",
        Some(json!({"users": ["carol", "nobody"]})),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["message"].as_str().unwrap_or("").contains("nobody"),
        "{body}"
    );
    let (_, staff) = admin_api(&gantry, M::GET, "/groups/staff", None).await?;
    assert_eq!(staff["users"], json!(["bob"]));
    for body in [
        json!({"users": []}),
        json!({"members": ["bob"]}),
        json!(["bob"]),
    ] {
        let (status, _) =
            admin_api(&gantry, M::POST, "/groups/staff/users", Some(body.clone())).await?;
        assert_eq!(status, 400, "{body}");
    }
    let (status, _) = admin_api(
        &gantry,
        M::POST,
        "/groups/%20padded/users",
        Some(json!({"users": ["bob"]})),
    )
    .await?;
    assert_eq!(status, 400);

    // Removing: 200 with what is left; a group with no members is gone.
    let (status, group) = admin_api(
        &gantry,
        M::DELETE,
        "/groups/staff/users",
        Some(json!({"users": ["bob"]})),
    )
    .await?;
    assert_eq!((status, &group["users"]), (200, &json!([])));
    assert_eq!(
        admin_api(&gantry, M::GET, "/groups/staff", None).await?.0,
        404
    );
    let (status, _) = admin_api(
        &gantry,
        M::DELETE,
        "/groups/staff/users",
        Some(json!({"users": ["bob"]})),
    )
    .await?;
    assert_eq!(status, 404);

    // Memberships survive a restart, and go with the user.
    gantry.restart().await?;
    let (_, alice) = admin_api(&gantry, M::GET, "/users/alice", None).await?;
    assert_eq!(alice["groups"], json!(["gpu-users"]));
    assert_eq!(
        admin_api(&gantry, M::DELETE, "/users/alice", None).await?.0,
        204
    );
    assert_eq!(
        admin_api(&gantry, M::DELETE, "/users/bob", None).await?.0,
        204
    );
    let (_, groups) = admin_api(&gantry, M::GET, "/groups", None).await?;
    assert_eq!(groups, json!([]));
    Ok(())
}

/// An OpenID login sets the user's groups from the claim, every time; an admin's additions
/// stay across logins.
#[tokio::test]
async fn groups_come_from_the_provider_at_every_login() -> anyhow::Result<()> {
    let mock = OidcMock::start(&[])?;
    let claims = |groups: Value| json!({"preferred_username": "olga", "groups": groups});
    mock.set_user("olga-sub", &claims(json!(["staff", "gpu"])))
        .await?;
    let mut gantry = TestGantry::new(&format!(
        "[auth.oidc.mock]\nissuer_url = \"{}\"\nclient_id = \"gantry\"\n\
         client_secret = \"s3cret\"\nallowed_groups = [\"staff\"]\n",
        mock.issuer()
    ))?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    gantry.start().await?;
    let oidc_login = || async {
        let client = browser_client()?;
        let begin = client
            .get(format!("{}/hub/oidc/mock/login", gantry.url()))
            .send()
            .await?;
        ensure!(begin.status() == 303, "begin: {}", begin.status());
        let authorize = begin.headers()["location"].to_str()?.to_owned();
        let callback = mock.authorize(&authorize, "olga-sub").await?;
        let finished = client.get(&callback).send().await?;
        ensure!(finished.status() == 303, "callback: {}", finished.status());
        let me: Value = client
            .get(format!("{}/hub/api/user", gantry.url()))
            .send()
            .await?
            .json()
            .await?;
        Ok::<Value, anyhow::Error>(me)
    };
    let me = oidc_login().await?;
    assert_eq!(me["groups"], json!(["gpu", "staff"]));

    let (status, _) = admin_api(
        &gantry,
        Method::POST,
        "/groups/projects/users",
        Some(json!({"users": ["olga"]})),
    )
    .await?;
    assert_eq!(status, 200);
    mock.set_user("olga-sub", &claims(json!(["staff"]))).await?;
    let me = oidc_login().await?;
    assert_eq!(
        me["groups"],
        json!(["projects", "staff"]),
        "the provider dropped gpu; the admin's projects stays"
    );
    Ok(())
}

/// A gantry on the busybox image with two profiles: `open` for everyone and `special` for
/// the group `gpu` (sorted first, so a user outside it gets `open` by default).
fn gantry_with_group_profile(instance: &str, image: &str) -> anyhow::Result<TestGantry> {
    let script = "mkdir -p /www/user/$JUPYTERHUB_USER && \
                  echo hello $JUPYTERHUB_USER > /www/user/$JUPYTERHUB_USER/index.html && \
                  exec /bin/busybox httpd -f -p 8888 -h /www";
    let profile = |id: &str, extra: &str| {
        format!(
            "[profiles.{id}]\ndisplay_name = \"Profile {id}\"\nimage = \"{image}\"\n\
             cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"{script}\"]\n{extra}\n"
        )
    };
    let mut gantry = TestGantry::new(&format!(
        "[docker]\ninstance = \"{instance}\"\nnetwork = \"{instance}\"\n{}{}",
        profile("open", "mem_limit = \"512M\""),
        profile("aaa-special", "allowed_groups = [\"gpu\"]\ncpu_limit = 0.5"),
    ))?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
    Ok(gantry)
}

/// Reads a server's progress stream to its end; returns the last event.
async fn last_progress_event(client: &Client, url: &str) -> anyhow::Result<Value> {
    let response = client.get(url).send().await?;
    ensure!(response.status() == 200, "progress: {}", response.status());
    let text = tokio::time::timeout(Duration::from_secs(120), response.text())
        .await
        .context("the progress stream did not end within 120 s")??;
    let last = text
        .split("\n\n")
        .filter_map(|chunk| chunk.strip_prefix("data: "))
        .last()
        .context("no progress events")?;
    Ok(serde_json::from_str(last)?)
}

#[tokio::test]
async fn profiles_limited_to_a_group_are_offered_and_started_only_for_members() -> anyhow::Result<()>
{
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-groups-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_with_group_profile(&instance, image)?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let alice = login(&gantry, "alice").await?;
    let spawn_page = || async {
        let page = alice
            .0
            .get(format!("{}/hub/spawn", gantry.url()))
            .send()
            .await?;
        ensure!(page.status() == 200, "spawn page: {}", page.status());
        Ok::<String, anyhow::Error>(page.text().await?)
    };

    // Outside the group: not offered, and not startable by id.
    let page = spawn_page().await?;
    assert!(page.contains("value=\"open\""), "{page}");
    assert!(!page.contains("aaa-special"), "{page}");
    let (status, body) = session_api(
        &gantry,
        &alice,
        Method::POST,
        "/users/alice/server",
        Some(json!({"profile": "aaa-special"})),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("not available to you"),
        "{body}"
    );
    assert_eq!(cleanup.containers(), 0);

    // In the group: offered and started.
    let (status, _) = admin_api(
        &gantry,
        Method::POST,
        "/groups/gpu/users",
        Some(json!({"users": ["alice"]})),
    )
    .await?;
    assert_eq!(status, 200);
    let page = spawn_page().await?;
    assert!(page.contains("value=\"aaa-special\""), "{page}");
    let (status, body) = session_api(
        &gantry,
        &alice,
        Method::POST,
        "/users/alice/server",
        Some(json!({"profile": "aaa-special"})),
    )
    .await?;
    assert_eq!(status, 202, "{body}");
    let last = last_progress_event(
        &alice.0,
        &format!("{}/hub/api/users/alice/server/progress", gantry.url()),
    )
    .await?;
    assert_eq!(last["ready"], true, "{last}\n{}", gantry.log_text());
    let (_, model) = admin_api(&gantry, Method::GET, "/users/alice", None).await?;
    assert_eq!(
        model["servers"][""]["user_options"]["profile"],
        "aaa-special"
    );

    // While it runs, alice can be neither renamed nor deleted.
    let (status, body) = admin_api(
        &gantry,
        Method::PATCH,
        "/users/alice",
        Some(json!({"name": "alicia"})),
    )
    .await?;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("stop their servers first"),
        "{body}"
    );
    let (status, body) = admin_api(&gantry, Method::DELETE, "/users/alice", None).await?;
    assert_eq!(status, 400);
    assert!(
        body["message"]
            .as_str()
            .unwrap_or("")
            .contains("stop their servers first"),
        "{body}"
    );
    assert_eq!(
        admin_api(&gantry, Method::GET, "/users/alice", None)
            .await?
            .0,
        200
    );

    // Once it is stopped, both work.
    assert_eq!(
        admin_api(&gantry, Method::DELETE, "/users/alice/server", None)
            .await?
            .0,
        204
    );
    assert_eq!(cleanup.containers(), 0);
    let (status, renamed) = admin_api(
        &gantry,
        Method::PATCH,
        "/users/alice",
        Some(json!({"name": "alicia"})),
    )
    .await?;
    assert_eq!((status, &renamed["groups"]), (200, &json!(["gpu"])));
    assert_eq!(
        admin_api(&gantry, Method::DELETE, "/users/alicia", None)
            .await?
            .0,
        204
    );
    Ok(())
}

/// The admin page's user rows, by the names in them.
fn listed_users(page: &str) -> Vec<String> {
    page.split("<td class=\"user-name\">")
        .skip(1)
        .filter_map(|rest| rest.split_once("</td>").map(|(name, _)| name.to_owned()))
        .collect()
}

#[tokio::test]
async fn the_admin_page_lists_searches_and_manages_users_and_servers() -> anyhow::Result<()> {
    let image = ensure_busybox_image()?;
    let instance = format!("gt-e2e-admin-{}", std::process::id());
    let cleanup = DockerCleanup::new(&instance);
    let mut gantry = gantry_with_group_profile(&instance, image)?;
    gantry.add_user("root", PASSWORD, true)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let base = gantry.url();
    let admin_url = format!("{base}/hub/admin");

    // Nobody signed in is sent to log in; a non-admin is refused, and has no link to it.
    let anonymous = browser_client()?.get(&admin_url).send().await?;
    assert_eq!(anonymous.status(), 303);
    assert_eq!(
        anonymous.headers()["location"],
        "/hub/login?next=%2Fhub%2Fadmin"
    );
    let (bob, bob_xsrf) = login(&gantry, "bob").await?;
    assert_eq!(bob.get(&admin_url).send().await?.status(), 403);
    let home = bob
        .get(format!("{base}/hub/home"))
        .send()
        .await?
        .text()
        .await?;
    assert!(!home.contains("/hub/admin"), "{home}");
    let forged = bob
        .post(format!("{admin_url}/users"))
        .header("origin", &base)
        .form(&[("_xsrf", bob_xsrf.as_str()), ("username", "mallory")])
        .send()
        .await?;
    assert_eq!(
        forged.status(),
        403,
        "a non-admin's own token does not make them an admin"
    );

    let (root, xsrf) = login(&gantry, "root").await?;
    let home = root
        .get(format!("{base}/hub/home"))
        .send()
        .await?
        .text()
        .await?;
    assert!(home.contains("href=\"/hub/admin\""), "{home}");
    let page = |query: &str| {
        let url = format!("{admin_url}{query}");
        let root = root.clone();
        async move {
            let response = root.get(url).send().await?;
            ensure!(
                response.status() == 200,
                "admin page: {}",
                response.status()
            );
            Ok::<_, anyhow::Error>(response.text().await?)
        }
    };
    let post = |path: &str, fields: &[(&str, &str)], with_xsrf: bool| {
        let mut fields: Vec<(String, String)> = fields
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        if with_xsrf {
            fields.push(("_xsrf".to_owned(), xsrf.clone()));
        }
        root.post(format!("{admin_url}{path}"))
            .header("origin", &base)
            .form(&fields)
            .send()
    };

    // The lists: users, no servers yet, both profiles with their limits and groups.
    let text = page("").await?;
    assert_eq!(listed_users(&text), ["admin", "bob", "root"]);
    assert!(text.contains("No server is running."), "{text}");
    assert!(
        text.contains(image) && text.contains("Profile aaa-special"),
        "{text}"
    );
    assert!(text.contains("0.5") && text.contains("0.5 GiB"), "{text}");
    assert!(
        text.contains("<td>gpu</td>") && text.contains("<td>everyone</td>"),
        "{text}"
    );

    // Add users with the form; without the CSRF token nothing happens.
    let forged = post("/users", &[("username", "zoe")], false).await?;
    assert_eq!(forged.status(), 403);
    for name in ["zoe", "Zack", "yann"] {
        let added = post("/users", &[("username", name)], true).await?;
        assert_eq!(added.status(), 303, "{name}");
        assert_eq!(added.headers()["location"], "/hub/admin");
    }
    let again = post("/users", &[("username", "zoe")], true).await?;
    assert_eq!(again.status(), 409);
    assert!(again.text().await?.contains("User zoe exists already."));
    let bad = post("/users", &[("username", "no/pe")], true).await?;
    assert_eq!(bad.status(), 400);
    assert!(bad.text().await?.contains("no/pe"));
    assert_eq!(
        listed_users(&page("").await?),
        ["admin", "bob", "root", "yann", "zack", "zoe"]
    );

    // Search and pages.
    assert_eq!(listed_users(&page("?q=Z").await?), ["zack", "zoe"]);
    let first = page("?q=z&limit=1").await?;
    assert_eq!(listed_users(&first), ["zack"]);
    assert!(first.contains("Users 1–1 of 2."), "{first}");
    // Attribute values are HTML-escaped: `&` may be written `&amp;` or `&#38;`.
    let unescaped = first.replace("&#38;", "&").replace("&amp;", "&");
    assert!(
        unescaped.contains("href=\"/hub/admin?q=z&offset=1&limit=1\" rel=\"next\""),
        "{first}"
    );
    let second = page("?q=z&offset=1&limit=1").await?;
    assert_eq!(listed_users(&second), ["zoe"]);
    assert!(!second.contains("rel=\"next\""), "{second}");
    assert!(page("?q=nobody").await?.contains("No users match."));

    // Admin rights: a forged post changes nothing, a real one does (and back to the search).
    let forged = post("/users/zoe/admin", &[("admin", "true")], false).await?;
    assert_eq!(forged.status(), 403);
    let made = post("/users/zoe/admin", &[("admin", "true"), ("q", "z")], true).await?;
    assert_eq!(made.status(), 303);
    assert_eq!(made.headers()["location"], "/hub/admin?q=z");
    let (_, zoe) = admin_api(&gantry, Method::GET, "/users/zoe", None).await?;
    assert_eq!(zoe["admin"], true);
    let zoe_row = page("?q=zoe").await?;
    assert!(
        zoe_row.contains("Remove admin rights from zoe"),
        "{zoe_row}"
    );
    assert_eq!(
        post("/users/zoe/admin", &[("admin", "false")], true)
            .await?
            .status(),
        303
    );
    let (_, zoe) = admin_api(&gantry, Method::GET, "/users/zoe", None).await?;
    assert_eq!(zoe["admin"], false);

    // Delete: forged refused; oneself refused with the reason; zoe goes.
    let forged = post("/users/zoe/delete", &[], false).await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(
        admin_api(&gantry, Method::GET, "/users/zoe", None).await?.0,
        200
    );
    let own = post("/users/root/delete", &[], true).await?;
    assert_eq!(own.status(), 400);
    assert!(own.text().await?.contains("cannot delete your own account"));
    assert_eq!(post("/users/zoe/delete", &[], true).await?.status(), 303);
    assert_eq!(
        admin_api(&gantry, Method::GET, "/users/zoe", None).await?.0,
        404
    );
    assert_eq!(post("/users/zoe/delete", &[], true).await?.status(), 404);

    // Start bob's default server (the first profile he may use), see it listed, stop it.
    let forged = post("/users/bob/start", &[], false).await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(cleanup.containers(), 0);
    assert_eq!(post("/users/bob/start", &[], true).await?.status(), 303);
    let last =
        last_progress_event(&root, &format!("{base}/hub/api/users/bob/server/progress")).await?;
    assert_eq!(last["ready"], true, "{last}\n{}", gantry.log_text());
    let text = page("").await?;
    assert!(
        text.contains("<td>bob</td>")
            && text.contains("<td>open</td>")
            && text.contains("<td>running</td>"),
        "{text}"
    );
    assert!(
        text.contains("Stop bob&#x27;s server") || text.contains("Stop bob's server"),
        "{text}"
    );
    let busy = post("/users/bob/delete", &[], true).await?;
    assert_eq!(busy.status(), 400);
    assert!(busy.text().await?.contains("stop their servers first"));
    assert_eq!(post("/users/bob/stop", &[], true).await?.status(), 303);
    assert_eq!(cleanup.containers(), 0);
    let text = page("").await?;
    assert!(text.contains("No server is running."), "{text}");
    assert_eq!(post("/users/bob/delete", &[], true).await?.status(), 303);
    assert_eq!(
        listed_users(&page("").await?),
        ["admin", "root", "yann", "zack"]
    );
    Ok(())
}
