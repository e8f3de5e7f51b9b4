use super::*;

#[test]
fn sizes() {
    const G: i64 = 1 << 30;
    for (text, bytes) in [
        ("0", Some(0)),
        ("1024", Some(1024)),
        ("4G", Some(4 * G)),
        ("4g", Some(4 * G)),
        ("4GB", Some(4 * G)),
        ("4GiB", Some(4 * G)),
        ("4 G", Some(4 * G)),
        ("512m", Some(512 << 20)),
        ("64k", Some(64 << 10)),
        ("1.5G", Some(3 * G / 2)),
        ("2T", Some(2 << 40)),
        ("8192P", None),
        ("4 gigs", None),
        ("G", None),
        ("-1G", None),
        (".5G", None),
        ("5.G", None),
        ("1.2.3G", None),
        ("", None),
        ("4  G", None),
    ] {
        assert_eq!(parse_bytes(text), bytes, "parsing {text:?}");
    }
}

#[test]
fn durations() {
    for (text, secs) in [
        ("90s", Some(90)),
        ("30m", Some(1800)),
        ("12h", Some(43_200)),
        ("7d", Some(604_800)),
        ("1 h", Some(3600)),
        ("0s", Some(0)),
        ("3600", None),
        ("1.5h", None),
        ("1w", None),
        ("h", None),
        ("-1h", None),
    ] {
        assert_eq!(
            parse_duration(text),
            secs.map(Duration::from_secs),
            "parsing {text:?}"
        );
    }
}

#[test]
fn cpus() {
    assert_eq!(cpus_to_nano(2.5), Some(2_500_000_000));
    assert_eq!(cpus_to_nano(0.01), Some(10_000_000));
    assert_eq!(cpus_to_nano(1.0 / 3.0), Some(333_333_333));
    for bad in [0.0, 0.001, -1.0, f64::NAN, f64::INFINITY, 5000.0] {
        assert_eq!(cpus_to_nano(bad), None, "{bad}");
    }
}
