//! An incremental decoder for HTTP/1.1 chunked transfer coding (RFC 9112 §7.1).
//!
//! Event streams have no length, so servers send them chunked, and a chunk boundary can fall
//! anywhere in what one read returns: inside the size line, between its CR and LF, in the
//! middle of an event. The decoder keeps the few bytes of state that needs and hands the
//! data out as slices of the input, so no body byte is copied before the SSE parser sees it.

/// Longest chunk-extension or trailer line accepted; a peer that sends more is broken.
const MAX_LINE: usize = 4096;

/// Why a chunked body cannot be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ChunkedError {
    /// The size line does not start with a hexadecimal number.
    #[error("chunk size line is not hexadecimal")]
    BadSize,
    /// The size does not fit in 64 bits.
    #[error("chunk size does not fit in 64 bits")]
    SizeOverflow,
    /// Chunk data not followed by CRLF.
    #[error("chunk data is not followed by CRLF")]
    MissingCrlf,
    /// A chunk extension or trailer line is longer than the decoder accepts.
    #[error("chunk extension or trailer line longer than {MAX_LINE} bytes")]
    LineTooLong,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits; the count of digits so far.
    Size { digits: u8 },
    /// Whitespace after the digits.
    SizeSpace,
    /// A chunk extension, skipped.
    Extension,
    /// The LF after the size line's CR.
    SizeLf,
    /// Chunk data; `size` bytes remain.
    Data,
    /// The CR after chunk data.
    DataCr,
    /// The LF after chunk data.
    DataLf,
    /// The start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field, skipped.
    TrailerLine,
    /// The LF of the final empty line.
    TrailerLf,
    /// The last chunk and its trailers were read.
    Done,
}

/// Decodes one chunked body, fed in pieces of any size.
#[derive(Debug, Clone)]
pub struct ChunkedDecoder {
    state: State,
    /// Remaining data bytes of the current chunk, or the size being read.
    size: u64,
    /// Length of the extension or trailer line being skipped.
    line_len: usize,
}

impl Default for ChunkedDecoder {
    fn default() -> Self {
        Self::new()
    }
}

impl ChunkedDecoder {
    /// A decoder at the start of a body.
    pub fn new() -> Self {
        Self {
            state: State::Size { digits: 0 },
            size: 0,
            line_len: 0,
        }
    }

    /// Whether the last chunk and its trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, passing each run of data bytes to `sink`; returns whether the body
    /// is complete. Bytes after the end of the body are ignored.
    pub fn feed<E: From<ChunkedError>>(
        &mut self,
        mut input: &[u8],
        mut sink: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<bool, E> {
        while let Some((&byte, rest)) = input.split_first() {
            match self.state {
                State::Done => break,
                State::Data => {
                    let take = usize::try_from(self.size)
                        .map_or(input.len(), |size| size.min(input.len()));
                    let (data, rest) = input.split_at(take);
                    sink(data)?;
                    self.size -= take as u64;
                    if self.size == 0 {
                        self.state = State::DataCr;
                    }
                    input = rest;
                }
                _ => {
                    self.step(byte)?;
                    input = rest;
                }
            }
        }
        Ok(self.is_done())
    }

    fn step(&mut self, byte: u8) -> Result<(), ChunkedError> {
        self.state = match self.state {
            State::Size { digits } => match hex_value(byte) {
                Some(value) => {
                    if self.size > u64::MAX >> 4 {
                        return Err(ChunkedError::SizeOverflow);
                    }
                    self.size = self.size << 4 | u64::from(value);
                    State::Size {
                        digits: digits.saturating_add(1),
                    }
                }
                None if digits == 0 => return Err(ChunkedError::BadSize),
                None => self.after_size(byte)?,
            },
            State::SizeSpace => match byte {
                b' ' | b'\t' => State::SizeSpace,
                _ => self.after_size(byte)?,
            },
            State::Extension => {
                self.line_len += 1;
                if self.line_len > MAX_LINE {
                    return Err(ChunkedError::LineTooLong);
                }
                match byte {
                    b'\r' => State::SizeLf,
                    b'\n' => self.end_size_line(),
                    _ => State::Extension,
                }
            }
            State::SizeLf => match byte {
                b'\n' => self.end_size_line(),
                _ => return Err(ChunkedError::BadSize),
            },
            State::DataCr => match byte {
                b'\r' => State::DataLf,
                // A bare LF is tolerated, as most clients do.
                b'\n' => self.start_size(),
                _ => return Err(ChunkedError::MissingCrlf),
            },
            State::DataLf => match byte {
                b'\n' => self.start_size(),
                _ => return Err(ChunkedError::MissingCrlf),
            },
            State::TrailerStart => match byte {
                b'\r' => State::TrailerLf,
                b'\n' => State::Done,
                _ => {
                    self.line_len = 1;
                    State::TrailerLine
                }
            },
            State::TrailerLine => {
                self.line_len += 1;
                if self.line_len > MAX_LINE {
                    return Err(ChunkedError::LineTooLong);
                }
                match byte {
                    b'\n' => State::TrailerStart,
                    _ => State::TrailerLine,
                }
            }
            State::TrailerLf => match byte {
                b'\n' => State::Done,
                _ => return Err(ChunkedError::MissingCrlf),
            },
            // `feed` handles data and the end itself; nothing to do for a stray call.
            state @ (State::Data | State::Done) => state,
        };
        Ok(())
    }

    /// The byte after the size digits (and optional whitespace).
    fn after_size(&mut self, byte: u8) -> Result<State, ChunkedError> {
        Ok(match byte {
            b' ' | b'\t' => State::SizeSpace,
            b';' => {
                self.line_len = 0;
                State::Extension
            }
            b'\r' => State::SizeLf,
            b'\n' => self.end_size_line(),
            _ => return Err(ChunkedError::BadSize),
        })
    }

    fn end_size_line(&mut self) -> State {
        self.line_len = 0;
        if self.size == 0 {
            State::TrailerStart
        } else {
            State::Data
        }
    }

    fn start_size(&mut self) -> State {
        self.size = 0;
        State::Size { digits: 0 }
    }
}

fn hex_value(byte: u8) -> Option<u8> {
    match byte {
        b'0'..=b'9' => Some(byte - b'0'),
        b'a'..=b'f' => Some(byte - b'a' + 10),
        b'A'..=b'F' => Some(byte - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Decodes `pieces` in order; returns the data and whether the body ended.
    fn decode(pieces: &[&[u8]]) -> Result<(Vec<u8>, bool), ChunkedError> {
        let mut decoder = ChunkedDecoder::new();
        let mut out = Vec::new();
        let mut done = false;
        for piece in pieces {
            done = decoder.feed(piece, |data: &[u8]| -> Result<(), ChunkedError> {
                out.extend_from_slice(data);
                Ok(())
            })?;
        }
        Ok((out, done))
    }

    const BODY: &[u8] =
        b"5\r\nhello\r\n1;name=value\r\n \r\nA \r\n0123456789\r\n0\r\nTrailer: x\r\n\r\nAFTER";

    #[test]
    fn decodes_a_whole_body() {
        let (data, done) = decode(&[BODY]).unwrap();
        assert_eq!(data, b"hello 0123456789");
        assert!(done);
    }

    #[test]
    fn decodes_split_at_every_boundary() {
        for cut in 0..=BODY.len() {
            let (head, tail) = BODY.split_at(cut);
            assert_eq!(
                decode(&[head, tail]).unwrap(),
                (b"hello 0123456789".to_vec(), true),
                "cut at {cut}"
            );
        }
        let bytes: Vec<&[u8]> = BODY.chunks(1).collect();
        assert_eq!(
            decode(&bytes).unwrap(),
            (b"hello 0123456789".to_vec(), true)
        );
    }

    #[test]
    fn an_open_stream_is_not_done() {
        let (data, done) = decode(&[b"3\r\nabc\r\n4\r\nde"]).unwrap();
        assert_eq!(data, b"abcde");
        assert!(!done);
    }

    #[test]
    fn accepts_uppercase_hex_and_bare_lf() {
        let (data, done) = decode(&[b"B\nhello world\n0\n\n"]).unwrap();
        assert_eq!(data, b"hello world");
        assert!(done);
    }

    #[test]
    fn rejects_malformed_bodies() {
        assert_eq!(decode(&[b"zz\r\n"]), Err(ChunkedError::BadSize));
        assert_eq!(decode(&[b"\r\n"]), Err(ChunkedError::BadSize));
        assert_eq!(decode(&[b"3\r\nabcX"]), Err(ChunkedError::MissingCrlf));
        assert_eq!(decode(&[b"3\rX"]), Err(ChunkedError::BadSize));
        assert_eq!(
            decode(&[b"11111111111111111\r\n"]),
            Err(ChunkedError::SizeOverflow)
        );
        let mut long = b"1;".to_vec();
        long.extend(std::iter::repeat_n(b'x', MAX_LINE + 1));
        assert_eq!(decode(&[&long]), Err(ChunkedError::LineTooLong));
    }

    #[test]
    fn sink_errors_stop_decoding() {
        #[derive(Debug, PartialEq)]
        enum Stop {
            Sink,
            Chunked,
        }
        impl From<ChunkedError> for Stop {
            fn from(_: ChunkedError) -> Self {
                Self::Chunked
            }
        }
        let mut decoder = ChunkedDecoder::new();
        let result = decoder.feed(b"3\r\nabc\r\n", |_: &[u8]| Err(Stop::Sink));
        assert_eq!(result, Err(Stop::Sink));
    }
}
