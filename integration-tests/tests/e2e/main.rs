//! End-to-end tests: the `gantry` binary against real peers. Harness in `gantry-integration-tests`.
//!
//! Prerequisites, which a run without them reports as failures (never as passes): the Python
//! venv from `integration-tests/python-env.sh`, and the `gantry` binary (`GANTRY_BIN`, else built
//! on the spot). `.ci/test` provides both.

mod activity;
mod admin;
mod caps;
mod cli;
mod gate;
mod gpu_pages;
mod hardening;
mod identities;
mod identity;
mod journey;
mod jupyterhub;
mod lifecycle;
mod mesos;
mod names;
mod notebook;
mod origins;
mod servers;
mod singleuser;
mod spawn_requests;
