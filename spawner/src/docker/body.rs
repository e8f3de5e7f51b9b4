//! [`ContainerSpec`] → the engine's create-container body. Pure, so it is tested without an
//! engine.

use std::collections::{BTreeMap, HashMap};

use bollard::models::{
    ContainerCreateBody, DeviceRequest, EndpointSettings, HostConfig, Mount, MountType,
    NetworkingConfig, PortBinding,
};

use crate::profile::VolumeKind;
use crate::request::ContainerSpec;

/// The create-container body for `spec`, with `extra_env` (the hub's per-spawn variables)
/// added over the spec's own. Only what `spec` sets is sent; everything else is the engine's
/// default. The container joins `spec.host.network_mode` as its one network (unless that is
/// `host`), and only the spec's port bindings (Spark's one-to-one ports) are published.
pub fn create_body(
    spec: &ContainerSpec,
    extra_env: &BTreeMap<String, String>,
) -> ContainerCreateBody {
    let mut env = spec.env.clone();
    env.extend(extra_env.iter().map(|(k, v)| (k.clone(), v.clone())));
    let host = &spec.host;
    let mounts: Vec<Mount> = host
        .mounts
        .iter()
        .map(|m| Mount {
            typ: Some(match m.kind {
                VolumeKind::Bind => MountType::BIND,
                VolumeKind::Volume => MountType::VOLUME,
            }),
            source: Some(m.source.clone()),
            target: Some(m.target.clone()),
            read_only: Some(m.read_only),
            ..Mount::default()
        })
        .collect();
    let device_requests: Vec<DeviceRequest> = host
        .device_requests
        .iter()
        .map(|d| DeviceRequest {
            driver: Some(d.driver.clone()),
            count: d.count,
            device_ids: (!d.device_ids.is_empty()).then(|| d.device_ids.clone()),
            capabilities: (!d.capabilities.is_empty()).then(|| d.capabilities.clone()),
            options: None,
        })
        .collect();
    let mut port_bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
    for p in &host.port_bindings {
        port_bindings
            .entry(format!("{}/tcp", p.container_port))
            .or_insert_with(|| Some(Vec::new()))
            .get_or_insert_with(Vec::new)
            .push(PortBinding {
                host_ip: (!p.host_ip.is_empty()).then(|| p.host_ip.clone()),
                host_port: Some(p.host_port.to_string()),
            });
    }
    let mut exposed: Vec<String> = port_bindings.keys().cloned().collect();
    exposed.sort();
    let networking_config =
        (host.network_mode != "host" && !host.network_mode.is_empty()).then(|| NetworkingConfig {
            endpoints_config: Some(HashMap::from([(
                host.network_mode.clone(),
                EndpointSettings::default(),
            )])),
        });
    ContainerCreateBody {
        image: Some(spec.image.clone()),
        cmd: spec.cmd.clone(),
        env: Some(env.iter().map(|(k, v)| format!("{k}={v}")).collect()),
        labels: Some(spec.labels.clone().into_iter().collect()),
        user: spec.user.clone(),
        working_dir: spec.working_dir.clone(),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        host_config: Some(HostConfig {
            nano_cpus: host.nano_cpus,
            memory: host.memory,
            memory_reservation: host.memory_reservation,
            shm_size: host.shm_size,
            mounts: (!mounts.is_empty()).then_some(mounts),
            network_mode: (!host.network_mode.is_empty()).then(|| host.network_mode.clone()),
            group_add: (!host.group_add.is_empty()).then(|| host.group_add.clone()),
            device_requests: (!device_requests.is_empty()).then_some(device_requests),
            runtime: host.runtime.clone(),
            port_bindings: (!port_bindings.is_empty()).then_some(port_bindings),
            ..HostConfig::default()
        }),
        networking_config,
        ..ContainerCreateBody::default()
    }
}
