//! The gantry front tier: the routing reverse proxy every byte between a browser and a
//! notebook crosses, and the route API that tells it where notebooks are.
//!
//! This crate owns the data plane: the route table ([`routes`]), the path-safety check
//! ([`path`]), header rewriting ([`headers`]), forwarding with pooled upstream connections and
//! WebSocket tunnels ([`forward`] and the private `tunnel` module), error pages ([`errors`]), the upstream
//! resolver that never yields a refused address ([`resolve`]), the CHP-compatible
//! route API ([`api`]), metrics ([`metrics`]) and connection serving ([`server`]). The data plane
//! depends on neither `gantry-auth` nor `gantry-spawner` (a unit test reads the sources to keep it
//! so); [`hub`], beside it, composes all three: login, sessions and the hub's API. It also builds the `gantry` binary, the only place that reads flags or
//! the environment, binds sockets and handles signals.

pub mod api;
pub mod config;
pub mod errors;
pub mod forward;
pub mod gate;
pub mod headers;
pub mod hub;
pub mod metrics;
pub mod path;
pub mod private_cookies;
pub mod resolve;
pub mod routes;
pub mod server;
mod tunnel;

#[cfg(test)]
mod boundary;

pub use config::ProxyConfig;
pub use forward::Proxy;
pub use gate::{Access, Admission, Gate, Lease, RouteOwner};
pub use routes::{Route, RouteChange, RoutePrefix, RouteTable, Target};
