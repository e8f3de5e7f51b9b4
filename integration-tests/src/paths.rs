//! Where the things under test are: the repository, the `gantry` binary, the Python venv.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use anyhow::{Context, bail};

/// The repository root (the workspace directory).
pub fn repo_root() -> PathBuf {
    let manifest_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    manifest_dir.parent().unwrap_or(manifest_dir).to_path_buf()
}

/// The `gantry` binary to test.
///
/// `GANTRY_BIN`, when set, names it (`.ci/test` sets it after building the workspace); a
/// relative path is taken from the repository root, as tests run in their package's. Otherwise
/// the binary is built now with the `cargo` that builds these tests, so a plain
/// `cargo test -p gantry-integration-tests` never runs a stale binary; that build is a no-op
/// when nothing changed.
pub fn gantry_bin() -> anyhow::Result<PathBuf> {
    if let Some(path) = std::env::var_os("GANTRY_BIN") {
        let path = repo_root().join(path);
        if !path.is_file() {
            bail!(
                "GANTRY_BIN={} is not a file: build it with `cargo build -p gantry-proxy --bin gantry`",
                path.display()
            );
        }
        return Ok(path);
    }
    build_gantry()
}

/// Builds `gantry` with cargo and returns the executable cargo reports.
fn build_gantry() -> anyhow::Result<PathBuf> {
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
    let output = Command::new(cargo)
        .args([
            "build",
            "--package",
            "gantry-proxy",
            "--bin",
            "gantry",
            "--message-format=json",
        ])
        .current_dir(repo_root())
        .stdin(Stdio::null())
        .output()
        .context("cannot run cargo to build gantry; set GANTRY_BIN to a built binary instead")?;
    if !output.status.success() {
        bail!(
            "`cargo build -p gantry-proxy --bin gantry` failed ({}):\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    // Each stdout line is a JSON message; the artifact of the `gantry` target names its executable.
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|message| {
            message["reason"] == "compiler-artifact" && message["target"]["name"] == "gantry"
        })
        .find_map(|message| message["executable"].as_str().map(PathBuf::from))
        .context("cargo built gantry but reported no executable for it; set GANTRY_BIN instead")
}

/// The Python venv with JupyterHub and JupyterLab: `GANTRY_TEST_VENV`, else `<repo>/.venv`.
///
/// Fails, naming the script that makes it, when the venv or one of its commands is missing.
pub fn venv() -> anyhow::Result<PathBuf> {
    let venv = std::env::var_os("GANTRY_TEST_VENV")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".venv"));
    for command in ["python", "jupyterhub", "jupyterhub-singleuser"] {
        let path = venv.join("bin").join(command);
        if !path.is_file() {
            bail!(
                "the end-to-end tests need a Python venv with JupyterHub at {} ({} is missing): \
                 run `integration-tests/python-env.sh` (or set GANTRY_TEST_VENV to such a venv)",
                venv.display(),
                path.display()
            );
        }
    }
    Ok(venv)
}
