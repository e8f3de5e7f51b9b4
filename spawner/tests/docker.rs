//! The Docker backend against the real engine on `/var/run/docker.sock` (rung 3 of the test
//! ladder). No outside registry is needed: the harness builds tiny images from the host's
//! static busybox (`busybox-static`) with `docker import`, once, and the pull tests serve an
//! image they build from a registry test double on 127.0.0.1 ([`registry`]). Every test runs
//! under its own gantry instance name and network, and removes its containers, volumes,
//! network and pulled images when it ends, pass or fail. Without a Docker engine the tests
//! fail; they never pass silently.

#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use bollard::Docker;
use bollard::query_parameters::ListContainersOptions;
use gantry_spawner::spawner::progress_channel;
use gantry_spawner::{
    DockerOptions, DockerSpawner, Identity, LayerPhase, ProfileId, ProgressEvent, ProgressSender,
    ServerKey, ServerName, ServerStatus, SpawnError, SpawnRequest, Spawner, SpawnerConfig, labels,
};

mod registry;

const SOCKET: &str = "/var/run/docker.sock";
/// The test image: the static busybox with a link for each of its applets in `/bin` (so that
/// `chown`, `sh`, `stat` are on the default PATH) and a page in `/www`.
const IMAGE: &str = "gantry-test/busybox:2";
/// The same without the applet links: only `/bin/busybox`, so no `chown` on the PATH.
const BARE_IMAGE: &str = "gantry-test/busybox:1";
const BUSYBOX: &str = "/bin/busybox";

/// Writes the test image's root file system into `root`: `/bin/busybox`, with `applets` the
/// links to it in `/bin`, and `/www/index.html`.
fn write_rootfs(root: &Path, applets: bool) -> Result<()> {
    ensure!(
        Path::new(BUSYBOX).exists(),
        "{BUSYBOX} is missing: install a static busybox (apt-get install busybox-static) to \
         build the test image"
    );
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("www"))?;
    std::fs::copy(BUSYBOX, root.join("bin/busybox"))?;
    std::fs::write(root.join("www/index.html"), "gantry test\n")?;
    if applets {
        let list = Command::new(BUSYBOX).arg("--list").output()?;
        ensure!(list.status.success(), "busybox --list failed");
        for applet in String::from_utf8_lossy(&list.stdout).split_whitespace() {
            if applet != "busybox" {
                std::os::unix::fs::symlink("busybox", root.join("bin").join(applet))?;
            }
        }
    }
    Ok(())
}

/// Builds the test images unless the engine has them ([`IMAGE`], [`BARE_IMAGE`]).
fn ensure_image() -> Result<()> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *built {
        return Ok(());
    }
    for (image, applets) in [(IMAGE, true), (BARE_IMAGE, false)] {
        let present = Command::new("docker")
            .args(["image", "inspect", image])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .context("running the docker CLI")?
            .success();
        if present {
            continue;
        }
        let root = tempfile::tempdir()?;
        write_rootfs(root.path(), applets)?;
        let tar = Command::new("tar")
            .args(["-C"])
            .arg(root.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        let status = Command::new("docker")
            .args(["import", "-", image])
            .stdin(tar.stdout.context("tar output")?)
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "docker import of {image} failed");
    }
    *built = true;
    Ok(())
}

/// Whether the engine has `image`.
fn image_present(image: &str) -> Result<bool> {
    Ok(Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running the docker CLI")?
        .success())
}

/// Runs the docker CLI with `args`; its stdout, trimmed.
fn docker_cli(args: &[&str]) -> Result<String> {
    let output = Command::new("docker").args(args).output()?;
    ensure!(output.status.success(), "docker {args:?}: {output:?}");
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
}

/// One test's world: a spawner under a unique instance name and network, removed on drop.
struct Harness {
    instance: String,
    spawner: Arc<DockerSpawner>,
    config: gantry_spawner::ValidatedConfig,
}

impl Drop for Harness {
    fn drop(&mut self) {
        // Synchronous CLI calls, so cleanup runs even while a failed test unwinds. Twice: a
        // failed test may drop its harness while an aborted start's create is still landing.
        self.remove_all();
        std::thread::sleep(Duration::from_millis(300));
        self.remove_all();
    }
}

impl Harness {
    /// Removes every container, volume and network with this harness's instance label.
    fn remove_all(&self) {
        let filter = format!("label={}={}", labels::INSTANCE, self.instance);
        if let Ok(out) = Command::new("docker")
            .args(["ps", "-aq", "--filter", &filter])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            let ids: Vec<&str> = ids.split_whitespace().collect();
            if !ids.is_empty() {
                let _ = Command::new("docker")
                    .args(["rm", "-f"])
                    .args(&ids)
                    .stdout(Stdio::null())
                    .status();
            }
        }
        // By label, and by name: the engine creates a volume a profile names without labels.
        if let Ok(out) = Command::new("docker").args(["volume", "ls", "-q"]).output() {
            let names = String::from_utf8_lossy(&out.stdout).to_string();
            let mine = |name: &&str| name.starts_with(&format!("{}-", self.instance));
            let labelled = Command::new("docker")
                .args(["volume", "ls", "-q", "--filter", &filter])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
                .unwrap_or_default();
            let names = names.split_whitespace().filter(mine);
            for name in names.chain(labelled.split_whitespace()) {
                let _ = Command::new("docker")
                    .args(["volume", "rm", "-f", name])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
        // By label: a race may have left two networks of one name.
        if let Ok(out) = Command::new("docker")
            .args(["network", "ls", "-q", "--filter", &filter])
            .output()
        {
            let ids = String::from_utf8_lossy(&out.stdout).to_string();
            for id in ids.split_whitespace() {
                let _ = Command::new("docker")
                    .args(["network", "rm", id])
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .status();
            }
        }
    }
}

const HTTPD: &str = r#"cmd = ["/bin/busybox", "httpd", "-f", "-p", "8888", "-h", "/www"]"#;

impl Harness {
    /// A harness named after `test`, with `profiles` (TOML `[profiles.*]` tables) and extra
    /// `[docker]` keys.
    async fn new(test: &str, docker_keys: &str, profiles: &str) -> Result<Self> {
        let options = DockerOptions {
            start_timeout: Duration::from_secs(20),
            stop_grace: Duration::from_secs(1),
            log_lines: 5,
            ..DockerOptions::default()
        };
        Self::with_options(test, docker_keys, profiles, options).await
    }

    /// [`Harness::new`] with the spawner's options given.
    async fn with_options(
        test: &str,
        docker_keys: &str,
        profiles: &str,
        options: DockerOptions,
    ) -> Result<Self> {
        static N: AtomicUsize = AtomicUsize::new(0);
        if !Path::new(SOCKET).exists() {
            bail!(
                "the Docker engine socket {SOCKET} is missing: these tests need a running \
                 Docker engine and fail without one"
            );
        }
        ensure_image()?;
        let instance = format!(
            "gt{}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            test
        );
        let instance: String = instance.chars().take(32).collect();
        let network = format!("{instance}-net");
        // `@instance@` in the profiles becomes the instance name (for volumes of its own).
        let profiles = profiles.replace("@instance@", &instance);
        let text = format!(
            "[docker]\ninstance = \"{instance}\"\nnetwork = \"{network}\"\n{docker_keys}\n{profiles}"
        );
        let config: SpawnerConfig = toml::from_str(&text)?;
        let config = config.validate()?;
        let docker = Docker::connect_with_unix(SOCKET, 60, bollard::API_DEFAULT_VERSION)?
            .negotiate_version()
            .await
            .context("negotiating the Docker API version")?;
        let spawner = DockerSpawner::new(docker, &config, options);
        Ok(Self {
            instance,
            spawner: Arc::new(spawner),
            config,
        })
    }

    fn request(&self, user: &str, server: &str, profile: &str) -> SpawnRequest {
        SpawnRequest {
            identity: Identity::new(user),
            server: ServerName::new(server).unwrap(),
            profile: self.config.profiles[&ProfileId::new(profile).unwrap()].clone(),
            env: BTreeMap::from([("JUPYTERHUB_API_TOKEN".to_owned(), "t".to_owned())]),
        }
    }

    /// How many containers the engine has with this harness's instance label.
    async fn container_count(&self) -> Result<usize> {
        let filter = format!("{}={}", labels::INSTANCE, self.instance);
        let options = ListContainersOptions {
            all: true,
            filters: Some(std::collections::HashMap::from([(
                "label".to_owned(),
                vec![filter],
            )])),
            ..ListContainersOptions::default()
        };
        Ok(self
            .spawner
            .docker()
            .list_containers(Some(options))
            .await?
            .len())
    }
}

/// GETs `url` (`http://ip:port`) with HTTP/1.0 and returns the response.
async fn http_get(url: &str) -> Result<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = url.strip_prefix("http://").context("not an http URL")?;
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    stream
        .write_all(format!("GET /index.html HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await?;
    let mut response = String::new();
    stream.read_to_string(&mut response).await?;
    Ok(response)
}

fn key(user: &str, server: &str) -> ServerKey {
    ServerKey {
        user: user.to_owned(),
        server: ServerName::new(server).unwrap(),
    }
}

fn web_profile() -> String {
    format!("[profiles.web]\ndisplay_name = \"Web\"\nimage = \"{IMAGE}\"\n{HTTPD}\n")
}

#[tokio::test]
async fn start_answers_http_then_stop_removes() -> Result<()> {
    let h = Harness::new("life", "", &web_profile()).await?;
    let (tx, mut rx) = progress_channel(32);
    let record = h.spawner.start(&h.request("alice", "", "web"), tx).await?;
    let ServerStatus::Running { url } = &record.status else {
        bail!("not running: {record:?}");
    };
    let mut events = Vec::new();
    while let Some(e) = rx.next().await {
        events.push(e);
    }
    ensure!(
        matches!(events.first(), Some(ProgressEvent::Creating)),
        "events: {events:?}"
    );
    ensure!(
        events.contains(&ProgressEvent::Starting),
        "events: {events:?}"
    );
    ensure!(
        events.last() == Some(&ProgressEvent::Ready { url: url.clone() }),
        "events: {events:?}"
    );
    let page = http_get(url).await?;
    ensure!(
        page.starts_with("HTTP/1.") && page.contains("gantry test"),
        "{page}"
    );
    let k = key("alice", "");
    assert_eq!(h.spawner.status(&k).await?, record.status);
    h.spawner.stop(&k).await?;
    assert_eq!(h.spawner.status(&k).await?, ServerStatus::Absent);
    assert_eq!(h.container_count().await?, 0);
    // Stopping what is gone is fine.
    h.spawner.stop(&k).await?;
    Ok(())
}

#[tokio::test]
async fn a_second_start_returns_the_same_server() -> Result<()> {
    let h = Harness::new("twice", "", &web_profile()).await?;
    let req = h.request("bob", "lab", "web");
    let first = h.spawner.start(&req, ProgressSender::discard()).await?;
    let second = h.spawner.start(&req, ProgressSender::discard()).await?;
    assert_eq!(first, second);
    assert_eq!(h.container_count().await?, 1);
    Ok(())
}

#[tokio::test]
async fn fifty_concurrent_starts_make_one_container() -> Result<()> {
    let h = Harness::new("fifty", "", &web_profile()).await?;
    let req = Arc::new(h.request("carol", "", "web"));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..50 {
        let spawner = Arc::clone(&h.spawner);
        let req = Arc::clone(&req);
        tasks.spawn(async move { spawner.start(&req, ProgressSender::discard()).await });
    }
    let mut records = Vec::new();
    while let Some(result) = tasks.join_next().await {
        records.push(result??);
    }
    assert_eq!(records.len(), 50);
    assert!(records.iter().all(|r| r == &records[0]), "{records:?}");
    assert_eq!(h.container_count().await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_server_that_exits_reports_its_code_and_last_lines() -> Result<()> {
    let profile = format!(
        "[profiles.fail]\ndisplay_name = \"Fail\"\nimage = \"{IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"echo first; echo second; echo oops >&2; exit 3\"]\n"
    );
    let h = Harness::new("exit", "", &profile).await?;
    let (tx, mut rx) = progress_channel(32);
    let err = h
        .spawner
        .start(&h.request("dave", "", "fail"), tx)
        .await
        .unwrap_err();
    let SpawnError::Exited {
        exit_code,
        last_log_lines,
        ..
    } = &err
    else {
        bail!("unexpected error: {err:?}");
    };
    assert_eq!(*exit_code, Some(3));
    assert!(
        last_log_lines.contains(&"oops".to_owned()),
        "{last_log_lines:?}"
    );
    let mut failed = false;
    while let Some(e) = rx.next().await {
        failed |= matches!(
            e,
            ProgressEvent::Failed {
                exit_code: Some(3),
                ..
            }
        );
    }
    assert!(failed, "no Failed progress event");
    // stdout and stderr are separate pipes, so only the order within one is certain.
    let lines = last_log_lines;
    let at = |l: &str| lines.iter().position(|x| x == l);
    assert_eq!(lines.len(), 3, "{lines:?}");
    assert!(at("oops").is_some(), "{lines:?}");
    assert!(at("first").unwrap() < at("second").unwrap(), "{lines:?}");
    // A failed start leaves nothing behind: what it said is in the error.
    let k = key("dave", "");
    assert_eq!(h.spawner.status(&k).await?, ServerStatus::Absent);
    assert_eq!(h.container_count().await?, 0);
    assert!(h.spawner.exit_info(&k).await?.is_none());
    Ok(())
}

/// A server that stops after it was ready (a crash) is kept, stopped, with why.
#[tokio::test]
async fn a_server_that_crashes_after_it_was_ready_is_kept_with_its_exit_code() -> Result<()> {
    let profile = format!(
        "[profiles.crash]\ndisplay_name = \"Crash\"\nimage = \"{IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \
         \"/bin/busybox httpd -p 8888 -h /www; sleep 3; echo bye; exit 7\"]\n"
    );
    let h = Harness::new("crash", "", &profile).await?;
    h.spawner
        .start(&h.request("dora", "", "crash"), ProgressSender::discard())
        .await?;
    let k = key("dora", "");
    let mut status = h.spawner.status(&k).await?;
    for _ in 0..100 {
        if matches!(status, ServerStatus::Stopped { .. }) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        status = h.spawner.status(&k).await?;
    }
    assert_eq!(status, ServerStatus::Stopped { exit_code: Some(7) });
    let info = h.spawner.exit_info(&k).await?.context("no exit info")?;
    assert_eq!(info.exit_code, Some(7));
    assert!(!info.oom_killed);
    assert_eq!(info.last_log_lines, ["bye"]);
    h.spawner.stop(&k).await?;
    assert_eq!(h.spawner.status(&k).await?, ServerStatus::Absent);
    Ok(())
}

#[tokio::test]
async fn list_reads_servers_and_gpus_back_from_labels() -> Result<()> {
    let profiles = format!(
        "{}\n[profiles.gpu]\ndisplay_name = \"GPU\"\nimage = \"{IMAGE}\"\n{HTTPD}\ngpus = 1\n",
        web_profile()
    );
    let h = Harness::new("list", "gpus = [\"0\", \"1\"]", &profiles).await?;
    let web = h
        .spawner
        .start(&h.request("frank", "a", "web"), ProgressSender::discard())
        .await?;
    // The engine here may predate CDI device requests (or lack the devices). A start that
    // fails leaves nothing behind, so then the container the spawner makes is created by
    // hand from the same request, unstarted: its labels are what restart recovery reads.
    let grace = h.request("grace", "", "gpu");
    let gpu = h.spawner.start(&grace, ProgressSender::discard()).await;
    if let Err(e) = &gpu {
        eprintln!(
            "GPU start on this engine: {e}: {:?}",
            std::error::Error::source(e)
        );
        assert!(matches!(e, SpawnError::Backend { .. }), "{e:?}");
        assert_eq!(
            h.container_count().await?,
            1,
            "the failed start left its container"
        );
        assert!(h.spawner.gpu_allocations().iter().next().is_none());
        let allocation = gantry_spawner::Allocation {
            gpus: vec![gantry_spawner::DeviceId::new("0")?],
            spark_ports: None,
        };
        let spec = gantry_spawner::container_spec(
            &grace.profile,
            &grace.identity,
            &grace.server,
            &allocation,
            &h.config.settings,
        )?;
        let options = bollard::query_parameters::CreateContainerOptions {
            name: Some(spec.name.clone()),
            ..Default::default()
        };
        h.spawner
            .docker()
            .create_container(
                Some(options),
                gantry_spawner::docker::create_body(&spec, &BTreeMap::new()),
            )
            .await?;
    }
    let mut listed = h.spawner.list().await?;
    listed.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(listed.len(), 2, "{listed:?}");
    assert_eq!(listed[0].key, key("frank", "a"));
    assert_eq!(listed[0].profile.as_str(), "web");
    assert_eq!(listed[0].status, web.status);
    assert_eq!(listed[1].key, key("grace", ""));
    assert_eq!(listed[1].profile.as_str(), "gpu");
    // A fresh spawner (as after a restart) rebuilds the GPU book from labels alone.
    let fresh = DockerSpawner::new(
        h.spawner.docker().clone(),
        &h.config,
        DockerOptions::default(),
    );
    assert!(fresh.gpu_allocations().iter().next().is_none());
    let book = fresh.rebuild_gpu_allocations().await?;
    let holds: Vec<_> = book.iter().collect();
    assert_eq!(holds.len(), 1, "{holds:?}");
    let (_, hold) = holds[0];
    assert_eq!(
        hold.devices.iter().map(|d| d.as_str()).collect::<Vec<_>>(),
        ["0"]
    );
    assert!(!hold.shared);
    Ok(())
}

#[tokio::test]
async fn two_spawners_racing_adopt_one_container() -> Result<()> {
    // Two processes' worth of spawners share no lock; the deterministic name and the
    // engine's 409 on a taken name leave one container, which both adopt.
    let h = Harness::new("race", "", &web_profile()).await?;
    let other = Arc::new(DockerSpawner::new(
        h.spawner.docker().clone(),
        &h.config,
        DockerOptions::default(),
    ));
    // The network exists before the race, as after startup; the engine here (API < 1.44)
    // would otherwise let the two processes create one each.
    h.spawner.prepare().await?;
    let req = Arc::new(h.request("heidi", "", "web"));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..20 {
        let spawner = if i % 2 == 0 {
            Arc::clone(&h.spawner)
        } else {
            Arc::clone(&other)
        };
        let req = Arc::clone(&req);
        tasks.spawn(async move { spawner.start(&req, ProgressSender::discard()).await });
    }
    let mut records = Vec::new();
    while let Some(result) = tasks.join_next().await {
        records.push(result??);
    }
    assert!(records.iter().all(|r| r == &records[0]), "{records:?}");
    assert_eq!(h.container_count().await?, 1);
    Ok(())
}

#[tokio::test]
async fn a_spark_driver_publishes_its_two_ports_one_to_one() -> Result<()> {
    let profile = format!(
        "[profiles.spark]\ndisplay_name = \"Spark\"\nimage = \"{IMAGE}\"\n{HTTPD}\n\
         [profiles.spark.spark]\nmaster = \"spark://master:7077\"\n\
         networking = \"published-ports\"\n"
    );
    // A range of its own per run, so that parallel runs of this suite do not collide.
    let base = 41_000 + u16::try_from(std::process::id() % 500).unwrap() * 4;
    let docker_keys = format!(
        "spark_driver_host = \"127.0.0.1\"\nspark_ports = [{base}, {}]",
        base + 3
    );
    let h = Harness::new("spark", &docker_keys, &profile).await?;
    let first = h
        .spawner
        .start(&h.request("ivan", "", "spark"), ProgressSender::discard())
        .await?;
    let second = h
        .spawner
        .start(&h.request("judy", "", "spark"), ProgressSender::discard())
        .await?;
    let mut seen = Vec::new();
    for record in [&first, &second] {
        let c = h
            .spawner
            .docker()
            .inspect_container(&record.backend_id, None)
            .await?;
        let label = c.config.unwrap().labels.unwrap()[labels::SPARK_PORTS].clone();
        let bindings = c.host_config.unwrap().port_bindings.unwrap();
        for port in label.split(',') {
            let binding = &bindings[&format!("{port}/tcp")].as_ref().unwrap()[0];
            assert_eq!(binding.host_port.as_deref(), Some(port));
            assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
            seen.push(port.parse::<u16>()?);
        }
    }
    seen.sort_unstable();
    assert_eq!(seen, [base, base + 1, base + 2, base + 3]);
    // The range is now used up.
    let err = h
        .spawner
        .start(&h.request("ken", "", "spark"), ProgressSender::discard())
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::Ports { .. }), "{err:?}");
    Ok(())
}

/// Restart recovery: a new spawner (a restarted gantry: nothing in memory, only the engine's
/// containers and their labels) adopts what runs and removes what has stopped.
#[tokio::test]
async fn a_restarted_spawner_adopts_running_servers_and_removes_stopped_ones() -> Result<()> {
    let profiles = format!(
        "{}[profiles.fail]\ndisplay_name = \"Fail\"\nimage = \"{IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"exit 3\"]\n",
        web_profile()
    );
    let h = Harness::new("recover", "", &profiles).await?;
    let running = h
        .spawner
        .start(&h.request("erin", "", "web"), ProgressSender::discard())
        .await?;
    // A failed start leaves nothing; a server that stopped after it ran is what recovery
    // finds stopped.
    let failed = h
        .spawner
        .start(&h.request("frank", "", "fail"), ProgressSender::discard())
        .await;
    ensure!(failed.is_err(), "the failing server started: {failed:?}");
    assert_eq!(h.container_count().await?, 1);
    let stopped = h
        .spawner
        .start(&h.request("frank", "", "web"), ProgressSender::discard())
        .await?;
    docker_cli(&["kill", &stopped.backend_id])?;
    assert_eq!(h.container_count().await?, 2);

    let restarted = DockerSpawner::new(
        h.spawner.docker().clone(),
        &h.config,
        DockerOptions::default(),
    );
    let recovery = restarted.recover().await?;
    let keys = |records: &[gantry_spawner::ServerRecord]| {
        records.iter().map(|r| r.key.clone()).collect::<Vec<_>>()
    };
    assert_eq!(keys(&recovery.adopted), vec![key("erin", "")]);
    assert_eq!(recovery.adopted[0].backend_id, running.backend_id);
    assert_eq!(keys(&recovery.removed), vec![key("frank", "")]);
    assert!(recovery.failed.is_empty(), "{:?}", recovery.failed);
    assert_eq!(
        h.container_count().await?,
        1,
        "the stopped container is gone"
    );

    // The adopted server still serves, and the new spawner knows it as its own.
    let ServerStatus::Running { url } = restarted.status(&key("erin", "")).await? else {
        bail!("erin's server is not running after recovery");
    };
    let page = http_get(&url).await?;
    ensure!(page.contains("gantry test"), "{page}");
    let again = restarted
        .start(&h.request("erin", "", "web"), ProgressSender::discard())
        .await?;
    assert_eq!(again.backend_id, running.backend_id, "no second container");
    assert_eq!(h.container_count().await?, 1);
    Ok(())
}

/// A user with a known UID/GID runs as that user inside the container, with the variables
/// Jupyter docker-stacks images read.
#[tokio::test]
async fn a_known_uid_and_gid_are_the_container_process_identity() -> Result<()> {
    let h = Harness::new("uid", "", &web_profile()).await?;
    let mut request = h.request("gina", "", "web");
    request.identity.uid = Some(4321);
    request.identity.gid = Some(5432);
    let record = h.spawner.start(&request, ProgressSender::discard()).await?;

    let exec = |args: &[&str]| -> Result<String> {
        let output = Command::new("docker")
            .args(["exec", &record.backend_id])
            .args(args)
            .output()?;
        ensure!(output.status.success(), "docker exec {args:?}: {output:?}");
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    // The server process itself (pid 1), not only what a new exec would get.
    let status = exec(&["/bin/busybox", "cat", "/proc/1/status"])?;
    let ids = |field: &str| {
        status
            .lines()
            .find(|line| line.starts_with(field))
            .map(|line| {
                line.split_whitespace()
                    .skip(1)
                    .collect::<Vec<_>>()
                    .join(" ")
            })
    };
    assert_eq!(
        ids("Uid:").as_deref(),
        Some("4321 4321 4321 4321"),
        "{status}"
    );
    assert_eq!(
        ids("Gid:").as_deref(),
        Some("5432 5432 5432 5432"),
        "{status}"
    );
    let env = exec(&["/bin/busybox", "env"])?;
    for expected in [
        "NB_USER=gina",
        "NB_UID=4321",
        "NB_GID=5432",
        "HOME=/home/gina",
    ] {
        ensure!(
            env.lines().any(|line| line == expected),
            "{expected} missing from:\n{env}"
        );
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Pulling.

/// Removes an image (pulled by a test) when dropped.
struct RemoveImage(String);

impl Drop for RemoveImage {
    fn drop(&mut self) {
        let _ = Command::new("docker")
            .args(["image", "rm", "-f", &self.0])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// `len` bytes that gzip cannot shrink (xorshift), so that a layer has a real size to fetch.
fn incompressible(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x.to_le_bytes()[0]
        })
        .collect()
}

/// An image of two layers, unique to this call (so the engine has none of its layers): the
/// bare busybox rootfs serving `/www` with a page naming `nonce`, and 3 MB of noise.
fn pullable_image(nonce: &str) -> Result<registry::Image> {
    let base = tempfile::tempdir()?;
    write_rootfs(base.path(), false)?;
    std::fs::write(
        base.path().join("www/index.html"),
        format!("pulled {nonce}\n"),
    )?;
    let noise = tempfile::tempdir()?;
    std::fs::create_dir_all(noise.path().join("data"))?;
    let seed = nonce
        .bytes()
        .fold(7u64, |h, b| h.wrapping_mul(31) ^ u64::from(b));
    std::fs::write(
        noise.path().join("data/noise"),
        incompressible(3 << 20, seed),
    )?;
    Ok(
        registry::ImageBuilder::new(&["/bin/busybox", "httpd", "-f", "-p", "8888", "-h", "/www"])
            .layer(base.path())?
            .layer(noise.path())?
            .build(),
    )
}

fn pull_profile(image: &str) -> String {
    format!("[profiles.pulled]\ndisplay_name = \"Pulled\"\nimage = \"{image}\"\n")
}

/// A missing image is pulled from a registry (the test double, through the real engine),
/// with per-layer progress whose byte counts grow, and the server then starts from it.
#[tokio::test]
async fn a_missing_image_is_pulled_with_per_layer_progress() -> Result<()> {
    let registry = registry::Registry::start(registry::Options::default()).await?;
    let nonce = format!("{}-{}", std::process::id(), line!());
    let image = pullable_image(&nonce)?;
    let layer_sizes = image.layer_sizes.clone();
    registry.push("gantry-test/pulled", "v1", &image);
    let reference = format!("{}/gantry-test/pulled:v1", registry.host());
    let _cleanup = RemoveImage(reference.clone());
    ensure!(
        !image_present(&reference)?,
        "{reference} is already present"
    );

    let h = Harness::new("pull", "", &pull_profile(&reference)).await?;
    let (tx, mut rx) = progress_channel(100_000);
    let started = h.spawner.start(&h.request("paula", "", "pulled"), tx).await;
    let mut events = Vec::new();
    while let Some(e) = rx.next().await {
        events.push(e);
    }
    let record = started.with_context(|| format!("registry log: {:?}", registry.log()))?;
    let ServerStatus::Running { url } = &record.status else {
        bail!("not running: {record:?}");
    };
    let page = http_get(url).await?;
    ensure!(page.contains(&format!("pulled {nonce}")), "{page}");

    // Pull events first, then the usual start.
    let pulls: Vec<_> = events
        .iter()
        .take_while(|e| matches!(e, ProgressEvent::Pulling { .. }))
        .collect();
    ensure!(
        events[pulls.len()..].first() == Some(&ProgressEvent::Creating),
        "events after the pull: {:?}",
        &events[pulls.len()..]
    );
    ensure!(
        events
            .iter()
            .all(|e| !matches!(e, ProgressEvent::Failed { .. })),
        "{events:?}"
    );
    // Per layer: the download's byte counts grow, up to the layer's size.
    let mut downloads: BTreeMap<String, Vec<(u64, u64)>> = BTreeMap::new();
    let mut overall = Vec::new();
    for e in &pulls {
        let ProgressEvent::Pulling {
            image,
            layer,
            done_bytes,
            total_bytes,
        } = e
        else {
            continue;
        };
        assert_eq!(image, &reference);
        if let (Some(done), Some(total)) = (done_bytes, total_bytes) {
            overall.push((*done, *total));
        }
        if let Some(l) = layer
            && l.phase == LayerPhase::Downloading
            && let (Some(current), Some(total)) = (l.current_bytes, l.total_bytes)
        {
            downloads
                .entry(l.id.clone())
                .or_default()
                .push((current, total));
        }
    }
    eprintln!(
        "{} pull events; downloads per layer: {:?}",
        pulls.len(),
        downloads
            .iter()
            .map(|(id, d)| (id, d.len()))
            .collect::<Vec<_>>()
    );
    ensure!(
        downloads.len() == layer_sizes.len(),
        "download progress for {} layers, expected {}: {pulls:?}",
        downloads.len(),
        layer_sizes.len()
    );
    let mut sizes: Vec<u64> = downloads.values().map(|d| d[0].1).collect();
    sizes.sort_unstable();
    let mut expected: Vec<u64> = layer_sizes.iter().map(|s| *s as u64).collect();
    expected.sort_unstable();
    assert_eq!(sizes, expected, "layer totals are the blobs' sizes");
    for (id, d) in &downloads {
        ensure!(
            d.windows(2).all(|w| w[0].0 < w[1].0 && w[0].1 == w[1].1),
            "layer {id}: byte counts do not grow: {d:?}"
        );
    }
    let big = downloads.values().max_by_key(|d| d[0].1).unwrap();
    ensure!(
        big.len() >= 3,
        "the 3 MB layer reported {} times",
        big.len()
    );
    // Overall: the bytes only grow, and end complete.
    ensure!(
        overall.windows(2).all(|w| w[0].0 <= w[1].0),
        "overall bytes went back: {overall:?}"
    );
    let (done, total) = *overall.last().context("no overall byte counts")?;
    assert_eq!(done, total);
    assert_eq!(total, expected.iter().sum::<u64>());
    let last_pull = pulls.last().unwrap();
    assert_eq!(last_pull.percent(), Some(100));
    assert!(
        last_pull
            .pull_summary()
            .unwrap()
            .starts_with("pulling 100% ("),
        "{:?}",
        last_pull.pull_summary()
    );

    h.spawner.stop(&key("paula", "")).await?;
    Ok(())
}

/// A pull of an image the registry does not have fails at once, naming the image, the cause
/// and what to do, and leaves nothing behind.
#[tokio::test]
async fn a_pull_of_an_unknown_image_fails_clearly_and_leaves_nothing() -> Result<()> {
    let registry = registry::Registry::start(registry::Options::default()).await?;
    let reference = format!("{}/gantry-test/nothing:v1", registry.host());
    let _cleanup = RemoveImage(reference.clone());
    let h = Harness::new("nopull", "", &pull_profile(&reference)).await?;
    let (tx, mut rx) = progress_channel(1000);
    let err = h
        .spawner
        .start(&h.request("quinn", "", "pulled"), tx)
        .await
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    eprintln!("{chain}");
    assert!(chain.contains(&reference), "{chain}");
    assert!(chain.contains("manifest unknown"), "{chain}");
    assert!(chain.contains("docker load"), "{chain}");
    let mut failed = None;
    while let Some(e) = rx.next().await {
        if let ProgressEvent::Failed { message, .. } = e {
            failed = Some(message);
        }
    }
    let failed = failed.context("no Failed event")?;
    assert!(failed.contains(&reference), "{failed}");
    assert_eq!(h.container_count().await?, 0);
    assert!(!image_present(&reference)?);
    assert!(h.spawner.gpu_allocations().iter().next().is_none());
    assert!(registry.log().iter().any(|l| l.contains("/manifests/v1")));
    Ok(())
}

/// A registry nobody listens on: the error says the engine could not reach it.
#[tokio::test]
async fn a_pull_from_an_unreachable_registry_fails_clearly() -> Result<()> {
    // A port that was free a moment ago, so (almost surely) nothing listens on it.
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let reference = format!("127.0.0.1:{port}/gantry-test/nowhere:v1");
    let h = Harness::new("noreg", "", &pull_profile(&reference)).await?;
    let err = h
        .spawner
        .start(&h.request("rita", "", "pulled"), ProgressSender::discard())
        .await
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    eprintln!("{chain}");
    assert!(chain.contains(&reference), "{chain}");
    assert!(chain.contains("connection refused"), "{chain}");
    assert_eq!(h.container_count().await?, 0);
    Ok(())
}

/// A pull that takes longer than the pull timeout is cancelled, with an error saying so.
#[tokio::test]
async fn a_pull_past_its_timeout_is_cancelled() -> Result<()> {
    let registry = registry::Registry::start(registry::Options {
        stall_blobs: true,
        ..registry::Options::default()
    })
    .await?;
    let nonce = format!("{}-{}", std::process::id(), line!());
    registry.push("gantry-test/slow", "v1", &pullable_image(&nonce)?);
    let reference = format!("{}/gantry-test/slow:v1", registry.host());
    let _cleanup = RemoveImage(reference.clone());
    let options = DockerOptions {
        pull_timeout: Duration::from_secs(3),
        ..DockerOptions::default()
    };
    let h = Harness::with_options("slowpull", "", &pull_profile(&reference), options).await?;
    let t0 = std::time::Instant::now();
    let err = h
        .spawner
        .start(&h.request("sam", "", "pulled"), ProgressSender::discard())
        .await
        .unwrap_err();
    let waited = t0.elapsed();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    eprintln!("{chain}");
    assert!(chain.contains("did not finish within 3s"), "{chain}");
    assert!(chain.contains(&reference), "{chain}");
    assert!(waited < Duration::from_secs(15), "{waited:?}");
    assert_eq!(h.container_count().await?, 0);
    assert!(!image_present(&reference)?);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Volumes owned by the user.

/// A per-user named volume is owned by the user's UID/GID before the server starts: a fresh
/// one recursively (what the engine copied from the image included), an existing one at its
/// top directory only.
#[tokio::test]
async fn per_user_volumes_are_owned_by_the_users_uid_and_gid() -> Result<()> {
    let profile = format!(
        "[profiles.home]\ndisplay_name = \"Home\"\nimage = \"{IMAGE}\"\n{HTTPD}\n\
         volumes = [\n\
         {{ type = \"volume\", source = \"@instance@-home-{{username}}\", target = \"/home/{{username}}\" }},\n\
         {{ type = \"volume\", source = \"@instance@-www-{{username}}\", target = \"/www\" }},\n\
         {{ type = \"volume\", source = \"@instance@-shared\", target = \"/shared\" }},\n\
         ]\n"
    );
    let h = Harness::new("vol", "", &profile).await?;
    // hank's home exists already, owned by root, with a file of root's in it.
    let hank_home = format!("{}-home-hank", h.instance);
    docker_cli(&[
        "volume",
        "create",
        "--label",
        &format!("{}={}", labels::INSTANCE, h.instance),
        &hank_home,
    ])?;
    docker_cli(&[
        "run",
        "--rm",
        "--label",
        &format!("{}={}", labels::INSTANCE, h.instance),
        "-v",
        &format!("{hank_home}:/v"),
        IMAGE,
        "sh",
        "-c",
        "echo old > /v/old && chmod 755 /v",
    ])?;

    for (user, uid, gid) in [("gina", 4242, 4343), ("hank", 4242, 4343)] {
        let mut request = h.request(user, "", "home");
        request.identity.uid = Some(uid);
        request.identity.gid = Some(gid);
        let record = h.spawner.start(&request, ProgressSender::discard()).await?;
        // docker exec runs as the container's user, 4242:4343, like the server.
        let exec = |script: &str| {
            docker_cli(&[
                "exec",
                &record.backend_id,
                "/bin/busybox",
                "sh",
                "-c",
                script,
            ])
        };
        let home = format!("/home/{user}");
        assert_eq!(exec("id -u; id -g")?, format!("{uid}\n{gid}"));
        exec(&format!(
            "echo hi > {home}/made-by-{user} && test -w {home}"
        ))
        .with_context(|| format!("{user} cannot write to {home}"))?;
        assert_eq!(
            exec(&format!("stat -c %u:%g {home} {home}/made-by-{user}"))?,
            format!("{uid}:{gid}\n{uid}:{gid}"),
            "{user}"
        );
        // /www was copied from the image into the fresh volume, then chowned with it.
        assert_eq!(
            exec("stat -c %u:%g /www /www/index.html")?,
            format!("{uid}:{gid}\n{uid}:{gid}"),
            "{user}"
        );
        // The shared volume (no {username}) is not the user's.
        assert_eq!(exec("stat -c %u:%g /shared")?, "0:0", "{user}");
        if user == "hank" {
            // Not fresh: only the top directory changed hands.
            assert_eq!(exec(&format!("stat -c %u:%g {home}/old"))?, "0:0");
        }
        let page = http_get(match &record.status {
            ServerStatus::Running { url } => url,
            other => bail!("{other:?}"),
        })
        .await?;
        ensure!(page.contains("gantry test"), "{page}");
    }
    // No helper container is left, and the volumes carry the owner's label.
    assert_eq!(h.container_count().await?, 2);
    let owner = docker_cli(&[
        "volume",
        "inspect",
        "-f",
        &format!("{{{{index .Labels \"{}\"}}}}", labels::OWNER),
        &format!("{}-home-gina", h.instance),
    ])?;
    assert_eq!(owner, "gina");
    // Stopping a server keeps its volumes.
    h.spawner.stop(&key("gina", "")).await?;
    docker_cli(&["volume", "inspect", &format!("{}-home-gina", h.instance)])?;
    Ok(())
}

/// An image without `chown` cannot prepare a volume: the start fails, saying what is needed,
/// and leaves no container.
#[tokio::test]
async fn a_volume_that_cannot_be_prepared_fails_the_start_clearly() -> Result<()> {
    let profile = format!(
        "[profiles.bare]\ndisplay_name = \"Bare\"\nimage = \"{BARE_IMAGE}\"\n{HTTPD}\n\
         volumes = [{{ type = \"volume\", source = \"@instance@-home-{{username}}\", \
         target = \"/home/{{username}}\" }}]\n"
    );
    let h = Harness::new("volfail", "", &profile).await?;
    let mut request = h.request("ivy", "", "bare");
    request.identity.uid = Some(4242);
    let err = h
        .spawner
        .start(&request, ProgressSender::discard())
        .await
        .unwrap_err();
    let chain = format!("{err}: {}", std::error::Error::source(&err).unwrap());
    eprintln!("{chain}");
    assert!(chain.contains("owned by 4242:100"), "{chain}");
    assert!(chain.contains("`chown` on its PATH"), "{chain}");
    assert_eq!(h.container_count().await?, 0, "no server, no helper");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Failed starts hold nothing.

/// A start that fails after its container exists (the engine refuses to start it, or the
/// server exits before it answers) removes the container and releases its GPUs and Spark
/// ports: the same start, tried again, meets the same failure, not "no GPU free".
#[tokio::test]
async fn a_failed_start_releases_its_gpus_and_ports() -> Result<()> {
    let profiles = format!(
        "[profiles.gpufail]\ndisplay_name = \"G\"\nimage = \"{IMAGE}\"\ngpus = 1\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"exit 3\"]\n\
         [profiles.sparkfail]\ndisplay_name = \"S\"\nimage = \"{IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"exit 4\"]\n\
         [profiles.sparkfail.spark]\nmaster = \"spark://master:7077\"\n"
    );
    // One GPU and exactly one pair of Spark ports.
    let base = 43_000 + u16::try_from(std::process::id() % 500).unwrap() * 2;
    let docker_keys = format!(
        "gpus = [\"0\"]\nspark_driver_host = \"127.0.0.1\"\nspark_ports = [{base}, {}]",
        base + 1
    );
    let h = Harness::new("release", &docker_keys, &profiles).await?;
    for profile in ["gpufail", "sparkfail"] {
        for attempt in 0..2 {
            let err = h
                .spawner
                .start(
                    &h.request("lena", profile, profile),
                    ProgressSender::discard(),
                )
                .await
                .unwrap_err();
            eprintln!("{profile} attempt {attempt}: {err}");
            assert!(
                matches!(err, SpawnError::Exited { .. } | SpawnError::Backend { .. }),
                "{profile} attempt {attempt}: {err:?}"
            );
            assert_eq!(h.container_count().await?, 0, "{profile} attempt {attempt}");
            assert!(h.spawner.gpu_allocations().iter().next().is_none());
        }
    }
    Ok(())
}

/// A server that never answers is killed and removed when the readiness timeout passes.
#[tokio::test]
async fn a_server_that_never_answers_is_removed_after_the_timeout() -> Result<()> {
    let profile = format!(
        "[profiles.mute]\ndisplay_name = \"Mute\"\nimage = \"{IMAGE}\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"echo waiting; exec sleep 600\"]\n"
    );
    let options = DockerOptions {
        start_timeout: Duration::from_secs(2),
        ..DockerOptions::default()
    };
    let h = Harness::with_options("mute", "", &profile, options).await?;
    let (tx, mut rx) = progress_channel(100);
    let err = h
        .spawner
        .start(&h.request("mona", "", "mute"), tx)
        .await
        .unwrap_err();
    assert!(matches!(err, SpawnError::Timeout { .. }), "{err:?}");
    let mut lines = None;
    while let Some(e) = rx.next().await {
        if let ProgressEvent::Failed { last_log_lines, .. } = e {
            lines = Some(last_log_lines);
        }
    }
    assert_eq!(lines.context("no Failed event")?, ["waiting"]);
    assert_eq!(h.container_count().await?, 0);
    assert_eq!(
        h.spawner.status(&key("mona", "")).await?,
        ServerStatus::Absent
    );
    Ok(())
}

/// The engine's runtime names (`docker info`'s `Runtimes`).
async fn engine_runtimes(docker: &Docker) -> Result<Vec<String>> {
    let info = docker.info().await?;
    Ok(info.runtimes.unwrap_or_default().into_keys().collect())
}

/// GPUs through the engine's own runtime mechanism, `gpu_request = "runtime"`, with the
/// stand-in `nvidia` runtime that `.ci/fake-nvidia-runtime.sh` registers: it records the
/// devices each container was created with, then runs runc. Two servers get the two GPUs,
/// one each; a third fails at once saying none is free, and gets one when a server stops.
#[tokio::test]
async fn gpus_go_through_the_nvidia_runtime_one_server_each() -> Result<()> {
    const RUNTIME_LOG: &str = "/var/log/gantry-fake-nvidia-runtime.log";
    let profiles =
        format!("[profiles.gpu]\ndisplay_name = \"GPU\"\nimage = \"{IMAGE}\"\n{HTTPD}\ngpus = 1\n");
    let h = Harness::new(
        "nvrt",
        "gpu_request = \"runtime\"\ngpus = [\"0\", \"1\"]",
        &profiles,
    )
    .await?;
    let runtimes = engine_runtimes(h.spawner.docker()).await?;
    ensure!(
        runtimes.iter().any(|r| r == "nvidia"),
        "the engine has no `nvidia` runtime ({runtimes:?}): run .ci/fake-nvidia-runtime.sh"
    );
    let mut devices = Vec::new();
    for user in ["ann", "ben"] {
        let record = h
            .spawner
            .start(&h.request(user, "", "gpu"), ProgressSender::discard())
            .await?;
        let inspect = h
            .spawner
            .docker()
            .inspect_container(&record.backend_id, None)
            .await?;
        let host = inspect.host_config.context("host config")?;
        assert_eq!(host.runtime.as_deref(), Some("nvidia"));
        let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
        let visible = env
            .iter()
            .find_map(|e| e.strip_prefix("NVIDIA_VISIBLE_DEVICES="))
            .context("no NVIDIA_VISIBLE_DEVICES")?
            .to_owned();
        // The engine ran the container through the runtime, with exactly these devices.
        let log = std::fs::read_to_string(RUNTIME_LOG)?;
        let line = format!("{} NVIDIA_VISIBLE_DEVICES={visible}", record.backend_id);
        assert!(
            log.lines().any(|l| l == line),
            "{line:?} not in the runtime's log"
        );
        devices.push(visible);
    }
    devices.sort();
    assert_eq!(devices, ["0", "1"], "one GPU each, never the same");

    let third = h
        .spawner
        .start(&h.request("cat", "", "gpu"), ProgressSender::discard())
        .await;
    let error = third.expect_err("no GPU is free");
    assert!(matches!(error, SpawnError::Gpu { .. }), "{error:?}");
    assert_eq!(
        h.container_count().await?,
        2,
        "a refused start creates nothing"
    );

    h.spawner.stop(&key("ann", "")).await?;
    let record = h
        .spawner
        .start(&h.request("cat", "", "gpu"), ProgressSender::discard())
        .await?;
    assert!(matches!(record.status, ServerStatus::Running { .. }));
    Ok(())
}

/// A server killed for memory is reported as such, with its exit code.
#[tokio::test]
async fn an_out_of_memory_kill_is_reported() -> Result<()> {
    // 64 MiB of `a` into a shell variable under a 16 MiB limit.
    let profiles = format!(
        "[profiles.small]\ndisplay_name = \"Small\"\nimage = \"{IMAGE}\"\nmem_limit = \"16M\"\n\
         cmd = [\"/bin/busybox\", \"sh\", \"-c\", \"x=$(head -c 67108864 /dev/zero | tr '\\\\0' a); sleep 60\"]\n"
    );
    let h = Harness::new("oom", "", &profiles).await?;
    let (tx, mut rx) = progress_channel(64);
    let result = h.spawner.start(&h.request("olga", "", "small"), tx).await;
    let error = result.expect_err("the server was killed before it answered");
    assert!(
        matches!(
            &error,
            SpawnError::Exited {
                exit_code: Some(137),
                ..
            }
        ),
        "{error:?}"
    );
    let mut failure = None;
    while let Some(event) = rx.next().await {
        if let ProgressEvent::Failed {
            message, exit_code, ..
        } = event
        {
            failure = Some((message, exit_code));
        }
    }
    let (message, exit_code) = failure.context("no Failed event")?;
    assert_eq!(exit_code, Some(137));
    assert!(
        message.contains("memory limit"),
        "the OOM kill is named: {message}"
    );
    Ok(())
}

/// `docker inspect --format {{.State.Status}}` of container `id`.
fn container_state(id: &str) -> Result<String> {
    docker_cli(&["inspect", "--format", "{{.State.Status}}", id])
}

/// The `NVIDIA_VISIBLE_DEVICES` container `id` was created with.
async fn visible_devices(h: &Harness, id: &str) -> Result<String> {
    let inspect = h.spawner.docker().inspect_container(id, None).await?;
    let env = inspect.config.and_then(|c| c.env).unwrap_or_default();
    Ok(env
        .iter()
        .find_map(|e| e.strip_prefix("NVIDIA_VISIBLE_DEVICES="))
        .context("no NVIDIA_VISIBLE_DEVICES")?
        .to_owned())
}

/// `on_stop = "keep"`: a stop leaves the container, stopped, with its writable layer; the next
/// start runs the same container again; a restarted gantry keeps it; a start with a profile
/// that removes replaces it, and that profile's stop removes it.
#[tokio::test]
async fn a_kept_container_survives_its_stop_and_serves_the_next_start() -> Result<()> {
    let profiles = format!(
        "{}[profiles.keep]\ndisplay_name = \"Keep\"\nimage = \"{IMAGE}\"\n{HTTPD}\n\
         on_stop = \"keep\"\n",
        web_profile()
    );
    let h = Harness::new("keep", "", &profiles).await?;
    let alice = key("alice", "");
    let first = h
        .spawner
        .start(&h.request("alice", "", "keep"), ProgressSender::discard())
        .await?;
    docker_cli(&[
        "exec",
        &first.backend_id,
        "/bin/busybox",
        "sh",
        "-c",
        "echo written-before-stop > /mark",
    ])?;

    h.spawner.stop(&alice).await?;
    assert_eq!(h.container_count().await?, 1, "the kept container is gone");
    assert_eq!(container_state(&first.backend_id)?, "exited");
    assert!(
        matches!(
            h.spawner.status(&alice).await?,
            ServerStatus::Stopped { .. }
        ),
        "status of a kept container"
    );
    let listed = h.spawner.list().await?;
    assert_eq!(listed.len(), 1);
    assert!(matches!(listed[0].status, ServerStatus::Stopped { .. }));

    // The next start runs the same container: same id, the file still there.
    let second = h
        .spawner
        .start(&h.request("alice", "", "keep"), ProgressSender::discard())
        .await?;
    assert_eq!(second.backend_id, first.backend_id, "not reused");
    let ServerStatus::Running { url } = &second.status else {
        bail!("not running: {second:?}");
    };
    ensure!(http_get(url).await?.contains("gantry test"));
    assert_eq!(
        docker_cli(&["exec", &second.backend_id, "/bin/busybox", "cat", "/mark"])?,
        "written-before-stop"
    );

    // A restarted gantry keeps it (a stopped container of a removing profile goes).
    h.spawner.stop(&alice).await?;
    let bob = h
        .spawner
        .start(&h.request("bob", "", "web"), ProgressSender::discard())
        .await?;
    docker_cli(&["kill", &bob.backend_id])?;
    let restarted = DockerSpawner::new(
        h.spawner.docker().clone(),
        &h.config,
        DockerOptions::default(),
    );
    let recovery = restarted.recover().await?;
    let keys = |records: &[gantry_spawner::ServerRecord]| {
        records.iter().map(|r| r.key.clone()).collect::<Vec<_>>()
    };
    assert_eq!(keys(&recovery.kept), vec![alice.clone()]);
    assert_eq!(keys(&recovery.removed), vec![key("bob", "")]);
    assert!(recovery.adopted.is_empty(), "{:?}", recovery.adopted);
    assert_eq!(h.container_count().await?, 1);
    assert_eq!(container_state(&first.backend_id)?, "exited");
    let third = restarted
        .start(&h.request("alice", "", "keep"), ProgressSender::discard())
        .await?;
    assert_eq!(
        third.backend_id, first.backend_id,
        "not reused after recovery"
    );
    restarted.stop(&alice).await?;

    // Started with a profile that removes: a new container, which its stop removes.
    let other = restarted
        .start(&h.request("alice", "", "web"), ProgressSender::discard())
        .await?;
    assert_ne!(
        other.backend_id, first.backend_id,
        "the kept container was reused"
    );
    assert_eq!(
        h.container_count().await?,
        1,
        "the kept container was not replaced"
    );
    restarted.stop(&alice).await?;
    assert_eq!(h.container_count().await?, 0);
    Ok(())
}

/// A kept GPU container holds no GPUs while stopped; it starts again with its own devices
/// when they are free, and is recreated with other devices when another server took them.
#[tokio::test]
async fn a_kept_gpu_container_restarts_on_free_gpus_or_is_recreated() -> Result<()> {
    let profiles = format!(
        "[profiles.gpu]\ndisplay_name = \"GPU\"\nimage = \"{IMAGE}\"\n{HTTPD}\ngpus = 1\n\
         on_stop = \"keep\"\n"
    );
    let h = Harness::new(
        "keepgpu",
        "gpu_request = \"runtime\"\ngpus = [\"0\", \"1\"]",
        &profiles,
    )
    .await?;
    let runtimes = engine_runtimes(h.spawner.docker()).await?;
    ensure!(
        runtimes.iter().any(|r| r == "nvidia"),
        "the engine has no `nvidia` runtime ({runtimes:?}): run .ci/fake-nvidia-runtime.sh"
    );
    let free = |h: &Harness| h.spawner.gpu_availability(false).map(|a| (a.free, a.total));
    let ann = key("ann", "");
    let first = h
        .spawner
        .start(&h.request("ann", "", "gpu"), ProgressSender::discard())
        .await?;
    assert_eq!(visible_devices(&h, &first.backend_id).await?, "0");
    assert_eq!(free(&h), Some((1, 2)));

    h.spawner.stop(&ann).await?;
    assert_eq!(container_state(&first.backend_id)?, "exited");
    assert_eq!(free(&h), Some((2, 2)), "a stopped container holds GPUs");
    assert!(h.spawner.gpu_allocations().iter().next().is_none());
    // Nor after a restart.
    let fresh = DockerSpawner::new(
        h.spawner.docker().clone(),
        &h.config,
        DockerOptions::default(),
    );
    assert!(
        fresh
            .rebuild_gpu_allocations()
            .await?
            .iter()
            .next()
            .is_none()
    );

    // Its GPU is free: the same container starts again on it.
    let second = h
        .spawner
        .start(&h.request("ann", "", "gpu"), ProgressSender::discard())
        .await?;
    assert_eq!(second.backend_id, first.backend_id);
    assert_eq!(free(&h), Some((1, 2)));
    let held: Vec<String> = h
        .spawner
        .gpu_allocations()
        .iter()
        .flat_map(|(_, hold)| hold.devices.iter().map(|d| d.as_str().to_owned()))
        .collect();
    assert_eq!(held, ["0"]);

    // Another server takes GPU 0 while ann's is stopped: ann's is recreated on GPU 1.
    h.spawner.stop(&ann).await?;
    let ben = h
        .spawner
        .start(&h.request("ben", "", "gpu"), ProgressSender::discard())
        .await?;
    assert_eq!(visible_devices(&h, &ben.backend_id).await?, "0");
    let third = h
        .spawner
        .start(&h.request("ann", "", "gpu"), ProgressSender::discard())
        .await?;
    assert_ne!(third.backend_id, first.backend_id, "reused on a taken GPU");
    assert_eq!(visible_devices(&h, &third.backend_id).await?, "1");
    assert!(matches!(third.status, ServerStatus::Running { .. }));
    assert_eq!(free(&h), Some((0, 2)));
    assert_eq!(h.container_count().await?, 2, "the old container is gone");
    Ok(())
}

/// Upgrading the volume naming loses nothing: a per-user volume named the gantry 0.1 way
/// (the server name as it is, today escaped: `my-proj` was `my-proj`, is `my_2dproj`) stays
/// attached to its server when gantry made it for that user (labelled) or when its name reads
/// as that user's server only (the engine made it, unlabelled). One labelled as another
/// user's is not taken: the server gets a fresh volume of today's name.
#[tokio::test]
async fn volumes_named_before_the_escaped_server_names_stay_with_their_servers() -> Result<()> {
    let profile = format!(
        "[profiles.data]\ndisplay_name = \"Data\"\nimage = \"{IMAGE}\"\n{HTTPD}\n\
         volumes = [{{ type = \"volume\", source = \"@instance@-d-{{username}}-{{servername}}\", \
         target = \"/data\" }}]\n"
    );
    let h = Harness::new("legacyvol", "", &profile).await?;
    let old = |user: &str, server: &str| format!("{}-d-{user}-{server}", h.instance);
    let populate = |name: &str, owner: Option<&str>, file: &str| -> Result<()> {
        let instance_label = format!("{}={}", labels::INSTANCE, h.instance);
        let mut args = vec!["volume", "create", "--label", instance_label.as_str()];
        let owner_label = owner.map(|o| format!("{}={o}", labels::OWNER));
        if let Some(label) = &owner_label {
            args.extend(["--label", label.as_str()]);
        }
        args.push(name);
        docker_cli(&args)?;
        docker_cli(&[
            "run",
            "--rm",
            "--label",
            &instance_label,
            "-v",
            &format!("{name}:/v"),
            IMAGE,
            "sh",
            "-c",
            &format!("echo kept > /v/{file}"),
        ])?;
        Ok(())
    };
    populate(&old("alice", "my-proj"), Some("alice"), "alices")?;
    populate(&old("bob", "x.y"), None, "bobs")?;
    populate(&old("carol", "p-q"), Some("mallory"), "mallorys")?;

    for (user, server, file, kept) in [
        ("alice", "my-proj", "alices", true),
        ("bob", "x.y", "bobs", true),
        ("carol", "p-q", "mallorys", false),
    ] {
        let record = h
            .spawner
            .start(&h.request(user, server, "data"), ProgressSender::discard())
            .await?;
        let mounted = docker_cli(&[
            "inspect",
            "-f",
            "{{range .Mounts}}{{.Name}}{{end}}",
            &record.backend_id,
        ])?;
        let seen = docker_cli(&[
            "exec",
            &record.backend_id,
            "/bin/busybox",
            "sh",
            "-c",
            &format!("cat /data/{file} 2>/dev/null || echo missing"),
        ])?;
        if kept {
            assert_eq!(mounted, old(user, server), "{user}/{server}");
            assert_eq!(seen, "kept", "{user}/{server}");
        } else {
            assert_eq!(
                mounted,
                format!("{}-d-{user}-p_2dq", h.instance),
                "{user}/{server}"
            );
            assert_eq!(seen, "missing", "{user}/{server}");
        }
    }
    Ok(())
}
