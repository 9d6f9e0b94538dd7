//! Authentication: verifies JWTs and says what they grant (contract §2).
//!
//! `Verifier` pins the configured algorithm and key; `Identity` is what a verified
//! token grants: the user (`sub`), workspaces and scopes. The visibility rule itself
//! is applied in SQL by `store`, from the `Identity`. `mint` signs tokens for the
//! `notifd token` command and the tests.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use crate::config::{JwtConfig, JwtKey};
use crate::validate::is_workspace;

/// The scope the internal create API requires.
pub const PUBLISH_SCOPE: &str = "notifications:publish";

/// Why a token was refused. The text never includes the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No token in the query or the `Authorization` header.
    Missing,
    /// Malformed, bad signature, wrong algorithm, wrong `iss`/`aud`, `nbf` (less the
    /// leeway) still ahead, or no usable `sub` (missing, empty or holding NUL).
    Invalid(String),
    /// `exp` (plus leeway) has passed.
    Expired,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AuthError::Missing => f.write_str("missing token"),
            AuthError::Invalid(why) => write!(f, "invalid token: {why}"),
            AuthError::Expired => f.write_str("token expired"),
        }
    }
}

/// Workspaces a token grants.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Grants {
    /// `"*"`: every workspace.
    All,
    /// Exactly these slugs (possibly none: user-level notifications only).
    Only(Vec<String>),
}

/// What a verified token grants.
#[derive(Debug, Clone)]
pub struct Identity {
    pub user_id: String,
    pub grants: Grants,
    pub scopes: Vec<String>,
    /// `exp`, seconds since the epoch.
    pub expires_at: u64,
}

impl Identity {
    /// True when the token grants this workspace.
    pub fn grants_workspace(&self, slug: &str) -> bool {
        match &self.grants {
            Grants::All => true,
            Grants::Only(slugs) => slugs.iter().any(|s| s == slug),
        }
    }

    pub fn has_scope(&self, scope: &str) -> bool {
        self.scopes.iter().any(|s| s == scope)
    }
}

/// The claims notifd reads. Unknown claims are ignored.
#[derive(Debug, Serialize, Deserialize)]
pub struct Claims {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sub: Option<String>,
    pub exp: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspaces: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

/// Verifies tokens with one pinned algorithm and key.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    validation: Validation,
    /// Tokens verified before, with what they grant: a service sends the same token
    /// with every create, and checking a signature costs more than the rest of the
    /// request's CPU work but the database. Held in memory only, never logged.
    verified: Arc<Mutex<HashMap<String, Identity>>>,
}

/// Most tokens remembered; the whole cache is dropped when full (no LRU needed: the
/// tokens that matter come back at once).
const VERIFIED_CACHE: usize = 4096;

impl Verifier {
    /// Builds the verifier; fails when the key does not suit the algorithm.
    pub fn new(config: &JwtConfig) -> Result<Verifier, String> {
        use Algorithm::*;
        // jsonwebtoken takes a private key PEM here too, and then no signature ever
        // verifies: refuse it at start-up instead.
        if let JwtKey::PublicKeyPem(pem) = &config.key {
            if pem.windows(16).any(|w| w == b"PRIVATE KEY-----") {
                return Err(
                    "holds a private key; give the public key (openssl pkey -pubout)".into(),
                );
            }
        }
        let key = match (&config.key, config.algorithm) {
            (JwtKey::Secret(secret), HS256 | HS384 | HS512) => DecodingKey::from_secret(secret)
                .map_err(|e| format!("not a usable HS secret: {e}"))?,
            (JwtKey::PublicKeyPem(pem), RS256 | RS384 | RS512 | PS256 | PS384 | PS512) => {
                DecodingKey::from_rsa_pem(pem)
                    .map_err(|e| format!("not an RSA public key in PEM: {e}"))?
            }
            (JwtKey::PublicKeyPem(pem), ES256 | ES384) => DecodingKey::from_ec_pem(pem)
                .map_err(|e| format!("not an EC public key in PEM: {e}"))?,
            (JwtKey::PublicKeyPem(pem), EdDSA) => DecodingKey::from_ed_pem(pem)
                .map_err(|e| format!("not an Ed25519 public key in PEM: {e}"))?,
            (_, alg) => return Err(format!("the key does not suit {alg:?}")),
        };
        // `Validation::new` pins the algorithm and requires `exp`; leeway and audience
        // have surprising defaults (60 s, checked when present), so set both here,
        // and `nbf` is not checked unless asked (it is optional, but binding if present).
        let mut validation = Validation::new(config.algorithm);
        validation.leeway = config.leeway.as_secs();
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp"]);
        validation.validate_aud = false;
        if let Some(audience) = &config.audience {
            validation.set_audience(&[audience]);
            validation.validate_aud = true;
            validation.required_spec_claims.insert("aud".into());
        }
        if let Some(issuer) = &config.issuer {
            validation.set_issuer(&[issuer]);
            validation.required_spec_claims.insert("iss".into());
        }
        Ok(Verifier {
            key,
            validation,
            verified: Arc::default(),
        })
    }

    /// Verifies a token and returns what it grants.
    pub fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        if token.is_empty() {
            return Err(AuthError::Missing);
        }
        let now = unix_now();
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(identity) = verified.get(token) {
            if identity.expires_at.saturating_add(self.validation.leeway) >= now {
                return Ok(identity.clone());
            }
            verified.remove(token);
            return Err(AuthError::Expired);
        }
        drop(verified);
        let identity = self.verify_signature(token)?;
        let mut verified = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if verified.len() >= VERIFIED_CACHE {
            verified.clear();
        }
        verified.insert(token.to_string(), identity.clone());
        Ok(identity)
    }

    /// The full check: signature, algorithm, claims.
    fn verify_signature(&self, token: &str) -> Result<Identity, AuthError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => AuthError::Expired,
                ErrorKind::InvalidSignature => AuthError::Invalid("bad signature".into()),
                ErrorKind::InvalidAlgorithm => AuthError::Invalid("algorithm not accepted".into()),
                ErrorKind::InvalidIssuer => AuthError::Invalid("wrong issuer".into()),
                ErrorKind::InvalidAudience => AuthError::Invalid("wrong audience".into()),
                ErrorKind::MissingRequiredClaim(claim) => {
                    AuthError::Invalid(format!("missing {claim} claim"))
                }
                ErrorKind::ImmatureSignature => AuthError::Invalid("not valid yet (nbf)".into()),
                _ => AuthError::Invalid("malformed token".into()),
            },
        )?;
        let claims = data.claims;
        let user_id = claims
            .sub
            .filter(|s| !s.is_empty())
            .ok_or_else(|| AuthError::Invalid("missing sub claim".into()))?;
        // The user id goes into SQL as text, which cannot hold NUL.
        if user_id.contains('\0') {
            return Err(AuthError::Invalid("sub contains NUL".into()));
        }
        let mut slugs = claims.workspaces.unwrap_or_default();
        slugs.extend(claims.workspace);
        let grants = if slugs.iter().any(|s| s == "*") {
            Grants::All
        } else {
            // A grant that is not a slug matches nothing (every stored workspace and
            // every asked-for one is a slug), and one holding NUL would break the SQL.
            slugs.retain(|slug| is_workspace(slug));
            Grants::Only(slugs)
        };
        let scopes = claims
            .scope
            .unwrap_or_default()
            .split_whitespace()
            .map(String::from)
            .collect();
        Ok(Identity {
            user_id,
            grants,
            scopes,
            expires_at: claims.exp,
        })
    }
}

/// Signs a token with an HS* secret (the `notifd token` command and tests).
pub fn mint(algorithm: Algorithm, secret: &[u8], claims: &Claims) -> Result<String, String> {
    let key =
        EncodingKey::from_secret(secret).map_err(|e| format!("not a usable HS secret: {e}"))?;
    jsonwebtoken::encode(&Header::new(algorithm), claims, &key)
        .map_err(|e| format!("cannot sign token: {e}"))
}

/// Seconds since the epoch, as JWT `exp` counts them.
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn verifier() -> Verifier {
        Verifier::new(&JwtConfig {
            algorithm: Algorithm::HS256,
            key: JwtKey::Secret(SECRET.to_vec()),
            issuer: None,
            audience: None,
            leeway: Duration::from_secs(30),
        })
        .expect("valid config")
    }

    fn claims(exp: u64) -> Claims {
        Claims {
            sub: Some("alice".into()),
            exp,
            workspaces: Some(vec!["acme".into()]),
            workspace: Some("beta".into()),
            scope: Some("a notifications:publish".into()),
        }
    }

    #[test]
    fn a_real_signature_verifies_and_grants() {
        let token = mint(Algorithm::HS256, SECRET, &claims(unix_now() + 60)).expect("signs");
        let identity = verifier().verify(&token).expect("verifies");
        assert_eq!(identity.user_id, "alice");
        assert!(identity.grants_workspace("acme") && identity.grants_workspace("beta"));
        assert!(!identity.grants_workspace("gamma"));
        assert!(identity.has_scope(PUBLISH_SCOPE));
    }

    #[test]
    fn expiry_honours_the_leeway() {
        let within = mint(Algorithm::HS256, SECRET, &claims(unix_now() - 10)).expect("signs");
        assert!(verifier().verify(&within).is_ok());
        let past = mint(Algorithm::HS256, SECRET, &claims(unix_now() - 100)).expect("signs");
        assert_eq!(verifier().verify(&past).unwrap_err(), AuthError::Expired);
    }

    #[test]
    fn a_remembered_token_still_expires() {
        let verifier = verifier();
        let token = mint(Algorithm::HS256, SECRET, &claims(unix_now() + 60)).expect("signs");
        assert_eq!(verifier.verify(&token).expect("verifies").user_id, "alice");
        assert_eq!(
            verifier.verify(&token).expect("from the cache").user_id,
            "alice"
        );
        // Age the remembered entry past exp + leeway.
        if let Some(identity) = verifier.verified.lock().expect("lock").get_mut(&token) {
            identity.expires_at = unix_now() - 31;
        }
        assert_eq!(verifier.verify(&token).unwrap_err(), AuthError::Expired);
    }

    fn sign(claims: &serde_json::Value) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            claims,
            &EncodingKey::from_secret(SECRET).expect("test secret"),
        )
        .expect("signs")
    }

    #[test]
    fn nbf_ahead_is_refused_but_within_the_leeway_is_accepted() {
        let exp = unix_now() + 7200;
        let ahead =
            sign(&serde_json::json!({"sub": "alice", "exp": exp, "nbf": unix_now() + 3600}));
        assert_eq!(
            verifier().verify(&ahead).unwrap_err(),
            AuthError::Invalid("not valid yet (nbf)".into())
        );
        let soon = sign(&serde_json::json!({"sub": "alice", "exp": exp, "nbf": unix_now() + 10}));
        assert!(verifier().verify(&soon).is_ok());
    }

    #[test]
    fn a_sub_with_nul_is_refused_and_grants_that_are_not_slugs_grant_nothing() {
        let exp = unix_now() + 60;
        let nul = sign(&serde_json::json!({"sub": "ali\u{0}ce", "exp": exp}));
        assert!(matches!(
            verifier().verify(&nul),
            Err(AuthError::Invalid(_))
        ));
        let odd = sign(&serde_json::json!({"sub": "alice", "exp": exp,
            "workspaces": ["acme", "be\u{0}ta", "with space"]}));
        let identity = verifier().verify(&odd).expect("verifies");
        assert_eq!(identity.grants, Grants::Only(vec!["acme".into()]));
    }

    #[test]
    fn other_algorithms_and_secrets_are_refused() {
        let hs512 = mint(Algorithm::HS512, SECRET, &claims(unix_now() + 60)).expect("signs");
        assert!(matches!(
            verifier().verify(&hs512),
            Err(AuthError::Invalid(_))
        ));
        let wrong = mint(
            Algorithm::HS256,
            b"another-secret-of-enough-length",
            &claims(unix_now() + 60),
        )
        .expect("signs");
        assert!(matches!(
            verifier().verify(&wrong),
            Err(AuthError::Invalid(_))
        ));
        assert!(matches!(
            verifier().verify("not.a.token"),
            Err(AuthError::Invalid(_))
        ));
    }
}
