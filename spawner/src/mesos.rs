//! The Apache Mesos backend: [`MesosSpawner`] is a Mesos framework speaking the v1 scheduler
//! HTTP API (JSON over reqwest). It runs each notebook server as one Mesos task, placed by
//! the master's offers on an agent whose resources and attributes fit the server's profile.
//!
//! The parts, each pure and tested on its own except the last:
//!
//! * [`proto`]: the API's messages as serde types; [`recordio`]: the event stream's framing.
//! * [`config`]: the `[mesos]` table ([`crate::SpawnerConfig::mesos`]), checked into
//!   [`MesosSettings`].
//! * [`offers`]: offer matching. [`task`]: the `TaskInfo` for a server (Docker containerizer
//!   for CPU profiles, Mesos containerizer with the Docker image for GPU profiles).
//! * [`status`]: task ids that name their server, and task state → [`ServerStatus`].
//! * [`store`]: the framework id and task placements, kept across restarts.
//! * The driver (`mesos/driver.rs`): one task per spawner that subscribes, follows the
//!   leader, reads the event stream, launches, acknowledges and reconciles.
//!
//! # The master is the truth
//!
//! Which servers exist, and in which state, is what the master says: [`Spawner::status`] and
//! [`Spawner::list`] reconcile explicitly and wait briefly for the answer. After a restart
//! the spawner subscribes again with the saved framework id (the master kept every task
//! running for the failover timeout, a week by default) and reconciles before it answers
//! anything. A task id names its server ([`status::task_id`]), so even without the saved
//! placements the master's answers alone say whose each task is.
//!
//! # Progress
//!
//! A start goes: waiting for an offer ([`ProgressEvent::WaitingForPlacement`]), launched on
//! an agent ([`ProgressEvent::Placed`], with the agent's host name), running and answering HTTP
//! ([`ProgressEvent::WaitingForHttp`], [`ProgressEvent::Ready`]). [`MesosSpawner::step`] tells
//! the same for a server at any time. When no offer fits within `offer_wait`,
//! the start fails with [`MesosError::Unplaceable`], which names, for every agent that made an
//! offer, the constraint or resource that did not fit.
//!
//! Tests run against a simulator of the Mesos master in `gantry-integration-tests`
//! (`mesos_sim`), not against Apache Mesos, which is retired and cannot be installed here.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use tokio::sync::Mutex;
use tokio::time::Instant;

use crate::config::ValidatedConfig;
use crate::names::{ProfileId, ServerName};
use crate::spawner::{
    BoxFuture, ProgressEvent, ProgressSender, ServerKey, ServerRecord, ServerStatus, SpawnError,
    SpawnRequest, Spawner,
};

pub mod config;
mod driver;
pub mod offers;
pub mod proto;
pub mod recordio;
pub mod status;
pub mod store;
pub mod task;

#[cfg(test)]
mod tests;

pub use config::{Credentials, MesosConfig, MesosSettings, UnreadSecret};
pub use offers::{Mismatch, Problem};
pub use proto::TaskState;
pub use store::{FileStore, FrameworkStore, MemoryStore, StoreError, StoredState, StoredTask};

use driver::{Pending, Shared};

/// The backend's name in errors and logs.
const BACKEND: &str = "mesos";

/// What the Mesos backend found wrong, as the `source` of a [`SpawnError::Backend`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum MesosError {
    /// The configuration has no `[mesos]` table.
    #[error("the configuration has no [mesos] table: add one with masters = [\"http://…:5050\"]")]
    NotConfigured,
    /// `secret_file` was not read: the program must read it and pass the secret with
    /// [`MesosSettings::supply_secret`] (this crate reads no files).
    #[error(
        "the Mesos secret in {} (mesos.secret_file) was not read: the program must read it and \
         pass it with MesosSettings::supply_secret",
        path.display()
    )]
    SecretUnread {
        /// The file.
        path: std::path::PathBuf,
    },
    /// The HTTP client could not be built.
    #[error("cannot build the HTTP client for the Mesos master: {0}")]
    Client(String),
    /// Not subscribed to a master.
    #[error(
        "not subscribed to a Mesos master (tried {masters}){}",
        last.as_ref().map(|e| format!("; last error: {e}")).unwrap_or_default()
    )]
    NotConnected {
        /// The configured masters.
        masters: String,
        /// Why the last attempt failed, when one did.
        last: Option<String>,
    },
    /// No offer fitted the profile in time.
    #[error("{}", unplaceable_text(profile, waited, mismatches, *offers_seen, *connected))]
    Unplaceable {
        /// The profile.
        profile: String,
        /// How long the start waited.
        waited: Duration,
        /// Why each agent that made an offer did not fit.
        mismatches: Vec<Mismatch>,
        /// Whether any offer arrived while it waited.
        offers_seen: bool,
        /// Whether gantry was subscribed at the end.
        connected: bool,
    },
    /// The master refused a call, or did not answer.
    #[error(
        "the master {} {call}{}",
        status.map_or_else(|| "did not take".to_owned(), |s| format!("answered {s} to")),
        if message.is_empty() { String::new() } else { format!(": {message}") }
    )]
    Call {
        /// The call.
        call: &'static str,
        /// The HTTP status, when there was an answer.
        status: Option<u16>,
        /// The master's message, or the transport error.
        message: String,
    },
    /// The task ended before it ran.
    #[error(
        "task {task_id} ended in {state}{}{} before it ran",
        reason.as_ref().map(|r| format!(" ({r})")).unwrap_or_default(),
        message.as_ref().map(|m| format!(": {m}")).unwrap_or_default()
    )]
    Task {
        /// The task.
        task_id: String,
        /// Its state.
        state: TaskState,
        /// The master's `REASON_*`.
        reason: Option<String>,
        /// The message.
        message: Option<String>,
    },
    /// The task could not be launched at all.
    #[error("cannot launch task {task_id}: {why}")]
    Launch {
        /// The task.
        task_id: String,
        /// Why.
        why: String,
    },
    /// A killed task did not end in time.
    #[error("task {task_id} did not end within {waited:?} of being killed")]
    StopTimeout {
        /// The task.
        task_id: String,
        /// How long it was given.
        waited: Duration,
    },
    /// The framework state could not be saved or read.
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn unplaceable_text(
    profile: &str,
    waited: &Duration,
    mismatches: &[Mismatch],
    offers_seen: bool,
    connected: bool,
) -> String {
    let mut text = format!("no Mesos offer could take profile {profile} within {waited:?}");
    if !connected {
        text.push_str(": gantry is not subscribed to a master");
    } else if !offers_seen {
        text.push_str(": no offers arrived (every agent is busy, or declined by this framework)");
    } else if mismatches.is_empty() {
        text.push_str(": the offers went to servers that asked first");
    } else {
        text.push_str(": ");
        let parts: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        text.push_str(&parts.join(" | "));
    }
    text
}

/// Where a server's start is, in Mesos terms: [`MesosSpawner::step`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MesosStep {
    /// Waiting for an offer that fits the profile.
    WaitingForOffer,
    /// Launched on this agent; not running yet.
    Launching {
        /// The agent's id.
        agent_id: String,
        /// Its host name.
        hostname: String,
    },
    /// Running at `url`.
    Running {
        /// The notebook's address.
        url: String,
    },
}

/// Four random bytes, for task id nonces and jitter.
pub(crate) fn random_u32() -> u32 {
    let mut b = [0u8; 4];
    if getrandom::fill(&mut b).is_err() {
        // Without an OS random source the value still differs per call.
        return std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
    }
    u32::from_le_bytes(b)
}

/// The Mesos [`Spawner`]; see the module documentation.
#[derive(Debug)]
pub struct MesosSpawner {
    shared: Arc<Shared>,
    driver: tokio::task::JoinHandle<()>,
    locks: DashMap<ServerKey, Arc<Mutex<()>>>,
}

impl Drop for MesosSpawner {
    fn drop(&mut self) {
        // Closes the event stream; the master keeps the tasks for the failover timeout.
        self.driver.abort();
    }
}

/// Drops a start's pending entry when the start goes away before it is launched.
struct PendingGuard<'a> {
    shared: &'a Shared,
    task_id: String,
}

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        let removed = self.shared.lock().pending.remove(&self.task_id).is_some();
        if removed {
            self.shared.bump();
        }
    }
}

impl MesosSpawner {
    /// A spawner for the `[mesos]` table of `config`, with the framework state in `store`.
    /// It starts subscribing at once, in a task on the current Tokio runtime (so call it
    /// within one); dropping the spawner closes the subscription and leaves the tasks running.
    ///
    /// The capability `GPU_RESOURCES` is claimed when one of `config`'s profiles has GPUs.
    pub fn new(
        config: &ValidatedConfig,
        store: Arc<dyn FrameworkStore>,
    ) -> Result<Self, MesosError> {
        let settings = config.mesos.clone().ok_or(MesosError::NotConfigured)?;
        if let Some(unread) = &settings.unread_secret {
            return Err(MesosError::SecretUnread {
                path: unread.path.clone(),
            });
        }
        let stored = store.load()?;
        let gpu_capable = config.profiles.values().any(|p| p.gpus.is_some());
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(settings.call_timeout)
            .build()
            .map_err(|e| MesosError::Client(e.to_string()))?;
        let shared = Arc::new(Shared::new(
            settings,
            config.settings.clone(),
            gpu_capable,
            http,
            store,
            stored,
        ));
        let driver = tokio::spawn(driver::run(shared.clone()));
        Ok(Self {
            shared,
            driver,
            locks: DashMap::new(),
        })
    }

    /// Closes the subscription for good, as gantry shuts down: the master sees the framework
    /// disconnect and keeps its tasks running for the failover timeout, for the next gantry
    /// to adopt. Starts and stops after this fail as not subscribed. Dropping the spawner
    /// does the same.
    pub fn close(&self) {
        self.driver.abort();
        let mut st = self.shared.lock();
        st.session = None;
        st.synced = false;
        drop(st);
        self.shared.bump();
    }

    /// The framework id, once the master assigned one (or as saved).
    pub fn framework_id(&self) -> Option<String> {
        self.shared.lock().framework_id.clone()
    }

    /// The scheduler endpoint of the master holding the subscription, while subscribed.
    pub fn leader(&self) -> Option<String> {
        self.shared
            .lock()
            .session
            .as_ref()
            .map(|s| s.endpoint.to_string())
    }

    /// How many times the spawner has subscribed (1 after the first `SUBSCRIBED`).
    pub fn subscriptions(&self) -> u64 {
        self.shared.lock().subscriptions
    }

    /// Why the last subscription or call failed, if one did.
    pub fn last_error(&self) -> Option<String> {
        self.shared.lock().last_error.clone()
    }

    /// Where the start of `key`'s server is, in Mesos terms.
    pub fn step(&self, key: &ServerKey) -> Option<MesosStep> {
        self.shared.lock().steps.get(key).cloned()
    }

    /// Waits until subscribed and reconciled, at most `timeout`.
    pub async fn wait_subscribed(&self, timeout: Duration) -> Result<(), MesosError> {
        let deadline = Instant::now() + timeout;
        let mut rx = self.shared.tick.subscribe();
        loop {
            {
                let st = self.shared.lock();
                if st.synced && st.session.is_some() {
                    return Ok(());
                }
            }
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                return Err(self.shared.not_connected());
            }
        }
    }

    fn err(key: &ServerKey, id: Option<&str>, source: MesosError) -> SpawnError {
        SpawnError::Backend {
            backend: BACKEND,
            user: key.user.clone(),
            server: key.server.clone(),
            backend_id: id.map(str::to_owned),
            source: Box::new(source),
        }
    }

    fn lock_for(&self, key: &ServerKey) -> Arc<Mutex<()>> {
        self.locks.entry(key.clone()).or_default().clone()
    }

    async fn connected(&self, key: &ServerKey) -> Result<(), SpawnError> {
        self.wait_subscribed(self.shared.settings.call_timeout)
            .await
            .map_err(|e| Self::err(key, None, e))
    }

    fn task_ids_of(&self, key: &ServerKey) -> Vec<String> {
        self.shared
            .lock()
            .tasks
            .iter()
            .filter(|(_, t)| &t.key == key)
            .map(|(id, _)| id.clone())
            .collect()
    }

    /// Reconciles `ids` explicitly and waits (briefly) until each has a newer answer.
    async fn refresh(&self, ids: &[String]) {
        if ids.is_empty() {
            return;
        }
        let mut before: Vec<(String, u64)> = Vec::new();
        let mut query: Vec<(String, Option<String>)> = Vec::new();
        {
            let st = self.shared.lock();
            for (id, t) in ids
                .iter()
                .filter_map(|id| st.tasks.get(id).map(|t| (id, t)))
            {
                before.push((id.clone(), t.updates));
                query.push((id.clone(), t.agent_id.clone()));
            }
        }
        let mut rx = self.shared.tick.subscribe();
        if self.shared.reconcile(query).await.is_err() {
            return;
        }
        let wait = self
            .shared
            .settings
            .call_timeout
            .min(Duration::from_secs(3));
        let deadline = Instant::now() + wait;
        loop {
            let answered = {
                let st = self.shared.lock();
                before
                    .iter()
                    .all(|(id, n)| st.tasks.get(id).is_none_or(|t| t.updates > *n))
            };
            if answered
                || tokio::time::timeout_at(deadline, rx.changed())
                    .await
                    .is_err()
            {
                return;
            }
        }
    }

    /// The task the spawner takes for `key`'s server, with its status: a live one if any,
    /// else an ended one.
    fn current(&self, key: &ServerKey) -> Option<(String, ProfileId, ServerStatus)> {
        let st = self.shared.lock();
        let mut tasks: Vec<(&String, &driver::Task)> =
            st.tasks.iter().filter(|(_, t)| &t.key == key).collect();
        tasks.sort_by_key(|(_, t)| !t.is_live());
        tasks.first().map(|(id, t)| {
            (
                (*id).clone(),
                t.profile.clone(),
                status::server_status(t.state, t.url.as_deref(), t.message.as_deref()),
            )
        })
    }

    async fn start_locked(
        &self,
        request: &SpawnRequest,
        progress: &ProgressSender,
    ) -> Result<ServerRecord, SpawnError> {
        let key = request.key();
        let shared = &*self.shared;
        // Refuse what can never launch before waiting for anything.
        let probe = offers::Placement {
            demand: String::new(),
            offer_id: proto::Id::default(),
            agent_id: proto::Id::default(),
            hostname: "localhost".to_owned(),
            resources: Vec::new(),
            ports: vec![1, 2, 3],
            gpus: 0,
        };
        task::task_info("probe", request, &probe, &shared.settings, &shared.spawn).map_err(
            |source| SpawnError::Spec {
                user: key.user.clone(),
                server: key.server.clone(),
                source,
            },
        )?;
        self.connected(&key).await?;

        let mut rx = shared.tick.subscribe();
        let (task_id, created) = {
            let mut st = shared.lock();
            let live = st
                .tasks
                .iter()
                .find(|(_, t)| t.key == key && t.is_live())
                .map(|(id, _)| id.clone());
            match live {
                Some(id) => (id, false),
                None => {
                    // A stopped server starts again as a new task; the ended one is forgotten.
                    let ended: Vec<String> = st
                        .tasks
                        .iter()
                        .filter(|(_, t)| t.key == key)
                        .map(|(id, _)| id.clone())
                        .collect();
                    for id in &ended {
                        st.tasks.remove(id);
                        st.stored.tasks.remove(id);
                    }
                    if !ended.is_empty() {
                        shared.persist(&st).map_err(|e| Self::err(&key, None, e))?;
                    }
                    let nonce = format!("{:08x}", random_u32());
                    let id = status::task_id(shared.instance(), &key, &request.profile.id, &nonce);
                    let seq = st.next_seq;
                    st.next_seq += 1;
                    st.pending.insert(
                        id.clone(),
                        Pending {
                            seq,
                            task_id: id.clone(),
                            request: request.clone(),
                            demand: task::demand(&id, &request.profile, &shared.settings),
                            since: Instant::now(),
                            mismatches: BTreeMap::new(),
                            failure: None,
                        },
                    );
                    st.steps.insert(key.clone(), MesosStep::WaitingForOffer);
                    (id, true)
                }
            }
        };
        let _guard = PendingGuard {
            shared,
            task_id: task_id.clone(),
        };
        if created {
            shared.bump();
            progress.emit(ProgressEvent::WaitingForPlacement);
            // When this fails, the next subscription revives: a server is pending.
            let _ = shared.revive().await;
        }

        let mut launch_deadline: Option<Instant> = None;
        let url = loop {
            let wait_until = {
                let mut st = shared.lock();
                if let Some(p) = st.pending.get(&task_id) {
                    if let Some(why) = p.failure.clone() {
                        st.pending.remove(&task_id);
                        st.steps.remove(&key);
                        drop(st);
                        let e = MesosError::Launch {
                            task_id: task_id.clone(),
                            why,
                        };
                        return Err(self.failed(progress, &key, &task_id, e));
                    }
                    let deadline = p.since + shared.settings.offer_wait;
                    if Instant::now() >= deadline {
                        let e = MesosError::Unplaceable {
                            profile: request.profile.id.to_string(),
                            waited: shared.settings.offer_wait,
                            mismatches: p.mismatches.values().cloned().collect(),
                            offers_seen: st.offer_events > 0,
                            connected: st.session.is_some(),
                        };
                        st.pending.remove(&task_id);
                        st.steps.remove(&key);
                        drop(st);
                        return Err(self.failed(progress, &key, &task_id, e));
                    }
                    deadline
                } else if let Some(t) = st.tasks.get(&task_id).cloned() {
                    drop(st);
                    let deadline = *launch_deadline.get_or_insert_with(|| {
                        let host = match shared.lock().steps.get(&key) {
                            Some(MesosStep::Launching { hostname, .. }) => hostname.clone(),
                            _ => t.agent_id.clone().unwrap_or_else(|| "an agent".to_owned()),
                        };
                        progress.emit(ProgressEvent::Placed { host });
                        Instant::now() + shared.settings.start_timeout
                    });
                    match (t.state, &t.url) {
                        (Some(s), _) if s.is_terminal() => {
                            return Err(self.ended(progress, &key, &task_id, &t));
                        }
                        (Some(TaskState::TaskRunning), Some(url)) => break url.clone(),
                        _ => {}
                    }
                    if Instant::now() >= deadline {
                        return Err(self.timed_out(progress, &key, &task_id));
                    }
                    deadline
                } else {
                    drop(st);
                    let e = MesosError::Launch {
                        task_id: task_id.clone(),
                        why: "the server was stopped while it started".to_owned(),
                    };
                    return Err(self.failed(progress, &key, &task_id, e));
                }
            };
            // A timeout re-checks the deadlines above.
            let _ = tokio::time::timeout_at(wait_until, rx.changed()).await;
        };

        let deadline =
            launch_deadline.unwrap_or_else(|| Instant::now() + shared.settings.start_timeout);
        progress.emit(ProgressEvent::WaitingForHttp { url: url.clone() });
        loop {
            if crate::probe::answers_http(&url).await {
                break;
            }
            let task = shared.lock().tasks.get(&task_id).cloned();
            if let Some(t) = task.filter(|t| !t.is_live()) {
                return Err(self.ended(progress, &key, &task_id, &t));
            }
            if Instant::now() >= deadline {
                return Err(self.timed_out(progress, &key, &task_id));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        progress.emit(ProgressEvent::Ready { url: url.clone() });
        shared
            .lock()
            .steps
            .insert(key.clone(), MesosStep::Running { url: url.clone() });
        Ok(ServerRecord {
            key,
            profile: request.profile.id.clone(),
            backend_id: task_id,
            status: ServerStatus::Running { url },
        })
    }

    fn failed(
        &self,
        progress: &ProgressSender,
        key: &ServerKey,
        task_id: &str,
        e: MesosError,
    ) -> SpawnError {
        progress.emit(ProgressEvent::Failed {
            exit_code: None,
            message: e.to_string(),
            last_log_lines: Vec::new(),
        });
        Self::err(key, Some(task_id), e)
    }

    fn ended(
        &self,
        progress: &ProgressSender,
        key: &ServerKey,
        task_id: &str,
        t: &driver::Task,
    ) -> SpawnError {
        let state = t.state.unwrap_or(TaskState::Unrecognized);
        let line = format!(
            "{state}{}{}",
            t.reason
                .as_ref()
                .map(|r| format!(" ({r})"))
                .unwrap_or_default(),
            t.message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        );
        let ran = matches!(
            state,
            TaskState::TaskFinished | TaskState::TaskFailed | TaskState::TaskKilled
        );
        if !ran {
            let e = MesosError::Task {
                task_id: task_id.to_owned(),
                state,
                reason: t.reason.clone(),
                message: t.message.clone(),
            };
            return self.failed(progress, key, task_id, e);
        }
        let exit_code = status::exit_code(t.message.as_deref());
        progress.emit(ProgressEvent::Failed {
            exit_code,
            message: "the server exited before it answered HTTP".to_owned(),
            last_log_lines: vec![line.clone()],
        });
        SpawnError::Exited {
            user: key.user.clone(),
            server: key.server.clone(),
            backend_id: task_id.to_owned(),
            exit_code,
            last_log_lines: vec![line],
        }
    }

    fn timed_out(&self, progress: &ProgressSender, key: &ServerKey, task_id: &str) -> SpawnError {
        let waited = self.shared.settings.start_timeout;
        progress.emit(ProgressEvent::Failed {
            exit_code: None,
            message: format!("the server did not answer HTTP within {waited:?}"),
            last_log_lines: Vec::new(),
        });
        SpawnError::Timeout {
            user: key.user.clone(),
            server: key.server.clone(),
            backend_id: task_id.to_owned(),
            waited,
        }
    }

    async fn stop_locked(&self, key: &ServerKey) -> Result<(), SpawnError> {
        let shared = &*self.shared;
        let removed = {
            let mut st = shared.lock();
            let before = st.pending.len();
            st.pending.retain(|_, p| p.request.key() != *key);
            st.pending.len() != before
        };
        if removed {
            shared.bump();
            shared.suppress_if_idle().await;
        }
        let ids = self.task_ids_of(key);
        if ids.is_empty() {
            shared.lock().steps.remove(key);
            return Ok(());
        }
        self.connected(key).await?;
        let mut rx = shared.tick.subscribe();
        let live: Vec<(String, Option<String>)> = {
            let st = shared.lock();
            ids.iter()
                .filter_map(|id| st.tasks.get(id).map(|t| (id, t)))
                .filter(|(_, t)| t.is_live())
                .map(|(id, t)| (id.clone(), t.agent_id.clone()))
                .collect()
        };
        for (id, agent) in &live {
            shared
                .kill(id, agent.as_deref())
                .await
                .map_err(|e| Self::err(key, Some(id), e))?;
        }
        let waited = shared.settings.kill_grace + shared.settings.call_timeout;
        let deadline = Instant::now() + waited;
        loop {
            let left: Option<String> = {
                let st = shared.lock();
                live.iter()
                    .map(|(id, _)| id)
                    .find(|id| st.tasks.get(*id).is_some_and(driver::Task::is_live))
                    .cloned()
            };
            let Some(id) = left else { break };
            if tokio::time::timeout_at(deadline, rx.changed())
                .await
                .is_err()
            {
                let e = MesosError::StopTimeout {
                    task_id: id.clone(),
                    waited,
                };
                return Err(Self::err(key, Some(&id), e));
            }
        }
        let mut st = shared.lock();
        for id in &ids {
            st.tasks.remove(id);
            st.stored.tasks.remove(id);
        }
        st.steps.remove(key);
        let saved = shared.persist(&st);
        drop(st);
        shared.bump();
        saved.map_err(|e| Self::err(key, None, e))
    }
}

impl Spawner for MesosSpawner {
    fn backend(&self) -> &'static str {
        BACKEND
    }

    fn start<'a>(
        &'a self,
        request: &'a SpawnRequest,
        progress: ProgressSender,
    ) -> BoxFuture<'a, Result<ServerRecord, SpawnError>> {
        Box::pin(async move {
            let lock = self.lock_for(&request.key());
            let _guard = lock.lock().await;
            let result = self.start_locked(request, &progress).await;
            if result.is_err() {
                // Nothing may wait for offers any more.
                self.shared.suppress_if_idle().await;
            }
            result
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
            self.connected(key).await?;
            self.refresh(&self.task_ids_of(key)).await;
            if let Some((_, _, status)) = self.current(key) {
                return Ok(status);
            }
            let pending = self
                .shared
                .lock()
                .pending
                .values()
                .any(|p| p.request.key() == *key);
            Ok(if pending {
                ServerStatus::Starting
            } else {
                ServerStatus::Absent
            })
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ServerRecord>, SpawnError>> {
        Box::pin(async move {
            let nobody = ServerKey {
                user: String::new(),
                server: ServerName::default_server(),
            };
            self.connected(&nobody).await?;
            let ids: Vec<String> = self.shared.lock().tasks.keys().cloned().collect();
            self.refresh(&ids).await;
            let keys: BTreeMap<ServerKey, ()> = self
                .shared
                .lock()
                .tasks
                .values()
                .map(|t| (t.key.clone(), ()))
                .collect();
            Ok(keys
                .into_keys()
                .filter_map(|key| {
                    let (backend_id, profile, status) = self.current(&key)?;
                    (status != ServerStatus::Absent).then_some(ServerRecord {
                        key,
                        profile,
                        backend_id,
                        status,
                    })
                })
                .collect())
        })
    }
}
