//! The spawner's part of the configuration file, and its check.
//!
//! ```toml
//! [docker]
//! instance = "gantry"             # container-name prefix and gantry.instance label
//! network = "gantry"              # the gantry-owned network servers join
//! gpu_request = "cdi"             # or "device-request", "runtime"
//! gpus = ["0", "1"]               # or leave out to use the engine's CDI devices
//! spark_driver_host = "10.0.0.5"  # this host's address as Spark workers reach it
//! spark_ports = [40000, 40999]
//!
//! [profiles.cpu]
//! display_name = "CPU only"
//! image = "quay.io/jupyter/base-notebook:latest"
//! ```
//!
//! The binary reads and parses the file (this crate reads nothing) and hands the spawner's
//! tables over as a [`SpawnerConfig`]. [`SpawnerConfig::validate`] checks everything at once
//! and returns either a [`ValidatedConfig`] or every [`ConfigIssue`], each naming the key
//! (relative to the tables given, e.g. `profiles.gpu-a100.gpus`) and the fix.

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::gpu::{DeviceId, GpuInventory};
use crate::names::{Instance, ProfileId};
use crate::ports::PortRange;
use crate::profile::{GpusValue, Profile, ProfileConfig, SparkNetworking, is_docker_name};

#[cfg(test)]
mod tests;

/// The spawner's tables of the configuration file.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpawnerConfig {
    /// The Docker host (`[docker]`).
    #[serde(default)]
    pub docker: DockerConfig,
    /// The profiles by id (`[profiles.<id>]`). Default: none, which leaves nothing to start.
    #[serde(default)]
    pub profiles: BTreeMap<String, ProfileConfig>,
    /// The Mesos master, for the Mesos backend (`[mesos]`; see [`crate::mesos::MesosConfig`]).
    /// Default: none.
    #[serde(default)]
    pub mesos: Option<crate::mesos::MesosConfig>,
}

/// How GPUs are requested from the Docker engine on this host
/// (`shared/reference/mesos-gpu-spark.md` §4.1).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum GpuStyle {
    /// CDI device names (`nvidia.com/gpu=0`) in a device request with driver `cdi`, as
    /// `docker run --device nvidia.com/gpu=0` sends. Needs a CDI spec on the host
    /// (`nvidia-ctk cdi generate`); CDI is on by default from Docker 28.2. The default.
    #[default]
    Cdi,
    /// A device request with driver `nvidia`, device ids and capability `gpu`, as
    /// `docker run --gpus '"device=0"'` sends. Needs `nvidia-container-runtime-hook` on
    /// dockerd's PATH when it started.
    DeviceRequest,
    /// The `nvidia` runtime with `NVIDIA_VISIBLE_DEVICES` (the nvidia-docker2 way). Needs
    /// `runtimes.nvidia` in daemon.json.
    Runtime,
}

/// The Docker host, as written under `[docker]`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// This gantry's name on the engine: the prefix of its container names and the value of
    /// its `gantry.instance` label. 1 to 32 of `a-z`, `0-9`, `-`. Default: `"gantry"`.
    pub instance: String,
    /// The Docker network servers join; gantry creates and owns it, and publishes no server
    /// port on the host. Default: `"gantry"`.
    pub network: String,
    /// How GPUs are requested: `"cdi"`, `"device-request"` or `"runtime"`. Default: `"cdi"`.
    pub gpu_request: GpuStyle,
    /// The CDI kind of the GPUs, `vendor/class`. Tests use their own kind so that they cannot
    /// meet a real spec. Default: `"nvidia.com/gpu"`.
    pub cdi_kind: String,
    /// The host's GPU device ids, e.g. `["0", "1"]` or UUIDs. Default: unset, meaning the
    /// devices of `cdi_kind` that the engine reports in `GET /info` (Docker ≥ 28.2).
    pub gpus: Option<Vec<String>>,
    /// The address of this host as Spark workers reach it (an IP address or a DNS name),
    /// advertised as `spark.driver.host`. Required by profiles whose Spark driver uses
    /// published ports, on the Docker backend only: under `[mesos]` the driver advertises
    /// the host name of the agent its task runs on. Default: unset.
    pub spark_driver_host: Option<String>,
    /// The inclusive range of host ports that Spark driver and block-manager ports come from,
    /// `[first, last]`, from 1024 up. Default: `[40000, 40999]`.
    pub spark_ports: [u16; 2],
}

impl Default for DockerConfig {
    fn default() -> Self {
        let ports = PortRange::default();
        Self {
            instance: "gantry".to_owned(),
            network: "gantry".to_owned(),
            gpu_request: GpuStyle::default(),
            cdi_kind: "nvidia.com/gpu".to_owned(),
            gpus: None,
            spark_driver_host: None,
            spark_ports: [ports.start(), ports.end()],
        }
    }
}

/// The checked host settings that [`crate::request::container_spec`] needs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpawnSettings {
    /// This gantry's instance name.
    pub instance: Instance,
    /// The default network.
    pub network: String,
    /// How GPUs are requested.
    pub gpu_style: GpuStyle,
    /// The CDI kind of the GPUs.
    pub cdi_kind: String,
    /// The address advertised to Spark workers.
    pub spark_driver_host: Option<String>,
}

impl Default for SpawnSettings {
    fn default() -> Self {
        Self {
            instance: Instance::default(),
            network: "gantry".to_owned(),
            gpu_style: GpuStyle::default(),
            cdi_kind: "nvidia.com/gpu".to_owned(),
            spark_driver_host: None,
        }
    }
}

/// The configuration once checked.
#[derive(Clone, Debug, PartialEq)]
pub struct ValidatedConfig {
    /// Host settings for building container requests.
    pub settings: SpawnSettings,
    /// The configured GPUs, or `None` to take them from the engine's CDI devices.
    pub gpus: Option<GpuInventory>,
    /// Where Spark ports come from.
    pub spark_ports: PortRange,
    /// The profiles by id.
    pub profiles: BTreeMap<ProfileId, Profile>,
    /// The checked `[mesos]` table, when there is one.
    pub mesos: Option<crate::mesos::MesosSettings>,
}

/// One problem in the configuration: the key, what is wrong, how to fix it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{key}: {problem} (fix: {fix})")]
pub struct ConfigIssue {
    /// The key's dotted path, e.g. `profiles.gpu-a100.gpus`.
    pub key: String,
    /// What is wrong, with the value found.
    pub problem: String,
    /// What to do about it.
    pub fix: String,
}

/// Every problem found in the configuration.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct ConfigErrors(pub Vec<ConfigIssue>);

impl fmt::Display for ConfigErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let n = self.0.len();
        write!(
            f,
            "{n} problem{} in the spawner configuration:",
            if n == 1 { "" } else { "s" }
        )?;
        for issue in &self.0 {
            write!(f, "\n  {issue}")?;
        }
        Ok(())
    }
}

/// Whether `kind` looks like a CDI kind, `vendor/class` (`nvidia.com/gpu`).
fn is_cdi_kind(kind: &str) -> bool {
    let Some((vendor, class)) = kind.split_once('/') else {
        return false;
    };
    let vendor_ok = !vendor.is_empty()
        && vendor
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.".contains(&b));
    let class_ok = !class.is_empty()
        && class
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b));
    vendor_ok && class_ok
}

impl SpawnerConfig {
    /// Checks the whole configuration, reporting every problem rather than the first.
    pub fn validate(&self) -> Result<ValidatedConfig, ConfigErrors> {
        let mut issues = Vec::new();
        let mut issue = |key: &str, problem: String, fix: &str| {
            issues.push(ConfigIssue {
                key: key.to_owned(),
                problem,
                fix: fix.to_owned(),
            });
        };
        let d = &self.docker;
        let instance = Instance::new(&d.instance)
            .map_err(|e| {
                issue(
                    "docker.instance",
                    e.to_string(),
                    "write e.g. instance = \"gantry\"",
                )
            })
            .ok();
        if !is_docker_name(&d.network) || matches!(d.network.as_str(), "host" | "none") {
            issue(
                "docker.network",
                format!(
                    "expected a Docker network name other than host or none, got {:?}",
                    d.network
                ),
                "write e.g. network = \"gantry\"",
            );
        }
        if !is_cdi_kind(&d.cdi_kind) {
            issue(
                "docker.cdi_kind",
                format!("expected a CDI kind vendor/class, got {:?}", d.cdi_kind),
                "write e.g. cdi_kind = \"nvidia.com/gpu\"",
            );
        }
        let gpus = d.gpus.as_ref().and_then(|list| {
            let ids: Result<Vec<DeviceId>, _> = list.iter().map(|s| DeviceId::new(s)).collect();
            match ids.and_then(GpuInventory::new) {
                Ok(inv) => Some(inv),
                Err(e) => {
                    issue(
                        "docker.gpus",
                        e.to_string(),
                        "list each device once, e.g. gpus = [\"0\", \"1\"]",
                    );
                    None
                }
            }
        });
        if let Some(host) = &d.spark_driver_host
            && (host.is_empty()
                || host
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '/'))
        {
            issue(
                "docker.spark_driver_host",
                format!("expected an IP address or host name, got {host:?}"),
                "write the address Spark workers reach this host at, e.g. \"10.0.0.5\"",
            );
        }
        let spark_ports = PortRange::new(d.spark_ports[0], d.spark_ports[1]);
        if spark_ports.is_none() {
            issue(
                "docker.spark_ports",
                format!(
                    "expected [first, last] with 1024 <= first <= last, got {:?}",
                    d.spark_ports
                ),
                "write e.g. spark_ports = [40000, 40999]",
            );
        }
        // Cross-checks between the host and the profiles, in the profiles' names.
        for (key, p) in &self.profiles {
            let spark_driver = p.spark.as_ref().is_some_and(|s| {
                s.networking == SparkNetworking::PublishedPorts && !s.master.starts_with("sc://")
            });
            // Under Mesos the driver runs on whichever agent took the task, and advertises
            // that agent's host name (`mesos::task`): the Docker host's address is not asked.
            if spark_driver && d.spark_driver_host.is_none() && self.mesos.is_none() {
                issue(
                    &format!("profiles.{key}.spark"),
                    "needs docker.spark_driver_host: executors must know where to reach the driver"
                        .to_owned(),
                    "set docker.spark_driver_host to this host's address, or use spark.networking = \"host\"",
                );
            }
            if let (Some(GpusValue::Number(n)), Some(inv)) = (&p.gpus, &gpus)
                && usize::try_from(*n).is_ok_and(|n| n > inv.len())
            {
                issue(
                    &format!("profiles.{key}.gpus"),
                    format!("asks for {n} GPUs but docker.gpus lists {}", inv.len()),
                    "lower gpus, or list more devices under docker.gpus",
                );
            }
        }
        let mut profiles = BTreeMap::new();
        for (key, p) in &self.profiles {
            if let Some(profile) = p.validate(key, &mut issues) {
                profiles.insert(profile.id.clone(), profile);
            }
        }
        let mesos = self.mesos.as_ref().and_then(|m| m.validate(&mut issues));
        match (instance, spark_ports) {
            (Some(instance), Some(spark_ports)) if issues.is_empty() => Ok(ValidatedConfig {
                settings: SpawnSettings {
                    instance,
                    network: d.network.clone(),
                    gpu_style: d.gpu_request,
                    cdi_kind: d.cdi_kind.clone(),
                    spark_driver_host: d.spark_driver_host.clone(),
                },
                gpus,
                spark_ports,
                profiles,
                mesos,
            }),
            _ => Err(ConfigErrors(issues)),
        }
    }
}
