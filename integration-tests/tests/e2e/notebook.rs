//! The local notebook image (`integration-tests/images/notebook/build.sh`) and the browser
//! harness, proven together: real JupyterLab in a container built without any registry, driven
//! by headless Chromium, runs a cell in a real kernel over its WebSocket. Also: the image runs
//! as an arbitrary UID the way gantry starts it, and as root dropping to NB_USER.
//!
//! Prerequisites, reported as failures when missing: a running Docker engine; root, Debian's
//! apt mirror and PyPI to build the image the first time (or `GANTRY_NOTEBOOK_IMAGE` naming an
//! image built already); `chromium` and `chromedriver` (`.ci/browser.sh`).

use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::Duration;

use anyhow::{Context, bail, ensure};
use gantry_integration_tests::browser::Browser;
use gantry_integration_tests::{free_port, repo_root, wait_for_http};
use tokio::time::Instant;

/// How long JupyterLab gets to answer after its container starts.
const SERVER_START_TIMEOUT: Duration = Duration::from_secs(90);

/// The notebook image to test: `GANTRY_NOTEBOOK_IMAGE` when set, else the one `build.sh`
/// builds (or finds built) for the current inputs. Built once per test run; a build failure is
/// every caller's failure. Other end-to-end tests (the hub's browser journey) use it too.
pub(crate) fn notebook_image() -> anyhow::Result<String> {
    static IMAGE: OnceLock<Result<String, String>> = OnceLock::new();
    IMAGE
        .get_or_init(|| build_image().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn build_image() -> anyhow::Result<String> {
    if let Ok(image) = std::env::var("GANTRY_NOTEBOOK_IMAGE") {
        docker(&["image", "inspect", "--format", "{{.Id}}", &image])
            .with_context(|| format!("GANTRY_NOTEBOOK_IMAGE={image} is not a local image"))?;
        return Ok(image);
    }
    let script = repo_root().join("integration-tests/images/notebook/build.sh");
    let output = Command::new("bash")
        .arg(&script)
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("cannot run {}", script.display()))?;
    let progress = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        bail!(
            "{} failed ({}); it said:\n{progress}",
            script.display(),
            output.status
        );
    }
    // The progress goes to the test's output, shown when a test fails.
    eprint!("{progress}");
    let tag = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    ensure!(
        tag.starts_with("gantry/notebook:"),
        "build.sh printed {tag:?}, not an image tag"
    );
    Ok(tag)
}

/// Runs `docker ARGS` and returns its standard output; fails with its standard error.
fn docker(args: &[&str]) -> anyhow::Result<String> {
    let output = Command::new("docker")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .context("cannot run docker: these tests need the Docker CLI and a running engine")?;
    if !output.status.success() {
        bail!(
            "docker {} failed ({}): {}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

/// A random token: the kernel's UUID source, no extra crate.
fn random_token() -> anyhow::Result<String> {
    Ok(std::fs::read_to_string("/proc/sys/kernel/random/uuid")
        .context("cannot read a random UUID from the kernel")?
        .trim()
        .replace('-', ""))
}

/// A detached container, removed (with `docker rm -f`) when dropped; its log is printed when
/// it is dropped during a panic or by [`Container::print_log`].
struct Container {
    id: String,
}

impl Container {
    /// `docker run --detach` with `args` before the image and `command` after it.
    fn run(args: &[&str], image: &str, command: &[&str]) -> anyhow::Result<Self> {
        let mut all = vec!["run", "--detach", "--label", "io.gantry.test=e2e-notebook"];
        all.extend_from_slice(args);
        all.push(image);
        all.extend_from_slice(command);
        let id = docker(&all)?.trim().to_owned();
        Ok(Self { id })
    }

    fn ensure_running(&self) -> anyhow::Result<()> {
        let state = docker(&[
            "inspect",
            "--format",
            "{{.State.Status}} {{.State.ExitCode}}",
            &self.id,
        ])?;
        if !state.starts_with("running") {
            bail!(
                "the notebook container stopped ({}); its log:\n{}",
                state.trim(),
                self.log()
            );
        }
        Ok(())
    }

    fn log(&self) -> String {
        match Command::new("docker")
            .args(["logs", &self.id])
            .stdin(Stdio::null())
            .output()
        {
            Ok(output) => format!(
                "{}{}",
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ),
            Err(e) => format!("(cannot run docker logs: {e})"),
        }
    }

    fn print_log(&self) {
        eprintln!(
            "----- notebook container {} log -----\n{}\n----- end of container log -----",
            &self.id[..12.min(self.id.len())],
            self.log()
        );
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            self.print_log();
        }
        let _ = docker(&["rm", "--force", "--volumes", &self.id]);
    }
}

/// Runs a one-off command in the image (`docker run --rm`) and returns its output, stdout and
/// stderr together; fails when it exits non-zero.
fn run_once(args: &[&str], image: &str, command: &[&str]) -> anyhow::Result<String> {
    let mut all = vec!["run", "--rm", "--label", "io.gantry.test=e2e-notebook"];
    all.extend_from_slice(args);
    all.push(image);
    all.extend_from_slice(command);
    let output = Command::new("docker")
        .args(&all)
        .stdin(Stdio::null())
        .output()
        .context("cannot run docker")?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    ensure!(
        output.status.success(),
        "docker {} failed ({}):\n{text}",
        all.join(" "),
        output.status
    );
    Ok(text)
}

/// The version python-requirements.txt pins for `package`.
fn pinned(package: &str) -> anyhow::Result<String> {
    let path = repo_root().join("integration-tests/python-requirements.txt");
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    text.lines()
        .find_map(|line| line.strip_prefix(&format!("{package}==")))
        .map(|version| version.trim().to_owned())
        .with_context(|| format!("{} pins no {package}", path.display()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jupyterlab_in_the_local_image_runs_a_cell_in_headless_chromium() -> anyhow::Result<()> {
    let image = notebook_image()?;
    let token = random_token()?;
    let port = free_port()?;
    let container = Container::run(
        &[
            "--publish",
            &format!("127.0.0.1:{port}:8888"),
            "--env",
            &format!("JUPYTER_TOKEN={token}"),
        ],
        &image,
        &[],
    )?;
    let base = format!("http://127.0.0.1:{port}");
    let outcome = async {
        // The server is up when its API answers with the token; a container that died fails
        // the wait at once, with its log.
        wait_for_http(
            &reqwest::Client::new(),
            &format!("{base}/api/status?token={token}"),
            Instant::now() + SERVER_START_TIMEOUT,
            || container.ensure_running(),
        )
        .await?;
        lab_runs_a_cell(&base, &token).await
    }
    .await;
    if outcome.is_err() {
        container.print_log();
    }
    outcome
}

/// The browser part: JupyterLab's launcher, a new Python notebook, `print(6*7)` run in the
/// kernel, `42` in the cell's output.
async fn lab_runs_a_cell(base: &str, token: &str) -> anyhow::Result<()> {
    let browser = Browser::start().await?;
    browser.goto(&format!("{base}/lab?token={token}")).await?;
    // JupyterLab shows a splash screen until its front end has loaded.
    browser.wait_until_gone("#jupyterlab-splash").await?;

    // The launcher's notebook card for the image's only kernel, ipykernel's python3.
    browser
        .click(".jp-LauncherCard[data-category='Notebook']")
        .await
        .context("JupyterLab's launcher shows no notebook card")?;
    // The new notebook, a file on the server, opens in the page.
    browser.wait_for_url("/lab/tree/Untitled").await?;
    // A kernel that started and connected (over its WebSocket) reports itself idle. The status
    // bar shows the session's real state; the toolbar's execution indicator starts out "idle"
    // before the session even initialises, and a cell run then is silently dropped.
    browser
        .wait_for_text("#jp-main-statusbar", "Python 3 (ipykernel) | Idle")
        .await
        .context("the new notebook's kernel never became idle")?;

    let editor = ".jp-NotebookPanel .jp-Cell.jp-mod-selected .cm-content";
    browser.click(editor).await?;
    browser.type_into(editor, "print(6*7)").await?;
    browser.shift_enter(editor).await?;

    let output = browser
        .wait_for_text(".jp-NotebookPanel .jp-OutputArea-output", "42")
        .await
        .context("the cell's output never showed 42")?;
    ensure!(
        output.trim() == "42",
        "the cell printed {output:?}, expected \"42\""
    );
    // The prompt numbers the execution: the kernel, not the page, produced the output.
    let prompt = browser
        .wait_for_text(".jp-NotebookPanel .jp-InputArea-prompt", "[1]")
        .await?;
    ensure!(prompt.contains("[1]"), "the cell's prompt is {prompt:?}");
    browser.pass().await
}

#[test]
fn the_image_runs_as_the_uid_gantry_gives_it() -> anyhow::Result<()> {
    let image = notebook_image()?;
    // gantry's default (`run_as = "user"`): the user's UID and GID, group `users` added.
    let out = run_once(
        &[
            "--user",
            "4242:4242",
            "--group-add",
            "100",
            "--env",
            "NB_UID=4242",
            "--env",
            "NB_GID=4242",
        ],
        &image,
        &[
            "bash",
            "-c",
            "echo uid=$(id -u) gid=$(id -g) user=$(whoami) home=$HOME; \
             touch \"$HOME/probe\" && echo home-writable; \
             python -c 'import pathlib, tempfile; tempfile.mkstemp(dir=pathlib.Path.home())' \
                 && echo python-home-writable; \
             jupyter --version",
        ],
    )?;
    for expected in [
        "uid=4242 gid=4242 user=jovyan home=/home/jovyan",
        "home-writable",
        "python-home-writable",
        &format!("jupyterlab       : {}", pinned("jupyterlab")?),
        &format!("ipykernel        : {}", pinned("ipykernel")?),
    ] {
        ensure!(
            out.contains(expected),
            "running as 4242:4242, the output lacks {expected:?}:\n{out}"
        );
    }

    // docker-stacks' other way: start as root with NB_USER/NB_UID/NB_GID and CHOWN_HOME; the
    // entrypoint refits jovyan and drops to the user, keeping nothing as root.
    let out = run_once(
        &[
            "--user",
            "0",
            "--env",
            "NB_USER=alice",
            "--env",
            "NB_UID=1234",
            "--env",
            "NB_GID=5678",
            "--env",
            "CHOWN_HOME=yes",
            "--workdir",
            "/home/alice",
        ],
        &image,
        &[
            "bash",
            "-c",
            "echo uid=$(id -u) gid=$(id -g) user=$(whoami) home=$HOME pwd=$PWD; \
             grep -E '^(Uid|Gid|CapEff)' /proc/self/status | tr -s '\\t' ' '; \
             touch \"$HOME/probe\" && echo home-writable; jupyter lab --version",
        ],
    )?;
    for expected in [
        "uid=1234 gid=5678 user=alice home=/home/alice pwd=/home/alice",
        "Uid: 1234 1234 1234 1234",
        "CapEff: 0000000000000000",
        "home-writable",
        &pinned("jupyterlab")?,
    ] {
        ensure!(
            out.contains(expected),
            "starting as root with NB_USER=alice, the output lacks {expected:?}:\n{out}"
        );
    }
    Ok(())
}

#[test]
fn the_image_runs_jupyterhub_singleuser_when_a_hub_token_is_set() -> anyhow::Result<()> {
    let image = notebook_image()?;
    // The image's default command, as a hub starts it: with JUPYTERHUB_API_TOKEN it must hand
    // over to jupyterhub-singleuser (asked only for its version: no hub answers here).
    let out = run_once(
        &["--env", "JUPYTERHUB_API_TOKEN=not-checked"],
        &image,
        &["start-notebook.py", "--version"],
    )?;
    ensure!(
        out.contains("executing jupyterhub-singleuser --ip=0.0.0.0 --version")
            && out.contains(&pinned("jupyterhub")?),
        "start-notebook.py did not run jupyterhub-singleuser:\n{out}"
    );
    // Without the token it is plain JupyterLab.
    let out = run_once(&[], &image, &["start-notebook.py", "--version"])?;
    ensure!(
        out.contains("executing jupyter lab --version") && out.contains(&pinned("jupyterlab")?),
        "start-notebook.py did not run jupyter lab:\n{out}"
    );
    Ok(())
}
