#![allow(clippy::unwrap_used)] // Tests: a panic is the failure report.

use proptest::prelude::*;

use super::*;

fn drain(decoder: &mut Decoder) -> Vec<Vec<u8>> {
    std::iter::from_fn(|| decoder.next_record()).collect()
}

#[test]
fn two_records_in_one_piece_and_one_record_in_many() {
    let stream = b"20\n{\"type\":\"HEARTBEAT\"}3\nabc";
    let mut d = Decoder::new(1024);
    d.feed(stream).unwrap();
    assert_eq!(
        drain(&mut d),
        [b"{\"type\":\"HEARTBEAT\"}".to_vec(), b"abc".to_vec()]
    );
    assert!(d.is_at_boundary());

    let mut d = Decoder::new(1024);
    for b in stream {
        d.feed(std::slice::from_ref(b)).unwrap();
    }
    assert_eq!(drain(&mut d).len(), 2);
}

#[test]
fn a_partial_record_waits_for_the_rest() {
    let mut d = Decoder::new(1024);
    d.feed(b"1").unwrap();
    d.feed(b"0\nhello").unwrap();
    assert_eq!(d.next_record(), None);
    assert!(!d.is_at_boundary());
    d.feed(b"world").unwrap();
    assert_eq!(d.next_record().unwrap(), b"helloworld");
    assert!(d.is_at_boundary());
}

#[test]
fn garbage_sizes_are_refused_and_stay_refused() {
    let cases: [(&[u8], RecordIoError); 6] = [
        (b"x\n", RecordIoError::BadSizeByte(b'x')),
        (b"12 \n", RecordIoError::BadSizeByte(b' ')),
        (b"\nabc", RecordIoError::EmptySize),
        (b"0\n", RecordIoError::ZeroSize),
        (b"123456789012345678901\n", RecordIoError::SizeTooLong),
        (
            b"99999\n",
            RecordIoError::TooLarge {
                size: 99999,
                limit: 1024,
            },
        ),
    ];
    for (input, expected) in cases {
        let mut d = Decoder::new(1024);
        assert_eq!(d.feed(input), Err(expected.clone()), "{input:?}");
        assert_eq!(
            d.feed(b"3\nabc"),
            Err(expected.clone()),
            "{input:?} then more"
        );
        assert_eq!(d.feed(b""), Err(expected), "{input:?} then nothing");
        assert_eq!(d.next_record(), None);
    }
    // Twenty digits that overflow a u64.
    let mut d = Decoder::new(usize::MAX);
    assert_eq!(
        d.feed(b"99999999999999999999\n"),
        Err(RecordIoError::SizeTooLong)
    );
}

#[test]
fn encode_frames_with_the_decimal_length() {
    assert_eq!(encode(b"{}"), b"2\n{}");
    assert_eq!(encode(&[b'x'; 12]), [&b"12\n"[..], &[b'x'; 12]].concat());
}

proptest! {
    /// Any records, framed and cut at any points, decode to the same records.
    #[test]
    fn any_chunking_decodes_the_same_records(
        records in prop::collection::vec(prop::collection::vec(any::<u8>(), 1..300), 0..12),
        cuts in prop::collection::vec(any::<prop::sample::Index>(), 0..40),
    ) {
        let stream: Vec<u8> = records.iter().flat_map(|r| encode(r)).collect();
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(stream.len() + 1)).collect();
        points.push(0);
        points.push(stream.len());
        points.sort_unstable();
        let mut d = Decoder::new(4096);
        let mut out = Vec::new();
        for w in points.windows(2) {
            d.feed(&stream[w[0]..w[1]]).unwrap();
            out.extend(std::iter::from_fn(|| d.next_record()));
        }
        prop_assert_eq!(out, records);
        prop_assert!(d.is_at_boundary());
    }

    /// Arbitrary bytes never panic the decoder, and whatever it yields fits the limit.
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..200)) {
        let mut d = Decoder::new(64);
        let _ = d.feed(&bytes);
        while let Some(r) = d.next_record() {
            prop_assert!(!r.is_empty() && r.len() <= 64);
        }
    }
}
