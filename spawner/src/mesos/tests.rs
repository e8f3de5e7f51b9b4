#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::sync::Arc;

use serde_json::json;

use super::proto::{Call, Event, EventType, TaskState};
use super::*;
use crate::config::SpawnerConfig;

fn validated(extra: &str) -> ValidatedConfig {
    let text = format!(
        "[mesos]\nmasters = [\"http://127.0.0.1:1\"]\nrole = \"notebooks\"\n{extra}\n\
         [profiles.cpu]\ndisplay_name = \"CPU\"\nimage = \"i\"\n"
    );
    toml::from_str::<SpawnerConfig>(&text)
        .unwrap()
        .validate()
        .unwrap()
}

fn shared(config: &ValidatedConfig, gpu: bool) -> driver::Shared {
    driver::Shared::new(
        config.mesos.clone().unwrap(),
        config.settings.clone(),
        gpu,
        reqwest::Client::new(),
        Arc::new(MemoryStore::new()),
        StoredState::default(),
    )
}

#[test]
fn subscribe_carries_the_capabilities_role_and_failover_timeout() {
    let config = validated("principal = \"gantry\"\nsecret = \"s\"\n");
    let call = serde_json::to_value(shared(&config, false).subscribe_call()).unwrap();
    assert_eq!(
        call,
        json!({
            "type": "SUBSCRIBE",
            "subscribe": {
                "framework_info": {
                    "user": "nobody",
                    "name": "gantry",
                    "failover_timeout": 604800.0,
                    "checkpoint": true,
                    "roles": ["notebooks"],
                    "principal": "gantry",
                    "capabilities": [
                        {"type": "MULTI_ROLE"},
                        {"type": "PARTITION_AWARE"},
                        {"type": "TASK_KILLING_STATE"}
                    ],
                    "labels": {"labels": [
                        {"key": "gantry.instance", "value": "gantry"},
                        {"key": "managed-by", "value": "gantry"}
                    ]}
                },
                "suppressed_roles": ["notebooks"]
            }
        })
    );
    // GPU_RESOURCES only with a GPU profile; a saved id goes in both places.
    let with_gpu = shared(&config, true);
    with_gpu.lock().framework_id = Some("fw-7".to_owned());
    let call = serde_json::to_value(with_gpu.subscribe_call()).unwrap();
    assert_eq!(call["framework_id"], json!({"value": "fw-7"}));
    assert_eq!(
        call["subscribe"]["framework_info"]["id"],
        json!({"value": "fw-7"})
    );
    assert_eq!(
        call["subscribe"]["framework_info"]["capabilities"][3],
        json!({"type": "GPU_RESOURCES"})
    );
}

#[test]
fn calls_serialise_as_the_master_reads_them() {
    let ack = Call {
        framework_id: Some(proto::Id::new("F")),
        kind: proto::CallType::Acknowledge,
        acknowledge: Some(proto::Acknowledge {
            agent_id: proto::Id::new("S1"),
            task_id: proto::Id::new("T1"),
            uuid: "q83vEjRWeJCrze8SNFZ4kA==".to_owned(),
        }),
        ..Call::default()
    };
    assert_eq!(
        serde_json::to_value(&ack).unwrap(),
        json!({"framework_id": {"value": "F"}, "type": "ACKNOWLEDGE", "acknowledge": {
            "agent_id": {"value": "S1"}, "task_id": {"value": "T1"}, "uuid": "q83vEjRWeJCrze8SNFZ4kA=="}})
    );
    let implicit = Call {
        kind: proto::CallType::Reconcile,
        reconcile: Some(proto::Reconcile::default()),
        ..Call::default()
    };
    assert_eq!(
        serde_json::to_value(&implicit).unwrap(),
        json!({"type": "RECONCILE", "reconcile": {"tasks": []}})
    );
    let revive = Call {
        kind: proto::CallType::Revive,
        revive: Some(proto::Roles {
            roles: vec!["notebooks".to_owned()],
        }),
        ..Call::default()
    };
    assert_eq!(
        serde_json::to_value(&revive).unwrap(),
        json!({"type": "REVIVE", "revive": {"roles": ["notebooks"]}})
    );
}

#[test]
fn events_parse_and_unknown_parts_are_tolerated() {
    let update = r#"{"type":"UPDATE","update":{"status":{
        "task_id":{"value":"T1"},"state":"TASK_RUNNING","source":"SOURCE_EXECUTOR",
        "agent_id":{"value":"S1"},"timestamp":1763969412.371,"uuid":"q83vEjRWeJCrze8SNFZ4kA==",
        "healthy":true,"container_status":{"container_id":{"value":"c"},
        "network_infos":[{"ip_addresses":[{"protocol":"IPv4","ip_address":"172.17.0.5"}]}],
        "executor_pid":4711}}}}"#;
    let e: Event = serde_json::from_str(update).unwrap();
    let status = e.update.unwrap().status;
    assert_eq!(status.state, TaskState::TaskRunning);
    assert_eq!(status.container_ip(), Some("172.17.0.5"));
    assert_eq!(status.uuid.as_deref(), Some("q83vEjRWeJCrze8SNFZ4kA=="));

    let offers = r#"{"type":"OFFERS","offers":{"offers":[{"id":{"value":"O1"},
        "framework_id":{"value":"F"},"agent_id":{"value":"S1"},"hostname":"gpu-7",
        "url":{"scheme":"http","address":{"hostname":"gpu-7","port":5051}},
        "resources":[{"name":"gpus","type":"SCALAR","scalar":{"value":4.0},"role":"*",
          "reservations":[{"type":"DYNAMIC","role":"notebooks"}]}],
        "attributes":[{"name":"gpu_mem","type":"SCALAR","scalar":{"value":80.0}},
          {"name":"rack","type":"RANGES","ranges":{"range":[{"begin":1,"end":2}]}}]}]}}"#;
    let e: Event = serde_json::from_str(offers).unwrap();
    let offer = &e.offers.unwrap().offers[0];
    assert_eq!(offer.attributes[0].value_text(), "80");
    assert_eq!(offer.attributes[1].value_text(), "[1-2]");
    // The reservation, which is not modelled, survives a round trip into a task.
    let back = serde_json::to_value(&offer.resources[0]).unwrap();
    assert_eq!(
        back["reservations"],
        json!([{"type": "DYNAMIC", "role": "notebooks"}])
    );

    let odd: Event =
        serde_json::from_str(r#"{"type":"SOMETHING_NEW","something_new":{}}"#).unwrap();
    assert_eq!(odd.kind, EventType::Unrecognized);
    let state: proto::TaskStatus =
        serde_json::from_str(r#"{"task_id":{"value":"T"},"state":"TASK_FROM_THE_FUTURE"}"#)
            .unwrap();
    assert_eq!(state.state, TaskState::Unrecognized);
}

#[test]
fn the_unplaceable_error_says_which_constraint_failed_where() {
    let e = MesosError::Unplaceable {
        profile: "gpu".to_owned(),
        waited: Duration::from_secs(60),
        mismatches: vec![Mismatch {
            agent_id: "S1".to_owned(),
            hostname: "cpu-1".to_owned(),
            problems: vec![Problem::Short {
                resource: "gpus",
                wanted: 1000,
                left: 0,
            }],
        }],
        offers_seen: true,
        connected: true,
    };
    assert_eq!(
        e.to_string(),
        "no Mesos offer could take profile gpu within 60s: agent cpu-1 (S1): gpus: needs 1, 0 offered"
    );
}

#[test]
fn the_file_store_round_trips_and_reports_corruption() {
    let dir = tempfile::tempdir().unwrap();
    let store = FileStore::new(dir.path().join("mesos.json"));
    assert_eq!(store.load().unwrap(), StoredState::default());
    let state = StoredState {
        framework_id: Some("fw-1".to_owned()),
        tasks: [(
            "t1".to_owned(),
            StoredTask {
                agent_id: "S1".to_owned(),
                hostname: "a".to_owned(),
                url: "http://a:1".to_owned(),
            },
        )]
        .into(),
    };
    store.save(&state).unwrap();
    assert_eq!(store.load().unwrap(), state);
    std::fs::write(store.path(), b"{not json").unwrap();
    let err = store.load().unwrap_err().to_string();
    assert!(err.contains("is not valid"), "{err}");
}

#[tokio::test]
async fn without_a_master_calls_fail_with_the_reason() {
    let mut config = validated("call_timeout = \"1s\"\n");
    config.mesos.as_mut().unwrap().max_backoff = Duration::from_millis(200);
    let spawner = MesosSpawner::new(&config, Arc::new(MemoryStore::new())).unwrap();
    let err = spawner
        .wait_subscribed(Duration::from_secs(1))
        .await
        .unwrap_err()
        .to_string();
    assert!(
        err.starts_with(
            "not subscribed to a Mesos master (tried http://127.0.0.1:1/api/v1/scheduler)"
        ),
        "{err}"
    );
    let key = ServerKey {
        user: "alice".to_owned(),
        server: ServerName::default_server(),
    };
    // Stopping a server the spawner never knew needs no master.
    spawner.stop(&key).await.unwrap();
    assert!(spawner.status(&key).await.is_err());
}

#[tokio::test]
async fn a_spawner_refuses_a_secret_file_nobody_read() {
    let mut config = validated("principal = \"gantry\"\nsecret_file = \"/run/secrets/mesos\"\n");
    let err = MesosSpawner::new(&config, Arc::new(MemoryStore::new())).unwrap_err();
    assert!(
        matches!(&err, MesosError::SecretUnread { path } if path.as_os_str() == "/run/secrets/mesos"),
        "{err:?}"
    );
    assert!(err.to_string().contains("mesos.secret_file"), "{err}");
    config.mesos.as_mut().unwrap().supply_secret("s".to_owned());
    let spawner = MesosSpawner::new(&config, Arc::new(MemoryStore::new())).unwrap();
    spawner.close();
    assert!(spawner.leader().is_none());
}
