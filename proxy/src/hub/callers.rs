//! Callers from memory: sessions and API tokens resolved without the database on the hot path.
//!
//! Every request through the gate and every hub request names its caller by a secret (the
//! session cookie or an API token). Asking the store each time cost two thirds of the front
//! tier's throughput, so resolved callers are kept in a bounded concurrent cache
//! ([`moka`]) keyed by the secret's [`SecretKey`] (its public prefix and SHA-256: the secret
//! itself is never kept). An entry holds the user, admin flag and scopes as the store last
//! returned them, and never outlives its credential's own expiry.
//!
//! **Freshness.** Changes made by this process evict at once: logout, token revocation, user
//! deletion, rename and admin-flag changes call [`Callers::forget_user`] (or
//! [`Callers::forget`]) before they answer. Changes made by another process sharing the same
//! database (a second gantry on PostgreSQL, the `gantry user` command) are picked up by
//! [`Callers::refresh`], which the binary runs every [`REFRESH_EVERY`]: it checks every cached
//! entry served since its last check against the store again (one query each, so the cost
//! follows the active callers, not the cache's size), replaces it with what the store says now,
//! and drops it when the credential is gone. An entry the refresh could not confirm for [`STALE_AFTER`] (the
//! database is down, say) is no longer served from memory: the next request asks the store
//! itself, and is refused when the store cannot answer. So another process's change is seen
//! within [`STALE_AFTER`] (5 s) at most, and a database outage does not stop callers already in
//! memory for that long.
//!
//! **Unknown secrets.** A secret the store does not know is remembered as unknown (a bounded
//! negative cache, [`UNKNOWN_CAPACITY`] entries for [`UNKNOWN_TTL`]); secrets are random, so a
//! remembered miss can never become valid. A flood of made-up secrets is different every time:
//! each client address (IPv6: its /64) may make [`LOOKUPS_PER_SECOND`] store lookups a second
//! after a burst of [`LOOKUP_BURST`] (a `governor` limiter); past that it is refused without a
//! store lookup. Memory is bounded by the two caches' capacities and the limiter's pruned keys.
//!
//! **Tunnels.** A WebSocket outlives the request that opened it, so the gate registers each
//! admitted upgrade with the credential that opened it ([`Callers::open_tunnel`]) and hands
//! the data plane a [`Lease`]. When that credential ends, or stops permitting access to the
//! server the tunnel goes to (an admin demoted, a user renamed), the lease ends and the tunnel
//! closes: at once for this process's changes ([`Callers::recheck_user`]), within the refresh
//! bound for another's.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Weak};
use std::time::{Duration, Instant};

use dashmap::DashMap;
use gantry_auth::store::{Session, TokenAuth, User, UserId};
use gantry_auth::{Action, LookupLimiter, NamePolicy, Owner, Scope, Scopes, SecretKey, Store};
use gantry_auth::{StoreError, UserName};
use jiff::Timestamp;
use moka::sync::Cache;

use crate::gate::Lease;

#[cfg(test)]
mod tests;

/// How often [`Callers::refresh`] should run: the binary's period.
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// An entry not confirmed by the store for this long is looked up again before it is used:
/// the bound on how long another process's revocation can go unseen.
pub const STALE_AFTER: Duration = Duration::from_secs(5);
/// The most callers kept in memory.
pub const CAPACITY: u64 = 100_000;
/// A caller unused for this long leaves memory (and is looked up again when it returns).
pub const IDLE: Duration = Duration::from_secs(10 * 60);
/// The most unknown secrets remembered.
pub const UNKNOWN_CAPACITY: u64 = 10_000;
/// How long an unknown secret is remembered.
pub const UNKNOWN_TTL: Duration = Duration::from_secs(60);
/// Store lookups of uncached secrets per second per client address, sustained.
pub const LOOKUPS_PER_SECOND: u32 = 20;
/// Store lookups of uncached secrets one client address may make at once.
pub const LOOKUP_BURST: u32 = 100;

/// Stored names are read without case folding (see `UserName::from_stored`).
const AS_STORED: NamePolicy = NamePolicy { case_fold: false };

/// What a session may do: what its user may (its scopes cap nothing further).
pub static SESSION_SCOPES: LazyLock<Scopes> =
    LazyLock::new(|| Scopes::new([Scope::SelfUser, Scope::Admin]));

/// How a secret was presented.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Kind {
    /// The session cookie.
    Session,
    /// An API token in `Authorization`.
    Token,
}

type Key = (Kind, SecretKey);

/// A caller as the store last described it.
#[derive(Clone, Debug)]
pub enum Known {
    /// A browser session and its user.
    Session(Arc<Session>),
    /// An API token and its owner.
    Token(Arc<TokenAuth>),
}

impl Known {
    /// The user behind the credential.
    pub fn user(&self) -> &User {
        match self {
            Self::Session(session) => &session.user,
            Self::Token(auth) => &auth.user,
        }
    }

    /// What this caller may do: a session what its user may; a token what its scopes allow
    /// (never more than its owner may).
    pub fn scopes(&self) -> &Scopes {
        match self {
            Self::Session(_) => &SESSION_SCOPES,
            Self::Token(auth) => &auth.token.scopes,
        }
    }

    /// Whether this caller may do `action`.
    pub fn permits(&self, action: Action<'_>) -> bool {
        let user = self.user();
        let owner = Owner {
            name: &user.name,
            admin: user.admin,
        };
        match self {
            Self::Session(_) => SESSION_SCOPES.permits(owner, action),
            Self::Token(auth) => auth.token.scopes.permits(owner, action),
        }
    }

    /// Whether this caller may reach the servers of the account stored as exactly
    /// `account` (a route records its owner's stored name). The name is compared as written,
    /// never case-folded again: with `username_case = "fold"`, `alice` does not reach the
    /// servers of an account stored as `Alice` before folding was switched on.
    pub fn may_access(&self, account: &str) -> bool {
        // The common case, the owner: no need to parse the name again.
        let own = &self.user().name;
        if own.as_str() == account {
            return self.permits(Action::AccessServer(own));
        }
        match UserName::parse(account, AS_STORED) {
            Ok(name) if name.as_str() == account => self.permits(Action::AccessServer(&name)),
            _ => false,
        }
    }

    /// When the credential stops being valid by itself.
    fn expires(&self) -> Option<Timestamp> {
        match self {
            Self::Session(session) => Some(session.expires),
            Self::Token(auth) => auth.token.expires,
        }
    }
}

/// A cached caller and when the store last confirmed it.
#[derive(Debug)]
struct Entry {
    known: Known,
    verified: Instant,
    /// Served since it was last verified: only such entries are refreshed in the background,
    /// so the refresh costs a query per active caller, not per cached one.
    used: AtomicBool,
}

impl Entry {
    fn usable(&self, now: Instant, wall: Timestamp) -> bool {
        now.duration_since(self.verified) < STALE_AFTER
            && self.known.expires().is_none_or(|expires| expires > wall)
    }
}

/// A tunnel opened under a credential: what ends it.
#[derive(Debug)]
struct LiveTunnel {
    key: Key,
    user: UserId,
    /// The account whose server the tunnel goes to, as the route recorded it.
    account: Arc<str>,
    lease: Weak<Lease>,
}

/// Why a caller could not be resolved.
#[derive(Debug, thiserror::Error)]
pub enum CallerError {
    /// The store could not answer.
    #[error("cannot look the caller up")]
    Store(#[from] StoreError),
    /// This client address made too many lookups of unknown secrets.
    #[error("too many unknown credentials from this address")]
    TooManyLookups,
}

/// The callers cache, the unknown-secret memory, the lookup limiter and the open tunnels'
/// credentials.
#[derive(Debug)]
pub struct Callers {
    store: Store,
    known: Cache<Key, Arc<Entry>>,
    unknown: Cache<Key, ()>,
    lookups: LookupLimiter,
    tunnels: DashMap<u64, LiveTunnel>,
    next_tunnel: AtomicU64,
}

impl Callers {
    /// An empty cache over `store`.
    pub fn new(store: Store) -> Self {
        let per_second = NonZeroU32::new(LOOKUPS_PER_SECOND).unwrap_or(NonZeroU32::MIN);
        let burst = NonZeroU32::new(LOOKUP_BURST).unwrap_or(NonZeroU32::MIN);
        Self {
            store,
            known: Cache::builder()
                .max_capacity(CAPACITY)
                .time_to_idle(IDLE)
                .build(),
            unknown: Cache::builder()
                .max_capacity(UNKNOWN_CAPACITY)
                .time_to_live(UNKNOWN_TTL)
                .build(),
            lookups: LookupLimiter::new(per_second, burst),
            tunnels: DashMap::new(),
            next_tunnel: AtomicU64::new(0),
        }
    }

    /// The caller behind `presented`, from memory when it is there and fresh, else from the
    /// store. `None` when no live credential matches.
    ///
    /// # Errors
    ///
    /// [`CallerError::Store`] when the store is needed and fails;
    /// [`CallerError::TooManyLookups`] when `client` spent its lookups on unknown secrets.
    pub async fn resolve(
        &self,
        kind: Kind,
        presented: &str,
        client: IpAddr,
    ) -> Result<Option<(SecretKey, Known)>, CallerError> {
        let Some(secret) = SecretKey::of(presented) else {
            return Ok(None);
        };
        let key = (kind, secret);
        let (now, wall) = (Instant::now(), Timestamp::now());
        let cached = self.known.get(&key);
        if let Some(entry) = &cached
            && entry.usable(now, wall)
        {
            if !entry.used.load(Ordering::Relaxed) {
                entry.used.store(true, Ordering::Relaxed);
            }
            return Ok(Some((key.1, entry.known.clone())));
        }
        if self.unknown.contains_key(&key) {
            return Ok(None);
        }
        // A known caller whose entry went stale is not a flood: only first sightings count.
        if cached.is_none() && !self.lookups.check(client) {
            return Err(CallerError::TooManyLookups);
        }
        match self.lookup(&key, wall).await? {
            Some(known) => {
                self.remember(key, known.clone(), now);
                Ok(Some((key.1, known)))
            }
            None => {
                self.known.invalidate(&key);
                self.unknown.insert(key, ());
                Ok(None)
            }
        }
    }

    async fn lookup(&self, key: &Key, now: Timestamp) -> Result<Option<Known>, StoreError> {
        Ok(match key.0 {
            Kind::Session => self
                .store
                .session_by_key(&key.1, now)
                .await?
                .map(|session| Known::Session(Arc::new(session))),
            Kind::Token => self
                .store
                .token_by_key(&key.1, now)
                .await?
                .map(|auth| Known::Token(Arc::new(auth))),
        })
    }

    fn remember(&self, key: Key, known: Known, verified: Instant) {
        self.known.insert(
            key,
            Arc::new(Entry {
                known,
                verified,
                used: AtomicBool::new(false),
            }),
        );
    }

    /// Forgets the credential `presented` as `kind` (a logout) and ends its tunnels.
    pub fn forget(&self, kind: Kind, presented: &str) {
        let Some(secret) = SecretKey::of(presented) else {
            return;
        };
        let key = (kind, secret);
        self.known.invalidate(&key);
        self.tunnels.retain(|_, tunnel| {
            if tunnel.key == key {
                end(&tunnel.lease);
                false
            } else {
                true
            }
        });
    }

    /// Forgets every cached credential of `user`, so their next request asks the store.
    /// Call it after any change to the user or their credentials, before answering.
    pub fn forget_user(&self, user: UserId) {
        for (key, entry) in &self.known {
            if entry.known.user().id == user {
                self.known.invalidate(&*key);
            }
        }
    }

    /// [`Callers::forget_user`], then checks every tunnel opened by `user`'s credentials
    /// against the store now, ending those whose credential is gone or no longer reaches the
    /// server the tunnel goes to. For logout, revocation, deletion, rename and demotion.
    /// Returns how many tunnels it ended.
    pub async fn recheck_user(&self, user: UserId) -> usize {
        self.forget_user(user);
        let mine: Vec<u64> = self
            .tunnels
            .iter()
            .filter(|t| t.user == user)
            .map(|t| *t.key())
            .collect();
        self.recheck_tunnels(&mine, Timestamp::now()).await
    }

    /// Registers a tunnel that `key`'s credential (whose user is `user`) opens to `account`'s
    /// server; the returned lease ends when the credential does.
    pub fn open_tunnel(
        &self,
        kind: Kind,
        key: SecretKey,
        user: UserId,
        account: &Arc<str>,
    ) -> Arc<Lease> {
        let lease = Arc::new(Lease::new());
        let id = self.next_tunnel.fetch_add(1, Ordering::Relaxed);
        self.tunnels.insert(
            id,
            LiveTunnel {
                key: (kind, key),
                user,
                account: Arc::clone(account),
                lease: Arc::downgrade(&lease),
            },
        );
        lease
    }

    /// How many tunnels are registered and still open.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels
            .iter()
            .filter(|t| t.lease.strong_count() > 0)
            .count()
    }

    /// Checks every cached caller served since its last check, and every open tunnel's
    /// credential, against the store again:
    /// gone credentials leave memory and end their tunnels, changed ones (admin flag, name,
    /// scopes) replace the cached copy and end the tunnels they no longer permit. The binary
    /// runs it every [`REFRESH_EVERY`]; a failure leaves entries to go stale after
    /// [`STALE_AFTER`]. Also forgets idle rate-limit keys and closed tunnels.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        self.lookups.prune();
        self.tunnels.retain(|_, t| t.lease.strong_count() > 0);
        let wall = Timestamp::now();
        // Entries not served since their last check are left to go stale (the next request
        // that needs one looks it up itself), unless a tunnel still depends on them.
        let tunnelled: std::collections::HashSet<Key> =
            self.tunnels.iter().map(|t| t.key).collect();
        let keys: Vec<Key> = self
            .known
            .iter()
            .filter(|(key, entry)| entry.used.load(Ordering::Relaxed) || tunnelled.contains(&**key))
            .map(|(key, _)| *key)
            .collect();
        for key in keys {
            let started = Instant::now();
            match self.lookup(&key, wall).await? {
                Some(known) => self.remember(key, known, started),
                None => self.known.invalidate(&key),
            }
        }
        let all: Vec<u64> = self.tunnels.iter().map(|t| *t.key()).collect();
        self.recheck_tunnels(&all, wall).await;
        Ok(())
    }

    /// Ends the tunnels among `ids` whose credential no longer reaches their server. Uses the
    /// cache when it is fresh, else the store; a store failure leaves the tunnel open (the
    /// next refresh tries again).
    async fn recheck_tunnels(&self, ids: &[u64], wall: Timestamp) -> usize {
        let mut ended = 0;
        for id in ids {
            let Some((key, account)) = self
                .tunnels
                .get(id)
                .map(|t| (t.key, Arc::clone(&t.account)))
            else {
                continue;
            };
            let now = Instant::now();
            let cached = self.known.get(&key).filter(|e| e.usable(now, wall));
            let known = match cached {
                Some(entry) => Some(entry.known.clone()),
                None => match self.lookup(&key, wall).await {
                    Ok(Some(known)) => {
                        self.remember(key, known.clone(), now);
                        Some(known)
                    }
                    Ok(None) => None,
                    Err(error) => {
                        tracing::warn!(%error, "cannot check an open tunnel's credential; will try again");
                        continue;
                    }
                },
            };
            let permitted = known.is_some_and(|k| k.may_access(&account));
            if !permitted && let Some((_, tunnel)) = self.tunnels.remove(id) {
                end(&tunnel.lease);
                ended += 1;
            }
        }
        ended
    }
}

fn end(lease: &Weak<Lease>) {
    if let Some(lease) = lease.upgrade() {
        lease.end();
    }
}
