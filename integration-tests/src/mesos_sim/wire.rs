//! What the simulated master reads: the scheduler `Call` and the messages under it, written
//! again here from `scheduler.proto` and `mesos.proto` (not shared with the spawner, so that
//! a field name both got wrong in the same way is the only kind of mistake that can hide).
//!
//! Stricter than Apache Mesos on purpose: every message denies unknown fields. The real
//! master silently drops a field it does not know (stout's JSON→protobuf conversion skips
//! it), so a misspelled `port_mapping` would vanish there and surface much later as a task
//! without ports; here it is a `400` that names the field.
//!
//! Many fields are only parsed (to be checked, and to let the call through), never read.
#![allow(dead_code)]

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

/// `{"value": "…"}`.
#[derive(Clone, Debug, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct Id {
    pub(crate) value: String,
}

/// `scheduler.Call`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Call {
    #[serde(default)]
    pub(crate) framework_id: Option<Id>,
    #[serde(rename = "type")]
    pub(crate) kind: CallType,
    #[serde(default)]
    pub(crate) subscribe: Option<Subscribe>,
    #[serde(default)]
    pub(crate) accept: Option<Accept>,
    #[serde(default)]
    pub(crate) decline: Option<Decline>,
    #[serde(default)]
    pub(crate) revive: Option<Roles>,
    #[serde(default)]
    pub(crate) suppress: Option<Roles>,
    #[serde(default)]
    pub(crate) kill: Option<Kill>,
    #[serde(default)]
    pub(crate) acknowledge: Option<Acknowledge>,
    #[serde(default)]
    pub(crate) reconcile: Option<Reconcile>,
    // Calls the simulator does not implement; accepted by the parser so that the answer can
    // say so.
    #[serde(default)]
    pub(crate) shutdown: Option<Value>,
    #[serde(default)]
    pub(crate) message: Option<Value>,
    #[serde(default)]
    pub(crate) request: Option<Value>,
    #[serde(default)]
    pub(crate) accept_inverse_offers: Option<Value>,
    #[serde(default)]
    pub(crate) decline_inverse_offers: Option<Value>,
    #[serde(default)]
    pub(crate) update_framework: Option<Value>,
}

/// `scheduler.Call.Type`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum CallType {
    Subscribe,
    Teardown,
    Accept,
    Decline,
    AcceptInverseOffers,
    DeclineInverseOffers,
    Revive,
    Kill,
    Shutdown,
    Acknowledge,
    AcknowledgeOperationStatus,
    Reconcile,
    ReconcileOperations,
    Message,
    Request,
    Suppress,
    UpdateFramework,
}

impl CallType {
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Subscribe => "SUBSCRIBE",
            Self::Teardown => "TEARDOWN",
            Self::Accept => "ACCEPT",
            Self::Decline => "DECLINE",
            Self::AcceptInverseOffers => "ACCEPT_INVERSE_OFFERS",
            Self::DeclineInverseOffers => "DECLINE_INVERSE_OFFERS",
            Self::Revive => "REVIVE",
            Self::Kill => "KILL",
            Self::Shutdown => "SHUTDOWN",
            Self::Acknowledge => "ACKNOWLEDGE",
            Self::AcknowledgeOperationStatus => "ACKNOWLEDGE_OPERATION_STATUS",
            Self::Reconcile => "RECONCILE",
            Self::ReconcileOperations => "RECONCILE_OPERATIONS",
            Self::Message => "MESSAGE",
            Self::Request => "REQUEST",
            Self::Suppress => "SUPPRESS",
            Self::UpdateFramework => "UPDATE_FRAMEWORK",
        }
    }
}

/// `Call.Subscribe`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Subscribe {
    pub(crate) framework_info: FrameworkInfo,
    #[serde(default)]
    pub(crate) suppressed_roles: Vec<String>,
    #[serde(default)]
    pub(crate) offer_constraints: Option<Value>,
}

/// `FrameworkInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct FrameworkInfo {
    pub(crate) user: String,
    pub(crate) name: String,
    #[serde(default)]
    pub(crate) id: Option<Id>,
    #[serde(default)]
    pub(crate) failover_timeout: Option<f64>,
    #[serde(default)]
    pub(crate) checkpoint: Option<bool>,
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) roles: Vec<String>,
    #[serde(default)]
    pub(crate) hostname: Option<String>,
    #[serde(default)]
    pub(crate) principal: Option<String>,
    #[serde(default)]
    pub(crate) webui_url: Option<String>,
    #[serde(default)]
    pub(crate) capabilities: Vec<Capability>,
    #[serde(default)]
    pub(crate) labels: Option<Labels>,
    #[serde(default)]
    pub(crate) offer_filters: Option<Value>,
}

/// `FrameworkInfo.Capability`: an unknown type is refused here (the real master keeps a
/// capability without a type, which then means nothing).
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Capability {
    #[serde(rename = "type")]
    pub(crate) kind: CapabilityType,
}

/// `FrameworkInfo.Capability.Type`.
#[derive(Clone, Copy, Debug, Deserialize, PartialEq, Eq, PartialOrd, Ord)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub(crate) enum CapabilityType {
    RevocableResources,
    TaskKillingState,
    GpuResources,
    SharedResources,
    PartitionAware,
    MultiRole,
    ReservationRefinement,
    RegionAware,
}

/// `Labels`.
#[derive(Clone, Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Labels {
    #[serde(default)]
    pub(crate) labels: Vec<Label>,
}

/// `Label`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Label {
    pub(crate) key: String,
    #[serde(default)]
    pub(crate) value: Option<String>,
}

/// `Call.Accept`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Accept {
    #[serde(default)]
    pub(crate) offer_ids: Vec<Id>,
    #[serde(default)]
    pub(crate) operations: Vec<Operation>,
    #[serde(default)]
    pub(crate) filters: Option<Filters>,
}

/// `Offer.Operation`; only `LAUNCH` is simulated.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Operation {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) launch: Option<Launch>,
    #[serde(default)]
    pub(crate) id: Option<Id>,
}

/// `Offer.Operation.Launch`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Launch {
    #[serde(default)]
    pub(crate) task_infos: Vec<TaskInfo>,
}

/// `Filters`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Filters {
    #[serde(default)]
    pub(crate) refuse_seconds: Option<f64>,
}

/// `Call.Decline`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Decline {
    #[serde(default)]
    pub(crate) offer_ids: Vec<Id>,
    #[serde(default)]
    pub(crate) filters: Option<Filters>,
}

/// `Call.Revive`, `Call.Suppress`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Roles {
    #[serde(default)]
    pub(crate) roles: Vec<String>,
}

/// `Call.Kill`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Kill {
    pub(crate) task_id: Id,
    #[serde(default)]
    pub(crate) agent_id: Option<Id>,
    #[serde(default)]
    pub(crate) kill_policy: Option<KillPolicy>,
}

/// `KillPolicy`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct KillPolicy {
    #[serde(default)]
    pub(crate) grace_period: Option<DurationInfo>,
}

/// `DurationInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DurationInfo {
    pub(crate) nanoseconds: i64,
}

/// `Call.Acknowledge`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Acknowledge {
    pub(crate) agent_id: Id,
    pub(crate) task_id: Id,
    pub(crate) uuid: String,
}

/// `Call.Reconcile`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Reconcile {
    #[serde(default)]
    pub(crate) tasks: Vec<ReconcileTask>,
}

/// `Call.Reconcile.Task`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReconcileTask {
    pub(crate) task_id: Id,
    #[serde(default)]
    pub(crate) agent_id: Option<Id>,
}

/// `TaskInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskInfo {
    pub(crate) name: String,
    pub(crate) task_id: Id,
    pub(crate) agent_id: Id,
    #[serde(default)]
    pub(crate) resources: Vec<Resource>,
    #[serde(default)]
    pub(crate) command: Option<CommandInfo>,
    #[serde(default)]
    pub(crate) container: Option<ContainerInfo>,
    #[serde(default)]
    pub(crate) labels: Option<Labels>,
    #[serde(default)]
    pub(crate) kill_policy: Option<KillPolicy>,
    #[serde(default)]
    pub(crate) limits: BTreeMap<String, Scalar>,
    #[serde(default)]
    pub(crate) executor: Option<Value>,
    #[serde(default)]
    pub(crate) health_check: Option<Value>,
    #[serde(default)]
    pub(crate) data: Option<String>,
}

/// `Resource`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Resource {
    pub(crate) name: String,
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) scalar: Option<Scalar>,
    #[serde(default)]
    pub(crate) ranges: Option<Ranges>,
    #[serde(default)]
    pub(crate) set: Option<Value>,
    #[serde(default)]
    pub(crate) role: Option<String>,
    #[serde(default)]
    pub(crate) allocation_info: Option<AllocationInfo>,
    #[serde(default)]
    pub(crate) reservations: Option<Value>,
}

/// `Value.Scalar`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Scalar {
    pub(crate) value: f64,
}

/// `Value.Ranges`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Ranges {
    #[serde(default)]
    pub(crate) range: Vec<Range>,
}

/// `Value.Range`.
#[derive(Clone, Copy, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Range {
    pub(crate) begin: u64,
    pub(crate) end: u64,
}

/// `Resource.AllocationInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct AllocationInfo {
    #[serde(default)]
    pub(crate) role: Option<String>,
}

/// `CommandInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct CommandInfo {
    #[serde(default)]
    pub(crate) shell: Option<bool>,
    #[serde(default)]
    pub(crate) value: Option<String>,
    #[serde(default)]
    pub(crate) arguments: Vec<String>,
    #[serde(default)]
    pub(crate) environment: Option<Environment>,
    #[serde(default)]
    pub(crate) user: Option<String>,
    #[serde(default)]
    pub(crate) uris: Vec<Value>,
}

/// `Environment`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Environment {
    #[serde(default)]
    pub(crate) variables: Vec<Variable>,
}

/// `Environment.Variable`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Variable {
    pub(crate) name: String,
    #[serde(default, rename = "type")]
    pub(crate) kind: Option<String>,
    #[serde(default)]
    pub(crate) value: Option<String>,
}

/// `ContainerInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ContainerInfo {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) docker: Option<DockerInfo>,
    #[serde(default)]
    pub(crate) mesos: Option<MesosInfo>,
    #[serde(default)]
    pub(crate) volumes: Vec<Volume>,
    #[serde(default)]
    pub(crate) network_infos: Vec<Value>,
    #[serde(default)]
    pub(crate) hostname: Option<String>,
}

/// `ContainerInfo.DockerInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerInfo {
    pub(crate) image: String,
    #[serde(default)]
    pub(crate) network: Option<String>,
    #[serde(default)]
    pub(crate) port_mappings: Vec<PortMapping>,
    #[serde(default)]
    pub(crate) privileged: Option<bool>,
    #[serde(default)]
    pub(crate) parameters: Vec<Parameter>,
    #[serde(default)]
    pub(crate) force_pull_image: Option<bool>,
}

/// `PortMapping`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct PortMapping {
    pub(crate) host_port: u32,
    pub(crate) container_port: u32,
    #[serde(default)]
    pub(crate) protocol: Option<String>,
}

/// `Parameter`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Parameter {
    pub(crate) key: String,
    pub(crate) value: String,
}

/// `ContainerInfo.MesosInfo`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct MesosInfo {
    #[serde(default)]
    pub(crate) image: Option<Image>,
}

/// `Image`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Image {
    #[serde(rename = "type")]
    pub(crate) kind: String,
    #[serde(default)]
    pub(crate) docker: Option<DockerImage>,
    #[serde(default)]
    pub(crate) cached: Option<bool>,
}

/// `Image.Docker`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct DockerImage {
    pub(crate) name: String,
}

/// `Volume`.
#[derive(Clone, Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Volume {
    pub(crate) container_path: String,
    #[serde(default)]
    pub(crate) host_path: Option<String>,
    pub(crate) mode: String,
    #[serde(default)]
    pub(crate) source: Option<Value>,
}
