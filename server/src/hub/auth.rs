//! Access tokens: where they come from, whether they are valid, and what they allow.
//!
//! Follows the Mercure specification's token validation and authorization details: a JWT
//! access token (`typ` `at+jwt`) signed with the configured algorithm only (never `none`,
//! never the algorithm the token names), with `exp`, an `aud` holding the hub's resource
//! identifier and a trusted `iss`; its `authorization_details` grant `publish` and
//! `subscribe` on topic selectors. Compatibility mode (`8`) also accepts 0.x tokens: no
//! `typ`, `aud`, `exp` or `iss` required, and the legacy `mercure` claim.
//!
//! Every failure of a presented token is reported to the client as `invalid_token`, without
//! saying why (the reason goes to the log at debug level).

use std::{collections::HashSet, sync::Arc};

use http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Validation};
use serde_json::Value;

use super::selector::{MatchBase, MatchType, Selector, SelectorError};

/// The type string of Mercure authorization details.
pub const DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";
/// The cookie 0.x clients use (compatibility mode).
pub const LEGACY_COOKIE: &str = "mercureAuthorization";
const MAX_DETAILS: usize = 100;
const MAX_DETAIL_TOPICS: usize = 100;
const MAX_LEGACY_ENTRIES: usize = 1000;

/// Which endpoint a token is presented to; each has its own key.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    Publisher,
    Subscriber,
}

/// A verification key and the one algorithm it accepts.
#[derive(Clone)]
pub struct Key {
    pub algorithm: Algorithm,
    decoding: DecodingKey,
    /// Present for shared secrets (HS*), so the server can mint tokens itself.
    encoding: Option<EncodingKey>,
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("unknown JWT algorithm {0:?} (use HS256, HS384, HS512, RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384 or EdDSA)")]
    UnknownAlgorithm(String),
    #[error("the {algorithm:?} key is not a valid PEM public key: {source}")]
    Pem {
        algorithm: Algorithm,
        source: jsonwebtoken::errors::Error,
    },
    #[error("a shared secret for {0:?} must be at least 32 bytes long")]
    ShortSecret(Algorithm),
}

impl Key {
    /// A key from its text (a shared secret for HS*, a PEM public key otherwise) and the name
    /// of its algorithm.
    pub fn new(text: &str, algorithm: &str) -> Result<Self, KeyError> {
        let algorithm: Algorithm = algorithm
            .parse()
            .map_err(|_| KeyError::UnknownAlgorithm(algorithm.to_owned()))?;
        let pem = |source| KeyError::Pem { algorithm, source };
        let (decoding, encoding) = match algorithm {
            Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
                if text.len() < 32 {
                    return Err(KeyError::ShortSecret(algorithm));
                }
                (
                    DecodingKey::from_secret(text.as_bytes()),
                    Some(EncodingKey::from_secret(text.as_bytes())),
                )
            }
            Algorithm::RS256
            | Algorithm::RS384
            | Algorithm::RS512
            | Algorithm::PS256
            | Algorithm::PS384
            | Algorithm::PS512 => (
                DecodingKey::from_rsa_pem(text.as_bytes()).map_err(pem)?,
                None,
            ),
            Algorithm::ES256 | Algorithm::ES384 => (
                DecodingKey::from_ec_pem(text.as_bytes()).map_err(pem)?,
                None,
            ),
            Algorithm::EdDSA => (
                DecodingKey::from_ed_pem(text.as_bytes()).map_err(pem)?,
                None,
            ),
            other => return Err(KeyError::UnknownAlgorithm(format!("{other:?}"))),
        };
        Ok(Self {
            algorithm,
            decoding,
            encoding,
        })
    }

    /// Whether the server can sign tokens with this key (shared secrets only).
    pub fn can_sign(&self) -> bool {
        self.encoding.is_some()
    }
}

/// Everything token handling needs.
#[derive(Clone)]
pub struct AuthSettings {
    pub publisher: Key,
    pub subscriber: Key,
    /// Accepted `iss` values; the first one is used for tokens the server mints.
    pub trusted_issuers: Vec<String>,
    /// The `aud` tokens must carry; derived from each request's URL when `None`.
    pub resource_identifier: Option<String>,
    /// Accept 0.x clients and tokens (`protocol_version_compatibility 8`).
    pub compat: bool,
    /// The cookie that may carry a token.
    pub cookie_name: String,
    /// Whether subscribers without a token may receive public updates.
    pub anonymous: bool,
}

/// What a valid token allows.
#[derive(Debug, Default, Clone)]
pub struct Grants {
    /// Topics the holder may publish to.
    pub publish: Vec<Selector>,
    /// Subscribe grants, in token order, each with its payload.
    pub subscribe: Vec<SubscribeGrant>,
    /// When the token expires (seconds since the epoch, with a fraction); streams close
    /// then.
    pub expires_at: Option<f64>,
}

/// Topics the holder may read private updates of, and the payload that goes with them.
#[derive(Debug, Clone)]
pub struct SubscribeGrant {
    pub selectors: Vec<Selector>,
    pub payload: Option<Value>,
}

impl Grants {
    /// Whether publishing to every one of `topics` is allowed.
    pub fn may_publish<T: AsRef<str>>(&self, topics: &[T], base: &MatchBase) -> bool {
        topics.iter().all(|topic| {
            self.publish
                .iter()
                .any(|selector| selector.matches(topic.as_ref(), base))
        })
    }

    /// Whether a private update with `topics` may be delivered (some grant covers some topic).
    pub fn may_read<T: AsRef<str>>(&self, topics: &[T], base: &MatchBase) -> bool {
        self.subscribe.iter().any(|grant| {
            grant
                .selectors
                .iter()
                .any(|selector| selector.matches_any(topics, base))
        })
    }

    /// The payload for a subscription whose matcher is `matcher`: that of the first
    /// subscribe grant whose selectors accept the matcher's text as a topic.
    pub fn payload_for(&self, matcher: &str, base: &MatchBase) -> Option<Value> {
        self.subscribe
            .iter()
            .find(|grant| grant.selectors.iter().any(|s| s.matches(matcher, base)))
            .and_then(|grant| grant.payload.clone())
    }
}

/// How a request failed authorization, in RFC 6750 terms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No token, and the operation needs one: `401` with a bare challenge.
    #[error("this operation needs an access token")]
    Missing,
    /// The token could not even be read from the request: `400 invalid_request`.
    #[error("the access token is not presented as `Authorization: Bearer <token>`")]
    Malformed,
    /// The token is not valid: `401 invalid_token`. The reason is only logged.
    #[error("invalid access token")]
    Invalid(String),
    /// The token is valid but does not allow this: `403 insufficient_scope`.
    #[error("the access token does not allow this")]
    Forbidden,
}

impl AuthError {
    /// The RFC 6750 `error` code, if any.
    pub fn code(&self) -> Option<&'static str> {
        match self {
            Self::Missing => None,
            Self::Malformed => Some("invalid_request"),
            Self::Invalid(_) => Some("invalid_token"),
            Self::Forbidden => Some("insufficient_scope"),
        }
    }
}

/// Where a request's token came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenSource {
    /// `Authorization: Bearer …`, which a browser never sends by itself.
    Header,
    /// The `authorization` query parameter (compatibility mode).
    Query,
    /// A cookie, which the browser sends with requests other sites' pages make too.
    Cookie,
}

/// Finds the token of a request: the `Authorization` header, else (compatibility mode) the
/// `authorization` query parameter, else the cookie (and, in compatibility mode, the 0.x
/// cookie). `None` when there is none.
pub fn extract_token(
    headers: &HeaderMap,
    query: &[(String, String)],
    settings: &AuthSettings,
) -> Result<Option<(String, TokenSource)>, AuthError> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    if let Some(value) = values.next() {
        if values.next().is_some() {
            return Err(AuthError::Malformed);
        }
        let value = value.to_str().map_err(|_| AuthError::Malformed)?;
        let token = value
            .get(..7)
            .filter(|scheme| scheme.eq_ignore_ascii_case("bearer "))
            .map(|_| value[7..].trim())
            .filter(|token| !token.is_empty())
            .ok_or(AuthError::Malformed)?;
        return Ok(Some((token.to_owned(), TokenSource::Header)));
    }
    if settings.compat {
        if let Some((_, token)) = query.iter().find(|(name, _)| name == "authorization") {
            return Ok(Some((token.clone(), TokenSource::Query)));
        }
    }
    let mut cookies = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='));
    let wanted =
        |name: &str| name == settings.cookie_name || (settings.compat && name == LEGACY_COOKIE);
    Ok(cookies
        .find(|(name, _)| wanted(name))
        .map(|(_, value)| (value.trim_matches('"').to_owned(), TokenSource::Cookie)))
}

/// Whether a request authorized by a cookie comes from a page of an allowed origin: the
/// browser sends the cookie with requests other sites' pages make too, so such a request
/// must say where it comes from (`Origin`, else `Referer`) and that must be `own_origin`
/// (the hub's) or one of `allowed` (`*`: any). A request that names neither is refused.
pub fn cookie_origin_allowed(headers: &HeaderMap, own_origin: &str, allowed: &[String]) -> bool {
    // `Origin: null` (a sandboxed frame, a redirect across sites) names no origin to
    // trust, and is no reason to look at the `Referer` instead.
    let origin_header = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok())
        .filter(|origin| !origin.is_empty());
    if origin_header == Some("null") {
        return false;
    }
    let origin = origin_header.map(str::to_owned).or_else(|| {
        let referer = headers.get(header::REFERER)?.to_str().ok()?;
        let url = url::Url::parse(referer).ok()?;
        Some(url.origin().ascii_serialization()).filter(|origin| origin != "null")
    });
    let Some(origin) = origin else {
        return false;
    };
    let origin = origin.trim_end_matches('/');
    origin.eq_ignore_ascii_case(own_origin)
        || allowed.iter().any(|allowed| {
            allowed == "*" || allowed.trim_end_matches('/').eq_ignore_ascii_case(origin)
        })
}

/// Validates `token` for `role` against `resource_identifier` and returns what it allows.
pub fn validate(
    token: &str,
    role: Role,
    resource_identifier: &str,
    settings: &AuthSettings,
    base: &MatchBase,
) -> Result<Grants, AuthError> {
    let invalid = |reason: &str| {
        tracing::debug!(reason, "token refused");
        AuthError::Invalid(reason.to_owned())
    };
    let key = match role {
        Role::Publisher => &settings.publisher,
        Role::Subscriber => &settings.subscriber,
    };
    let header = jsonwebtoken::decode_header(token).map_err(|_| invalid("unreadable header"))?;
    if header.alg != key.algorithm {
        return Err(invalid("algorithm not allowed"));
    }
    if !settings.compat {
        let typ = header
            .typ
            .as_deref()
            .unwrap_or_default()
            .to_ascii_lowercase();
        if typ != "at+jwt" && typ != "application/at+jwt" {
            return Err(invalid("typ is not at+jwt"));
        }
    }
    // The library checks the signature only: the time claims are checked here, to the
    // millisecond and for fractional values too (a NumericDate may have a fraction), and so
    // are `aud` and `iss`, which compatibility mode may leave out but never get wrong.
    let mut validation = Validation::new(key.algorithm);
    validation.required_spec_claims = HashSet::new();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    let claims = jsonwebtoken::decode::<Value>(token, &key.decoding, &validation)
        .map_err(|error| invalid(&format!("{:?}", error.kind())))?
        .claims;
    let expires_at =
        check_claims(&claims, now_seconds(), resource_identifier, settings).map_err(invalid)?;
    let mut grants = match claims.get("authorization_details") {
        Some(details) => parse_details(details, base).map_err(|reason| invalid(&reason))?,
        None if settings.compat => {
            parse_legacy(&claims, base).map_err(|reason| invalid(&reason))?
        }
        None => Grants::default(),
    };
    grants.expires_at = expires_at;
    Ok(grants)
}

/// The time now, in seconds since the epoch, with its fraction.
pub fn now_seconds() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |elapsed| elapsed.as_secs_f64())
}

/// Checks the registered claims of a token's `claims` at time `now` (seconds since the
/// epoch); returns when it expires. `exp`, `aud` and `iss` are required unless in
/// compatibility mode, where each may be absent; present, each must be right:
///
/// - `exp` and `nbf` are NumericDates (JSON numbers, fractions allowed): the token is
///   valid from `nbf` on and while the time is before `exp` (RFC 7519, 4.1.4 and 4.1.5);
/// - `aud` (a string or an array of strings) names the hub's resource identifier;
/// - `iss` is one of the trusted issuers.
pub fn check_claims(
    claims: &Value,
    now: f64,
    resource_identifier: &str,
    settings: &AuthSettings,
) -> Result<Option<f64>, &'static str> {
    let required = !settings.compat;
    let date = |name: &str| -> Result<Option<f64>, &'static str> {
        match claims.get(name) {
            None => Ok(None),
            Some(Value::Number(number)) => number
                .as_f64()
                .filter(|value| value.is_finite())
                .map(Some)
                .ok_or("a time claim is not a usable number"),
            Some(_) => Err("a time claim is not a number"),
        }
    };
    let expires_at = date("exp")?;
    match expires_at {
        None if required => return Err("no exp claim"),
        Some(exp) if now >= exp => return Err("expired"),
        _ => {}
    }
    if date("nbf")?.is_some_and(|nbf| now < nbf) {
        return Err("not valid yet (nbf)");
    }
    match claims.get("aud") {
        None if required => return Err("no aud claim"),
        None => {}
        Some(Value::String(aud)) if aud == resource_identifier => {}
        Some(Value::Array(auds))
            if auds
                .iter()
                .any(|aud| aud.as_str() == Some(resource_identifier)) => {}
        Some(_) => return Err("aud does not name this hub"),
    }
    match claims.get("iss") {
        None if required => return Err("no iss claim"),
        None => {}
        Some(Value::String(iss)) if settings.trusted_issuers.iter().any(|t| t == iss) => {}
        Some(_) => return Err("iss is not trusted"),
    }
    Ok(expires_at)
}

fn parse_details(details: &Value, base: &MatchBase) -> Result<Grants, String> {
    let entries = details
        .as_array()
        .ok_or("authorization_details is not an array")?;
    let mercure: Vec<&serde_json::Map<String, Value>> = entries
        .iter()
        .map(|entry| {
            entry
                .as_object()
                .ok_or("an authorization detail is not an object")
        })
        .collect::<Result<Vec<_>, _>>()?
        .into_iter()
        .filter(|entry| entry.get("type").and_then(Value::as_str) == Some(DETAIL_TYPE))
        .collect();
    if mercure.len() > MAX_DETAILS {
        return Err(format!(
            "more than {MAX_DETAILS} Mercure authorization details"
        ));
    }
    let topic_count: usize = mercure
        .iter()
        .map(|entry| {
            entry
                .get("topics")
                .and_then(Value::as_array)
                .map_or(0, Vec::len)
        })
        .sum();
    if topic_count > MAX_DETAIL_TOPICS {
        return Err(format!(
            "more than {MAX_DETAIL_TOPICS} topic matchers in authorization details"
        ));
    }
    let mut grants = Grants::default();
    for entry in mercure {
        let actions = entry
            .get("actions")
            .and_then(Value::as_array)
            .filter(|actions| !actions.is_empty())
            .ok_or("actions must be a non-empty array")?;
        let actions: Vec<&str> = actions
            .iter()
            .map(|action| action.as_str().ok_or("an action is not a string"))
            .collect::<Result<_, _>>()?;
        let topics = entry
            .get("topics")
            .and_then(Value::as_array)
            .filter(|topics| !topics.is_empty())
            .ok_or("topics must be a non-empty array")?;
        let selectors = topics
            .iter()
            .map(|topic| parse_matcher_object(topic, base))
            .collect::<Result<Vec<_>, _>>()?;
        if actions.contains(&"publish") {
            grants.publish.extend(selectors.iter().cloned());
        }
        if actions.contains(&"subscribe") {
            grants.subscribe.push(SubscribeGrant {
                selectors,
                payload: entry.get("payload").cloned(),
            });
        }
    }
    Ok(grants)
}

fn parse_matcher_object(topic: &Value, base: &MatchBase) -> Result<Selector, String> {
    let object = topic
        .as_object()
        .ok_or("a topic matcher is not an object")?;
    let pattern = object
        .get("match")
        .and_then(Value::as_str)
        .filter(|pattern| !pattern.is_empty())
        .ok_or("a topic matcher has no match string")?;
    let kind = match object.get("match_type") {
        None => MatchType::Exact,
        Some(Value::String(name)) => MatchType::from_name(name).ok_or("unsupported match_type")?,
        Some(_) => return Err("match_type is not a string".into()),
    };
    Selector::new(kind, pattern, base).map_err(|error: SelectorError| error.to_string())
}

fn parse_legacy(claims: &Value, base: &MatchBase) -> Result<Grants, String> {
    let Some(claim) = claims
        .get("https://mercure.rocks/")
        .or_else(|| claims.get("mercure"))
    else {
        return Ok(Grants::default());
    };
    let claim = claim
        .as_object()
        .ok_or("the mercure claim is not an object")?;
    let fallback_payload = claim.get("payload").cloned();
    let entries = |name: &str| -> Result<Vec<(Selector, Option<Value>)>, String> {
        let Some(list) = claim.get(name) else {
            return Ok(Vec::new());
        };
        let list = list
            .as_array()
            .ok_or(format!("mercure.{name} is not an array"))?;
        if list.len() > MAX_LEGACY_ENTRIES {
            return Err(format!(
                "more than {MAX_LEGACY_ENTRIES} entries in mercure.{name}"
            ));
        }
        list.iter()
            .map(|entry| match entry {
                Value::String(raw) => Selector::new(MatchType::Legacy, raw, base)
                    .map(|selector| (selector, None))
                    .map_err(|error| error.to_string()),
                Value::Object(object) => parse_matcher_object(entry, base)
                    .map(|selector| (selector, object.get("payload").cloned())),
                _ => Err(format!(
                    "an entry of mercure.{name} is neither a string nor an object"
                )),
            })
            .collect()
    };
    let publish = entries("publish")?
        .into_iter()
        .map(|(selector, _)| selector)
        .collect();
    let subscribe = entries("subscribe")?
        .into_iter()
        .map(|(selector, payload)| SubscribeGrant {
            selectors: vec![selector],
            payload: payload.or_else(|| fallback_payload.clone()),
        })
        .collect();
    Ok(Grants {
        publish,
        subscribe,
        expires_at: None,
    })
}

/// The `match` strings of the subscribe grants `token` claims, read without checking the
/// token in any way: only for what a forged token could not abuse (the topic pages a
/// renewed page token names, each of which any visitor may open).
pub fn unverified_subscribe_selectors(token: &str) -> Vec<String> {
    let Ok(claims) = jsonwebtoken::dangerous::insecure_decode_claims::<Value>(token) else {
        return Vec::new();
    };
    let Some(details) = claims
        .get("authorization_details")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    details
        .iter()
        .filter(|detail| {
            detail
                .get("actions")
                .and_then(Value::as_array)
                .is_some_and(|actions| actions.iter().any(|a| a.as_str() == Some("subscribe")))
        })
        .filter_map(|detail| detail.get("topics").and_then(Value::as_array))
        .flatten()
        .filter_map(|topic| topic.get("match").and_then(Value::as_str))
        .take(MAX_DETAIL_TOPICS)
        .map(str::to_owned)
        .collect()
}

/// What a token the server mints allows.
#[derive(Debug, Clone, Default)]
pub struct TokenRequest {
    /// Topic selectors (`*`, exact topics, or URL patterns marked by `urlpattern:`).
    pub publish: Vec<String>,
    pub subscribe: Vec<String>,
    /// The subscriber payload, if any.
    pub payload: Option<Value>,
    /// Lifetime in seconds.
    pub lifetime: u64,
}

/// Why the server could not mint a token.
#[derive(Debug, thiserror::Error)]
pub enum MintError {
    #[error("the {0:?} key is not a shared secret, so this server cannot sign tokens with it")]
    CannotSign(Role),
    #[error("cannot sign the token: {0}")]
    Sign(#[from] jsonwebtoken::errors::Error),
}

/// Signs an access token for `role` that this hub accepts for `audience`.
pub fn mint(
    request: &TokenRequest,
    role: Role,
    audience: &str,
    settings: &AuthSettings,
) -> Result<String, MintError> {
    let key = match role {
        Role::Publisher => &settings.publisher,
        Role::Subscriber => &settings.subscriber,
    };
    let encoding = key.encoding.as_ref().ok_or(MintError::CannotSign(role))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs());
    let topics = |selectors: &[String]| -> Vec<Value> {
        selectors
            .iter()
            .map(|selector| match selector.strip_prefix("urlpattern:") {
                Some(pattern) => {
                    serde_json::json!({ "match": pattern, "match_type": "urlpattern" })
                }
                None => serde_json::json!({ "match": selector }),
            })
            .collect()
    };
    let mut details = Vec::new();
    if !request.publish.is_empty() {
        details.push(serde_json::json!({
            "type": DETAIL_TYPE,
            "actions": ["publish"],
            "topics": topics(&request.publish),
        }));
    }
    if !request.subscribe.is_empty() {
        let mut detail = serde_json::json!({
            "type": DETAIL_TYPE,
            "actions": ["subscribe"],
            "topics": topics(&request.subscribe),
        });
        if let (Some(payload), Some(object)) = (&request.payload, detail.as_object_mut()) {
            object.insert("payload".into(), payload.clone());
        }
        details.push(detail);
    }
    let issuer = settings.trusted_issuers.first().map_or("", String::as_str);
    let claims = serde_json::json!({
        "iss": issuer,
        "aud": audience,
        "sub": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "client_id": issuer,
        "iat": now,
        "exp": now + request.lifetime,
        "jti": format!("urn:uuid:{}", uuid::Uuid::new_v4()),
        "authorization_details": details,
    });
    let mut header = jsonwebtoken::Header::new(key.algorithm);
    header.typ = Some("at+jwt".into());
    Ok(jsonwebtoken::encode(&header, &claims, encoding)?)
}

/// Shares settings between handlers.
pub type SharedAuth = Arc<AuthSettings>;

#[cfg(test)]
mod tests {
    use jsonwebtoken::{encode, EncodingKey, Header};
    use serde_json::json;

    use super::*;

    const SECRET: &str = "!ChangeThisMercureHubJWTSecretKey!";
    const AUD: &str = "https://hub.example.com/.well-known/mercure";
    const ISS: &str = "https://localhost";

    fn settings(compat: bool) -> AuthSettings {
        AuthSettings {
            publisher: Key::new(SECRET, "HS256").expect("key"),
            subscriber: Key::new(SECRET, "HS256").expect("key"),
            trusted_issuers: vec![ISS.into()],
            resource_identifier: None,
            compat,
            cookie_name: "mercure_access_token".into(),
            anonymous: true,
        }
    }

    fn sign(typ: Option<&str>, claims: Value) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.typ = typ.map(str::to_owned);
        encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign")
    }

    fn later() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
            + 3600
    }

    fn modern_claims(details: Value) -> Value {
        json!({ "iss": ISS, "aud": AUD, "exp": later(), "authorization_details": details })
    }

    fn check(token: &str, compat: bool) -> Result<Grants, AuthError> {
        validate(
            token,
            Role::Subscriber,
            AUD,
            &settings(compat),
            &MatchBase::default(),
        )
    }

    #[test]
    fn accepts_a_spec_token_and_reads_its_grants() {
        let token = sign(
            Some("at+jwt"),
            modern_claims(json!([
                { "type": DETAIL_TYPE, "actions": ["publish"], "topics": [{ "match": "*" }] },
                { "type": DETAIL_TYPE, "actions": ["subscribe", "admin"], "topics": [
                    { "match": "https://example.com/books/1" },
                    { "match": "https://example.com/users/42/:r", "match_type": "urlpattern" }
                ], "payload": { "user": 42 } },
                { "type": "https://other.example/detail", "whatever": [1, 2] }
            ])),
        );
        let grants = check(&token, false).expect("valid");
        let base = MatchBase::default();
        assert!(grants.may_publish(&["anything", "else"], &base));
        assert!(grants.may_read(&["https://example.com/users/42/orders"], &base));
        assert!(!grants.may_read(&["https://example.com/books/2"], &base));
        assert_eq!(
            grants.payload_for("https://example.com/books/1", &base),
            Some(json!({ "user": 42 }))
        );
        assert!(grants.expires_at.is_some());
    }

    #[test]
    fn typ_is_checked_case_insensitively() {
        let claims = modern_claims(json!([]));
        assert!(check(&sign(Some("application/AT+JWT"), claims.clone()), false).is_ok());
        assert!(matches!(
            check(&sign(Some("JWT"), claims.clone()), false),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            check(&sign(None, claims), false),
            Err(AuthError::Invalid(_))
        ));
    }

    #[test]
    fn refuses_tokens_without_required_claims_or_with_wrong_ones() {
        let details = json!([]);
        let cases = [
            json!({ "iss": ISS, "aud": AUD, "authorization_details": details }),
            json!({ "iss": ISS, "aud": "https://other/.well-known/mercure", "exp": later() }),
            json!({ "iss": "https://evil", "aud": AUD, "exp": later() }),
            json!({ "aud": AUD, "exp": later() }),
            json!({ "iss": ISS, "aud": AUD, "exp": 1000 }),
            json!({ "iss": ISS, "aud": AUD, "exp": later(), "nbf": later() }),
        ];
        for claims in cases {
            let result = check(&sign(Some("at+jwt"), claims.clone()), false);
            assert!(matches!(result, Err(AuthError::Invalid(_))), "{claims}");
        }
    }

    #[test]
    fn expiry_is_exact_for_whole_and_fractional_dates() {
        let modern = settings(false);
        let at = |exp: Value, now: f64| {
            check_claims(
                &json!({ "iss": ISS, "aud": AUD, "exp": exp }),
                now,
                AUD,
                &modern,
            )
        };
        assert_eq!(at(json!(1000), 999.999), Ok(Some(1000.0)));
        assert!(at(json!(1000), 1000.0).is_err(), "valid only before exp");
        assert!(at(json!(1000), 1000.18).is_err(), "not a second of grace");
        assert_eq!(at(json!(1000.5), 1000.4), Ok(Some(1000.5)));
        assert!(at(json!(1000.5), 1000.5).is_err());
        assert!(
            at(json!(-5), 0.0).is_err(),
            "a date before the epoch is past"
        );
        assert_eq!(at(json!(1e300), 1000.0), Ok(Some(1e300)), "far future");
        for exp in [
            json!("2000"),
            json!(null),
            json!([2000]),
            json!({ "at": 2000 }),
            json!(true),
        ] {
            assert!(at(exp.clone(), 1000.0).is_err(), "{exp}");
        }
        let not_before = |nbf: Value, now: f64| {
            check_claims(
                &json!({ "iss": ISS, "aud": AUD, "exp": 2000, "nbf": nbf }),
                now,
                AUD,
                &modern,
            )
        };
        assert!(not_before(json!(1000.5), 1000.4).is_err());
        assert!(not_before(json!(1000.5), 1000.5).is_ok());
        assert!(not_before(json!("1000"), 1500.0).is_err());
    }

    #[test]
    fn compat_mode_lets_claims_be_absent_but_never_wrong() {
        let compat = settings(true);
        let check = |claims: Value| check_claims(&claims, 1000.0, AUD, &compat);
        assert_eq!(check(json!({})), Ok(None), "a 0.x token carries none");
        assert!(check(json!({ "aud": AUD, "iss": ISS, "exp": 2000 })).is_ok());
        assert!(check(json!({ "aud": [AUD, "https://other"] })).is_ok());
        for wrong in [
            json!({ "aud": "https://other.example/.well-known/mercure" }),
            json!({ "aud": ["https://other"] }),
            json!({ "aud": 7 }),
            json!({ "iss": "https://untrusted.example" }),
            json!({ "exp": 999 }),
            json!({ "exp": "soon" }),
        ] {
            assert!(check(wrong.clone()).is_err(), "{wrong}");
        }
        let modern = settings(false);
        assert!(check_claims(&json!({ "aud": AUD, "exp": 2000 }), 1000.0, AUD, &modern).is_err());
    }

    #[test]
    fn refuses_other_algorithms_and_other_keys() {
        let claims = modern_claims(json!([]));
        let mut header = Header::new(Algorithm::HS512);
        header.typ = Some("at+jwt".into());
        let hs512 = encode(
            &header,
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .expect("sign");
        assert!(check(&hs512, false).is_err());
        let mut header = Header::new(Algorithm::HS256);
        header.typ = Some("at+jwt".into());
        let other_key = encode(
            &header,
            &claims,
            &EncodingKey::from_secret(b"another secret of thirty-two bytes!!"),
        )
        .expect("sign");
        assert!(check(&other_key, false).is_err());
        // alg "none": an unsigned token.
        let unsigned = format!(
            "{}.{}.",
            base64_url(br#"{"alg":"none","typ":"at+jwt"}"#),
            base64_url(claims.to_string().as_bytes())
        );
        assert!(check(&unsigned, false).is_err());
    }

    fn base64_url(bytes: &[u8]) -> String {
        const ALPHABET: &[u8; 64] =
            b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
        let mut out = String::new();
        for chunk in bytes.chunks(3) {
            let n = chunk
                .iter()
                .enumerate()
                .fold(0u32, |n, (i, &b)| n | u32::from(b) << (16 - 8 * i));
            for i in 0..=chunk.len() {
                out.push(ALPHABET[(n >> (18 - 6 * i) & 63) as usize] as char);
            }
        }
        out
    }

    #[test]
    fn refuses_malformed_details_as_a_whole() {
        for details in [
            json!({ "not": "an array" }),
            json!([{ "type": DETAIL_TYPE, "actions": [], "topics": [{ "match": "*" }] }]),
            json!([{ "type": DETAIL_TYPE, "actions": ["subscribe", 3], "topics": [{ "match": "*" }] }]),
            json!([{ "type": DETAIL_TYPE, "actions": ["subscribe"], "topics": ["https://bare.string"] }]),
            json!([{ "type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{ "match": "x", "match_type": "URLPattern" }] }]),
            json!([{ "type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{ "match": "" }] }]),
            json!([{ "type": DETAIL_TYPE, "actions": ["subscribe"], "topics": [{ "match": "/(", "match_type": "urlpattern" }] }]),
            json!([{ "type": DETAIL_TYPE, "actions": ["subscribe"], "topics": (0..101).map(|i| json!({ "match": format!("t{i}") })).collect::<Vec<_>>() }]),
        ] {
            let token = sign(Some("at+jwt"), modern_claims(details.clone()));
            assert!(
                matches!(check(&token, false), Err(AuthError::Invalid(_))),
                "{details}"
            );
        }
    }

    #[test]
    fn compat_mode_accepts_legacy_tokens() {
        let legacy = sign(
            None,
            json!({ "mercure": {
                "publish": ["https://example.com/books/{id}"],
                "subscribe": ["*"],
                "payload": { "user": "u" }
            } }),
        );
        assert!(
            check(&legacy, false).is_err(),
            "modern mode refuses 0.x tokens"
        );
        let grants = check(&legacy, true).expect("compat accepts it");
        let base = MatchBase::default();
        assert!(grants.may_publish(&["https://example.com/books/7"], &base));
        assert!(!grants.may_publish(&["https://example.com/users/7"], &base));
        assert!(grants.may_read(&["anything"], &base));
        assert_eq!(grants.payload_for("x", &base), Some(json!({ "user": "u" })));
    }

    #[test]
    fn extracts_tokens_from_header_query_and_cookies() {
        let modern = settings(false);
        let compat = settings(true);
        let mut headers = HeaderMap::new();
        assert_eq!(extract_token(&headers, &[], &modern), Ok(None));
        headers.insert(
            header::COOKIE,
            "a=b; mercure_access_token=from-cookie"
                .parse()
                .expect("header"),
        );
        assert_eq!(
            extract_token(&headers, &[], &modern),
            Ok(Some(("from-cookie".into(), TokenSource::Cookie)))
        );
        headers.insert(
            header::AUTHORIZATION,
            "bearer from-header".parse().expect("header"),
        );
        assert_eq!(
            extract_token(&headers, &[], &modern),
            Ok(Some(("from-header".into(), TokenSource::Header)))
        );
        headers.insert(
            header::AUTHORIZATION,
            "Basic dXNlcjpwYXNz".parse().expect("header"),
        );
        assert_eq!(
            extract_token(&headers, &[], &modern),
            Err(AuthError::Malformed)
        );

        let query = vec![("authorization".to_owned(), "from-query".to_owned())];
        let mut legacy = HeaderMap::new();
        legacy.insert(
            header::COOKIE,
            "mercureAuthorization=legacy-cookie"
                .parse()
                .expect("header"),
        );
        assert_eq!(extract_token(&legacy, &query, &modern), Ok(None));
        assert_eq!(
            extract_token(&legacy, &query, &compat),
            Ok(Some(("from-query".into(), TokenSource::Query)))
        );
        assert_eq!(
            extract_token(&legacy, &[], &compat),
            Ok(Some(("legacy-cookie".into(), TokenSource::Cookie)))
        );
    }

    #[test]
    fn a_cookie_counts_only_from_an_allowed_origin() {
        let own = "https://hub.example.com";
        let allowed = vec!["https://app.example.com".to_owned()];
        let check = |pairs: &[(&'static str, &str)]| {
            let mut headers = HeaderMap::new();
            for (name, value) in pairs {
                headers.append(
                    header::HeaderName::from_static(name),
                    value.parse().expect("a header value"),
                );
            }
            cookie_origin_allowed(&headers, own, &allowed)
        };
        assert!(check(&[("origin", "https://hub.example.com")]));
        assert!(check(&[("origin", "https://app.example.com")]));
        assert!(check(&[("referer", "https://app.example.com/page?x=1")]));
        assert!(!check(&[]), "neither header: refused");
        assert!(!check(&[("origin", "http://evil.example")]));
        assert!(!check(&[("origin", "null")]));
        assert!(
            !check(&[("origin", "null"), ("referer", "https://hub.example.com/")]),
            "a null Origin is not replaced by the Referer"
        );
        assert!(!check(&[(
            "referer",
            "http://evil.example/hub.example.com"
        )]));
        assert!(
            !check(&[
                ("origin", "http://evil.example"),
                ("referer", "https://hub.example.com/")
            ]),
            "the Origin is what counts when there is one"
        );
        assert!(!check(&[(
            "origin",
            "https://hub.example.com.evil.example"
        )]));
        let anyone = vec!["*".to_owned()];
        let mut headers = HeaderMap::new();
        headers.insert(header::ORIGIN, "http://elsewhere".parse().expect("value"));
        assert!(cookie_origin_allowed(&headers, own, &anyone));
    }

    #[test]
    fn minted_tokens_validate() {
        let settings = settings(false);
        let token = mint(
            &TokenRequest {
                publish: vec!["/topics/a".into()],
                subscribe: vec!["urlpattern:/topics/:name".into()],
                payload: Some(json!({ "name": "ada" })),
                lifetime: 60,
            },
            Role::Subscriber,
            AUD,
            &settings,
        )
        .expect("mint");
        let grants = validate(
            &token,
            Role::Subscriber,
            AUD,
            &settings,
            &MatchBase::default(),
        )
        .expect("valid");
        let base = MatchBase::default();
        assert!(grants.may_publish(&["/topics/a"], &base));
        assert!(grants.may_read(&["/topics/b"], &base));
    }

    #[test]
    fn short_secrets_and_unknown_algorithms_are_refused() {
        assert!(matches!(
            Key::new("short", "HS256"),
            Err(KeyError::ShortSecret(_))
        ));
        assert!(matches!(
            Key::new(SECRET, "none"),
            Err(KeyError::UnknownAlgorithm(_))
        ));
        assert!(matches!(
            Key::new("not pem", "RS256"),
            Err(KeyError::Pem { .. })
        ));
    }

    /// `exp` values of every JSON shape: integers of any size and sign, fractions, huge and
    /// tiny floats, strings, and others.
    fn exp_values() -> impl proptest::strategy::Strategy<Value = Value> {
        use proptest::prelude::*;
        prop_oneof![
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_map(|n| json!(n)),
            (0.0..4e9f64).prop_map(|n| json!(n)),
            any::<String>().prop_map(|text| json!(text)),
            Just(json!(null)),
            Just(json!([1])),
            Just(json!({ "exp": 1 })),
            Just(json!(true)),
        ]
    }

    proptest::proptest! {
        /// A token is valid exactly when its `exp` is a number later than now, whatever
        /// the JSON: never a panic, never a string or a non-number let through.
        #[test]
        fn exp_is_a_number_later_than_now(exp in exp_values(), now in 0.0..4e9f64) {
            let modern = settings(false);
            let claims = json!({ "iss": ISS, "aud": AUD, "exp": exp.clone() });
            let verdict = check_claims(&claims, now, AUD, &modern);
            let expected = exp.as_f64().filter(|exp| exp.is_finite() && now < *exp);
            proptest::prop_assert_eq!(verdict.ok().flatten(), expected, "exp {}", exp);
        }
    }
}
