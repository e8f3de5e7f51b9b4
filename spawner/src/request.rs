//! Profile + identity + server name → the container the Docker engine should create.
//!
//! [`container_spec`] is pure: it reads no clock, environment or engine. The Docker backend
//! turns the [`ContainerSpec`] into the engine's create request, adds the hub's per-spawn
//! environment (API token, URLs), and records the allocation it was given, since the labels
//! written here are what [`crate::gpu::rebuild`] and [`crate::ports::ports_in_use`] read back
//! after a restart.
//!
//! What it decides, and why:
//!
//! * **Identity.** With a known UID the container takes on the user as [`RunAs`] says (Jupyter
//!   docker-stacks conventions, `docs/using/common.md` and `start.sh`): `NB_USER`, `NB_UID`,
//!   `NB_GID` always; with [`RunAs::User`] also `User = "uid:gid"`, group 100 (`users`) and
//!   `HOME=/home/<user>`; with [`RunAs::RootThenDrop`] `User = "0"` and `CHOWN_HOME=yes`, and
//!   `start.sh` drops to the user (its `sudo --set-home` sets `HOME`). Without a UID the
//!   image's user runs and none of these are set. The user name then becomes a Linux account
//!   name and a path segment, so it must be a portable one.
//! * **GPUs**, by the host's [`GpuStyle`] (`shared/reference/mesos-gpu-spark.md` §4.1), always
//!   naming the allocated devices, never a count, so that the engine gives exactly the devices
//!   the spawner booked:
//!   [`GpuStyle::Cdi`] → `DeviceRequests: [{Driver: "cdi", DeviceIDs: ["nvidia.com/gpu=0"]}]`,
//!   exactly what `docker run --device nvidia.com/gpu=0` sends (the `cdi` driver refuses a
//!   count or options);
//!   [`GpuStyle::DeviceRequest`] → `[{Driver: "nvidia", DeviceIDs: ["0"], Capabilities:
//!   [["gpu"]]}]` (a count together with ids is refused by the engine);
//!   [`GpuStyle::Runtime`] → `Runtime: "nvidia"`, `NVIDIA_VISIBLE_DEVICES=0,1`,
//!   `NVIDIA_DRIVER_CAPABILITIES=compute,utility`.
//!   A server without GPUs gets `NVIDIA_VISIBLE_DEVICES=void`: CUDA images set `all`, and on
//!   a host whose default runtime is `nvidia` that would hand every GPU to it.
//! * **Spark** (§5.1). `sc://` sets `SPARK_REMOTE` only. A client-mode driver gets
//!   `SPARK_MASTER` and `PYSPARK_SUBMIT_ARGS` (which pyspark splits like a shell) with the
//!   driver's address and ports; with published ports it also gets `SPARK_DRIVER_HOST`,
//!   `SPARK_DRIVER_BIND_ADDRESS`, `SPARK_DRIVER_PORT`, `SPARK_BLOCKMANAGER_PORT` for images
//!   that write their own `spark-defaults.conf`, and the two ports are published one-to-one.
//!   These are the only ports ever published; the notebook itself is reached over the
//!   gantry network.

use std::collections::BTreeMap;
use std::net::IpAddr;

use crate::config::{GpuStyle, SpawnSettings};
use crate::gpu::{DeviceId, GpuCount, GpuHold, hold_labels};
use crate::labels;
use crate::names::{Identity, ServerName, container_name, volume_name};
use crate::ports::SparkPorts;
use crate::profile::{Profile, RunAs, SparkAttach, SparkNetworking, VolumeKind};

#[cfg(test)]
mod tests;

/// The group id docker-stacks images give `/opt/conda` and the default home (`users`).
pub const USERS_GID: u32 = 100;

/// Why no container request could be built.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    /// The user may not use the profile.
    #[error("user {user:?} is not in any of the groups allowed to use profile {profile}")]
    NotAllowed {
        /// The user.
        user: String,
        /// The profile.
        profile: String,
    },
    /// The user name cannot be used in paths and templates.
    #[error(
        "user name {0:?} cannot be used in a path: it is empty, '.', '..', or holds '/', NUL \
         or a control character"
    )]
    UnsafeUserName(String),
    /// The user name cannot be a Linux account name, which a known UID needs.
    #[error(
        "user name {0:?} is not a portable Linux account name ([a-z_][a-z0-9_.-]*, at most 32 \
         bytes), which running as the user's UID needs; leave the UID unknown for this user or \
         give the account a portable name"
    )]
    NotAnAccountName(String),
    /// The allocation does not match what the profile asks for.
    #[error("profile {profile} asks for {wanted} GPU(s) but {given} were allocated")]
    GpuMismatch {
        /// The profile.
        profile: String,
        /// What it asks for: a count, `all` or `0`.
        wanted: String,
        /// How many devices were allocated.
        given: usize,
    },
    /// A Spark driver with published ports needs ports and an address.
    #[error("profile {profile} runs a Spark driver on published ports, which needs {missing}")]
    SparkUnplaced {
        /// The profile.
        profile: String,
        /// What was missing.
        missing: &'static str,
    },
    /// A named volume's name, once filled in, is not a valid volume name.
    #[error("volume name {0:?} is not valid: it must match [a-zA-Z0-9][a-zA-Z0-9_.-]+")]
    BadVolumeName(String),
}

/// What the spawner allocated for one server before building its request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Allocation {
    /// The GPUs, from [`crate::gpu::allocate`]; empty for a profile without GPUs.
    pub gpus: Vec<DeviceId>,
    /// The Spark driver's host ports, from [`crate::ports::allocate_spark_ports`]; needed by
    /// Spark profiles with published ports, ignored otherwise.
    pub spark_ports: Option<SparkPorts>,
}

/// A mount in the container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MountSpec {
    /// Named volume or bind mount.
    pub kind: VolumeKind,
    /// The volume's name or the host path.
    pub source: String,
    /// The path in the container.
    pub target: String,
    /// Whether it is read-only.
    pub read_only: bool,
}

/// One entry of the engine's `HostConfig.DeviceRequests`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeviceRequestSpec {
    /// `Driver`: `cdi` or `nvidia`.
    pub driver: String,
    /// `Count`; never set together with device ids, which the engine refuses.
    pub count: Option<i64>,
    /// `DeviceIDs`: CDI device names (`nvidia.com/gpu=0`) or device ids.
    pub device_ids: Vec<String>,
    /// `Capabilities`, an OR-list of AND-lists; empty for CDI.
    pub capabilities: Vec<Vec<String>>,
}

/// A published TCP port: host `host_ip:host_port` to the container's `container_port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortBindingSpec {
    /// The port in the container.
    pub container_port: u16,
    /// The host address to bind; empty for every address.
    pub host_ip: String,
    /// The host port; equal to `container_port` for Spark, where the advertised port must be
    /// the same on both sides.
    pub host_port: u16,
}

/// The engine's `HostConfig` pieces gantry sets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HostSpec {
    /// `NanoCpus`: CPU limit in 10⁻⁹ CPUs.
    pub nano_cpus: Option<i64>,
    /// `Memory`: limit in bytes.
    pub memory: Option<i64>,
    /// `MemoryReservation`: soft limit in bytes.
    pub memory_reservation: Option<i64>,
    /// `ShmSize`: `/dev/shm` in bytes.
    pub shm_size: Option<i64>,
    /// `Mounts`.
    pub mounts: Vec<MountSpec>,
    /// `NetworkMode`: the network's name, or `host`.
    pub network_mode: String,
    /// `GroupAdd`: supplementary groups.
    pub group_add: Vec<String>,
    /// `DeviceRequests`.
    pub device_requests: Vec<DeviceRequestSpec>,
    /// `Runtime`, when not the engine's default.
    pub runtime: Option<String>,
    /// `PortBindings`; also the container's `ExposedPorts`.
    pub port_bindings: Vec<PortBindingSpec>,
}

/// The container to create: our own plain description of the engine's create request.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ContainerSpec {
    /// The container's name ([`container_name`]).
    pub name: String,
    /// The image.
    pub image: String,
    /// `Cmd`, when the profile replaces the image's.
    pub cmd: Option<Vec<String>>,
    /// `Env`, by name.
    pub env: BTreeMap<String, String>,
    /// `Labels` (see [`crate::labels`]).
    pub labels: BTreeMap<String, String>,
    /// `User`: `uid:gid`, `0`, or `None` for the image's.
    pub user: Option<String>,
    /// `WorkingDir`.
    pub working_dir: Option<String>,
    /// `HostConfig`.
    pub host: HostSpec,
}

/// Whether `name` can stand in a path as one segment.
fn is_path_safe(name: &str) -> bool {
    !name.is_empty()
        && name != "."
        && name != ".."
        && !name.chars().any(|c| c == '/' || c.is_control())
}

/// Whether `name` is a portable Linux account name (what `useradd` takes everywhere).
fn is_account_name(name: &str) -> bool {
    let mut bytes = name.bytes();
    name.len() <= 32
        && matches!(bytes.next(), Some(b) if b.is_ascii_lowercase() || b == b'_')
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"_.-".contains(&b))
}

/// Quotes `word` for a POSIX shell (and Python's `shlex.split`, which pyspark uses on
/// `PYSPARK_SUBMIT_ARGS`), leaving plain words as they are.
fn shell_quote(word: &str) -> String {
    let plain = !word.is_empty()
        && word
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.,:/=@%+".contains(&b));
    if plain {
        word.to_owned()
    } else {
        format!("'{}'", word.replace('\'', r"'\''"))
    }
}

/// Builds the container request for `identity`'s server `server` from `profile`, with the GPUs
/// and ports in `allocation`, on the host described by `settings`. See the module
/// documentation for what it sets and why.
pub fn container_spec(
    profile: &Profile,
    identity: &Identity,
    server: &ServerName,
    allocation: &Allocation,
    settings: &SpawnSettings,
) -> Result<ContainerSpec, SpecError> {
    let user = identity.user.as_str();
    if !profile.is_allowed_for(identity) {
        return Err(SpecError::NotAllowed {
            user: user.to_owned(),
            profile: profile.id.to_string(),
        });
    }
    if !is_path_safe(user) {
        return Err(SpecError::UnsafeUserName(user.to_owned()));
    }
    let server_str = server.as_str();
    let mut spec = ContainerSpec {
        name: container_name(&settings.instance, user, server),
        image: profile.image.clone(),
        cmd: profile.cmd.clone(),
        working_dir: profile
            .working_dir
            .as_ref()
            .map(|t| t.render(user, server_str)),
        host: HostSpec {
            nano_cpus: profile.nano_cpus,
            memory: profile.memory_bytes,
            memory_reservation: profile.memory_reservation_bytes,
            shm_size: profile.shm_size_bytes,
            network_mode: profile
                .network
                .clone()
                .unwrap_or_else(|| settings.network.clone()),
            ..HostSpec::default()
        },
        ..ContainerSpec::default()
    };
    for (name, value) in &profile.env {
        spec.env
            .insert(name.clone(), value.render(user, server_str));
    }
    for v in &profile.volumes {
        let source = match v.kind {
            VolumeKind::Bind => v.source.render(user, server_str),
            VolumeKind::Volume => {
                let name = volume_name(&v.source, user, server);
                if name.len() < 2 || !crate::profile::is_docker_name(&name) {
                    return Err(SpecError::BadVolumeName(name));
                }
                name
            }
        };
        spec.host.mounts.push(MountSpec {
            kind: v.kind,
            source,
            target: v.target.render(user, server_str),
            read_only: v.read_only,
        });
    }

    spec.labels = BTreeMap::from([
        (labels::OWNER.to_owned(), user.to_owned()),
        (labels::SERVER.to_owned(), server_str.to_owned()),
        (labels::PROFILE.to_owned(), profile.id.to_string()),
        (labels::INSTANCE.to_owned(), settings.instance.to_string()),
    ]);

    set_identity(&mut spec, profile.run_as, identity)?;
    set_gpus(&mut spec, profile, allocation, settings)?;
    set_spark(&mut spec, profile, allocation, settings)?;
    Ok(spec)
}

fn set_identity(
    spec: &mut ContainerSpec,
    run_as: RunAs,
    identity: &Identity,
) -> Result<(), SpecError> {
    let Some(uid) = identity.uid else {
        return Ok(());
    };
    let user = identity.user.as_str();
    if !is_account_name(user) {
        return Err(SpecError::NotAnAccountName(user.to_owned()));
    }
    let gid = identity.gid.unwrap_or(USERS_GID);
    let home = format!("/home/{user}");
    spec.env.insert("NB_USER".into(), user.to_owned());
    spec.env.insert("NB_UID".into(), uid.to_string());
    spec.env.insert("NB_GID".into(), gid.to_string());
    match run_as {
        RunAs::User => {
            spec.user = Some(format!("{uid}:{gid}"));
            spec.host.group_add = vec![USERS_GID.to_string()];
            spec.env.insert("HOME".into(), home.clone());
        }
        RunAs::RootThenDrop => {
            spec.user = Some("0".to_owned());
            spec.env.insert("CHOWN_HOME".into(), "yes".into());
        }
    }
    spec.working_dir.get_or_insert(home);
    Ok(())
}

fn set_gpus(
    spec: &mut ContainerSpec,
    profile: &Profile,
    allocation: &Allocation,
    settings: &SpawnSettings,
) -> Result<(), SpecError> {
    let given = allocation.gpus.len();
    let mismatch = |wanted: String| SpecError::GpuMismatch {
        profile: profile.id.to_string(),
        wanted,
        given,
    };
    let Some(request) = profile.gpus else {
        if given > 0 {
            return Err(mismatch("0".to_owned()));
        }
        spec.env
            .insert("NVIDIA_VISIBLE_DEVICES".into(), "void".into());
        return Ok(());
    };
    let fits = match request.count {
        GpuCount::All => given > 0,
        GpuCount::Exactly(n) => usize::try_from(n.get()).is_ok_and(|n| n == given),
    };
    if !fits {
        return Err(mismatch(request.count.to_string()));
    }
    let ids: Vec<String> = allocation
        .gpus
        .iter()
        .map(|d| d.as_str().to_owned())
        .collect();
    match settings.gpu_style {
        GpuStyle::Cdi => spec.host.device_requests.push(DeviceRequestSpec {
            driver: "cdi".into(),
            count: None,
            device_ids: ids
                .iter()
                .map(|id| format!("{}={id}", settings.cdi_kind))
                .collect(),
            capabilities: Vec::new(),
        }),
        GpuStyle::DeviceRequest => spec.host.device_requests.push(DeviceRequestSpec {
            driver: "nvidia".into(),
            count: None,
            device_ids: ids,
            capabilities: vec![vec!["gpu".into()]],
        }),
        GpuStyle::Runtime => {
            spec.host.runtime = Some("nvidia".into());
            spec.env
                .insert("NVIDIA_VISIBLE_DEVICES".into(), ids.join(","));
            spec.env.insert(
                "NVIDIA_DRIVER_CAPABILITIES".into(),
                "compute,utility".into(),
            );
        }
    }
    let hold = GpuHold {
        devices: allocation.gpus.clone(),
        shared: request.shared,
    };
    spec.labels.extend(hold_labels(&hold));
    Ok(())
}

fn set_spark(
    spec: &mut ContainerSpec,
    profile: &Profile,
    allocation: &Allocation,
    settings: &SpawnSettings,
) -> Result<(), SpecError> {
    let Some(spark) = &profile.spark else {
        return Ok(());
    };
    let networking = match spark.attach {
        SparkAttach::Connect => {
            spec.env.insert("SPARK_REMOTE".into(), spark.master.clone());
            return Ok(());
        }
        SparkAttach::Driver(networking) => networking,
    };
    spec.env.insert("SPARK_MASTER".into(), spark.master.clone());
    let mut conf: Vec<(String, String)> = Vec::new();
    match networking {
        SparkNetworking::Host => {
            spec.host.network_mode = "host".into();
            if let Some(host) = &settings.spark_driver_host {
                conf.push(("spark.driver.host".into(), host.clone()));
            }
        }
        SparkNetworking::PublishedPorts => {
            let unplaced = |missing| SpecError::SparkUnplaced {
                profile: profile.id.to_string(),
                missing,
            };
            let host = settings
                .spark_driver_host
                .as_ref()
                .ok_or_else(|| unplaced("docker.spark_driver_host"))?;
            let ports = allocation
                .spark_ports
                .ok_or_else(|| unplaced("allocated Spark ports"))?;
            let (driver, block_manager) =
                (ports.driver.to_string(), ports.block_manager.to_string());
            spec.env.insert("SPARK_DRIVER_HOST".into(), host.clone());
            spec.env
                .insert("SPARK_DRIVER_BIND_ADDRESS".into(), "0.0.0.0".into());
            spec.env.insert("SPARK_DRIVER_PORT".into(), driver.clone());
            spec.env
                .insert("SPARK_BLOCKMANAGER_PORT".into(), block_manager.clone());
            conf.extend([
                ("spark.driver.host".into(), host.clone()),
                ("spark.driver.bindAddress".into(), "0.0.0.0".into()),
                ("spark.driver.port".into(), driver),
                (
                    "spark.driver.blockManager.port".into(),
                    block_manager.clone(),
                ),
                ("spark.blockManager.port".into(), block_manager),
            ]);
            // Bind only the advertised address when it is one; a name may resolve to any.
            let host_ip = host
                .parse::<IpAddr>()
                .map(|ip| ip.to_string())
                .unwrap_or_default();
            for port in [ports.driver, ports.block_manager] {
                spec.host.port_bindings.push(PortBindingSpec {
                    container_port: port,
                    host_ip: host_ip.clone(),
                    host_port: port,
                });
            }
            spec.labels
                .insert(labels::SPARK_PORTS.into(), ports.label_value());
        }
    }
    conf.extend(spark.conf.iter().map(|(k, v)| (k.clone(), v.clone())));
    let mut args = vec!["--master".to_owned(), shell_quote(&spark.master)];
    for (k, v) in conf {
        args.push("--conf".into());
        args.push(shell_quote(&format!("{k}={v}")));
    }
    args.push("pyspark-shell".into());
    spec.env
        .insert("PYSPARK_SUBMIT_ARGS".into(), args.join(" "));
    Ok(())
}
