//! The HS256 JSON Web Token a Mercure hub wants from a publisher (and, if it asks for one,
//! from a subscriber).
//!
//! Minting an HS256 token is base64url of two JSON documents and an HMAC-SHA256 over them;
//! doing that by hand with `hmac` and `sha2` avoids a JWT library and its crypto backend for
//! one signature per run. The tests check the signing against RFC 7515's worked example.

use base64::{engine::general_purpose::URL_SAFE_NO_PAD, Engine};
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

/// The key Mercure's example configurations use; override it with `--jwt-key`.
pub const DEFAULT_KEY: &str = "!ChangeThisMercureHubJWTSecretKey!";
/// How long a minted token is valid.
pub const LIFETIME_SECS: u64 = 3600;
/// The `type` of a Mercure authorization detail.
pub const MERCURE_DETAIL_TYPE: &str = "https://mercure.rocks/authorization-detail";

const HEADER: &str = r#"{"alg":"HS256","typ":"at+jwt"}"#;

/// Why a token could not be made.
#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The key cannot be used for HMAC.
    #[error("the JWT key cannot be used for HMAC-SHA256")]
    Key,
    /// The claims do not serialize.
    #[error("the JWT claims do not serialize: {0}")]
    Claims(#[from] serde_json::Error),
}

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

/// A signed token `header.claims.signature` with the `at+jwt` header.
pub fn mint(key: &[u8], claims: &impl Serialize) -> Result<String, JwtError> {
    let claims = serde_json::to_vec(claims)?;
    let signing_input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(HEADER),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let signature = sign(key, signing_input.as_bytes())?;
    Ok(format!("{signing_input}.{signature}"))
}

/// The base64url HMAC-SHA256 of `signing_input`.
fn sign(key: &[u8], signing_input: &[u8]) -> Result<String, JwtError> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).map_err(|_| JwtError::Key)?;
    mac.update(signing_input);
    Ok(URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_rfc_7515_appendix_a1() {
        let key = URL_SAFE_NO_PAD
            .decode(
                "AyM1SysPpbyDfgZld3umj1qzKObwVMkoqQ-EstJQLr_T-1qS0gZH75aKtMN3Yj0iPS4hcgUuTwjAzZr1Z9CAow",
            )
            .unwrap();
        let signing_input = "eyJ0eXAiOiJKV1QiLA0KICJhbGciOiJIUzI1NiJ9.\
            eyJpc3MiOiJqb2UiLA0KICJleHAiOjEzMDA4MTkzODAsDQogImh0dHA6Ly9leGFtcGxlLmNvbS9pc19yb290Ijp0cnVlfQ";
        assert_eq!(
            sign(&key, signing_input.as_bytes()).unwrap(),
            "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk"
        );
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
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);

        let header: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
        assert_eq!(header, serde_json::json!({"alg": "HS256", "typ": "at+jwt"}));

        let decoded: serde_json::Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(
            decoded,
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
        let signing_input = format!("{}.{}", parts[0], parts[1]);
        let signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
        let mut mac = Hmac::<Sha256>::new_from_slice(DEFAULT_KEY.as_bytes()).unwrap();
        mac.update(signing_input.as_bytes());
        mac.verify_slice(&signature).unwrap();
        let mut wrong = Hmac::<Sha256>::new_from_slice(b"another key").unwrap();
        wrong.update(signing_input.as_bytes());
        assert!(wrong.verify_slice(&signature).is_err());
    }

    /// Validates like Pulse's hub (`server/src/hub/auth.rs`): HS256 only, `typ` `at+jwt`,
    /// `exp`, `aud` and `iss` required and checked, no leeway.
    #[test]
    fn pulse_hub_style_validation_accepts_the_token() {
        use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
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
    }
}
