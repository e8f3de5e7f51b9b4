//! The book of logins in flight: bounded per provider and per address, one per browser and
//! provider, and no flood pushes out another browser's login.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use super::*;

const ALICE: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
const LIFETIME: Duration = Duration::from_secs(900);

fn new_book(in_flight: usize, per_address: usize) -> PendingLogins {
    PendingLogins::with_lifetime(
        PendingLimits {
            in_flight,
            per_address,
        },
        LIFETIME,
    )
}

fn login(state: &str) -> PendingLogin {
    PendingLogin::from_parts(state.to_owned(), format!("n-{state}"), format!("v-{state}"))
}

fn home() -> SafeRedirect {
    SafeRedirect::parse("/hub/home").unwrap()
}

/// A browser's OpenID cookie value (what `take` is given) and its hash (what `insert` keeps).
fn browser(name: &str) -> (String, SecretHash) {
    let value = format!("cookie-of-{name}");
    let hash = SecretHash::of(&value);
    (value, hash)
}

fn flooder(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(198, 51, 100, u8::try_from(i % 250).unwrap()))
}

#[test]
fn a_full_provider_refuses_new_logins_and_keeps_every_login_in_flight() {
    let now = Instant::now();
    let book = new_book(3, 100);
    let (alice_cookie, alice) = browser("alice");
    book.insert("lab", login("alice-state"), home(), alice, ALICE, now)
        .unwrap();
    // A flood of cookie-less clients (each a new cookie) from many addresses.
    for i in 0..2 {
        let (_, hash) = browser(&format!("bot{i}"));
        book.insert(
            "lab",
            login(&format!("bot{i}")),
            home(),
            hash,
            flooder(i),
            now,
        )
        .unwrap();
    }
    for i in 2..50 {
        let (_, hash) = browser(&format!("bot{i}"));
        let later = now + Duration::from_secs(60);
        let refused = book.insert(
            "lab",
            login(&format!("bot{i}")),
            home(),
            hash,
            flooder(i),
            later,
        );
        match refused {
            // The oldest expires 900 s after `now`, 840 s after `later`.
            Err(HubError::OidcLoginsFull {
                in_flight: 3,
                retry_after_secs: 840,
                ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(book.len(), 3);
    // Alice's login survived the flood and finishes.
    let taken = book.take("alice-state", Some(&alice_cookie)).unwrap();
    assert_eq!(taken.provider, "lab");
    assert_eq!(taken.login.nonce(), "n-alice-state");
    // Which made room for one more.
    let (_, carol) = browser("carol");
    book.insert("lab", login("carol"), home(), carol, ALICE, now)
        .unwrap();
}

#[test]
fn the_cap_is_per_provider() {
    let now = Instant::now();
    let book = new_book(1, 100);
    let (_, a) = browser("a");
    let (_, b) = browser("b");
    book.insert("lab", login("s1"), home(), a, ALICE, now)
        .unwrap();
    assert!(matches!(
        book.insert("lab", login("s2"), home(), b.clone(), ALICE, now),
        Err(HubError::OidcLoginsFull { .. })
    ));
    book.insert("uni", login("s3"), home(), b, ALICE, now)
        .unwrap();
    assert_eq!(book.len(), 2);
}

#[test]
fn one_address_fills_only_its_share() {
    let now = Instant::now();
    let book = new_book(10, 3);
    for i in 0..3 {
        let (_, hash) = browser(&format!("bot{i}"));
        book.insert("lab", login(&format!("bot{i}")), home(), hash, ALICE, now)
            .unwrap();
    }
    let (_, hash) = browser("bot3");
    assert!(matches!(
        book.insert("lab", login("bot3"), home(), hash.clone(), ALICE, now),
        Err(HubError::OidcLoginsFromAddress {
            in_flight: 3,
            retry_after_secs: 900,
        })
    ));
    // Another provider counts against the same address.
    assert!(matches!(
        book.insert("uni", login("bot3"), home(), hash, ALICE, now),
        Err(HubError::OidcLoginsFromAddress { .. })
    ));
    // Other addresses are not affected.
    let (_, bob) = browser("bob");
    book.insert("lab", login("bob"), home(), bob, flooder(1), now)
        .unwrap();
    assert_eq!(book.len(), 4);
}

#[test]
fn ipv6_clients_share_their_64() {
    let now = Instant::now();
    let book = new_book(10, 1);
    let host = |last: u16| IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 1, 0, 0, 0, last));
    let (_, a) = browser("a");
    let (_, b) = browser("b");
    book.insert("lab", login("a"), home(), a, host(1), now)
        .unwrap();
    assert!(matches!(
        book.insert("lab", login("b"), home(), b, host(2), now),
        Err(HubError::OidcLoginsFromAddress { .. })
    ));
}

#[test]
fn a_browser_replaces_only_its_own_login_with_the_same_provider() {
    let now = Instant::now();
    let book = new_book(2, 2);
    let (alice_cookie, alice) = browser("alice");
    let (bob_cookie, bob) = browser("bob");
    book.insert("lab", login("bob-1"), home(), bob, ALICE, now)
        .unwrap();
    book.insert("lab", login("alice-1"), home(), alice.clone(), ALICE, now)
        .unwrap();
    // Both caps are reached, yet Alice may start again: her new login takes her old one's
    // place, and Bob's stays.
    book.insert("lab", login("alice-2"), home(), alice.clone(), ALICE, now)
        .unwrap();
    assert_eq!(book.len(), 2);
    assert!(book.take("alice-1", Some(&alice_cookie)).is_none());
    // Her login with another provider is her own too, and does not replace the first.
    let other = new_book(2, 3);
    other
        .insert("lab", login("a-lab"), home(), alice.clone(), ALICE, now)
        .unwrap();
    other
        .insert("uni", login("a-uni"), home(), alice, ALICE, now)
        .unwrap();
    assert_eq!(other.len(), 2);
    assert!(other.take("a-lab", Some(&alice_cookie)).is_some());
    assert!(other.take("a-uni", Some(&alice_cookie)).is_some());
    // Back in the first book, both remaining logins finish.
    assert!(book.take("alice-2", Some(&alice_cookie)).is_some());
    assert!(book.take("bob-1", Some(&bob_cookie)).is_some());
    assert_eq!(book.len(), 0);
}

#[test]
fn a_refused_browser_keeps_its_previous_login() {
    let now = Instant::now();
    // The address cap is full with Alice's two logins at two providers; her login at a
    // third provider is refused and both stay.
    let book = new_book(10, 2);
    let (cookie, alice) = browser("alice");
    book.insert("lab", login("lab-1"), home(), alice.clone(), ALICE, now)
        .unwrap();
    book.insert("uni", login("uni-1"), home(), alice.clone(), ALICE, now)
        .unwrap();
    assert!(matches!(
        book.insert("org", login("org-1"), home(), alice, ALICE, now),
        Err(HubError::OidcLoginsFromAddress { .. })
    ));
    assert!(book.take("lab-1", Some(&cookie)).is_some());
    assert!(book.take("uni-1", Some(&cookie)).is_some());
}

#[test]
fn logins_expire_and_free_their_places() {
    let now = Instant::now();
    let book = new_book(1, 1);
    let (_, a) = browser("a");
    let (_, b) = browser("b");
    book.insert("lab", login("old"), home(), a, ALICE, now)
        .unwrap();
    assert!(
        book.insert("lab", login("new"), home(), b.clone(), ALICE, now)
            .is_err()
    );
    book.insert("lab", login("new"), home(), b, ALICE, now + LIFETIME)
        .unwrap();
    assert_eq!(book.len(), 1);
    book.prune(now + LIFETIME * 2);
    assert_eq!(book.len(), 0);
    let inner = book.book();
    assert!(inner.by_age.is_empty() && inner.by_browser.is_empty());
    assert!(inner.by_provider.is_empty() && inner.by_address.is_empty());
}

#[test]
fn a_login_is_taken_once_and_only_by_its_browser() {
    let now = Instant::now();
    let book = new_book(10, 10);
    let (cookie, alice) = browser("alice");
    let (other_cookie, _) = browser("mallory");
    book.insert("lab", login("s"), home(), alice.clone(), ALICE, now)
        .unwrap();
    assert!(book.take("s", Some(&other_cookie)).is_none());
    // A wrong browser burns the state: single use.
    assert!(book.take("s", Some(&cookie)).is_none());
    book.insert("lab", login("t"), home(), alice, ALICE, now)
        .unwrap();
    assert!(book.take("t", None).is_none());
    assert!(book.take("unknown", Some(&cookie)).is_none());
    assert_eq!(book.len(), 0);
}

#[test]
fn the_indexes_stay_in_step_with_the_logins() {
    let now = Instant::now();
    let book = new_book(50, 50);
    let mut cookies = Vec::new();
    for i in 0..40 {
        // Ten browsers, four logins each over two providers: replacements on the way.
        let (cookie, hash) = browser(&format!("b{}", i % 10));
        let provider = if (i / 10) % 2 == 0 { "lab" } else { "uni" };
        book.insert(
            provider,
            login(&format!("s{i}")),
            home(),
            hash,
            flooder(i % 7),
            now,
        )
        .unwrap();
        cookies.push(cookie);
    }
    {
        let inner = book.book();
        let n = inner.by_state.len();
        assert_eq!(n, 20, "one per browser and provider");
        assert_eq!(inner.by_age.len(), n);
        assert_eq!(inner.by_browser.len(), n);
        assert_eq!(
            inner.by_provider.values().map(BTreeSet::len).sum::<usize>(),
            n
        );
        assert_eq!(
            inner.by_address.values().map(BTreeSet::len).sum::<usize>(),
            n
        );
    }
    for (i, cookie) in cookies.iter().enumerate() {
        let _ = book.take(&format!("s{i}"), Some(cookie));
    }
    let inner = book.book();
    assert!(inner.by_state.is_empty() && inner.by_age.is_empty());
    assert!(inner.by_browser.is_empty() && inner.by_provider.is_empty());
    assert!(inner.by_address.is_empty());
}
