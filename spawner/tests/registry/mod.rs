//! A registry test double: just enough of the OCI distribution API (`GET /v2/`,
//! `HEAD`/`GET /v2/<name>/manifests/<reference>`, `HEAD`/`GET /v2/<name>/blobs/<digest>`) for a
//! real Docker engine to pull from it, over plain HTTP on `127.0.0.1:<free port>` (the engine
//! treats `127.0.0.0/8` registries as insecure by default, so no TLS is needed).
//!
//! Images are built in memory by [`ImageBuilder`] from directories tarred and gzipped by the
//! host's `tar` and `gzip`, with Docker schema-2 manifests and sha256 digests, and pushed with
//! [`Registry::push`]. Blobs are served in chunks with a pause between them
//! ([`Options::chunk`], [`Options::pause`]), so that a pull takes long enough for the engine to
//! report progress several times per layer; [`Options::stall_blobs`] makes blob requests hang,
//! for pull timeouts. Every request is answered with `Connection: close`.

#![allow(dead_code, unreachable_pub)] // Each test file uses its own part of it.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

const MANIFEST_TYPE: &str = "application/vnd.docker.distribution.manifest.v2+json";
const CONFIG_TYPE: &str = "application/vnd.docker.container.image.v1+json";
const LAYER_TYPE: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";

/// How the double serves blobs.
#[derive(Clone, Debug)]
pub struct Options {
    /// Bytes per write of a blob body.
    pub chunk: usize,
    /// The pause after each chunk.
    pub pause: Duration,
    /// Never answer blob requests (the connection stays open, silent).
    pub stall_blobs: bool,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            chunk: 64 * 1024,
            pause: Duration::from_millis(20),
            stall_blobs: false,
        }
    }
}

/// `sha256:<hex>` of `bytes`.
pub fn digest(bytes: &[u8]) -> String {
    let hash = Sha256::digest(bytes);
    let hex: String = hash.iter().map(|b| format!("{b:02x}")).collect();
    format!("sha256:{hex}")
}

#[derive(Default)]
struct Store {
    /// `(name, tag or digest)` → manifest bytes.
    manifests: HashMap<(String, String), Vec<u8>>,
    /// digest → bytes.
    blobs: HashMap<String, Arc<Vec<u8>>>,
    /// Request lines seen, for failure messages.
    log: Vec<String>,
}

/// A running registry double; it stops when dropped.
pub struct Registry {
    addr: SocketAddr,
    store: Arc<Mutex<Store>>,
    task: JoinHandle<()>,
}

impl Drop for Registry {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// One image: its layers (gzipped tars) and its config.
pub struct Image {
    /// The manifest's bytes.
    pub manifest: Vec<u8>,
    /// `(digest, bytes)` of the config and each layer.
    pub blobs: Vec<(String, Vec<u8>)>,
    /// The gzipped size of each layer, in order.
    pub layer_sizes: Vec<usize>,
}

/// Builds an [`Image`] from directories, one layer each.
pub struct ImageBuilder {
    layers: Vec<(Vec<u8>, String)>,
    cmd: Vec<String>,
}

impl ImageBuilder {
    /// An image that runs `cmd`.
    pub fn new(cmd: &[&str]) -> Self {
        Self {
            layers: Vec::new(),
            cmd: cmd.iter().map(|s| (*s).to_owned()).collect(),
        }
    }

    /// Adds the contents of `dir` as the next layer.
    pub fn layer(mut self, dir: &Path) -> Result<Self> {
        let tar = Command::new("tar")
            .args(["--owner=0", "--group=0", "-C"])
            .arg(dir)
            .args(["-c", "."])
            .stderr(Stdio::inherit())
            .output()
            .context("running tar")?;
        ensure!(tar.status.success(), "tar failed");
        let mut gzip = Command::new("gzip")
            .args(["-c", "-n", "-1"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .context("running gzip")?;
        let mut stdin = gzip.stdin.take().context("gzip stdin")?;
        let input = tar.stdout.clone();
        let writer = std::thread::spawn(move || {
            use std::io::Write as _;
            stdin.write_all(&input)
        });
        let gz = gzip.wait_with_output()?;
        writer
            .join()
            .map_err(|_| anyhow::anyhow!("gzip writer panicked"))??;
        ensure!(gz.status.success(), "gzip failed");
        self.layers.push((gz.stdout, digest(&tar.stdout)));
        Ok(self)
    }

    /// The image.
    pub fn build(self) -> Image {
        let arch = match std::env::consts::ARCH {
            "x86_64" => "amd64",
            "aarch64" => "arm64",
            other => other,
        };
        let diff_ids: Vec<String> = self
            .layers
            .iter()
            .map(|(_, d)| format!("\"{d}\""))
            .collect();
        let cmd: Vec<String> = self.cmd.iter().map(|c| format!("{c:?}")).collect();
        let config = format!(
            "{{\"architecture\":\"{arch}\",\"os\":\"linux\",\"config\":{{\"Cmd\":[{}]}},\
             \"rootfs\":{{\"type\":\"layers\",\"diff_ids\":[{}]}}}}",
            cmd.join(","),
            diff_ids.join(",")
        )
        .into_bytes();
        let config_digest = digest(&config);
        let mut blobs = vec![(config_digest.clone(), config.clone())];
        let mut layers = Vec::new();
        let mut layer_sizes = Vec::new();
        for (gz, _) in self.layers {
            let d = digest(&gz);
            layers.push(format!(
                "{{\"mediaType\":\"{LAYER_TYPE}\",\"size\":{},\"digest\":\"{d}\"}}",
                gz.len()
            ));
            layer_sizes.push(gz.len());
            blobs.push((d, gz));
        }
        let manifest = format!(
            "{{\"schemaVersion\":2,\"mediaType\":\"{MANIFEST_TYPE}\",\"config\":{{\"mediaType\":\
             \"{CONFIG_TYPE}\",\"size\":{},\"digest\":\"{config_digest}\"}},\"layers\":[{}]}}",
            config.len(),
            layers.join(",")
        )
        .into_bytes();
        Image {
            manifest,
            blobs,
            layer_sizes,
        }
    }
}

impl Registry {
    /// Starts a registry on a free port of 127.0.0.1.
    pub async fn start(options: Options) -> Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let store = Arc::new(Mutex::new(Store::default()));
        let shared = Arc::clone(&store);
        let options = Arc::new(options);
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((stream, _)) = listener.accept().await {
                let store = Arc::clone(&shared);
                let options = Arc::clone(&options);
                connections.spawn(async move {
                    let _ = serve(stream, &store, &options).await;
                });
                // Reap finished connections so the set does not grow without bound.
                while connections.try_join_next().is_some() {}
            }
        });
        Ok(Self { addr, store, task })
    }

    /// `127.0.0.1:<port>`, the registry part of image references.
    pub fn host(&self) -> String {
        self.addr.to_string()
    }

    /// Stores `image` as `<name>:<tag>` (and by its digest); returns the manifest's digest.
    pub fn push(&self, name: &str, tag: &str, image: &Image) -> String {
        let mut store = self.store.lock().unwrap_or_else(|e| e.into_inner());
        let manifest_digest = digest(&image.manifest);
        for reference in [tag, manifest_digest.as_str()] {
            store.manifests.insert(
                (name.to_owned(), reference.to_owned()),
                image.manifest.clone(),
            );
        }
        for (d, bytes) in &image.blobs {
            store.blobs.insert(d.clone(), Arc::new(bytes.clone()));
        }
        manifest_digest
    }

    /// The request lines served so far.
    pub fn log(&self) -> Vec<String> {
        self.store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .log
            .clone()
    }
}

fn error_body(code: &str, message: &str) -> Vec<u8> {
    format!("{{\"errors\":[{{\"code\":\"{code}\",\"message\":\"{message}\",\"detail\":null}}]}}")
        .into_bytes()
}

/// Serves one request on `stream`, then closes it.
async fn serve(mut stream: TcpStream, store: &Mutex<Store>, options: &Options) -> Result<()> {
    let mut head = Vec::new();
    let mut buf = [0u8; 4096];
    while !head.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut buf).await?;
        if n == 0 {
            return Ok(());
        }
        head.extend_from_slice(&buf[..n]);
        ensure!(head.len() < 64 * 1024, "request head too long");
    }
    let text = String::from_utf8_lossy(&head).to_string();
    let request_line = text.lines().next().unwrap_or_default().to_owned();
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_owned();
    let path = parts.next().unwrap_or_default().to_owned();
    let path = path.split('?').next().unwrap_or_default().to_owned();
    store
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .log
        .push(request_line.clone());
    let head_only = method == "HEAD";

    // (status, content type, extra headers, body, throttled)
    let (status, content_type, extra, body, throttle): (
        &str,
        &str,
        Vec<String>,
        Arc<Vec<u8>>,
        bool,
    ) = if path == "/v2/" || path == "/v2" {
        (
            "200 OK",
            "application/json",
            Vec::new(),
            Arc::new(b"{}".to_vec()),
            false,
        )
    } else if let Some((name, reference)) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.rsplit_once("/manifests/"))
    {
        let found = store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .manifests
            .get(&(name.to_owned(), reference.to_owned()))
            .cloned();
        match found {
            Some(m) => (
                "200 OK",
                MANIFEST_TYPE,
                vec![format!("Docker-Content-Digest: {}", digest(&m))],
                Arc::new(m),
                false,
            ),
            None => (
                "404 Not Found",
                "application/json",
                Vec::new(),
                Arc::new(error_body("MANIFEST_UNKNOWN", "manifest unknown")),
                false,
            ),
        }
    } else if let Some((_, d)) = path
        .strip_prefix("/v2/")
        .and_then(|p| p.rsplit_once("/blobs/"))
    {
        if options.stall_blobs {
            // Hold the connection open and say nothing until the client gives up.
            let _ = stream.read(&mut buf).await;
            return Ok(());
        }
        let found = store
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .blobs
            .get(d)
            .cloned();
        match found {
            Some(b) => (
                "200 OK",
                "application/octet-stream",
                vec![format!("Docker-Content-Digest: {d}")],
                b,
                true,
            ),
            None => (
                "404 Not Found",
                "application/json",
                Vec::new(),
                Arc::new(error_body("BLOB_UNKNOWN", "blob unknown to registry")),
                false,
            ),
        }
    } else {
        (
            "404 Not Found",
            "application/json",
            Vec::new(),
            Arc::new(error_body(
                "NAME_UNKNOWN",
                "repository name not known to registry",
            )),
            false,
        )
    };
    let mut response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\n\
         Docker-Distribution-API-Version: registry/2.0\r\nConnection: close\r\n",
        body.len()
    );
    for h in extra {
        response.push_str(&h);
        response.push_str("\r\n");
    }
    response.push_str("\r\n");
    stream.write_all(response.as_bytes()).await?;
    if !head_only {
        if throttle {
            for chunk in body.chunks(options.chunk.max(1)) {
                stream.write_all(chunk).await?;
                stream.flush().await?;
                tokio::time::sleep(options.pause).await;
            }
        } else {
            stream.write_all(&body).await?;
        }
    }
    stream.flush().await?;
    stream.shutdown().await?;
    Ok(())
}
