use std::collections::BTreeMap;
use std::error::Error as _;
use std::sync::Arc;

use super::*;
use crate::config::SpawnerConfig;

fn request(user: &str, groups: &[&str]) -> SpawnRequest {
    let config: SpawnerConfig = toml::from_str(
        "[profiles.ml]\ndisplay_name = \"ML\"\nimage = \"img\"\nallowed_groups = [\"ml\"]\n",
    )
    .unwrap();
    let mut valid = config.validate().unwrap();
    let profile = valid
        .profiles
        .remove(&ProfileId::new("ml").unwrap())
        .unwrap();
    SpawnRequest {
        identity: Identity {
            groups: groups.iter().map(|g| (*g).to_owned()).collect(),
            ..Identity::new(user)
        },
        server: ServerName::default(),
        profile,
        env: BTreeMap::new(),
    }
}

#[tokio::test]
async fn fake_spawner_keeps_the_contract() {
    // Held as the hub will hold a backend.
    let spawner: Arc<dyn Spawner> = Arc::new(FakeSpawner::new());
    let req = request("alice", &["ml"]);
    let key = req.key();
    assert_eq!(spawner.status(&key).await.unwrap(), ServerStatus::Absent);

    let (tx, mut rx) = progress_channel(8);
    let first = spawner.start(&req, tx).await.unwrap();
    assert_eq!(rx.next().await, Some(ProgressEvent::Creating));
    assert_eq!(rx.next().await, Some(ProgressEvent::Starting));
    assert!(matches!(rx.next().await, Some(ProgressEvent::Ready { .. })));
    assert_eq!(rx.next().await, None, "the stream ends with the start");

    // Starting again returns the same server.
    let again = spawner
        .start(&req, ProgressSender::discard())
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(spawner.list().await.unwrap(), vec![first.clone()]);
    assert!(matches!(
        spawner.status(&key).await.unwrap(),
        ServerStatus::Running { .. }
    ));

    // Stopping twice is fine.
    spawner.stop(&key).await.unwrap();
    spawner.stop(&key).await.unwrap();
    assert_eq!(spawner.status(&key).await.unwrap(), ServerStatus::Absent);
    assert!(spawner.list().await.unwrap().is_empty());
}

#[tokio::test]
async fn fake_spawner_checks_groups() {
    let spawner = FakeSpawner::new();
    let err = spawner
        .start(&request("bob", &["staff"]), ProgressSender::discard())
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot build the container for bob's server \"\""
    );
    let source = err.source().unwrap().to_string();
    assert_eq!(
        source,
        "user \"bob\" is not in any of the groups allowed to use profile ml"
    );
}

#[test]
fn progress_percent() {
    let pulling = |done, total| ProgressEvent::Pulling {
        image: "img".into(),
        layer: None,
        done_bytes: done,
        total_bytes: total,
    };
    assert_eq!(pulling(Some(50), Some(200)).percent(), Some(25));
    assert_eq!(pulling(Some(300), Some(200)).percent(), Some(100));
    assert_eq!(pulling(Some(5), Some(0)).percent(), None);
    assert_eq!(pulling(None, Some(10)).percent(), None);
    assert_eq!(pulling(Some(u64::MAX), Some(u64::MAX)).percent(), Some(100));
    assert_eq!(ProgressEvent::Creating.percent(), None);
}

#[test]
fn pull_summary() {
    let pulling = |done, total| ProgressEvent::Pulling {
        image: "img".into(),
        layer: None,
        done_bytes: done,
        total_bytes: total,
    };
    assert_eq!(
        pulling(Some(120_000_000), Some(260_000_000))
            .pull_summary()
            .as_deref(),
        Some("pulling 46% (120 MB of 260 MB)")
    );
    assert_eq!(
        pulling(Some(1_250_000), Some(2_000_000))
            .pull_summary()
            .as_deref(),
        Some("pulling 62% (1.2 MB of 2.0 MB)")
    );
    assert_eq!(
        pulling(None, None).pull_summary().as_deref(),
        Some("pulling")
    );
    assert_eq!(ProgressEvent::Starting.pull_summary(), None);
}

#[test]
fn full_progress_channels_drop_events() {
    let (tx, mut rx) = progress_channel(1);
    tx.emit(ProgressEvent::Creating);
    tx.emit(ProgressEvent::Starting);
    drop(tx);
    assert_eq!(rx.0.try_recv().ok(), Some(ProgressEvent::Creating));
    assert!(rx.0.try_recv().is_err());
}

#[test]
fn errors_keep_context_and_cause() {
    let err = SpawnError::Backend {
        backend: "docker",
        user: "alice".into(),
        server: ServerName::new("lab").unwrap(),
        backend_id: Some("abc123".into()),
        source: "no such image".into(),
    };
    assert_eq!(
        err.to_string(),
        "the docker backend failed for alice's server \"lab\" (abc123)"
    );
    assert_eq!(err.source().unwrap().to_string(), "no such image");
    let exited = SpawnError::Exited {
        user: "alice".into(),
        server: ServerName::default(),
        backend_id: "abc".into(),
        exit_code: Some(137),
        last_log_lines: vec!["Killed".into()],
    };
    assert_eq!(
        exited.to_string(),
        "alice's server \"\" (abc) exited with code 137 before answering HTTP"
    );
}
