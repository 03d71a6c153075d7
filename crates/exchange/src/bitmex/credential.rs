//! BitMEX's request signature:
//!
//! `api-signature = hex(HMAC-SHA256(key = secret, msg = VERB ‖ path-with-query ‖ expires ‖ body))`
//!
//! with `api-expires` in UNIX seconds; the WebSocket authenticates with the same signature of
//! `GET/realtime` and the expiry.

use std::fmt;

use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;

/// A BitMEX API key and secret. `Debug` shows neither.
#[derive(Clone)]
pub struct BitmexCredential {
    key: String,
    secret: String,
}

impl fmt::Debug for BitmexCredential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("BitmexCredential(redacted)")
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

impl BitmexCredential {
    pub fn new(key: impl Into<String>, secret: impl Into<String>) -> Self {
        BitmexCredential { key: key.into(), secret: secret.into() }
    }

    /// The `api-key` header.
    pub fn api_key(&self) -> &str {
        &self.key
    }

    /// The `api-signature` header for `verb` (upper case) on `path_with_query`
    /// (`/api/v1/order?…`), expiring at `expires` (UNIX seconds), with `body` (empty for GET).
    pub fn sign(&self, verb: &str, path_with_query: &str, expires: u64, body: &str) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(self.secret.as_bytes()).expect("HMAC takes keys of any length");
        mac.update(verb.as_bytes());
        mac.update(path_with_query.as_bytes());
        mac.update(expires.to_string().as_bytes());
        mac.update(body.as_bytes());
        hex(&mac.finalize().into_bytes())
    }

    /// The signature of the WebSocket's `authKeyExpires` operation.
    pub fn sign_websocket(&self, expires: u64) -> String {
        self.sign("GET", "/realtime", expires, "")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn documented() -> BitmexCredential {
        BitmexCredential::new("LAqUlngMIQkIUjXMUreyu3qn", "chNOOS4KvNXR_Xq4k4c9qsfoKWvnDecLATCRlcBwyKDYnWgO")
    }

    /// The examples of BitMEX's API key authentication documentation.
    #[test]
    fn the_documented_examples() {
        let c = documented();
        assert_eq!(
            c.sign("GET", "/api/v1/instrument", 1_518_064_236, ""),
            "c7682d435d0cfe87c16098df34ef2eb5a549d4c5a3c2b1f0f77b8af73423bf00"
        );
        assert_eq!(
            c.sign("GET", "/api/v1/instrument?filter=%7B%22symbol%22%3A+%22XBTM15%22%7D", 1_518_064_237, ""),
            "e2f422547eecb5b3cb29ade2127e21b858b235b386bfa45e1c1756eb3383919f"
        );
        assert_eq!(
            c.sign(
                "POST",
                "/api/v1/order",
                1_518_064_238,
                r#"{"symbol":"XBTM15","price":219.0,"clOrdID":"mm_bitmex_1a/oemUeQ4CAJZgP3fjHsA","orderQty":98}"#
            ),
            "1749cd2ccae4aa49048ae09f0b95110cee706e0944e6a14ad0b3a8cb45bd336b"
        );
    }

    #[test]
    fn secrets_never_show() {
        assert_eq!(format!("{:?}", documented()), "BitmexCredential(redacted)");
        assert_eq!(
            documented().sign_websocket(1_518_064_236),
            documented().sign("GET", "/realtime", 1_518_064_236, "")
        );
    }
}
