//! The harness of gantry's end-to-end tests: it finds the `gantry` binary and the Python
//! environment the real peers run from, starts those peers as child processes that die with
//! the test, and waits for them by polling their endpoints rather than sleeping.
//!
//! The tests themselves live in the one test binary `tests/e2e`. A missing prerequisite
//! (the binary, the venv) is an error that names the fix: these tests never pass silently.
//! Everything listens on 127.0.0.1 only.

pub mod browser;
mod docker;
mod gantry;
mod jupyterhub;
pub mod mesos_sim;
mod paths;
mod process;
mod wait;

pub use docker::{BUSYBOX_IMAGE, DockerCleanup, ensure_busybox_image};
pub use gantry::{OidcMock, TestGantry, browser_client, follow_redirects, xsrf_field};
pub use jupyterhub::{HubUser, JupyterHub, TestJupyterHub};
pub use paths::{gantry_bin, repo_root, venv};
pub use process::ChildGuard;
pub use wait::{free_port, poll_until, wait_for_http};
