//! Host ports for Spark drivers in bridge networking.
//!
//! Executors and the standalone master connect back to a client-mode driver at the address and
//! ports it advertises, so a bridged notebook container must publish its driver and
//! block-manager ports one-to-one: host port = container port = the advertised port
//! (`shared/reference/mesos-gpu-spark.md` §5.1). Like GPUs, the ports are the spawner's to
//! hand out; they are recorded in the [`labels::SPARK_PORTS`] label and read back with
//! [`ports_in_use`] after a restart.
//!
//! The spawner only knows the ports its own containers hold. If another process on the host
//! has taken one, the engine refuses to start the container ("port is already allocated");
//! the lifecycle then retries with that port added to the in-use set.

use std::collections::{BTreeMap, BTreeSet};

use crate::labels;

#[cfg(test)]
mod tests;

/// Why Spark ports could not be chosen or read back.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PortError {
    /// Fewer than two ports of the range are free.
    #[error(
        "no two free ports left in the Spark port range {start}-{end} ({in_use} in use): \
         widen docker.spark_ports or stop some Spark servers"
    )]
    Exhausted {
        /// First port of the range.
        start: u16,
        /// Last port of the range.
        end: u16,
        /// Ports of the range already held.
        in_use: usize,
    },
    /// A container's [`labels::SPARK_PORTS`] label could not be read back.
    #[error(
        "container {container}: label {} = {value:?} is not valid",
        labels::SPARK_PORTS
    )]
    BadLabel {
        /// The container's name.
        container: String,
        /// The label's value.
        value: String,
    },
}

/// An inclusive range of host ports, from 1024 up (ports below need privileges on the host and
/// belong to system services).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortRange {
    start: u16,
    end: u16,
}

impl PortRange {
    /// The range `start..=end`, if `1024 <= start <= end`.
    pub fn new(start: u16, end: u16) -> Option<Self> {
        (1024 <= start && start <= end).then_some(Self { start, end })
    }

    /// The first port.
    pub fn start(&self) -> u16 {
        self.start
    }

    /// The last port.
    pub fn end(&self) -> u16 {
        self.end
    }
}

impl Default for PortRange {
    /// 40000-40999: clear of the usual service ports and of Linux's default ephemeral range
    /// (32768-60999 overlaps it, but the engine reserves published ports, so an ephemeral
    /// client socket only collides while it exists, and the lifecycle retries).
    fn default() -> Self {
        Self {
            start: 40_000,
            end: 40_999,
        }
    }
}

/// The two ports a Spark driver in a bridged container listens on and advertises.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SparkPorts {
    /// `spark.driver.port`, the driver's RPC endpoint.
    pub driver: u16,
    /// `spark.driver.blockManager.port` (and `spark.blockManager.port`).
    pub block_manager: u16,
}

impl SparkPorts {
    /// The value of the [`labels::SPARK_PORTS`] label: `<driver>,<block manager>`.
    pub fn label_value(&self) -> String {
        format!("{},{}", self.driver, self.block_manager)
    }

    /// Parses a [`labels::SPARK_PORTS`] label value.
    pub fn from_label_value(value: &str) -> Option<Self> {
        let (driver, block_manager) = value.split_once(',')?;
        let ports = Self {
            driver: driver.parse().ok()?,
            block_manager: block_manager.parse().ok()?,
        };
        (ports.driver != ports.block_manager).then_some(ports)
    }
}

/// The two lowest ports of `range` not in `in_use`.
pub fn allocate_spark_ports(
    range: PortRange,
    in_use: &BTreeSet<u16>,
) -> Result<SparkPorts, PortError> {
    let mut free = (range.start..=range.end).filter(|p| !in_use.contains(p));
    match (free.next(), free.next()) {
        (Some(driver), Some(block_manager)) => Ok(SparkPorts {
            driver,
            block_manager,
        }),
        _ => Err(PortError::Exhausted {
            start: range.start,
            end: range.end,
            in_use: in_use.range(range.start..=range.end).count(),
        }),
    }
}

/// The host ports held by containers, from their names and labels.
pub fn ports_in_use<'a, I>(containers: I) -> Result<BTreeSet<u16>, PortError>
where
    I: IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
{
    let mut in_use = BTreeSet::new();
    for (container, labels_of) in containers {
        if let Some(value) = labels_of.get(labels::SPARK_PORTS) {
            let ports = SparkPorts::from_label_value(value).ok_or_else(|| PortError::BadLabel {
                container: container.to_owned(),
                value: value.clone(),
            })?;
            in_use.insert(ports.driver);
            in_use.insert(ports.block_manager);
        }
    }
    Ok(in_use)
}
