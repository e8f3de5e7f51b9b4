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

mod activity;
mod admin;
mod api;
pub mod callers;
mod hashing;
pub mod identities;
mod login;
pub mod metrics;
mod oauth;
mod oidc;
mod pages;
mod request;
mod response;
pub mod servers;
mod spawn_request;
mod token_page;

use std::net::IpAddr;
use std::sync::Arc;

use bytes::Bytes;
use gantry_auth::store::{Session, TokenAuth, TokenBinding, UserId};
use gantry_auth::{
    CsrfToken, LoginLimiter, OidcProvider, Passwords, SafeRedirect, Scopes, Store, UserName,
};
use http::{Method, Request, Response, header};
use hyper::body::Incoming;

use crate::errors::ResponseBody;
use crate::gate::{Admission, AdmissionFuture, Gate, RouteOwner, UnroutedFuture};
use crate::server::ConnInfo;
use callers::{CallerError, Callers, Kind, Known};
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
    /// Where every password hash runs: a few at once, a short queue, refusals past it.
    hashing: hashing::HashPool,
    limiter: LoginLimiter,
    providers: Vec<Provider>,
    pending: oidc::PendingLogins,
    /// Requests refused by the caps above, and their gauges.
    cap_metrics: metrics::CapMetrics,
    cookies: CookiePolicy,
    home: SafeRedirect,
    /// Sessions and tokens resolved from memory, and the tunnels they opened.
    callers: Callers,
    /// Users' last activity: noted per request, written to the store coalesced.
    activity: activity::UserActivity,
    /// The notebook servers, when a backend is configured.
    servers: Option<Arc<servers::Servers>>,
    /// The single-user OAuth provider's clients and codes.
    oauth: oauth::OAuthState,
    /// The hub's API as servers reach it (`http://<gateway>:<port>/hub/api`).
    servers_api_url: Option<String>,
    /// The proxy's metrics, served with the hub's at `/hub/metrics`.
    proxy_metrics: Option<crate::metrics::Metrics>,
    /// The account named by `GANTRY_ADMIN_USER`, which no OpenID login reaches by its name.
    reserved_admin: Option<UserName>,
}

/// Building the hub failed.
#[derive(Debug, thiserror::Error)]
pub enum HubSetupError {
    /// The password hasher could not be set up.
    #[error("cannot set up password hashing")]
    Passwords(#[source] gantry_auth::PasswordError),
    /// A password hashing thread could not be started.
    #[error("cannot start the password hashing threads")]
    Hashing(#[source] std::io::Error),
    /// The login limits are invalid.
    #[error(transparent)]
    Limits(#[from] gantry_auth::LimitError),
}

/// Who a request comes from, and how it proved it.
#[derive(Debug)]
enum Caller {
    /// A browser with a session cookie; carries the cookie's value (the session secret).
    Session {
        session: Arc<Session>,
        secret: String,
    },
    /// An API token in the `Authorization` header.
    Token(Arc<TokenAuth>),
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
    fn scopes(&self) -> &Scopes {
        match self {
            Self::Session { .. } => &callers::SESSION_SCOPES,
            Self::Token(auth) => &auth.token.scopes,
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

tokio::task_local! {
    /// The client address of the hub request being answered, for the lookup limiter of
    /// [`Callers`]; set once in [`Hub::handle`] so every handler's `caller` sees it.
    static CLIENT: IpAddr;
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
    ) -> Result<Self, HubSetupError> {
        let passwords = Passwords::new(gantry_auth::PasswordParams::default())
            .map_err(HubSetupError::Passwords)?;
        let limiter = LoginLimiter::new(config.limits)?;
        let caps = config.login_caps;
        // One hash per core unless configured: argon2 is CPU-bound, so more at once only
        // adds memory.
        let workers = caps.hash_workers.unwrap_or_else(|| {
            std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
        });
        let hashing = hashing::HashPool::new(workers, caps.hash_queue, &passwords)
            .map_err(HubSetupError::Hashing)?;
        let pending = oidc::PendingLogins::new(oidc::PendingLimits {
            in_flight: caps.oidc_in_flight,
            per_address: caps.oidc_in_flight_per_address,
        });
        let cookies = CookiePolicy {
            https: config.https,
        };
        let home =
            SafeRedirect::parse(HOME).unwrap_or_else(|_| unreachable!("{HOME} is a safe redirect"));
        let callers = Callers::new(store.clone());
        let activity = activity::UserActivity::new(store.clone());
        Ok(Self {
            config,
            store,
            passwords,
            hashing,
            limiter,
            providers,
            pending,
            cap_metrics: metrics::CapMetrics::new(),
            cookies,
            home,
            callers,
            activity,
            servers: None,
            oauth: oauth::OAuthState::default(),
            servers_api_url: None,
            proxy_metrics: None,
            reserved_admin: None,
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
        let caps = &self.cap_metrics;
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        caps.hashes_running.set(gauge(self.hashing.running()));
        caps.hashes_waiting.set(gauge(self.hashing.waiting()));
        caps.oidc_logins_in_flight.set(gauge(self.pending.len()));
        text.push_str(&caps.render());
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

    /// Reserves `name`, the account `GANTRY_ADMIN_USER` names: an OpenID login reaches it
    /// only through an identity an admin linked to it, never by its name.
    #[must_use]
    pub fn with_reserved_admin(mut self, name: UserName) -> Self {
        self.reserved_admin = Some(name);
        self
    }

    /// Gives the hub a backend to start servers on, and `api_url`, the hub API's URL as the
    /// servers reach it. Every server it knows already (adopted after a restart) becomes an
    /// OAuth client again.
    #[must_use]
    pub fn with_servers(mut self, servers: Arc<servers::Servers>, api_url: String) -> Self {
        for key in servers.keys() {
            self.oauth.adopt(&key);
        }
        self.servers = Some(servers);
        self.servers_api_url = Some(api_url);
        self
    }

    /// The store, for the binary's maintenance tasks.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Checks the callers in memory and the open tunnels' credentials against the store again
    /// ([`Callers::refresh`]). The binary calls it every [`callers::REFRESH_EVERY`].
    pub async fn refresh_callers(&self) {
        if let Err(error) = self.callers.refresh().await {
            tracing::warn!(error = %crate::errors::error_chain(&error), "cannot check the cached callers against the store; they go stale after {:?}", callers::STALE_AFTER);
        }
    }

    /// Forgets expired logins in flight and recovered rate-limit keys. The binary calls it
    /// every minute.
    pub fn prune(&self) {
        self.pending.prune(std::time::Instant::now());
        self.limiter.prune();
    }

    /// Brings users' activity to the store: notes each user's servers' last activity (their
    /// reports and the proxy's traffic on their routes), then writes what the coalescing
    /// window held back and forgets what the store has. The binary calls it every minute.
    /// One user lookup per user with a server, so that traffic seen only by the proxy (a
    /// notebook's long-lived WebSocket) outlives the server in the user's `last_activity`.
    pub async fn sweep_activity(&self) {
        if let Some(servers) = &self.servers {
            let mut latest: std::collections::BTreeMap<String, jiff::Timestamp> =
                std::collections::BTreeMap::new();
            for key in servers.keys() {
                if let Some(at) = servers.last_activity(&key) {
                    let slot = latest.entry(key.user).or_insert(at);
                    *slot = (*slot).max(at);
                }
            }
            for (name, at) in latest {
                let user =
                    match UserName::parse(&name, gantry_auth::NamePolicy { case_fold: false }) {
                        Ok(name) => self.store.user_by_name(&name).await,
                        Err(_) => Ok(None),
                    };
                match user {
                    Ok(Some(user)) => self.activity.note(user.id, at),
                    Ok(None) => {}
                    Err(error) => {
                        tracing::warn!(user = %name, %error, "cannot look the user up to record their servers' activity");
                    }
                }
            }
        }
        self.activity.flush(jiff::Timestamp::now()).await;
    }

    /// Writes every activity noted and not yet written: the binary calls it at shutdown,
    /// after the last request.
    pub async fn flush_activity(&self) {
        self.activity.flush_all().await;
    }

    /// When `user` was last active: the latest of what the store has, what this process
    /// noted and not yet wrote, and their servers' last activity. `None` if never.
    fn last_activity_of(&self, user: &gantry_auth::store::User) -> Option<jiff::Timestamp> {
        let servers = self.servers.as_ref().and_then(|servers| {
            servers
                .of_user(user.name.as_str())
                .iter()
                .filter_map(|(key, ..)| servers.last_activity(key))
                .max()
        });
        [user.last_activity, self.activity.latest(user.id), servers]
            .into_iter()
            .flatten()
            .max()
    }

    /// Answers one request under `/hub/`.
    pub async fn handle(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Response<ResponseBody> {
        let accept_json = request::wants_json(request.headers(), request.uri().path());
        let client = self.client_ip(request.headers(), conn);
        let body_timeout =
            std::time::Duration::from_secs(self.config.hub.request_body_timeout_secs);
        let answer = request::with_body_deadline(body_timeout, self.route(request, conn));
        let mut response = match CLIENT.scope(client, answer).await {
            Ok(response) => response,
            Err(error) => {
                self.count_capped(&error);
                error.into_response(accept_json)
            }
        };
        // jupyterhub-singleuser compares this with its own version and warns on a mismatch.
        response.headers_mut().insert(
            "x-jupyterhub-version",
            http::HeaderValue::from_static(JUPYTERHUB_API_VERSION),
        );
        response
    }

    /// Counts a refusal by one of the hub's resource caps.
    fn count_capped(&self, error: &HubError) {
        let cap = match error {
            HubError::HashingBusy(hashing::HashError::Busy { .. }) => "password_hashing",
            HubError::UnknownNamesBusy { .. } => "unknown_names",
            HubError::OidcLoginsFull { .. } => "oidc_logins",
            HubError::OidcLoginsFromAddress { .. } => "oidc_logins_per_address",
            HubError::BodyTimeout { .. } => "body_timeout",
            _ => return,
        };
        self.cap_metrics.refused.with_label_values(&[cap]).inc();
    }

    async fn route(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ResponseBody>, HubError> {
        let path = request.uri().path().to_owned();
        let method = request.method().clone();
        // The front tier sent this request here because its path decodes to `/hub` or
        // below: the first segment is the hub's, however it was spelled. The rest stay raw;
        // handlers decode the names in them.
        let rest = path
            .strip_prefix('/')
            .and_then(|p| p.split_once('/'))
            .map_or("", |(_, rest)| rest);
        let segments: Vec<&str> = rest.split('/').filter(|s| !s.is_empty()).collect();
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
        let client = CLIENT
            .try_with(|client| *client)
            .unwrap_or(IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED));
        Ok(self
            .resolve(headers, client)
            .await?
            .map(|(caller, ..)| caller))
    }

    /// [`Hub::caller`] with the client address given, and the credential's cache key and
    /// kind (for registering a tunnel).
    async fn resolve(
        &self,
        headers: &http::HeaderMap,
        client: IpAddr,
    ) -> Result<Option<(Caller, Kind, gantry_auth::SecretKey)>, HubError> {
        let resolved = |result: Result<_, CallerError>| match result {
            Ok(found) => Ok(found),
            Err(CallerError::Store(error)) => Err(HubError::Store(error)),
            Err(CallerError::TooManyLookups) => Err(HubError::TooManyLookups),
        };
        if let Some(token) = request::authorization_token(headers)? {
            let found = resolved(self.callers.resolve(Kind::Token, token, client).await)?;
            return Ok(found.and_then(|(key, known)| match known {
                Known::Token(auth) => {
                    // As JupyterHub: a server's own token calling the API is the server at
                    // work, not its user (its activity reports say when the user was).
                    if !matches!(auth.token.binding, TokenBinding::Server(_)) {
                        self.activity.note(auth.user.id, jiff::Timestamp::now());
                    }
                    Some((Caller::Token(auth), Kind::Token, key))
                }
                Known::Session(_) => None,
            }));
        }
        let Some(secret) = self.cookies.get(headers, cookies::SESSION) else {
            return Ok(None);
        };
        let found = resolved(self.callers.resolve(Kind::Session, &secret, client).await)?;
        Ok(found.and_then(|(key, known)| match known {
            Known::Session(session) => {
                self.activity.note(session.user.id, jiff::Timestamp::now());
                Some((Caller::Session { session, secret }, Kind::Session, key))
            }
            Known::Token(_) => None,
        }))
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

    /// The answer for a request the gate refuses for want of a credential: a browser's GET
    /// is sent to log in and come back; anything else gets 403.
    fn login_first(request: &Request<Incoming>, json: bool) -> Response<ResponseBody> {
        if json || request.method() != Method::GET {
            return HubError::Unauthenticated.into_response(true);
        }
        let next = request.uri().path_and_query().map_or("/", |pq| pq.as_str());
        let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
        response::redirect(&format!("/hub/login?next={next}"))
    }

    /// The gate for an owned route: the owner, admins and tokens with access to the owner's
    /// servers pass; a browser without a session is sent to log in; anyone else gets 404,
    /// whether or not the owner exists.
    async fn admit(
        &self,
        request: &Request<Incoming>,
        conn: ConnInfo,
        owner: &RouteOwner,
        upgrade: bool,
    ) -> Admission {
        let json = request::wants_json(request.headers(), request.uri().path());
        let client = self.client_ip(request.headers(), conn);
        let (caller, kind, key) = match self.resolve(request.headers(), client).await {
            Ok(Some(found)) => found,
            Ok(None) => return Admission::Refuse(Self::login_first(request, json)),
            Err(error) => return Admission::Refuse(error.into_response(json)),
        };
        let known = match &caller {
            Caller::Session { session, .. } => Known::Session(Arc::clone(session)),
            Caller::Token(auth) => Known::Token(Arc::clone(auth)),
        };
        if !known.may_access(&owner.user) {
            return Admission::Refuse(HubError::NotFound.into_response(json));
        }
        // A browser attaches the session cookie to requests other sites' pages make (same-site
        // ones under `SameSite=Lax`); the apps behind the gate need not check where a socket
        // or a change comes from, so the gate does. Tokens are exempt: no browser attaches
        // `Authorization` on its own.
        let changes = upgrade
            || !matches!(
                *request.method(),
                http::Method::GET | http::Method::HEAD | http::Method::OPTIONS
            );
        if changes
            && matches!(known, Known::Session(_))
            && let Err(reason) =
                gantry_auth::csrf::check_gate_origin(request.headers(), &self.config.gate_origins)
        {
            return Admission::Refuse(HubError::CrossOrigin(reason).into_response(json));
        }
        let lease = upgrade.then(|| {
            self.callers
                .open_tunnel(kind, key, known.user().id, &owner.user)
        });
        Admission::Pass(lease)
    }

    /// The answer for a request whose path matched no route. Under `/user/NAME/` it is the
    /// gate's: a browser without a session is sent to log in, someone who may reach NAME's
    /// servers gets the 503 "not running" page, anyone else 404, whether or not NAME exists.
    /// Elsewhere it is the data plane's own 404 (`None`).
    async fn unrouted(
        &self,
        request: &Request<Incoming>,
        conn: ConnInfo,
        path: &str,
    ) -> Option<Response<ResponseBody>> {
        let name = path
            .strip_prefix("/user/")?
            .split('/')
            .next()
            .filter(|name| !name.is_empty())?;
        let json = request::wants_json(request.headers(), request.uri().path());
        let client = self.client_ip(request.headers(), conn);
        let caller = match self.resolve(request.headers(), client).await {
            Ok(Some((caller, ..))) => caller,
            Ok(None) => return Some(Self::login_first(request, json)),
            Err(error) => return Some(error.into_response(json)),
        };
        let permitted = UserName::parse(name, self.config.name_policy)
            .is_ok_and(|owner| caller.permits(gantry_auth::Action::AccessServer(&owner)));
        Some(if permitted {
            self.not_running(request, name)
        } else {
            HubError::NotFound.into_response(json)
        })
    }

    /// The answer for a permitted request to a server that is not running: 503 with a page
    /// that offers to start it. Never starts anything itself: a GET must not spawn.
    fn not_running(&self, request: &Request<Incoming>, owner: &str) -> Response<ResponseBody> {
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
                    self.oauth.adopt(key);
                }
                // A dead server's credentials die with it: its next start mints new ones.
                for key in &report.died {
                    let user = match UserName::parse(&key.user, self.config.name_policy) {
                        Ok(name) => self.store.user_by_name(&name).await,
                        Err(_) => Ok(None),
                    };
                    let revoked = match user {
                        Ok(Some(user)) => self.revoke_server_credentials(user.id, key).await,
                        Ok(None) => {
                            self.oauth.unregister(key);
                            Ok(())
                        }
                        Err(error) => Err(error.into()),
                    };
                    if let Err(error) = revoked {
                        tracing::warn!(user = %key.user, %error, "cannot revoke the dead server's credentials");
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

    /// Makes a change to `user` or their credentials take effect at once: their cached
    /// callers are forgotten, and every tunnel their credentials opened is checked against
    /// the store now (ended if the credential is gone or no longer reaches its server).
    async fn credentials_changed(&self, user: UserId) {
        let ended = self.callers.recheck_user(user).await;
        tracing::info!(
            user = user.get(),
            tunnels = ended,
            "credentials changed: cached callers forgotten; closed the user's open connections that lost their credential"
        );
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

impl Gate for Hub {
    fn admit<'a>(
        &'a self,
        request: &'a Request<Incoming>,
        conn: &'a ConnInfo,
        owner: &'a RouteOwner,
        upgrade: bool,
    ) -> AdmissionFuture<'a> {
        Box::pin(Hub::admit(self, request, *conn, owner, upgrade))
    }

    fn unrouted<'a>(
        &'a self,
        request: &'a Request<Incoming>,
        conn: &'a ConnInfo,
        path: &'a str,
    ) -> UnroutedFuture<'a> {
        Box::pin(Hub::unrouted(self, request, *conn, path))
    }
}
