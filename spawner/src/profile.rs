//! Admin-defined profiles: what a user may start, as written in the configuration file
//! ([`ProfileConfig`], one `[profiles.<id>]` table) and as the spawner uses it once checked
//! ([`Profile`]).
//!
//! ```toml
//! [profiles.gpu-a100]
//! display_name = "PyTorch on one A100"
//! description = "For training; idle servers stop after two hours."
//! image = "quay.io/jupyter/pytorch-notebook:cuda12-latest"
//! cpu_limit = 8             # CPUs (fractions allowed)
//! mem_limit = "64G"         # bytes, binary units as docker run --memory
//! shm_size = "8G"           # /dev/shm, which PyTorch data loaders need
//! gpus = 1                  # or "all"
//! idle_timeout = "2h"
//! allowed_groups = ["ml"]
//! env = { PROJECT = "/srv/projects/{username}" }
//! volumes = [
//!   { type = "volume", source = "gantry-home-{username}", target = "/home/{username}" },
//!   { type = "bind", source = "/srv/datasets", target = "/data", read_only = true },
//! ]
//! constraints = { gpu = "true" }
//! ```
//!
//! [`ProfileConfig`] is the file's shape; every table denies unknown keys, so a typo is an
//! error rather than a silently ignored setting. Checking ([`crate::config::SpawnerConfig::
//! validate`]) turns it into a [`Profile`] with sizes in bytes, CPUs in nano-CPUs, durations,
//! parsed templates and a typed GPU request, and reports every problem at once, each naming
//! its key and the fix.
//!
//! # Templates
//!
//! Volume sources and targets, environment values and the working directory may contain
//! `{username}` and `{servername}` (empty for the default server). No other placeholder
//! exists; an unknown one is a configuration error, not text left in place. `{{` and `}}`
//! are literal braces. In a named volume's source the values are escaped as in container
//! names ([`crate::names::escape_component`]), since volume names allow few characters;
//! elsewhere they are used as they are (the user name must then be a safe path segment, which
//! [`crate::request::container_spec`] checks).

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU32;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};

use crate::config::ConfigIssue;
use crate::gpu::{GpuCount, GpuRequest};
use crate::names::{Identity, ProfileId};
use crate::units;

#[cfg(test)]
mod tests;

/// One profile as written under `[profiles.<id>]`. Units are in each field's documentation.
#[derive(Clone, Debug, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProfileConfig {
    /// The name on the spawn page. Required.
    pub display_name: String,
    /// A sentence or two for the spawn page. Default: empty.
    #[serde(default)]
    pub description: String,
    /// The container image, as `docker pull` takes it. Required.
    pub image: String,
    /// Most CPUs the server may use, as `docker run --cpus`: a number from 0.01 to 4096,
    /// fractions allowed. Default: no limit.
    pub cpu_limit: Option<f64>,
    /// CPUs the server is guaranteed. Cluster backends (Swarm, Mesos) place by it; a single
    /// Docker engine has no CPU reservation and ignores it. Default: none.
    pub cpu_reservation: Option<f64>,
    /// Memory limit in bytes, written as a size: `"512M"`, `"4G"`, `"1.5G"` (binary units, as
    /// `docker run --memory`). At least `"6M"`. Default: no limit.
    pub mem_limit: Option<String>,
    /// Memory the server is guaranteed (the engine's soft limit), a size as for `mem_limit`
    /// and no more than it. Default: none.
    pub mem_reservation: Option<String>,
    /// Size of `/dev/shm`, a size as for `mem_limit`. Default: the engine's (64M).
    pub shm_size: Option<String>,
    /// Extra environment variables; values are templates. Names are `[A-Za-z_][A-Za-z0-9_]*`,
    /// and those gantry sets itself (`NB_*`, `HOME`, `JUPYTERHUB_*`, `GANTRY_*`, the Spark
    /// and NVIDIA variables) are refused. Default: none.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Volumes to mount. Default: none.
    #[serde(default)]
    pub volumes: Vec<VolumeConfig>,
    /// The Docker network to join instead of `docker.network`. `host` and `none` are refused:
    /// the proxy must reach the server by name (for Spark host networking see
    /// [`SparkConfig::networking`]). Default: `docker.network`.
    pub network: Option<String>,
    /// The command, replacing the image's `CMD`. Default: the image's.
    pub cmd: Option<Vec<String>>,
    /// The working directory, a template for an absolute path. Default: the user's home when
    /// the UID is known, else the image's.
    pub working_dir: Option<String>,
    /// Stop the server after this long without traffic: a whole number with `s`, `m`, `h` or
    /// `d` (`"2h"`). Default: never.
    pub idle_timeout: Option<String>,
    /// Stop the server this long after it started, busy or not; written as `idle_timeout`.
    /// Default: never.
    pub max_age: Option<String>,
    /// Groups whose members may use this profile. Default: empty, meaning everyone.
    #[serde(default)]
    pub allowed_groups: Vec<String>,
    /// GPUs: a positive whole number or `"all"`. Default: none.
    pub gpus: Option<GpusValue>,
    /// Whether this profile's servers may share their GPUs with other sharing servers (never
    /// with exclusive ones). Only with `gpus`. Default: `false`, each GPU to one server.
    #[serde(default)]
    pub gpu_shared: bool,
    /// Attach the server to a Spark cluster as a client-mode driver. Default: none.
    pub spark: Option<SparkConfig>,
    /// Placement constraints for cluster backends: attributes (Mesos) or node labels (Swarm)
    /// that a host must have, such as `{ gpu = "true" }`. A single Docker engine ignores them.
    /// Default: none.
    #[serde(default)]
    pub constraints: BTreeMap<String, String>,
    /// How the container takes on the user's UID and GID when they are known; see [`RunAs`].
    /// Default: `"user"`.
    #[serde(default)]
    pub run_as: RunAs,
    /// What a stop does with the server's container; see [`OnStop`]. Default: `"remove"`.
    #[serde(default)]
    pub on_stop: OnStop,
}

/// What stopping a server does with its container (Docker backend).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStop {
    /// Remove the container; the next start creates a new one. The user's volumes stay. The
    /// default.
    #[default]
    Remove,
    /// Stop the container and keep it, writable layer and all, without its GPUs. The next
    /// start of the same server starts it again when it would be created the same way now
    /// (same image, settings and environment) and its GPUs are free; otherwise it is removed
    /// and a new one is created.
    Keep,
}

/// A volume as written in a profile.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VolumeConfig {
    /// `"volume"` (a named volume, which the engine creates on first use) or `"bind"` (a host
    /// path, which must exist).
    #[serde(rename = "type")]
    pub kind: VolumeKind,
    /// The volume's name or the host path (absolute), a template.
    pub source: String,
    /// Where it appears in the container, an absolute path, a template.
    pub target: String,
    /// Mount read-only. Default: `false`.
    #[serde(default)]
    pub read_only: bool,
}

/// What a volume's source names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum VolumeKind {
    /// A named volume managed by the engine.
    Volume,
    /// A path on the host.
    Bind,
}

/// How a container takes on the user's identity when the UID is known (when it is not, the
/// container runs as the image's default user and gantry sets none of this).
///
/// Both follow the Jupyter docker-stacks images (`docs/using/common.md`, `start.sh`), which
/// document two ways: `--user <uid> --group-add users`, or starting as root with
/// `NB_USER`/`NB_UID`/`NB_GID` so that `start.sh` refits the `jovyan` account and drops to it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RunAs {
    /// Run as `uid:gid` from the first process, with supplementary group 100 (`users`, which
    /// owns `/opt/conda` and `/home/jovyan` in docker-stacks images). Nothing in the container
    /// ever runs as root. `HOME` is `/home/<user>`: mount the user's home there, owned by the
    /// UID (a bind mount of the host home, or a volume prepared for it), since without root
    /// nobody can fix its ownership. `start.sh` adds a passwd entry for the UID if the image
    /// lets it. The default.
    #[default]
    User,
    /// Start as root with `NB_USER`, `NB_UID`, `NB_GID` and `CHOWN_HOME=yes`; docker-stacks'
    /// `start.sh` renames `jovyan`, changes its ids, chowns `/home/<user>` and drops to the user
    /// with `sudo`. Works with fresh named volumes; needs an image with that `start.sh`, and
    /// root briefly runs inside the container.
    RootThenDrop,
}

/// The `gpus` value as written, checked later so that a bad one gets a message naming its key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GpusValue {
    /// A whole number.
    Number(i64),
    /// A string (valid only as `"all"`).
    Text(String),
    /// Anything else scalar (a fraction, a boolean, a number out of range), as text.
    Other(String),
}

impl<'de> Deserialize<'de> for GpusValue {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct GpusVisitor;
        impl Visitor<'_> for GpusVisitor {
            type Value = GpusValue;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\" or a positive integer")
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<GpusValue, E> {
                Ok(GpusValue::Number(v))
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<GpusValue, E> {
                Ok(i64::try_from(v)
                    .map_or_else(|_| GpusValue::Other(v.to_string()), GpusValue::Number))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<GpusValue, E> {
                Ok(GpusValue::Other(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<GpusValue, E> {
                Ok(GpusValue::Other(v.to_string()))
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<GpusValue, E> {
                Ok(GpusValue::Text(v.to_owned()))
            }
        }
        deserializer.deserialize_any(GpusVisitor)
    }
}

impl fmt::Display for GpusValue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Number(n) => write!(f, "{n}"),
            Self::Text(s) => write!(f, "{s:?}"),
            Self::Other(s) => f.write_str(s),
        }
    }
}

/// A Spark attachment as written in a profile (`[profiles.<id>.spark]`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparkConfig {
    /// The cluster: `spark://host:7077` (standalone), `sc://host:15002` (Spark Connect: the
    /// notebook is only a client and nothing connects back, so no ports are needed),
    /// `mesos://…` (legacy, Spark ≤ 3.5; passed through untested), `k8s://…`, or `local[*]`.
    pub master: String,
    /// How executors reach a client-mode driver; ignored for `sc://`. Default:
    /// `"published-ports"`.
    #[serde(default)]
    pub networking: SparkNetworking,
    /// Extra Spark properties (`spark.*`) for the driver, such as `spark.executor.memory`.
    /// Those gantry sets (`spark.master`, `spark.driver.host`, `spark.driver.bindAddress`,
    /// `spark.driver.port`, `spark.driver.blockManager.port`, `spark.blockManager.port`) are
    /// refused. Default: none.
    #[serde(default)]
    pub conf: BTreeMap<String, String>,
}

/// How a Spark driver in a notebook container is reached by executors.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SparkNetworking {
    /// The container stays on the gantry network; the spawner allocates a driver and a
    /// block-manager port from `docker.spark_ports`, publishes them one-to-one on the host and
    /// advertises `docker.spark_driver_host` with them (`spark.driver.bindAddress=0.0.0.0`).
    #[default]
    PublishedPorts,
    /// The container uses the host's network stack (`--network host`), as the docker-stacks
    /// Spark docs suggest; Spark picks its own ports. The server then shares the host's ports
    /// with everything else on it.
    Host,
}

/// A text with `{username}` and `{servername}` placeholders; see the module documentation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Template {
    source: String,
    parts: Vec<Part>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Part {
    Text(String),
    User,
    Server,
}

/// A placeholder as written in a template.
fn placeholder_text(part: &Part) -> &'static str {
    match part {
        Part::User => "{username}",
        Part::Server => "{servername}",
        Part::Text(_) => "text",
    }
}

/// Why a template was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum TemplateError {
    /// A placeholder other than `{username}` and `{servername}`.
    #[error(
        "unknown placeholder {{{0}}}: only {{username}} and {{servername}} exist (write {{{{ \
         and }}}} for literal braces)"
    )]
    UnknownPlaceholder(String),
    /// A `{` without its `}`.
    #[error("'{{' is never closed: finish the placeholder, or write {{{{ for a literal brace")]
    Unclosed,
    /// A `}` that closes nothing.
    #[error("'}}' closes nothing: write }}}} for a literal brace")]
    StrayClose,
}

impl Template {
    /// Parses a template.
    pub fn parse(source: &str) -> Result<Self, TemplateError> {
        let mut parts = Vec::new();
        let mut text = String::new();
        let mut rest = source;
        while let Some(i) = rest.find(['{', '}']) {
            text.push_str(&rest[..i]);
            let brace = &rest[i..=i];
            let after = &rest[i + 1..];
            if let Some(tail) = after.strip_prefix(brace) {
                text.push_str(brace);
                rest = tail;
                continue;
            }
            if brace == "}" {
                return Err(TemplateError::StrayClose);
            }
            let end = after.find('}').ok_or(TemplateError::Unclosed)?;
            let part = match &after[..end] {
                "username" => Part::User,
                "servername" => Part::Server,
                other => return Err(TemplateError::UnknownPlaceholder(other.to_owned())),
            };
            if !text.is_empty() {
                parts.push(Part::Text(std::mem::take(&mut text)));
            }
            parts.push(part);
            rest = &after[end + 1..];
        }
        text.push_str(rest);
        if !text.is_empty() {
            parts.push(Part::Text(text));
        }
        Ok(Self {
            source: source.to_owned(),
            parts,
        })
    }

    /// The template as written.
    pub fn as_str(&self) -> &str {
        &self.source
    }

    /// The text with the placeholders filled in.
    pub fn render(&self, username: &str, servername: &str) -> String {
        self.parts
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::User => username,
                Part::Server => servername,
            })
            .collect()
    }

    /// Why this source could give two (user, server) pairs one volume or directory, or
    /// `None`: `{servername}` without `{username}` (every user's server of that name would
    /// share it), or two placeholders with no `separators` byte in the text between them
    /// (`{username}_{servername}` reads two ways). Named volumes' values are escaped into
    /// `[a-z0-9_]`, so `-` and `.` separate them; host paths hold the names as they are, so
    /// only `/` does.
    pub fn sharing_problem(&self, separators: &[u8]) -> Option<String> {
        let has = |want: &Part| self.parts.iter().any(|p| p == want);
        if has(&Part::Server) && !has(&Part::User) {
            return Some(
                "uses {servername} without {username}: every user's server of that name would share it"
                    .to_owned(),
            );
        }
        let mut last_placeholder = None;
        let mut apart = true;
        for part in &self.parts {
            match part {
                Part::Text(t) => apart |= t.bytes().any(|b| separators.contains(&b)),
                placeholder => {
                    if let Some(previous) = last_placeholder
                        && !apart
                    {
                        return Some(format!(
                            "{} and {} are not kept apart by {} in the text between them, so two users' names could read as one",
                            placeholder_text(previous),
                            placeholder_text(placeholder),
                            separators
                                .iter()
                                .map(|b| format!("'{}'", char::from(*b)))
                                .collect::<Vec<_>>()
                                .join(" or ")
                        ));
                    }
                    last_placeholder = Some(placeholder);
                    apart = false;
                }
            }
        }
        None
    }

    /// How many (user, server) pairs the gantry 0.1 naming
    /// ([`crate::names::legacy_volume_name`]) gives the name `name` (at most 2 are counted):
    /// a volume of that naming is its one pair's only when this is 1.
    pub fn legacy_readings(&self, name: &str) -> usize {
        let mut found = Vec::new();
        self.read_legacy(&self.parts, name, None, None, &mut found);
        found.len()
    }

    fn read_legacy<'a>(
        &self,
        parts: &[Part],
        rest: &'a str,
        user: Option<&'a str>,
        server: Option<&'a str>,
        found: &mut Vec<(Option<String>, Option<String>)>,
    ) {
        if found.len() >= 2 {
            return;
        }
        let Some((first, tail)) = parts.split_first() else {
            if !rest.is_empty() {
                return;
            }
            let user = match user {
                Some(escaped) => match crate::names::unescape_component(escaped) {
                    Some(user) if !user.is_empty() => Some(user),
                    _ => return,
                },
                None => None,
            };
            if let Some(server) = server
                && crate::names::ServerName::new(server).is_err()
            {
                return;
            }
            let pair = (user, server.map(str::to_owned));
            if !found.contains(&pair) {
                found.push(pair);
            }
            return;
        };
        match first {
            Part::Text(t) => {
                if let Some(after) = rest.strip_prefix(t.as_str()) {
                    self.read_legacy(tail, after, user, server, found);
                }
            }
            Part::User | Part::Server => {
                let bound = if *first == Part::User { user } else { server };
                if let Some(value) = bound {
                    if let Some(after) = rest.strip_prefix(value) {
                        self.read_legacy(tail, after, user, server, found);
                    }
                    return;
                }
                let allowed = |b: u8| {
                    b.is_ascii_lowercase()
                        || b.is_ascii_digit()
                        || b == b'_'
                        || (*first == Part::Server && (b == b'-' || b == b'.'))
                };
                let run = rest.bytes().take_while(|b| allowed(*b)).count();
                for end in 0..=run {
                    let (value, after) = rest.split_at(end);
                    if *first == Part::User {
                        self.read_legacy(tail, after, Some(value), server, found);
                    } else {
                        self.read_legacy(tail, after, user, Some(value), found);
                    }
                }
            }
        }
    }

    /// The literal text, placeholders left out.
    fn literal(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|p| match p {
            Part::Text(t) => Some(t.as_str()),
            _ => None,
        })
    }

    /// Whether the template starts with literal `/`.
    fn is_absolute(&self) -> bool {
        matches!(self.parts.first(), Some(Part::Text(t)) if t.starts_with('/'))
    }
}

/// A checked volume.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Volume {
    /// Named volume or bind mount.
    pub kind: VolumeKind,
    /// The volume's name or the host path.
    pub source: Template,
    /// The path in the container.
    pub target: Template,
    /// Whether it is mounted read-only.
    pub read_only: bool,
}

/// A checked Spark attachment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SparkProfile {
    /// The master URL as written.
    pub master: String,
    /// How the notebook attaches.
    pub attach: SparkAttach,
    /// Extra `spark.*` properties.
    pub conf: BTreeMap<String, String>,
}

/// How a notebook attaches to Spark, decided by the master URL's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SparkAttach {
    /// Spark Connect (`sc://`): the notebook is a client; `SPARK_REMOTE` is set.
    Connect,
    /// The kernel is a client-mode driver that executors connect back to.
    Driver(SparkNetworking),
}

/// A checked profile: what [`crate::request::container_spec`] and the backends consume.
#[derive(Clone, Debug, PartialEq)]
pub struct Profile {
    /// The profile's id (its key under `[profiles]`).
    pub id: ProfileId,
    /// The name on the spawn page.
    pub display_name: String,
    /// The description on the spawn page.
    pub description: String,
    /// The image.
    pub image: String,
    /// CPU limit in nano-CPUs (10⁻⁹ CPU).
    pub nano_cpus: Option<i64>,
    /// CPU reservation in nano-CPUs, for cluster backends.
    pub cpu_reservation_nano: Option<i64>,
    /// Memory limit in bytes.
    pub memory_bytes: Option<i64>,
    /// Memory reservation (soft limit) in bytes.
    pub memory_reservation_bytes: Option<i64>,
    /// `/dev/shm` size in bytes.
    pub shm_size_bytes: Option<i64>,
    /// Extra environment; values are templates.
    pub env: BTreeMap<String, Template>,
    /// Volumes.
    pub volumes: Vec<Volume>,
    /// The network to join instead of the configured default.
    pub network: Option<String>,
    /// The command replacing the image's.
    pub cmd: Option<Vec<String>>,
    /// The working directory, a template.
    pub working_dir: Option<Template>,
    /// Stop after this long without traffic.
    pub idle_timeout: Option<Duration>,
    /// Stop this long after starting.
    pub max_age: Option<Duration>,
    /// Groups allowed to use the profile; empty means everyone.
    pub allowed_groups: Vec<String>,
    /// GPUs, if any.
    pub gpus: Option<GpuRequest>,
    /// Spark attachment, if any.
    pub spark: Option<SparkProfile>,
    /// Placement constraints for cluster backends.
    pub constraints: BTreeMap<String, String>,
    /// How the container takes on the user's UID/GID.
    pub run_as: RunAs,
    /// What a stop does with the container.
    pub on_stop: OnStop,
}

impl Profile {
    /// Whether `identity` may use this profile: `allowed_groups` is empty or shares a group
    /// with the user.
    pub fn is_allowed_for(&self, identity: &Identity) -> bool {
        self.allowed_groups.is_empty()
            || self
                .allowed_groups
                .iter()
                .any(|g| identity.groups.contains(g))
    }
}

/// Environment variables gantry sets itself; a profile may not.
const RESERVED_ENV: &[&str] = &[
    "HOME",
    "NB_USER",
    "NB_UID",
    "NB_GID",
    "NB_GROUP",
    "CHOWN_HOME",
    "NVIDIA_VISIBLE_DEVICES",
    "NVIDIA_DRIVER_CAPABILITIES",
    "SPARK_MASTER",
    "SPARK_REMOTE",
    "SPARK_DRIVER_HOST",
    "SPARK_DRIVER_BIND_ADDRESS",
    "SPARK_DRIVER_PORT",
    "SPARK_BLOCKMANAGER_PORT",
    "PYSPARK_SUBMIT_ARGS",
];

/// Environment-name prefixes gantry owns.
const RESERVED_ENV_PREFIXES: &[&str] = &["JUPYTERHUB_", "GANTRY_"];

/// Spark properties gantry sets itself.
pub(crate) const RESERVED_SPARK_CONF: &[&str] = &[
    "spark.master",
    "spark.remote",
    "spark.driver.host",
    "spark.driver.bindAddress",
    "spark.driver.port",
    "spark.driver.blockManager.port",
    "spark.blockManager.port",
];

/// Whether `name` is a portable environment variable name.
fn is_env_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// Whether `name` matches Docker's object-name rule `[a-zA-Z0-9][a-zA-Z0-9_.-]*`.
pub(crate) fn is_docker_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b) if b.is_ascii_alphanumeric())
        && bytes.all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
}

/// Collects issues under one key prefix.
pub(crate) struct Issues<'a> {
    pub(crate) prefix: String,
    pub(crate) list: &'a mut Vec<ConfigIssue>,
}

impl Issues<'_> {
    /// Records a problem with `<prefix>.<field>`.
    pub(crate) fn push(&mut self, field: &str, problem: impl Into<String>, fix: impl Into<String>) {
        let key = if field.is_empty() {
            self.prefix.clone()
        } else {
            format!("{}.{field}", self.prefix)
        };
        self.list.push(ConfigIssue {
            key,
            problem: problem.into(),
            fix: fix.into(),
        });
    }
}

const SIZE_FIX: &str =
    "write a size such as \"512M\" or \"4G\" (binary units, as docker run --memory)";
const DURATION_FIX: &str = "write a whole number with s, m, h or d, such as \"30m\" or \"2h\"";

impl ProfileConfig {
    /// Checks the profile stored under `[profiles.<key>]`, recording every problem in
    /// `issues`; returns the checked profile when there were none.
    pub(crate) fn validate(&self, key: &str, issues: &mut Vec<ConfigIssue>) -> Option<Profile> {
        let before = issues.len();
        let mut out = Issues {
            prefix: format!("profiles.{key}"),
            list: issues,
        };
        let id = match ProfileId::new(key) {
            Ok(id) => Some(id),
            Err(e) => {
                out.push(
                    "",
                    e.to_string(),
                    "rename the table, e.g. [profiles.gpu-large]",
                );
                None
            }
        };
        if self.display_name.trim().is_empty() {
            out.push(
                "display_name",
                "must not be empty",
                "give the name shown on the spawn page",
            );
        }
        if self.image.is_empty()
            || self
                .image
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            out.push(
                "image",
                format!("expected an image reference, got {:?}", self.image),
                "write it as docker pull takes it, e.g. \"quay.io/jupyter/base-notebook:latest\"",
            );
        }
        let nano_cpus = self.cpus(&mut out, "cpu_limit", self.cpu_limit);
        let cpu_reservation_nano = self.cpus(&mut out, "cpu_reservation", self.cpu_reservation);
        if let (Some(limit), Some(reserved)) = (nano_cpus, cpu_reservation_nano)
            && reserved > limit
        {
            out.push(
                "cpu_reservation",
                "is more than cpu_limit",
                "lower cpu_reservation or raise cpu_limit",
            );
        }
        let memory_bytes = size(&mut out, "mem_limit", self.mem_limit.as_deref());
        if memory_bytes.is_some_and(|m| m < 6 << 20) {
            out.push(
                "mem_limit",
                "is under 6M, which the engine refuses",
                "raise it to at least \"6M\"",
            );
        }
        let memory_reservation_bytes =
            size(&mut out, "mem_reservation", self.mem_reservation.as_deref());
        if let (Some(limit), Some(reserved)) = (memory_bytes, memory_reservation_bytes)
            && reserved > limit
        {
            out.push(
                "mem_reservation",
                "is more than mem_limit, which the engine refuses",
                "lower mem_reservation or raise mem_limit",
            );
        }
        let shm_size_bytes = size(&mut out, "shm_size", self.shm_size.as_deref());
        if shm_size_bytes == Some(0) {
            out.push(
                "shm_size",
                "must be more than zero",
                "remove it for the engine's default",
            );
        }
        let env = self.env(&mut out);
        let volumes = self.volumes(&mut out);
        if let Some(network) = &self.network
            && (!is_docker_name(network) || matches!(network.as_str(), "host" | "none"))
        {
            out.push(
                "network",
                format!(
                    "expected the name of a Docker network other than host or none, got {network:?}"
                ),
                "name a bridge or overlay network the proxy is attached to; for Spark host \
                 networking set spark.networking = \"host\" instead",
            );
        }
        if let Some(cmd) = &self.cmd
            && cmd.first().is_none_or(String::is_empty)
        {
            out.push(
                "cmd",
                "must start with a non-empty program",
                "remove it to use the image's CMD",
            );
        }
        let working_dir = self.working_dir.as_deref().and_then(|w| {
            let t = template(&mut out, "working_dir", w)?;
            if !t.is_absolute() {
                out.push(
                    "working_dir",
                    format!("expected an absolute path, got {w:?}"),
                    "start it with /",
                );
            }
            Some(t)
        });
        let idle_timeout = duration(&mut out, "idle_timeout", self.idle_timeout.as_deref());
        let max_age = duration(&mut out, "max_age", self.max_age.as_deref());
        if self.allowed_groups.iter().any(|g| g.trim().is_empty()) {
            out.push(
                "allowed_groups",
                "contains an empty group name",
                "remove it",
            );
        }
        let gpus = self.gpus(&mut out);
        let spark = self.spark(&mut out);
        for (k, v) in &self.constraints {
            let key_ok = !k.is_empty()
                && k.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"_.-/".contains(&b));
            if !key_ok || v.is_empty() || v.chars().any(char::is_whitespace) {
                out.push(
                    &format!("constraints.{k}"),
                    format!("expected an attribute or label name and a non-empty value, got {k:?} = {v:?}"),
                    "write e.g. constraints = { gpu = \"true\" }",
                );
            }
        }
        if issues.len() > before {
            return None;
        }
        Some(Profile {
            id: id?,
            display_name: self.display_name.trim().to_owned(),
            description: self.description.trim().to_owned(),
            image: self.image.clone(),
            nano_cpus,
            cpu_reservation_nano,
            memory_bytes,
            memory_reservation_bytes,
            shm_size_bytes,
            env,
            volumes,
            network: self.network.clone(),
            cmd: self.cmd.clone(),
            working_dir,
            idle_timeout,
            max_age,
            allowed_groups: self.allowed_groups.clone(),
            gpus,
            spark,
            constraints: self.constraints.clone(),
            run_as: self.run_as,
            on_stop: self.on_stop,
        })
    }

    fn cpus(&self, out: &mut Issues<'_>, field: &str, value: Option<f64>) -> Option<i64> {
        let v = value?;
        let nano = units::cpus_to_nano(v);
        if nano.is_none() {
            out.push(
                field,
                format!("expected a number of CPUs from 0.01 to 4096, got {v}"),
                format!("write e.g. {field} = 2 or {field} = 0.5"),
            );
        }
        nano
    }

    fn env(&self, out: &mut Issues<'_>) -> BTreeMap<String, Template> {
        let mut env = BTreeMap::new();
        for (name, value) in &self.env {
            let field = format!("env.{name}");
            if !is_env_name(name) {
                out.push(
                    &field,
                    "is not a portable variable name",
                    "use letters, digits and _, not starting with a digit",
                );
                continue;
            }
            let reserved = RESERVED_ENV.contains(&name.as_str())
                || RESERVED_ENV_PREFIXES.iter().any(|p| name.starts_with(p));
            if reserved {
                out.push(
                    &field,
                    "is set by gantry itself",
                    "remove it; see the profile documentation for what gantry sets",
                );
                continue;
            }
            if value.contains('\0') {
                out.push(&field, "contains a NUL byte", "remove it");
                continue;
            }
            if let Some(t) = template(out, &field, value) {
                env.insert(name.clone(), t);
            }
        }
        env
    }

    fn volumes(&self, out: &mut Issues<'_>) -> Vec<Volume> {
        let mut volumes = Vec::new();
        let mut targets = BTreeMap::new();
        for (i, v) in self.volumes.iter().enumerate() {
            let field = |f: &str| format!("volumes[{i}].{f}");
            let source = template(out, &field("source"), &v.source);
            let target = template(out, &field("target"), &v.target);
            if let Some(t) = &target {
                if !t.is_absolute() || t.as_str() == "/" {
                    out.push(
                        &field("target"),
                        format!("expected an absolute path below /, got {:?}", v.target),
                        "start it with / and name a directory",
                    );
                } else if let Some(j) = targets.insert(t.as_str().to_owned(), i) {
                    out.push(
                        &field("target"),
                        format!("is also the target of volumes[{j}]"),
                        "mount each path once",
                    );
                }
            }
            if let Some(s) = &source {
                let ok = match v.kind {
                    VolumeKind::Bind => s.is_absolute(),
                    // The placeholders are escaped into [a-z0-9_]; the literal text must fit
                    // Docker's volume-name rule too, and the name must not be empty.
                    VolumeKind::Volume => {
                        !s.as_str().is_empty()
                            && s.literal().all(|t| {
                                t.bytes()
                                    .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b))
                            })
                    }
                };
                if !ok {
                    let fix = match v.kind {
                        VolumeKind::Bind => {
                            "give an absolute host path, e.g. \"/srv/homes/{username}\""
                        }
                        VolumeKind::Volume => {
                            "use letters, digits, '_', '.' and '-' around the placeholders, e.g. \"gantry-home-{username}\""
                        }
                    };
                    out.push(
                        &field("source"),
                        format!("{:?} is not a valid {} source", v.source, kind_word(v.kind)),
                        fix,
                    );
                }
            }
            if let Some(s) = &source {
                let separators: &[u8] = match v.kind {
                    VolumeKind::Bind => b"/",
                    VolumeKind::Volume => b"-.",
                };
                if let Some(problem) = s.sharing_problem(separators) {
                    let fix = match v.kind {
                        VolumeKind::Bind => {
                            "put each placeholder in its own path segment, e.g. \"/srv/homes/{username}/{servername}\""
                        }
                        VolumeKind::Volume => {
                            "write e.g. \"gantry-{username}-{servername}\", or \"gantry-home-{username}\" for one volume per user"
                        }
                    };
                    out.push(&field("source"), problem, fix);
                }
            }
            if let (Some(source), Some(target)) = (source, target) {
                volumes.push(Volume {
                    kind: v.kind,
                    source,
                    target,
                    read_only: v.read_only,
                });
            }
        }
        volumes
    }

    fn gpus(&self, out: &mut Issues<'_>) -> Option<GpuRequest> {
        let Some(value) = &self.gpus else {
            if self.gpu_shared {
                out.push(
                    "gpu_shared",
                    "has no effect without gpus",
                    "set gpus, or remove gpu_shared",
                );
            }
            return None;
        };
        let count = match value {
            GpusValue::Text(t) if t == "all" => Some(GpuCount::All),
            GpusValue::Number(n) => u32::try_from(*n)
                .ok()
                .and_then(NonZeroU32::new)
                .map(GpuCount::Exactly),
            _ => None,
        };
        if count.is_none() {
            out.push(
                "gpus",
                format!("\"all\" or a positive integer, got {value}"),
                "write gpus = 1 or gpus = \"all\", or remove the key for a profile without GPUs",
            );
        }
        Some(GpuRequest {
            count: count?,
            shared: self.gpu_shared,
        })
    }

    fn spark(&self, out: &mut Issues<'_>) -> Option<SparkProfile> {
        let spark = self.spark.as_ref()?;
        let master = spark.master.as_str();
        let attach = if master.starts_with("sc://") {
            SparkAttach::Connect
        } else {
            SparkAttach::Driver(spark.networking)
        };
        let known = ["spark://", "sc://", "mesos://", "k8s://", "yarn"]
            .iter()
            .any(|p| master.starts_with(p))
            || master == "local"
            || master.starts_with("local[");
        let bare_scheme = master.ends_with("://");
        if !known || bare_scheme || master.chars().any(|c| c.is_whitespace() || c.is_control()) {
            out.push(
                "spark.master",
                format!("expected a Spark master URL, got {master:?}"),
                "write e.g. \"spark://spark-master:7077\" or \"sc://spark-connect:15002\"",
            );
        }
        if spark.networking == SparkNetworking::Host
            && attach != SparkAttach::Connect
            && self.network.is_some()
        {
            out.push(
                "network",
                "cannot be combined with spark.networking = \"host\"",
                "remove network, or use spark.networking = \"published-ports\"",
            );
        }
        for (k, v) in &spark.conf {
            let field = format!("spark.conf.\"{k}\"");
            if !k.starts_with("spark.") || k.chars().any(|c| c.is_whitespace() || c == '=') {
                out.push(
                    &field,
                    "is not a Spark property name",
                    "use a name starting with spark., such as spark.executor.memory",
                );
            } else if RESERVED_SPARK_CONF.contains(&k.as_str()) {
                out.push(
                    &field,
                    "is set by gantry itself",
                    "remove it; gantry sets the master and the driver's address and ports",
                );
            } else if v.chars().any(char::is_control) {
                out.push(&field, "contains a control character", "remove it");
            }
        }
        Some(SparkProfile {
            master: master.to_owned(),
            attach,
            conf: spark.conf.clone(),
        })
    }
}

fn kind_word(kind: VolumeKind) -> &'static str {
    match kind {
        VolumeKind::Volume => "named volume",
        VolumeKind::Bind => "bind mount",
    }
}

fn template(out: &mut Issues<'_>, field: &str, text: &str) -> Option<Template> {
    match Template::parse(text) {
        Ok(t) => Some(t),
        Err(e) => {
            out.push(
                field,
                format!("{text:?}: {e}"),
                "use only {username} and {servername}",
            );
            None
        }
    }
}

fn size(out: &mut Issues<'_>, field: &str, text: Option<&str>) -> Option<i64> {
    let text = text?;
    let bytes = units::parse_bytes(text);
    if bytes.is_none() {
        out.push(field, format!("expected a size, got {text:?}"), SIZE_FIX);
    }
    bytes
}

fn duration(out: &mut Issues<'_>, field: &str, text: Option<&str>) -> Option<Duration> {
    let text = text?;
    match units::parse_duration(text) {
        Some(d) if !d.is_zero() => Some(d),
        Some(_) => {
            out.push(
                field,
                "must be more than zero",
                "remove it to never stop the server for this reason",
            );
            None
        }
        None => {
            out.push(
                field,
                format!("expected a duration, got {text:?}"),
                DURATION_FIX,
            );
            None
        }
    }
}
