use super::*;
use crate::gpu::GpuRequest;

/// A configuration an operator might write, with every table.
const SAMPLE: &str = r#"
[docker]
instance = "prod"
network = "gantry-prod"
gpu_request = "device-request"
gpus = ["0", "1", "GPU-4f1c2a3b"]
spark_driver_host = "10.0.0.5"
spark_ports = [41000, 41099]

[profiles.cpu]
display_name = "CPU only"
image = "quay.io/jupyter/base-notebook:latest"
mem_limit = "4G"

[profiles.gpu-a100]
display_name = "One A100"
image = "quay.io/jupyter/pytorch-notebook:cuda12-latest"
gpus = 1
allowed_groups = ["ml"]

[profiles.spark]
display_name = "Spark"
image = "quay.io/jupyter/pyspark-notebook:latest"
constraints = { spark = "true" }

[profiles.spark.spark]
master = "spark://spark-master:7077"
"#;

#[test]
fn sample_configuration() {
    let config: SpawnerConfig = toml::from_str(SAMPLE).unwrap();
    let valid = config.validate().unwrap();
    assert_eq!(valid.settings.instance.as_str(), "prod");
    assert_eq!(valid.settings.network, "gantry-prod");
    assert_eq!(valid.settings.gpu_style, GpuStyle::DeviceRequest);
    assert_eq!(
        valid.settings.spark_driver_host.as_deref(),
        Some("10.0.0.5")
    );
    assert_eq!(valid.gpus.as_ref().map(GpuInventory::len), Some(3));
    assert_eq!(valid.spark_ports, PortRange::new(41000, 41099).unwrap());
    let ids: Vec<&str> = valid.profiles.keys().map(ProfileId::as_str).collect();
    assert_eq!(ids, ["cpu", "gpu-a100", "spark"]);
    let gpu = &valid.profiles[&ProfileId::new("gpu-a100").unwrap()];
    assert!(matches!(gpu.gpus, Some(GpuRequest { shared: false, .. })));
}

#[test]
fn defaults() {
    let valid = SpawnerConfig::default().validate().unwrap();
    assert_eq!(valid.settings, SpawnSettings::default());
    assert_eq!(valid.gpus, None);
    assert_eq!(valid.spark_ports, PortRange::default());
    assert!(valid.profiles.is_empty());
    let parsed: SpawnerConfig = toml::from_str("").unwrap();
    assert_eq!(parsed, SpawnerConfig::default());
}

#[test]
fn docker_table_problems() {
    let config: SpawnerConfig = toml::from_str(
        r#"
[docker]
instance = "Prod_1"
network = "host"
cdi_kind = "gpu"
gpus = ["0", "0"]
spark_driver_host = "a b"
spark_ports = [80, 90]

[profiles.big]
display_name = "Big"
image = "i"
gpus = 4
"#,
    )
    .unwrap();
    let err = config.validate().unwrap_err();
    let keys: Vec<&str> = err.0.iter().map(|i| i.key.as_str()).collect();
    assert_eq!(
        keys,
        [
            "docker.instance",
            "docker.network",
            "docker.cdi_kind",
            "docker.gpus",
            "docker.spark_driver_host",
            "docker.spark_ports",
        ]
    );
    let text = err.to_string();
    assert!(
        text.starts_with("6 problems in the spawner configuration:\n  docker.instance: "),
        "{text}"
    );
    assert!(
        text.contains("docker.gpus: GPU device \"0\" is listed twice (fix: "),
        "{text}"
    );
}

#[test]
fn gpu_counts_are_checked_against_configured_devices() {
    let config: SpawnerConfig = toml::from_str(
        "[docker]\ngpus = [\"0\", \"1\"]\n[profiles.big]\ndisplay_name = \"B\"\nimage = \"i\"\ngpus = 4\n",
    )
    .unwrap();
    let err = config.validate().unwrap_err();
    assert_eq!(
        err.to_string(),
        "1 problem in the spawner configuration:\n  profiles.big.gpus: asks for 4 GPUs but \
         docker.gpus lists 2 (fix: lower gpus, or list more devices under docker.gpus)"
    );
}

/// A Spark driver on published ports must be told the Docker host's address; under Mesos it
/// advertises the agent its task landed on, so the check does not apply there.
#[test]
fn spark_driver_host_is_required_on_the_docker_backend_only() {
    let spark = "[profiles.spark]\ndisplay_name = \"Spark\"\nimage = \"i\"\n\
                 [profiles.spark.spark]\nmaster = \"spark://spark-master:7077\"\n";
    let docker: SpawnerConfig = toml::from_str(spark).unwrap();
    let err = docker.validate().unwrap_err();
    assert_eq!(
        err.0.iter().map(ToString::to_string).collect::<Vec<_>>(),
        [
            "profiles.spark.spark: needs docker.spark_driver_host: executors must know where to \
             reach the driver (fix: set docker.spark_driver_host to this host's address, or use \
             spark.networking = \"host\")"
        ]
    );

    let mesos: SpawnerConfig =
        toml::from_str(&format!("[mesos]\nmasters = [\"http://m:5050\"]\n{spark}")).unwrap();
    let valid = mesos.validate().unwrap();
    assert_eq!(valid.settings.spark_driver_host, None);
    assert!(valid.mesos.is_some());
    assert!(
        valid
            .profiles
            .contains_key(&ProfileId::new("spark").unwrap())
    );
}
