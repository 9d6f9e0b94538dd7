//! HS256 tokens, minted here with the secret notifd verifies with.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{json, Value};
use sha2::Sha256;

/// The one workspace every bench user connects to.
pub const WORKSPACE: &str = "w";
/// How long minted tokens live: longer than any run.
const TTL_SECONDS: u64 = 6 * 3600;

#[derive(Clone)]
pub struct Minter {
    secret: Vec<u8>,
}

impl Minter {
    pub fn new(secret: &str) -> Minter {
        Minter {
            secret: secret.as_bytes().to_vec(),
        }
    }

    /// A user token granting the bench workspace.
    pub fn user(&self, sub: &str) -> String {
        self.user_in(sub, WORKSPACE)
    }

    /// A user token granting `workspace` (the broadcast scenarios' own).
    pub fn user_in(&self, sub: &str, workspace: &str) -> String {
        self.sign(&json!({"sub": sub, "exp": exp(), "workspaces": [workspace]}))
    }

    /// A service token with the publish scope.
    pub fn service(&self) -> String {
        self.sign(&json!({"sub": "notifd-bench", "exp": exp(), "scope": "notifications:publish"}))
    }

    fn sign(&self, claims: &Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signing_input = format!("{header}.{body}");
        let mut mac =
            Hmac::<Sha256>::new_from_slice(&self.secret).expect("HMAC takes a key of any length");
        mac.update(signing_input.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{signing_input}.{signature}")
    }
}

fn exp() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
        + TTL_SECONDS
}
