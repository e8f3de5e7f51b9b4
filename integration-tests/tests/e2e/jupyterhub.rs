//! gantry as JupyterHub's proxy: the real JupyterHub 6 from PyPI starts `gantry proxy` in place
//! of configurable-http-proxy, and a browser-like client logs in, spawns a JupyterLab server,
//! and uses it, kernel WebSocket included, through gantry.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, anyhow, bail, ensure};
use futures_util::{SinkExt, StreamExt};
use gantry_integration_tests::{JupyterHub, TestJupyterHub, gantry_bin, poll_until, venv};
use reqwest::cookie::{CookieStore, Jar};
use reqwest::{StatusCode, Url};
use serde_json::{Value, json};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::{self, Message};

/// The whole scenario, hub start to server stop, must finish within this.
const TEST_TIMEOUT: Duration = Duration::from_secs(120);
const USER: &str = "alice";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_jupyterhub_6_logs_in_and_reaches_user_server_through_gantry() -> anyhow::Result<()> {
    let gantry = gantry_bin()?;
    let venv = venv()?;
    let deadline = Instant::now() + TEST_TIMEOUT;
    let hub = TestJupyterHub::new(&gantry, &venv)
        .user(USER)
        .start(deadline)
        .await?;
    let outcome = match tokio::time::timeout_at(deadline, scenario(&hub, deadline)).await {
        Ok(outcome) => outcome,
        Err(_) => Err(anyhow!("the scenario ran past its {TEST_TIMEOUT:?} limit")),
    };
    if outcome.is_err() {
        hub.print_log();
    }
    outcome
}

async fn scenario(hub: &JupyterHub, deadline: Instant) -> anyhow::Result<()> {
    let browser = Browser::new()?;
    let user = hub.user(USER)?;

    // The login page and form come from the hub, through gantry's `/` route.
    browser.log_in(hub, &user.name, &user.password).await?;

    // Spawning: the hub either redirects to the running server or to its pending page, whose
    // progress event stream (an EventSource in a browser) says when the server is ready.
    let spawned = browser.get(&hub.url("/hub/spawn")).await?;
    ensure!(
        spawned.status() == StatusCode::OK,
        "GET /hub/spawn ended in {}",
        spawned.status()
    );
    let pending = format!("/hub/spawn-pending/{USER}");
    if spawned.url().path().starts_with(&pending) {
        let page = spawned.text().await?;
        let progress = between(&page, "new EventSource(\"", "\")")
            .context("the spawn-pending page has no progress EventSource")?
            .replace("&amp;", "&");
        browser.await_spawn(&hub.url(&progress)).await?;
    } else {
        ensure!(
            spawned.url().path().starts_with(&format!("/user/{USER}/")),
            "GET /hub/spawn ended at {}, neither the server nor {pending}",
            spawned.url()
        );
    }

    // JupyterLab through gantry: the single-user server sends the browser through the hub's
    // OAuth flow (hub pages and server pages alternate, all via gantry) and then serves the page.
    let lab = browser.get(&hub.url(&format!("/user/{USER}/lab"))).await?;
    ensure!(
        lab.status() == StatusCode::OK,
        "GET /user/{USER}/lab: {}",
        lab.status()
    );
    ensure!(
        lab.url().path() == format!("/user/{USER}/lab"),
        "GET /user/{USER}/lab ended at {}, not at the server",
        lab.url()
    );
    let version = header(&lab, "x-jupyterhub-version");
    ensure!(
        version.starts_with("6."),
        "the single-user server reports JupyterHub {version:?}, not 6.x"
    );
    let page = lab.text().await?;
    ensure!(
        page.contains("<title>JupyterLab</title>"),
        "GET /user/{USER}/lab is not JupyterLab:\n{page:.500}"
    );

    let status = browser
        .get(&hub.url(&format!("/user/{USER}/api/status")))
        .await?;
    ensure!(
        status.status() == StatusCode::OK,
        "GET /user/{USER}/api/status: {}",
        status.status()
    );
    let status: Value = status
        .json()
        .await
        .context("jupyter_server's /api/status is not JSON")?;
    ensure!(
        status.get("started").is_some(),
        "unexpected /api/status: {status}"
    );

    // gantry's route table, as JupyterHub wrote it through the CHP route API.
    let route = check_route_table(hub).await?;

    // A kernel, and its WebSocket tunnelled through gantry.
    browser.run_code_in_kernel(hub).await?;

    // Stopping the server makes the hub delete its route.
    browser.stop_server(hub).await?;
    let routes = RouteApi::new(hub);
    poll_until(
        &format!("the route {route} to leave gantry's table"),
        deadline,
        || async { Ok(routes.list().await?.get(&route).is_none().then_some(())) },
    )
    .await?;
    Ok(())
}

/// Checks that gantry's route API lists the hub's `/` route and the user's route, and that the
/// user's route points at the single-user server. Returns the user's route key.
async fn check_route_table(hub: &JupyterHub) -> anyhow::Result<String> {
    let routes = RouteApi::new(hub);
    let refused = routes
        .client
        .get(hub.route_api_url("/api/routes"))
        .send()
        .await?;
    ensure!(
        refused.status() == StatusCode::FORBIDDEN,
        "the route API answered {} without a token",
        refused.status()
    );

    let table = routes.list().await?;
    let root = &table["/"];
    ensure!(
        root["target"] == hub.hub_url() && root["hub"] == true,
        "the `/` route does not point at the hub ({}): {table:#}",
        hub.hub_url()
    );
    let key = format!("/user/{USER}");
    let route = table
        .get(&key)
        .with_context(|| format!("gantry has no route {key}: {table:#}"))?;
    ensure!(
        route["user"] == USER && route["server_name"] == "",
        "route data not kept: {route}"
    );
    let target = route["target"]
        .as_str()
        .context("the route has no target")?;
    ensure!(
        target.starts_with("http://127.0.0.1:") && target != hub.hub_url(),
        "the route {key} points at {target}, not at a single-user server"
    );
    ensure!(
        route["last_activity"]
            .as_str()
            .is_some_and(|t| t.ends_with('Z')),
        "the route has no ISO 8601 last_activity: {route}"
    );

    // The target itself is jupyter_server: its unauthenticated /api says its version.
    let direct = routes
        .client
        .get(format!("{target}/user/{USER}/api"))
        .send()
        .await?;
    ensure!(
        direct.status() == StatusCode::OK,
        "GET {target}/user/{USER}/api: {}",
        direct.status()
    );
    let direct: Value = direct.json().await?;
    ensure!(
        direct["version"].is_string(),
        "{target} is not a Jupyter server: {direct}"
    );
    Ok(key)
}

/// gantry's route API, with the token JupyterHub gave gantry.
struct RouteApi<'a> {
    hub: &'a JupyterHub,
    client: reqwest::Client,
}

impl<'a> RouteApi<'a> {
    fn new(hub: &'a JupyterHub) -> Self {
        Self {
            hub,
            client: reqwest::Client::new(),
        }
    }

    async fn list(&self) -> anyhow::Result<Value> {
        let response = self
            .client
            .get(self.hub.route_api_url("/api/routes"))
            .header("Authorization", format!("token {}", self.hub.proxy_token()))
            .timeout(Duration::from_secs(10))
            .send()
            .await?;
        ensure!(
            response.status() == StatusCode::OK,
            "GET /api/routes: {}",
            response.status()
        );
        response.json().await.context("GET /api/routes is not JSON")
    }
}

/// A client that behaves like a browser as far as the hub cares: it keeps cookies and follows
/// redirects.
struct Browser {
    client: reqwest::Client,
    jar: Arc<Jar>,
}

impl Browser {
    fn new() -> anyhow::Result<Self> {
        let jar = Arc::new(Jar::default());
        let client = reqwest::Client::builder()
            .cookie_provider(Arc::clone(&jar))
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self { client, jar })
    }

    async fn get(&self, url: &str) -> anyhow::Result<reqwest::Response> {
        self.client
            .get(url)
            .send()
            .await
            .with_context(|| format!("GET {url}"))
    }

    /// The value of the cookie `name` that this browser would send to `url`.
    fn cookie(&self, url: &str, name: &str) -> anyhow::Result<String> {
        let url = Url::parse(url)?;
        let header = self
            .jar
            .cookies(&url)
            .with_context(|| format!("no cookies for {url}"))?;
        header
            .to_str()?
            .split(';')
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.to_owned())
            .with_context(|| format!("no cookie {name} for {url}"))
    }

    /// Logs in through the hub's login form, with its XSRF token, and lands on /hub/home.
    async fn log_in(&self, hub: &JupyterHub, name: &str, password: &str) -> anyhow::Result<()> {
        let form = self.get(&hub.url("/hub/login")).await?;
        ensure!(
            form.status() == StatusCode::OK,
            "GET /hub/login: {}",
            form.status()
        );
        let page = form.text().await?;
        let xsrf = between(&page, "name=\"_xsrf\" value=\"", "\"")
            .context("the login form has no _xsrf field")?;
        let home = self
            .client
            .post(hub.url("/hub/login?next=%2Fhub%2Fhome"))
            .form(&[("username", name), ("password", password), ("_xsrf", xsrf)])
            .send()
            .await?;
        ensure!(
            home.status() == StatusCode::OK && home.url().path() == "/hub/home",
            "logging in ended with {} at {}, not at /hub/home",
            home.status(),
            home.url()
        );
        Ok(())
    }

    /// Reads the spawn progress event stream until it reports the server ready.
    async fn await_spawn(&self, url: &str) -> anyhow::Result<()> {
        let mut response = self.client.get(url).timeout(TEST_TIMEOUT).send().await?;
        ensure!(
            response.status() == StatusCode::OK,
            "GET {url}: {}",
            response.status()
        );
        let mut buffer = String::new();
        let mut events = Vec::new();
        while let Some(chunk) = response.chunk().await? {
            buffer.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = buffer.find('\n') {
                let line: String = buffer.drain(..=end).collect();
                let Some(data) = line.trim_end().strip_prefix("data:") else {
                    continue;
                };
                let event: Value = serde_json::from_str(data.trim())?;
                events.push(event.to_string());
                if event["failed"] == true {
                    bail!("the spawn failed: {}", events.join("\n"));
                }
                if event["ready"] == true {
                    return Ok(());
                }
            }
        }
        bail!(
            "the progress stream ended before the server was ready:\n{}",
            events.join("\n")
        )
    }

    /// Starts a kernel, opens its channels WebSocket through gantry, runs `print(6 * 7)`, and
    /// waits for the output and the reply; then shuts the kernel down.
    async fn run_code_in_kernel(&self, hub: &JupyterHub) -> anyhow::Result<()> {
        let kernels = hub.url(&format!("/user/{USER}/api/kernels"));
        // jupyter_server wants its XSRF cookie echoed in a header on cookie-authenticated POSTs.
        let xsrf = self.cookie(&kernels, "_xsrf")?;
        let created = self
            .client
            .post(&kernels)
            .header("X-XSRFToken", &xsrf)
            .json(&json!({ "name": "python3" }))
            .send()
            .await?;
        ensure!(
            created.status() == StatusCode::CREATED,
            "POST {kernels}: {}",
            created.status()
        );
        let kernel: Value = created.json().await?;
        let id = kernel["id"]
            .as_str()
            .context("the new kernel has no id")?
            .to_owned();

        // JupyterLab names its session in the URL; jupyter_server warns without one.
        let channels = format!("{kernels}/{id}/channels?session_id=gantry-e2e");
        let mut request = channels
            .replacen("http://", "ws://", 1)
            .into_client_request()?;
        let cookies = self
            .jar
            .cookies(&Url::parse(&channels)?)
            .context("no cookies for the kernel")?;
        request.headers_mut().insert("Cookie", cookies);
        // A browser sends its origin; jupyter_server accepts it only if gantry kept the Host.
        request.headers_mut().insert("Origin", hub.url("").parse()?);
        let (mut socket, response) = tokio_tungstenite::connect_async(request)
            .await
            .with_context(|| format!("WebSocket {channels}"))?;
        ensure!(response.status() == tungstenite::http::StatusCode::SWITCHING_PROTOCOLS);

        let msg_id = format!("gantry-e2e-{id}");
        let execute = json!({
            "header": {
                "msg_id": msg_id,
                "msg_type": "execute_request",
                "username": USER,
                "session": "gantry-e2e",
                "version": "5.3",
            },
            "parent_header": {},
            "metadata": {},
            "content": {
                "code": "print(6 * 7)",
                "silent": false,
                "store_history": false,
                "user_expressions": {},
                "allow_stdin": false,
                "stop_on_error": true,
            },
            "channel": "shell",
            "buffers": [],
        });
        socket.send(Message::text(execute.to_string())).await?;

        let (mut printed, mut replied) = (false, false);
        while !(printed && replied) {
            let message = socket
                .next()
                .await
                .context("the kernel WebSocket closed before the reply")??;
            let Message::Text(text) = message else {
                continue;
            };
            let message: Value = serde_json::from_str(text.as_str())?;
            if message["parent_header"]["msg_id"] != msg_id.as_str() {
                continue;
            }
            match message["msg_type"].as_str() {
                Some("stream") => {
                    let text = message["content"]["text"].as_str().unwrap_or_default();
                    ensure!(text.trim() == "42", "the kernel printed {text:?}, not 42");
                    printed = true;
                }
                Some("error") => bail!("the kernel raised: {}", message["content"]),
                Some("execute_reply") => {
                    ensure!(
                        message["content"]["status"] == "ok",
                        "execute_reply: {}",
                        message["content"]
                    );
                    replied = true;
                }
                _ => {}
            }
        }
        socket.close(None).await?;

        let deleted = self
            .client
            .delete(format!("{kernels}/{id}"))
            .header("X-XSRFToken", &xsrf)
            .send()
            .await?;
        ensure!(
            deleted.status() == StatusCode::NO_CONTENT,
            "DELETE kernel: {}",
            deleted.status()
        );
        Ok(())
    }

    /// Stops the user's server through the hub's REST API, authenticated by the login cookie.
    async fn stop_server(&self, hub: &JupyterHub) -> anyhow::Result<()> {
        let url = hub.url(&format!("/hub/api/users/{USER}/server"));
        let xsrf = self.cookie(&url, "_xsrf")?;
        let response = self
            .client
            .delete(&url)
            .header("X-XSRFToken", xsrf)
            .send()
            .await?;
        ensure!(
            matches!(
                response.status(),
                StatusCode::ACCEPTED | StatusCode::NO_CONTENT
            ),
            "DELETE {url}: {} {}",
            response.status(),
            response.text().await.unwrap_or_default()
        );
        Ok(())
    }
}

fn header(response: &reqwest::Response, name: &str) -> String {
    response
        .headers()
        .get(name)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// The text between the first `start` and the next `end` after it.
fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let rest = &text[text.find(start)? + start.len()..];
    Some(&rest[..rest.find(end)?])
}
