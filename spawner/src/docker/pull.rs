//! Pulling a missing image, with per-layer progress.
//!
//! The engine's `POST /images/create` answers with a stream of JSON lines, one per change: a
//! layer queued ("Pulling fs layer", "Waiting"), downloading (with `progressDetail` bytes),
//! verified, extracting, complete, or already on the host; and a few lines about the whole
//! image ("Pulling from …", "Digest: …", "Status: …"). [`PullTracker`] (pure, unit-tested)
//! turns each line into a [`ProgressEvent::Pulling`] with the layer's state and the image's
//! download bytes so far. The engine rate-limits its own lines (about ten a second per layer),
//! so every line becomes an event.
//!
//! The whole pull is bounded by [`super::DockerOptions::pull_timeout`]; when it passes, the
//! stream is dropped, which closes the request, and the engine cancels the pull.

use std::collections::BTreeMap;

use bollard::models::CreateImageInfo;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;

use super::{DockerError, DockerSpawner, engine_message, is_status};
use crate::spawner::{
    LayerPhase, LayerProgress, ProgressEvent, ProgressSender, ServerKey, SpawnError,
};

/// `image` as the engine's pull takes it: with `:latest` added when it names neither a tag
/// nor a digest (as `docker pull` does; without one the engine would pull every tag).
pub(crate) fn pull_reference(image: &str) -> String {
    if image.contains('@') {
        return image.to_owned();
    }
    // A tag is a `:` after the last `/`; an earlier one is a registry's port.
    let last = image.rsplit('/').next().unwrap_or(image);
    if last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// One layer as far as the pull has got.
#[derive(Debug)]
struct Layer {
    /// Its download size, once the engine has said.
    size: Option<u64>,
    /// Bytes of it downloaded.
    downloaded: u64,
}

/// Turns the engine's pull lines into [`ProgressEvent::Pulling`] events; see the module
/// documentation.
#[derive(Debug)]
pub(crate) struct PullTracker {
    image: String,
    layers: BTreeMap<String, Layer>,
}

fn phase_of(status: &str) -> LayerPhase {
    match status {
        "Pulling fs layer" | "Waiting" => LayerPhase::Waiting,
        "Downloading" => LayerPhase::Downloading,
        "Verifying Checksum" => LayerPhase::Verifying,
        "Download complete" => LayerPhase::Downloaded,
        "Extracting" => LayerPhase::Extracting,
        "Pull complete" => LayerPhase::Complete,
        "Already exists" => LayerPhase::AlreadyExists,
        other => LayerPhase::Other(other.to_owned()),
    }
}

/// Whether a status line is about the whole image rather than the layer in its `id`.
fn is_image_line(status: &str) -> bool {
    ["Pulling from ", "Digest:", "Status:", "Pulling repository"]
        .iter()
        .any(|p| status.starts_with(p))
}

impl PullTracker {
    /// A tracker for a pull of `image` (the name as the profile gives it).
    pub(crate) fn new(image: &str) -> Self {
        Self {
            image: image.to_owned(),
            layers: BTreeMap::new(),
        }
    }

    /// The event before the first line: a pull has begun, nothing is known yet.
    pub(crate) fn begun(&self) -> ProgressEvent {
        ProgressEvent::Pulling {
            image: self.image.clone(),
            layer: None,
            done_bytes: None,
            total_bytes: None,
        }
    }

    /// Takes in one line of the engine's stream; returns its event, or `None` for a line
    /// without a status (which the caller reads as an error, if it is one).
    pub(crate) fn update(&mut self, info: &CreateImageInfo) -> Option<ProgressEvent> {
        let status = info.status.as_deref()?;
        let layer = match info.id.as_deref() {
            Some(id) if !id.is_empty() && !is_image_line(status) => {
                let detail = info.progress_detail.as_ref();
                let bytes = |v: Option<i64>| v.and_then(|v| u64::try_from(v).ok());
                let current = bytes(detail.and_then(|d| d.current));
                let total = bytes(detail.and_then(|d| d.total)).filter(|t| *t > 0);
                let phase = phase_of(status);
                self.record(id, &phase, current, total);
                Some(LayerProgress {
                    id: id.to_owned(),
                    phase,
                    current_bytes: current,
                    total_bytes: total,
                })
            }
            _ => None,
        };
        let (done_bytes, total_bytes) = self.totals();
        Some(ProgressEvent::Pulling {
            image: self.image.clone(),
            layer,
            done_bytes,
            total_bytes,
        })
    }

    fn record(&mut self, id: &str, phase: &LayerPhase, current: Option<u64>, total: Option<u64>) {
        if *phase == LayerPhase::AlreadyExists {
            // Nothing to fetch: it counts in neither figure.
            self.layers.remove(id);
            return;
        }
        let layer = self.layers.entry(id.to_owned()).or_insert(Layer {
            size: None,
            downloaded: 0,
        });
        match phase {
            LayerPhase::Downloading => {
                if total.is_some() {
                    layer.size = total;
                }
                if let Some(current) = current {
                    layer.downloaded = current;
                }
            }
            LayerPhase::Verifying
            | LayerPhase::Downloaded
            | LayerPhase::Extracting
            | LayerPhase::Complete => {
                if let Some(size) = layer.size {
                    layer.downloaded = size;
                }
            }
            LayerPhase::Waiting | LayerPhase::AlreadyExists | LayerPhase::Other(_) => {}
        }
    }

    /// Bytes downloaded and to download over the layers of known size.
    fn totals(&self) -> (Option<u64>, Option<u64>) {
        let mut done = 0u64;
        let mut total = None::<u64>;
        for layer in self.layers.values() {
            if let Some(size) = layer.size {
                total = Some(total.unwrap_or(0).saturating_add(size));
                done = done.saturating_add(layer.downloaded.min(size));
            }
        }
        (total.map(|_| done), total)
    }
}

impl DockerSpawner {
    /// Makes sure `image` is on the engine: returns at once when it is, else pulls it,
    /// sending progress, within [`super::DockerOptions::pull_timeout`].
    pub(super) async fn ensure_image(
        &self,
        key: &ServerKey,
        image: &str,
        progress: &ProgressSender,
    ) -> Result<(), SpawnError> {
        match self.docker.inspect_image(image).await {
            Ok(_) => return Ok(()),
            Err(e) if is_status(&e, 404) => {}
            Err(e) => return Err(Self::engine(key, None, "inspect image", e)),
        }
        let waited = self.options.pull_timeout;
        let error = match tokio::time::timeout(waited, self.pull(image, progress)).await {
            Ok(Ok(())) => match self.docker.inspect_image(image).await {
                Ok(_) => return Ok(()),
                Err(e) if is_status(&e, 404) => DockerError::PullFailed {
                    image: image.to_owned(),
                    cause: "the engine ended the pull without an error, but has no such image"
                        .to_owned(),
                },
                Err(e) => return Err(Self::engine(key, None, "inspect image", e)),
            },
            Ok(Err(cause)) => DockerError::PullFailed {
                image: image.to_owned(),
                cause,
            },
            Err(_) => DockerError::PullTimeout {
                image: image.to_owned(),
                waited,
            },
        };
        progress.emit(ProgressEvent::Failed {
            exit_code: None,
            message: error.to_string(),
            last_log_lines: Vec::new(),
        });
        Err(Self::err(key, None, error))
    }

    /// Pulls `image`, sending an event per line of the engine's stream; the error is the
    /// engine's message.
    async fn pull(&self, image: &str, progress: &ProgressSender) -> Result<(), String> {
        let options = CreateImageOptions {
            from_image: Some(pull_reference(image)),
            ..CreateImageOptions::default()
        };
        let mut tracker = PullTracker::new(image);
        progress.emit(tracker.begun());
        let mut stream = self.docker.create_image(Some(options), None, None);
        while let Some(line) = stream.next().await {
            let info = line.map_err(|e| engine_message(&e))?;
            if let Some(event) = tracker.update(&info) {
                progress.emit(event);
            }
        }
        Ok(())
    }
}
