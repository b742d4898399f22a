//! Topic selectors: which topics a subscription (or a token's grant) covers.
//!
//! - `exact`: the topic, byte for byte.
//! - `urlpattern`: a WHATWG URL Pattern; relative patterns and topics are resolved against
//!   the hub's URL. Patterns compile to the `regex` crate's automata, which match in linear
//!   time, so no pattern can make matching slow (the spec's denial-of-service note).
//! - `legacy` (compatibility mode only): the 0.x `topic` selector, an exact topic or an
//!   RFC 6570 URI Template.
//! - `*` matches every topic, whatever the type.

use std::fmt;

use regex::Regex;
use url::Url;
use urlpattern::{UrlPattern, UrlPatternInit, UrlPatternMatchInput, UrlPatternOptions};

/// The kinds of selector a request or token can name.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MatchType {
    Exact,
    UrlPattern,
    /// The 0.x `topic=` selector (compatibility mode).
    Legacy,
}

impl MatchType {
    /// The name used in `match_<type>` parameters, tokens and subscription topics.
    pub fn name(self) -> &'static str {
        match self {
            Self::Exact => "exact",
            Self::UrlPattern => "urlpattern",
            Self::Legacy => "topic",
        }
    }

    /// The type named `name` (`exact` or `urlpattern`); the legacy type has no public name.
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "exact" => Some(Self::Exact),
            "urlpattern" => Some(Self::UrlPattern),
            _ => None,
        }
    }
}

/// Why a selector was refused. The message never echoes a compiler error (which could
/// reveal internals); it says what is wrong in general terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SelectorError {
    #[error("invalid topic matcher pattern")]
    InvalidPattern,
    #[error("pattern too long (max {max} bytes)")]
    TooLong { max: usize },
    #[error("topic matchers must be valid UTF-8 without control or format characters")]
    InvalidCharacters,
    #[error("empty topic matcher pattern")]
    Empty,
}

/// The longest pattern accepted.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// The hub's URL, against which relative patterns and topics are resolved.
#[derive(Clone, Debug)]
pub struct MatchBase(Url);

impl MatchBase {
    /// `resource_identifier` when it is an absolute URL; else a fixed stand-in, so that
    /// relative patterns match relative topics.
    pub fn new(resource_identifier: Option<&str>) -> Self {
        Self(
            resource_identifier
                .and_then(|text| Url::parse(text).ok())
                .unwrap_or_else(|| FALLBACK_BASE.clone()),
        )
    }

    /// The base URL.
    pub fn url(&self) -> &Url {
        &self.0
    }
}

impl Default for MatchBase {
    fn default() -> Self {
        Self::new(None)
    }
}

static FALLBACK_BASE: std::sync::LazyLock<Url> = std::sync::LazyLock::new(|| {
    Url::parse("https://mercure.invalid/.well-known/mercure").expect("a constant URL parses")
});

/// A compiled selector.
#[derive(Clone)]
pub struct Selector {
    kind: MatchType,
    raw: Box<str>,
    compiled: Compiled,
}

#[derive(Clone)]
enum Compiled {
    Any,
    Exact,
    Pattern(std::sync::Arc<UrlPattern>),
    Template(Regex),
}

impl fmt::Debug for Selector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.kind.name(), self.raw)
    }
}

impl PartialEq for Selector {
    fn eq(&self, other: &Self) -> bool {
        self.kind == other.kind && self.raw == other.raw
    }
}

impl Selector {
    /// Compiles `raw` as a selector of type `kind`.
    pub fn new(kind: MatchType, raw: &str, base: &MatchBase) -> Result<Self, SelectorError> {
        if raw.len() > MAX_PATTERN_BYTES {
            return Err(SelectorError::TooLong {
                max: MAX_PATTERN_BYTES,
            });
        }
        if !super::text::is_protocol_string(raw) {
            return Err(SelectorError::InvalidCharacters);
        }
        let compiled = if raw == "*" {
            Compiled::Any
        } else {
            match kind {
                MatchType::Exact => Compiled::Exact,
                MatchType::UrlPattern => {
                    Compiled::Pattern(std::sync::Arc::new(compile_pattern(raw, base)?))
                }
                MatchType::Legacy => match template_regex(raw) {
                    Some(regex) => Compiled::Template(regex),
                    None => Compiled::Exact,
                },
            }
        };
        Ok(Self {
            kind,
            raw: raw.into(),
            compiled,
        })
    }

    /// An exact selector (always valid when `raw` is a protocol string).
    pub fn exact(raw: &str) -> Self {
        Self {
            kind: MatchType::Exact,
            raw: raw.into(),
            compiled: if raw == "*" {
                Compiled::Any
            } else {
                Compiled::Exact
            },
        }
    }

    /// The selector's type.
    pub fn kind(&self) -> MatchType {
        self.kind
    }

    /// The selector as written.
    pub fn raw(&self) -> &str {
        &self.raw
    }

    /// Whether this is the `*` wildcard.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.compiled, Compiled::Any)
    }

    /// The topic this selector matches, if it matches exactly one (for indexing).
    pub fn exact_topic(&self) -> Option<&str> {
        matches!(self.compiled, Compiled::Exact).then_some(&*self.raw)
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str, base: &MatchBase) -> bool {
        match &self.compiled {
            Compiled::Any => true,
            Compiled::Exact => *self.raw == *topic,
            Compiled::Pattern(pattern) => match base.url().join(topic) {
                Ok(url) => pattern
                    .test(UrlPatternMatchInput::Url(url))
                    .unwrap_or(false),
                Err(_) => false,
            },
            Compiled::Template(regex) => *self.raw == *topic || regex.is_match(topic),
        }
    }

    /// Whether any of `topics` is selected.
    pub fn matches_any<T: AsRef<str>>(&self, topics: &[T], base: &MatchBase) -> bool {
        topics
            .iter()
            .any(|topic| self.matches(topic.as_ref(), base))
    }
}

fn compile_pattern(raw: &str, base: &MatchBase) -> Result<UrlPattern, SelectorError> {
    if raw.is_empty() {
        return Err(SelectorError::Empty);
    }
    let init = UrlPatternInit::parse_constructor_string::<Regex>(raw, Some(base.url().clone()))
        .map_err(|_| SelectorError::InvalidPattern)?;
    UrlPattern::parse(init, UrlPatternOptions::default()).map_err(|_| SelectorError::InvalidPattern)
}

/// The regular expression an RFC 6570 URI Template matches, or `None` when `template` holds
/// no expression or is not a valid template. Each expression becomes an optional group of
/// the characters its operator may expand to, as the reference hub does.
pub fn template_regex(template: &str) -> Option<Regex> {
    if !template.contains('{') {
        return None;
    }
    const UNRESERVED: &str = r"A-Za-z0-9\-._~";
    const RESERVED: &str = r":/?#\[\]@!$&'()*+,;=";
    let mut pattern = String::with_capacity(template.len() * 4);
    pattern.push('^');
    let mut rest = template;
    while let Some(open) = rest.find('{') {
        let literal = &rest[..open];
        if literal.contains('}') {
            return None;
        }
        pattern.push_str(&regex::escape(literal));
        let close = rest[open..].find('}')? + open;
        let expression = &rest[open + 1..close];
        let (operator, variables) = match expression.chars().next()? {
            op @ ('+' | '#' | '.' | '/' | ';' | '?' | '&') => (Some(op), &expression[1..]),
            _ => (None, expression),
        };
        let names: Vec<&str> = variables.split(',').collect();
        if names.iter().any(|name| !is_varspec(name)) {
            return None;
        }
        let (prefix, separator, named) = match operator {
            None | Some('+') => ("", ",", false),
            Some('#') => ("#", ",", false),
            Some('.') => (".", ".", false),
            Some('/') => ("/", "/", false),
            Some(';') => (";", ";", true),
            Some('?') => ("?", "&", true),
            _ => ("&", "&", true),
        };
        let allowed = if matches!(operator, Some('+' | '#')) {
            format!("[{UNRESERVED}{RESERVED}]")
        } else if named {
            format!("[{UNRESERVED},=]")
        } else {
            format!("[{UNRESERVED},]")
        };
        let unit = format!("(?:{allowed}|%[0-9A-Fa-f]{{2}})*");
        let exploded = names.iter().any(|name| name.ends_with('*'));
        let repeat = if exploded {
            "*".to_owned()
        } else {
            format!("{{0,{}}}", names.len() - 1)
        };
        pattern.push_str(&format!(
            "(?:{}{unit}(?:{}{unit}){repeat})?",
            regex::escape(prefix),
            regex::escape(separator)
        ));
        rest = &rest[close + 1..];
    }
    if rest.contains('}') {
        return None;
    }
    pattern.push_str(&regex::escape(rest));
    pattern.push('$');
    regex::RegexBuilder::new(&pattern)
        .size_limit(1 << 20)
        .build()
        .ok()
}

fn is_varspec(spec: &str) -> bool {
    let name = spec.strip_suffix('*').unwrap_or(spec);
    let name = match name.split_once(':') {
        Some((name, length)) => {
            if length.is_empty() || length.len() > 4 || !length.bytes().all(|b| b.is_ascii_digit())
            {
                return false;
            }
            name
        }
        None => name,
    };
    !name.is_empty()
        && name.split('.').all(|part| {
            !part.is_empty()
                && part
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'%')
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base() -> MatchBase {
        MatchBase::default()
    }

    fn selector(kind: MatchType, raw: &str) -> Selector {
        Selector::new(kind, raw, &base()).expect("valid selector")
    }

    #[test]
    fn exact_compares_bytes() {
        let exact = selector(MatchType::Exact, "https://example.com/books/1");
        assert!(exact.matches("https://example.com/books/1", &base()));
        assert!(!exact.matches("https://example.com/books/1/", &base()));
        assert!(!exact.matches("HTTPS://example.com/books/1", &base()));
        assert_eq!(exact.exact_topic(), Some("https://example.com/books/1"));
    }

    #[test]
    fn the_wildcard_matches_everything_whatever_the_type() {
        for kind in [MatchType::Exact, MatchType::UrlPattern, MatchType::Legacy] {
            let any = selector(kind, "*");
            assert!(any.is_wildcard());
            assert!(any.matches("urn:anything", &base()));
            assert!(any.matches("", &base()));
        }
    }

    #[test]
    fn url_patterns_match_absolute_and_relative_topics() {
        let absolute = selector(MatchType::UrlPattern, "https://example.com/books/:id");
        assert!(absolute.matches("https://example.com/books/1", &base()));
        assert!(!absolute.matches("https://example.com/books/1/reviews", &base()));
        assert!(!absolute.matches("https://example.org/books/1", &base()));
        // The host is case-insensitive (URL canonicalization), the path is not.
        assert!(absolute.matches("https://EXAMPLE.com/books/1", &base()));
        assert!(!absolute.matches("https://example.com/Books/1", &base()));

        let relative = selector(MatchType::UrlPattern, "/topics/:name");
        assert!(relative.matches("/topics/rust", &base()));
        assert!(!relative.matches("/other/rust", &base()));

        let wildcard_path = selector(MatchType::UrlPattern, "https://example.com/users/42/*");
        assert!(wildcard_path.matches("https://example.com/users/42/orders/7", &base()));
    }

    #[test]
    fn malformed_patterns_are_refused_without_details() {
        let error = Selector::new(MatchType::UrlPattern, "https://example.com/(", &base())
            .expect_err("unbalanced group");
        assert_eq!(error.to_string(), "invalid topic matcher pattern");
        assert_eq!(
            Selector::new(MatchType::UrlPattern, "", &base()).expect_err("empty"),
            SelectorError::Empty
        );
        assert!(matches!(
            Selector::new(MatchType::Exact, &"a".repeat(5000), &base()),
            Err(SelectorError::TooLong { max: 4096 })
        ));
        assert_eq!(
            Selector::new(MatchType::Exact, "a\nb", &base()).expect_err("control"),
            SelectorError::InvalidCharacters
        );
    }

    #[test]
    fn hostile_patterns_still_match_in_linear_time() {
        // Classic catastrophic-backtracking shapes; the regex crate has no backtracking.
        let evil = selector(
            MatchType::UrlPattern,
            "https://example.com/(a+)+(b+)+(c+)+x",
        );
        let topic = format!("https://example.com/{}", "a".repeat(4000));
        let started = std::time::Instant::now();
        assert!(!evil.matches(&topic, &base()));
        assert!(started.elapsed() < std::time::Duration::from_secs(1));
    }

    #[test]
    fn uri_templates_match_like_the_reference_hub() {
        let book = selector(MatchType::Legacy, "https://example.com/books/{id}");
        assert!(book.matches("https://example.com/books/1", &base()));
        assert!(book.matches("https://example.com/books/", &base()));
        assert!(book.matches("https://example.com/books/a%2Fb", &base()));
        assert!(!book.matches("https://example.com/books/1/2", &base()));
        assert!(!book.matches("https://example.com/bookshelf", &base()));
        // A template also matches itself.
        assert!(book.matches("https://example.com/books/{id}", &base()));

        let subscriptions = selector(
            MatchType::Legacy,
            "/.well-known/mercure/subscriptions{/topic}{/subscriber}",
        );
        assert!(subscriptions.matches(
            "/.well-known/mercure/subscriptions/https%3A%2F%2Fexample.com/urn%3Auuid%3A1",
            &base()
        ));

        let reserved = selector(MatchType::Legacy, "https://example.com/{+path}");
        assert!(reserved.matches("https://example.com/a/b/c", &base()));
        let query = selector(MatchType::Legacy, "https://example.com/search{?q,lang}");
        assert!(query.matches("https://example.com/search?q=rust&lang=en", &base()));
        assert!(query.matches("https://example.com/search", &base()));
    }

    #[test]
    fn legacy_selectors_without_a_valid_template_are_exact() {
        let plain = selector(MatchType::Legacy, "https://example.com/plain");
        assert!(plain.matches("https://example.com/plain", &base()));
        assert!(!plain.matches("https://example.com/plain2", &base()));
        let broken = selector(MatchType::Legacy, "https://example.com/{unclosed");
        assert!(broken.matches("https://example.com/{unclosed", &base()));
        assert!(template_regex("https://example.com/{bad name}").is_none());
        assert!(template_regex("no expression").is_none());
    }

    #[test]
    fn regex_metacharacters_in_templates_are_literal() {
        let dotted = selector(MatchType::Legacy, "https://example.com/a.b/{id}");
        assert!(dotted.matches("https://example.com/a.b/1", &base()));
        assert!(!dotted.matches("https://example.com/aXb/1", &base()));
    }
}
