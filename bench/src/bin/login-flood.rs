//! `login-flood`: the login-flood load of `bench/run flood`.
//!
//! Against a running `gantry up`, in three phases, and prints one JSON object:
//!
//! 1. **baseline** (`--baseline` s): the token-authenticated gated path (`--path` with
//!    `Authorization: token --token`, `--gated-connections` keep-alive connections) alone,
//!    and one real login (`--user`, `--password`) timed;
//! 2. **flood** (`--duration` s): `--clients` clients posting wrong passwords to
//!    `/hub/login`, half of them for the accounts `--known` names and half for made-up names,
//!    each client's connections from one of `--addresses` loopback addresses (127.0.1.1 and
//!    up; a client refused 429 reconnects from its next address, as an attacker would); the
//!    same gated load meanwhile; the real login again, halfway through;
//! 3. **after** (`--after` s): nothing, then the memory once more.
//!
//! With `--control`, the clients send `GET /hub/health` instead of logins, as fast as they
//! can: the same number of clients and requests that cost gantry almost nothing, to tell
//! what the logins cost from what any flood of requests costs on the same CPUs.
//!
//! The gated load and the real logins run on threads of their own, so that this tool's own
//! scheduler does not queue them behind the flood's clients.
//!
//! Throughout, gantry's resident memory (`VmRSS` of `--pid`) is sampled every 100 ms. The
//! flood's answers are counted by status. No figure here is judged: `bench/run` reports them
//! against the targets.

// This tool's output is its result: one JSON object on stdout, read by bench/run.
#![allow(clippy::print_stdout)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpSocket;

/// Floods `gantry up` with wrong passwords and measures memory, the gated path and a real login.
#[derive(Debug, Parser)]
#[command(name = "login-flood", version, about)]
struct Args {
    /// gantry's listener.
    #[arg(long, default_value = "127.0.0.1:18000")]
    addr: SocketAddr,
    /// gantry's process id, for its resident memory.
    #[arg(long)]
    pid: u32,
    /// The gated path (a running server's).
    #[arg(long)]
    path: String,
    /// An API token that reaches `--path`.
    #[arg(long, env = "LOGIN_FLOOD_TOKEN", hide_env_values = true)]
    token: String,
    /// The real user who logs in during the flood.
    #[arg(long)]
    user: String,
    /// Their password.
    #[arg(long, env = "LOGIN_FLOOD_PASSWORD", hide_env_values = true)]
    password: String,
    /// Existing accounts the flood guesses passwords for (comma-separated).
    #[arg(long, value_delimiter = ',')]
    known: Vec<String>,
    /// Flooding clients.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Loopback addresses the clients come from (127.0.1.1 and up, at most 250 × 254).
    #[arg(long, default_value_t = 250)]
    addresses: usize,
    /// Seconds of the gated load alone, before the flood.
    #[arg(long, default_value_t = 10.0)]
    baseline: f64,
    /// Seconds of flood.
    #[arg(long, default_value_t = 20.0)]
    duration: f64,
    /// Seconds to watch the memory after the flood.
    #[arg(long, default_value_t = 10.0)]
    after: f64,
    /// Keep-alive connections of the gated load.
    #[arg(long, default_value_t = 8)]
    gated_connections: usize,
    /// Flood `GET /hub/health` instead of logins (the control).
    #[arg(long)]
    control: bool,
    /// Worker threads of this tool.
    #[arg(long, default_value_t = 2)]
    threads: usize,
}

/// The `n`th loopback address of the flood: 127.0.1.1, …, 127.0.1.254, 127.0.2.1, …
fn flood_address(n: usize, count: usize) -> IpAddr {
    let n = n % count.max(1);
    let (third, fourth) = (1 + n / 254, 1 + n % 254);
    IpAddr::V4(Ipv4Addr::new(
        127,
        0,
        u8::try_from(third).unwrap_or(u8::MAX),
        u8::try_from(fourth).unwrap_or(u8::MAX),
    ))
}

type Sender = http1::SendRequest<Full<Bytes>>;

/// An HTTP/1.1 connection to `addr` from `from`.
async fn connect(addr: SocketAddr, from: IpAddr) -> anyhow::Result<Sender> {
    let socket = TcpSocket::new_v4()?;
    socket
        .bind(SocketAddr::new(from, 0))
        .with_context(|| format!("cannot bind {from}"))?;
    let stream = socket.connect(addr).await?;
    stream.set_nodelay(true)?;
    let (sender, connection) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends `request` and reads the whole answer.
async fn send(
    sender: &mut Sender,
    request: Request<Full<Bytes>>,
) -> anyhow::Result<(Response<()>, Bytes)> {
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let (parts, body) = response.into_parts();
    let body = body.collect().await?.to_bytes();
    Ok((Response::from_parts(parts, ()), body))
}

/// A login form: the `gantry-login` cookie and the form's `_xsrf`.
struct Form {
    cookie: String,
    xsrf: String,
}

async fn login_form(sender: &mut Sender, addr: SocketAddr) -> anyhow::Result<Form> {
    let request = Request::get("/hub/login")
        .header(header::HOST, addr.to_string())
        .body(Full::new(Bytes::new()))?;
    let (response, body) = send(sender, request).await?;
    if response.status() != StatusCode::OK {
        bail!("GET /hub/login answered {}", response.status());
    }
    let cookie = response
        .headers()
        .get_all(header::SET_COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find(|v| v.contains("gantry-login="))
        .and_then(|v| v.split(';').next())
        .context("no gantry-login cookie")?
        .to_owned();
    let page = String::from_utf8_lossy(&body);
    let marker = "name=\"_xsrf\" value=\"";
    let start = page.find(marker).context("no _xsrf field")? + marker.len();
    let end = page[start..].find('"').context("unterminated _xsrf")? + start;
    Ok(Form {
        cookie,
        xsrf: page[start..end].to_owned(),
    })
}

fn post_login(
    addr: SocketAddr,
    form: &Form,
    user: &str,
    password: &str,
) -> anyhow::Result<Request<Full<Bytes>>> {
    let body: String = url_encode(&[
        ("_xsrf", &form.xsrf),
        ("username", user),
        ("password", password),
    ]);
    Ok(Request::post("/hub/login")
        .header(header::HOST, addr.to_string())
        .header(header::ORIGIN, format!("http://{addr}"))
        .header(header::COOKIE, &form.cookie)
        .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
        .body(Full::new(Bytes::from(body)))?)
}

fn url_encode(pairs: &[(&str, &str)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| {
            let v: String = v
                .bytes()
                .map(|b| match b {
                    b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' => {
                        char::from(b).to_string()
                    }
                    _ => format!("%{b:02X}"),
                })
                .collect();
            format!("{k}={v}")
        })
        .collect::<Vec<_>>()
        .join("&")
}

/// One real login from 127.0.0.1: the form, then the post; seconds until the 303, or the
/// status it got instead.
async fn real_login(args: &Args) -> serde_json::Value {
    let started = Instant::now();
    let result = async {
        let mut sender = connect(args.addr, IpAddr::V4(Ipv4Addr::LOCALHOST)).await?;
        let form = login_form(&mut sender, args.addr).await?;
        let request = post_login(args.addr, &form, &args.user, &args.password)?;
        let (response, _) = send(&mut sender, request).await?;
        anyhow::Ok(response.status())
    };
    match tokio::time::timeout(Duration::from_secs(60), result).await {
        Ok(Ok(status)) => json!({
            "status": status.as_u16(),
            "ok": status == StatusCode::SEE_OTHER,
            "seconds": started.elapsed().as_secs_f64(),
        }),
        Ok(Err(error)) => {
            json!({"ok": false, "error": format!("{error:#}"), "seconds": started.elapsed().as_secs_f64()})
        }
        Err(_) => json!({"ok": false, "error": "no answer within 60 s", "seconds": 60.0}),
    }
}

/// The gated load for `seconds`: requests answered 200 per second, and the others.
async fn gated(args: Arc<Args>, seconds: f64) -> serde_json::Value {
    let ok = Arc::new(AtomicU64::new(0));
    let other = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs_f64(seconds);
    let latencies = Arc::new(Mutex::new(Vec::<f64>::new()));
    let tasks: Vec<_> = (0..args.gated_connections)
        .map(|_| {
            let (args, ok, other, errors, latencies) = (
                Arc::clone(&args),
                Arc::clone(&ok),
                Arc::clone(&other),
                Arc::clone(&errors),
                Arc::clone(&latencies),
            );
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut sender = None;
                while Instant::now() < deadline {
                    if sender.is_none() {
                        sender = connect(args.addr, IpAddr::V4(Ipv4Addr::LOCALHOST))
                            .await
                            .ok();
                        if sender.is_none() {
                            errors.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            continue;
                        }
                    }
                    let Some(s) = sender.as_mut() else { continue };
                    let request = Request::get(args.path.as_str())
                        .header(header::HOST, args.addr.to_string())
                        .header(
                            header::AUTHORIZATION,
                            HeaderValue::from_str(&format!("token {}", args.token))
                                .unwrap_or(HeaderValue::from_static("")),
                        )
                        .body(Full::new(Bytes::new()));
                    let Ok(request) = request else { break };
                    let t = Instant::now();
                    match send(s, request).await {
                        Ok((response, _)) if response.status() == StatusCode::OK => {
                            ok.fetch_add(1, Ordering::Relaxed);
                            mine.push(t.elapsed().as_secs_f64());
                        }
                        Ok(_) => {
                            other.fetch_add(1, Ordering::Relaxed);
                        }
                        Err(_) => {
                            errors.fetch_add(1, Ordering::Relaxed);
                            sender = None;
                        }
                    }
                }
                if let Ok(mut all) = latencies.lock() {
                    all.extend(mine);
                }
            })
        })
        .collect();
    for task in tasks {
        let _ = task.await;
    }
    let mut all = latencies.lock().map(|l| l.clone()).unwrap_or_default();
    all.sort_by(f64::total_cmp);
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0.0)
    };
    let ok = ok.load(Ordering::Relaxed);
    json!({
        "requests_ok": ok,
        "rate": ok as f64 / seconds,
        "other_status": other.load(Ordering::Relaxed),
        "errors": errors.load(Ordering::Relaxed),
        "p50_ms": pct(0.5) * 1e3,
        "p99_ms": pct(0.99) * 1e3,
    })
}

/// One flooding client until `stop`: wrong passwords, a new address after each 429.
async fn flood_client(
    args: Arc<Args>,
    index: usize,
    stop: Arc<AtomicBool>,
    statuses: Arc<Mutex<BTreeMap<String, u64>>>,
) {
    let mut counts: BTreeMap<String, u64> = BTreeMap::new();
    let mut address = index;
    let mut attempt = 0_usize;
    'connection: while !stop.load(Ordering::Relaxed) {
        let from = flood_address(address, args.addresses);
        address += args.clients;
        let Ok(mut sender) = connect(args.addr, from).await else {
            *counts.entry("connect_error".into()).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let form = if args.control {
            None
        } else {
            let Ok(form) = login_form(&mut sender, args.addr).await else {
                *counts.entry("form_error".into()).or_default() += 1;
                continue;
            };
            Some(form)
        };
        while !stop.load(Ordering::Relaxed) {
            attempt += 1;
            let Some(form) = &form else {
                let Ok(request) = Request::get("/hub/health")
                    .header(header::HOST, args.addr.to_string())
                    .body(Full::new(Bytes::new()))
                else {
                    break 'connection;
                };
                match send(&mut sender, request).await {
                    Ok((response, _)) => {
                        *counts
                            .entry(response.status().as_u16().to_string())
                            .or_default() += 1;
                    }
                    Err(_) => {
                        *counts.entry("error".into()).or_default() += 1;
                        continue 'connection;
                    }
                }
                continue;
            };
            let name = if attempt.is_multiple_of(2) && !args.known.is_empty() {
                args.known[(index + attempt) % args.known.len()].clone()
            } else {
                format!("nobody-{index}-{attempt}")
            };
            let Ok(request) = post_login(args.addr, form, &name, "wrong password") else {
                break 'connection;
            };
            match send(&mut sender, request).await {
                Ok((response, _)) => {
                    let status = response.status();
                    *counts.entry(status.as_u16().to_string()).or_default() += 1;
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        continue 'connection;
                    }
                }
                Err(_) => {
                    *counts.entry("error".into()).or_default() += 1;
                    continue 'connection;
                }
            }
        }
    }
    if let Ok(mut all) = statuses.lock() {
        for (k, v) in counts {
            *all.entry(k).or_default() += v;
        }
    }
}

/// Runs `future` on a current-thread runtime of its own OS thread, so the measuring clients
/// (the gated load, the real login) are not scheduled behind the flood's 200 tasks in this
/// tool's own runtime: they compete with them only as threads, for the CPUs.
async fn on_own_thread<F>(future: F) -> anyhow::Result<serde_json::Value>
where
    F: std::future::Future<Output = serde_json::Value> + Send + 'static,
{
    let (done, result) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("measure".into())
        .spawn(move || {
            let value = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(|runtime| runtime.block_on(future));
            let _ = done.send(value);
        })?;
    Ok(result.await??)
}

/// `VmRSS` of `pid` in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// CPU seconds (user + system) `pid` has used, from `/proc/<pid>/stat` in clock ticks of
/// 1/100 s (Linux's `USER_HZ`).
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The fields after the command name, which is in parentheses and may hold spaces.
    let rest = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // utime and stime are the 14th and 15th fields; 12th and 13th after the name.
    (ticks(11) + ticks(12)) as f64 / 100.0
}

/// Samples the memory every 100 ms until `stop`; the peak in KiB.
async fn watch(pid: u32, stop: Arc<AtomicBool>) -> u64 {
    let mut peak = 0;
    while !stop.load(Ordering::Relaxed) {
        peak = peak.max(rss_kib(pid).unwrap_or(0));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    peak
}

async fn run(args: Arc<Args>) -> anyhow::Result<serde_json::Value> {
    let rss_start = rss_kib(args.pid).context("cannot read the gantry process's memory")?;
    let login_before = {
        let args = Arc::clone(&args);
        on_own_thread(async move { real_login(&args).await }).await?
    };
    let cpu_0 = cpu_seconds(args.pid);
    let base = on_own_thread(gated(Arc::clone(&args), args.baseline)).await?;
    let cpu_base = (cpu_seconds(args.pid) - cpu_0) / args.baseline;
    let rss_baseline = rss_kib(args.pid).unwrap_or(0);

    let stop = Arc::new(AtomicBool::new(false));
    let statuses = Arc::new(Mutex::new(BTreeMap::new()));
    let watcher = tokio::spawn(watch(args.pid, Arc::clone(&stop)));
    let started = Instant::now();
    let cpu_1 = cpu_seconds(args.pid);
    let clients: Vec<_> = (0..args.clients)
        .map(|i| {
            tokio::spawn(flood_client(
                Arc::clone(&args),
                i,
                Arc::clone(&stop),
                Arc::clone(&statuses),
            ))
        })
        .collect();
    let during = tokio::spawn(on_own_thread(gated(Arc::clone(&args), args.duration)));
    tokio::time::sleep(Duration::from_secs_f64(args.duration / 2.0)).await;
    let login_during = {
        let args = Arc::clone(&args);
        on_own_thread(async move { real_login(&args).await }).await?
    };
    let during = during.await??;
    stop.store(true, Ordering::Relaxed);
    let flood_seconds = started.elapsed().as_secs_f64();
    let cpu_flood = (cpu_seconds(args.pid) - cpu_1) / flood_seconds;
    for client in clients {
        let _ = client.await;
    }
    let peak = watcher.await?;
    let rss_end_of_flood = rss_kib(args.pid).unwrap_or(0);

    let stop_after = Arc::new(AtomicBool::new(false));
    let after_watch = tokio::spawn(watch(args.pid, Arc::clone(&stop_after)));
    tokio::time::sleep(Duration::from_secs_f64(args.after)).await;
    stop_after.store(true, Ordering::Relaxed);
    let peak_after = after_watch.await?;
    let rss_after = rss_kib(args.pid).unwrap_or(0);
    let login_after = {
        let args = Arc::clone(&args);
        on_own_thread(async move { real_login(&args).await }).await?
    };

    let statuses = statuses.lock().map(|s| s.clone()).unwrap_or_default();
    let attempts: u64 = statuses.values().sum();
    let ratio =
        during["rate"].as_f64().unwrap_or(0.0) / base["rate"].as_f64().unwrap_or(1.0).max(1e-9);
    Ok(json!({
        "control": args.control,
        "clients": args.clients,
        "addresses": args.addresses,
        "known": args.known.len(),
        "flood_seconds": flood_seconds,
        "attempts": attempts,
        "attempts_per_second": attempts as f64 / flood_seconds,
        "statuses": statuses,
        "rss_kib": {
            "start": rss_start,
            "baseline": rss_baseline,
            "peak_during": peak.max(rss_end_of_flood),
            "end_of_flood": rss_end_of_flood,
            "peak_after": peak_after,
            "after": rss_after,
            "after_seconds": args.after,
        },
        "gated": {"baseline": base, "during": during, "ratio": ratio},
        "gantry_cpu": {"baseline": cpu_base, "flood": cpu_flood},
        "login": {"before": login_before, "during": login_during, "after": login_after},
    }))
}

fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.threads.max(1))
        .enable_all()
        .build()?;
    let result = runtime.block_on(run(args))?;
    println!("{result}");
    Ok(())
}
