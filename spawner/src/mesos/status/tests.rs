#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use proptest::prelude::*;

use super::*;

fn key(user: &str, server: &str) -> ServerKey {
    ServerKey {
        user: user.to_owned(),
        server: ServerName::new(server).unwrap(),
    }
}

#[test]
fn task_ids_name_their_server() {
    let instance = Instance::new("gantry-prod").unwrap();
    let profile = ProfileId::new("gpu-a100").unwrap();
    let k = key("Alice@example.org", "big-run.2");
    let id = task_id(&instance, &k, &profile, "0f9c2d11");
    assert!(
        id.starts_with("gantry-prod-_41lice_40example_2eorg-big_2drun_2e2-"),
        "{id}"
    );
    assert!(id.ends_with(".gpu-a100.0f9c2d11"), "{id}");
    assert_eq!(parse_task_id(&instance, &id), Some((k, profile.clone())));

    let default = key("bob", "");
    let id = task_id(&instance, &default, &profile, "ab");
    assert_eq!(parse_task_id(&instance, &id), Some((default, profile)));
}

#[test]
fn foreign_and_forged_ids_are_not_ours() {
    let instance = Instance::new("gantry").unwrap();
    let good = task_id(
        &instance,
        &key("bob", ""),
        &ProfileId::new("cpu").unwrap(),
        "ab12",
    );
    assert!(parse_task_id(&instance, &good).is_some());
    let other = Instance::new("gantry-b").unwrap();
    for id in [
        "nb-alice-0f9c2d".to_owned(),
        good.replace(".ab12", ".xyz"),
        good.replace(".ab12", ""),
        format!("{good}.more"),
        good.replace("gantry-bob", "gantry-bob-extra"),
        // The hash must match the name: a forged owner is refused.
        good.replace("gantry-bob", "gantry-eve"),
        // `_62` is b, which the escape never writes.
        good.replace("gantry-bob", "gantry-_62ob"),
    ] {
        assert_eq!(parse_task_id(&instance, &id), None, "{id}");
    }
    assert_eq!(
        parse_task_id(&other, &good),
        None,
        "another instance's task"
    );
}

proptest! {
    #[test]
    fn task_ids_round_trip(
        user in "\\PC{1,20}",
        server in prop_oneof![Just(String::new()), "[a-z0-9][a-z0-9._-]{0,20}"],
        profile in "[a-z0-9][a-z0-9_-]{0,20}",
        nonce in "[0-9a-f]{1,8}",
    ) {
        let instance = Instance::new("gt").unwrap();
        let k = key(&user, &server);
        let p = ProfileId::new(&profile).unwrap();
        let id = task_id(&instance, &k, &p, &nonce);
        prop_assert_eq!(parse_task_id(&instance, &id), Some((k, p)));
    }
}

#[test]
fn every_state_maps_to_a_server_status() {
    use TaskState::*;
    let url = Some("http://agent-1:31000");
    let running = ServerStatus::Running {
        url: "http://agent-1:31000".to_owned(),
    };
    let stopped = |code| ServerStatus::Stopped { exit_code: code };
    let table = [
        (TaskStaging, ServerStatus::Starting),
        (TaskStarting, ServerStatus::Starting),
        (TaskRunning, running.clone()),
        (TaskKilling, ServerStatus::Stopping),
        (TaskFinished, stopped(Some(0))),
        (TaskFailed, stopped(None)),
        (TaskKilled, stopped(None)),
        (TaskError, stopped(None)),
        (TaskLost, stopped(None)),
        (TaskDropped, stopped(None)),
        (TaskUnreachable, running),
        (TaskGone, stopped(None)),
        (TaskGoneByOperator, stopped(None)),
        (TaskUnknown, ServerStatus::Absent),
    ];
    assert_eq!(
        table.len(),
        TaskState::ALL.len(),
        "every state is in the table"
    );
    for (state, expected) in table {
        assert_eq!(server_status(Some(state), url, None), expected, "{state}");
        assert_eq!(
            state.is_terminal(),
            matches!(
                expected,
                ServerStatus::Stopped { .. } | ServerStatus::Absent
            ),
            "{state}"
        );
    }
    assert_eq!(server_status(None, url, None), ServerStatus::Starting);
    assert_eq!(
        server_status(Some(Unrecognized), url, None),
        ServerStatus::Starting
    );
    // Running without a known address is not yet reachable.
    assert_eq!(
        server_status(Some(TaskRunning), None, None),
        ServerStatus::Starting
    );
    assert_eq!(
        server_status(Some(TaskFailed), url, Some("Command exited with status 3")),
        stopped(Some(3))
    );
}

#[test]
fn exit_codes_in_messages() {
    assert_eq!(exit_code(Some("Command exited with status 3")), Some(3));
    assert_eq!(
        exit_code(Some("Container exited with status 137 (OOM)")),
        Some(137)
    );
    assert_eq!(exit_code(Some("exited with status -1")), Some(-1));
    assert_eq!(exit_code(Some("Failed to launch container")), None);
    assert_eq!(exit_code(Some("exited with status ")), None);
    assert_eq!(exit_code(None), None);
}
