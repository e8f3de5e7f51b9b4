//! The data plane over real loopback sockets: the proxy and its route API on port 0 in front
//! of real HTTP and WebSocket backends.

// Harness code: a panic is a failed test with a line number, and `pub` only spans modules.
#![allow(clippy::unwrap_used, unreachable_pub)]

mod api;
mod caps;
mod failures;
mod forwarding;
mod gate;
mod shutdown;
mod support;
mod targets;
mod tls;
mod websocket;
