//! The hub side of JupyterHub's single-user OAuth, so stock images (`jupyterhub-singleuser`)
//! work with gantry unchanged. The contract (shared/reference/ecosystem-and-hub-api.md §1.5):
//!
//! - every server is an OAuth client: `client_id` `jupyterhub-user-<name>[-<server>]` (the
//!   name escaped so ids are unique per server, see [`client_id`]), the server's own API token
//!   (`JUPYTERHUB_API_TOKEN`) as its secret, and one redirect URI, `<prefix>oauth_callback`,
//!   matched exactly;
//! - `GET /hub/api/oauth2/authorize` needs a hub session with access to the server, and
//!   answers with a single-use code (10 minutes) bound to the client, the redirect URI and
//!   the PKCE challenge;
//! - `POST /hub/api/oauth2/token` authenticates the client by its secret, checks the code,
//!   the redirect URI and the PKCE verifier, and issues an access token for the visitor with
//!   the one scope `access:servers!user=<owner>`.
//!
//! Clients are registered when a server starts or is adopted after a restart; codes live in
//! memory (a restart mid-login means logging in again). The tokens are API tokens bound to
//! their client ([`TokenBinding::OAuth`]): the visitor's logout ends theirs
//! (`Store::revoke_oauth_tokens`), the server's stop ends every one issued through it
//! (`Store::revoke_client_tokens`).

use std::time::{Duration, Instant};

use dashmap::DashMap;
use gantry_auth::store::{NewToken, TokenBinding};
use gantry_auth::{Action, Scope, Scopes, Secret, UserName, pkce_challenge_s256, safe_next};
use gantry_spawner::ServerKey;
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jiff::{SignedDuration, Timestamp};
use serde_json::json;
use subtle::ConstantTimeEq;

use super::request::{Form, read_form};
use super::response::{self, HubError};
use super::servers::server_url_prefix;
use super::{Caller, Hub};
use crate::errors::ResponseBody;

#[cfg(test)]
mod tests;

/// How long an authorization code may wait for its exchange.
const CODE_LIFETIME: Duration = Duration::from_secs(600);
/// Most codes outstanding at once; past it the oldest go.
const MAX_CODES: usize = 10_000;
/// The note of a server's own API token: for people reading a token list; the hub finds the
/// token by its binding ([`TokenBinding::Server`]).
pub(super) fn server_token_note(key: &ServerKey) -> String {
    format!("server token: {}/{}", key.user, key.server.as_str())
}

/// A server's OAuth client id ([`gantry_spawner::names::oauth_client_id`]).
pub(super) fn client_id(key: &ServerKey) -> String {
    gantry_spawner::names::oauth_client_id(&key.user, &key.server)
}

/// The client id releases before 0.2 gave a server, unescaped: what a server adopted after
/// the upgrade still presents. It may collide; see [`OAuthState::adopt`].
fn legacy_client_id(key: &ServerKey) -> String {
    gantry_spawner::names::legacy_oauth_client_id(&key.user, &key.server)
}

/// The one redirect URI a server's client may use (relative, as JupyterHub registers it).
pub(super) fn redirect_uri(key: &ServerKey) -> String {
    format!("{}/oauth_callback", server_url_prefix(key))
}

#[derive(Debug)]
struct Code {
    client_id: String,
    redirect_uri: String,
    visitor: gantry_auth::store::UserId,
    challenge: Option<String>,
    issued: Instant,
}

/// Registered clients (by id) and outstanding codes.
#[derive(Debug, Default)]
pub(super) struct OAuthState {
    clients: DashMap<String, ServerKey>,
    codes: DashMap<String, Code>,
}

impl OAuthState {
    /// Registers `key`'s server as a client.
    pub(super) fn register(&self, key: &ServerKey) {
        self.clients.insert(client_id(key), key.clone());
    }

    /// Registers a server found running after a restart: under its client id, and under the
    /// unescaped id an older release gave it (what it still presents), unless another server
    /// holds that id. A wrong pick there can only refuse a login: the token exchange checks
    /// the client's secret, the server's own token.
    pub(super) fn adopt(&self, key: &ServerKey) {
        self.register(key);
        let legacy = legacy_client_id(key);
        if legacy != client_id(key) {
            self.clients.entry(legacy).or_insert_with(|| key.clone());
        }
    }

    /// Forgets `key`'s client (both its ids) and its codes.
    pub(super) fn unregister(&self, key: &ServerKey) {
        for id in [client_id(key), legacy_client_id(key)] {
            if self.clients.remove_if(&id, |_, k| k == key).is_some() {
                self.codes.retain(|_, code| code.client_id != id);
            }
        }
    }

    /// The client ids `key`'s server may have issued tokens under.
    pub(super) fn ids_of(key: &ServerKey) -> Vec<String> {
        let mut ids = vec![client_id(key)];
        let legacy = legacy_client_id(key);
        if legacy != ids[0] {
            ids.push(legacy);
        }
        ids
    }

    fn prune(&self) {
        self.codes
            .retain(|_, code| code.issued.elapsed() < CODE_LIFETIME);
        while self.codes.len() >= MAX_CODES {
            let oldest = self
                .codes
                .iter()
                .min_by_key(|c| c.issued)
                .map(|c| c.key().clone());
            match oldest {
                Some(code) => {
                    self.codes.remove(&code);
                }
                None => break,
            }
        }
    }
}

impl Hub {
    /// `GET /hub/api/oauth2/authorize`.
    pub(super) async fn oauth_authorize(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let query = Form::query(request.uri());
        let get = |key: &str| query.get(key).unwrap_or("");
        let client = get("client_id");
        let key = self
            .oauth
            .clients
            .get(client)
            .map(|k| k.value().clone())
            .ok_or_else(|| HubError::BadRequest(format!("unknown OAuth client {client:?}")))?;
        // The redirect URI must be exactly the registered one: never send a code elsewhere.
        if get("redirect_uri") != redirect_uri(&key) {
            return Err(HubError::BadRequest(
                "redirect_uri does not match the client's".into(),
            ));
        }
        if get("response_type") != "code" {
            return Err(HubError::BadRequest(
                "response_type must be \"code\"".into(),
            ));
        }
        let challenge = match (
            query.get("code_challenge"),
            query.get("code_challenge_method"),
        ) {
            (None, _) => None,
            (Some(challenge), Some("S256")) => Some(challenge.to_owned()),
            (Some(_), _) => {
                return Err(HubError::BadRequest(
                    "code_challenge_method must be S256".into(),
                ));
            }
        };
        // A browser without a session logs in first and comes back here.
        let Some(caller @ Caller::Session { .. }) = self.caller(request.headers()).await? else {
            let here = request
                .uri()
                .path_and_query()
                .map_or("/hub/home", |pq| pq.as_str());
            let next: String = url::form_urlencoded::byte_serialize(
                safe_next(here, &self.home).as_str().as_bytes(),
            )
            .collect();
            return Ok(response::redirect(&format!("/hub/login?next={next}")));
        };
        let owner =
            UserName::parse(&key.user, self.config.name_policy).map_err(|_| HubError::NotFound)?;
        if !caller.permits(Action::AccessServer(&owner)) {
            return Err(HubError::Forbidden);
        }
        self.oauth.prune();
        let code = Secret::generate().map_err(|e| HubError::Internal(e.to_string()))?;
        self.oauth.codes.insert(
            code.expose().to_owned(),
            Code {
                client_id: client.to_owned(),
                redirect_uri: redirect_uri(&key),
                visitor: caller.user().id,
                challenge,
                issued: Instant::now(),
            },
        );
        let mut target = url::form_urlencoded::Serializer::new(String::new());
        target.append_pair("code", code.expose());
        if let Some(state) = query.get("state") {
            target.append_pair("state", state);
        }
        Ok(response::redirect(&format!(
            "{}?{}",
            redirect_uri(&key),
            target.finish()
        )))
    }

    /// `POST /hub/api/oauth2/token`.
    pub(super) async fn oauth_token(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let form = read_form(&parts.headers, body).await?;
        let get = |key: &str| form.get(key).unwrap_or("");
        let refuse = |what: &str| Ok(oauth_error(StatusCode::BAD_REQUEST, "invalid_grant", what));
        if get("grant_type") != "authorization_code" {
            return Ok(oauth_error(
                StatusCode::BAD_REQUEST,
                "unsupported_grant_type",
                "only authorization_code",
            ));
        }
        let client = get("client_id");
        let Some(key) = self.oauth.clients.get(client).map(|k| k.value().clone()) else {
            return Ok(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "unknown client",
            ));
        };
        // The client's secret is its server's API token, from the form or the header.
        let secret = match form.get("client_secret") {
            Some(secret) => Some(secret.to_owned()),
            None => super::request::authorization_token(&parts.headers)?.map(str::to_owned),
        };
        let now = Timestamp::now();
        let authenticated = match secret {
            Some(secret) => self.store.token(&secret, now).await?.is_some_and(|auth| {
                auth.user.name.as_str() == key.user
                    && auth.token.binding == TokenBinding::Server(key.server.as_str().to_owned())
            }),
            None => false,
        };
        if !authenticated {
            return Ok(oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "wrong client secret",
            ));
        }
        let Some((_, code)) = self.oauth.codes.remove(get("code")) else {
            return refuse("unknown or used code");
        };
        if code.client_id != client || code.issued.elapsed() >= CODE_LIFETIME {
            return refuse("the code is not this client's, or expired");
        }
        if get("redirect_uri") != code.redirect_uri {
            return refuse("redirect_uri does not match the authorization request");
        }
        if let Some(challenge) = &code.challenge {
            let verifier = get("code_verifier");
            let computed = pkce_challenge_s256(verifier);
            if verifier.is_empty() || !bool::from(computed.as_bytes().ct_eq(challenge.as_bytes())) {
                return refuse("the PKCE code_verifier does not match");
            }
        }
        let owner =
            UserName::parse(&key.user, self.config.name_policy).map_err(|_| HubError::NotFound)?;
        // The token carries no more than the visitor holds now: rights can change (an admin
        // flag removed, the account gone) between the authorization and the exchange.
        let scopes = Scopes::new([Scope::AccessServers(owner.clone())]);
        let visitor = self.store.user(code.visitor).await?;
        let allowed = visitor.is_some_and(|visitor| {
            scopes.grantable_by(gantry_auth::Owner {
                name: &visitor.name,
                admin: visitor.admin,
            })
        });
        if !allowed {
            return refuse("the visitor may no longer use this server");
        }
        let lifetime = SignedDuration::try_from(self.config.session_lifetime)
            .map_err(|e| HubError::Internal(e.to_string()))?;
        let new = NewToken {
            scopes,
            note: format!("oauth: {client}"),
            binding: TokenBinding::OAuth(client.to_owned()),
            expires: Some(
                now.checked_add(lifetime)
                    .map_err(|e| HubError::Internal(e.to_string()))?,
            ),
        };
        let (secret, _) = self.store.create_token(code.visitor, &new, now).await?;
        Ok(response::json(
            StatusCode::OK,
            &json!({
                "access_token": secret.expose(),
                "token_type": "Bearer",
                "expires_in": self.config.session_lifetime.as_secs(),
                "scope": format!("access:servers!user={}", owner.as_str()),
            }),
        ))
    }
}

/// An OAuth 2 error response (RFC 6749 §5.2).
fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response<ResponseBody> {
    tracing::info!(%error, %description, "OAuth token request refused");
    response::json(
        status,
        &json!({"error": error, "error_description": description}),
    )
}
