//! The Docker engine as a test peer: the tiny server image the tests start (built from the
//! host's static busybox with `docker import`, no registry), and cleanup of everything a
//! test's gantry instance created.

use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, ensure};

/// The image: `/bin/busybox` and nothing else. The same as the spawner's tests build.
pub const BUSYBOX_IMAGE: &str = "gantry-test/busybox:1";
const BUSYBOX: &str = "/bin/busybox";

/// Builds [`BUSYBOX_IMAGE`] unless the engine has it.
pub fn ensure_busybox_image() -> anyhow::Result<&'static str> {
    static BUILT: std::sync::Mutex<bool> = std::sync::Mutex::new(false);
    let mut built = BUILT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if *built {
        return Ok(BUSYBOX_IMAGE);
    }
    let present = Command::new("docker")
        .args(["image", "inspect", BUSYBOX_IMAGE])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .context("cannot run the docker CLI (is Docker installed and running?)")?
        .success();
    if !present {
        ensure!(
            Path::new(BUSYBOX).exists(),
            "{BUSYBOX} is missing: install a static busybox (apt-get install busybox-static)"
        );
        let root = tempfile::tempdir()?;
        std::fs::create_dir_all(root.path().join("bin"))?;
        std::fs::create_dir_all(root.path().join("www"))?;
        std::fs::copy(BUSYBOX, root.path().join("bin/busybox"))?;
        std::fs::write(root.path().join("www/index.html"), "gantry test\n")?;
        let tar = Command::new("tar")
            .arg("-C")
            .arg(root.path())
            .args(["-c", "."])
            .stdout(Stdio::piped())
            .spawn()?;
        let status = Command::new("docker")
            .args(["import", "-", BUSYBOX_IMAGE])
            .stdin(tar.stdout.context("tar output")?)
            .stdout(Stdio::null())
            .status()?;
        ensure!(status.success(), "docker import of {BUSYBOX_IMAGE} failed");
    }
    *built = true;
    Ok(BUSYBOX_IMAGE)
}

/// Removes every container and network labelled with a gantry instance when dropped, pass
/// or fail.
#[derive(Debug)]
pub struct DockerCleanup {
    instance: String,
}

impl DockerCleanup {
    /// Cleans up after the gantry instance `instance` (its `[docker] instance`).
    pub fn new(instance: &str) -> Self {
        Self {
            instance: instance.to_owned(),
        }
    }

    fn ids(&self, kind: &str) -> Vec<String> {
        let filter = format!("label=gantry.instance={}", self.instance);
        let mut command = Command::new("docker");
        if kind == "container" {
            command.args(["ps", "-aq", "--filter", &filter]);
        } else {
            command.args(["network", "ls", "-q", "--filter", &filter]);
        }
        command
            .output()
            .map(|out| {
                String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// How many containers of the instance exist now.
    pub fn containers(&self) -> usize {
        self.ids("container").len()
    }
}

impl Drop for DockerCleanup {
    fn drop(&mut self) {
        let containers = self.ids("container");
        if !containers.is_empty() {
            let _ = Command::new("docker")
                .args(["rm", "-f"])
                .args(&containers)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
        let networks = self.ids("network");
        if !networks.is_empty() {
            let _ = Command::new("docker")
                .args(["network", "rm"])
                .args(&networks)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}
