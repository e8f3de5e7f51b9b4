//! The [`Spawner`] trait every backend implements (Docker now, Mesos next, Swarm later), and
//! the values that cross it.
//!
//! # Object safety
//!
//! The hub picks a backend from the configuration at run time and holds it as
//! `Arc<dyn Spawner>`, so the trait must be object-safe. `async fn` in traits is not (its
//! future type is unnameable), so each method returns a [`BoxFuture`]: one allocation per call,
//! which is nothing next to creating a container. We write the boxing out rather than use the
//! `async-trait` macro: the signatures in the documentation are the real ones, the `Send`
//! bound is visible, and the crate needs no proc-macro for it. An implementation reads
//! `fn stop<'a>(&'a self, key: &'a ServerKey) -> BoxFuture<'a, …> { Box::pin(async move { … }) }`.
//!
//! # Idempotency
//!
//! The hub drives backends by reconciliation: it compares what should run (its database) with
//! what does ([`Spawner::list`], from container labels) and acts, and it may repeat an action
//! after a crash or a timeout without knowing whether the first attempt took effect. Every
//! method must therefore be safe to repeat; each says what that means for it.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::mpsc;

use crate::gpu::{GpuAvailability, GpuError};
use crate::names::{Identity, ProfileId, ServerName};
use crate::ports::PortError;
use crate::profile::Profile;
use crate::request::SpecError;

#[cfg(any(test, feature = "test-util"))]
mod fake;
#[cfg(any(test, feature = "test-util"))]
pub use fake::FakeSpawner;

#[cfg(test)]
mod tests;

/// A boxed, `Send` future: what [`Spawner`]'s methods return.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Which server: its owner and its name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ServerKey {
    /// The owner's user name.
    pub user: String,
    /// The server's name; empty for the default server.
    pub server: ServerName,
}

/// Everything a backend needs to start one server.
#[derive(Clone, Debug, PartialEq)]
pub struct SpawnRequest {
    /// Who the server is for.
    pub identity: Identity,
    /// Which of the user's servers.
    pub server: ServerName,
    /// The checked profile to start it with.
    pub profile: Profile,
    /// Environment the hub adds for this spawn (API token, hub URLs), on top of the profile's.
    pub env: std::collections::BTreeMap<String, String>,
}

impl SpawnRequest {
    /// The server this request is for.
    pub fn key(&self) -> ServerKey {
        ServerKey {
            user: self.identity.user.clone(),
            server: self.server.clone(),
        }
    }
}

/// What a backend reports about one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ServerStatus {
    /// The backend knows no such server.
    Absent,
    /// Being pulled, created or started, not yet answering HTTP.
    Starting,
    /// Answering HTTP at `url`, which the proxy routes to.
    Running {
        /// Where the server listens, as the proxy reaches it (`http://<container>:8888`).
        url: String,
    },
    /// Asked to stop, not yet stopped.
    Stopping,
    /// Stopped, and still present (so its logs can be read).
    Stopped {
        /// The exit code, when the backend knows it.
        exit_code: Option<i64>,
    },
}

/// One server as [`Spawner::list`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServerRecord {
    /// Which server.
    pub key: ServerKey,
    /// The profile it was started with.
    pub profile: ProfileId,
    /// The backend's id for it: a Docker container id, a Mesos task id.
    pub backend_id: String,
    /// Its state.
    pub status: ServerStatus,
}

/// One step of a start, for the progress page.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProgressEvent {
    /// Pulling the image: one event per progress line the engine sends about it. The byte
    /// counts are the whole image's download so far ([`ProgressEvent::percent`],
    /// [`ProgressEvent::pull_summary`]); `layer` is the layer this line is about.
    ///
    /// The engine learns a layer's size only when it starts downloading it (it fetches a few
    /// layers at a time), so `total_bytes` can grow during a pull, and with it the percentage
    /// can step back; a page shows the figures as they come.
    Pulling {
        /// The image.
        image: String,
        /// The layer this update is about; `None` for a line about the whole image (the first
        /// event of a pull, the engine's "Digest:" and "Status:" lines).
        layer: Option<LayerProgress>,
        /// Bytes downloaded so far, over the layers whose size is known; `None` before any is.
        done_bytes: Option<u64>,
        /// Bytes to download over the layers whose size is known so far; `None` before any
        /// is. Layers already on the host count in neither.
        total_bytes: Option<u64>,
    },
    /// Waiting for the cluster to offer a place that fits the profile (cluster backends:
    /// Mesos waits for an offer).
    WaitingForPlacement,
    /// Placed on `host`, being launched there (cluster backends).
    Placed {
        /// The host (a Mesos agent's host name) the server was placed on.
        host: String,
    },
    /// Creating the container or task.
    Creating,
    /// Starting it.
    Starting,
    /// Started; waiting for the server to answer HTTP.
    WaitingForHttp {
        /// The URL being polled.
        url: String,
    },
    /// Answering at `url`.
    Ready {
        /// Where the server answers.
        url: String,
    },
    /// The start failed.
    Failed {
        /// The process's exit code, if it ran and exited.
        exit_code: Option<i64>,
        /// What went wrong, for the user.
        message: String,
        /// The last lines the server logged, for the user to diagnose it.
        last_log_lines: Vec<String>,
    },
}

/// Where one image layer's pull stands, in a [`ProgressEvent::Pulling`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LayerProgress {
    /// The layer's id as the engine reports it (the first 12 hex digits of its digest).
    pub id: String,
    /// What is happening to it.
    pub phase: LayerPhase,
    /// Bytes of this phase done (downloaded, or extracted), when the engine says.
    pub current_bytes: Option<u64>,
    /// Bytes of this phase in all, when the engine says.
    pub total_bytes: Option<u64>,
}

/// The phase of one layer's pull, from the engine's status line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum LayerPhase {
    /// Queued ("Pulling fs layer", "Waiting").
    Waiting,
    /// Downloading; the byte counts are the download's.
    Downloading,
    /// Downloaded, its checksum being verified.
    Verifying,
    /// Downloaded and verified.
    Downloaded,
    /// Being unpacked; the byte counts are the unpacking's.
    Extracting,
    /// Done.
    Complete,
    /// Already on the host; nothing to fetch.
    AlreadyExists,
    /// Any other status line (a retry, say), as the engine wrote it.
    Other(String),
}

impl ProgressEvent {
    /// The pull's progress in percent (0 to 100), when both byte counts are known.
    pub fn percent(&self) -> Option<u8> {
        match self {
            Self::Pulling {
                done_bytes: Some(done),
                total_bytes: Some(total),
                ..
            } if *total > 0 => {
                let pct = u128::from(*done.min(total)) * 100 / u128::from(*total);
                u8::try_from(pct).ok()
            }
            _ => None,
        }
    }

    /// A pull event as a page shows it: `pulling 45% (120 MB of 260 MB)`, or `pulling` while
    /// no size is known yet; `None` for other events. Megabytes are 10⁶ bytes, as the engine's
    /// own progress bars count them.
    pub fn pull_summary(&self) -> Option<String> {
        let Self::Pulling {
            done_bytes,
            total_bytes,
            ..
        } = self
        else {
            return None;
        };
        Some(match (self.percent(), done_bytes, total_bytes) {
            (Some(pct), Some(done), Some(total)) => {
                format!(
                    "pulling {pct}% ({} of {})",
                    megabytes(*done),
                    megabytes(*total)
                )
            }
            _ => "pulling".to_owned(),
        })
    }
}

/// `bytes` as whole megabytes (10⁶), or with one decimal below 10 MB.
fn megabytes(bytes: u64) -> String {
    if bytes < 10_000_000 {
        format!("{}.{} MB", bytes / 1_000_000, bytes % 1_000_000 / 100_000)
    } else {
        format!("{} MB", bytes / 1_000_000)
    }
}

/// The sending half of a start's progress events, given to [`Spawner::start`].
///
/// Progress is advice for a page: when the receiver is slow and the buffer is full, or gone,
/// events are dropped rather than slowing the start. The outcome is what `start` returns.
#[derive(Clone, Debug)]
pub struct ProgressSender(mpsc::Sender<ProgressEvent>);

/// The receiving half: a stream of [`ProgressEvent`]s that ends when the start does.
#[derive(Debug)]
pub struct ProgressReceiver(mpsc::Receiver<ProgressEvent>);

/// A progress channel holding up to `capacity` (at least 1) undelivered events.
pub fn progress_channel(capacity: usize) -> (ProgressSender, ProgressReceiver) {
    let (tx, rx) = mpsc::channel(capacity.max(1));
    (ProgressSender(tx), ProgressReceiver(rx))
}

impl ProgressSender {
    /// A sender whose events go nowhere, for callers that do not watch.
    pub fn discard() -> Self {
        progress_channel(1).0
    }

    /// Sends `event` if there is room; never waits.
    pub fn emit(&self, event: ProgressEvent) {
        // A full or closed channel drops the event: see the type's documentation.
        let _ = self.0.try_send(event);
    }
}

impl ProgressReceiver {
    /// The next event, or `None` once every sender is gone.
    pub async fn next(&mut self) -> Option<ProgressEvent> {
        self.0.recv().await
    }
}

/// Why a backend could not do what was asked. Every variant names the user and server, and
/// keeps its cause as a `source`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpawnError {
    /// No GPUs could be allocated.
    #[error("cannot give GPUs to {user}'s server \"{server}\"")]
    Gpu {
        /// The user.
        user: String,
        /// The server.
        server: ServerName,
        /// Why.
        #[source]
        source: GpuError,
    },
    /// No Spark ports could be allocated.
    #[error("cannot give Spark ports to {user}'s server \"{server}\"")]
    Ports {
        /// The user.
        user: String,
        /// The server.
        server: ServerName,
        /// Why.
        #[source]
        source: PortError,
    },
    /// The profile, identity and allocation do not make a container request.
    #[error("cannot build the container for {user}'s server \"{server}\"")]
    Spec {
        /// The user.
        user: String,
        /// The server.
        server: ServerName,
        /// Why.
        #[source]
        source: SpecError,
    },
    /// The backend (engine, master) failed or refused.
    #[error("the {backend} backend failed for {user}'s server \"{server}\"{}", id_suffix(.backend_id))]
    Backend {
        /// Which backend: `docker`, `mesos`.
        backend: &'static str,
        /// The user.
        user: String,
        /// The server.
        server: ServerName,
        /// The container or task id, when there is one.
        backend_id: Option<String>,
        /// The backend's error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync + 'static>,
    },
    /// The server exited before it answered HTTP.
    #[error("{user}'s server \"{server}\" ({backend_id}) exited{} before answering HTTP", code_suffix(.exit_code))]
    Exited {
        /// The user.
        user: String,
        /// The server.
        server: ServerName,
        /// The container or task id.
        backend_id: String,
        /// The exit code, when known.
        exit_code: Option<i64>,
        /// The last lines it logged.
        last_log_lines: Vec<String>,
    },
    /// The server did not answer HTTP in time.
    #[error("{user}'s server \"{server}\" ({backend_id}) did not answer HTTP within {waited:?}")]
    Timeout {
        /// The user.
        user: String,
        /// The server.
        server: ServerName,
        /// The container or task id.
        backend_id: String,
        /// How long it was given.
        waited: Duration,
    },
}

fn id_suffix(id: &Option<String>) -> String {
    id.as_ref().map(|id| format!(" ({id})")).unwrap_or_default()
}

fn code_suffix(code: &Option<i64>) -> String {
    code.map(|c| format!(" with code {c}")).unwrap_or_default()
}

/// A place notebook servers run. See the module documentation for why the methods return
/// [`BoxFuture`]s and why each must be idempotent.
pub trait Spawner: Send + Sync {
    /// The backend's short name for logs and errors: `docker`, `mesos`.
    fn backend(&self) -> &'static str;

    /// Starts the server `request` describes and waits until it answers HTTP, sending
    /// progress to `progress`; returns it as [`Spawner::list`] would.
    ///
    /// Idempotent: if the server already runs (as found by its labels, not by memory of an
    /// earlier call), this returns it without starting another. If it exists but is stopped
    /// (kept by its profile, or stopped on its own), it is started again when it is still
    /// what this request would create and its GPUs are free; otherwise it is replaced.
    ///
    /// A start that fails leaves nothing that holds GPUs or ports: it releases what it
    /// allocated, and a container or task it got as far as creating (or found and could not
    /// bring up) is removed, after its exit code and last log lines have been read into the
    /// error ([`SpawnError::Exited`]) and the [`ProgressEvent::Failed`] event, which is where
    /// the hub finds why. The user's volumes stay. A server that fails *after* it answered
    /// (a crash, an OOM kill) is a different matter: it is kept, stopped, so that its status
    /// says why, until [`Spawner::stop`] removes it.
    fn start<'a>(
        &'a self,
        request: &'a SpawnRequest,
        progress: ProgressSender,
    ) -> BoxFuture<'a, Result<ServerRecord, SpawnError>>;

    /// Stops the server and removes its container or task, releasing its GPUs and ports; the
    /// user's volumes stay. A backend that can keep stopped containers does so for profiles
    /// that ask (Docker, `on_stop = "keep"`): the container stays, stopped, and holds no GPUs
    /// (it keeps its Spark ports, which its configuration names).
    ///
    /// Idempotent: stopping a server that is stopped or absent succeeds.
    fn stop<'a>(&'a self, key: &'a ServerKey) -> BoxFuture<'a, Result<(), SpawnError>>;

    /// The server's state now, asked of the backend (never a cached answer).
    ///
    /// Read-only, so trivially idempotent. A server the backend does not know is
    /// [`ServerStatus::Absent`], not an error.
    fn status<'a>(&'a self, key: &'a ServerKey) -> BoxFuture<'a, Result<ServerStatus, SpawnError>>;

    /// Every server of this gantry instance the backend knows, running or stopped, found by
    /// label: the truth the hub reconciles against after a restart.
    ///
    /// Read-only; it must not adopt, stop or clean up anything on its own.
    fn list(&self) -> BoxFuture<'_, Result<Vec<ServerRecord>, SpawnError>>;

    /// How many GPUs a request that is `shared` (or exclusive) could have now, of how many,
    /// from the backend's own allocation book: for the spawn page, the API and the metrics.
    /// Advice, not a reservation: a start may still find them taken. `None` when the backend
    /// keeps no such book (a cluster backend, which learns what is free from offers). The
    /// default is `None`.
    fn gpu_availability(&self, shared: bool) -> Option<GpuAvailability> {
        let _ = shared;
        None
    }
}
