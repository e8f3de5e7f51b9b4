use super::*;
use crate::config::{ConfigErrors, SpawnerConfig};

/// The issues the `[profiles.p]` body raises, as `key: problem` lines.
fn issues(body: &str) -> Vec<String> {
    let text = format!("[profiles.p]\ndisplay_name = \"P\"\nimage = \"img\"\n{body}");
    let config: SpawnerConfig = toml::from_str(&text).unwrap();
    match config.validate() {
        Ok(_) => Vec::new(),
        Err(ConfigErrors(list)) => list
            .into_iter()
            .map(|i| format!("{}: {}", i.key, i.problem))
            .collect(),
    }
}

fn checked(body: &str) -> Profile {
    let text = format!("[profiles.p]\ndisplay_name = \"P\"\nimage = \"img\"\n{body}");
    let config: SpawnerConfig = toml::from_str(&text).unwrap();
    config
        .validate()
        .unwrap()
        .profiles
        .into_values()
        .next()
        .unwrap()
}

#[test]
fn templates() {
    let t = Template::parse("/home/{username}/{servername}").unwrap();
    assert_eq!(t.render("alice", "lab"), "/home/alice/lab");
    assert_eq!(t.render("alice", ""), "/home/alice/");
    assert_eq!(
        Template::parse("{{literal}} {username}")
            .unwrap()
            .render("a", ""),
        "{literal} a"
    );
    assert_eq!(Template::parse("plain").unwrap().render("a", "b"), "plain");
    assert_eq!(Template::parse("").unwrap().render("a", "b"), "");
    for (bad, err) in [
        ("{user}", TemplateError::UnknownPlaceholder("user".into())),
        (
            "{USERNAME}",
            TemplateError::UnknownPlaceholder("USERNAME".into()),
        ),
        ("{}", TemplateError::UnknownPlaceholder(String::new())),
        ("/x/{username", TemplateError::Unclosed),
        ("a}b", TemplateError::StrayClose),
    ] {
        assert_eq!(Template::parse(bad), Err(err), "{bad:?}");
    }
    assert_eq!(
        TemplateError::UnknownPlaceholder("user".into()).to_string(),
        "unknown placeholder {user}: only {username} and {servername} exist (write {{ and }} for literal braces)"
    );
}

#[test]
fn a_full_profile_checks() {
    let p = checked(
        r#"
description = "  Big GPU box  "
cpu_limit = 8
cpu_reservation = 2.5
mem_limit = "64G"
mem_reservation = "16G"
shm_size = "8G"
env = { PROJECT = "/srv/{username}" }
volumes = [{ type = "volume", source = "home-{username}", target = "/home/{username}" }]
network = "lab"
cmd = ["start-notebook.py"]
working_dir = "/home/{username}/work"
idle_timeout = "2h"
max_age = "7d"
allowed_groups = ["ml"]
gpus = 2
gpu_shared = true
constraints = { gpu = "true", "node.zone" = "b" }
run_as = "root-then-drop"
"#,
    );
    assert_eq!(p.id.as_str(), "p");
    assert_eq!(p.description, "Big GPU box");
    assert_eq!(p.nano_cpus, Some(8_000_000_000));
    assert_eq!(p.cpu_reservation_nano, Some(2_500_000_000));
    assert_eq!(p.memory_bytes, Some(64 << 30));
    assert_eq!(p.memory_reservation_bytes, Some(16 << 30));
    assert_eq!(p.shm_size_bytes, Some(8 << 30));
    assert_eq!(p.idle_timeout, Some(Duration::from_secs(7200)));
    assert_eq!(p.max_age, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(
        p.gpus,
        Some(GpuRequest {
            count: GpuCount::Exactly(NonZeroU32::new(2).unwrap()),
            shared: true
        })
    );
    assert_eq!(p.run_as, RunAs::RootThenDrop);
    assert_eq!(p.constraints.len(), 2);
    assert_eq!(p.working_dir.unwrap().render("a", ""), "/home/a/work");
    assert_eq!(
        checked("gpus = \"all\"").gpus.map(|g| g.count),
        Some(GpuCount::All)
    );
    assert_eq!(checked("").run_as, RunAs::User);
}

#[test]
fn gpu_values() {
    for (value, problem) in [
        ("-1", "-1"),
        ("0", "0"),
        ("1.5", "1.5"),
        ("true", "true"),
        ("\"two\"", "\"two\""),
        ("5000000000", "5000000000"),
    ] {
        assert_eq!(
            issues(&format!("gpus = {value}")),
            vec![format!(
                "profiles.p.gpus: \"all\" or a positive integer, got {problem}"
            )],
            "gpus = {value}"
        );
    }
    assert_eq!(
        issues("gpu_shared = true"),
        vec!["profiles.p.gpu_shared: has no effect without gpus"]
    );
}

#[test]
fn every_problem_is_reported_with_its_key() {
    let found = issues(
        r#"
cpu_limit = 0
mem_limit = "4 gigs"
shm_size = "0"
env = { HOME = "/x", "1BAD" = "x", JUPYTERHUB_API_TOKEN = "x", OK = "{user}" }
volumes = [
  { type = "bind", source = "relative/{username}", target = "/a" },
  { type = "volume", source = "home/{username}", target = "/a" },
  { type = "volume", source = "v", target = "b" },
]
network = "host"
cmd = []
working_dir = "work"
idle_timeout = "3600"
max_age = "0s"
allowed_groups = [""]
constraints = { "bad key" = "x" }
"#,
    );
    let keys: Vec<&str> = found
        .iter()
        .map(|l| l.split(": ").next().unwrap())
        .collect();
    assert_eq!(
        keys,
        [
            "profiles.p.cpu_limit",
            "profiles.p.mem_limit",
            "profiles.p.shm_size",
            "profiles.p.env.1BAD",
            "profiles.p.env.HOME",
            "profiles.p.env.JUPYTERHUB_API_TOKEN",
            "profiles.p.env.OK",
            "profiles.p.volumes[0].source",
            "profiles.p.volumes[1].target",
            "profiles.p.volumes[1].source",
            "profiles.p.volumes[2].target",
            "profiles.p.network",
            "profiles.p.cmd",
            "profiles.p.working_dir",
            "profiles.p.idle_timeout",
            "profiles.p.max_age",
            "profiles.p.allowed_groups",
            "profiles.p.constraints.bad key",
        ],
        "{found:#?}"
    );
    assert!(found.contains(&"profiles.p.mem_limit: expected a size, got \"4 gigs\"".to_owned()));
}

#[test]
fn limits_must_be_consistent() {
    assert_eq!(
        issues("mem_limit = \"1G\"\nmem_reservation = \"2G\"\ncpu_limit = 1\ncpu_reservation = 2"),
        vec![
            "profiles.p.cpu_reservation: is more than cpu_limit",
            "profiles.p.mem_reservation: is more than mem_limit, which the engine refuses",
        ]
    );
    assert_eq!(
        issues("mem_limit = \"1M\""),
        vec!["profiles.p.mem_limit: is under 6M, which the engine refuses"]
    );
}

#[test]
fn spark_settings() {
    assert_eq!(
        issues("[profiles.p.spark]\nmaster = \"sc://c:15002\"\nnetworking = \"host\""),
        Vec::<String>::new()
    );
    let p = checked("[profiles.p.spark]\nmaster = \"spark://m:7077\"\nnetworking = \"host\"");
    assert_eq!(
        p.spark.unwrap().attach,
        SparkAttach::Driver(SparkNetworking::Host)
    );
    assert_eq!(
        issues(
            "[profiles.p.spark]\nmaster = \"http://m\"\nnetworking = \"host\"\nconf = { \"spark.driver.port\" = \"1\", \"executor.memory\" = \"1g\" }"
        ),
        vec![
            "profiles.p.spark.master: expected a Spark master URL, got \"http://m\"",
            "profiles.p.spark.conf.\"executor.memory\": is not a Spark property name",
            "profiles.p.spark.conf.\"spark.driver.port\": is set by gantry itself",
        ]
    );
    assert_eq!(
        issues(
            "network = \"lab\"\n[profiles.p.spark]\nmaster = \"spark://m:7077\"\nnetworking = \"host\""
        ),
        vec!["profiles.p.network: cannot be combined with spark.networking = \"host\""]
    );
    // A driver on published ports needs to know the host's address.
    assert_eq!(
        issues("[profiles.p.spark]\nmaster = \"spark://m:7077\""),
        vec![
            "profiles.p.spark: needs docker.spark_driver_host: executors must know where to reach the driver"
        ]
    );
}

#[test]
fn unknown_keys_are_errors() {
    for text in [
        "[profiles.p]\ndisplay_name = \"P\"\nimage = \"i\"\nmem_limt = \"1G\"",
        "[profiles.p]\ndisplay_name = \"P\"\nimage = \"i\"\nvolumes = [{ type = \"bind\", source = \"/a\", target = \"/b\", ro = true }]",
        "[profiles.p]\ndisplay_name = \"P\"\nimage = \"i\"\n[profiles.p.spark]\nmaster = \"sc://x\"\nport = 1",
        "[docker]\nnetwrk = \"x\"",
        "[spawner]\n",
    ] {
        let err = toml::from_str::<SpawnerConfig>(text)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{text}: {err}");
    }
    let err = toml::from_str::<SpawnerConfig>("[profiles.p]\ndisplay_name = \"P\"\nimage = \"i\"\nvolumes = [{ type = \"nfs\", source = \"a\", target = \"/b\" }]")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("unknown variant `nfs`, expected `volume` or `bind`"),
        "{err}"
    );
}

#[test]
fn profile_ids_are_checked() {
    let config: SpawnerConfig =
        toml::from_str("[profiles.\"GPU big\"]\ndisplay_name = \"x\"\nimage = \"i\"").unwrap();
    let err = config.validate().unwrap_err();
    assert_eq!(err.0.len(), 1);
    assert_eq!(err.0[0].key, "profiles.GPU big");
}

#[test]
fn groups_decide_who_may_use_a_profile() {
    let p = checked("allowed_groups = [\"ml\"]");
    let mut id = Identity::new("alice");
    assert!(!p.is_allowed_for(&id));
    id.groups.push("ml".into());
    assert!(p.is_allowed_for(&id));
    assert!(checked("").is_allowed_for(&Identity::new("anyone")));
}

#[test]
fn on_stop_defaults_to_remove_and_takes_keep() {
    assert_eq!(checked("").on_stop, OnStop::Remove);
    assert_eq!(checked("on_stop = \"remove\"").on_stop, OnStop::Remove);
    assert_eq!(checked("on_stop = \"keep\"").on_stop, OnStop::Keep);
    for bad in ["\"delete\"", "true", "\"Keep\""] {
        let text = format!("[profiles.p]\ndisplay_name = \"P\"\nimage = \"i\"\non_stop = {bad}");
        let err = toml::from_str::<SpawnerConfig>(&text)
            .unwrap_err()
            .to_string();
        // The error shows the line; a string also gets the choices.
        assert!(err.contains("on_stop ="), "{bad}: {err}");
        assert!(
            !bad.starts_with('"') || err.contains("`remove` or `keep`"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn volume_sources_that_could_be_shared_are_refused() {
    let problem =
        |text: &str, separators: &[u8]| Template::parse(text).unwrap().sharing_problem(separators);
    for ok in [
        "gantry-{username}",
        "lab-{username}-{servername}",
        "{username}.{servername}",
        "shared-data",
    ] {
        assert_eq!(problem(ok, b"-."), None, "{ok}");
    }
    for bad in [
        "lab-{username}_{servername}",
        "{username}{servername}",
        "lab-{servername}",
    ] {
        assert!(problem(bad, b"-.").is_some(), "{bad}");
    }
    assert_eq!(problem("/srv/homes/{username}/{servername}", b"/"), None);
    assert!(problem("/srv/homes/{username}-{servername}", b"/").is_some());
    assert!(problem("/srv/projects/{servername}", b"/").is_some());
}
