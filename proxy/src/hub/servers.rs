//! Notebook servers as the hub sees them: start, stop, progress, and the routes to them.
//!
//! The backend ([`Spawner`]) is the truth about what runs, found by container labels; this
//! module keeps what the pages need while a start is under way (its progress events) and
//! the route table in step with the backend: a route is added when a server answers HTTP and
//! removed when it stops. At startup [`Servers::adopt`] lists the backend and routes every
//! running server, so a gantry restart leaves notebooks running and reachable.
//!
//! Starts run as tasks of their own: the request that asked for one returns at once (202) and
//! the page follows the progress over Server-Sent Events. At most `max_concurrent_spawns` run
//! at once; past that a start is answered 429 with `Retry-After`.
//!
//! A start first [claims](Servers::claim) its server: from then until the server is ready or
//! has failed, every other start of it finds this one in flight, so the credentials the hub
//! mints between the claim and [`Claim::launch`] are the ones the running server holds. The
//! claim is also where the per-user limits ([`UserLimits`]) are checked, one claim at a time,
//! so racing starts cannot each see room for one more.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use dashmap::DashMap;
use gantry_spawner::spawner::progress_channel;
use gantry_spawner::{
    Identity, Profile, ProfileId, ProgressEvent, ServerKey, ServerName, ServerRecord, ServerStatus,
    SpawnError, SpawnRequest, Spawner,
};
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;
use jiff::Timestamp;
use serde_json::{Value, json};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::errors::ResponseBody;
use crate::gate::RouteOwner;
use crate::routes::{Route, RouteChange, RoutePrefix, RouteTable, Target};

#[cfg(test)]
mod tests;

/// Where a server is in its life, as the hub knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Being pulled, created, started or waited for.
    Starting,
    /// Answering HTTP at `url`, routed.
    Ready {
        /// The backend address the route points at.
        url: String,
    },
    /// The last start failed.
    Failed {
        /// What went wrong, for the user.
        message: String,
    },
    /// Being stopped.
    Stopping,
}

/// One server the hub knows of.
#[derive(Debug)]
struct Entry {
    profile: ProfileId,
    started: Timestamp,
    phase: Mutex<Phase>,
    /// The newest activity reported by the server or seen by the proxy.
    last_activity: Mutex<Timestamp>,
    /// Every progress event of the current start, for pages that subscribe late.
    events: Mutex<Vec<Value>>,
    /// Bumped on every new event or phase change, for subscribers to wake on.
    version: watch::Sender<u64>,
    /// The task running the current start, for a stop to cancel it.
    start_task: Mutex<Option<tokio::task::AbortHandle>>,
}

impl Entry {
    fn new(profile: ProfileId) -> Self {
        Self {
            profile,
            started: Timestamp::now(),
            phase: Mutex::new(Phase::Starting),
            last_activity: Mutex::new(Timestamp::now()),
            events: Mutex::new(Vec::new()),
            version: watch::channel(0).0,
            start_task: Mutex::new(None),
        }
    }

    fn phase(&self) -> Phase {
        self.phase
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    fn set_phase(&self, phase: Phase) {
        *self.phase.lock().unwrap_or_else(PoisonError::into_inner) = phase;
        self.version.send_modify(|v| *v += 1);
    }

    /// Moves a start's entry on to `phase`, but only while it is still starting: a stop
    /// that cancelled the start has set it to stopping, and then the start's outcome is moot.
    /// `effect` (routing the server) runs under the phase lock, so it cannot land after the
    /// cancelling stop has removed the route. Returns whether the entry moved on.
    fn finish_start(&self, phase: Phase, effect: impl FnOnce() -> bool) -> bool {
        let mut current = self.phase.lock().unwrap_or_else(PoisonError::into_inner);
        if *current != Phase::Starting || !effect() {
            return false;
        }
        *current = phase;
        drop(current);
        self.version.send_modify(|v| *v += 1);
        true
    }

    fn push(&self, event: Value) {
        self.events
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(event);
        self.version.send_modify(|v| *v += 1);
    }

    fn events_from(&self, index: usize) -> Vec<Value> {
        let events = self.events.lock().unwrap_or_else(PoisonError::into_inner);
        events
            .get(index..)
            .map(<[Value]>::to_vec)
            .unwrap_or_default()
    }
}

/// Why the hub could not start or stop a server.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    /// No such profile, or the user may not use it.
    #[error("profile {0:?} does not exist or is not available to you")]
    NoProfile(String),
    /// No profiles are configured at all.
    #[error("no profiles are configured: add a [profiles.<id>] table to gantry.toml")]
    NoProfiles,
    /// The server is being started or stopped already.
    #[error("the server is busy ({0}); wait for it to finish")]
    Busy(&'static str),
    /// Too many starts at once.
    #[error("too many servers are starting; try again shortly")]
    TooManySpawns,
    /// The server name is not valid.
    #[error("invalid server name: {0}")]
    BadName(String),
    /// A per-user limit refuses the start.
    #[error(transparent)]
    Limit(#[from] LimitExceeded),
    /// A stop came between the claim and the launch.
    #[error("the start was cancelled")]
    Cancelled,
    /// The backend failed.
    #[error(transparent)]
    Backend(#[from] SpawnError),
}

/// What one [`Servers::reconcile`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Reconciled {
    /// Ready servers found dead.
    pub died: Vec<ServerKey>,
    /// Running servers the hub did not know, now routed.
    pub adopted: Vec<ServerKey>,
}

/// What happened when a start was asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// It already answers.
    AlreadyRunning,
    /// A start is under way (this call began it, or an earlier one did).
    Pending,
}

/// The hub's view of every server, and the backend it starts them on.
pub struct Servers {
    spawner: Arc<dyn Spawner>,
    profiles: BTreeMap<ProfileId, Profile>,
    entries: DashMap<ServerKey, Arc<Entry>>,
    routes: Arc<RouteTable>,
    spawns: Arc<Semaphore>,
    /// Environment given to every server (the hub's URLs).
    base_env: BTreeMap<String, String>,
    /// Spawn durations and failures.
    metrics: super::metrics::HubMetrics,
    /// What one user may hold at once.
    limits: UserLimits,
    /// Held while a start checks the limits and claims its server.
    claims: Mutex<()>,
}

impl std::fmt::Debug for Servers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Servers")
            .field("backend", &self.spawner.backend())
            .field("profiles", &self.profiles.keys().collect::<Vec<_>>())
            .field("servers", &self.entries.len())
            .finish_non_exhaustive()
    }
}

/// The route prefix of a server: `/user/NAME` for the default server, `/user/NAME/SERVER`
/// for a named one, as JupyterHub lays them out.
pub fn server_prefix(key: &ServerKey) -> String {
    user_path(&key.user, key)
}

/// The URL path of a server, [`server_prefix`] with the user name percent-encoded as
/// JupyterHub does: what links, the REST API's `url` fields and the server's
/// `JUPYTERHUB_SERVICE_PREFIX` carry (a server compares it with the raw request path). The
/// route itself is [`server_prefix`], since routes match decoded paths.
pub fn server_url_prefix(key: &ServerKey) -> String {
    user_path(&gantry_spawner::names::url_path_segment(&key.user), key)
}

/// `/user/<user>[/<server>]`, with `user` as the caller wrote it.
fn user_path(user: &str, key: &ServerKey) -> String {
    if key.server.is_default() {
        format!("/user/{user}")
    } else {
        format!("/user/{user}/{}", key.server.as_str())
    }
}

impl Servers {
    /// The servers over `spawner`, starting from nothing; call [`Servers::adopt`] next.
    pub fn new(
        spawner: Arc<dyn Spawner>,
        profiles: BTreeMap<ProfileId, Profile>,
        routes: Arc<RouteTable>,
        max_concurrent_spawns: usize,
        base_env: BTreeMap<String, String>,
    ) -> Self {
        Self {
            spawner,
            profiles,
            entries: DashMap::new(),
            routes,
            spawns: Arc::new(Semaphore::new(max_concurrent_spawns.max(1))),
            base_env,
            metrics: super::metrics::HubMetrics::new(),
            limits: UserLimits::default(),
            claims: Mutex::new(()),
        }
    }

    /// These servers with `limits` on what one user may hold.
    #[must_use]
    pub fn with_limits(mut self, limits: UserLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The per-user limits.
    pub fn limits(&self) -> &UserLimits {
        &self.limits
    }

    /// What `user` holds now: the servers starting or running, and the failed named ones
    /// (they keep their name until stopped).
    pub fn usage_of(&self, user: &str) -> Usage {
        let mut usage = Usage::default();
        for entry in self.entries.iter().filter(|e| e.key().user == user) {
            let active = matches!(entry.phase(), Phase::Starting | Phase::Ready { .. });
            if !entry.key().server.is_default() {
                usage.named.insert(entry.key().server.clone());
            }
            if active {
                usage.running.insert(entry.key().server.clone());
                let profile = self.profiles.get(&entry.profile);
                usage.gpus = usage
                    .gpus
                    .saturating_add(profile.map_or(0, |p| self.gpus_of(p)));
            }
        }
        usage
    }

    /// How many GPUs a start of `profile` takes: its count, or for `gpus = "all"` the devices
    /// the backend has (unknown counts as more than any cap).
    pub fn gpus_of(&self, profile: &Profile) -> u32 {
        match profile.gpus.map(|g| g.count) {
            None => 0,
            Some(gantry_spawner::gpu::GpuCount::Exactly(n)) => n.get(),
            Some(gantry_spawner::gpu::GpuCount::All) => {
                let shared = profile.gpus.is_some_and(|g| g.shared);
                self.gpu_availability(shared)
                    .and_then(|a| u32::try_from(a.total).ok())
                    .unwrap_or(u32::MAX)
            }
        }
    }

    /// Why `identity` could not start `server` with `profile` now under the per-user limits;
    /// `None` when it could. The spawn page asks before the user clicks; [`Servers::claim`]
    /// asks again, under the claim lock.
    pub fn limit_refusal(
        &self,
        identity: &Identity,
        server: &ServerName,
        profile: &Profile,
    ) -> Option<LimitExceeded> {
        let usage = self.usage_of(&identity.user);
        self.limits
            .check(&usage, identity, server, self.gpus_of(profile))
            .err()
    }

    /// The hub's metrics, with the present-tense gauges set from the servers now.
    pub fn metrics(&self) -> &super::metrics::HubMetrics {
        let (mut running, mut starting) = (0_i64, 0_i64);
        let mut active = std::collections::BTreeSet::new();
        for entry in &self.entries {
            match entry.phase() {
                Phase::Ready { .. } => {
                    running += 1;
                    active.insert(entry.key().user.clone());
                }
                Phase::Starting => starting += 1,
                Phase::Failed { .. } | Phase::Stopping => {}
            }
        }
        self.metrics.servers_running.set(running);
        self.metrics.servers_starting.set(starting);
        self.metrics
            .users_active
            .set(i64::try_from(active.len()).unwrap_or(i64::MAX));
        &self.metrics
    }

    /// Lists the backend and routes every running server: what a gantry restart finds. Does
    /// not stop or remove anything. Returns how many servers were adopted.
    ///
    /// # Errors
    ///
    /// The backend's listing failed.
    pub async fn adopt(&self) -> Result<usize, SpawnError> {
        let mut adopted = 0;
        for record in self.spawner.list().await? {
            if let ServerStatus::Running { url } = &record.status {
                let entry = Arc::new(Entry::new(record.profile.clone()));
                if self.route(&record.key, url) {
                    entry.set_phase(Phase::Ready { url: url.clone() });
                    self.entries.insert(record.key.clone(), entry);
                    adopted += 1;
                }
            }
        }
        Ok(adopted)
    }

    /// Routes every ready server whose route is missing: the reconcile loop's fast half, run
    /// every second. Memory only. Returns how many routes it put back.
    pub fn restore_routes(&self) -> usize {
        let mut restored = 0;
        for entry in &self.entries {
            // Under the phase lock, so that a stop (which sets `Stopping` under it before
            // removing the route) is never undone.
            let phase = entry.phase.lock().unwrap_or_else(PoisonError::into_inner);
            let Phase::Ready { url } = &*phase else {
                continue;
            };
            let missing = RoutePrefix::parse(&server_prefix(entry.key()), false)
                .is_ok_and(|prefix| self.routes.get(&prefix).is_none());
            if missing && self.route(entry.key(), url) {
                tracing::warn!(user = %entry.key().user, server = %entry.key().server.as_str(), "route was missing; restored");
                restored += 1;
            }
        }
        restored
    }

    /// Brings the hub's view in step with the backend's, the reconcile loop's slow half (every
    /// `hub.poll_interval_secs`):
    ///
    /// - a server that was ready before the backend was asked, and that the backend no longer
    ///   runs, has died (a crash, an OOM kill, someone's `docker rm`): its route goes, its
    ///   entry says why (exit code) for its user's pages, and the backend's stop releases its
    ///   GPUs and ports;
    /// - a server the backend runs that the hub does not know (adopting missed it, or it came
    ///   up while the hub could not reach the backend) is routed, as at startup.
    ///
    /// Servers being started or stopped are left to that work.
    ///
    /// # Errors
    ///
    /// The backend's listing failed; nothing was changed.
    pub async fn reconcile(&self) -> Result<Reconciled, SpawnError> {
        let ready_before: Vec<(ServerKey, Arc<Entry>)> = self
            .entries
            .iter()
            .filter(|e| matches!(e.phase(), Phase::Ready { .. }))
            .map(|e| (e.key().clone(), Arc::clone(e.value())))
            .collect();
        let records = self.spawner.list().await?;
        let running: std::collections::HashMap<&ServerKey, &ServerRecord> = records
            .iter()
            .filter(|r| matches!(r.status, ServerStatus::Running { .. }))
            .map(|r| (&r.key, r))
            .collect();
        let mut report = Reconciled::default();
        for (key, entry) in ready_before {
            if running.contains_key(&key) {
                continue;
            }
            // A listing may not carry the exit code (Docker's does not); the server's own
            // status does.
            let listed = records
                .iter()
                .find(|r| r.key == key)
                .map_or(ServerStatus::Absent, |r| r.status.clone());
            let status = match listed {
                ServerStatus::Stopped { exit_code: None } => {
                    self.spawner.status(&key).await.unwrap_or(listed)
                }
                other => other,
            };
            let message = match &status {
                ServerStatus::Stopped {
                    exit_code: Some(code),
                } => format!("the server stopped on its own (exit code {code})"),
                ServerStatus::Stopped { exit_code: None } => {
                    "the server stopped on its own".to_owned()
                }
                ServerStatus::Absent => "the server's container is gone".to_owned(),
                other => format!("the server stopped answering (the backend says {other:?})"),
            };
            // Still ready means nobody stopped it meanwhile: a stop sets `Stopping` first, and
            // only a failed entry is ever replaced by a new start.
            let died = {
                let mut phase = entry.phase.lock().unwrap_or_else(PoisonError::into_inner);
                if matches!(*phase, Phase::Ready { .. }) {
                    *phase = Phase::Failed {
                        message: message.clone(),
                    };
                    self.unroute(&key);
                    true
                } else {
                    false
                }
            };
            if !died {
                continue;
            }
            entry.push(json!({
                "progress": 100, "failed": true, "stopped": true,
                "message": format!("The server stopped: {message}"),
            }));
            tracing::warn!(user = %key.user, server = %key.server.as_str(), %message, "server died");
            if let Err(error) = self.spawner.stop(&key).await {
                tracing::warn!(user = %key.user, error = %crate::errors::error_chain(&error), "cannot clean up the dead server");
            }
            report.died.push(key);
        }
        for (key, record) in running {
            let ServerStatus::Running { url } = &record.status else {
                continue;
            };
            if self.entries.contains_key(key) {
                continue;
            }
            let entry = Arc::new(Entry::new(record.profile.clone()));
            if let dashmap::Entry::Vacant(vacant) = self.entries.entry(key.clone())
                && self.route(key, url)
            {
                entry.set_phase(Phase::Ready { url: url.clone() });
                vacant.insert(entry);
                tracing::info!(user = %key.user, server = %key.server.as_str(), %url, "running server adopted");
                report.adopted.push(key.clone());
            }
        }
        Ok(report)
    }

    /// The profiles `identity` may start, in id order.
    pub fn profiles_for<'a>(
        &'a self,
        identity: &'a Identity,
    ) -> impl Iterator<Item = &'a Profile> + 'a {
        self.profiles
            .values()
            .filter(move |p| p.is_allowed_for(identity))
    }

    /// Every configured profile, in id order (the admin page lists them).
    pub fn profiles(&self) -> impl Iterator<Item = &Profile> {
        self.profiles.values()
    }

    /// The phase and profile of a server the hub knows of.
    pub fn state(&self, key: &ServerKey) -> Option<(Phase, ProfileId, Timestamp)> {
        self.entries
            .get(key)
            .map(|e| (e.phase(), e.profile.clone(), e.started))
    }

    /// The backend's name: `docker`, `mesos`.
    pub fn backend(&self) -> &'static str {
        self.spawner.backend()
    }

    /// Every server the hub knows of.
    pub fn keys(&self) -> Vec<ServerKey> {
        self.entries.iter().map(|e| e.key().clone()).collect()
    }

    /// Whether the hub knows the server `key`, in whatever phase.
    pub fn contains(&self, key: &ServerKey) -> bool {
        self.entries.contains_key(key)
    }

    /// Records activity a server reported (or the proxy saw) at `at`; older reports than
    /// the one kept change nothing. `false` when the hub knows no such server.
    pub fn record_activity(&self, key: &ServerKey, at: Timestamp) -> bool {
        match self.entries.get(key) {
            Some(entry) => {
                let mut last = entry
                    .last_activity
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner);
                if at > *last {
                    *last = at;
                }
                true
            }
            None => false,
        }
    }

    /// The last activity of a server: the newer of what it reported and the proxy's last
    /// traffic on its route.
    pub fn last_activity(&self, key: &ServerKey) -> Option<Timestamp> {
        let reported = *self
            .entries
            .get(key)?
            .last_activity
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        Some(self.with_route_activity(key, reported))
    }

    /// `reported`, or the proxy's last traffic on `key`'s route when that is newer.
    fn with_route_activity(&self, key: &ServerKey, reported: Timestamp) -> Timestamp {
        let routed = RoutePrefix::parse(&server_prefix(key), false)
            .ok()
            .and_then(|prefix| self.routes.get(&prefix))
            .and_then(|route| Timestamp::from_millisecond(route.last_activity_millis()).ok());
        routed.map_or(reported, |r| r.max(reported))
    }

    /// The running servers that should stop now: idle past their profile's `idle_timeout`
    /// (the newest of the proxy's traffic on the route and the server's own activity reports),
    /// or older than its `max_age`. Each with why, for the log.
    pub fn to_cull(&self, now: Timestamp) -> Vec<(ServerKey, String)> {
        let mut found = Vec::new();
        for entry in &self.entries {
            if !matches!(entry.phase(), Phase::Ready { .. }) {
                continue;
            }
            let Some(profile) = self.profiles.get(&entry.profile) else {
                continue;
            };
            let age = now.duration_since(entry.started);
            if let Some(max_age) = profile.max_age
                && age
                    >= jiff::SignedDuration::try_from(max_age).unwrap_or(jiff::SignedDuration::MAX)
            {
                found.push((
                    entry.key().clone(),
                    format!("older than its profile's max_age ({max_age:?})"),
                ));
                continue;
            }
            let Some(idle_timeout) = profile.idle_timeout else {
                continue;
            };
            let reported = *entry
                .last_activity
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // The entry's own lock only: asking the map again from inside its iteration could
            // wait on a writer queued behind this shard's read lock.
            let last = self.with_route_activity(entry.key(), reported);
            let idle = now.duration_since(last);
            if idle
                >= jiff::SignedDuration::try_from(idle_timeout).unwrap_or(jiff::SignedDuration::MAX)
            {
                found.push((
                    entry.key().clone(),
                    format!("idle past its profile's idle_timeout ({idle_timeout:?})"),
                ));
            }
        }
        found
    }

    /// Every server of `user` the hub knows of, by server name.
    pub fn of_user(&self, user: &str) -> Vec<(ServerKey, Phase, ProfileId, Timestamp)> {
        let mut servers: Vec<_> = self
            .entries
            .iter()
            .filter(|e| e.key().user == user)
            .map(|e| (e.key().clone(), e.phase(), e.profile.clone(), e.started))
            .collect();
        servers.sort_by(|a, b| a.0.cmp(&b.0));
        servers
    }

    fn route(&self, key: &ServerKey, url: &str) -> bool {
        let prefix = match RoutePrefix::parse(&server_prefix(key), false) {
            Ok(prefix) => prefix,
            Err(error) => {
                tracing::error!(user = %key.user, %error, "cannot make a route for the server");
                return false;
            }
        };
        match Target::parse(url) {
            Ok(target) => {
                // The route carries its owner: the data plane asks the gate about every
                // request that lands on it, however its path was spelled.
                let owner = RouteOwner {
                    user: key.user.as_str().into(),
                    server: key.server.as_str().into(),
                };
                self.routes
                    .apply(RouteChange::Upsert(Route::owned(prefix, target, owner)));
                true
            }
            Err(error) => {
                tracing::error!(user = %key.user, %url, %error, "the backend reported an unusable address");
                false
            }
        }
    }

    fn unroute(&self, key: &ServerKey) {
        if let Ok(prefix) = RoutePrefix::parse(&server_prefix(key), false) {
            self.routes.apply(RouteChange::Remove(prefix));
        }
    }

    /// Starts `identity`'s server `server` with `profile` (the only profile when `None`):
    /// [`Servers::claim`] then [`Claim::launch`], for a start that needs no credentials minted
    /// in between. Returns at once; the start runs as a task and reports through
    /// [`Servers::progress`].
    ///
    /// # Errors
    ///
    /// As [`Servers::claim`].
    pub fn start(
        self: &Arc<Self>,
        identity: Identity,
        server: ServerName,
        profile: Option<&str>,
        extra_env: BTreeMap<String, String>,
    ) -> Result<StartOutcome, ServerError> {
        match self.claim(identity, server, profile)? {
            Claimed::Found(outcome) => Ok(outcome),
            Claimed::Mine(claim) => claim.launch(extra_env).map(|()| StartOutcome::Pending),
        }
    }

    /// Claims `identity`'s server `server` for a start with `profile` (the only profile when
    /// `None`). Exactly one of racing claims gets [`Claimed::Mine`]; the others, and any
    /// claim until that start has ended, find it ([`Claimed::Found`]).
    ///
    /// # Errors
    ///
    /// [`ServerError`] when the profile is unknown or not allowed, a per-user limit refuses
    /// ([`ServerError::Limit`]), the server is stopping, or too many starts run already.
    pub fn claim(
        self: &Arc<Self>,
        identity: Identity,
        server: ServerName,
        profile: Option<&str>,
    ) -> Result<Claimed, ServerError> {
        let profile = self.choose_profile(&identity, profile)?.clone();
        let key = ServerKey {
            user: identity.user.clone(),
            server: server.clone(),
        };
        // One claim at a time: the limits count every claim made before this one.
        let _claiming = self.claims.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(entry) = self.entries.get(&key) {
            match entry.phase() {
                Phase::Ready { .. } => return Ok(Claimed::Found(StartOutcome::AlreadyRunning)),
                Phase::Starting => return Ok(Claimed::Found(StartOutcome::Pending)),
                Phase::Stopping => return Err(ServerError::Busy("stopping")),
                Phase::Failed { .. } => {}
            }
        }
        if let Some(refused) = self.limit_refusal(&identity, &server, &profile) {
            tracing::info!(user = %key.user, server = %key.server.as_str(), limit = %refused, "start refused by a per-user limit");
            return Err(refused.into());
        }
        let permit = Arc::clone(&self.spawns)
            .try_acquire_owned()
            .map_err(|_| ServerError::TooManySpawns)?;
        let entry = Arc::new(Entry::new(profile.id.clone()));
        match self.entries.entry(key.clone()) {
            dashmap::Entry::Occupied(mut occupied) => {
                if !matches!(occupied.get().phase(), Phase::Failed { .. }) {
                    return Ok(Claimed::Found(StartOutcome::Pending));
                }
                occupied.insert(Arc::clone(&entry));
            }
            dashmap::Entry::Vacant(vacant) => {
                vacant.insert(Arc::clone(&entry));
            }
        }
        Ok(Claimed::Mine(Box::new(Claim {
            servers: Arc::clone(self),
            key,
            entry,
            identity,
            profile,
            permit: Some(permit),
        })))
    }

    fn choose_profile<'a>(
        &'a self,
        identity: &'a Identity,
        wanted: Option<&str>,
    ) -> Result<&'a Profile, ServerError> {
        let mut allowed = self.profiles_for(identity);
        match wanted {
            Some(id) => allowed
                .find(|p| p.id.as_str() == id)
                .ok_or_else(|| ServerError::NoProfile(id.to_owned())),
            None => {
                let first = allowed.next().ok_or(if self.profiles.is_empty() {
                    ServerError::NoProfiles
                } else {
                    ServerError::NoProfile(String::new())
                })?;
                Ok(first)
            }
        }
    }

    async fn run_start(
        &self,
        key: ServerKey,
        request: SpawnRequest,
        entry: Arc<Entry>,
        prefix: String,
    ) {
        let (tx, mut rx) = progress_channel(64);
        let relay_entry = Arc::clone(&entry);
        let relay = tokio::spawn(async move {
            while let Some(event) = rx.next().await {
                relay_entry.push(event_json(&event));
            }
        });
        let started = std::time::Instant::now();
        let result = self.spawner.start(&request, tx).await;
        // The sender is gone with the start: the relay drains what is left and ends.
        let _ = relay.await;
        match result {
            Ok(record) => {
                let routed = match &record.status {
                    ServerStatus::Running { url } => {
                        let ready = Phase::Ready { url: url.clone() };
                        // The ready event goes out before the phase changes, so a progress
                        // stream never sees a ready server without it.
                        entry.finish_start(ready, || {
                            self.route(&key, url) && {
                                entry.push(json!({
                                    "progress": 100, "ready": true, "url": prefix,
                                    "message": format!("Server ready at {prefix}"),
                                }));
                                true
                            }
                        })
                    }
                    _ => false,
                };
                if routed {
                    tracing::info!(user = %key.user, server = %key.server.as_str(), status = ?record.status, secs = started.elapsed().as_secs_f64(), "server ready");
                    self.metrics
                        .spawn_duration
                        .observe(started.elapsed().as_secs_f64());
                } else if entry.phase() == Phase::Starting {
                    let message = format!(
                        "the backend reported the server as {:?} after starting it",
                        record.status
                    );
                    tracing::error!(user = %key.user, %message);
                    entry.push(json!({"progress": 100, "failed": true, "message": message}));
                    self.metrics.spawn_failures.inc();
                    entry.set_phase(Phase::Failed { message });
                }
            }
            Err(error) => {
                let message = crate::errors::error_chain(&error);
                tracing::warn!(user = %key.user, server = %key.server.as_str(), error = %message, "server start failed");
                let mut event = json!({"progress": 100, "failed": true, "message": format!("Spawn failed: {message}")});
                if let SpawnError::Exited {
                    exit_code,
                    last_log_lines,
                    ..
                } = &error
                {
                    event["exit_code"] = json!(exit_code);
                    event["last_log_lines"] = json!(last_log_lines);
                }
                self.metrics.spawn_failures.inc();
                entry.finish_start(Phase::Failed { message }, || {
                    entry.push(event);
                    true
                });
            }
        }
    }

    /// Stops a server and removes its route. Stopping a server that is not running succeeds.
    /// A server that is starting has its start cancelled: the start task is aborted where it
    /// waits (a pull, the engine, the readiness probe), a `failed` progress event tells the
    /// pages, and the backend's idempotent stop then removes whatever the start had created
    /// and releases its GPUs and ports.
    ///
    /// # Errors
    ///
    /// [`ServerError::Busy`] while it is already stopping; the backend's error.
    pub async fn stop(&self, key: &ServerKey) -> Result<(), ServerError> {
        let entry = self.entries.get(key).map(|e| Arc::clone(e.value()));
        if let Some(entry) = &entry {
            // The phase turns to stopping under its lock before the start task is taken, so
            // a launch either stored its task first (and it is aborted here) or sees the stop
            // and does not start (see `Claim::launch`).
            let was = {
                let mut phase = entry.phase.lock().unwrap_or_else(PoisonError::into_inner);
                std::mem::replace(&mut *phase, Phase::Stopping)
            };
            match was {
                Phase::Stopping => {
                    *entry.phase.lock().unwrap_or_else(PoisonError::into_inner) = was;
                    return Err(ServerError::Busy("stopping"));
                }
                Phase::Starting => {
                    let task = entry
                        .start_task
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .take();
                    if let Some(task) = task {
                        task.abort();
                    }
                    tracing::info!(user = %key.user, server = %key.server.as_str(), "start cancelled");
                    entry.push(json!({
                        "progress": 100, "failed": true, "cancelled": true,
                        "message": "The start was cancelled",
                    }));
                }
                Phase::Ready { .. } | Phase::Failed { .. } => {
                    entry.version.send_modify(|v| *v += 1);
                }
            }
        }
        self.unroute(key);
        let result = self.spawner.stop(key).await;
        match &result {
            Ok(()) => {
                // Only this entry goes: a start claimed after the stop keeps its own.
                self.entries.remove_if(key, |_, e| {
                    entry.as_ref().is_some_and(|ours| Arc::ptr_eq(e, ours))
                });
                if let Some(entry) = &entry {
                    // Whoever still follows this server's progress learns it has ended.
                    entry.push(json!({
                        "progress": 100, "stopped": true, "message": "The server was stopped",
                    }));
                }
                tracing::info!(user = %key.user, server = %key.server.as_str(), "server stopped");
            }
            Err(error) => {
                if let Some(entry) = entry {
                    let message = format!("stopping failed: {}", crate::errors::error_chain(error));
                    entry.push(json!({"progress": 100, "failed": true, "message": message}));
                    entry.set_phase(Phase::Failed { message });
                }
            }
        }
        result.map_err(ServerError::from)
    }

    /// The progress of `key`'s current start as a Server-Sent Events body in JupyterHub's
    /// shape (`data: {"progress": …, "message": …}`), ending after the `ready` or `failed`
    /// event, or the `stopped` one when the server is stopped (or dies) while it is followed.
    /// `None` when the hub knows no such server.
    pub fn progress(&self, key: &ServerKey) -> Option<ResponseBody> {
        let entry = Arc::clone(self.entries.get(key)?.value());
        let state = (entry, 0_usize, false);
        let stream = futures_util::stream::unfold(state, |(entry, index, done)| async move {
            if done {
                return None;
            }
            let mut version = entry.version.subscribe();
            loop {
                let events = entry.events_from(index);
                if !events.is_empty() {
                    let finished = events.iter().any(is_final);
                    let mut text = String::new();
                    for event in &events {
                        text.push_str("data: ");
                        text.push_str(&event.to_string());
                        text.push_str("\n\n");
                    }
                    let next = index + events.len();
                    return Some((
                        Ok::<_, Infallible>(Frame::data(Bytes::from(text))),
                        (entry, next, finished),
                    ));
                }
                match entry.phase() {
                    // A server adopted after a restart has no events: say where it stands.
                    Phase::Ready { .. } if index == 0 => {
                        let text = "data: {\"progress\": 100, \"ready\": true, \"message\": \"Server ready\"}\n\n";
                        return Some((Ok(Frame::data(Bytes::from(text))), (entry, 1, true)));
                    }
                    // The last event is pushed before the phase changes: one that arrived
                    // since the read above is sent before the stream ends.
                    Phase::Ready { .. } | Phase::Failed { .. } => {
                        if entry.events_from(index).is_empty() {
                            return None;
                        }
                        continue;
                    }
                    Phase::Starting | Phase::Stopping => {}
                }
                if version.changed().await.is_err() {
                    return None;
                }
            }
        });
        Some(http_body_util::Either::Right(
            StreamBody::new(stream).boxed_unsync(),
        ))
    }

    /// How many GPUs a `shared` (or exclusive) request could have now, of how many, as the
    /// backend's book says ([`Spawner::gpu_availability`]); `None` when it keeps none.
    pub fn gpu_availability(&self, shared: bool) -> Option<gantry_spawner::gpu::GpuAvailability> {
        self.spawner.gpu_availability(shared)
    }
}

/// Whether a progress event is a stream's last: the server is ready, failed, or stopped.
fn is_final(event: &Value) -> bool {
    event["ready"] == true || event["failed"] == true || event["stopped"] == true
}

/// What [`Servers::claim`] found.
pub enum Claimed {
    /// The server is this start's: mint its credentials, then [`Claim::launch`].
    Mine(Box<Claim>),
    /// Nothing for this start to do: the server answers, or another start of it is under way.
    Found(StartOutcome),
}

/// A start that holds its server: made by [`Servers::claim`], launched by [`Claim::launch`].
/// Dropped without being launched (minting its token failed, say), the server is marked
/// failed, so the next start can claim it again.
pub struct Claim {
    servers: Arc<Servers>,
    key: ServerKey,
    entry: Arc<Entry>,
    identity: Identity,
    profile: Profile,
    permit: Option<OwnedSemaphorePermit>,
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claim")
            .field("key", &self.key)
            .field("profile", &self.profile.id)
            .finish_non_exhaustive()
    }
}

impl Claim {
    /// The server claimed.
    pub fn key(&self) -> &ServerKey {
        &self.key
    }

    /// Starts the claimed server with `extra_env` on top of the hub's, as a task that reports
    /// through [`Servers::progress`].
    ///
    /// # Errors
    ///
    /// [`ServerError::Cancelled`] when the server was stopped since the claim: nothing starts.
    pub fn launch(mut self, extra_env: BTreeMap<String, String>) -> Result<(), ServerError> {
        let servers = Arc::clone(&self.servers);
        let key = self.key.clone();
        let mut env = servers.base_env.clone();
        env.extend(extra_env);
        let prefix = format!("{}/", server_url_prefix(&key));
        env.insert("JUPYTERHUB_USER".into(), key.user.clone());
        env.insert(
            "JUPYTERHUB_SERVER_NAME".into(),
            key.server.as_str().to_owned(),
        );
        env.insert("JUPYTERHUB_SERVICE_PREFIX".into(), prefix.clone());
        env.insert("JUPYTERHUB_BASE_URL".into(), "/".into());
        let request = SpawnRequest {
            identity: self.identity.clone(),
            server: key.server.clone(),
            profile: self.profile.clone(),
            env,
        };
        let entry = Arc::clone(&self.entry);
        // Under the phase lock, so a stop either finds the task stored (and aborts it) or has
        // already turned the phase to stopping (and nothing starts).
        let phase = entry.phase.lock().unwrap_or_else(PoisonError::into_inner);
        let ours = servers
            .entries
            .get(&key)
            .is_some_and(|e| Arc::ptr_eq(e.value(), &entry));
        if *phase != Phase::Starting || !ours {
            drop(phase);
            return Err(ServerError::Cancelled);
        }
        let permit = self.permit.take();
        let task_entry = Arc::clone(&entry);
        let task_servers = Arc::clone(&servers);
        let task = tokio::spawn(async move {
            let _permit = permit;
            task_servers
                .run_start(key, request, task_entry, prefix)
                .await;
        });
        *entry
            .start_task
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(task.abort_handle());
        drop(phase);
        Ok(())
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        if self.permit.is_none() {
            return; // launched
        }
        let message = "the start was abandoned before it began".to_owned();
        let event = json!({"progress": 100, "failed": true, "message": message.clone()});
        let entry = &self.entry;
        entry.finish_start(Phase::Failed { message }, || {
            entry.push(event);
            true
        });
    }
}

/// Per-user limits on servers (the `hub.*_per_user` keys), checked when a start claims its
/// server and shown on the spawn page before the user picks.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UserLimits {
    /// Most named servers a user may have, starting, running or failed (JupyterHub's
    /// `named_server_limit_per_user`); `None`: no limit.
    pub named_servers: Option<usize>,
    /// Most servers a user may have starting or running at once, the default one included;
    /// `None`: no limit.
    pub running_servers: Option<usize>,
    /// Most GPUs across a user's starting and running servers; `None`: no limit.
    pub gpus: Option<u32>,
    /// GPU caps by group: a member of any of these groups gets the largest of their groups'
    /// caps instead of `gpus`.
    pub gpus_by_group: BTreeMap<String, u32>,
}

/// What one user holds now ([`Servers::usage_of`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    /// Named servers the hub knows (starting, running or failed).
    pub named: std::collections::BTreeSet<ServerName>,
    /// Servers starting or running, the default one included.
    pub running: std::collections::BTreeSet<ServerName>,
    /// GPUs those servers' profiles take.
    pub gpus: u32,
}

/// A per-user limit that refuses a start: names the limit, its value and what to do.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum LimitExceeded {
    /// `hub.named_server_limit_per_user`.
    #[error(
        "you have {limit} named servers, the most allowed (hub.named_server_limit_per_user = {limit}); stop one before creating another"
    )]
    NamedServers {
        /// The limit.
        limit: usize,
    },
    /// `hub.max_servers_per_user`.
    #[error(
        "you have {limit} servers starting or running, the most allowed (hub.max_servers_per_user = {limit}); stop one first"
    )]
    RunningServers {
        /// The limit.
        limit: usize,
    },
    /// `hub.max_gpus_per_user` or a group's cap.
    #[error(
        "this profile takes {wanted} GPU(s) and your servers hold {held}, over your cap of {limit} ({source_key}); stop a GPU server or pick a smaller profile"
    )]
    Gpus {
        /// GPUs the profile takes.
        wanted: u32,
        /// GPUs the user's servers hold.
        held: u32,
        /// The cap.
        limit: u32,
        /// Where the cap comes from: `hub.max_gpus_per_user` or `hub.max_gpus_per_group.<group>`.
        source_key: String,
    },
}

impl UserLimits {
    /// The GPU cap of `identity` and the key it comes from; `None`: no cap.
    pub fn gpu_cap(&self, identity: &Identity) -> Option<(u32, String)> {
        let by_group = identity
            .groups
            .iter()
            .filter_map(|g| self.gpus_by_group.get(g).map(|cap| (*cap, g)))
            .max_by_key(|(cap, _)| *cap);
        match by_group {
            Some((cap, group)) => Some((cap, format!("hub.max_gpus_per_group.{group}"))),
            None => self
                .gpus
                .map(|cap| (cap, "hub.max_gpus_per_user".to_owned())),
        }
    }

    /// Whether one more start of `server`, taking `gpus` GPUs, fits beside `usage`. Pure:
    /// the table tests and the spawn page use it as the claim does.
    ///
    /// # Errors
    ///
    /// The first limit it would break.
    pub fn check(
        &self,
        usage: &Usage,
        identity: &Identity,
        server: &ServerName,
        gpus: u32,
    ) -> Result<(), LimitExceeded> {
        if let Some(limit) = self.named_servers
            && !server.is_default()
            && !usage.named.contains(server)
            && usage.named.len() >= limit
        {
            return Err(LimitExceeded::NamedServers { limit });
        }
        if let Some(limit) = self.running_servers
            && !usage.running.contains(server)
            && usage.running.len() >= limit
        {
            return Err(LimitExceeded::RunningServers { limit });
        }
        if gpus > 0
            && let Some((limit, source_key)) = self.gpu_cap(identity)
            && usage.gpus.saturating_add(gpus) > limit
        {
            return Err(LimitExceeded::Gpus {
                wanted: gpus,
                held: usage.gpus,
                limit,
                source_key,
            });
        }
        Ok(())
    }
}

/// A progress event in JupyterHub's progress-stream shape.
fn event_json(event: &ProgressEvent) -> Value {
    match event {
        ProgressEvent::Pulling {
            image,
            layer,
            done_bytes,
            total_bytes,
        } => {
            let percent = event.percent();
            let summary = event.pull_summary().unwrap_or_else(|| "pulling".to_owned());
            let mut value = json!({
                "progress": 10 + u32::from(percent.unwrap_or(0)) / 2,
                "message": format!("{image}: {summary}"),
                "phase": "pulling",
                "done_bytes": done_bytes,
                "total_bytes": total_bytes,
            });
            if let Some(layer) = layer {
                value["layer"] = json!({
                    "id": layer.id,
                    "phase": format!("{:?}", layer.phase).to_lowercase(),
                    "current_bytes": layer.current_bytes,
                    "total_bytes": layer.total_bytes,
                });
            }
            value
        }
        ProgressEvent::WaitingForPlacement => json!({
            "progress": 20, "message": "Waiting for a host that fits the profile", "phase": "placing",
        }),
        ProgressEvent::Placed { host } => json!({
            "progress": 60, "message": format!("Launching on {host}"), "phase": "placed", "host": host,
        }),
        ProgressEvent::Creating => {
            json!({"progress": 65, "message": "Creating the container", "phase": "creating"})
        }
        ProgressEvent::Starting => {
            json!({"progress": 75, "message": "Starting the container", "phase": "starting"})
        }
        ProgressEvent::WaitingForHttp { .. } => {
            json!({"progress": 85, "message": "Waiting for the server to answer", "phase": "waiting"})
        }
        ProgressEvent::Ready { .. } => {
            json!({"progress": 95, "message": "The server answers", "phase": "answering"})
        }
        ProgressEvent::Failed {
            exit_code,
            message,
            last_log_lines,
        } => json!({
            "progress": 95, "message": message, "phase": "failing",
            "exit_code": exit_code, "last_log_lines": last_log_lines,
        }),
    }
}
