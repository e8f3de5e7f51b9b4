#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::time::Duration;

use crate::config::SpawnerConfig;

fn parse(text: &str) -> SpawnerConfig {
    toml::from_str(text).unwrap()
}

#[test]
fn a_full_table_is_checked_into_settings() {
    let config = parse(
        r#"
[mesos]
masters = ["http://m1:5050", "https://m2.example.org:5050/mesos"]
role = "notebooks/gpu"
user = "jovyan"
framework_name = "gantry-prod"
failover_timeout = "14d"
principal = "gantry"
secret = "s3cret"
hostname = "hub.example.org"
webui_url = "https://hub.example.org/hub/admin"
refuse_seconds = 30.0
missed_heartbeats = 3
reconcile_interval = "10m"
max_backoff = "20s"
call_timeout = "10s"
offer_wait = "2m"
start_timeout = "10m"
kill_grace = "5s"
port = 9999
default_cpus = 0.5
default_mem = "512M"
disk = "2G"
spark_attribute = "spark_cluster"
cpu_on_gpu_agents = true
"#,
    );
    let s = config.validate().unwrap().mesos.unwrap();
    let masters: Vec<&str> = s.masters.iter().map(url::Url::as_str).collect();
    assert_eq!(
        masters,
        [
            "http://m1:5050/api/v1/scheduler",
            "https://m2.example.org:5050/mesos/api/v1/scheduler"
        ]
    );
    assert_eq!(s.role, "notebooks/gpu");
    assert_eq!(s.failover_timeout, Duration::from_secs(14 * 86_400));
    let c = s.credentials.as_ref().unwrap();
    assert_eq!(
        (c.principal.as_str(), c.secret.as_str()),
        ("gantry", "s3cret")
    );
    assert!(
        !format!("{s:?}").contains("s3cret"),
        "the secret is not logged"
    );
    assert_eq!(s.default_cpus_milli, 500);
    assert!((s.default_mem_mb - 512.0).abs() < 1e-9);
    assert!((s.disk_mb - 2048.0).abs() < 1e-9);
    assert_eq!(s.port, 9999);
    assert_eq!(s.missed_heartbeats, 3);
    assert!(s.cpu_on_gpu_agents);
}

#[test]
fn defaults_need_only_masters() {
    let s = parse("[mesos]\nmasters = [\"http://127.0.0.1:5050\"]\n")
        .validate()
        .unwrap()
        .mesos
        .unwrap();
    assert_eq!(s.role, "*");
    assert_eq!(s.user, "nobody");
    assert_eq!(s.failover_timeout, Duration::from_secs(7 * 86_400));
    assert_eq!(s.credentials, None);
    assert_eq!(s.default_cpus_milli, 1000);
    assert!((s.default_mem_mb - 1024.0).abs() < 1e-9);
    assert_eq!(s.disk_mb, 0.0);
    // No [mesos] table at all: no settings, and no complaint.
    assert_eq!(SpawnerConfig::default().validate().unwrap().mesos, None);
}

#[test]
fn every_problem_names_its_key_and_a_fix() {
    let config = parse(
        r#"
[mesos]
masters = ["ftp://m1", "not a url"]
role = "-bad"
user = ""
failover_timeout = "30s"
principal = "a:b"
secret = "x"
refuse_seconds = -1.0
missed_heartbeats = 1
reconcile_interval = "soon"
port = 0
default_cpus = 0.0
default_mem = "16M"
disk = "lots"
spark_attribute = "has space"
"#,
    );
    let err = config.validate().unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "mesos.masters[0]",
            "mesos.masters[1]",
            "mesos.role",
            "mesos.user",
            "mesos.failover_timeout",
            "mesos.principal",
            "mesos.refuse_seconds",
            "mesos.missed_heartbeats",
            "mesos.reconcile_interval",
            "mesos.port",
            "mesos.default_cpus",
            "mesos.default_mem",
            "mesos.disk",
            "mesos.spark_attribute",
        ]
    );
    assert!(err.0.iter().all(|i| !i.fix.is_empty()));
    let text = err.to_string();
    assert!(
        text.contains("mesos.failover_timeout: is under a minute"),
        "{text}"
    );
}

#[test]
fn masters_are_required_and_credentials_come_in_pairs() {
    let err = parse("[mesos]\nprincipal = \"p\"\n")
        .validate()
        .unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(keys, ["mesos.masters", "mesos.secret"]);
    let err = parse("[mesos]\nmasters = [\"http://m:5050\"]\nsecret = \"s\"\n")
        .validate()
        .unwrap_err();
    assert_eq!(err.0[0].key, "mesos.principal");
}

#[test]
fn unknown_keys_are_refused() {
    let err = toml::from_str::<SpawnerConfig>("[mesos]\nmasters = []\nmaster = \"x\"\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("unknown field `master`"), "{err}");
}

#[test]
fn roles() {
    for ok in ["*", "notebooks", "eng/gpu", "a.b-c_d"] {
        assert!(super::is_role(ok), "{ok}");
    }
    for bad in [
        "", ".", "..", "-x", "a//b", "a/", "/a", "a b", "a*", "x/../y",
    ] {
        assert!(!super::is_role(bad), "{bad}");
    }
}

#[test]
fn secret_file_is_left_for_the_binary_to_read() {
    let mut s = parse(
        "[mesos]\nmasters = [\"http://m:5050\"]\nprincipal = \"gantry\"\n\
         secret_file = \"/etc/gantry/mesos-secret\"\n",
    )
    .validate()
    .unwrap()
    .mesos
    .unwrap();
    assert_eq!(s.credentials, None, "the crate reads no file");
    assert_eq!(
        s.unread_secret,
        Some(super::UnreadSecret {
            principal: "gantry".to_owned(),
            path: "/etc/gantry/mesos-secret".into(),
        })
    );
    assert!(s.supply_secret("from-the-file".to_owned()));
    assert_eq!(s.unread_secret, None);
    let c = s.credentials.as_ref().unwrap();
    assert_eq!(
        (c.principal.as_str(), c.secret.as_str()),
        ("gantry", "from-the-file")
    );
    assert!(
        !s.supply_secret("again".to_owned()),
        "nothing is waiting any more"
    );
    assert_eq!(s.credentials.as_ref().unwrap().secret, "from-the-file");
}

#[test]
fn secret_and_secret_file_exclude_each_other_and_need_a_principal() {
    let problems = |mesos: &str| -> Vec<String> {
        parse(&format!("[mesos]\nmasters = [\"http://m:5050\"]\n{mesos}"))
            .validate()
            .unwrap_err()
            .0
            .iter()
            .map(ToString::to_string)
            .collect()
    };
    assert_eq!(
        problems("principal = \"p\"\nsecret = \"s\"\nsecret_file = \"/f\"\n"),
        [
            "mesos.secret_file: is set together with mesos.secret (fix: keep one: secret_file \
          keeps the secret out of the configuration file)"
        ]
    );
    assert_eq!(
        problems("secret_file = \"/f\"\n"),
        ["mesos.principal: is missing while secret_file is set (fix: set both, or neither)"]
    );
    assert_eq!(
        problems("principal = \"p\"\n"),
        [
            "mesos.secret: is missing while principal is set (fix: set secret_file to a file \
          holding the principal's secret (or secret inline), or remove principal)"
        ]
    );
    assert_eq!(
        problems("principal = \"p\"\nsecret_file = \"\"\n"),
        [
            "mesos.secret_file: is empty (fix: write the path of a file holding the principal's \
          secret, e.g. \"/etc/gantry/mesos-secret\")"
        ]
    );
}
