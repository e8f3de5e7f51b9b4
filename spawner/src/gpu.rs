//! GPU inventory and allocation for a Docker host.
//!
//! The engine does no GPU accounting: `--gpus 1` twice gives both containers GPU 0
//! (`shared/reference/mesos-gpu-spark.md` §4.2). So the spawner keeps its own books:
//!
//! * [`GpuInventory`] is the host's devices, from the configuration or from the CDI devices
//!   the engine reports in `GET /info` (`DiscoveredDevices`, API ≥ 1.50, Docker ≥ 28.2):
//!   [`GpuInventory::from_cdi_devices`].
//! * [`GpuAllocations`] is who holds which devices, keyed by container name. It is never the
//!   truth on its own: the containers' labels are ([`hold_labels`]), and after a restart
//!   [`rebuild`] reads them back.
//! * [`allocate`] picks devices for a [`GpuRequest`] or says, with numbers, why it cannot.
//!
//! An exclusive request takes devices nobody holds. A shared request (the profile says
//! `gpu_shared = true`) takes devices no exclusive holder has, least-shared first; shared
//! holders may share a device with each other, never with an exclusive holder.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::num::NonZeroU32;

use crate::labels;

#[cfg(test)]
mod tests;

/// A GPU that could not be named, counted or allocated.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum GpuError {
    /// A device id was empty or held characters other than letters, digits, `-`, `_`, `.`, `:`.
    #[error(
        "GPU device id {0:?} is not valid: use letters, digits, '-', '_', '.' or ':' \
         (an index such as \"0\" or a UUID such as \"GPU-4f1c…\")"
    )]
    BadDeviceId(String),
    /// The same device was listed twice.
    #[error("GPU device {0:?} is listed twice")]
    DuplicateDevice(String),
    /// The profile asks for GPUs and the host has none.
    #[error(
        "this profile needs GPUs and the host has none: list them under docker.gpus or \
         install a CDI spec for them (nvidia-ctk cdi generate)"
    )]
    NoGpus,
    /// Not enough devices are free.
    #[error(
        "cannot allocate {requested} GPU(s) ({mode}): {free} free of {total} on this host{hint}",
        mode = share_word(.shared),
        hint = wait_hint(.free, .total),
    )]
    Insufficient {
        /// What was asked for: a count, or `all`.
        requested: GpuCount,
        /// Whether the request was for shared devices.
        shared: bool,
        /// How many devices could have served the request.
        free: usize,
        /// How many devices the host has.
        total: usize,
    },
    /// A container's GPU label could not be read back.
    #[error("container {container}: label {label} = {value:?} is not valid")]
    BadLabel {
        /// The container's name.
        container: String,
        /// The label's key.
        label: &'static str,
        /// The label's value.
        value: String,
    },
}

/// `shared` or `exclusive`, for messages.
fn share_word(shared: &bool) -> &'static str {
    if *shared { "shared" } else { "exclusive" }
}

/// Advice when some devices are only busy, not missing.
fn wait_hint(free: &usize, total: &usize) -> &'static str {
    if free < total {
        "; wait for another server to stop, or ask for fewer"
    } else {
        ""
    }
}

/// One GPU on a host, as the engine and the NVIDIA toolkit name it: an index (`0`), a UUID
/// (`GPU-4f1c…`) or a MIG device (`MIG-…`, `0:1`). Letters, digits, `-`, `_`, `.`, `:` only,
/// so ids join with `,` in labels and `NVIDIA_VISIBLE_DEVICES` without quoting.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct DeviceId(String);

impl DeviceId {
    /// Parses a device id.
    pub fn new(id: &str) -> Result<Self, GpuError> {
        let ok = !id.is_empty()
            && id.len() <= 128
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"-_.:".contains(&b));
        if ok {
            Ok(Self(id.to_owned()))
        } else {
            Err(GpuError::BadDeviceId(id.to_owned()))
        }
    }

    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DeviceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// How many GPUs a profile asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuCount {
    /// This many devices.
    Exactly(NonZeroU32),
    /// Every device on the host (`gpus = "all"`).
    All,
}

impl fmt::Display for GpuCount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Exactly(n) => write!(f, "{n}"),
            Self::All => f.write_str("all"),
        }
    }
}

/// A profile's GPU request.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuRequest {
    /// How many devices.
    pub count: GpuCount,
    /// Whether the devices may be shared with other shared holders.
    pub shared: bool,
}

/// The GPUs of one host, in a fixed order (the order allocation prefers).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuInventory {
    devices: Vec<DeviceId>,
}

impl GpuInventory {
    /// An inventory of these devices; a device listed twice is an error.
    pub fn new(devices: impl IntoIterator<Item = DeviceId>) -> Result<Self, GpuError> {
        let mut seen = BTreeSet::new();
        let mut list = Vec::new();
        for device in devices {
            if !seen.insert(device.clone()) {
                return Err(GpuError::DuplicateDevice(device.0));
            }
            list.push(device);
        }
        Ok(Self { devices: list })
    }

    /// The devices of CDI kind `kind` (`nvidia.com/gpu`) among fully qualified CDI device
    /// names as `GET /info` lists them (`nvidia.com/gpu=0`). Names of other kinds, the `all`
    /// pseudo-device, duplicates and names that are not valid device ids are skipped, so a
    /// host's other CDI devices do not count as GPUs.
    pub fn from_cdi_devices<'a>(kind: &str, names: impl IntoIterator<Item = &'a str>) -> Self {
        let mut seen = BTreeSet::new();
        let devices = names
            .into_iter()
            .filter_map(|name| name.split_once('='))
            .filter(|(k, id)| *k == kind && *id != "all")
            .filter_map(|(_, id)| DeviceId::new(id).ok())
            .filter(|id| seen.insert(id.clone()))
            .collect();
        Self { devices }
    }

    /// The devices, in allocation order.
    pub fn devices(&self) -> &[DeviceId] {
        &self.devices
    }

    /// How many devices the host has.
    pub fn len(&self) -> usize {
        self.devices.len()
    }

    /// Whether the host has no GPUs.
    pub fn is_empty(&self) -> bool {
        self.devices.is_empty()
    }
}

/// The devices one container holds.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GpuHold {
    /// The devices, in inventory order.
    pub devices: Vec<DeviceId>,
    /// Whether the hold is shared (see the module documentation).
    pub shared: bool,
}

/// Who holds which GPUs, keyed by container name.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GpuAllocations {
    holds: BTreeMap<String, GpuHold>,
}

/// What a device is to one more request.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Use {
    Free,
    Shared(usize),
    Exclusive,
}

impl GpuAllocations {
    /// No holds.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records that `container` holds `hold`, replacing what it held before.
    pub fn insert(&mut self, container: impl Into<String>, hold: GpuHold) {
        self.holds.insert(container.into(), hold);
    }

    /// Forgets `container`'s hold, returning it.
    pub fn remove(&mut self, container: &str) -> Option<GpuHold> {
        self.holds.remove(container)
    }

    /// `container`'s hold, if any.
    pub fn get(&self, container: &str) -> Option<&GpuHold> {
        self.holds.get(container)
    }

    /// Every hold, by container name.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &GpuHold)> {
        self.holds.iter().map(|(k, v)| (k.as_str(), v))
    }

    /// How `device` is held.
    fn use_of(&self, device: &DeviceId) -> Use {
        let mut sharers = 0;
        for hold in self.holds.values().filter(|h| h.devices.contains(device)) {
            if !hold.shared {
                return Use::Exclusive;
            }
            sharers += 1;
        }
        if sharers == 0 {
            Use::Free
        } else {
            Use::Shared(sharers)
        }
    }
}

/// The devices a request could use, with their number of sharers, in inventory order.
fn candidates(
    inventory: &GpuInventory,
    allocations: &GpuAllocations,
    shared: bool,
) -> Vec<(usize, DeviceId)> {
    inventory
        .devices
        .iter()
        .filter_map(|d| match (allocations.use_of(d), shared) {
            (Use::Free, _) => Some((0, d.clone())),
            (Use::Shared(n), true) => Some((n, d.clone())),
            _ => None,
        })
        .collect()
}

/// Picks devices for `request`, given who holds what now. The result is in inventory order;
/// the caller records it (container labels, then [`GpuAllocations::insert`]).
///
/// Exclusive requests take the first free devices. Shared requests take the least-shared
/// devices that no exclusive holder has. `All` needs every device usable. A request that
/// cannot be met fails with [`GpuError::Insufficient`] naming requested, free and total.
pub fn allocate(
    inventory: &GpuInventory,
    allocations: &GpuAllocations,
    request: GpuRequest,
) -> Result<Vec<DeviceId>, GpuError> {
    if inventory.is_empty() {
        return Err(GpuError::NoGpus);
    }
    let mut usable = candidates(inventory, allocations, request.shared);
    let total = inventory.len();
    let wanted = match request.count {
        GpuCount::All => total,
        GpuCount::Exactly(n) => usize::try_from(n.get()).unwrap_or(usize::MAX),
    };
    if usable.len() < wanted {
        return Err(GpuError::Insufficient {
            requested: request.count,
            shared: request.shared,
            free: usable.len(),
            total,
        });
    }
    // Stable sort: equal sharing keeps inventory order.
    usable.sort_by_key(|(sharers, _)| *sharers);
    let picked: BTreeSet<DeviceId> = usable.into_iter().take(wanted).map(|(_, d)| d).collect();
    Ok(inventory
        .devices
        .iter()
        .filter(|d| picked.contains(*d))
        .cloned()
        .collect())
}

/// Free and total GPUs as one profile sees them, for the spawn page and the API.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GpuAvailability {
    /// Devices a request of this kind (shared or exclusive) could use now.
    pub free: usize,
    /// Devices on the host.
    pub total: usize,
}

impl GpuAvailability {
    /// Whether a request for `count` devices would succeed now.
    pub fn can_satisfy(&self, count: GpuCount) -> bool {
        match count {
            GpuCount::All => self.total > 0 && self.free == self.total,
            GpuCount::Exactly(n) => usize::try_from(n.get()).is_ok_and(|n| n <= self.free),
        }
    }
}

/// Free and total GPUs for a request that is `shared` or exclusive.
pub fn availability(
    inventory: &GpuInventory,
    allocations: &GpuAllocations,
    shared: bool,
) -> GpuAvailability {
    GpuAvailability {
        free: candidates(inventory, allocations, shared).len(),
        total: inventory.len(),
    }
}

/// The labels that record `hold` on its container: [`labels::GPUS`] (ids joined by `,`) and
/// [`labels::GPU_MODE`] (`exclusive` or `shared`).
pub fn hold_labels(hold: &GpuHold) -> BTreeMap<String, String> {
    let ids: Vec<&str> = hold.devices.iter().map(DeviceId::as_str).collect();
    let mode = if hold.shared { "shared" } else { "exclusive" };
    BTreeMap::from([
        (labels::GPUS.to_owned(), ids.join(",")),
        (labels::GPU_MODE.to_owned(), mode.to_owned()),
    ])
}

/// Rebuilds the allocation book from running containers' names and labels, as after a restart.
///
/// Containers without a (non-empty) [`labels::GPUS`] label hold nothing. A missing
/// [`labels::GPU_MODE`] reads as exclusive, the safer guess. Holds on devices the inventory no
/// longer lists are kept: the labels say what runs, and the container still has the device.
/// Labels that cannot be parsed are an error naming the container, since a guess could hand
/// the same GPU out twice.
pub fn rebuild<'a, I>(containers: I) -> Result<GpuAllocations, GpuError>
where
    I: IntoIterator<Item = (&'a str, &'a BTreeMap<String, String>)>,
{
    let mut allocations = GpuAllocations::new();
    for (container, labels_of) in containers {
        let Some(ids) = labels_of.get(labels::GPUS).filter(|v| !v.is_empty()) else {
            continue;
        };
        let bad = |label: &'static str, value: &str| GpuError::BadLabel {
            container: container.to_owned(),
            label,
            value: value.to_owned(),
        };
        let devices = ids
            .split(',')
            .map(DeviceId::new)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|_| bad(labels::GPUS, ids))?;
        let shared = match labels_of.get(labels::GPU_MODE).map(String::as_str) {
            None | Some("exclusive") => false,
            Some("shared") => true,
            Some(other) => return Err(bad(labels::GPU_MODE, other)),
        };
        allocations.insert(container, GpuHold { devices, shared });
    }
    Ok(allocations)
}

/// Why a stopped container cannot take up the GPUs recorded on it again: [`rehold`].
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum StaleGpus {
    /// The profile now asks for other GPUs (another count, shared instead of exclusive, or
    /// GPUs where it had none or none where it had some).
    #[error("its profile now asks for other GPUs than it was created with")]
    Changed,
    /// A recorded device is no longer in the host's inventory.
    #[error("its GPU {0} is no longer in the host's inventory")]
    Missing(DeviceId),
    /// A recorded device is held by another server now.
    #[error("its GPU {0} is in use by another server")]
    Taken(DeviceId),
}

/// Whether a stopped container may start again with the GPUs recorded on it (`kept`, from its
/// labels) for a profile that now asks for `request`, given the host's `inventory` and who
/// holds what now (`allocations`, in which the container itself holds nothing). A container's
/// device ids are baked into its configuration, so it can only ever run with exactly those:
/// they must still be what the profile asks for, still exist, and be free for a hold of its
/// mode (an exclusive hold needs them unheld; a shared one needs no exclusive holder). On
/// success, the hold to book again (`None` for a container without GPUs).
pub fn rehold(
    inventory: Option<&GpuInventory>,
    allocations: &GpuAllocations,
    kept: Option<&GpuHold>,
    request: Option<GpuRequest>,
) -> Result<Option<GpuHold>, StaleGpus> {
    let (kept, request) = match (kept, request) {
        (None, None) => return Ok(None),
        (Some(kept), Some(request)) => (kept, request),
        _ => return Err(StaleGpus::Changed),
    };
    let devices = inventory.map(GpuInventory::devices).unwrap_or_default();
    let count_fits = match request.count {
        GpuCount::All => {
            kept.devices.len() == devices.len() && devices.iter().all(|d| kept.devices.contains(d))
        }
        GpuCount::Exactly(n) => usize::try_from(n.get()).is_ok_and(|n| n == kept.devices.len()),
    };
    if kept.shared != request.shared || !count_fits {
        return Err(StaleGpus::Changed);
    }
    for device in &kept.devices {
        if !devices.contains(device) {
            return Err(StaleGpus::Missing(device.clone()));
        }
        let free = match allocations.use_of(device) {
            Use::Free => true,
            Use::Shared(_) => kept.shared,
            Use::Exclusive => false,
        };
        if !free {
            return Err(StaleGpus::Taken(device.clone()));
        }
    }
    Ok(Some(kept.clone()))
}
