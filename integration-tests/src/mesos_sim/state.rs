//! The simulated master's state and rules: frameworks and their subscriptions, agents,
//! offers, tasks and their status-update streams. Everything here runs under one lock and
//! never waits; the HTTP layer (`http.rs`) and the task runners (`runner.rs`) call in.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};
use tokio::sync::mpsc;

use super::wire::{self, CallType, CapabilityType};
use super::{CallRecord, LaunchMode, OfferRecord, TaskView};

/// A failed call: the HTTP status and the body, as the real master words it.
pub(crate) type Refusal = (u16, String);

fn refuse(status: u16, message: impl Into<String>) -> Refusal {
    (status, message.into())
}

/// Random bytes from the OS.
pub(crate) fn random_bytes<const N: usize>() -> [u8; N] {
    let mut b = [0u8; N];
    // Tests on a machine without an OS random source cannot run anyway.
    getrandom::fill(&mut b).unwrap_or_default();
    b
}

/// A random UUID in its text form.
pub(crate) fn uuid() -> String {
    let b = random_bytes::<16>();
    let hex: String = b.iter().map(|x| format!("{x:02x}")).collect();
    format!(
        "{}-{}-{}-{}-{}",
        &hex[..8],
        &hex[8..12],
        &hex[12..16],
        &hex[16..20],
        &hex[20..]
    )
}

/// Standard base64 with padding, as protobuf `bytes` fields appear in JSON.
pub(crate) fn base64(bytes: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(A[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Resources in thousandths (cpus, MB, GPUs) and a set of ports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Res {
    pub(crate) cpus: i64,
    pub(crate) mem: i64,
    pub(crate) disk: i64,
    pub(crate) gpus: i64,
    pub(crate) ports: BTreeSet<u16>,
}

fn milli(v: f64) -> i64 {
    // Resource values are small and checked finite.
    (v * 1000.0).round() as i64
}

impl Res {
    /// Parses an agent's `--resources` flag: `cpus:4;mem:4096;disk:10000;gpus:2;ports:[31000-31099]`.
    pub(crate) fn parse(flag: &str) -> Result<Self, String> {
        let mut r = Res::default();
        for part in flag.split(';').map(str::trim).filter(|p| !p.is_empty()) {
            let (name, value) = part
                .split_once(':')
                .ok_or_else(|| format!("resource {part:?} is not name:value"))?;
            if name == "ports" {
                let inner = value
                    .strip_prefix('[')
                    .and_then(|v| v.strip_suffix(']'))
                    .ok_or_else(|| format!("ports {value:?} is not [a-b,…]"))?;
                for range in inner.split(',') {
                    let (a, b) = range
                        .split_once('-')
                        .ok_or_else(|| format!("port range {range:?} is not a-b"))?;
                    let (a, b): (u16, u16) = (
                        a.trim().parse().map_err(|e| format!("{range:?}: {e}"))?,
                        b.trim().parse().map_err(|e| format!("{range:?}: {e}"))?,
                    );
                    r.ports.extend(a..=b);
                }
                continue;
            }
            let v: f64 = value
                .parse()
                .map_err(|e| format!("resource {part:?}: {e}"))?;
            let slot = match name {
                "cpus" => &mut r.cpus,
                "mem" => &mut r.mem,
                "disk" => &mut r.disk,
                "gpus" => &mut r.gpus,
                other => return Err(format!("unknown resource {other:?}")),
            };
            *slot = milli(v);
        }
        Ok(r)
    }

    /// The resources a task asks for, with the master's checks.
    fn from_task(resources: &[wire::Resource]) -> Result<Self, String> {
        let mut r = Res::default();
        for res in resources {
            match (res.name.as_str(), res.kind.as_str()) {
                ("ports", "RANGES") => {
                    let ranges = res
                        .ranges
                        .as_ref()
                        .ok_or("a RANGES resource without 'ranges'")?;
                    for range in &ranges.range {
                        if range.begin > range.end || range.end > u64::from(u16::MAX) {
                            return Err(format!(
                                "invalid port range [{}-{}]",
                                range.begin, range.end
                            ));
                        }
                        for p in range.begin..=range.end {
                            // In range: checked above.
                            let p = u16::try_from(p).unwrap_or_default();
                            if !r.ports.insert(p) {
                                return Err(format!("port {p} is given twice"));
                            }
                        }
                    }
                }
                (name @ ("cpus" | "mem" | "disk" | "gpus"), "SCALAR") => {
                    let v = res
                        .scalar
                        .ok_or_else(|| format!("SCALAR resource {name} without 'scalar'"))?
                        .value;
                    if !v.is_finite() || v < 0.0 {
                        return Err(format!("resource {name} = {v} is not a valid amount"));
                    }
                    if name == "gpus" && v.fract() != 0.0 {
                        return Err(format!(
                            "The 'gpus' resource must be an unsigned integer, got {v}"
                        ));
                    }
                    let slot = match name {
                        "cpus" => &mut r.cpus,
                        "mem" => &mut r.mem,
                        "disk" => &mut r.disk,
                        _ => &mut r.gpus,
                    };
                    *slot += milli(v);
                }
                (name, kind) => {
                    return Err(format!(
                        "resource {name} of type {kind} is not offered by this simulator"
                    ));
                }
            }
        }
        Ok(r)
    }

    pub(crate) fn contains(&self, other: &Res) -> bool {
        self.cpus >= other.cpus
            && self.mem >= other.mem
            && self.disk >= other.disk
            && self.gpus >= other.gpus
            && other.ports.is_subset(&self.ports)
    }

    pub(crate) fn minus(&self, other: &Res) -> Res {
        Res {
            cpus: self.cpus - other.cpus,
            mem: self.mem - other.mem,
            disk: self.disk - other.disk,
            gpus: self.gpus - other.gpus,
            ports: self.ports.difference(&other.ports).copied().collect(),
        }
    }

    /// Whether there is enough to be worth offering (the master's minimum allocatable
    /// resources: 0.01 CPUs or 32 MB).
    fn allocatable(&self) -> bool {
        self.cpus >= 10 || self.mem >= 32_000
    }

    fn json(&self, role: &str) -> Vec<Value> {
        let alloc = json!({"role": role});
        let mut out = Vec::new();
        for (name, v) in [
            ("cpus", self.cpus),
            ("mem", self.mem),
            ("disk", self.disk),
            ("gpus", self.gpus),
        ] {
            if v > 0 {
                out.push(
                    json!({"name": name, "type": "SCALAR", "scalar": {"value": v as f64 / 1000.0},
                    "role": "*", "allocation_info": alloc}),
                );
            }
        }
        let mut ranges: Vec<Value> = Vec::new();
        let mut iter = self.ports.iter().copied();
        if let Some(first) = iter.next() {
            let (mut begin, mut end) = (first, first);
            for p in iter {
                if p == end + 1 {
                    end = p;
                } else {
                    ranges.push(json!({"begin": begin, "end": end}));
                    (begin, end) = (p, p);
                }
            }
            ranges.push(json!({"begin": begin, "end": end}));
            out.push(
                json!({"name": "ports", "type": "RANGES", "ranges": {"range": ranges},
                "role": "*", "allocation_info": alloc}),
            );
        }
        out
    }
}

/// Parses an agent's `--attributes` flag (`gpu:true;gpu_mem:80;rack:[1-2]`) as Mesos types
/// it: numbers are SCALAR, `[a-b]` RANGES, `{a,b}` SET, anything else TEXT.
pub(crate) fn parse_attributes(flag: &str) -> Result<Vec<Value>, String> {
    let mut out = Vec::new();
    for part in flag.split(';').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once(':')
            .ok_or_else(|| format!("attribute {part:?} is not name:value"))?;
        let attribute = if let Ok(v) = value.parse::<f64>() {
            json!({"name": name, "type": "SCALAR", "scalar": {"value": v}})
        } else if let Some(inner) = value.strip_prefix('[').and_then(|v| v.strip_suffix(']')) {
            let mut ranges = Vec::new();
            for r in inner.split(',') {
                let (a, b) = r
                    .split_once('-')
                    .ok_or_else(|| format!("{r:?} is not a-b"))?;
                let a: u64 = a.parse().map_err(|e| format!("{r:?}: {e}"))?;
                let b: u64 = b.parse().map_err(|e| format!("{r:?}: {e}"))?;
                ranges.push(json!({"begin": a, "end": b}));
            }
            json!({"name": name, "type": "RANGES", "ranges": {"range": ranges}})
        } else if let Some(inner) = value.strip_prefix('{').and_then(|v| v.strip_suffix('}')) {
            let items: Vec<&str> = inner.split(',').collect();
            json!({"name": name, "type": "SET", "set": {"item": items}})
        } else {
            json!({"name": name, "type": "TEXT", "text": {"value": value}})
        };
        out.push(attribute);
    }
    Ok(out)
}

/// One simulated agent.
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) id: String,
    pub(crate) hostname: String,
    pub(crate) total: Res,
    pub(crate) attributes: Vec<Value>,
}

/// The open event stream of a subscribed framework.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) id: String,
    tx: mpsc::UnboundedSender<Vec<u8>>,
}

/// One framework the master knows.
#[derive(Debug)]
pub(crate) struct Framework {
    pub(crate) id: String,
    pub(crate) info: wire::FrameworkInfo,
    pub(crate) stream: Option<Stream>,
    pub(crate) disconnected_since: Option<Instant>,
    pub(crate) suppressed: BTreeSet<String>,
    /// Decline filters: agent id → until when it is not offered again.
    pub(crate) filters: HashMap<String, Instant>,
    pub(crate) subscribes: u32,
    pub(crate) removed: bool,
}

impl Framework {
    fn has(&self, capability: CapabilityType) -> bool {
        self.info.capabilities.iter().any(|c| c.kind == capability)
    }

    fn roles(&self) -> Vec<String> {
        if self.has(CapabilityType::MultiRole) {
            self.info.roles.clone()
        } else {
            vec![self.info.role.clone().unwrap_or_else(|| "*".to_owned())]
        }
    }

    fn failover_timeout(&self) -> Duration {
        let secs = self.info.failover_timeout.unwrap_or(0.0);
        if secs.is_finite() && secs > 0.0 {
            Duration::from_secs_f64(secs.min(1e9))
        } else {
            Duration::ZERO
        }
    }
}

/// An outstanding offer.
#[derive(Debug)]
pub(crate) struct SimOffer {
    pub(crate) framework: String,
    pub(crate) agent: String,
    pub(crate) res: Res,
    pub(crate) made: Instant,
}

/// A task and its status-update stream (the agent's status update manager: only the head is
/// in flight, and it is resent until acknowledged).
#[derive(Debug)]
pub(crate) struct SimTask {
    pub(crate) id: String,
    pub(crate) framework: String,
    pub(crate) agent: String,
    pub(crate) res: Res,
    pub(crate) state: String,
    pub(crate) info: wire::TaskInfo,
    pub(crate) latest: Value,
    pub(crate) queue: VecDeque<Value>,
    pub(crate) sent_at: Option<Instant>,
    pub(crate) acknowledged: u32,
    pub(crate) container_ip: Option<String>,
    pub(crate) killing: bool,
    /// The simulated notebook's listener, or the container's waiter.
    pub(crate) runner: Option<tokio::task::JoinHandle<()>>,
    /// The Docker container, in real-container mode.
    pub(crate) container: Option<String>,
}

/// Whether `state` ends a task.
pub(crate) fn is_terminal(state: &str) -> bool {
    matches!(
        state,
        "TASK_FINISHED"
            | "TASK_FAILED"
            | "TASK_KILLED"
            | "TASK_ERROR"
            | "TASK_LOST"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
            | "TASK_UNKNOWN"
    )
}

/// Settings of one simulator.
#[derive(Clone, Debug)]
pub(crate) struct SimConfig {
    pub(crate) heartbeat: Duration,
    pub(crate) offer_interval: Duration,
    pub(crate) update_retry: Duration,
    pub(crate) offer_timeout: Option<Duration>,
    pub(crate) start_delay: Duration,
    pub(crate) launch: LaunchMode,
    pub(crate) credentials: Option<(String, String)>,
}

/// Everything under the lock.
#[derive(Debug, Default)]
pub(crate) struct SimState {
    pub(crate) masters: Vec<SocketAddr>,
    pub(crate) leader: Option<usize>,
    pub(crate) paused: bool,
    pub(crate) heartbeats_paused: bool,
    pub(crate) frameworks: BTreeMap<String, Framework>,
    pub(crate) agents: Vec<Agent>,
    pub(crate) offers: BTreeMap<String, SimOffer>,
    pub(crate) tasks: BTreeMap<String, SimTask>,
    pub(crate) calls: Vec<CallRecord>,
    pub(crate) offer_log: Vec<OfferRecord>,
    pub(crate) rotation: usize,
    next: u64,
    master_id: String,
}

/// The simulator: its settings, its state, and the Docker client of real-container mode.
#[derive(Debug)]
pub(crate) struct Sim {
    pub(crate) id: String,
    pub(crate) config: SimConfig,
    state: Mutex<SimState>,
    pub(crate) docker: Option<bollard::Docker>,
}

fn now_seconds() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

impl SimState {
    fn next_id(&mut self, prefix: &str) -> String {
        self.next += 1;
        format!("{}-{prefix}{}", self.master_id, self.next)
    }

    /// Sends `event` on `framework`'s stream, if it has one.
    pub(crate) fn send(&mut self, framework: &str, event: &Value) {
        let Some(fw) = self.frameworks.get_mut(framework) else {
            return;
        };
        let Some(stream) = &fw.stream else {
            return;
        };
        let data = event.to_string().into_bytes();
        let mut record = format!("{}\n", data.len()).into_bytes();
        record.extend_from_slice(&data);
        if stream.tx.send(record).is_err() {
            fw.stream = None;
            fw.disconnected_since = Some(Instant::now());
        }
    }

    fn master_info(&self, master: usize) -> Value {
        let port = self.masters.get(master).map_or(0, SocketAddr::port);
        json!({"id": self.master_id, "ip": 16_777_343u32, "port": port, "hostname": "127.0.0.1",
               "address": {"hostname": "127.0.0.1", "ip": "127.0.0.1", "port": port}})
    }

    fn agent(&self, id: &str) -> Option<&Agent> {
        self.agents.iter().find(|a| a.id == id)
    }

    /// Queues a status update of `task`: reliable ones (with a uuid) go through the agent's
    /// stream, resent until acknowledged; master-generated ones are sent once.
    pub(crate) fn update(
        &mut self,
        task_id: &str,
        state: &str,
        source: &str,
        reason: Option<&str>,
        message: Option<&str>,
        reliable: bool,
    ) {
        let Some(task) = self.tasks.get(task_id) else {
            return;
        };
        let framework = task.framework.clone();
        let partition_aware = self
            .frameworks
            .get(&framework)
            .is_some_and(|f| f.has(CapabilityType::PartitionAware));
        let killing_state = self
            .frameworks
            .get(&framework)
            .is_some_and(|f| f.has(CapabilityType::TaskKillingState));
        if state == "TASK_KILLING" && !killing_state {
            return;
        }
        let state = match state {
            "TASK_UNREACHABLE"
            | "TASK_DROPPED"
            | "TASK_GONE"
            | "TASK_GONE_BY_OPERATOR"
            | "TASK_UNKNOWN"
                if !partition_aware =>
            {
                "TASK_LOST"
            }
            s => s,
        };
        let Some(task) = self.tasks.get_mut(task_id) else {
            return;
        };
        let mut status = json!({
            "task_id": {"value": task.id},
            "state": state,
            "source": source,
            "agent_id": {"value": task.agent},
            "executor_id": {"value": task.id},
            "timestamp": now_seconds(),
        });
        if let Some(r) = reason {
            status["reason"] = json!(r);
        }
        if let Some(m) = message {
            status["message"] = json!(m);
        }
        if let Some(ip) = &task.container_ip {
            status["container_status"] = json!({
                "container_id": {"value": format!("c-{}", task.id)},
                "network_infos": [{"ip_addresses": [{"protocol": "IPv4", "ip_address": ip}]}]
            });
        }
        task.state = state.to_owned();
        task.latest = status.clone();
        if reliable {
            status["uuid"] = json!(base64(&random_bytes::<16>()));
            task.queue.push_back(status);
            if task.queue.len() == 1 {
                let head = task.queue.front().cloned();
                task.sent_at = Some(Instant::now());
                if let Some(head) = head {
                    self.send(
                        &framework,
                        &json!({"type": "UPDATE", "update": {"status": head}}),
                    );
                }
            }
        } else {
            self.send(
                &framework,
                &json!({"type": "UPDATE", "update": {"status": status}}),
            );
        }
    }

    /// Resends every unacknowledged head update older than `retry`.
    pub(crate) fn retry_updates(&mut self, retry: Duration) {
        let due: Vec<(String, Value)> = self
            .tasks
            .values_mut()
            .filter(|t| t.sent_at.is_none_or(|at| at.elapsed() >= retry))
            .filter_map(|t| {
                let head = t.queue.front()?.clone();
                t.sent_at = Some(Instant::now());
                Some((t.framework.clone(), head))
            })
            .collect();
        for (framework, head) in due {
            self.send(
                &framework,
                &json!({"type": "UPDATE", "update": {"status": head}}),
            );
        }
    }

    /// The framework's subscription ended: it is disconnected, its offers are rescinded (it
    /// cannot hear of it), and its failover timeout starts.
    pub(crate) fn disconnect(&mut self, framework: &str) {
        if let Some(fw) = self.frameworks.get_mut(framework) {
            fw.stream = None;
            fw.disconnected_since = Some(Instant::now());
        }
        self.offers.retain(|_, o| o.framework != framework);
    }

    /// Ends every subscription (a leader change): each framework must subscribe again.
    pub(crate) fn drop_all_streams(&mut self) {
        let ids: Vec<String> = self.frameworks.keys().cloned().collect();
        for id in ids {
            if self.frameworks[&id].stream.is_some() {
                self.disconnect(&id);
            }
        }
    }

    fn used_on(&self, agent: &str) -> Res {
        let mut used = Res::default();
        for t in self.tasks.values() {
            if t.agent == agent && !is_terminal(&t.state) {
                used.cpus += t.res.cpus;
                used.mem += t.res.mem;
                used.disk += t.res.disk;
                used.gpus += t.res.gpus;
                used.ports.extend(&t.res.ports);
            }
        }
        for o in self.offers.values() {
            if o.agent == agent {
                used.cpus += o.res.cpus;
                used.mem += o.res.mem;
                used.disk += o.res.disk;
                used.gpus += o.res.gpus;
                used.ports.extend(&o.res.ports);
            }
        }
        used
    }

    /// One allocation round: each agent's unused resources go, as one offer, to one eligible
    /// framework, in turn. Eligible: subscribed, with a role not suppressed, no decline filter
    /// for the agent, and `GPU_RESOURCES` if the agent has GPUs.
    pub(crate) fn allocate(&mut self) {
        if self.paused || self.leader.is_none() {
            return;
        }
        let now = Instant::now();
        let mut batches: BTreeMap<String, Vec<Value>> = BTreeMap::new();
        for i in 0..self.agents.len() {
            let agent_id = self.agents[i].id.clone();
            if self.offers.values().any(|o| o.agent == agent_id) {
                continue;
            }
            let free = self.agents[i].total.minus(&self.used_on(&agent_id));
            if !free.allocatable() {
                continue;
            }
            let has_gpus = self.agents[i].total.gpus > 0;
            let eligible: Vec<(String, String)> = self
                .frameworks
                .values_mut()
                .filter(|f| f.stream.is_some() && !f.removed)
                .filter(|f| !has_gpus || f.has(CapabilityType::GpuResources))
                .filter_map(|f| {
                    f.filters.retain(|_, until| *until > now);
                    if f.filters.contains_key(&agent_id) {
                        return None;
                    }
                    let role = f.roles().into_iter().find(|r| !f.suppressed.contains(r))?;
                    Some((f.id.clone(), role))
                })
                .collect();
            if eligible.is_empty() {
                continue;
            }
            let (framework, role) = eligible[(self.rotation + i) % eligible.len()].clone();
            self.rotation += 1;
            let offer_id = self.next_id("O");
            let agent = &self.agents[i];
            let offer = json!({
                "id": {"value": offer_id},
                "framework_id": {"value": framework},
                "agent_id": {"value": agent.id},
                "hostname": agent.hostname,
                "url": {"scheme": "http", "address": {"hostname": agent.hostname, "ip": agent.hostname, "port": 5051}, "path": "/slave(1)"},
                "allocation_info": {"role": role},
                "resources": free.json(&role),
                "attributes": agent.attributes,
                "executor_ids": [],
            });
            self.offer_log.push(OfferRecord {
                framework: framework.clone(),
                agent: agent.hostname.clone(),
            });
            self.offers.insert(
                offer_id,
                SimOffer {
                    framework: framework.clone(),
                    agent: agent_id,
                    res: free,
                    made: now,
                },
            );
            batches.entry(framework).or_default().push(offer);
        }
        for (framework, offers) in batches {
            self.send(
                &framework,
                &json!({"type": "OFFERS", "offers": {"offers": offers}}),
            );
        }
    }

    /// Rescinds offers older than `timeout` (the master's `--offer_timeout`), or all.
    pub(crate) fn rescind(&mut self, timeout: Option<Duration>) {
        let old: Vec<String> = self
            .offers
            .iter()
            .filter(|(_, o)| timeout.is_none_or(|t| o.made.elapsed() >= t))
            .map(|(id, _)| id.clone())
            .collect();
        for id in old {
            if let Some(o) = self.offers.remove(&id) {
                self.send(
                    &o.framework,
                    &json!({"type": "RESCIND", "rescind": {"offer_id": {"value": id}}}),
                );
            }
        }
    }

    /// Frameworks disconnected for longer than their failover timeout are removed and their
    /// tasks killed; returns the tasks to stop.
    pub(crate) fn expire_frameworks(&mut self) -> Vec<String> {
        let expired: Vec<String> = self
            .frameworks
            .values()
            .filter(|f| !f.removed)
            .filter(|f| {
                f.disconnected_since
                    .is_some_and(|at| at.elapsed() >= f.failover_timeout())
            })
            .map(|f| f.id.clone())
            .collect();
        let mut stop = Vec::new();
        for id in expired {
            stop.extend(self.remove_framework(&id));
        }
        stop
    }

    fn remove_framework(&mut self, id: &str) -> Vec<String> {
        if let Some(fw) = self.frameworks.get_mut(id) {
            fw.removed = true;
            fw.stream = None;
        }
        self.offers.retain(|_, o| o.framework != id);
        let mut stop = Vec::new();
        for t in self.tasks.values_mut() {
            if t.framework == id && !is_terminal(&t.state) {
                t.state = "TASK_KILLED".to_owned();
                t.queue.clear();
                stop.push(t.id.clone());
            }
        }
        stop
    }

    /// Every task as the tests see it.
    pub(crate) fn task_views(&self) -> Vec<TaskView> {
        self.tasks
            .values()
            .map(|t| TaskView {
                task_id: t.id.clone(),
                framework_id: t.framework.clone(),
                agent: self
                    .agent(&t.agent)
                    .map(|a| a.hostname.clone())
                    .unwrap_or_default(),
                state: t.state.clone(),
                gpus: u32::try_from(t.res.gpus / 1000).unwrap_or_default(),
                ports: t.res.ports.iter().copied().collect(),
                containerizer: t
                    .info
                    .container
                    .as_ref()
                    .map(|c| c.kind.clone())
                    .unwrap_or_default(),
                labels: t
                    .info
                    .labels
                    .as_ref()
                    .map(|l| {
                        l.labels
                            .iter()
                            .map(|l| (l.key.clone(), l.value.clone().unwrap_or_default()))
                            .collect()
                    })
                    .unwrap_or_default(),
                unacknowledged: t.queue.len(),
                acknowledged: t.acknowledged,
                container: t.container.clone(),
            })
            .collect()
    }
}

/// What a call asks of the runners once the lock is released.
#[derive(Debug, Default)]
pub(crate) struct Effects {
    pub(crate) launch: Vec<String>,
    pub(crate) kill: Vec<(String, Duration)>,
    pub(crate) stop: Vec<String>,
}

impl Sim {
    pub(crate) fn new(
        config: SimConfig,
        agents: Vec<Agent>,
        docker: Option<bollard::Docker>,
    ) -> Self {
        let id = uuid();
        let state = SimState {
            agents,
            master_id: id[..8].to_owned(),
            ..SimState::default()
        };
        Self {
            id,
            config,
            state: Mutex::new(state),
            docker,
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, SimState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `SUBSCRIBE`: registers or re-registers the framework and opens its stream.
    pub(crate) fn subscribe(
        &self,
        master: usize,
        call: wire::Call,
    ) -> Result<(String, String, mpsc::UnboundedReceiver<Vec<u8>>), Refusal> {
        let subscribe = call.subscribe.ok_or_else(|| {
            refuse(
                400,
                "Failed to validate scheduler::Call: Expecting 'subscribe' to be present",
            )
        })?;
        let info = subscribe.framework_info;
        let invalid = |m: &str| refuse(400, format!("Failed to validate scheduler::Call: {m}"));
        if info.user.is_empty() {
            return Err(invalid("'user' must be set in FrameworkInfo"));
        }
        if info.name.is_empty() {
            return Err(invalid("'name' must be set in FrameworkInfo"));
        }
        match (&call.framework_id, &info.id) {
            (Some(a), Some(b)) if a != b => {
                return Err(invalid(
                    "'framework_id' differs from 'subscribe.framework_info.id'",
                ));
            }
            (None, Some(_)) | (Some(_), None) => {
                return Err(invalid(
                    "'framework_id' and 'subscribe.framework_info.id' must be set together",
                ));
            }
            _ => {}
        }
        let multi_role = info
            .capabilities
            .iter()
            .any(|c| c.kind == CapabilityType::MultiRole);
        if multi_role && info.role.is_some() {
            return Err(invalid(
                "'FrameworkInfo.role' must not be set with MULTI_ROLE",
            ));
        }
        if !multi_role && !info.roles.is_empty() {
            return Err(invalid(
                "'FrameworkInfo.roles' needs the MULTI_ROLE capability",
            ));
        }
        let mut st = self.lock();
        let id = match &info.id {
            Some(id) => {
                if st.frameworks.get(&id.value).is_some_and(|f| f.removed) {
                    return Err(refuse(403, "Framework has been removed"));
                }
                id.value.clone()
            }
            None => st.next_id("F"),
        };
        // A newer subscription replaces the old one, whose scheduler hears it failed over.
        let had_stream = st.frameworks.get(&id).is_some_and(|f| f.stream.is_some());
        if had_stream {
            st.send(
                &id,
                &json!({"type": "ERROR", "error": {"message": "Framework failed over"}}),
            );
            st.disconnect(&id);
        }
        let (tx, rx) = mpsc::unbounded_channel();
        let stream_id = uuid();
        let fw = st
            .frameworks
            .entry(id.clone())
            .or_insert_with(|| Framework {
                id: id.clone(),
                info: info.clone(),
                stream: None,
                disconnected_since: None,
                suppressed: BTreeSet::new(),
                filters: HashMap::new(),
                subscribes: 0,
                removed: false,
            });
        fw.info = info;
        fw.info.id = Some(wire::Id { value: id.clone() });
        fw.stream = Some(Stream {
            id: stream_id.clone(),
            tx,
        });
        fw.disconnected_since = None;
        fw.suppressed = subscribe.suppressed_roles.into_iter().collect();
        fw.subscribes += 1;
        let master_info = st.master_info(master);
        let heartbeat = self.config.heartbeat.as_secs_f64();
        st.send(
            &id,
            &json!({"type": "SUBSCRIBED", "subscribed": {
                "framework_id": {"value": id},
                "heartbeat_interval_seconds": heartbeat,
                "master_info": master_info,
            }}),
        );
        Ok((id, stream_id, rx))
    }

    /// The checks every call but `SUBSCRIBE` passes, in the real master's order.
    pub(crate) fn check_caller(
        &self,
        framework: Option<&wire::Id>,
        stream_header: Option<&str>,
    ) -> Result<String, Refusal> {
        let framework = framework.ok_or_else(|| {
            refuse(
                400,
                "Failed to validate scheduler::Call: Expecting 'framework_id' to be present",
            )
        })?;
        let st = self.lock();
        let fw = st
            .frameworks
            .get(&framework.value)
            .filter(|f| !f.removed)
            .ok_or_else(|| refuse(400, "Framework cannot be found"))?;
        let Some(stream) = &fw.stream else {
            return Err(refuse(403, "Framework is not subscribed"));
        };
        match stream_header {
            None => Err(refuse(
                400,
                "All non-subscribe calls should include the 'Mesos-Stream-Id' header",
            )),
            Some(h) if h != stream.id => Err(refuse(
                400,
                format!(
                    "The stream ID '{h}' included in this request didn't match the stream ID \
                     currently associated with framework ID {}",
                    framework.value
                ),
            )),
            Some(_) => Ok(framework.value.clone()),
        }
    }

    /// Every call but `SUBSCRIBE`, from a checked caller.
    pub(crate) fn call(&self, framework: &str, call: wire::Call) -> Result<Effects, Refusal> {
        let missing = |field: &str| {
            refuse(
                400,
                format!("Failed to validate scheduler::Call: Expecting '{field}' to be present"),
            )
        };
        let mut st = self.lock();
        let mut effects = Effects::default();
        match call.kind {
            CallType::Teardown => {
                effects.stop = st.remove_framework(framework);
            }
            CallType::Accept => {
                let accept = call.accept.ok_or_else(|| missing("accept"))?;
                self.accept(&mut st, framework, accept, &mut effects)?;
            }
            CallType::Decline => {
                let decline = call.decline.ok_or_else(|| missing("decline"))?;
                let refuse_for = refuse_seconds(decline.filters.as_ref());
                for id in decline.offer_ids {
                    if let Some(o) = st
                        .offers
                        .get(&id.value)
                        .filter(|o| o.framework == framework)
                    {
                        let agent = o.agent.clone();
                        st.offers.remove(&id.value);
                        if let Some(fw) = st.frameworks.get_mut(framework) {
                            fw.filters.insert(agent, Instant::now() + refuse_for);
                        }
                    }
                }
            }
            CallType::Revive => {
                let roles = call.revive.unwrap_or_default().roles;
                if let Some(fw) = st.frameworks.get_mut(framework) {
                    fw.filters.clear();
                    if roles.is_empty() {
                        fw.suppressed.clear();
                    } else {
                        for r in roles {
                            fw.suppressed.remove(&r);
                        }
                    }
                }
            }
            CallType::Suppress => {
                let roles = call.suppress.unwrap_or_default().roles;
                if let Some(fw) = st.frameworks.get_mut(framework) {
                    let roles = if roles.is_empty() { fw.roles() } else { roles };
                    fw.suppressed.extend(roles);
                }
            }
            CallType::Kill => {
                let kill = call.kill.ok_or_else(|| missing("kill"))?;
                let grace = kill
                    .kill_policy
                    .as_ref()
                    .or_else(|| {
                        st.tasks
                            .get(&kill.task_id.value)
                            .and_then(|t| t.info.kill_policy.as_ref())
                    })
                    .and_then(|p| p.grace_period.as_ref())
                    .map_or(Duration::from_secs(3), |g| {
                        Duration::from_nanos(u64::try_from(g.nanoseconds).unwrap_or_default())
                    });
                let known = st
                    .tasks
                    .get(&kill.task_id.value)
                    .filter(|t| t.framework == framework)
                    .map(|t| (is_terminal(&t.state), t.killing));
                match known {
                    Some((false, false)) => {
                        if let Some(t) = st.tasks.get_mut(&kill.task_id.value) {
                            t.killing = true;
                        }
                        st.update(
                            &kill.task_id.value,
                            "TASK_KILLING",
                            "SOURCE_EXECUTOR",
                            None,
                            Some("Killing the task"),
                            true,
                        );
                        effects.kill.push((kill.task_id.value.clone(), grace));
                    }
                    Some(_) => {}
                    None => {
                        let pa = st
                            .frameworks
                            .get(framework)
                            .is_some_and(|f| f.has(CapabilityType::PartitionAware));
                        let state = if pa { "TASK_UNKNOWN" } else { "TASK_LOST" };
                        let mut status = json!({"task_id": {"value": kill.task_id.value},
                            "state": state, "source": "SOURCE_MASTER",
                            "reason": "REASON_RECONCILIATION",
                            "message": "Attempted to kill an unknown task",
                            "timestamp": now_seconds()});
                        if let Some(agent) = kill.agent_id {
                            status["agent_id"] = json!({"value": agent.value});
                        }
                        st.send(
                            framework,
                            &json!({"type": "UPDATE", "update": {"status": status}}),
                        );
                    }
                }
            }
            CallType::Acknowledge => {
                let ack = call.acknowledge.ok_or_else(|| missing("acknowledge"))?;
                let next = st.tasks.get_mut(&ack.task_id.value).and_then(|t| {
                    let head_uuid = t
                        .queue
                        .front()
                        .and_then(|h| h["uuid"].as_str().map(str::to_owned));
                    if t.framework != framework
                        || t.agent != ack.agent_id.value
                        || head_uuid.as_deref() != Some(ack.uuid.as_str())
                    {
                        // A duplicate or stale acknowledgement: the agent ignores it.
                        return None;
                    }
                    t.queue.pop_front();
                    t.acknowledged += 1;
                    t.sent_at = Some(Instant::now());
                    t.queue.front().cloned()
                });
                if let Some(head) = next {
                    st.send(
                        framework,
                        &json!({"type": "UPDATE", "update": {"status": head}}),
                    );
                }
            }
            CallType::Reconcile => {
                let reconcile = call.reconcile.ok_or_else(|| missing("reconcile"))?;
                let pa = st
                    .frameworks
                    .get(framework)
                    .is_some_and(|f| f.has(CapabilityType::PartitionAware));
                let answer = |latest: &Value| {
                    let mut s = latest.clone();
                    if let Some(o) = s.as_object_mut() {
                        o.remove("uuid");
                        o.insert("source".into(), json!("SOURCE_MASTER"));
                        o.insert("reason".into(), json!("REASON_RECONCILIATION"));
                        o.insert("message".into(), json!("Reconciliation: Latest task state"));
                        o.insert("timestamp".into(), json!(now_seconds()));
                    }
                    s
                };
                let mut out = Vec::new();
                if reconcile.tasks.is_empty() {
                    for t in st.tasks.values() {
                        if t.framework == framework
                            && (!is_terminal(&t.state) || !t.queue.is_empty())
                        {
                            out.push(answer(&t.latest));
                        }
                    }
                } else {
                    for q in &reconcile.tasks {
                        match st
                            .tasks
                            .get(&q.task_id.value)
                            .filter(|t| t.framework == framework)
                        {
                            Some(t) => out.push(answer(&t.latest)),
                            None => {
                                let mut s = json!({"task_id": {"value": q.task_id.value},
                                    "state": if pa { "TASK_UNKNOWN" } else { "TASK_LOST" },
                                    "source": "SOURCE_MASTER", "reason": "REASON_RECONCILIATION",
                                    "message": "Reconciliation: Task is unknown",
                                    "timestamp": now_seconds()});
                                if let Some(a) = &q.agent_id {
                                    s["agent_id"] = json!({"value": a.value});
                                }
                                out.push(s);
                            }
                        }
                    }
                }
                for status in out {
                    st.send(
                        framework,
                        &json!({"type": "UPDATE", "update": {"status": status}}),
                    );
                }
            }
            CallType::Subscribe => unreachable_subscribe()?,
            other => {
                return Err(refuse(
                    400,
                    format!(
                        "{} is not supported by this Mesos master simulator",
                        other.name()
                    ),
                ));
            }
        }
        Ok(effects)
    }

    fn accept(
        &self,
        st: &mut SimState,
        framework: &str,
        accept: wire::Accept,
        effects: &mut Effects,
    ) -> Result<(), Refusal> {
        let mut launches = Vec::new();
        for op in accept.operations {
            match (op.kind.as_str(), op.launch) {
                ("LAUNCH", Some(l)) => launches.extend(l.task_infos),
                ("LAUNCH", None) => {
                    return Err(refuse(
                        400,
                        "Failed to validate Offer.Operation: Expecting 'launch' to be present",
                    ));
                }
                (other, _) => {
                    return Err(refuse(
                        400,
                        format!(
                            "operation {other} is not supported by this Mesos master simulator"
                        ),
                    ));
                }
            }
        }
        let pa = st
            .frameworks
            .get(framework)
            .is_some_and(|f| f.has(CapabilityType::PartitionAware));
        // The offers must exist, be this framework's, and be on one agent.
        let mut pool = Res::default();
        let mut agent: Option<String> = None;
        let mut invalid: Option<String> = None;
        for id in &accept.offer_ids {
            match st.offers.get(&id.value) {
                Some(o) if o.framework == framework => {
                    if agent.as_ref().is_some_and(|a| *a != o.agent) {
                        invalid = Some("Aggregated offers must belong to one single agent".into());
                    }
                    agent = Some(o.agent.clone());
                    pool.cpus += o.res.cpus;
                    pool.mem += o.res.mem;
                    pool.disk += o.res.disk;
                    pool.gpus += o.res.gpus;
                    pool.ports.extend(&o.res.ports);
                }
                _ => invalid = Some(format!("Offer {} is no longer valid", id.value)),
            }
        }
        if accept.offer_ids.is_empty() {
            invalid = Some("No offers specified".into());
        }
        for id in &accept.offer_ids {
            st.offers.remove(&id.value);
        }
        let refuse_for = refuse_seconds(accept.filters.as_ref());
        if let (Some(agent), Some(fw)) = (&agent, st.frameworks.get_mut(framework)) {
            fw.filters
                .insert(agent.clone(), Instant::now() + refuse_for);
        }
        let now = now_seconds();
        for info in launches {
            let task_id = info.task_id.value.clone();
            let master_update = |st: &mut SimState, state: &str, reason: &str, message: String| {
                let status = json!({"task_id": {"value": task_id}, "state": state,
                    "source": "SOURCE_MASTER", "reason": reason, "message": message,
                    "agent_id": {"value": info.agent_id.value}, "timestamp": now});
                st.send(
                    framework,
                    &json!({"type": "UPDATE", "update": {"status": status}}),
                );
            };
            if let Some(why) = &invalid {
                let state = if pa { "TASK_DROPPED" } else { "TASK_LOST" };
                master_update(st, state, "REASON_INVALID_OFFERS", why.clone());
                continue;
            }
            let agent_id = agent.clone().unwrap_or_default();
            let checked = validate_task(st, framework, &agent_id, &info, &pool);
            let res = match checked {
                Ok(res) => res,
                Err(why) => {
                    master_update(st, "TASK_ERROR", "REASON_TASK_INVALID", why);
                    continue;
                }
            };
            pool = pool.minus(&res);
            st.tasks.insert(
                task_id.clone(),
                SimTask {
                    id: task_id.clone(),
                    framework: framework.to_owned(),
                    agent: agent_id.clone(),
                    res,
                    state: "TASK_STAGING".to_owned(),
                    latest: json!({"task_id": {"value": task_id}, "state": "TASK_STAGING",
                        "agent_id": {"value": agent_id}}),
                    info,
                    queue: VecDeque::new(),
                    sent_at: None,
                    acknowledged: 0,
                    container_ip: None,
                    killing: false,
                    runner: None,
                    container: None,
                },
            );
            effects.launch.push(task_id);
        }
        Ok(())
    }
}

/// The `SUBSCRIBE` path never reaches [`Sim::call`].
fn unreachable_subscribe() -> Result<(), Refusal> {
    Err(refuse(
        400,
        "Subscribe calls go through the subscription path",
    ))
}

fn refuse_seconds(filters: Option<&wire::Filters>) -> Duration {
    let secs = filters.and_then(|f| f.refuse_seconds).unwrap_or(5.0);
    if secs.is_finite() && secs > 0.0 {
        Duration::from_secs_f64(secs.min(31_536_000.0))
    } else {
        Duration::ZERO
    }
}

/// The master's and agent's checks of one task in an `ACCEPT`, returning what it takes.
fn validate_task(
    st: &SimState,
    framework: &str,
    agent: &str,
    info: &wire::TaskInfo,
    pool: &Res,
) -> Result<Res, String> {
    if info.task_id.value.is_empty() || info.task_id.value.contains('/') {
        return Err("Task ID must not be empty or contain '/'".into());
    }
    if st
        .tasks
        .get(&info.task_id.value)
        .is_some_and(|t| t.framework == framework && !is_terminal(&t.state))
    {
        return Err(format!("Task has duplicate ID: {}", info.task_id.value));
    }
    if info.agent_id.value != agent {
        return Err(format!(
            "Task uses agent {} but the offer is from agent {agent}",
            info.agent_id.value
        ));
    }
    if info.executor.is_some() {
        return Err("custom executors are not supported by this simulator".into());
    }
    let command = info.command.as_ref().ok_or(
        "Task should have at least one (but not both) of CommandInfo or ExecutorInfo present",
    )?;
    let res = Res::from_task(&info.resources)?;
    if res.cpus <= 0 && res.mem <= 0 {
        return Err("Task uses no resources".into());
    }
    if !pool.contains(&res) {
        return Err(format!(
            "Task uses more resources than offered: asks {} cpus, {} MB, {} GPUs, ports {:?}",
            res.cpus as f64 / 1000.0,
            res.mem as f64 / 1000.0,
            res.gpus as f64 / 1000.0,
            res.ports
        ));
    }
    let container = info.container.as_ref();
    match container.map(|c| c.kind.as_str()) {
        Some("DOCKER") => {
            let docker = container
                .and_then(|c| c.docker.as_ref())
                .ok_or("DockerInfo 'docker' is not set for DOCKER typed ContainerInfo")?;
            if docker.image.is_empty() {
                return Err("DockerInfo.image is empty".into());
            }
            if res.gpus > 0 {
                // docs/gpu-support.md: GPUs are only supported by the Mesos containerizer.
                return Err("GPU resources are not supported by the Docker containerizer; use the Mesos containerizer".into());
            }
            let network = docker.network.as_deref().unwrap_or("HOST");
            if !docker.port_mappings.is_empty() && network != "BRIDGE" && network != "USER" {
                return Err(format!(
                    "Port mappings are only supported for bridge and user-defined networks, not {network}"
                ));
            }
            for m in &docker.port_mappings {
                let host = u16::try_from(m.host_port).ok();
                if !host.is_some_and(|p| res.ports.contains(&p)) {
                    return Err(format!(
                        "Port mappings require that task resources include the host port {}",
                        m.host_port
                    ));
                }
            }
        }
        Some("MESOS") => {
            let image = container
                .and_then(|c| c.mesos.as_ref())
                .and_then(|m| m.image.as_ref());
            if let Some(image) = image
                && (image.kind != "DOCKER" || image.docker.is_none())
            {
                return Err("only Docker images are simulated for the Mesos containerizer".into());
            }
            if image.is_none() && command.value.is_none() {
                return Err("a Mesos container without an image needs a command value".into());
            }
        }
        None => {
            if command.value.is_none() {
                return Err("a command task needs 'command.value'".into());
            }
        }
        Some(other) => return Err(format!("container type {other} is not simulated")),
    }
    if command.shell != Some(false) && command.value.is_none() {
        return Err("a shell command needs 'command.value'".into());
    }
    for var in command.environment.iter().flat_map(|e| &e.variables) {
        if var.kind.as_deref().is_some_and(|k| k != "VALUE") || var.value.is_none() {
            return Err(format!(
                "environment variable {} has no plain value",
                var.name
            ));
        }
    }
    Ok(res)
}
