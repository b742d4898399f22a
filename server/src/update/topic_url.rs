//! A topic read as a URL once, in the eight parts URL patterns match against.
//!
//! Matching a topic against a URL pattern means resolving the topic against the hub's URL
//! and splitting it into protocol, username, password, hostname, port, pathname, search and
//! hash (the WHATWG URL Pattern's components). An update is matched against every distinct
//! pattern on the hub, and replayed to every subscriber that resumes: the split is done
//! once per topic and kept with the update ([`crate::update::Update::topic_urls`]), not once
//! per pattern.

use url::Url;

/// A topic's URL components, in one allocation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicUrl {
    text: Box<str>,
    /// Where each component ends in `text` (each starts where the one before ends).
    ends: [u32; 8],
}

/// The components, in [`TopicUrl::component`]'s order.
pub const COMPONENTS: [&str; 8] = [
    "protocol", "username", "password", "hostname", "port", "pathname", "search", "hash",
];

impl TopicUrl {
    /// `topic` resolved against `base` and split, or `None` when it is not a URL even
    /// relative to `base` (such a topic matches no pattern).
    pub fn parse(topic: &str, base: &Url) -> Option<Self> {
        let url = base.join(topic).ok()?;
        Some(Self::of(&url))
    }

    /// The components of `url`, as the URL Pattern standard reads them from a URL.
    pub fn of(url: &Url) -> Self {
        let parts = [
            url.scheme(),
            url.username(),
            url.password().unwrap_or_default(),
            url.host_str().unwrap_or_default(),
            url::quirks::port(url),
            url::quirks::pathname(url),
            url.query().unwrap_or_default(),
            url.fragment().unwrap_or_default(),
        ];
        let mut text = String::with_capacity(parts.iter().map(|part| part.len()).sum());
        let mut ends = [0u32; 8];
        for (end, part) in ends.iter_mut().zip(parts) {
            text.push_str(part);
            *end = u32::try_from(text.len()).unwrap_or(u32::MAX);
        }
        Self {
            text: text.into_boxed_str(),
            ends,
        }
    }

    /// Component `index` (see [`COMPONENTS`]).
    pub fn component(&self, index: usize) -> &str {
        let start = if index == 0 {
            0
        } else {
            self.ends[index - 1] as usize
        };
        self.text
            .get(start..self.ends[index] as usize)
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_a_topic_like_the_url_pattern_standard() {
        let base = Url::parse("https://hub.example/.well-known/mercure").expect("url");
        let url =
            TopicUrl::parse("https://u:p@example.com:8443/books/1?x=1#top", &base).expect("a url");
        let parts: Vec<&str> = (0..8).map(|i| url.component(i)).collect();
        assert_eq!(
            parts,
            [
                "https",
                "u",
                "p",
                "example.com",
                "8443",
                "/books/1",
                "x=1",
                "top"
            ]
        );
        let relative = TopicUrl::parse("/topics/a", &base).expect("a url");
        assert_eq!(relative.component(3), "hub.example");
        assert_eq!(relative.component(5), "/topics/a");
        assert_eq!(relative.component(4), "", "the default port is empty");
        let urn = TopicUrl::parse("urn:isbn:123", &base).expect("a url");
        assert_eq!(urn.component(0), "urn");
        assert_eq!(urn.component(5), "isbn:123");
    }
}
