use super::*;
use crate::config::SpawnerConfig;
use crate::names::ProfileId;

/// The profile `p` from a `[profiles.p]` body, checked as at startup, with the settings the
/// `[docker]` table gives.
fn load(docker: &str, body: &str) -> (Profile, SpawnSettings) {
    let text = format!("[docker]\n{docker}\n[profiles.p]\n{body}");
    let config: SpawnerConfig = toml::from_str(&text).unwrap();
    let mut valid = config.validate().unwrap();
    let profile = valid
        .profiles
        .remove(&ProfileId::new("p").unwrap())
        .unwrap();
    (profile, valid.settings)
}

fn profile(body: &str) -> Profile {
    load("", body).0
}

const BASE: &str = "display_name = \"P\"\nimage = \"img:1\"\n";

fn gpu_ids(ids: &[&str]) -> Vec<DeviceId> {
    ids.iter().map(|s| DeviceId::new(s).unwrap()).collect()
}

fn alice() -> Identity {
    Identity::new("alice")
}

#[test]
fn minimal_profile() {
    let p = profile(BASE);
    let spec = container_spec(
        &p,
        &alice(),
        &ServerName::default(),
        &Allocation::default(),
        &SpawnSettings::default(),
    )
    .unwrap();
    assert_eq!(spec.image, "img:1");
    assert!(spec.name.starts_with("gantry-alice-"));
    assert_eq!(spec.user, None);
    assert_eq!(spec.working_dir, None);
    assert_eq!(spec.host.network_mode, "gantry");
    assert!(spec.host.port_bindings.is_empty(), "nothing is published");
    assert_eq!(
        spec.env,
        BTreeMap::from([("NVIDIA_VISIBLE_DEVICES".to_owned(), "void".to_owned())])
    );
    assert_eq!(
        spec.labels,
        BTreeMap::from([
            (labels::OWNER.to_owned(), "alice".to_owned()),
            (labels::SERVER.to_owned(), String::new()),
            (labels::PROFILE.to_owned(), "p".to_owned()),
            (labels::INSTANCE.to_owned(), "gantry".to_owned()),
        ])
    );
}

#[test]
fn resources_volumes_and_templates() {
    let p = profile(&format!(
        "{BASE}cpu_limit = 2.5\nmem_limit = \"4G\"\nmem_reservation = \"1G\"\nshm_size = \"1G\"\n\
         network = \"lab-net\"\ncmd = [\"start-notebook.py\", \"--debug\"]\n\
         working_dir = \"/work/{{servername}}\"\n\
         env = {{ PROJECT = \"/srv/{{username}}/{{servername}}\" }}\n\
         volumes = [\n\
           {{ type = \"volume\", source = \"home-{{username}}-{{servername}}\", target = \"/home/{{username}}\" }},\n\
           {{ type = \"bind\", source = \"/srv/data/{{username}}\", target = \"/data\", read_only = true }},\n\
         ]\n"
    ));
    let server = ServerName::new("lab").unwrap();
    let spec = container_spec(
        &p,
        &Identity::new("Bob@x"),
        &server,
        &Allocation::default(),
        &SpawnSettings::default(),
    )
    .unwrap();
    assert_eq!(spec.host.nano_cpus, Some(2_500_000_000));
    assert_eq!(spec.host.memory, Some(4 << 30));
    assert_eq!(spec.host.memory_reservation, Some(1 << 30));
    assert_eq!(spec.host.shm_size, Some(1 << 30));
    assert_eq!(spec.host.network_mode, "lab-net");
    assert_eq!(
        spec.cmd,
        Some(vec!["start-notebook.py".to_owned(), "--debug".to_owned()])
    );
    assert_eq!(spec.working_dir.as_deref(), Some("/work/lab"));
    assert_eq!(spec.env["PROJECT"], "/srv/Bob@x/lab");
    assert_eq!(
        spec.host.mounts,
        vec![
            // Named volumes get the escaped user name; paths get it as it is.
            MountSpec {
                kind: VolumeKind::Volume,
                source: "home-_42ob_40x-lab".into(),
                target: "/home/Bob@x".into(),
                read_only: false
            },
            MountSpec {
                kind: VolumeKind::Bind,
                source: "/srv/data/Bob@x".into(),
                target: "/data".into(),
                read_only: true
            },
        ]
    );
    assert_eq!(spec.labels[labels::SERVER], "lab");
}

#[test]
fn unsafe_user_names_are_refused() {
    let p = profile(BASE);
    for bad in ["", ".", "..", "a/b", "a\nb"] {
        assert_eq!(
            container_spec(
                &p,
                &Identity::new(bad),
                &ServerName::default(),
                &Allocation::default(),
                &SpawnSettings::default()
            ),
            Err(SpecError::UnsafeUserName(bad.to_owned()))
        );
    }
}

#[test]
fn group_restriction() {
    let p = profile(&format!("{BASE}allowed_groups = [\"ml\", \"admin\"]\n"));
    let settings = SpawnSettings::default();
    let none = Allocation::default();
    let mut user = alice();
    assert!(matches!(
        container_spec(&p, &user, &ServerName::default(), &none, &settings),
        Err(SpecError::NotAllowed { .. })
    ));
    user.groups = vec!["staff".into(), "ml".into()];
    assert!(p.is_allowed_for(&user));
    assert!(container_spec(&p, &user, &ServerName::default(), &none, &settings).is_ok());
    assert!(
        profile(BASE).is_allowed_for(&alice()),
        "no groups listed: everyone"
    );
}

#[test]
fn identity_modes() {
    struct Case {
        run_as: &'static str,
        uid: Option<u32>,
        gid: Option<u32>,
        user: Option<&'static str>,
        group_add: &'static [&'static str],
        env: &'static [(&'static str, &'static str)],
        working_dir: Option<&'static str>,
    }
    let cases = [
        Case {
            run_as: "user",
            uid: Some(1234),
            gid: Some(5678),
            user: Some("1234:5678"),
            group_add: &["100"],
            env: &[
                ("HOME", "/home/alice"),
                ("NB_GID", "5678"),
                ("NB_UID", "1234"),
                ("NB_USER", "alice"),
            ],
            working_dir: Some("/home/alice"),
        },
        Case {
            run_as: "user",
            uid: Some(1234),
            gid: None,
            user: Some("1234:100"),
            group_add: &["100"],
            env: &[
                ("HOME", "/home/alice"),
                ("NB_GID", "100"),
                ("NB_UID", "1234"),
                ("NB_USER", "alice"),
            ],
            working_dir: Some("/home/alice"),
        },
        Case {
            run_as: "root-then-drop",
            uid: Some(1234),
            gid: Some(5678),
            user: Some("0"),
            group_add: &[],
            env: &[
                ("CHOWN_HOME", "yes"),
                ("NB_GID", "5678"),
                ("NB_UID", "1234"),
                ("NB_USER", "alice"),
            ],
            working_dir: Some("/home/alice"),
        },
        Case {
            run_as: "user",
            uid: None,
            gid: Some(5),
            user: None,
            group_add: &[],
            env: &[],
            working_dir: None,
        },
        Case {
            run_as: "root-then-drop",
            uid: None,
            gid: None,
            user: None,
            group_add: &[],
            env: &[],
            working_dir: None,
        },
    ];
    for c in cases {
        let p = profile(&format!("{BASE}run_as = \"{}\"\n", c.run_as));
        let id = Identity {
            uid: c.uid,
            gid: c.gid,
            ..alice()
        };
        let spec = container_spec(
            &p,
            &id,
            &ServerName::default(),
            &Allocation::default(),
            &SpawnSettings::default(),
        )
        .unwrap();
        let mut env = spec.env.clone();
        env.remove("NVIDIA_VISIBLE_DEVICES");
        let want: BTreeMap<String, String> = c
            .env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(env, want, "{} uid {:?}", c.run_as, c.uid);
        assert_eq!(spec.user.as_deref(), c.user);
        assert_eq!(
            spec.host.group_add,
            c.group_add
                .iter()
                .map(|s| (*s).to_owned())
                .collect::<Vec<_>>()
        );
        assert_eq!(spec.working_dir.as_deref(), c.working_dir);
    }
    // A profile's working_dir wins over the home directory.
    let p = profile(&format!("{BASE}working_dir = \"/srv\"\n"));
    let id = Identity {
        uid: Some(1),
        ..alice()
    };
    let spec = container_spec(
        &p,
        &id,
        &ServerName::default(),
        &Allocation::default(),
        &SpawnSettings::default(),
    )
    .unwrap();
    assert_eq!(spec.working_dir.as_deref(), Some("/srv"));
    // With a UID the name must be an account name.
    let id = Identity {
        uid: Some(1),
        ..Identity::new("bob@example.org")
    };
    assert_eq!(
        container_spec(
            &p,
            &id,
            &ServerName::default(),
            &Allocation::default(),
            &SpawnSettings::default()
        ),
        Err(SpecError::NotAnAccountName("bob@example.org".to_owned()))
    );
}

#[test]
fn gpu_styles() {
    let allocation = Allocation {
        gpus: gpu_ids(&["0", "2"]),
        spark_ports: None,
    };
    type Case = (
        &'static str,
        Vec<DeviceRequestSpec>,
        Option<&'static str>,
        &'static [(&'static str, &'static str)],
    );
    let cases: [Case; 4] = [
        (
            "",
            vec![DeviceRequestSpec {
                driver: "cdi".into(),
                count: None,
                device_ids: vec!["nvidia.com/gpu=0".into(), "nvidia.com/gpu=2".into()],
                capabilities: vec![],
            }],
            None,
            &[],
        ),
        (
            "gpu_request = \"cdi\"\ncdi_kind = \"gantry.test/gpu\"",
            vec![DeviceRequestSpec {
                driver: "cdi".into(),
                count: None,
                device_ids: vec!["gantry.test/gpu=0".into(), "gantry.test/gpu=2".into()],
                capabilities: vec![],
            }],
            None,
            &[],
        ),
        (
            "gpu_request = \"device-request\"",
            vec![DeviceRequestSpec {
                driver: "nvidia".into(),
                count: None,
                device_ids: vec!["0".into(), "2".into()],
                capabilities: vec![vec!["gpu".into()]],
            }],
            None,
            &[],
        ),
        (
            "gpu_request = \"runtime\"",
            vec![],
            Some("nvidia"),
            &[
                ("NVIDIA_DRIVER_CAPABILITIES", "compute,utility"),
                ("NVIDIA_VISIBLE_DEVICES", "0,2"),
            ],
        ),
    ];
    for (docker, requests, runtime, env) in cases {
        let (p, settings) = load(docker, &format!("{BASE}gpus = 2\n"));
        let spec =
            container_spec(&p, &alice(), &ServerName::default(), &allocation, &settings).unwrap();
        assert_eq!(spec.host.device_requests, requests, "{docker}");
        assert_eq!(spec.host.runtime.as_deref(), runtime, "{docker}");
        let want: BTreeMap<String, String> = env
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        assert_eq!(spec.env, want, "{docker}");
        assert_eq!(spec.labels[labels::GPUS], "0,2");
        assert_eq!(spec.labels[labels::GPU_MODE], "exclusive");
    }
}

#[test]
fn gpu_allocation_must_match() {
    let settings = SpawnSettings::default();
    let two = Allocation {
        gpus: gpu_ids(&["0", "1"]),
        spark_ports: None,
    };
    let err = container_spec(
        &profile(&format!("{BASE}gpus = 1\n")),
        &alice(),
        &ServerName::default(),
        &two,
        &settings,
    );
    assert_eq!(
        err,
        Err(SpecError::GpuMismatch {
            profile: "p".into(),
            wanted: "1".into(),
            given: 2
        })
    );
    let err = container_spec(
        &profile(BASE),
        &alice(),
        &ServerName::default(),
        &two,
        &settings,
    );
    assert!(matches!(err, Err(SpecError::GpuMismatch { .. })));
    let all = profile(&format!("{BASE}gpus = \"all\"\ngpu_shared = true\n"));
    let spec = container_spec(&all, &alice(), &ServerName::default(), &two, &settings).unwrap();
    assert_eq!(spec.labels[labels::GPU_MODE], "shared");
    let err = container_spec(
        &all,
        &alice(),
        &ServerName::default(),
        &Allocation::default(),
        &settings,
    );
    assert!(matches!(err, Err(SpecError::GpuMismatch { .. })));
}

#[test]
fn spark_published_ports() {
    let (p, settings) = load(
        "spark_driver_host = \"10.0.0.5\"",
        &format!(
            "{BASE}[profiles.p.spark]\nmaster = \"spark://master:7077\"\n\
             conf = {{ \"spark.executor.memory\" = \"2g\", \"spark.app.name\" = \"my app\" }}\n"
        ),
    );
    let allocation = Allocation {
        gpus: vec![],
        spark_ports: Some(SparkPorts {
            driver: 40000,
            block_manager: 40001,
        }),
    };
    let spec =
        container_spec(&p, &alice(), &ServerName::default(), &allocation, &settings).unwrap();
    assert_eq!(spec.host.network_mode, "gantry");
    assert_eq!(
        spec.host.port_bindings,
        vec![
            PortBindingSpec {
                container_port: 40000,
                host_ip: "10.0.0.5".into(),
                host_port: 40000
            },
            PortBindingSpec {
                container_port: 40001,
                host_ip: "10.0.0.5".into(),
                host_port: 40001
            },
        ]
    );
    assert_eq!(spec.env["SPARK_MASTER"], "spark://master:7077");
    assert_eq!(spec.env["SPARK_DRIVER_HOST"], "10.0.0.5");
    assert_eq!(spec.env["SPARK_DRIVER_BIND_ADDRESS"], "0.0.0.0");
    assert_eq!(spec.env["SPARK_DRIVER_PORT"], "40000");
    assert_eq!(spec.env["SPARK_BLOCKMANAGER_PORT"], "40001");
    assert_eq!(
        spec.env["PYSPARK_SUBMIT_ARGS"],
        "--master spark://master:7077 --conf spark.driver.host=10.0.0.5 \
         --conf spark.driver.bindAddress=0.0.0.0 --conf spark.driver.port=40000 \
         --conf spark.driver.blockManager.port=40001 --conf spark.blockManager.port=40001 \
         --conf 'spark.app.name=my app' --conf spark.executor.memory=2g pyspark-shell"
    );
    assert_eq!(spec.labels[labels::SPARK_PORTS], "40000,40001");

    // Without ports, or with a host name (bound on every address).
    let err = container_spec(
        &p,
        &alice(),
        &ServerName::default(),
        &Allocation::default(),
        &settings,
    );
    assert!(matches!(
        err,
        Err(SpecError::SparkUnplaced {
            missing: "allocated Spark ports",
            ..
        })
    ));
    let named = SpawnSettings {
        spark_driver_host: Some("node7.example".into()),
        ..settings.clone()
    };
    let spec = container_spec(&p, &alice(), &ServerName::default(), &allocation, &named).unwrap();
    assert_eq!(spec.host.port_bindings[0].host_ip, "");
    let no_host = SpawnSettings {
        spark_driver_host: None,
        ..settings
    };
    let err = container_spec(&p, &alice(), &ServerName::default(), &allocation, &no_host);
    assert!(matches!(
        err,
        Err(SpecError::SparkUnplaced {
            missing: "docker.spark_driver_host",
            ..
        })
    ));
}

#[test]
fn spark_host_networking_and_connect() {
    let p = profile(&format!(
        "{BASE}[profiles.p.spark]\nmaster = \"spark://m:7077\"\nnetworking = \"host\"\n"
    ));
    let spec = container_spec(
        &p,
        &alice(),
        &ServerName::default(),
        &Allocation::default(),
        &SpawnSettings::default(),
    )
    .unwrap();
    assert_eq!(spec.host.network_mode, "host");
    assert!(spec.host.port_bindings.is_empty());
    assert_eq!(
        spec.env["PYSPARK_SUBMIT_ARGS"],
        "--master spark://m:7077 pyspark-shell"
    );
    assert!(!spec.labels.contains_key(labels::SPARK_PORTS));

    let p = profile(&format!(
        "{BASE}[profiles.p.spark]\nmaster = \"sc://connect:15002\"\n"
    ));
    let spec = container_spec(
        &p,
        &alice(),
        &ServerName::default(),
        &Allocation::default(),
        &SpawnSettings::default(),
    )
    .unwrap();
    assert_eq!(spec.env["SPARK_REMOTE"], "sc://connect:15002");
    assert!(!spec.env.contains_key("SPARK_MASTER"));
    assert_eq!(spec.host.network_mode, "gantry");
    assert!(spec.host.port_bindings.is_empty());
}

#[test]
fn shell_quoting() {
    assert_eq!(shell_quote("spark.x=1"), "spark.x=1");
    assert_eq!(shell_quote("a b"), "'a b'");
    assert_eq!(shell_quote("it's"), r"'it'\''s'");
    assert_eq!(shell_quote(""), "''");
}
