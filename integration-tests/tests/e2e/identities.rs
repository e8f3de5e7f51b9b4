//! OpenID identities (issue 11, item 4) through `gantry up` with two real providers (two
//! `oidc-provider-mock` instances, `lab` and `uni`): a login is matched on (issuer, subject),
//! never on the name alone, so no local sign-up, other provider or same-named user takes an
//! account over, and the `GANTRY_ADMIN_USER` account is reached only through a linked
//! identity. Admins link identities with the API or `gantry user link`.
//!
//! Each refusal checks the status, the page's reason and that no session came out of it.

use anyhow::ensure;
use gantry_integration_tests::{OidcMock, TestGantry, browser_client, xsrf_field};
use reqwest::header::SET_COOKIE;
use reqwest::{Client, Response};
use serde_json::{Value, json};

/// The operator's admin token (`GANTRY_ADMIN_TOKEN`) for the account `GANTRY_ADMIN_USER`.
const ADMIN_TOKEN: &str = "1d3471f1e5d1d3471f1e5d1d3471f1e5d1d3471f1e5d1d3471f1e5d1d3471f1e";
const ADMIN_USER: &str = "boss";

/// `gantry up` with open local sign-up and two OpenID providers.
struct Hub {
    lab: OidcMock,
    uni: OidcMock,
    gantry: TestGantry,
}

impl Hub {
    async fn start() -> anyhow::Result<Self> {
        let lab = OidcMock::start(&[])?;
        let uni = OidcMock::start(&[])?;
        let config = format!(
            "[auth.local]\nsignup = \"open\"\n\
             [auth.oidc.lab]\ndisplay_name = \"Lab SSO\"\nissuer_url = \"{}\"\nclient_id = \"gantry\"\n\
             client_secret = \"s3cret\"\nallowed_groups = [\"staff\"]\nadmin_groups = [\"ops\"]\n\
             [auth.oidc.uni]\ndisplay_name = \"University\"\nissuer_url = \"{}\"\nclient_id = \"gantry\"\n\
             client_secret = \"s3cret\"\nallow_all = true\n",
            lab.issuer(),
            uni.issuer()
        );
        let mut gantry = TestGantry::new(&config)?;
        gantry.set_env("GANTRY_ADMIN_TOKEN", ADMIN_TOKEN);
        gantry.set_env("GANTRY_ADMIN_USER", ADMIN_USER);
        gantry.start().await?;
        Ok(Self { lab, uni, gantry })
    }

    fn mock(&self, provider: &str) -> &OidcMock {
        if provider == "lab" {
            &self.lab
        } else {
            &self.uni
        }
    }

    /// Logs `sub` in through `provider` in a fresh browser, the provider showing `claims`;
    /// returns the browser and gantry's answer to the callback.
    async fn login(
        &self,
        provider: &str,
        sub: &str,
        claims: Value,
    ) -> anyhow::Result<(Client, Response)> {
        let mock = self.mock(provider);
        mock.set_user(sub, &claims).await?;
        let client = browser_client()?;
        let begin = client
            .get(format!(
                "{}/hub/oidc/{provider}/login?next=%2Fhub%2Fapi%2Fuser",
                self.gantry.url()
            ))
            .send()
            .await?;
        ensure!(begin.status() == 303, "begin: {}", begin.status());
        let authorize = begin.headers()["location"].to_str()?.to_owned();
        let callback = mock.authorize(&authorize, sub).await?;
        let response = client.get(&callback).send().await?;
        Ok((client, response))
    }

    /// [`Hub::login`], which must succeed; returns who the session is.
    async fn logs_in_as(&self, provider: &str, sub: &str, claims: Value) -> anyhow::Result<Value> {
        let (client, response) = self.login(provider, sub, claims).await?;
        ensure!(
            response.status() == 303,
            "{provider} login of {sub}: {}\n{}",
            response.status(),
            self.gantry.log_text()
        );
        Ok(client
            .get(format!("{}/hub/api/user", self.gantry.url()))
            .send()
            .await?
            .json()
            .await?)
    }

    /// [`Hub::login`], which must be refused (403, no session); returns the page.
    async fn is_refused(&self, provider: &str, sub: &str, claims: Value) -> anyhow::Result<String> {
        let (client, response) = self.login(provider, sub, claims).await?;
        ensure!(
            response.status() == 403,
            "{provider} login of {sub} was not refused: {}",
            response.status()
        );
        let sessions = response
            .headers()
            .get_all(SET_COOKIE)
            .iter()
            .filter_map(|c| c.to_str().ok())
            .filter(|c| c.starts_with("gantry-session=") && !c.starts_with("gantry-session=;"))
            .count();
        ensure!(sessions == 0, "the refused login set a session cookie");
        let page = response.text().await?;
        let me = client
            .get(format!("{}/hub/api/user", self.gantry.url()))
            .send()
            .await?;
        ensure!(
            me.status() == 403,
            "the refused browser is someone: {}",
            me.status()
        );
        Ok(page)
    }

    /// An admin API call with the operator's token.
    fn admin(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        Client::new()
            .request(method, format!("{}/hub/api{path}", self.gantry.url()))
            .header("authorization", format!("token {ADMIN_TOKEN}"))
    }

    async fn identities(&self, user: &str) -> anyhow::Result<Value> {
        let response = self
            .admin(reqwest::Method::GET, &format!("/users/{user}/identities"))
            .send()
            .await?;
        ensure!(
            response.status() == 200,
            "identities of {user}: {}",
            response.status()
        );
        Ok(response.json().await?)
    }
}

fn claims(name: &str) -> Value {
    json!({"preferred_username": name, "groups": ["staff"]})
}

/// Signs `name` up with the local form (open sign-up logs them in at once).
async fn sign_up(gantry: &TestGantry, name: &str) -> anyhow::Result<()> {
    let client = browser_client()?;
    let page = client
        .get(format!("{}/hub/signup", gantry.url()))
        .send()
        .await?;
    let xsrf = xsrf_field(&page.text().await?)?;
    let response = client
        .post(format!("{}/hub/signup", gantry.url()))
        .header("origin", gantry.url())
        .form(&[
            ("_xsrf", xsrf.as_str()),
            ("username", name),
            ("password", "correct horse battery"),
        ])
        .send()
        .await?;
    ensure!(
        response.status() == 303,
        "sign-up of {name}: {}",
        response.status()
    );
    Ok(())
}

/// Issue 11's probe: with open sign-up, whoever signs up `victim` first would own the account
/// the real victim reaches through the provider. The provider's login is refused with the
/// reason and the fix; an admin's link through the API opens the account to it, and
/// unlinking closes it again.
#[tokio::test]
async fn a_local_sign_up_does_not_capture_the_provider_login_of_its_name() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    sign_up(&hub.gantry, "victim").await?;

    let page = hub
        .is_refused("lab", "victim-sub", claims("victim"))
        .await?;
    assert!(
        page.contains("The name victim is taken by another gantry account, so this Lab SSO login cannot use it")
            && page.contains("gantry user link victim --provider lab --subject victim-sub"),
        "{page}"
    );
    assert_eq!(hub.identities("victim").await?, json!([]));
    assert!(
        hub.gantry.log_text().contains("OpenID login refused"),
        "the refusal is logged"
    );

    // Only admins link: the signed-up user's own session may not.
    let link = json!({"provider": "lab", "subject": "victim-sub"});
    let (user, _) = hub.gantry.login("victim", "correct horse battery").await?;
    let xsrf = xsrf_field(
        &user
            .get(format!("{}/hub/home", hub.gantry.url()))
            .send()
            .await?
            .text()
            .await?,
    )?;
    let refused = user
        .post(format!(
            "{}/hub/api/users/victim/identities",
            hub.gantry.url()
        ))
        .header("origin", hub.gantry.url())
        .header("x-xsrftoken", xsrf)
        .json(&link)
        .send()
        .await?;
    assert_eq!(refused.status(), 403);
    assert!(
        refused
            .text()
            .await?
            .contains("You are not allowed to do this."),
        "refused as a non-admin, not by the CSRF check"
    );

    // An admin links it (an unknown provider and a malformed subject are refused first).
    let post = |body: Value| {
        hub.admin(reqwest::Method::POST, "/users/victim/identities")
            .json(&body)
            .send()
    };
    let unknown = post(json!({"provider": "nope", "subject": "victim-sub"})).await?;
    assert_eq!(unknown.status(), 400);
    assert!(unknown.text().await?.contains("configured: lab, uni"));
    assert_eq!(
        post(json!({"provider": "lab", "subject": ""}))
            .await?
            .status(),
        400
    );
    let linked = post(link.clone()).await?;
    assert_eq!(linked.status(), 201);
    let linked: Value = linked.json().await?;
    assert_eq!(linked["provider"], "lab");
    assert_eq!(linked["issuer"], hub.lab.issuer());
    assert_eq!(linked["subject"], "victim-sub");
    assert_eq!(post(link.clone()).await?.status(), 200, "linking again");
    let log = hub.gantry.log_text();
    assert!(
        log.lines()
            .any(|line| line.contains("OpenID identity linked")
                && line.contains("victim-sub")
                && line.contains(ADMIN_USER)),
        "the link is audited with who made it:\n{log}"
    );

    let me = hub
        .logs_in_as("lab", "victim-sub", claims("victim"))
        .await?;
    assert_eq!(me["name"], "victim");

    // Unlinked, the identity is refused again.
    let unlinked = hub
        .admin(reqwest::Method::DELETE, "/users/victim/identities")
        .json(&link)
        .send()
        .await?;
    assert_eq!(unlinked.status(), 204);
    assert_eq!(
        hub.admin(reqwest::Method::DELETE, "/users/victim/identities")
            .json(&link)
            .send()
            .await?
            .status(),
        404
    );
    hub.is_refused("lab", "victim-sub", claims("victim"))
        .await?;
    Ok(())
}

/// With two providers, a user of the second with the name of the first's user does not get
/// that account; nor does the same `sub` string at the other issuer.
#[tokio::test]
async fn a_second_provider_cannot_take_the_first_ones_account() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let me = hub.logs_in_as("lab", "alice-lab", claims("alice")).await?;
    assert_eq!(me["name"], "alice");

    let page = hub.is_refused("uni", "alice-uni", claims("alice")).await?;
    assert!(
        page.contains("The name alice is taken by another gantry account, so this University login cannot use it"),
        "{page}"
    );
    hub.is_refused("uni", "alice-lab", claims("alice")).await?;
    let linked = hub.identities("alice").await?;
    assert_eq!(
        linked.as_array().map(Vec::len),
        Some(1),
        "the first login of a new name makes the account with its identity, and only that: {linked}"
    );
    assert_eq!(linked[0]["provider"], "lab");
    assert_eq!(linked[0]["subject"], "alice-lab");
    // The first provider's alice still logs in.
    assert_eq!(
        hub.logs_in_as("lab", "alice-lab", claims("alice")).await?["name"],
        "alice"
    );
    // A new name at the second provider makes its own account.
    assert_eq!(
        hub.logs_in_as("uni", "alice-uni", claims("alice2")).await?["name"],
        "alice2"
    );
    Ok(())
}

/// An OpenID user named like `GANTRY_ADMIN_USER` (even one the provider calls an admin) does
/// not land in that account; once an operator links the identity with `gantry user link`,
/// it does, and the account stays an admin whatever the provider's groups say.
#[tokio::test]
async fn the_admin_account_is_reached_only_through_a_linked_identity() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let page = hub
        .is_refused(
            "lab",
            "boss-sub",
            json!({"preferred_username": ADMIN_USER, "groups": ["staff", "ops"]}),
        )
        .await?;
    assert!(
        page.contains("The name boss is reserved for the gantry administrator account")
            && page.contains("gantry user link boss --provider lab --subject boss-sub"),
        "{page}"
    );
    // The account is as it was: an admin, with no identity.
    assert_eq!(hub.identities(ADMIN_USER).await?, json!([]));

    let args = [
        "user",
        "link",
        ADMIN_USER,
        "--provider",
        "lab",
        "--subject",
        "boss-sub",
    ];
    let (code, out, err) = hub.gantry.command(&args, "")?;
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("linked \"boss-sub\" of lab to boss"), "{out}");
    assert!(
        err.contains("OpenID identity linked") && err.contains("gantry user link"),
        "the CLI audits the link: {err}"
    );
    // An unknown provider is refused with the configured ones.
    let (code, _, err) = hub.gantry.command(
        &[
            "user",
            "link",
            ADMIN_USER,
            "--provider",
            "x",
            "--subject",
            "s",
        ],
        "",
    )?;
    assert_ne!(code, 0);
    assert!(err.contains("configured: lab, uni"), "{err}");

    // Linked: the login lands there, with the provider saying "not an admin" this time.
    let me = hub.logs_in_as("lab", "boss-sub", claims("someone")).await?;
    assert_eq!(me["name"], ADMIN_USER);
    assert_eq!(me["admin"], true);
    // The operator's token still works.
    assert_eq!(
        hub.admin(reqwest::Method::GET, "/user")
            .send()
            .await?
            .status(),
        200
    );

    let (code, out, err) = hub.gantry.command(
        &[
            "user",
            "unlink",
            ADMIN_USER,
            "--provider",
            "lab",
            "--subject",
            "boss-sub",
        ],
        "",
    )?;
    assert_eq!(code, 0, "{out}{err}");
    hub.is_refused("lab", "boss-sub", claims(ADMIN_USER))
        .await?;
    Ok(())
}

/// A user renamed at the provider (same `sub`, new name claim) keeps their account and its
/// name; the old name stays theirs.
#[tokio::test]
async fn a_rename_at_the_provider_keeps_the_account() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let first = hub.logs_in_as("lab", "robin-sub", claims("robin")).await?;
    assert_eq!(first["name"], "robin");

    let renamed = hub.logs_in_as("lab", "robin-sub", claims("robyn")).await?;
    assert_eq!(renamed["name"], "robin", "the account keeps its name");
    assert_eq!(renamed["created"], first["created"], "the same account");
    assert_eq!(
        hub.admin(reqwest::Method::GET, "/users/robyn")
            .send()
            .await?
            .status(),
        404,
        "no account for the new name"
    );
    // Someone else the provider now calls robin does not get robin's account.
    hub.is_refused("lab", "other-sub", claims("robin")).await?;
    Ok(())
}

/// An OpenID account from before identities (a user row with no password and no identity,
/// as the old callback and the admin API made them) is bound to the identity of its next
/// login; from then on no other identity of that name gets in. Groups from the claim still
/// apply.
#[tokio::test]
async fn an_account_from_before_identities_is_bound_at_its_next_login() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    let created = hub
        .admin(reqwest::Method::POST, "/users/olduser")
        .send()
        .await?;
    assert_eq!(created.status(), 201);
    let created: Value = created.json().await?;

    let me = hub
        .logs_in_as(
            "uni",
            "old-sub",
            json!({"preferred_username": "olduser", "groups": ["physics"]}),
        )
        .await?;
    assert_eq!(me["name"], "olduser");
    let model: Value = hub
        .admin(reqwest::Method::GET, "/users/olduser")
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(model["created"], created["created"], "the same account");
    assert_eq!(model["groups"], json!(["physics"]));
    // Bound: no other identity of that name gets in, from either provider.
    hub.is_refused("lab", "olduser-lab", claims("olduser"))
        .await?;
    hub.is_refused("uni", "impostor", claims("olduser")).await?;
    let bound = hub.identities("olduser").await?;
    assert_eq!(bound.as_array().map(Vec::len), Some(1), "{bound}");
    assert_eq!(bound[0]["provider"], "uni");
    assert_eq!(bound[0]["issuer"], hub.uni.issuer());
    assert_eq!(bound[0]["subject"], "old-sub");
    assert!(hub.gantry.log_text().contains("OpenID identity bound"));
    assert_eq!(
        hub.logs_in_as("uni", "old-sub", claims("olduser")).await?["name"],
        "olduser"
    );
    Ok(())
}

#[tokio::test]
async fn only_admins_see_and_change_identities() -> anyhow::Result<()> {
    let hub = Hub::start().await?;
    hub.logs_in_as("lab", "dana-sub", claims("dana")).await?;
    let (dana, _) = hub.login("lab", "dana-sub", claims("dana")).await?;
    let url = format!("{}/hub/api/users/dana/identities", hub.gantry.url());
    assert_eq!(dana.get(&url).send().await?.status(), 403);
    assert_eq!(
        Client::new()
            .post(&url)
            .json(&json!({"provider": "lab", "subject": "x"}))
            .send()
            .await?
            .status(),
        403
    );
    // Unknown users and fields are refused.
    assert_eq!(
        hub.admin(reqwest::Method::GET, "/users/nobody/identities")
            .send()
            .await?
            .status(),
        404
    );
    let extra = hub
        .admin(reqwest::Method::POST, "/users/dana/identities")
        .json(&json!({"provider": "lab", "subject": "x", "issuer": "https://evil.example"}))
        .send()
        .await?;
    assert_eq!(extra.status(), 400);
    // An identity linked to one account cannot be linked to another.
    hub.logs_in_as("lab", "erin-sub", claims("erin")).await?;
    let taken = hub
        .admin(reqwest::Method::POST, "/users/erin/identities")
        .json(&json!({"provider": "lab", "subject": "dana-sub"}))
        .send()
        .await?;
    assert_eq!(taken.status(), 409);
    let message: Value = taken.json().await?;
    assert!(
        message["message"]
            .as_str()
            .is_some_and(|m| m.contains("linked to dana")),
        "{message}"
    );
    Ok(())
}
