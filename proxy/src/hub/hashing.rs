//! Password hashing under a cap: a few hashes at once, a short queue, and a refusal past it.
//!
//! An argon2id hash takes about 19 MiB and tens of milliseconds of one core. The rate limits
//! bound attempts per account and per address, but many addresses together could still start
//! any number of hashes at once. So every hash (a login's check, a sign-up's hash, a rehash)
//! runs here: at most `workers` at a time on tokio's blocking pool, at most `queue` more
//! waiting for one, and anything past that is refused at once ([`HashError::Busy`], answered
//! 503 with `Retry-After`) instead of waiting or allocating. Memory for hashing stays below
//! `workers` × 19 MiB, and a waiting login holds only its request.

use std::sync::Arc;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[cfg(test)]
mod tests;

/// Why a hash did not run or did not finish.
#[derive(Debug, thiserror::Error)]
pub(super) enum HashError {
    /// Every worker is busy and the queue is full.
    #[error("password hashing is saturated: {workers} running and {queue} waiting")]
    Busy {
        /// Hashes that run at once.
        workers: usize,
        /// Hashes that may wait.
        queue: usize,
    },
    /// The hashing task panicked or was cancelled.
    #[error("the password hashing task failed")]
    Failed(#[source] tokio::task::JoinError),
}

/// Runs password hashes with at most `workers` at once and `queue` waiting.
#[derive(Debug)]
pub(super) struct HashPool {
    /// One permit per worker: held while a hash runs.
    running: Arc<Semaphore>,
    /// One permit per worker or queue place: held from admission to the hash's end. Taken
    /// with `try_acquire`, so a full pool refuses without waiting.
    admitted: Arc<Semaphore>,
    workers: usize,
    queue: usize,
}

/// A place in the pool: the right to wait for a worker.
#[derive(Debug)]
pub(super) struct Admission {
    admitted: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
}

impl HashPool {
    /// A pool of `workers` (at least 1) with `queue` places to wait.
    pub(super) fn new(workers: usize, queue: usize) -> Self {
        // A semaphore holds at most `MAX_PERMITS`; no machine has that many cores.
        let workers = workers.clamp(1, Semaphore::MAX_PERMITS / 2);
        let queue = queue.min(Semaphore::MAX_PERMITS / 2);
        Self {
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            workers,
            queue,
        }
    }

    /// Takes a place if one is free, without waiting.
    ///
    /// # Errors
    ///
    /// [`HashError::Busy`] when `workers` hashes run and `queue` wait already.
    pub(super) fn admit(&self) -> Result<Admission, HashError> {
        let admitted = Arc::clone(&self.admitted)
            .try_acquire_owned()
            .map_err(|_| HashError::Busy {
                workers: self.workers,
                queue: self.queue,
            })?;
        Ok(Admission {
            admitted,
            running: Arc::clone(&self.running),
        })
    }

    /// Runs `work` (a hash or a check) on the blocking pool, once a place and then a worker
    /// are free; see [`HashPool::admit`] and [`Admission::run`].
    ///
    /// # Errors
    ///
    /// [`HashError::Busy`] at once when the pool is full; [`HashError::Failed`] if `work`
    /// panicked.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        self.admit()?.run(work).await
    }

    /// Hashes running now.
    pub(super) fn running(&self) -> usize {
        self.workers
            .saturating_sub(self.running.available_permits())
    }

    /// Hashes admitted and waiting for a worker now.
    pub(super) fn waiting(&self) -> usize {
        let admitted =
            (self.workers + self.queue).saturating_sub(self.admitted.available_permits());
        admitted.saturating_sub(self.running())
    }
}

impl Admission {
    /// Waits for a worker, then runs `work` on the blocking pool. Both permits move into the
    /// blocking task: if the caller goes away (the client hung up), the hash still counts
    /// until it ends.
    ///
    /// # Errors
    ///
    /// [`HashError::Failed`] if `work` panicked.
    pub(super) async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, HashError> {
        // `acquire_owned` fails only on a closed semaphore, and this one is never closed.
        let worker = Arc::clone(&self.running).acquire_owned().await.ok();
        tokio::task::spawn_blocking(move || {
            let _permits = (self.admitted, worker);
            work()
        })
        .await
        .map_err(HashError::Failed)
    }
}
