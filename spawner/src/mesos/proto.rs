//! The subset of the Mesos v1 scheduler API (`scheduler.proto`, `mesos.proto`) this backend
//! speaks, as serde types for the JSON encoding the master accepts: protobuf field names in
//! `snake_case`, enums as their names, ids wrapped as `{"value": "…"}`.
//!
//! Written by hand from the proto definitions (no `.proto` file is vendored). What we send
//! ([`Call`] and everything under it) omits unset fields. What we receive ([`Event`] and
//! everything under it) ignores unknown fields and maps unknown enum names to an `Unrecognized`
//! variant, so a newer master never breaks the stream.
//!
//! [`Resource`] keeps the fields it does not model in [`Resource::extra`] so that a resource
//! taken from an offer goes back in a `LAUNCH` with its reservation metadata intact.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// A wrapped id: `FrameworkID`, `AgentID`, `TaskID`, `OfferID`, `ExecutorID`.
#[derive(Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Id {
    /// The id.
    pub value: String,
}

impl Id {
    /// Wraps `value`.
    pub fn new(value: impl Into<String>) -> Self {
        Self {
            value: value.into(),
        }
    }
}

/// `scheduler.Call`: one request to `POST /api/v1/scheduler`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Call {
    /// Every call but the first `SUBSCRIBE` names the framework.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub framework_id: Option<Id>,
    /// Which call.
    #[serde(rename = "type")]
    pub kind: CallType,
    /// For `SUBSCRIBE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribe: Option<Subscribe>,
    /// For `ACCEPT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accept: Option<Accept>,
    /// For `DECLINE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decline: Option<Decline>,
    /// For `REVIVE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub revive: Option<Roles>,
    /// For `SUPPRESS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suppress: Option<Roles>,
    /// For `KILL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill: Option<Kill>,
    /// For `ACKNOWLEDGE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acknowledge: Option<Acknowledge>,
    /// For `RECONCILE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reconcile: Option<Reconcile>,
}

/// `scheduler.Call.Type`, the calls this backend makes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CallType {
    /// Opens the event stream.
    #[default]
    Subscribe,
    /// Removes the framework and kills its tasks.
    Teardown,
    /// Uses offers.
    Accept,
    /// Returns offers.
    Decline,
    /// Asks for offers again and clears decline filters.
    Revive,
    /// Kills a task.
    Kill,
    /// Acknowledges a status update.
    Acknowledge,
    /// Asks for task states.
    Reconcile,
    /// Stops offers.
    Suppress,
}

impl CallType {
    /// The call's name as the master spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::Subscribe => "SUBSCRIBE",
            Self::Teardown => "TEARDOWN",
            Self::Accept => "ACCEPT",
            Self::Decline => "DECLINE",
            Self::Revive => "REVIVE",
            Self::Kill => "KILL",
            Self::Acknowledge => "ACKNOWLEDGE",
            Self::Reconcile => "RECONCILE",
            Self::Suppress => "SUPPRESS",
        }
    }
}

/// `Call.Subscribe`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Subscribe {
    /// Who the framework is.
    pub framework_info: FrameworkInfo,
    /// Roles that start suppressed (no offers until a `REVIVE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub suppressed_roles: Vec<String>,
}

/// `FrameworkInfo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FrameworkInfo {
    /// The Unix user tasks run as unless they say otherwise. Required.
    pub user: String,
    /// The framework's name. Required.
    pub name: String,
    /// Set when re-subscribing; the master assigns it the first time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<Id>,
    /// Seconds the master keeps the framework's tasks while it is disconnected.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failover_timeout: Option<f64>,
    /// Whether agents checkpoint the tasks (so they survive agent restarts).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<bool>,
    /// The roles offers are made to (with `MULTI_ROLE`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
    /// Where the framework runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The principal it authenticates as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub principal: Option<String>,
    /// Its web UI, linked from the master's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webui_url: Option<String>,
    /// What it can handle.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub capabilities: Vec<Capability>,
    /// Free-form labels.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
}

/// `FrameworkInfo.Capability`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Capability {
    /// Which one.
    #[serde(rename = "type")]
    pub kind: CapabilityType,
}

/// `FrameworkInfo.Capability.Type`, the ones this backend uses.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CapabilityType {
    /// Offers from agents with GPUs.
    GpuResources,
    /// `roles` instead of `role`.
    MultiRole,
    /// The partition-aware task states instead of `TASK_LOST`.
    PartitionAware,
    /// `TASK_KILLING` during a graceful kill.
    TaskKillingState,
    /// Any other.
    #[serde(other)]
    Unrecognized,
}

/// `Labels`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Labels {
    /// The labels.
    #[serde(default)]
    pub labels: Vec<Label>,
}

impl Labels {
    /// Labels from key/value pairs.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a String, &'a String)>) -> Self {
        Self {
            labels: pairs
                .into_iter()
                .map(|(k, v)| Label {
                    key: k.clone(),
                    value: Some(v.clone()),
                })
                .collect(),
        }
    }

    /// The value of `key`, if present.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|l| l.key == key)
            .and_then(|l| l.value.as_deref())
    }
}

/// `Label`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Label {
    /// The key.
    pub key: String,
    /// The value.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

/// `Call.Accept`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Accept {
    /// The offers used (all on one agent).
    pub offer_ids: Vec<Id>,
    /// What to do with them.
    pub operations: Vec<Operation>,
    /// How long the unused rest is not offered back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

/// `Offer.Operation`; only `LAUNCH` is used.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Operation {
    /// Which operation.
    #[serde(rename = "type")]
    pub kind: OperationType,
    /// For `LAUNCH`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub launch: Option<Launch>,
}

/// `Offer.Operation.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum OperationType {
    /// Launch tasks.
    Launch,
    /// Any other.
    #[serde(other)]
    Unrecognized,
}

/// `Offer.Operation.Launch`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// The tasks.
    pub task_infos: Vec<TaskInfo>,
}

/// `Filters`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Filters {
    /// Seconds the declined resources are not offered to this framework again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refuse_seconds: Option<f64>,
}

/// `Call.Decline`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Decline {
    /// The offers.
    pub offer_ids: Vec<Id>,
    /// How long they are not offered back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub filters: Option<Filters>,
}

/// `Call.Revive` and `Call.Suppress`: the roles they apply to.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Roles {
    /// The roles; empty means all of the framework's.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub roles: Vec<String>,
}

/// `Call.Kill`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Kill {
    /// The task.
    pub task_id: Id,
    /// Its agent, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    /// Overrides the task's kill policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
}

/// `KillPolicy`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KillPolicy {
    /// Time between SIGTERM and SIGKILL.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_period: Option<DurationInfo>,
}

/// `DurationInfo`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DurationInfo {
    /// Nanoseconds.
    pub nanoseconds: i64,
}

/// `Call.Acknowledge`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Acknowledge {
    /// The update's agent.
    pub agent_id: Id,
    /// The update's task.
    pub task_id: Id,
    /// The update's uuid, base64 exactly as received.
    pub uuid: String,
}

/// `Call.Reconcile`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reconcile {
    /// The tasks to report; empty asks for every task the master knows (implicit).
    #[serde(default)]
    pub tasks: Vec<ReconcileTask>,
}

/// `Call.Reconcile.Task`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReconcileTask {
    /// The task.
    pub task_id: Id,
    /// Its agent, when known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
}

/// `TaskInfo`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct TaskInfo {
    /// A human-readable name.
    pub name: String,
    /// The framework-chosen id.
    pub task_id: Id,
    /// The agent of the offer.
    pub agent_id: Id,
    /// What it takes from the offer.
    pub resources: Vec<Resource>,
    /// What to run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub command: Option<CommandInfo>,
    /// In which container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container: Option<ContainerInfo>,
    /// Labels (owner, server, profile).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub labels: Option<Labels>,
    /// How it is killed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_policy: Option<KillPolicy>,
    /// Limits above the resources (`cpus`, `mem`), as `{"mem": {"value": 4096}}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub limits: BTreeMap<String, Scalar>,
}

/// `CommandInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct CommandInfo {
    /// Whether `value` is a shell command line.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<bool>,
    /// The program (or the shell line).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
    /// The arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub arguments: Vec<String>,
    /// The environment.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub environment: Option<Environment>,
    /// The Unix user to run as.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
}

/// `Environment`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Environment {
    /// The variables.
    #[serde(default)]
    pub variables: Vec<Variable>,
}

/// `Environment.Variable` (of type `VALUE`, the default).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Variable {
    /// The name.
    pub name: String,
    /// The value.
    pub value: String,
}

/// `ContainerInfo`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ContainerInfo {
    /// Which containerizer.
    #[serde(rename = "type")]
    pub kind: ContainerType,
    /// For `DOCKER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerInfo>,
    /// For `MESOS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mesos: Option<MesosInfo>,
    /// Volumes.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub volumes: Vec<Volume>,
    /// Networks (`MESOS` with CNI).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_infos: Vec<NetworkInfo>,
}

/// `ContainerInfo.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ContainerType {
    /// The Docker containerizer: `docker run` on the agent.
    Docker,
    /// The Mesos containerizer (UCR), which also runs Docker images; GPUs only work here.
    Mesos,
    /// Any other.
    #[serde(other)]
    Unrecognized,
}

/// `ContainerInfo.DockerInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerInfo {
    /// The image.
    pub image: String,
    /// The network mode; the master's default is `HOST`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<DockerNetwork>,
    /// Host port → container port, for `BRIDGE`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
    /// Raw `docker run --key=value` options.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<Parameter>,
    /// Pull the image even when the agent has it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub force_pull_image: Option<bool>,
}

/// `ContainerInfo.DockerInfo.Network`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum DockerNetwork {
    /// The agent's network stack.
    Host,
    /// Docker's bridge, with port mappings.
    Bridge,
    /// No network.
    None,
    /// A user-defined network.
    User,
    /// Any other.
    #[serde(other)]
    Unrecognized,
}

/// `PortMapping` (Docker and CNI).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortMapping {
    /// The port on the agent, taken from the offer.
    pub host_port: u32,
    /// The port in the container.
    pub container_port: u32,
    /// `tcp` or `udp`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
}

/// `Parameter`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Parameter {
    /// The `docker run` option without dashes.
    pub key: String,
    /// Its value.
    pub value: String,
}

/// `ContainerInfo.MesosInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MesosInfo {
    /// The image to provision.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<Image>,
}

/// `Image`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// `DOCKER` or `APPC`.
    #[serde(rename = "type")]
    pub kind: ImageType,
    /// For `DOCKER`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker: Option<DockerImage>,
    /// Use the agent's cached copy when it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cached: Option<bool>,
}

/// `Image.Type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ImageType {
    /// A Docker image.
    Docker,
    /// An AppC image.
    Appc,
    /// Any other.
    #[serde(other)]
    Unrecognized,
}

/// `Image.Docker`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerImage {
    /// The image reference.
    pub name: String,
}

/// `Volume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Volume {
    /// Where it appears in the container.
    pub container_path: String,
    /// The host path, for a bind mount.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_path: Option<String>,
    /// `RW` or `RO`.
    pub mode: VolumeMode,
    /// Another source, such as a Docker volume.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<VolumeSource>,
}

/// `Volume.Mode`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum VolumeMode {
    /// Read-write.
    Rw,
    /// Read-only.
    Ro,
}

/// `Volume.Source`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeSource {
    /// The kind of source; only `DOCKER_VOLUME` is used.
    #[serde(rename = "type")]
    pub kind: String,
    /// For `DOCKER_VOLUME`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub docker_volume: Option<DockerVolume>,
}

/// `Volume.Source.DockerVolume`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DockerVolume {
    /// The volume's name.
    pub name: String,
}

/// `NetworkInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkInfo {
    /// The container's addresses (in status updates).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ip_addresses: Vec<IpAddress>,
    /// The CNI network's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Port mappings on that network.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub port_mappings: Vec<PortMapping>,
}

/// `NetworkInfo.IPAddress`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IpAddress {
    /// `IPv4` or `IPv6`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub protocol: Option<String>,
    /// The address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ip_address: Option<String>,
}

/// `Resource`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resource {
    /// `cpus`, `mem`, `disk`, `gpus`, `ports`, …
    pub name: String,
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: ValueType,
    /// For `SCALAR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    /// For `RANGES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    /// For `SET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    /// The (deprecated) role, `*` when unreserved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
    /// The role it is allocated to (with `MULTI_ROLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
    /// Fields not modelled here (reservations, disk, revocable, shared, provider id), kept so
    /// that a resource goes back to the master as it came.
    #[serde(flatten)]
    pub extra: serde_json::Map<String, serde_json::Value>,
}

/// `Value.Type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ValueType {
    /// A number.
    #[default]
    Scalar,
    /// Integer ranges.
    Ranges,
    /// A set of strings.
    Set,
    /// Text.
    Text,
    /// Any other.
    #[serde(other)]
    Unrecognized,
}

/// `Value.Scalar`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Scalar {
    /// The number (three decimal digits are significant).
    pub value: f64,
}

/// `Value.Ranges`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ranges {
    /// The ranges.
    #[serde(default)]
    pub range: Vec<Range>,
}

/// `Value.Range`, inclusive.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Range {
    /// The first value.
    pub begin: u64,
    /// The last value.
    pub end: u64,
}

/// `Value.Set`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Set {
    /// The items.
    #[serde(default)]
    pub item: Vec<String>,
}

/// `Value.Text`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Text {
    /// The text.
    pub value: String,
}

/// `Resource.AllocationInfo`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocationInfo {
    /// The role.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub role: Option<String>,
}

/// `Attribute`: an agent's `--attributes` entry.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Attribute {
    /// The name.
    pub name: String,
    /// The value's type.
    #[serde(rename = "type")]
    pub kind: ValueType,
    /// For `SCALAR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scalar: Option<Scalar>,
    /// For `RANGES`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ranges: Option<Ranges>,
    /// For `SET`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set: Option<Set>,
    /// For `TEXT`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub text: Option<Text>,
}

impl Attribute {
    /// The value written as the agent's `--attributes` flag would: `true`, `80`, `[1-2]`,
    /// `{a,b}`.
    pub fn value_text(&self) -> String {
        match self.kind {
            ValueType::Text => self.text.as_ref().map(|t| t.value.clone()),
            ValueType::Scalar => self.scalar.map(|s| format_scalar(s.value)),
            ValueType::Ranges => self.ranges.as_ref().map(|r| {
                let parts: Vec<String> = r
                    .range
                    .iter()
                    .map(|r| format!("{}-{}", r.begin, r.end))
                    .collect();
                format!("[{}]", parts.join(","))
            }),
            ValueType::Set => self
                .set
                .as_ref()
                .map(|s| format!("{{{}}}", s.item.join(","))),
            ValueType::Unrecognized => None,
        }
        .unwrap_or_default()
    }
}

/// A scalar as Mesos prints it: at most three decimals, no trailing zeros.
pub fn format_scalar(value: f64) -> String {
    let text = format!("{value:.3}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text.is_empty() || text == "-" || text == "-0" {
        "0".to_owned()
    } else {
        text.to_owned()
    }
}

/// `scheduler.Event`: one record of the event stream.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Event {
    /// Which event.
    #[serde(rename = "type", default)]
    pub kind: EventType,
    /// For `SUBSCRIBED`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub subscribed: Option<Subscribed>,
    /// For `OFFERS`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offers: Option<Offers>,
    /// For `RESCIND`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rescind: Option<Rescind>,
    /// For `UPDATE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub update: Option<Update>,
    /// For `FAILURE`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub failure: Option<Failure>,
    /// For `ERROR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<ErrorEvent>,
}

/// `scheduler.Event.Type`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EventType {
    /// The first event of a subscription.
    Subscribed,
    /// New offers.
    Offers,
    /// Maintenance requests (ignored).
    InverseOffers,
    /// An offer is no longer valid.
    Rescind,
    /// An inverse offer is no longer valid (ignored).
    RescindInverseOffer,
    /// A task status update.
    Update,
    /// An operation status update (ignored).
    UpdateOperationStatus,
    /// Executor data (ignored).
    Message,
    /// An agent or executor was lost.
    Failure,
    /// The subscription failed; resubscribe.
    Error,
    /// The master is alive.
    Heartbeat,
    /// Any other (including `UNKNOWN`).
    #[default]
    #[serde(other)]
    Unrecognized,
}

/// `Event.Subscribed`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Subscribed {
    /// The framework's id, to persist.
    pub framework_id: Id,
    /// How often heartbeats come.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub heartbeat_interval_seconds: Option<f64>,
    /// The leading master.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub master_info: Option<MasterInfo>,
}

/// `MasterInfo`, the fields we log.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct MasterInfo {
    /// The master's id.
    #[serde(default)]
    pub id: String,
    /// Its host name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// Its port.
    #[serde(default)]
    pub port: u32,
}

/// `Event.Offers`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Offers {
    /// The offers.
    #[serde(default)]
    pub offers: Vec<Offer>,
}

/// `Offer`.
#[derive(Clone, Debug, Default, PartialEq, Deserialize, Serialize)]
pub struct Offer {
    /// Its id.
    pub id: Id,
    /// The framework it is for.
    #[serde(default)]
    pub framework_id: Id,
    /// The agent.
    pub agent_id: Id,
    /// The agent's host name.
    pub hostname: String,
    /// The resources.
    #[serde(default)]
    pub resources: Vec<Resource>,
    /// The agent's attributes.
    #[serde(default)]
    pub attributes: Vec<Attribute>,
    /// The role it is allocated to (with `MULTI_ROLE`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub allocation_info: Option<AllocationInfo>,
}

/// `Event.Rescind`.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
pub struct Rescind {
    /// The offer withdrawn.
    pub offer_id: Id,
}

/// `Event.Update`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct Update {
    /// The status.
    pub status: TaskStatus,
}

/// `Event.Failure`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct Failure {
    /// The agent lost, or the executor's agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    /// The executor, when only it failed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub executor_id: Option<Id>,
    /// Its exit status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<i32>,
}

/// `Event.Error`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ErrorEvent {
    /// What went wrong.
    #[serde(default)]
    pub message: String,
}

/// `TaskStatus`.
#[derive(Clone, Debug, PartialEq, Deserialize, Serialize)]
pub struct TaskStatus {
    /// The task.
    pub task_id: Id,
    /// Its state.
    pub state: TaskState,
    /// A human-readable explanation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
    /// `SOURCE_MASTER`, `SOURCE_AGENT` or `SOURCE_EXECUTOR`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub source: Option<String>,
    /// Why, as a `REASON_*` name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent_id: Option<Id>,
    /// When, in seconds since the epoch.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timestamp: Option<f64>,
    /// Present on updates that must be acknowledged (base64).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uuid: Option<String>,
    /// The container's state, with its addresses.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub container_status: Option<ContainerStatus>,
}

impl TaskStatus {
    /// The container's first IP address, if the status carries one.
    pub fn container_ip(&self) -> Option<&str> {
        self.container_status
            .as_ref()?
            .network_infos
            .iter()
            .flat_map(|n| n.ip_addresses.iter())
            .find_map(|a| a.ip_address.as_deref())
            .filter(|ip| !ip.is_empty())
    }
}

/// `ContainerStatus`, the part we read.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize, Serialize)]
pub struct ContainerStatus {
    /// The container's networks and addresses.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub network_infos: Vec<NetworkInfo>,
}

/// `TaskState`: every state of `mesos.proto`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum TaskState {
    /// Accepted by the master, not yet on the agent.
    TaskStaging,
    /// The agent is starting it.
    TaskStarting,
    /// It runs.
    TaskRunning,
    /// Being killed (with `TASK_KILLING_STATE`).
    TaskKilling,
    /// Exited with status 0.
    TaskFinished,
    /// Exited with another status, or could not start.
    TaskFailed,
    /// Killed on request.
    TaskKilled,
    /// The task description was invalid.
    TaskError,
    /// Lost (frameworks that are not partition-aware).
    TaskLost,
    /// Never started: a transient launch failure.
    TaskDropped,
    /// Its agent is partitioned away; it may come back.
    TaskUnreachable,
    /// Its agent is gone and so is the task.
    TaskGone,
    /// An operator marked its agent gone.
    TaskGoneByOperator,
    /// The master has no record of it.
    TaskUnknown,
    /// A state newer than this code.
    #[serde(other)]
    Unrecognized,
}

impl TaskState {
    /// Every state of `mesos.proto`.
    pub const ALL: [TaskState; 14] = [
        Self::TaskStaging,
        Self::TaskStarting,
        Self::TaskRunning,
        Self::TaskKilling,
        Self::TaskFinished,
        Self::TaskFailed,
        Self::TaskKilled,
        Self::TaskError,
        Self::TaskLost,
        Self::TaskDropped,
        Self::TaskUnreachable,
        Self::TaskGone,
        Self::TaskGoneByOperator,
        Self::TaskUnknown,
    ];

    /// The state's name as the master spells it.
    pub fn name(self) -> &'static str {
        match self {
            Self::TaskStaging => "TASK_STAGING",
            Self::TaskStarting => "TASK_STARTING",
            Self::TaskRunning => "TASK_RUNNING",
            Self::TaskKilling => "TASK_KILLING",
            Self::TaskFinished => "TASK_FINISHED",
            Self::TaskFailed => "TASK_FAILED",
            Self::TaskKilled => "TASK_KILLED",
            Self::TaskError => "TASK_ERROR",
            Self::TaskLost => "TASK_LOST",
            Self::TaskDropped => "TASK_DROPPED",
            Self::TaskUnreachable => "TASK_UNREACHABLE",
            Self::TaskGone => "TASK_GONE",
            Self::TaskGoneByOperator => "TASK_GONE_BY_OPERATOR",
            Self::TaskUnknown => "TASK_UNKNOWN",
            Self::Unrecognized => "UNRECOGNIZED",
        }
    }

    /// Whether the task will not run again: the states `mesos.proto` calls terminal, plus
    /// `TASK_LOST` and `TASK_UNKNOWN`, after which nothing of the task is left to manage.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Self::TaskFinished
                | Self::TaskFailed
                | Self::TaskKilled
                | Self::TaskError
                | Self::TaskLost
                | Self::TaskDropped
                | Self::TaskGone
                | Self::TaskGoneByOperator
                | Self::TaskUnknown
        )
    }
}

impl std::fmt::Display for TaskState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}
