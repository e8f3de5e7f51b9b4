//! OpenID Connect login against the real `oidc-provider-mock` (PyPI; authlib-based, with
//! discovery and JWKS), started per test on a free loopback port.
//!
//! The provider comes from `GANTRY_OIDC_MOCK` (the path of its `oidc-provider-mock`
//! executable) or from `<repo>/.venv/bin/oidc-provider-mock`, which
//! `integration-tests/python-env.sh` installs. Without it every test here fails with a message
//! saying so; none passes silently.
//!
//! The tests play the browser with reqwest (no redirects followed): they open the provider's
//! authorization page, submit its login form for a subject whose claims they set through the
//! mock's `PUT /users/<sub>`, and read the code, state and iss from the `Location` header of
//! the redirect to gantry's callback URL, where nothing needs to listen.

// Tests may unwrap: a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use gantry_auth::{
    CallbackParams, IdTokenError, OidcConfig, OidcError, OidcIdentity, OidcProvider, PendingLogin,
};
use serde_json::json;

const REDIRECT: &str = "http://127.0.0.1:9/hub/oauth_callback";

/// The mock enforces no PKCE by itself (0.3.4 registers no RFC 7636 extension); for the PKCE
/// tests it is started through this launcher, which turns on authlib's own `CodeChallenge`
/// check and remembers each code's challenge. Everything else is the mock unchanged.
const PKCE_LAUNCHER: &str = r#"
import sys, warnings
import authlib.oauth2.rfc7636 as rfc7636
import authlib.integrations.flask_oauth2 as flask_oauth2
from oidc_provider_mock import _app, __main__ as cli
challenges = {}
save = _app.AuthorizationCodeGrant.save_authorization_code
def save_with_challenge(self, code, request):
    save(self, code, request)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = request.data
    challenges[code] = (data.get("code_challenge"), data.get("code_challenge_method"))
_app.AuthorizationCodeGrant.save_authorization_code = save_with_challenge
class CodeChallenge(rfc7636.CodeChallenge):
    def get_authorization_code_challenge(self, authorization_code):
        return challenges.get(authorization_code.code, (None, None))[0]
    def get_authorization_code_challenge_method(self, authorization_code):
        return challenges.get(authorization_code.code, (None, None))[1]
register = flask_oauth2.AuthorizationServer.register_grant
def register_with_pkce(self, grant_cls, extensions=None):
    if grant_cls is _app.AuthorizationCodeGrant:
        extensions = list(extensions or []) + [CodeChallenge(required=True)]
    return register(self, grant_cls, extensions)
flask_oauth2.AuthorizationServer.register_grant = register_with_pkce
sys.argv[0] = "oidc-provider-mock"
cli.run()
"#;

fn mock_executable() -> PathBuf {
    let path = std::env::var_os("GANTRY_OIDC_MOCK").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/oidc-provider-mock"),
        PathBuf::from,
    );
    assert!(
        path.is_file(),
        "oidc-provider-mock not found at {}: run integration-tests/python-env.sh (it installs \
         oidc-provider-mock==0.3.4 from integration-tests/python-requirements.txt into \
         <repo>/.venv), or set GANTRY_OIDC_MOCK to the path of an oidc-provider-mock executable",
        path.display()
    );
    path
}

/// One running provider; killed when dropped.
struct Mock {
    child: Child,
    /// `http://127.0.0.1:<port>`, also its issuer.
    base: String,
}

impl Mock {
    fn start(args: &[&str]) -> Self {
        Self::spawn(Command::new(mock_executable()), args)
    }

    /// A provider on a given port: a restarted provider keeps its issuer URL but, like a
    /// provider that rotated its signing key, signs with a new key.
    fn start_on(port: &str) -> Self {
        Self::spawn_on(Command::new(mock_executable()), port, &[])
    }

    fn start_with_pkce() -> Self {
        let python = mock_executable().with_file_name("python");
        let mut command = Command::new(python);
        command.args(["-c", PKCE_LAUNCHER]);
        Self::spawn(command, &[])
    }

    fn spawn(command: Command, args: &[&str]) -> Self {
        Self::spawn_on(command, "0", args)
    }

    fn spawn_on(mut command: Command, port: &str, args: &[&str]) -> Self {
        let mut child = command
            .args(["--host", "127.0.0.1", "--port", port])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start oidc-provider-mock");
        // uvicorn logs the port it bound; the thread then keeps draining the log.
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Uvicorn running on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.to_owned());
                }
                eprintln!("[oidc-provider-mock] {line}");
            }
        });
        let base = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("oidc-provider-mock did not report its address");
        Self { child, base }
    }

    fn port(&self) -> &str {
        self.base.rsplit(':').next().unwrap()
    }

    /// Sets the claims the provider issues for `sub`.
    async fn set_user(&self, sub: &str, claims: serde_json::Value) {
        let status = browser()
            .put(format!("{}/users/{sub}", self.base))
            .json(&claims)
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(status, 204, "PUT /users/{sub}");
    }
}

impl Drop for Mock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn browser() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

fn config(issuer: &str, client_id: &str) -> OidcConfig {
    let mut config = OidcConfig::new(issuer, client_id, Some("s3cret".to_owned()), REDIRECT);
    config.allowed_groups = vec!["staff".to_owned()];
    config.admin_groups = vec!["ops".to_owned()];
    config.uid_claim = Some("uid".to_owned());
    config.gid_claim = Some("gid".to_owned());
    config
}

async fn provider(config: OidcConfig) -> OidcProvider {
    OidcProvider::discover(config).await.unwrap()
}

fn alice() -> serde_json::Value {
    json!({
        "preferred_username": "Alice",
        "email": "alice@example.org",
        "email_verified": true,
        "groups": ["staff", "ops"],
        "uid": 1234,
        "gid": "100",
    })
}

/// Plays the browser: opens the authorization page, logs in as `sub`, and returns the
/// parameters of the redirect to the callback URL.
async fn authorize(provider: &OidcProvider, sub: &str) -> (PendingLogin, CallbackParams) {
    let (url, pending) = provider.begin_login().unwrap();
    let query: Vec<(String, String)> = url.query_pairs().into_owned().collect();
    let get = |k: &str| {
        query
            .iter()
            .find(|(key, _)| key == k)
            .map(|(_, v)| v.as_str())
    };
    assert_eq!(get("code_challenge_method"), Some("S256"));
    assert_eq!(get("state"), Some(pending.state()));
    assert_eq!(get("nonce"), Some(pending.nonce()));
    assert!(get("scope").unwrap().split(' ').any(|s| s == "openid"));

    let browser = browser();
    let page = browser.get(url.clone()).send().await.unwrap();
    assert_eq!(page.status(), 200, "authorization page");
    let answer = browser
        .post(url)
        .form(&[("sub", sub)])
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 302, "login form answer");
    let location = answer.headers()["location"].to_str().unwrap();
    let callback = reqwest::Url::parse(location).unwrap();
    assert!(location.starts_with(REDIRECT), "{location}");
    let params = CallbackParams::from_query(callback.query().unwrap_or_default()).unwrap();
    (pending, params)
}

/// A full login as `sub`, returning the identity and the nonce its ID token carries.
async fn login(provider: &OidcProvider, sub: &str) -> (OidcIdentity, String) {
    let (pending, params) = authorize(provider, sub).await;
    let identity = provider.finish_login(&pending, &params).await.unwrap();
    (identity, pending.nonce().to_owned())
}

fn assert_refused(result: Result<impl std::fmt::Debug, OidcError>, status: u16) -> OidcError {
    let error = result.expect_err("the login must be refused");
    assert_eq!(error.status(), status, "{error}");
    error
}

#[tokio::test]
async fn round_trip_logs_in_with_mapped_claims() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (identity, _) = login(&provider, "alice-sub").await;
    assert_eq!(identity.username.as_str(), "alice");
    assert_eq!(identity.subject, "alice-sub");
    assert!(identity.groups.contains("staff"));
    assert!(identity.admin, "ops is an admin group");
    assert_eq!((identity.uid, identity.gid), (Some(1234), Some(100)));

    // The mock advertises end_session_endpoint: RP-initiated logout.
    let logout = provider
        .logout_url(
            Some(&identity.id_token),
            Some("http://127.0.0.1:9/hub/logout"),
        )
        .unwrap();
    assert!(
        logout
            .as_str()
            .starts_with(&format!("{}/oauth2/end_session", mock.base))
    );
    let pairs: Vec<(String, String)> = logout.query_pairs().into_owned().collect();
    assert!(pairs.contains(&("id_token_hint".to_owned(), identity.id_token.clone())));
}

#[tokio::test]
async fn userinfo_fills_in_claims() {
    let mock = Mock::start(&[]);
    mock.set_user(
        "bob-sub",
        json!({"preferred_username": "bob", "groups": ["staff"]}),
    )
    .await;
    let mut config = config(&mock.base, "gantry");
    config.uid_claim = None;
    config.gid_claim = None;
    config.fetch_userinfo = true;
    let provider = provider(config).await;
    let (identity, _) = login(&provider, "bob-sub").await;
    assert_eq!(identity.username.as_str(), "bob");
    assert!(!identity.admin);
}

#[tokio::test]
async fn state_mismatch_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (pending, params) = authorize(&provider, "alice-sub").await;
    let forged = CallbackParams {
        state: Some(format!("{}0", pending.state())),
        ..params.clone()
    };
    let error = assert_refused(provider.finish_login(&pending, &forged).await, 400);
    assert!(matches!(error, OidcError::StateMismatch), "{error}");
    let missing = CallbackParams {
        state: None,
        ..params
    };
    let error = assert_refused(provider.finish_login(&pending, &missing).await, 400);
    assert!(matches!(error, OidcError::StateMismatch), "{error}");
}

#[tokio::test]
async fn iss_parameter_of_another_provider_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (pending, params) = authorize(&provider, "alice-sub").await;
    let mixed_up = CallbackParams {
        iss: Some("https://evil.example.org".to_owned()),
        ..params.clone()
    };
    let error = assert_refused(provider.finish_login(&pending, &mixed_up).await, 400);
    assert!(
        matches!(error, OidcError::IssuerMismatch { .. }),
        "{error:?}"
    );
    // The right iss passes (the code was not used above: the check comes first).
    let right = CallbackParams {
        iss: Some(mock.base.clone()),
        ..params
    };
    provider.finish_login(&pending, &right).await.unwrap();
}

#[tokio::test]
async fn pkce_flow_passes_and_wrong_or_missing_verifier_is_refused() {
    let mock = Mock::start_with_pkce();
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    // The right verifier passes a provider that checks it.
    login(&provider, "alice-sub").await;

    for verifier in [
        "0".repeat(64),
        // Missing verifier: nothing survives of it but an empty parameter.
        String::new(),
    ] {
        let (pending, params) = authorize(&provider, "alice-sub").await;
        let tampered = PendingLogin::from_parts(
            pending.state().to_owned(),
            pending.nonce().to_owned(),
            verifier,
        );
        let error = assert_refused(provider.finish_login(&tampered, &params).await, 400);
        assert!(matches!(error, OidcError::TokenExchange(_)), "{error}");
    }
}

#[tokio::test]
async fn expired_id_token_is_refused() {
    // Tokens that live one second (the mock cannot issue them already expired: with 0 it
    // fails to answer). Its `exp` is whole seconds, so the token may already have expired
    // when the login checks it; if not, it is checked again once it has.
    let mock = Mock::start(&["--token-max-age", "1"]);
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (pending, params) = authorize(&provider, "alice-sub").await;
    let result = match provider.finish_login(&pending, &params).await {
        Ok(identity) => {
            tokio::time::sleep(Duration::from_millis(2100)).await;
            provider
                .validate_id_token(&identity.id_token, pending.nonce())
                .await
        }
        Err(error) => Err(error),
    };
    let error = assert_refused(result, 403);
    assert!(
        matches!(error, OidcError::IdToken(IdTokenError::Expired(_))),
        "{error}"
    );
}

#[tokio::test]
async fn id_token_with_wrong_nonce_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (identity, nonce) = login(&provider, "alice-sub").await;
    provider
        .validate_id_token(&identity.id_token, &nonce)
        .await
        .unwrap();
    let error = assert_refused(
        provider
            .validate_id_token(&identity.id_token, "another-nonce")
            .await,
        403,
    );
    assert!(
        matches!(error, OidcError::IdToken(IdTokenError::Nonce(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn id_token_with_bad_signature_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (identity, nonce) = login(&provider, "alice-sub").await;
    let (signed, signature) = identity.id_token.rsplit_once('.').unwrap();
    let mut signature = signature.as_bytes().to_vec();
    let middle = signature.len() / 2;
    signature[middle] = if signature[middle] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let forged = format!("{signed}.{}", String::from_utf8(signature).unwrap());
    let error = assert_refused(provider.validate_id_token(&forged, &nonce).await, 403);
    assert!(
        matches!(error, OidcError::IdToken(IdTokenError::Signature(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn unsigned_id_token_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (identity, nonce) = login(&provider, "alice-sub").await;
    // The real claims under {"alg":"none","typ":"JWT"}, with an empty signature.
    let payload = identity.id_token.split('.').nth(1).unwrap();
    let forged = format!("eyJhbGciOiJub25lIiwidHlwIjoiSldUIn0.{payload}.");
    let error = assert_refused(provider.validate_id_token(&forged, &nonce).await, 403);
    assert!(
        matches!(error, OidcError::IdToken(IdTokenError::Unsigned)),
        "{error:?}"
    );
}

#[tokio::test]
async fn id_token_for_another_client_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let gantry = provider(config(&mock.base, "gantry")).await;
    // A token the same provider signed for another client.
    let other = provider(config(&mock.base, "someone-else")).await;
    let (identity, nonce) = login(&other, "alice-sub").await;
    let error = assert_refused(
        gantry.validate_id_token(&identity.id_token, &nonce).await,
        403,
    );
    assert!(
        matches!(error, OidcError::IdToken(IdTokenError::Audience(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn id_token_from_another_issuer_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user("alice-sub", alice()).await;
    let gantry = provider(config(&mock.base, "gantry")).await;
    // The mock names itself after the Host it is reached by: as `localhost` it is another
    // issuer that signs with the same key, so only the iss check can tell.
    let other = provider(config(
        &format!("http://localhost:{}", mock.port()),
        "gantry",
    ))
    .await;
    let (identity, nonce) = login(&other, "alice-sub").await;
    let error = assert_refused(
        gantry.validate_id_token(&identity.id_token, &nonce).await,
        403,
    );
    assert!(
        matches!(error, OidcError::IdToken(IdTokenError::Issuer(_))),
        "{error:?}"
    );
}

#[tokio::test]
async fn unverified_email_as_username_is_refused() {
    let mock = Mock::start(&[]);
    let mut claims = alice();
    claims["email_verified"] = json!(false);
    mock.set_user("mallory-sub", claims).await;
    let mut config = config(&mock.base, "gantry");
    config.username_claim = "email".to_owned();
    let provider = provider(config).await;
    let (pending, params) = authorize(&provider, "mallory-sub").await;
    let error = assert_refused(provider.finish_login(&pending, &params).await, 403);
    assert!(matches!(error, OidcError::EmailNotVerified), "{error}");
}

#[tokio::test]
async fn user_outside_allowed_groups_is_refused() {
    let mock = Mock::start(&[]);
    mock.set_user(
        "eve-sub",
        json!({"preferred_username": "eve", "groups": ["visitors"]}),
    )
    .await;
    let provider = provider(config(&mock.base, "gantry")).await;
    let (pending, params) = authorize(&provider, "eve-sub").await;
    let error = assert_refused(provider.finish_login(&pending, &params).await, 403);
    assert!(
        matches!(error, OidcError::NotInAllowedGroups { .. }),
        "{error:?}"
    );
}

/// Key rotation: the provider starts signing with a key gantry's cached JWKS lacks (the
/// mock keeps its `kid` across restarts with a new key, the harder case). The first token that
/// fails to verify makes gantry fetch the JWKS again, and the login succeeds; a forged token
/// still fails after the refetch.
#[tokio::test]
async fn a_rotated_signing_key_is_fetched_once_and_trusted() {
    let old = Mock::start(&[]);
    let port = old.port().to_owned();
    let provider = provider(config(&old.base, "gantry")).await;
    drop(old);
    // The same issuer URL, a new process, a new signing key.
    let mut new = None;
    for _ in 0..50 {
        // The old process's port may take a moment to be free again.
        match std::panic::catch_unwind(|| Mock::start_on(&port)) {
            Ok(mock) => {
                new = Some(mock);
                break;
            }
            Err(_) => std::thread::sleep(Duration::from_millis(100)),
        }
    }
    let new = new.expect("restart the provider on the same port");
    new.set_user("alice-sub", alice()).await;
    let (identity, nonce) = login(&provider, "alice-sub").await;
    assert_eq!(identity.username.as_str(), "alice");

    // The refetched keys are not a blank cheque: a forged signature is still refused.
    let (signed, _) = identity.id_token.rsplit_once('.').unwrap();
    let forged = format!("{signed}.AAAA");
    assert_refused(provider.validate_id_token(&forged, &nonce).await, 403);
}
