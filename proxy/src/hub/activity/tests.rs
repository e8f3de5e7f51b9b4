use proptest::prelude::*;

use super::*;

const T0: i64 = 1_750_000_000;

fn at(offset: i64) -> Timestamp {
    Timestamp::from_second(T0 + offset).unwrap()
}

#[test]
fn notes_are_written_once_per_window() {
    let mut seen = Seen::first(at(0), at(0));
    assert_eq!(seen.note(at(10), at(10)), None);
    assert_eq!(seen.note(at(29), at(29)), None);
    // The window since the last write is over: the latest goes out.
    assert_eq!(seen.note(at(30), at(30)), Some(at(30)));
    assert_eq!(seen.note(at(31), at(31)), None);
    // An older activity (a report of the past) moves nothing.
    assert_eq!(seen.note(at(-100), at(70)), Some(at(31)));
    assert_eq!(seen.note(at(-100), at(200)), None);
    assert_eq!(seen.latest, at(31));
}

#[test]
fn a_report_of_the_past_does_not_bring_the_next_write_forward() {
    // First seen through a report of an hour ago: written at once...
    let mut seen = Seen::first(at(-3600), at(0));
    // ...and a request a second later waits for the window all the same.
    assert_eq!(seen.note(at(1), at(1)), None);
    assert_eq!(seen.note(at(30), at(30)), Some(at(30)));
}

#[test]
fn flush_writes_what_the_window_held_back_then_lets_go() {
    let mut seen = Seen::first(at(0), at(0));
    assert_eq!(seen.note(at(20), at(20)), None);
    // Within the window: kept, unwritten.
    assert_eq!(seen.flush(at(29)), Flush::Keep);
    // The window is over: the held-back activity is written.
    assert_eq!(seen.flush(at(30)), Flush::Write(at(20)));
    // Written at 30: nothing more to write, and the entry goes once that write is old.
    assert_eq!(seen.flush(at(59)), Flush::Keep);
    assert_eq!(seen.flush(at(60)), Flush::Drop);
}

#[test]
fn a_first_sighting_is_written_at_once_and_dropped_after_the_window() {
    let mut seen = Seen::first(at(0), at(0));
    assert_eq!(seen.flush(at(10)), Flush::Keep);
    assert_eq!(seen.flush(at(30)), Flush::Drop);
}

proptest! {
    /// Whatever the notes (of the present or the past) and flushes, one user's store writes
    /// are at least the window apart by the clock, only move forward, and a flush past the
    /// window leaves the store with the latest activity noted.
    #[test]
    fn writes_are_spaced_forward_and_complete(
        steps in proptest::collection::vec((0i64..40, 0i64..120, proptest::bool::ANY), 1..60),
    ) {
        let mut now = 0;
        let mut seen = Seen::first(at(0), at(0));
        // (when, what) of every write.
        let mut writes = vec![(at(0), at(0))];
        let mut latest = at(0);
        for (advance, back, is_flush) in steps {
            now += advance;
            let write = if is_flush {
                match seen.flush(at(now)) {
                    Flush::Write(t) => Some(t),
                    Flush::Keep | Flush::Drop => None,
                }
            } else {
                let noted = at(now - back);
                latest = latest.max(noted);
                seen.note(noted, at(now))
            };
            if let Some(t) = write {
                writes.push((at(now), t));
            }
        }
        for pair in writes.windows(2) {
            let ((when0, what0), (when1, what1)) = (pair[0], pair[1]);
            prop_assert!(when1.duration_since(when0) >= COALESCE, "{when0} then {when1}");
            prop_assert!(what1 > what0, "{what0} then {what1}");
        }
        let end = at(now) + COALESCE;
        if let Flush::Write(t) = seen.flush(end) {
            writes.push((end, t));
        }
        prop_assert_eq!(writes.last().map(|w| w.1), Some(latest));
        prop_assert_eq!(seen.flush(end + COALESCE), Flush::Drop);
    }
}
