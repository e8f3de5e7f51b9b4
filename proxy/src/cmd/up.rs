//! `gantry up`: the hub and the proxy behind one listener, configured by `gantry.toml`; and
//! `gantry check-config`, which validates that file without starting anything.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use gantry_auth::store::{NewToken, NewUser, TokenBinding};
use gantry_auth::{OidcProvider, Scope, Scopes, Store, StoreOptions, UserName};
use gantry_proxy::hub::config::{
    EMBEDDED_IMAGE, EMBEDDED_IMAGE_BUILD, FileConfig, HubConfig, LogFormat,
};
use gantry_proxy::hub::front::FrontTier;
use gantry_proxy::hub::servers::Servers;
use gantry_proxy::hub::{Hub, Provider, callers, cookies};
use gantry_proxy::metrics::Metrics;
use gantry_proxy::private_cookies::PrivateCookies;
use gantry_proxy::server::{ServeSettings, serve};
use gantry_proxy::{Proxy, ProxyConfig, RouteTable};
use gantry_spawner::{
    DockerOptions, DockerSpawner, FileStore, MesosSpawner, Spawner, ValidatedConfig,
};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

use super::proxy::{shutdown_signal, tls_acceptor};

/// How often expired sessions, tokens and logins in flight are swept.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// The `--config` flag shared by the commands that read `gantry.toml`.
#[derive(Debug, Args)]
pub(crate) struct ConfigArg {
    /// The configuration file. Without it the embedded defaults apply: SQLite in
    /// ./gantry-data, local accounts, listening on 127.0.0.1:8000, one profile running
    /// JupyterLab from the local image gantry/notebook:latest.
    #[arg(
        long,
        short = 'c',
        value_name = "FILE",
        env = "GANTRY_CONFIG",
        global = true
    )]
    config: Option<PathBuf>,
    /// Listen on this address instead of the file's `hub.bind`, e.g. `0.0.0.0:8000` to serve
    /// other machines.
    #[arg(long, value_name = "ADDR", env = "GANTRY_BIND")]
    bind: Option<std::net::SocketAddr>,
}

impl ConfigArg {
    /// Reads and checks the configuration (or the embedded one), reporting every problem.
    pub(crate) fn load(&self) -> anyhow::Result<HubConfig> {
        let mut file = match &self.config {
            Some(path) => FileConfig::load(path)?,
            None => FileConfig::embedded().context("the embedded configuration does not parse")?,
        };
        if let Some(bind) = self.bind {
            file.hub.bind = bind;
        }
        // A URL with a password belongs in a secret, not in the file (the Helm chart passes
        // it this way).
        if let Ok(url) = std::env::var("GANTRY_DATABASE_URL")
            && !url.trim().is_empty()
        {
            file.hub.database_url = Some(url.trim().to_owned());
        }
        let spawner_problems = file.spawner.validate().err();
        let hub = file.validate();
        let mut lines = Vec::new();
        if let Err(errors) = &hub {
            lines.extend(errors.problems.iter().map(ToString::to_string));
        }
        if let Some(errors) = spawner_problems {
            lines.extend(errors.to_string().lines().map(str::to_owned));
        }
        match hub {
            Ok(config) if lines.is_empty() => Ok(config),
            _ => bail!(
                "{} is not valid ({} problem{}):\n  {}",
                self.describe(),
                lines.len(),
                if lines.len() == 1 { "" } else { "s" },
                lines.join("\n  ")
            ),
        }
    }

    fn describe(&self) -> String {
        self.config.as_deref().map_or_else(
            || "the default configuration".to_owned(),
            |p| p.display().to_string(),
        )
    }
}

/// Flags of `gantry up`.
#[derive(Debug, Args)]
pub(crate) struct UpArgs {
    #[command(flatten)]
    config: ConfigArg,
    /// Log level: error, warn, info, debug or trace. RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Worker threads [default: one per CPU]. 1 runs tokio's current-thread scheduler, one
    /// event loop like one nginx worker (as `gantry proxy --threads 1`).
    #[arg(long, env = "GANTRY_THREADS")]
    threads: Option<usize>,
}

/// Flags of `gantry check-config`.
#[derive(Debug, Args)]
pub(crate) struct CheckArgs {
    #[command(flatten)]
    config: ConfigArg,
}

pub(crate) fn check(args: &CheckArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    // The spawner's tables passed `load`; what is left to check is the secret file.
    let backend = match config.spawner.validate() {
        Ok(mut validated) if validated.mesos.is_some() => {
            read_mesos_secret(&mut validated)?;
            "the Mesos backend"
        }
        _ => "the Docker backend",
    };
    let summary = format!(
        "{} is valid: gantry would listen on {} for {} with {} ({} OpenID provider{}, local accounts {}), {} profile{} on {backend}",
        args.config.describe(),
        config.hub.bind,
        config.public_origin.as_str(),
        redact_url(&config.database_url),
        config.oidc.len(),
        if config.oidc.len() == 1 { "" } else { "s" },
        if config.local.enabled { "on" } else { "off" },
        config.spawner.profiles.len(),
        if config.spawner.profiles.len() == 1 {
            ""
        } else {
            "s"
        },
    );
    eprintln!("{summary}");
    Ok(())
}

pub(crate) fn run(args: &UpArgs) -> anyhow::Result<()> {
    let config = args.config.load()?;
    init_logging(&args.log_level, config.hub.log_format)?;
    super::proxy::runtime(args.threads)?.block_on(serve_hub(config))
}

pub(crate) fn init_logging(level: &str, format: LogFormat) -> anyhow::Result<()> {
    let level: tracing::Level = level.parse().map_err(|_| {
        anyhow::anyhow!("--log-level {level:?} is not a log level (try info or debug)")
    })?;
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,gantry={level},gantry_proxy={level}")));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.with_ansi(std::io::stderr().is_terminal()).init(),
    }
    Ok(())
}

/// Opens the database the configuration names, creating the data folder for the default
/// SQLite file, and brings its schema up to date.
pub(crate) async fn open_store(config: &HubConfig) -> anyhow::Result<Store> {
    if config.hub.database_url.is_none() {
        std::fs::create_dir_all(&config.hub.data_dir).with_context(|| {
            format!(
                "cannot create the data folder {} (hub.data_dir)",
                config.hub.data_dir.display()
            )
        })?;
    }
    let store = Store::connect(&config.database_url, &StoreOptions::default())
        .await
        .with_context(|| {
            format!(
                "cannot open the database {}",
                redact_url(&config.database_url)
            )
        })?;
    store
        .migrate()
        .await
        .context("cannot bring the database schema up to date")?;
    Ok(store)
}

/// `GANTRY_ADMIN_TOKEN`: registers that token, with the `admin` scope, for the admin user
/// named by `GANTRY_ADMIN_USER` (default `admin`), creating the user when missing. For
/// automation and the Helm chart; idempotent across restarts. Never logged.
async fn register_admin_token(store: &Store, config: &HubConfig) -> anyhow::Result<()> {
    let Ok(token) = std::env::var("GANTRY_ADMIN_TOKEN") else {
        return Ok(());
    };
    let token = token.trim();
    if token.is_empty() {
        return Ok(());
    }
    let name = admin_user_name(config)?;
    let now = jiff::Timestamp::now();
    let user = match store.user_by_name(&name).await? {
        Some(user) => user,
        None => {
            let new = NewUser {
                name: name.clone(),
                password_hash: None,
                admin: true,
                approved: true,
            };
            store.create_user(&new, now).await?
        }
    };
    if !user.admin {
        bail!(
            "GANTRY_ADMIN_TOKEN would belong to {}, who is not an admin (fix: make them one with the API, or set GANTRY_ADMIN_USER)",
            name.as_str()
        );
    }
    let new = NewToken {
        scopes: Scopes::new([Scope::Admin]),
        note: "GANTRY_ADMIN_TOKEN".to_owned(),
        expires: None,
        binding: TokenBinding::Api,
    };
    let created = store
        .register_token(user.id, token, &new, now)
        .await
        .context("GANTRY_ADMIN_TOKEN")?;
    tracing::info!(user = %name.as_str(), new = created, "admin API token from GANTRY_ADMIN_TOKEN registered");
    Ok(())
}

/// The name `GANTRY_ADMIN_USER` gives the admin account (default `admin`).
fn admin_user_name(config: &HubConfig) -> anyhow::Result<UserName> {
    let raw_name = std::env::var("GANTRY_ADMIN_USER").unwrap_or_else(|_| "admin".to_owned());
    UserName::parse(&raw_name, config.name_policy)
        .with_context(|| format!("GANTRY_ADMIN_USER {raw_name:?} is not a valid user name"))
}

/// The account no OpenID login may reach by its name: `GANTRY_ADMIN_USER`'s, whenever
/// `GANTRY_ADMIN_TOKEN` or `GANTRY_ADMIN_USER` is set (the account holds the operator's
/// token, or will).
fn reserved_admin(config: &HubConfig) -> anyhow::Result<Option<UserName>> {
    let set = |key: &str| std::env::var(key).is_ok_and(|value| !value.trim().is_empty());
    if set("GANTRY_ADMIN_TOKEN") || set("GANTRY_ADMIN_USER") {
        admin_user_name(config).map(Some)
    } else {
        Ok(None)
    }
}

/// A database URL without its password, for messages.
fn redact_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut parsed) if parsed.password().is_some() => {
            let _ = parsed.set_password(Some("***"));
            parsed.to_string()
        }
        _ => url.to_owned(),
    }
}

async fn discover(config: &HubConfig) -> anyhow::Result<Vec<Provider>> {
    let mut providers = Vec::new();
    for entry in &config.oidc {
        let provider = OidcProvider::discover(entry.config.clone())
            .await
            .with_context(|| {
                format!(
                    "auth.oidc.{}: cannot read the provider's metadata from {} (is the issuer URL right and reachable?)",
                    entry.id, entry.config.issuer_url
                )
            })?;
        tracing::info!(provider = %entry.id, issuer = %entry.config.issuer_url, "OpenID provider discovered");
        providers.push(Provider {
            id: entry.id.clone(),
            display_name: entry.display_name.clone(),
            provider,
        });
    }
    Ok(providers)
}

fn proxy_config(config: &HubConfig) -> ProxyConfig {
    let proxy = &config.proxy;
    ProxyConfig {
        trusted_downstreams: config.trusted_downstream.clone(),
        tls: proxy.tls_cert.is_some(),
        max_header_bytes: proxy.max_header_bytes,
        header_timeout: Duration::from_secs(proxy.header_timeout_secs),
        max_connections: proxy.max_connections,
        upstream_connect_timeout: Duration::from_secs(proxy.upstream_connect_timeout_secs),
        upstream_response_timeout: Duration::from_secs(proxy.proxy_timeout_secs),
        ..ProxyConfig::default()
    }
}

async fn serve_hub(config: HubConfig) -> anyhow::Result<()> {
    let store = open_store(&config).await?;
    register_admin_token(&store, &config).await?;
    let providers = discover(&config).await?;
    let tls = match (&config.proxy.tls_key, &config.proxy.tls_cert) {
        (Some(key), Some(cert)) => Some(tls_acceptor(key, cert)?),
        _ => None,
    };
    let proxy_config = proxy_config(&config);
    let settings = ServeSettings {
        max_header_bytes: proxy_config.max_header_bytes,
        header_timeout: proxy_config.header_timeout,
        shutdown_grace: proxy_config.shutdown_grace,
        max_connections: proxy_config.max_connections,
        tls,
    };
    let table = Arc::new(RouteTable::new(false));
    let proxy_metrics = Metrics::new();
    let bind = config.hub.bind;
    let public = config.public_origin.as_str().to_owned();
    let local_enabled = config.local.enabled;
    let backend = start_backend(&config, &table).await?;
    if backend.is_some() && config.spawner.mesos.is_none() {
        warn_if_embedded_image_missing(&config).await;
    }
    let cull_interval = Duration::from_secs(config.hub.cull_interval_secs);
    let poll_interval = Duration::from_secs(config.hub.poll_interval_secs);
    let reserved = reserved_admin(&config)?;
    let mut hub = Hub::new(config, store.clone(), providers)
        .context("cannot set up the hub")?
        .with_proxy_metrics(proxy_metrics.clone());
    if let Some(name) = reserved {
        hub = hub.with_reserved_admin(name);
    }
    let mut servers_listener = None;
    let mut mesos = None;
    if let Some(backend) = backend {
        // The servers reach the hub's API on a listener of their own (under Docker their
        // network's gateway), not on the public bind.
        let addr = backend.api_bind;
        let listener = TcpListener::bind(addr).await.with_context(|| {
            format!(
                "cannot listen on {addr} for the servers' hub API ({}): is the port in use, \
                 and is the address this machine's?",
                backend.api_bind_key
            )
        })?;
        tracing::info!(
            "servers reach the hub API at {} (listening on {addr})",
            backend.api_url
        );
        hub = hub.with_servers(backend.servers, backend.api_url);
        servers_listener = Some(listener);
        mesos = backend.mesos;
    }
    let hub = Arc::new(hub);
    // The data plane: the hub is the gate of every owned route (the users' servers), and
    // gantry's cookies never reach an upstream.
    let proxy = Arc::new(
        Proxy::new(Arc::clone(&table), proxy_config, proxy_metrics)
            .with_gate(Arc::clone(&hub) as Arc<dyn gantry_proxy::Gate>)
            .with_private_cookies(PrivateCookies::new(cookies::PRIVATE_PREFIX)),
    );
    let listener = TcpListener::bind(bind)
        .await
        .with_context(|| format!("cannot listen on {bind} (hub.bind): is the port in use?"))?;
    tracing::info!(
        "gantry is up: open {public} (listening on {})",
        listener.local_addr()?
    );
    if local_enabled
        && store
            .list_users()
            .await
            .map(|u| u.is_empty())
            .unwrap_or(false)
    {
        tracing::warn!(
            "no users yet: create the first admin with `gantry user add NAME --admin` (same --config)"
        );
    }

    let (stop_tx, mut stop_rx) = watch::channel(false);
    let sweeper = tokio::spawn(sweep(Arc::clone(&hub), stop_rx.clone()));
    let culler = tokio::spawn(cull(Arc::clone(&hub), cull_interval, stop_rx.clone()));
    let reconciler = tokio::spawn(reconcile(Arc::clone(&hub), poll_interval, stop_rx.clone()));
    let refresher = tokio::spawn(refresh_callers(Arc::clone(&hub), stop_rx.clone()));
    // Kept to write the users' last activity once the last request is answered.
    let activity = Arc::clone(&hub);
    let front = Arc::new(FrontTier::new(hub, proxy));
    let internal = servers_listener.map(|listener| {
        let front = Arc::clone(&front);
        let mut stop = stop_rx.clone();
        let settings = ServeSettings {
            tls: None,
            ..settings.clone()
        };
        tokio::spawn(async move {
            serve(listener, front, settings, async move {
                let _ = stop.wait_for(|stopping| *stopping).await;
            })
            .await;
        })
    });
    let server = tokio::spawn(async move {
        serve(listener, front, settings, async move {
            let _ = stop_rx.wait_for(|stopping| *stopping).await;
        })
        .await;
    });
    shutdown_signal().await?;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = server.await;
    if let Some(internal) = internal {
        let _ = internal.await;
    }
    let _ = sweeper.await;
    let _ = culler.await;
    let _ = reconciler.await;
    let _ = refresher.await;
    activity.flush_activity().await;
    if let Some(mesos) = mesos {
        mesos.close();
        tracing::info!(
            "unsubscribed from the Mesos master: the notebooks keep running for \
             mesos.failover_timeout, for the next start to adopt"
        );
    }
    store.close().await;
    tracing::info!("stopped");
    Ok(())
}

/// The backend `gantry up` starts servers on, and where the servers reach the hub's API.
struct Backend {
    servers: Arc<Servers>,
    /// Where gantry listens for the servers' API requests.
    api_bind: std::net::SocketAddr,
    /// The key that set `api_bind`, for messages.
    api_bind_key: &'static str,
    /// The servers' `JUPYTERHUB_API_URL`.
    api_url: String,
    /// The Mesos framework, closed at shutdown.
    mesos: Option<Arc<MesosSpawner>>,
}

/// Where the Mesos framework id and task placements are kept, in `hub.data_dir`.
const MESOS_STATE_FILE: &str = "mesos-framework.json";

/// Connects the backend when profiles are configured (Mesos when the file has a `[mesos]`
/// table, else Docker), recovers what runs from a previous start, and routes it. `None`
/// without profiles: gantry then serves logins only.
async fn start_backend(
    config: &HubConfig,
    table: &Arc<RouteTable>,
) -> anyhow::Result<Option<Backend>> {
    if config.spawner.profiles.is_empty() {
        tracing::warn!(
            "no profiles configured: users can log in but not start servers (add [profiles.<id>] to gantry.toml)"
        );
        return Ok(None);
    }
    let mut validated = config
        .spawner
        .validate()
        .map_err(|errors| anyhow::anyhow!("the spawner's configuration is not valid:\n{errors}"))?;
    let started = if validated.mesos.is_some() {
        start_mesos(config, &mut validated).await?
    } else {
        start_docker(config, &validated).await?
    };
    let servers = Arc::new(
        Servers::new(
            started.spawner,
            validated.profiles,
            Arc::clone(table),
            config.hub.max_concurrent_spawns,
            std::collections::BTreeMap::new(),
        )
        .with_limits(config.hub.user_limits()),
    );
    let adopted = servers
        .adopt()
        .await
        .context("cannot list running servers")?;
    tracing::info!(routed = adopted, "running servers routed");
    Ok(Some(Backend {
        servers,
        api_bind: started.api_bind,
        api_bind_key: started.api_bind_key,
        api_url: started.api_url,
        mesos: started.mesos,
    }))
}

/// A started backend before the hub's servers wrap it.
struct Started {
    spawner: Arc<dyn Spawner>,
    api_bind: std::net::SocketAddr,
    api_bind_key: &'static str,
    api_url: String,
    mesos: Option<Arc<MesosSpawner>>,
}

/// The Docker engine: servers on a gantry-owned network, which reach the hub's API on the
/// network's gateway unless `hub.servers_api_bind` says otherwise.
async fn start_docker(config: &HubConfig, validated: &ValidatedConfig) -> anyhow::Result<Started> {
    // DOCKER_HOST (unix://, tcp:// with DOCKER_TLS_VERIFY and DOCKER_CERT_PATH) as the docker
    // CLI reads it; without it, the local socket.
    let docker = bollard::Docker::connect_with_defaults()
        .context("cannot connect to the Docker engine (is /var/run/docker.sock there, or DOCKER_HOST right?)")?
        .negotiate_version()
        .await
        .context("the Docker engine does not answer (is it running, and may gantry use its socket?)")?;
    let spawner = DockerSpawner::new(docker, validated, DockerOptions::default());
    spawner
        .prepare()
        .await
        .context("cannot prepare the Docker network for servers")?;
    let network = &config.spawner.docker.network;
    let gateway = spawner
        .docker()
        .inspect_network(network, None)
        .await
        .with_context(|| format!("cannot inspect the Docker network {network}"))?
        .ipam
        .and_then(|ipam| ipam.config)
        .unwrap_or_default()
        .into_iter()
        .find_map(|c| c.gateway.and_then(|g| g.parse::<std::net::IpAddr>().ok()))
        .with_context(|| format!("the Docker network {network} has no gateway address for servers to reach the hub by"))?;
    let recovery = spawner
        .recover()
        .await
        .context("cannot list this gantry's containers on the Docker engine")?;
    tracing::info!(
        backend = "docker",
        network = %network,
        adopted = recovery.adopted.len(),
        removed = recovery.removed.len(),
        "Docker backend ready"
    );
    let (api_bind, api_bind_key) = match config.hub.servers_api_bind {
        Some(bind) => (bind, "hub.servers_api_bind"),
        None => (
            std::net::SocketAddr::new(gateway, config.hub.servers_api_port),
            "hub.servers_api_port",
        ),
    };
    // An unspecified bind address is no address to give the servers: they use the gateway.
    let api_url = config.hub.servers_api_url.clone().unwrap_or_else(|| {
        let host = if api_bind.ip().is_unspecified() {
            std::net::SocketAddr::new(gateway, api_bind.port())
        } else {
            api_bind
        };
        format!("http://{host}/hub/api")
    });
    Ok(Started {
        spawner: Arc::new(spawner),
        api_bind,
        api_bind_key,
        api_url,
        mesos: None,
    })
}

/// The Mesos master: gantry subscribes as a framework whose id is kept in `hub.data_dir`,
/// re-subscribes with it after a restart (the master kept the notebooks running) and
/// reconciles before the servers are adopted. The servers run on the agents, so they reach
/// the hub's API at `hub.servers_api_url`, served on `hub.servers_api_bind`.
async fn start_mesos(
    config: &HubConfig,
    validated: &mut ValidatedConfig,
) -> anyhow::Result<Started> {
    read_mesos_secret(validated)?;
    let Some(settings) = validated.mesos.clone() else {
        bail!("start_mesos needs a [mesos] table");
    };
    let Some(api_url) = config.hub.servers_api_url.clone() else {
        // The hub's check refuses this; kept as a message rather than a panic.
        bail!(
            "hub.servers_api_url: is required with [mesos] (fix: set it to the hub API's URL as \
             the agents reach this gantry, e.g. \"http://gantry.example.org:8081/hub/api\")"
        );
    };
    let data_dir = &config.hub.data_dir;
    std::fs::create_dir_all(data_dir).with_context(|| {
        format!(
            "cannot create the data folder {} (hub.data_dir), where the Mesos framework id is kept",
            data_dir.display()
        )
    })?;
    let state = data_dir.join(MESOS_STATE_FILE);
    let masters: Vec<&str> = settings.masters.iter().map(url::Url::as_str).collect();
    let spawner = Arc::new(
        MesosSpawner::new(validated, Arc::new(FileStore::new(&state))).with_context(|| {
            format!(
                "cannot set up the Mesos framework (its state is in {})",
                state.display()
            )
        })?,
    );
    let saved_id = spawner.framework_id();
    tracing::info!(
        backend = "mesos",
        masters = ?masters,
        framework_id = saved_id.as_deref().unwrap_or("(new)"),
        state = %state.display(),
        "Mesos backend: subscribing"
    );
    spawner
        .wait_subscribed(settings.call_timeout)
        .await
        .with_context(|| {
            format!(
                "cannot subscribe to a Mesos master within {:?} (mesos.call_timeout): is one of \
                 mesos.masters running and reachable, and are the principal and secret right?",
                settings.call_timeout
            )
        })?;
    let (framework_id, leader) = (spawner.framework_id(), spawner.leader());
    tracing::info!(
        backend = "mesos",
        framework_id = framework_id.as_deref().unwrap_or_default(),
        leader = leader.as_deref().unwrap_or_default(),
        "Mesos backend ready: subscribed and reconciled"
    );
    let api_bind = config
        .hub
        .servers_api_bind
        .unwrap_or_else(|| std::net::SocketAddr::from(([0, 0, 0, 0], config.hub.servers_api_port)));
    let api_bind_key = if config.hub.servers_api_bind.is_some() {
        "hub.servers_api_bind"
    } else {
        "hub.servers_api_port"
    };
    Ok(Started {
        spawner: Arc::clone(&spawner) as Arc<dyn Spawner>,
        api_bind,
        api_bind_key,
        api_url,
        mesos: Some(spawner),
    })
}

/// Reads `mesos.secret_file`, when set, into the checked settings. The spawner library reads
/// no files (it leaves the path in `MesosSettings::unread_secret`), so the binary does, as it
/// reads the configuration file itself.
fn read_mesos_secret(validated: &mut ValidatedConfig) -> anyhow::Result<()> {
    let Some(mesos) = validated.mesos.as_mut() else {
        return Ok(());
    };
    let Some(unread) = mesos.unread_secret.clone() else {
        return Ok(());
    };
    let text = std::fs::read_to_string(&unread.path).map_err(|error| {
        anyhow::anyhow!(
            "mesos.secret_file: cannot read {}: {error} (fix: point it at a file gantry may \
             read, holding the secret of principal {:?})",
            unread.path.display(),
            unread.principal
        )
    })?;
    let secret = text.trim_end();
    if secret.is_empty() {
        bail!(
            "mesos.secret_file: {} is empty (fix: write the secret of principal {:?} into it)",
            unread.path.display(),
            unread.principal
        );
    }
    mesos.supply_secret(secret.to_owned());
    Ok(())
}

/// The reconcile loop: every second, routes of ready servers that went missing are put back;
/// every `poll` the backend is asked what runs, and dead or unknown servers are dealt with
/// (see `Hub::reconcile`).
async fn reconcile(hub: Arc<Hub>, poll: Duration, mut stop: watch::Receiver<bool>) {
    let mut routes = tokio::time::interval(Duration::from_secs(1));
    routes.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut backend = tokio::time::interval(poll);
    backend.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Startup adopted what ran a moment ago: the first poll waits a whole interval.
    backend.reset();
    loop {
        // The waits only pick the work: the stop signal's guard must not live across it.
        let poll_backend = tokio::select! {
            _ = routes.tick() => false,
            _ = backend.tick() => true,
            _ = stop.wait_for(|stopping| *stopping) => return,
        };
        if poll_backend {
            hub.reconcile().await;
        } else {
            hub.restore_routes();
        }
    }
}

/// Says, at startup, how to build the embedded default profile's image when a profile uses
/// it and the Docker host lacks it: no registry serves `gantry/notebook`, so a start would
/// otherwise fail only when a user tries it.
async fn warn_if_embedded_image_missing(config: &HubConfig) {
    let users: Vec<&str> = config
        .spawner
        .profiles
        .iter()
        .filter(|(_, profile)| profile.image == EMBEDDED_IMAGE)
        .map(|(id, _)| id.as_str())
        .collect();
    if users.is_empty() {
        return;
    }
    let Ok(docker) = bollard::Docker::connect_with_defaults() else {
        return;
    };
    match docker.inspect_image(EMBEDDED_IMAGE).await {
        Ok(_) => {}
        Err(bollard::errors::Error::DockerResponseServerError {
            status_code: 404, ..
        }) => tracing::warn!(
            profiles = ?users,
            "the image {EMBEDDED_IMAGE} is not on the Docker host, and no registry serves it: \
             build it there with `{EMBEDDED_IMAGE_BUILD}` (from a gantry checkout, a few \
             minutes; it prints its progress) before starting a server on these profiles"
        ),
        Err(error) => tracing::warn!(%error, "cannot check for the image {EMBEDDED_IMAGE}"),
    }
}

/// Checks the callers in memory against the store every `callers::REFRESH_EVERY`, so that
/// another process's logout or revocation is honoured within `callers::STALE_AFTER`.
async fn refresh_callers(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(callers::REFRESH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        hub.refresh_callers().await;
    }
}

/// Stops idle and over-age servers every `interval` (see `Hub::cull`).
async fn cull(hub: Arc<Hub>, interval: Duration, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        hub.cull().await;
    }
}

/// Every minute: forgets stale login state, brings users' activity to the store (see
/// `Hub::sweep_activity`), deletes expired sessions and tokens.
async fn sweep(hub: Arc<Hub>, mut stop: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(SWEEP_INTERVAL);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stop.wait_for(|stopping| *stopping) => return,
        }
        hub.prune();
        hub.sweep_activity().await;
        match hub.store().delete_expired(jiff::Timestamp::now()).await {
            Ok(revoked) if revoked.sessions + revoked.tokens > 0 => {
                tracing::debug!(
                    sessions = revoked.sessions,
                    tokens = revoked.tokens,
                    "expired credentials deleted"
                );
            }
            Ok(_) => {}
            Err(error) => tracing::warn!(error = %error, "cannot delete expired credentials"),
        }
    }
}
