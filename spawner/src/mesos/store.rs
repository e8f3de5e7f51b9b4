//! Where the framework id (and what gantry chose for each task) outlives the process.
//!
//! The master knows a framework by the id it assigned at the first `SUBSCRIBE`; a gantry that
//! restarts must subscribe again with that id, within the failover timeout, or the master
//! kills every notebook it started. So the id is saved as soon as it is assigned, before any
//! task is launched. Beside it each task's placement is kept (agent, host name, the address
//! the notebook answers at), which status updates do not carry.
//!
//! [`FrameworkStore`] is the seam: the hub gives [`FileStore`] a path in its data directory
//! (the one file this crate writes, and only where it is told), tests use [`MemoryStore`].

use std::collections::BTreeMap;
use std::fmt;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

/// What is kept across restarts.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredState {
    /// The framework id the master assigned; `None` before the first subscription.
    #[serde(default)]
    pub framework_id: Option<String>,
    /// Placement of each launched task, by task id.
    #[serde(default)]
    pub tasks: BTreeMap<String, StoredTask>,
}

/// Where one task was placed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredTask {
    /// The agent's id.
    pub agent_id: String,
    /// The agent's host name.
    pub hostname: String,
    /// The notebook's address, `http://host:port`.
    pub url: String,
}

/// Why the state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file could not be read or written.
    #[error("cannot {action} the Mesos framework state file {}", path.display())]
    Io {
        /// `read` or `write`.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid.
    #[error(
        "the Mesos framework state file {} is not valid; repair it, or remove it (gantry then \
         registers a new framework and loses track of running notebooks)",
        path.display()
    )]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
}

/// Persistence for [`StoredState`].
pub trait FrameworkStore: Send + Sync + fmt::Debug {
    /// The saved state; the default when nothing was saved yet.
    fn load(&self) -> Result<StoredState, StoreError>;
    /// Replaces the saved state, durably, before returning.
    fn save(&self, state: &StoredState) -> Result<(), StoreError>;
}

/// A [`FrameworkStore`] in memory: it outlives a spawner (share it through an `Arc`) but not
/// the process.
#[derive(Debug, Default)]
pub struct MemoryStore(Mutex<StoredState>);

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }
}

impl FrameworkStore for MemoryStore {
    fn load(&self) -> Result<StoredState, StoreError> {
        Ok(self
            .0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone())
    }

    fn save(&self, state: &StoredState) -> Result<(), StoreError> {
        *self.0.lock().unwrap_or_else(PoisonError::into_inner) = state.clone();
        Ok(())
    }
}

/// A [`FrameworkStore`] in one JSON file, replaced atomically (written beside it, synced,
/// renamed).
#[derive(Debug, Clone)]
pub struct FileStore {
    path: PathBuf,
}

impl FileStore {
    /// A store at `path`, whose directory must exist. Nothing is read until
    /// [`FrameworkStore::load`].
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    /// The file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    fn io(&self, action: &'static str, source: std::io::Error) -> StoreError {
        StoreError::Io {
            action,
            path: self.path.clone(),
            source,
        }
    }
}

impl FrameworkStore for FileStore {
    fn load(&self) -> Result<StoredState, StoreError> {
        match std::fs::read(&self.path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|source| StoreError::Corrupt {
                path: self.path.clone(),
                source,
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(StoredState::default()),
            Err(e) => Err(self.io("read", e)),
        }
    }

    fn save(&self, state: &StoredState) -> Result<(), StoreError> {
        // Plain strings and maps always serialise.
        let json = serde_json::to_vec_pretty(state).unwrap_or_default();
        let mut tmp = self.path.clone().into_os_string();
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(&json)?;
            f.sync_all()?;
            std::fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::File::open(dir)?.sync_all()?;
            }
            Ok(())
        };
        write().map_err(|e| self.io("write", e))
    }
}
