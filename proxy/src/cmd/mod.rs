//! Subcommands of the `gantry` binary.

mod proxy;
mod up;
mod user;

use clap::{Parser, Subcommand};

/// gantry: an authenticating proxy and notebook spawner.
#[derive(Debug, Parser)]
#[command(name = "gantry", version, about, propagate_version = true)]
pub(crate) struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the routing proxy alone, as a drop-in for configurable-http-proxy.
    ///
    /// Accepts the flags JupyterHub passes to configurable-http-proxy, so an existing hub
    /// switches with `c.ConfigurableHTTPProxy.command = ["gantry", "proxy"]`. The route API
    /// token comes from the CONFIGPROXY_AUTH_TOKEN environment variable.
    Proxy(Box<proxy::ProxyArgs>),
    /// Run gantry: the hub (login, sessions, API) and the proxy behind one listener.
    ///
    /// Reads gantry.toml (--config or GANTRY_CONFIG); without one, the embedded defaults
    /// apply: SQLite in ./gantry-data, local accounts, http://127.0.0.1:8000.
    Up(up::UpArgs),
    /// Check a configuration file and report every problem, without starting anything.
    CheckConfig(up::CheckArgs),
    /// Manage accounts in gantry's database (the first admin: `gantry user add NAME --admin`).
    User(user::UserArgs),
}

/// Runs the chosen subcommand to completion.
pub(crate) fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Proxy(args) => proxy::run(*args),
        Command::Up(args) => up::run(&args),
        Command::CheckConfig(args) => up::check(&args),
        Command::User(args) => user::run(&args),
    }
}
