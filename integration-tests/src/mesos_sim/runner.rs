//! The simulated agents' side of a task: starting it, reporting its states, killing it.
//!
//! * [`LaunchMode::Simulated`]: the "container" is an HTTP responder the simulator binds on
//!   the agent's address (a 127.0.0.0/8 host name) and the task's first host port, so a
//!   notebook spawned through the Mesos backend answers HTTP without Docker.
//! * [`LaunchMode::Docker`]: the task runs as a real container on the local Docker engine.
//!   The Docker containerizer's `BRIDGE` network publishes the port mappings on the agent's
//!   address; `HOST` and the Mesos containerizer (which, without CNI, shares the agent's
//!   network) use the host network. The container's exit becomes `TASK_FINISHED` (status 0)
//!   or `TASK_FAILED` ("Container exited with status N"); a kill stops it with the grace
//!   period and reports `TASK_KILLED`.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, StopContainerOptions,
};
use futures_util::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use super::LaunchMode;
use super::state::{Sim, is_terminal};
use super::wire;

/// The label on every container the simulator starts, with the simulator's id.
pub(crate) const SIM_LABEL: &str = "gantry-mesos-sim";

/// Starts `task` on its agent, in a task of its own.
pub(crate) fn launch(sim: &Arc<Sim>, task: String) {
    let runner = {
        let sim = sim.clone();
        let task = task.clone();
        tokio::spawn(async move {
            tokio::time::sleep(sim.config.start_delay).await;
            match sim.config.launch {
                LaunchMode::Simulated => run_simulated(&sim, &task).await,
                LaunchMode::Docker => run_docker(&sim, &task).await,
            }
        })
    };
    if let Some(t) = sim.lock().tasks.get_mut(&task) {
        t.runner = Some(runner);
    }
}

/// Kills `task`: stops its responder or container, then reports `TASK_KILLED`.
pub(crate) fn kill(sim: &Arc<Sim>, task: String, grace: Duration) {
    let sim = sim.clone();
    tokio::spawn(async move {
        let (runner, container) = {
            let mut st = sim.lock();
            match st.tasks.get_mut(&task) {
                Some(t) => (t.runner.take(), t.container.clone()),
                None => return,
            }
        };
        match (&sim.docker, container) {
            (Some(docker), Some(id)) => {
                let seconds = i32::try_from(grace.as_secs()).unwrap_or(i32::MAX);
                let options = StopContainerOptions {
                    t: Some(seconds),
                    ..StopContainerOptions::default()
                };
                // The waiter sees the exit and, the task being killed, reports TASK_KILLED.
                let _ = docker.stop_container(&id, Some(options)).await;
                if let Some(r) = runner {
                    let _ = tokio::time::timeout(grace + Duration::from_secs(10), r).await;
                }
            }
            _ => {
                if let Some(r) = runner {
                    r.abort();
                }
            }
        }
        let mut st = sim.lock();
        if st.tasks.get(&task).is_some_and(|t| !is_terminal(&t.state)) {
            st.update(
                &task,
                "TASK_KILLED",
                "SOURCE_EXECUTOR",
                Some("REASON_COMMAND_EXECUTOR_FAILED"),
                Some("Command terminated with signal Terminated"),
                true,
            );
        }
    });
}

/// Stops a task's runner without reporting (its framework is gone).
pub(crate) fn stop_quietly(sim: &Arc<Sim>, task: &str) {
    let (runner, container) = {
        let mut st = sim.lock();
        match st.tasks.get_mut(task) {
            Some(t) => (t.runner.take(), t.container.take()),
            None => return,
        }
    };
    if let Some(r) = runner {
        r.abort();
    }
    if let (Some(docker), Some(id)) = (sim.docker.clone(), container) {
        tokio::spawn(async move {
            let options = bollard::query_parameters::RemoveContainerOptions {
                force: true,
                ..Default::default()
            };
            let _ = docker.remove_container(&id, Some(options)).await;
        });
    }
}

/// The agent's address: its host name when that is an IP address, else 127.0.0.1.
fn agent_ip(sim: &Sim, task: &str) -> IpAddr {
    let st = sim.lock();
    st.tasks
        .get(task)
        .and_then(|t| st.agents.iter().find(|a| a.id == t.agent))
        .and_then(|a| a.hostname.parse().ok())
        .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST))
}

fn report(sim: &Sim, task: &str, state: &str, reason: Option<&str>, message: Option<&str>) {
    let mut st = sim.lock();
    let live = st.tasks.get(task).is_some_and(|t| !is_terminal(&t.state));
    if live {
        st.update(task, state, "SOURCE_EXECUTOR", reason, message, true);
    }
}

async fn run_simulated(sim: &Arc<Sim>, task: &str) {
    let ip = agent_ip(sim, task);
    let port = sim
        .lock()
        .tasks
        .get(task)
        .and_then(|t| t.res.ports.iter().next().copied());
    report(sim, task, "TASK_STARTING", None, None);
    let Some(port) = port else {
        // A task without ports runs and serves nothing.
        report(sim, task, "TASK_RUNNING", None, None);
        return;
    };
    let listener = match TcpListener::bind(SocketAddr::new(ip, port)).await {
        Ok(l) => l,
        Err(e) => {
            let message = format!("Failed to launch container: cannot bind {ip}:{port}: {e}");
            report(
                sim,
                task,
                "TASK_FAILED",
                Some("REASON_CONTAINER_LAUNCH_FAILED"),
                Some(&message),
            );
            return;
        }
    };
    if let Some(t) = sim.lock().tasks.get_mut(task) {
        t.container_ip = Some(ip.to_string());
    }
    report(sim, task, "TASK_RUNNING", None, None);
    let body = format!("simulated notebook {task}\n");
    loop {
        let Ok((mut conn, _)) = listener.accept().await else {
            continue;
        };
        let body = body.clone();
        tokio::spawn(async move {
            let mut head = Vec::new();
            let mut buf = [0u8; 1024];
            while !head.windows(4).any(|w| w == b"\r\n\r\n") && head.len() < 16_384 {
                match conn.read(&mut buf).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => head.extend_from_slice(&buf[..n]),
                }
            }
            let answer = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(answer.as_bytes()).await;
        });
    }
}

/// The container to create for `info` on an agent at `ip`.
fn container_body(
    sim: &Sim,
    task: &str,
    info: &wire::TaskInfo,
    ip: IpAddr,
) -> Result<ContainerCreateBody, String> {
    let command = info.command.clone().ok_or("no command")?;
    let container = info.container.clone().ok_or("no container")?;
    let env: Vec<String> = command
        .environment
        .iter()
        .flat_map(|e| &e.variables)
        .map(|v| format!("{}={}", v.name, v.value.clone().unwrap_or_default()))
        .collect();
    let mut labels = HashMap::from([
        (SIM_LABEL.to_owned(), sim.id.clone()),
        (format!("{SIM_LABEL}.task"), task.to_owned()),
    ]);
    let mut body = ContainerCreateBody {
        env: Some(env),
        ..ContainerCreateBody::default()
    };
    let mut host = HostConfig::default();
    match container.kind.as_str() {
        "DOCKER" => {
            let docker = container.docker.ok_or("DOCKER container without docker")?;
            body.image = Some(docker.image.clone());
            // docker run IMAGE ARGUMENTS: the arguments replace the image's command.
            if command.shell == Some(true) {
                let line = command.value.clone().unwrap_or_default();
                body.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
                body.cmd = Some(vec![line]);
            } else {
                if let Some(value) = &command.value {
                    body.entrypoint = Some(vec![value.clone()]);
                }
                if !command.arguments.is_empty() {
                    body.cmd = Some(command.arguments.clone());
                }
            }
            for p in &docker.parameters {
                match p.key.as_str() {
                    "label" => {
                        let (k, v) = p.value.split_once('=').unwrap_or((&p.value, ""));
                        labels.insert(k.to_owned(), v.to_owned());
                    }
                    "user" => body.user = Some(p.value.clone()),
                    "workdir" => body.working_dir = Some(p.value.clone()),
                    "group-add" => host
                        .group_add
                        .get_or_insert_with(Vec::new)
                        .push(p.value.clone()),
                    "shm-size" => host.shm_size = p.value.parse().ok(),
                    _ => {}
                }
            }
            match docker.network.as_deref().unwrap_or("HOST") {
                "BRIDGE" => {
                    let mut bindings: HashMap<String, Option<Vec<PortBinding>>> = HashMap::new();
                    let mut exposed = Vec::new();
                    for m in &docker.port_mappings {
                        let key = format!(
                            "{}/{}",
                            m.container_port,
                            m.protocol.as_deref().unwrap_or("tcp")
                        );
                        exposed.push(key.clone());
                        bindings
                            .entry(key)
                            .or_insert_with(|| Some(Vec::new()))
                            .get_or_insert_with(Vec::new)
                            .push(PortBinding {
                                host_ip: Some(ip.to_string()),
                                host_port: Some(m.host_port.to_string()),
                            });
                    }
                    body.exposed_ports = Some(exposed);
                    host.port_bindings = Some(bindings);
                }
                "HOST" => host.network_mode = Some("host".into()),
                "NONE" => host.network_mode = Some("none".into()),
                other => return Err(format!("docker network {other} is not simulated")),
            }
        }
        "MESOS" => {
            let image = container
                .mesos
                .and_then(|m| m.image)
                .and_then(|i| i.docker)
                .ok_or("MESOS container without a Docker image")?;
            body.image = Some(image.name);
            // The Mesos containerizer: `value` with `arguments` as its argv.
            if let Some(value) = &command.value {
                if command.shell == Some(false) {
                    body.entrypoint = Some(vec![value.clone()]);
                    body.cmd = Some(command.arguments.iter().skip(1).cloned().collect());
                } else {
                    body.entrypoint = Some(vec!["/bin/sh".into(), "-c".into()]);
                    body.cmd = Some(vec![value.clone()]);
                }
            }
            host.network_mode = Some("host".into());
        }
        other => return Err(format!("container type {other} is not simulated")),
    }
    for v in &container.volumes {
        if let Some(path) = &v.host_path {
            let mode = if v.mode == "RO" { ":ro" } else { "" };
            host.binds
                .get_or_insert_with(Vec::new)
                .push(format!("{path}:{}{mode}", v.container_path));
        }
    }
    body.labels = Some(labels);
    body.host_config = Some(host);
    Ok(body)
}

async fn run_docker(sim: &Arc<Sim>, task: &str) {
    let Some(docker) = sim.docker.clone() else {
        report(
            sim,
            task,
            "TASK_FAILED",
            Some("REASON_CONTAINER_LAUNCH_FAILED"),
            Some("no Docker engine"),
        );
        return;
    };
    let ip = agent_ip(sim, task);
    let Some(info) = sim.lock().tasks.get(task).map(|t| t.info.clone()) else {
        return;
    };
    let host_network = info.container.as_ref().is_some_and(|c| {
        c.kind == "MESOS"
            || c.docker
                .as_ref()
                .and_then(|d| d.network.as_deref())
                .unwrap_or("HOST")
                == "HOST"
    });
    let fail = |message: String| {
        report(
            sim,
            task,
            "TASK_FAILED",
            Some("REASON_CONTAINER_LAUNCH_FAILED"),
            Some(&message),
        );
    };
    let body = match container_body(sim, task, &info, ip) {
        Ok(b) => b,
        Err(e) => return fail(format!("Failed to launch container: {e}")),
    };
    let name = format!("mesos-{}-{}", &sim.id[..8], crate::mesos_sim::state::uuid());
    let options = CreateContainerOptions {
        name: Some(name),
        ..CreateContainerOptions::default()
    };
    let id = match docker.create_container(Some(options), body).await {
        Ok(c) => c.id,
        Err(e) => return fail(format!("Failed to launch container: {e}")),
    };
    if let Some(t) = sim.lock().tasks.get_mut(task) {
        t.container = Some(id.clone());
    }
    report(sim, task, "TASK_STARTING", None, None);
    if let Err(e) = docker.start_container(&id, None).await {
        return fail(format!("Failed to launch container: {e}"));
    }
    let container_ip = if host_network {
        Some(ip.to_string())
    } else {
        docker
            .inspect_container(&id, None::<InspectContainerOptions>)
            .await
            .ok()
            .and_then(|c| c.network_settings)
            .and_then(|n| n.networks)
            .and_then(|n| n.values().find_map(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty())
    };
    if let Some(t) = sim.lock().tasks.get_mut(task) {
        t.container_ip = container_ip;
    }
    report(sim, task, "TASK_RUNNING", None, None);
    let mut wait = docker.wait_container(&id, None);
    let code = match wait.next().await {
        Some(Ok(r)) => r.status_code,
        Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => code,
        Some(Err(_)) | None => -1,
    };
    let killing = sim.lock().tasks.get(task).is_some_and(|t| t.killing);
    let message = format!("Container exited with status {code}");
    if killing {
        report(sim, task, "TASK_KILLED", None, Some(&message));
    } else if code == 0 {
        report(sim, task, "TASK_FINISHED", None, Some(&message));
    } else {
        report(
            sim,
            task,
            "TASK_FAILED",
            Some("REASON_COMMAND_EXECUTOR_FAILED"),
            Some(&message),
        );
    }
}
