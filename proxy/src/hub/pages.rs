//! Server-rendered pages (askama templates in `proxy/templates/`, escaped by default) and the
//! one stylesheet.

use askama::Template;
use http::StatusCode;

/// The stylesheet every page links, served at `/hub/static/style.css`.
pub(super) const STYLE_CSS: &str = include_str!("../../static/style.css");

/// A login button for an OpenID Connect provider.
pub(super) struct ProviderButton {
    pub(super) id: String,
    pub(super) label: String,
}

#[derive(Template)]
#[template(path = "login.html")]
pub(super) struct LoginPage {
    pub(super) message: Option<String>,
    pub(super) local: bool,
    pub(super) signup: bool,
    pub(super) xsrf: String,
    pub(super) next: String,
    pub(super) next_query: String,
    pub(super) providers: Vec<ProviderButton>,
}

#[derive(Template)]
#[template(path = "signup.html")]
pub(super) struct SignupPage {
    pub(super) message: Option<String>,
    pub(super) xsrf: String,
    pub(super) min_length: usize,
    pub(super) approval: bool,
}

/// One row of the home page's server table.
pub(super) struct ServerRow {
    pub(super) name: String,
    pub(super) profile: String,
    pub(super) state: String,
    pub(super) url: String,
    pub(super) ready: bool,
    pub(super) starting: bool,
}

#[derive(Template)]
#[template(path = "home.html")]
pub(super) struct HomePage {
    pub(super) user: String,
    pub(super) admin: bool,
    pub(super) xsrf: String,
    pub(super) can_spawn: bool,
    pub(super) servers: Vec<ServerRow>,
}

/// A profile on the spawn page.
pub(super) struct ProfileChoice {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) description: String,
    pub(super) resources: String,
}

#[derive(Template)]
#[template(path = "spawn.html")]
pub(super) struct SpawnPage {
    pub(super) message: Option<String>,
    pub(super) xsrf: String,
    pub(super) server: String,
    pub(super) profiles: Vec<ProfileChoice>,
}

#[derive(Template)]
#[template(path = "pending.html")]
pub(super) struct PendingPage {
    pub(super) server: String,
    pub(super) progress_url: String,
}

/// One row of the token page.
pub(super) struct TokenRow {
    pub(super) id: i64,
    pub(super) note: String,
    pub(super) scopes: String,
    pub(super) created: String,
    pub(super) expires: String,
    pub(super) last_used: String,
}

#[derive(Template)]
#[template(path = "token.html")]
pub(super) struct TokenPage {
    pub(super) message: Option<String>,
    pub(super) new_token: Option<String>,
    pub(super) xsrf: String,
    pub(super) admin: bool,
    pub(super) tokens: Vec<TokenRow>,
}

/// The spawn-pending page's script, served at `/hub/static/pending.js`.
pub(super) const PENDING_JS: &str = include_str!("../../static/pending.js");

#[derive(Template)]
#[template(path = "logout.html")]
pub(super) struct LogoutPage {
    pub(super) xsrf: Option<String>,
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

/// Renders a page. Rendering fails only on a formatting error inside a template, which
/// would be a bug; the fallback says so plainly rather than panic.
pub(super) fn render(page: &impl Template) -> String {
    page.render().unwrap_or_else(|error| {
        tracing::error!(%error, "a page failed to render");
        "<!doctype html><title>gantry</title><p>This page failed to render; see gantry's log.</p>"
            .to_owned()
    })
}

/// The error page for `status`.
pub(super) fn error_page(status: StatusCode, message: &str) -> String {
    render(&ErrorPage {
        status: status.as_u16(),
        reason: status.canonical_reason().unwrap_or(""),
        message,
    })
}

#[derive(Template)]
#[template(path = "not_running.html")]
struct NotRunningPage<'a> {
    owner: &'a str,
}

/// The 503 page for a server that is not running, offering to start it.
pub(super) fn not_running_page(owner: &str) -> String {
    render(&NotRunningPage { owner })
}
