//! Server-Sent Events on the wire: encoding an event to bytes, once and safely.
//!
//! Pure functions, with no dependency on the rest of the server. Field values that end up
//! after `event:` or `id:` are checked: a CR, LF or NUL in them could end the field early
//! and forge another field or event, so such values are refused. Data may hold any text; it
//! is split into `data:` lines on CRLF, LF and CR exactly as a browser joins them back, so
//! no byte of it can start a field of its own.

use std::{fmt, time::Duration};

use bytes::{BufMut, Bytes, BytesMut};

/// The comment sent on idle streams so that proxies and browsers keep the connection open.
pub const KEEP_ALIVE: &[u8] = b":\n\n";

/// Why a value cannot be used as an event name or id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an event {field} must not contain CR, LF or NUL characters")]
pub struct InvalidField {
    /// `name` or `id`.
    pub field: &'static str,
}

/// A value that is safe after `event:` or `id:` (no CR, LF or NUL).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct FieldValue<'a>(&'a str);

impl<'a> FieldValue<'a> {
    /// Checks a value from outside; `field` names it in the error.
    pub fn new(value: &'a str, field: &'static str) -> Result<Self, InvalidField> {
        if is_safe_field(value.as_bytes()) {
            Ok(Self(value))
        } else {
            Err(InvalidField { field })
        }
    }

    /// A value known when compiling; an unsafe one fails the build, not a request.
    pub const fn from_static(value: &'static str) -> FieldValue<'static> {
        assert!(is_safe_field(value.as_bytes()), "unsafe SSE field value");
        FieldValue(value)
    }

    /// The checked text.
    pub fn as_str(&self) -> &'a str {
        self.0
    }
}

impl fmt::Debug for FieldValue<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.0, f)
    }
}

const fn is_safe_field(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if matches!(bytes[i], b'\r' | b'\n' | 0) {
            return false;
        }
        i += 1;
    }
    true
}

/// One event, encoded to its wire form by [`EventBuilder::build`].
#[derive(Debug, Default)]
pub struct EventBuilder<'a> {
    name: Option<FieldValue<'a>>,
    id: Option<EventId<'a>>,
    retry: Option<Duration>,
    data: Option<&'a str>,
}

impl<'a> EventBuilder<'a> {
    /// An event with no fields yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// The event's type (`event:`); browsers dispatch it under this name.
    pub fn name(mut self, name: FieldValue<'a>) -> Self {
        self.name = Some(name);
        self
    }

    /// The event's id (`id:`), which the browser sends back as `Last-Event-ID`.
    pub fn id(mut self, id: FieldValue<'a>) -> Self {
        self.id = Some(EventId::Text(id));
        self
    }

    /// A numeric id, which is always safe.
    pub fn numeric_id(mut self, id: u64) -> Self {
        self.id = Some(EventId::Number(id));
        self
    }

    /// How long the browser waits before reconnecting (`retry:`, in milliseconds).
    pub fn retry(mut self, retry: Duration) -> Self {
        self.retry = Some(retry);
        self
    }

    /// The event's data; line breaks become separate `data:` lines.
    pub fn data(mut self, data: &'a str) -> Self {
        self.data = Some(data);
        self
    }

    /// The event's bytes, ending with the blank line that dispatches it.
    pub fn build(self) -> Bytes {
        let data_len = self
            .data
            .map_or(0, |data| data.len() + 8 * (1 + line_breaks(data)));
        let mut out = BytesMut::with_capacity(
            data_len
                + self.name.map_or(0, |name| name.0.len() + 8)
                + self.id.map_or(0, |id| id.len() + 5)
                + if self.retry.is_some() { 28 } else { 0 }
                + 1,
        );
        if let Some(name) = self.name {
            put_field(&mut out, b"event: ", name.0);
        }
        match self.id {
            Some(EventId::Text(id)) => put_field(&mut out, b"id: ", id.0),
            Some(EventId::Number(id)) => put_field(&mut out, b"id: ", &id.to_string()),
            None => {}
        }
        if let Some(retry) = self.retry {
            let millis = u64::try_from(retry.as_millis()).unwrap_or(u64::MAX);
            out.put_slice(b"retry: ");
            out.put_slice(millis.to_string().as_bytes());
            out.put_u8(b'\n');
        }
        if let Some(data) = self.data {
            for line in split_lines(data) {
                put_field(&mut out, b"data: ", line);
            }
        }
        out.put_u8(b'\n');
        out.freeze()
    }
}

#[derive(Debug, Clone, Copy)]
enum EventId<'a> {
    Text(FieldValue<'a>),
    Number(u64),
}

impl EventId<'_> {
    fn len(self) -> usize {
        match self {
            Self::Text(text) => text.0.len(),
            Self::Number(_) => 20,
        }
    }
}

/// An SSE comment (`: text`), which clients ignore; line breaks start new comment lines.
pub fn comment(text: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(text.len() + 4 * (1 + line_breaks(text)) + 1);
    for line in split_lines(text) {
        put_field(&mut out, b": ", line);
    }
    out.put_u8(b'\n');
    out.freeze()
}

fn put_field(out: &mut BytesMut, prefix: &[u8], value: &str) {
    out.put_slice(prefix);
    out.put_slice(value.as_bytes());
    out.put_u8(b'\n');
}

fn line_breaks(text: &str) -> usize {
    text.bytes().filter(|&b| b == b'\n' || b == b'\r').count()
}

/// Splits text into lines the way an SSE parser does: at CRLF, LF or a lone CR.
pub fn split_lines(text: &str) -> impl Iterator<Item = &str> {
    let mut rest = Some(text);
    std::iter::from_fn(move || {
        let current = rest?;
        match current.find(['\r', '\n']) {
            Some(at) => {
                let skip = if current[at..].starts_with("\r\n") {
                    2
                } else {
                    1
                };
                rest = Some(&current[at + skip..]);
                Some(&current[..at])
            }
            None => {
                rest = None;
                Some(current)
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(bytes: &Bytes) -> &str {
        std::str::from_utf8(bytes).expect("events are UTF-8")
    }

    #[test]
    fn encodes_every_field_in_order() {
        let event = EventBuilder::new()
            .name(FieldValue::from_static("new_message"))
            .id(FieldValue::from_static("7"))
            .retry(Duration::from_secs(15))
            .data("Counter value 7")
            .build();
        assert_eq!(
            text(&event),
            "event: new_message\nid: 7\nretry: 15000\ndata: Counter value 7\n\n"
        );
    }

    #[test]
    fn splits_data_on_every_kind_of_line_break() {
        let event = EventBuilder::new().data("a\r\nb\nc\rd").build();
        assert_eq!(text(&event), "data: a\ndata: b\ndata: c\ndata: d\n\n");
    }

    #[test]
    fn keeps_blank_lines_and_edges_of_data() {
        let event = EventBuilder::new().data("\nmiddle\n\n").build();
        assert_eq!(text(&event), "data: \ndata: middle\ndata: \ndata: \n\n");
        let event = EventBuilder::new().data("").build();
        assert_eq!(text(&event), "data: \n\n");
        let event = EventBuilder::new().data(" leading space").build();
        assert_eq!(text(&event), "data:  leading space\n\n");
    }

    #[test]
    fn data_cannot_forge_a_field_or_an_event() {
        let event = EventBuilder::new()
            .data("x\n\nevent: admin\r\nid: 999\rretry: 1")
            .build();
        for line in text(&event).lines().filter(|line| !line.is_empty()) {
            assert!(line.starts_with("data: "), "forged line {line:?}");
        }
        assert!(text(&event).ends_with("\n\n"));
        assert_eq!(text(&event).matches("\n\n").count(), 1);
    }

    #[test]
    fn refuses_unsafe_names_and_ids() {
        for bad in ["a\nb", "a\rb", "a\r\nb", "a\0b", "\n"] {
            assert_eq!(
                FieldValue::new(bad, "id"),
                Err(InvalidField { field: "id" }),
                "{bad:?}"
            );
        }
        assert!(FieldValue::new("urn:uuid:1234 é", "id").is_ok());
    }

    #[test]
    fn comments_stay_comments() {
        assert_eq!(text(&comment("hi\nthere")), ": hi\n: there\n\n");
    }

    #[test]
    fn split_lines_matches_the_sse_parser() {
        let lines: Vec<&str> = split_lines("a\r\n\r\nb\r").collect();
        assert_eq!(lines, ["a", "", "b", ""]);
        let lines: Vec<&str> = split_lines("plain").collect();
        assert_eq!(lines, ["plain"]);
    }

    /// What a browser's parser makes of `bytes`: every event, read by a standard SSE
    /// parser (the `eventsource-stream` crate).
    fn parse_events(bytes: Bytes) -> Vec<eventsource_stream::Event> {
        use eventsource_stream::Eventsource;
        use futures_util::StreamExt;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .build()
            .expect("a runtime");
        runtime.block_on(
            futures_util::stream::iter([Ok::<_, std::io::Error>(bytes)])
                .eventsource()
                .map(|event| event.expect("a well-formed event"))
                .collect(),
        )
    }

    proptest::proptest! {
        /// Any data, id, type and retry come back as exactly those fields (data with its
        /// line breaks as the parser joins them, LF).
        #[test]
        fn any_event_reads_back_as_its_fields(
            data in proptest::prelude::any::<String>(),
            id in "[^\r\n\x00]{0,40}",
            name in "[^\r\n\x00]{1,20}",
            retry in proptest::option::of(0u64..10_000_000),
        ) {
            let mut builder = EventBuilder::new()
                .name(FieldValue::new(&name, "name").expect("no line break"))
                .id(FieldValue::new(&id, "id").expect("no line break"))
                .data(&data);
            if let Some(retry) = retry {
                builder = builder.retry(Duration::from_millis(retry));
            }
            let events = parse_events(builder.build());
            proptest::prop_assert_eq!(events.len(), 1);
            let event = &events[0];
            proptest::prop_assert_eq!(&event.data, &data.replace("\r\n", "\n").replace('\r', "\n"));
            proptest::prop_assert_eq!(&event.id, &id);
            proptest::prop_assert_eq!(&event.event, &name);
            proptest::prop_assert_eq!(event.retry, retry.map(Duration::from_millis));
        }

        /// No text put in an id or a type can break the framing: it is refused or safe.
        #[test]
        fn field_values_with_line_breaks_are_refused(value in proptest::prelude::any::<String>()) {
            let unsafe_value = value.contains(['\r', '\n', '\0']);
            proptest::prop_assert_eq!(FieldValue::new(&value, "id").is_err(), unsafe_value);
        }
    }
}
