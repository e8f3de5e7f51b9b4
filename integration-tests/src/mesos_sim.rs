//! A **simulator of the Apache Mesos master** for tests: this is not Apache Mesos, which is
//! retired and cannot be installed here, but an in-process model of the master's v1
//! scheduler HTTP API, written from `docs/scheduler-http-api.md`, `scheduler.proto`,
//! `mesos.proto` and the master's `src/master/http.cpp` (as summarised in
//! `shared/reference/mesos-gpu-spark.md`). It has not been checked against a running master.
//!
//! What it models:
//!
//! * **Masters and leadership.** Any number of master endpoints on 127.0.0.1; one is the
//!   leader. The others answer `307` with a scheme-less `Location: //host:port/…`; with no
//!   leader every master answers `503`. A leader change ([`MesosSim::set_leader`]) ends every
//!   subscription, as a master failover does; frameworks and tasks survive it.
//! * **The HTTP rules** of `http.rs` (400/401/403/405/406/415/307/503), with JSON only, and
//!   stricter than the real master about unknown fields (it rejects what Mesos would silently
//!   drop).
//! * **Subscriptions.** `SUBSCRIBE` opens a RecordIO event stream that is cut into chunks at
//!   random points on purpose; `SUBSCRIBED` carries the heartbeat interval, and `HEARTBEAT`s
//!   follow. A second `SUBSCRIBE` with the same framework id replaces the first (which gets
//!   `ERROR: Framework failed over`). A disconnected framework keeps its tasks for its
//!   `failover_timeout`; after that they are killed and the framework is removed.
//! * **Agents** with `--resources` and `--attributes` strings as the real agent takes them
//!   (`cpus:4;mem:4096;gpus:2;ports:[31000-31099]`, `gpu:true;spark:true`).
//! * **Offers.** Each agent's unused resources go, as one offer, to one eligible framework at
//!   a time, in turn: subscribed, with an unsuppressed role, no decline filter for the agent
//!   (`refuse_seconds`, 5 s by default; `REVIVE` clears filters), and `GPU_RESOURCES` if the
//!   agent has GPUs. `DECLINE`d or unused resources go back to the pool. Offers can be
//!   rescinded ([`MesosSim::rescind_offers`], or an offer timeout).
//! * **Tasks.** `ACCEPT`/`LAUNCH` is validated (offers valid and on one agent, resources
//!   within them, whole GPUs, GPUs only in the Mesos containerizer, port mappings within the
//!   task's ports); failures become `TASK_DROPPED`/`TASK_LOST` (`REASON_INVALID_OFFERS`) or
//!   `TASK_ERROR` (`REASON_TASK_INVALID`). Status updates carry a uuid and are resent until
//!   acknowledged, one at a time per task, as the agent's status update manager does.
//!   `KILL` gives `TASK_KILLING` (with `TASK_KILLING_STATE`) then `TASK_KILLED`;
//!   `RECONCILE` answers without uuids, `REASON_RECONCILIATION`, and `TASK_UNKNOWN` (or
//!   `TASK_LOST`) for tasks it does not know. Partition-aware states become `TASK_LOST` for
//!   frameworks without `PARTITION_AWARE`.
//! * **Running tasks**, in one of two modes ([`LaunchMode`]): an HTTP responder bound on the
//!   agent's address and the task's first port, or a **real container on the local Docker
//!   engine** (bollard), whose address and exit become the task's status.
//!
//! Give agents distinct loopback addresses as host names (`127.0.0.2`, `127.0.0.3`, …): the
//! tasks' addresses are then reachable, and agents do not share ports.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde_json::json;
use tokio::net::TcpListener;

mod http;
mod runner;
mod state;
mod wire;

use state::{Agent, Res, Sim, SimConfig, parse_attributes};

/// How the simulated agents run tasks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LaunchMode {
    /// A small HTTP responder on the agent's address and the task's first host port.
    Simulated,
    /// A real container on the local Docker engine (`/var/run/docker.sock`).
    Docker,
}

/// One call the masters answered.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallRecord {
    /// Which master (index into [`MesosSim::master_urls`]).
    pub master: usize,
    /// The call's type (`SUBSCRIBE`, `ACCEPT`, …); empty when the body was not read.
    pub call: String,
    /// The HTTP status of the answer.
    pub status: u16,
}

/// One offer made.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OfferRecord {
    /// To which framework.
    pub framework: String,
    /// Of which agent (its host name).
    pub agent: String,
}

/// A task as the simulated master sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskView {
    /// The task id.
    pub task_id: String,
    /// Its framework.
    pub framework_id: String,
    /// Its agent's host name.
    pub agent: String,
    /// Its latest state (`TASK_RUNNING`, …).
    pub state: String,
    /// GPUs it holds.
    pub gpus: u32,
    /// Host ports it holds.
    pub ports: Vec<u16>,
    /// `DOCKER` or `MESOS`.
    pub containerizer: String,
    /// Its `TaskInfo.labels`.
    pub labels: BTreeMap<String, String>,
    /// Status updates not yet acknowledged.
    pub unacknowledged: usize,
    /// Status updates acknowledged.
    pub acknowledged: u32,
    /// The Docker container, in [`LaunchMode::Docker`].
    pub container: Option<String>,
}

/// A framework as the simulated master sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct FrameworkView {
    /// Its id.
    pub id: String,
    /// `FrameworkInfo.name`.
    pub name: String,
    /// Whether it has an open subscription.
    pub connected: bool,
    /// How many times it subscribed.
    pub subscribes: u32,
    /// Its capabilities, as named in the API.
    pub capabilities: Vec<String>,
    /// Its roles.
    pub roles: Vec<String>,
    /// Its suppressed roles.
    pub suppressed: Vec<String>,
    /// `FrameworkInfo.failover_timeout`, seconds.
    pub failover_timeout: Option<f64>,
    /// `FrameworkInfo.principal`.
    pub principal: Option<String>,
    /// Whether it was removed (torn down, or its failover timeout passed).
    pub removed: bool,
}

/// Builds a [`MesosSim`].
#[derive(Debug)]
pub struct MesosSimBuilder {
    masters: usize,
    agents: Vec<(String, String, String)>,
    config: SimConfig,
}

impl MesosSimBuilder {
    /// How many master endpoints (default 1); the first is the leader.
    pub fn masters(mut self, n: usize) -> Self {
        self.masters = n.max(1);
        self
    }

    /// An agent with host name `hostname` (use a loopback address such as `127.0.0.2`),
    /// `resources` as the agent's `--resources` flag and `attributes` as `--attributes`.
    pub fn agent(mut self, hostname: &str, resources: &str, attributes: &str) -> Self {
        self.agents.push((
            hostname.to_owned(),
            resources.to_owned(),
            attributes.to_owned(),
        ));
        self
    }

    /// The heartbeat interval (default 1 s; the real master's is 15 s).
    pub fn heartbeat(mut self, interval: Duration) -> Self {
        self.config.heartbeat = interval;
        self
    }

    /// How often offers are made (default 100 ms; the real allocation interval is 1 s).
    pub fn offer_interval(mut self, interval: Duration) -> Self {
        self.config.offer_interval = interval;
        self
    }

    /// Rescinds offers not answered within `timeout` (the master's `--offer_timeout`).
    pub fn offer_timeout(mut self, timeout: Duration) -> Self {
        self.config.offer_timeout = Some(timeout);
        self
    }

    /// Delay before an agent starts a launched task (default 50 ms).
    pub fn start_delay(mut self, delay: Duration) -> Self {
        self.config.start_delay = delay;
        self
    }

    /// Run tasks as real containers on the local Docker engine.
    pub fn real_containers(mut self) -> Self {
        self.config.launch = LaunchMode::Docker;
        self
    }

    /// Require HTTP basic auth with these credentials on every call.
    pub fn credentials(mut self, principal: &str, secret: &str) -> Self {
        self.config.credentials = Some((principal.to_owned(), secret.to_owned()));
        self
    }

    /// Starts the masters (on free ports of 127.0.0.1) and the allocator.
    pub async fn start(self) -> anyhow::Result<MesosSim> {
        let mut agents = Vec::new();
        for (i, (hostname, resources, attributes)) in self.agents.iter().enumerate() {
            agents.push(Agent {
                id: format!("S{i}"),
                hostname: hostname.clone(),
                total: Res::parse(resources)
                    .map_err(|e| anyhow::anyhow!("agent {hostname}: {e}"))?,
                attributes: parse_attributes(attributes)
                    .map_err(|e| anyhow::anyhow!("agent {hostname}: {e}"))?,
            });
        }
        let docker = match self.config.launch {
            LaunchMode::Simulated => None,
            LaunchMode::Docker => Some(
                bollard::Docker::connect_with_unix(
                    "/var/run/docker.sock",
                    60,
                    bollard::API_DEFAULT_VERSION,
                )
                .context("connecting to the Docker engine for the simulator's real-container mode")?
                .negotiate_version()
                .await
                .context("negotiating the Docker API version")?,
            ),
        };
        let sim = Arc::new(Sim::new(self.config, agents, docker));
        // Agent ids carry the simulator's id, as the real master's carry its own.
        {
            let mut st = sim.lock();
            let prefix = sim.id[..8].to_owned();
            for a in &mut st.agents {
                a.id = format!("{prefix}-{}", a.id);
            }
        }
        let mut loops = Vec::new();
        let mut urls = Vec::new();
        let mut addrs = Vec::new();
        for i in 0..self.masters {
            let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .await
                .context("binding a port for a simulated master")?;
            let addr: SocketAddr = listener.local_addr()?;
            urls.push(format!("http://{addr}"));
            addrs.push(addr);
            loops.push(tokio::spawn(http::serve(sim.clone(), i, listener)));
        }
        {
            let mut st = sim.lock();
            st.masters = addrs;
            st.leader = Some(0);
        }
        loops.push(tokio::spawn(heartbeats(sim.clone())));
        loops.push(tokio::spawn(allocator(sim.clone())));
        Ok(MesosSim { sim, loops, urls })
    }
}

async fn heartbeats(sim: Arc<Sim>) {
    let mut tick = tokio::time::interval(sim.config.heartbeat);
    loop {
        tick.tick().await;
        let mut st = sim.lock();
        if st.heartbeats_paused {
            continue;
        }
        let connected: Vec<String> = st
            .frameworks
            .values()
            .filter(|f| f.stream.is_some())
            .map(|f| f.id.clone())
            .collect();
        for id in connected {
            st.send(&id, &json!({"type": "HEARTBEAT"}));
        }
    }
}

async fn allocator(sim: Arc<Sim>) {
    let mut tick = tokio::time::interval(sim.config.offer_interval);
    loop {
        tick.tick().await;
        let expired = {
            let mut st = sim.lock();
            if let Some(timeout) = sim.config.offer_timeout {
                st.rescind(Some(timeout));
            }
            st.retry_updates(sim.config.update_retry);
            st.allocate();
            st.expire_frameworks()
        };
        for task in expired {
            runner::stop_quietly(&sim, &task);
        }
    }
}

/// A running simulator of the Mesos master; see the module documentation. Dropping it stops
/// the masters and removes every container it started.
#[derive(Debug)]
pub struct MesosSim {
    sim: Arc<Sim>,
    loops: Vec<tokio::task::JoinHandle<()>>,
    urls: Vec<String>,
}

impl MesosSim {
    /// A builder: one master, no agents, simulated tasks.
    pub fn builder() -> MesosSimBuilder {
        MesosSimBuilder {
            masters: 1,
            agents: Vec::new(),
            config: SimConfig {
                heartbeat: Duration::from_secs(1),
                offer_interval: Duration::from_millis(100),
                update_retry: Duration::from_secs(1),
                offer_timeout: None,
                start_delay: Duration::from_millis(50),
                launch: LaunchMode::Simulated,
                credentials: None,
            },
        }
    }

    /// The masters' base URLs (`http://127.0.0.1:port`), for `[mesos] masters`.
    pub fn master_urls(&self) -> Vec<String> {
        self.urls.clone()
    }

    /// Makes master `leader` the leader (`None`: no leader elected). Every subscription
    /// ends, as in a master failover.
    pub fn set_leader(&self, leader: Option<usize>) {
        let mut st = self.sim.lock();
        st.leader = leader;
        st.drop_all_streams();
    }

    /// Stops (or resumes) making offers.
    pub fn pause_offers(&self, paused: bool) {
        self.sim.lock().paused = paused;
    }

    /// Stops (or resumes) sending heartbeats, leaving the streams open: a silent master, as
    /// behind a network partition.
    pub fn pause_heartbeats(&self, paused: bool) {
        self.sim.lock().heartbeats_paused = paused;
    }

    /// Rescinds every outstanding offer, with a `RESCIND` event to its framework.
    pub fn rescind_offers(&self) {
        self.sim.lock().rescind(None);
    }

    /// Every task the master knows, ended ones included.
    pub fn tasks(&self) -> Vec<TaskView> {
        self.sim.lock().task_views()
    }

    /// One task.
    pub fn task(&self, task_id: &str) -> Option<TaskView> {
        self.tasks().into_iter().find(|t| t.task_id == task_id)
    }

    /// Every framework the master knows.
    pub fn frameworks(&self) -> Vec<FrameworkView> {
        self.sim
            .lock()
            .frameworks
            .values()
            .map(|f| FrameworkView {
                id: f.id.clone(),
                name: f.info.name.clone(),
                connected: f.stream.is_some(),
                subscribes: f.subscribes,
                capabilities: f
                    .info
                    .capabilities
                    .iter()
                    .map(|c| screaming(&format!("{:?}", c.kind)))
                    .collect(),
                roles: f.info.roles.clone(),
                suppressed: f.suppressed.iter().cloned().collect(),
                failover_timeout: f.info.failover_timeout,
                principal: f.info.principal.clone(),
                removed: f.removed,
            })
            .collect()
    }

    /// One framework.
    pub fn framework(&self, id: &str) -> Option<FrameworkView> {
        self.frameworks().into_iter().find(|f| f.id == id)
    }

    /// Every call the masters answered, oldest first.
    pub fn calls(&self) -> Vec<CallRecord> {
        self.sim.lock().calls.clone()
    }

    /// Every offer made, oldest first.
    pub fn offers_made(&self) -> Vec<OfferRecord> {
        self.sim.lock().offer_log.clone()
    }

    /// Sends a status update for `task_id` as its agent would (with a uuid, resent until
    /// acknowledged); the partition states (`TASK_UNREACHABLE`, `TASK_GONE`, …) come from the
    /// master, without a uuid. After `TASK_UNKNOWN` the master forgets the task.
    pub fn inject_update(
        &self,
        task_id: &str,
        state: &str,
        reason: Option<&str>,
        message: Option<&str>,
    ) {
        let master_generated = matches!(
            state,
            "TASK_UNREACHABLE"
                | "TASK_GONE"
                | "TASK_GONE_BY_OPERATOR"
                | "TASK_UNKNOWN"
                | "TASK_DROPPED"
        );
        let source = if master_generated {
            "SOURCE_MASTER"
        } else {
            "SOURCE_AGENT"
        };
        let mut st = self.sim.lock();
        st.update(task_id, state, source, reason, message, !master_generated);
        if state == "TASK_UNKNOWN" {
            st.tasks.remove(task_id);
        }
    }

    /// The master-assigned id of the agent with host name `hostname`.
    pub fn agent_id(&self, hostname: &str) -> Option<String> {
        self.sim
            .lock()
            .agents
            .iter()
            .find(|a| a.hostname == hostname)
            .map(|a| a.id.clone())
    }

    /// Fails unless the simulator's Docker engine can run `image`, naming the fix.
    pub async fn ensure_image(&self, image: &str) -> anyhow::Result<()> {
        let Some(docker) = &self.sim.docker else {
            bail!("the simulator is not in real-container mode");
        };
        docker
            .inspect_image(image)
            .await
            .with_context(|| format!("image {image} is not on the Docker engine"))?;
        Ok(())
    }
}

/// `GpuResources` → `GPU_RESOURCES`.
fn screaming(camel: &str) -> String {
    let mut out = String::new();
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

impl Drop for MesosSim {
    fn drop(&mut self) {
        for l in &self.loops {
            l.abort();
        }
        let mut st = self.sim.lock();
        for t in st.tasks.values_mut() {
            if let Some(r) = t.runner.take() {
                r.abort();
            }
        }
        st.frameworks.clear();
        drop(st);
        if self.sim.docker.is_some() {
            // Synchronously, so that the containers go even while a failed test unwinds.
            let filter = format!("label={}={}", runner::SIM_LABEL, self.sim.id);
            if let Ok(out) = Command::new("docker")
                .args(["ps", "-aq", "--filter", &filter])
                .output()
            {
                let ids = String::from_utf8_lossy(&out.stdout).to_string();
                let ids: Vec<&str> = ids.split_whitespace().collect();
                if !ids.is_empty() {
                    let _ = Command::new("docker")
                        .args(["rm", "-f"])
                        .args(&ids)
                        .stdout(Stdio::null())
                        .stderr(Stdio::null())
                        .status();
                }
            }
        }
    }
}
