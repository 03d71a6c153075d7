//! Kraken's private REST signature (spot REST authentication guide):
//!
//! `API-Sign = base64(HMAC-SHA512(key = base64decode(secret), msg = path ‖ SHA256(nonce ‖ body)))`
//!
//! where `path` is the URI path (`/0/private/AddOrder`), `nonce` the strictly increasing
//! number that is also a form field of `body`, and `body` the url-encoded POST body.

use std::fmt;

use base64::Engine;
use hmac::{Hmac, KeyInit, Mac};
use sha2::{Digest, Sha256, Sha512};

use crate::ExchangeError;

/// A Kraken API key and its decoded secret. `Debug` shows neither.
#[derive(Clone)]
pub struct KrakenCredential {
    key: String,
    secret: Vec<u8>,
}

impl fmt::Debug for KrakenCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("KrakenCredential(redacted)")
    }
}

impl KrakenCredential {
    /// # Errors
    /// When the secret is not base64, as Kraken issues it (the message never shows it).
    pub fn new(key: impl Into<String>, secret_base64: &str) -> Result<Self, ExchangeError> {
        let secret = base64::engine::general_purpose::STANDARD
            .decode(secret_base64.trim())
            .map_err(|_| ExchangeError::Rejected { reason: "the Kraken API secret is not valid base64".into() })?;
        Ok(KrakenCredential { key: key.into(), secret })
    }

    /// The `API-Key` header.
    pub fn api_key(&self) -> &str {
        &self.key
    }

    /// The `API-Sign` header for a private request.
    pub fn sign(&self, path: &str, nonce: u64, body: &str) -> String {
        let mut inner = Sha256::new();
        inner.update(nonce.to_string().as_bytes());
        inner.update(body.as_bytes());
        let mut mac = Hmac::<Sha512>::new_from_slice(&self.secret).expect("HMAC takes keys of any length");
        mac.update(path.as_bytes());
        mac.update(&inner.finalize());
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example of Kraken's spot REST authentication guide.
    #[test]
    fn the_documented_example() {
        let c = KrakenCredential::new(
            "key",
            "kQH5HW/8p1uGOVjbgWA7FunAmGO8lsSUXNsu3eow76sz84Q18fWxnyRzBHCd3pd5nE9qa99HAZtuZuj6F1huXg==",
        )
        .unwrap();
        let body = "nonce=1616492376594&ordertype=limit&pair=XBTUSD&price=37500&type=buy&volume=1.25";
        assert_eq!(
            c.sign("/0/private/AddOrder", 1_616_492_376_594, body),
            "4/dpxb3iT4tp/ZCVEwSnEsLxx0bqyhLpdfOpc6fn7OR8+UClSV5n9E6aSS8MPtnRfp32bAb0nmbRn6H8ndwLUQ=="
        );
    }

    #[test]
    fn secrets_never_show() {
        let c = KrakenCredential::new("my-key", "c2VjcmV0").unwrap();
        assert_eq!(format!("{c:?}"), "KrakenCredential(redacted)");
        let err = KrakenCredential::new("k", "not base64 !!").unwrap_err().to_string();
        assert!(!err.contains("not base64 !!"), "{err}");
    }
}
