//! Waiting for peers by asking them, and ports for them to listen on.

use std::collections::HashSet;
use std::net::{Ipv4Addr, TcpListener};
use std::sync::Mutex;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::time::Instant;

/// How often [`poll_until`] asks again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// A TCP port on 127.0.0.1 that was free a moment ago, for peers that must be told their
/// port up front (JupyterHub picks none for its proxy). Never the same port twice in one run.
pub fn free_port() -> anyhow::Result<u16> {
    static GIVEN: Mutex<Option<HashSet<u16>>> = Mutex::new(None);
    for _ in 0..100 {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
            .and_then(|listener| listener.local_addr())
            .context("cannot bind a free port on 127.0.0.1")?
            .port();
        let mut given = GIVEN
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        if given.get_or_insert_with(HashSet::new).insert(port) {
            return Ok(port);
        }
    }
    bail!("no new free port on 127.0.0.1 after 100 tries")
}

/// Calls `check` every 100 ms until it returns `Ok(Some(value))`, an error, or `deadline`
/// passes. `Ok(None)` means "not yet". The error after the deadline names `what`.
pub async fn poll_until<T, F, Fut>(what: &str, deadline: Instant, mut check: F) -> anyhow::Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<Option<T>>>,
{
    loop {
        if let Some(value) = check().await? {
            return Ok(value);
        }
        if Instant::now() >= deadline {
            bail!("timed out waiting for {what}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Waits until `url` answers a GET with a 2xx status and returns that response. Connection
/// errors and other statuses mean "not yet"; the timeout error says what the last answer was.
/// `peer_alive` runs before each try, so a peer that died fails the wait at once rather than
/// at the deadline.
pub async fn wait_for_http(
    client: &reqwest::Client,
    url: &str,
    deadline: Instant,
    mut peer_alive: impl FnMut() -> anyhow::Result<()>,
) -> anyhow::Result<reqwest::Response> {
    loop {
        peer_alive()?;
        let last = match client.get(url).timeout(Duration::from_secs(5)).send().await {
            Ok(response) if response.status().is_success() => return Ok(response),
            Ok(response) => format!("status {}", response.status()),
            Err(e) => format!("{e:#}"),
        };
        if Instant::now() >= deadline {
            bail!("timed out waiting for {url} to answer 2xx; last answer: {last}");
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
