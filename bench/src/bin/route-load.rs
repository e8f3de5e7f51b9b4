//! `route-load`: the route-API load client of `bench/run`.
//!
//! Adds routes through a configurable-http-proxy compatible API (`POST /api/routes/<path>`
//! with `{"target": …}` and `Authorization: token …`) over a few keep-alive connections, and
//! prints one JSON object with the number added and the rate. With `--count N` it adds the
//! routes `<prefix>0` … `<prefix>N-1` (the route tables of the benchmark); with `--duration S`
//! it adds unique routes `/bench/<connection>-<n>` for S seconds. Either way `--max-seconds`
//! bounds the run.

// This tool's output is its result: one JSON object on stdout, read by bench/run.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use clap::Parser;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1;
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;

/// Adds routes through a CHP-compatible route API and reports adds per second.
#[derive(Debug, Parser)]
#[command(name = "route-load", version, about)]
struct Args {
    /// Address of the route API.
    #[arg(long, default_value = "127.0.0.1:8001")]
    api: SocketAddr,
    /// API token (sent as `Authorization: token <TOKEN>`).
    #[arg(long, env = "CONFIGPROXY_AUTH_TOKEN", hide_env_values = true)]
    token: String,
    /// Target every route points to.
    #[arg(long, default_value = "http://127.0.0.1:9000")]
    target: String,
    /// Add exactly this many routes, `<prefix>0` … `<prefix>N-1`.
    #[arg(long, conflicts_with = "duration")]
    count: Option<usize>,
    /// Route prefix for `--count`.
    #[arg(long, default_value = "/user/u")]
    prefix: String,
    /// Add unique routes for this many seconds instead.
    #[arg(long)]
    duration: Option<f64>,
    /// Concurrent keep-alive API connections.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Stop after this many seconds whatever is left.
    #[arg(long, default_value_t = 300.0)]
    max_seconds: f64,
    /// Worker threads; 1 runs a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

/// Which route a connection adds next.
enum Plan {
    Count { next: AtomicUsize, count: usize },
    Duration,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.count.is_none() && args.duration.is_none() {
        bail!("give --count N or --duration S");
    }
    for value in [args.duration.unwrap_or(0.0), args.max_seconds] {
        if !(value.is_finite() && (0.0..=3600.0).contains(&value)) {
            bail!("durations must be between 0 and 3600 seconds");
        }
    }
    gantry_bench::runtime(args.threads)?.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    let plan = Arc::new(match args.count {
        Some(count) => Plan::Count {
            next: AtomicUsize::new(0),
            count,
        },
        None => Plan::Duration,
    });
    let limit = args
        .duration
        .unwrap_or(args.max_seconds)
        .min(args.max_seconds);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(limit);
    let body = Bytes::from(json!({ "target": args.target }).to_string());
    let auth = HeaderValue::from_str(&format!("token {}", args.token))
        .context("the token is not a header value")?;
    let mut tasks = tokio::task::JoinSet::new();
    for id in 0..args.connections.max(1) {
        let plan = Arc::clone(&plan);
        let body = body.clone();
        let auth = auth.clone();
        let prefix = args.prefix.clone();
        let api = args.api;
        tasks.spawn(async move { connection(id, api, plan, &prefix, body, auth, deadline).await });
    }
    let (mut added, mut failed) = (0usize, 0usize);
    let mut error = None;
    while let Some(joined) = tasks.join_next().await {
        let (ok, bad, e) = joined.context("a load task panicked")?;
        added += ok;
        failed += bad;
        if e.is_some() {
            error = e;
        }
    }
    let seconds = started.elapsed().as_secs_f64().max(1e-9);
    let complete = match args.count {
        Some(count) => added == count,
        None => true,
    };
    let report = json!({
        "api": args.api.to_string(),
        "connections": args.connections,
        "requested": args.count,
        "added": added,
        "failed": failed,
        "complete": complete,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "adds_per_s": (added as f64 / seconds).round(),
        "error": error,
    });
    println!("{report}");
    Ok(())
}

/// One keep-alive API connection adding routes until the plan or the deadline ends. Returns
/// (added, failed, last error).
async fn connection(
    id: usize,
    api: SocketAddr,
    plan: Arc<Plan>,
    prefix: &str,
    body: Bytes,
    auth: HeaderValue,
    deadline: Instant,
) -> (usize, usize, Option<String>) {
    let (mut added, mut failed) = (0usize, 0usize);
    let mut sender = None;
    let mut n = 0usize;
    while Instant::now() < deadline {
        let path = match &*plan {
            Plan::Count { next, count } => {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= *count {
                    break;
                }
                format!("/api/routes{prefix}{i}")
            }
            Plan::Duration => {
                n += 1;
                format!("/api/routes/bench/{id}-{n}")
            }
        };
        if sender.is_none() {
            match open(api).await {
                Ok(s) => sender = Some(s),
                Err(e) => return (added, failed + 1, Some(format!("{e:#}"))),
            }
        }
        let Some(s) = sender.as_mut() else { break };
        let request = Request::builder()
            .method(Method::POST)
            .uri(path)
            .header(header::HOST, api.to_string())
            .header(header::AUTHORIZATION, auth.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(body.clone()));
        let request = match request {
            Ok(request) => request,
            Err(e) => return (added, failed + 1, Some(e.to_string())),
        };
        let remaining = deadline.saturating_duration_since(Instant::now()) + Duration::from_secs(5);
        let result = tokio::time::timeout(remaining, async {
            let response = s.send_request(request).await?;
            let status = response.status();
            response.into_body().collect().await?;
            Ok::<_, anyhow::Error>(status)
        })
        .await;
        match result {
            Ok(Ok(StatusCode::CREATED | StatusCode::OK)) => added += 1,
            Ok(Ok(status)) => {
                failed += 1;
                if failed > 100 {
                    return (
                        added,
                        failed,
                        Some(format!("too many failures; last status {status}")),
                    );
                }
            }
            Ok(Err(e)) => {
                // The connection broke: count it and reconnect.
                failed += 1;
                sender = None;
                if failed > 100 {
                    return (
                        added,
                        failed,
                        Some(format!("too many failures; last: {e:#}")),
                    );
                }
            }
            Err(_) => return (added, failed + 1, Some("request timed out".to_owned())),
        }
    }
    (added, failed, None)
}

async fn open(api: SocketAddr) -> anyhow::Result<http1::SendRequest<Full<Bytes>>> {
    let stream = tokio::time::timeout(Duration::from_secs(5), TcpStream::connect(api))
        .await
        .context("connect timed out")?
        .with_context(|| format!("cannot connect to {api}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, conn) = http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}
