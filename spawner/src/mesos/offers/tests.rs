#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;

use super::*;
use crate::mesos::proto::{AllocationInfo, Attribute, Text};

fn scalar(name: &str, value: f64) -> Resource {
    Resource {
        name: name.to_owned(),
        kind: ValueType::Scalar,
        scalar: Some(Scalar { value }),
        role: Some("*".to_owned()),
        allocation_info: Some(AllocationInfo {
            role: Some("notebooks".to_owned()),
        }),
        ..Resource::default()
    }
}

fn ports(ranges: &[(u64, u64)]) -> Resource {
    Resource {
        name: "ports".to_owned(),
        kind: ValueType::Ranges,
        ranges: Some(Ranges {
            range: ranges
                .iter()
                .map(|&(begin, end)| Range { begin, end })
                .collect(),
        }),
        ..Resource::default()
    }
}

fn text(name: &str, value: &str) -> Attribute {
    Attribute {
        name: name.to_owned(),
        kind: ValueType::Text,
        text: Some(Text {
            value: value.to_owned(),
        }),
        ..Attribute::default()
    }
}

fn offer(id: &str, cpus: f64, mem: f64, gpus: f64, attrs: &[(&str, &str)]) -> Offer {
    let mut resources = vec![
        scalar("cpus", cpus),
        scalar("mem", mem),
        scalar("disk", 10_000.0),
    ];
    if gpus > 0.0 {
        resources.push(scalar("gpus", gpus));
    }
    resources.push(ports(&[(31000, 31009)]));
    Offer {
        id: Id::new(format!("O-{id}")),
        framework_id: Id::new("F"),
        agent_id: Id::new(format!("S-{id}")),
        hostname: format!("{id}.example.org"),
        resources,
        attributes: attrs.iter().map(|(k, v)| text(k, v)).collect(),
        allocation_info: None,
    }
}

fn demand(id: &str, cpus: f64, mem: f64, gpus: GpuNeed, constraints: &[(&str, &str)]) -> Demand {
    Demand {
        id: id.to_owned(),
        profile: format!("profile-of-{id}"),
        cpus: milli(cpus),
        mem: milli(mem),
        disk: 0,
        gpus,
        ports: 1,
        constraints: constraints
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect(),
        gpu_agents_ok: false,
    }
}

fn placed_on(plan: &Plan) -> BTreeMap<String, String> {
    plan.accepts
        .iter()
        .flat_map(|a| a.placements.iter())
        .map(|p| (p.demand.clone(), p.hostname.clone()))
        .collect()
}

#[test]
fn gpu_and_spark_profiles_land_only_where_they_fit() {
    let offers = [
        offer("cpu-1", 8.0, 16_384.0, 0.0, &[]),
        offer("spark-1", 8.0, 16_384.0, 0.0, &[("spark", "true")]),
        offer("gpu-small", 8.0, 16_384.0, 1.0, &[("gpu", "true")]),
        offer("gpu-big", 32.0, 65_536.0, 4.0, &[("gpu", "true")]),
    ];
    let demands = [
        demand(
            "two-gpus",
            2.0,
            4096.0,
            GpuNeed::Exactly(2),
            &[("gpu", "true")],
        ),
        demand("one-gpu", 2.0, 4096.0, GpuNeed::Exactly(1), &[]),
        demand("spark", 1.0, 1024.0, GpuNeed::None, &[("spark", "true")]),
        demand("plain", 1.0, 1024.0, GpuNeed::None, &[]),
    ];
    let plan = plan(&offers, &demands);
    assert_eq!(
        placed_on(&plan),
        BTreeMap::from([
            ("two-gpus".to_owned(), "gpu-big.example.org".to_owned()),
            // Best fit: the one-GPU agent, keeping the big one's GPUs free.
            ("one-gpu".to_owned(), "gpu-small.example.org".to_owned()),
            ("spark".to_owned(), "spark-1.example.org".to_owned()),
            ("plain".to_owned(), "cpu-1.example.org".to_owned()),
        ])
    );
    assert!(plan.declines.is_empty());
    assert!(plan.unplaced.is_empty());
    let two = plan
        .accepts
        .iter()
        .flat_map(|a| &a.placements)
        .find(|p| p.demand == "two-gpus")
        .unwrap();
    assert_eq!(two.gpus, 2);
    assert_eq!(two.ports, [31000]);
    let names: Vec<(&str, String)> = two
        .resources
        .iter()
        .map(|r| {
            let amount = r
                .scalar
                .map(|s| format_scalar(s.value))
                .unwrap_or_else(|| format!("{:?}", r.ranges.as_ref().unwrap().range));
            (r.name.as_str(), amount)
        })
        .collect();
    assert_eq!(
        names,
        [
            ("cpus", "2".to_owned()),
            ("mem", "4096".to_owned()),
            ("gpus", "2".to_owned()),
            ("ports", "[Range { begin: 31000, end: 31000 }]".to_owned())
        ]
    );
    // The offered resource's metadata travels with the cut.
    assert_eq!(
        two.resources[0].allocation_info,
        offers[3].resources[0].allocation_info
    );
}

#[test]
fn the_reasons_name_the_constraint_and_the_agent() {
    let offers = [
        offer("cpu-1", 8.0, 16_384.0, 0.0, &[("spark", "false")]),
        offer("gpu-1", 8.0, 16_384.0, 1.0, &[("gpu", "true")]),
    ];
    let demands = [
        demand(
            "needs-spark",
            1.0,
            1024.0,
            GpuNeed::None,
            &[("spark", "true")],
        ),
        demand(
            "needs-4-gpus",
            16.0,
            1024.0,
            GpuNeed::Exactly(4),
            &[("gpu", "true")],
        ),
    ];
    let plan = plan(&offers, &demands);
    assert!(plan.accepts.is_empty());
    assert_eq!(plan.declines.len(), 2);
    let spark: Vec<String> = plan.unplaced["needs-spark"]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        spark,
        [
            "agent cpu-1.example.org (S-cpu-1): attribute spark is \"false\", the profile needs \"true\"",
            "agent gpu-1.example.org (S-gpu-1): the agent offers 1 GPU(s), kept for profiles with \
             GPUs (mesos.cpu_on_gpu_agents); attribute spark is missing, the profile needs \"true\"",
        ]
    );
    let gpus: Vec<String> = plan.unplaced["needs-4-gpus"]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        gpus,
        [
            "agent cpu-1.example.org (S-cpu-1): attribute gpu is missing, the profile needs \"true\"; \
             cpus: needs 16, 8 offered; gpus: needs 4, 0 offered",
            "agent gpu-1.example.org (S-gpu-1): cpus: needs 16, 8 offered; gpus: needs 4, 1 offered",
        ]
    );
}

#[test]
fn one_offer_takes_several_servers_until_it_is_used_up() {
    let offers = [offer("a", 3.0, 3072.0, 0.0, &[])];
    let demands: Vec<Demand> = (0..4)
        .map(|i| demand(&format!("d{i}"), 1.0, 1024.0, GpuNeed::None, &[]))
        .collect();
    let plan = plan(&offers, &demands);
    assert_eq!(plan.accepts.len(), 1);
    let ports: Vec<Vec<u16>> = plan.accepts[0]
        .placements
        .iter()
        .map(|p| p.ports.clone())
        .collect();
    assert_eq!(ports, [[31000], [31001], [31002]]);
    let reasons: Vec<String> = plan.unplaced["d3"]
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(
        reasons,
        ["agent a.example.org (S-a): cpus: needs 1, 0 offered; mem: needs 1024 MB, 0 MB offered"]
    );
}

#[test]
fn cpu_servers_may_use_gpu_agents_only_when_allowed_and_only_last() {
    let offers = [
        offer("gpu", 8.0, 8192.0, 2.0, &[]),
        offer("cpu", 8.0, 8192.0, 0.0, &[]),
    ];
    let mut d = demand("x", 1.0, 512.0, GpuNeed::None, &[]);
    d.gpu_agents_ok = true;
    assert_eq!(
        placed_on(&plan(&offers, &[d.clone()]))["x"],
        "cpu.example.org"
    );
    assert_eq!(
        placed_on(&plan(&offers[..1], &[d.clone()]))["x"],
        "gpu.example.org"
    );
    d.gpu_agents_ok = false;
    assert!(plan(&offers[..1], &[d]).unplaced.contains_key("x"));
}

#[test]
fn all_gpus_takes_every_whole_gpu_and_needs_one() {
    let offers = [offer("g", 8.0, 8192.0, 3.0, &[])];
    let plan_all = plan(&offers, &[demand("all", 1.0, 512.0, GpuNeed::All, &[])]);
    assert_eq!(plan_all.accepts[0].placements[0].gpus, 3);
    let none = [offer("c", 8.0, 8192.0, 0.0, &[])];
    let plan_none = plan(&none, &[demand("all", 1.0, 512.0, GpuNeed::All, &[])]);
    assert!(plan_none.unplaced.contains_key("all"));
}

#[test]
fn scalar_attributes_and_the_hostname_pseudo_attribute() {
    let mut o = offer("h1", 4.0, 4096.0, 0.0, &[]);
    o.attributes.push(Attribute {
        name: "gpu_mem".to_owned(),
        kind: ValueType::Scalar,
        scalar: Some(Scalar { value: 80.0 }),
        ..Attribute::default()
    });
    let offers = [o];
    for (constraint, fits) in [
        (("gpu_mem", "80"), true),
        (("gpu_mem", "80.0"), true),
        (("gpu_mem", "40"), false),
        (("hostname", "h1.example.org"), true),
        (("hostname", "h2.example.org"), false),
    ] {
        let d = demand("d", 1.0, 512.0, GpuNeed::None, &[constraint]);
        assert_eq!(
            plan(&offers, &[d]).unplaced.is_empty(),
            fits,
            "{constraint:?}"
        );
    }
}

#[test]
fn special_resources_are_not_used() {
    let mut o = offer("r", 0.0, 0.0, 0.0, &[]);
    o.resources.retain(|r| r.name == "ports");
    let mut revocable = scalar("cpus", 8.0);
    revocable
        .extra
        .insert("revocable".to_owned(), serde_json::json!({}));
    let mut mount = scalar("mem", 8192.0);
    mount.extra.insert(
        "disk".to_owned(),
        serde_json::json!({"source": {"type": "MOUNT"}}),
    );
    o.resources.extend([revocable, mount]);
    let plan = plan(&[o], &[demand("d", 1.0, 512.0, GpuNeed::None, &[])]);
    assert!(plan.unplaced.contains_key("d"));
}

#[test]
fn overlapping_port_ranges_offer_each_port_once() {
    let mut o = offer("p", 8.0, 8192.0, 0.0, &[]);
    o.resources.retain(|r| r.name != "ports");
    o.resources.push(ports(&[(100, 102), (101, 103)]));
    o.resources.push(ports(&[(103, 104), (200, 200)]));
    let mut d = demand("d", 1.0, 1.0, GpuNeed::None, &[]);
    d.ports = 6;
    let plan = plan(&[o.clone()], std::slice::from_ref(&d));
    assert_eq!(
        plan.accepts[0].placements[0].ports,
        [100, 101, 102, 103, 104, 200]
    );
    d.ports = 7;
    let plan = plan_of(&[o], &d);
    assert!(plan.unplaced.contains_key("d"));
    assert_eq!(
        super::subtract(&[(1, 10)], &[(3, 4), (6, 6)]),
        [(1, 2), (5, 5), (7, 10)]
    );
    assert_eq!(super::normalize(vec![(5, 6), (1, 2), (3, 4)]), [(1, 6)]);
    assert_eq!(super::normalize(vec![(5, 6), (1, 3)]), [(1, 3), (5, 6)]);
}

fn plan_of(offers: &[Offer], d: &Demand) -> Plan {
    plan(offers, std::slice::from_ref(d))
}

#[test]
fn no_offers_no_demands() {
    let p = plan(&[], &[demand("d", 1.0, 1.0, GpuNeed::None, &[])]);
    assert_eq!(p.unplaced["d"], []);
    let p = plan(&[offer("a", 1.0, 1.0, 0.0, &[])], &[]);
    assert_eq!(p.declines, [Id::new("O-a")]);
}

// Property tests: random agents and servers.

fn arb_offer(i: usize) -> impl Strategy<Value = Offer> {
    (
        0u32..16_000,
        0u32..64_000,
        prop_oneof![Just(0u32), 1u32..5],
        prop::collection::vec((30_000u64..30_050, 0u64..6), 0..3),
        any::<bool>(),
        any::<bool>(),
        prop::collection::vec(0u32..4_000, 0..3),
    )
        .prop_map(move |(cpus, mem, gpus, ranges, gpu_attr, spark, split)| {
            let mut resources = vec![
                scalar("cpus", f64::from(cpus) / 1000.0),
                scalar("mem", f64::from(mem)),
            ];
            // Some scalars split over several entries (e.g. reserved and unreserved).
            for extra in split {
                resources.push(scalar("cpus", f64::from(extra) / 1000.0));
            }
            if gpus > 0 {
                resources.push(scalar("gpus", f64::from(gpus)));
            }
            let ranges: Vec<(u64, u64)> = ranges.into_iter().map(|(b, len)| (b, b + len)).collect();
            resources.push(ports(&ranges));
            let mut attributes = vec![text("gpu", if gpu_attr { "true" } else { "false" })];
            if spark {
                attributes.push(text("spark", "true"));
            }
            Offer {
                id: Id::new(format!("O{i}")),
                framework_id: Id::new("F"),
                agent_id: Id::new(format!("S{i}")),
                hostname: format!("agent-{i}"),
                resources,
                attributes,
                allocation_info: None,
            }
        })
}

fn arb_offers() -> impl Strategy<Value = Vec<Offer>> {
    (0usize..6).prop_flat_map(|n| (0..n).map(arb_offer).collect::<Vec<_>>())
}

fn arb_demands() -> impl Strategy<Value = Vec<Demand>> {
    prop::collection::vec(
        (
            1u32..6_000,
            1u32..20_000,
            prop_oneof![
                Just(GpuNeed::None),
                (1u32..4).prop_map(GpuNeed::Exactly),
                Just(GpuNeed::All)
            ],
            1usize..4,
            any::<bool>(),
            any::<bool>(),
            any::<bool>(),
        ),
        0..8,
    )
    .prop_map(|ds| {
        ds.into_iter()
            .enumerate()
            .map(
                |(i, (cpus, mem, gpus, ports, want_spark, want_gpu_attr, ok))| {
                    let mut constraints = BTreeMap::new();
                    if want_spark {
                        constraints.insert("spark".to_owned(), "true".to_owned());
                    }
                    if want_gpu_attr {
                        constraints.insert("gpu".to_owned(), "true".to_owned());
                    }
                    Demand {
                        id: format!("d{i}"),
                        profile: "p".to_owned(),
                        cpus: Milli::from(cpus),
                        mem: Milli::from(mem) * 1000,
                        disk: 0,
                        gpus,
                        ports,
                        constraints,
                        gpu_agents_ok: ok,
                    }
                },
            )
            .collect()
    })
}

fn offered(o: &Offer, name: &str) -> Milli {
    o.resources
        .iter()
        .filter(|r| r.name == name)
        .filter_map(|r| r.scalar)
        .map(|s| milli(s.value))
        .sum()
}

fn offered_ports(o: &Offer) -> BTreeSet<u16> {
    o.resources
        .iter()
        .filter(|r| r.name == "ports")
        .flat_map(|r| r.ranges.iter().flat_map(|rs| rs.range.iter()))
        .flat_map(|r| r.begin..=r.end)
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

fn attr<'a>(o: &'a Offer, name: &str) -> Option<&'a str> {
    o.attributes
        .iter()
        .find(|a| a.name == name)
        .and_then(|a| a.text.as_ref())
        .map(|t| t.value.as_str())
}

proptest! {
    #[test]
    fn plans_never_overcommit_and_respect_every_rule(offers in arb_offers(), demands in arb_demands()) {
        let plan = plan(&offers, &demands);
        let by_id: BTreeMap<&str, &Offer> = offers.iter().map(|o| (o.id.value.as_str(), o)).collect();
        let demand_of: BTreeMap<&str, &Demand> = demands.iter().map(|d| (d.id.as_str(), d)).collect();

        // Every offer is accepted or declined, once.
        let mut seen: Vec<&str> = plan.declines.iter().map(|i| i.value.as_str()).collect();
        seen.extend(plan.accepts.iter().map(|a| a.offer_id.value.as_str()));
        seen.sort_unstable();
        let mut all: Vec<&str> = by_id.keys().copied().collect();
        all.sort_unstable();
        prop_assert_eq!(seen, all);

        // Every demand is placed once or reported unplaced, with a reason per offer.
        let placed: Vec<&str> = plan.accepts.iter().flat_map(|a| a.placements.iter()).map(|p| p.demand.as_str()).collect();
        let placed_set: BTreeSet<&str> = placed.iter().copied().collect();
        prop_assert_eq!(placed.len(), placed_set.len());
        for d in &demands {
            prop_assert!(placed_set.contains(d.id.as_str()) != plan.unplaced.contains_key(&d.id));
            if let Some(reasons) = plan.unplaced.get(&d.id) {
                prop_assert_eq!(reasons.len(), offers.len());
                prop_assert!(reasons.iter().all(|m| !m.problems.is_empty()));
            }
        }

        for a in &plan.accepts {
            prop_assert!(!a.placements.is_empty());
            let o = by_id[a.offer_id.value.as_str()];
            let mut used_ports = BTreeSet::new();
            for name in ["cpus", "mem", "disk", "gpus"] {
                let taken: Milli = a.placements.iter()
                    .flat_map(|p| p.resources.iter())
                    .filter(|r| r.name == name)
                    .filter_map(|r| r.scalar)
                    .map(|s| milli(s.value))
                    .sum();
                prop_assert!(taken <= offered(o, name), "{name}: {taken} > {}", offered(o, name));
            }
            for p in &a.placements {
                let d = demand_of[p.demand.as_str()];
                prop_assert_eq!(&p.agent_id, &o.agent_id);
                // What the server asked for, exactly.
                let got = |name: &str| -> Milli {
                    p.resources.iter().filter(|r| r.name == name).filter_map(|r| r.scalar).map(|s| milli(s.value)).sum()
                };
                prop_assert_eq!(got("cpus"), d.cpus);
                prop_assert_eq!(got("mem"), d.mem);
                prop_assert_eq!(got("gpus"), Milli::from(p.gpus) * 1000);
                // Never a GPU server without enough whole GPUs, never fractional GPUs.
                match d.gpus {
                    GpuNeed::None => {
                        prop_assert_eq!(p.gpus, 0);
                        prop_assert!(d.gpu_agents_ok || offered(o, "gpus") == 0);
                    }
                    GpuNeed::Exactly(n) => prop_assert_eq!(p.gpus, n),
                    GpuNeed::All => prop_assert!(p.gpus >= 1),
                }
                // Constraints hold on the chosen agent.
                for (k, v) in &d.constraints {
                    prop_assert_eq!(attr(o, k), Some(v.as_str()));
                }
                // Ports: as many as asked, offered, and not shared with another server.
                prop_assert_eq!(p.ports.len(), d.ports);
                let task_ports: BTreeSet<u16> = p.resources.iter()
                    .filter(|r| r.name == "ports")
                    .flat_map(|r| r.ranges.iter().flat_map(|rs| rs.range.iter()))
                    .flat_map(|r| r.begin..=r.end)
                    .filter_map(|x| u16::try_from(x).ok())
                    .collect();
                prop_assert_eq!(&task_ports, &p.ports.iter().copied().collect::<BTreeSet<u16>>());
                for port in &p.ports {
                    prop_assert!(offered_ports(o).contains(port));
                    prop_assert!(used_ports.insert(*port), "port {port} given twice");
                }
            }
        }
    }

    /// A server alone with offers is placed whenever some offer fits it on its own.
    #[test]
    fn a_lone_server_is_placed_when_any_offer_fits(offers in arb_offers(), demands in arb_demands()) {
        for d in demands {
            let plan = plan(&offers, std::slice::from_ref(&d));
            let fits_somewhere = offers.iter().any(|o| Pool::new(o).problems(&d).is_empty());
            prop_assert_eq!(plan.unplaced.is_empty(), fits_somewhere);
        }
    }
}
