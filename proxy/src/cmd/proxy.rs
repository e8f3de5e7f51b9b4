//! `gantry proxy`: the data plane alone, configured with configurable-http-proxy's flags.

use std::io::IsTerminal;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use gantry_proxy::metrics::Metrics;
use gantry_proxy::server::serve_front_tier;
use gantry_proxy::{ProxyConfig, Route, RouteChange, RoutePrefix, RouteTable, Target};
use ipnet::IpNet;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing_subscriber::EnvFilter;

/// Flags of `gantry proxy`. Names and defaults follow configurable-http-proxy where it has
/// the same setting; durations are in milliseconds, as CHP's are.
#[derive(Debug, Args)]
pub(crate) struct ProxyArgs {
    /// Address the proxy listens on for clients; empty means every interface (CHP's default).
    #[arg(long, default_value = "")]
    ip: String,
    /// Port the proxy listens on for clients; 0 picks a free one.
    #[arg(long, default_value_t = 8000)]
    port: u16,
    /// Address of the route API listener.
    #[arg(long, default_value = "127.0.0.1")]
    api_ip: String,
    /// Port of the route API listener [default: --port + 1].
    #[arg(long)]
    api_port: Option<u16>,
    /// Upstream for requests no route matches, stored as the route `/`.
    #[arg(long, value_name = "URL")]
    default_target: Option<String>,
    /// Base URL asked for error pages, as `<URL>/<code>?url=<path>` (JupyterHub passes its
    /// `/hub/error`). Without it, or when it fails, gantry answers with its own small page.
    #[arg(long, value_name = "URL")]
    error_target: Option<String>,
    /// Log level: error, warn, info, debug or trace. RUST_LOG, when set, takes precedence.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Route on the request's host first: route keys are `/<host>/<path>`, as in CHP.
    #[arg(long)]
    host_routing: bool,
    /// PEM private key for serving clients over TLS (with --ssl-cert).
    #[arg(long, value_name = "FILE", requires = "ssl_cert")]
    ssl_key: Option<PathBuf>,
    /// PEM certificate chain for serving clients over TLS (with --ssl-key).
    #[arg(long, value_name = "FILE", requires = "ssl_key")]
    ssl_cert: Option<PathBuf>,
    /// A client address or network (CIDR) whose X-Forwarded-* headers are trusted and
    /// extended rather than replaced: the load balancer in front of gantry. Repeatable.
    #[arg(long = "trusted-downstream", value_name = "IP_OR_CIDR")]
    trusted_downstreams: Vec<String>,
    /// Milliseconds to wait for an upstream's response headers before answering 504.
    #[arg(long, value_name = "MS", default_value_t = 300_000)]
    proxy_timeout: u64,
    /// Milliseconds to wait for a TCP connection to an upstream before answering 503.
    #[arg(long, value_name = "MS", default_value_t = 5_000)]
    upstream_connect_timeout: u64,
    /// Milliseconds a client connection may take from being ready for a request to having
    /// sent its whole request head. This one timer bounds keep-alive idle time and slow header
    /// senders alike (hyper starts it when the connection turns idle).
    #[arg(
        long,
        alias = "keep-alive-timeout",
        value_name = "MS",
        default_value_t = 30_000
    )]
    header_timeout: u64,
    /// Largest request line plus headers accepted, in bytes; larger requests get 431.
    #[arg(long, value_name = "BYTES", default_value_t = 65_536)]
    max_header_size: usize,
    /// Most connections open at once on each listener, WebSockets included. Past it gantry
    /// stops accepting: new connections wait in the kernel's listen backlog until one closes.
    #[arg(
        long,
        value_name = "N",
        default_value_t = gantry_proxy::server::DEFAULT_MAX_CONNECTIONS,
        value_parser = at_least_one
    )]
    max_connections: usize,
    /// Milliseconds a graceful shutdown (SIGTERM, SIGINT) waits for in-flight requests.
    #[arg(long, value_name = "MS", default_value_t = 30_000)]
    shutdown_timeout: u64,
    /// Worker threads [default: one per CPU].
    #[arg(long)]
    threads: Option<usize>,
    /// Token for the route API; JupyterHub sets it in the environment.
    #[arg(long, env = "CONFIGPROXY_AUTH_TOKEN", hide_env_values = true)]
    auth_token: Option<String>,
}

pub(crate) fn run(args: ProxyArgs) -> anyhow::Result<()> {
    let level: tracing::Level = args.log_level.parse().map_err(|_| {
        anyhow::anyhow!(
            "--log-level {:?} is not a log level (try info or debug)",
            args.log_level
        )
    })?;
    // --log-level is gantry's own verbosity; libraries stay at warn unless RUST_LOG says more.
    let filter = EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("warn,gantry={level},gantry_proxy={level}")));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .init();

    runtime(args.threads)?.block_on(serve_proxy(args))
}

/// The async runtime for `threads` worker threads (`--threads`; `None`: one per CPU). One
/// thread means one event loop, like one nginx worker: the current-thread scheduler spares
/// the work-stealing machinery a single worker cannot use. Blocking work (password hashing,
/// SQLite) runs on tokio's blocking pool either way.
pub(crate) fn runtime(threads: Option<usize>) -> anyhow::Result<tokio::runtime::Runtime> {
    let mut runtime = match threads {
        Some(0) => bail!("--threads must be at least 1"),
        Some(1) => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            builder.worker_threads(threads);
            builder
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

async fn serve_proxy(args: ProxyArgs) -> anyhow::Result<()> {
    let token = match args.auth_token.as_deref().map(str::trim) {
        Some(token) if !token.is_empty() => token.to_owned(),
        _ => bail!(
            "no route API token: set CONFIGPROXY_AUTH_TOKEN (JupyterHub does this) or pass --auth-token; \
             gantry never serves the route API unauthenticated"
        ),
    };
    let config = ProxyConfig {
        host_routing: args.host_routing,
        default_target: parse_target("--default-target", args.default_target.as_deref())?,
        error_target: parse_target("--error-target", args.error_target.as_deref())?,
        trusted_downstreams: args
            .trusted_downstreams
            .iter()
            .map(|text| parse_net(text))
            .collect::<anyhow::Result<_>>()?,
        tls: args.ssl_key.is_some(),
        max_header_bytes: args.max_header_size,
        header_timeout: Duration::from_millis(args.header_timeout),
        max_connections: args.max_connections,
        upstream_connect_timeout: Duration::from_millis(args.upstream_connect_timeout),
        upstream_response_timeout: Duration::from_millis(args.proxy_timeout),
        shutdown_grace: Duration::from_millis(args.shutdown_timeout),
        ..ProxyConfig::default()
    };
    let tls = match (&args.ssl_key, &args.ssl_cert) {
        (Some(key), Some(cert)) => Some(tls_acceptor(key, cert)?),
        _ => None,
    };

    let table = Arc::new(RouteTable::new(config.host_routing));
    if let Some(target) = &config.default_target {
        let root = RoutePrefix::parse("/", config.host_routing).context("the root route")?;
        table.apply(RouteChange::Upsert(Route::new(root, target.clone(), None)));
    }
    let metrics = Metrics::new();

    let proxy_addr = socket_addr(&args.ip, args.port, "--ip")?;
    let api_port = args.api_port.unwrap_or_else(|| args.port.saturating_add(1));
    let api_addr = socket_addr(&args.api_ip, api_port, "--api-ip")?;
    let proxy_listener = TcpListener::bind(proxy_addr).await.with_context(|| {
        format!("cannot listen on {proxy_addr} (--ip/--port): is the port in use?")
    })?;
    let api_listener = TcpListener::bind(api_addr).await.with_context(|| {
        format!("cannot listen on {api_addr} (--api-ip/--api-port): is the port in use?")
    })?;
    let scheme = if tls.is_some() { "https" } else { "http" };
    tracing::info!(
        "gantry proxy listening on {scheme}://{}, route API on http://{}",
        proxy_listener.local_addr()?,
        api_listener.local_addr()?
    );

    let (stop_tx, stop_rx) = watch::channel(false);
    let front = tokio::spawn(serve_front_tier(
        proxy_listener,
        api_listener,
        table,
        config,
        token,
        tls,
        metrics,
        stop_rx,
    ));
    shutdown_signal().await?;
    tracing::info!("shutting down: draining in-flight requests");
    let _ = stop_tx.send(true);
    let _ = front.await;
    tracing::info!("stopped");
    Ok(())
}

/// A count that must be at least 1 (`--max-connections`).
fn at_least_one(text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(0) => Err("must be at least 1".to_owned()),
        Ok(n) => Ok(n),
        Err(error) => Err(format!("{text:?} is not a count: {error}")),
    }
}

fn parse_target(flag: &str, text: Option<&str>) -> anyhow::Result<Option<Target>> {
    text.map(|text| Target::parse(text).with_context(|| flag.to_owned()))
        .transpose()
}

fn parse_net(text: &str) -> anyhow::Result<IpNet> {
    text.parse::<IpNet>()
        .or_else(|_| text.parse::<IpAddr>().map(IpNet::from))
        .map_err(|_| {
            anyhow::anyhow!("--trusted-downstream {text:?} is not an IP address or CIDR network")
        })
}

fn socket_addr(ip: &str, port: u16, flag: &str) -> anyhow::Result<SocketAddr> {
    let ip = match ip.trim() {
        "" | "*" => IpAddr::from([0, 0, 0, 0]),
        "localhost" => IpAddr::from([127, 0, 0, 1]),
        other => other
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .with_context(|| format!("{flag} {other:?} is not an IP address"))?,
    };
    Ok(SocketAddr::new(ip, port))
}

pub(super) fn tls_acceptor(
    key: &PathBuf,
    cert: &PathBuf,
) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(Iterator::collect::<Result<Vec<_>, _>>)
        .with_context(|| {
            format!(
                "--ssl-cert {}: cannot read a PEM certificate chain",
                cert.display()
            )
        })?;
    let key = PrivateKeyDer::from_pem_file(key)
        .with_context(|| format!("--ssl-key {}: cannot read a PEM private key", key.display()))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .context("--ssl-key does not match --ssl-cert, or the key type is unsupported")?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

pub(super) async fn shutdown_signal() -> anyhow::Result<()> {
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("cannot listen for SIGTERM")?;
    tokio::select! {
        result = tokio::signal::ctrl_c() => result.context("cannot listen for SIGINT")?,
        _ = terminate.recv() => {}
    }
    Ok(())
}
