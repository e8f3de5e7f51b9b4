//! The pool refuses past its queue at once, and a hash counts until it ends. Workers are held
//! by work that blocks on a channel the test releases: no timing anywhere.

use std::sync::Arc;
use std::sync::mpsc;

use super::*;

/// Work that reports it started, then blocks until released.
fn held() -> (
    impl FnOnce() -> u8 + Send + 'static,
    tokio::sync::oneshot::Receiver<()>,
    mpsc::Sender<()>,
) {
    let (started_tx, started) = tokio::sync::oneshot::channel();
    let (release, release_rx) = mpsc::channel::<()>();
    let work = move || {
        let _ = started_tx.send(());
        let _ = release_rx.recv();
        7
    };
    (work, started, release)
}

#[tokio::test]
async fn past_the_workers_and_the_queue_a_hash_is_refused_at_once() {
    let pool = Arc::new(HashPool::new(1, 1));
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
    let refused = pool.run(|| 0_u8).await;
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
    let second = tokio::spawn(queued.run(|| 8_u8));
    release_first.send(()).unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 7);
    assert_eq!(second.await.unwrap().unwrap(), 8);
    assert_eq!(pool.run(|| 9_u8).await.unwrap(), 9);
    assert_eq!((pool.running(), pool.waiting()), (0, 0));
}

#[tokio::test]
async fn with_no_queue_a_busy_worker_refuses_the_next() {
    let pool = Arc::new(HashPool::new(1, 0));
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
    let pool = Arc::new(HashPool::new(1, 0));
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
    // The blocking task ends on its own; the next admission waits for nothing but that.
    loop {
        if pool.admit().is_ok() {
            break;
        }
        tokio::task::yield_now().await;
    }
}

#[tokio::test]
async fn a_waiting_caller_that_goes_away_frees_its_place() {
    let pool = Arc::new(HashPool::new(1, 1));
    let (work, started, release) = held();
    let first = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.run(work).await }
    });
    started.await.unwrap();
    let waiting = tokio::spawn({
        let pool = Arc::clone(&pool);
        async move { pool.run(|| 1_u8).await }
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
