//! The container labels gantry writes. They are the truth about what runs: after a restart the
//! spawner finds its containers, their owners and their GPUs and ports by these alone.

/// The owning user's name.
pub const OWNER: &str = "gantry.owner";
/// The server name; empty for the default server.
pub const SERVER: &str = "gantry.server";
/// The profile id the server was started with.
pub const PROFILE: &str = "gantry.profile";
/// The gantry instance that created the container (see [`crate::names::Instance`]).
pub const INSTANCE: &str = "gantry.instance";
/// GPU device ids held, joined by `,`; absent when none.
pub const GPUS: &str = "gantry.gpus";
/// `exclusive` or `shared`; present with [`GPUS`].
pub const GPU_MODE: &str = "gantry.gpu-mode";
/// Host ports held for a Spark driver: `<driver>,<block manager>`; absent when none.
pub const SPARK_PORTS: &str = "gantry.spark-ports";
