//! The HS256 JSON Web Token a Mercure hub wants from a publisher (and, if it asks for one,
//! from a subscriber).
//!
//! Signed with `jsonwebtoken` (the library Pulse's hub validates with). A run mints at most
//! two tokens, once, while its flags are checked; nothing signs per connection or per
//! update, so the signer's speed does not matter.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The key Mercure's example configurations use; override it with `--jwt-key`.
pub const DEFAULT_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
/// How long a minted token is valid.
pub const LIFETIME_SECS: u64 = 3600;
/// The `type` of a Mercure authorization detail.
pub const MERCURE_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

/// The `typ` of the header: an access token (RFC 9068), which Mercure hubs may require.
pub const TOKEN_TYPE: &str = "at+jwt";

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
#[error("cannot sign the JWT: {0}")]
pub struct JwtError(#[from] jsonwebtoken::errors::Error);

/// What a Mercure token allows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// POST updates.
    Publish,
    /// Subscribe to topics.
    Subscribe,
}

impl Action {
    fn as_str(self) -> &'static str {
        match self {
            Self::Publish => "publish",
            Self::Subscribe => "subscribe",
        }
    }
}

/// The claims of a Mercure token.
#[derive(Debug, Clone, Serialize)]
pub struct MercureClaims {
    /// Issuer.
    pub iss: String,
    /// Audience: the hub.
    pub aud: String,
    /// Expiry, in seconds since the Unix epoch.
    pub exp: u64,
    /// What the token allows.
    pub authorization_details: Vec<AuthorizationDetail>,
}

/// One RFC 9396 authorization detail, Mercure's flavour.
#[derive(Debug, Clone, Serialize)]
pub struct AuthorizationDetail {
    /// Always [`MERCURE_DETAIL_TYPE`].
    #[serde(rename = "type")]
    pub kind: String,
    /// `publish` or `subscribe`.
    pub actions: Vec<String>,
    /// Topic selectors; `*` is every topic.
    pub topics: Vec<TopicMatch>,
}

/// A topic selector.
#[derive(Debug, Clone, Serialize)]
pub struct TopicMatch {
    /// The pattern.
    #[serde(rename = "match")]
    pub pattern: String,
}

impl MercureClaims {
    /// Claims allowing `action` on every topic, valid for [`LIFETIME_SECS`] from `now_secs`.
    pub fn new(action: Action, issuer: &str, audience: &str, now_secs: u64) -> Self {
        Self {
            iss: issuer.to_owned(),
            aud: audience.to_owned(),
            exp: now_secs + LIFETIME_SECS,
            authorization_details: vec![AuthorizationDetail {
                kind: MERCURE_DETAIL_TYPE.to_owned(),
                actions: vec![action.as_str().to_owned()],
                topics: vec![TopicMatch {
                    pattern: "*".to_owned(),
                }],
            }],
        }
    }
}

/// A signed HS256 token `header.claims.signature` with the `at+jwt` header.
pub fn mint(key: &[u8], claims: &impl Serialize) -> Result<String, JwtError> {
    let header = Header {
        typ: Some(TOKEN_TYPE.to_owned()),
        ..Header::new(Algorithm::HS256)
    };
    Ok(jsonwebtoken::encode(
        &header,
        claims,
        &EncodingKey::from_secret(key),
    )?)
}

#[cfg(test)]
mod tests {
    use jsonwebtoken::{decode, decode_header, DecodingKey, Validation};

    use super::*;

    /// Checks the signature with `key` and nothing else (the claims of the fixed examples
    /// below have long expired), returning the claims.
    fn verify(token: &str, key: &[u8]) -> jsonwebtoken::errors::Result<serde_json::Value> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.validate_exp = false;
        validation.validate_aud = false;
        validation.required_spec_claims.clear();
        decode::<serde_json::Value>(token, &DecodingKey::from_secret(key), &validation)
            .map(|data| data.claims)
    }

    #[test]
    fn a_minted_token_decodes_to_what_mercure_expects() {
        let claims = MercureClaims::new(
            Action::Publish,
            "https://localhost",
            "http://127.0.0.1:3000/.well-known/mercure",
            1_700_000_000,
        );
        let token = mint(DEFAULT_KEY.as_bytes(), &claims).unwrap();
        assert_eq!(token.split('.').count(), 3);

        // The header is `{"typ":"at+jwt","alg":"HS256"}` and nothing more.
        assert_eq!(
            decode_header(&token).unwrap(),
            Header {
                typ: Some("at+jwt".to_owned()),
                ..Header::new(Algorithm::HS256)
            }
        );
        assert_eq!(
            verify(&token, DEFAULT_KEY.as_bytes()).unwrap(),
            serde_json::json!({
                "iss": "https://localhost",
                "aud": "http://127.0.0.1:3000/.well-known/mercure",
                "exp": 1_700_003_600u64,
                "authorization_details": [{
                    "type": "https://mercure.rocks/authorization-detail",
                    "actions": ["publish"],
                    "topics": [{"match": "*"}],
                }],
            })
        );

        // The signature verifies with the key, and only with it.
        assert!(verify(&token, b"another key").is_err());
        let (signed, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{signed}.{}", "A".repeat(43));
        assert!(verify(&forged, DEFAULT_KEY.as_bytes()).is_err());
    }

    #[test]
    fn any_key_signs_even_an_empty_one() {
        let claims = MercureClaims::new(Action::Publish, "i", "a", 0);
        for key in [&b""[..], b"k", &[0xff; 200]] {
            let token = mint(key, &claims).unwrap();
            assert_eq!(verify(&token, key).unwrap()["iss"], "i");
        }
    }

    /// Validates like Pulse's hub (`server/src/hub/auth.rs`): HS256 only, `typ` `at+jwt`,
    /// `exp`, `aud` and `iss` required and checked, no leeway.
    #[test]
    fn pulse_hub_style_validation_accepts_the_token() {
        let hub = "http://127.0.0.1:3000/.well-known/mercure";
        let now = crate::payload::unix_nanos() / 1_000_000_000;
        let claims = MercureClaims::new(Action::Publish, "https://localhost", hub, now);
        let token = mint(DEFAULT_KEY.as_bytes(), &claims).unwrap();

        let header = decode_header(&token).unwrap();
        assert_eq!(header.alg, Algorithm::HS256);
        assert_eq!(header.typ.as_deref(), Some("at+jwt"));
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = 0;
        validation.validate_nbf = true;
        validation.required_spec_claims = ["exp", "aud", "iss"]
            .into_iter()
            .map(String::from)
            .collect();
        validation.set_audience(&[hub]);
        validation.set_issuer(&["https://localhost"]);
        let key = DecodingKey::from_secret(DEFAULT_KEY.as_bytes());
        let decoded = decode::<serde_json::Value>(&token, &key, &validation).unwrap();
        assert_eq!(
            decoded.claims["authorization_details"][0]["topics"][0]["match"],
            "*"
        );

        let wrong_key = DecodingKey::from_secret(b"!AnotherKeyThatIsLongEnough0123!");
        assert!(decode::<serde_json::Value>(&token, &wrong_key, &validation).is_err());
        validation.set_audience(&["http://localhost:3000/.well-known/mercure"]);
        assert!(decode::<serde_json::Value>(&token, &key, &validation).is_err());
    }

    #[test]
    fn subscriber_tokens_say_subscribe() {
        let claims = MercureClaims::new(Action::Subscribe, "i", "a", 0);
        let json = serde_json::to_value(&claims).unwrap();
        assert_eq!(json["authorization_details"][0]["actions"][0], "subscribe");
        assert_eq!(json["exp"], LIFETIME_SECS);
        let token = mint(b"k", &claims).unwrap();
        assert_eq!(verify(&token, b"k").unwrap(), json);
    }
}
