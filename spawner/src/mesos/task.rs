//! Profile + spawn request + placement → the `TaskInfo` to launch, and the [`Demand`] the
//! offer matcher places. Pure.
//!
//! The container is described once, by [`crate::request::container_spec`] (identity, Spark
//! settings, labels, volumes, as for the Docker backend), then written as Mesos sees it:
//!
//! * **CPU profiles** run in the **Docker containerizer** (`ContainerInfo.type = DOCKER`) on
//!   Docker's bridge: the notebook's port (`mesos.port`, 8888) is mapped from the first host
//!   port taken from the offer, and Spark driver ports one-to-one. `docker run` options the
//!   containerizer has no field for go in `parameters`: the labels, `user`, `group-add`,
//!   `workdir`, `shm-size`. A profile whose Spark driver uses host networking gets `HOST`.
//! * **GPU profiles** run in the **Mesos containerizer** with the Docker image
//!   (`type = MESOS`, `mesos.image.type = DOCKER`): GPUs are only isolated there
//!   (`docs/gpu-support.md`). It maps no ports and shares the agent's network, so the
//!   notebook must listen on the host port, given as `GANTRY_PORT`.
//!
//! Every task gets `GANTRY_PORT` (the port to listen on in its own network namespace) and
//! `PORT0` (the host port, as Marathon names it). The notebook is reached at
//! `http://<agent host>:<host port>` either way. Resources ask for the profile's reservations
//! (`cpu_reservation`, `mem_reservation`), else its limits, else `mesos.default_cpus` and
//! `mesos.default_mem`; limits above the reservation go in `TaskInfo.limits`. Spark profiles
//! advertise the agent's host name as the driver host.

use std::collections::BTreeMap;

use crate::config::SpawnSettings;
use crate::gpu::GpuCount;
use crate::ports::SparkPorts;
use crate::profile::{Profile, SparkAttach, SparkNetworking, VolumeKind};
use crate::request::{Allocation, SpecError, container_spec};
use crate::spawner::SpawnRequest;

use super::config::{MB, MesosSettings};
use super::offers::{Demand, GpuNeed, Milli, Placement, milli};
use super::proto::{
    CommandInfo, ContainerInfo, ContainerType, DockerImage, DockerInfo, DockerNetwork,
    DockerVolume, DurationInfo, Environment, Image, ImageType, KillPolicy, Labels, MesosInfo,
    Parameter, PortMapping, Scalar, TaskInfo, Variable, Volume, VolumeMode, VolumeSource,
};

#[cfg(test)]
mod tests;

/// Whether `profile` runs a Spark driver whose ports executors connect to (and so takes two
/// more host ports from the offer).
fn spark_driver_ports(profile: &Profile) -> bool {
    matches!(
        profile.spark.as_ref().map(|s| s.attach),
        Some(SparkAttach::Driver(SparkNetworking::PublishedPorts))
    )
}

fn cpus_milli(profile: &Profile, settings: &MesosSettings) -> Milli {
    profile
        .cpu_reservation_nano
        .or(profile.nano_cpus)
        .map_or(settings.default_cpus_milli, |nano| {
            (nano / 1_000_000).max(10)
        })
}

fn mem_mb(profile: &Profile, settings: &MesosSettings) -> f64 {
    profile
        .memory_reservation_bytes
        .or(profile.memory_bytes)
        // Byte counts are far inside f64's exact range at MB precision.
        .map_or(settings.default_mem_mb, |b| b as f64 / MB)
}

/// What a server of `profile` needs from an offer, as task `id`.
pub fn demand(id: &str, profile: &Profile, settings: &MesosSettings) -> Demand {
    let mut constraints = profile.constraints.clone();
    if profile.spark.is_some() {
        constraints
            .entry(settings.spark_attribute.clone())
            .or_insert_with(|| "true".to_owned());
    }
    Demand {
        id: id.to_owned(),
        profile: profile.id.to_string(),
        cpus: cpus_milli(profile, settings),
        mem: milli(mem_mb(profile, settings)),
        disk: milli(settings.disk_mb),
        gpus: match profile.gpus.map(|g| g.count) {
            None => GpuNeed::None,
            Some(GpuCount::Exactly(n)) => GpuNeed::Exactly(n.get()),
            Some(GpuCount::All) => GpuNeed::All,
        },
        ports: if spark_driver_ports(profile) { 3 } else { 1 },
        constraints,
        gpu_agents_ok: settings.cpu_on_gpu_agents,
    }
}

/// The notebook's address on `host` at `port`.
pub fn url_for(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("http://[{host}]:{port}")
    } else {
        format!("http://{host}:{port}")
    }
}

/// The task to launch for `request` as `task_id` on `placement`, and the address its
/// notebook will answer at.
pub fn task_info(
    task_id: &str,
    request: &SpawnRequest,
    placement: &Placement,
    settings: &MesosSettings,
    spawn: &SpawnSettings,
) -> Result<(TaskInfo, String), SpecError> {
    let profile = &request.profile;
    let host_port = placement
        .ports
        .first()
        .copied()
        .ok_or(SpecError::SparkUnplaced {
            profile: profile.id.to_string(),
            missing: "a host port from the offer",
        })?;
    let spark_ports = match placement.ports.as_slice() {
        [_, driver, block_manager, ..] if spark_driver_ports(profile) => Some(SparkPorts {
            driver: *driver,
            block_manager: *block_manager,
        }),
        _ => None,
    };
    // GPUs are the agent's to isolate: the spec is built without them (no device requests,
    // no device labels), and its `NVIDIA_VISIBLE_DEVICES=void` is dropped for GPU tasks.
    let mut without_gpus = profile.clone();
    without_gpus.gpus = None;
    let host_settings = SpawnSettings {
        spark_driver_host: Some(placement.hostname.clone()),
        ..spawn.clone()
    };
    let allocation = Allocation {
        gpus: Vec::new(),
        spark_ports,
    };
    let spec = container_spec(
        &without_gpus,
        &request.identity,
        &request.server,
        &allocation,
        &host_settings,
    )?;
    let gpu = profile.gpus.is_some();
    let host_network = gpu || spec.host.network_mode == "host";
    let listen_port = if host_network {
        host_port
    } else {
        settings.port
    };

    let mut env: BTreeMap<String, String> = spec.env.clone();
    if gpu {
        env.remove("NVIDIA_VISIBLE_DEVICES");
    }
    env.extend(request.env.iter().map(|(k, v)| (k.clone(), v.clone())));
    env.insert("GANTRY_PORT".into(), listen_port.to_string());
    // jupyterhub-singleuser listens where JUPYTERHUB_SERVICE_URL says; the hub writes the
    // container's usual port, which a task on the agent's own network must not take.
    if let Some(service) = env.get_mut("JUPYTERHUB_SERVICE_URL")
        && let Ok(mut parsed) = url::Url::parse(service)
        && parsed.set_port(Some(listen_port)).is_ok()
    {
        *service = parsed.to_string();
    }
    env.insert("PORT0".into(), host_port.to_string());
    let environment = Environment {
        variables: env
            .into_iter()
            .map(|(name, value)| Variable { name, value })
            .collect(),
    };

    let volumes: Vec<Volume> = spec
        .host
        .mounts
        .iter()
        .map(|m| {
            let mode = if m.read_only {
                VolumeMode::Ro
            } else {
                VolumeMode::Rw
            };
            match m.kind {
                VolumeKind::Bind => Volume {
                    container_path: m.target.clone(),
                    host_path: Some(m.source.clone()),
                    mode,
                    source: None,
                },
                VolumeKind::Volume => Volume {
                    container_path: m.target.clone(),
                    host_path: None,
                    mode,
                    source: Some(VolumeSource {
                        kind: "DOCKER_VOLUME".into(),
                        docker_volume: Some(DockerVolume {
                            name: m.source.clone(),
                        }),
                    }),
                },
            }
        })
        .collect();

    let (command, container) = if gpu {
        // The Mesos containerizer runs `value` with `arguments` as its argv (argv[0]
        // included); without a value, the image's entrypoint and command.
        let (value, arguments) = match &spec.cmd {
            Some(cmd) => (cmd.first().cloned(), cmd.clone()),
            None => (None, Vec::new()),
        };
        let command = CommandInfo {
            shell: Some(false),
            value,
            arguments,
            environment: Some(environment),
            user: None,
        };
        let container = ContainerInfo {
            kind: ContainerType::Mesos,
            docker: None,
            mesos: Some(MesosInfo {
                image: Some(Image {
                    kind: ImageType::Docker,
                    docker: Some(DockerImage {
                        name: spec.image.clone(),
                    }),
                    cached: Some(true),
                }),
            }),
            volumes,
            network_infos: Vec::new(),
        };
        (command, container)
    } else {
        // The Docker containerizer appends `arguments` after the image, as docker run's
        // command: the image's entrypoint stays, as with the Docker backend's `Cmd`.
        let command = CommandInfo {
            shell: Some(false),
            value: None,
            arguments: spec.cmd.clone().unwrap_or_default(),
            environment: Some(environment),
            user: None,
        };
        let mut port_mappings = Vec::new();
        if !host_network {
            port_mappings.push(PortMapping {
                host_port: u32::from(host_port),
                container_port: u32::from(settings.port),
                protocol: Some("tcp".into()),
            });
            for b in &spec.host.port_bindings {
                port_mappings.push(PortMapping {
                    host_port: u32::from(b.host_port),
                    container_port: u32::from(b.container_port),
                    protocol: Some("tcp".into()),
                });
            }
        }
        let mut parameters: Vec<Parameter> = spec
            .labels
            .iter()
            .map(|(k, v)| Parameter {
                key: "label".into(),
                value: format!("{k}={v}"),
            })
            .collect();
        let mut param = |key: &str, value: String| {
            parameters.push(Parameter {
                key: key.into(),
                value,
            });
        };
        if let Some(user) = &spec.user {
            param("user", user.clone());
        }
        for g in &spec.host.group_add {
            param("group-add", g.clone());
        }
        if let Some(dir) = &spec.working_dir {
            param("workdir", dir.clone());
        }
        if let Some(shm) = spec.host.shm_size {
            param("shm-size", shm.to_string());
        }
        let container = ContainerInfo {
            kind: ContainerType::Docker,
            docker: Some(DockerInfo {
                image: spec.image.clone(),
                network: Some(if host_network {
                    DockerNetwork::Host
                } else {
                    DockerNetwork::Bridge
                }),
                port_mappings,
                parameters,
                force_pull_image: Some(false),
            }),
            mesos: None,
            volumes,
            network_infos: Vec::new(),
        };
        (command, container)
    };

    let mut limits = BTreeMap::new();
    if let (Some(limit), Some(reserved)) = (profile.nano_cpus, profile.cpu_reservation_nano)
        && limit > reserved
    {
        limits.insert(
            "cpus".to_owned(),
            Scalar {
                value: limit as f64 / 1e9,
            },
        );
    }
    if let (Some(limit), Some(reserved)) = (profile.memory_bytes, profile.memory_reservation_bytes)
        && limit > reserved
    {
        limits.insert(
            "mem".to_owned(),
            Scalar {
                value: (limit as f64 / MB * 1000.0).round() / 1000.0,
            },
        );
    }

    let grace = i64::try_from(settings.kill_grace.as_nanos()).unwrap_or(i64::MAX);
    let task = TaskInfo {
        name: spec.name.clone(),
        task_id: super::proto::Id::new(task_id),
        agent_id: placement.agent_id.clone(),
        resources: placement.resources.clone(),
        command: Some(command),
        container: Some(container),
        labels: Some(Labels::from_pairs(&spec.labels)),
        kill_policy: Some(KillPolicy {
            grace_period: Some(DurationInfo { nanoseconds: grace }),
        }),
        limits,
    };
    Ok((task, url_for(&placement.hostname, host_port)))
}
