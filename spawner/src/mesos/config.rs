//! The `[mesos]` table of the configuration file and its check.
//!
//! ```toml
//! [mesos]
//! masters = ["http://mesos-master-1:5050", "http://mesos-master-2:5050"]
//! role = "notebooks"
//! user = "nobody"                 # Unix user of tasks
//! failover_timeout = "7d"         # notebooks survive a gantry outage this long
//! principal = "gantry"            # HTTP basic auth to the master, with secret_file
//! secret_file = "/etc/gantry/mesos-secret"   # or secret = "…" inline
//! refuse_seconds = 5.0
//! default_cpus = 1.0              # for profiles without cpu_reservation or cpu_limit
//! default_mem = "1G"
//! ```
//!
//! Durations are a whole number with `s`, `m`, `h` or `d`; sizes are written as in profiles
//! (`"512M"`, `"4G"`, binary units) and sent to Mesos in MB (2²⁰ bytes), its unit for `mem`
//! and `disk`.
//!
//! `secret_file` names a file this crate does not read (a library reads no files): the check
//! leaves its principal in [`MesosSettings::unread_secret`], the binary reads the file and
//! hands the secret over with [`MesosSettings::supply_secret`], and
//! [`crate::MesosSpawner::new`] refuses settings whose secret is still unread.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use url::Url;

use crate::config::ConfigIssue;
use crate::profile::Issues;
use crate::units;

#[cfg(test)]
mod tests;

/// The Mesos master, as written under `[mesos]`. Units are in each field's documentation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MesosConfig {
    /// The masters' base URLs, `http://host:5050` (or `https://`), tried in turn; the leader
    /// is then found by the masters' redirects. Required: at least one.
    pub masters: Vec<String>,
    /// The role offers are made to and tasks run under. Default: `"*"`.
    pub role: String,
    /// The Unix user tasks run as (`FrameworkInfo.user`). Default: `"nobody"`.
    pub user: String,
    /// The framework's name in the master's UI. Default: `"gantry"`.
    pub framework_name: String,
    /// How long the master keeps gantry's notebooks running while gantry is disconnected
    /// (restarts, upgrades, outages), as a duration; at least `"1m"`. Default: `"7d"`.
    pub failover_timeout: String,
    /// The principal gantry authenticates as (HTTP basic auth), and names in
    /// `FrameworkInfo.principal`. Needs `secret_file` or `secret`. Default: none.
    pub principal: Option<String>,
    /// The principal's secret, inline. Needs `principal`; not with `secret_file`.
    /// Default: none.
    pub secret: Option<String>,
    /// A file holding the principal's secret (trailing whitespace is dropped), read by
    /// gantry at startup: keeps the secret out of the configuration file. Needs
    /// `principal`; not with `secret`. Default: none.
    pub secret_file: Option<PathBuf>,
    /// The host name gantry reports to the master (`FrameworkInfo.hostname`). Default: none.
    pub hostname: Option<String>,
    /// A link to gantry from the master's UI. Default: none.
    pub webui_url: Option<String>,
    /// Seconds an offer gantry declined (or left over from a launch) is not offered to it
    /// again, from 0 to 31536000 (a year). Default: `5.0`.
    pub refuse_seconds: f64,
    /// How many heartbeat intervals may pass without any event before gantry drops the
    /// subscription and subscribes again, from 2 to 100. Default: `5`.
    pub missed_heartbeats: u32,
    /// How often gantry asks the master for the state of every task (implicit
    /// reconciliation), as a duration. Default: `"15m"`.
    pub reconcile_interval: String,
    /// The longest wait between two attempts to subscribe, as a duration. Default: `"15s"`.
    pub max_backoff: String,
    /// How long one call to the master, or a wait for the subscription, may take, as a
    /// duration. Default: `"30s"`.
    pub call_timeout: String,
    /// How long a start waits for an offer that fits the profile before it fails with a
    /// report of why each agent did not fit, as a duration. Default: `"5m"`.
    pub offer_wait: String,
    /// How long a launched server has to run and answer HTTP (image pull included), as a
    /// duration. Default: `"5m"`.
    pub start_timeout: String,
    /// Time between SIGTERM and SIGKILL when a server is stopped, as a duration.
    /// Default: `"10s"`.
    pub kill_grace: String,
    /// The TCP port the notebook server listens on inside a bridged container. Default: `8888`.
    pub port: u16,
    /// CPUs asked of the offer for profiles that set neither `cpu_reservation` nor
    /// `cpu_limit`, from 0.01 to 4096. Default: `1.0`.
    pub default_cpus: f64,
    /// Memory asked of the offer for profiles that set neither `mem_reservation` nor
    /// `mem_limit`, a size of at least `"32M"`. Default: `"1G"`.
    pub default_mem: String,
    /// Disk asked of the offer for every server, a size. Default: none (no disk).
    pub disk: Option<String>,
    /// The agent attribute that marks Spark-attached agents: profiles with a `spark` table
    /// land only on agents where it is `true`, unless their `constraints` name it. Default:
    /// `"spark"`.
    pub spark_attribute: String,
    /// Whether profiles without GPUs may land on agents that offer GPUs. The GPU contract of
    /// Mesos (`GPU_RESOURCES`) asks frameworks to keep such agents for GPU work. Default:
    /// `false`.
    pub cpu_on_gpu_agents: bool,
}

impl Default for MesosConfig {
    fn default() -> Self {
        Self {
            masters: Vec::new(),
            role: "*".to_owned(),
            user: "nobody".to_owned(),
            framework_name: "gantry".to_owned(),
            failover_timeout: "7d".to_owned(),
            principal: None,
            secret: None,
            secret_file: None,
            hostname: None,
            webui_url: None,
            refuse_seconds: 5.0,
            missed_heartbeats: 5,
            reconcile_interval: "15m".to_owned(),
            max_backoff: "15s".to_owned(),
            call_timeout: "30s".to_owned(),
            offer_wait: "5m".to_owned(),
            start_timeout: "5m".to_owned(),
            kill_grace: "10s".to_owned(),
            port: 8888,
            default_cpus: 1.0,
            default_mem: "1G".to_owned(),
            disk: None,
            spark_attribute: "spark".to_owned(),
            cpu_on_gpu_agents: false,
        }
    }
}

/// HTTP basic auth to the master.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// The principal.
    pub principal: String,
    /// The secret.
    pub secret: String,
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credentials")
            .field("principal", &self.principal)
            .field("secret", &"<redacted>")
            .finish()
    }
}

/// A principal whose secret is in a file not read yet (`mesos.secret_file`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnreadSecret {
    /// The principal.
    pub principal: String,
    /// The file holding its secret.
    pub path: PathBuf,
}

/// The checked `[mesos]` table. Fields are public so that a test can shorten its times.
#[derive(Clone, Debug, PartialEq)]
pub struct MesosSettings {
    /// The masters' scheduler endpoints (`…/api/v1/scheduler`), in the order tried.
    pub masters: Vec<Url>,
    /// The role.
    pub role: String,
    /// `FrameworkInfo.user`.
    pub user: String,
    /// `FrameworkInfo.name`.
    pub framework_name: String,
    /// `FrameworkInfo.failover_timeout`.
    pub failover_timeout: Duration,
    /// Basic auth, when configured (and its secret is known).
    pub credentials: Option<Credentials>,
    /// `secret_file` and its principal, until the caller reads the file and calls
    /// [`MesosSettings::supply_secret`]; [`crate::MesosSpawner::new`] refuses settings where
    /// it is still set.
    pub unread_secret: Option<UnreadSecret>,
    /// `FrameworkInfo.hostname`.
    pub hostname: Option<String>,
    /// `FrameworkInfo.webui_url`.
    pub webui_url: Option<String>,
    /// `Filters.refuse_seconds` for declines and launches.
    pub refuse_seconds: f64,
    /// Heartbeat intervals without an event before resubscribing.
    pub missed_heartbeats: u32,
    /// Period of implicit reconciliation.
    pub reconcile_interval: Duration,
    /// Longest pause between subscription attempts.
    pub max_backoff: Duration,
    /// Limit of one call, and of waits for the subscription.
    pub call_timeout: Duration,
    /// How long a start waits for a fitting offer.
    pub offer_wait: Duration,
    /// How long a launched server has to answer HTTP.
    pub start_timeout: Duration,
    /// The kill policy's grace period.
    pub kill_grace: Duration,
    /// The notebook's port in a bridged container.
    pub port: u16,
    /// Default CPUs, in thousandths.
    pub default_cpus_milli: i64,
    /// Default memory in MB.
    pub default_mem_mb: f64,
    /// Disk per server in MB (0: none).
    pub disk_mb: f64,
    /// The Spark agent attribute.
    pub spark_attribute: String,
    /// Whether CPU profiles may use GPU agents.
    pub cpu_on_gpu_agents: bool,
}

/// Bytes per Mesos MB.
pub(crate) const MB: f64 = 1_048_576.0;

impl MesosConfig {
    /// Checks the table, recording every problem (keys under `mesos.`) in `issues`; returns
    /// the checked settings when there were none.
    pub(crate) fn validate(&self, issues: &mut Vec<ConfigIssue>) -> Option<MesosSettings> {
        let before = issues.len();
        let mut out = Issues {
            prefix: "mesos".to_owned(),
            list: issues,
        };
        let mut masters = Vec::new();
        if self.masters.is_empty() {
            out.push(
                "masters",
                "is empty",
                "list the masters' URLs, e.g. masters = [\"http://mesos-master:5050\"]",
            );
        }
        for (i, m) in self.masters.iter().enumerate() {
            match scheduler_endpoint(m) {
                Some(url) => masters.push(url),
                None => out.push(
                    &format!("masters[{i}]"),
                    format!("expected an http:// or https:// URL of a master, got {m:?}"),
                    "write e.g. \"http://mesos-master:5050\"",
                ),
            }
        }
        if !is_role(&self.role) {
            out.push(
                "role",
                format!("expected a Mesos role name, got {:?}", self.role),
                "write e.g. role = \"notebooks\", or \"*\" for the default role",
            );
        }
        for (field, value, example) in [
            ("user", &self.user, "user = \"nobody\""),
            (
                "framework_name",
                &self.framework_name,
                "framework_name = \"gantry\"",
            ),
        ] {
            if value.trim().is_empty() || value.chars().any(char::is_control) {
                out.push(
                    field,
                    format!("must be a non-empty name, got {value:?}"),
                    format!("write e.g. {example}"),
                );
            }
        }
        let failover_timeout = duration(&mut out, "failover_timeout", &self.failover_timeout);
        if failover_timeout.is_some_and(|d| d < Duration::from_secs(60)) {
            out.push(
                "failover_timeout",
                "is under a minute: the master would kill every notebook whenever gantry restarts",
                "write e.g. failover_timeout = \"7d\"",
            );
        }
        let mut credentials = None;
        let mut unread_secret = None;
        match (&self.principal, &self.secret, &self.secret_file) {
            (None, None, None) => {}
            (_, Some(_), Some(_)) => out.push(
                "secret_file",
                "is set together with mesos.secret",
                "keep one: secret_file keeps the secret out of the configuration file",
            ),
            (Some(_), None, None) => out.push(
                "secret",
                "is missing while principal is set",
                "set secret_file to a file holding the principal's secret (or secret inline), \
                 or remove principal",
            ),
            (None, Some(_), None) => out.push(
                "principal",
                "is missing while secret is set",
                "set both, or neither",
            ),
            (None, None, Some(_)) => out.push(
                "principal",
                "is missing while secret_file is set",
                "set both, or neither",
            ),
            (Some(principal), secret, file) => {
                if principal.is_empty() || principal.contains(':') {
                    out.push(
                        "principal",
                        format!("expected a non-empty name without ':', got {principal:?}"),
                        "write the principal the master knows, e.g. \"gantry\"",
                    );
                }
                if let Some(secret) = secret {
                    credentials = Some(Credentials {
                        principal: principal.clone(),
                        secret: secret.clone(),
                    });
                }
                if let Some(path) = file {
                    if path.as_os_str().is_empty() {
                        out.push(
                            "secret_file",
                            "is empty",
                            "write the path of a file holding the principal's secret, e.g. \
                             \"/etc/gantry/mesos-secret\"",
                        );
                    }
                    unread_secret = Some(UnreadSecret {
                        principal: principal.clone(),
                        path: path.clone(),
                    });
                }
            }
        }
        if let Some(url) = &self.webui_url
            && Url::parse(url).is_err()
        {
            out.push(
                "webui_url",
                format!("expected a URL, got {url:?}"),
                "write e.g. \"https://hub.example.org/hub/admin\"",
            );
        }
        if let Some(host) = &self.hostname
            && (host.is_empty() || host.chars().any(|c| c.is_whitespace() || c == '/'))
        {
            out.push(
                "hostname",
                format!("expected a host name, got {host:?}"),
                "write e.g. \"hub.example.org\"",
            );
        }
        if !(self.refuse_seconds.is_finite() && (0.0..=31_536_000.0).contains(&self.refuse_seconds))
        {
            out.push(
                "refuse_seconds",
                format!(
                    "expected seconds from 0 to 31536000, got {}",
                    self.refuse_seconds
                ),
                "write e.g. refuse_seconds = 5.0",
            );
        }
        if !(2..=100).contains(&self.missed_heartbeats) {
            out.push(
                "missed_heartbeats",
                format!("expected 2 to 100, got {}", self.missed_heartbeats),
                "write e.g. missed_heartbeats = 5",
            );
        }
        let reconcile_interval = duration(&mut out, "reconcile_interval", &self.reconcile_interval);
        let max_backoff = duration(&mut out, "max_backoff", &self.max_backoff);
        let call_timeout = duration(&mut out, "call_timeout", &self.call_timeout);
        let offer_wait = duration(&mut out, "offer_wait", &self.offer_wait);
        let start_timeout = duration(&mut out, "start_timeout", &self.start_timeout);
        let kill_grace = duration(&mut out, "kill_grace", &self.kill_grace);
        if self.port == 0 {
            out.push(
                "port",
                "must not be 0",
                "write the notebook's port, e.g. port = 8888",
            );
        }
        let default_cpus_milli = units::cpus_to_nano(self.default_cpus).map(|n| n / 1_000_000);
        if default_cpus_milli.is_none() {
            out.push(
                "default_cpus",
                format!("expected CPUs from 0.01 to 4096, got {}", self.default_cpus),
                "write e.g. default_cpus = 1.0",
            );
        }
        let default_mem_mb = size_mb(&mut out, "default_mem", Some(&self.default_mem));
        if default_mem_mb.is_some_and(|m| m < 32.0) {
            out.push(
                "default_mem",
                "is under 32M, which Mesos refuses for a task",
                "write e.g. default_mem = \"1G\"",
            );
        }
        let disk_mb = size_mb(&mut out, "disk", self.disk.as_deref());
        if self.spark_attribute.is_empty()
            || !self
                .spark_attribute
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b))
        {
            out.push(
                "spark_attribute",
                format!("expected an attribute name, got {:?}", self.spark_attribute),
                "write e.g. spark_attribute = \"spark\"",
            );
        }
        if issues.len() > before {
            return None;
        }
        Some(MesosSettings {
            masters,
            role: self.role.clone(),
            user: self.user.clone(),
            framework_name: self.framework_name.clone(),
            failover_timeout: failover_timeout?,
            credentials,
            unread_secret,
            hostname: self.hostname.clone(),
            webui_url: self.webui_url.clone(),
            refuse_seconds: self.refuse_seconds,
            missed_heartbeats: self.missed_heartbeats,
            reconcile_interval: reconcile_interval?,
            max_backoff: max_backoff?,
            call_timeout: call_timeout?,
            offer_wait: offer_wait?,
            start_timeout: start_timeout?,
            kill_grace: kill_grace?,
            port: self.port,
            default_cpus_milli: default_cpus_milli?,
            default_mem_mb: default_mem_mb?,
            disk_mb: disk_mb.unwrap_or(0.0),
            spark_attribute: self.spark_attribute.clone(),
            cpu_on_gpu_agents: self.cpu_on_gpu_agents,
        })
    }
}

impl MesosSettings {
    /// Gives the secret read from [`UnreadSecret::path`]: the principal then authenticates
    /// with it. Returns `false`, changing nothing, when no secret was waiting to be read.
    pub fn supply_secret(&mut self, secret: String) -> bool {
        match self.unread_secret.take() {
            Some(unread) => {
                self.credentials = Some(Credentials {
                    principal: unread.principal,
                    secret,
                });
                true
            }
            None => false,
        }
    }
}

/// Whether `role` is a valid Mesos role: `*`, or `/`-separated segments that are not empty,
/// `.` or `..`, do not start with `-` and hold no whitespace, control character or `*`.
fn is_role(role: &str) -> bool {
    role == "*"
        || role.split('/').all(|seg| {
            !seg.is_empty()
                && seg != "."
                && seg != ".."
                && !seg.starts_with('-')
                && !seg
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '*')
        })
}

/// The scheduler endpoint of a master's base URL: `http://m:5050` →
/// `http://m:5050/api/v1/scheduler` (a path prefix, as behind a reverse proxy, is kept).
pub(crate) fn scheduler_endpoint(base: &str) -> Option<Url> {
    let mut url = Url::parse(base).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.host_str().is_none_or(str::is_empty)
        || url.query().is_some()
        || url.fragment().is_some()
        || !url.username().is_empty()
    {
        return None;
    }
    if !url.path().ends_with('/') {
        let path = format!("{}/", url.path());
        url.set_path(&path);
    }
    url.join("api/v1/scheduler").ok()
}

fn duration(out: &mut Issues<'_>, field: &str, text: &str) -> Option<Duration> {
    match units::parse_duration(text) {
        Some(d) if !d.is_zero() => Some(d),
        _ => {
            out.push(
                field,
                format!("expected a duration above zero, got {text:?}"),
                "write a whole number with s, m, h or d, such as \"30s\" or \"7d\"",
            );
            None
        }
    }
}

fn size_mb(out: &mut Issues<'_>, field: &str, text: Option<&str>) -> Option<f64> {
    let text = text?;
    match units::parse_bytes(text) {
        // Sizes fit an i64; as MB they are far inside f64's exact range.
        Some(bytes) => Some(bytes as f64 / MB),
        None => {
            out.push(
                field,
                format!("expected a size, got {text:?}"),
                "write a size such as \"512M\" or \"4G\" (binary units)",
            );
            None
        }
    }
}
