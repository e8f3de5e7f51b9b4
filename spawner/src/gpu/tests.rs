use super::*;
use proptest::prelude::*;

fn ids(list: &[&str]) -> Vec<DeviceId> {
    list.iter().map(|s| DeviceId::new(s).unwrap()).collect()
}

fn inventory(n: usize) -> GpuInventory {
    GpuInventory::new((0..n).map(|i| DeviceId::new(&i.to_string()).unwrap())).unwrap()
}

fn exactly(n: u32, shared: bool) -> GpuRequest {
    GpuRequest {
        count: GpuCount::Exactly(NonZeroU32::new(n).unwrap()),
        shared,
    }
}

fn all(shared: bool) -> GpuRequest {
    GpuRequest {
        count: GpuCount::All,
        shared,
    }
}

#[test]
fn device_ids() {
    for ok in [
        "0",
        "GPU-4f1c2a3b-0000-1111-2222-333344445555",
        "MIG-4f1c.2",
        "0:1",
    ] {
        assert_eq!(DeviceId::new(ok).unwrap().as_str(), ok);
    }
    for bad in ["", "0,1", "a b", "x=y", "MIG-1/2"] {
        assert_eq!(
            DeviceId::new(bad),
            Err(GpuError::BadDeviceId(bad.to_owned()))
        );
    }
    assert_eq!(
        GpuInventory::new(ids(&["0", "1", "0"])),
        Err(GpuError::DuplicateDevice("0".to_owned()))
    );
}

#[test]
fn inventory_from_cdi_devices() {
    // As GET /info lists DiscoveredDevices (Source "cdi") on Docker 28.2+.
    let names = [
        "nvidia.com/gpu=0",
        "nvidia.com/gpu=1",
        "nvidia.com/gpu=all",
        "nvidia.com/gpu=GPU-4f1c2a3b",
        "vendor1.com/device=foo",
        "nvidia.com/gpu=1",
        "garbage",
    ];
    let inv = GpuInventory::from_cdi_devices("nvidia.com/gpu", names);
    assert_eq!(inv.devices(), ids(&["0", "1", "GPU-4f1c2a3b"]));
    assert!(GpuInventory::from_cdi_devices("gantry.test/gpu", names).is_empty());
}

#[test]
fn allocation_table() {
    let inv = inventory(4);
    let mut book = GpuAllocations::new();
    let a = allocate(&inv, &book, exactly(2, false)).unwrap();
    assert_eq!(a, ids(&["0", "1"]));
    book.insert(
        "a",
        GpuHold {
            devices: a,
            shared: false,
        },
    );
    // Shared requests avoid exclusive holders and spread over the least-shared devices.
    let s1 = allocate(&inv, &book, exactly(1, true)).unwrap();
    assert_eq!(s1, ids(&["2"]));
    book.insert(
        "s1",
        GpuHold {
            devices: s1,
            shared: true,
        },
    );
    let s2 = allocate(&inv, &book, exactly(1, true)).unwrap();
    assert_eq!(s2, ids(&["3"]));
    book.insert(
        "s2",
        GpuHold {
            devices: s2,
            shared: true,
        },
    );
    let s3 = allocate(&inv, &book, exactly(2, true)).unwrap();
    assert_eq!(s3, ids(&["2", "3"]));
    book.insert(
        "s3",
        GpuHold {
            devices: s3,
            shared: true,
        },
    );
    // No exclusive device is left: 0 and 1 are taken, 2 and 3 are shared.
    assert_eq!(
        allocate(&inv, &book, exactly(1, false)),
        Err(GpuError::Insufficient {
            requested: GpuCount::Exactly(NonZeroU32::new(1).unwrap()),
            shared: false,
            free: 0,
            total: 4
        })
    );
    assert_eq!(
        availability(&inv, &book, false),
        GpuAvailability { free: 0, total: 4 }
    );
    assert_eq!(
        availability(&inv, &book, true),
        GpuAvailability { free: 2, total: 4 }
    );
    assert!(allocate(&inv, &book, all(true)).is_err());
    book.remove("a");
    assert_eq!(
        allocate(&inv, &book, all(true)).unwrap(),
        ids(&["0", "1", "2", "3"])
    );
    assert_eq!(
        allocate(&inv, &book, exactly(2, false)).unwrap(),
        ids(&["0", "1"])
    );
}

#[test]
fn all_needs_every_device() {
    let inv = inventory(2);
    let empty = GpuAllocations::new();
    assert_eq!(
        allocate(&inv, &empty, all(false)).unwrap(),
        ids(&["0", "1"])
    );
    let mut book = GpuAllocations::new();
    book.insert(
        "x",
        GpuHold {
            devices: ids(&["1"]),
            shared: true,
        },
    );
    let err = allocate(&inv, &book, all(false)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot allocate all GPU(s) (exclusive): 1 free of 2 on this host; wait for another server to stop, or ask for fewer"
    );
    assert!(allocate(&inv, &book, all(true)).is_ok());
}

#[test]
fn errors_say_why() {
    let empty = GpuAllocations::new();
    assert_eq!(
        allocate(&GpuInventory::default(), &empty, all(false)),
        Err(GpuError::NoGpus)
    );
    let err = allocate(&inventory(2), &empty, exactly(3, false)).unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot allocate 3 GPU(s) (exclusive): 2 free of 2 on this host"
    );
}

#[test]
fn rebuild_reads_labels() {
    let mut labels_of = BTreeMap::new();
    labels_of.insert(labels::GPUS.to_owned(), "0,2".to_owned());
    let no_gpu = BTreeMap::from([(labels::OWNER.to_owned(), "bob".to_owned())]);
    let empty = BTreeMap::from([(labels::GPUS.to_owned(), String::new())]);
    let book = rebuild([("a", &labels_of), ("b", &no_gpu), ("c", &empty)]).unwrap();
    // A missing mode reads as exclusive.
    assert_eq!(
        book.get("a"),
        Some(&GpuHold {
            devices: ids(&["0", "2"]),
            shared: false
        })
    );
    assert_eq!(book.iter().count(), 1);

    let bad_ids = BTreeMap::from([(labels::GPUS.to_owned(), "0,,1".to_owned())]);
    assert_eq!(
        rebuild([("x", &bad_ids)]),
        Err(GpuError::BadLabel {
            container: "x".into(),
            label: labels::GPUS,
            value: "0,,1".into()
        })
    );
    let mut bad_mode = labels_of.clone();
    bad_mode.insert(labels::GPU_MODE.to_owned(), "sometimes".to_owned());
    assert!(matches!(
        rebuild([("y", &bad_mode)]),
        Err(GpuError::BadLabel { .. })
    ));
}

/// One step of a random workload: ask for GPUs, or stop a container.
#[derive(Clone, Debug)]
enum Step {
    Ask { count: Option<u32>, shared: bool },
    Stop(usize),
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        3 => (prop::option::weighted(0.85, 1u32..5), any::<bool>())
            .prop_map(|(count, shared)| Step::Ask { count, shared }),
        1 => (0usize..16).prop_map(Step::Stop),
    ]
}

/// Runs `steps` against an inventory of `n` devices, checking each allocation as it goes, and
/// returns the book.
fn run(n: usize, steps: &[Step]) -> Result<GpuAllocations, TestCaseError> {
    let inv = inventory(n);
    let mut book = GpuAllocations::new();
    for (i, step) in steps.iter().enumerate() {
        match *step {
            Step::Ask { count, shared } => {
                let count = count.map_or(GpuCount::All, |c| {
                    GpuCount::Exactly(NonZeroU32::new(c).unwrap())
                });
                let request = GpuRequest { count, shared };
                let before = availability(&inv, &book, shared);
                match allocate(&inv, &book, request) {
                    Ok(devices) => {
                        prop_assert!(before.can_satisfy(count));
                        let wanted = match count {
                            GpuCount::All => n,
                            GpuCount::Exactly(c) => c.get() as usize,
                        };
                        prop_assert_eq!(devices.len(), wanted);
                        for d in &devices {
                            prop_assert!(inv.devices().contains(d));
                            for (_, hold) in book.iter() {
                                if hold.devices.contains(d) {
                                    // Only shared holders ever meet on a device.
                                    prop_assert!(shared && hold.shared);
                                }
                            }
                        }
                        book.insert(format!("c{i}"), GpuHold { devices, shared });
                    }
                    Err(GpuError::Insufficient {
                        requested,
                        shared: s,
                        free,
                        total,
                    }) => {
                        prop_assert!(!before.can_satisfy(count));
                        prop_assert_eq!((requested, s), (count, shared));
                        prop_assert_eq!((free, total), (before.free, before.total));
                    }
                    Err(e) => prop_assert!(n == 0 && e == GpuError::NoGpus, "{e}"),
                }
            }
            Step::Stop(k) => {
                let key = book.iter().nth(k).map(|(c, _)| c.to_owned());
                if let Some(key) = key {
                    book.remove(&key);
                }
            }
        }
    }
    Ok(book)
}

proptest! {
    #[test]
    fn exclusive_never_overlaps(n in 0usize..6, steps in prop::collection::vec(step(), 0..24)) {
        let book = run(n, &steps)?;
        // Exclusive holds are disjoint from every other hold, and no more devices are held
        // exclusively than exist.
        let mut exclusive = BTreeSet::new();
        for (name, hold) in book.iter().filter(|(_, h)| !h.shared) {
            for d in &hold.devices {
                prop_assert!(exclusive.insert(d.clone()), "{d} held twice");
                for (other, h) in book.iter() {
                    prop_assert!(other == name || !h.devices.contains(d));
                }
            }
        }
        prop_assert!(exclusive.len() <= n);
    }

    #[test]
    fn rebuild_inverts_labels(n in 0usize..6, steps in prop::collection::vec(step(), 0..24)) {
        let book = run(n, &steps)?;
        let labelled: Vec<(String, BTreeMap<String, String>)> =
            book.iter().map(|(c, h)| (c.to_owned(), hold_labels(h))).collect();
        let rebuilt = rebuild(labelled.iter().map(|(c, l)| (c.as_str(), l))).unwrap();
        prop_assert_eq!(rebuilt, book);
    }
}

fn hold(devices: &[&str], shared: bool) -> GpuHold {
    GpuHold {
        devices: ids(devices),
        shared,
    }
}

/// A stopped container takes up its recorded GPUs again only when they are still what its
/// profile asks for, still on the host, and free for a hold of its mode.
#[test]
fn rehold_table() {
    let inv = inventory(4);
    let mut book = GpuAllocations::new();
    book.insert("x", hold(&["1"], false));
    book.insert("s", hold(&["2"], true));
    /// The kept hold, the profile's request, and whether a hold is granted (or why not).
    type Case = (Option<GpuHold>, Option<GpuRequest>, Result<bool, StaleGpus>);
    let cases: &[Case] = &[
        (None, None, Ok(false)),
        (Some(hold(&["0"], false)), Some(exactly(1, false)), Ok(true)),
        (
            Some(hold(&["0", "3"], false)),
            Some(exactly(2, false)),
            Ok(true),
        ),
        // Shared holds may share with shared ones, never with exclusive ones.
        (Some(hold(&["2"], true)), Some(exactly(1, true)), Ok(true)),
        (
            Some(hold(&["2"], false)),
            Some(exactly(1, false)),
            Err(StaleGpus::Taken(ids(&["2"])[0].clone())),
        ),
        (
            Some(hold(&["0", "1"], true)),
            Some(exactly(2, true)),
            Err(StaleGpus::Taken(ids(&["1"])[0].clone())),
        ),
        (
            Some(hold(&["1"], false)),
            Some(exactly(1, false)),
            Err(StaleGpus::Taken(ids(&["1"])[0].clone())),
        ),
        // The profile changed: count, mode, GPUs gained or lost.
        (
            Some(hold(&["0"], false)),
            Some(exactly(2, false)),
            Err(StaleGpus::Changed),
        ),
        (
            Some(hold(&["0"], false)),
            Some(exactly(1, true)),
            Err(StaleGpus::Changed),
        ),
        (Some(hold(&["0"], false)), None, Err(StaleGpus::Changed)),
        (None, Some(exactly(1, false)), Err(StaleGpus::Changed)),
        (
            Some(hold(&["0"], false)),
            Some(all(false)),
            Err(StaleGpus::Changed),
        ),
        // A device the host no longer lists.
        (
            Some(hold(&["7"], false)),
            Some(exactly(1, false)),
            Err(StaleGpus::Missing(ids(&["7"])[0].clone())),
        ),
    ];
    for (kept, request, expected) in cases {
        let got = rehold(Some(&inv), &book, kept.as_ref(), *request);
        let got = got.map(|h| {
            assert_eq!(h.as_ref(), kept.as_ref());
            h.is_some()
        });
        assert_eq!(&got, expected, "{kept:?} for {request:?}");
    }
    // `all` needs every device, all free.
    let empty = GpuAllocations::new();
    let every = hold(&["0", "1", "2", "3"], false);
    assert!(rehold(Some(&inv), &empty, Some(&every), Some(all(false))).is_ok());
    assert_eq!(
        rehold(Some(&inv), &book, Some(&every), Some(all(false))),
        Err(StaleGpus::Taken(ids(&["1"])[0].clone()))
    );
    // No inventory at all: nothing recorded can be had.
    assert_eq!(
        rehold(
            None,
            &empty,
            Some(&hold(&["0"], false)),
            Some(exactly(1, false))
        ),
        Err(StaleGpus::Missing(ids(&["0"])[0].clone()))
    );
}

proptest! {
    /// Whatever the book, a hold [`rehold`] grants never makes a device exclusive to two
    /// holders or shared with an exclusive one.
    #[test]
    fn rehold_never_double_books(
        held in proptest::collection::vec((0usize..4, any::<bool>()), 0..6),
        kept_devices in proptest::collection::btree_set(0usize..4, 1..4),
        shared in any::<bool>(),
    ) {
        let inv = inventory(4);
        let mut book = GpuAllocations::new();
        for (i, (device, s)) in held.iter().enumerate() {
            book.insert(format!("c{i}"), hold(&[device.to_string().as_str()], *s));
        }
        let names: Vec<String> = kept_devices.iter().map(ToString::to_string).collect();
        let refs: Vec<&str> = names.iter().map(String::as_str).collect();
        let kept = hold(&refs, shared);
        let n = u32::try_from(kept.devices.len()).unwrap();
        if let Ok(Some(granted)) = rehold(Some(&inv), &book, Some(&kept), Some(exactly(n, shared))) {
            for device in &granted.devices {
                let holders: Vec<&GpuHold> = book.iter().map(|(_, h)| h).filter(|h| h.devices.contains(device)).collect();
                if shared {
                    prop_assert!(holders.iter().all(|h| h.shared));
                } else {
                    prop_assert!(holders.is_empty());
                }
            }
        }
    }
}
