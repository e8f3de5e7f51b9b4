#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;

use serde_json::json;

use super::*;
use crate::config::{SpawnerConfig, ValidatedConfig};
use crate::mesos::proto::{Id, Range, Ranges, Resource, ValueType};
use crate::names::{Identity, ProfileId, ServerName};

/// A `[mesos]` configuration without `docker.spark_driver_host`, which Mesos does not need.
fn config(profiles: &str) -> ValidatedConfig {
    let text = format!("[mesos]\nmasters = [\"http://m:5050\"]\nkill_grace = \"15s\"\n{profiles}");
    toml::from_str::<SpawnerConfig>(&text)
        .unwrap()
        .validate()
        .unwrap()
}

fn request(config: &ValidatedConfig, profile: &str) -> SpawnRequest {
    SpawnRequest {
        identity: Identity::new("alice"),
        server: ServerName::new("lab").unwrap(),
        profile: config.profiles[&ProfileId::new(profile).unwrap()].clone(),
        env: BTreeMap::from([
            ("JUPYTERHUB_API_TOKEN".to_owned(), "tok".to_owned()),
            (
                "JUPYTERHUB_SERVICE_URL".to_owned(),
                "http://0.0.0.0:8888/user/alice/lab/".to_owned(),
            ),
        ]),
    }
}

fn placement(ports: &[u16]) -> Placement {
    Placement {
        demand: "t".to_owned(),
        offer_id: Id::new("O1"),
        agent_id: Id::new("S1"),
        hostname: "agent-1.example.org".to_owned(),
        resources: vec![Resource {
            name: "ports".to_owned(),
            kind: ValueType::Ranges,
            ranges: Some(Ranges {
                range: ports
                    .iter()
                    .map(|&p| Range {
                        begin: u64::from(p),
                        end: u64::from(p),
                    })
                    .collect(),
            }),
            ..Resource::default()
        }],
        ports: ports.to_vec(),
        gpus: 0,
    }
}

fn env_of(task: &TaskInfo) -> BTreeMap<String, String> {
    task.command
        .as_ref()
        .unwrap()
        .environment
        .as_ref()
        .unwrap()
        .variables
        .iter()
        .map(|v| (v.name.clone(), v.value.clone()))
        .collect()
}

const PROFILES: &str = r#"
[profiles.cpu]
display_name = "CPU"
image = "notebook:1"
cpu_reservation = 1.5
cpu_limit = 4
mem_reservation = "2G"
mem_limit = "4G"
cmd = ["start-notebook.sh", "--port=8888"]
constraints = { pool = "interactive" }

[profiles.gpu]
display_name = "GPU"
image = "notebook-gpu:1"
gpus = 2
cmd = ["sh", "-c", "exec start-notebook.sh --port=$GANTRY_PORT"]

[profiles.spark]
display_name = "Spark"
image = "pyspark:1"

[profiles.spark.spark]
master = "spark://spark-master:7077"
"#;

#[test]
fn cpu_profiles_use_the_docker_containerizer_on_the_bridge() {
    let c = config(PROFILES);
    let m = c.mesos.as_ref().unwrap();
    let (task, url) = task_info(
        "gantry-alice-lab-1234.cpu.ab",
        &request(&c, "cpu"),
        &placement(&[31005]),
        m,
        &c.settings,
    )
    .unwrap();
    assert_eq!(url, "http://agent-1.example.org:31005");
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(
        json["task_id"],
        json!({"value": "gantry-alice-lab-1234.cpu.ab"})
    );
    assert_eq!(json["agent_id"], json!({"value": "S1"}));
    assert_eq!(
        json["container"]["docker"]["port_mappings"],
        json!([{"host_port": 31005, "container_port": 8888, "protocol": "tcp"}])
    );
    assert_eq!(json["container"]["type"], "DOCKER");
    assert_eq!(json["container"]["docker"]["network"], "BRIDGE");
    assert_eq!(json["container"]["docker"]["image"], "notebook:1");
    assert_eq!(json["command"]["shell"], false);
    assert_eq!(
        json["command"]["arguments"],
        json!(["start-notebook.sh", "--port=8888"])
    );
    assert!(json["command"].get("value").is_none());
    assert_eq!(
        json["kill_policy"],
        json!({"grace_period": {"nanoseconds": 15_000_000_000_i64}})
    );
    assert_eq!(
        json["limits"],
        json!({"cpus": {"value": 4.0}, "mem": {"value": 4096.0}})
    );
    let labels = task.labels.as_ref().unwrap();
    assert_eq!(labels.get(crate::labels::OWNER), Some("alice"));
    assert_eq!(labels.get(crate::labels::SERVER), Some("lab"));
    assert_eq!(labels.get(crate::labels::PROFILE), Some("cpu"));
    assert_eq!(labels.get(crate::labels::INSTANCE), Some("gantry"));
    let params: Vec<String> = task
        .container
        .as_ref()
        .unwrap()
        .docker
        .as_ref()
        .unwrap()
        .parameters
        .iter()
        .map(|p| format!("{}={}", p.key, p.value))
        .collect();
    assert!(
        params.contains(&"label=gantry.owner=alice".to_owned()),
        "{params:?}"
    );
    let env = env_of(&task);
    assert_eq!(env["JUPYTERHUB_API_TOKEN"], "tok");
    assert_eq!(env["GANTRY_PORT"], "8888");
    assert_eq!(env["PORT0"], "31005");
    assert_eq!(env["NVIDIA_VISIBLE_DEVICES"], "void");
    assert!(!json.to_string().contains("gpus"), "{json}");

    let d = demand("t", &c.profiles[&ProfileId::new("cpu").unwrap()], m);
    assert_eq!((d.cpus, d.mem, d.disk, d.ports), (1500, 2048 * 1000, 0, 1));
    assert_eq!(d.gpus, GpuNeed::None);
    assert_eq!(
        d.constraints,
        BTreeMap::from([("pool".to_owned(), "interactive".to_owned())])
    );
}

#[test]
fn gpu_profiles_use_the_mesos_containerizer_with_a_docker_image() {
    let c = config(PROFILES);
    let m = c.mesos.as_ref().unwrap();
    let mut p = placement(&[31007]);
    p.gpus = 2;
    let (task, url) = task_info("t.gpu.1", &request(&c, "gpu"), &p, m, &c.settings).unwrap();
    assert_eq!(url, "http://agent-1.example.org:31007");
    let json = serde_json::to_value(&task).unwrap();
    assert_eq!(
        json["container"],
        json!({
            "type": "MESOS",
            "mesos": {"image": {"type": "DOCKER", "docker": {"name": "notebook-gpu:1"}, "cached": true}}
        })
    );
    assert_eq!(json["command"]["value"], "sh");
    assert_eq!(
        json["command"]["arguments"],
        json!(["sh", "-c", "exec start-notebook.sh --port=$GANTRY_PORT"])
    );
    let env = env_of(&task);
    assert_eq!(
        env["GANTRY_PORT"], "31007",
        "host networking: listen on the host port"
    );
    assert_eq!(
        env["JUPYTERHUB_SERVICE_URL"], "http://0.0.0.0:31007/user/alice/lab/",
        "jupyterhub-singleuser listens on the host port too"
    );
    assert!(!env.contains_key("NVIDIA_VISIBLE_DEVICES"));
    assert!(
        task.labels
            .as_ref()
            .unwrap()
            .get(crate::labels::GPUS)
            .is_none()
    );

    let d = demand("t", &c.profiles[&ProfileId::new("gpu").unwrap()], m);
    assert_eq!(d.gpus, GpuNeed::Exactly(2));
    assert_eq!((d.cpus, d.mem), (1000, 1024 * 1000), "the [mesos] defaults");
}

#[test]
fn spark_drivers_take_two_more_ports_and_advertise_the_agent() {
    let c = config(PROFILES);
    let m = c.mesos.as_ref().unwrap();
    let profile = &c.profiles[&ProfileId::new("spark").unwrap()];
    let d = demand("t", profile, m);
    assert_eq!(d.ports, 3);
    assert_eq!(
        d.constraints["spark"], "true",
        "Spark profiles need spark agents"
    );
    let (task, _) = task_info(
        "t.spark.1",
        &request(&c, "spark"),
        &placement(&[31000, 31001, 31002]),
        m,
        &c.settings,
    )
    .unwrap();
    let env = env_of(&task);
    assert_eq!(env["SPARK_DRIVER_HOST"], "agent-1.example.org");
    assert_eq!(env["SPARK_DRIVER_PORT"], "31001");
    assert_eq!(env["SPARK_BLOCKMANAGER_PORT"], "31002");
    let mappings: Vec<(u32, u32)> = task
        .container
        .as_ref()
        .unwrap()
        .docker
        .as_ref()
        .unwrap()
        .port_mappings
        .iter()
        .map(|p| (p.host_port, p.container_port))
        .collect();
    assert_eq!(mappings, [(31000, 8888), (31001, 31001), (31002, 31002)]);

    // A profile's own constraint on the attribute wins over the implied one.
    let mut own = profile.clone();
    own.constraints
        .insert("spark".to_owned(), "cluster-b".to_owned());
    assert_eq!(demand("t", &own, m).constraints["spark"], "cluster-b");
}

#[test]
fn a_user_outside_the_allowed_groups_is_refused() {
    let c =
        config("[profiles.ml]\ndisplay_name = \"ML\"\nimage = \"i\"\nallowed_groups = [\"ml\"]\n");
    let err = task_info(
        "t",
        &request(&c, "ml"),
        &placement(&[31000]),
        c.mesos.as_ref().unwrap(),
        &c.settings,
    )
    .unwrap_err();
    assert!(matches!(err, SpecError::NotAllowed { .. }), "{err}");
}

#[test]
fn urls_bracket_ipv6_hosts() {
    assert_eq!(url_for("10.0.0.1", 80), "http://10.0.0.1:80");
    assert_eq!(url_for("fd00::1", 80), "http://[fd00::1]:80");
    assert_eq!(url_for("[fd00::1]", 80), "http://[fd00::1]:80");
}
