//! The rules Mercure puts on strings, and strict `application/x-www-form-urlencoded`
//! parsing.
//!
//! Topics, matcher values, ids and types must be valid UTF-8 without control characters
//! (C0, DEL, C1) or Unicode format characters (category Cf): such characters could split an
//! SSE field, hide text from a reader, or confuse logs. Forms and query strings are decoded
//! strictly: a value that is not valid UTF-8 after percent-decoding is an error, never
//! silently replaced.

use std::borrow::Cow;

/// Whether `text` may be used as a topic, matcher, id or type.
pub fn is_protocol_string(text: &str) -> bool {
    !text.chars().any(is_forbidden)
}

fn is_forbidden(c: char) -> bool {
    let code = u32::from(c);
    code <= 0x1F || (0x7F..=0x9F).contains(&code) || is_format_char(code)
}

/// Unicode general category Cf (format characters), Unicode 15.1.
fn is_format_char(code: u32) -> bool {
    matches!(
        code,
        0x00AD
            | 0x0600..=0x0605
            | 0x061C
            | 0x06DD
            | 0x070F
            | 0x0890..=0x0891
            | 0x08E2
            | 0x180E
            | 0x200B..=0x200F
            | 0x202A..=0x202E
            | 0x2060..=0x2064
            | 0x2066..=0x206F
            | 0xFEFF
            | 0xFFF9..=0xFFFB
            | 0x110BD
            | 0x110CD
            | 0x13430..=0x1343F
            | 0x1BCA0..=0x1BCA3
            | 0x1D173..=0x1D17A
            | 0xE0001
            | 0xE0020..=0xE007F
    )
}

/// Why a form or query string could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("the {what} is not valid UTF-8 once percent-decoded")]
pub struct FormError {
    /// `form` or `query`.
    pub what: &'static str,
}

/// Decodes `input` as `application/x-www-form-urlencoded` pairs (`+` is a space, `%XX` a
/// byte, a name without `=` has an empty value), refusing invalid UTF-8.
pub fn parse_form(input: &[u8], what: &'static str) -> Result<Vec<(String, String)>, FormError> {
    input
        .split(|&b| b == b'&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = match pair.iter().position(|&b| b == b'=') {
                Some(at) => (&pair[..at], &pair[at + 1..]),
                None => (pair, &pair[pair.len()..]),
            };
            Ok((decode(name, what)?, decode(value, what)?))
        })
        .collect()
}

fn decode(raw: &[u8], what: &'static str) -> Result<String, FormError> {
    let spaced: Cow<'_, [u8]> = if raw.contains(&b'+') {
        Cow::Owned(
            raw.iter()
                .map(|&b| if b == b'+' { b' ' } else { b })
                .collect(),
        )
    } else {
        Cow::Borrowed(raw)
    };
    let bytes: Vec<u8> = percent_encoding::percent_decode(&spaced).collect();
    String::from_utf8(bytes).map_err(|_| FormError { what })
}

/// Percent-encodes everything but `A-Z a-z 0-9 - _ . ~`, as subscription topics and the
/// subscription API's paths need.
pub fn escape_segment(text: &str) -> String {
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(text, KEEP).to_string()
}

/// Reverses [`escape_segment`]; `None` when the result is not UTF-8.
pub fn unescape_segment(text: &str) -> Option<String> {
    percent_encoding::percent_decode_str(text)
        .decode_utf8()
        .ok()
        .map(Cow::into_owned)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_strings_refuse_controls_and_format_characters() {
        assert!(is_protocol_string("https://example.com/books/1"));
        assert!(is_protocol_string("urn:uuid:é∂"));
        assert!(is_protocol_string(""));
        for bad in [
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{7f}",
            "a\u{85}",
            "a\u{200b}b",
            "\u{feff}x",
            "\u{202e}",
        ] {
            assert!(!is_protocol_string(bad), "{bad:?}");
        }
    }

    #[test]
    fn parses_forms_like_url_search_params() {
        let pairs = parse_form(
            b"topic=a&topic=b%2Fc&data=hello+world%21&private&empty=",
            "form",
        )
        .expect("valid");
        assert_eq!(
            pairs,
            [
                ("topic".into(), "a".into()),
                ("topic".into(), "b/c".into()),
                ("data".into(), "hello world!".into()),
                ("private".into(), String::new()),
                ("empty".into(), String::new()),
            ]
        );
    }

    #[test]
    fn keeps_line_breaks_and_refuses_invalid_utf8() {
        let pairs = parse_form(b"data=a%0D%0Ab%0Ac", "form").expect("valid");
        assert_eq!(pairs[0].1, "a\r\nb\nc");
        assert_eq!(
            parse_form(b"data=%FF%FE", "form"),
            Err(FormError { what: "form" })
        );
        assert!(parse_form(b"%E2%82=x", "query").is_err());
    }

    #[test]
    fn escapes_segments_exactly_once() {
        assert_eq!(
            escape_segment("https://example.com/a b"),
            "https%3A%2F%2Fexample.com%2Fa%20b"
        );
        assert_eq!(escape_segment("50%"), "50%25");
        assert_eq!(
            escape_segment("urn:uuid:1-2_3.4~5"),
            "urn%3Auuid%3A1-2_3.4~5"
        );
        assert_eq!(
            unescape_segment(&escape_segment("/topics/ü?x")).as_deref(),
            Some("/topics/ü?x")
        );
    }

    proptest::proptest! {
        /// Any bytes: an answer, never a panic.
        #[test]
        fn any_bytes_parse_or_are_refused(input in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..200)) {
            let _ = parse_form(&input, "form");
        }

        /// What a browser encodes (`URLSearchParams`, as `form_urlencoded` does) comes back
        /// as it was.
        #[test]
        fn encoded_pairs_come_back_unchanged(
            pairs in proptest::collection::vec((proptest::prelude::any::<String>(), proptest::prelude::any::<String>()), 0..6),
        ) {
            let encoded: String = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(&pairs)
                .finish();
            let decoded = parse_form(encoded.as_bytes(), "form").expect("valid UTF-8");
            proptest::prop_assert_eq!(decoded, pairs);
        }

        /// Escaped once, unescaped once: the same text, and never a `/` in between.
        #[test]
        fn segments_round_trip(text in proptest::prelude::any::<String>()) {
            let escaped = escape_segment(&text);
            proptest::prop_assert!(!escaped.contains('/'));
            proptest::prop_assert_eq!(unescape_segment(&escaped), Some(text));
        }
    }
}
