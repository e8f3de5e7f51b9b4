//! The Mesos backend (`gantry_spawner::MesosSpawner`) against the **simulator of the Mesos
//! master** in `gantry_integration_tests::mesos_sim`: conformance tests against a model of
//! the master's documented rules, not against Apache Mesos (retired, not installable here).
//!
//! Agents are loopback addresses (127.x.y.z, distinct per test), so every notebook's address is
//! reachable from the test. The `mesos_sim_real_containers_…` test runs tasks as real
//! containers on the local Docker engine and reaches one through `gantry proxy`;
//! `mesos_sim_gantry_up_…` runs the whole `gantry up` process on the Mesos backend.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use gantry_integration_tests::mesos_sim::MesosSim;
use gantry_integration_tests::{ChildGuard, gantry_bin, poll_until};
use gantry_spawner::mesos::recordio::Decoder;
use gantry_spawner::spawner::progress_channel;
use gantry_spawner::{
    FileStore, FrameworkStore, Identity, MemoryStore, MesosSpawner, MesosStep, ProfileId,
    ProgressEvent, ProgressSender, ServerKey, ServerName, ServerStatus, SpawnError, SpawnRequest,
    Spawner, SpawnerConfig, ValidatedConfig, labels,
};
use serde_json::{Value, json};
use tokio::time::Instant;

/// How long any one wait in these tests may take.
const WAIT: Duration = Duration::from_secs(30);

/// A checked configuration for a spawner of its own instance name, subscribing to
/// `masters`, with short timers; `mesos_extra` adds `[mesos]` keys, `profiles` the profiles.
fn config(masters: &[String], mesos_extra: &str, profiles: &str) -> Result<ValidatedConfig> {
    static N: AtomicUsize = AtomicUsize::new(0);
    let instance = format!(
        "mt{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    let masters: Vec<String> = masters.iter().map(|m| format!("{m:?}")).collect();
    let defaults = [
        ("role", "\"notebooks\""),
        ("call_timeout", "\"5s\""),
        ("offer_wait", "\"20s\""),
        ("start_timeout", "\"30s\""),
        ("kill_grace", "\"1s\""),
        ("refuse_seconds", "1.0"),
        ("max_backoff", "\"1s\""),
        ("failover_timeout", "\"1h\""),
        ("default_mem", "\"256M\""),
    ];
    let mut mesos = format!("masters = [{}]\n{mesos_extra}\n", masters.join(", "));
    for (k, v) in defaults {
        if !mesos_extra
            .lines()
            .any(|l| l.trim_start().starts_with(&format!("{k} ")))
        {
            mesos.push_str(&format!("{k} = {v}\n"));
        }
    }
    let text = format!("[docker]\ninstance = \"{instance}\"\n[mesos]\n{mesos}\n{profiles}");
    let parsed: SpawnerConfig = toml::from_str(&text).context("parsing the test configuration")?;
    Ok(parsed.validate()?)
}

/// `n` loopback addresses no other test of this run uses, as agents' host names: the
/// simulated notebooks bind them, so concurrent tests never share an address and port.
fn hosts(n: usize) -> Vec<String> {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let base = NEXT.fetch_add(1, Ordering::Relaxed);
    let second = 20 + std::process::id() % 200;
    (0..n)
        .map(|i| format!("127.{second}.{}.{}", base % 250 + 1, i + 2))
        .collect()
}

fn request(config: &ValidatedConfig, user: &str, server: &str, profile: &str) -> SpawnRequest {
    SpawnRequest {
        identity: Identity::new(user),
        server: ServerName::new(server).unwrap(),
        profile: config.profiles[&ProfileId::new(profile).unwrap()].clone(),
        env: BTreeMap::from([("JUPYTERHUB_API_TOKEN".to_owned(), "t".to_owned())]),
    }
}

fn key(user: &str, server: &str) -> ServerKey {
    ServerKey {
        user: user.to_owned(),
        server: ServerName::new(server).unwrap(),
    }
}

fn spawner(config: &ValidatedConfig, store: Arc<dyn FrameworkStore>) -> Arc<MesosSpawner> {
    Arc::new(MesosSpawner::new(config, store).unwrap())
}

async fn running_url(spawner: &MesosSpawner, request: &SpawnRequest) -> Result<(String, String)> {
    let record = tokio::time::timeout(WAIT, spawner.start(request, ProgressSender::discard()))
        .await
        .context("the start did not finish")??;
    let ServerStatus::Running { url } = record.status else {
        bail!("started but not running: {record:?}");
    };
    Ok((record.backend_id, url))
}

async fn get(url: &str) -> Result<(u16, String)> {
    let response = reqwest::Client::new()
        .get(url)
        .timeout(Duration::from_secs(5))
        .send()
        .await?;
    Ok((response.status().as_u16(), response.text().await?))
}

const CPU: &str = "[profiles.cpu]\ndisplay_name = \"CPU\"\nimage = \"notebook:1\"\n";

// ---------------------------------------------------------------------------------------
// A scheduler written by hand against the simulator, for the protocol rules and as a second
// framework.

struct RawFramework {
    id: String,
    stream_id: String,
    endpoint: String,
    events: tokio::sync::mpsc::UnboundedReceiver<Value>,
    skipped: std::collections::VecDeque<Value>,
    split_records: Arc<AtomicUsize>,
    _reader: tokio::task::JoinHandle<()>,
}

fn endpoint(master: &str) -> String {
    format!("{master}/api/v1/scheduler")
}

fn subscribe_body(name: &str, capabilities: &[&str]) -> Value {
    let caps: Vec<Value> = ["MULTI_ROLE"]
        .iter()
        .chain(capabilities)
        .map(|c| json!({"type": c}))
        .collect();
    json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {
        "user": "nobody", "name": name, "roles": ["other"], "capabilities": caps,
        "failover_timeout": 3600.0}}})
}

impl RawFramework {
    async fn subscribe(master: &str, body: Value) -> Result<Self> {
        let endpoint = endpoint(master);
        let mut response = reqwest::Client::new()
            .post(&endpoint)
            .header("content-type", "application/json")
            .header("accept", "application/json")
            .json(&body)
            .send()
            .await?;
        ensure!(response.status() == 200, "SUBSCRIBE: {}", response.status());
        let stream_id = response
            .headers()
            .get("mesos-stream-id")
            .context("no Mesos-Stream-Id")?
            .to_str()?
            .to_owned();
        let (tx, mut events) = tokio::sync::mpsc::unbounded_channel();
        let split_records = Arc::new(AtomicUsize::new(0));
        let split = split_records.clone();
        let reader = tokio::spawn(async move {
            let mut decoder = Decoder::new(1 << 20);
            while let Ok(Some(chunk)) = response.chunk().await {
                if decoder.feed(&chunk).is_err() {
                    return;
                }
                if !decoder.is_at_boundary() {
                    split.fetch_add(1, Ordering::Relaxed);
                }
                while let Some(record) = decoder.next_record() {
                    if let Ok(v) = serde_json::from_slice::<Value>(&record) {
                        let _ = tx.send(v);
                    }
                }
            }
        });
        let first = tokio::time::timeout(WAIT, events.recv())
            .await?
            .context("the stream ended before SUBSCRIBED")?;
        ensure!(first["type"] == "SUBSCRIBED", "first event: {first}");
        let id = first["subscribed"]["framework_id"]["value"]
            .as_str()
            .context("no framework id")?
            .to_owned();
        Ok(Self {
            id,
            stream_id,
            endpoint,
            events,
            skipped: std::collections::VecDeque::new(),
            split_records,
            _reader: reader,
        })
    }

    async fn call(&self, body: Value) -> Result<(u16, String)> {
        let response = reqwest::Client::new()
            .post(&self.endpoint)
            .header("content-type", "application/json")
            .header("Mesos-Stream-Id", &self.stream_id)
            .json(&body)
            .send()
            .await?;
        Ok((response.status().as_u16(), response.text().await?))
    }

    /// The next event of type `kind`; events of other types stay for later calls.
    async fn next(&mut self, kind: &str) -> Result<Value> {
        if let Some(i) = self.skipped.iter().position(|e| e["type"] == kind) {
            return self.skipped.remove(i).context("just found");
        }
        let deadline = Instant::now() + WAIT;
        loop {
            let event = tokio::time::timeout_at(deadline, self.events.recv())
                .await
                .with_context(|| format!("no {kind} event"))?
                .context("the stream ended")?;
            if event["type"] == kind {
                return Ok(event);
            }
            if event["type"] != "HEARTBEAT" {
                self.skipped.push_back(event);
            }
        }
    }
}

async fn post(
    url: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Result<(u16, String, Option<String>)> {
    let mut request = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()?
        .post(url)
        .body(body.to_owned());
    for (k, v) in headers {
        request = request.header(*k, *v);
    }
    let response = request.send().await?;
    let location = response
        .headers()
        .get("location")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    Ok((response.status().as_u16(), response.text().await?, location))
}

#[tokio::test]
async fn mesos_sim_enforces_the_masters_http_rules() -> Result<()> {
    let h = hosts(1);
    let sim = MesosSim::builder()
        .masters(2)
        .heartbeat(Duration::from_millis(100))
        .agent(&h[0], "cpus:1;mem:512;ports:[31000-31001]", "")
        .start()
        .await?;
    let urls = sim.master_urls();
    let leader = endpoint(&urls[0]);
    let json_headers = [
        ("content-type", "application/json"),
        ("accept", "application/json"),
    ];
    let subscribe = subscribe_body("raw", &[]).to_string();

    // Transport rules.
    let (status, _, _) = post(&leader, &[("accept", "application/json")], &subscribe).await?;
    ensure!(status == 400, "no Content-Type: {status}");
    let (status, _, _) = post(
        &leader,
        &[("content-type", "application/x-protobuf")],
        &subscribe,
    )
    .await?;
    ensure!(status == 415, "protobuf: {status}");
    let (status, _, _) = post(
        &leader,
        &[
            ("content-type", "application/json"),
            ("accept", "text/html"),
        ],
        &subscribe,
    )
    .await?;
    ensure!(status == 406, "bad Accept: {status}");
    let get = reqwest::get(&leader).await?.status();
    ensure!(get == 405, "GET: {get}");
    let (status, body, _) = post(
        &leader,
        &[
            ("content-type", "application/json"),
            ("Mesos-Stream-Id", "x"),
        ],
        &subscribe,
    )
    .await?;
    ensure!(
        status == 400 && body.contains("should not include the 'Mesos-Stream-Id'"),
        "{status} {body}"
    );
    // Stricter than Mesos: an unknown (misspelled) field is refused, naming it.
    let typo = json!({"type": "SUBSCRIBE", "subscribe": {"framework_info": {"user": "u", "name": "n", "capabilites": []}}});
    let (status, body, _) = post(&leader, &json_headers, &typo.to_string()).await?;
    ensure!(
        status == 400 && body.contains("capabilites"),
        "{status} {body}"
    );

    // A non-leader redirects with a scheme-less Location.
    let (status, _, location) = post(&endpoint(&urls[1]), &json_headers, &subscribe).await?;
    let port = urls[0].rsplit(':').next().unwrap();
    ensure!(status == 307, "non-leader: {status}");
    ensure!(
        location.as_deref() == Some(format!("//127.0.0.1:{port}/api/v1/scheduler").as_str()),
        "Location: {location:?}"
    );

    // A subscription: SUBSCRIBED, then heartbeats, in records cut at random points.
    let mut raw =
        RawFramework::subscribe(&urls[0], subscribe_body("raw", &["PARTITION_AWARE"])).await?;
    for _ in 0..10 {
        raw.next("HEARTBEAT").await?;
    }
    ensure!(
        raw.split_records.load(Ordering::Relaxed) > 0,
        "no record was ever split across chunks"
    );

    // Offers, and rescinds: a rescinded offer cannot be used, and its tasks are dropped.
    let offers = raw.next("OFFERS").await?;
    let offer = &offers["offers"]["offers"][0];
    ensure!(offer["hostname"] == h[0].as_str(), "{offers}");
    ensure!(offer["allocation_info"]["role"] == "other", "{offers}");
    let offer_id = offer["id"]["value"]
        .as_str()
        .context("no offer id")?
        .to_owned();
    sim.rescind_offers();
    let rescind = raw.next("RESCIND").await?;
    ensure!(
        rescind["rescind"]["offer_id"]["value"] == offer_id.as_str(),
        "{rescind}"
    );
    let launch = json!({"framework_id": {"value": raw.id}, "type": "ACCEPT", "accept": {
        "offer_ids": [{"value": offer_id}],
        "operations": [{"type": "LAUNCH", "launch": {"task_infos": [{
            "name": "late", "task_id": {"value": "late"}, "agent_id": offer["agent_id"],
            "resources": [{"name": "cpus", "type": "SCALAR", "scalar": {"value": 0.5}}],
            "command": {"value": "true"}}]}}]}});
    let (status, body) = raw.call(launch).await?;
    ensure!(status == 202, "{status} {body}");
    let dropped = raw.next("UPDATE").await?;
    ensure!(
        dropped["update"]["status"]["state"] == "TASK_DROPPED",
        "{dropped}"
    );
    ensure!(
        dropped["update"]["status"]["reason"] == "REASON_INVALID_OFFERS",
        "{dropped}"
    );

    // Calls need the framework id and the stream id of its subscription.
    let reconcile =
        json!({"framework_id": {"value": raw.id}, "type": "RECONCILE", "reconcile": {"tasks": []}})
            .to_string();
    let (status, _, _) = post(&leader, &json_headers, &reconcile).await?;
    ensure!(status == 400, "no stream id: {status}");
    let (status, _, _) = post(
        &leader,
        &[json_headers[0], ("Mesos-Stream-Id", "not-it")],
        &reconcile,
    )
    .await?;
    ensure!(status == 400, "wrong stream id: {status}");
    let (status, _) = raw
        .call(json!({"type": "RECONCILE", "reconcile": {"tasks": []}}))
        .await?;
    ensure!(status == 400, "no framework id: {status}");
    let (status, body) = raw.call(json!({"framework_id": {"value": "nope"}, "type": "RECONCILE", "reconcile": {"tasks": []}})).await?;
    ensure!(
        status == 400 && body.contains("Framework cannot be found"),
        "{status} {body}"
    );
    let (status, _) = raw.call(serde_json::from_str(&reconcile)?).await?;
    ensure!(status == 202, "a good call: {status}");
    // Explicit reconciliation of a task the master does not know: TASK_UNKNOWN, no uuid.
    raw.call(
        json!({"framework_id": {"value": raw.id}, "type": "RECONCILE",
        "reconcile": {"tasks": [{"task_id": {"value": "ghost"}}]}}),
    )
    .await?;
    let update = raw.next("UPDATE").await?;
    ensure!(
        update["update"]["status"]["state"] == "TASK_UNKNOWN",
        "{update}"
    );
    ensure!(
        update["update"]["status"]["reason"] == "REASON_RECONCILIATION",
        "{update}"
    );
    ensure!(update["update"]["status"].get("uuid").is_none(), "{update}");

    // A master failover ends the stream; calls are then refused as not subscribed.
    let (id, stream_id) = (raw.id.clone(), raw.stream_id.clone());
    sim.set_leader(Some(1));
    let (status, body, _) = post(
        &endpoint(&urls[1]),
        &[json_headers[0], ("Mesos-Stream-Id", &stream_id)],
        &json!({"framework_id": {"value": id}, "type": "REVIVE"}).to_string(),
    )
    .await?;
    ensure!(
        status == 403 && body.contains("not subscribed"),
        "{status} {body}"
    );
    sim.set_leader(None);
    let (status, body, _) = post(&endpoint(&urls[1]), &json_headers, &subscribe).await?;
    ensure!(
        status == 503 && body.contains("No leader"),
        "{status} {body}"
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Placement.

const GPU_PROFILES: &str = r#"
[profiles.two-gpus]
display_name = "Two GPUs"
image = "notebook-gpu:1"
gpus = 2
constraints = { gpu = "true" }

[profiles.one-gpu]
display_name = "One GPU"
image = "notebook-gpu:1"
gpus = 1
constraints = { gpu = "true" }
"#;

#[tokio::test]
async fn mesos_sim_gpu_profile_lands_only_on_an_agent_with_enough_free_gpus() -> Result<()> {
    let h = hosts(3);
    let sim = MesosSim::builder()
        .credentials("gantry", "s3cret")
        .agent(
            &h[0],
            "cpus:8;mem:8192;disk:1000;ports:[31000-31009]",
            "spark:true",
        )
        .agent(
            &h[1],
            "cpus:8;mem:8192;disk:1000;gpus:1;ports:[31000-31009]",
            "gpu:true",
        )
        .agent(
            &h[2],
            "cpus:8;mem:8192;disk:1000;gpus:2;ports:[31000-31009]",
            "gpu:true",
        )
        .start()
        .await?;
    let config = config(
        &sim.master_urls(),
        "principal = \"gantry\"\nsecret = \"s3cret\"\noffer_wait = \"4s\"",
        GPU_PROFILES,
    )?;
    let spawner = spawner(&config, Arc::new(MemoryStore::new()));

    let (task_id, url) = running_url(&spawner, &request(&config, "alice", "", "two-gpus")).await?;
    ensure!(url.starts_with(&format!("http://{}:310", h[2])), "{url}");
    let task = sim.task(&task_id).context("the master has no such task")?;
    ensure!(task.agent == h[2] && task.gpus == 2, "{task:?}");
    ensure!(
        task.containerizer == "MESOS",
        "GPUs need the Mesos containerizer: {task:?}"
    );
    ensure!(
        task.labels.get(labels::OWNER).map(String::as_str) == Some("alice"),
        "{task:?}"
    );
    ensure!(
        task.labels.get(labels::PROFILE).map(String::as_str) == Some("two-gpus"),
        "{task:?}"
    );
    ensure!(task.labels.contains_key(labels::SERVER), "{task:?}");
    let (status, body) = get(&url).await?;
    ensure!(status == 200 && body.contains(&task_id), "{status} {body}");
    ensure!(
        spawner.step(&key("alice", "")) == Some(MesosStep::Running { url: url.clone() }),
        "{:?}",
        spawner.step(&key("alice", ""))
    );

    // Both GPUs of the big agent are taken and the small one has one: a second two-GPU
    // server has nowhere to go, and the error says why, agent by agent.
    let err = spawner
        .start(
            &request(&config, "bob", "", "two-gpus"),
            ProgressSender::discard(),
        )
        .await
        .unwrap_err();
    let text = format!("{:#}", anyhow::Error::from(err));
    for expected in [
        "no Mesos offer could take profile two-gpus".to_owned(),
        format!("agent {}", h[0]),
        "attribute gpu is missing, the profile needs \"true\"".to_owned(),
        format!("agent {}", h[1]),
        "gpus: needs 2, 1 offered".to_owned(),
    ] {
        ensure!(text.contains(&expected), "{expected:?} is not in: {text}");
    }
    // A one-GPU server fits the small agent.
    let (task_id, url) = running_url(&spawner, &request(&config, "carol", "", "one-gpu")).await?;
    ensure!(url.starts_with(&format!("http://{}:", h[1])), "{url}");
    ensure!(sim.task(&task_id).unwrap().gpus == 1);

    let fw = sim.framework(&spawner.framework_id().unwrap()).unwrap();
    for capability in [
        "GPU_RESOURCES",
        "MULTI_ROLE",
        "PARTITION_AWARE",
        "TASK_KILLING_STATE",
    ] {
        ensure!(
            fw.capabilities.iter().any(|c| c == capability),
            "{capability}: {fw:?}"
        );
    }
    ensure!(
        fw.roles == ["notebooks"] && fw.principal.as_deref() == Some("gantry"),
        "{fw:?}"
    );
    ensure!(fw.failover_timeout == Some(3600.0), "{fw:?}");
    Ok(())
}

#[tokio::test]
async fn mesos_sim_spark_profile_lands_only_on_spark_agents() -> Result<()> {
    let h = hosts(3);
    let sim = MesosSim::builder()
        .agent(&h[0], "cpus:8;mem:8192;ports:[31000-31009]", "")
        .agent(
            &h[1],
            "cpus:8;mem:8192;ports:[31000-31009]",
            "spark:true;rack:r1",
        )
        .agent(&h[2], "cpus:8;mem:8192;ports:[31000-31009]", "spark:false")
        .start()
        .await?;
    let profiles = format!(
        "{CPU}\n[profiles.spark]\ndisplay_name = \"Spark\"\nimage = \"pyspark:1\"\n\
         [profiles.spark.spark]\nmaster = \"spark://spark-master:7077\"\n"
    );
    let config = config(&sim.master_urls(), "", &profiles)?;
    let spawner = spawner(&config, Arc::new(MemoryStore::new()));
    for user in ["ann", "ben", "cid"] {
        let (task_id, url) = running_url(&spawner, &request(&config, user, "", "spark")).await?;
        let task = sim.task(&task_id).unwrap();
        ensure!(
            task.agent == h[1],
            "{user}'s Spark server on {}: {task:?}",
            task.agent
        );
        ensure!(task.containerizer == "DOCKER", "{task:?}");
        // The notebook's port and the Spark driver's two, from the offered range.
        ensure!(task.ports.len() == 3, "{task:?}");
        ensure!(
            url == format!("http://{}:{}", h[1], task.ports[0]),
            "{url} {task:?}"
        );
    }
    // Three Spark servers on one agent took nine different ports.
    let mut ports: Vec<u16> = sim.tasks().iter().flat_map(|t| t.ports.clone()).collect();
    ports.sort_unstable();
    ports.dedup();
    ensure!(ports.len() == 9, "{ports:?}");
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Failover and restarts.

#[tokio::test]
async fn mesos_sim_master_failover_mid_spawn_follows_the_redirect_and_resubscribes() -> Result<()> {
    let h = hosts(3);
    let sim = MesosSim::builder()
        .masters(2)
        .agent(&h[0], "cpus:4;mem:4096;ports:[31000-31009]", "")
        .start()
        .await?;
    let urls = sim.master_urls();
    let config = config(&urls, "", CPU)?;
    let spawner = spawner(&config, Arc::new(MemoryStore::new()));
    spawner.wait_subscribed(WAIT).await?;
    let framework_id = spawner.framework_id().unwrap();

    // The spawn waits for an offer that does not come…
    sim.pause_offers(true);
    let (progress, mut events) = progress_channel(16);
    let start = {
        let spawner = spawner.clone();
        let request = request(&config, "alice", "", "cpu");
        tokio::spawn(async move { spawner.start(&request, progress).await })
    };
    let k = key("alice", "");
    poll_until(
        "the spawn to wait for an offer",
        Instant::now() + WAIT,
        || {
            let step = spawner.step(&k);
            let revived = sim
                .framework(&framework_id)
                .is_some_and(|f| f.suppressed.is_empty());
            async move { Ok((step == Some(MesosStep::WaitingForOffer) && revived).then_some(())) }
        },
    )
    .await?;

    // …while the leader goes away, none is elected for a moment, then master 1 leads.
    let calls_before = sim.calls().len();
    sim.set_leader(None);
    poll_until("a call answered 503", Instant::now() + WAIT, || {
        let seen = sim.calls()[calls_before..].iter().any(|c| c.status == 503);
        async move { Ok(seen.then_some(())) }
    })
    .await?;
    sim.set_leader(Some(1));
    sim.pause_offers(false);
    let record = tokio::time::timeout(WAIT, start).await???;
    ensure!(
        matches!(record.status, ServerStatus::Running { .. }),
        "{record:?}"
    );

    let after = &sim.calls()[calls_before..];
    ensure!(
        after
            .iter()
            .any(|c| c.master == 0 && c.call.is_empty() && c.status == 307),
        "the old leader did not redirect: {after:?}"
    );
    ensure!(
        after
            .iter()
            .any(|c| c.master == 1 && c.call == "SUBSCRIBE" && c.status == 200),
        "no SUBSCRIBE reached the new leader: {after:?}"
    );
    ensure!(spawner.framework_id().as_deref() == Some(framework_id.as_str()));
    let leader_port = urls[1].rsplit(':').next().unwrap();
    ensure!(
        spawner.leader().unwrap().contains(leader_port),
        "{:?}",
        spawner.leader()
    );
    let fw = sim.framework(&framework_id).unwrap();
    ensure!(fw.subscribes >= 2 && fw.connected, "{fw:?}");
    let mut seen = Vec::new();
    while let Ok(Some(e)) = tokio::time::timeout(Duration::from_millis(10), events.next()).await {
        seen.push(e);
    }
    ensure!(
        seen.first() == Some(&ProgressEvent::WaitingForPlacement),
        "{seen:?}"
    );
    ensure!(
        seen.iter()
            .any(|e| matches!(e, ProgressEvent::Placed { host } if !host.is_empty())),
        "{seen:?}"
    );
    ensure!(
        matches!(seen.last(), Some(ProgressEvent::Ready { .. })),
        "{seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn mesos_sim_restarted_spawner_resubscribes_with_its_framework_id_and_keeps_the_notebook()
-> Result<()> {
    let h = hosts(3);
    let sim = MesosSim::builder()
        .agent(&h[0], "cpus:4;mem:4096;ports:[31000-31009]", "")
        .start()
        .await?;
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mesos-framework.json");
    let config = config(&sim.master_urls(), "", CPU)?;
    let request = request(&config, "alice", "lab", "cpu");

    let first = spawner(&config, Arc::new(FileStore::new(&path)));
    let (task_id, url) = running_url(&first, &request).await?;
    let framework_id = first.framework_id().unwrap();
    let saved: Value = serde_json::from_slice(&std::fs::read(&path)?)?;
    ensure!(saved["framework_id"] == framework_id.as_str(), "{saved}");
    drop(first);
    poll_until(
        "the master to see gantry gone",
        Instant::now() + WAIT,
        || {
            let gone = sim.framework(&framework_id).is_some_and(|f| !f.connected);
            async move { Ok(gone.then_some(())) }
        },
    )
    .await?;
    // Within the failover timeout the master keeps the task.
    ensure!(sim.task(&task_id).unwrap().state == "TASK_RUNNING");
    ensure!(get(&url).await?.0 == 200);

    let second = spawner(&config, Arc::new(FileStore::new(&path)));
    second.wait_subscribed(WAIT).await?;
    ensure!(second.framework_id().as_deref() == Some(framework_id.as_str()));
    let fw = sim.framework(&framework_id).unwrap();
    ensure!(fw.subscribes == 2 && fw.connected, "{fw:?}");
    ensure!(sim.frameworks().len() == 1, "a second framework registered");
    let calls = sim.calls();
    let resubscribed = calls
        .iter()
        .rposition(|c| c.call == "SUBSCRIBE" && c.status == 200)
        .unwrap();
    ensure!(
        calls[resubscribed..]
            .iter()
            .any(|c| c.call == "RECONCILE" && c.status == 202),
        "no RECONCILE after the new SUBSCRIBE: {calls:?}"
    );
    let listed = second.list().await?;
    ensure!(listed.len() == 1, "{listed:?}");
    ensure!(
        listed[0].key == key("alice", "lab") && listed[0].backend_id == task_id,
        "{listed:?}"
    );
    ensure!(
        listed[0].status == ServerStatus::Running { url: url.clone() },
        "{listed:?}"
    );
    ensure!(
        second.status(&key("alice", "lab")).await? == ServerStatus::Running { url: url.clone() }
    );
    // Starting it again adopts the running task.
    let (again, again_url) = running_url(&second, &request).await?;
    ensure!(again == task_id && again_url == url, "{again} {again_url}");
    ensure!(sim.tasks().len() == 1);

    second.stop(&key("alice", "lab")).await?;
    let state = sim.task(&task_id).unwrap().state;
    ensure!(state == "TASK_KILLED", "{state}");
    ensure!(second.status(&key("alice", "lab")).await? == ServerStatus::Absent);
    second.stop(&key("alice", "lab")).await?;
    Ok(())
}

#[tokio::test]
async fn mesos_sim_missed_heartbeats_make_the_spawner_subscribe_again() -> Result<()> {
    let sim = MesosSim::builder()
        .heartbeat(Duration::from_millis(200))
        .start()
        .await?;
    let config = config(&sim.master_urls(), "missed_heartbeats = 2", CPU)?;
    let spawner = spawner(&config, Arc::new(MemoryStore::new()));
    spawner.wait_subscribed(WAIT).await?;
    let framework_id = spawner.framework_id().unwrap();
    ensure!(spawner.subscriptions() == 1);
    // The stream stays open but goes silent: after two missed heartbeats gantry drops it.
    sim.pause_heartbeats(true);
    poll_until("gantry to subscribe again", Instant::now() + WAIT, || {
        let n = spawner.subscriptions();
        async move { Ok((n >= 2).then_some(())) }
    })
    .await?;
    sim.pause_heartbeats(false);
    spawner.wait_subscribed(WAIT).await?;
    ensure!(spawner.framework_id().as_deref() == Some(framework_id.as_str()));
    let fw = sim.framework(&framework_id).unwrap();
    ensure!(fw.subscribes >= 2 && fw.connected, "{fw:?}");
    Ok(())
}

#[tokio::test]
async fn mesos_sim_a_framework_past_its_failover_timeout_loses_its_tasks_and_registers_anew()
-> Result<()> {
    let h = hosts(1);
    let sim = MesosSim::builder()
        .agent(&h[0], "cpus:4;mem:4096;ports:[31000-31009]", "")
        .start()
        .await?;
    let mut config = config(&sim.master_urls(), "", CPU)?;
    // Shorter than the configuration allows, for the test.
    config.mesos.as_mut().unwrap().failover_timeout = Duration::from_secs(1);
    let store = Arc::new(MemoryStore::new());
    let first = spawner(&config, store.clone());
    let (task_id, _) = running_url(&first, &request(&config, "alice", "", "cpu")).await?;
    let old = first.framework_id().unwrap();
    drop(first);
    poll_until(
        "the master to remove the framework",
        Instant::now() + WAIT,
        || {
            let removed = sim.framework(&old).is_some_and(|f| f.removed);
            async move { Ok(removed.then_some(())) }
        },
    )
    .await?;
    ensure!(sim.task(&task_id).unwrap().state == "TASK_KILLED");

    let second = spawner(&config, store.clone());
    second.wait_subscribed(WAIT).await?;
    let new = second.framework_id().unwrap();
    ensure!(new != old, "subscribed again as the removed framework");
    ensure!(store.load()?.framework_id.as_deref() == Some(new.as_str()));
    ensure!(second.status(&key("alice", "")).await? == ServerStatus::Absent);
    let (again, _) = running_url(&second, &request(&config, "alice", "", "cpu")).await?;
    ensure!(again != task_id && sim.task(&again).unwrap().framework_id == new);
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Offers and states.

#[tokio::test]
async fn mesos_sim_declined_offers_do_not_starve_another_framework() -> Result<()> {
    let h = hosts(3);
    let sim = MesosSim::builder()
        .agent(&h[0], "cpus:1;mem:1024;ports:[31000-31009]", "")
        .start()
        .await?;
    let config = config(
        &sim.master_urls(),
        "offer_wait = \"6s\"",
        "[profiles.big]\ndisplay_name = \"Big\"\nimage = \"i\"\ncpu_reservation = 4\n",
    )?;
    let spawner = spawner(&config, Arc::new(MemoryStore::new()));
    spawner.wait_subscribed(WAIT).await?;
    // Gantry waits for four CPUs the only agent does not have, declining its offers…
    let start = {
        let spawner = spawner.clone();
        let request = request(&config, "alice", "", "big");
        tokio::spawn(async move { spawner.start(&request, ProgressSender::discard()).await })
    };
    let ours = spawner.framework_id().unwrap();
    poll_until(
        "gantry to be offered the agent",
        Instant::now() + WAIT,
        || {
            let offered = sim.offers_made().iter().any(|o| o.framework == ours);
            async move { Ok(offered.then_some(())) }
        },
    )
    .await?;
    // …and another framework still gets it.
    let mut other =
        RawFramework::subscribe(&sim.master_urls()[0], subscribe_body("other", &[])).await?;
    let offers = other.next("OFFERS").await?;
    ensure!(
        offers["offers"]["offers"][0]["hostname"] == h[0].as_str(),
        "{offers}"
    );
    let err = tokio::time::timeout(WAIT, start).await??.unwrap_err();
    let text = format!("{:#}", anyhow::Error::from(err));
    ensure!(text.contains("cpus: needs 4, 1 offered"), "{text}");
    // Once nothing waits, gantry suppresses its offers.
    poll_until("gantry to suppress offers", Instant::now() + WAIT, || {
        let suppressed = sim
            .framework(&ours)
            .is_some_and(|f| f.suppressed == ["notebooks"]);
        async move { Ok(suppressed.then_some(())) }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn mesos_sim_every_task_state_maps_to_the_servers_status() -> Result<()> {
    let h = hosts(3);
    let sim = MesosSim::builder()
        .agent(&h[0], "cpus:4;mem:4096;ports:[31000-31009]", "")
        .start()
        .await?;
    let config = config(&sim.master_urls(), "", CPU)?;
    let spawner = spawner(&config, Arc::new(MemoryStore::new()));
    let (task_id, url) = running_url(&spawner, &request(&config, "alice", "", "cpu")).await?;
    let k = key("alice", "");
    let running = ServerStatus::Running { url };
    let stopped = |exit_code| ServerStatus::Stopped { exit_code };
    let steps: [(&str, Option<&str>, ServerStatus); 16] = [
        ("TASK_STAGING", None, ServerStatus::Starting),
        ("TASK_STARTING", None, ServerStatus::Starting),
        ("TASK_RUNNING", None, running.clone()),
        ("TASK_UNREACHABLE", None, running.clone()),
        ("TASK_RUNNING", None, running.clone()),
        ("TASK_KILLING", None, ServerStatus::Stopping),
        ("TASK_FINISHED", None, stopped(Some(0))),
        (
            "TASK_FAILED",
            Some("Command exited with status 3"),
            stopped(Some(3)),
        ),
        ("TASK_KILLED", None, stopped(None)),
        ("TASK_ERROR", None, stopped(None)),
        ("TASK_LOST", None, stopped(None)),
        ("TASK_DROPPED", None, stopped(None)),
        ("TASK_GONE", None, stopped(None)),
        ("TASK_GONE_BY_OPERATOR", None, stopped(None)),
        ("TASK_RUNNING", None, running.clone()),
        ("TASK_UNKNOWN", None, ServerStatus::Absent),
    ];
    for (state, message, expected) in steps {
        sim.inject_update(&task_id, state, None, message);
        let deadline = Instant::now() + WAIT;
        let status = poll_until(&format!("the status after {state}"), deadline, || {
            let spawner = spawner.clone();
            let k = k.clone();
            let expected = expected.clone();
            async move {
                let status = spawner.status(&k).await?;
                Ok((status == expected).then_some(status))
            }
        })
        .await?;
        ensure!(status == expected, "{state}");
    }
    Ok(())
}

#[tokio::test]
async fn mesos_sim_updates_are_acknowledged_and_kill_goes_through_killing() -> Result<()> {
    let h = hosts(3);
    let sim = MesosSim::builder()
        .agent(&h[0], "cpus:4;mem:4096;ports:[31000-31009]", "")
        .start()
        .await?;
    let config = config(&sim.master_urls(), "reconcile_interval = \"1s\"", CPU)?;
    let spawner = spawner(&config, Arc::new(MemoryStore::new()));
    let (task_id, _) = running_url(&spawner, &request(&config, "alice", "", "cpu")).await?;
    spawner.stop(&key("alice", "")).await?;
    // Implicit reconciliation repeats every reconcile_interval.
    let reconciles = || sim.calls().iter().filter(|c| c.call == "RECONCILE").count();
    let before = reconciles();
    tokio::time::sleep(Duration::from_millis(2500)).await;
    ensure!(
        reconciles() >= before + 2,
        "{} RECONCILE calls after {before}",
        reconciles()
    );
    poll_until(
        "every update to be acknowledged",
        Instant::now() + WAIT,
        || {
            let t = sim.task(&task_id).unwrap();
            async move { Ok((t.unacknowledged == 0 && t.acknowledged == 4).then_some(())) }
        },
    )
    .await
    .with_context(|| format!("{:?}", sim.task(&task_id)))?;
    // STARTING, RUNNING, KILLING, KILLED: four acknowledged updates.
    ensure!(sim.task(&task_id).unwrap().state == "TASK_KILLED");
    ensure!(
        sim.calls()
            .iter()
            .filter(|c| c.call == "KILL" && c.status == 202)
            .count()
            == 1,
        "{:?}",
        sim.calls()
    );
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Real containers, reached directly and through gantry's proxy.

const IMAGE: &str = "gantry-test/mesos-busybox:1";
const BUSYBOX: &str = "/bin/busybox";

/// Builds the test image unless the engine has it: a rootfs with the host's static busybox
/// (`busybox-static`), imported with `docker import`, as the Docker backend's tests do.
fn ensure_image() -> Result<()> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *built {
        return Ok(());
    }
    let present = Command::new("docker")
        .args(["image", "inspect", IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running the docker CLI")?
        .success();
    if !present {
        ensure!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: install a static busybox (apt-get install busybox-static) \
             to build the test image"
        );
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("bin"))?;
        std::fs::create_dir_all(root.path().join("www"))?;
        std::fs::copy(BUSYBOX, root.path().join("bin/busybox"))?;
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        let status = Command::new("docker")
            .args(["import", "-", IMAGE])
            .stdin(tar.stdout.context("tar output")?)
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "docker import of {IMAGE} failed");
    }
    *built = true;
    Ok(())
}

/// A profile whose server writes `/www/user/<user>/index.html` saying `word`, then serves
/// `/www` with busybox httpd on `port` (a shell word: `8888` or `$GANTRY_PORT`).
fn httpd_profile(id: &str, extra: &str, user: &str, word: &str, port: &str) -> String {
    format!(
        "[profiles.{id}]\ndisplay_name = \"{id}\"\nimage = \"{IMAGE}\"\n{extra}\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"/bin/busybox mkdir -p /www/user/{user} && \
         echo {word} > /www/user/{user}/index.html && exec /bin/busybox httpd -f -p {port} -h /www\"]\n"
    )
}

/// The proxy and API addresses from gantry's "listening on" line, once it is written.
fn listeners(log: &str) -> Option<(String, String)> {
    let line = log
        .lines()
        .find(|l| l.contains("gantry proxy listening on"))?;
    let mut addresses = line.split("http://").skip(1).map(|rest| {
        rest.split(|c: char| c == ',' || c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    Some((addresses.next()?, addresses.next()?))
}

#[tokio::test]
async fn mesos_sim_real_containers_are_reached_directly_and_through_the_proxy() -> Result<()> {
    if !Path::new("/var/run/docker.sock").exists() {
        bail!("this test needs the Docker engine at /var/run/docker.sock; it fails without one");
    }
    ensure_image()?;
    let h = hosts(3);
    let sim = MesosSim::builder()
        .real_containers()
        .agent(
            &h[0],
            "cpus:4;mem:4096;gpus:1;ports:[31010-31019]",
            "gpu:true",
        )
        .agent(&h[1], "cpus:4;mem:4096;ports:[32010-32019]", "spark:true")
        .start()
        .await?;
    sim.ensure_image(IMAGE).await?;
    let profiles = [
        httpd_profile("gpu", "gpus = 1", "alice", "mesos-gpu", "$GANTRY_PORT"),
        httpd_profile("spark", "", "bob", "mesos-spark", "8888")
            + "[profiles.spark.spark]\nmaster = \"spark://spark-master:7077\"\n",
        format!(
            "[profiles.exits]\ndisplay_name = \"Exits\"\nimage = \"{IMAGE}\"\n\
             cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"exit 3\"]\n"
        ),
    ]
    .join("\n");
    let dir = tempfile::tempdir()?;
    let path = dir.path().join("mesos.json");
    let config = config(&sim.master_urls(), "", &profiles)?;
    let first = spawner(&config, Arc::new(FileStore::new(&path)));

    // A GPU server (Mesos containerizer, agent network) and a Spark one (Docker
    // containerizer, bridge with mapped ports), each a real container.
    let (gpu_task, gpu_url) = running_url(&first, &request(&config, "alice", "", "gpu")).await?;
    let (spark_task, spark_url) =
        running_url(&first, &request(&config, "bob", "", "spark")).await?;
    ensure!(
        gpu_url.starts_with(&format!("http://{}:3101", h[0])),
        "{gpu_url}"
    );
    ensure!(
        spark_url.starts_with(&format!("http://{}:3201", h[1])),
        "{spark_url}"
    );
    for (task, word, url, user) in [
        (&gpu_task, "mesos-gpu", &gpu_url, "alice"),
        (&spark_task, "mesos-spark", &spark_url, "bob"),
    ] {
        let view = sim.task(task).unwrap();
        let container = view.container.clone().context("no container")?;
        let inspect = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", &container])
            .output()?;
        ensure!(
            String::from_utf8_lossy(&inspect.stdout).trim() == "true",
            "{view:?}"
        );
        let (status, body) = get(&format!("{url}/user/{user}/")).await?;
        ensure!(
            status == 200 && body.trim() == word,
            "{url}: {status} {body}"
        );
    }
    let spark_labels = Command::new("docker")
        .args(["inspect", "-f", "{{index .Config.Labels \"gantry.owner\"}}"])
        .arg(sim.task(&spark_task).unwrap().container.unwrap())
        .output()?;
    ensure!(String::from_utf8_lossy(&spark_labels.stdout).trim() == "bob");

    // A server that exits is reported with its exit code.
    let err = first
        .start(
            &request(&config, "carl", "", "exits"),
            ProgressSender::discard(),
        )
        .await
        .unwrap_err();
    ensure!(
        matches!(
            &err,
            SpawnError::Exited {
                exit_code: Some(3),
                ..
            }
        ),
        "{err:?}"
    );

    // Through gantry's proxy, with a route per server as the hub adds them.
    let log = dir.path().join("gantry.log");
    let mut command = Command::new(gantry_bin()?);
    command
        .args([
            "proxy",
            "--ip",
            "127.0.0.1",
            "--port",
            "0",
            "--api-port",
            "0",
            "--threads",
            "1",
        ])
        .env("CONFIGPROXY_AUTH_TOKEN", "secret")
        .env_remove("RUST_LOG");
    let _gantry = ChildGuard::spawn("gantry", command, &log)?;
    let (proxy, api) = poll_until(
        "gantry to report its listeners",
        Instant::now() + WAIT,
        || {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            async move { Ok(listeners(&text)) }
        },
    )
    .await?;
    let client = reqwest::Client::new();
    for (user, url) in [("alice", &gpu_url), ("bob", &spark_url)] {
        let added = client
            .post(format!("http://{api}/api/routes/user/{user}"))
            .header("authorization", "token secret")
            .json(&json!({"target": url, "user": user}))
            .send()
            .await?
            .status();
        ensure!(
            added.as_u16() == 201,
            "adding the route for {user}: {added}"
        );
    }
    let through = |user: &'static str| {
        let proxy = proxy.clone();
        async move { get(&format!("http://{proxy}/user/{user}/")).await }
    };
    ensure!(through("alice").await?.1.trim() == "mesos-gpu");
    ensure!(through("bob").await?.1.trim() == "mesos-spark");

    // gantry restarts: the new spawner finds both servers, which still answer.
    drop(first);
    let second = spawner(&config, Arc::new(FileStore::new(&path)));
    second.wait_subscribed(WAIT).await?;
    let listed = second.list().await?;
    let running: BTreeMap<String, ServerStatus> = listed
        .iter()
        .map(|r| (r.key.user.clone(), r.status.clone()))
        .collect();
    ensure!(
        running.get("alice")
            == Some(&ServerStatus::Running {
                url: gpu_url.clone()
            }),
        "{listed:?}"
    );
    ensure!(
        running.get("bob")
            == Some(&ServerStatus::Running {
                url: spark_url.clone()
            }),
        "{listed:?}"
    );
    ensure!(through("alice").await?.1.trim() == "mesos-gpu");

    // Stopping kills the tasks and stops the containers.
    for user in ["alice", "bob"] {
        second.stop(&key(user, "")).await?;
    }
    for task in [&gpu_task, &spark_task] {
        let view = sim.task(task).unwrap();
        ensure!(view.state == "TASK_KILLED", "{view:?}");
        let inspect = Command::new("docker")
            .args([
                "inspect",
                "-f",
                "{{.State.Running}}",
                &view.container.unwrap(),
            ])
            .output()?;
        ensure!(String::from_utf8_lossy(&inspect.stdout).trim() == "false");
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// `gantry up` on the Mesos backend, as a process.

/// Reads a server's progress stream to its end, with the admin token; returns every event.
async fn progress_events(client: &reqwest::Client, url: &str, token: &str) -> Result<Vec<Value>> {
    let response = client
        .get(url)
        .header("authorization", format!("token {token}"))
        .send()
        .await?;
    ensure!(response.status() == 200, "progress: {}", response.status());
    let text = tokio::time::timeout(Duration::from_secs(120), response.text())
        .await
        .context("the progress stream did not end within 120 s")??;
    text.split("\n\n")
        .filter_map(|chunk| chunk.strip_prefix("data: "))
        .map(|data| serde_json::from_str(data).context("event JSON"))
        .collect()
}

/// A profile of `gantry up` running `script` (a TOML literal string: no `'`) with busybox.
fn script_profile(id: &str, image: &str, extra: &str, script: &str) -> String {
    format!(
        "[profiles.{id}]\ndisplay_name = \"{id}\"\nimage = \"{image}\"\n{extra}\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", '{script}']\n"
    )
}

/// `gantry up` with `[mesos]` pointing at the simulator (real containers, basic auth with a
/// `secret_file`): servers start through the REST API on a CPU, a GPU and a Spark profile and
/// are reached through gantry's proxy; the GPU server (agent network) calls the servers' hub
/// API at `hub.servers_api_url`. gantry restarts: the same framework re-subscribes, no task
/// is killed, the servers are adopted and still reached. A stop through the API kills the
/// task and stops its container.
#[tokio::test]
async fn mesos_sim_gantry_up_starts_adopts_after_a_restart_and_stops_servers() -> Result<()> {
    if !Path::new("/var/run/docker.sock").exists() {
        bail!("this test needs the Docker engine at /var/run/docker.sock; it fails without one");
    }
    let image = gantry_integration_tests::ensure_busybox_image()?;
    let h = hosts(2);
    let sim = MesosSim::builder()
        .real_containers()
        .credentials("gantry", "s3cret-from-a-file")
        .agent(&h[0], "cpus:4;mem:4096;ports:[31130-31139]", "spark:true")
        .agent(
            &h[1],
            "cpus:4;mem:4096;gpus:1;ports:[31140-31149]",
            "gpu:true",
        )
        .start()
        .await?;
    sim.ensure_image(image).await?;
    let secrets = tempfile::tempdir()?;
    let secret_file = secrets.path().join("mesos-secret");
    std::fs::write(&secret_file, "s3cret-from-a-file\n")?;
    let api_port = gantry_integration_tests::free_port()?;
    let masters: Vec<String> = sim.master_urls().iter().map(|m| format!("{m:?}")).collect();
    let page = "/www/user/$JUPYTERHUB_USER";
    let profiles = [
        script_profile(
            "cpu",
            image,
            "",
            &format!(
                "mkdir -p {page} && echo hello $JUPYTERHUB_USER $JUPYTERHUB_API_URL > \
                 {page}/index.html && exec /bin/busybox httpd -f -p 8888 -h /www"
            ),
        ),
        // The agent's network: the server reaches the hub's servers' API on 127.0.0.1 and
        // serves what `GET /hub/api/user` told it with its own token.
        script_profile(
            "gpu",
            image,
            "gpus = 1",
            &format!(
                "mkdir -p {page} && /bin/busybox wget -q -O {page}/index.html --header \
                 \"Authorization: token $JUPYTERHUB_API_TOKEN\" $JUPYTERHUB_API_URL/user; \
                 exec /bin/busybox httpd -f -p $GANTRY_PORT -h /www"
            ),
        ),
        // No docker.spark_driver_host: the driver advertises its agent.
        script_profile(
            "spark",
            image,
            "",
            &format!(
                "mkdir -p {page} && echo $SPARK_DRIVER_HOST $SPARK_DRIVER_PORT > \
                 {page}/index.html && exec /bin/busybox httpd -f -p 8888 -h /www"
            ),
        ) + "[profiles.spark.spark]\nmaster = \"spark://spark-master:7077\"\n",
    ]
    .join("\n");
    let instance = format!("mtup{}", std::process::id());
    let mut gantry = gantry_integration_tests::TestGantry::new(&format!(
        "servers_api_bind = \"127.0.0.1:{api_port}\"\n\
         servers_api_url = \"http://127.0.0.1:{api_port}\"\n\
         [docker]\ninstance = \"{instance}\"\n\
         [mesos]\nmasters = [{}]\nrole = \"notebooks\"\nprincipal = \"gantry\"\n\
         secret_file = \"{}\"\ncall_timeout = \"5s\"\noffer_wait = \"20s\"\n\
         start_timeout = \"30s\"\nkill_grace = \"1s\"\nrefuse_seconds = 1.0\n\
         max_backoff = \"1s\"\nfailover_timeout = \"1h\"\ndefault_mem = \"256M\"\n\
         {profiles}",
        masters.join(", "),
        secret_file.display()
    ))?;
    let token = "5eed0000".repeat(8);
    gantry.set_env("GANTRY_ADMIN_TOKEN", &token);
    for user in ["alice", "bob", "carol"] {
        gantry.add_user(user, "correct horse battery", false)?;
    }
    gantry.start().await?;
    let base = gantry.url();
    let admin = reqwest::Client::new();
    let auth = format!("token {token}");

    // The framework subscribed once, authenticated with the file's secret.
    let frameworks = sim.frameworks();
    ensure!(frameworks.len() == 1, "{frameworks:?}");
    let framework = frameworks[0].clone();
    ensure!(
        framework.connected
            && framework.subscribes == 1
            && framework.principal.as_deref() == Some("gantry"),
        "{framework:?}"
    );
    let state = std::fs::read_to_string(gantry.data_dir().join("mesos-framework.json"))?;
    ensure!(state.contains(&framework.id), "{state}");

    // Three servers through the REST API, each followed to ready.
    for (user, profile) in [("alice", "cpu"), ("bob", "gpu"), ("carol", "spark")] {
        let started = admin
            .post(format!("{base}/hub/api/users/{user}/server"))
            .header("authorization", &auth)
            .json(&json!({"profile": profile}))
            .send()
            .await?;
        ensure!(
            started.status() == 202,
            "starting {user}: {}",
            started.status()
        );
        let events = progress_events(
            &admin,
            &format!("{base}/hub/api/users/{user}/server/progress"),
            &token,
        )
        .await?;
        ensure!(
            events.last().is_some_and(|e| e["ready"] == true),
            "{user}'s server did not get ready: {events:#?}\n{}",
            gantry.log_text()
        );
    }
    let through = |user: &'static str| {
        let (admin, auth, base) = (admin.clone(), auth.clone(), base.clone());
        async move {
            let response = admin
                .get(format!("{base}/user/{user}/"))
                .header("authorization", auth)
                .send()
                .await?;
            anyhow::Ok((response.status().as_u16(), response.text().await?))
        }
    };
    let api_url = format!("http://127.0.0.1:{api_port}/hub/api");
    let alice_page = (200, format!("hello alice {api_url}\n"));
    ensure!(through("alice").await? == alice_page);
    let (status, bob_page) = through("bob").await?;
    let whoami: Value = serde_json::from_str(&bob_page)
        .with_context(|| format!("bob's page is not the hub's user model: {status} {bob_page}"))?;
    ensure!(
        status == 200 && whoami["name"] == "bob",
        "{status} {whoami}"
    );
    let (status, carol_page) = through("carol").await?;
    ensure!(
        status == 200 && carol_page.starts_with(&format!("{} 3113", h[0])),
        "the Spark driver advertises its agent: {status} {carol_page}"
    );

    let tasks: BTreeMap<String, (String, String)> = sim
        .tasks()
        .into_iter()
        .map(|t| {
            let user = ["alice", "bob", "carol"]
                .into_iter()
                .find(|u| t.task_id.starts_with(&format!("{instance}-{u}-")))
                .unwrap_or_default()
                .to_owned();
            (user, (t.task_id, t.container.unwrap_or_default()))
        })
        .collect();
    ensure!(tasks.len() == 3 && !tasks.contains_key(""), "{tasks:?}");
    let gpu_view = sim.task(&tasks["bob"].0).context("bob's task")?;
    ensure!(
        gpu_view.gpus == 1 && gpu_view.containerizer == "MESOS" && gpu_view.agent == h[1],
        "{gpu_view:?}"
    );
    let running = |container: &str| {
        let out = Command::new("docker")
            .args(["inspect", "-f", "{{.State.Running}}", container])
            .output();
        out.map(|o| String::from_utf8_lossy(&o.stdout).trim() == "true")
            .unwrap_or(false)
    };

    // A restart: the same framework subscribes again, nothing is killed, all is adopted.
    gantry.restart().await?;
    let frameworks = sim.frameworks();
    ensure!(
        frameworks.len() == 1
            && frameworks[0].id == framework.id
            && frameworks[0].subscribes == 2
            && frameworks[0].connected
            && !frameworks[0].removed,
        "{frameworks:?}"
    );
    ensure!(
        !sim.calls().iter().any(|c| c.call == "KILL"),
        "{:?}",
        sim.calls()
    );
    for (user, (task, container)) in &tasks {
        let view = sim.task(task).context("task")?;
        ensure!(view.state == "TASK_RUNNING", "{user}: {view:?}");
        ensure!(running(container), "{user}'s container {container} stopped");
    }
    ensure!(
        through("alice").await? == alice_page,
        "{}",
        gantry.log_text()
    );
    ensure!(through("bob").await? == (200, bob_page.clone()));
    ensure!(through("carol").await? == (200, carol_page.clone()));
    let model: Value = admin
        .get(format!("{base}/hub/api/users/alice"))
        .header("authorization", &auth)
        .send()
        .await?
        .json()
        .await?;
    ensure!(model["servers"][""]["ready"] == true, "{model}");
    ensure!(
        gantry.log_text().contains("Mesos backend ready"),
        "{}",
        gantry.log_text()
    );

    // A stop through the API kills the task and stops its container; the route goes.
    let stopped = admin
        .delete(format!("{base}/hub/api/users/alice/server"))
        .header("authorization", &auth)
        .send()
        .await?;
    ensure!(
        stopped.status() == 204,
        "stop: {} {}",
        stopped.status(),
        gantry.log_text()
    );
    let (task, container) = &tasks["alice"];
    let view = sim.task(task).context("alice's task")?;
    ensure!(view.state == "TASK_KILLED", "{view:?}");
    ensure!(sim.calls().iter().any(|c| c.call == "KILL"));
    ensure!(
        !running(container),
        "alice's container {container} still runs"
    );
    ensure!(through("alice").await?.0 == 503);
    ensure!(through("bob").await?.0 == 200, "bob's server is untouched");
    gantry.stop();
    Ok(())
}
