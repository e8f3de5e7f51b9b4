//! Password hashing under a cap, on a fixed set of threads: a few hashes at once, a short
//! queue, and a refusal past it.
//!
//! An argon2id hash takes about 19 MiB and tens of milliseconds of one core. The rate limits
//! bound attempts per account and per address, but many addresses together could still start
//! any number of hashes at once. So every hash (a login's check, a sign-up's hash, a rehash)
//! runs here: at most `workers` at a time, at most `queue` more waiting for one, and anything
//! past that is refused at once ([`HashError::Busy`], answered 503 with `Retry-After`)
//! instead of waiting or allocating.
//!
//! The workers are `workers` OS threads of their own (`gantry-hash-N`), started with the pool
//! and kept until it is dropped, each holding one [`HashMemory`] allocated once. Neither
//! tokio's blocking pool (which starts and ends threads with the load, and whose ended
//! threads' malloc arenas kept the 19 MiB blocks: gigabytes after a flood) nor the data
//! plane's runtime threads ever compute a hash, so a flood of logins moves memory by nothing
//! and a proxied request never waits behind argon2 for a thread. A hash whose stored
//! parameters need more memory than a worker holds allocates for that hash alone (see
//! [`gantry_auth::Passwords::verify_in`]); the next successful login replaces it.
//!
//! Admission and waiting are two semaphores on the async side: a login waiting for a worker
//! holds only its request, and gives its place back the moment its client hangs up. A job is
//! handed to the threads (a channel that never holds more jobs than there are workers) only
//! once a worker's permit is held, and its answer comes back on a oneshot channel.

use std::panic::AssertUnwindSafe;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::{Arc, Mutex, PoisonError};

use gantry_auth::{HashMemory, Passwords};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, oneshot};

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
    /// The hash panicked, or the workers are gone.
    #[error("a password hashing worker failed: the hash panicked or the workers stopped")]
    Failed,
}

/// One hash, as the workers run it: the work and the sending of its answer.
type Job = Box<dyn FnOnce(&mut HashMemory) + Send>;

/// Runs password hashes on `workers` threads with `queue` waiting.
#[derive(Debug)]
pub(super) struct HashPool {
    /// One permit per worker: held while a hash runs.
    running: Arc<Semaphore>,
    /// One permit per worker or queue place: held from admission to the hash's end. Taken
    /// with `try_acquire`, so a full pool refuses without waiting.
    admitted: Arc<Semaphore>,
    /// The workers' inbox. Dropping the pool drops it, and the threads end.
    jobs: SyncSender<Job>,
    workers: usize,
    queue: usize,
}

/// A place in the pool: the right to wait for a worker.
#[derive(Debug)]
pub(super) struct Admission {
    admitted: OwnedSemaphorePermit,
    running: Arc<Semaphore>,
    jobs: SyncSender<Job>,
}

impl HashPool {
    /// A pool of `workers` (at least 1) threads, each with working memory for `passwords`'
    /// parameters, and `queue` places to wait.
    ///
    /// # Errors
    ///
    /// The operating system's error when a thread cannot be started.
    pub(super) fn new(
        workers: usize,
        queue: usize,
        passwords: &Passwords,
    ) -> std::io::Result<Self> {
        // A semaphore holds at most `MAX_PERMITS`; no machine has that many cores.
        let workers = workers.clamp(1, Semaphore::MAX_PERMITS / 2);
        let queue = queue.min(Semaphore::MAX_PERMITS / 2);
        // A job is sent only by a holder of one of the `workers` running permits, which it
        // keeps until the job ends: the channel never holds more than `workers` jobs.
        let (jobs, inbox) = std::sync::mpsc::sync_channel::<Job>(workers);
        let inbox = Arc::new(Mutex::new(inbox));
        for i in 0..workers {
            let inbox = Arc::clone(&inbox);
            let passwords = passwords.clone();
            std::thread::Builder::new()
                .name(format!("gantry-hash-{i}"))
                .spawn(move || work(&inbox, &passwords))?;
        }
        Ok(Self {
            running: Arc::new(Semaphore::new(workers)),
            admitted: Arc::new(Semaphore::new(workers + queue)),
            jobs,
            workers,
            queue,
        })
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
            jobs: self.jobs.clone(),
        })
    }

    /// Runs `work` (a hash or a check, given the worker's memory) on a worker, once a place
    /// and then a worker are free; see [`HashPool::admit`] and [`Admission::run`].
    ///
    /// # Errors
    ///
    /// [`HashError::Busy`] at once when the pool is full; [`HashError::Failed`] if `work`
    /// panicked.
    pub(super) async fn run<T: Send + 'static>(
        &self,
        work: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
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

/// A worker thread: takes jobs until the pool is dropped, each in the one memory it holds.
fn work(inbox: &Mutex<Receiver<Job>>, passwords: &Passwords) {
    let mut memory = passwords.memory();
    loop {
        // The lock is held while waiting, so idle workers queue on it; it is released
        // before the job runs.
        let job = inbox.lock().unwrap_or_else(PoisonError::into_inner).recv();
        let Ok(job) = job else {
            return;
        };
        // A job that panics loses its answer (its caller gets `Failed`), not the worker.
        let _ = std::panic::catch_unwind(AssertUnwindSafe(|| job(&mut memory)));
    }
}

impl Admission {
    /// Waits for a worker, then runs `work` on it. Both permits move into the job: if the
    /// caller goes away (the client hung up) once it is sent, the hash still counts until it
    /// ends; before that, its place is given back at once.
    ///
    /// # Errors
    ///
    /// [`HashError::Failed`] if `work` panicked or the workers are gone.
    pub(super) async fn run<T: Send + 'static>(
        self,
        work: impl FnOnce(&mut HashMemory) -> T + Send + 'static,
    ) -> Result<T, HashError> {
        // `acquire_owned` fails only on a closed semaphore, and this one is never closed.
        let worker = Arc::clone(&self.running).acquire_owned().await.ok();
        let (answer, answered) = oneshot::channel();
        let admitted = self.admitted;
        let job: Job = Box::new(move |memory| {
            let result = work(memory);
            // The permits go before the answer: whoever reads it finds the worker free.
            drop((admitted, worker));
            let _ = answer.send(result);
        });
        // Never full (see `HashPool::new`); disconnected only if the workers are gone.
        self.jobs.try_send(job).map_err(|_| HashError::Failed)?;
        answered.await.map_err(|_| HashError::Failed)
    }
}
