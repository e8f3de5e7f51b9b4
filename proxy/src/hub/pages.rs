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
    /// `GPU: 3 of 4 free`, for a profile with GPUs on a backend that keeps a GPU book.
    pub(super) gpus: Option<String>,
    /// Why it cannot start now (too few GPUs free); the choice is then disabled.
    pub(super) unavailable: Option<String>,
    /// Whether it is the pre-selected choice.
    pub(super) checked: bool,
}

#[derive(Template)]
#[template(path = "spawn.html")]
pub(super) struct SpawnPage {
    pub(super) message: Option<String>,
    pub(super) xsrf: String,
    pub(super) server: String,
    pub(super) profiles: Vec<ProfileChoice>,
    /// What the user holds against their limits, one phrase per limit that is set.
    pub(super) limits: Vec<String>,
}

#[derive(Template)]
#[template(path = "pending.html")]
pub(super) struct PendingPage {
    pub(super) xsrf: String,
    pub(super) server: String,
    /// The server's owner when it is not the viewer's (an admin watching); the page then
    /// offers no Cancel, which stops the viewer's own servers.
    pub(super) owner: Option<String>,
    pub(super) progress_url: String,
    /// Where the page goes when the server is ready: its prefix, built by the hub.
    pub(super) server_url: String,
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

/// One user on the admin page.
pub(super) struct AdminUserRow {
    pub(super) name: String,
    pub(super) admin: bool,
    /// The admin looking at the page: no delete or demote buttons.
    pub(super) is_self: bool,
    pub(super) groups: String,
    pub(super) created: String,
    /// The default server's phase, empty when there is none.
    pub(super) server: String,
    /// Whether the default server can be stopped (it runs or failed).
    pub(super) can_stop: bool,
    /// Whether the default server can be started (there is none, or it failed).
    pub(super) can_start: bool,
}

/// One server on the admin page.
pub(super) struct AdminServerRow {
    pub(super) user: String,
    pub(super) server: String,
    pub(super) profile: String,
    pub(super) phase: String,
    pub(super) gpus: String,
    pub(super) age: String,
    pub(super) last_activity: String,
}

/// One configured profile on the admin page.
pub(super) struct AdminProfileRow {
    pub(super) id: String,
    pub(super) name: String,
    pub(super) image: String,
    pub(super) cpu: String,
    pub(super) memory: String,
    pub(super) gpus: String,
    pub(super) groups: String,
}

#[derive(Template)]
#[template(path = "admin.html")]
pub(super) struct AdminPage {
    pub(super) message: Option<String>,
    pub(super) xsrf: String,
    pub(super) me: String,
    /// The search text (`?q=`).
    pub(super) q: String,
    pub(super) offset: usize,
    /// Users matching the search.
    pub(super) total: usize,
    /// The 1-based number of the first and last user shown.
    pub(super) first: usize,
    pub(super) last: usize,
    /// Links to the previous and next pages.
    pub(super) prev: Option<String>,
    pub(super) next: Option<String>,
    pub(super) users: Vec<AdminUserRow>,
    /// Whether a backend is configured (servers can start).
    pub(super) can_spawn: bool,
    pub(super) servers: Vec<AdminServerRow>,
    pub(super) profiles: Vec<AdminProfileRow>,
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
