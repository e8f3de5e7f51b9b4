//! A real browser for the end-to-end tests: headless Chromium driven over WebDriver.
//!
//! [`Browser::start`] starts Debian's `chromedriver` on a free loopback port and, through it,
//! a headless `chromium` with a throwaway profile; both die with the [`Browser`]. The methods
//! are the few a journey needs (go to a page, fill a field, click, wait for an element, read its
//! text), each waiting for the element rather than sleeping, up to a per-browser timeout.
//!
//! A browser dropped before [`Browser::pass`] — the test returned an error or panicked — saves a
//! screenshot of the page to `<target dir>/e2e-screenshots/<test name>.png` (or to
//! `GANTRY_E2E_SCREENSHOTS`) and says where on stderr, so a failing journey in CI leaves a
//! picture of where it stopped. Missing programs are errors that name `.ci/browser.sh`, which
//! installs them: a test that needs a browser never passes without one.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, TcpStream};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, bail};
use fantoccini::elements::Element;
use fantoccini::key::Key;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};
use tempfile::TempDir;
use tokio::time::Instant;

use crate::process::ChildGuard;
use crate::wait::{free_port, wait_for_http};

/// How long the element waits ([`Browser::wait_for`] and the methods built on it) last by
/// default; [`Browser::set_timeout`] changes it.
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(60);
/// How long chromedriver gets to answer its status endpoint after it starts.
const DRIVER_START_TIMEOUT: Duration = Duration::from_secs(30);
/// How often waits look again.
const POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The window size, big enough that JupyterLab shows its side panels and toolbar.
const WINDOW_SIZE: (u32, u32) = (1280, 900);

/// A headless Chromium session; see the module docs.
#[derive(Debug)]
pub struct Browser {
    client: Client,
    /// The WebDriver session id, for the screenshot taken in `Drop` without the async client.
    session: String,
    driver_port: u16,
    driver: ChildGuard,
    name: String,
    timeout: Duration,
    passed: bool,
    // Dropped last: chromium's profile and chromedriver's log live here.
    _dir: TempDir,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium. The browser is named after the current
    /// thread, which the test harness names after the test; the name picks the screenshot's
    /// file name.
    pub async fn start() -> anyhow::Result<Self> {
        let name = std::thread::current()
            .name()
            .filter(|name| *name != "main")
            .unwrap_or("browser")
            .to_owned();
        Self::start_named(&name).await
    }

    /// Starts chromedriver and a headless Chromium named `name` (for its screenshot).
    pub async fn start_named(name: &str) -> anyhow::Result<Self> {
        let chromedriver = find_program("chromedriver")?;
        let chromium = find_program("chromium")?;
        let dir = tempfile::Builder::new()
            .prefix("gantry-browser-")
            .tempdir()
            .context("cannot create a directory for the browser profile")?;
        let profile = dir.path().join("profile");

        let driver_port = free_port()?;
        let mut command = Command::new(&chromedriver);
        command.arg(format!("--port={driver_port}"));
        let mut driver = ChildGuard::spawn(
            "chromedriver",
            command,
            &dir.path().join("chromedriver.log"),
        )?;
        let driver_url = format!("http://127.0.0.1:{driver_port}");
        let http = reqwest::Client::new();
        wait_for_http(
            &http,
            &format!("{driver_url}/status"),
            Instant::now() + DRIVER_START_TIMEOUT,
            || driver.ensure_running(),
        )
        .await
        .context("chromedriver did not start")?;

        let mut args = vec![
            "--headless=new".to_owned(),
            format!("--user-data-dir={}", profile.display()),
            format!("--window-size={},{}", WINDOW_SIZE.0, WINDOW_SIZE.1),
            // Containers and CI machines have a small /dev/shm; Chromium then uses /tmp.
            "--disable-dev-shm-usage".to_owned(),
            "--disable-gpu".to_owned(),
            "--no-first-run".to_owned(),
            "--no-default-browser-check".to_owned(),
            "--disable-extensions".to_owned(),
            "--disable-background-networking".to_owned(),
            "--disable-sync".to_owned(),
            "--password-store=basic".to_owned(),
            "--use-mock-keychain".to_owned(),
        ];
        // Chromium refuses to run as root with its sandbox on; CI runs the tests as root.
        if running_as_root() {
            args.push("--no-sandbox".to_owned());
        }
        let mut capabilities = serde_json::Map::new();
        capabilities.insert("browserName".to_owned(), json!("chrome"));
        capabilities.insert(
            "goog:chromeOptions".to_owned(),
            json!({ "binary": chromium, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities)
            .connect(&driver_url)
            .await
            .with_context(|| {
                format!(
                    "chromedriver did not start a Chromium session; its log:\n{}",
                    driver.log_text()
                )
            })?;
        let session = client
            .session_id()
            .await
            .context("cannot read the WebDriver session id")?
            .context("chromedriver reported no session id")?;
        Ok(Self {
            client,
            session,
            driver_port,
            driver,
            name: name.to_owned(),
            timeout: DEFAULT_TIMEOUT,
            passed: false,
            _dir: dir,
        })
    }

    /// Sets how long the element waits last from now on.
    pub fn set_timeout(&mut self, timeout: Duration) {
        self.timeout = timeout;
    }

    /// The fantoccini client, for what the methods here do not cover.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// Navigates to `url` and waits for the page to load.
    pub async fn goto(&self, url: &str) -> anyhow::Result<()> {
        self.client
            .goto(url)
            .await
            .with_context(|| format!("cannot open {url}"))
    }

    /// The page's current URL.
    pub async fn current_url(&self) -> anyhow::Result<String> {
        Ok(self
            .client
            .current_url()
            .await
            .context("cannot read the current URL")?
            .to_string())
    }

    /// Waits until an element matching the CSS selector `css` is on the page and displayed,
    /// and returns the first such element.
    pub async fn wait_for(&self, css: &str) -> anyhow::Result<Element> {
        let deadline = Instant::now() + self.timeout;
        loop {
            for element in
                self.client.find_all(Locator::Css(css)).await.map_err(|e| {
                    anyhow::Error::new(e).context(format!("cannot look for {css:?}"))
                })?
            {
                // An element can go away between finding it and asking about it.
                if matches!(element.is_displayed().await, Ok(true)) {
                    return Ok(element);
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no displayed element matches {css:?} after {:?} (page: {})",
                    self.timeout,
                    self.location().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the text of an element matching `css` contains `needle`, and returns that
    /// text. Elements that appear, change or are replaced meanwhile are looked at again.
    pub async fn wait_for_text(&self, css: &str, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + self.timeout;
        let mut seen = Vec::new();
        loop {
            seen.clear();
            if let Ok(elements) = self.client.find_all(Locator::Css(css)).await {
                for element in elements {
                    if let Ok(text) = element.text().await {
                        if text.contains(needle) {
                            return Ok(text);
                        }
                        seen.push(text);
                    }
                }
            }
            if Instant::now() >= deadline {
                bail!(
                    "no element matching {css:?} shows {needle:?} after {:?}; they show {seen:?} \
                     (page: {})",
                    self.timeout,
                    self.location().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until no displayed element matches `css` (a progress bar that finished, a dialog
    /// that closed).
    pub async fn wait_until_gone(&self, css: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let mut shown = false;
            for element in
                self.client.find_all(Locator::Css(css)).await.map_err(|e| {
                    anyhow::Error::new(e).context(format!("cannot look for {css:?}"))
                })?
            {
                shown |= matches!(element.is_displayed().await, Ok(true));
            }
            if !shown {
                return Ok(());
            }
            if Instant::now() >= deadline {
                bail!(
                    "{css:?} is still displayed after {:?} (page: {})",
                    self.timeout,
                    self.location().await
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits until the page's URL contains `needle` (after a redirect or a form post) and
    /// returns the URL.
    pub async fn wait_for_url(&self, needle: &str) -> anyhow::Result<String> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let url = self.current_url().await?;
            if url.contains(needle) {
                return Ok(url);
            }
            if Instant::now() >= deadline {
                bail!(
                    "the page's URL does not contain {needle:?} after {:?}; it is {url}",
                    self.timeout
                );
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        }
    }

    /// Waits for the element matching `css`, clears it and types `text` into it.
    pub async fn fill(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.wait_for(css).await?;
        element
            .clear()
            .await
            .with_context(|| format!("cannot clear {css:?}"))?;
        element
            .send_keys(text)
            .await
            .with_context(|| format!("cannot type into {css:?}"))
    }

    /// Waits for the element matching `css` and types `text` into it as it is (no clearing
    /// first; for editors such as JupyterLab's cells, which are not form fields).
    pub async fn type_into(&self, css: &str, text: &str) -> anyhow::Result<()> {
        let element = self.wait_for(css).await?;
        element
            .send_keys(text)
            .await
            .with_context(|| format!("cannot type into {css:?}"))
    }

    /// Presses Shift+Enter in the element matching `css` (runs a cell in JupyterLab).
    pub async fn shift_enter(&self, css: &str) -> anyhow::Result<()> {
        let element = self.wait_for(css).await?;
        // WebDriver keeps a modifier pressed until the end of the sequence.
        let keys: String = [char::from(Key::Shift), char::from(Key::Enter)]
            .into_iter()
            .collect();
        element
            .send_keys(&keys)
            .await
            .with_context(|| format!("cannot press Shift+Enter in {css:?}"))
    }

    /// Waits for the element matching `css` and clicks it.
    pub async fn click(&self, css: &str) -> anyhow::Result<()> {
        let element = self.wait_for(css).await?;
        element
            .click()
            .await
            .with_context(|| format!("cannot click {css:?}"))
    }

    /// Waits for the element matching `css` and returns its visible text.
    pub async fn text(&self, css: &str) -> anyhow::Result<String> {
        let element = self.wait_for(css).await?;
        element
            .text()
            .await
            .with_context(|| format!("cannot read the text of {css:?}"))
    }

    /// Runs JavaScript in the page and returns what it returns.
    pub async fn execute(&self, script: &str) -> anyhow::Result<Value> {
        self.client
            .execute(script, Vec::new())
            .await
            .context("cannot run JavaScript in the page")
    }

    /// Saves a PNG screenshot of the page to `path`, creating its folder.
    pub async fn screenshot(&self, path: &Path) -> anyhow::Result<()> {
        let png = self
            .client
            .screenshot()
            .await
            .context("cannot take a screenshot")?;
        write_file(path, &png)
    }

    /// Marks the test as passed and closes the browser: no screenshot is taken.
    pub async fn pass(mut self) -> anyhow::Result<()> {
        self.passed = true;
        self.client
            .clone()
            .close()
            .await
            .context("cannot close the browser session")
    }

    /// Where the screenshot of a failing test goes.
    pub fn screenshot_path(&self) -> PathBuf {
        screenshot_dir().join(format!("{}.png", file_name(&self.name)))
    }

    /// The current URL for error messages, or why it is unknown.
    async fn location(&self) -> String {
        match self.client.current_url().await {
            Ok(url) => url.to_string(),
            Err(e) => format!("unknown: {e}"),
        }
    }

    /// Takes the failure screenshot with a plain blocking HTTP request to chromedriver: `Drop`
    /// cannot await the async client, and may run outside any runtime.
    fn failure_screenshot(&self) -> anyhow::Result<PathBuf> {
        let body = blocking_get(
            self.driver_port,
            &format!("/session/{}/screenshot", self.session),
        )?;
        let answer: Value =
            serde_json::from_slice(&body).context("chromedriver's answer is not JSON")?;
        let encoded = answer["value"]
            .as_str()
            .with_context(|| format!("chromedriver sent no screenshot: {answer}"))?;
        let png = decode_base64(encoded).context("the screenshot is not base64")?;
        let path = self.screenshot_path();
        write_file(&path, &png)?;
        Ok(path)
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.passed {
            return;
        }
        match self.failure_screenshot() {
            Ok(path) => eprintln!(
                "browser {:?} was dropped before passing: screenshot at {}",
                self.name,
                path.display()
            ),
            Err(e) => eprintln!(
                "browser {:?} was dropped before passing; no screenshot: {e:#}",
                self.name
            ),
        }
        self.driver.print_log();
    }
}

/// Finds `program` on PATH, or says how to install it.
fn find_program(program: &str) -> anyhow::Result<PathBuf> {
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .map(|dir| dir.join(program))
        .find(|path| path.is_file())
        .with_context(|| {
            format!(
                "{program} is not on PATH: the browser tests need Debian's chromium and \
                 chromium-driver; run `.ci/browser.sh` (as root) to install them"
            )
        })
}

/// Whether this process runs as root: /proc/self belongs to the process's effective user.
fn running_as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|meta| meta.uid() == 0)
}

/// The folder for failure screenshots: `GANTRY_E2E_SCREENSHOTS`, else `e2e-screenshots` in
/// the target directory the test binary runs from (`<target>/debug/deps/e2e-…`).
pub fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("GANTRY_E2E_SCREENSHOTS") {
        return PathBuf::from(dir);
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.parent()?.to_path_buf()))
        .unwrap_or_else(|| crate::repo_root().join("target"))
        .join("e2e-screenshots")
}

/// A test name made safe as a file name: `notebook::lab_runs_a_cell` → `notebook--lab_runs_a_cell`.
fn file_name(name: &str) -> String {
    name.replace("::", "--")
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect()
}

fn write_file(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    std::fs::write(path, bytes).with_context(|| format!("cannot write {}", path.display()))
}

/// A blocking HTTP/1.1 GET to 127.0.0.1:`port`, returning the body of a 200 answer.
/// chromedriver keeps connections open, so the body ends by its length (or last chunk).
fn blocking_get(port: u16, path: &str) -> anyhow::Result<Vec<u8>> {
    let mut stream = TcpStream::connect((Ipv4Addr::LOCALHOST, port))
        .with_context(|| format!("cannot connect to chromedriver on port {port}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nAccept: application/json\r\n\
         Connection: close\r\n\r\n"
    )?;
    let mut answer = Vec::new();
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let read = stream
            .read(&mut buffer)
            .context("cannot read chromedriver's answer")?;
        answer.extend_from_slice(&buffer[..read]);
        if let Some(body) = complete_body(&answer)? {
            return body;
        }
        if read == 0 {
            bail!("chromedriver closed the connection before its answer was complete");
        }
    }
}

/// The outcome of an HTTP answer read so far: `None` while it is incomplete, else the body of a
/// 200 answer or an error naming the status.
fn complete_body(answer: &[u8]) -> anyhow::Result<Option<anyhow::Result<Vec<u8>>>> {
    let Some(split) = answer.windows(4).position(|window| window == b"\r\n\r\n") else {
        return Ok(None);
    };
    let head = String::from_utf8_lossy(&answer[..split]).to_ascii_lowercase();
    let body = &answer[split + 4..];
    let body = if head.contains("transfer-encoding: chunked") {
        if !body.ends_with(b"0\r\n\r\n") {
            return Ok(None);
        }
        dechunk(body)?
    } else {
        let length = head
            .lines()
            .find_map(|line| line.strip_prefix("content-length:"))
            .map(|value| value.trim().parse::<usize>())
            .transpose()
            .context("chromedriver sent a bad Content-Length")?
            .context("chromedriver's answer has neither a length nor chunks")?;
        match body.get(..length) {
            Some(body) => body.to_vec(),
            None => return Ok(None),
        }
    };
    if !head.starts_with("http/1.1 200") {
        return Ok(Some(Err(anyhow::anyhow!(
            "chromedriver answered {}: {}",
            head.lines().next().unwrap_or_default(),
            String::from_utf8_lossy(&body)
        ))));
    }
    Ok(Some(Ok(body)))
}

/// Decodes an HTTP/1.1 chunked body.
fn dechunk(mut body: &[u8]) -> anyhow::Result<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line_end = body
            .windows(2)
            .position(|window| window == b"\r\n")
            .context("a chunk size line has no end")?;
        let size_text = String::from_utf8_lossy(&body[..line_end]);
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        body = &body[line_end + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = body.get(..size).context("a chunk is cut short")?;
        out.extend_from_slice(chunk);
        body = body.get(size + 2..).context("a chunk has no end")?;
    }
}

/// Decodes standard base64 (the WebDriver screenshot encoding), ignoring whitespace.
fn decode_base64(text: &str) -> anyhow::Result<Vec<u8>> {
    fn value(c: u8) -> Option<u32> {
        match c {
            b'A'..=b'Z' => Some(u32::from(c - b'A')),
            b'a'..=b'z' => Some(u32::from(c - b'a') + 26),
            b'0'..=b'9' => Some(u32::from(c - b'0') + 52),
            b'+' => Some(62),
            b'/' => Some(63),
            _ => None,
        }
    }
    let mut out = Vec::with_capacity(text.len() / 4 * 3);
    let (mut bits, mut count) = (0u32, 0u32);
    for c in text
        .bytes()
        .filter(|c| !c.is_ascii_whitespace() && *c != b'=')
    {
        let v =
            value(c).with_context(|| format!("invalid base64 character {:?}", char::from(c)))?;
        bits = (bits << 6) | v;
        count += 6;
        if count >= 8 {
            count -= 8;
            // Truncation keeps the low byte, which is the one just completed.
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_decodes_the_standard_alphabet_with_and_without_padding() {
        let cases: [(&str, &[u8]); 6] = [
            ("", b""),
            ("Zg==", b"f"),
            ("Zm8=", b"fo"),
            ("Zm9v", b"foo"),
            ("Zm9vYg", b"foob"),
            ("iVBORw0K\nGgo=", b"\x89PNG\r\n\x1a\n"),
        ];
        for (text, bytes) in cases {
            assert_eq!(decode_base64(text).unwrap(), bytes, "{text:?}");
        }
        assert!(decode_base64("Zm9v!").is_err());
    }

    #[test]
    fn chunked_bodies_are_reassembled() {
        assert_eq!(
            dechunk(b"3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n").unwrap(),
            b"abcde"
        );
        assert!(dechunk(b"5\r\nab").is_err());
    }

    #[test]
    fn test_names_become_file_names() {
        assert_eq!(
            file_name("notebook::lab_runs_a_cell"),
            "notebook--lab_runs_a_cell"
        );
        assert_eq!(file_name("a b/c"), "a_b_c");
    }
}
