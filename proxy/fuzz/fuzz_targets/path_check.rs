//! Fuzzes the path-safety check and the route lookup behind it.
//!
//! Run with `cargo +nightly fuzz run path_check` from `proxy/`. Properties, for any input:
//! the check never panics; an accepted path decodes without adding or removing a segment
//! boundary, holds no dot or empty inner segment and no backslash, and a second decode moves
//! no boundary either; a lookup of an accepted path never panics and only ever returns a
//! route whose prefix the path starts with segment by segment.

#![no_main]

use gantry_proxy::path::canonical_path;
use gantry_proxy::{Route, RouteChange, RoutePrefix, RouteTable, Target};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(raw) = std::str::from_utf8(data) else { return };
    let Ok(decoded) = canonical_path(raw) else { return };
    assert_eq!(decoded.matches('/').count(), raw.matches('/').count(), "{raw:?}");
    let segments: Vec<&str> = decoded[1..].split('/').collect();
    for (i, segment) in segments.iter().enumerate() {
        assert!(*segment != "." && *segment != "..", "{raw:?}");
        assert!(!segment.is_empty() || i + 1 == segments.len(), "{raw:?}");
    }
    assert!(!decoded.contains('\\'), "{raw:?}");
    let twice = percent_encoding::percent_decode_str(&decoded).decode_utf8_lossy();
    assert_eq!(twice.matches('/').count(), decoded.matches('/').count(), "{raw:?}");

    let table = RouteTable::new(false);
    for prefix in ["/", "/user/a", "/user/a/lab", "/hub"] {
        let route = Route::new(
            RoutePrefix::parse(prefix, false).unwrap(),
            Target::parse("http://127.0.0.1:1").unwrap(),
            None,
        );
        table.apply(RouteChange::Upsert(route));
    }
    let route = table.lookup(None, &decoded).unwrap();
    let prefix = route.prefix().as_str();
    let path = decoded.trim_end_matches('/');
    assert!(
        prefix == "/" || path == prefix || path.starts_with(&format!("{prefix}/")),
        "{raw:?} routed to {prefix}"
    );
});
