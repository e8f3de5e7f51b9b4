//! A real JupyterHub with `gantry proxy` as its proxy, the way a deployment swaps out
//! configurable-http-proxy: `c.ConfigurableHTTPProxy.command = [gantry, "proxy"]`.

use std::collections::BTreeSet;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::Context;
use serde_json::json;
use tokio::time::Instant;

use crate::process::{ChildGuard, signal_process};
use crate::wait::{free_port, wait_for_http};

/// A user the hub's DummyAuthenticator lets in.
#[derive(Debug, Clone)]
pub struct HubUser {
    /// The user name, also the last segment of `/user/<name>/`.
    pub name: String,
    /// A password for the login form (DummyAuthenticator accepts any).
    pub password: String,
}

/// Builds a [`JupyterHub`]: DummyAuthenticator, SimpleLocalProcessSpawner running the venv's
/// `jupyterhub-singleuser` (JupyterLab on jupyter_server), gantry as the proxy, every listener
/// on a free 127.0.0.1 port and every file in a temporary directory.
#[derive(Debug)]
pub struct TestJupyterHub {
    gantry: PathBuf,
    venv: PathBuf,
    users: BTreeSet<String>,
}

impl TestJupyterHub {
    /// A hub that runs `gantry` as its proxy and JupyterHub from `venv`.
    pub fn new(gantry: &Path, venv: &Path) -> Self {
        Self {
            gantry: gantry.to_path_buf(),
            venv: venv.to_path_buf(),
            users: BTreeSet::new(),
        }
    }

    /// Allows `name` to log in.
    pub fn user(mut self, name: &str) -> Self {
        self.users.insert(name.to_owned());
        self
    }

    /// Starts JupyterHub (which starts gantry) and waits until the hub answers through
    /// gantry, or `deadline` passes.
    pub async fn start(self, deadline: Instant) -> anyhow::Result<JupyterHub> {
        let dir = tempfile::Builder::new()
            .prefix("gantry-e2e-jupyterhub-")
            .tempdir()
            .context("cannot create a temporary directory for JupyterHub")?;
        let public_port = free_port()?;
        let api_port = free_port()?;
        let hub_port = free_port()?;
        let proxy_token = random_hex();
        let password = random_hex();
        let proxy_pid_file = dir.path().join("jupyterhub-proxy.pid");
        let config = self.config(
            dir.path(),
            public_port,
            api_port,
            hub_port,
            &proxy_token,
            &proxy_pid_file,
        );
        let config_file = dir.path().join("jupyterhub_config.py");
        std::fs::write(&config_file, config).context("cannot write jupyterhub_config.py")?;

        let bin = self.venv.join("bin");
        let path = match std::env::var_os("PATH") {
            Some(path) => std::env::join_paths(
                std::iter::once(bin.clone()).chain(std::env::split_paths(&path)),
            )
            .context("the venv's path cannot join PATH")?,
            None => bin.clone().into_os_string(),
        };
        let mut command = Command::new(bin.join("jupyterhub"));
        command
            .arg("-f")
            .arg(&config_file)
            .current_dir(dir.path())
            .env("PATH", path)
            .env("VIRTUAL_ENV", &self.venv)
            // Logs reach the file as they are written, and gantry's without colour codes.
            .env("PYTHONUNBUFFERED", "1")
            .env("NO_COLOR", "1")
            // These would point JupyterHub and Jupyter at the developer's own files.
            .env_remove("JUPYTERHUB_API_TOKEN")
            .env_remove("JUPYTER_CONFIG_DIR")
            .env_remove("JUPYTER_DATA_DIR")
            .env_remove("JUPYTER_RUNTIME_DIR")
            .env_remove("CONFIGPROXY_AUTH_TOKEN")
            .env_remove("RUST_LOG");
        let hub = ChildGuard::spawn(
            "jupyterhub (with gantry)",
            command,
            &dir.path().join("jupyterhub.log"),
        )?;

        let mut hub = JupyterHub {
            hub,
            users: self
                .users
                .iter()
                .map(|name| HubUser {
                    name: name.clone(),
                    password: password.clone(),
                })
                .collect(),
            public_url: format!("http://127.0.0.1:{public_port}"),
            route_api_url: format!("http://127.0.0.1:{api_port}"),
            hub_url: format!("http://127.0.0.1:{hub_port}"),
            proxy_token,
            proxy_pid_file,
            gantry: self.gantry,
            dir,
        };
        if let Err(error) = hub.wait_ready(deadline).await {
            hub.print_log();
            return Err(error);
        }
        Ok(hub)
    }

    fn config(
        &self,
        dir: &Path,
        public_port: u16,
        api_port: u16,
        hub_port: u16,
        proxy_token: &str,
        proxy_pid_file: &Path,
    ) -> String {
        // JSON literals are Python literals too, with every quote and backslash escaped.
        let py = |value: serde_json::Value| value.to_string();
        let dir_text = dir.to_string_lossy();
        let users: Vec<&String> = self.users.iter().collect();
        format!(
            r#"# Written by gantry's end-to-end tests.
c = get_config()  # noqa: F821

c.JupyterHub.bind_url = {bind_url}
c.JupyterHub.hub_bind_url = {hub_bind_url}
c.JupyterHub.db_url = {db_url}
c.JupyterHub.cookie_secret_file = {cookie_secret_file}
c.JupyterHub.log_level = "DEBUG"

# gantry replaces configurable-http-proxy; JupyterHub starts it and drives its route API.
c.ConfigurableHTTPProxy.command = {proxy_command}
c.ConfigurableHTTPProxy.api_url = {api_url}
c.ConfigurableHTTPProxy.auth_token = {proxy_token}
c.ConfigurableHTTPProxy.pid_file = {proxy_pid_file}
c.ConfigurableHTTPProxy.log_level = "debug"

# DummyAuthenticator takes any password (its own password setting is deprecated since 5.3).
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allowed_users = set({users})

c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = {home_dir_template}
c.Spawner.cmd = {singleuser}
# --allow-root: CI runs as root, and jupyter_server refuses root without it.
c.Spawner.args = ["--allow-root"]
c.Spawner.ip = "127.0.0.1"
c.Spawner.default_url = "/lab"
# Keep single-user servers in the hub's process group so the test's group kill reaches them.
c.Spawner.popen_kwargs = {{"start_new_session": False}}
# Two busy cores can make a cold JupyterLab slow to answer.
c.Spawner.start_timeout = 90
c.Spawner.http_timeout = 90
"#,
            bind_url = py(json!(format!("http://127.0.0.1:{public_port}"))),
            hub_bind_url = py(json!(format!("http://127.0.0.1:{hub_port}"))),
            db_url = py(json!(format!("sqlite:///{dir_text}/jupyterhub.sqlite"))),
            cookie_secret_file = py(json!(dir.join("jupyterhub_cookie_secret"))),
            proxy_command = py(json!([self.gantry, "proxy"])),
            api_url = py(json!(format!("http://127.0.0.1:{api_port}"))),
            proxy_token = py(json!(proxy_token)),
            proxy_pid_file = py(json!(proxy_pid_file)),
            users = py(json!(users)),
            home_dir_template = py(json!(format!("{dir_text}/home/{{username}}"))),
            singleuser = py(json!([self.venv.join("bin").join("jupyterhub-singleuser")])),
        )
    }
}

/// A running JupyterHub whose proxy is gantry. Dropping it stops the hub, which stops
/// gantry and the single-user servers; anything left is killed.
#[derive(Debug)]
pub struct JupyterHub {
    // Declared before `dir`: the process stops (and may print its log) before its files go.
    hub: ChildGuard,
    users: Vec<HubUser>,
    public_url: String,
    route_api_url: String,
    hub_url: String,
    proxy_token: String,
    proxy_pid_file: PathBuf,
    gantry: PathBuf,
    dir: tempfile::TempDir,
}

impl JupyterHub {
    /// The public URL of `path` (which starts with `/`): served by gantry.
    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.public_url)
    }

    /// The URL of `path` on gantry's route API.
    pub fn route_api_url(&self, path: &str) -> String {
        format!("{}{path}", self.route_api_url)
    }

    /// The hub's own address, which gantry's `/` route points at.
    pub fn hub_url(&self) -> &str {
        &self.hub_url
    }

    /// The route API token JupyterHub passes gantry as CONFIGPROXY_AUTH_TOKEN.
    pub fn proxy_token(&self) -> &str {
        &self.proxy_token
    }

    /// The user named `name`, as configured.
    pub fn user(&self, name: &str) -> anyhow::Result<&HubUser> {
        self.users
            .iter()
            .find(|user| user.name == name)
            .with_context(|| format!("{name} is not a user of this hub"))
    }

    /// The temporary directory holding the hub's config, database, logs and home directories.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// Fails when the hub process has exited.
    pub fn ensure_running(&mut self) -> anyhow::Result<()> {
        self.hub.ensure_running()
    }

    /// Prints the log of JupyterHub, which holds gantry's and the single-user servers' too.
    pub fn print_log(&self) {
        self.hub.print_log();
    }

    /// Polls the hub's API through gantry until it answers: then the hub runs, gantry runs,
    /// and the hub has added its `/` route.
    async fn wait_ready(&mut self, deadline: Instant) -> anyhow::Result<()> {
        let url = self.url("/hub/api/");
        wait_for_http(&reqwest::Client::new(), &url, deadline, || {
            self.hub.ensure_running()
        })
        .await
        .context("JupyterHub did not come up behind gantry")?;
        Ok(())
    }

    /// Kills the gantry process JupyterHub started, if the hub left it running. The pid comes
    /// from the hub's pid file and is checked against the binary, as pids get reused.
    fn kill_orphaned_proxy(&self) {
        let Some(pid) = std::fs::read_to_string(&self.proxy_pid_file)
            .ok()
            .and_then(|text| text.trim().parse::<u32>().ok())
        else {
            return;
        };
        let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        let gantry = self.gantry.as_os_str().as_encoded_bytes();
        if cmdline.windows(gantry.len()).any(|window| window == gantry) {
            signal_process(pid, "KILL");
        }
    }
}

impl Drop for JupyterHub {
    fn drop(&mut self) {
        // SIGTERM lets the hub stop gantry (which runs in a session of its own) and the servers.
        self.hub.stop();
        self.kill_orphaned_proxy();
    }
}

/// 128 random bits as hex, from the standard library's randomly seeded hasher.
fn random_hex() -> String {
    (0..2)
        .map(|_| format!("{:016x}", RandomState::new().build_hasher().finish()))
        .collect()
}
