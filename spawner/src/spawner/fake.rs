//! An in-memory [`Spawner`] for tests of the code that drives spawners (the hub, its API and
//! pages). It runs nothing and starts no container: servers are rows in a map that turn
//! `Running` at once. It does keep the trait's contract (idempotent start and stop, profile
//! groups, a URL per server), so code that passes against it has met that contract.

use std::collections::BTreeMap;
use std::sync::{Mutex, PoisonError};

use super::{
    BoxFuture, ProgressEvent, ProgressSender, ServerKey, ServerRecord, ServerStatus, SpawnError,
    SpawnRequest, Spawner,
};
use crate::names::{Instance, container_name};
use crate::request::SpecError;

/// An in-memory [`Spawner`]; see the module documentation. Available in this crate's tests
/// and, with the `test-util` feature, to other crates.
#[derive(Debug, Default)]
pub struct FakeSpawner {
    servers: Mutex<BTreeMap<ServerKey, ServerRecord>>,
    /// While set, a start emits `Creating` and then waits forever: a start under way, for
    /// tests of cancelling one.
    hold_starts: std::sync::atomic::AtomicBool,
}

impl FakeSpawner {
    /// A spawner with no servers.
    pub fn new() -> Self {
        Self::default()
    }

    /// Makes every later start wait forever after `Creating` (`true`), or finish at once.
    pub fn hold_starts(&self, hold: bool) {
        self.hold_starts
            .store(hold, std::sync::atomic::Ordering::SeqCst);
    }

    /// Makes a server exit on its own with `exit_code`, as a crash or an OOM kill would: it
    /// stays listed, stopped, until stopped. `false` when there is no such server.
    pub fn exit(&self, key: &ServerKey, exit_code: i64) -> bool {
        match self.servers().get_mut(key) {
            Some(record) => {
                record.status = ServerStatus::Stopped {
                    exit_code: Some(exit_code),
                };
                true
            }
            None => false,
        }
    }

    /// Lists a running server as if something other than this process had started it.
    pub fn insert_running(&self, record: ServerRecord) {
        self.servers().insert(record.key.clone(), record);
    }

    fn servers(&self) -> std::sync::MutexGuard<'_, BTreeMap<ServerKey, ServerRecord>> {
        // The map stays consistent even if a holder panicked: every update is one insert or
        // remove.
        self.servers.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Spawner for FakeSpawner {
    fn backend(&self) -> &'static str {
        "fake"
    }

    fn start<'a>(
        &'a self,
        request: &'a SpawnRequest,
        progress: ProgressSender,
    ) -> BoxFuture<'a, Result<ServerRecord, SpawnError>> {
        Box::pin(async move {
            let key = request.key();
            if !request.profile.is_allowed_for(&request.identity) {
                return Err(SpawnError::Spec {
                    user: key.user.clone(),
                    server: key.server.clone(),
                    source: SpecError::NotAllowed {
                        user: key.user,
                        profile: request.profile.id.to_string(),
                    },
                });
            }
            if self.hold_starts.load(std::sync::atomic::Ordering::SeqCst) {
                progress.emit(ProgressEvent::Creating);
                std::future::pending::<()>().await;
            }
            let mut servers = self.servers();
            if let Some(record) = servers.get(&key)
                && let ServerStatus::Running { url } = &record.status
            {
                progress.emit(ProgressEvent::Ready { url: url.clone() });
                return Ok(record.clone());
            }
            let name = container_name(&Instance::default(), &key.user, &key.server);
            let url = format!("http://{name}:8888");
            progress.emit(ProgressEvent::Creating);
            progress.emit(ProgressEvent::Starting);
            progress.emit(ProgressEvent::Ready { url: url.clone() });
            let record = ServerRecord {
                key: key.clone(),
                profile: request.profile.id.clone(),
                backend_id: name,
                status: ServerStatus::Running { url },
            };
            servers.insert(key, record.clone());
            Ok(record)
        })
    }

    fn stop<'a>(&'a self, key: &'a ServerKey) -> BoxFuture<'a, Result<(), SpawnError>> {
        Box::pin(async move {
            self.servers().remove(key);
            Ok(())
        })
    }

    fn status<'a>(&'a self, key: &'a ServerKey) -> BoxFuture<'a, Result<ServerStatus, SpawnError>> {
        Box::pin(async move {
            Ok(self
                .servers()
                .get(key)
                .map_or(ServerStatus::Absent, |r| r.status.clone()))
        })
    }

    fn list(&self) -> BoxFuture<'_, Result<Vec<ServerRecord>, SpawnError>> {
        Box::pin(async move { Ok(self.servers().values().cloned().collect()) })
    }
}
