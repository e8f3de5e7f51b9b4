//! `ws-load`: the WebSocket load client of `bench/run`.
//!
//! Round-trip mode (`--connections C --duration S`) opens C WebSocket connections and has each
//! send a small text message and wait for its echo, back to back, for S seconds; it prints one
//! JSON object with round trips per second and latency percentiles in microseconds.
//!
//! Idle mode (`--idle N --hold S`) opens N connections that send nothing, prints a JSON line
//! once they are all open (so the caller can measure the proxy's memory), holds them for S
//! seconds, closes them and prints a final JSON line. Every phase is bounded in time.

// This tool's output is its result: JSON lines on stdout, read by bench/run.
#![allow(clippy::print_stdout)]

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use gantry_bench::Latencies;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::Semaphore;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// WebSocket load: echo round trips, or many idle connections.
#[derive(Debug, Parser)]
#[command(name = "ws-load", version, about)]
struct Args {
    /// WebSocket URL (ws:// only).
    #[arg(long)]
    url: String,
    /// Round-trip mode: concurrent connections.
    #[arg(long, default_value_t = 50)]
    connections: usize,
    /// Round-trip mode: seconds to run.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Bytes per message.
    #[arg(long, default_value_t = 32)]
    message_size: usize,
    /// Idle mode: open this many connections and keep them idle.
    #[arg(long)]
    idle: Option<usize>,
    /// Idle mode: seconds to hold the connections once all are open.
    #[arg(long, default_value_t = 5.0)]
    hold: f64,
    /// Connection attempts in flight at once.
    #[arg(long, default_value_t = 64)]
    connect_concurrency: usize,
    /// Seconds allowed for one connection (and, in round-trip mode, one round trip).
    #[arg(long, default_value_t = 10.0)]
    timeout: f64,
    /// Seconds allowed for opening all connections.
    #[arg(long, default_value_t = 120.0)]
    setup_timeout: f64,
    /// Worker threads; 1 runs a current-thread runtime.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.url.starts_with("ws://") {
        bail!("--url must be a ws:// URL");
    }
    for (name, value) in [
        ("--duration", args.duration),
        ("--hold", args.hold),
        ("--timeout", args.timeout),
    ] {
        if !(value.is_finite() && (0.0..=3600.0).contains(&value)) {
            bail!("{name} must be between 0 and 3600 seconds");
        }
    }
    let runtime = gantry_bench::runtime(args.threads)?;
    match args.idle {
        Some(count) => runtime.block_on(idle(&args, count)),
        None => runtime.block_on(round_trips(&args)),
    }
}

fn config() -> WebSocketConfig {
    // Small buffers: the client holds up to 10,000 connections.
    WebSocketConfig::default()
        .read_buffer_size(4096)
        .write_buffer_size(0)
}

async fn connect(url: &str, timeout: Duration) -> anyhow::Result<Ws> {
    let (ws, _) = tokio::time::timeout(
        timeout,
        tokio_tungstenite::connect_async_with_config(url, Some(config()), true),
    )
    .await
    .context("connect timed out")??;
    Ok(ws)
}

/// Opens `count` connections, at most `--connect-concurrency` at a time, within
/// `--setup-timeout`. Returns the open ones, the number of failures and the first error.
async fn open_many(args: &Args, count: usize) -> (Vec<Ws>, usize, Option<String>) {
    let timeout = Duration::from_secs_f64(args.timeout);
    let permits = Arc::new(Semaphore::new(args.connect_concurrency.max(1)));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..count {
        let permits = Arc::clone(&permits);
        let url = args.url.clone();
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await;
            connect(&url, timeout).await
        });
    }
    let mut open = Vec::with_capacity(count);
    let mut failed = 0;
    let mut first_error = None;
    let deadline = tokio::time::Instant::now() + Duration::from_secs_f64(args.setup_timeout);
    loop {
        match tokio::time::timeout_at(deadline, tasks.join_next()).await {
            Ok(Some(Ok(Ok(ws)))) => open.push(ws),
            Ok(Some(Ok(Err(error)))) => {
                failed += 1;
                first_error.get_or_insert_with(|| format!("{error:#}"));
            }
            Ok(Some(Err(error))) => {
                failed += 1;
                first_error.get_or_insert_with(|| error.to_string());
            }
            Ok(None) => break,
            Err(_) => {
                failed += tasks.len();
                first_error.get_or_insert_with(|| "setup timed out".to_owned());
                tasks.abort_all();
                break;
            }
        }
    }
    (open, failed, first_error)
}

fn emit(value: &serde_json::Value) {
    let mut stdout = std::io::stdout().lock();
    let _ = writeln!(stdout, "{value}");
    let _ = stdout.flush();
}

async fn round_trips(args: &Args) -> anyhow::Result<()> {
    let (sockets, failed, first_error) = open_many(args, args.connections).await;
    if sockets.is_empty() {
        bail!(
            "no WebSocket connection could be opened to {}: {}",
            args.url,
            first_error.unwrap_or_default()
        );
    }
    let connections = sockets.len();
    let payload = "x".repeat(args.message_size);
    let timeout = Duration::from_secs_f64(args.timeout);
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(args.duration);
    let mut tasks = tokio::task::JoinSet::new();
    for mut ws in sockets {
        let payload = payload.clone();
        tasks.spawn(async move {
            let mut latencies = Latencies::with_capacity(64 * 1024);
            let mut error = None;
            while Instant::now() < deadline {
                let sent = Instant::now();
                let trip = async {
                    ws.send(Message::text(payload.as_str())).await?;
                    loop {
                        match ws.next().await {
                            Some(Ok(message)) if message.is_text() || message.is_binary() => {
                                return Ok::<_, anyhow::Error>(message.len());
                            }
                            Some(Ok(_)) => {}
                            Some(Err(e)) => return Err(e.into()),
                            None => bail!("connection closed"),
                        }
                    }
                };
                match tokio::time::timeout(timeout, trip).await {
                    Ok(Ok(_)) => latencies.record(sent.elapsed()),
                    Ok(Err(e)) => {
                        error = Some(format!("{e:#}"));
                        break;
                    }
                    Err(_) => {
                        error = Some("round trip timed out".to_owned());
                        break;
                    }
                }
            }
            // Close politely but do not wait long for the peer.
            let _ = tokio::time::timeout(Duration::from_millis(200), ws.close(None)).await;
            (latencies, error)
        });
    }
    let mut all = Latencies::default();
    let mut errors = 0usize;
    let mut last_error = first_error;
    while let Some(joined) = tasks.join_next().await {
        let (latencies, error) = joined.context("a load task panicked")?;
        all.merge(latencies);
        if let Some(error) = error {
            errors += 1;
            last_error = Some(error);
        }
    }
    // Every connection runs until the deadline (plus its last round trip).
    let seconds = args.duration.max(1e-3);
    let rate = all.len() as f64 / seconds;
    emit(&json!({
        "mode": "round_trips",
        "url": args.url,
        "connections": connections,
        "connect_failures": failed,
        "seconds": (seconds * 1000.0).round() / 1000.0,
        "round_trips": all.len(),
        "round_trips_per_s": rate.round(),
        "latency": all.summary(),
        "connection_errors": errors,
        "error": last_error,
    }));
    Ok(())
}

async fn idle(args: &Args, count: usize) -> anyhow::Result<()> {
    let started = Instant::now();
    let (mut sockets, failed, first_error) = open_many(args, count).await;
    emit(&json!({
        "event": "established",
        "requested": count,
        "open": sockets.len(),
        "failed": failed,
        "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
        "error": first_error,
    }));
    tokio::time::sleep(Duration::from_secs_f64(args.hold)).await;
    // Check that the tunnels still work after idling: one round trip on a few of them.
    let mut alive = 0usize;
    for ws in sockets.iter_mut().take(10) {
        let check = async {
            ws.send(Message::text("still there?")).await?;
            while let Some(message) = ws.next().await {
                if message?.is_text() {
                    return Ok::<_, anyhow::Error>(());
                }
            }
            bail!("closed")
        };
        if matches!(
            tokio::time::timeout(Duration::from_secs(5), check).await,
            Ok(Ok(()))
        ) {
            alive += 1;
        }
    }
    let open = sockets.len();
    // Dropping closes the sockets; a close handshake for each would only add time.
    drop(sockets);
    emit(&json!({
        "event": "closed",
        "open": open,
        "checked_alive": alive,
        "seconds": (started.elapsed().as_secs_f64() * 1000.0).round() / 1000.0,
    }));
    Ok(())
}
