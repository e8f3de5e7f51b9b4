use std::net::IpAddr;
use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::*;
use crate::names::{NamePolicy, UserName};

fn name(s: &str) -> UserName {
    UserName::parse(s, NamePolicy::default()).unwrap()
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn limiter(limits: LoginLimits) -> (LoginLimiter<FakeRelativeClock>, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (
        LoginLimiter::with_clock(limits, clock.clone()).unwrap(),
        clock,
    )
}

const TIGHT: LoginLimits = LoginLimits {
    account_per_minute: 3,
    account_burst: 3,
    address_per_minute: 60,
    address_burst: 10,
    unknown_names_per_minute: 6,
    unknown_names_burst: 2,
};

#[test]
fn an_account_is_limited_after_its_burst_then_recovers() {
    let (limiter, clock) = limiter(TIGHT);
    let alice = name("alice");
    for _ in 0..3 {
        limiter.check(&alice, ip("198.51.100.1")).unwrap();
    }
    // From another address too: the account's limit is the account's.
    let refused = limiter.check(&alice, ip("203.0.113.9")).unwrap_err();
    assert_eq!(refused.limited, Limited::Account);
    assert_eq!(refused.seconds(), 20, "3 a minute: one every 20 s");
    assert!(
        limiter.check(&name("bob"), ip("203.0.113.9")).is_ok(),
        "other accounts are unaffected"
    );
    clock.advance(Duration::from_secs(20));
    assert!(limiter.check(&alice, ip("203.0.113.9")).is_ok());
}

#[test]
fn normalised_names_share_a_limit() {
    let (limiter, _clock) = limiter(TIGHT);
    for typed in ["alice", "Alice", "ALICE"] {
        limiter.check(&name(typed), ip("198.51.100.1")).unwrap();
    }
    assert_eq!(
        limiter
            .check(&name("aLiCe"), ip("198.51.100.1"))
            .unwrap_err()
            .limited,
        Limited::Account
    );
}

#[test]
fn an_address_is_limited_across_accounts() {
    let limits = LoginLimits {
        address_burst: 4,
        address_per_minute: 6,
        ..TIGHT
    };
    let (limiter, clock) = limiter(limits);
    for i in 0..4 {
        limiter
            .check(&name(&format!("user{i}")), ip("198.51.100.7"))
            .unwrap();
    }
    let refused = limiter
        .check(&name("user9"), ip("198.51.100.7"))
        .unwrap_err();
    assert_eq!(refused.limited, Limited::Address);
    assert_eq!(refused.seconds(), 10);
    assert!(
        limiter.check(&name("user9"), ip("198.51.100.8")).is_ok(),
        "another address passes"
    );
    clock.advance(Duration::from_secs(10));
    assert!(limiter.check(&name("user9"), ip("198.51.100.7")).is_ok());
}

#[test]
fn ipv6_clients_share_their_64_and_mapped_ipv4_is_ipv4() {
    let limits = LoginLimits {
        address_burst: 2,
        address_per_minute: 1,
        ..TIGHT
    };
    let (limiter, _clock) = limiter(limits);
    limiter.check(&name("a"), ip("2001:db8:1:2::1")).unwrap();
    limiter
        .check(&name("b"), ip("2001:db8:1:2:ffff::9"))
        .unwrap();
    assert!(
        limiter.check(&name("c"), ip("2001:db8:1:2::abcd")).is_err(),
        "same /64"
    );
    assert!(
        limiter.check(&name("c"), ip("2001:db8:1:3::1")).is_ok(),
        "another /64"
    );

    limiter.check(&name("d"), ip("192.0.2.1")).unwrap();
    limiter.check(&name("e"), ip("::ffff:192.0.2.1")).unwrap();
    assert!(
        limiter.check(&name("f"), ip("192.0.2.1")).is_err(),
        "mapped IPv4 is the same client"
    );
}

#[test]
fn pruning_forgets_recovered_keys() {
    let (limiter, clock) = limiter(TIGHT);
    limiter.check(&name("alice"), ip("198.51.100.1")).unwrap();
    assert_eq!(limiter.tracked(), (1, 1));
    clock.advance(Duration::from_secs(3600));
    limiter.prune();
    assert_eq!(limiter.tracked(), (0, 0));
}

#[test]
fn zero_limits_are_refused_by_name() {
    let error = LoginLimiter::new(LoginLimits {
        account_burst: 0,
        ..LoginLimits::default()
    })
    .unwrap_err();
    assert_eq!(error.field, "account_burst");
    assert!(error.to_string().contains("account_burst"));
}

#[test]
fn retry_after_rounds_up_to_whole_seconds() {
    let at = |wait| RetryAfter {
        limited: Limited::Account,
        wait,
    };
    assert_eq!(at(Duration::from_millis(1)).seconds(), 1);
    assert_eq!(at(Duration::ZERO).seconds(), 1);
    assert_eq!(at(Duration::from_millis(19_001)).seconds(), 20);
    assert_eq!(at(Duration::from_secs(20)).seconds(), 20);
}

#[test]
fn unknown_names_share_one_budget_across_addresses() {
    let (limiter, clock) = limiter(TIGHT);
    // Two made-up names from two addresses spend the burst; the third is refused, wherever
    // it comes from, while the keyed limits still pass it.
    for (i, address) in ["198.51.100.1", "203.0.113.2"].into_iter().enumerate() {
        limiter
            .check(&name(&format!("nobody{i}")), ip(address))
            .unwrap();
        limiter.check_unknown().unwrap();
    }
    limiter.check(&name("nobody9"), ip("192.0.2.77")).unwrap();
    let refused = limiter.check_unknown().unwrap_err();
    assert_eq!(refused.limited, Limited::UnknownNames);
    assert_eq!(refused.seconds(), 10, "6 a minute: one every 10 s");
    // Known accounts are not charged to it: `check` still passes alice.
    assert!(limiter.check(&name("alice"), ip("192.0.2.77")).is_ok());
    clock.advance(Duration::from_secs(10));
    assert!(limiter.check_unknown().is_ok());
    assert!(limiter.check_unknown().is_err());
}

#[test]
fn a_zero_unknown_names_budget_is_refused_by_name() {
    let error = LoginLimiter::new(LoginLimits {
        unknown_names_burst: 0,
        ..LoginLimits::default()
    })
    .unwrap_err();
    assert_eq!(error.field, "unknown_names_burst");
}
