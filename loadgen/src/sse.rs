//! An incremental Server-Sent Events parser over bytes, as the HTML standard specifies it
//! (<https://html.spec.whatwg.org/multipage/server-sent-events.html#event-stream-interpretation>).
//!
//! A measuring tool must parse exactly what a browser would: lines end at CRLF, LF or a lone
//! CR (also when the CR and LF arrive in different reads), `data` lines join with LF, `id`
//! persists across events, an event without data is not dispatched, one leading space after
//! the colon is dropped, and a leading BOM is skipped. It must also be cheap with 20 000
//! streams in one process: complete lines are parsed straight out of the read buffer, only a
//! line cut by a read boundary is copied, and the buffers an event needs are kept and reused
//! rather than allocated per event.

use memchr::memchr2;

/// Largest line or event data loadgen accepts before calling the stream broken; keeps a
/// misbehaving server from growing the tool's memory without bound.
pub const DEFAULT_MAX_EVENT_BYTES: usize = 1 << 20;

/// Buffers that grew past this are shrunk after use, so one huge event does not pin memory
/// for the rest of a connection's life.
const KEEP_CAPACITY: usize = 64 * 1024;

/// Why a stream cannot be parsed further.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SseError {
    /// A line longer than the limit.
    #[error("an event stream line is longer than {limit} bytes")]
    LineTooLong {
        /// The limit.
        limit: usize,
    },
    /// An event whose data is longer than the limit.
    #[error("an event's data is longer than {limit} bytes")]
    EventTooLarge {
        /// The limit.
        limit: usize,
    },
}

/// One dispatched event; borrows the parser's buffers until the handler returns.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Event<'a> {
    /// The `event` field; empty means the default type, `message`.
    pub event_type: &'a [u8],
    /// The `data` lines joined with LF.
    pub data: &'a [u8],
    /// The last event id: the most recent `id` field of this stream, in this event or before.
    pub last_id: &'a [u8],
    /// Whether this event itself carried an `id` field.
    pub has_id: bool,
}

impl Event<'_> {
    /// The event type with the default applied.
    pub fn type_name(&self) -> &[u8] {
        if self.event_type.is_empty() {
            b"message"
        } else {
            self.event_type
        }
    }
}

/// What the parser reports besides events.
pub trait SseHandler {
    /// A complete event.
    fn on_event(&mut self, event: &Event<'_>);
    /// A comment line (the text after the colon); servers send these as keep-alives.
    fn on_comment(&mut self, _text: &[u8]) {}
    /// A valid `retry` field, in milliseconds.
    fn on_retry(&mut self, _millis: u64) {}
}

/// The parser's state for one stream.
#[derive(Debug, Clone)]
pub struct SseParser {
    /// The start of a line cut by the end of the previous input.
    partial: Vec<u8>,
    data: Vec<u8>,
    event_type: Vec<u8>,
    last_id: Vec<u8>,
    event_has_id: bool,
    /// The previous input ended in CR: an LF starting the next one belongs to it.
    after_cr: bool,
    /// No line has been completed yet (a BOM may start it).
    first_line: bool,
    max_bytes: usize,
}

impl Default for SseParser {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_EVENT_BYTES)
    }
}

impl SseParser {
    /// A parser for a new stream that refuses lines and events longer than `max_bytes`.
    pub fn new(max_bytes: usize) -> Self {
        Self {
            partial: Vec::new(),
            data: Vec::new(),
            event_type: Vec::new(),
            last_id: Vec::new(),
            event_has_id: false,
            after_cr: false,
            first_line: true,
            max_bytes,
        }
    }

    /// Parses the next bytes of the stream; they may end anywhere, even inside a CRLF.
    pub fn feed(
        &mut self,
        mut input: &[u8],
        handler: &mut impl SseHandler,
    ) -> Result<(), SseError> {
        if input.is_empty() {
            return Ok(());
        }
        if self.after_cr {
            self.after_cr = false;
            if let Some(rest) = input.strip_prefix(b"\n") {
                input = rest;
            }
        }
        while let Some(end) = memchr2(b'\n', b'\r', input) {
            let next = match input.get(end..) {
                Some([b'\r', b'\n', ..]) => end + 2,
                Some([b'\r']) => {
                    self.after_cr = true;
                    end + 1
                }
                _ => end + 1,
            };
            if self.partial.is_empty() {
                self.check_line(end)?;
                self.line(&input[..end], handler)?;
            } else {
                self.check_line(self.partial.len() + end)?;
                let mut line = std::mem::take(&mut self.partial);
                line.extend_from_slice(&input[..end]);
                let result = self.line(&line, handler);
                line.clear();
                if line.capacity() > KEEP_CAPACITY {
                    line.shrink_to(KEEP_CAPACITY / 16);
                }
                self.partial = line;
                result?;
            }
            input = &input[next..];
        }
        if !input.is_empty() {
            self.check_line(self.partial.len() + input.len())?;
            self.partial.extend_from_slice(input);
        }
        Ok(())
    }

    /// Bytes held for this stream beyond the struct itself (for memory accounting).
    pub fn heap_bytes(&self) -> usize {
        self.partial.capacity()
            + self.data.capacity()
            + self.event_type.capacity()
            + self.last_id.capacity()
    }

    fn check_line(&self, len: usize) -> Result<(), SseError> {
        if len > self.max_bytes {
            Err(SseError::LineTooLong {
                limit: self.max_bytes,
            })
        } else {
            Ok(())
        }
    }

    fn line(&mut self, mut line: &[u8], handler: &mut impl SseHandler) -> Result<(), SseError> {
        if self.first_line {
            self.first_line = false;
            if let Some(rest) = line.strip_prefix("\u{feff}".as_bytes()) {
                line = rest;
            }
        }
        if line.is_empty() {
            self.dispatch(handler);
            return Ok(());
        }
        if let Some(comment) = line.strip_prefix(b":") {
            handler.on_comment(comment);
            return Ok(());
        }
        let (name, value) = match memchr::memchr(b':', line) {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        match name {
            b"data" => {
                if self.data.len() + value.len() + 1 > self.max_bytes {
                    return Err(SseError::EventTooLarge {
                        limit: self.max_bytes,
                    });
                }
                self.data.extend_from_slice(value);
                self.data.push(b'\n');
            }
            b"event" => {
                self.event_type.clear();
                self.event_type.extend_from_slice(value);
            }
            // An id containing NUL is ignored.
            b"id" if !value.contains(&0) => {
                self.last_id.clear();
                self.last_id.extend_from_slice(value);
                self.event_has_id = true;
            }
            // A retry that is not all digits is ignored.
            b"retry" if !value.is_empty() && value.iter().all(u8::is_ascii_digit) => {
                let millis = value.iter().fold(0u64, |acc, digit| {
                    acc.saturating_mul(10)
                        .saturating_add(u64::from(digit - b'0'))
                });
                handler.on_retry(millis);
            }
            _ => {}
        }
        Ok(())
    }

    fn dispatch(&mut self, handler: &mut impl SseHandler) {
        if !self.data.is_empty() {
            // Every data line appended an LF; the last one is not part of the data.
            let data_len = self.data.len() - 1;
            handler.on_event(&Event {
                event_type: &self.event_type,
                data: &self.data[..data_len],
                last_id: &self.last_id,
                has_id: self.event_has_id,
            });
        }
        self.data.clear();
        if self.data.capacity() > KEEP_CAPACITY {
            self.data.shrink_to(KEEP_CAPACITY / 16);
        }
        self.event_type.clear();
        self.event_has_id = false;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Clone, PartialEq, Eq)]
    enum Item {
        Event {
            event_type: String,
            data: String,
            last_id: String,
            has_id: bool,
        },
        Comment(String),
        Retry(u64),
    }

    #[derive(Default)]
    struct Collect(Vec<Item>);

    impl SseHandler for Collect {
        fn on_event(&mut self, event: &Event<'_>) {
            self.0.push(Item::Event {
                event_type: String::from_utf8_lossy(event.type_name()).into_owned(),
                data: String::from_utf8_lossy(event.data).into_owned(),
                last_id: String::from_utf8_lossy(event.last_id).into_owned(),
                has_id: event.has_id,
            });
        }
        fn on_comment(&mut self, text: &[u8]) {
            self.0
                .push(Item::Comment(String::from_utf8_lossy(text).into_owned()));
        }
        fn on_retry(&mut self, millis: u64) {
            self.0.push(Item::Retry(millis));
        }
    }

    fn parse_pieces(pieces: &[&[u8]]) -> Vec<Item> {
        let mut parser = SseParser::default();
        let mut collect = Collect::default();
        for piece in pieces {
            parser.feed(piece, &mut collect).unwrap();
        }
        collect.0
    }

    fn parse(text: &str) -> Vec<Item> {
        parse_pieces(&[text.as_bytes()])
    }

    fn event(event_type: &str, data: &str, last_id: &str, has_id: bool) -> Item {
        Item::Event {
            event_type: event_type.into(),
            data: data.into(),
            last_id: last_id.into(),
            has_id,
        }
    }

    #[test]
    fn parses_a_simple_event() {
        assert_eq!(
            parse("data: hello\n\n"),
            vec![event("message", "hello", "", false)]
        );
    }

    #[test]
    fn parses_the_counter_stream() {
        let stream = "event: new_message\nid: 1\nretry: 15000\ndata: Counter value 1\n\n\
                      event: end_event\ndata: End of the stream\n\n";
        assert_eq!(
            parse(stream),
            vec![
                Item::Retry(15000),
                event("new_message", "Counter value 1", "1", true),
                // The id persists, but this event did not carry one.
                event("end_event", "End of the stream", "1", false),
            ]
        );
    }

    #[test]
    fn joins_data_lines_with_lf() {
        assert_eq!(
            parse("data: a\ndata:b\ndata\ndata:  c\n\n"),
            vec![event("message", "a\nb\n\n c", "", false)]
        );
    }

    #[test]
    fn an_empty_data_field_still_dispatches() {
        assert_eq!(parse("data\n\n"), vec![event("message", "", "", false)]);
        assert_eq!(parse("data:\n\n"), vec![event("message", "", "", false)]);
    }

    #[test]
    fn events_without_data_are_not_dispatched_but_set_the_id() {
        assert_eq!(
            parse("event: x\nid: 7\n\ndata: y\n\n"),
            vec![event("message", "y", "7", false)]
        );
    }

    #[test]
    fn accepts_every_line_ending() {
        let expected = vec![
            event("a", "1", "", false),
            event("b", "2", "", false),
            event("c", "3", "", false),
        ];
        assert_eq!(
            parse("event: a\r\ndata: 1\r\n\r\nevent: b\rdata: 2\r\revent: c\ndata: 3\n\n"),
            expected
        );
    }

    #[test]
    fn comments_and_unknown_fields() {
        assert_eq!(
            parse(":\n: keep-alive\nfoo: bar\ndata: x\n\n"),
            vec![
                Item::Comment(String::new()),
                Item::Comment(" keep-alive".into()),
                event("message", "x", "", false),
            ]
        );
    }

    #[test]
    fn only_one_leading_space_is_dropped() {
        assert_eq!(
            parse("event:  spaced\ndata:   x \n\n"),
            vec![event(" spaced", "  x ", "", false)]
        );
    }

    #[test]
    fn retry_must_be_all_digits() {
        assert_eq!(
            parse("retry: 10\nretry: x1\nretry: 1.5\nretry:\nretry: 99999999999999999999999\n"),
            vec![Item::Retry(10), Item::Retry(u64::MAX)]
        );
    }

    #[test]
    fn ids_with_nul_are_ignored_and_empty_ids_reset() {
        assert_eq!(
            parse("id: 1\ndata: a\n\nid: 2\0\ndata: b\n\nid\ndata: c\n\n"),
            vec![
                event("message", "a", "1", true),
                event("message", "b", "1", false),
                event("message", "c", "", true),
            ]
        );
    }

    #[test]
    fn skips_a_leading_bom_only_once() {
        assert_eq!(
            parse("\u{feff}data: a\n\n\u{feff}data: b\n\n"),
            vec![event("message", "a", "", false)]
        );
    }

    #[test]
    fn an_unfinished_event_is_not_dispatched() {
        assert_eq!(
            parse("data: a\n\ndata: b\n"),
            vec![event("message", "a", "", false)]
        );
    }

    #[test]
    fn a_cr_and_lf_in_different_reads_end_one_line() {
        assert_eq!(
            parse_pieces(&[b"data: a\r", b"\n", b"\r", b"\n"]),
            vec![event("message", "a", "", false)]
        );
        // CR then CR LF: the second pair is an empty line, which dispatches.
        assert_eq!(
            parse_pieces(&[b"data: a\r", b"\r\n"]),
            vec![event("message", "a", "", false)]
        );
        // An empty read between the CR and the LF changes nothing.
        assert_eq!(
            parse_pieces(&[b"event: x\r", b"", b"\ndata: a\n\n"]),
            vec![event("x", "a", "", false)]
        );
        // A lone CR at the end of a read followed by a field.
        assert_eq!(
            parse_pieces(&[b"data: a\r", b"data: b\r", b"\r"]),
            vec![event("message", "a\nb", "", false)]
        );
    }

    /// A stream that exercises every rule at once.
    const TORTURE: &[u8] = b"\xEF\xBB\xBF: hello\r\nretry: 3000\r\nevent: e1\r\nid: 1\r\ndata: one\r\ndata:two\r\n\r\n\
        data: three\rid: 2\r\r\
        :comment\nevent: \xC3\xA9\ndata\ndata:  four\n\n\
        id: 3\0\nfoo\ndata: five\r\n\n\
        data: {\"seq\":9,\"t\":123}\n\n";

    fn torture_expected() -> Vec<Item> {
        vec![
            Item::Comment(" hello".into()),
            Item::Retry(3000),
            event("e1", "one\ntwo", "1", true),
            event("message", "three", "2", true),
            Item::Comment("comment".into()),
            event("\u{e9}", "\n four", "2", false),
            event("message", "five", "2", false),
            event("message", "{\"seq\":9,\"t\":123}", "2", false),
        ]
    }

    #[test]
    fn the_whole_stream_at_once() {
        assert_eq!(parse_pieces(&[TORTURE]), torture_expected());
    }

    #[test]
    fn split_at_every_byte_boundary() {
        for cut in 0..=TORTURE.len() {
            let (a, b) = TORTURE.split_at(cut);
            assert_eq!(parse_pieces(&[a, b]), torture_expected(), "cut at {cut}");
        }
    }

    #[test]
    fn split_at_every_pair_of_boundaries() {
        for first in 0..=TORTURE.len() {
            for second in first..=TORTURE.len() {
                let pieces = [
                    &TORTURE[..first],
                    &TORTURE[first..second],
                    &TORTURE[second..],
                ];
                assert_eq!(
                    parse_pieces(&pieces),
                    torture_expected(),
                    "cuts at {first} and {second}"
                );
            }
        }
    }

    #[test]
    fn one_byte_at_a_time() {
        let bytes: Vec<&[u8]> = TORTURE.chunks(1).collect();
        assert_eq!(parse_pieces(&bytes), torture_expected());
    }

    #[test]
    fn refuses_overlong_lines_and_events() {
        let mut parser = SseParser::new(16);
        let mut collect = Collect::default();
        assert_eq!(
            parser.feed(b"data: 0123456789abcdef\n", &mut collect),
            Err(SseError::LineTooLong { limit: 16 })
        );

        let mut parser = SseParser::new(16);
        parser.feed(b"data: 0123456", &mut collect).unwrap();
        assert_eq!(
            parser.feed(b"789abcdef", &mut collect),
            Err(SseError::LineTooLong { limit: 16 })
        );

        let mut parser = SseParser::new(16);
        assert_eq!(
            parser.feed(b"data: 01234567\ndata: 01234567\n", &mut collect),
            Err(SseError::EventTooLarge { limit: 16 })
        );
    }

    #[test]
    fn reuses_its_buffers() {
        let mut parser = SseParser::default();
        let mut collect = Collect::default();
        parser.feed(b"data: hello world\n\n", &mut collect).unwrap();
        let held = parser.heap_bytes();
        for _ in 0..100 {
            parser.feed(b"data: hello world\n\n", &mut collect).unwrap();
        }
        assert_eq!(parser.heap_bytes(), held);
        assert_eq!(collect.0.len(), 101);
    }
}
