//! The OpenID Connect logins in flight: sent to a provider, not yet back.
//!
//! Each is kept by its `state`, with a hash of the browser's OpenID cookie, for
//! [`cookies::FLOW_MAX_AGE_SECS`]. The book is bounded three ways, and a flood can push out
//! nobody's login but its own:
//!
//! - **one per browser and provider**: a browser (its OpenID cookie) that starts another
//!   login with the same provider replaces its own previous one, and only that;
//! - **per provider**: at most `in_flight` at once; past it a new login is refused (503 with
//!   `Retry-After`: when the oldest expires), and none in flight is dropped to make room;
//! - **per client address** (IPv6: one /64): at most `per_address` at once, all providers
//!   together; past it that address is refused (429 with `Retry-After`), so one address
//!   cannot fill a provider's book.
//!
//! So memory is bounded by providers × `in_flight` logins (a few hundred bytes each), and a
//! client without cookies that starts login after login fills only its address's share.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::IpAddr;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use gantry_auth::{PendingLogin, SafeRedirect, SecretHash};
use subtle::ConstantTimeEq;

use super::super::cookies;
use super::super::response::HubError;

#[cfg(test)]
mod tests;

/// How many logins may be in flight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(in crate::hub) struct PendingLimits {
    /// Per provider.
    pub(in crate::hub) in_flight: usize,
    /// Per client address (IPv6: one /64), all providers together.
    pub(in crate::hub) per_address: usize,
}

/// One login in flight.
#[derive(Debug)]
pub(in crate::hub) struct Pending {
    /// The provider's id.
    pub(in crate::hub) provider: String,
    /// The state, nonce and PKCE verifier to finish with.
    pub(in crate::hub) login: PendingLogin,
    /// Where the user goes after logging in.
    pub(in crate::hub) next: SafeRedirect,
    /// The hash of the browser's OpenID cookie.
    browser: SecretHash,
    /// The client address's key (IPv6: its /64).
    address: IpAddr,
    started: Instant,
    /// Start order, for expiry.
    seq: u64,
}

/// The logins in flight, by `state`, with the indexes that bound them.
#[derive(Debug)]
pub(in crate::hub) struct PendingLogins {
    limits: PendingLimits,
    lifetime: Duration,
    book: Mutex<Book>,
}

#[derive(Debug, Default)]
struct Book {
    by_state: HashMap<String, Pending>,
    /// Each browser's login per provider: (provider, browser) → state.
    by_browser: HashMap<(String, SecretHash), String>,
    /// Every login in start order: seq → state. Oldest first, for expiry.
    by_age: BTreeMap<u64, String>,
    /// Each provider's logins, as seqs (oldest first).
    by_provider: HashMap<String, BTreeSet<u64>>,
    /// Each client address's logins, as seqs (oldest first).
    by_address: HashMap<IpAddr, BTreeSet<u64>>,
    next_seq: u64,
}

impl PendingLogins {
    /// An empty book with these bounds; logins live [`cookies::FLOW_MAX_AGE_SECS`].
    pub(in crate::hub) fn new(limits: PendingLimits) -> Self {
        Self::with_lifetime(
            limits,
            Duration::from_secs(cookies::FLOW_MAX_AGE_SECS.unsigned_abs()),
        )
    }

    fn with_lifetime(limits: PendingLimits, lifetime: Duration) -> Self {
        Self {
            limits,
            lifetime,
            book: Mutex::new(Book::default()),
        }
    }

    fn book(&self) -> MutexGuard<'_, Book> {
        // The book is consistent between statements that panic (none do): keep using it.
        self.book.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Logins in flight now.
    pub(in crate::hub) fn len(&self) -> usize {
        self.book().by_state.len()
    }

    /// Drops logins older than their lifetime.
    pub(in crate::hub) fn prune(&self, now: Instant) {
        self.book().expire(now, self.lifetime);
    }

    /// Records a login that `browser` (the hash of its OpenID cookie) started from
    /// `address` (the client's, keyed by [`gantry_auth::ratelimit::address_key`]), replacing
    /// that browser's previous login with the same provider.
    ///
    /// # Errors
    ///
    /// [`HubError::OidcLoginsFull`] when the provider has `in_flight` logins in flight,
    /// [`HubError::OidcLoginsFromAddress`] when the address has `per_address`; nothing is
    /// recorded or dropped then.
    pub(in crate::hub) fn insert(
        &self,
        provider: &str,
        login: PendingLogin,
        next: SafeRedirect,
        browser: SecretHash,
        address: IpAddr,
        now: Instant,
    ) -> Result<(), HubError> {
        let address = gantry_auth::ratelimit::address_key(address);
        let mut book = self.book();
        book.expire(now, self.lifetime);
        let key = (provider.to_owned(), browser);
        // The browser's own previous login with this provider makes room for its new one.
        let replaced = book
            .by_browser
            .get(&key)
            .and_then(|state| book.by_state.get(state))
            .map(|old| (old.login.state().to_owned(), old.address));
        let frees_address = replaced.as_ref().is_some_and(|(_, a)| *a == address);
        let retry_after = |seqs: Option<&BTreeSet<u64>>| {
            let oldest = seqs
                .and_then(|s| s.first())
                .and_then(|seq| book.by_age.get(seq))
                .and_then(|state| book.by_state.get(state))
                .map_or(now, |p| p.started);
            let left = (oldest + self.lifetime).saturating_duration_since(now);
            // Whole seconds, rounded up, at least 1.
            left.as_secs() + u64::from(left.subsec_nanos() > 0 || left.is_zero())
        };
        let provider_seqs = book.by_provider.get(provider);
        let for_provider = provider_seqs
            .map_or(0, BTreeSet::len)
            .saturating_sub(usize::from(replaced.is_some()));
        if for_provider >= self.limits.in_flight {
            return Err(HubError::OidcLoginsFull {
                provider: provider.to_owned(),
                in_flight: self.limits.in_flight,
                retry_after_secs: retry_after(provider_seqs),
            });
        }
        let address_seqs = book.by_address.get(&address);
        let from_address = address_seqs
            .map_or(0, BTreeSet::len)
            .saturating_sub(usize::from(frees_address));
        if from_address >= self.limits.per_address {
            return Err(HubError::OidcLoginsFromAddress {
                in_flight: self.limits.per_address,
                retry_after_secs: retry_after(address_seqs),
            });
        }
        if let Some((state, _)) = replaced {
            book.remove(&state);
        }
        let seq = book.next_seq;
        book.next_seq += 1;
        let state = login.state().to_owned();
        // A state is 128 random bits: a clash would be a broken random source. Keep the
        // indexes consistent anyway.
        book.remove(&state);
        book.by_age.insert(seq, state.clone());
        book.by_provider
            .entry(provider.to_owned())
            .or_default()
            .insert(seq);
        book.by_address.entry(address).or_default().insert(seq);
        book.by_browser.insert(key.clone(), state.clone());
        book.by_state.insert(
            state,
            Pending {
                provider: key.0,
                login,
                next,
                browser: key.1,
                address,
                started: now,
                seq,
            },
        );
        Ok(())
    }

    /// Takes the login for `state` (one use only) if it is live and was started by the
    /// browser holding `browser` (its OpenID cookie's value).
    pub(in crate::hub) fn take(&self, state: &str, browser: Option<&str>) -> Option<Pending> {
        let pending = self.book().remove(state)?;
        let fresh = pending.started.elapsed() < self.lifetime;
        let same_browser = browser.is_some_and(|value| {
            bool::from(
                SecretHash::of(value)
                    .as_str()
                    .as_bytes()
                    .ct_eq(pending.browser.as_str().as_bytes()),
            )
        });
        (fresh && same_browser).then_some(pending)
    }
}

impl Book {
    /// Removes the login for `state` from every index.
    fn remove(&mut self, state: &str) -> Option<Pending> {
        let pending = self.by_state.remove(state)?;
        self.by_age.remove(&pending.seq);
        let browser_key = (pending.provider.clone(), pending.browser.clone());
        if self.by_browser.get(&browser_key).map(String::as_str) == Some(state) {
            self.by_browser.remove(&browser_key);
        }
        if let Some(seqs) = self.by_provider.get_mut(&pending.provider) {
            seqs.remove(&pending.seq);
            if seqs.is_empty() {
                self.by_provider.remove(&pending.provider);
            }
        }
        if let Some(seqs) = self.by_address.get_mut(&pending.address) {
            seqs.remove(&pending.seq);
            if seqs.is_empty() {
                self.by_address.remove(&pending.address);
            }
        }
        Some(pending)
    }

    /// Removes logins started `lifetime` or longer before `now`, oldest first.
    fn expire(&mut self, now: Instant, lifetime: Duration) {
        loop {
            let Some(state) = self.by_age.first_key_value().map(|(_, s)| s.clone()) else {
                return;
            };
            let expired = self
                .by_state
                .get(&state)
                .is_none_or(|p| now.saturating_duration_since(p.started) >= lifetime);
            if !expired {
                return;
            }
            if self.remove(&state).is_none() {
                // An age entry without its login: drop it alone.
                self.by_age.pop_first();
            }
        }
    }
}
