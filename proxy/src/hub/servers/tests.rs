//! The hub's server bookkeeping over the in-memory spawner: cancelling a start, restoring
//! routes, noticing dead servers and adopting unknown ones.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;

use gantry_spawner::SpawnerConfig;
use gantry_spawner::spawner::FakeSpawner;

use super::*;

fn servers(fake: &Arc<FakeSpawner>) -> (Arc<Servers>, Arc<RouteTable>) {
    let config: SpawnerConfig = toml::from_str(
        "[profiles.tiny]\ndisplay_name = \"Tiny\"\nimage = \"gantry-test/busybox:1\"\n",
    )
    .unwrap();
    let profiles = config.validate().unwrap().profiles;
    let routes = Arc::new(RouteTable::new(false));
    let spawner: Arc<dyn Spawner> = Arc::clone(fake) as Arc<dyn Spawner>;
    let servers = Servers::new(spawner, profiles, Arc::clone(&routes), 4, BTreeMap::new());
    (Arc::new(servers), routes)
}

fn key(user: &str) -> ServerKey {
    ServerKey {
        user: user.to_owned(),
        server: ServerName::default(),
    }
}

fn route_of(routes: &RouteTable, key: &ServerKey) -> Option<Arc<Route>> {
    routes.get(&RoutePrefix::parse(&server_prefix(key), false).unwrap())
}

/// Waits until the server leaves `Starting`; returns its phase.
async fn settled(servers: &Servers, key: &ServerKey) -> Phase {
    for _ in 0..500 {
        match servers.state(key).map(|s| s.0) {
            Some(Phase::Starting) | None => tokio::time::sleep(Duration::from_millis(10)).await,
            Some(phase) => return phase,
        }
    }
    panic!("the start of {key:?} did not finish");
}

async fn started(servers: &Arc<Servers>, user: &str) -> ServerKey {
    let outcome = servers
        .start(
            Identity::new(user),
            ServerName::default(),
            None,
            BTreeMap::new(),
        )
        .unwrap();
    assert_eq!(outcome, StartOutcome::Pending);
    let key = key(user);
    assert!(matches!(settled(servers, &key).await, Phase::Ready { .. }));
    key
}

#[tokio::test]
async fn stopping_a_start_under_way_cancels_it_and_leaves_nothing() {
    let fake = Arc::new(FakeSpawner::new());
    let (servers, routes) = servers(&fake);
    fake.hold_starts(true);
    servers
        .start(
            Identity::new("alice"),
            ServerName::default(),
            None,
            BTreeMap::new(),
        )
        .unwrap();
    let key = key("alice");
    // The start has begun (its first event arrived) and waits.
    for _ in 0..500 {
        let events = servers.entries.get(&key).map(|e| e.events_from(0).len());
        if events.unwrap_or(0) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(servers.state(&key).unwrap().0, Phase::Starting);
    let entry = Arc::clone(servers.entries.get(&key).unwrap().value());

    servers.stop(&key).await.unwrap();

    assert!(servers.state(&key).is_none(), "the entry is gone");
    assert!(route_of(&routes, &key).is_none());
    assert!(
        fake.list().await.unwrap().is_empty(),
        "nothing left on the backend"
    );
    let mut events = entry.events_from(0);
    assert_eq!(events.pop().unwrap()["stopped"], true);
    let cancelled = events.pop().unwrap();
    assert_eq!(cancelled["failed"], true);
    assert_eq!(cancelled["cancelled"], true);
    // The start permit went with the aborted task, and the server starts anew.
    fake.hold_starts(false);
    started(&servers, "alice").await;
}

#[tokio::test]
async fn a_missing_route_of_a_ready_server_is_restored_and_a_stopped_one_is_not() {
    let fake = Arc::new(FakeSpawner::new());
    let (servers, routes) = servers(&fake);
    let alice = started(&servers, "alice").await;
    let bob = started(&servers, "bob").await;
    assert_eq!(servers.restore_routes(), 0, "nothing is missing yet");

    let prefix = RoutePrefix::parse(&server_prefix(&alice), false).unwrap();
    routes.apply(RouteChange::Remove(prefix));
    assert!(route_of(&routes, &alice).is_none());
    assert_eq!(servers.restore_routes(), 1);
    let route = route_of(&routes, &alice).expect("restored");
    let ServerStatus::Running { url } = fake.status(&alice).await.unwrap() else {
        panic!("alice's server is not running");
    };
    assert_eq!(route.target(), &Target::parse(&url).unwrap());

    servers.stop(&bob).await.unwrap();
    assert_eq!(servers.restore_routes(), 0);
    assert!(
        route_of(&routes, &bob).is_none(),
        "a stopped server stays unrouted"
    );
}

#[tokio::test]
async fn a_server_that_exits_on_its_own_is_unrouted_marked_failed_and_cleaned_up() {
    let fake = Arc::new(FakeSpawner::new());
    let (servers, routes) = servers(&fake);
    let alice = started(&servers, "alice").await;
    let bob = started(&servers, "bob").await;
    assert!(fake.exit(&alice, 137));

    let report = servers.reconcile().await.unwrap();

    assert_eq!(report.died, vec![alice.clone()]);
    assert!(report.adopted.is_empty());
    match servers.state(&alice).unwrap().0 {
        Phase::Failed { message } => assert!(message.contains("exit code 137"), "{message}"),
        other => panic!("alice's server is {other:?}"),
    }
    assert!(route_of(&routes, &alice).is_none());
    assert_eq!(
        fake.status(&alice).await.unwrap(),
        ServerStatus::Absent,
        "the dead server's resources were released"
    );
    assert!(
        route_of(&routes, &bob).is_some(),
        "bob's server is untouched"
    );
    // Its user can start it again.
    started(&servers, "alice").await;
    assert_eq!(servers.reconcile().await.unwrap(), Reconciled::default());
}

#[tokio::test]
async fn a_running_server_the_hub_does_not_know_is_adopted() {
    let fake = Arc::new(FakeSpawner::new());
    let (servers, routes) = servers(&fake);
    let carol = key("carol");
    fake.insert_running(ServerRecord {
        key: carol.clone(),
        profile: ProfileId::new("tiny").unwrap(),
        backend_id: "gantry-carol".into(),
        status: ServerStatus::Running {
            url: "http://gantry-carol:8888".into(),
        },
    });

    let report = servers.reconcile().await.unwrap();

    assert_eq!(report.adopted, vec![carol.clone()]);
    assert!(matches!(
        servers.state(&carol).unwrap().0,
        Phase::Ready { .. }
    ));
    assert!(route_of(&routes, &carol).is_some());
    assert_eq!(servers.reconcile().await.unwrap(), Reconciled::default());
}

/// Servers with profiles `tiny` and `gpu2` (two GPUs), under `limits`.
fn limited(fake: &Arc<FakeSpawner>, limits: UserLimits) -> Arc<Servers> {
    let config: SpawnerConfig = toml::from_str(
        "[profiles.tiny]\ndisplay_name = \"Tiny\"\nimage = \"gantry-test/busybox:1\"\n\
         [profiles.gpu2]\ndisplay_name = \"Two GPUs\"\nimage = \"gantry-test/busybox:1\"\ngpus = 2\n",
    )
    .unwrap();
    let profiles = config.validate().unwrap().profiles;
    let routes = Arc::new(RouteTable::new(false));
    let spawner: Arc<dyn Spawner> = Arc::clone(fake) as Arc<dyn Spawner>;
    Arc::new(Servers::new(spawner, profiles, routes, 16, BTreeMap::new()).with_limits(limits))
}

fn named(user: &str, server: &str) -> ServerKey {
    ServerKey {
        user: user.to_owned(),
        server: ServerName::new(server).unwrap(),
    }
}

fn claim(servers: &Arc<Servers>, key: &ServerKey, profile: &str) -> Result<Claimed, ServerError> {
    servers.claim(Identity::new(&key.user), key.server.clone(), Some(profile))
}

#[tokio::test]
async fn racing_starts_of_one_server_claim_it_once() {
    let fake = Arc::new(FakeSpawner::new());
    let servers = limited(&fake, UserLimits::default());
    let x = named("alice", "x");
    let Ok(Claimed::Mine(first)) = claim(&servers, &x, "tiny") else {
        panic!("the first claim is the start's");
    };
    // Until the first is launched and done, every other start finds it.
    for _ in 0..3 {
        assert!(matches!(
            claim(&servers, &x, "tiny"),
            Ok(Claimed::Found(StartOutcome::Pending))
        ));
    }
    first.launch(BTreeMap::new()).unwrap();
    assert!(matches!(settled(&servers, &x).await, Phase::Ready { .. }));
    assert!(matches!(
        claim(&servers, &x, "tiny"),
        Ok(Claimed::Found(StartOutcome::AlreadyRunning))
    ));
}

#[tokio::test]
async fn a_stop_between_claim_and_launch_means_nothing_starts() {
    let fake = Arc::new(FakeSpawner::new());
    let servers = limited(&fake, UserLimits::default());
    let x = named("alice", "x");
    let Ok(Claimed::Mine(claimed)) = claim(&servers, &x, "tiny") else {
        panic!("not claimed");
    };
    servers.stop(&x).await.unwrap();
    assert!(matches!(
        claimed.launch(BTreeMap::new()),
        Err(ServerError::Cancelled)
    ));
    assert!(servers.state(&x).is_none());
    assert!(fake.list().await.unwrap().is_empty(), "nothing was started");
}

#[tokio::test]
async fn a_claim_dropped_before_launch_leaves_the_server_failed_and_startable() {
    let fake = Arc::new(FakeSpawner::new());
    let servers = limited(&fake, UserLimits::default());
    let x = named("alice", "x");
    let Ok(Claimed::Mine(claimed)) = claim(&servers, &x, "tiny") else {
        panic!("not claimed");
    };
    drop(claimed);
    assert!(matches!(servers.state(&x).unwrap().0, Phase::Failed { .. }));
    assert!(matches!(claim(&servers, &x, "tiny"), Ok(Claimed::Mine(_))));
}

/// Reads a progress stream to its end; a stream that never ends fails the test rather than
/// hanging it.
async fn read_to_end(body: crate::errors::ResponseBody) -> Vec<Value> {
    let collected = tokio::time::timeout(Duration::from_secs(60), body.collect())
        .await
        .expect("the progress stream ended")
        .unwrap()
        .to_bytes();
    String::from_utf8(collected.to_vec())
        .unwrap()
        .split("\n\n")
        .filter_map(|chunk| chunk.strip_prefix("data: "))
        .map(|json| serde_json::from_str(json).unwrap())
        .collect()
}

#[tokio::test]
async fn a_progress_stream_ends_when_its_server_is_stopped() {
    let fake = Arc::new(FakeSpawner::new());
    let (servers, _) = servers(&fake);
    let alice = started(&servers, "alice").await;
    // Stop holds the server in `Stopping` while the backend works; a follower that joins
    // then is told how it ends.
    fake.hold_starts(true);
    let entry = Arc::clone(servers.entries.get(&alice).unwrap().value());
    entry.set_phase(Phase::Stopping);
    entry.events.lock().unwrap().clear();
    let stream = tokio::spawn(read_to_end(servers.progress(&alice).unwrap()));
    entry.set_phase(Phase::Ready {
        url: "http://x".into(),
    });
    servers.stop(&alice).await.unwrap();
    let events = stream.await.unwrap();
    let last = events.last().expect("an event");
    assert_eq!(last["stopped"], true, "{events:?}");
}

#[tokio::test]
async fn a_progress_stream_ends_when_its_server_dies() {
    let fake = Arc::new(FakeSpawner::new());
    let (servers, _) = servers(&fake);
    let alice = started(&servers, "alice").await;
    let entry = Arc::clone(servers.entries.get(&alice).unwrap().value());
    entry.events.lock().unwrap().clear();
    entry.set_phase(Phase::Stopping);
    let stream = tokio::spawn(read_to_end(servers.progress(&alice).unwrap()));
    entry.set_phase(Phase::Ready {
        url: "http://x".into(),
    });
    assert!(fake.exit(&alice, 1));
    servers.reconcile().await.unwrap();
    let events = stream.await.unwrap();
    let last = events.last().expect("an event");
    assert_eq!(last["stopped"], true, "{events:?}");
    assert_eq!(last["failed"], true, "{events:?}");
}

#[tokio::test]
async fn per_user_limits_refuse_the_start_past_them_and_count_per_user() {
    let fake = Arc::new(FakeSpawner::new());
    let limits = UserLimits {
        named_servers: Some(2),
        running_servers: Some(3),
        gpus: Some(2),
        gpus_by_group: BTreeMap::new(),
    };
    let servers = limited(&fake, limits);
    for server in ["a", "b"] {
        servers
            .start(
                Identity::new("alice"),
                ServerName::new(server).unwrap(),
                Some("tiny"),
                BTreeMap::new(),
            )
            .unwrap();
    }
    let refused = servers
        .start(
            Identity::new("alice"),
            ServerName::new("c").unwrap(),
            Some("tiny"),
            BTreeMap::new(),
        )
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ServerError::Limit(LimitExceeded::NamedServers { limit: 2 })
        ),
        "{refused:?}"
    );
    assert!(
        refused
            .to_string()
            .contains("named_server_limit_per_user = 2"),
        "{refused}"
    );
    // The default server is not a named one; it is the third running.
    servers
        .start(
            Identity::new("alice"),
            ServerName::default(),
            Some("tiny"),
            BTreeMap::new(),
        )
        .unwrap();
    // Bob has his own count.
    servers
        .start(
            Identity::new("bob"),
            ServerName::new("c").unwrap(),
            Some("gpu2"),
            BTreeMap::new(),
        )
        .unwrap();
    let refused = servers
        .start(
            Identity::new("bob"),
            ServerName::default(),
            Some("gpu2"),
            BTreeMap::new(),
        )
        .unwrap_err();
    assert!(
        matches!(
            refused,
            ServerError::Limit(LimitExceeded::Gpus {
                wanted: 2,
                held: 2,
                limit: 2,
                ..
            })
        ),
        "{refused:?}"
    );
    // Stopping one makes room.
    servers.stop(&named("alice", "a")).await.unwrap();
    servers
        .start(
            Identity::new("alice"),
            ServerName::new("c").unwrap(),
            Some("tiny"),
            BTreeMap::new(),
        )
        .unwrap();
}

#[test]
fn limits_table() {
    let names = |list: &[&str]| list.iter().map(|n| ServerName::new(n).unwrap()).collect();
    let usage = Usage {
        named: names(&["a", "b"]),
        running: names(&["", "a"]),
        gpus: 1,
    };
    let limits = UserLimits {
        named_servers: Some(2),
        running_servers: Some(3),
        gpus: Some(2),
        gpus_by_group: BTreeMap::from([("ml".to_owned(), 4), ("big".to_owned(), 8)]),
    };
    let alice = Identity::new("alice");
    let mut ml = Identity::new("carol");
    ml.groups = vec!["ml".into(), "big".into(), "other".into()];
    let server = |n: &str| ServerName::new(n).unwrap();
    // (who, server, gpus, refused by)
    let cases: &[(&Identity, ServerName, u32, Option<&str>)] = &[
        (&alice, server("c"), 0, Some("named")),
        // Restarting a named server it has is not a new one.
        (&alice, server("b"), 0, None),
        (&alice, server(""), 0, None),
        (&alice, server("b"), 1, None),
        (&alice, server("b"), 2, Some("gpus")),
        // A member of groups with caps gets the largest.
        (&ml, server("b"), 7, None),
        (&ml, server("b"), 8, Some("gpus")),
    ];
    for (who, server, gpus, refused) in cases {
        let got = limits.check(&usage, who, server, *gpus).err();
        let kind = got.as_ref().map(|e| match e {
            LimitExceeded::NamedServers { .. } => "named",
            LimitExceeded::RunningServers { .. } => "running",
            LimitExceeded::Gpus { .. } => "gpus",
        });
        assert_eq!(kind, *refused, "{} {server:?} {gpus}: {got:?}", who.user);
    }
    let full = Usage {
        running: names(&["", "a", "b"]),
        ..usage.clone()
    };
    assert!(matches!(
        limits.check(&full, &alice, &server("b"), 0),
        Ok(())
    ));
    assert!(matches!(
        limits.check(&full, &alice, &server("z"), 0),
        Err(LimitExceeded::NamedServers { .. })
    ));
    let unnamed_full = UserLimits {
        named_servers: None,
        ..limits.clone()
    };
    assert!(matches!(
        unnamed_full.check(&full, &alice, &server("z"), 0),
        Err(LimitExceeded::RunningServers { limit: 3 })
    ));
    assert_eq!(
        UserLimits::default().check(&full, &alice, &server("z"), 99),
        Ok(())
    );
}
