//! Fuzzes the front tier's dispatch and the route lookup and access policy behind it.
//!
//! Run with `cargo +nightly fuzz run front_dispatch` from `proxy/`. Properties, for any raw
//! request path: dispatch never panics; a path goes to the hub only when it decodes to `/hub`
//! or below (or is refused as ambiguous while spelled like the hub's); a path the data plane
//! routes lands on an owned route exactly when its decoded form is under that route's prefix,
//! and then carries that route's owner, so no spelling reaches an owned upstream without the
//! owner's check.

#![no_main]

use gantry_proxy::hub::front::{Dispatch, dispatch};
use gantry_proxy::path::canonical_path;
use gantry_proxy::{Access, Route, RouteChange, RouteOwner, RoutePrefix, RouteTable, Target};
use libfuzzer_sys::fuzz_target;

const OWNED: [(&str, &str); 3] = [
    ("/user/alice", "alice"),
    ("/user/alice/gpu", "alice"),
    ("/user/秀樹", "秀樹"),
];

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let decided = dispatch(raw);
    let decoded = canonical_path(raw);
    match (&decided, &decoded) {
        (Dispatch::Hub, Ok(path)) => {
            assert!(path.as_ref() == "/hub" || path.starts_with("/hub/"), "{raw:?}")
        }
        (Dispatch::Home, Ok(path)) => assert_eq!(path.as_ref(), "/", "{raw:?}"),
        (Dispatch::HubBadPath, Err(_)) => assert!(raw.starts_with("/hub"), "{raw:?}"),
        (Dispatch::DataPlane, _) => {}
        other => panic!("{raw:?}: {other:?}"),
    }
    let (Dispatch::DataPlane, Ok(path)) = (decided, decoded) else { return };

    let table = RouteTable::new(false);
    table.apply(RouteChange::Upsert(Route::new(
        RoutePrefix::parse("/", false).unwrap(),
        Target::parse("http://127.0.0.1:1").unwrap(),
        None,
    )));
    for (prefix, user) in OWNED {
        let owner = RouteOwner {
            user: user.into(),
            server: "".into(),
        };
        table.apply(RouteChange::Upsert(Route::owned(
            RoutePrefix::parse(prefix, false).unwrap(),
            Target::parse("http://127.0.0.1:2").unwrap(),
            owner,
        )));
    }
    let route = table.lookup(None, &path).unwrap();
    let trimmed = path.trim_end_matches('/');
    let under = |prefix: &str| trimmed == prefix || trimmed.starts_with(&format!("{prefix}/"));
    let expected = OWNED
        .iter()
        .filter(|(prefix, _)| under(prefix))
        .max_by_key(|(prefix, _)| prefix.len());
    match (route.access(), expected) {
        (Access::Owned(owner), Some((prefix, user))) => {
            assert_eq!(route.prefix().as_str(), *prefix, "{raw:?}");
            assert_eq!(&*owner.user, *user, "{raw:?}");
        }
        (Access::Open, None) => assert_eq!(route.prefix().as_str(), "/", "{raw:?}"),
        (access, expected) => panic!("{raw:?}: {access:?} but expected {expected:?}"),
    }
});
