//! Topic selectors: which topics a subscription (or a token's grant) covers.
//!
//! - `exact`: the topic, byte for byte.
//! - `urlpattern`: a WHATWG URL Pattern; relative patterns and topics are resolved against
//!   the hub's URL.
//! - `legacy` (compatibility mode only): the 0.x `topic` selector, an exact topic or an
//!   RFC 6570 URI Template.
//! - `*` matches every topic, whatever the type.
//!
//! # What a pattern costs, and who pays
//!
//! Patterns come from anyone who subscribes, so each is bounded in what it holds and in
//! what it costs to match (the specification's denial-of-service note):
//!
//! - A URL pattern's components are matched without a regular expression where their shape
//!   allows (a literal, a prefix and suffix around one wildcard), as the URL Pattern library
//!   plans them; only components that need one get a regular expression, compiled when the
//!   pattern is, with limits on its size and its per-thread cache. The `regex` crate's
//!   automata match in time linear in the topic, so no pattern makes a match slow.
//! - A topic is split into URL components once per update ([`crate::topic_url`]), not once
//!   per pattern, and each distinct pattern is matched once per update however many
//!   subscribers share it.
//! - Compiled patterns are shared: every selector with the same type and text uses one
//!   compiled pattern ([`PatternCache`]), which is freed with its last user.
//! - Each compiled pattern has a cost, an estimate of the memory it holds. A subscription's
//!   patterns may cost [`PatternBudget::per_subscription`] together, the live subscriptions
//!   of one client address [`PatternBudget::per_address`], and all distinct patterns on the
//!   hub [`PatternBudget::total`]: past them a subscription is refused (`400` for one too
//!   complex in itself, `429` otherwise).

use std::{
    collections::HashMap,
    fmt,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, OnceLock, Weak,
    },
};

use parking_lot::Mutex;
use regex_automata::meta;
use url::Url;
use urlpattern::{
    matcher::{InnerMatcher, Matcher},
    regexp::RegExp,
    RegexSyntax, UrlPattern, UrlPatternInit, UrlPatternOptions,
};

use crate::{
    net::caps::AddressKey,
    update::{TopicUrl, Update},
};

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
    #[error("topic matcher pattern too complex")]
    TooComplex,
    #[error("pattern too long (max {max} bytes)")]
    TooLong { max: usize },
    #[error("topic matchers must be valid UTF-8 without control or format characters")]
    InvalidCharacters,
    #[error("empty topic matcher pattern")]
    Empty,
    #[error("the hub holds as many distinct topic patterns as it may; try again later")]
    HubFull,
}

/// The longest pattern accepted.
pub const MAX_PATTERN_BYTES: usize = 4096;

/// The largest automaton one regular expression of a pattern may compile to.
const REGEX_SIZE_LIMIT: usize = 256 * 1024;
/// The most a thread's lazy DFA cache for one regular expression may grow to.
const REGEX_CACHE_BYTES: usize = 16 * 1024;
/// What a compiled pattern costs besides its regular expressions: its parsed parts and
/// their strings (measured at about 2 kB for a short pattern, growing with its length).
fn base_cost(raw: &str) -> usize {
    1536 + 6 * raw.len()
}
/// What a compiled regular expression costs: its automata, and the caches of the threads
/// that match it (counted for two).
fn regex_cost(regex: &meta::Regex) -> usize {
    regex.memory_usage() + 2 * REGEX_CACHE_BYTES
}

/// How much the patterns may cost (see the module documentation).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PatternBudget {
    /// The patterns of one subscription together.
    pub per_subscription: usize,
    /// The live subscriptions of one client address together (`0`: no cap).
    pub per_address: usize,
    /// Every distinct compiled pattern on the hub.
    pub total: usize,
}

impl Default for PatternBudget {
    fn default() -> Self {
        Self {
            per_subscription: 256 * 1024,
            per_address: 4 << 20,
            total: 32 << 20,
        }
    }
}

/// The hub's URL, against which relative patterns and topics are resolved, and the
/// compiled patterns its selectors share.
#[derive(Clone, Debug)]
pub struct MatchBase {
    url: Url,
    /// The base's protocol, hostname and port, as URL patterns read them.
    origin: Arc<TopicUrl>,
    patterns: Arc<PatternCache>,
}

impl MatchBase {
    /// `resource_identifier` when it is an absolute URL; else a fixed stand-in, so that
    /// relative patterns match relative topics. Patterns get the default budget.
    pub fn new(resource_identifier: Option<&str>) -> Self {
        Self::with_budget(resource_identifier, PatternBudget::default())
    }

    /// Like [`MatchBase::new`], with `budget` for the patterns.
    pub fn with_budget(resource_identifier: Option<&str>, budget: PatternBudget) -> Self {
        let url = resource_identifier
            .and_then(|text| Url::parse(text).ok())
            .unwrap_or_else(|| FALLBACK_BASE.clone());
        Self {
            origin: Arc::new(TopicUrl::of(&url)),
            url,
            patterns: Arc::new(PatternCache::new(budget)),
        }
    }

    /// The path before `url`'s last segment (up to and with its `/`), when `url` is on the
    /// hub's origin and that segment is not empty: what a [`Selector::segment_parent`]
    /// names.
    pub fn parent_of<'a>(&self, url: &'a TopicUrl) -> Option<&'a str> {
        let same_origin = [0, 3, 4]
            .iter()
            .all(|&part| url.component(part) == self.origin.component(part));
        if !same_origin {
            return None;
        }
        let path = url.component(5);
        let (parent, last) = path.split_at(path.rfind('/')? + 1);
        (!last.is_empty()).then_some(parent)
    }

    /// The base URL.
    pub fn url(&self) -> &Url {
        &self.url
    }

    /// The compiled patterns and what they cost.
    pub fn patterns(&self) -> &PatternCache {
        &self.patterns
    }

    /// Checks a subscription from `address` whose patterns cost `cost` against the budget
    /// (see [`PatternCache::lease`]).
    pub fn lease(
        &self,
        address: AddressKey,
        cost: usize,
    ) -> Result<Option<PatternLease>, BudgetError> {
        self.patterns.lease(address, cost)
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

/// A compiled pattern's name: its selector type and text.
type PatternKey = (MatchType, Box<str>);

/// The compiled patterns of a hub, shared by every selector that names them, with the
/// costs the budget is checked against.
pub struct PatternCache {
    entries: Mutex<HashMap<PatternKey, Weak<Shared>>>,
    /// What the live compiled patterns cost.
    total: AtomicUsize,
    /// What the live subscriptions of each client address cost.
    per_address: Mutex<HashMap<AddressKey, usize>>,
    budget: PatternBudget,
}

impl fmt::Debug for PatternCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PatternCache")
            .field("patterns", &self.entries.lock().len())
            .field("total", &self.total())
            .field("budget", &self.budget)
            .finish()
    }
}

/// Why a subscription's patterns were refused by the budget.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BudgetError {
    #[error("the topic patterns of one subscription may cost {max} bytes; these cost {cost}")]
    Subscription { cost: usize, max: usize },
    #[error("this address holds as many topic patterns as it may; try again later")]
    Address,
}

/// A subscription's share of its address's budget, given back when dropped.
#[derive(Debug)]
pub struct PatternLease {
    cache: Arc<PatternCache>,
    address: AddressKey,
    cost: usize,
}

impl Drop for PatternLease {
    fn drop(&mut self) {
        let mut counts = self.cache.per_address.lock();
        if let Some(held) = counts.get_mut(&self.address) {
            *held = held.saturating_sub(self.cost);
            if *held == 0 {
                counts.remove(&self.address);
            }
        }
    }
}

impl PatternCache {
    fn new(budget: PatternBudget) -> Self {
        Self {
            entries: Mutex::new(HashMap::new()),
            total: AtomicUsize::new(0),
            per_address: Mutex::new(HashMap::new()),
            budget,
        }
    }

    /// What the live compiled patterns cost now.
    pub fn total(&self) -> usize {
        self.total.load(Ordering::Relaxed)
    }

    /// How many distinct compiled patterns are live.
    pub fn len(&self) -> usize {
        self.entries
            .lock()
            .values()
            .filter(|entry| entry.strong_count() > 0)
            .count()
    }

    /// Whether no compiled pattern is live.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The budget.
    pub fn budget(&self) -> PatternBudget {
        self.budget
    }

    /// What a new subscription from `address` may still spend on patterns: the smaller of
    /// a subscription's budget and what the address has left.
    pub fn left_for(&self, address: AddressKey) -> usize {
        if self.budget.per_address == 0 {
            return self.budget.per_subscription;
        }
        let held = self.per_address.lock().get(&address).copied().unwrap_or(0);
        self.budget
            .per_subscription
            .min(self.budget.per_address.saturating_sub(held))
    }

    /// Checks a subscription whose patterns cost `cost` against the budget, and takes its
    /// share of `address`'s; `None` when it has no patterns to pay for.
    pub fn lease(
        self: &Arc<Self>,
        address: AddressKey,
        cost: usize,
    ) -> Result<Option<PatternLease>, BudgetError> {
        if cost > self.budget.per_subscription {
            return Err(BudgetError::Subscription {
                cost,
                max: self.budget.per_subscription,
            });
        }
        if cost == 0 || self.budget.per_address == 0 {
            return Ok(None);
        }
        let mut counts = self.per_address.lock();
        let held = counts.entry(address).or_insert(0);
        if *held + cost > self.budget.per_address {
            if *held == 0 {
                counts.remove(&address);
            }
            return Err(BudgetError::Address);
        }
        *held += cost;
        Ok(Some(PatternLease {
            cache: Arc::clone(self),
            address,
            cost,
        }))
    }

    /// The compiled form of `raw` as a selector of `kind`: the one already live, or a new
    /// one (refused when `within_total` and the hub's total would pass its budget).
    fn get(
        self: &Arc<Self>,
        kind: MatchType,
        raw: &str,
        base: &Url,
        within_total: bool,
    ) -> Result<Arc<Shared>, SelectorError> {
        let key = (kind, Box::<str>::from(raw));
        if let Some(live) = self.entries.lock().get(&key).and_then(Weak::upgrade) {
            return Ok(live);
        }
        // Compiled outside the lock: it takes up to a millisecond.
        let (form, cost) = compile(kind, raw, base)?;
        let max = if within_total {
            self.budget.total
        } else {
            usize::MAX
        };
        self.total
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |total| {
                total.checked_add(cost).filter(|sum| *sum <= max)
            })
            .map_err(|_| SelectorError::HubFull)?;
        let compiled = Arc::new(Shared {
            form,
            cost,
            key: key.clone(),
            cache: Arc::downgrade(self),
        });
        let mut entries = self.entries.lock();
        let raced = entries.get(&key).and_then(Weak::upgrade);
        match raced {
            Some(live) => {
                drop(entries);
                // Another request compiled it meanwhile; ours goes (outside the lock, since
                // dropping it takes the lock).
                drop(compiled);
                Ok(live)
            }
            None => {
                entries.insert(key, Arc::downgrade(&compiled));
                Ok(compiled)
            }
        }
    }
}

/// A compiled pattern or template, shared by every selector that names it.
struct Shared {
    form: Form,
    cost: usize,
    key: PatternKey,
    cache: Weak<PatternCache>,
}

enum Form {
    Pattern(Box<UrlPattern<LazyRegex>>),
    Template(meta::Regex),
}

impl Drop for Shared {
    fn drop(&mut self) {
        let Some(cache) = self.cache.upgrade() else {
            return;
        };
        cache.total.fetch_sub(self.cost, Ordering::Relaxed);
        let mut entries = cache.entries.lock();
        if entries
            .get(&self.key)
            .is_some_and(|entry| entry.strong_count() == 0)
        {
            entries.remove(&self.key);
        }
    }
}

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
    /// A relative URL pattern that is a literal path and one `:name` segment at its end
    /// (`/topics/:name`, a topic page's watchers): topics on the hub's origin whose path
    /// is the literal, then one non-empty segment. Matched and indexed without compiling.
    Segment,
    Shared(Arc<Shared>),
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
    /// Compiles `raw` as a selector of type `kind`, for a token's grants (signed, so
    /// trusted): it counts towards the hub's total but is never refused for it.
    pub fn new(kind: MatchType, raw: &str, base: &MatchBase) -> Result<Self, SelectorError> {
        Self::build(kind, raw, base, false)
    }

    /// Compiles `raw` as a selector of type `kind` for a subscription: refused when a new
    /// compiled pattern would take the hub past its total budget.
    pub fn for_subscription(
        kind: MatchType,
        raw: &str,
        base: &MatchBase,
    ) -> Result<Self, SelectorError> {
        Self::build(kind, raw, base, true)
    }

    fn build(
        kind: MatchType,
        raw: &str,
        base: &MatchBase,
        within_total: bool,
    ) -> Result<Self, SelectorError> {
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
                    if raw.is_empty() {
                        return Err(SelectorError::Empty);
                    }
                    if segment_prefix(raw).is_some() {
                        Compiled::Segment
                    } else {
                        Compiled::Shared(base.patterns.get(kind, raw, &base.url, within_total)?)
                    }
                }
                MatchType::Legacy => match template_regex(raw) {
                    Some(_) => {
                        Compiled::Shared(base.patterns.get(kind, raw, &base.url, within_total)?)
                    }
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

    /// What the selector's compiled form costs (see the module documentation); `0` for
    /// exact topics and `*`.
    pub fn cost(&self) -> usize {
        match &self.compiled {
            Compiled::Shared(shared) => shared.cost,
            Compiled::Any | Compiled::Exact | Compiled::Segment => 0,
        }
    }

    /// Whether this is the `*` wildcard.
    pub fn is_wildcard(&self) -> bool {
        matches!(self.compiled, Compiled::Any)
    }

    /// The topic this selector matches, if it matches exactly one (for indexing).
    pub fn exact_topic(&self) -> Option<&str> {
        matches!(self.compiled, Compiled::Exact).then_some(&*self.raw)
    }

    /// The path before the last segment, when this selector matches the topics on the
    /// hub's origin whose path is that, then one non-empty segment (for indexing: see
    /// [`MatchBase::parent_of`]).
    pub fn segment_parent(&self) -> Option<&str> {
        match self.compiled {
            Compiled::Segment => segment_prefix(&self.raw),
            _ => None,
        }
    }

    /// Whether `topic` is selected.
    pub fn matches(&self, topic: &str, base: &MatchBase) -> bool {
        match &self.compiled {
            Compiled::Any => true,
            Compiled::Exact => *self.raw == *topic,
            Compiled::Segment => TopicUrl::parse(topic, &base.url).is_some_and(|url| {
                segment_prefix(&self.raw).is_some_and(|parent| base.parent_of(&url) == Some(parent))
            }),
            Compiled::Shared(shared) => match &shared.form {
                Form::Pattern(pattern) => TopicUrl::parse(topic, &base.url)
                    .is_some_and(|url| pattern_matches(pattern, &url)),
                Form::Template(regex) => *self.raw == *topic || regex.is_match(topic),
            },
        }
    }

    /// Whether any of `topics` is selected.
    pub fn matches_any<T: AsRef<str>>(&self, topics: &[T], base: &MatchBase) -> bool {
        topics
            .iter()
            .any(|topic| self.matches(topic.as_ref(), base))
    }

    /// Whether any of `update`'s topics is selected, reading them as URLs once per update
    /// (see [`Update::topic_urls`]).
    pub fn matches_update(&self, update: &Update, base: &MatchBase) -> bool {
        match &self.compiled {
            Compiled::Any => true,
            Compiled::Exact => update.topics.iter().any(|topic| **topic == *self.raw),
            Compiled::Segment => segment_prefix(&self.raw).is_some_and(|parent| {
                update
                    .topic_urls(&base.url)
                    .iter()
                    .flatten()
                    .any(|url| base.parent_of(url) == Some(parent))
            }),
            Compiled::Shared(shared) => match &shared.form {
                Form::Pattern(pattern) => update
                    .topic_urls(&base.url)
                    .iter()
                    .flatten()
                    .any(|url| pattern_matches(pattern, url)),
                Form::Template(regex) => update
                    .topics
                    .iter()
                    .any(|topic| **topic == *self.raw || regex.is_match(&**topic)),
            },
        }
    }
}

/// The literal path before the last segment of `raw` (with its `/`), when `raw` is a
/// relative URL pattern made of that literal and one `:name` segment: such a pattern
/// matches exactly the topics on the hub's origin whose path is the literal then one
/// non-empty segment, whatever their query or fragment. The literal may hold only
/// characters that URL parsing leaves as they are (no pattern syntax, no dot segments,
/// `%` only before two hex digits), so that it is the path topics are compared with.
fn segment_prefix(raw: &str) -> Option<&str> {
    let (prefix, last) = raw.split_at(raw.rfind('/')? + 1);
    let name = last.strip_prefix(':')?;
    let mut chars = name.chars();
    let name_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '$');
    if !name_ok || !prefix.starts_with('/') {
        return None;
    }
    let bytes = prefix.as_bytes();
    let mut at = 0;
    while at < bytes.len() {
        match bytes[at] {
            b'%' => {
                let hex = bytes.get(at + 1..at + 3)?;
                if !hex.iter().all(u8::is_ascii_hexdigit) {
                    return None;
                }
                at += 3;
                continue;
            }
            b'A'..=b'Z'
            | b'a'..=b'z'
            | b'0'..=b'9'
            | b'-'
            | b'.'
            | b'_'
            | b'~'
            | b'!'
            | b'$'
            | b'&'
            | b'\''
            | b','
            | b';'
            | b'='
            | b'@'
            | b'/' => {}
            _ => return None,
        }
        at += 1;
    }
    let dots = prefix
        .split('/')
        .any(|segment| segment == "." || segment == "..");
    (!dots).then_some(prefix)
}

/// `raw` compiled as a selector of `kind` (a URL pattern or a URI template), and its cost.
fn compile(kind: MatchType, raw: &str, base: &Url) -> Result<(Form, usize), SelectorError> {
    match kind {
        MatchType::UrlPattern => {
            let pattern = compile_pattern(raw, base)?;
            let mut cost = base_cost(raw);
            // The components that need a regular expression get it now: it is measured,
            // and one too large refuses the pattern here rather than fail its matches.
            for component in components(&pattern) {
                if let InnerMatcher::RegExp { regexp } = &component.inner {
                    let regex = regexp
                        .as_ref()
                        .map_err(|_| SelectorError::InvalidPattern)?
                        .compiled()
                        .ok_or(SelectorError::TooComplex)?;
                    cost += regex_cost(regex);
                }
            }
            Ok((Form::Pattern(Box::new(pattern)), cost))
        }
        MatchType::Legacy => {
            let pattern = template_regex(raw).ok_or(SelectorError::InvalidPattern)?;
            let regex = build_regex(&pattern).ok_or(SelectorError::TooComplex)?;
            let cost = base_cost(raw) + regex_cost(&regex);
            Ok((Form::Template(regex), cost))
        }
        MatchType::Exact => Err(SelectorError::InvalidPattern),
    }
}

fn compile_pattern(raw: &str, base: &Url) -> Result<UrlPattern<LazyRegex>, SelectorError> {
    let init = UrlPatternInit::parse_constructor_string::<LazyRegex>(raw, Some(base.clone()))
        .map_err(|_| SelectorError::InvalidPattern)?;
    UrlPattern::parse(init, UrlPatternOptions::default()).map_err(|_| SelectorError::InvalidPattern)
}

/// The matchers of `pattern`'s eight components, in [`crate::update::topic_url::COMPONENTS`] order.
fn components(pattern: &UrlPattern<LazyRegex>) -> [&Matcher<LazyRegex>; 8] {
    [
        &pattern.protocol.matcher,
        &pattern.username.matcher,
        &pattern.password.matcher,
        &pattern.hostname.matcher,
        &pattern.port.matcher,
        &pattern.pathname.matcher,
        &pattern.search.matcher,
        &pattern.hash.matcher,
    ]
}

/// Whether `url` matches `pattern`: every component matches (what the URL Pattern
/// library's `test` does, without building the list of captures or a string per call).
fn pattern_matches(pattern: &UrlPattern<LazyRegex>, url: &TopicUrl) -> bool {
    components(pattern)
        .iter()
        .enumerate()
        .all(|(index, matcher)| component_matches(matcher, url.component(index)))
}

/// [`Matcher::matches`], as a yes or no (patterns here never ignore case).
fn component_matches(matcher: &Matcher<LazyRegex>, input: &str) -> bool {
    let (prefix, suffix) = (matcher.prefix.as_str(), matcher.suffix.as_str());
    let input = if prefix.is_empty() && suffix.is_empty() {
        input
    } else {
        if input.len() < prefix.len() + suffix.len()
            || !input.starts_with(prefix)
            || !input.ends_with(suffix)
        {
            return false;
        }
        &input[prefix.len()..input.len() - suffix.len()]
    };
    match &matcher.inner {
        InnerMatcher::Literal { literal } => input == literal,
        InnerMatcher::SingleCapture {
            filter,
            allow_empty,
        } => (*allow_empty || !input.is_empty()) && filter.is_none_or(|c| !input.contains(c)),
        InnerMatcher::RegExp { regexp } => {
            regexp.as_ref().is_ok_and(|regexp| regexp.is_match(input))
        }
    }
}

/// A regular expression for the URL Pattern library that is checked when parsed but
/// compiled only when a match needs it: the library makes one for every component of every
/// pattern, and most components never use theirs (their matcher needs none).
#[derive(Debug)]
pub struct LazyRegex {
    pattern: Box<str>,
    compiled: OnceLock<Option<meta::Regex>>,
}

impl LazyRegex {
    /// The compiled expression; `None` when it is larger than the limit.
    fn compiled(&self) -> Option<&meta::Regex> {
        self.compiled
            .get_or_init(|| build_regex(&self.pattern))
            .as_ref()
    }

    fn is_match(&self, text: &str) -> bool {
        self.compiled().is_some_and(|regex| regex.is_match(text))
    }
}

impl RegExp for LazyRegex {
    fn syntax() -> RegexSyntax {
        RegexSyntax::Rust
    }

    fn parse(pattern: &str, _flags: &str, _force_eval: bool) -> Result<Self, ()> {
        regex_syntax::ParserBuilder::new()
            .nest_limit(NEST_LIMIT)
            .build()
            .parse(pattern)
            .map_err(|_| ())?;
        Ok(Self {
            pattern: pattern.into(),
            compiled: OnceLock::new(),
        })
    }

    fn matches<'a>(&self, text: &'a str) -> Option<Vec<Option<&'a str>>> {
        let regex = self.compiled()?;
        let mut captures = regex.create_captures();
        regex.captures(text, &mut captures);
        if !captures.is_match() {
            return None;
        }
        Some(
            (1..captures.group_len())
                .map(|group| {
                    captures
                        .get_group(group)
                        .and_then(|span| text.get(span.range()))
                })
                .collect(),
        )
    }

    fn pattern_string(&self) -> &str {
        &self.pattern
    }
}

/// How deeply groups and repetitions may nest in one expression.
const NEST_LIMIT: u32 = 64;

/// `pattern` compiled within the size limits; `None` when it does not fit (or is invalid).
fn build_regex(pattern: &str) -> Option<meta::Regex> {
    meta::Builder::new()
        .configure(
            meta::Config::new()
                .nfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .onepass_size_limit(Some(REGEX_SIZE_LIMIT))
                .dfa_size_limit(Some(REGEX_SIZE_LIMIT))
                .hybrid_cache_capacity(REGEX_CACHE_BYTES),
        )
        .syntax(regex_automata::util::syntax::Config::new().nest_limit(NEST_LIMIT))
        .build(pattern)
        .ok()
}

/// The regular expression an RFC 6570 URI Template matches, or `None` when `template` holds
/// no expression or is not a valid template. Each expression becomes an optional group of
/// the characters its operator may expand to, as the reference hub does.
pub fn template_regex(template: &str) -> Option<String> {
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
    Some(pattern)
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

    /// Whether the URL Pattern library itself (with the `regex` crate, compiling every
    /// component) says `pattern` matches `topic`.
    fn reference(pattern: &str, topic: &str) -> Option<bool> {
        let base = FALLBACK_BASE.clone();
        let init =
            UrlPatternInit::parse_constructor_string::<regex::Regex>(pattern, Some(base.clone()))
                .ok()?;
        let pattern: UrlPattern = UrlPattern::parse(init, UrlPatternOptions::default()).ok()?;
        let url = base.join(topic).ok()?;
        pattern
            .test(urlpattern::UrlPatternMatchInput::Url(url))
            .ok()
    }

    pub(crate) const PATTERNS: &[&str] = &[
        "https://example.com/books/:id",
        "https://example.com/books/:id?",
        "https://example.com/books/*",
        "https://example.com/books/:id(\\d+)",
        "https://example.com/(books|users)/:id",
        "https://:sub.example.com/*",
        "https://example.com/books/:id.json",
        "https://example.com:8443/*",
        "/topics/:name",
        "/topics/*",
        "/topics/a{/:rest}?",
        "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fa/:subscriber",
        "*://example.com/*",
        "https://example.com/search?q=:query",
        "https://example.com/*#:fragment",
        "urn\\:isbn\\:*",
    ];

    pub(crate) const TOPICS: &[&str] = &[
        "https://example.com/books/1",
        "https://example.com/books/",
        "https://example.com/books/1/reviews",
        "https://example.com/books/abc",
        "https://example.com/books/1.json",
        "https://example.com/users/7",
        "https://api.example.com/x/y",
        "https://example.com:8443/z",
        "http://example.com/books/1",
        "https://EXAMPLE.com/books/1",
        "/topics/a",
        "/topics/a/b",
        "/topics/",
        "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fa/urn%3Auuid%3A1",
        "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fb/urn%3Auuid%3A1",
        "https://example.com/search?q=rust",
        "https://example.com/page#top",
        "urn:isbn:123",
        "not a url at all",
    ];

    #[test]
    fn matches_as_the_url_pattern_library_does() {
        for pattern in PATTERNS {
            let selector = selector(MatchType::UrlPattern, pattern);
            for topic in TOPICS {
                let Some(expected) = reference(pattern, topic) else {
                    continue;
                };
                assert_eq!(
                    selector.matches(topic, &base()),
                    expected,
                    "{pattern} against {topic}"
                );
            }
        }
    }

    #[test]
    fn a_literal_path_and_one_segment_is_matched_without_compiling() {
        let base = base();
        for raw in [
            "/topics/:name",
            "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fa/:subscriber",
            "/:x",
            "/a-b_c.d~e!$&',;=@/:_1",
        ] {
            let selector = Selector::new(MatchType::UrlPattern, raw, &base).expect("valid");
            assert!(selector.segment_parent().is_some(), "{raw}");
            assert_eq!(selector.cost(), 0, "{raw}");
        }
        assert!(base.patterns().is_empty(), "nothing compiled");
        for raw in [
            "https://example.com/topics/:name",
            "/topics/:name?",
            "/topics/:name/x",
            "/topics/*",
            "/to pics/:name",
            "/topics/../x/:name",
            "/topics/%zz/:name",
            "/topics/(x)/:name",
            "topics/:name",
            "/topics/:1name",
        ] {
            let selector = Selector::new(MatchType::UrlPattern, raw, &base);
            assert!(
                selector.map_or(true, |selector| selector.segment_parent().is_none()),
                "{raw}"
            );
        }
        let watchers = selector(
            MatchType::UrlPattern,
            "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fa/:subscriber",
        );
        assert!(watchers.matches(
            "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fa/urn%3Auuid%3A1",
            &base
        ));
        assert!(watchers.matches(
            "https://mercure.invalid/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fa/x?y#z",
            &base
        ));
        assert!(!watchers.matches(
            "/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fab/x",
            &base
        ));
        assert!(!watchers.matches(
            "https://other.example/.well-known/mercure/subscriptions/exact/%2Ftopics%2Fa/x",
            &base
        ));
    }

    #[test]
    fn selectors_with_the_same_pattern_share_one_compiled_form() {
        let base = base();
        let first = Selector::new(MatchType::UrlPattern, "/a/*", &base).expect("valid");
        let cost = first.cost();
        assert!(cost > 1000, "{cost}");
        let second = Selector::new(MatchType::UrlPattern, "/a/*", &base).expect("valid");
        assert_eq!(base.patterns().len(), 1);
        assert_eq!(base.patterns().total(), cost, "counted once");
        let other = Selector::new(MatchType::UrlPattern, "/b/*", &base).expect("valid");
        assert_eq!(base.patterns().len(), 2);
        drop((first, other));
        assert_eq!(base.patterns().total(), cost, "the other user keeps it");
        drop(second);
        assert_eq!(base.patterns().total(), 0);
        assert!(base.patterns().is_empty());
    }

    #[test]
    fn patterns_compile_their_regular_expressions_only_where_needed() {
        let simple = selector(MatchType::UrlPattern, "https://example.com/books/:id");
        let complex = selector(MatchType::UrlPattern, "https://example.com/(a|b)+/:id?");
        assert!(simple.cost() < 4096, "{}", simple.cost());
        assert!(
            complex.cost() > simple.cost() + 2 * REGEX_CACHE_BYTES,
            "{} vs {}",
            complex.cost(),
            simple.cost()
        );
        // One whose automaton would pass the size limit is refused, not compiled.
        let huge = format!("https://example.com/({})", "(?:\\w{1,1000})".repeat(20));
        assert_eq!(
            Selector::new(MatchType::UrlPattern, &huge, &base()).err(),
            Some(SelectorError::TooComplex)
        );
    }

    #[test]
    fn budgets_bound_a_subscription_an_address_and_the_hub() {
        let budget = PatternBudget {
            per_subscription: 10_000,
            per_address: 15_000,
            total: 20_000,
        };
        let base = MatchBase::with_budget(None, budget);
        let address = AddressKey::of([10, 0, 0, 1].into());
        assert!(matches!(
            base.lease(address, 10_001),
            Err(BudgetError::Subscription { .. })
        ));
        let first = base
            .lease(address, 8_000)
            .expect("within")
            .expect("a lease");
        assert_eq!(base.lease(address, 8_000).err(), Some(BudgetError::Address));
        let other = AddressKey::of([10, 0, 0, 2].into());
        assert!(
            base.lease(other, 8_000).is_ok(),
            "another address has its own"
        );
        drop(first);
        assert!(base.lease(address, 8_000).is_ok(), "given back");
        // The hub's total counts distinct compiled patterns.
        let held: Vec<Selector> = (0..100)
            .map_while(|n| {
                Selector::for_subscription(MatchType::UrlPattern, &format!("/p{n}/*"), &base).ok()
            })
            .collect();
        assert!(held.len() < 100, "the total stops them");
        assert!(base.patterns().total() <= budget.total);
        assert_eq!(
            Selector::for_subscription(MatchType::UrlPattern, "/another/*", &base).err(),
            Some(SelectorError::HubFull)
        );
        assert!(
            Selector::for_subscription(MatchType::UrlPattern, "/p0/*", &base).is_ok(),
            "one already compiled costs nothing more"
        );
        assert!(
            Selector::new(MatchType::UrlPattern, "/granted/*", &base).is_ok(),
            "a token's grants are never refused for the total"
        );
    }

    /// Patterns built from the pieces the URL Pattern syntax has, some of them malformed.
    fn built_patterns() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let piece = prop_oneof![
            Just("/"),
            Just("books"),
            Just(":id"),
            Just(":id?"),
            Just(":id+"),
            Just("*"),
            Just("(\\d+)"),
            Just("(a|b)"),
            Just("{/:rest}?"),
            Just("."),
            Just("?q=:q"),
            Just("#:frag"),
            Just("%2F"),
            Just("("),
            Just("\\"),
            Just("{"),
        ];
        (
            prop_oneof![
                Just(""),
                Just("https://example.com"),
                Just("https://:sub.example.com"),
                Just("*://")
            ],
            proptest::collection::vec(piece, 0..8),
        )
            .prop_map(|(origin, pieces)| format!("{origin}{}", pieces.concat()))
    }

    fn built_topics() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        let segment = prop_oneof![
            Just("books"),
            Just("1"),
            Just("42"),
            Just("a"),
            Just("b"),
            Just("x.json"),
            Just("%2F"),
            Just("")
        ];
        (
            prop_oneof![
                Just(""),
                Just("https://example.com"),
                Just("https://api.example.com"),
                Just("http://example.com")
            ],
            proptest::collection::vec(segment, 0..5),
            prop_oneof![Just(""), Just("?q=rust"), Just("#top")],
        )
            .prop_map(|(origin, segments, tail)| format!("{origin}/{}{tail}", segments.join("/")))
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(256))]

        /// Whatever the text, compiling and matching never panics and stays quick, and a
        /// pattern that compiles matches as the URL Pattern library does.
        #[test]
        fn built_patterns_match_as_the_library_does(pattern in built_patterns(), topic in built_topics()) {
            let started = std::time::Instant::now();
            let compiled = Selector::new(MatchType::UrlPattern, &pattern, &base());
            // `*` alone is Mercure's wildcard for every type, not the URL Pattern `*`.
            if let Some(selector) = compiled.as_ref().ok().filter(|_| pattern != "*") {
                let ours = selector.matches(&topic, &base());
                if let Some(expected) = reference(&pattern, &topic) {
                    proptest::prop_assert_eq!(ours, expected, "{} against {}", pattern, topic);
                }
            }
            proptest::prop_assert!(started.elapsed() < std::time::Duration::from_secs(2));
        }

        #[test]
        fn any_text_as_a_pattern_or_template_never_panics(
            raw in proptest::prelude::any::<String>(),
            topic in proptest::prelude::any::<String>(),
        ) {
            let started = std::time::Instant::now();
            for kind in [MatchType::UrlPattern, MatchType::Legacy, MatchType::Exact] {
                if let Ok(selector) = Selector::new(kind, &raw, &base()) {
                    let _ = selector.matches(&topic, &base());
                    let _ = selector.matches(&raw, &base());
                }
            }
            let _ = template_regex(&raw);
            proptest::prop_assert!(started.elapsed() < std::time::Duration::from_secs(2));
        }

        #[test]
        fn any_uri_template_matches_itself_and_never_panics(
            template in "[a-z/]{0,8}(\\{[+#./;?&]?[a-z_]{1,5}(,[a-z_]{1,5}\\*?){0,2}\\}[a-z/]{0,5}){0,3}",
            topic in "[a-z0-9/%,.=&;?#-]{0,30}",
        ) {
            let selector = Selector::new(MatchType::Legacy, &template, &base())
                .expect("a well-formed template compiles");
            proptest::prop_assert!(selector.matches(&template, &base()), "a template matches itself");
            let _ = selector.matches(&topic, &base());
        }
    }
}
