//! The `gantry proxy` command itself: clear refusals for bad flags, listening on the ports it
//! reports, and a clean exit on SIGTERM.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, ensure};
use gantry_integration_tests::{ChildGuard, gantry_bin, poll_until};
use tokio::time::Instant;

/// Runs `gantry ARGS` to completion and returns its exit code and standard error.
fn run(args: &[&str], token: Option<&str>) -> anyhow::Result<(i32, String)> {
    let mut command = Command::new(gantry_bin()?);
    command
        .args(args)
        .env_remove("CONFIGPROXY_AUTH_TOKEN")
        .stdin(Stdio::null());
    if let Some(token) = token {
        command.env("CONFIGPROXY_AUTH_TOKEN", token);
    }
    let output = command.output().context("running gantry")?;
    Ok((
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    ))
}

#[tokio::test]
async fn bad_flags_are_refused_with_the_cause_and_the_fix() -> anyhow::Result<()> {
    let free = ["--port", "0", "--api-port", "0"];
    let cases: [(&[&str], Option<&str>, &str); 6] = [
        (&[], None, "CONFIGPROXY_AUTH_TOKEN"),
        (
            &["--default-target", "ftp://127.0.0.1/"],
            Some("t"),
            "--default-target",
        ),
        (
            &["--error-target", "/hub/error"],
            Some("t"),
            "--error-target",
        ),
        (
            &["--trusted-downstream", "10.0.0.0/99"],
            Some("t"),
            "--trusted-downstream \"10.0.0.0/99\"",
        ),
        (&["--log-level", "loud"], Some("t"), "--log-level"),
        (&["--ip", "not-an-ip"], Some("t"), "--ip"),
    ];
    for (extra, token, expected) in cases {
        let args: Vec<&str> = ["proxy"]
            .iter()
            .chain(free.iter())
            .chain(extra)
            .copied()
            .collect();
        let (code, stderr) = run(&args, token)?;
        ensure!(code == 1, "{args:?} exited {code}, not 1: {stderr}");
        ensure!(
            stderr.contains(expected),
            "{args:?}: the error does not name {expected}: {stderr}"
        );
        ensure!(stderr.starts_with("gantry: error:"), "{args:?}: {stderr}");
    }
    // Flags gantry does not implement are refused by the parser, never ignored.
    for flag in ["--socket", "--api-ssl-key", "--client-ssl-cert"] {
        let (code, stderr) = run(&["proxy", flag, "x"], Some("t"))?;
        ensure!(
            code == 2 && stderr.contains(flag),
            "{flag}: exit {code}: {stderr}"
        );
    }
    Ok(())
}

/// Starts `gantry proxy` on loopback port 0 with the API token `secret`, logging to a file in
/// `dir`, and returns it with its proxy and API addresses once it reports them.
async fn start_proxy(dir: &Path) -> anyhow::Result<(ChildGuard, String, String)> {
    let log = dir.join("gantry.log");
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
    let gantry = ChildGuard::spawn("gantry", command, &log)?;

    let deadline = Instant::now() + Duration::from_secs(20);
    let (proxy, api) = poll_until("gantry to report its listeners", deadline, || {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        async move { Ok(listeners(&text)) }
    })
    .await?;
    Ok((gantry, proxy, api))
}

#[tokio::test]
async fn serves_on_the_ports_it_reports_and_exits_cleanly_on_sigterm() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut gantry, proxy, api) = start_proxy(dir.path()).await?;

    let client = reqwest::Client::new();
    let health = client
        .get(format!("http://{proxy}/_chp_healthz"))
        .send()
        .await?;
    ensure!(health.status() == 200, "health check: {}", health.status());
    let refused = client
        .get(format!("http://{api}/api/routes"))
        .send()
        .await?;
    ensure!(
        refused.status() == 403,
        "the API without a token: {}",
        refused.status()
    );
    let routes = client
        .get(format!("http://{api}/api/routes"))
        .header("authorization", "token secret")
        .send()
        .await?;
    ensure!(
        routes.status() == 200,
        "the API with the token: {}",
        routes.status()
    );

    let started = std::time::Instant::now();
    let status = gantry.stop().context("gantry's exit status")?;
    ensure!(
        status.success(),
        "gantry exited with {status} on SIGTERM:\n{}",
        gantry.log_text()
    );
    ensure!(
        started.elapsed() < Duration::from_secs(5),
        "SIGTERM took {:?}",
        started.elapsed()
    );
    ensure!(
        gantry.log_text().contains("stopped"),
        "no shutdown line:\n{}",
        gantry.log_text()
    );
    Ok(())
}

/// Issue 11's probes: targets that are the cloud metadata service in another notation.
#[tokio::test]
async fn the_route_api_refuses_metadata_targets_in_any_notation() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let (mut gantry, _proxy, api) = start_proxy(dir.path()).await?;
    let client = reqwest::Client::new();
    let add = |path: &'static str, target: String| {
        client
            .post(format!("http://{api}/api/routes{path}"))
            .header("authorization", "token secret")
            .json(&serde_json::json!({ "target": target }))
            .send()
    };
    for (target, address) in [
        ("http://[::ffff:169.254.169.254]/", "::ffff:169.254.169.254"),
        ("http://2852039166/", "169.254.169.254"),
        ("http://0251.0376.0251.0376/", "169.254.169.254"),
        ("http://0xa9fea9fe/", "169.254.169.254"),
        ("http://169.254.43518/", "169.254.169.254"),
    ] {
        let response = add("/user/probe", target.to_owned()).await?;
        let status = response.status();
        let body = response.text().await?;
        ensure!(status == 400, "{target}: {status} {body}");
        ensure!(
            body.contains(&format!("the address {address},")),
            "{target}: the refusal does not name {address}: {body}"
        );
    }
    let (_, api_port) = api.rsplit_once(':').context("the API address has a port")?;
    let loopback = format!("http://127.0.0.1:{api_port}");
    let response = add("/user/loopback", loopback.clone()).await?;
    ensure!(
        response.status() == 201,
        "{loopback}: {}",
        response.status()
    );
    let routes: serde_json::Value = client
        .get(format!("http://{api}/api/routes"))
        .header("authorization", "token secret")
        .send()
        .await?
        .json()
        .await?;
    ensure!(
        routes.as_object().map(serde_json::Map::len) == Some(1)
            && routes["/user/loopback"]["target"] == loopback.as_str(),
        "only the loopback route was added: {routes}"
    );
    gantry.stop().context("gantry's exit status")?;
    Ok(())
}

/// The proxy and API addresses from gantry's "listening on" line, once it is written.
fn listeners(log: &str) -> Option<(String, String)> {
    let line = log
        .lines()
        .find(|line| line.contains("gantry proxy listening on"))?;
    let mut addresses = line.split("http://").skip(1).map(|rest| {
        rest.split(|c: char| c == ',' || c.is_whitespace())
            .next()
            .unwrap_or_default()
            .to_owned()
    });
    Some((addresses.next()?, addresses.next()?))
}
