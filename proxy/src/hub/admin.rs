//! The admin page, `/hub/admin`: users (search, pages, add, delete, admin rights, start and
//! stop of their default server), every server, and the configured profiles.
//!
//! Server-rendered like every other page; each action is a plain form posted with the
//! session's CSRF token and answered with a 303 back to the page, so it works without
//! JavaScript, from the keyboard and on a phone. The decisions are the REST API's
//! (`api.rs`: who may be deleted or demoted, when a server blocks a change); this module is
//! the page around them. Only admins with a browser session get here; others get 403.

use gantry_auth::CsrfToken;
use gantry_auth::store::{Session, User};
use gantry_spawner::{Profile, ServerKey, ServerName};
use http::{Request, Response, StatusCode};
use hyper::body::Incoming;
use jiff::Timestamp;

use super::pages::{self, AdminPage, AdminProfileRow, AdminServerRow, AdminUserRow};
use super::request::Form;
use super::response::{self, HubError};
use super::servers::{Phase, StartOutcome};
use super::{Caller, Hub};
use crate::errors::ResponseBody;

/// Users per page unless `?limit=` says otherwise.
const PAGE_SIZE: usize = 50;

/// The most users one page shows.
const MAX_PAGE_SIZE: usize = 200;

/// Where the page is: the search and the paging, kept across the forms posted from it.
#[derive(Debug, Default)]
struct View {
    q: String,
    offset: usize,
    limit: usize,
}

impl View {
    fn from_form(form: &Form) -> Self {
        let number = |key: &str| form.get(key).and_then(|v| v.trim().parse::<usize>().ok());
        Self {
            q: form.get("q").unwrap_or("").trim().to_owned(),
            offset: number("offset").unwrap_or(0),
            limit: number("limit").unwrap_or(PAGE_SIZE).clamp(1, MAX_PAGE_SIZE),
        }
    }

    /// `/hub/admin` with this search at `offset`.
    fn url(&self, offset: usize) -> String {
        let mut query = url::form_urlencoded::Serializer::new(String::new());
        if !self.q.is_empty() {
            query.append_pair("q", &self.q);
        }
        if offset > 0 {
            query.append_pair("offset", &offset.to_string());
        }
        if self.limit != PAGE_SIZE {
            query.append_pair("limit", &self.limit.to_string());
        }
        let query = query.finish();
        if query.is_empty() {
            "/hub/admin".to_owned()
        } else {
            format!("/hub/admin?{query}")
        }
    }
}

impl Hub {
    /// `GET /hub/admin`.
    pub(super) async fn admin_page(
        &self,
        request: &Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let Some(Caller::Session { session, secret }) = self.caller(request.headers()).await?
        else {
            return Ok(response::redirect("/hub/login?next=%2Fhub%2Fadmin"));
        };
        if !session.user.admin {
            return Err(HubError::Forbidden);
        }
        let view = View::from_form(&Form::query(request.uri()));
        self.render_admin(StatusCode::OK, &session, &secret, &view, None)
            .await
    }

    /// `POST /hub/admin/users` (form: username, admin): adds a user.
    pub(super) async fn admin_add_user(
        &self,
        request: Request<Incoming>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (session, secret, form) = self.admin_form(request).await?;
        let view = View::from_form(&form);
        let admin = form.get("admin").is_some_and(|v| v == "true" || v == "on");
        let outcome = match self.new_user_name(form.get("username").unwrap_or("")) {
            Ok(name) => self
                .create_users_named(std::slice::from_ref(&name), admin, &session.user)
                .await
                .map(|created| (name, created)),
            Err(error) => Err(error),
        };
        match outcome {
            Ok((_, created)) if !created.is_empty() => Ok(response::redirect(&view.url(0))),
            Ok((name, _)) => {
                let message = format!("User {} exists already.", name.as_str());
                self.render_admin(
                    StatusCode::CONFLICT,
                    &session,
                    &secret,
                    &view,
                    Some(message),
                )
                .await
            }
            Err(error) => self.refused(error, &session, &secret, &view).await,
        }
    }

    /// `POST /hub/admin/users/{name}/{action}`: `delete`, `admin` (form: admin=true|false),
    /// `start` (the default server with the first profile the user may use) or `stop`.
    pub(super) async fn admin_user_action(
        &self,
        request: Request<Incoming>,
        name: &str,
        action: &str,
    ) -> Result<Response<ResponseBody>, HubError> {
        if !matches!(action, "delete" | "admin" | "start" | "stop") {
            return Err(HubError::NotFound);
        }
        let (session, secret, form) = self.admin_form(request).await?;
        let view = View::from_form(&form);
        let user = self.existing_user(name).await?;
        let by = &session.user;
        let done = match action {
            "delete" => self.delete_user_by(by, &user).await,
            "admin" => match form.get("admin") {
                Some("true") => self.set_admin_by(by, &user, true).await,
                Some("false") => self.set_admin_by(by, &user, false).await,
                _ => Err(HubError::BadRequest(
                    "the form's admin field must be true or false".into(),
                )),
            },
            "start" => self.admin_start(&user).await,
            _ => {
                let key = ServerKey {
                    user: user.name.as_str().to_owned(),
                    server: ServerName::default_server(),
                };
                self.stop_for(&user, &key).await
            }
        };
        match done {
            Ok(()) => Ok(response::redirect(&view.url(view.offset))),
            Err(error) => self.refused(error, &session, &secret, &view).await,
        }
    }

    /// Starts `user`'s default server with the first profile they may use.
    async fn admin_start(&self, user: &User) -> Result<(), HubError> {
        let identity = self.identity_of(user).await?;
        let outcome = self
            .start_for(user, identity, ServerName::default_server(), None)
            .await?
            .map_err(super::api::server_error)?;
        match outcome {
            StartOutcome::Pending => {
                tracing::info!(user = %user.name.as_str(), "server started from the admin page");
                Ok(())
            }
            StartOutcome::AlreadyRunning => Err(HubError::BadRequest(format!(
                "{}'s server is already running",
                user.name.as_str()
            ))),
        }
    }

    /// The admin session behind a form of the page, after the CSRF check.
    async fn admin_form(
        &self,
        request: Request<Incoming>,
    ) -> Result<(std::sync::Arc<Session>, String, Form), HubError> {
        let (caller, form) = self.caller_form(request).await?;
        match caller {
            Caller::Session { session, secret } if session.user.admin => {
                Ok((session, secret, form))
            }
            _ => Err(HubError::Forbidden),
        }
    }

    /// The page again with the reason a form was refused, for the refusals an admin can act
    /// on; anything else is an error page.
    async fn refused(
        &self,
        error: HubError,
        session: &Session,
        secret: &str,
        view: &View,
    ) -> Result<Response<ResponseBody>, HubError> {
        let (status, message) = match error {
            HubError::BadRequest(message) => (StatusCode::BAD_REQUEST, message),
            HubError::TooManyAttempts { .. } => (
                StatusCode::TOO_MANY_REQUESTS,
                "Too many servers are starting; try again shortly.".to_owned(),
            ),
            other => return Err(other),
        };
        self.render_admin(status, session, secret, view, Some(message))
            .await
    }

    async fn render_admin(
        &self,
        status: StatusCode,
        session: &Session,
        secret: &str,
        view: &View,
        message: Option<String>,
    ) -> Result<Response<ResponseBody>, HubError> {
        let now = Timestamp::now();
        let needle = view.q.to_lowercase();
        let matching: Vec<User> = self
            .store
            .list_users()
            .await?
            .into_iter()
            .filter(|u| u.name.as_str().to_lowercase().contains(&needle))
            .collect();
        let total = matching.len();
        let offset = view
            .offset
            .min(total.saturating_sub(1) / view.limit * view.limit);
        let groups = self.groups_by_user().await?;
        let users: Vec<AdminUserRow> = matching
            .iter()
            .skip(offset)
            .take(view.limit)
            .map(|user| {
                let key = ServerKey {
                    user: user.name.as_str().to_owned(),
                    server: ServerName::default_server(),
                };
                let phase = self
                    .servers
                    .as_ref()
                    .and_then(|s| s.state(&key))
                    .map(|(phase, ..)| phase);
                AdminUserRow {
                    name: user.name.as_str().to_owned(),
                    admin: user.admin,
                    is_self: user.id == session.user.id,
                    groups: groups
                        .get(&user.name)
                        .map(|g| g.join(", "))
                        .unwrap_or_default(),
                    created: user.created.strftime("%Y-%m-%d").to_string(),
                    server: phase.as_ref().map(phase_text).unwrap_or_default(),
                    can_stop: matches!(phase, Some(Phase::Ready { .. } | Phase::Failed { .. })),
                    can_start: matches!(phase, None | Some(Phase::Failed { .. })),
                }
            })
            .collect();
        let shown = users.len();
        let page = AdminPage {
            message,
            xsrf: CsrfToken::for_session(secret).as_str().to_owned(),
            me: session.user.name.as_str().to_owned(),
            q: view.q.clone(),
            offset,
            total,
            first: if shown == 0 { 0 } else { offset + 1 },
            last: offset + shown,
            prev: (offset > 0).then(|| view.url(offset.saturating_sub(view.limit))),
            next: (offset + shown < total).then(|| view.url(offset + shown)),
            users,
            can_spawn: self.servers.is_some(),
            servers: self.server_rows(now),
            profiles: self
                .servers
                .as_ref()
                .map(|s| s.profiles().map(profile_row).collect())
                .unwrap_or_default(),
        };
        Ok(response::html(status, pages::render(&page)))
    }

    /// Every server the hub knows of, by user and server name.
    fn server_rows(&self, now: Timestamp) -> Vec<AdminServerRow> {
        let Some(servers) = &self.servers else {
            return Vec::new();
        };
        let mut keys = servers.keys();
        keys.sort();
        keys.iter()
            .filter_map(|key| {
                let (phase, profile, started) = servers.state(key)?;
                let gpus = servers
                    .profiles()
                    .find(|p| p.id == profile)
                    .map(gpu_text)
                    .unwrap_or_default();
                let last = servers.last_activity(key).unwrap_or(started);
                Some(AdminServerRow {
                    user: key.user.clone(),
                    server: key.server.as_str().to_owned(),
                    profile: profile.as_str().to_owned(),
                    phase: phase_text(&phase),
                    gpus,
                    age: span(now, started),
                    last_activity: format!("{} ago", span(now, last)),
                })
            })
            .collect()
    }
}

/// A server's phase in a word or two.
fn phase_text(phase: &Phase) -> String {
    match phase {
        Phase::Starting => "starting".to_owned(),
        Phase::Ready { .. } => "running".to_owned(),
        Phase::Stopping => "stopping".to_owned(),
        Phase::Failed { message } => format!("failed: {message}"),
    }
}

/// A profile's GPU request: `2`, `all`, `1 (shared)`; empty without GPUs.
fn gpu_text(profile: &Profile) -> String {
    profile.gpus.as_ref().map_or_else(String::new, |gpus| {
        if gpus.shared {
            format!("{} (shared)", gpus.count)
        } else {
            gpus.count.to_string()
        }
    })
}

fn profile_row(profile: &Profile) -> AdminProfileRow {
    AdminProfileRow {
        id: profile.id.as_str().to_owned(),
        name: profile.display_name.clone(),
        image: profile.image.clone(),
        cpu: profile
            .nano_cpus
            .map_or_else(|| "none".to_owned(), |n| format!("{}", n as f64 / 1e9)),
        memory: profile.memory_bytes.map_or_else(
            || "none".to_owned(),
            |b| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30)),
        ),
        gpus: {
            let text = gpu_text(profile);
            if text.is_empty() {
                "none".to_owned()
            } else {
                text
            }
        },
        groups: if profile.allowed_groups.is_empty() {
            "everyone".to_owned()
        } else {
            profile.allowed_groups.join(", ")
        },
    }
}

/// The time from `since` to `now`, roughly: `45 s`, `12 min`, `3 h 5 min`, `2 d 4 h`.
fn span(now: Timestamp, since: Timestamp) -> String {
    let secs = now.duration_since(since).as_secs().max(0);
    let (d, h, m) = (secs / 86_400, secs / 3600 % 24, secs / 60 % 60);
    if d > 0 {
        format!("{d} d {h} h")
    } else if h > 0 {
        format!("{h} h {m} min")
    } else if m > 0 {
        format!("{m} min")
    } else {
        format!("{secs} s")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_read_roughly() {
        let t0 = Timestamp::from_second(1_750_000_000).unwrap();
        let at = |secs: i64| Timestamp::from_second(1_750_000_000 + secs).unwrap();
        assert_eq!(span(at(45), t0), "45 s");
        assert_eq!(span(at(12 * 60 + 5), t0), "12 min");
        assert_eq!(span(at(3 * 3600 + 5 * 60), t0), "3 h 5 min");
        assert_eq!(span(at(2 * 86_400 + 4 * 3600), t0), "2 d 4 h");
        // A clock that stepped back reads as no time, not a negative one.
        assert_eq!(span(t0, at(10)), "0 s");
    }

    #[test]
    fn the_view_keeps_the_search_and_the_page() {
        let view = View::from_form(&Form::parse(b"q=al+ice&offset=50&limit=2"));
        assert_eq!(view.q, "al ice");
        assert_eq!(view.offset, 50);
        assert_eq!(view.url(0), "/hub/admin?q=al+ice&limit=2");
        assert_eq!(view.url(4), "/hub/admin?q=al+ice&offset=4&limit=2");
        let plain = View::from_form(&Form::parse(b"offset=x&limit=100000"));
        assert_eq!(plain.offset, 0);
        assert_eq!(plain.limit, MAX_PAGE_SIZE);
        assert_eq!(View::from_form(&Form::default()).url(0), "/hub/admin");
    }
}
