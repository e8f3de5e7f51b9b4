//! Limits on login attempts, per account and per client address.
//!
//! Two keyed GCRA limiters (`governor`): one keyed by the normalised account name, so guessing
//! one account's password from many addresses is slowed, and one keyed by the client address,
//! so one address cannot walk through many accounts. IPv6 clients are keyed by their /64
//! network, since one host usually holds a whole /64 and could otherwise rotate addresses. An
//! attempt for an account that does not exist counts like any other. A refused attempt carries
//! how long to wait, for the `Retry-After` header of the 429 the caller sends.
//!
//! A made-up name is a new account key each time, so the account limit never slows a flood
//! of them; only the address limit does, and many addresses together pass it. A third,
//! global budget ([`LoginLimiter::check_unknown`]) bounds the attempts that name no account
//! with a password, all addresses together, so such a flood cannot take the password hashing
//! that real users' logins need. The caller checks it once it has looked the name up.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::time::Duration;

use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};

use crate::names::UserName;

#[cfg(test)]
mod tests;

/// The login limits. Each limit allows a burst of attempts, then one more attempt every
/// `60 / per_minute` seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoginLimits {
    /// Attempts per minute for one account, sustained.
    pub account_per_minute: u32,
    /// Attempts one account may make at once before the per-minute rate applies.
    pub account_burst: u32,
    /// Attempts per minute from one client address (IPv6: one /64), sustained.
    pub address_per_minute: u32,
    /// Attempts one address may make at once before the per-minute rate applies.
    pub address_burst: u32,
    /// Attempts per minute naming no account with a password, all addresses together,
    /// sustained.
    pub unknown_names_per_minute: u32,
    /// Such attempts at once before the per-minute rate applies.
    pub unknown_names_burst: u32,
}

impl Default for LoginLimits {
    /// 5 attempts at once then 5 a minute per account; 20 at once then 30 a minute per
    /// address; 30 at once then 60 a minute naming no account, all addresses together.
    fn default() -> Self {
        Self {
            account_per_minute: 5,
            account_burst: 5,
            address_per_minute: 30,
            address_burst: 20,
            unknown_names_per_minute: 60,
            unknown_names_burst: 30,
        }
    }
}

/// A limit that is zero: it would refuse every login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("login limit {field} must be at least 1 (fix: raise it, or remove it for the default)")]
pub struct LimitError {
    /// The field that is zero.
    pub field: &'static str,
}

/// Which limit refused an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Limited {
    /// Too many attempts for this account.
    Account,
    /// Too many attempts from this address.
    Address,
    /// Too many attempts naming no account, from all addresses together.
    UnknownNames,
}

/// A refused attempt: which limit, and how long until the next attempt can pass.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter {
    /// The limit that refused it.
    pub limited: Limited,
    /// How long until the next attempt can pass.
    pub wait: Duration,
}

impl RetryAfter {
    /// Whole seconds for the `Retry-After` header: rounded up, at least 1.
    pub fn seconds(&self) -> u64 {
        let whole = self.wait.as_secs() + u64::from(self.wait.subsec_nanos() > 0);
        whole.max(1)
    }
}

type Keyed<K, C> = RateLimiter<K, DashMapStateStore<K>, C, NoOpMiddleware<<C as Clock>::Instant>>;
type Direct<C> = RateLimiter<NotKeyed, InMemoryState, C, NoOpMiddleware<<C as Clock>::Instant>>;

/// The login limiter. Shared by every login handler; checks take no global lock.
#[derive(Debug)]
pub struct LoginLimiter<C: Clock = DefaultClock> {
    accounts: Keyed<UserName, C>,
    addresses: Keyed<IpAddr, C>,
    unknown_names: Direct<C>,
    clock: C,
}

impl LoginLimiter<DefaultClock> {
    /// A limiter on the system's monotonic clock.
    pub fn new(limits: LoginLimits) -> Result<Self, LimitError> {
        Self::with_clock(limits, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LoginLimiter<C> {
    /// A limiter on the given clock (tests pass a fake one).
    pub fn with_clock(limits: LoginLimits, clock: C) -> Result<Self, LimitError> {
        let quota = |per_minute, burst, rate_field, burst_field| {
            let per_minute = NonZeroU32::new(per_minute).ok_or(LimitError { field: rate_field })?;
            let burst = NonZeroU32::new(burst).ok_or(LimitError { field: burst_field })?;
            Ok(Quota::per_minute(per_minute).allow_burst(burst))
        };
        let accounts = quota(
            limits.account_per_minute,
            limits.account_burst,
            "account_per_minute",
            "account_burst",
        )?;
        let addresses = quota(
            limits.address_per_minute,
            limits.address_burst,
            "address_per_minute",
            "address_burst",
        )?;
        let unknown_names = quota(
            limits.unknown_names_per_minute,
            limits.unknown_names_burst,
            "unknown_names_per_minute",
            "unknown_names_burst",
        )?;
        Ok(Self {
            accounts: RateLimiter::dashmap_with_clock(accounts, clock.clone()),
            addresses: RateLimiter::dashmap_with_clock(addresses, clock.clone()),
            unknown_names: RateLimiter::direct_with_clock(unknown_names, clock.clone()),
            clock,
        })
    }

    /// Counts one login attempt for `account` from `address`. Call it before checking the
    /// password, for every attempt; a refusal means answer 429 without checking anything.
    pub fn check(&self, account: &UserName, address: IpAddr) -> Result<(), RetryAfter> {
        let refused = |limited, not_until: governor::NotUntil<C::Instant>| RetryAfter {
            limited,
            wait: not_until.wait_time_from(self.clock.now()),
        };
        self.addresses
            .check_key(&address_key(address))
            .map_err(|n| refused(Limited::Address, n))?;
        self.accounts
            .check_key(account)
            .map_err(|n| refused(Limited::Account, n))
    }

    /// Counts one attempt that names no account with a password (after [`LoginLimiter::check`]
    /// passed it and the name was looked up). A refusal means answer without checking the
    /// password: the budget shared by every address is spent.
    pub fn check_unknown(&self) -> Result<(), RetryAfter> {
        self.unknown_names.check().map_err(|not_until| RetryAfter {
            limited: Limited::UnknownNames,
            wait: not_until.wait_time_from(self.clock.now()),
        })
    }

    /// Forgets keys whose limits have fully recovered, so memory follows recent attempts
    /// rather than every name and address ever seen. Call it periodically.
    pub fn prune(&self) {
        self.accounts.retain_recent();
        self.addresses.retain_recent();
    }

    /// How many accounts and addresses are tracked now.
    pub fn tracked(&self) -> (usize, usize) {
        (self.accounts.len(), self.addresses.len())
    }
}

/// Limits how often one client address (IPv6: one /64) may make the hub look a credential
/// up in the store: a flood of made-up session cookies or tokens is answered from memory
/// once its burst is spent, so it cannot hammer the database. Callers whose credential is
/// cached never count against it.
#[derive(Debug)]
pub struct LookupLimiter<C: Clock = DefaultClock> {
    addresses: Keyed<IpAddr, C>,
}

impl LookupLimiter<DefaultClock> {
    /// Allows `burst` lookups at once per address, then `per_second`.
    pub fn new(per_second: NonZeroU32, burst: NonZeroU32) -> Self {
        Self::with_clock(per_second, burst, DefaultClock::default())
    }
}

impl<C: Clock + Clone> LookupLimiter<C> {
    /// The same on the given clock (tests pass a fake one).
    pub fn with_clock(per_second: NonZeroU32, burst: NonZeroU32, clock: C) -> Self {
        let quota = Quota::per_second(per_second).allow_burst(burst);
        Self {
            addresses: RateLimiter::dashmap_with_clock(quota, clock),
        }
    }

    /// Counts one store lookup for `address`; `false` means refuse without looking.
    pub fn check(&self, address: IpAddr) -> bool {
        self.addresses.check_key(&address_key(address)).is_ok()
    }

    /// Forgets addresses whose limit has fully recovered. Call it periodically.
    pub fn prune(&self) {
        self.addresses.retain_recent();
    }
}

/// The key for an address: IPv4 (IPv4-mapped IPv6 included) as is, IPv6 by its /64 (one
/// host usually holds a whole /64). Per-address limits elsewhere key addresses the same way.
pub fn address_key(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let bits = u128::from(v6) & !((1u128 << 64) - 1);
                IpAddr::V6(bits.into())
            }
        },
    }
}
