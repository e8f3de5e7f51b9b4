//! `spawn-bench`: the spawn benchmark of `bench/run spawn`.
//!
//! On the local Docker engine, with a tiny image built from the host's static busybox (its
//! `httpd` is the "notebook server"):
//!
//! 1. **Start → ready, sequential.** `--n` times each, alternating which goes first: a start
//!    through gantry's [`DockerSpawner`] (image check, network, create with labels, start,
//!    poll until the server answers HTTP) and, for comparison, `docker run -d` of the same
//!    image and command on the same network followed by polling the container's address
//!    until it answers HTTP, at the same poll interval. Each is timed from the call to the
//!    first HTTP answer; removal afterwards is not timed.
//! 2. **Throughput.** `--concurrent` servers (one per user) started at once through one
//!    spawner; the wall time until every one answers, and servers per second. Then all are
//!    stopped at once (timed too).
//!
//! Everything runs under its own gantry instance name (`spawnbench-<pid>`); every container
//! and the network with that label are removed at the end, whatever happened. Prints one JSON
//! object on stdout, read by `bench/run` and `bench/lib/report.py`; progress goes to stderr.

// This tool's output is its result: one JSON object on stdout.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail, ensure};
use bollard::Docker;
use clap::Parser;
use gantry_spawner::{
    DockerOptions, DockerSpawner, Identity, ProfileId, ProgressSender, ServerKey, ServerName,
    ServerStatus, SpawnRequest, Spawner, SpawnerConfig, labels,
};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Times server starts through gantry's Docker spawner against `docker run`.
#[derive(Debug, Parser)]
#[command(name = "spawn-bench", version, about)]
struct Args {
    /// Sequential starts of each kind (spawner, docker run).
    #[arg(long, default_value_t = 20)]
    n: usize,
    /// Servers started at once through the spawner for the throughput figure.
    #[arg(long, default_value_t = 100)]
    concurrent: usize,
    /// The pause between two HTTP probes of a starting server, in ms, for both kinds.
    #[arg(long, default_value_t = 25)]
    poll_ms: u64,
    /// How long one server may take to answer, in seconds.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// The image to run (built from /bin/busybox with `docker import` when missing).
    #[arg(long, default_value = "gantry-bench/busybox:1")]
    image: String,
    /// The Docker engine's socket.
    #[arg(long, default_value = "/var/run/docker.sock")]
    socket: String,
    /// A note for the report (bench/run passes the gantry version and commit).
    #[arg(long, default_value = "")]
    note: String,
}

/// The server's command: busybox's web server on the spawner's port, in the foreground.
const CMD: [&str; 7] = ["/bin/busybox", "httpd", "-f", "-p", "8888", "-h", "/www"];
const PORT: u16 = 8888;

fn log(message: &str) {
    eprintln!("[spawn-bench] {message}");
}

/// Builds `image` from the host's static busybox unless the engine has it.
fn ensure_image(image: &str) -> Result<()> {
    let present = Command::new("docker")
        .args(["image", "inspect", image])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("running the docker CLI")?
        .success();
    if present {
        return Ok(());
    }
    let busybox = Path::new("/bin/busybox");
    ensure!(
        busybox.exists(),
        "/bin/busybox is missing: install a static busybox (apt-get install busybox-static)"
    );
    log(&format!("building {image} from /bin/busybox"));
    let root = std::env::temp_dir().join(format!("spawn-bench-rootfs-{}", std::process::id()));
    std::fs::create_dir_all(root.join("bin"))?;
    std::fs::create_dir_all(root.join("www"))?;
    std::fs::copy(busybox, root.join("bin/busybox"))?;
    std::fs::write(root.join("www/index.html"), "spawn bench\n")?;
    let tar = Command::new("tar")
        .arg("-C")
        .arg(&root)
        .args(["-c", "."])
        .stdout(Stdio::piped())
        .spawn()?;
    let status = Command::new("docker")
        .args(["import", "-", image])
        .stdin(tar.stdout.context("tar output")?)
        .stdout(Stdio::null())
        .status()?;
    let _ = std::fs::remove_dir_all(&root);
    ensure!(status.success(), "docker import of {image} failed");
    Ok(())
}

/// Removes every container and network labelled with the instance, when dropped.
struct Cleanup {
    instance: String,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let filter = format!("label={}={}", labels::INSTANCE, self.instance);
        let list = |what: &[&str]| {
            Command::new("docker")
                .args(what)
                .args(["-q", "--filter", &filter])
                .output()
                .map(|o| {
                    String::from_utf8_lossy(&o.stdout)
                        .split_whitespace()
                        .map(str::to_owned)
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default()
        };
        let containers = list(&["ps", "-a"]);
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&containers)
                .stdout(Stdio::null())
                .status();
        }
        for network in list(&["network", "ls"]) {
            let _ = Command::new("docker")
                .args(["network", "rm", &network])
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

/// Whether `addr` answers an HTTP request (any status), as the spawner's probe asks.
async fn answers_http(addr: SocketAddr) -> bool {
    let attempt = async {
        let mut stream = TcpStream::connect(addr).await.ok()?;
        let request = format!("GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut head = [0u8; 5];
        stream.read_exact(&mut head).await.ok()?;
        Some(&head == b"HTTP/")
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Runs the docker CLI with `args` off the runtime's threads; its stdout, trimmed.
async fn docker_cli(args: Vec<String>) -> Result<String> {
    tokio::task::spawn_blocking(move || {
        let output = Command::new("docker").args(&args).output()?;
        ensure!(
            output.status.success(),
            "docker {args:?}: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        );
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    })
    .await?
}

struct Bench {
    args: Args,
    docker: Docker,
    spawner: Arc<DockerSpawner>,
    profile: gantry_spawner::Profile,
    instance: String,
    network: String,
}

impl Bench {
    fn request(&self, user: &str) -> SpawnRequest {
        SpawnRequest {
            identity: Identity::new(user),
            server: ServerName::default_server(),
            profile: self.profile.clone(),
            env: BTreeMap::new(),
        }
    }

    fn key(user: &str) -> ServerKey {
        ServerKey {
            user: user.to_owned(),
            server: ServerName::default_server(),
        }
    }

    /// One start through the spawner: the time until it returned a running server.
    async fn spawner_start(&self, user: &str) -> Result<Duration> {
        let t0 = Instant::now();
        let record = self
            .spawner
            .start(&self.request(user), ProgressSender::discard())
            .await
            .with_context(|| format!("starting {user}'s server through the spawner"))?;
        let elapsed = t0.elapsed();
        ensure!(
            matches!(record.status, ServerStatus::Running { .. }),
            "{record:?}"
        );
        Ok(elapsed)
    }

    /// One `docker run -d` + HTTP polling: the time until the container answered.
    async fn docker_run(&self, name: &str) -> Result<Duration> {
        let t0 = Instant::now();
        let mut args: Vec<String> = [
            "run",
            "-d",
            "--name",
            name,
            "--network",
            &self.network,
            "--label",
            &format!("{}={}", labels::INSTANCE, self.instance),
            &self.args.image,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        args.extend(CMD.iter().map(|s| (*s).to_owned()));
        let id = docker_cli(args).await?;
        let deadline = t0 + Duration::from_secs(self.args.timeout_s);
        let mut addr = None;
        loop {
            if addr.is_none() {
                let c = self.docker.inspect_container(&id, None).await?;
                addr = c
                    .network_settings
                    .and_then(|n| n.networks)
                    .and_then(|n| n.get(&self.network).cloned())
                    .and_then(|e| e.ip_address)
                    .and_then(|ip| ip.parse().ok())
                    .map(|ip| SocketAddr::new(ip, PORT));
            }
            if let Some(addr) = addr
                && answers_http(addr).await
            {
                return Ok(t0.elapsed());
            }
            if Instant::now() >= deadline {
                bail!("docker run container {id} did not answer within the timeout");
            }
            tokio::time::sleep(Duration::from_millis(self.args.poll_ms)).await;
        }
    }

    async fn remove(&self, name: &str) -> Result<()> {
        docker_cli(vec!["rm".into(), "-f".into(), name.into()]).await?;
        Ok(())
    }

    /// Part 1: sequential starts, alternating which kind goes first.
    async fn sequential(&self) -> Result<Value> {
        let mut spawner = Vec::new();
        let mut run = Vec::new();
        for i in 0..self.args.n {
            let user = format!("seq{i}");
            let name = format!("{}-run{i}", self.instance);
            let spawner_first = i % 2 == 0;
            for kind in if spawner_first { [0, 1] } else { [1, 0] } {
                if kind == 0 {
                    spawner.push(self.spawner_start(&user).await?);
                    self.spawner.stop(&Self::key(&user)).await?;
                } else {
                    run.push(self.docker_run(&name).await?);
                    self.remove(&name).await?;
                }
            }
            log(&format!(
                "sequential {}/{}: spawner {:.0} ms, docker run {:.0} ms",
                i + 1,
                self.args.n,
                ms(spawner[i]),
                ms(run[i])
            ));
        }
        let s = summary(&spawner);
        let r = summary(&run);
        let ratio = |key: &str| {
            let (a, b) = (s[key].as_f64(), r[key].as_f64());
            match (a, b) {
                (Some(a), Some(b)) if b > 0.0 => json!(round(a / b, 3)),
                _ => Value::Null,
            }
        };
        Ok(json!({
            "n": self.args.n,
            "spawner": s,
            "docker_run": r,
            "ratio_median": ratio("median_ms"),
            "ratio_p90": ratio("p90_ms"),
        }))
    }

    /// Part 2: `--concurrent` servers started at once, then stopped at once.
    async fn concurrent(&self) -> Result<Value> {
        let count = self.args.concurrent;
        let t0 = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..count {
            let spawner = Arc::clone(&self.spawner);
            let request = self.request(&format!("par{i}"));
            tasks.spawn(async move {
                let started = Instant::now();
                let result = spawner.start(&request, ProgressSender::discard()).await;
                (started.elapsed(), result)
            });
        }
        let mut latencies = Vec::new();
        let mut failures = Vec::new();
        while let Some(joined) = tasks.join_next().await {
            let (elapsed, result) = joined?;
            match result {
                Ok(_) => latencies.push(elapsed),
                Err(e) => failures.push(format!("{e}: {:?}", std::error::Error::source(&e))),
            }
        }
        let wall = t0.elapsed();
        let started = latencies.len();
        log(&format!(
            "concurrent: {started} of {count} ready in {:.2} s, {} failed",
            wall.as_secs_f64(),
            failures.len()
        ));
        let listed = self.spawner.list().await?.len();

        let t1 = Instant::now();
        let mut stops = tokio::task::JoinSet::new();
        for i in 0..count {
            let spawner = Arc::clone(&self.spawner);
            stops.spawn(async move { spawner.stop(&Self::key(&format!("par{i}"))).await });
        }
        let mut stop_failures = 0usize;
        while let Some(joined) = stops.join_next().await {
            if !matches!(joined, Ok(Ok(()))) {
                stop_failures += 1;
            }
        }
        let stop_wall = t1.elapsed();
        let left = self.spawner.list().await?.len();
        log(&format!(
            "concurrent: stopped in {:.2} s, {left} left",
            stop_wall.as_secs_f64()
        ));
        failures.truncate(5);
        Ok(json!({
            "servers": count,
            "started": started,
            "failed": count - started,
            "first_failures": failures,
            "listed_while_running": listed,
            "wall_s": round(wall.as_secs_f64(), 3),
            "servers_per_s": round(started as f64 / wall.as_secs_f64(), 2),
            "start_to_ready": summary(&latencies),
            "stop_wall_s": round(stop_wall.as_secs_f64(), 3),
            "stop_failures": stop_failures,
            "left_after_stop": left,
        }))
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn round(x: f64, digits: i32) -> f64 {
    let f = 10f64.powi(digits);
    (x * f).round() / f
}

/// Median, p90 (nearest rank), min, max and mean in milliseconds, and the samples.
fn summary(samples: &[Duration]) -> Value {
    let mut v: Vec<f64> = samples.iter().map(|d| ms(*d)).collect();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return json!({ "count": 0 });
    }
    let rank = |p: f64| {
        let r = (p / 100.0 * v.len() as f64).ceil() as usize;
        v[r.clamp(1, v.len()) - 1]
    };
    let mean = v.iter().sum::<f64>() / v.len() as f64;
    json!({
        "count": v.len(),
        "median_ms": round(rank(50.0), 1),
        "p90_ms": round(rank(90.0), 1),
        "min_ms": round(v[0], 1),
        "max_ms": round(v[v.len() - 1], 1),
        "mean_ms": round(mean, 1),
        "samples_ms": samples.iter().map(|d| round(ms(*d), 1)).collect::<Vec<_>>(),
    })
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_owned())
        .unwrap_or_default()
}

fn loadavg() -> String {
    read_trimmed("/proc/loadavg")
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn machine() -> Value {
    let cpuinfo = read_trimmed("/proc/cpuinfo");
    let cpu = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_owned())
        .unwrap_or_default();
    let mem_kib: f64 = read_trimmed("/proc/meminfo")
        .lines()
        .find(|l| l.starts_with("MemTotal"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    json!({
        "cpu": cpu,
        "cores": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "memory_gib": round(mem_kib / 1_048_576.0, 1),
        "kernel": read_trimmed("/proc/sys/kernel/osrelease"),
    })
}

async fn engine(docker: &Docker) -> Value {
    let version = docker.version().await.ok();
    let info = docker.info().await.ok();
    json!({
        "version": version.as_ref().and_then(|v| v.version.clone()),
        "api_version": version.as_ref().and_then(|v| v.api_version.clone()),
        "storage_driver": info.as_ref().and_then(|i| i.driver.clone()),
        "cgroup_version": info.as_ref().and_then(|i| i.cgroup_version.as_ref().map(|c| c.to_string())),
        "runtime": info.as_ref().and_then(|i| i.default_runtime.clone()),
    })
}

async fn run(args: Args) -> Result<Value> {
    ensure!(
        Path::new(&args.socket).exists(),
        "the Docker engine socket {} is missing",
        args.socket
    );
    tokio::task::spawn_blocking({
        let image = args.image.clone();
        move || ensure_image(&image)
    })
    .await??;
    let instance = format!("spawnbench-{}", std::process::id());
    let network = format!("{instance}-net");
    let _cleanup = Cleanup {
        instance: instance.clone(),
    };
    let text = format!(
        "[docker]\ninstance = \"{instance}\"\nnetwork = \"{network}\"\n\
         [profiles.web]\ndisplay_name = \"Web\"\nimage = \"{}\"\ncmd = {:?}\n",
        args.image, CMD
    );
    let config: SpawnerConfig = toml::from_str(&text)?;
    let config = config.validate()?;
    let profile = config.profiles[&ProfileId::new("web")?].clone();
    let docker =
        Docker::connect_with_unix(&args.socket, args.timeout_s, bollard::API_DEFAULT_VERSION)?
            .negotiate_version()
            .await
            .context("negotiating the Docker API version")?;
    let options = DockerOptions {
        port: PORT,
        start_timeout: Duration::from_secs(args.timeout_s),
        stop_grace: Duration::from_secs(1),
        poll_interval: Duration::from_millis(args.poll_ms),
        ..DockerOptions::default()
    };
    let spawner = Arc::new(DockerSpawner::new(docker.clone(), &config, options));
    // The network exists before anything is timed, as after gantry's startup.
    spawner.prepare().await?;
    let bench = Bench {
        args,
        docker,
        spawner,
        profile,
        instance,
        network,
    };
    let started = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
    let loadavg_start = loadavg();
    let t0 = Instant::now();

    // Warm-up, not recorded: the first container of a run pays for cold caches.
    log("warm-up");
    bench.spawner_start("warmup").await?;
    bench.spawner.stop(&Bench::key("warmup")).await?;
    let warm = format!("{}-warmup", bench.instance);
    bench.docker_run(&warm).await?;
    bench.remove(&warm).await?;

    log(&format!("sequential: {} starts of each kind", bench.args.n));
    let sequential = bench.sequential().await?;
    log(&format!(
        "concurrent: {} servers at once",
        bench.args.concurrent
    ));
    let concurrent = bench.concurrent().await?;
    let elapsed = t0.elapsed().as_secs_f64();
    Ok(json!({
        "started_unix": started,
        "elapsed_s": round(elapsed, 1),
        "loadavg_start": loadavg_start,
        "loadavg_end": loadavg(),
        "machine": machine(),
        "engine": engine(&bench.docker).await,
        "image": bench.args.image,
        "command": CMD.join(" "),
        "poll_ms": bench.args.poll_ms,
        "note": bench.args.note,
        "sequential": sequential,
        "concurrent": concurrent,
    }))
}

fn main() -> Result<()> {
    let args = Args::parse();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args))?;
    println!("{}", serde_json::to_string_pretty(&result)?);
    Ok(())
}
