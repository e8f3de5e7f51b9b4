//! The configuration file of `gantry up` (`gantry.toml`), and its check.
//!
//! ```toml
//! [hub]
//! bind = "127.0.0.1:8000"
//! public_url = "https://hub.example.org"
//! data_dir = "/var/lib/gantry"
//!
//! [auth.local]
//! signup = "approval"
//!
//! [auth.oidc.lab]
//! display_name = "Lab SSO"
//! issuer_url = "https://id.example.org/realms/lab"
//! client_id = "gantry"
//! client_secret_file = "/etc/gantry/oidc-lab-secret"
//! allowed_groups = ["analysts"]
//!
//! [profiles.cpu]
//! display_name = "CPU only"
//! image = "quay.io/jupyter/base-notebook:latest"
//! ```
//!
//! `[hub]`, `[proxy]` and `[auth]` are read here; every other table (`[docker]`,
//! `[profiles.*]`, …) belongs to the spawner and is read as its [`SpawnerConfig`]. Every table
//! refuses unknown keys. [`FileConfig::validate`] checks everything at once and reports each
//! problem as `key: problem (fix: …)`.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use gantry_auth::{GateOrigins, LoginLimits, NamePolicy, OidcConfig, PublicOrigin};
use gantry_spawner::SpawnerConfig;
use ipnet::IpNet;
use serde::Deserialize;

#[cfg(test)]
mod tests;

/// The whole configuration file.
#[derive(Clone, Debug, Default)]
pub struct FileConfig {
    /// `[hub]`: where gantry listens and keeps its data.
    pub hub: HubSection,
    /// `[proxy]`: the data plane's limits and timeouts.
    pub proxy: ProxySection,
    /// `[auth]`: how users log in.
    pub auth: AuthSection,
    /// Every other table: the spawner's (`[docker]`, `[profiles.<id>]`, …). Unknown tables
    /// are refused there.
    pub spawner: SpawnerConfig,
}

/// The hub's tables; the spawner's are read separately.
#[derive(Deserialize)]
struct HubTables {
    #[serde(default)]
    hub: HubSection,
    #[serde(default)]
    proxy: ProxySection,
    #[serde(default)]
    auth: AuthSection,
}

/// The tables of the file that are the hub's, not the spawner's.
const HUB_TABLES: [&str; 3] = ["hub", "proxy", "auth"];

/// `[hub]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HubSection {
    /// The address browsers connect to (the proxy's listener). Default: `"127.0.0.1:8000"`,
    /// this machine only; use `"0.0.0.0:8000"` to serve other machines.
    pub bind: SocketAddr,
    /// The origin browsers see gantry at, `http(s)://host[:port]`, without a path. It decides
    /// the cookie flags (`https` → `Secure` and the `__Host-` prefix) and the origin that
    /// state-changing requests must come from. Default: `http://` + `bind` (with `localhost`
    /// for an unspecified address).
    pub public_url: Option<String>,
    /// The folder for the SQLite database. Created if missing. Default: `"gantry-data"`, in
    /// the working directory.
    pub data_dir: PathBuf,
    /// A database URL, `sqlite://PATH` or `postgres://…`. Default: `gantry.sqlite` in
    /// `data_dir`.
    pub database_url: Option<String>,
    /// How long a login lasts, in days. Default: 14.
    pub session_days: u32,
    /// Log format: `"text"` or `"json"`. Default: `"text"`.
    pub log_format: LogFormat,
    /// Most servers starting at once; past it a start is answered 429 with `Retry-After`.
    /// Default: 20.
    pub max_concurrent_spawns: usize,
    /// The port of the hub API as notebook servers reach it: gantry listens on the gateway
    /// address of the servers' Docker network at this port (JupyterHub's `hub_connect_url`,
    /// `JUPYTERHUB_API_URL`). Keep it stable: servers that outlive a restart keep the URL.
    /// Default: 8081.
    pub servers_api_port: u16,
    /// The address gantry listens on for the servers' hub API, `IP:PORT`, instead of the
    /// Docker network's gateway at `servers_api_port`. It serves the hub without TLS: keep it
    /// reachable by the servers' hosts only. Default: the gateway under Docker;
    /// `0.0.0.0:<servers_api_port>` under `[mesos]`, whose servers run on other machines.
    pub servers_api_bind: Option<SocketAddr>,
    /// The hub API's URL as servers reach it (`JUPYTERHUB_API_URL`), `http(s)://host[:port]`
    /// (gantry appends `/hub/api`) or a URL ending in `/hub/api`. Required under `[mesos]`:
    /// notebooks run on the agents, which reach gantry by an address only the operator
    /// knows. Default under Docker: `http://<servers_api_bind>/hub/api`.
    pub servers_api_url: Option<String>,
    /// How often servers are checked against their profile's `idle_timeout` and `max_age`,
    /// in seconds. Default: 60.
    pub cull_interval_secs: u64,
    /// How often the backend is asked what runs, in seconds: a server that died is noticed
    /// (and shown to its user) within this time, and a running server the hub does not know
    /// is routed. Missing routes of ready servers are put back every second regardless.
    /// Default: 10.
    pub poll_interval_secs: u64,
    /// Most named servers one user may have (starting, running or failed), as JupyterHub's
    /// `named_server_limit_per_user`; `0` means no limit, as there. Past it a start is
    /// refused with 400 naming the limit. Default: 5.
    pub named_server_limit_per_user: usize,
    /// Most servers one user may have starting or running at once, the default server
    /// included; `0` means no limit. Default: 3.
    pub max_servers_per_user: usize,
    /// Most GPUs across one user's starting and running servers (a `gpus = "all"` profile
    /// counts as every device of the backend). Unset: no cap.
    pub max_gpus_per_user: Option<u32>,
    /// GPU caps by group, `group = N`: a member of any of these groups gets the largest of
    /// their groups' caps instead of `max_gpus_per_user`. Default: none.
    pub max_gpus_per_group: std::collections::BTreeMap<String, u32>,
    /// Seconds a client has to send a hub request's whole body (form or JSON), counted from
    /// its request head; past it the request is answered 408 and the connection closed, so a
    /// slow sender cannot hold a connection. Default: 30.
    pub request_body_timeout_secs: u64,
    /// Origins besides `public_url` whose pages may use a session cookie to open a WebSocket
    /// or send a state-changing request to a user's server through the gate, each
    /// `http(s)://host[:port]`. Default: none (only gantry's own pages; with no `public_url`,
    /// also the origin of the host name the request was sent to).
    pub allowed_origins: Vec<String>,
}

impl HubSection {
    /// The per-user limits these keys set.
    pub fn user_limits(&self) -> super::servers::UserLimits {
        let unless_zero = |n: usize| (n > 0).then_some(n);
        super::servers::UserLimits {
            named_servers: unless_zero(self.named_server_limit_per_user),
            running_servers: unless_zero(self.max_servers_per_user),
            gpus: self.max_gpus_per_user,
            gpus_by_group: self.max_gpus_per_group.clone(),
        }
    }
}

impl Default for HubSection {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 8000)),
            public_url: None,
            data_dir: PathBuf::from("gantry-data"),
            database_url: None,
            session_days: 14,
            log_format: LogFormat::Text,
            max_concurrent_spawns: 20,
            servers_api_port: 8081,
            servers_api_bind: None,
            servers_api_url: None,
            cull_interval_secs: 60,
            poll_interval_secs: 10,
            named_server_limit_per_user: 5,
            max_servers_per_user: 3,
            max_gpus_per_user: None,
            max_gpus_per_group: std::collections::BTreeMap::new(),
            request_body_timeout_secs: 30,
            allowed_origins: Vec::new(),
        }
    }
}

/// How log lines are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// `[proxy]`: the data plane's settings; see `gantry proxy --help` for their meaning.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ProxySection {
    /// Seconds a client connection may take to send a request head (bounds keep-alive idle
    /// time too); an HTTP/2 connection with no request in flight for this long is closed.
    /// Default: 30.
    pub header_timeout_secs: u64,
    /// Seconds to wait for a TCP connection to a notebook server before answering 503.
    /// Default: 5.
    pub upstream_connect_timeout_secs: u64,
    /// Seconds to wait for a notebook server's response headers before answering 504.
    /// Default: 300.
    pub proxy_timeout_secs: u64,
    /// Largest request line plus headers, in bytes; larger requests get 431. Default: 65536.
    pub max_header_bytes: usize,
    /// Most client connections open at once on each listener, WebSockets included. Past it
    /// gantry stops accepting: new connections wait in the kernel's listen backlog until one
    /// closes. Keep the process's file-descriptor limit above twice this (each proxied
    /// connection also holds one to its server). Default: 10000.
    pub max_connections: usize,
    /// Addresses or networks (CIDR) of load balancers in front of gantry, whose
    /// `X-Forwarded-*` headers are trusted. Default: none.
    pub trusted_downstream: Vec<String>,
    /// PEM certificate chain for serving browsers over TLS (with `tls_key`). Default: none.
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for serving browsers over TLS (with `tls_cert`). Default: none.
    pub tls_key: Option<PathBuf>,
}

impl Default for ProxySection {
    fn default() -> Self {
        Self {
            header_timeout_secs: 30,
            upstream_connect_timeout_secs: 5,
            proxy_timeout_secs: 300,
            max_header_bytes: 64 * 1024,
            max_connections: crate::server::DEFAULT_MAX_CONNECTIONS,
            trusted_downstream: Vec::new(),
            tls_cert: None,
            tls_key: None,
        }
    }
}

/// `[auth]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthSection {
    /// `"fold"`: `Alice` and `alice` are one account (names are lower-cased after NFKC);
    /// `"keep"`: case is kept. Default: `"fold"`.
    pub username_case: UsernameCase,
    /// `[auth.local]`: accounts with a password kept by gantry.
    pub local: LocalSection,
    /// `[auth.oidc.<id>]`: OpenID Connect providers, one login button each. The id (1 to 32
    /// of `a-z`, `0-9`, `-`) appears in the callback URL. Default: none.
    pub oidc: BTreeMap<String, OidcSection>,
    /// `[auth.limits]`: login attempts allowed per account and per client address, and the
    /// work logins may cause at once.
    pub limits: LimitsSection,
}

impl Default for AuthSection {
    fn default() -> Self {
        Self {
            username_case: UsernameCase::Fold,
            local: LocalSection::default(),
            oidc: BTreeMap::new(),
            limits: LimitsSection::default(),
        }
    }
}

/// Whether user names are case-folded.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsernameCase {
    /// Lower-case names after NFKC.
    #[default]
    Fold,
    /// Keep case.
    Keep,
}

/// `[auth.local]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSection {
    /// Show the password form and accept local logins. Default: `true`.
    pub enabled: bool,
    /// Who may create an account: `"closed"` (admins only, `gantry user add`), `"approval"`
    /// (anyone may sign up; an admin approves before the first login) or `"open"`.
    /// Default: `"closed"`.
    pub signup: Signup,
    /// Shortest password accepted at sign-up, in characters. Default: 8.
    pub min_password_length: usize,
}

impl Default for LocalSection {
    fn default() -> Self {
        Self {
            enabled: true,
            signup: Signup::Closed,
            min_password_length: 8,
        }
    }
}

/// Who may create a local account.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Signup {
    /// Only admins create accounts.
    #[default]
    Closed,
    /// Anyone may sign up; an admin approves the account before its first login.
    Approval,
    /// Anyone may sign up and log in at once.
    Open,
}

/// `[auth.limits]`: the rates of [`LoginLimits`] and the caps of [`LoginCaps`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsSection {
    /// Login attempts per minute for one account, sustained. Default: 5.
    pub account_per_minute: u32,
    /// Attempts one account may make at once. Default: 5.
    pub account_burst: u32,
    /// Login attempts per minute from one client address (IPv6: one /64). Default: 30.
    pub address_per_minute: u32,
    /// Attempts one address may make at once. Default: 20.
    pub address_burst: u32,
    /// Login attempts per minute naming no account with a password, from all addresses
    /// together, sustained; past it such attempts are answered 503 with `Retry-After` before
    /// any hashing, and logins to real accounts keep the hashing workers. Default: 60.
    pub unknown_names_per_minute: u32,
    /// Such attempts at once before the per-minute rate applies. Default: 30.
    pub unknown_names_burst: u32,
    /// Password hashes (login checks and sign-ups, about 19 MiB each) computed at once.
    /// Default: one per CPU core.
    pub password_hash_workers: Option<usize>,
    /// Logins and sign-ups that may wait for a hashing worker; past it they are answered 503
    /// with `Retry-After` at once. Default: 64.
    pub password_hash_queue: usize,
    /// OpenID Connect logins in flight (sent to the provider, not yet back) per provider;
    /// past it new ones are answered 503 with `Retry-After` and none in flight is dropped.
    /// Default: 10000.
    pub oidc_logins_in_flight: usize,
    /// OpenID Connect logins in flight from one client address (IPv6: one /64), all providers
    /// together; past it that address gets 429 with `Retry-After`. Default: 100.
    pub oidc_logins_in_flight_per_address: usize,
}

impl Default for LimitsSection {
    fn default() -> Self {
        let d = LoginLimits::default();
        let caps = LoginCaps::default();
        Self {
            account_per_minute: d.account_per_minute,
            account_burst: d.account_burst,
            address_per_minute: d.address_per_minute,
            address_burst: d.address_burst,
            unknown_names_per_minute: d.unknown_names_per_minute,
            unknown_names_burst: d.unknown_names_burst,
            password_hash_workers: caps.hash_workers,
            password_hash_queue: caps.hash_queue,
            oidc_logins_in_flight: caps.oidc_in_flight,
            oidc_logins_in_flight_per_address: caps.oidc_in_flight_per_address,
        }
    }
}

/// How much work logins may cause at once, from `[auth.limits]`. Past a cap a login is
/// refused at once (503 or 429 with `Retry-After`); nothing admitted earlier is dropped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LoginCaps {
    /// Password hashes computed at once; `None`: one per CPU core.
    pub hash_workers: Option<usize>,
    /// Logins and sign-ups waiting for a hashing worker.
    pub hash_queue: usize,
    /// OpenID Connect logins in flight per provider.
    pub oidc_in_flight: usize,
    /// OpenID Connect logins in flight per client address (IPv6: one /64).
    pub oidc_in_flight_per_address: usize,
}

impl Default for LoginCaps {
    fn default() -> Self {
        Self {
            hash_workers: None,
            hash_queue: 64,
            oidc_in_flight: 10_000,
            oidc_in_flight_per_address: 100,
        }
    }
}

/// `[auth.oidc.<id>]`: one OpenID Connect provider. The claim-mapping keys are those of
/// [`OidcConfig`].
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OidcSection {
    /// The login button's label. Default: the id.
    pub display_name: Option<String>,
    /// The issuer URL, exactly as the provider writes it.
    pub issuer_url: String,
    /// The client id registered at the provider.
    pub client_id: String,
    /// The client secret. Prefer `client_secret_file`. Default: none (a public client).
    pub client_secret: Option<String>,
    /// A file holding the client secret (trailing white space ignored). Default: none.
    pub client_secret_file: Option<PathBuf>,
    /// The callback URL registered at the provider. Default:
    /// `<public_url>/hub/oidc/<id>/callback`.
    pub redirect_url: Option<String>,
    /// Scopes besides `openid`. Default: `["profile", "email"]`.
    pub scopes: Option<Vec<String>>,
    /// The claim holding the user name. Default: `preferred_username`.
    pub username_claim: Option<String>,
    /// The claim holding the groups. Default: `groups`.
    pub groups_claim: Option<String>,
    /// Groups whose members may log in. Default: none.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// Groups whose members may log in and are admins. Default: none.
    #[serde(default)]
    pub admin_groups: Vec<String>,
    /// Let everyone the provider authenticates log in. Default: `false`.
    #[serde(default)]
    pub allow_all: bool,
    /// The claim holding the numeric UID. Default: none.
    pub uid_claim: Option<String>,
    /// The claim holding the numeric GID. Default: none.
    pub gid_claim: Option<String>,
    /// Also fetch userinfo after the token exchange. Default: `false`.
    #[serde(default)]
    pub fetch_userinfo: bool,
    /// Timeout of each request to the provider, in seconds. Default: 10.
    pub http_timeout_secs: Option<u64>,
}

/// One problem in the configuration file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConfigProblem {
    /// The key, such as `hub.public_url`.
    pub key: String,
    /// What is wrong.
    pub problem: String,
    /// How to fix it.
    pub fix: String,
}

impl fmt::Display for ConfigProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {} (fix: {})", self.key, self.problem, self.fix)
    }
}

/// Every problem found, one per line.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", .problems.iter().map(ToString::to_string).collect::<Vec<_>>().join("\n"))]
pub struct ConfigErrors {
    /// The problems.
    pub problems: Vec<ConfigProblem>,
}

/// Reading the file failed before its values could be checked.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read the configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML, or a key is unknown or has the wrong type.
    #[error("{path} is not a valid gantry configuration")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and key.
        #[source]
        source: toml::de::Error,
    },
}

/// An OpenID Connect provider ready to use: its id, button label and library config.
#[derive(Clone, Debug)]
pub struct OidcEntry {
    /// The id from `[auth.oidc.<id>]`.
    pub id: String,
    /// The login button's label.
    pub display_name: String,
    /// The provider's settings.
    pub config: OidcConfig,
}

/// The configuration after [`FileConfig::validate`]: every value parsed and checked.
#[derive(Clone, Debug)]
pub struct HubConfig {
    /// `[hub]` as written.
    pub hub: HubSection,
    /// The origin browsers use.
    pub public_origin: PublicOrigin,
    /// Whether `public_origin` is https (cookies get `Secure` and `__Host-`).
    pub https: bool,
    /// The origins whose pages may use a session cookie for WebSockets and state-changing
    /// requests through the gate.
    pub gate_origins: GateOrigins,
    /// The database URL.
    pub database_url: String,
    /// How long a session lasts.
    pub session_lifetime: Duration,
    /// How user names are normalised.
    pub name_policy: NamePolicy,
    /// `[auth.local]`.
    pub local: LocalSection,
    /// Login rate limits.
    pub limits: LoginLimits,
    /// Caps on the work logins cause at once.
    pub login_caps: LoginCaps,
    /// The OpenID Connect providers, by id.
    pub oidc: Vec<OidcEntry>,
    /// `[proxy]` as written.
    pub proxy: ProxySection,
    /// `--trusted-downstream` networks, parsed.
    pub trusted_downstream: Vec<IpNet>,
    /// The spawner's tables, not yet checked (the spawner checks them).
    pub spawner: SpawnerConfig,
}

/// What `gantry up` runs with when no configuration file is given: every key's default, plus
/// one profile, `default`, that runs JupyterLab from the image `gantry/notebook:latest`.
///
/// No registry is assumed: that image is built on the Docker host by
/// `integration-tests/images/notebook/build.sh` (debootstrap and PyPI), and `gantry up` says so
/// at startup when it is missing.
pub const EMBEDDED_CONFIG: &str = r#"
[profiles.default]
display_name = "JupyterLab"
description = "JupyterLab and a Python 3 kernel, from the local image gantry/notebook:latest"
image = "gantry/notebook:latest"
mem_limit = "4g"
idle_timeout = "8h"

[[profiles.default.volumes]]
type = "volume"
source = "gantry-home-{username}"
target = "/home/jovyan"
"#;

/// The image of the embedded default profile, and how to make it where no registry serves it.
pub const EMBEDDED_IMAGE: &str = "gantry/notebook:latest";

/// The command that builds [`EMBEDDED_IMAGE`], from a gantry checkout.
pub const EMBEDDED_IMAGE_BUILD: &str = "bash integration-tests/images/notebook/build.sh";

impl FileConfig {
    /// Reads and parses `path`.
    ///
    /// # Errors
    ///
    /// [`LoadError`] when the file cannot be read or parsed.
    pub fn load(path: &std::path::Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|source| LoadError::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::parse(&text).map_err(|source| LoadError::Parse {
            path: path.to_owned(),
            source,
        })
    }

    /// The configuration used when no file is given ([`EMBEDDED_CONFIG`]).
    ///
    /// # Errors
    ///
    /// Never for the text as shipped (a unit test parses and validates it); the parser's
    /// error otherwise.
    pub fn embedded() -> Result<Self, toml::de::Error> {
        Self::parse(EMBEDDED_CONFIG)
    }

    /// Parses the text of a configuration file.
    ///
    /// The hub's tables are read from the text as written, so errors point at the line. The
    /// spawner's tables are then read from the rest of the file, re-written without the hub's
    /// tables: their errors quote the table they are in (`[profiles.gpu]`), though the line
    /// number is that of the re-written text.
    ///
    /// # Errors
    ///
    /// The parser's error, which names the key and quotes where it is.
    pub fn parse(text: &str) -> Result<Self, toml::de::Error> {
        let hub: HubTables = toml::from_str(text)?;
        let mut rest: toml::Table = toml::from_str(text)?;
        for key in HUB_TABLES {
            rest.remove(key);
        }
        // A table that was just parsed always serialises; should it ever not, the spawner
        // reads the table itself and only the quoting of errors is lost.
        let spawner = match toml::to_string(&rest) {
            Ok(rest_text) => toml::from_str(&rest_text)?,
            Err(_) => SpawnerConfig::deserialize(toml::Value::Table(rest))?,
        };
        Ok(Self {
            hub: hub.hub,
            proxy: hub.proxy,
            auth: hub.auth,
            spawner,
        })
    }

    /// Checks every value of `[hub]`, `[proxy]` and `[auth]` and reads the secret files it
    /// names. The spawner's tables are checked by the spawner.
    ///
    /// # Errors
    ///
    /// Every problem found, each naming its key and the fix.
    pub fn validate(self) -> Result<HubConfig, ConfigErrors> {
        let mut problems = Vec::new();
        let mut problem = |key: &str, what: String, fix: &str| {
            problems.push(ConfigProblem {
                key: key.to_owned(),
                problem: what,
                fix: fix.to_owned(),
            });
        };
        let hub = self.hub;
        let public_url = hub
            .public_url
            .clone()
            .unwrap_or_else(|| default_public_url(hub.bind));
        // Port 0 with no public URL is reported once, as `hub.bind`'s problem, below.
        let unaddressable = hub.bind.port() == 0 && hub.public_url.is_none();
        let public_origin = match PublicOrigin::parse(public_url.trim_end_matches('/')) {
            Ok(origin) => Some(origin),
            Err(_) if unaddressable => None,
            Err(_) => {
                problem(
                    "hub.public_url",
                    format!("{public_url:?} is not an origin of the form http(s)://host[:port]"),
                    "write the scheme, host and port browsers use, without a path, e.g. \"https://hub.example.org\"",
                );
                None
            }
        };
        let https = public_url.starts_with("https://");
        if unaddressable {
            problem(
                "hub.bind",
                "port 0 (any free port) leaves browsers no address to use".to_owned(),
                "give a fixed port, or set hub.public_url to the address browsers reach gantry at",
            );
        }
        let mut allowed_origins = Vec::new();
        for text in &hub.allowed_origins {
            match PublicOrigin::parse(text.trim_end_matches('/')) {
                Ok(origin) => allowed_origins.push(origin),
                Err(_) => problem(
                    "hub.allowed_origins",
                    format!("{text:?} is not an origin of the form http(s)://host[:port]"),
                    "write each origin as the scheme, host and port its pages are served from, without a path, e.g. \"https://lab.example.org\"",
                ),
            }
        }
        if hub.session_days == 0 || hub.session_days > 366 {
            problem(
                "hub.session_days",
                format!("{} is not between 1 and 366", hub.session_days),
                "set how many days a login lasts, e.g. 14",
            );
        }
        if hub.cull_interval_secs == 0 {
            problem(
                "hub.cull_interval_secs",
                "is 0".to_owned(),
                "give a number of seconds, at least 1; the default is 60",
            );
        }
        if hub.poll_interval_secs == 0 {
            problem(
                "hub.poll_interval_secs",
                "is 0".to_owned(),
                "give a number of seconds, at least 1; the default is 10",
            );
        }
        if hub.request_body_timeout_secs == 0 {
            problem(
                "hub.request_body_timeout_secs",
                "is 0, which refuses every request with a body".to_owned(),
                "give a number of seconds, at least 1; the default is 30",
            );
        }
        if hub.max_concurrent_spawns == 0 {
            problem(
                "hub.max_concurrent_spawns",
                "is 0, which refuses every start".to_owned(),
                "allow at least 1; the default is 20",
            );
        }
        let mut hub = hub;
        match hub.servers_api_url.as_deref().map(servers_api_url) {
            Some(Ok(url)) => hub.servers_api_url = Some(url),
            Some(Err(why)) => problem(
                "hub.servers_api_url",
                why,
                "write the hub API's URL as notebook servers reach it, e.g. \
                 \"http://gantry.example.org:8081/hub/api\"",
            ),
            None if self.spawner.mesos.is_some() => problem(
                "hub.servers_api_url",
                "is required with [mesos]: notebooks run on the Mesos agents and must be told \
                 where the hub API is"
                    .to_owned(),
                "set it to this gantry's servers' API as the agents reach it, e.g. \
                 \"http://gantry.example.org:8081/hub/api\" (gantry listens for it on \
                 hub.servers_api_bind, default 0.0.0.0:<servers_api_port>)",
            ),
            None => {}
        }
        let database_url = hub.database_url.clone().unwrap_or_else(|| {
            format!(
                "sqlite://{}?mode=rwc",
                hub.data_dir.join("gantry.sqlite").display()
            )
        });
        if !(database_url.starts_with("sqlite:")
            || database_url.starts_with("postgres://")
            || database_url.starts_with("postgresql://"))
        {
            problem(
                "hub.database_url",
                "is neither a sqlite: nor a postgres:// URL".to_owned(),
                "use sqlite://PATH or postgres://USER@HOST/DB, or remove it for SQLite in data_dir",
            );
        }
        let proxy = self.proxy;
        for (key, value) in [
            ("proxy.header_timeout_secs", proxy.header_timeout_secs),
            (
                "proxy.upstream_connect_timeout_secs",
                proxy.upstream_connect_timeout_secs,
            ),
            ("proxy.proxy_timeout_secs", proxy.proxy_timeout_secs),
        ] {
            if value == 0 {
                problem(
                    key,
                    "is 0".to_owned(),
                    "give a number of seconds, at least 1",
                );
            }
        }
        if proxy.max_header_bytes < 1024 {
            problem(
                "proxy.max_header_bytes",
                format!("{} is below 1024", proxy.max_header_bytes),
                "allow at least 1024 bytes; the default is 65536",
            );
        }
        if proxy.max_connections == 0 {
            problem(
                "proxy.max_connections",
                "is 0, which accepts no connection".to_owned(),
                "allow at least 1; the default is 10000",
            );
        }
        let mut trusted_downstream = Vec::new();
        for (i, text) in proxy.trusted_downstream.iter().enumerate() {
            match parse_net(text) {
                Some(net) => trusted_downstream.push(net),
                None => problem(
                    &format!("proxy.trusted_downstream[{i}]"),
                    format!("{text:?} is not an IP address or CIDR network"),
                    "write an address such as \"10.0.0.7\" or a network such as \"10.0.0.0/8\"",
                ),
            }
        }
        if proxy.tls_cert.is_some() != proxy.tls_key.is_some() {
            problem(
                "proxy.tls_cert",
                "tls_cert and tls_key must be given together".to_owned(),
                "set both, or neither",
            );
        }
        let auth = self.auth;
        let name_policy = NamePolicy {
            case_fold: auth.username_case == UsernameCase::Fold,
        };
        let limits = LoginLimits {
            account_per_minute: auth.limits.account_per_minute,
            account_burst: auth.limits.account_burst,
            address_per_minute: auth.limits.address_per_minute,
            address_burst: auth.limits.address_burst,
            unknown_names_per_minute: auth.limits.unknown_names_per_minute,
            unknown_names_burst: auth.limits.unknown_names_burst,
        };
        for (key, value) in [
            ("auth.limits.account_per_minute", limits.account_per_minute),
            ("auth.limits.account_burst", limits.account_burst),
            ("auth.limits.address_per_minute", limits.address_per_minute),
            ("auth.limits.address_burst", limits.address_burst),
            (
                "auth.limits.unknown_names_per_minute",
                limits.unknown_names_per_minute,
            ),
            (
                "auth.limits.unknown_names_burst",
                limits.unknown_names_burst,
            ),
        ] {
            if value == 0 {
                problem(
                    key,
                    "is 0, which refuses every login".to_owned(),
                    "set at least 1, or remove it for the default",
                );
            }
        }
        let login_caps = LoginCaps {
            hash_workers: auth.limits.password_hash_workers,
            hash_queue: auth.limits.password_hash_queue,
            oidc_in_flight: auth.limits.oidc_logins_in_flight,
            oidc_in_flight_per_address: auth.limits.oidc_logins_in_flight_per_address,
        };
        for (key, value) in [
            (
                "auth.limits.password_hash_workers",
                login_caps.hash_workers.unwrap_or(1),
            ),
            (
                "auth.limits.oidc_logins_in_flight",
                login_caps.oidc_in_flight,
            ),
            (
                "auth.limits.oidc_logins_in_flight_per_address",
                login_caps.oidc_in_flight_per_address,
            ),
        ] {
            if value == 0 {
                problem(
                    key,
                    "is 0, which refuses every login".to_owned(),
                    "set at least 1, or remove it for the default",
                );
            }
        }
        if auth.local.min_password_length == 0 {
            problem(
                "auth.local.min_password_length",
                "is 0".to_owned(),
                "set at least 1; the default is 8",
            );
        }
        if !auth.local.enabled && auth.oidc.is_empty() {
            problem(
                "auth",
                "no way to log in: local accounts are disabled and no OpenID provider is configured".to_owned(),
                "set auth.local.enabled = true or add an [auth.oidc.<id>] table",
            );
        }
        let mut oidc = Vec::new();
        for (id, section) in auth.oidc {
            let key = format!("auth.oidc.{id}");
            if !is_provider_id(&id) {
                problem(
                    &key,
                    format!("{id:?} is not a valid provider id"),
                    "use 1 to 32 of a-z, 0-9 and -, starting with a letter",
                );
                continue;
            }
            let client_secret = match (&section.client_secret, &section.client_secret_file) {
                (Some(_), Some(_)) => {
                    problem(
                        &format!("{key}.client_secret"),
                        "both client_secret and client_secret_file are set".to_owned(),
                        "keep one; client_secret_file keeps the secret out of the config",
                    );
                    None
                }
                (Some(secret), None) => Some(secret.clone()),
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(text) => Some(text.trim_end().to_owned()),
                    Err(error) => {
                        problem(
                            &format!("{key}.client_secret_file"),
                            format!("cannot read {}: {error}", path.display()),
                            "point it at a readable file holding the client secret",
                        );
                        None
                    }
                },
                (None, None) => None,
            };
            let redirect_url = section.redirect_url.clone().unwrap_or_else(|| {
                format!(
                    "{}/hub/oidc/{id}/callback",
                    public_url.trim_end_matches('/')
                )
            });
            let mut config = OidcConfig::new(
                section.issuer_url.clone(),
                section.client_id.clone(),
                client_secret,
                redirect_url,
            );
            if let Some(scopes) = section.scopes {
                config.scopes = scopes;
            }
            if let Some(claim) = section.username_claim {
                config.username_claim = claim;
            }
            if let Some(claim) = section.groups_claim {
                config.groups_claim = claim;
            }
            config.allowed_groups = section.allowed_groups;
            config.admin_groups = section.admin_groups;
            config.allow_all = section.allow_all;
            config.uid_claim = section.uid_claim;
            config.gid_claim = section.gid_claim;
            config.fetch_userinfo = section.fetch_userinfo;
            if let Some(secs) = section.http_timeout_secs {
                config.http_timeout_secs = secs;
            }
            config.name_policy = name_policy;
            if let Err(error) = config.validate() {
                problem(&key, error.to_string(), "correct the value named above");
            }
            oidc.push(OidcEntry {
                display_name: section.display_name.unwrap_or_else(|| id.clone()),
                id,
                config,
            });
        }
        match (problems.is_empty(), public_origin) {
            (true, Some(public_origin)) => Ok(HubConfig {
                gate_origins: GateOrigins {
                    ours: public_origin.clone(),
                    host_is_ours: hub.public_url.is_none(),
                    allowed: allowed_origins,
                },
                public_origin,
                https,
                database_url,
                session_lifetime: Duration::from_secs(u64::from(hub.session_days) * 86_400),
                name_policy,
                local: auth.local,
                limits,
                login_caps,
                oidc,
                proxy,
                trusted_downstream,
                spawner: self.spawner,
                hub,
            }),
            _ => Err(ConfigErrors { problems }),
        }
    }
}

/// `hub.servers_api_url`, checked: a base URL gets `/hub/api` appended, a trailing slash goes.
fn servers_api_url(text: &str) -> Result<String, String> {
    let url = url::Url::parse(text).map_err(|e| format!("{text:?} is not a URL: {e}"))?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || !url.username().is_empty()
        || url.password().is_some()
        || url.query().is_some()
        || url.fragment().is_some()
    {
        return Err(format!(
            "{text:?} is not an http(s) URL without credentials, query or fragment"
        ));
    }
    let base = url.as_str().trim_end_matches('/');
    match url.path().trim_end_matches('/') {
        "" => Ok(format!("{base}/hub/api")),
        path if path.ends_with("/hub/api") => Ok(base.to_owned()),
        path => Err(format!(
            "{text:?} has the path {path:?}, which is not the hub API's (it ends in /hub/api)"
        )),
    }
}

fn default_public_url(bind: SocketAddr) -> String {
    if bind.ip().is_unspecified() {
        format!("http://localhost:{}", bind.port())
    } else {
        format!("http://{bind}")
    }
}

fn parse_net(text: &str) -> Option<IpNet> {
    text.parse::<IpNet>()
        .ok()
        .or_else(|| text.parse::<std::net::IpAddr>().ok().map(IpNet::from))
}

/// Provider ids appear in URLs and cookie names: `[a-z][a-z0-9-]{0,31}`.
fn is_provider_id(id: &str) -> bool {
    let mut bytes = id.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_lowercase())
        && id.len() <= 32
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
}
