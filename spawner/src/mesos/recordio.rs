//! RecordIO, the framing of the master's event stream (`docs/recordio.md`):
//!
//! ```text
//! records     = *record
//! record      = record-size LF record-data
//! record-size = 1*DIGIT            ; decimal, never 0
//! record-data = record-size(OCTET)
//! ```
//!
//! Nothing separates a record from the next size. HTTP chunk boundaries mean nothing (a proxy
//! may re-chunk), so [`Decoder`] is a pure state machine fed arbitrary pieces of the byte
//! stream: a size split across pieces, several records in one piece, a record spread over
//! many are all the same to it. It reads no socket and knows no JSON.

use std::collections::VecDeque;

#[cfg(test)]
mod tests;

/// The most digits a size may have: `u64::MAX` has 20.
const MAX_SIZE_DIGITS: usize = 20;

/// Why the stream cannot be decoded; after one, the stream is unusable and must be dropped.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordIoError {
    /// A byte other than a digit or the line feed in a size.
    #[error("RecordIO: expected a decimal record size, found byte 0x{0:02x}")]
    BadSizeByte(u8),
    /// A line feed with no digits before it.
    #[error("RecordIO: empty record size")]
    EmptySize,
    /// A size of 0, which the grammar forbids.
    #[error("RecordIO: record size 0")]
    ZeroSize,
    /// A size with more digits than a `u64` has, or larger than one.
    #[error("RecordIO: record size does not fit in 64 bits")]
    SizeTooLong,
    /// A record larger than the decoder accepts.
    #[error("RecordIO: record of {size} bytes is larger than the limit of {limit}")]
    TooLarge {
        /// The announced size.
        size: u64,
        /// The limit.
        limit: usize,
    },
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum State {
    /// Reading the digits of a size.
    Size { digits: usize, value: u64 },
    /// Reading `remaining` more bytes of a record.
    Data { remaining: usize },
    /// A previous error: nothing more is decoded.
    Failed(RecordIoError),
}

/// A streaming RecordIO decoder; see the module documentation.
#[derive(Clone, Debug)]
pub struct Decoder {
    state: State,
    limit: usize,
    current: Vec<u8>,
    ready: VecDeque<Vec<u8>>,
}

impl Decoder {
    /// A decoder that refuses records larger than `limit` bytes (a guard against a garbage
    /// size making it buffer without end).
    pub fn new(limit: usize) -> Self {
        Self {
            state: State::Size {
                digits: 0,
                value: 0,
            },
            limit,
            current: Vec::new(),
            ready: VecDeque::new(),
        }
    }

    /// Feeds the next piece of the stream. Records it completes become available from
    /// [`Decoder::next_record`]; an error is returned, and then again by every later call.
    pub fn feed(&mut self, mut bytes: &[u8]) -> Result<(), RecordIoError> {
        while let Some((&b, rest)) = bytes.split_first() {
            match self.state.clone() {
                State::Failed(e) => return Err(e),
                State::Size { digits, value } => {
                    bytes = rest;
                    match b {
                        b'0'..=b'9' => {
                            let next = value
                                .checked_mul(10)
                                .and_then(|v| v.checked_add(u64::from(b - b'0')));
                            match next {
                                Some(v) if digits < MAX_SIZE_DIGITS => {
                                    self.state = State::Size {
                                        digits: digits + 1,
                                        value: v,
                                    };
                                }
                                _ => return self.fail(RecordIoError::SizeTooLong),
                            }
                        }
                        b'\n' if digits == 0 => return self.fail(RecordIoError::EmptySize),
                        b'\n' if value == 0 => return self.fail(RecordIoError::ZeroSize),
                        b'\n' => match usize::try_from(value) {
                            Ok(size) if size <= self.limit => {
                                self.current = Vec::with_capacity(size);
                                self.state = State::Data { remaining: size };
                            }
                            _ => {
                                let limit = self.limit;
                                return self.fail(RecordIoError::TooLarge { size: value, limit });
                            }
                        },
                        other => return self.fail(RecordIoError::BadSizeByte(other)),
                    }
                }
                State::Data { remaining } => {
                    let take = remaining.min(bytes.len());
                    self.current.extend_from_slice(&bytes[..take]);
                    bytes = &bytes[take..];
                    if take == remaining {
                        self.ready.push_back(std::mem::take(&mut self.current));
                        self.state = State::Size {
                            digits: 0,
                            value: 0,
                        };
                    } else {
                        self.state = State::Data {
                            remaining: remaining - take,
                        };
                    }
                }
            }
        }
        match &self.state {
            State::Failed(e) => Err(e.clone()),
            _ => Ok(()),
        }
    }

    fn fail(&mut self, e: RecordIoError) -> Result<(), RecordIoError> {
        self.state = State::Failed(e.clone());
        Err(e)
    }

    /// The next complete record, oldest first.
    pub fn next_record(&mut self) -> Option<Vec<u8>> {
        self.ready.pop_front()
    }

    /// Whether the decoder is between records (nothing partial buffered): where a stream may
    /// end cleanly.
    pub fn is_at_boundary(&self) -> bool {
        matches!(
            self.state,
            State::Size {
                digits: 0,
                value: 0
            }
        )
    }
}

/// Frames one record: its size, a line feed, the data.
pub fn encode(record: &[u8]) -> Vec<u8> {
    let mut out = format!("{}\n", record.len()).into_bytes();
    out.extend_from_slice(record);
    out
}
