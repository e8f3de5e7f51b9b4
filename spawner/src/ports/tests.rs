use super::*;
use proptest::prelude::*;

#[test]
fn ranges() {
    assert!(PortRange::new(1023, 2000).is_none());
    assert!(PortRange::new(5000, 4999).is_none());
    assert!(PortRange::new(5000, 5000).is_some());
}

#[test]
fn allocation_takes_lowest_free() {
    let range = PortRange::new(5000, 5004).unwrap();
    let ports = allocate_spark_ports(range, &BTreeSet::from([5000, 5002])).unwrap();
    assert_eq!(
        ports,
        SparkPorts {
            driver: 5001,
            block_manager: 5003
        }
    );
    let err =
        allocate_spark_ports(range, &BTreeSet::from([5000, 5001, 5002, 5003, 9])).unwrap_err();
    assert_eq!(
        err,
        PortError::Exhausted {
            start: 5000,
            end: 5004,
            in_use: 4
        }
    );
}

#[test]
fn labels_round_trip_and_bad_labels_fail() {
    let ports = SparkPorts {
        driver: 40000,
        block_manager: 40001,
    };
    assert_eq!(ports.label_value(), "40000,40001");
    assert_eq!(SparkPorts::from_label_value("40000,40001"), Some(ports));
    for bad in ["", "1", "1,1", "1,x", "70000,1", "1,2,3"] {
        assert_eq!(SparkPorts::from_label_value(bad), None, "{bad:?}");
    }
    let good = BTreeMap::from([(labels::SPARK_PORTS.to_owned(), "40000,40001".to_owned())]);
    let none = BTreeMap::new();
    assert_eq!(
        ports_in_use([("a", &good), ("b", &none)]),
        Ok(BTreeSet::from([40000, 40001]))
    );
    let bad = BTreeMap::from([(labels::SPARK_PORTS.to_owned(), "x".to_owned())]);
    assert!(matches!(
        ports_in_use([("c", &bad)]),
        Err(PortError::BadLabel { .. })
    ));
}

proptest! {
    /// Ports handed out one after another never repeat, stay in range, and survive a rebuild
    /// from labels.
    #[test]
    fn allocations_are_disjoint(start in 1024u16..60000, len in 0u16..12, n in 0usize..8) {
        let range = PortRange::new(start, start + len).unwrap();
        let mut held: Vec<(String, BTreeMap<String, String>)> = Vec::new();
        let mut in_use = BTreeSet::new();
        for i in 0..n {
            match allocate_spark_ports(range, &in_use) {
                Ok(p) => {
                    for port in [p.driver, p.block_manager] {
                        prop_assert!((range.start()..=range.end()).contains(&port));
                        prop_assert!(in_use.insert(port), "port {port} handed out twice");
                    }
                    let labels = BTreeMap::from([(labels::SPARK_PORTS.to_owned(), p.label_value())]);
                    held.push((format!("c{i}"), labels));
                }
                Err(PortError::Exhausted { in_use: used, .. }) => {
                    prop_assert!(usize::from(len) + 1 - used < 2);
                }
                Err(e) => prop_assert!(false, "{e}"),
            }
        }
        let rebuilt = ports_in_use(held.iter().map(|(c, l)| (c.as_str(), l))).unwrap();
        prop_assert_eq!(rebuilt, in_use);
    }
}
