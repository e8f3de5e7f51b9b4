//! The hub's REST API under `/hub/api`: who am I, users and groups, API tokens, servers,
//! ending a user's credentials.
//!
//! Shapes follow JupyterHub's REST API (`GET /hub/api/user`, `/users/{name}/tokens`), so its
//! clients work unchanged. Callers authenticate with `Authorization: token …` (or `Bearer`),
//! or with the session cookie plus the CSRF rules for anything that changes state. A missing
//! or invalid credential is 403, as JupyterHub answers.

use gantry_auth::store::{ApiToken, NewToken, NewUser, TokenBinding, TokenId, User, UserId};
use gantry_auth::{Action, Owner, Scope, Scopes, StoreError, UserName};
use http::{Method, Request, Response, StatusCode};
use hyper::body::Incoming;
use jiff::{SignedDuration, Timestamp};
use serde::Deserialize;
use serde_json::{Value, json};

use gantry_spawner::names::url_path_segment;
use gantry_spawner::{Identity, ServerKey, ServerName};

use std::collections::{BTreeMap, HashMap};

use super::oauth::{OAuthState, client_id, redirect_uri, server_token_note};
use super::request::read_json;
use super::response::{self, HubError};
use super::servers::{Claimed, Phase, ServerError, Servers, StartOutcome, server_url_prefix};
use super::spawn_request::SpawnRequest;
use super::{Caller, Hub};
use crate::errors::ResponseBody;

/// The body of `POST /hub/api/users/{name}/tokens`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct TokenRequest {
    /// A note on what the token is for.
    #[serde(default)]
    note: Option<String>,
    /// Seconds until it expires; absent or null for never.
    #[serde(default)]
    expires_in: Option<u64>,
    /// Scopes; absent for `self`.
    #[serde(default)]
    scopes: Option<Vec<String>>,
    /// JupyterHub's roles: only `[]` or `["token"]` (the default role, which is `self` here)
    /// are understood.
    #[serde(default)]
    roles: Option<Vec<String>>,
}

/// Longest note kept on a token, in characters.
const MAX_NOTE_CHARS: usize = 1000;

impl Hub {
    pub(super) async fn api(
        &self,
        request: Request<Incoming>,
        rest: &[&str],
    ) -> Result<Response<ResponseBody>, HubError> {
        let method = request.method().clone();
        match (&method, rest) {
            (&Method::GET, []) => Ok(response::json(
                StatusCode::OK,
                &json!({"version": super::JUPYTERHUB_API_VERSION}),
            )),
            (&Method::GET, ["user"]) => self.whoami(&request).await,
            (&Method::GET, ["info"]) => self.info(&request).await,
            (&Method::GET, ["oauth2", "authorize"]) => self.oauth_authorize(&request).await,
            (&Method::POST, ["oauth2", "token"]) => self.oauth_token(request).await,
            (&Method::POST, ["users", name, "activity"]) => self.activity(request, name).await,
            (&Method::GET, ["users", name, "tokens"]) => self.list_tokens(&request, name).await,
            (&Method::POST, ["users", name, "tokens"]) => self.create_token(request, name).await,
            (&Method::GET, ["users", name, "tokens", id]) => {
                self.get_token(&request, name, id).await
            }
            (&Method::DELETE, ["users", name, "tokens", id]) => {
                self.delete_token(request, name, id).await
            }
            (&Method::POST, ["users", name, "logout"]) => {
                self.revoke_everything(request, name).await
            }
            (&Method::GET, ["users"]) => self.list_users(&request).await,
            (&Method::POST, ["users"]) => self.create_users(request).await,
            (&Method::GET, ["users", name]) => self.get_user(&request, name).await,
            (&Method::POST, ["users", name]) => self.create_one_user(request, name).await,
            (&Method::PATCH, ["users", name]) => self.patch_user(request, name).await,
            (&Method::DELETE, ["users", name]) => self.delete_user(request, name).await,
            (&Method::GET, ["users", name, "identities"]) => {
                self.list_identities(&request, name).await
            }
            (&Method::POST, ["users", name, "identities"]) => {
                self.link_identity(request, name).await
            }
            (&Method::DELETE, ["users", name, "identities"]) => {
                self.unlink_identity(request, name).await
            }
            (&Method::GET, ["groups"]) => self.list_groups(&request).await,
            (&Method::GET, ["groups", group]) => self.get_group(&request, group).await,
            (&Method::POST, ["groups", group, "users"]) => {
                self.change_group(request, group, true).await
            }
            (&Method::DELETE, ["groups", group, "users"]) => {
                self.change_group(request, group, false).await
            }
            (&Method::POST, ["users", name, "server"]) => {
                self.start_server(request, name, "").await
            }
            (&Method::POST, ["users", name, "servers", server]) => {
                self.start_server(request, name, server).await
            }
            (&Method::DELETE, ["users", name, "server"]) => {
                self.stop_server(request, name, "").await
            }
            (&Method::DELETE, ["users", name, "servers", server]) => {
                self.stop_server(request, name, server).await
            }
            (&Method::GET, ["users", name, "server", "progress"]) => {
                self.server_progress(&request, name, "").await
            }
            (&Method::GET, ["users", name, "servers", server, "progress"]) => {
                self.server_progress(&request, name, server).await
            }
            _ => Err(HubError::NotFound),
        }
    }

    /// The caller, or 403.
    async fn authenticated(&self, headers: &http::HeaderMap) -> Result<Caller, HubError> {
        self.caller(headers).await?.ok_or(HubError::Unauthenticated)
    }

    /// The caller, after the CSRF check for state-changing cookie requests (the token travels
    /// in a header for API calls).
    async fn authenticated_for_change(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Caller, HubError> {
        let caller = self.authenticated(&parts.headers).await?;
        self.check_csrf(parts, None, &caller)?;
        Ok(caller)
    }

    /// The user `name` from a path segment (percent-decoded), if the caller may act as them. Someone who may not act
    /// as them gets 404 whether they exist or not, so the API does not reveal who exists.
    pub(super) async fn target_user(&self, caller: &Caller, name: &str) -> Result<User, HubError> {
        // Path segments arrive raw: a name outside ASCII comes percent-encoded.
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .map_err(|_| HubError::NotFound)?;
        let name =
            UserName::parse(&name, self.config.name_policy).map_err(|_| HubError::NotFound)?;
        if !caller.permits(Action::ActAs(&name)) {
            return Err(if caller.permits(Action::ActAs(&caller.user().name)) {
                HubError::NotFound
            } else {
                HubError::Forbidden
            });
        }
        self.store
            .user_by_name(&name)
            .await?
            .ok_or(HubError::NotFound)
    }

    async fn whoami(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let caller = self.authenticated(request.headers()).await?;
        let user = caller.user();
        let owner = Owner {
            name: &user.name,
            admin: user.admin,
        };
        // The scopes the caller holds now: a token's, capped by what its owner may grant.
        let scopes: Vec<String> = caller
            .scopes()
            .iter()
            .filter(|scope| scope.grantable_by(owner))
            .map(ToString::to_string)
            .collect();
        let mut model = user_model(user, self.last_activity_of(user));
        model["groups"] = json!(self.store.groups_of(user.id).await?);
        model["scopes"] = json!(scopes);
        if let Caller::Token(auth) = &caller {
            model["token_id"] = json!(token_id(auth.token.id));
        }
        Ok(response::json(StatusCode::OK, &model))
    }

    async fn list_tokens(
        &self,
        request: &Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let caller = self.authenticated(request.headers()).await?;
        let user = self.target_user(&caller, name).await?;
        let tokens = self.store.tokens_of(user.id, Timestamp::now()).await?;
        let models: Vec<Value> = tokens.iter().map(|t| token_model(t, &user)).collect();
        Ok(response::json(
            StatusCode::OK,
            &json!({ "api_tokens": models }),
        ))
    }

    async fn get_token(
        &self,
        request: &Request<Incoming>,
        name: &str,
        id: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let caller = self.authenticated(request.headers()).await?;
        let user = self.target_user(&caller, name).await?;
        let id = parse_token_id(id)?;
        let tokens = self.store.tokens_of(user.id, Timestamp::now()).await?;
        let token = tokens
            .iter()
            .find(|t| t.id == id)
            .ok_or(HubError::NotFound)?;
        Ok(response::json(StatusCode::OK, &token_model(token, &user)))
    }

    /// Creates an API token for `user` as `caller` asks: `scopes_text` (space-separated)
    /// must parse, be grantable by the owner, and stay within what a token caller holds; the
    /// note is capped; `expires_in` seconds (0 or none: never). Shared by the API and the
    /// token page.
    pub(super) async fn mint_token(
        &self,
        caller: &Caller,
        user: &User,
        scopes_text: &str,
        note: String,
        expires_in: Option<u64>,
    ) -> Result<(gantry_auth::Secret, ApiToken), HubError> {
        let scopes = Scopes::parse(scopes_text, self.config.name_policy)
            .map_err(|error| HubError::BadRequest(format!("invalid scopes: {error}")))?;
        if scopes.is_empty() {
            return Err(HubError::BadRequest(
                "a token needs at least one scope".into(),
            ));
        }
        let owner = Owner {
            name: &user.name,
            admin: user.admin,
        };
        if !scopes.grantable_by(owner) {
            return Err(HubError::Forbidden);
        }
        // The requesting credential mints only what it holds itself (JupyterHub's subset
        // rule): a token with `self` cannot make one that reaches another user's servers,
        // whoever its owner is.
        let requester = caller.user();
        let holder = Owner {
            name: &requester.name,
            admin: requester.admin,
        };
        if let Some(missing) = caller.scopes().first_not_held(&scopes, holder) {
            return Err(HubError::ScopeNotHeld(missing.to_string()));
        }
        if note.chars().count() > MAX_NOTE_CHARS {
            return Err(HubError::BadRequest(format!(
                "the note is longer than {MAX_NOTE_CHARS} characters"
            )));
        }
        let now = Timestamp::now();
        let expires = match expires_in {
            None | Some(0) => None,
            Some(secs) => {
                let secs = i64::try_from(secs)
                    .map_err(|_| HubError::BadRequest("expires_in is too large".into()))?;
                Some(
                    now.checked_add(SignedDuration::from_secs(secs))
                        .map_err(|_| HubError::BadRequest("expires_in is too large".into()))?,
                )
            }
        };
        let new = NewToken {
            scopes,
            note,
            expires,
            binding: TokenBinding::Api,
        };
        Ok(self.store.create_token(user.id, &new, now).await?)
    }

    async fn create_token(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.authenticated_for_change(&parts).await?;
        let user = self.target_user(&caller, name).await?;
        let body: TokenRequest = read_json(&parts.headers, body).await?;
        if let Some(roles) = &body.roles
            && roles.iter().any(|r| r != "token")
        {
            return Err(HubError::BadRequest(
                "roles other than \"token\" are not supported; ask for scopes instead".into(),
            ));
        }
        let scopes_text = body
            .scopes
            .unwrap_or_else(|| vec!["self".to_owned()])
            .join(" ");
        let (secret, token) = self
            .mint_token(
                &caller,
                &user,
                &scopes_text,
                body.note.unwrap_or_default(),
                body.expires_in,
            )
            .await?;
        tracing::info!(user = %user.name.as_str(), token = %token_id(token.id), "API token created");
        let mut model = token_model(&token, &user);
        model["token"] = json!(secret.expose());
        Ok(response::json(StatusCode::CREATED, &model))
    }

    async fn delete_token(
        &self,
        request: Request<Incoming>,
        name: &str,
        id: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, _body) = request.into_parts();
        let caller = self.authenticated_for_change(&parts).await?;
        let user = self.target_user(&caller, name).await?;
        let id = parse_token_id(id)?;
        let revoked = self.store.revoke_token(user.id, id).await?;
        self.credentials_changed(user.id).await;
        if !revoked {
            return Err(HubError::NotFound);
        }
        tracing::info!(user = %user.name.as_str(), token = %token_id(id), "API token revoked");
        let mut response = Response::new(super::body(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// `POST /hub/api/users/{name}/logout` (gantry's own): ends every session and API token
    /// of the user and closes their open WebSockets. For admins revoking an account, or a
    /// user who lost a device.
    async fn revoke_everything(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, _body) = request.into_parts();
        let caller = self.authenticated_for_change(&parts).await?;
        let user = self.target_user(&caller, name).await?;
        let revoked = self.store.revoke_user_credentials(user.id).await?;
        self.credentials_changed(user.id).await;
        tracing::info!(
            user = %user.name.as_str(),
            by = %caller.user().name.as_str(),
            sessions = revoked.sessions,
            tokens = revoked.tokens,
            "all credentials revoked"
        );
        Ok(response::json(
            StatusCode::OK,
            &json!({"sessions": revoked.sessions, "tokens": revoked.tokens}),
        ))
    }
}

impl Hub {
    pub(super) fn servers(&self) -> Result<&std::sync::Arc<Servers>, HubError> {
        self.servers.as_ref().ok_or(HubError::BadRequest(
            "this gantry has no backend to start servers on: configure [docker] and [profiles.<id>]".into(),
        ))
    }

    /// The identity the spawner gets for `user`: name, groups, UID/GID.
    pub(super) async fn identity_of(&self, user: &User) -> Result<Identity, HubError> {
        let ids = self.store.unix_ids(user.id).await?;
        let mut identity = Identity::new(user.name.as_str());
        identity.uid = ids.uid;
        identity.gid = ids.gid;
        identity.groups = self.store.groups_of(user.id).await?;
        Ok(identity)
    }

    /// `GET /hub/api/users` (admins): JupyterHub's list, filtered by `state` (`ready`,
    /// `active`, `inactive`) and `name_filter` (a prefix), paged by `offset` and `limit`; with
    /// `Accept: application/jupyterhub-pagination+json` the reply is `{items, _pagination}`.
    async fn list_users(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        const MAX_LIMIT: usize = 200;
        let caller = self.authenticated(request.headers()).await?;
        if !caller.permits(Action::Admin) {
            return Err(HubError::Forbidden);
        }
        let query = super::request::Form::query(request.uri());
        let number = |key: &str, default: usize| -> Result<usize, HubError> {
            query.get(key).map_or(Ok(default), |v| {
                v.parse()
                    .map_err(|_| HubError::BadRequest(format!("{key} must be a whole number")))
            })
        };
        let offset = number("offset", 0)?;
        let limit = number("limit", MAX_LIMIT)?.clamp(1, MAX_LIMIT);
        let state = query.get("state").unwrap_or("");
        if !matches!(state, "" | "ready" | "active" | "inactive") {
            return Err(HubError::BadRequest(
                "state must be ready, active or inactive".into(),
            ));
        }
        let name_filter = query.get("name_filter").unwrap_or("");
        let groups = self.groups_by_user().await?;
        let mut models = Vec::new();
        for user in self.store.list_users().await? {
            if !user.name.as_str().starts_with(name_filter) {
                continue;
            }
            let mut model = self.user_with_servers(&user);
            model["groups"] = json!(groups.get(&user.name).cloned().unwrap_or_default());
            let servers = model["servers"].as_object().cloned().unwrap_or_default();
            let ready = servers.values().any(|s| s["ready"] == true);
            let pending = servers.values().any(|s| !s["pending"].is_null());
            let keep = match state {
                "ready" => ready,
                "active" => ready || pending,
                "inactive" => !ready && !pending,
                _ => true,
            };
            if keep {
                models.push(model);
            }
        }
        let total = models.len();
        let page: Vec<Value> = models.into_iter().skip(offset).take(limit).collect();
        let paginated = request
            .headers()
            .get(http::header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|a| a.contains("application/jupyterhub-pagination+json"));
        if !paginated {
            return Ok(response::json(StatusCode::OK, &Value::Array(page)));
        }
        let next = (offset + limit < total).then(|| {
            let mut params = url::form_urlencoded::Serializer::new(String::new());
            if !state.is_empty() {
                params.append_pair("state", state);
            }
            if !name_filter.is_empty() {
                params.append_pair("name_filter", name_filter);
            }
            params.append_pair("offset", &(offset + limit).to_string());
            params.append_pair("limit", &limit.to_string());
            let host = request
                .headers()
                .get(http::header::HOST)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("localhost");
            json!({
                "offset": offset + limit,
                "limit": limit,
                // The URL as the client reached us: the public origin when it asked by that
                // host, else plain http (the servers' internal listener, loopback clients).
                "url": format!("{}/hub/api/users?{}", self.origin_for_host(host), params.finish()),
            })
        });
        Ok(response::json(
            StatusCode::OK,
            &json!({
                "items": page,
                "_pagination": {"offset": offset, "limit": limit, "total": total, "next": next},
            }),
        ))
    }

    /// `GET /hub/api/info` (admins): versions and what gantry runs with.
    async fn info(&self, request: &Request<Incoming>) -> Result<Response<ResponseBody>, HubError> {
        let caller = self.authenticated(request.headers()).await?;
        if !caller.permits(Action::Admin) {
            return Err(HubError::Forbidden);
        }
        let mut authenticators = Vec::new();
        if self.config.local.enabled {
            authenticators.push(json!({"class": "gantry.local", "signup": format!("{:?}", self.config.local.signup).to_lowercase()}));
        }
        for provider in &self.providers {
            authenticators.push(json!({"class": "gantry.oidc", "id": provider.id, "issuer": provider.provider.issuer()}));
        }
        Ok(response::json(
            StatusCode::OK,
            &json!({
                "version": super::JUPYTERHUB_API_VERSION,
                "gantry_version": env!("CARGO_PKG_VERSION"),
                "spawner": {"class": self.servers.as_ref().map(|s| format!("gantry.{}", s.backend()))},
                "authenticator": authenticators,
            }),
        ))
    }

    async fn get_user(
        &self,
        request: &Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let caller = self.authenticated(request.headers()).await?;
        let user = self.target_user(&caller, name).await?;
        Ok(response::json(
            StatusCode::OK,
            &self.full_user_model(&user).await?,
        ))
    }

    /// The user model with servers and groups.
    pub(super) async fn full_user_model(&self, user: &User) -> Result<Value, HubError> {
        let mut model = self.user_with_servers(user);
        model["groups"] = json!(self.store.groups_of(user.id).await?);
        Ok(model)
    }

    /// The user model with the `server` and `servers` fields filled in.
    pub(super) fn user_with_servers(&self, user: &User) -> Value {
        let mut model = user_model(user, self.last_activity_of(user));
        let Some(servers) = &self.servers else {
            return model;
        };
        let mut map = serde_json::Map::new();
        for (key, phase, profile, started) in servers.of_user(user.name.as_str()) {
            let url = format!("{}/", server_url_prefix(&key));
            let (ready, pending) = match &phase {
                Phase::Ready { .. } => (true, Value::Null),
                Phase::Starting => (false, json!("spawn")),
                Phase::Stopping => (false, json!("stop")),
                Phase::Failed { .. } => (false, Value::Null),
            };
            if key.server.is_default() && ready {
                model["server"] = json!(url);
            }
            if key.server.is_default() && !pending.is_null() {
                model["pending"] = pending.clone();
            }
            let segment = url_path_segment(user.name.as_str());
            let progress_url = if key.server.is_default() {
                format!("/hub/api/users/{segment}/server/progress")
            } else {
                format!(
                    "/hub/api/users/{segment}/servers/{}/progress",
                    key.server.as_str()
                )
            };
            let mut server = json!({
                "name": key.server.as_str(),
                "ready": ready,
                "pending": pending,
                "stopped": false,
                "url": url,
                "progress_url": progress_url,
                "started": iso(started),
                "last_activity": iso(servers.last_activity(&key).unwrap_or(started)),
                "user_options": {"profile": profile.as_str()},
                "state": {},
            });
            if let Phase::Failed { message } = &phase {
                server["failed"] = json!(message);
            }
            map.insert(key.server.as_str().to_owned(), server);
        }
        model["servers"] = Value::Object(map);
        model
    }

    async fn start_server(
        &self,
        request: Request<Incoming>,
        name: &str,
        server: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.authenticated_for_change(&parts).await?;
        let user = self.target_user(&caller, name).await?;
        let options: Value = read_json(&parts.headers, body).await?;
        let profile = SpawnRequest::from_json(&options)
            .map_err(|error| HubError::BadRequest(error.to_string()))?
            .profile;
        let identity = self.identity_of(&user).await?;
        let server = ServerName::new(server).map_err(|e| HubError::BadRequest(e.to_string()))?;
        match self
            .start_for(&user, identity, server, profile.as_deref())
            .await?
            .map_err(server_error)?
        {
            StartOutcome::AlreadyRunning => Err(HubError::BadRequest(format!(
                "{}'s server is already running",
                user.name.as_str()
            ))),
            StartOutcome::Pending => Ok(response::json(StatusCode::ACCEPTED, &json!({}))),
        }
    }

    async fn stop_server(
        &self,
        request: Request<Incoming>,
        name: &str,
        server: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, _body) = request.into_parts();
        let caller = self.authenticated_for_change(&parts).await?;
        let user = self.target_user(&caller, name).await?;
        let server = ServerName::new(server).map_err(|_| HubError::NotFound)?;
        let key = ServerKey {
            user: user.name.as_str().to_owned(),
            server,
        };
        self.stop_for(&user, &key).await?;
        let mut response = Response::new(super::body(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    async fn server_progress(
        &self,
        request: &Request<Incoming>,
        name: &str,
        server: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let caller = self.authenticated(request.headers()).await?;
        let user = self.target_user(&caller, name).await?;
        let server = ServerName::new(server).map_err(|_| HubError::NotFound)?;
        let key = ServerKey {
            user: user.name.as_str().to_owned(),
            server,
        };
        let body = self.servers()?.progress(&key).ok_or(HubError::NotFound)?;
        let mut response = Response::new(body);
        let headers = response.headers_mut();
        headers.insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/event-stream"),
        );
        headers.insert(
            http::header::CACHE_CONTROL,
            http::HeaderValue::from_static("no-cache"),
        );
        headers.insert("x-accel-buffering", http::HeaderValue::from_static("no"));
        Ok(response)
    }
}

impl Hub {
    /// Starts `user`'s server: claims it ([`Servers::claim`]), so racing starts find this one;
    /// mints its API token (its OAuth client secret too), replacing any old one; builds the
    /// JupyterHub environment stock images expect; then launches the start. A start that finds
    /// the server running or starting mints nothing, so the running server's token stays valid.
    pub(super) async fn start_for(
        &self,
        user: &User,
        identity: Identity,
        server: ServerName,
        profile: Option<&str>,
    ) -> Result<Result<StartOutcome, ServerError>, HubError> {
        let servers = self.servers()?;
        let claim = match servers.claim(identity, server, profile) {
            Ok(Claimed::Mine(claim)) => claim,
            Ok(Claimed::Found(outcome)) => return Ok(Ok(outcome)),
            Err(error) => return Ok(Err(error)),
        };
        let key = claim.key().clone();
        let new = NewToken {
            scopes: Scopes::new([Scope::AccessServers(user.name.clone())]),
            note: server_token_note(&key),
            expires: None,
            binding: TokenBinding::Server(key.server.as_str().to_owned()),
        };
        // Replaces the server's previous token in one statement; a failure drops the claim,
        // which marks the start failed.
        let (token, _) = self
            .store
            .create_token(user.id, &new, Timestamp::now())
            .await?;
        self.credentials_changed(user.id).await;
        let env = self.server_env(&key, token.expose());
        self.oauth.register(&key);
        match claim.launch(env) {
            Ok(()) => Ok(Ok(StartOutcome::Pending)),
            Err(error) => {
                // Stopped before it began: the stop may have revoked before the mint.
                self.revoke_server_credentials(user.id, &key).await?;
                Ok(Err(error))
            }
        }
    }

    /// Stops `user`'s server and ends its API token, its OAuth client and the access tokens
    /// issued through it.
    pub(super) async fn stop_for(&self, user: &User, key: &ServerKey) -> Result<(), HubError> {
        self.servers()?.stop(key).await.map_err(server_error)?;
        self.revoke_server_credentials(user.id, key).await
    }

    /// Ends the credentials of `key`'s server (of user `user`): its API token, its OAuth
    /// client and the access tokens issued through it; no other server's.
    pub(super) async fn revoke_server_credentials(
        &self,
        user: UserId,
        key: &ServerKey,
    ) -> Result<(), HubError> {
        self.oauth.unregister(key);
        self.store
            .revoke_server_token(user, key.server.as_str())
            .await?;
        let mut changed = vec![user];
        for client in OAuthState::ids_of(key) {
            // Their holders are the server's visitors, often other users.
            changed.extend(self.store.revoke_client_tokens(&client).await?);
        }
        changed.sort_unstable();
        changed.dedup();
        for user in changed {
            self.credentials_changed(user).await;
        }
        Ok(())
    }

    /// The environment of JupyterHub's spawner, for `jupyterhub-singleuser`.
    fn server_env(&self, key: &ServerKey, token: &str) -> BTreeMap<String, String> {
        let prefix = format!("{}/", server_url_prefix(key));
        let api = self.servers_api_url.clone().unwrap_or_default();
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(k.to_owned(), v);
        };
        set("JUPYTERHUB_API_TOKEN", token.to_owned());
        set("JPY_API_TOKEN", token.to_owned());
        set("JUPYTERHUB_CLIENT_ID", client_id(key));
        set("JUPYTERHUB_API_URL", api.clone());
        set(
            "JUPYTERHUB_ACTIVITY_URL",
            format!("{api}/users/{}/activity", url_path_segment(&key.user)),
        );
        set(
            "JUPYTERHUB_SERVICE_URL",
            format!("http://0.0.0.0:8888{prefix}"),
        );
        set("JUPYTERHUB_SERVICE_PREFIX", prefix.clone());
        set("JUPYTERHUB_OAUTH_CALLBACK_URL", redirect_uri(key));
        set(
            "JUPYTERHUB_OAUTH_ACCESS_SCOPES",
            json!([
                format!("access:servers!server={}/{}", key.user, key.server.as_str()),
                format!("access:servers!user={}", key.user)
            ])
            .to_string(),
        );
        set("JUPYTERHUB_OAUTH_CLIENT_ALLOWED_SCOPES", "[]".to_owned());
        set("JUPYTERHUB_USER", key.user.clone());
        set("JUPYTERHUB_SERVER_NAME", key.server.as_str().to_owned());
        set("JUPYTERHUB_BASE_URL", "/".to_owned());
        set(
            "JUPYTERHUB_PUBLIC_URL",
            format!("{}{prefix}", self.config.public_origin.as_str()),
        );
        set(
            "JUPYTERHUB_PUBLIC_HUB_URL",
            format!("{}/hub/", self.config.public_origin.as_str()),
        );
        env
    }

    /// `POST /hub/api/users/{name}/activity`: a server reports when it was last used, as
    /// jupyterhub-singleuser does: `{"last_activity": T, "servers": {NAME: {"last_activity":
    /// T}}}`, each part optional. The user's activity becomes the latest time given (never
    /// earlier than it was); each named server's, its own. Nothing changes unless the whole
    /// report is valid.
    async fn activity(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.authenticated_for_change(&parts).await?;
        let owner =
            UserName::parse(name, self.config.name_policy).map_err(|_| HubError::NotFound)?;
        if !(caller.permits(Action::AccessServer(&owner)) || caller.permits(Action::ActAs(&owner)))
        {
            return Err(HubError::NotFound);
        }
        let report: ActivityReport = read_json(&parts.headers, body).await?;
        let horizon = Timestamp::now() + SignedDuration::from_mins(59);
        let parse = |text: &str| -> Result<Timestamp, HubError> {
            let at: Timestamp = text.parse().map_err(|_| {
                HubError::BadRequest(format!("last_activity {text:?} is not an ISO 8601 time"))
            })?;
            if at > horizon {
                return Err(HubError::BadRequest(
                    "last_activity is in the future".into(),
                ));
            }
            Ok(at)
        };
        let mut latest = report.last_activity.as_deref().map(parse).transpose()?;
        let mut reported = Vec::new();
        for (server, activity) in &report.servers {
            let Some(text) = &activity.last_activity else {
                continue;
            };
            let at = parse(text)?;
            let server =
                ServerName::new(server).map_err(|e| HubError::BadRequest(e.to_string()))?;
            let key = ServerKey {
                user: owner.as_str().to_owned(),
                server,
            };
            latest = latest.max(Some(at));
            reported.push((key, at));
        }
        if !reported.is_empty() {
            let servers = self.servers()?;
            if let Some((key, _)) = reported.iter().find(|(key, _)| !servers.contains(key)) {
                return Err(HubError::BadRequest(format!(
                    "no server {:?} of {}",
                    key.server.as_str(),
                    owner.as_str()
                )));
            }
            for (key, at) in &reported {
                servers.record_activity(key, *at);
            }
        }
        if let Some(at) = latest {
            let user = self
                .store
                .user_by_name(&owner)
                .await?
                .ok_or(HubError::NotFound)?;
            self.activity.note(user.id, at);
        }
        Ok(response::json(StatusCode::OK, &json!({})))
    }
}

/// Most users one request may name.
const MAX_USERS_PER_REQUEST: usize = 1000;

/// Longest group name, in bytes.
const MAX_GROUP_BYTES: usize = 255;

/// The body of `POST /hub/api/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUsers {
    /// The names to create.
    usernames: Vec<String>,
    /// Whether they are admins.
    #[serde(default)]
    admin: bool,
}

/// The body of `POST /hub/api/users/{name}`, which may be empty.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateUser {
    /// Whether the user is an admin.
    #[serde(default)]
    admin: bool,
}

/// The body of `PATCH /hub/api/users/{name}`: what to change.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchUser {
    /// A new name.
    #[serde(default)]
    name: Option<String>,
    /// Grant or take away admin rights.
    #[serde(default)]
    admin: Option<bool>,
}

/// The body of `POST|DELETE /hub/api/groups/{name}/users`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupUsers {
    /// The members to add or remove.
    users: Vec<String>,
}

/// Managing users and groups (admins): JupyterHub's `POST|PATCH|DELETE /users…` and
/// `/groups…`. The pieces the admin page shares are `pub(super)`.
impl Hub {
    /// The caller of a state-changing admin request: authenticated, past the CSRF check, and
    /// an admin (403 otherwise).
    pub(super) async fn admin_for_change(
        &self,
        parts: &http::request::Parts,
    ) -> Result<Caller, HubError> {
        let caller = self.authenticated_for_change(parts).await?;
        if !caller.permits(Action::Admin) {
            return Err(HubError::Forbidden);
        }
        Ok(caller)
    }

    /// An admin caller for a read.
    pub(super) async fn admin_for_read(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<Caller, HubError> {
        let caller = self.authenticated(headers).await?;
        if !caller.permits(Action::Admin) {
            return Err(HubError::Forbidden);
        }
        Ok(caller)
    }

    /// A user name for a new account (or a new name), or 400 naming it and the rule it breaks.
    pub(super) fn new_user_name(&self, raw: &str) -> Result<UserName, HubError> {
        UserName::parse(raw, self.config.name_policy)
            .map_err(|error| HubError::BadRequest(format!("invalid user name {raw:?}: {error}")))
    }

    /// The stored user named by a path segment (percent-decoded, as a browser sends a name
    /// outside ASCII); 404 when the name is not valid or unknown.
    pub(super) async fn existing_user(&self, raw: &str) -> Result<User, HubError> {
        let raw = percent_encoding::percent_decode_str(raw)
            .decode_utf8()
            .map_err(|_| HubError::NotFound)?;
        let name =
            UserName::parse(&raw, self.config.name_policy).map_err(|_| HubError::NotFound)?;
        self.store
            .user_by_name(&name)
            .await?
            .ok_or(HubError::NotFound)
    }

    /// Creates the users in `names` that do not exist yet (approved, without a password, as
    /// JupyterHub does: they sign in through OpenID Connect). Returns those created; empty
    /// when every one existed.
    pub(super) async fn create_users_named(
        &self,
        names: &[UserName],
        admin: bool,
        by: &User,
    ) -> Result<Vec<User>, HubError> {
        let now = Timestamp::now();
        let mut created = Vec::new();
        for name in names {
            let new = NewUser {
                name: name.clone(),
                password_hash: None,
                admin,
                approved: true,
            };
            match self.store.create_user(&new, now).await {
                Ok(user) => {
                    tracing::info!(user = %user.name.as_str(), admin, by = %by.name.as_str(), "user created");
                    created.push(user);
                }
                Err(StoreError::UserExists { .. }) => {}
                Err(other) => return Err(other.into()),
            }
        }
        Ok(created)
    }

    /// Refuses (400) while `user` has a server that runs, starts or stops, since servers,
    /// routes and containers are keyed by the name; forgets their failed starts.
    async fn ensure_no_servers(&self, user: &User, doing: &str) -> Result<(), HubError> {
        let Some(servers) = &self.servers else {
            return Ok(());
        };
        let mut active = Vec::new();
        let mut failed = Vec::new();
        for (key, phase, ..) in servers.of_user(user.name.as_str()) {
            if matches!(phase, Phase::Failed { .. }) {
                failed.push(key);
            } else if key.server.is_default() {
                active.push("the default server".to_owned());
            } else {
                active.push(format!("server {:?}", key.server.as_str()));
            }
        }
        if !active.is_empty() {
            return Err(HubError::BadRequest(format!(
                "cannot {doing} {}: {} still running or starting; stop their servers first",
                user.name.as_str(),
                active.join(", ")
            )));
        }
        for key in failed {
            self.stop_for(user, &key).await?;
        }
        Ok(())
    }

    /// Deletes `user` for the admin `by`: never `by` themself, never while a server of the
    /// user runs. Their sessions and tokens end, their open connections close, and the row
    /// goes with their groups and UNIX ids.
    pub(super) async fn delete_user_by(&self, by: &User, user: &User) -> Result<(), HubError> {
        if user.id == by.id {
            return Err(HubError::BadRequest(
                "you cannot delete your own account: ask another admin".into(),
            ));
        }
        self.ensure_no_servers(user, "delete").await?;
        let revoked = self.store.revoke_user_credentials(user.id).await?;
        let deleted = self.store.delete_user(user.id).await?;
        self.activity.forget(user.id);
        self.credentials_changed(user.id).await;
        if !deleted {
            return Err(HubError::NotFound);
        }
        tracing::info!(
            user = %user.name.as_str(),
            by = %by.name.as_str(),
            sessions = revoked.sessions,
            tokens = revoked.tokens,
            "user deleted"
        );
        Ok(())
    }

    /// Grants or takes away `user`'s admin rights for the admin `by`, who may not demote
    /// themself (so a hub always keeps the admin who was acting).
    pub(super) async fn set_admin_by(
        &self,
        by: &User,
        user: &User,
        admin: bool,
    ) -> Result<(), HubError> {
        if !admin && user.id == by.id {
            return Err(HubError::BadRequest(
                "you cannot take away your own admin rights: ask another admin".into(),
            ));
        }
        if user.admin != admin {
            self.store.set_admin(user.id, admin).await?;
            self.credentials_changed(user.id).await;
            tracing::info!(user = %user.name.as_str(), admin, by = %by.name.as_str(), "admin rights changed");
        }
        Ok(())
    }

    /// `POST /hub/api/users` (admins): `{"usernames": [...], "admin": bool}` creates those
    /// that do not exist yet: 201 with their models, 409 when every one exists, 400 naming
    /// the first invalid name (and then nobody is created).
    async fn create_users(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.admin_for_change(&parts).await?;
        let body: CreateUsers = read_json(&parts.headers, body).await?;
        if body.usernames.is_empty() {
            return Err(HubError::BadRequest(
                "usernames must list at least one user".into(),
            ));
        }
        if body.usernames.len() > MAX_USERS_PER_REQUEST {
            return Err(HubError::BadRequest(format!(
                "at most {MAX_USERS_PER_REQUEST} users per request"
            )));
        }
        let mut names: Vec<UserName> = Vec::new();
        for raw in &body.usernames {
            let name = self.new_user_name(raw)?;
            if !names.contains(&name) {
                names.push(name);
            }
        }
        let created = self
            .create_users_named(&names, body.admin, caller.user())
            .await?;
        if created.is_empty() {
            let listed: Vec<&str> = names.iter().map(UserName::as_str).collect();
            return Ok(conflict(&format!(
                "every one of these users exists already: {}",
                listed.join(", ")
            )));
        }
        let mut models = Vec::new();
        for user in &created {
            models.push(self.full_user_model(user).await?);
        }
        Ok(response::json(StatusCode::CREATED, &Value::Array(models)))
    }

    /// `POST /hub/api/users/{name}` (admins), body optional `{"admin": bool}`: 201 with the
    /// model, 409 if the user exists.
    async fn create_one_user(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.admin_for_change(&parts).await?;
        let body: CreateUser = read_json(&parts.headers, body).await?;
        let name = percent_encoding::percent_decode_str(name).decode_utf8_lossy();
        let name = self.new_user_name(&name)?;
        let created = self
            .create_users_named(std::slice::from_ref(&name), body.admin, caller.user())
            .await?;
        let Some(user) = created.first() else {
            return Ok(conflict(&format!("user {} exists already", name.as_str())));
        };
        Ok(response::json(
            StatusCode::CREATED,
            &self.full_user_model(user).await?,
        ))
    }

    /// `PATCH /hub/api/users/{name}` (admins): `{"name": new, "admin": bool}`, either or
    /// both. A rename is refused while the user has a server (400) or when the name is taken
    /// (409); nothing changes unless everything can.
    async fn patch_user(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.admin_for_change(&parts).await?;
        let user = self.existing_user(name).await?;
        let body: PatchUser = read_json(&parts.headers, body).await?;
        let by = caller.user();
        if body.admin == Some(false) && user.id == by.id {
            return Err(HubError::BadRequest(
                "you cannot take away your own admin rights: ask another admin".into(),
            ));
        }
        let new_name = body
            .name
            .as_deref()
            .map(|raw| self.new_user_name(raw))
            .transpose()?
            .filter(|new| *new != user.name);
        if let Some(new) = &new_name {
            self.ensure_no_servers(&user, "rename").await?;
            let renamed = self.store.rename_user(user.id, new).await;
            self.credentials_changed(user.id).await;
            match renamed {
                Ok(true) => {}
                Ok(false) => return Err(HubError::NotFound),
                Err(StoreError::UserExists { .. }) => {
                    return Ok(conflict(&format!(
                        "cannot rename {} to {}: that name is taken",
                        user.name.as_str(),
                        new.as_str()
                    )));
                }
                Err(other) => return Err(other.into()),
            }
            tracing::info!(user = %user.name.as_str(), to = %new.as_str(), by = %by.name.as_str(), "user renamed");
        }
        if let Some(admin) = body.admin {
            self.set_admin_by(by, &user, admin).await?;
        }
        let user = self.store.user(user.id).await?.ok_or(HubError::NotFound)?;
        Ok(response::json(
            StatusCode::OK,
            &self.full_user_model(&user).await?,
        ))
    }

    /// `DELETE /hub/api/users/{name}` (admins): 204; 400 for oneself or while the user has
    /// a server running or starting.
    async fn delete_user(
        &self,
        request: Request<Incoming>,
        name: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, _body) = request.into_parts();
        let caller = self.admin_for_change(&parts).await?;
        let user = self.existing_user(name).await?;
        self.delete_user_by(caller.user(), &user).await?;
        let mut response = Response::new(super::body(""));
        *response.status_mut() = StatusCode::NO_CONTENT;
        Ok(response)
    }

    /// Every user's groups, by user name.
    pub(super) async fn groups_by_user(&self) -> Result<HashMap<UserName, Vec<String>>, HubError> {
        let mut by_user: HashMap<UserName, Vec<String>> = HashMap::new();
        for (group, members) in self.store.groups().await? {
            for member in members {
                by_user.entry(member).or_default().push(group.clone());
            }
        }
        Ok(by_user)
    }

    /// `GET /hub/api/groups` (admins): every group that has members, by name.
    async fn list_groups(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        self.admin_for_read(request.headers()).await?;
        let groups: Vec<Value> = self
            .store
            .groups()
            .await?
            .iter()
            .map(|(name, users)| group_model(name, users))
            .collect();
        Ok(response::json(StatusCode::OK, &Value::Array(groups)))
    }

    /// `GET /hub/api/groups/{name}` (admins): the group, 404 when it has no members.
    async fn get_group(
        &self,
        request: &Request<Incoming>,
        group: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        self.admin_for_read(request.headers()).await?;
        let group = group_name(group).map_err(|_| HubError::NotFound)?;
        let groups = self.store.groups().await?;
        let users = groups.get(&group).ok_or(HubError::NotFound)?;
        Ok(response::json(StatusCode::OK, &group_model(&group, users)))
    }

    /// `POST|DELETE /hub/api/groups/{name}/users` (admins), `{"users": [...]}`: adds the users
    /// to the group (creating it) or takes them out; 200 with the group. Every user must
    /// exist (400 naming the first that does not); removing from a group with no members is
    /// 404. Memberships an admin adds outlast OpenID logins; those the provider asserts are
    /// set again at each login.
    async fn change_group(
        &self,
        request: Request<Incoming>,
        group: &str,
        add: bool,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.admin_for_change(&parts).await?;
        let group = group_name(group)?;
        let body: GroupUsers = read_json(&parts.headers, body).await?;
        if body.users.is_empty() {
            return Err(HubError::BadRequest(
                "users must list at least one user".into(),
            ));
        }
        if body.users.len() > MAX_USERS_PER_REQUEST {
            return Err(HubError::BadRequest(format!(
                "at most {MAX_USERS_PER_REQUEST} users per request"
            )));
        }
        let mut ids = Vec::new();
        for raw in &body.users {
            let name = self.new_user_name(raw)?;
            let user =
                self.store.user_by_name(&name).await?.ok_or_else(|| {
                    HubError::BadRequest(format!("no such user: {}", name.as_str()))
                })?;
            ids.push(user.id);
        }
        if add {
            match self.store.add_to_group(&group, &ids).await {
                Ok(()) => {}
                // Deleted between the look-up and now.
                Err(StoreError::NoSuchUser { .. }) => {
                    return Err(HubError::BadRequest(
                        "a user was deleted meanwhile; try again".into(),
                    ));
                }
                Err(other) => return Err(other.into()),
            }
        } else {
            if !self.store.groups().await?.contains_key(&group) {
                return Err(HubError::NotFound);
            }
            self.store.remove_from_group(&group, &ids).await?;
        }
        tracing::info!(%group, users = ?body.users, add, by = %caller.user().name.as_str(), "group membership changed");
        let groups = self.store.groups().await?;
        let members = groups.get(&group).map_or(&[][..], Vec::as_slice);
        Ok(response::json(
            StatusCode::OK,
            &group_model(&group, members),
        ))
    }
}

/// A 409 with JupyterHub's error body.
pub(super) fn conflict(message: &str) -> Response<ResponseBody> {
    tracing::info!(status = 409, reason = %message, "hub request refused");
    response::json(
        StatusCode::CONFLICT,
        &json!({"status": 409, "message": message}),
    )
}

/// A group name from a path segment (percent-decoded), or 400 saying what is wrong.
fn group_name(segment: &str) -> Result<String, HubError> {
    let name = percent_encoding::percent_decode_str(segment)
        .decode_utf8()
        .map_err(|_| HubError::BadRequest("the group name is not UTF-8".into()))?;
    let valid = !name.is_empty()
        && name.len() <= MAX_GROUP_BYTES
        && name.trim() == name
        && !name.chars().any(|c| c.is_control() || c == '/');
    if !valid {
        return Err(HubError::BadRequest(format!(
            "invalid group name {name:?}: use 1 to {MAX_GROUP_BYTES} bytes, without '/', control \
             characters, or spaces at either end"
        )));
    }
    Ok(name.into_owned())
}

/// JupyterHub's group model.
fn group_model(name: &str, users: &[UserName]) -> Value {
    json!({
        "kind": "group",
        "name": name,
        "roles": [],
        "users": users.iter().map(UserName::as_str).collect::<Vec<_>>(),
        "properties": {},
    })
}

/// The body of an activity report.
#[derive(Debug, Deserialize)]
struct ActivityReport {
    /// ISO 8601: when the user was last active, whichever server.
    #[serde(default)]
    last_activity: Option<String>,
    /// Per server (by name, `""` the default): when it was last active.
    #[serde(default)]
    servers: std::collections::HashMap<String, ServerActivity>,
}

#[derive(Debug, Deserialize)]
struct ServerActivity {
    /// ISO 8601, as JupyterHub writes it (`2026-01-01T00:00:00.000000Z`).
    #[serde(default)]
    last_activity: Option<String>,
}

impl Hub {
    fn origin_for_host(&self, host: &str) -> String {
        let public = self.config.public_origin.as_str();
        let public_host = public.split_once("://").map_or(public, |(_, h)| h);
        if public_host.eq_ignore_ascii_case(host) {
            public.to_owned()
        } else {
            format!("http://{host}")
        }
    }
}

/// A server error as an HTTP error: the user's faults are 4xx.
pub(super) fn server_error(error: ServerError) -> HubError {
    match error {
        ServerError::TooManySpawns => HubError::TooManyAttempts {
            retry_after_secs: 10,
        },
        ServerError::Backend(source) => HubError::Internal(crate::errors::error_chain(&source)),
        other => HubError::BadRequest(other.to_string()),
    }
}

/// JupyterHub writes API token ids as `a<number>`.
fn token_id(id: TokenId) -> String {
    format!("a{}", id.get())
}

fn parse_token_id(text: &str) -> Result<TokenId, HubError> {
    text.strip_prefix('a')
        .and_then(|n| n.parse::<i64>().ok())
        .filter(|n| *n > 0)
        .map(TokenId::new)
        .ok_or(HubError::NotFound)
}

pub(super) fn iso(ts: Timestamp) -> String {
    ts.strftime("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

/// JupyterHub's user model, as far as identity goes, with `last_activity` (see
/// `Hub::last_activity_of`); the servers are filled in by `Hub::user_with_servers`.
fn user_model(user: &User, last_activity: Option<Timestamp>) -> Value {
    json!({
        "kind": "user",
        "name": user.name.as_str(),
        "admin": user.admin,
        "groups": [],
        "roles": if user.admin { json!(["admin", "user"]) } else { json!(["user"]) },
        "created": iso(user.created),
        "last_activity": last_activity.map(iso),
        "pending": Value::Null,
        "server": Value::Null,
        "servers": {},
    })
}

/// JupyterHub's token model.
fn token_model(token: &ApiToken, owner: &User) -> Value {
    json!({
        "id": token_id(token.id),
        "kind": "api_token",
        "user": owner.name.as_str(),
        "roles": [],
        "scopes": token.scopes.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "note": token.note,
        "prefix": token.prefix,
        "created": iso(token.created),
        "expires_at": token.expires.map(iso),
        "last_activity": token.last_used.map(iso),
        "oauth_client": match &token.binding {
            TokenBinding::OAuth(client) => json!(client),
            TokenBinding::Api | TokenBinding::Server(_) => Value::Null,
        },
        "session_id": Value::Null,
    })
}
