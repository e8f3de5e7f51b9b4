#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;

use bollard::models::MountType;

use super::body::create_body;
use crate::profile::VolumeKind;
use crate::request::{ContainerSpec, DeviceRequestSpec, HostSpec, MountSpec, PortBindingSpec};

fn spec() -> ContainerSpec {
    ContainerSpec {
        name: "gantry-alice".into(),
        image: "img:1".into(),
        cmd: Some(vec!["run".into()]),
        env: BTreeMap::from([("A".into(), "1".into()), ("B".into(), "2".into())]),
        labels: BTreeMap::from([("gantry.owner".into(), "alice".into())]),
        user: Some("1000:100".into()),
        working_dir: Some("/home/alice".into()),
        host: HostSpec {
            nano_cpus: Some(2_000_000_000),
            memory: Some(1 << 30),
            memory_reservation: None,
            shm_size: Some(1 << 26),
            mounts: vec![MountSpec {
                kind: VolumeKind::Volume,
                source: "home-alice".into(),
                target: "/home/alice".into(),
                read_only: false,
            }],
            network_mode: "gantry".into(),
            group_add: vec!["100".into()],
            device_requests: vec![DeviceRequestSpec {
                driver: "cdi".into(),
                count: None,
                device_ids: vec!["nvidia.com/gpu=0".into()],
                capabilities: vec![],
            }],
            runtime: None,
            port_bindings: vec![PortBindingSpec {
                container_port: 40000,
                host_ip: String::new(),
                host_port: 40000,
            }],
        },
    }
}

#[test]
fn body_carries_every_field_of_the_spec() {
    let extra = BTreeMap::from([("B".into(), "hub".into()), ("TOKEN".into(), "t".into())]);
    let body = create_body(&spec(), &extra);
    assert_eq!(body.image.as_deref(), Some("img:1"));
    assert_eq!(body.cmd, Some(vec!["run".to_owned()]));
    // The hub's variables win over the profile's, and the order is stable.
    assert_eq!(
        body.env,
        Some(vec![
            "A=1".to_owned(),
            "B=hub".to_owned(),
            "TOKEN=t".to_owned()
        ])
    );
    assert_eq!(body.labels.unwrap()["gantry.owner"], "alice");
    assert_eq!(body.user.as_deref(), Some("1000:100"));
    assert_eq!(body.working_dir.as_deref(), Some("/home/alice"));
    assert_eq!(body.exposed_ports, Some(vec!["40000/tcp".to_owned()]));
    let host = body.host_config.unwrap();
    assert_eq!(host.nano_cpus, Some(2_000_000_000));
    assert_eq!(host.memory, Some(1 << 30));
    assert_eq!(host.memory_reservation, None);
    assert_eq!(host.shm_size, Some(1 << 26));
    assert_eq!(host.network_mode.as_deref(), Some("gantry"));
    assert_eq!(host.group_add, Some(vec!["100".to_owned()]));
    let mount = &host.mounts.unwrap()[0];
    assert_eq!(mount.typ, Some(MountType::VOLUME));
    assert_eq!(mount.source.as_deref(), Some("home-alice"));
    assert_eq!(mount.target.as_deref(), Some("/home/alice"));
    let dr = &host.device_requests.unwrap()[0];
    assert_eq!(dr.driver.as_deref(), Some("cdi"));
    assert_eq!(dr.count, None);
    assert_eq!(dr.device_ids, Some(vec!["nvidia.com/gpu=0".to_owned()]));
    assert_eq!(dr.capabilities, None);
    let ports = host.port_bindings.unwrap();
    let binding = &ports["40000/tcp"].as_ref().unwrap()[0];
    assert_eq!(binding.host_port.as_deref(), Some("40000"));
    assert_eq!(binding.host_ip, None);
    let endpoints = body.networking_config.unwrap().endpoints_config.unwrap();
    assert!(endpoints.contains_key("gantry"));
}

#[test]
fn a_plain_spec_publishes_nothing_and_asks_for_no_devices() {
    let mut s = spec();
    s.host.port_bindings.clear();
    s.host.device_requests.clear();
    s.host.mounts.clear();
    let body = create_body(&s, &BTreeMap::new());
    assert_eq!(body.exposed_ports, None);
    let host = body.host_config.unwrap();
    assert_eq!(host.port_bindings, None);
    assert_eq!(host.device_requests, None);
    assert_eq!(host.mounts, None);
}

#[test]
fn host_networking_joins_no_named_network() {
    let mut s = spec();
    s.host.network_mode = "host".into();
    let body = create_body(&s, &BTreeMap::new());
    assert!(body.networking_config.is_none());
    assert_eq!(
        body.host_config.unwrap().network_mode.as_deref(),
        Some("host")
    );
}

#[test]
fn the_docker_spawner_is_a_shareable_trait_object() {
    // The hub holds its backend as `Arc<dyn Spawner>`; this only has to compile.
    fn erase(s: std::sync::Arc<super::DockerSpawner>) -> std::sync::Arc<dyn crate::Spawner> {
        s
    }
    let _ = erase;
}

mod pull {
    use bollard::models::{CreateImageInfo, ProgressDetail};

    use crate::docker::pull::{PullTracker, pull_reference};
    use crate::spawner::{LayerPhase, LayerProgress, ProgressEvent};

    #[test]
    fn references_get_latest_unless_they_name_a_tag_or_digest() {
        assert_eq!(pull_reference("busybox"), "busybox:latest");
        assert_eq!(pull_reference("busybox:1.36"), "busybox:1.36");
        assert_eq!(
            pull_reference("quay.io/jupyter/base-notebook"),
            "quay.io/jupyter/base-notebook:latest"
        );
        // A registry's port is not a tag.
        assert_eq!(
            pull_reference("127.0.0.1:5000/team/img"),
            "127.0.0.1:5000/team/img:latest"
        );
        assert_eq!(
            pull_reference("127.0.0.1:5000/team/img:2"),
            "127.0.0.1:5000/team/img:2"
        );
        let pinned = "img@sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";
        assert_eq!(pull_reference(pinned), pinned);
    }

    fn line(id: &str, status: &str, bytes: Option<(i64, i64)>) -> CreateImageInfo {
        CreateImageInfo {
            id: (!id.is_empty()).then(|| id.to_owned()),
            status: Some(status.to_owned()),
            progress_detail: Some(bytes.map_or_else(ProgressDetail::default, |(c, t)| {
                ProgressDetail {
                    current: Some(c),
                    total: Some(t),
                }
            })),
            ..CreateImageInfo::default()
        }
    }

    fn bytes(event: &ProgressEvent) -> (Option<u64>, Option<u64>) {
        match event {
            ProgressEvent::Pulling {
                done_bytes,
                total_bytes,
                ..
            } => (*done_bytes, *total_bytes),
            other => panic!("not a pull event: {other:?}"),
        }
    }

    fn layer(event: &ProgressEvent) -> Option<LayerProgress> {
        match event {
            ProgressEvent::Pulling { layer, .. } => layer.clone(),
            other => panic!("not a pull event: {other:?}"),
        }
    }

    /// A pull as the engine reports it: two layers to fetch, one already present.
    #[test]
    fn a_pull_adds_up_the_layers_it_has_sizes_for() {
        let mut t = PullTracker::new("img:1");
        assert_eq!(bytes(&t.begun()), (None, None));
        let mut feed = |id, status, b| t.update(&line(id, status, b)).unwrap();

        let e = feed("1", "Pulling from team/img", None);
        assert_eq!(layer(&e), None, "an image line");
        feed("aaa", "Already exists", None);
        feed("bbb", "Pulling fs layer", None);
        feed("ccc", "Pulling fs layer", None);
        let e = feed("bbb", "Downloading", Some((100, 1000)));
        assert_eq!(bytes(&e), (Some(100), Some(1000)));
        assert_eq!(
            layer(&e),
            Some(LayerProgress {
                id: "bbb".into(),
                phase: LayerPhase::Downloading,
                current_bytes: Some(100),
                total_bytes: Some(1000),
            })
        );
        assert_eq!(e.percent(), Some(10));
        // The second layer's size becomes known: the total grows.
        let e = feed("ccc", "Downloading", Some((500, 3000)));
        assert_eq!(bytes(&e), (Some(600), Some(4000)));
        let e = feed("bbb", "Download complete", None);
        assert_eq!(bytes(&e), (Some(1500), Some(4000)));
        // Extraction's byte counts are the layer's, not the download's.
        let e = feed("bbb", "Extracting", Some((50, 999_999)));
        assert_eq!(bytes(&e), (Some(1500), Some(4000)));
        assert_eq!(layer(&e).unwrap().phase, LayerPhase::Extracting);
        assert_eq!(layer(&e).unwrap().current_bytes, Some(50));
        feed("bbb", "Pull complete", None);
        feed("ccc", "Verifying Checksum", None);
        let e = feed("ccc", "Pull complete", None);
        assert_eq!(bytes(&e), (Some(4000), Some(4000)));
        assert_eq!(e.percent(), Some(100));
        let e = feed("", "Status: Downloaded newer image for img:1", None);
        assert_eq!(layer(&e), None);
        assert_eq!(bytes(&e), (Some(4000), Some(4000)));
        assert_eq!(
            e.pull_summary().as_deref(),
            Some("pulling 100% (0.0 MB of 0.0 MB)")
        );
    }

    #[test]
    fn unknown_statuses_and_bad_numbers_are_kept_but_not_counted() {
        let mut t = PullTracker::new("img");
        let e = t
            .update(&line("bbb", "Retrying in 5 seconds", Some((-1, -1))))
            .unwrap();
        let l = layer(&e).unwrap();
        assert_eq!(l.phase, LayerPhase::Other("Retrying in 5 seconds".into()));
        assert_eq!((l.current_bytes, l.total_bytes), (None, None));
        assert_eq!(bytes(&e), (None, None));
        // A line without a status (an error line) is no event.
        assert_eq!(t.update(&CreateImageInfo::default()), None);
    }
}

mod volumes {
    use crate::config::SpawnerConfig;
    use crate::docker::volumes::{UserVolume, user_volumes};
    use crate::names::{ProfileId, ServerName};

    #[test]
    fn only_per_user_read_write_named_volumes_are_prepared() {
        let config: SpawnerConfig = toml::from_str(
            r#"
            [profiles.p]
            display_name = "P"
            image = "img"
            volumes = [
              { type = "volume", source = "home-{username}", target = "/home/{username}" },
              { type = "volume", source = "work-{username}-{servername}", target = "/work" },
              { type = "volume", source = "shared-data", target = "/data" },
              { type = "volume", source = "ro-{username}", target = "/ro", read_only = true },
              { type = "bind", source = "/srv/{username}", target = "/srv" },
            ]
            "#,
        )
        .unwrap();
        let profile = &config.validate().unwrap().profiles[&ProfileId::new("p").unwrap()];
        let server = ServerName::new("lab").unwrap();
        assert_eq!(
            user_volumes(profile, "alice.b", &server),
            vec![
                UserVolume {
                    // Named as container_spec names it: the user name escaped.
                    name: "home-alice_2eb".into(),
                    target: "/home/alice.b".into(),
                },
                UserVolume {
                    name: "work-alice_2eb-lab".into(),
                    target: "/work".into(),
                },
            ]
        );
    }
}

/// What a start does with a stopped container: the fingerprint and the GPU check, without an
/// engine.
mod revival {
    use std::collections::BTreeMap;

    use crate::config::{SpawnerConfig, ValidatedConfig};
    use crate::docker::{Revival, SPEC_LABEL, revival, spec_fingerprint};
    use crate::gpu::{DeviceId, GpuAllocations, GpuHold};
    use crate::names::{Identity, ProfileId, ServerName};
    use crate::request::{Allocation, container_spec};
    use crate::spawner::SpawnRequest;

    const NAME: &str = "gantry-alice";

    fn config(image: &str, extra: &str) -> ValidatedConfig {
        let text = format!(
            "[docker]\ngpus = [\"0\", \"1\"]\n\
             [profiles.gpu]\ndisplay_name = \"G\"\nimage = \"{image}\"\ngpus = 1\n\
             on_stop = \"keep\"\n{extra}\n\
             [profiles.plain]\ndisplay_name = \"P\"\nimage = \"{image}\"\non_stop = \"keep\"\n"
        );
        toml::from_str::<SpawnerConfig>(&text)
            .unwrap()
            .validate()
            .unwrap()
    }

    fn request(config: &ValidatedConfig, profile: &str, token: &str) -> SpawnRequest {
        SpawnRequest {
            identity: Identity::new("alice"),
            server: ServerName::default_server(),
            profile: config.profiles[&ProfileId::new(profile).unwrap()].clone(),
            env: BTreeMap::from([("JUPYTERHUB_API_TOKEN".to_owned(), token.to_owned())]),
        }
    }

    /// The labels `create` gives the container of `request` holding `gpus`.
    fn created(
        config: &ValidatedConfig,
        request: &SpawnRequest,
        gpus: &[&str],
    ) -> BTreeMap<String, String> {
        let allocation = Allocation {
            gpus: gpus.iter().map(|g| DeviceId::new(g).unwrap()).collect(),
            spark_ports: None,
        };
        let spec = container_spec(
            &request.profile,
            &request.identity,
            &request.server,
            &allocation,
            &config.settings,
        )
        .unwrap();
        let mut labels = spec.labels.clone();
        labels.insert(SPEC_LABEL.to_owned(), spec_fingerprint(&spec, &request.env));
        labels
    }

    fn decide(
        config: &ValidatedConfig,
        labels: &BTreeMap<String, String>,
        request: &SpawnRequest,
        book: &GpuAllocations,
    ) -> Revival {
        revival(
            NAME,
            labels,
            request,
            &config.settings,
            config.gpus.as_ref(),
            book,
        )
    }

    fn hold(device: &str) -> GpuHold {
        GpuHold {
            devices: vec![DeviceId::new(device).unwrap()],
            shared: false,
        }
    }

    #[test]
    fn the_fingerprint_follows_every_input_and_nothing_else() {
        let c = config("img:1", "");
        let r = request(&c, "gpu", "t");
        let a = created(&c, &r, &["0"]);
        assert_eq!(a, created(&c, &r, &["0"]), "deterministic");
        assert_eq!(a[SPEC_LABEL].len(), 64, "sha256 in hex");
        for other in [
            created(&c, &request(&c, "gpu", "t2"), &["0"]),
            created(&c, &r, &["1"]),
            created(
                &config("img:2", ""),
                &request(&config("img:2", ""), "gpu", "t"),
                &["0"],
            ),
            created(
                &config("img:1", "mem_limit = \"1G\""),
                &request(&config("img:1", "mem_limit = \"1G\""), "gpu", "t"),
                &["0"],
            ),
        ] {
            assert_ne!(a[SPEC_LABEL], other[SPEC_LABEL]);
        }
    }

    #[test]
    fn an_unchanged_container_restarts_with_its_gpus_when_they_are_free() {
        let c = config("img:1", "");
        let r = request(&c, "gpu", "t");
        let labels = created(&c, &r, &["1"]);
        let mut book = GpuAllocations::new();
        assert_eq!(
            decide(&c, &labels, &r, &book),
            Revival::Restart(Some(hold("1")))
        );
        // Its own stale hold does not count against it; another server's on GPU 0 neither.
        book.insert(NAME, hold("1"));
        book.insert("gantry-bob", hold("0"));
        assert_eq!(
            decide(&c, &labels, &r, &book),
            Revival::Restart(Some(hold("1")))
        );
        // A server without GPUs.
        let plain = request(&c, "plain", "t");
        assert_eq!(
            decide(&c, &created(&c, &plain, &[]), &plain, &book),
            Revival::Restart(None)
        );
    }

    #[test]
    fn a_changed_container_or_one_whose_gpus_are_taken_is_recreated() {
        let c = config("img:1", "");
        let r = request(&c, "gpu", "t");
        let labels = created(&c, &r, &["1"]);
        let mut taken = GpuAllocations::new();
        taken.insert("gantry-bob", hold("1"));
        let recreate = |decision: Revival, why: &str| match decision {
            Revival::Recreate(reason) => assert!(reason.contains(why), "{reason}"),
            other => panic!("expected a recreate ({why}), got {other:?}"),
        };
        recreate(decide(&c, &labels, &r, &taken), "GPU 1 is in use");
        let empty = GpuAllocations::new();
        recreate(
            decide(&c, &labels, &request(&c, "gpu", "t2"), &empty),
            "environment",
        );
        let c2 = config("img:2", "");
        recreate(
            decide(&c2, &labels, &request(&c2, "gpu", "t"), &empty),
            "environment",
        );
        let c3 = config("img:1", "gpu_shared = true");
        recreate(
            decide(&c3, &labels, &request(&c3, "gpu", "t"), &empty),
            "other GPUs",
        );
        // The profile lost its GPUs, and a container made before the record existed.
        recreate(
            decide(&c, &labels, &request(&c, "plain", "t"), &empty),
            "other GPUs",
        );
        let mut unrecorded = labels.clone();
        unrecorded.remove(SPEC_LABEL);
        recreate(decide(&c, &unrecorded, &r, &empty), "no record");
    }
}
