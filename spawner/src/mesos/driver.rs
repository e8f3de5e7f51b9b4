//! The scheduler side of the connection: the state shared with [`super::MesosSpawner`], the
//! calls, and the one long-lived task that subscribes, reads the event stream and answers it.
//!
//! * **Subscribing.** `SUBSCRIBE` goes to the last known leader, then to each configured
//!   master in turn. Redirects are followed by hand (the client follows none): a `307` carries
//!   a scheme-less `Location: //host:port/api/v1/scheduler`, resolved against the URL that
//!   answered and remembered as the leader; a `503` means no leader is elected yet. Attempts
//!   back off exponentially up to `mesos.max_backoff`.
//! * **The stream.** The `200` answer's body is RecordIO ([`super::recordio`]); its
//!   `Mesos-Stream-Id` goes on every later call, each its own request. No event (heartbeats
//!   included) for `missed_heartbeats` heartbeat intervals, an `ERROR` event, a broken stream,
//!   or a call answered `403` (not subscribed) or `307` (the leader moved) ends the
//!   subscription, and a new one starts with the same framework id.
//! * **After `SUBSCRIBED`.** The framework id is saved before anything is launched; every
//!   task gantry knows is reconciled explicitly, then all implicitly; offers are revived when
//!   a server waits for one and suppressed otherwise. Implicit reconciliation repeats every
//!   `reconcile_interval`, with explicit reconciliation of the tasks not yet running.
//! * **A removed framework.** When the master answers that the framework has been removed
//!   (gantry stayed away longer than the failover timeout), its tasks are gone: gantry
//!   records them as lost, forgets the id and registers as a new framework.
//! * **Events.** `OFFERS` go through [`super::offers::plan`]: fitting servers are launched
//!   with one `ACCEPT` per offer, and the rest is declined with `refuse_seconds`. `UPDATE`s
//!   update the task and are acknowledged when they carry a uuid (reconciliation answers do
//!   not). `RESCIND` needs nothing: offers are never held past their event.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::{ACCEPT, CONTENT_TYPE, LOCATION};
use tokio::sync::watch;
use tokio::time::Instant;
use url::Url;

use crate::config::SpawnSettings;
use crate::names::{Instance, ProfileId};
use crate::spawner::{ServerKey, SpawnRequest};

use super::config::MesosSettings;
use super::offers::{self, Demand, Mismatch};
use super::proto::{
    Accept, Acknowledge, Call, CallType, Capability, CapabilityType, Decline, DurationInfo, Event,
    EventType, Filters, FrameworkInfo, Id, Kill, KillPolicy, Labels, Launch, Offer, Operation,
    OperationType, Reconcile, ReconcileTask, Roles, Subscribe, TaskState, TaskStatus,
};
use super::recordio::Decoder;
use super::status::parse_task_id;
use super::store::{FrameworkStore, StoredState, StoredTask};
use super::task::{task_info, url_for};
use super::{MesosError, MesosStep};

/// The header naming the subscription.
pub(crate) const STREAM_ID: &str = "Mesos-Stream-Id";
/// The JSON media type.
const JSON: &str = "application/json";
/// The largest event accepted: an `OFFERS` event of a big cluster stays far below.
const MAX_RECORD: usize = 64 << 20;
/// Redirects followed from one starting URL.
const MAX_REDIRECTS: usize = 5;
/// The first pause between subscription attempts.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
/// How long after `SUBSCRIBED` gantry waits for reconciliation answers before it trusts its
/// view of the tasks.
const SETTLE: Duration = Duration::from_secs(3);
/// What the master says of a framework it removed (`Framework has been removed`).
const REMOVED: &str = "has been removed";
/// The heartbeat interval assumed when the master announces none (its default).
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);

/// The subscription in use.
#[derive(Clone, Debug)]
pub(crate) struct Session {
    /// The leader's scheduler endpoint.
    pub(crate) endpoint: Url,
    /// The `Mesos-Stream-Id`.
    pub(crate) stream_id: String,
}

/// One task gantry launched or found.
#[derive(Clone, Debug)]
pub(crate) struct Task {
    pub(crate) key: ServerKey,
    pub(crate) profile: ProfileId,
    pub(crate) agent_id: Option<String>,
    pub(crate) url: Option<String>,
    /// `None`: launched (or remembered), no update yet.
    pub(crate) state: Option<TaskState>,
    pub(crate) reason: Option<String>,
    pub(crate) message: Option<String>,
    /// Updates received, to tell when a reconciliation answer arrived.
    pub(crate) updates: u64,
}

impl Task {
    fn new(
        key: ServerKey,
        profile: ProfileId,
        agent_id: Option<String>,
        url: Option<String>,
    ) -> Self {
        Self {
            key,
            profile,
            agent_id,
            url,
            state: None,
            reason: None,
            message: None,
            updates: 0,
        }
    }

    /// Whether the task has not ended (or is not known to have).
    pub(crate) fn is_live(&self) -> bool {
        !self.state.is_some_and(TaskState::is_terminal)
    }
}

/// A server waiting for an offer.
#[derive(Clone, Debug)]
pub(crate) struct Pending {
    pub(crate) seq: u64,
    pub(crate) task_id: String,
    pub(crate) request: SpawnRequest,
    pub(crate) demand: Demand,
    pub(crate) since: Instant,
    /// Why each agent that made an offer while it waited did not fit (the latest reason
    /// per agent).
    pub(crate) mismatches: BTreeMap<String, Mismatch>,
    /// Why it cannot be launched at all.
    pub(crate) failure: Option<String>,
}

/// Everything the driver and the spawner's methods share.
#[derive(Debug, Default)]
pub(crate) struct State {
    pub(crate) framework_id: Option<String>,
    pub(crate) leader: Option<Url>,
    pub(crate) session: Option<Session>,
    /// Whether the tasks gantry knew at subscription have all been reconciled (or the wait
    /// for them is over).
    pub(crate) synced: bool,
    pub(crate) awaiting: BTreeSet<String>,
    pub(crate) tasks: BTreeMap<String, Task>,
    pub(crate) pending: BTreeMap<String, Pending>,
    pub(crate) next_seq: u64,
    pub(crate) suppressed: bool,
    pub(crate) steps: HashMap<ServerKey, MesosStep>,
    pub(crate) offer_events: u64,
    pub(crate) subscriptions: u64,
    pub(crate) last_error: Option<String>,
    pub(crate) stored: StoredState,
}

impl State {
    /// The pending servers, oldest first.
    fn pending_in_order(&self) -> Vec<&Pending> {
        let mut list: Vec<&Pending> = self.pending.values().collect();
        list.sort_by_key(|p| p.seq);
        list
    }
}

/// The state and the means to talk to the master.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) settings: MesosSettings,
    pub(crate) spawn: SpawnSettings,
    gpu_capable: bool,
    http: reqwest::Client,
    store: Arc<dyn FrameworkStore>,
    state: Mutex<State>,
    /// Bumped on every change of the state, for waiters.
    pub(crate) tick: watch::Sender<u64>,
    /// A stream id whose subscription must be dropped.
    reconnect: watch::Sender<Option<String>>,
}

/// The error and its causes on one line.
fn chain(e: &reqwest::Error) -> String {
    let mut text = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

impl Shared {
    pub(crate) fn new(
        settings: MesosSettings,
        spawn: SpawnSettings,
        gpu_capable: bool,
        http: reqwest::Client,
        store: Arc<dyn FrameworkStore>,
        stored: StoredState,
    ) -> Self {
        let mut state = State {
            framework_id: stored.framework_id.clone(),
            ..State::default()
        };
        for (id, t) in &stored.tasks {
            if let Some((key, profile)) = parse_task_id(&spawn.instance, id) {
                state.tasks.insert(
                    id.clone(),
                    Task::new(key, profile, Some(t.agent_id.clone()), Some(t.url.clone())),
                );
            }
        }
        state.stored = stored;
        Self {
            settings,
            spawn,
            gpu_capable,
            http,
            store,
            state: Mutex::new(state),
            tick: watch::Sender::new(0),
            reconnect: watch::Sender::new(None),
        }
    }

    pub(crate) fn instance(&self) -> &Instance {
        &self.spawn.instance
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, State> {
        // Every update leaves the state consistent, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Wakes everyone waiting on the state.
    pub(crate) fn bump(&self) {
        self.tick.send_modify(|t| *t = t.wrapping_add(1));
    }

    /// Saves `state.stored`.
    pub(crate) fn persist(&self, state: &State) -> Result<(), MesosError> {
        self.store.save(&state.stored).map_err(MesosError::Store)
    }

    fn request(&self, url: Url) -> reqwest::RequestBuilder {
        let mut request = self
            .http
            .post(url)
            .header(CONTENT_TYPE, JSON)
            .header(ACCEPT, JSON);
        if let Some(c) = &self.settings.credentials {
            request = request.basic_auth(&c.principal, Some(&c.secret));
        }
        request
    }

    /// Sends `call` over the current subscription; `202 Accepted` is success.
    pub(crate) async fn call(&self, mut call: Call) -> Result<(), MesosError> {
        let name = call.kind.name();
        let (session, framework_id) = {
            let st = self.lock();
            (st.session.clone(), st.framework_id.clone())
        };
        let (Some(session), Some(framework_id)) = (session, framework_id) else {
            return Err(self.not_connected());
        };
        call.framework_id = Some(Id::new(framework_id));
        let response = self
            .request(session.endpoint.clone())
            .header(STREAM_ID, &session.stream_id)
            .timeout(self.settings.call_timeout)
            .json(&call)
            .send()
            .await
            .map_err(|e| MesosError::Call {
                call: name,
                status: None,
                message: chain(&e),
            })?;
        let status = response.status();
        if status == StatusCode::ACCEPTED || status == StatusCode::OK {
            return Ok(());
        }
        if status == StatusCode::TEMPORARY_REDIRECT || status == StatusCode::FORBIDDEN {
            // The leader moved, or the master no longer holds our subscription.
            self.reconnect.send_replace(Some(session.stream_id.clone()));
        }
        let location = response
            .headers()
            .get(LOCATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = response.text().await.unwrap_or_default();
        let message = match location {
            Some(l) => format!("{} (Location: {l})", body.trim()),
            None => body.trim().to_owned(),
        };
        Err(MesosError::Call {
            call: name,
            status: Some(status.as_u16()),
            message,
        })
    }

    pub(crate) fn not_connected(&self) -> MesosError {
        let masters: Vec<&str> = self.settings.masters.iter().map(Url::as_str).collect();
        MesosError::NotConnected {
            masters: masters.join(", "),
            last: self.lock().last_error.clone(),
        }
    }

    fn roles(&self) -> Roles {
        Roles {
            roles: vec![self.settings.role.clone()],
        }
    }

    /// Asks for offers again (and clears decline filters).
    pub(crate) async fn revive(&self) -> Result<(), MesosError> {
        self.call(Call {
            kind: CallType::Revive,
            revive: Some(self.roles()),
            ..Call::default()
        })
        .await?;
        self.lock().suppressed = false;
        Ok(())
    }

    /// Suppresses offers when no server waits for one (and they are not suppressed yet).
    pub(crate) async fn suppress_if_idle(&self) {
        let idle = {
            let st = self.lock();
            st.pending.is_empty() && !st.suppressed && st.session.is_some()
        };
        if idle && let Err(e) = self.suppress().await {
            self.record_error(&e);
        }
    }

    async fn suppress(&self) -> Result<(), MesosError> {
        self.call(Call {
            kind: CallType::Suppress,
            suppress: Some(self.roles()),
            ..Call::default()
        })
        .await?;
        self.lock().suppressed = true;
        Ok(())
    }

    /// Asks for the state of `tasks` (task id, agent id); empty asks for all (implicit).
    pub(crate) async fn reconcile(
        &self,
        tasks: Vec<(String, Option<String>)>,
    ) -> Result<(), MesosError> {
        self.call(Call {
            kind: CallType::Reconcile,
            reconcile: Some(Reconcile {
                tasks: tasks
                    .into_iter()
                    .map(|(task, agent)| ReconcileTask {
                        task_id: Id::new(task),
                        agent_id: agent.map(Id::new),
                    })
                    .collect(),
            }),
            ..Call::default()
        })
        .await
    }

    /// Kills `task` on `agent`, with the configured grace period.
    pub(crate) async fn kill(&self, task: &str, agent: Option<&str>) -> Result<(), MesosError> {
        let grace = i64::try_from(self.settings.kill_grace.as_nanos()).unwrap_or(i64::MAX);
        self.call(Call {
            kind: CallType::Kill,
            kill: Some(Kill {
                task_id: Id::new(task),
                agent_id: agent.map(Id::new),
                kill_policy: Some(KillPolicy {
                    grace_period: Some(DurationInfo { nanoseconds: grace }),
                }),
            }),
            ..Call::default()
        })
        .await
    }

    fn filters(&self) -> Option<Filters> {
        Some(Filters {
            refuse_seconds: Some(self.settings.refuse_seconds),
        })
    }

    /// The `SUBSCRIBE` call: the saved framework id (if any), the capabilities, and the role
    /// suppressed when no server waits for an offer.
    pub(crate) fn subscribe_call(&self) -> Call {
        let (framework_id, idle) = {
            let st = self.lock();
            (st.framework_id.clone(), st.pending.is_empty())
        };
        let mut capabilities = vec![
            CapabilityType::MultiRole,
            CapabilityType::PartitionAware,
            CapabilityType::TaskKillingState,
        ];
        if self.gpu_capable {
            capabilities.push(CapabilityType::GpuResources);
        }
        let s = &self.settings;
        let labels = BTreeMap::from([
            ("managed-by".to_owned(), "gantry".to_owned()),
            (
                crate::labels::INSTANCE.to_owned(),
                self.instance().to_string(),
            ),
        ]);
        Call {
            framework_id: framework_id.clone().map(Id::new),
            kind: CallType::Subscribe,
            subscribe: Some(Subscribe {
                framework_info: FrameworkInfo {
                    user: s.user.clone(),
                    name: s.framework_name.clone(),
                    id: framework_id.map(Id::new),
                    failover_timeout: Some(s.failover_timeout.as_secs_f64()),
                    checkpoint: Some(true),
                    roles: vec![s.role.clone()],
                    hostname: s.hostname.clone(),
                    principal: s.credentials.as_ref().map(|c| c.principal.clone()),
                    webui_url: s.webui_url.clone(),
                    capabilities: capabilities
                        .into_iter()
                        .map(|kind| Capability { kind })
                        .collect(),
                    labels: Some(Labels::from_pairs(&labels)),
                },
                suppressed_roles: if idle {
                    vec![s.role.clone()]
                } else {
                    Vec::new()
                },
            }),
            ..Call::default()
        }
    }

    /// `SUBSCRIBE`, following redirects: the endpoint that answered `200` and its response.
    async fn subscribe(&self) -> Result<(Url, reqwest::Response), String> {
        let mut starts: Vec<Url> = Vec::new();
        if let Some(leader) = self.lock().leader.clone() {
            starts.push(leader);
        }
        for m in &self.settings.masters {
            if !starts.contains(m) {
                starts.push(m.clone());
            }
        }
        let body = self.subscribe_call();
        let mut errors = Vec::new();
        for start in starts {
            let mut url = start;
            for _ in 0..=MAX_REDIRECTS {
                let sent = tokio::time::timeout(
                    self.settings.call_timeout,
                    self.request(url.clone()).json(&body).send(),
                )
                .await;
                let response = match sent {
                    Err(_) => {
                        errors.push(format!(
                            "{url}: no answer within {:?}",
                            self.settings.call_timeout
                        ));
                        break;
                    }
                    Ok(Err(e)) => {
                        errors.push(format!("{url}: {}", chain(&e)));
                        break;
                    }
                    Ok(Ok(r)) => r,
                };
                let status = response.status();
                if status == StatusCode::OK {
                    return Ok((url, response));
                }
                if status == StatusCode::TEMPORARY_REDIRECT {
                    // `Location: //leader:5050/api/v1/scheduler`, without a scheme: resolved
                    // against the URL that answered, it keeps that URL's scheme.
                    let target = response
                        .headers()
                        .get(LOCATION)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|l| url.join(l).ok());
                    if let Some(next) = target {
                        self.lock().leader = Some(next.clone());
                        url = next;
                        continue;
                    }
                    errors.push(format!("{url}: 307 without a usable Location"));
                    break;
                }
                let body = response.text().await.unwrap_or_default();
                if status == StatusCode::FORBIDDEN && body.contains(REMOVED) {
                    self.forget_framework();
                }
                errors.push(format!("{url}: {status} {}", body.trim()));
                break;
            }
        }
        Err(errors.join("; "))
    }

    /// The master removed the framework (its failover timeout passed while gantry was away,
    /// or an operator tore it down): its tasks are gone. Gantry forgets the id, records the
    /// tasks as lost, and registers anew at the next subscription.
    fn forget_framework(&self) {
        let mut st = self.lock();
        let old = st.framework_id.take();
        st.stored.framework_id = None;
        st.stored.tasks.clear();
        for t in st.tasks.values_mut() {
            if t.is_live() {
                t.state = Some(TaskState::TaskLost);
                t.message = Some(format!(
                    "the master removed framework {} (its failover timeout passed)",
                    old.as_deref().unwrap_or("?")
                ));
            }
        }
        if let Err(e) = self.persist(&st) {
            st.last_error = Some(e.to_string());
        }
        drop(st);
        self.bump();
    }

    fn disconnected(&self, why: String) {
        let mut st = self.lock();
        st.session = None;
        st.synced = false;
        st.last_error = Some(why);
        drop(st);
        self.bump();
    }

    /// One subscription, from `SUBSCRIBE` to the end of its stream: `Ok` when it had
    /// subscribed (so that the backoff starts over), with why it ended.
    async fn session(&self) -> Result<String, String> {
        let (endpoint, mut response) = self.subscribe().await?;
        let stream_id = response
            .headers()
            .get(STREAM_ID)
            .and_then(|v| v.to_str().ok())
            .filter(|v| !v.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| format!("{endpoint}: the SUBSCRIBE answer has no {STREAM_ID}"))?;
        let content_type = response
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !content_type.starts_with(JSON) {
            return Err(format!(
                "{endpoint}: the event stream is {content_type:?}, not {JSON}"
            ));
        }
        let mut decoder = Decoder::new(MAX_RECORD);
        let mut watchdog = self.settings.call_timeout;
        let mut last_event = Instant::now();
        let mut subscribed = false;
        let mut settle_at: Option<Instant> = None;
        let mut reconcile_at = Instant::now() + self.settings.reconcile_interval;
        let mut reconnect = self.reconnect.subscribe();
        reconnect.mark_unchanged();
        let ended = |subscribed: bool, why: String| if subscribed { Ok(why) } else { Err(why) };
        loop {
            let deadline = last_event + watchdog;
            let far = Instant::now() + Duration::from_secs(86_400);
            tokio::select! {
                chunk = tokio::time::timeout_at(deadline, response.chunk()) => {
                    let bytes = match chunk {
                        Err(_) => return ended(subscribed, format!(
                            "no event from {endpoint} for {watchdog:?}; subscribing again"
                        )),
                        Ok(Err(e)) => {
                            return ended(subscribed, format!("the event stream broke: {}", chain(&e)));
                        }
                        Ok(Ok(None)) => {
                            return ended(subscribed, "the master closed the event stream".to_owned());
                        }
                        Ok(Ok(Some(bytes))) => bytes,
                    };
                    if let Err(e) = decoder.feed(&bytes) {
                        return ended(subscribed, e.to_string());
                    }
                    while let Some(record) = decoder.next_record() {
                        last_event = Instant::now();
                        let event: Event = match serde_json::from_slice(&record) {
                            Ok(e) => e,
                            Err(e) => {
                                return ended(subscribed, format!("an event is not valid JSON: {e}"));
                            }
                        };
                        if event.kind == EventType::Subscribed {
                            subscribed = true;
                            let heartbeat = event
                                .subscribed
                                .as_ref()
                                .and_then(|s| s.heartbeat_interval_seconds)
                                .filter(|s| s.is_finite() && *s > 0.0)
                                .map_or(DEFAULT_HEARTBEAT, Duration::from_secs_f64);
                            watchdog = heartbeat * self.settings.missed_heartbeats;
                            settle_at = Some(Instant::now() + SETTLE);
                        }
                        if let Err(why) = self.handle(event, &endpoint, &stream_id).await {
                            return ended(subscribed, why);
                        }
                    }
                }
                () = tokio::time::sleep_until(settle_at.unwrap_or(far)), if settle_at.is_some() => {
                    settle_at = None;
                    let mut st = self.lock();
                    st.synced = st.session.is_some();
                    st.awaiting.clear();
                    drop(st);
                    self.bump();
                }
                () = tokio::time::sleep_until(reconcile_at), if subscribed => {
                    reconcile_at = Instant::now() + self.settings.reconcile_interval;
                    self.periodic_reconcile().await;
                }
                changed = reconnect.changed() => {
                    if changed.is_err() {
                        return ended(subscribed, "the spawner is gone".to_owned());
                    }
                    if reconnect.borrow_and_update().as_deref() == Some(stream_id.as_str()) {
                        return ended(subscribed, format!("{endpoint} no longer holds the subscription"));
                    }
                }
            }
        }
    }

    fn record_error(&self, e: &MesosError) {
        self.lock().last_error = Some(e.to_string());
    }

    async fn handle(&self, event: Event, endpoint: &Url, stream_id: &str) -> Result<(), String> {
        match event.kind {
            EventType::Subscribed => {
                let Some(subscribed) = event.subscribed else {
                    return Err("SUBSCRIBED event without its body".to_owned());
                };
                self.subscribed(subscribed.framework_id.value, endpoint, stream_id)
                    .await
            }
            EventType::Offers => {
                let offers = event.offers.map(|o| o.offers).unwrap_or_default();
                self.offers(offers).await;
                Ok(())
            }
            EventType::Update => {
                if let Some(update) = event.update {
                    self.update(update.status).await;
                }
                Ok(())
            }
            EventType::Error => {
                let message = event.error.map(|e| e.message).unwrap_or_default();
                if message.contains(REMOVED) {
                    self.forget_framework();
                }
                Err(format!("the master sent ERROR: {message}"))
            }
            EventType::Rescind | EventType::Failure => {
                // Offers are never held past their event; a lost agent's tasks get UPDATEs.
                self.bump();
                Ok(())
            }
            _ => Ok(()),
        }
    }

    async fn subscribed(
        &self,
        framework_id: String,
        endpoint: &Url,
        stream_id: &str,
    ) -> Result<(), String> {
        let known: Vec<(String, Option<String>)> = {
            let mut st = self.lock();
            if st.stored.framework_id.as_deref() != Some(framework_id.as_str()) {
                st.stored.framework_id = Some(framework_id);
                // Saved before anything is launched: the tasks of an id nobody saved would be
                // lost to the next gantry.
                if let Err(e) = self.persist(&st) {
                    return Err(e.to_string());
                }
            }
            st.framework_id = st.stored.framework_id.clone();
            st.session = Some(Session {
                endpoint: endpoint.clone(),
                stream_id: stream_id.to_owned(),
            });
            st.leader = Some(endpoint.clone());
            st.subscriptions += 1;
            st.last_error = None;
            st.awaiting = st.tasks.keys().cloned().collect();
            st.synced = st.awaiting.is_empty();
            st.suppressed = st.pending.is_empty();
            st.tasks
                .iter()
                .map(|(id, t)| (id.clone(), t.agent_id.clone()))
                .collect()
        };
        self.bump();
        if !known.is_empty()
            && let Err(e) = self.reconcile(known).await
        {
            self.record_error(&e);
        }
        if let Err(e) = self.reconcile(Vec::new()).await {
            self.record_error(&e);
        }
        let waiting = !self.lock().pending.is_empty();
        let result = if waiting {
            self.revive().await
        } else {
            self.suppress().await
        };
        if let Err(e) = result {
            self.record_error(&e);
        }
        Ok(())
    }

    async fn periodic_reconcile(&self) {
        let explicit: Vec<(String, Option<String>)> = self
            .lock()
            .tasks
            .iter()
            .filter(|(_, t)| t.is_live() && t.state != Some(TaskState::TaskRunning))
            .map(|(id, t)| (id.clone(), t.agent_id.clone()))
            .collect();
        if !explicit.is_empty()
            && let Err(e) = self.reconcile(explicit).await
        {
            self.record_error(&e);
        }
        if let Err(e) = self.reconcile(Vec::new()).await {
            self.record_error(&e);
        }
    }

    async fn decline(&self, offer_ids: Vec<Id>) {
        if offer_ids.is_empty() {
            return;
        }
        let call = Call {
            kind: CallType::Decline,
            decline: Some(Decline {
                offer_ids,
                filters: self.filters(),
            }),
            ..Call::default()
        };
        if let Err(e) = self.call(call).await {
            self.record_error(&e);
        }
    }

    async fn offers(&self, offers: Vec<Offer>) {
        let pending: Vec<Pending> = {
            let mut st = self.lock();
            st.offer_events += 1;
            st.pending_in_order()
                .into_iter()
                .filter(|p| p.failure.is_none())
                .cloned()
                .collect()
        };
        if pending.is_empty() {
            self.decline(offers.into_iter().map(|o| o.id).collect())
                .await;
            let suppressed = self.lock().suppressed;
            if !suppressed && let Err(e) = self.suppress().await {
                self.record_error(&e);
            }
            return;
        }
        let demands: Vec<Demand> = pending.iter().map(|p| p.demand.clone()).collect();
        let plan = offers::plan(&offers, &demands);
        {
            let mut st = self.lock();
            for (id, mismatches) in plan.unplaced {
                if let Some(p) = st.pending.get_mut(&id) {
                    for m in mismatches {
                        p.mismatches.insert(m.agent_id.clone(), m);
                    }
                }
            }
        }
        self.bump();
        let by_id: HashMap<&str, &Pending> =
            pending.iter().map(|p| (p.task_id.as_str(), p)).collect();
        let mut declines = plan.declines;
        for accepted in plan.accepts {
            let mut task_infos = Vec::new();
            let mut launched: Vec<(Pending, StoredTask)> = Vec::new();
            for placement in &accepted.placements {
                let Some(p) = by_id.get(placement.demand.as_str()) else {
                    continue;
                };
                match task_info(
                    &p.task_id,
                    &p.request,
                    placement,
                    &self.settings,
                    &self.spawn,
                ) {
                    Ok((info, url)) => {
                        task_infos.push(info);
                        launched.push((
                            (*p).clone(),
                            StoredTask {
                                agent_id: placement.agent_id.value.clone(),
                                hostname: placement.hostname.clone(),
                                url,
                            },
                        ));
                    }
                    Err(e) => self.fail_pending(&p.task_id, e.to_string()),
                }
            }
            // Record the placements (durably) and move the servers from pending to launched
            // before the ACCEPT, so that its updates find them. A server given up meanwhile
            // (stopped, or its start dropped) is left out rather than launched as an orphan.
            {
                let mut st = self.lock();
                launched.retain(|(p, _)| st.pending.contains_key(&p.task_id));
                task_infos.retain(|t| launched.iter().any(|(p, _)| p.task_id == t.task_id.value));
                if launched.is_empty() {
                    drop(st);
                    declines.push(accepted.offer_id);
                    continue;
                }
                for (p, stored) in &launched {
                    st.stored.tasks.insert(p.task_id.clone(), stored.clone());
                }
                if let Err(e) = self.persist(&st) {
                    for (p, _) in &launched {
                        st.stored.tasks.remove(&p.task_id);
                        if let Some(p) = st.pending.get_mut(&p.task_id) {
                            p.failure = Some(e.to_string());
                        }
                    }
                    drop(st);
                    self.bump();
                    declines.push(accepted.offer_id);
                    continue;
                }
                for (p, stored) in &launched {
                    st.pending.remove(&p.task_id);
                    let key = p.request.key();
                    st.steps.insert(
                        key.clone(),
                        MesosStep::Launching {
                            agent_id: stored.agent_id.clone(),
                            hostname: stored.hostname.clone(),
                        },
                    );
                    st.tasks.insert(
                        p.task_id.clone(),
                        Task::new(
                            key,
                            p.request.profile.id.clone(),
                            Some(stored.agent_id.clone()),
                            Some(stored.url.clone()),
                        ),
                    );
                }
            }
            self.bump();
            let call = Call {
                kind: CallType::Accept,
                accept: Some(Accept {
                    offer_ids: vec![accepted.offer_id],
                    operations: vec![Operation {
                        kind: OperationType::Launch,
                        launch: Some(Launch { task_infos }),
                    }],
                    filters: self.filters(),
                }),
                ..Call::default()
            };
            if let Err(e) = self.call(call).await {
                // Not launched: back to waiting, for the next offer.
                self.record_error(&e);
                let mut st = self.lock();
                for (p, _) in launched {
                    st.tasks.remove(&p.task_id);
                    st.stored.tasks.remove(&p.task_id);
                    st.steps.insert(p.request.key(), MesosStep::WaitingForOffer);
                    st.pending.insert(p.task_id.clone(), p);
                }
                if let Err(e) = self.persist(&st) {
                    st.last_error = Some(e.to_string());
                }
                drop(st);
                self.bump();
            }
        }
        self.decline(declines).await;
        let (idle, suppressed) = {
            let st = self.lock();
            (st.pending.is_empty(), st.suppressed)
        };
        if idle
            && !suppressed
            && let Err(e) = self.suppress().await
        {
            self.record_error(&e);
        }
    }

    fn fail_pending(&self, task_id: &str, why: String) {
        if let Some(p) = self.lock().pending.get_mut(task_id) {
            p.failure = Some(why);
        }
        self.bump();
    }

    async fn update(&self, status: TaskStatus) {
        let id = status.task_id.value.clone();
        {
            let mut guard = self.lock();
            let st = &mut *guard;
            if !st.tasks.contains_key(&id)
                && let Some((key, profile)) = parse_task_id(self.instance(), &id)
            {
                // A task of ours that gantry has no record of (its records were lost).
                let url = st.stored.tasks.get(&id).map(|t| t.url.clone());
                st.tasks
                    .insert(id.clone(), Task::new(key, profile, None, url));
            }
            if let Some(task) = st.tasks.get_mut(&id) {
                task.state = Some(status.state);
                task.reason = status.reason.clone();
                task.message = status.message.clone();
                task.updates += 1;
                if let Some(agent) = &status.agent_id {
                    task.agent_id = Some(agent.value.clone());
                }
                if task.url.is_none()
                    && let Some(ip) = status.container_ip()
                {
                    task.url = Some(url_for(ip, self.settings.port));
                }
                if status.state == TaskState::TaskRunning
                    && let Some(url) = &task.url
                {
                    st.steps
                        .insert(task.key.clone(), MesosStep::Running { url: url.clone() });
                }
            }
            if st.awaiting.remove(&id) && st.awaiting.is_empty() && st.session.is_some() {
                st.synced = true;
            }
        }
        self.bump();
        if let (Some(uuid), Some(agent_id)) = (status.uuid, status.agent_id) {
            let call = Call {
                kind: CallType::Acknowledge,
                acknowledge: Some(Acknowledge {
                    agent_id,
                    task_id: status.task_id,
                    uuid,
                }),
                ..Call::default()
            };
            if let Err(e) = self.call(call).await {
                // The master resends unacknowledged updates.
                self.record_error(&e);
            }
        }
    }
}

/// The driver: subscribes, and subscribes again, for as long as the spawner lives.
pub(crate) async fn run(shared: Arc<Shared>) {
    let mut backoff = MIN_BACKOFF;
    loop {
        match shared.session().await {
            Ok(why) => {
                shared.disconnected(why);
                backoff = MIN_BACKOFF;
            }
            Err(why) => shared.disconnected(why),
        }
        // A little jitter, so that many frameworks do not storm a new leader together.
        let jitter = Duration::from_millis(u64::from(super::random_u32() % 100));
        tokio::time::sleep(backoff + jitter).await;
        backoff = (backoff * 2).min(shared.settings.max_backoff.max(MIN_BACKOFF));
    }
}
