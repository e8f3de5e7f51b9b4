//! Local accounts over HTTP: the login, sign-up, logout and home pages and their forms.
//!
//! Forms posted before a session exists (login, sign-up) are bound to the browser by the
//! login cookie: a random value whose derived CSRF token the form carries, checked with the
//! same rules as every other state-changing request (same-origin `Origin`/`Referer`, no
//! `text/plain`, the token). So another site cannot log a victim into the attacker's account.

use gantry_auth::store::NewUser;
use gantry_auth::{CsrfToken, NameError, Secret, UserName, safe_next};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jiff::{SignedDuration, Timestamp};

use super::config::Signup;
use gantry_auth::store::Session;
use gantry_spawner::gpu::{GpuAvailability, GpuCount};
use gantry_spawner::{ProfileId, ServerKey, ServerName};

use super::HOME;
use super::cookies::CookiePolicy;
use super::pages::{
    self, HomePage, LoginPage, LogoutPage, PendingPage, ProfileChoice, ProviderButton, ServerRow,
    SignupPage, SpawnPage,
};
use super::request::{Form, read_form};
use super::response::{self, HubError};
use super::servers::{Phase, ServerError, server_url_prefix};
use super::spawn_request::SpawnRequest;
use super::{Caller, Hub, cookies};
use crate::errors::ResponseBody;
use crate::server::ConnInfo;

/// The one message for a wrong name or password, so the form does not tell which.
const BAD_CREDENTIALS: &str = "Wrong user name or password.";

impl Hub {
    /// The login cookie's value, and a `Set-Cookie` for it when the browser has none yet.
    fn login_binding(
        &self,
        headers: &http::HeaderMap,
    ) -> Result<(String, Option<String>), HubError> {
        if let Some(value) = self.cookies.get(headers, cookies::LOGIN)
            && gantry_auth::secret::well_formed(&value)
        {
            return Ok((value, None));
        }
        let value = Secret::generate()
            .map_err(|e| HubError::Internal(e.to_string()))?
            .expose()
            .to_owned();
        let set = self
            .cookies
            .set(cookies::LOGIN, &value, Some(cookies::FLOW_MAX_AGE_SECS));
        Ok((value, Some(set)))
    }

    fn login_form(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        next: &str,
        message: Option<String>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (binding, set_cookie) = self.login_binding(headers)?;
        let next = safe_next(next, &self.home);
        let page = LoginPage {
            message,
            local: self.config.local.enabled,
            signup: self.config.local.enabled && self.config.local.signup != Signup::Closed,
            xsrf: CsrfToken::for_session(&binding).as_str().to_owned(),
            next_query: url::form_urlencoded::byte_serialize(next.as_str().as_bytes()).collect(),
            next: next.as_str().to_owned(),
            providers: self
                .providers
                .iter()
                .map(|p| ProviderButton {
                    id: p.id.clone(),
                    label: p.display_name.clone(),
                })
                .collect(),
        };
        let response = response::html(status, pages::render(&page));
        Ok(Self::with_cookies(response, set_cookie.as_slice()))
    }

    pub(super) async fn login_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let query = Form::query(request.uri());
        let next = query.get("next").unwrap_or("");
        // Someone already signed in goes straight on.
        if let Some(Caller::Session { .. }) = self.caller(request.headers()).await? {
            return Ok(response::redirect(safe_next(next, &self.home).as_str()));
        }
        self.login_form(StatusCode::OK, request.headers(), next, None)
    }

    /// Checks a pre-session form: it needs the login cookie and its token, from our origin.
    fn check_login_form(
        &self,
        parts: &http::request::Parts,
        form: Option<&Form>,
    ) -> Result<(), HubError> {
        let binding = self
            .cookies
            .get(&parts.headers, cookies::LOGIN)
            .ok_or(HubError::Csrf(gantry_auth::CsrfRejection::MissingToken))?;
        let token = CsrfToken::for_session(&binding);
        gantry_auth::csrf::check(
            &parts.method,
            &parts.headers,
            form.and_then(|f| f.get(gantry_auth::csrf::XSRF_FIELD)),
            gantry_auth::csrf::Credential::Session(&token),
            &self.config.public_origin,
        )
        .map_err(HubError::Csrf)
    }

    /// Reads a form body after the CSRF rules that need no body: a `text/plain` post is
    /// refused as forgery (403), not merely as the wrong media type.
    pub(super) async fn read_checked_form(
        &self,
        parts: &http::request::Parts,
        body: Incoming,
        check: impl Fn(&http::request::Parts, Option<&Form>) -> Result<(), HubError>,
    ) -> Result<Form, HubError> {
        let form = match read_form(&parts.headers, body).await {
            Ok(form) => form,
            Err(HubError::UnsupportedMediaType(fix)) => {
                check(parts, None)?;
                return Err(HubError::UnsupportedMediaType(fix));
            }
            Err(other) => return Err(other),
        };
        check(parts, Some(&form))?;
        Ok(form)
    }

    /// The caller behind a state-changing form and the form, after the session CSRF check:
    /// the preamble of every page form a signed-in user posts (401 without a caller, 403 on a
    /// failed check).
    pub(super) async fn caller_form(
        &self,
        request: Request<Incoming>,
    ) -> Result<(Caller, Form), HubError> {
        let (parts, body) = request.into_parts();
        let caller = self
            .caller(&parts.headers)
            .await?
            .ok_or(HubError::Unauthenticated)?;
        let form = self
            .read_checked_form(&parts, body, |p, f| {
                self.check_csrf(
                    p,
                    f.and_then(|f| f.get(gantry_auth::csrf::XSRF_FIELD)),
                    &caller,
                )
            })
            .await?;
        Ok((caller, form))
    }

    pub(super) async fn local_login(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ResponseBody>, HubError> {
        if !self.config.local.enabled {
            return Err(HubError::NotFound);
        }
        let (parts, body) = request.into_parts();
        let form = self
            .read_checked_form(&parts, body, |p, f| self.check_login_form(p, f))
            .await?;
        let next = form.get("next").unwrap_or("");
        let password = form.get("password").unwrap_or("");
        let name =
            match UserName::parse(form.get("username").unwrap_or(""), self.config.name_policy) {
                Ok(name) => name,
                Err(_) => {
                    return self.login_form(
                        StatusCode::FORBIDDEN,
                        &parts.headers,
                        next,
                        Some(BAD_CREDENTIALS.into()),
                    );
                }
            };
        let address = self.client_ip(&parts.headers, conn);
        if let Err(retry) = self.limiter.check(&name, address) {
            return Err(HubError::TooManyAttempts {
                retry_after_secs: retry.seconds(),
            });
        }
        // A place among the password checks before anything else: a saturated hub answers
        // 503 at once, without a lookup.
        let admission = self.hashing.admit()?;
        let user = self.store.user_by_name(&name).await?;
        let hash = user.as_ref().and_then(|u| u.password_hash.clone());
        // A name with no password to check (no such account, or one that logs in with
        // OpenID only) spends the budget all addresses share: a flood of made-up names,
        // which no account limit slows, is refused here before any hashing, and the workers
        // stay free for real accounts. Within the budget it costs a dummy check like a real
        // one, so its timing does not tell that the name is unknown.
        if hash.is_none()
            && let Err(retry) = self.limiter.check_unknown()
        {
            return Err(HubError::UnknownNamesBusy {
                retry_after_secs: retry.seconds(),
            });
        }
        let passwords = self.passwords.clone();
        let password_owned = password.to_owned();
        let verified = admission
            .run(move |memory| match hash {
                Some(hash) => passwords
                    .verify_in(&password_owned, &hash, memory)
                    .unwrap_or(false),
                None => passwords.verify_absent_in(&password_owned, memory),
            })
            .await?;
        let Some(user) = user.filter(|_| verified) else {
            tracing::info!(user = %name.as_str(), %address, "local login refused: wrong name or password");
            return self.login_form(
                StatusCode::FORBIDDEN,
                &parts.headers,
                next,
                Some(BAD_CREDENTIALS.into()),
            );
        };
        if !user.approved {
            return self.login_form(
                StatusCode::FORBIDDEN,
                &parts.headers,
                next,
                Some("Your account is waiting for an administrator's approval.".into()),
            );
        }
        if let Some(hash) = &user.password_hash
            && self.passwords.needs_rehash(hash)
        {
            // In the pool like every hash; a busy pool skips it until the next login.
            let passwords = self.passwords.clone();
            let password_owned = password.to_owned();
            if let Ok(Ok(new_hash)) = self
                .hashing
                .run(move |memory| passwords.hash_in(&password_owned, memory))
                .await
            {
                self.store
                    .set_password_hash(user.id, Some(&new_hash))
                    .await?;
            }
        }
        tracing::info!(user = %user.name.as_str(), %address, "local login");
        self.start_session(&parts.headers, &user, next, Vec::new())
            .await
    }

    /// Starts a session for `user` after a successful login: a new session id (the browser's
    /// old session, if any, is deleted), the cookie, and a redirect to `next` if it is safe.
    pub(super) async fn start_session(
        &self,
        headers: &http::HeaderMap,
        user: &gantry_auth::store::User,
        next: &str,
        mut set_cookies: Vec<String>,
    ) -> Result<Response<ResponseBody>, HubError> {
        if let Some(old) = self.cookies.get(headers, cookies::SESSION) {
            self.store.delete_session(&old).await?;
            self.callers.forget(super::callers::Kind::Session, &old);
        }
        let now = Timestamp::now();
        let lifetime = SignedDuration::try_from(self.config.session_lifetime)
            .map_err(|e| HubError::Internal(e.to_string()))?;
        let expires = now
            .checked_add(lifetime)
            .map_err(|e| HubError::Internal(e.to_string()))?;
        let secret = self.store.create_session(user.id, now, expires).await?;
        // Every login (local, sign-up, OpenID) comes through here.
        self.activity.note(user.id, now);
        let max_age = i64::try_from(self.config.session_lifetime.as_secs()).unwrap_or(i64::MAX);
        set_cookies.push(
            self.cookies
                .set(cookies::SESSION, secret.expose(), Some(max_age)),
        );
        set_cookies.push(self.cookies.clear(cookies::LOGIN));
        let target = safe_next(next, &self.home);
        Ok(Self::with_cookies(
            response::redirect(target.as_str()),
            &set_cookies,
        ))
    }

    pub(super) async fn signup_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        if !self.config.local.enabled || self.config.local.signup == Signup::Closed {
            return Err(HubError::NotFound);
        }
        self.signup_form(StatusCode::OK, request.headers(), None)
    }

    fn signup_form(
        &self,
        status: StatusCode,
        headers: &http::HeaderMap,
        message: Option<String>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (binding, set_cookie) = self.login_binding(headers)?;
        let page = SignupPage {
            message,
            xsrf: CsrfToken::for_session(&binding).as_str().to_owned(),
            min_length: self.config.local.min_password_length,
            approval: self.config.local.signup == Signup::Approval,
        };
        Ok(Self::with_cookies(
            response::html(status, pages::render(&page)),
            set_cookie.as_slice(),
        ))
    }

    pub(super) async fn signup(
        &self,
        request: Request<Incoming>,
        conn: ConnInfo,
    ) -> Result<Response<ResponseBody>, HubError> {
        if !self.config.local.enabled || self.config.local.signup == Signup::Closed {
            return Err(HubError::NotFound);
        }
        let (parts, body) = request.into_parts();
        let form = self
            .read_checked_form(&parts, body, |p, f| self.check_login_form(p, f))
            .await?;
        let refuse = |message: String| {
            self.signup_form(StatusCode::BAD_REQUEST, &parts.headers, Some(message))
        };
        let name =
            match UserName::parse(form.get("username").unwrap_or(""), self.config.name_policy) {
                Ok(name) => name,
                Err(error) => return refuse(name_problem(&error)),
            };
        // Sign-ups count against the same limits as logins: they cost an argon2 hash each.
        let address = self.client_ip(&parts.headers, conn);
        if let Err(retry) = self.limiter.check(&name, address) {
            return Err(HubError::TooManyAttempts {
                retry_after_secs: retry.seconds(),
            });
        }
        let password = form.get("password").unwrap_or("");
        let min = self.config.local.min_password_length;
        if password.chars().count() < min {
            return refuse(format!("Choose a password of at least {min} characters."));
        }
        let passwords = self.passwords.clone();
        let password_owned = password.to_owned();
        let hash = self
            .hashing
            .run(move |memory| passwords.hash_in(&password_owned, memory))
            .await?;
        let hash = match hash {
            Ok(hash) => hash,
            Err(error) => return refuse(format!("This password cannot be used: {error}.")),
        };
        let open = self.config.local.signup == Signup::Open;
        let new = NewUser {
            name: name.clone(),
            password_hash: Some(hash),
            admin: false,
            approved: open,
        };
        let user = match self.store.create_user(&new, Timestamp::now()).await {
            Ok(user) => user,
            Err(gantry_auth::StoreError::UserExists { .. }) => {
                return refuse("That user name is taken; choose another.".to_owned());
            }
            Err(other) => return Err(other.into()),
        };
        tracing::info!(user = %user.name.as_str(), approved = open, "local sign-up");
        if open {
            return self
                .start_session(&parts.headers, &user, "", Vec::new())
                .await;
        }
        self.login_form(
            StatusCode::OK,
            &parts.headers,
            "",
            Some(format!(
                "Account {} created. An administrator approves it before your first sign-in.",
                user.name.as_str()
            )),
        )
    }

    pub(super) async fn logout_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let xsrf = match self.caller(request.headers()).await? {
            Some(Caller::Session { secret, .. }) => {
                Some(CsrfToken::for_session(&secret).as_str().to_owned())
            }
            _ => None,
        };
        Ok(response::html(
            StatusCode::OK,
            pages::render(&LogoutPage { xsrf }),
        ))
    }

    /// Ends this browser's session and closes the user's open WebSockets; after an OpenID
    /// login whose provider advertises `end_session_endpoint`, continues to the provider's
    /// logout (RP-initiated logout).
    pub(super) async fn logout(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (parts, body) = request.into_parts();
        let caller = self.caller(&parts.headers).await?;
        let Some(caller @ Caller::Session { .. }) = caller else {
            // No live session: nothing to end, nothing to forge. Tidy the cookie up.
            let clear = [self.cookies.clear(cookies::SESSION)];
            return Ok(Self::with_cookies(response::redirect("/hub/login"), &clear));
        };
        let _form = self
            .read_checked_form(&parts, body, |p, f| {
                self.check_csrf(
                    p,
                    f.and_then(|f| f.get(gantry_auth::csrf::XSRF_FIELD)),
                    &caller,
                )
            })
            .await?;
        let Caller::Session { session, secret } = caller else {
            unreachable!("matched above");
        };
        self.store.delete_session(&secret).await?;
        // The notebook logins made through this hub end with it.
        self.store.revoke_oauth_tokens(session.user.id).await?;
        self.callers.forget(super::callers::Kind::Session, &secret);
        self.credentials_changed(session.user.id).await;
        tracing::info!(user = %session.user.name.as_str(), "logout");
        let mut clear = vec![self.cookies.clear(cookies::SESSION)];
        let mut location = "/hub/login".to_owned();
        if let Some(id) = self.cookies.get(&parts.headers, cookies::IDP) {
            clear.push(self.cookies.clear(cookies::IDP));
            if let Some(provider) = self.providers.iter().find(|p| p.id == id) {
                let back = format!("{}/hub/login", self.config.public_origin.as_str());
                match provider.provider.logout_url(None, Some(&back)) {
                    Ok(url) => location = url.to_string(),
                    Err(gantry_auth::OidcError::NoEndSession) => {}
                    Err(error) => {
                        tracing::warn!(provider = %id, %error, "cannot build the provider's logout URL")
                    }
                }
            }
        }
        Ok(Self::with_cookies(response::redirect(&location), &clear))
    }

    pub(super) async fn home_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let Some(Caller::Session { session, secret }) = self.caller(request.headers()).await?
        else {
            return Ok(response::redirect("/hub/login?next=%2Fhub%2Fhome"));
        };
        let user = &session.user;
        let servers = self
            .servers
            .as_ref()
            .map(|servers| {
                servers
                    .of_user(user.name.as_str())
                    .into_iter()
                    .map(|(key, phase, profile, _)| {
                        let (state, ready, starting) = match &phase {
                            Phase::Ready { .. } => ("running".to_owned(), true, false),
                            Phase::Starting => ("starting".to_owned(), false, true),
                            Phase::Stopping => ("stopping".to_owned(), false, false),
                            Phase::Failed { message } => {
                                (format!("failed: {message}"), false, false)
                            }
                        };
                        ServerRow {
                            url: format!("{}/", server_url_prefix(&key)),
                            name: key.server.as_str().to_owned(),
                            profile: profile.as_str().to_owned(),
                            state,
                            ready,
                            starting,
                        }
                    })
                    .collect()
            })
            .unwrap_or_default();
        Ok(response::html(
            StatusCode::OK,
            pages::render(&HomePage {
                user: user.name.as_str().to_owned(),
                admin: user.admin,
                xsrf: CsrfToken::for_session(&secret).as_str().to_owned(),
                can_spawn: self.servers.is_some(),
                servers,
            }),
        ))
    }

    /// The session caller of a page, or the redirect to the login page that comes back here.
    async fn page_caller(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Result<(std::sync::Arc<Session>, String), Response<ResponseBody>>, HubError> {
        match self.caller(request.headers()).await? {
            Some(Caller::Session { session, secret }) => Ok(Ok((session, secret))),
            _ => {
                let next = request
                    .uri()
                    .path_and_query()
                    .map_or("/hub/home", |pq| pq.as_str());
                let next: String = url::form_urlencoded::byte_serialize(next.as_bytes()).collect();
                Ok(Err(response::redirect(&format!("/hub/login?next={next}"))))
            }
        }
    }

    pub(super) async fn spawn_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (session, secret) = match self.page_caller(request).await? {
            Ok(found) => found,
            Err(redirect) => return Ok(redirect),
        };
        let server = Form::query(request.uri())
            .get("server")
            .unwrap_or("")
            .to_owned();
        // The last profile this browser started with; checked against the user's profiles
        // below, so an unknown or forbidden one is ignored.
        let remembered = CookiePolicy { https: false }.get(request.headers(), PROFILE_COOKIE);
        self.spawn_form(
            StatusCode::OK,
            &session,
            &secret,
            server,
            remembered.as_deref(),
            None,
        )
        .await
    }

    /// The spawn page, with `preferred` (the remembered or just-posted profile) checked when
    /// the user may use it and it can start now.
    async fn spawn_form(
        &self,
        status: StatusCode,
        session: &Session,
        secret: &str,
        server: String,
        preferred: Option<&str>,
        message: Option<String>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let servers = self.servers()?;
        let identity = self.identity_of(&session.user).await?;
        // The limits are checked for the server named in the form (the default one until a
        // valid name is typed), as the start will check them.
        let target = ServerName::new(server.trim()).unwrap_or_default();
        let mut profiles: Vec<ProfileChoice> = servers
            .profiles_for(&identity)
            .map(|p| {
                let available = p
                    .gpus
                    .and_then(|want| Some((want, servers.gpu_availability(want.shared)?)));
                let refused = servers
                    .limit_refusal(&identity, &target, p)
                    .map(|why| format!("Not now: {why}"));
                ProfileChoice {
                    id: p.id.as_str().to_owned(),
                    name: p.display_name.clone(),
                    description: p.description.clone(),
                    resources: describe_resources(p),
                    gpus: available.map(|(_, a)| format!("GPU: {} of {} free", a.free, a.total)),
                    unavailable: refused
                        .or_else(|| available.and_then(|(want, a)| gpu_shortage(want.count, a))),
                    checked: false,
                }
            })
            .collect();
        let limits = describe_limits(
            servers.limits(),
            &servers.usage_of(&identity.user),
            &identity,
        );
        let selectable: Vec<(&str, bool)> = profiles
            .iter()
            .map(|p| (p.id.as_str(), p.unavailable.is_none()))
            .collect();
        if let Some(i) = preselect(&selectable, preferred) {
            profiles[i].checked = true;
        }
        Ok(response::html(
            status,
            pages::render(&SpawnPage {
                message,
                xsrf: CsrfToken::for_session(secret).as_str().to_owned(),
                server,
                profiles,
                limits,
            }),
        ))
    }

    /// `POST /hub/spawn` (form: profile, server): starts the server and goes to its progress.
    pub(super) async fn spawn(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (caller, form) = self.caller_form(request).await?;
        let Caller::Session { session, secret } = caller else {
            return Err(HubError::Forbidden);
        };
        let server_text = form.get("server").unwrap_or("").trim().to_owned();
        if let Err(error) = SpawnRequest::from_form(form.keys(), form.get("profile")) {
            return self
                .spawn_form(
                    StatusCode::BAD_REQUEST,
                    &session,
                    &secret,
                    server_text,
                    form.get("profile"),
                    Some(error.to_string()),
                )
                .await;
        }
        let Ok(server) = ServerName::new(&server_text) else {
            return self
                .spawn_form(
                    StatusCode::BAD_REQUEST,
                    &session,
                    &secret,
                    server_text,
                    form.get("profile"),
                    Some("Use lower-case letters, digits, '.', '_' and '-' in server names, starting with a letter or a digit.".into()),
                )
                .await;
        };
        let identity = self.identity_of(&session.user).await?;
        match self
            .start_for(&session.user, identity, server, form.get("profile"))
            .await?
        {
            Ok(_) => {
                let query: String =
                    url::form_urlencoded::byte_serialize(server_text.as_bytes()).collect();
                let response = response::redirect(&format!("/hub/spawn-pending?server={query}"));
                // The start accepted the profile, so it is one the user may use: remember it.
                let remember: Vec<String> = form
                    .get("profile")
                    .filter(|p| ProfileId::new(p).is_ok())
                    .map(|p| remember_profile_cookie(p, self.cookies.https))
                    .into_iter()
                    .collect();
                Ok(Self::with_cookies(response, &remember))
            }
            Err(ServerError::TooManySpawns) => Err(HubError::TooManyAttempts {
                retry_after_secs: 10,
            }),
            Err(error) => {
                self.spawn_form(
                    StatusCode::BAD_REQUEST,
                    &session,
                    &secret,
                    server_text,
                    form.get("profile"),
                    Some(error.to_string()),
                )
                .await
            }
        }
    }

    pub(super) async fn pending_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (session, secret) = match self.page_caller(request).await? {
            Ok(found) => found,
            Err(redirect) => return Ok(redirect),
        };
        // Only a valid server name of the caller's own servers, or for an admin (anyone who
        // may act as the user) the named user's: the page's URLs are built here from parsed
        // names, never from the query's text.
        let query = Form::query(request.uri());
        let server =
            ServerName::new(query.get("server").unwrap_or("")).map_err(|_| HubError::NotFound)?;
        let owner = match query.get("user") {
            None => session.user.clone(),
            Some(name) => {
                let caller = Caller::Session {
                    session: session.clone(),
                    secret: secret.clone(),
                };
                self.target_user(&caller, name).await?
            }
        };
        let key = ServerKey {
            user: owner.name.as_str().to_owned(),
            server: server.clone(),
        };
        let segment = |text: &str| -> String {
            percent_encoding::utf8_percent_encode(text, percent_encoding::NON_ALPHANUMERIC)
                .to_string()
        };
        let name = segment(&key.user);
        let progress_url = if server.is_default() {
            format!("/hub/api/users/{name}/server/progress")
        } else {
            format!("/hub/api/users/{name}/servers/{}/progress", server.as_str())
        };
        Ok(response::html(
            StatusCode::OK,
            pages::render(&PendingPage {
                xsrf: CsrfToken::for_session(&secret).as_str().to_owned(),
                server: server.as_str().to_owned(),
                owner: (owner.id != session.user.id).then(|| key.user.clone()),
                progress_url,
                server_url: format!("{}/", server_url_prefix(&key)),
            }),
        ))
    }

    /// `POST /hub/stop` (form: server): stops one of the caller's servers, or cancels its
    /// start (the spawn-pending page's Cancel button).
    pub(super) async fn stop_page(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (caller, form) = self.caller_form(request).await?;
        let server =
            ServerName::new(form.get("server").unwrap_or("")).map_err(|_| HubError::NotFound)?;
        let key = ServerKey {
            user: caller.user().name.as_str().to_owned(),
            server,
        };
        self.stop_for(caller.user(), &key).await?;
        Ok(response::redirect(HOME))
    }
}

/// The spawn page's line on the user's limits: what they hold of each limit that is set.
fn describe_limits(
    limits: &super::servers::UserLimits,
    usage: &super::servers::Usage,
    identity: &gantry_spawner::Identity,
) -> Vec<String> {
    let mut line = Vec::new();
    if let Some(limit) = limits.running_servers {
        line.push(format!(
            "{} of {limit} servers running",
            usage.running.len()
        ));
    }
    if let Some(limit) = limits.named_servers {
        line.push(format!("{} of {limit} named servers", usage.named.len()));
    }
    if let Some((limit, _)) = limits.gpu_cap(identity) {
        line.push(format!("{} of {limit} GPUs in use", usage.gpus));
    }
    line
}

/// The cookie that remembers the profile this browser last started a server with, so that the
/// spawn page checks it next time. A preference, not a credential: it is read only as a
/// profile id among those the user may use, and ignored otherwise.
const PROFILE_COOKIE: &str = "gantry-profile";
/// How long the profile is remembered: a year, in seconds.
const PROFILE_COOKIE_MAX_AGE_SECS: i64 = 365 * 24 * 3600;

/// The `Set-Cookie` value remembering `profile`: only the hub's pages (`Path=/hub/`) see it,
/// `HttpOnly`, `SameSite=Lax`, `Secure` under https. It cannot carry the `__Host-` prefix,
/// which needs `Path=/`; a tossed copy can only pre-select another allowed profile.
fn remember_profile_cookie(profile: &str, https: bool) -> String {
    cookie::Cookie::build((PROFILE_COOKIE, profile.to_owned()))
        .path("/hub/")
        .http_only(true)
        .same_site(cookie::SameSite::Lax)
        .secure(https)
        .max_age(cookie::time::Duration::seconds(PROFILE_COOKIE_MAX_AGE_SECS))
        .build()
        .encoded()
        .to_string()
}

/// Which of the spawn page's profiles (`(id, can start now)`, in page order) to check: the
/// `preferred` one when it is listed and can start, else the first that can; `None` when
/// none can.
fn preselect(profiles: &[(&str, bool)], preferred: Option<&str>) -> Option<usize> {
    preferred
        .and_then(|want| profiles.iter().position(|(id, ok)| *ok && *id == want))
        .or_else(|| profiles.iter().position(|(_, ok)| *ok))
}

/// Why a profile asking for `count` GPUs cannot start now, given `available`; `None` when it
/// can.
fn gpu_shortage(count: GpuCount, available: GpuAvailability) -> Option<String> {
    if available.can_satisfy(count) {
        return None;
    }
    Some(if available.total == 0 {
        "Not available: this host has no GPUs.".to_owned()
    } else {
        let wanted = match count {
            GpuCount::All => format!("all {} GPUs", available.total),
            GpuCount::Exactly(n) if n.get() == 1 => "1 GPU".to_owned(),
            GpuCount::Exactly(n) => format!("{n} GPUs"),
        };
        format!(
            "Not available now: it needs {wanted} and {} of {} are free. Try again when \
             another server stops.",
            available.free, available.total
        )
    })
}

/// A profile's resources in one line for the spawn page.
fn describe_resources(profile: &gantry_spawner::Profile) -> String {
    let mut parts = Vec::new();
    if let Some(nano) = profile.nano_cpus {
        parts.push(format!("{} CPU", nano as f64 / 1e9));
    }
    if let Some(bytes) = profile.memory_bytes {
        parts.push(format!(
            "{:.1} GiB memory",
            bytes as f64 / f64::from(1u32 << 30)
        ));
    }
    match profile.gpus.map(|g| g.count) {
        Some(GpuCount::All) => parts.push("all GPUs".to_owned()),
        Some(GpuCount::Exactly(n)) if n.get() == 1 => parts.push("1 GPU".to_owned()),
        Some(GpuCount::Exactly(n)) => parts.push(format!("{n} GPUs")),
        None => {}
    }
    if profile.spark.is_some() {
        parts.push("Spark".to_owned());
    }
    if parts.is_empty() {
        "no limits".to_owned()
    } else {
        parts.join(", ")
    }
}

/// What is wrong with a user name, for the sign-up form.
fn name_problem(error: &NameError) -> String {
    format!("That user name cannot be used: {error}.")
}

#[cfg(test)]
mod tests;
