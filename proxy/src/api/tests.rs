use super::*;

#[test]
fn activity_is_written_like_javascript_iso_strings() {
    assert_eq!(format_millis(0), "1970-01-01T00:00:00.000Z");
    assert_eq!(format_millis(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
}

#[test]
fn inactive_since_accepts_iso_8601_forms() {
    let parse = |q: &str| inactive_since(Some(q));
    assert_eq!(parse("inactive_since=1970-01-01T00:00:01Z"), Ok(Some(1000)));
    assert_eq!(
        parse("inactive_since=1970-01-01T00:00:01.500%2B00:00"),
        Ok(Some(1500))
    );
    assert_eq!(parse("inactiveSince=1970-01-02"), Ok(Some(86_400_000)));
    assert_eq!(
        parse("inactive_since=1970-01-01T00:01:00"),
        Ok(Some(60_000))
    );
    assert_eq!(parse("other=1"), Ok(None));
    assert!(parse("inactive_since=yesterday").is_err());
    assert!(parse("inactive_since=").is_err());
}
