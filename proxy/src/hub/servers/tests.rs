//! The hub's server bookkeeping over the in-memory spawner: cancelling a start, restoring
//! routes, noticing dead servers and adopting unknown ones.

use std::sync::Arc;
use std::time::Duration;

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
    let last = entry.events_from(0).pop().unwrap();
    assert_eq!(last["failed"], true);
    assert_eq!(last["cancelled"], true);
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
