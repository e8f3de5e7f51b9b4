//! `gantry up` as a test peer: a data folder and a config file of its own, a free port,
//! restarts that keep the data, and a browser-like HTTP client. Also the real OpenID
//! provider (`oidc-provider-mock` from PyPI) for login round trips.

use std::io::{BufRead, BufReader, Write};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::paths::{gantry_bin, venv};
use crate::process::ChildGuard;
use crate::wait::{free_port, wait_for_http};

/// How long `gantry up` gets to answer `/hub/health`.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `gantry up` with its own data folder. Stopped when dropped.
#[derive(Debug)]
pub struct TestGantry {
    dir: TempDir,
    port: u16,
    extra_config: String,
    process: Option<ChildGuard>,
    starts: usize,
    env: Vec<(String, String)>,
    /// Run with no configuration file, as a new user would: the embedded defaults, in the
    /// temporary folder as the working directory, with `--bind` for the port.
    embedded: bool,
}

impl TestGantry {
    /// A gantry whose configuration is the defaults plus `extra_config` (TOML appended after
    /// `[hub]`'s `bind` and `data_dir`; it may open other tables).
    pub fn new(extra_config: &str) -> anyhow::Result<Self> {
        Ok(Self {
            dir: tempfile::tempdir().context("cannot create a temporary folder")?,
            port: free_port()?,
            extra_config: extra_config.to_owned(),
            process: None,
            starts: 0,
            env: Vec::new(),
            embedded: false,
        })
    }

    /// A gantry with no configuration file: the embedded defaults (SQLite in
    /// `./gantry-data`, local accounts, the Docker backend with the default profile), run in
    /// a temporary folder, listening on a free port (`--bind`).
    pub fn embedded() -> anyhow::Result<Self> {
        let mut gantry = Self::new("")?;
        gantry.embedded = true;
        Ok(gantry)
    }

    /// `gantry` with `args`, the configuration (`--config`, or `--bind` and the temporary
    /// folder as working directory for [`TestGantry::embedded`]) and the environment set.
    fn gantry(&self, args: &[&str]) -> anyhow::Result<Command> {
        let mut command = Command::new(gantry_bin()?);
        command
            .args(args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .env_remove("GANTRY_CONFIG");
        if self.embedded {
            command
                .env("GANTRY_BIND", format!("127.0.0.1:{}", self.port))
                .current_dir(self.dir.path());
        } else {
            self.write_config()?;
            command.arg("--config").arg(self.config_path());
        }
        Ok(command)
    }

    /// Sets an environment variable for every later `gantry` run.
    pub fn set_env(&mut self, key: &str, value: &str) {
        self.env.retain(|(k, _)| k != key);
        self.env.push((key.to_owned(), value.to_owned()));
    }

    /// `http://127.0.0.1:<port>`, also the public origin unless the config says otherwise.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// The port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The configuration file.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("gantry.toml")
    }

    fn write_config(&self) -> anyhow::Result<()> {
        let text = format!(
            "[hub]\nbind = \"127.0.0.1:{}\"\ndata_dir = \"{}\"\n{}\n",
            self.port,
            self.dir.path().join("data").display(),
            self.extra_config
        );
        std::fs::write(self.config_path(), text).context("cannot write gantry.toml")
    }

    /// Runs `gantry ARGS --config <ours>` to completion with `stdin` as its input; returns
    /// the exit code, stdout and stderr.
    pub fn command(&self, args: &[&str], stdin: &str) -> anyhow::Result<(i32, String, String)> {
        let mut child = self
            .gantry(args)?
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot run gantry")?;
        child
            .stdin
            .take()
            .context("no stdin")?
            .write_all(stdin.as_bytes())
            .context("cannot write to gantry's stdin")?;
        let output = child.wait_with_output().context("gantry did not finish")?;
        Ok((
            output.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&output.stdout).into_owned(),
            String::from_utf8_lossy(&output.stderr).into_owned(),
        ))
    }

    /// Creates a local account with `gantry user add`.
    pub fn add_user(&self, name: &str, password: &str, admin: bool) -> anyhow::Result<()> {
        let mut args = vec!["user", "add", name, "--password-stdin"];
        if admin {
            args.push("--admin");
        }
        let (code, out, err) = self.command(&args, &format!("{password}\n"))?;
        ensure!(code == 0, "gantry user add failed ({code}): {out}{err}");
        Ok(())
    }

    /// Starts (or starts again) `gantry up` and waits for `/hub/health`.
    pub async fn start(&mut self) -> anyhow::Result<()> {
        ensure!(self.process.is_none(), "gantry is already running");
        self.starts += 1;
        let mut command = self.gantry(&["up", "--log-level", "debug"])?;
        command.env_remove("RUST_LOG");
        let log = self.dir.path().join(format!("gantry-{}.log", self.starts));
        let mut process = ChildGuard::spawn("gantry up", command, &log)?;
        let client = reqwest::Client::new();
        let health = format!("{}/hub/health", self.url());
        let deadline = Instant::now() + START_TIMEOUT;
        let result = wait_for_http(&client, &health, deadline, || process.ensure_running()).await;
        if let Err(error) = result {
            process.print_log();
            return Err(error);
        }
        self.process = Some(process);
        Ok(())
    }

    /// Stops `gantry up` (SIGTERM, then the group's SIGKILL); the data folder stays. Returns
    /// how it exited, when it ran.
    pub fn stop(&mut self) -> Option<std::process::ExitStatus> {
        self.process.take().and_then(|mut process| process.stop())
    }

    /// Logs `user` in with the local form in a new [`browser_client`]; returns the client
    /// (holding the session cookie) and the session's CSRF token from the home page.
    pub async fn login(
        &self,
        user: &str,
        password: &str,
    ) -> anyhow::Result<(reqwest::Client, String)> {
        let client = browser_client()?;
        let xsrf = self.login_with(&client, user, password).await?;
        Ok((client, xsrf))
    }

    /// Logs `user` in with the local form, as a browser does, in `client` (which must keep
    /// cookies and not follow redirects); returns the session's CSRF token from the home page.
    pub async fn login_with(
        &self,
        client: &reqwest::Client,
        user: &str,
        password: &str,
    ) -> anyhow::Result<String> {
        let page = client
            .get(format!("{}/hub/login", self.url()))
            .send()
            .await?;
        let xsrf = xsrf_field(&page.text().await?)?;
        let response = client
            .post(format!("{}/hub/login", self.url()))
            .header("origin", self.url())
            .form(&[
                ("_xsrf", xsrf.as_str()),
                ("username", user),
                ("password", password),
            ])
            .send()
            .await?;
        ensure!(
            response.status() == 303,
            "logging {user} in: {}",
            response.status()
        );
        let home = client
            .get(format!("{}/hub/home", self.url()))
            .send()
            .await?;
        xsrf_field(&home.text().await?)
    }

    /// Stops and starts again on the same port and data.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop();
        self.start().await
    }

    /// Everything the latest `gantry up` logged, running or stopped.
    pub fn log_text(&self) -> String {
        self.process.as_ref().map_or_else(
            || {
                let log = self.dir.path().join(format!("gantry-{}.log", self.starts));
                std::fs::read_to_string(log).unwrap_or_default()
            },
            ChildGuard::log_text,
        )
    }

    /// The data folder.
    pub fn data_dir(&self) -> PathBuf {
        if self.embedded {
            self.dir.path().join("gantry-data")
        } else {
            self.dir.path().join("data")
        }
    }
}

/// Follows redirects by hand, as a browser would but refusing to leave the origin `base`;
/// returns the last response and the path of every hop.
pub async fn follow_redirects(
    client: &reqwest::Client,
    base: &str,
    start: &str,
) -> anyhow::Result<(reqwest::Response, Vec<String>)> {
    let mut hops = vec![start.to_owned()];
    let mut url = format!("{base}{start}");
    for _ in 0..10 {
        let response = client.get(&url).send().await?;
        if !response.status().is_redirection() {
            return Ok((response, hops));
        }
        let location = response.headers()["location"].to_str()?.to_owned();
        ensure!(
            location.starts_with('/'),
            "a redirect left the origin: {location}"
        );
        hops.push(location.clone());
        url = format!("{base}{location}");
    }
    bail!("too many redirects: {hops:#?}")
}

/// A client that behaves like a browser for these tests: a cookie jar, no automatic
/// redirects (the tests look at each one).
pub fn browser_client() -> anyhow::Result<reqwest::Client> {
    reqwest::Client::builder()
        .cookie_store(true)
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .context("cannot build an HTTP client")
}

/// The value of the hidden `_xsrf` field in an HTML form.
pub fn xsrf_field(page: &str) -> anyhow::Result<String> {
    let marker = "name=\"_xsrf\" value=\"";
    let start = page.find(marker).context("no _xsrf field in the page")? + marker.len();
    let end = page[start..]
        .find('"')
        .context("unterminated _xsrf value")?;
    Ok(page[start..start + end].to_owned())
}

/// A running `oidc-provider-mock` (from the venv); killed when dropped.
#[derive(Debug)]
pub struct OidcMock {
    child: Child,
    base: String,
}

impl OidcMock {
    /// Starts the provider on a free port, with `args` added to its command line.
    pub fn start(args: &[&str]) -> anyhow::Result<Self> {
        let executable = venv()?.join("bin/oidc-provider-mock");
        ensure!(
            executable.is_file(),
            "{} is missing: run integration-tests/python-env.sh",
            executable.display()
        );
        let mut child = Command::new(executable)
            .args(["--host", "127.0.0.1", "--port", "0"])
            .args(args)
            .env("NO_COLOR", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .context("cannot start oidc-provider-mock")?;
        let stderr = child.stderr.take().context("no stderr")?;
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("Uvicorn running on ").nth(1) {
                    let url = rest.split_whitespace().next().unwrap_or_default();
                    let _ = tx.send(url.to_owned());
                }
                eprintln!("[oidc-provider-mock] {line}");
            }
        });
        let base = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(base) => base,
            Err(_) => {
                let _ = child.kill();
                bail!("oidc-provider-mock did not report its address within 60 s");
            }
        };
        Ok(Self { child, base })
    }

    /// `http://127.0.0.1:<port>`, also its issuer.
    pub fn issuer(&self) -> &str {
        &self.base
    }

    /// Sets the claims the provider issues for `sub`.
    pub async fn set_user(&self, sub: &str, claims: &serde_json::Value) -> anyhow::Result<()> {
        let status = reqwest::Client::new()
            .put(format!("{}/users/{sub}", self.base))
            .json(claims)
            .send()
            .await?
            .status();
        ensure!(status == 204, "PUT /users/{sub} answered {status}");
        Ok(())
    }

    /// Plays the user at the provider: opens the authorization URL and signs in as `sub`.
    /// Returns the provider's redirect back to the relying party.
    pub async fn authorize(&self, authorization_url: &str, sub: &str) -> anyhow::Result<String> {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .build()?;
        let page = client.get(authorization_url).send().await?;
        ensure!(
            page.status() == 200,
            "authorization page answered {}",
            page.status()
        );
        let answer = client
            .post(authorization_url)
            .form(&[("sub", sub)])
            .send()
            .await?;
        ensure!(
            answer.status() == 302,
            "the provider's login answered {}",
            answer.status()
        );
        Ok(answer
            .headers()
            .get("location")
            .context("no Location from the provider")?
            .to_str()?
            .to_owned())
    }
}

impl Drop for OidcMock {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
