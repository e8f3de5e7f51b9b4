//! Users' last activity, as JupyterHub keeps it: noted in memory on every sign of the user,
//! written to the store at most once per [`COALESCE`] per user.
//!
//! A user is active when they log in, when a request comes with their session or one of
//! their API tokens (not a server's own token: a server's API calls are not its user), when
//! their server reports activity (`POST /hub/api/users/{name}/activity`), and when their
//! servers get traffic through the proxy (the servers' last activity, folded in every minute
//! by `Hub::sweep_activity`).
//! Requests are the hot path, so [`UserActivity::note`] costs a map lookup; a store write is
//! spawned only when the user's last write is [`COALESCE`] old, and [`UserActivity::flush`]
//! (every minute, and at shutdown) writes what the window held back. The REST user model reads
//! [`UserActivity::latest`] as well as the store, so it is never behind what this process saw.

use dashmap::DashMap;
use gantry_auth::Store;
use gantry_auth::store::UserId;
use jiff::{SignedDuration, Timestamp};

#[cfg(test)]
mod tests;

/// The least time between two store writes of one user's activity: 30 s.
const COALESCE: SignedDuration = SignedDuration::from_secs(30);

/// Notes closer together than this are one: a request within a second of the last noted
/// one changes nothing, so busy clients mostly only read the map.
const GRAIN: SignedDuration = SignedDuration::from_secs(1);

/// One user's activity as this process saw it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Seen {
    /// The latest activity noted.
    latest: Timestamp,
    /// The latest activity written to the store (or being written).
    written: Timestamp,
    /// When (by the clock) that write was made: the next waits for [`COALESCE`] after it.
    wrote_at: Timestamp,
}

/// What [`Seen::flush`] decides for one user.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Flush {
    /// Write this activity now.
    Write(Timestamp),
    /// Everything is written and the window is over: the entry may go (the store has it).
    Drop,
    /// Leave it: within the window.
    Keep,
}

impl Seen {
    /// The first activity, `at`, of a user this process sees at `now`: written at once.
    fn first(at: Timestamp, now: Timestamp) -> Self {
        Self {
            latest: at,
            written: at,
            wrote_at: now,
        }
    }

    /// Notes, at `now`, an activity at `at` (a report may name the past); returns what to
    /// write to the store now, if anything: the latest activity, when it is newer than the
    /// last write and that write is [`COALESCE`] old.
    fn note(&mut self, at: Timestamp, now: Timestamp) -> Option<Timestamp> {
        if at > self.latest {
            self.latest = at;
        }
        self.flush_due(now)
    }

    /// At `now`: writes what the window held back once the last write is [`COALESCE`] old,
    /// or lets a fully written entry go.
    fn flush(&mut self, now: Timestamp) -> Flush {
        if now.duration_since(self.wrote_at) < COALESCE {
            Flush::Keep
        } else if let Some(at) = self.flush_due(now) {
            Flush::Write(at)
        } else {
            Flush::Drop
        }
    }

    /// The write due at `now`, marked as made.
    fn flush_due(&mut self, now: Timestamp) -> Option<Timestamp> {
        if self.latest > self.written && now.duration_since(self.wrote_at) >= COALESCE {
            self.written = self.latest;
            self.wrote_at = now;
            return Some(self.latest);
        }
        None
    }
}

/// The activity of the users this process saw lately, and the store it goes to.
#[derive(Debug)]
pub(super) struct UserActivity {
    store: Store,
    seen: DashMap<UserId, Seen>,
}

impl UserActivity {
    /// Nothing seen yet; writes go to `store`.
    pub(super) fn new(store: Store) -> Self {
        Self {
            store,
            seen: DashMap::new(),
        }
    }

    /// Notes that `user` was active at `at`. Cheap: a store write is spawned (not awaited)
    /// only when this user's last write is [`COALESCE`] old. Call it from within the Tokio
    /// runtime.
    pub(super) fn note(&self, user: UserId, at: Timestamp) {
        if let Some(seen) = self.seen.get(&user)
            && at.duration_since(seen.latest) < GRAIN
        {
            return;
        }
        let now = Timestamp::now();
        let write = match self.seen.entry(user) {
            dashmap::Entry::Occupied(mut entry) => entry.get_mut().note(at, now),
            dashmap::Entry::Vacant(entry) => {
                entry.insert(Seen::first(at, now));
                Some(at)
            }
        };
        if let Some(at) = write {
            let store = self.store.clone();
            tokio::spawn(async move { write_activity(&store, user, at).await });
        }
    }

    /// The latest activity of `user` this process noted, if it still remembers it (it
    /// forgets once the store has it: see [`UserActivity::flush`]).
    pub(super) fn latest(&self, user: UserId) -> Option<Timestamp> {
        self.seen.get(&user).map(|seen| seen.latest)
    }

    /// Forgets `user` (deleted): a write in flight finds no row.
    pub(super) fn forget(&self, user: UserId) {
        self.seen.remove(&user);
    }

    /// Writes the activity the coalescing window held back once the window is over, and
    /// forgets users whose activity the store has. The binary calls it every minute
    /// ([`UserActivity::flush_all`] at shutdown).
    pub(super) async fn flush(&self, now: Timestamp) {
        let mut writes = Vec::new();
        self.seen.retain(|user, seen| match seen.flush(now) {
            Flush::Write(at) => {
                writes.push((*user, at));
                true
            }
            Flush::Keep => true,
            Flush::Drop => false,
        });
        for (user, at) in writes {
            write_activity(&self.store, user, at).await;
        }
    }

    /// [`UserActivity::flush`] as at shutdown: everything noted is written.
    pub(super) async fn flush_all(&self) {
        self.flush(Timestamp::now() + COALESCE).await;
    }
}

/// Writes one activity; a failure is logged (the next write carries a later one).
async fn write_activity(store: &Store, user: UserId, at: Timestamp) {
    if let Err(error) = store.record_user_activity(user, at).await {
        tracing::warn!(
            user = user.get(),
            error = %crate::errors::error_chain(&error),
            "cannot record the user's activity; the next activity tries again"
        );
    }
}
