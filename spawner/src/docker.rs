//! The Docker engine backend: [`DockerSpawner`] runs each server as one container on a
//! gantry-owned bridge network, reached by the proxy at `http://<container-ip>:<port>`.
//!
//! The engine is the truth about what runs. Each server's container has a deterministic name
//! ([`crate::names::container_name`]) and the labels of [`crate::labels`], so every method
//! asks the engine rather than memory: a start finds an existing container by name and adopts
//! it, and [`Spawner::list`] finds this instance's containers by label after a restart.
//!
//! Concurrency: starts and stops of one server are serialised by a per-server async mutex.
//! Across processes the deterministic name does the same job: a create that the engine
//! refuses with 409 (name taken) means another start won, and its container is adopted.
//!
//! A start, in order:
//!
//! 1. **Image.** When the engine lacks the profile's image, it is pulled, each line of the
//!    engine's progress becoming a [`ProgressEvent::Pulling`] with the layer's state and the
//!    image's bytes so far, within [`DockerOptions::pull_timeout`] (see `pull.rs`). A pull
//!    that fails or times out fails the start with [`DockerError::PullFailed`] or
//!    [`DockerError::PullTimeout`], which name the image, the cause and what to do; nothing
//!    has been created or booked by then.
//! 2. **Volumes.** With a known UID, the profile's per-user named volumes are created if
//!    missing and made owned by `uid:gid` by a short-lived helper container of the same image
//!    (see `volumes.rs` for how and why); a failure is [`DockerError::VolumeOwner`].
//! 3. **Create** on the gantry network with labels, GPUs and Spark ports booked; **start**;
//!    **wait** until the server answers HTTP, within [`DockerOptions::start_timeout`].
//!
//! A start that fails releases everything it booked. Before the container exists that means
//! the GPU book entry (Spark ports are only ever held by a container's label). After (the
//! engine refused to start it, the server exited, or it did not answer in time) the container
//! is **removed**, after its exit code and last log lines have been read into the error
//! ([`SpawnError::Exited`]) and the [`ProgressEvent::Failed`] event: a stopped container
//! would keep holding its GPUs and ports through its labels (which restart recovery and the
//! Spark port choice read) until someone removed it, and would be restarted as it was by the
//! next start. The user's volumes stay. A server that fails *after* it was ready (a crash, an
//! OOM kill) is kept stopped, so that [`Spawner::status`] and [`DockerSpawner::exit_info`]
//! can say why, until [`Spawner::stop`] or [`DockerSpawner::recover`] removes it.
//!
//! **Kept containers.** A stop removes the container unless its profile says
//! `on_stop = "keep"`: then the container is stopped within [`DockerOptions::stop_grace`] and
//! left, with its writable layer, and its GPUs go back to the book (a stopped container holds
//! none). Every container records a digest of what it was created from ([`SPEC_LABEL`]). The
//! next start of the server finds it stopped and starts it again when the digest still
//! matches what the request would create with the GPUs recorded on it and those GPUs are free
//! (`revival`); the device ids are baked into its configuration, so otherwise it is removed
//! and a new container is created (with other devices). [`DockerSpawner::recover`] keeps such
//! containers and removes the stopped ones of profiles that remove.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex as StdMutex, PoisonError};
use std::time::Duration;

use bollard::Docker;
use bollard::errors::Error as EngineError;
use bollard::models::{
    ContainerInspectResponse, ContainerStateStatusEnum, ContainerSummaryStateEnum,
    EndpointSettings, NetworkCreateRequest,
};
use bollard::query_parameters::{
    CreateContainerOptions, ListContainersOptions, ListNetworksOptions, LogsOptions,
    RemoveContainerOptions, StopContainerOptions,
};
use dashmap::DashMap;
use futures_util::StreamExt;

use tokio::sync::Mutex;

use crate::config::{SpawnSettings, ValidatedConfig};
use crate::gpu::{self, GpuAllocations, GpuAvailability, GpuError, GpuHold, GpuInventory};
use crate::labels;
use crate::names::{ProfileId, ServerName, container_name};
use crate::ports::{self, PortRange, SparkPorts};
use crate::profile::{OnStop, SparkAttach, SparkNetworking};
use crate::request::{Allocation, ContainerSpec, container_spec};
use crate::spawner::{
    BoxFuture, ProgressEvent, ProgressSender, ServerKey, ServerRecord, ServerStatus, SpawnError,
    SpawnRequest, Spawner,
};

mod body;
mod pull;
mod volumes;
pub use body::create_body;
pub use volumes::HELPER as HELPER_LABEL;

#[cfg(test)]
mod tests;

/// The backend's name in errors and logs.
const BACKEND: &str = "docker";

/// How the Docker backend waits and stops; the engine connection and host settings come
/// separately.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DockerOptions {
    /// The TCP port the notebook server listens on inside the container. Default: 8888.
    pub port: u16,
    /// How long pulling a missing image may take before the start fails (the pull is then
    /// cancelled). Notebook images with CUDA weigh several gigabytes. Default: 30 min.
    pub pull_timeout: Duration,
    /// How long a started container has to answer HTTP before the start fails; it also bounds
    /// the helper that prepares a volume's ownership. Each engine call (create, start) is
    /// bounded on its own by the client's timeout, set where the `Docker` client is made.
    /// Default: 120 s.
    pub start_timeout: Duration,
    /// How long a stopping container gets between SIGTERM and SIGKILL. Default: 10 s.
    pub stop_grace: Duration,
    /// How many of its last log lines an exited server reports. Default: 20.
    pub log_lines: usize,
    /// The pause between two HTTP probes of a starting server. Default: 100 ms.
    pub poll_interval: Duration,
}

impl Default for DockerOptions {
    fn default() -> Self {
        Self {
            port: 8888,
            pull_timeout: Duration::from_secs(30 * 60),
            start_timeout: Duration::from_secs(120),
            stop_grace: Duration::from_secs(10),
            log_lines: 20,
            poll_interval: Duration::from_millis(100),
        }
    }
}

/// What the Docker backend found wrong, as the `source` of a [`SpawnError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DockerError {
    /// The image is not on the host and pulling it failed.
    #[error(
        "image {image:?} is not on the Docker host and pulling it failed: {cause}. Check the \
         image name and that the Docker host can reach its registry (and is logged in to it, \
         if it is private), or build or load the image on the Docker host (docker build / \
         docker load) so that no pull is needed"
    )]
    PullFailed {
        /// The image reference, as the profile gives it.
        image: String,
        /// What the engine said.
        cause: String,
    },
    /// The image is not on the host and pulling it took too long.
    #[error(
        "image {image:?} is not on the Docker host and pulling it did not finish within \
         {waited:?}; the pull was cancelled. Pull or load the image on the Docker host \
         beforehand (docker pull / docker load), or raise the pull timeout"
    )]
    PullTimeout {
        /// The image reference, as the profile gives it.
        image: String,
        /// How long the pull was given.
        waited: Duration,
    },
    /// A per-user volume could not be made owned by the user (see `volumes.rs`).
    #[error(
        "cannot make volume {volume:?} owned by {owner} before the server starts: a helper \
         container of image {image:?} running `{command}` as root failed: {cause}. The image \
         needs `chown` on its PATH and must allow running as root; or create the volume owned \
         by {owner} beforehand"
    )]
    VolumeOwner {
        /// The volume.
        volume: String,
        /// `uid:gid`.
        owner: String,
        /// The image the helper ran.
        image: String,
        /// The helper's command.
        command: String,
        /// What went wrong.
        cause: String,
    },
    /// The running container has no address on the network the proxy reaches it by.
    #[error("container has no IP address on network {network:?}")]
    NoAddress {
        /// The network.
        network: String,
    },
    /// The engine refused or failed a call.
    #[error("Docker engine call {call} failed")]
    Engine {
        /// Which call: `create`, `start`, `inspect`, …
        call: &'static str,
        /// The engine's error.
        #[source]
        source: EngineError,
    },
}

/// Why a server is stopped, for the user: [`DockerSpawner::exit_info`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExitInfo {
    /// The process's exit code.
    pub exit_code: Option<i64>,
    /// Whether the kernel killed it for exceeding its memory limit.
    pub oom_killed: bool,
    /// Its last log lines (stdout and stderr interleaved), oldest first.
    pub last_log_lines: Vec<String>,
}

/// The Docker engine [`Spawner`]; see the module documentation.
#[derive(Debug)]
pub struct DockerSpawner {
    docker: Docker,
    settings: SpawnSettings,
    inventory: Option<GpuInventory>,
    spark_ports: PortRange,
    options: DockerOptions,
    /// Held from choosing Spark host ports until the container holding them exists (its
    /// label is then what the next choice reads), so two servers never pick the same ports.
    spark_placement: Mutex<()>,
    /// Held while making sure the network exists: the engine (API < 1.44) creates a second
    /// network of a taken name rather than refusing it.
    network_lock: Mutex<()>,
    /// One async mutex per server, serialising its starts and stops in this process.
    locks: DashMap<ServerKey, Arc<Mutex<()>>>,
    /// Who holds which GPU, by container name. Rebuilt from labels by
    /// [`DockerSpawner::rebuild_gpu_allocations`].
    gpus: StdMutex<GpuAllocations>,
    /// The profiles whose stopped containers are kept (`on_stop = "keep"`); the others'
    /// are removed. Read from the configuration, not from labels, so that an administrator
    /// who turns keeping off has the kept containers removed at the next stop or restart.
    keep: BTreeSet<ProfileId>,
}

fn is_status(e: &EngineError, code: u16) -> bool {
    matches!(e, EngineError::DockerResponseServerError { status_code, .. } if *status_code == code)
}

/// The engine's own words for an error, without bollard's wrapping.
fn engine_message(e: &EngineError) -> String {
    match e {
        EngineError::DockerResponseServerError { message, .. } => message.clone(),
        EngineError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

impl DockerSpawner {
    /// A spawner on `docker`, a connected client (call
    /// [`Docker::negotiate_version`] on it first when the engine may be older than bollard),
    /// for the host `config` describes: its settings, its GPUs (`None`: none) and its Spark
    /// port range. The profiles stay with the caller, which puts one in each request.
    pub fn new(docker: Docker, config: &ValidatedConfig, options: DockerOptions) -> Self {
        Self {
            docker,
            settings: config.settings.clone(),
            inventory: config.gpus.clone(),
            spark_ports: config.spark_ports,
            options,
            spark_placement: Mutex::new(()),
            network_lock: Mutex::new(()),
            locks: DashMap::new(),
            gpus: StdMutex::new(GpuAllocations::new()),
            keep: config
                .profiles
                .values()
                .filter(|p| p.on_stop == OnStop::Keep)
                .map(|p| p.id.clone())
                .collect(),
        }
    }

    /// The engine client.
    pub fn docker(&self) -> &Docker {
        &self.docker
    }

    fn name(&self, key: &ServerKey) -> String {
        container_name(&self.settings.instance, &key.user, &key.server)
    }

    fn book(&self) -> std::sync::MutexGuard<'_, GpuAllocations> {
        // Every update is one insert or remove, so a poisoned book is still consistent.
        self.gpus.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A copy of the GPU allocation book as this process knows it.
    pub fn gpu_allocations(&self) -> GpuAllocations {
        self.book().clone()
    }

    fn err(
        key: &ServerKey,
        id: Option<&str>,
        source: impl Into<Box<dyn std::error::Error + Send + Sync>>,
    ) -> SpawnError {
        SpawnError::Backend {
            backend: BACKEND,
            user: key.user.clone(),
            server: key.server.clone(),
            backend_id: id.map(str::to_owned),
            source: source.into(),
        }
    }

    fn engine(key: &ServerKey, id: Option<&str>, call: &'static str, e: EngineError) -> SpawnError {
        Self::err(key, id, DockerError::Engine { call, source: e })
    }

    /// The container of `key`, or `None` when the engine has none by its name.
    async fn inspect(
        &self,
        key: &ServerKey,
    ) -> Result<Option<ContainerInspectResponse>, SpawnError> {
        let name = self.name(key);
        match self.docker.inspect_container(&name, None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if is_status(&e, 404) => Ok(None),
            Err(e) => Err(Self::engine(key, Some(&name), "inspect", e)),
        }
    }

    /// Creates the gantry network (a labelled bridge) unless it exists; returns the id of
    /// the one to use.
    ///
    /// The engine (API < 1.44) lets two creates race to two networks of one name, and then
    /// refuses the name as ambiguous when a container joins it. Within this process a lock
    /// prevents that; across processes (two gantries of one instance name starting their
    /// first servers at once) every racer keeps the same network, the lowest id of that
    /// name, and removes the others while they are still empty. [`DockerSpawner::prepare`]
    /// at startup makes that window as small as it can be.
    async fn ensure_network(&self, key: &ServerKey) -> Result<String, SpawnError> {
        let _guard = self.network_lock.lock().await;
        let name = &self.settings.network;
        let mut ids = self.networks_named(key, name).await?;
        if ids.is_empty() {
            let request = NetworkCreateRequest {
                name: name.clone(),
                driver: Some("bridge".to_owned()),
                labels: Some(HashMap::from([(
                    labels::INSTANCE.to_owned(),
                    self.settings.instance.to_string(),
                )])),
                ..NetworkCreateRequest::default()
            };
            match self.docker.create_network(request).await {
                Ok(_) => {}
                // A newer engine refuses a taken name: another start created it.
                Err(e) if is_status(&e, 409) => {}
                Err(e) => return Err(Self::engine(key, None, "create network", e)),
            }
            ids = self.networks_named(key, name).await?;
        }
        ids.sort();
        let Some((keep, extra)) = ids.split_first() else {
            return Err(Self::err(
                key,
                None,
                DockerError::NoAddress {
                    network: name.clone(),
                },
            ));
        };
        for id in extra {
            // Best effort: a duplicate that a container already joined stays, harmlessly.
            let _ = self.docker.remove_network(id).await;
        }
        Ok(keep.clone())
    }

    /// The ids of this instance's networks named exactly `name`.
    async fn networks_named(&self, key: &ServerKey, name: &str) -> Result<Vec<String>, SpawnError> {
        let options = ListNetworksOptions {
            filters: Some(HashMap::from([
                ("name".to_owned(), vec![name.to_owned()]),
                (
                    "label".to_owned(),
                    vec![format!("{}={}", labels::INSTANCE, self.settings.instance)],
                ),
            ])),
        };
        let networks = self
            .docker
            .list_networks(Some(options))
            .await
            .map_err(|e| Self::engine(key, None, "list networks", e))?;
        // The name filter matches substrings.
        Ok(networks
            .into_iter()
            .filter(|n| n.name.as_deref() == Some(name))
            .filter_map(|n| n.id)
            .collect())
    }

    /// Makes sure the gantry network exists (a bridge labelled with this instance), so that
    /// the first starts need not create it. Call it once at startup; idempotent.
    pub async fn prepare(&self) -> Result<(), SpawnError> {
        let key = ServerKey {
            user: String::new(),
            server: ServerName::default_server(),
        };
        self.ensure_network(&key).await.map(drop)
    }

    /// The last `n` log lines of container `id`, oldest first; empty if they cannot be read.
    async fn last_lines(&self, id: &str) -> Vec<String> {
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: self.options.log_lines.to_string(),
            ..LogsOptions::default()
        };
        let mut text = String::new();
        let mut stream = self.docker.logs(id, Some(options));
        while let Some(Ok(chunk)) = stream.next().await {
            text.push_str(&chunk.to_string());
        }
        text.lines().map(str::to_owned).collect()
    }

    /// Why the server of `key` stopped: its exit code, OOM flag and last log lines; `None`
    /// when there is no container or it is running.
    pub async fn exit_info(&self, key: &ServerKey) -> Result<Option<ExitInfo>, SpawnError> {
        let Some(c) = self.inspect(key).await? else {
            return Ok(None);
        };
        let state = c.state.unwrap_or_default();
        if state.running == Some(true) {
            return Ok(None);
        }
        let id = c.id.unwrap_or_default();
        Ok(Some(ExitInfo {
            exit_code: state.exit_code,
            oom_killed: state.oom_killed.unwrap_or(false),
            last_log_lines: self.last_lines(&id).await,
        }))
    }

    fn url_of(&self, c: &ContainerInspectResponse) -> Option<String> {
        let networks = c.network_settings.as_ref()?.networks.as_ref()?;
        let ip = endpoint_ip(networks, &self.network_of(c))?;
        Some(format!("http://{}", SocketAddr::new(ip, self.options.port)))
    }

    fn network_of(&self, c: &ContainerInspectResponse) -> String {
        c.host_config
            .as_ref()
            .and_then(|h| h.network_mode.clone())
            .unwrap_or_else(|| self.settings.network.clone())
    }

    /// Waits until container `id` answers HTTP, or exits, or the start timeout passes.
    async fn wait_for_http(
        &self,
        key: &ServerKey,
        id: &str,
        progress: &ProgressSender,
    ) -> Result<String, SpawnError> {
        let deadline = tokio::time::Instant::now() + self.options.start_timeout;
        let mut announced = None::<String>;
        loop {
            let c = match self.docker.inspect_container(id, None).await {
                Ok(c) => c,
                Err(e) => return Err(Self::engine(key, Some(id), "inspect", e)),
            };
            let state = c.state.clone().unwrap_or_default();
            if state.running != Some(true) {
                let last_log_lines = self.last_lines(id).await;
                let message = if state.oom_killed == Some(true) {
                    "the server was killed for using more than its memory limit before it \
                     answered HTTP"
                } else {
                    "the server exited before it answered HTTP"
                };
                progress.emit(ProgressEvent::Failed {
                    exit_code: state.exit_code,
                    message: message.to_owned(),
                    last_log_lines: last_log_lines.clone(),
                });
                return Err(SpawnError::Exited {
                    user: key.user.clone(),
                    server: key.server.clone(),
                    backend_id: id.to_owned(),
                    exit_code: state.exit_code,
                    last_log_lines,
                });
            }
            let Some(url) = self.url_of(&c) else {
                let network = self.network_of(&c);
                return Err(Self::err(key, Some(id), DockerError::NoAddress { network }));
            };
            if announced.as_deref() != Some(url.as_str()) {
                progress.emit(ProgressEvent::WaitingForHttp { url: url.clone() });
                announced = Some(url.clone());
            }
            if crate::probe::answers_http(&url).await {
                progress.emit(ProgressEvent::Ready { url: url.clone() });
                return Ok(url);
            }
            if tokio::time::Instant::now() >= deadline {
                progress.emit(ProgressEvent::Failed {
                    exit_code: None,
                    message: format!(
                        "the server did not answer HTTP within {:?}",
                        self.options.start_timeout
                    ),
                    last_log_lines: self.last_lines(id).await,
                });
                return Err(SpawnError::Timeout {
                    user: key.user.clone(),
                    server: key.server.clone(),
                    backend_id: id.to_owned(),
                    waited: self.options.start_timeout,
                });
            }
            tokio::time::sleep(self.options.poll_interval).await;
        }
    }

    /// Books GPUs for `request` under container `name`; none for a profile without GPUs.
    fn allocate_gpus(
        &self,
        request: &SpawnRequest,
        name: &str,
    ) -> Result<Vec<gpu::DeviceId>, SpawnError> {
        let Some(want) = request.profile.gpus else {
            return Ok(Vec::new());
        };
        let key = request.key();
        let gpu_err = |source| SpawnError::Gpu {
            user: key.user.clone(),
            server: key.server.clone(),
            source,
        };
        let inventory = self
            .inventory
            .as_ref()
            .ok_or_else(|| gpu_err(GpuError::NoGpus))?;
        let mut book = self.book();
        let devices = gpu::allocate(inventory, &book, want).map_err(gpu_err)?;
        book.insert(
            name,
            GpuHold {
                devices: devices.clone(),
                shared: want.shared,
            },
        );
        Ok(devices)
    }

    /// Creates the container for `request` (image, volumes, network, GPUs), or adopts the one
    /// a concurrent start created; returns its id.
    async fn create(
        &self,
        request: &SpawnRequest,
        progress: &ProgressSender,
    ) -> Result<String, SpawnError> {
        let key = request.key();
        self.ensure_image(&key, &request.profile.image, progress)
            .await?;
        let kept = self.kept_volumes(request).await?;
        let prepared = self.prepare_volumes(request, &kept).await?;
        let network_id = self.ensure_network(&key).await?;
        let name = self.name(&key);
        let gpus = self.allocate_gpus(request, &name)?;
        let release = || {
            self.book().remove(&name);
        };
        // Spark drivers on published ports need host ports, chosen against the labels of
        // every container of this instance; the guard is held until ours exists.
        let publishes = matches!(
            request.profile.spark.as_ref().map(|s| s.attach),
            Some(SparkAttach::Driver(SparkNetworking::PublishedPorts))
        );
        let _placement = if publishes {
            Some(self.spark_placement.lock().await)
        } else {
            None
        };
        let spark_ports = if publishes {
            match self.choose_spark_ports(&key).await {
                Ok(p) => Some(p),
                Err(e) => {
                    release();
                    return Err(e);
                }
            }
        } else {
            None
        };
        let allocation = Allocation { gpus, spark_ports };
        let mut spec = match container_spec(
            &request.profile,
            &request.identity,
            &request.server,
            &allocation,
            &self.settings,
        ) {
            Ok(spec) => spec,
            Err(source) => {
                release();
                return Err(SpawnError::Spec {
                    user: key.user.clone(),
                    server: key.server.clone(),
                    source,
                });
            }
        };
        // Volumes from before today's naming keep their names (and their data).
        for mount in &mut spec.host.mounts {
            if let Some((_, old)) = kept.iter().find(|(new, _)| *new == mount.source) {
                mount.source.clone_from(old);
            }
        }
        // Before the network id replaces its name: the record must not depend on which of
        // two same-named networks this start joined.
        let fingerprint = spec_fingerprint(&spec, &request.env);
        if spec.host.network_mode == self.settings.network {
            // Join the gantry network by id: see `ensure_network`.
            spec.host.network_mode = network_id;
        }
        progress.emit(ProgressEvent::Creating);
        let options = CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..CreateContainerOptions::default()
        };
        let mut body = create_body(&spec, &request.env);
        body.labels
            .get_or_insert_with(HashMap::new)
            .insert(SPEC_LABEL.to_owned(), fingerprint);
        volumes::keep_prepared(&mut body, &prepared);
        match self.docker.create_container(Some(options), body).await {
            Ok(created) => Ok(created.id),
            Err(e) if is_status(&e, 409) => {
                // The name is taken: another start (perhaps another process) created it.
                // Its labels hold its GPUs; ours were never used.
                release();
                // The engine reserves the name a moment before the container can be
                // inspected, so a 404 right after the 409 means "not yet", for a while.
                for _ in 0..50 {
                    if let Some(c) = self.inspect(&key).await? {
                        self.record_gpus_from(&c);
                        return Ok(c.id.unwrap_or(name));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(Self::engine(&key, Some(&name), "create", e))
            }
            Err(e) => {
                release();
                Err(Self::engine(&key, Some(&name), "create", e))
            }
        }
    }

    /// Two free Spark host ports, given the labels of this instance's containers.
    async fn choose_spark_ports(&self, key: &ServerKey) -> Result<ports::SparkPorts, SpawnError> {
        let containers = self.labelled().await?;
        let port_err = |source| SpawnError::Ports {
            user: key.user.clone(),
            server: key.server.clone(),
            source,
        };
        let in_use = ports::ports_in_use(containers.iter().map(|c| (c.name.as_str(), &c.labels)))
            .map_err(port_err)?;
        ports::allocate_spark_ports(self.spark_ports, &in_use).map_err(port_err)
    }

    /// Books the GPUs an existing container's labels say it holds.
    fn record_gpus_from(&self, c: &ContainerInspectResponse) {
        let (Some(name), Some(labels_of)) = (
            c.name.as_deref(),
            c.config.as_ref().and_then(|cfg| cfg.labels.as_ref()),
        ) else {
            return;
        };
        let name = name.trim_start_matches('/');
        let labels_of: BTreeMap<String, String> = labels_of
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        // Bad labels book nothing here; `rebuild_gpu_allocations` reports them.
        if let Ok(book) = gpu::rebuild([(name, &labels_of)])
            && let Some(hold) = book.get(name)
        {
            self.book().insert(name, hold.clone());
        }
    }

    async fn start_locked(
        &self,
        request: &SpawnRequest,
        progress: &ProgressSender,
    ) -> Result<ServerRecord, SpawnError> {
        let key = request.key();
        let (id, running) = match self.inspect(&key).await? {
            Some(c) if has_stopped(&c) => match self.revive(request, &c).await? {
                Some(id) => (id, false),
                None => (self.create(request, progress).await?, false),
            },
            // Running, or created or restarting by a start in flight (here or in another
            // process): adopted as it is.
            Some(c) => {
                self.record_gpus_from(&c);
                let running = c.state.as_ref().and_then(|s| s.running) == Some(true);
                (c.id.unwrap_or_else(|| self.name(&key)), running)
            }
            None => (self.create(request, progress).await?, false),
        };
        let url = match self.run_until_ready(&key, &id, running, progress).await {
            Ok(url) => url,
            Err(e) => {
                self.discard(&key, &id).await;
                return Err(e);
            }
        };
        Ok(ServerRecord {
            key,
            profile: request.profile.id.clone(),
            backend_id: id,
            status: ServerStatus::Running { url },
        })
    }

    /// The stopped container `c` of `request`'s server (kept by its profile, or stopped on its
    /// own): books its GPUs again and returns its id when it can start as it is (`revival`);
    /// otherwise removes it and returns `None`, for a new one to be created.
    async fn revive(
        &self,
        request: &SpawnRequest,
        c: &ContainerInspectResponse,
    ) -> Result<Option<String>, SpawnError> {
        let key = request.key();
        let name = self.name(&key);
        let id = c.id.clone().unwrap_or_else(|| name.clone());
        let labels_of: BTreeMap<String, String> = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.as_ref())
            .map(|l| l.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
            .unwrap_or_default();
        // Decided and booked under one lock, so that no other start takes the devices between.
        let decision = {
            let mut book = self.book();
            let decision = revival(
                &name,
                &labels_of,
                request,
                &self.settings,
                self.inventory.as_ref(),
                &book,
            );
            match &decision {
                Revival::Restart(Some(hold)) => book.insert(name.as_str(), hold.clone()),
                Revival::Restart(None) => {
                    book.remove(&name);
                }
                Revival::Recreate(_) => {}
            }
            decision
        };
        if let Revival::Restart(_) = decision {
            return Ok(Some(id));
        }
        let options = RemoveContainerOptions {
            force: true,
            ..RemoveContainerOptions::default()
        };
        match self.docker.remove_container(&id, Some(options)).await {
            Ok(()) => {}
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(Self::engine(&key, Some(&id), "remove", e)),
        }
        self.book().remove(&name);
        Ok(None)
    }

    /// Starts container `id` unless it runs, and waits until it answers HTTP.
    async fn run_until_ready(
        &self,
        key: &ServerKey,
        id: &str,
        running: bool,
        progress: &ProgressSender,
    ) -> Result<String, SpawnError> {
        if !running {
            progress.emit(ProgressEvent::Starting);
            match self.docker.start_container(id, None).await {
                Ok(()) => {}
                // 304: already started, by a concurrent start in another process.
                Err(e) if is_status(&e, 304) => {}
                Err(e) => {
                    progress.emit(ProgressEvent::Failed {
                        exit_code: None,
                        message: format!(
                            "the engine could not start the server: {}",
                            engine_message(&e)
                        ),
                        last_log_lines: Vec::new(),
                    });
                    let error = Self::engine(key, Some(id), "start", e);
                    return Err(error);
                }
            }
        }
        self.wait_for_http(key, id, progress).await
    }

    /// After a failed start: removes container `id` (killing it if it runs) and releases its
    /// GPUs; see the module documentation. If the engine cannot remove it, its GPUs stay
    /// booked (its labels still hold them), and [`Spawner::stop`] removes it later.
    async fn discard(&self, key: &ServerKey, id: &str) {
        let options = RemoveContainerOptions {
            force: true,
            ..RemoveContainerOptions::default()
        };
        match self.docker.remove_container(id, Some(options)).await {
            // 404: gone already; 409: a removal is in progress.
            Ok(()) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(_) => return,
        }
        self.book().remove(&self.name(key));
    }

    async fn stop_locked(&self, key: &ServerKey) -> Result<(), SpawnError> {
        let name = self.name(key);
        let Some(c) = self.inspect(key).await? else {
            self.book().remove(&name);
            return Ok(());
        };
        let keep = c
            .config
            .as_ref()
            .and_then(|cfg| cfg.labels.as_ref())
            .and_then(|l| l.get(labels::PROFILE))
            .and_then(|p| ProfileId::new(p).ok())
            .is_some_and(|p| self.keep.contains(&p));
        let id = c.id.unwrap_or_else(|| name.clone());
        let grace = i32::try_from(self.options.stop_grace.as_secs()).unwrap_or(i32::MAX);
        let options = StopContainerOptions {
            t: Some(grace),
            ..StopContainerOptions::default()
        };
        match self.docker.stop_container(&id, Some(options)).await {
            // 304: not running; 404: removed meanwhile.
            Ok(()) => {}
            Err(e) if is_status(&e, 304) || is_status(&e, 404) => {}
            Err(e) => return Err(Self::engine(key, Some(&id), "stop", e)),
        }
        if keep {
            // Kept, stopped: its devices are free for others until it starts again.
            self.book().remove(&name);
            return Ok(());
        }
        let options = RemoveContainerOptions {
            force: true,
            ..RemoveContainerOptions::default()
        };
        match self.docker.remove_container(&id, Some(options)).await {
            Ok(()) => {}
            // 404: gone; 409: a removal is already in progress.
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(Self::engine(key, Some(&id), "remove", e)),
        }
        self.book().remove(&name);
        Ok(())
    }

    fn lock_for(&self, key: &ServerKey) -> Arc<Mutex<()>> {
        // Clone the Arc out so that no DashMap shard lock is held across an await.
        self.locks.entry(key.clone()).or_default().clone()
    }

    /// This instance's containers with their names and labels, running or not.
    async fn labelled(&self) -> Result<Vec<Labelled>, SpawnError> {
        let filter = format!("{}={}", labels::INSTANCE, self.settings.instance);
        let options = ListContainersOptions {
            all: true,
            filters: Some(HashMap::from([("label".to_owned(), vec![filter])])),
            ..ListContainersOptions::default()
        };
        let containers = self
            .docker
            .list_containers(Some(options))
            .await
            .map_err(|e| SpawnError::Backend {
                backend: BACKEND,
                user: String::new(),
                server: ServerName::default_server(),
                backend_id: None,
                source: Box::new(DockerError::Engine {
                    call: "list",
                    source: e,
                }),
            })?;
        Ok(containers
            .into_iter()
            .map(|c| {
                let name = c
                    .names
                    .as_ref()
                    .and_then(|n| n.first())
                    .map(|n| n.trim_start_matches('/').to_owned())
                    .unwrap_or_default();
                let network = c
                    .host_config
                    .as_ref()
                    .and_then(|h| h.network_mode.clone())
                    .unwrap_or_else(|| self.settings.network.clone());
                let ip = c
                    .network_settings
                    .as_ref()
                    .and_then(|n| n.networks.as_ref())
                    .and_then(|n| endpoint_ip(n, &network));
                Labelled {
                    id: c.id.unwrap_or_default(),
                    name,
                    state: c.state,
                    ip,
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                }
            })
            .collect())
    }

    /// Rebuilds the GPU book from the labels of this instance's containers that run or are
    /// being started (a stopped container holds no devices: when it starts again it books
    /// them anew, see `revival`) and replaces this process's book with it; returns the
    /// result. Call it after a restart.
    pub async fn rebuild_gpu_allocations(&self) -> Result<GpuAllocations, SpawnError> {
        let containers = self.labelled().await?;
        let holding = containers.iter().filter(|c| holds_gpus(c.state));
        let rebuilt =
            gpu::rebuild(holding.map(|c| (c.name.as_str(), &c.labels))).map_err(|source| {
                SpawnError::Gpu {
                    user: String::new(),
                    server: ServerName::default_server(),
                    source,
                }
            })?;
        *self.book() = rebuilt.clone();
        Ok(rebuilt)
    }

    /// Restart recovery, to call once at startup before serving: takes one complete listing of
    /// this instance's containers (if the listing fails, nothing is touched), adopts the ones
    /// that run or are starting, keeps the stopped ones whose profile keeps them
    /// (`on_stop = "keep"`), removes the other stopped ones, and rebuilds the GPU book from
    /// the running ones. A removal that fails is reported and does not stop the others.
    pub async fn recover(&self) -> Result<Recovery, SpawnError> {
        let servers = self.list().await?;
        let mut recovery = Recovery::default();
        // Volume helpers left by a crash mid-start; best effort, they hold nothing.
        for c in self.labelled().await? {
            if c.labels.contains_key(volumes::HELPER) {
                let options = RemoveContainerOptions {
                    force: true,
                    ..RemoveContainerOptions::default()
                };
                let _ = self.docker.remove_container(&c.id, Some(options)).await;
            }
        }
        for server in servers {
            if matches!(server.status, ServerStatus::Stopped { .. }) {
                if self.keep.contains(&server.profile) {
                    recovery.kept.push(server);
                    continue;
                }
                match self.stop(&server.key).await {
                    Ok(()) => recovery.removed.push(server),
                    Err(error) => recovery.failed.push((server, error)),
                }
            } else {
                recovery.adopted.push(server);
            }
        }
        self.rebuild_gpu_allocations().await?;
        Ok(recovery)
    }
}

/// What [`DockerSpawner::recover`] found and did.
#[derive(Debug, Default)]
pub struct Recovery {
    /// Servers that were running (or starting) and are kept, GPU holds included.
    pub adopted: Vec<ServerRecord>,
    /// Servers that had stopped and were removed.
    pub removed: Vec<ServerRecord>,
    /// Servers that had stopped and are kept, as their profile says; they hold no GPUs.
    pub kept: Vec<ServerRecord>,
    /// Stopped servers whose removal failed, with why; they are left as they were.
    pub failed: Vec<(ServerRecord, SpawnError)>,
}

/// A container as listed: what [`Spawner::list`] and GPU rebuild need.
struct Labelled {
    id: String,
    name: String,
    state: Option<ContainerSummaryStateEnum>,
    ip: Option<IpAddr>,
    labels: BTreeMap<String, String>,
}

/// The container's address on `network` (a network name or id) among its `networks`
/// (which the engine keys by name).
fn endpoint_ip(networks: &HashMap<String, EndpointSettings>, network: &str) -> Option<IpAddr> {
    networks
        .get(network)
        .or_else(|| {
            networks
                .values()
                .find(|e| e.network_id.as_deref() == Some(network))
        })?
        .ip_address
        .as_deref()
        .filter(|ip| !ip.is_empty())?
        .parse()
        .ok()
}

/// The label that records what a container was created from: [`spec_fingerprint`].
pub const SPEC_LABEL: &str = "gantry.spec";

/// A digest of everything a container is created from (the create body of `spec` with the
/// hub's `env`: image, command, environment, limits, mounts, devices, labels), in hex. Two
/// requests with equal fingerprints create the same container. The JSON is written with its
/// keys sorted, so that the digest depends on neither map order nor serde features.
pub fn spec_fingerprint(spec: &ContainerSpec, env: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let body = serde_json::to_value(create_body(spec, env)).unwrap_or_default();
    let mut text = String::new();
    canonical_json(&body, &mut text);
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `value` as JSON text with object keys in sorted order.
fn canonical_json(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.cmp(b.0));
            out.push('{');
            for (i, (k, v)) in entries.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(k.clone()).to_string());
                out.push(':');
                canonical_json(v, out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical_json(v, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

/// Whether a container in `state` holds the GPUs its labels name: unless it has stopped
/// (exited or dead). A created or restarting one is a start in flight.
fn holds_gpus(state: Option<ContainerSummaryStateEnum>) -> bool {
    !matches!(
        state,
        Some(ContainerSummaryStateEnum::EXITED | ContainerSummaryStateEnum::DEAD)
    )
}

/// Whether an inspected container has stopped (exited or dead), as opposed to running or
/// being started.
fn has_stopped(c: &ContainerInspectResponse) -> bool {
    matches!(
        c.state.as_ref().and_then(|s| s.status),
        Some(ContainerStateStatusEnum::EXITED | ContainerStateStatusEnum::DEAD)
    )
}

/// What a start does with the stopped container of its server: [`revival`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Revival {
    /// Start it again as it is, booking this hold (none for a server without GPUs).
    Restart(Option<GpuHold>),
    /// Remove it and create a new one, for this reason.
    Recreate(String),
}

/// Decides whether the stopped container `name` (with labels `labels_of`) can serve
/// `request` as it is. It can when its recorded fingerprint ([`SPEC_LABEL`]) equals that of
/// the container `request` would create now with the GPUs and Spark ports recorded on it,
/// and those GPUs are free ([`gpu::rehold`], against `book` less the container's own hold):
/// its configuration, device ids included, cannot change. Otherwise it is recreated (with
/// new devices, if its own are taken). Pure.
pub(crate) fn revival(
    name: &str,
    labels_of: &BTreeMap<String, String>,
    request: &SpawnRequest,
    settings: &crate::config::SpawnSettings,
    inventory: Option<&GpuInventory>,
    book: &GpuAllocations,
) -> Revival {
    let Some(recorded) = labels_of.get(SPEC_LABEL) else {
        return Revival::Recreate("it carries no record of what it was created from".into());
    };
    let kept = match gpu::rebuild([(name, labels_of)]) {
        Ok(found) => found.get(name).cloned(),
        Err(e) => return Revival::Recreate(e.to_string()),
    };
    let mut others = book.clone();
    others.remove(name);
    let hold = match gpu::rehold(inventory, &others, kept.as_ref(), request.profile.gpus) {
        Ok(hold) => hold,
        Err(e) => return Revival::Recreate(e.to_string()),
    };
    let allocation = Allocation {
        gpus: hold.as_ref().map(|h| h.devices.clone()).unwrap_or_default(),
        spark_ports: labels_of
            .get(labels::SPARK_PORTS)
            .and_then(|v| SparkPorts::from_label_value(v)),
    };
    let spec = match container_spec(
        &request.profile,
        &request.identity,
        &request.server,
        &allocation,
        settings,
    ) {
        Ok(spec) => spec,
        Err(e) => return Revival::Recreate(e.to_string()),
    };
    if spec_fingerprint(&spec, &request.env) != *recorded {
        return Revival::Recreate(
            "its image, settings or environment differ from what the profile gives now".into(),
        );
    }
    Revival::Restart(hold)
}

impl Spawner for DockerSpawner {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn gpu_availability(&self, shared: bool) -> Option<GpuAvailability> {
        // A host without an inventory has no GPUs to give: a GPU start fails (`NoGpus`).
        let none = GpuInventory::default();
        let inventory = self.inventory.as_ref().unwrap_or(&none);
        Some(gpu::availability(inventory, &self.book(), shared))
    }

    fn start<'a>(
        &'a self,
        request: &'a SpawnRequest,
        progress: ProgressSender,
    ) -> BoxFuture<'a, Result<ServerRecord, SpawnError>> {
        Box::pin(async move {
            let lock = self.lock_for(&request.key());
            let _guard = lock.lock().await;
            self.start_locked(request, &progress).await
        })
    }

    fn stop<'a>(&'a self, key: &'a ServerKey) -> BoxFuture<'a, Result<(), SpawnError>> {
        Box::pin(async move {
            let lock = self.lock_for(key);
            let _guard = lock.lock().await;
            self.stop_locked(key).await
        })
    }

    fn status<'a>(&'a self, key: &'a ServerKey) -> BoxFuture<'a, Result<ServerStatus, SpawnError>> {
        Box::pin(async move {
            let Some(c) = self.inspect(key).await? else {
                return Ok(ServerStatus::Absent);
            };
            let state = c.state.clone().unwrap_or_default();
            Ok(match state.status {
                Some(ContainerStateStatusEnum::RUNNING) => match self.url_of(&c) {
                    Some(url) => ServerStatus::Running { url },
                    None => ServerStatus::Starting,
                },
                Some(ContainerStateStatusEnum::CREATED | ContainerStateStatusEnum::RESTARTING) => {
                    ServerStatus::Starting
                }
                Some(ContainerStateStatusEnum::REMOVING | ContainerStateStatusEnum::STOPPING) => {
                    ServerStatus::Stopping
                }
                _ => ServerStatus::Stopped {
                    exit_code: state.exit_code,
                },
            })
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ServerRecord>, SpawnError>> {
        Box::pin(async move {
            let port = self.options.port;
            Ok(self
                .labelled()
                .await?
                .into_iter()
                .filter_map(|c| {
                    // A container whose labels do not name a valid server is not one gantry
                    // made; it is left out rather than guessed at.
                    let user = c.labels.get(labels::OWNER)?.clone();
                    let server = ServerName::new(c.labels.get(labels::SERVER)?).ok()?;
                    let profile = ProfileId::new(c.labels.get(labels::PROFILE)?).ok()?;
                    let status = match c.state {
                        Some(ContainerSummaryStateEnum::RUNNING) => match c.ip {
                            Some(ip) => ServerStatus::Running {
                                url: format!("http://{}", SocketAddr::new(ip, port)),
                            },
                            None => ServerStatus::Starting,
                        },
                        Some(
                            ContainerSummaryStateEnum::CREATED
                            | ContainerSummaryStateEnum::RESTARTING,
                        ) => ServerStatus::Starting,
                        Some(ContainerSummaryStateEnum::REMOVING) => ServerStatus::Stopping,
                        // The listing carries no exit code; `status` asks for it.
                        _ => ServerStatus::Stopped { exit_code: None },
                    };
                    Some(ServerRecord {
                        key: ServerKey { user, server },
                        profile,
                        backend_id: c.id,
                        status,
                    })
                })
                .collect())
        })
    }
}
