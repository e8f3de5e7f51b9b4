//! Identity through `gantry up` over real HTTP: local logins, sessions across restarts,
//! logout and revocation, CSRF and redirect rules, rate limits, sign-up with approval, the
//! token API, and OpenID Connect login against the real `oidc-provider-mock`.
//!
//! Each refusal test checks both the status and that no session came out of it.

use anyhow::{Context, ensure};
use gantry_integration_tests::{OidcMock, TestGantry, browser_client, xsrf_field};
use reqwest::header::{HeaderMap, SET_COOKIE};
use reqwest::{Client, Response, StatusCode};
use serde_json::{Value, json};

const PASSWORD: &str = "correct horse battery";

/// The `Set-Cookie` headers of a response.
fn set_cookies(response: &Response) -> Vec<String> {
    set_cookies_of(response.headers())
}

fn set_cookies_of(headers: &HeaderMap) -> Vec<String> {
    headers
        .get_all(SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok().map(str::to_owned))
        .collect()
}

/// The value a response sets for cookie `name` (non-empty), if any.
fn cookie_value(response: &Response, name: &str) -> Option<String> {
    set_cookies(response).iter().find_map(|c| {
        let (pair, _) = c.split_once(';').unwrap_or((c, ""));
        let (n, v) = pair.split_once('=')?;
        (n == name && !v.is_empty()).then(|| v.to_owned())
    })
}

fn location(response: &Response) -> String {
    response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Opens the login page and returns its form token.
async fn login_form(client: &Client, gantry: &TestGantry) -> anyhow::Result<String> {
    let page = client
        .get(format!("{}/hub/login", gantry.url()))
        .send()
        .await?;
    ensure!(page.status() == 200, "login page: {}", page.status());
    xsrf_field(&page.text().await?)
}

/// Posts the login form as a browser on our origin would.
async fn post_login(
    client: &Client,
    gantry: &TestGantry,
    xsrf: &str,
    user: &str,
    password: &str,
    next: &str,
) -> anyhow::Result<Response> {
    Ok(client
        .post(format!("{}/hub/login", gantry.url()))
        .header("origin", gantry.url())
        .form(&[
            ("_xsrf", xsrf),
            ("username", user),
            ("password", password),
            ("next", next),
        ])
        .send()
        .await?)
}

/// Logs `user` in with a fresh browser; returns the browser and its session cookie.
async fn logged_in(gantry: &TestGantry, user: &str) -> anyhow::Result<(Client, String)> {
    let client = browser_client()?;
    let xsrf = login_form(&client, gantry).await?;
    let response = post_login(&client, gantry, &xsrf, user, PASSWORD, "").await?;
    ensure!(
        response.status() == 303,
        "login of {user}: {}",
        response.status()
    );
    let session = cookie_value(&response, "gantry-session").context("no session cookie")?;
    Ok((client, session))
}

/// The CSRF token of a logged-in browser, from the home page's logout form.
async fn session_xsrf(client: &Client, gantry: &TestGantry) -> anyhow::Result<String> {
    let home = client
        .get(format!("{}/hub/home", gantry.url()))
        .send()
        .await?;
    ensure!(home.status() == 200, "home page: {}", home.status());
    xsrf_field(&home.text().await?)
}

async fn whoami_with_cookie(gantry: &TestGantry, session: &str) -> anyhow::Result<StatusCode> {
    Ok(reqwest::Client::new()
        .get(format!("{}/hub/api/user", gantry.url()))
        .header("cookie", format!("gantry-session={session}"))
        .send()
        .await?
        .status())
}

async fn whoami_with_token(
    gantry: &TestGantry,
    token: &str,
) -> anyhow::Result<(StatusCode, Value)> {
    let response = reqwest::Client::new()
        .get(format!("{}/hub/api/user", gantry.url()))
        .header("authorization", format!("token {token}"))
        .send()
        .await?;
    let status = response.status();
    Ok((status, response.json().await.unwrap_or(Value::Null)))
}

#[tokio::test]
async fn local_login_survives_restart_and_ends_on_logout_and_revoke() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("root", PASSWORD, true)?;
    gantry.start().await?;
    let client = browser_client()?;

    // Not logged in: the home page sends the browser to the login page.
    let home = client
        .get(format!("{}/hub/home", gantry.url()))
        .send()
        .await?;
    assert_eq!(home.status(), 303);
    assert_eq!(location(&home), "/hub/login?next=%2Fhub%2Fhome");

    // The name is normalised: ALICE is alice.
    let xsrf = login_form(&client, &gantry).await?;
    let login = post_login(&client, &gantry, &xsrf, "ALICE", PASSWORD, "/hub/api/user").await?;
    assert_eq!(login.status(), 303, "{}", gantry.log_text());
    assert_eq!(location(&login), "/hub/api/user");
    let cookie = set_cookies(&login)
        .into_iter()
        .find(|c| c.starts_with("gantry-session="))
        .context("no session cookie")?;
    for attribute in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(cookie.contains(attribute), "{attribute} missing: {cookie}");
    }
    assert!(!cookie.contains("Secure"), "plain http: {cookie}");
    let session = cookie_value(&login, "gantry-session").unwrap();

    let me: Value = client
        .get(format!("{}/hub/api/user", gantry.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(me["name"], "alice");
    assert_eq!(me["admin"], false);
    assert_eq!(me["scopes"], json!(["self"]));

    // A token made with the session (CSRF header from the page).
    let xsrf = session_xsrf(&client, &gantry).await?;
    let created = client
        .post(format!("{}/hub/api/users/alice/tokens", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &xsrf)
        .json(&json!({"note": "laptop", "expires_in": 3600}))
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await?;
    let token = created["token"].as_str().context("no token")?.to_owned();

    // Both survive a restart.
    gantry.restart().await?;
    assert_eq!(whoami_with_cookie(&gantry, &session).await?, 200);
    let (status, me) = whoami_with_token(&gantry, &token).await?;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "alice");
    assert_eq!(me["token_id"], created["id"]);

    // Logout without the form token is refused and ends nothing.
    let forged = client
        .post(format!("{}/hub/logout", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("_xsrf", "0".repeat(64))])
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    assert_eq!(whoami_with_cookie(&gantry, &session).await?, 200);

    // Logout ends the session; the cookie is cleared.
    let logout = client
        .post(format!("{}/hub/logout", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("_xsrf", xsrf.as_str())])
        .send()
        .await?;
    assert_eq!(logout.status(), 303);
    assert_eq!(location(&logout), "/hub/login");
    assert!(
        set_cookies(&logout)
            .iter()
            .any(|c| c.starts_with("gantry-session=;") && c.contains("Max-Age=0"))
    );
    assert_eq!(whoami_with_cookie(&gantry, &session).await?, 403);

    // An admin revokes everything of alice's: her other session and her token die.
    let (_, second_session) = logged_in(&gantry, "alice").await?;
    let (root, _) = logged_in(&gantry, "root").await?;
    let root_xsrf = session_xsrf(&root, &gantry).await?;
    let revoked = root
        .post(format!("{}/hub/api/users/alice/logout", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &root_xsrf)
        .send()
        .await?;
    assert_eq!(revoked.status(), 200);
    let revoked: Value = revoked.json().await?;
    assert_eq!(revoked, json!({"sessions": 1, "tokens": 1}));
    assert_eq!(whoami_with_cookie(&gantry, &second_session).await?, 403);
    assert_eq!(whoami_with_token(&gantry, &token).await?.0, 403);
    assert!(
        gantry
            .log_text()
            .contains("closed the user's open connections")
    );
    Ok(())
}

/// Every way a login post can be forged or wrong, each refused without a session.
#[tokio::test]
async fn login_refusals_start_no_session() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let url = format!("{}/hub/login", gantry.url());

    let client = browser_client()?;
    let xsrf = login_form(&client, &gantry).await?;
    let good = [
        ("_xsrf", xsrf.as_str()),
        ("username", "alice"),
        ("password", PASSWORD),
    ];

    // (what, request, expected status)
    let cases: Vec<(&str, reqwest::RequestBuilder, u16)> = vec![
        (
            "wrong password",
            client.post(&url).header("origin", gantry.url()).form(&[
                ("_xsrf", xsrf.as_str()),
                ("username", "alice"),
                ("password", "nope"),
            ]),
            403,
        ),
        (
            "unknown user",
            client.post(&url).header("origin", gantry.url()).form(&[
                ("_xsrf", xsrf.as_str()),
                ("username", "mallory"),
                ("password", PASSWORD),
            ]),
            403,
        ),
        ("no Origin or Referer", client.post(&url).form(&good), 403),
        (
            "foreign Origin",
            client
                .post(&url)
                .header("origin", "http://evil.example")
                .form(&good),
            403,
        ),
        (
            "foreign Referer",
            client
                .post(&url)
                .header("referer", "http://evil.example/x")
                .form(&good),
            403,
        ),
        (
            "cross-site fetch",
            client
                .post(&url)
                .header("origin", gantry.url())
                .header("sec-fetch-site", "cross-site")
                .form(&good),
            403,
        ),
        (
            "wrong form token",
            client.post(&url).header("origin", gantry.url()).form(&[
                ("_xsrf", "0".repeat(64).as_str()),
                ("username", "alice"),
                ("password", PASSWORD),
            ]),
            403,
        ),
        (
            "no form token",
            client
                .post(&url)
                .header("origin", gantry.url())
                .form(&[("username", "alice"), ("password", PASSWORD)]),
            403,
        ),
        (
            "text/plain body",
            client
                .post(&url)
                .header("origin", gantry.url())
                .header("content-type", "text/plain")
                .body(format!("_xsrf={xsrf}&username=alice&password={PASSWORD}")),
            403,
        ),
        // A browser that never loaded the login page has no login cookie to match.
        (
            "no login cookie",
            browser_client()?
                .post(&url)
                .header("origin", gantry.url())
                .form(&good),
            403,
        ),
    ];
    for (what, request, status) in cases {
        let response = request.send().await?;
        assert_eq!(response.status().as_u16(), status, "{what}");
        assert!(
            cookie_value(&response, "gantry-session").is_none(),
            "{what} started a session"
        );
    }
    // The form itself works, so the refusals above are the checks', not a broken form.
    let response = post_login(&client, &gantry, &xsrf, "alice", PASSWORD, "").await?;
    assert_eq!(response.status(), 303);
    assert!(cookie_value(&response, "gantry-session").is_some());
    Ok(())
}

#[tokio::test]
async fn next_only_leads_to_our_own_paths() -> anyhow::Result<()> {
    // Eight logins of one account in a row: lift the rate limit out of the way.
    let mut gantry = TestGantry::new("[auth.limits]\naccount_burst = 100\naddress_burst = 100\n")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    for (next, expected) in [
        ("/user/alice/lab", "/user/alice/lab"),
        ("//evil.example/", "/hub/home"),
        ("/\\evil.example", "/hub/home"),
        ("///evil.example", "/hub/home"),
        ("https://evil.example/", "/hub/home"),
        ("/%2F%2Fevil.example", "/hub/home"),
        ("javascript:alert(1)", "/hub/home"),
        ("", "/hub/home"),
    ] {
        let client = browser_client()?;
        let xsrf = login_form(&client, &gantry).await?;
        let response = post_login(&client, &gantry, &xsrf, "alice", PASSWORD, next).await?;
        assert_eq!(response.status(), 303, "{next:?}");
        assert_eq!(location(&response), expected, "next={next:?}");
    }
    Ok(())
}

#[tokio::test]
async fn login_attempts_are_rate_limited() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("[auth.limits]\naccount_burst = 2\naccount_per_minute = 1\n")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let client = browser_client()?;
    let xsrf = login_form(&client, &gantry).await?;
    for _ in 0..2 {
        let response = post_login(&client, &gantry, &xsrf, "alice", "wrong", "").await?;
        assert_eq!(response.status(), 403);
    }
    // The third attempt is refused before the password is looked at, right one or not.
    let response = post_login(&client, &gantry, &xsrf, "alice", PASSWORD, "").await?;
    assert_eq!(response.status(), 429);
    let retry: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry), "Retry-After: {retry}");
    assert!(cookie_value(&response, "gantry-session").is_none());
    Ok(())
}

#[tokio::test]
async fn sign_up_waits_for_approval() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("[auth.local]\nsignup = \"approval\"\n")?;
    gantry.start().await?;
    let client = browser_client()?;
    let page = client
        .get(format!("{}/hub/signup", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    let xsrf = xsrf_field(&page.text().await?)?;
    let signup = |name: &'static str, password: &'static str| {
        client
            .post(format!("{}/hub/signup", gantry.url()))
            .header("origin", gantry.url())
            .form(&[
                ("_xsrf", xsrf.as_str()),
                ("username", name),
                ("password", password),
            ])
            .send()
    };
    assert_eq!(signup("Bob", "short").await?.status(), 400);
    let created = signup("Bob", PASSWORD).await?;
    assert_eq!(created.status(), 200);
    assert!(created.text().await?.contains("Account bob created"));
    // The same name in another case is the same account.
    assert_eq!(signup("BOB", PASSWORD).await?.status(), 400);

    let xsrf = login_form(&client, &gantry).await?;
    let refused = post_login(&client, &gantry, &xsrf, "bob", PASSWORD, "").await?;
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .text()
            .await?
            .contains("waiting for an administrator")
    );

    let (code, out, err) = gantry.command(&["user", "approve", "bob"], "")?;
    assert_eq!(code, 0, "{out}{err}");
    let xsrf = login_form(&client, &gantry).await?;
    assert_eq!(
        post_login(&client, &gantry, &xsrf, "bob", PASSWORD, "")
            .await?
            .status(),
        303
    );
    Ok(())
}

#[tokio::test]
async fn sign_up_is_closed_by_default() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.start().await?;
    let client = browser_client()?;
    let page = client
        .get(format!("{}/hub/signup", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 404);
    Ok(())
}

#[tokio::test]
async fn token_api_follows_scopes_and_ownership() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.add_user("bob", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, _) = logged_in(&gantry, "alice").await?;
    let xsrf = session_xsrf(&alice, &gantry).await?;
    let api = |path: &str| format!("{}/hub/api{path}", gantry.url());
    let create = |body: Value| {
        alice
            .post(api("/users/alice/tokens"))
            .header("origin", gantry.url())
            .header("x-xsrftoken", &xsrf)
            .json(&body)
            .send()
    };

    let made: Value = create(json!({"note": "ci", "scopes": ["access:servers!user=alice"]}))
        .await?
        .json()
        .await?;
    let token = made["token"].as_str().context("token")?.to_owned();
    assert_eq!(made["note"], "ci");
    assert!(made["id"].as_str().context("id")?.starts_with('a'));
    // Not an admin: cannot grant admin, metrics or another user's servers. Unknown scopes
    // and roles are refused.
    assert_eq!(create(json!({"scopes": ["admin"]})).await?.status(), 403);
    assert_eq!(
        create(json!({"scopes": ["read:metrics"]})).await?.status(),
        403
    );
    assert_eq!(
        create(json!({"scopes": ["access:servers!user=bob"]}))
            .await?
            .status(),
        403
    );
    assert_eq!(
        create(json!({"scopes": ["everything"]})).await?.status(),
        400
    );
    assert_eq!(create(json!({"roles": ["admin"]})).await?.status(), 400);
    assert_eq!(create(json!({"unknown": 1})).await?.status(), 400);

    // Listing shows it without the secret.
    let list: Value = alice
        .get(api("/users/alice/tokens"))
        .send()
        .await?
        .json()
        .await?;
    let tokens = list["api_tokens"].as_array().context("api_tokens")?;
    assert_eq!(tokens.len(), 1);
    assert!(tokens[0].get("token").is_none());
    assert!(!list.to_string().contains(&token));

    // The token is limited to its scopes: it cannot act as alice (no `self`).
    let with_token = |method: reqwest::Method, path: &str| {
        reqwest::Client::new()
            .request(method, api(path))
            .header("authorization", format!("Bearer {token}"))
    };
    assert_eq!(
        with_token(reqwest::Method::GET, "/users/alice/tokens")
            .send()
            .await?
            .status(),
        403
    );

    // Bob cannot see alice's tokens, nor learn whether she exists.
    let (bob, _) = logged_in(&gantry, "bob").await?;
    assert_eq!(
        bob.get(api("/users/alice/tokens")).send().await?.status(),
        404
    );
    assert_eq!(
        bob.get(api("/users/nobody/tokens")).send().await?.status(),
        404
    );
    // Nobody at all: 403.
    assert_eq!(reqwest::get(api("/user")).await?.status(), 403);
    assert_eq!(
        reqwest::Client::new()
            .get(api("/user"))
            .header("authorization", "token 0123")
            .send()
            .await?
            .status(),
        403
    );

    // Cookie-authenticated changes need the CSRF token; a token-authenticated call does not.
    let forged = alice
        .post(api("/users/alice/tokens"))
        .header("origin", gantry.url())
        .header("content-type", "text/plain")
        .body("{}")
        .send()
        .await?;
    assert_eq!(forged.status(), 403);
    let id = made["id"].as_str().unwrap();
    let unforged = alice
        .delete(api(&format!("/users/alice/tokens/{id}")))
        .header("origin", gantry.url())
        .send()
        .await?;
    assert_eq!(unforged.status(), 403, "no CSRF token");
    let deleted = alice
        .delete(api(&format!("/users/alice/tokens/{id}")))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &xsrf)
        .send()
        .await?;
    assert_eq!(deleted.status(), 204);
    assert_eq!(whoami_with_token(&gantry, &token).await?.0, 403);
    Ok(())
}

/// A config for the mock provider as `mock`: staff may log in, ops are admins.
fn oidc_config(mock: &OidcMock) -> String {
    format!(
        "[auth.oidc.mock]\ndisplay_name = \"Mock SSO\"\nissuer_url = \"{}\"\nclient_id = \"gantry\"\n\
         client_secret = \"s3cret\"\nallowed_groups = [\"staff\"]\nadmin_groups = [\"ops\"]\n\
         uid_claim = \"uid\"\ngid_claim = \"gid\"\n",
        mock.issuer()
    )
}

/// Starts an OpenID login in `client`; returns the provider's authorization URL.
async fn begin_oidc(client: &Client, gantry: &TestGantry, next: &str) -> anyhow::Result<String> {
    let begin = client
        .get(format!("{}/hub/oidc/mock/login?next={next}", gantry.url()))
        .send()
        .await?;
    ensure!(begin.status() == 303, "begin: {}", begin.status());
    Ok(location(&begin))
}

#[tokio::test]
async fn oidc_login_round_trip_through_gantry() -> anyhow::Result<()> {
    let mock = OidcMock::start(&[])?;
    mock.set_user(
        "alice-sub",
        &json!({"preferred_username": "Alice", "email": "alice@example.org", "email_verified": true,
                "groups": ["staff", "ops"], "uid": 4242, "gid": "4343"}),
    )
    .await?;
    let mut gantry = TestGantry::new(&oidc_config(&mock))?;
    gantry.start().await?;
    let client = browser_client()?;

    // The login page offers the provider's button.
    let page = client
        .get(format!("{}/hub/login", gantry.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        page.contains("/hub/oidc/mock/login") && page.contains("Mock SSO"),
        "{page}"
    );

    let authorize = begin_oidc(&client, &gantry, "%2Fhub%2Fapi%2Fuser").await?;
    assert!(authorize.starts_with(mock.issuer()), "{authorize}");
    assert!(authorize.contains("code_challenge_method=S256") && authorize.contains("nonce="));
    let callback = mock.authorize(&authorize, "alice-sub").await?;
    assert!(
        callback.starts_with(&format!("{}/hub/oidc/mock/callback?", gantry.url())),
        "{callback}"
    );
    let finished = client.get(&callback).send().await?;
    assert_eq!(finished.status(), 303, "{}", gantry.log_text());
    assert_eq!(location(&finished), "/hub/api/user");
    let me: Value = client
        .get(format!("{}/hub/api/user", gantry.url()))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(me["name"], "alice");
    assert_eq!(me["admin"], true, "ops is an admin group");

    // The same callback again (a replay) is refused: the login in flight was used up.
    let replay = browser_client()?.get(&callback).send().await?;
    assert_eq!(replay.status(), 400);

    // Logout continues to the provider's end_session_endpoint (RP-initiated logout).
    let xsrf = session_xsrf(&client, &gantry).await?;
    let logout = client
        .post(format!("{}/hub/logout", gantry.url()))
        .header("origin", gantry.url())
        .form(&[("_xsrf", xsrf.as_str())])
        .send()
        .await?;
    assert_eq!(logout.status(), 303);
    assert!(
        location(&logout).starts_with(&format!("{}/oauth2/end_session", mock.issuer())),
        "{}",
        location(&logout)
    );
    assert_eq!(
        client
            .get(format!("{}/hub/api/user", gantry.url()))
            .send()
            .await?
            .status(),
        403
    );
    Ok(())
}

#[tokio::test]
async fn oidc_callback_refusals_start_no_session() -> anyhow::Result<()> {
    let mock = OidcMock::start(&[])?;
    mock.set_user(
        "carol-sub",
        &json!({"preferred_username": "carol", "groups": ["staff"]}),
    )
    .await?;
    mock.set_user(
        "eve-sub",
        &json!({"preferred_username": "eve", "groups": ["visitors"]}),
    )
    .await?;
    let mut gantry = TestGantry::new(&oidc_config(&mock))?;
    gantry.start().await?;

    // A tampered state.
    let client = browser_client()?;
    let authorize = begin_oidc(&client, &gantry, "").await?;
    let callback = mock.authorize(&authorize, "carol-sub").await?;
    let tampered = callback.replacen("state=", "state=x", 1);
    let response = client.get(&tampered).send().await?;
    assert_eq!(response.status(), 400, "tampered state");
    assert!(cookie_value(&response, "gantry-session").is_none());

    // The right callback in another browser (no cookie binding it to the login): without
    // the pending login there is no PKCE verifier or nonce to finish with.
    let client = browser_client()?;
    let authorize = begin_oidc(&client, &gantry, "").await?;
    let callback = mock.authorize(&authorize, "carol-sub").await?;
    let response = browser_client()?.get(&callback).send().await?;
    assert_eq!(response.status(), 400, "another browser");
    assert!(cookie_value(&response, "gantry-session").is_none());
    // A login in flight is single-use whoever presents it: a leaked callback URL is dead
    // once tried, even for the browser that started it.
    let response = client.get(&callback).send().await?;
    assert_eq!(response.status(), 400, "the right browser, after the leak");

    // A user outside the allowed groups.
    let client = browser_client()?;
    let authorize = begin_oidc(&client, &gantry, "").await?;
    let callback = mock.authorize(&authorize, "eve-sub").await?;
    let response = client.get(&callback).send().await?;
    assert!(
        response.status().is_client_error(),
        "not allowed: {}",
        response.status()
    );
    assert!(cookie_value(&response, "gantry-session").is_none());

    // No state at all, and an unknown provider.
    let client = browser_client()?;
    let response = client
        .get(format!("{}/hub/oidc/mock/callback?code=x", gantry.url()))
        .send()
        .await?;
    assert_eq!(response.status(), 400);
    let response = client
        .get(format!("{}/hub/oidc/other/login", gantry.url()))
        .send()
        .await?;
    assert_eq!(response.status(), 404);
    Ok(())
}

/// Under an https public URL the cookies are `__Host-` prefixed and `Secure`, and only our
/// https origin may post.
#[tokio::test]
async fn https_deployments_get_host_prefixed_secure_cookies() -> anyhow::Result<()> {
    // The public URL is what browsers see (a TLS-terminating load balancer in front).
    let origin = "https://hub.example.org";
    let mut gantry_https = TestGantry::new(&format!("public_url = \"{origin}\"\n"))?;
    gantry_https.add_user("alice", PASSWORD, false)?;
    gantry_https.start().await?;
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?;
    let page = client
        .get(format!("{}/hub/login", gantry_https.url()))
        .send()
        .await?;
    let login_cookie = set_cookies(&page)
        .into_iter()
        .find(|c| c.starts_with("__Host-gantry-login="))
        .context("login cookie")?;
    assert!(login_cookie.contains("Secure"), "{login_cookie}");
    let binding = login_cookie.split(';').next().unwrap().to_owned();
    let xsrf = xsrf_field(&page.text().await?)?;
    let form = [
        ("_xsrf", xsrf.as_str()),
        ("username", "alice"),
        ("password", PASSWORD),
    ];
    // The http origin is not ours any more.
    let refused = client
        .post(format!("{}/hub/login", gantry_https.url()))
        .header("origin", gantry_https.url())
        .header("cookie", &binding)
        .form(&form)
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    // An unprefixed copy of the cookie (as a sibling domain could toss) does not count.
    let tossed = client
        .post(format!("{}/hub/login", gantry_https.url()))
        .header("origin", origin)
        .header("cookie", binding.trim_start_matches("__Host-"))
        .form(&form)
        .send()
        .await?;
    assert_eq!(tossed.status(), 403);
    let login = client
        .post(format!("{}/hub/login", gantry_https.url()))
        .header("origin", origin)
        .header("cookie", &binding)
        .form(&form)
        .send()
        .await?;
    assert_eq!(login.status(), 303);
    let session = set_cookies(&login)
        .into_iter()
        .find(|c| c.starts_with("__Host-gantry-session="))
        .context("session cookie")?;
    for attribute in ["Secure", "HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(session.contains(attribute), "{attribute}: {session}");
    }
    assert!(!session.contains("Domain"), "{session}");
    Ok(())
}

/// `GANTRY_ADMIN_TOKEN` registers an admin API token at start, idempotently; a token that
/// is not shaped like gantry's secrets stops the start with the fix.
#[tokio::test]
async fn the_admin_token_from_the_environment_works_across_restarts() -> anyhow::Result<()> {
    let token = "5ca1ab1e".repeat(8);
    let mut gantry = TestGantry::new("")?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", &token);
    gantry.start().await?;
    let (status, me) = whoami_with_token(&gantry, &token).await?;
    assert_eq!(status, 200);
    assert_eq!(me["name"], "admin");
    assert_eq!(me["admin"], true);
    assert_eq!(me["scopes"], json!(["admin"]));
    gantry.restart().await?;
    assert_eq!(whoami_with_token(&gantry, &token).await?.0, 200);
    gantry.stop();

    gantry.set_env("GANTRY_ADMIN_TOKEN", "not-a-good-token");
    let started = gantry.start().await;
    let error = format!(
        "{:#}",
        started.expect_err("a malformed token must stop the start")
    );
    assert!(error.contains("exited early"), "{error}");
    Ok(())
}

/// `GANTRY_DATABASE_URL` overrides `hub.database_url`, and messages never show its password.
#[tokio::test]
async fn the_database_url_comes_from_the_environment_without_its_password() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.set_env(
        "GANTRY_DATABASE_URL",
        "postgres://gantry:hunter2@db.example:5432/hub",
    );
    let (code, _, err) = gantry.command(&["check-config"], "")?;
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("postgres://gantry:***@db.example:5432/hub"),
        "{err}"
    );
    assert!(!err.contains("hunter2"), "{err}");
    Ok(())
}

/// The token page: create (shown once), list, revoke; forms need the CSRF token; scopes the
/// user may not grant are refused on the page.
#[tokio::test]
async fn the_token_page_creates_lists_and_revokes() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (alice, _) = logged_in(&gantry, "alice").await?;
    let page = alice
        .get(format!("{}/hub/token", gantry.url()))
        .send()
        .await?;
    assert_eq!(page.status(), 200);
    let page = page.text().await?;
    assert!(page.contains("You have no API tokens."), "{page}");
    let xsrf = xsrf_field(&page)?;
    let post = |path: &str, form: Vec<(&str, &str)>| {
        alice
            .post(format!("{}{path}", gantry.url()))
            .header("origin", gantry.url())
            .form(&form)
            .send()
    };

    let forged = post(
        "/hub/token",
        vec![("note", "x"), ("expires_in", "0"), ("scopes", "self")],
    )
    .await?;
    assert_eq!(forged.status(), 403);
    let refused = post(
        "/hub/token",
        vec![
            ("_xsrf", &xsrf),
            ("note", "x"),
            ("expires_in", "0"),
            ("scopes", "admin"),
        ],
    )
    .await?;
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .text()
            .await?
            .contains("You may not grant those scopes.")
    );

    let created = post(
        "/hub/token",
        vec![
            ("_xsrf", &xsrf),
            ("note", "laptop"),
            ("expires_in", "3600"),
            ("scopes", "self"),
        ],
    )
    .await?;
    assert_eq!(created.status(), 201);
    let page = created.text().await?;
    let start = page
        .find("<pre id=\"new-token\">")
        .context("the new token is shown")?
        + "<pre id=\"new-token\">".len();
    let token = page[start..start + 64].to_owned();
    assert_eq!(whoami_with_token(&gantry, &token).await?.0, 200);
    // Listed, without the secret.
    let listed = alice
        .get(format!("{}/hub/token", gantry.url()))
        .send()
        .await?
        .text()
        .await?;
    assert!(
        listed.contains("laptop") && !listed.contains(&token),
        "{listed}"
    );

    let id = {
        let marker = "name=\"id\" value=\"";
        let at = listed.find(marker).context("a revoke form")? + marker.len();
        listed[at..]
            .split('"')
            .next()
            .unwrap_or_default()
            .to_owned()
    };
    let revoked = post("/hub/token/revoke", vec![("_xsrf", &xsrf), ("id", &id)]).await?;
    assert_eq!(revoked.status(), 303);
    assert_eq!(whoami_with_token(&gantry, &token).await?.0, 403);
    // Revoking it again (or another user's id) finds nothing.
    assert_eq!(
        post("/hub/token/revoke", vec![("_xsrf", &xsrf), ("id", &id)])
            .await?
            .status(),
        404
    );
    Ok(())
}

#[tokio::test]
async fn info_is_for_admins() -> anyhow::Result<()> {
    let token = "abcdef01".repeat(8);
    let mut gantry = TestGantry::new("")?;
    gantry.set_env("GANTRY_ADMIN_TOKEN", &token);
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let info: Value = reqwest::Client::new()
        .get(format!("{}/hub/api/info", gantry.url()))
        .header("authorization", format!("token {token}"))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(info["version"], "6.1.1");
    assert_eq!(info["authenticator"][0]["class"], "gantry.local");
    let (alice, _) = logged_in(&gantry, "alice").await?;
    assert_eq!(
        alice
            .get(format!("{}/hub/api/info", gantry.url()))
            .send()
            .await?
            .status(),
        403
    );
    // The unauthenticated version endpoint that single-user servers read first.
    let version: Value = reqwest::get(format!("{}/hub/api", gantry.url()))
        .await?
        .json()
        .await?;
    assert_eq!(version["version"], "6.1.1");
    Ok(())
}

/// Issue 11's probe: an admin's token with only `self` could mint a token that reaches another
/// user's servers. A new token may carry only scopes the requesting credential holds.
#[tokio::test]
async fn a_token_mints_only_scopes_it_holds() -> anyhow::Result<()> {
    let mut gantry = TestGantry::new("")?;
    gantry.add_user("root", PASSWORD, true)?;
    gantry.add_user("alice", PASSWORD, false)?;
    gantry.start().await?;
    let (root, _) = logged_in(&gantry, "root").await?;
    let xsrf = session_xsrf(&root, &gantry).await?;
    let made: Value = root
        .post(format!("{}/hub/api/users/root/tokens", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &xsrf)
        .json(&json!({"scopes": ["self"]}))
        .send()
        .await?
        .json()
        .await?;
    let narrow = made["token"].as_str().context("token")?.to_owned();
    let mint = |user: &str, scopes: Value| {
        Client::new()
            .post(format!("{}/hub/api/users/{user}/tokens", gantry.url()))
            .header("authorization", format!("token {narrow}"))
            .json(&json!({ "scopes": scopes }))
            .send()
    };
    // A token of root's own that would reach alice's servers.
    let refused = mint("root", json!(["access:servers!user=alice"])).await?;
    assert_eq!(refused.status(), 403);
    let message: Value = refused.json().await?;
    assert!(
        message["message"]
            .as_str()
            .is_some_and(|m| m.contains("access:servers!user=alice")),
        "{message}"
    );
    // Nor may it act for alice at all.
    assert_eq!(
        mint("alice", json!(["access:servers!user=alice"]))
            .await?
            .status(),
        404
    );
    assert_eq!(mint("root", json!(["admin"])).await?.status(), 403);
    assert_eq!(mint("root", json!(["read:metrics"])).await?.status(), 403);
    // What it holds, it may pass on.
    assert_eq!(mint("root", json!(["self"])).await?.status(), 201);
    assert_eq!(
        mint("root", json!(["access:servers!user=root"]))
            .await?
            .status(),
        201
    );
    // The admin's session holds everything an admin may do.
    let wide = root
        .post(format!("{}/hub/api/users/alice/tokens", gantry.url()))
        .header("origin", gantry.url())
        .header("x-xsrftoken", &xsrf)
        .json(&json!({"scopes": ["access:servers!user=alice"]}))
        .send()
        .await?;
    assert_eq!(wide.status(), 201);
    Ok(())
}
