//! The hub: what answers under `/hub/` — the login and logout flows, sessions, the
//! JupyterHub-shaped REST API, the single-user OAuth provider, the pages, notebook servers and
//! their routes — composed from the `auth` and `spawner` crates' pieces.
//!
//! The data plane never calls into this module; [`front::FrontTier`] puts the two side by side,
//! sending `/hub/` here and everything else to the proxy. The hub's decisions come from
//! `gantry_auth` (names, redirects, CSRF, passwords, rate limits, OpenID Connect); this module
//! is the HTTP shell around them: parse the request once, decide, answer. Errors become
//! responses in one place, `HubError::into_response` in `response.rs`.

pub mod config;
pub mod cookies;
pub mod front;

mod admin;
mod api;
mod login;
pub mod metrics;
mod oauth;
mod oidc;
mod pages;
mod request;
mod response;
pub mod servers;
mod token_page;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use gantry_auth::store::Session;
use gantry_auth::{
    CsrfToken, LoginLimiter, OidcProvider, Passwords, SafeRedirect, Scopes, Store, UserName,
};
use http::{Method, Request, Response, header};
use hyper::body::Incoming;
use jiff::Timestamp;

use crate::errors::ResponseBody;
use crate::routes::{RoutePrefix, RouteTable};
use crate::server::ConnInfo;
use config::HubConfig;
use cookies::CookiePolicy;
use response::HubError;

/// The JupyterHub REST API version gantry speaks, as `GET /hub/api` reports it.
pub const JUPYTERHUB_API_VERSION: &str = "6.1.1";

/// The page a login leads to when no (safe) `next` was given.
pub const HOME: &str = "/hub/home";

/// An OpenID Connect provider the hub offers, discovered at start.
#[derive(Debug)]
pub struct Provider {
    /// The id from the configuration (`[auth.oidc.<id>]`), also in the callback URL.
    pub id: String,
    /// The login button's label.
    pub display_name: String,
    /// The discovered provider.
    pub provider: OidcProvider,
}

/// The hub's state, shared by every request.
#[derive(Debug)]
pub struct Hub {
    config: HubConfig,
    store: Store,
    passwords: Passwords,
    limiter: LoginLimiter,
    providers: Vec<Provider>,
    pending: oidc::PendingLogins,
    cookies: CookiePolicy,
    home: SafeRedirect,
    /// The route table, to close a user's WebSockets when their credentials end.
    routes: Arc<RouteTable>,
    /// The notebook servers, when a backend is configured.
    servers: Option<Arc<servers::Servers>>,
    /// The single-user OAuth provider's clients and codes.
    oauth: oauth::OAuthState,
    /// The hub's API as servers reach it (`http://<gateway>:<port>/hub/api`).
    servers_api_url: Option<String>,
    /// The proxy's metrics, served with the hub's at `/hub/metrics`.
    proxy_metrics: Option<crate::metrics::Metrics>,
}

/// Building the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum HubSetupError {
    /// The password hasher could not be set up.
    #[error("cannot set up password hashing")]
    Passwords(#[source] gantry_auth::PasswordError),
    /// The login limits are invalid.
    #[error(transparent)]
    Limits(#[from] gantry_auth::LimitError),
}

/// Who a request comes from, and how it proved it.
#[derive(Debug)]
enum Caller {
    /// A browser with a session cookie; carries the cookie's value (the session secret).
    Session { session: Session, secret: String },
    /// An API token in the `Authorization` header.
    Token(gantry_auth::store::TokenAuth),
}

impl Caller {
    fn user(&self) -> &gantry_auth::store::User {
        match self {
            Self::Session { session, .. } => &session.user,
            Self::Token(auth) => &auth.user,
        }
    }

    /// What this caller may do: a session may do what its user may; a token what its scopes
    /// allow (never more than its owner may).
    fn scopes(&self) -> Scopes {
        match self {
            Self::Session { .. } => {
                Scopes::new([gantry_auth::Scope::SelfUser, gantry_auth::Scope::Admin])
            }
            Self::Token(auth) => auth.token.scopes.clone(),
        }
    }

    fn permits(&self, action: gantry_auth::Action<'_>) -> bool {
        let user = self.user();
        let owner = gantry_auth::Owner {
            name: &user.name,
            admin: user.admin,
        };
        self.scopes().permits(owner, action)
    }
}

impl Hub {
    /// Builds the hub over an open, migrated store and the discovered providers.
    ///
    /// # Errors
    ///
    /// [`HubSetupError`] when the password hasher or the rate limiter cannot be built.
    pub fn new(
        config: HubConfig,
        store: Store,
        providers: Vec<Provider>,
        routes: Arc<RouteTable>,
    ) -> Result<Self, HubSetupError> {
        let passwords = Passwords::new(gantry_auth::PasswordParams::default())
            .map_err(HubSetupError::Passwords)?;
        let limiter = LoginLimiter::new(config.limits)?;
        let cookies = CookiePolicy {
            https: config.https,
        };
        let home =
            SafeRedirect::parse(HOME).unwrap_or_else(|_| unreachable!("{HOME} is a safe redirect"));
        Ok(Self {
            config,
            store,
            passwords,
            limiter,
            providers,
            pending: oidc::PendingLogins::default(),
            cookies,
            home,
            routes,
            servers: None,
            oauth: oauth::OAuthState::default(),
            servers_api_url: None,
            proxy_metrics: None,
        })
    }

    /// Serves the proxy's metrics with the hub's at `/hub/metrics`.
    #[must_use]
    pub fn with_proxy_metrics(mut self, metrics: crate::metrics::Metrics) -> Self {
        self.proxy_metrics = Some(metrics);
        self
    }

    /// `GET /hub/metrics`: the hub's and the proxy's metrics in Prometheus' text format, for
    /// tokens with `read:metrics` (and admins).
    async fn metrics(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let caller = self
            .caller(request.headers())
            .await?
            .ok_or(HubError::Unauthenticated)?;
        if !caller.permits(gantry_auth::Action::ReadMetrics) {
            return Err(HubError::Forbidden);
        }
        let mut text = self
            .servers
            .as_ref()
            .map(|s| {
                let metrics = s.metrics();
                metrics.set_gpus(s.gpu_availability(false));
                metrics.render()
            })
            .unwrap_or_default();
        if let Some(proxy) = &self.proxy_metrics {
            text.push_str(&proxy.render());
        }
        let mut response = Response::new(body(text));
        response.headers_mut().insert(
            header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4"),
        );
        Ok(response)
    }

    /// Gives the hub a backend to start servers on, and `api_url`, the hub API's URL as the
    /// servers reach it. Every server it knows already (adopted after a restart) becomes an
    /// OAuth client again.
    #[must_use]
    pub fn with_servers(mut self, servers: Arc<servers::Servers>, api_url: String) -> Self {
        for key in servers.keys() {
            self.oauth.register(&key);
        }
        self.servers = Some(servers);
        self.servers_api_url = Some(api_url);
        self
    }

    /// The store, for the binary's maintenance tasks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Forgets expired logins in flight and recovered rate-limit keys. The binary calls it
    /// every minute.
    pub fn prune(&self) {
        self.pending.prune(std::time::Instant::now());
        self.limiter.prune();
    }

    /// Answers one request under `/hub/`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        let accept_json = request::wants_json(request.headers(), request.uri().path());
        let mut response = match self.route(request, conn).await {
            Ok(response) => response,
            Err(error) => error.into_response(accept_json),
        };
        // jupyterhub-singleuser compares this with its own version and warns on a mismatch.
        response.headers_mut().insert(
            "x-jupyterhub-version",
            http::HeaderValue::from_static(JUPYTERHUB_API_VERSION),
        );
        response
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ResponseBody>, HubError> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        let segments: Vec<&str> = path
            .strip_prefix("/hub")
            .unwrap_or("")
            .split('/')
            .filter(|s| !s.is_empty())
            .collect();
        match (&method, segments.as_slice()) {
            (&Method::GET | &Method::HEAD, ["health"]) => Ok(response::json(
                http::StatusCode::OK,
                &serde_json::json!({"status": "ok"}),
            )),
            (&Method::GET | &Method::HEAD, []) => Ok(response::redirect(HOME)),
            (&Method::GET | &Method::HEAD, ["login"]) => self.login_page(&request).await,
            (&Method::POST, ["login"]) => self.local_login(request, conn).await,
            (&Method::GET | &Method::HEAD, ["signup"]) => self.signup_page(&request).await,
            (&Method::POST, ["signup"]) => self.signup(request, conn).await,
            (&Method::GET | &Method::HEAD, ["logout"]) => self.logout_page(&request).await,
            (&Method::POST, ["logout"]) => self.logout(request).await,
            (&Method::GET, ["oidc", id, "login"]) => self.oidc_begin(&request, id),
            (&Method::GET, ["oidc", id, "callback"]) => self.oidc_callback(&request, id).await,
            (&Method::GET | &Method::HEAD, ["home"]) => self.home_page(&request).await,
            (&Method::GET, ["metrics"] | ["api", "metrics"]) => self.metrics(&request).await,
            (&Method::GET | &Method::HEAD, ["spawn"]) => self.spawn_page(&request).await,
            (&Method::POST, ["spawn"]) => self.spawn(request).await,
            (&Method::GET | &Method::HEAD, ["spawn-pending"]) => self.pending_page(&request).await,
            (&Method::POST, ["stop"]) => self.stop_page(request).await,
            (&Method::GET | &Method::HEAD, ["token"]) => self.token_page(&request).await,
            (&Method::POST, ["token"]) => self.token_create(request).await,
            (&Method::POST, ["token", "revoke"]) => self.token_revoke(request).await,
            (&Method::GET | &Method::HEAD, ["admin"]) => self.admin_page(&request).await,
            (&Method::POST, ["admin", "users"]) => self.admin_add_user(request).await,
            (&Method::POST, ["admin", "users", name, action]) => {
                self.admin_user_action(request, name, action).await
            }
            (_, ["api", rest @ ..]) => self.api(request, rest).await,
            _ => Err(HubError::NotFound),
        }
    }

    /// Finds who the request comes from: an API token in `Authorization`, else the session
    /// cookie. `None` when neither is present and valid.
    async fn caller(&self, headers: &http::HeaderMap) -> Result<Option<Caller>, HubError> {
        let now = Timestamp::now();
        if let Some(token) = request::authorization_token(headers)? {
            return Ok(self.store.token(token, now).await?.map(Caller::Token));
        }
        let Some(secret) = self.cookies.get(headers, cookies::SESSION) else {
            return Ok(None);
        };
        Ok(self
            .store
            .session(&secret, now)
            .await?
            .map(|session| Caller::Session { session, secret }))
    }

    /// The CSRF check for a state-changing request from `caller`.
    fn check_csrf(
        &self,
        request_parts: &http::request::Parts,
        form_token: Option<&str>,
        caller: &Caller,
    ) -> Result<(), HubError> {
        let token;
        let credential = match caller {
            Caller::Session { secret, .. } => {
                token = CsrfToken::for_session(secret);
                gantry_auth::csrf::Credential::Session(&token)
            }
            Caller::Token(_) => gantry_auth::csrf::Credential::ApiToken,
        };
        gantry_auth::csrf::check(
            &request_parts.method,
            &request_parts.headers,
            form_token,
            credential,
            &self.config.public_origin,
        )
        .map_err(HubError::Csrf)
    }

    /// The client's address: the connection's peer, or, behind a trusted load balancer, the
    /// last address in `X-Forwarded-For` that is not itself trusted.
    fn client_ip(&self, headers: &http::HeaderMap, conn: ConnInfo) -> IpAddr {
        let trusted = |ip: IpAddr| {
            self.config
                .trusted_downstream
                .iter()
                .any(|net| net.contains(&ip))
        };
        if !trusted(conn.remote.ip()) {
            return conn.remote.ip();
        }
        let hops: Vec<IpAddr> = headers
            .get_all("x-forwarded-for")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|hop| hop.trim().parse().ok())
            .collect();
        hops.into_iter()
            .rev()
            .find(|ip| !trusted(*ip))
            .unwrap_or(conn.remote.ip())
    }

    /// Decides whether a request for `owner`'s notebook may pass. `Err` is the answer to
    /// give instead: a redirect to the login page for a browser without a session, 403 for
    /// an API client without a valid token, and 404 for someone who may not reach `owner`'s
    /// servers (whether or not `owner` exists).
    pub async fn gate(
        &self,
        request: &Request<Incoming>,
        owner: &str,
    ) -> Result<(), Response<ResponseBody>> {
        let json = request::wants_json(request.headers(), request.uri().path());
        let caller = match self.caller(request.headers()).await {
            Ok(caller) => caller,
            Err(error) => return Err(error.into_response(json)),
        };
        let Some(caller) = caller else {
            if json || request.method() != Method::GET {
                return Err(HubError::Unauthenticated.into_response(true));
            }
            let next = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
            let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
            return Err(response::redirect(&format!("/hub/login?next={next}")));
        };
        let Ok(owner) = UserName::parse(owner, self.config.name_policy) else {
            return Err(HubError::NotFound.into_response(json));
        };
        if caller.permits(gantry_auth::Action::AccessServer(&owner)) {
            Ok(())
        } else {
            Err(HubError::NotFound.into_response(json))
        }
    }

    /// The answer for a permitted request to a server that is not running: 503 with a page
    /// that offers to start it. Never starts anything itself: a GET must not spawn.
    pub fn not_running(&self, request: &Request<Incoming>, owner: &str) -> Response<ResponseBody> {
        let json = request::wants_json(request.headers(), request.uri().path());
        let message = format!("{owner}'s server is not running.");
        if json {
            return response::json(
                http::StatusCode::SERVICE_UNAVAILABLE,
                &serde_json::json!({"status": 503, "message": message}),
            );
        }
        response::html(
            http::StatusCode::SERVICE_UNAVAILABLE,
            pages::not_running_page(owner),
        )
    }

    /// Puts back the route of every ready server that lost it. The binary calls it every
    /// second.
    pub fn restore_routes(&self) -> usize {
        self.servers.as_ref().map_or(0, |s| s.restore_routes())
    }

    /// Compares the servers the hub knows with what the backend runs and acts on the
    /// difference ([`servers::Servers::reconcile`]); a server it adopts becomes an OAuth client
    /// as at startup. The binary calls it every `hub.poll_interval_secs`.
    pub async fn reconcile(&self) {
        let Some(servers) = &self.servers else {
            return;
        };
        match servers.reconcile().await {
            Ok(report) => {
                for key in &report.adopted {
                    self.oauth.register(key);
                }
                // A dead server's credentials die with it: its next start mints new ones.
                for key in &report.died {
                    self.oauth.unregister(key);
                    let user = match UserName::parse(&key.user, self.config.name_policy) {
                        Ok(name) => self.store.user_by_name(&name).await,
                        Err(_) => Ok(None),
                    };
                    let revoked = match user {
                        Ok(Some(user)) => self
                            .store
                            .revoke_tokens_noted(user.id, &oauth::server_token_note(key))
                            .await
                            .map(|_| ()),
                        Ok(None) => Ok(()),
                        Err(error) => Err(error),
                    };
                    if let Err(error) = revoked {
                        tracing::warn!(user = %key.user, %error, "cannot revoke the dead server's token");
                    }
                }
            }
            Err(error) => tracing::warn!(
                error = %crate::errors::error_chain(&error),
                "cannot list the servers on the backend; will try again"
            ),
        }
    }

    /// Stops the servers that are idle past their profile's `idle_timeout` or older than its
    /// `max_age`. The binary calls it every `hub.cull_interval_secs`. Returns how many
    /// stopped.
    pub async fn cull(&self) -> usize {
        let Some(servers) = &self.servers else {
            return 0;
        };
        let mut stopped = 0;
        for (key, why) in servers.to_cull(jiff::Timestamp::now()) {
            let user = match UserName::parse(&key.user, self.config.name_policy) {
                Ok(name) => self.store.user_by_name(&name).await,
                Err(_) => Ok(None),
            };
            let result = match user {
                Ok(Some(user)) => self.stop_for(&user, &key).await,
                // The account is gone: the server goes all the same.
                Ok(None) => servers.stop(&key).await.map_err(api::server_error),
                Err(error) => Err(error.into()),
            };
            match result {
                Ok(()) => {
                    stopped += 1;
                    tracing::info!(user = %key.user, server = %key.server.as_str(), %why, "server culled");
                }
                Err(error) => {
                    tracing::warn!(user = %key.user, error = %error, "cannot cull the server")
                }
            }
        }
        stopped
    }

    /// Ends every open WebSocket of `user`'s servers: their credentials just ended.
    fn close_user_tunnels(&self, user: &UserName) {
        if let Ok(prefix) = RoutePrefix::parse(&format!("/user/{}", user.as_str()), false) {
            let closed = self.routes.close_tunnels_under(&prefix);
            tracing::info!(user = %user.as_str(), routes = closed, "closed the user's open connections");
        }
    }

    /// A response that sets the cookies in `set_cookies` on `response`.
    fn with_cookies(
        mut response: Response<ResponseBody>,
        set_cookies: &[String],
    ) -> Response<ResponseBody> {
        for value in set_cookies {
            if let Ok(value) = http::HeaderValue::from_str(value) {
                response.headers_mut().append(header::SET_COOKIE, value);
            }
        }
        response
    }
}

/// A body for hub responses.
fn body(bytes: impl Into<Bytes>) -> ResponseBody {
    crate::errors::full_body(bytes)
}
