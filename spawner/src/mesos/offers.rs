//! Offer matching, as one pure function: [`plan`] takes the offers of one `OFFERS` event and
//! the servers waiting for a place, and says which offer each server goes to (with the exact
//! resources and ports to take), which offers to decline, and why every other agent did not
//! fit each server that found no place.
//!
//! The rules:
//!
//! * Resources are counted in thousandths, as Mesos does (three decimal digits), so sums are
//!   exact. A server takes `cpus`, `mem` and `disk` (when it asks for any), `gpus` in whole
//!   numbers (`"all"` takes every whole GPU the offer has, at least one), and as many `ports`
//!   as it needs, the lowest free ones of the offered ranges.
//! * An offer may take several servers; what they take together never exceeds it.
//! * Agent attributes must satisfy the server's constraints: `gpu = "true"` matches a TEXT
//!   attribute `true`, `gpu_mem = "80"` a SCALAR 80; `hostname` matches the agent's host name
//!   unless an attribute of that name exists.
//! * A server without GPUs does not land on an agent that offers GPUs unless allowed
//!   (`GPU_RESOURCES` asks frameworks to keep those agents for GPU work); a GPU server goes
//!   to the fitting offer with the fewest GPUs left, to keep big GPU hosts free.
//! * Resources marked revocable or shared, disk resources with a source (mount or path
//!   disks), and resources from resource providers are not used.

use std::collections::BTreeMap;
use std::fmt;

use super::proto::{Id, Offer, Range, Ranges, Resource, Scalar, ValueType, format_scalar};

#[cfg(test)]
mod tests;

/// A quantity in thousandths of its unit (CPUs, MB, GPUs).
pub type Milli = i64;

/// Thousandths of `value`, rounded as Mesos rounds; negative and non-finite values are 0.
pub fn milli(value: f64) -> Milli {
    if value.is_finite() && value > 0.0 {
        // Offers are far below i64::MAX / 1000.
        (value * 1000.0).round() as Milli
    } else {
        0
    }
}

fn unmilli(m: Milli) -> f64 {
    m as f64 / 1000.0
}

/// How many GPUs a server needs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GpuNeed {
    /// None.
    None,
    /// This many whole GPUs.
    Exactly(u32),
    /// Every GPU the offer has; at least one.
    All,
}

/// One server waiting for a place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Demand {
    /// The task id it will get.
    pub id: String,
    /// Its profile, for messages.
    pub profile: String,
    /// CPUs in thousandths.
    pub cpus: Milli,
    /// Memory in thousandths of an MB.
    pub mem: Milli,
    /// Disk in thousandths of an MB; 0 asks for none.
    pub disk: Milli,
    /// GPUs.
    pub gpus: GpuNeed,
    /// Host ports: the notebook's, then any Spark ports.
    pub ports: usize,
    /// Attribute constraints, name to value.
    pub constraints: BTreeMap<String, String>,
    /// Whether it may land on an agent offering GPUs although it uses none.
    pub gpu_agents_ok: bool,
}

/// Where one server goes.
#[derive(Clone, Debug, PartialEq)]
pub struct Placement {
    /// The server's task id ([`Demand::id`]).
    pub demand: String,
    /// The offer.
    pub offer_id: Id,
    /// The offer's agent.
    pub agent_id: Id,
    /// The agent's host name.
    pub hostname: String,
    /// The resources to put in the task, cut from the offer's with their metadata.
    pub resources: Vec<Resource>,
    /// The host ports taken, in the order the server needs them.
    pub ports: Vec<u16>,
    /// The GPUs taken.
    pub gpus: u32,
}

/// An offer that takes servers.
#[derive(Clone, Debug, PartialEq)]
pub struct Accepted {
    /// The offer.
    pub offer_id: Id,
    /// Its agent.
    pub agent_id: Id,
    /// The servers it takes.
    pub placements: Vec<Placement>,
}

/// Why one agent's offer did not fit one server.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Mismatch {
    /// The agent.
    pub agent_id: String,
    /// Its host name.
    pub hostname: String,
    /// Everything that failed.
    pub problems: Vec<Problem>,
}

/// One failed requirement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Problem {
    /// A constraint on an agent attribute.
    Attribute {
        /// The attribute.
        name: String,
        /// The value the profile needs.
        wanted: String,
        /// The agent's value, if it has the attribute.
        found: Option<String>,
    },
    /// Not enough of a scalar resource left in the offer.
    Short {
        /// `cpus`, `mem`, `disk` or `gpus`.
        resource: &'static str,
        /// What the server needs, in thousandths.
        wanted: Milli,
        /// What is left, in thousandths.
        left: Milli,
    },
    /// Not enough free ports in the offer.
    Ports {
        /// How many the server needs.
        wanted: usize,
        /// How many are left.
        left: usize,
    },
    /// The agent offers GPUs and the server uses none.
    GpuAgent {
        /// The GPUs offered, in thousandths.
        gpus: Milli,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Attribute {
                name,
                wanted,
                found: None,
            } => write!(
                f,
                "attribute {name} is missing, the profile needs {wanted:?}"
            ),
            Self::Attribute {
                name,
                wanted,
                found: Some(found),
            } => write!(
                f,
                "attribute {name} is {found:?}, the profile needs {wanted:?}"
            ),
            Self::Short {
                resource,
                wanted,
                left,
            } => {
                let unit = if matches!(*resource, "mem" | "disk") {
                    " MB"
                } else {
                    ""
                };
                write!(
                    f,
                    "{resource}: needs {}{unit}, {}{unit} offered",
                    format_scalar(unmilli(*wanted)),
                    format_scalar(unmilli(*left))
                )
            }
            Self::Ports { wanted, left } => write!(f, "ports: needs {wanted}, {left} offered"),
            Self::GpuAgent { gpus } => write!(
                f,
                "the agent offers {} GPU(s), kept for profiles with GPUs \
                 (mesos.cpu_on_gpu_agents)",
                format_scalar(unmilli(*gpus))
            ),
        }
    }
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "agent {} ({}): ", self.hostname, self.agent_id)?;
        for (i, p) in self.problems.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{p}")?;
        }
        Ok(())
    }
}

/// What to do with one `OFFERS` event.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Plan {
    /// Offers to accept, with the servers each takes.
    pub accepts: Vec<Accepted>,
    /// Offers to decline.
    pub declines: Vec<Id>,
    /// Servers that found no place, with why each offer did not fit.
    pub unplaced: BTreeMap<String, Vec<Mismatch>>,
}

/// One usable scalar entry of an offer.
#[derive(Clone, Debug)]
struct ScalarEntry {
    index: usize,
    left: Milli,
}

/// One usable ranges entry (`ports`) of an offer: its free intervals, lowest first.
#[derive(Clone, Debug)]
struct RangeEntry {
    index: usize,
    free: Vec<(u64, u64)>,
}

/// An offer with what is left of it in this round.
#[derive(Clone, Debug)]
struct Pool<'a> {
    offer: &'a Offer,
    scalars: BTreeMap<String, Vec<ScalarEntry>>,
    ports: Vec<RangeEntry>,
    offered_gpus: Milli,
    placements: Vec<Placement>,
}

/// Whether a resource may be used: not revocable, shared, a sourced disk or a provider's.
fn usable(r: &Resource) -> bool {
    let sourced_disk = r
        .extra
        .get("disk")
        .is_some_and(|d| d.get("source").is_some());
    let special = ["revocable", "shared", "provider_id"]
        .iter()
        .any(|k| r.extra.contains_key(*k));
    !(sourced_disk || special)
}

impl<'a> Pool<'a> {
    fn new(offer: &'a Offer) -> Self {
        let mut scalars: BTreeMap<String, Vec<ScalarEntry>> = BTreeMap::new();
        let mut ports = Vec::new();
        // Ports already in an earlier entry: a port is offered once, however it is written.
        let mut covered: Vec<(u64, u64)> = Vec::new();
        for (index, r) in offer.resources.iter().enumerate() {
            if !usable(r) {
                continue;
            }
            match (r.kind, &r.scalar, &r.ranges) {
                (ValueType::Scalar, Some(s), _) => {
                    let left = milli(s.value);
                    if left > 0 {
                        scalars
                            .entry(r.name.clone())
                            .or_default()
                            .push(ScalarEntry { index, left });
                    }
                }
                (ValueType::Ranges, _, Some(ranges)) if r.name == "ports" => {
                    let listed = normalize(
                        ranges
                            .range
                            .iter()
                            .map(|r| (r.begin.max(1), r.end.min(u64::from(u16::MAX))))
                            .filter(|(b, e)| b <= e)
                            .collect(),
                    );
                    let free = subtract(&listed, &covered);
                    covered = normalize([covered, listed].concat());
                    ports.push(RangeEntry { index, free });
                }
                _ => {}
            }
        }
        let offered_gpus = scalars
            .get("gpus")
            .map_or(0, |e| e.iter().map(|e| e.left).sum());
        Self {
            offer,
            scalars,
            ports,
            offered_gpus,
            placements: Vec::new(),
        }
    }

    fn left(&self, name: &str) -> Milli {
        self.scalars
            .get(name)
            .map_or(0, |e| e.iter().map(|e| e.left).sum())
    }

    fn whole_gpus_left(&self) -> Milli {
        self.left("gpus") / 1000 * 1000
    }

    fn ports_left(&self) -> usize {
        self.ports
            .iter()
            .flat_map(|e| e.free.iter())
            .map(|(b, e)| usize::try_from(e - b + 1).unwrap_or(usize::MAX))
            .fold(0usize, usize::saturating_add)
    }

    /// The agent's value of attribute `name` as text, and as a number when it is a scalar.
    fn attribute_value(&self, name: &str) -> Option<(String, Option<f64>)> {
        if let Some(a) = self.offer.attributes.iter().find(|a| a.name == name) {
            let scalar = match a.kind {
                ValueType::Scalar => a.scalar.map(|s| s.value),
                _ => None,
            };
            return Some((a.value_text(), scalar));
        }
        (name == "hostname").then(|| (self.offer.hostname.clone(), None))
    }

    /// What keeps `demand` from fitting what is left of this offer.
    fn problems(&self, demand: &Demand) -> Vec<Problem> {
        let mut problems = Vec::new();
        if demand.gpus == GpuNeed::None && !demand.gpu_agents_ok && self.offered_gpus > 0 {
            problems.push(Problem::GpuAgent {
                gpus: self.offered_gpus,
            });
        }
        for (name, wanted) in &demand.constraints {
            let found = self.attribute_value(name);
            let ok = match &found {
                Some((text, Some(scalar))) => {
                    text == wanted
                        || wanted
                            .parse::<f64>()
                            .is_ok_and(|w| (w - scalar).abs() < 0.0005)
                }
                Some((text, None)) => text == wanted,
                None => false,
            };
            if !ok {
                problems.push(Problem::Attribute {
                    name: name.clone(),
                    wanted: wanted.clone(),
                    found: found.map(|(text, _)| text),
                });
            }
        }
        for (resource, wanted) in [
            ("cpus", demand.cpus),
            ("mem", demand.mem),
            ("disk", demand.disk),
        ] {
            let left = self.left(resource);
            if wanted > 0 && left < wanted {
                problems.push(Problem::Short {
                    resource,
                    wanted,
                    left,
                });
            }
        }
        let gpus_wanted = match demand.gpus {
            GpuNeed::None => 0,
            GpuNeed::Exactly(n) => Milli::from(n) * 1000,
            GpuNeed::All => 1000,
        };
        let gpus_left = self.whole_gpus_left();
        if gpus_wanted > gpus_left {
            problems.push(Problem::Short {
                resource: "gpus",
                wanted: gpus_wanted,
                left: gpus_left,
            });
        }
        let ports_left = self.ports_left();
        if demand.ports > ports_left {
            problems.push(Problem::Ports {
                wanted: demand.ports,
                left: ports_left,
            });
        }
        problems
    }

    /// Cuts `amount` of scalar `name` from the offer's entries, as task resources.
    fn take_scalar(&mut self, name: &str, mut amount: Milli) -> Vec<Resource> {
        let mut out = Vec::new();
        let Some(entries) = self.scalars.get_mut(name) else {
            return out;
        };
        for entry in entries.iter_mut() {
            if amount == 0 {
                break;
            }
            let take = entry.left.min(amount);
            if take == 0 {
                continue;
            }
            entry.left -= take;
            amount -= take;
            let mut r = self.offer.resources[entry.index].clone();
            r.scalar = Some(Scalar {
                value: unmilli(take),
            });
            out.push(r);
        }
        out
    }

    /// Takes the `n` lowest free ports, as task resources (one per offered entry used).
    fn take_ports(&mut self, n: usize) -> (Vec<Resource>, Vec<u16>) {
        let mut resources = Vec::new();
        let mut taken: Vec<u16> = Vec::new();
        for entry in &mut self.ports {
            let mut here: Vec<u64> = Vec::new();
            while taken.len() + here.len() < n {
                let Some(&(begin, end)) = entry.free.first() else {
                    break;
                };
                here.push(begin);
                if begin == end {
                    entry.free.remove(0);
                } else {
                    entry.free[0].0 = begin + 1;
                }
            }
            if !here.is_empty() {
                let mut r = self.offer.resources[entry.index].clone();
                r.ranges = Some(Ranges {
                    range: merge(&here),
                });
                resources.push(r);
                // Ports are clamped to u16 in `Pool::new`.
                taken.extend(here.iter().filter_map(|p| u16::try_from(*p).ok()));
            }
            if taken.len() >= n {
                break;
            }
        }
        (resources, taken)
    }

    fn place(&mut self, demand: &Demand) {
        let gpus = match demand.gpus {
            GpuNeed::None => 0,
            GpuNeed::Exactly(n) => Milli::from(n) * 1000,
            GpuNeed::All => self.whole_gpus_left(),
        };
        let mut resources = Vec::new();
        for (name, amount) in [
            ("cpus", demand.cpus),
            ("mem", demand.mem),
            ("disk", demand.disk),
            ("gpus", gpus),
        ] {
            if amount > 0 {
                resources.extend(self.take_scalar(name, amount));
            }
        }
        let (port_resources, ports) = self.take_ports(demand.ports);
        resources.extend(port_resources);
        self.placements.push(Placement {
            demand: demand.id.clone(),
            offer_id: self.offer.id.clone(),
            agent_id: self.offer.agent_id.clone(),
            hostname: self.offer.hostname.clone(),
            resources,
            ports,
            gpus: u32::try_from(gpus / 1000).unwrap_or(u32::MAX),
        });
    }
}

/// Sorted, non-overlapping, non-adjacent intervals covering the same values.
fn normalize(mut intervals: Vec<(u64, u64)>) -> Vec<(u64, u64)> {
    intervals.sort_unstable();
    let mut out: Vec<(u64, u64)> = Vec::new();
    for (b, e) in intervals {
        match out.last_mut() {
            Some(last) if b <= last.1.saturating_add(1) => last.1 = last.1.max(e),
            _ => out.push((b, e)),
        }
    }
    out
}

/// The values of the normalized `a` that are not in the normalized `b`.
fn subtract(a: &[(u64, u64)], b: &[(u64, u64)]) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    for &(mut begin, end) in a {
        for &(cb, ce) in b {
            if ce < begin || cb > end {
                continue;
            }
            if cb > begin {
                out.push((begin, cb - 1));
            }
            begin = ce.saturating_add(1);
            if begin > end {
                break;
            }
        }
        if begin <= end {
            out.push((begin, end));
        }
    }
    out
}

/// Ranges covering the sorted `ports`, adjacent ones merged.
fn merge(ports: &[u64]) -> Vec<Range> {
    let mut out: Vec<Range> = Vec::new();
    for &p in ports {
        match out.last_mut() {
            Some(last) if last.end + 1 == p => last.end = p,
            _ => out.push(Range { begin: p, end: p }),
        }
    }
    out
}

/// Places `demands` (oldest first) on `offers`; see the module documentation.
pub fn plan(offers: &[Offer], demands: &[Demand]) -> Plan {
    let mut pools: Vec<Pool<'_>> = offers.iter().map(Pool::new).collect();
    let mut unplaced = BTreeMap::new();
    for demand in demands {
        let mut mismatches = Vec::new();
        let mut fitting = Vec::new();
        for (i, pool) in pools.iter().enumerate() {
            let problems = pool.problems(demand);
            if problems.is_empty() {
                fitting.push(i);
            } else {
                mismatches.push(Mismatch {
                    agent_id: pool.offer.agent_id.value.clone(),
                    hostname: pool.offer.hostname.clone(),
                    problems,
                });
            }
        }
        let chosen = if demand.gpus == GpuNeed::None {
            // Agents without GPUs first, then (when allowed) the others.
            fitting
                .iter()
                .copied()
                .min_by_key(|&i| (pools[i].offered_gpus > 0, i))
        } else {
            // Best fit: the fewest whole GPUs left.
            fitting
                .iter()
                .copied()
                .min_by_key(|&i| (pools[i].whole_gpus_left(), i))
        };
        match chosen {
            Some(i) => pools[i].place(demand),
            None => {
                unplaced.insert(demand.id.clone(), mismatches);
            }
        }
    }
    let mut out = Plan {
        unplaced,
        ..Plan::default()
    };
    for pool in pools {
        if pool.placements.is_empty() {
            out.declines.push(pool.offer.id.clone());
        } else {
            out.accepts.push(Accepted {
                offer_id: pool.offer.id.clone(),
                agent_id: pool.offer.agent_id.clone(),
                placements: pool.placements,
            });
        }
    }
    out
}
