//! Notebook server backends for gantry: where a user's server runs and how it gets there.
//!
//! This crate owns the [`Spawner`] trait that every backend implements (the Docker engine
//! first, Apache Mesos and Docker Swarm later), the admin-defined profiles with their GPU and
//! Spark settings, GPU inventory and allocation, Spark port allocation, UID/GID mapping, and
//! the container labels that restart recovery reads back. It never depends on `auth`:
//! identities reach it as plain [`Identity`] values from the composing binary. It reads no
//! environment or file and binds no socket; the binary parses the configuration file,
//! connects the engine client and hands both over. (The Docker backend's only connections of
//! its own are readiness probes to the servers it started.)
//!
//! The pure core, each part with table and property tests beside it:
//! [`names`] (server names, profile ids, collision-free container names), [`config`] and
//! [`profile`] (the TOML schema and its check, with messages that name the key and the fix),
//! [`gpu`] (inventory, allocation, rebuild from labels), [`ports`] (Spark driver ports),
//! [`request`] (profile + identity + server → [`ContainerSpec`], the engine request in our own
//! terms) and [`spawner`] (the trait, its status, progress and error types, and with the
//! `test-util` feature an in-memory `FakeSpawner`). Around it the one shell so far,
//! [`docker`]: [`DockerSpawner`] drives the Docker engine through `bollard` on a client the
//! binary connects and hands in; `tests/docker.rs` runs it against a real engine.

pub mod config;
pub mod docker;
pub mod gpu;
pub mod labels;
pub mod mesos;
pub mod names;
pub mod ports;
mod probe;
pub mod profile;
pub mod request;
pub mod spawner;
mod units;

pub use config::{
    ConfigErrors, ConfigIssue, GpuStyle, SpawnSettings, SpawnerConfig, ValidatedConfig,
};
pub use docker::{DockerError, DockerOptions, DockerSpawner, ExitInfo, Recovery};
pub use gpu::{DeviceId, GpuAllocations, GpuError, GpuInventory, GpuRequest};
pub use mesos::{FileStore, FrameworkStore, MemoryStore, MesosError, MesosSpawner, MesosStep};
pub use names::{Identity, Instance, NameError, ProfileId, ServerName};
pub use ports::{PortError, SparkPorts};
pub use profile::Profile;
pub use request::{Allocation, ContainerSpec, SpecError, container_spec};
pub use spawner::{
    BoxFuture, ProgressEvent, ProgressReceiver, ProgressSender, ServerKey, ServerRecord,
    ServerStatus, SpawnError, SpawnRequest, Spawner,
};
pub use spawner::{LayerPhase, LayerProgress};
