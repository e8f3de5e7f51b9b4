//! The pool refuses past its queue at once, a hash counts until it ends, hashes run on the
//! pool's own threads in their own memory, and give argon2's answers. Workers are held by
//! work that blocks on a channel the test releases: no timing anywhere.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::mpsc;

use argon2::password_hash::{PasswordHasher as _, PasswordVerifier as _, SaltString};
use gantry_auth::{PasswordHash, PasswordParams};

use super::*;

/// The cheapest parameters argon2 accepts (8 KiB), so tests stay fast.
const CHEAP: PasswordParams = PasswordParams {
    memory_kib: 8,
    iterations: 1,
    parallelism: 1,
};

fn pool(workers: usize, queue: usize) -> HashPool {
    HashPool::new(workers, queue, &Passwords::new(CHEAP).unwrap()).unwrap()
}

/// Work that reports it started, then blocks until released.
fn held() -> (
    impl FnOnce(&mut HashMemory) -> u8 + Send + 'static,
    tokio::sync::oneshot::Receiver<()>,
    mpsc::Sender<()>,
) {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let work = move |_: &mut HashMemory| {
        let _ = started_tx.send(());
        let _ = release_rx.recv();
        7
    };
    (work, started, release)
}

#[tokio::test]
async fn past_the_workers_and_the_queue_a_hash_is_refused_at_once() {
    let pool = Arc::new(pool(1, 1));
    // The one worker, held.
    let (work, started, release_first) = held();
    let first = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.run(work).await }
    });
    started.await.unwrap();
    assert_eq!((pool.running(), pool.waiting()), (1, 0));
    // The one queue place, taken.
    let queued = pool.admit().unwrap();
    assert_eq!((pool.running(), pool.waiting()), (1, 1));
    // Full: refused without waiting (an await that would wait fails the test by hanging).
    let refused = pool.run(|_| 0_u8).await;
    assert!(
        matches!(
            refused,
            Err(HashError::Busy {
                workers: 1,
                queue: 1
            })
        ),
        "{refused:?}"
    );
    // The queued one runs once the worker is free, and then the pool takes more.
    let second = tokio::spawn(queued.run(|_| 8_u8));
    release_first.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 7);
    assert_eq!(second.await.unwrap().unwrap(), 8);
    assert_eq!(pool.run(|_| 9_u8).await.unwrap(), 9);
    assert_eq!((pool.running(), pool.waiting()), (0, 0));
}

#[tokio::test]
async fn with_no_queue_a_busy_worker_refuses_the_next() {
    let pool = Arc::new(pool(1, 0));
    let (work, started, release) = held();
    let first = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.run(work).await }
    });
    started.await.unwrap();
    assert!(matches!(pool.admit(), Err(HashError::Busy { .. })));
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 7);
    assert!(pool.admit().is_ok());
}

#[tokio::test]
async fn a_hash_whose_caller_went_away_keeps_its_worker_until_it_ends() {
    let pool = Arc::new(pool(1, 0));
    let (work, started, release) = held();
    let caller = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.run(work).await }
    });
    started.await.unwrap();
    // The client hung up: its request's task is dropped, the hash is not.
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    assert_eq!(pool.running(), 1);
    assert!(matches!(pool.admit(), Err(HashError::Busy { .. })));
    release.send(()).unwrap();
    // The job ends on its own; the next admission waits for nothing but that.
    loop {
        if pool.admit().is_ok() {
            break;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_waiting_caller_that_goes_away_frees_its_place() {
    let pool = Arc::new(pool(1, 1));
    let (work, started, release) = held();
    let first = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.run(work).await }
    });
    started.await.unwrap();
    let waiting = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.run(|_| 1_u8).await }
    });
    // Let it take its place and start waiting for the worker.
    while pool.waiting() == 0 {
        tokio::task::yield_now().await;
    }
    waiting.abort();
    assert!(waiting.await.unwrap_err().is_cancelled());
    assert_eq!(pool.waiting(), 0);
    assert!(pool.admit().is_ok(), "the place is free again");
    release.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 7);
}

/// Every hash runs on one of the pool's `workers` threads, named for it, never on the
/// runtime's: with both workers held, two threads show, and 40 more hashes show no third.
#[tokio::test]
async fn hashes_run_on_the_pools_fixed_threads() {
    let pool = Arc::new(pool(2, 64));
    let (first, first_started, release_first) = held();
    let (second, second_started, release_second) = held();
    let where_ = |work: Box<dyn FnOnce(&mut HashMemory) -> u8 + Send>| {
        let pool = Arc::clone(&pool);
        tokio::spawn(async move {
            pool.run(move |memory| {
                work(memory);
                let thread = std::thread::current();
                (thread.id(), thread.name().map(str::to_owned), memory.kib())
            })
            .await
        })
    };
    let a = where_(Box::new(first));
    let b = where_(Box::new(second));
    first_started.await.unwrap();
    second_started.await.unwrap();
    assert_eq!(pool.running(), 2);
    release_first.send(()).unwrap();
    release_second.send(()).unwrap();
    let mut threads = HashSet::new();
    for seen in [a.await.unwrap().unwrap(), b.await.unwrap().unwrap()] {
        threads.insert(seen.0);
        assert!(
            seen.1
                .as_deref()
                .is_some_and(|n| n.starts_with("gantry-hash-")),
            "{seen:?}"
        );
        assert_eq!(
            seen.2, 8,
            "the worker's own memory, sized for the parameters"
        );
    }
    assert_eq!(threads.len(), 2, "both workers were busy at once");
    let more: Vec<_> = (0..40).map(|_| where_(Box::new(|_| 0))).collect();
    for task in more {
        let (thread, _, _) = task.await.unwrap().unwrap();
        assert!(threads.contains(&thread), "a hash ran on a third thread");
    }
    assert!(!threads.contains(&std::thread::current().id()));
}

/// What the workers compute is argon2's own answer: a hash the reference made verifies, a
/// wrong password does not, and a hash made in the pool verifies with the reference.
#[tokio::test]
async fn the_pool_gives_argon2s_answers() {
    let passwords = Passwords::new(CHEAP).unwrap();
    let pool = HashPool::new(2, 4, &passwords).unwrap();
    let reference = argon2::Argon2::new(
        argon2::Algorithm::Argon2id,
        argon2::Version::V0x13,
        argon2::Params::new(CHEAP.memory_kib, CHEAP.iterations, CHEAP.parallelism, None).unwrap(),
    );
    let salt = SaltString::encode_b64(b"a salt of 16 b!!").unwrap();
    let old = PasswordHash::from_phc(
        &reference
            .hash_password(b"hunter2", &salt)
            .unwrap()
            .to_string(),
    )
    .unwrap();
    for (password, expected) in [("hunter2", true), ("hunter3", false)] {
        let (p, o) = (passwords.clone(), old.clone());
        let verified = pool
            .run(move |memory| p.verify_in(password, &o, memory).unwrap())
            .await
            .unwrap();
        assert_eq!(verified, expected, "{password}");
    }
    let p = passwords.clone();
    let new = pool
        .run(move |memory| p.hash_in("hunter2", memory).unwrap())
        .await
        .unwrap();
    let parsed = argon2::password_hash::PasswordHash::new(new.as_str()).unwrap();
    assert!(reference.verify_password(b"hunter2", &parsed).is_ok());
    assert!(new.as_str().starts_with("$argon2id$v=19$m=8,t=1,p=1$"));
}

/// A hash that panics answers `Failed`, gives its places back and leaves its worker working.
#[tokio::test]
async fn a_panicking_hash_fails_alone() {
    let pool = pool(1, 0);
    let failed = pool
        .run(|_| -> u8 { panic!("a hash panicked (expected by the test)") })
        .await;
    assert!(matches!(failed, Err(HashError::Failed)), "{failed:?}");
    assert_eq!((pool.running(), pool.waiting()), (0, 0));
    assert_eq!(pool.run(|_| 3_u8).await.unwrap(), 3);
}
