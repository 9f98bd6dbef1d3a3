//! Outbound signing per the Standard Webhooks spec (<https://www.standardwebhooks.com/>):
//! `webhook-id`, `webhook-timestamp` and `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "{id}.{timestamp}.{body}">`, keyed by the bytes of a `whsec_<base64>` secret.

use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD};
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The prefix of a Standard Webhooks secret.
pub const SECRET_PREFIX: &str = "whsec_";
/// The spec asks for keys of 24 to 64 bytes; shorter ones are refused.
pub const MIN_KEY_BYTES: usize = 24;

/// Signs with one key. Keeps the keyed HMAC state only; Debug prints no key material.
#[derive(Clone)]
pub struct Signer {
    mac: Hmac<Sha256>,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Signer(***)")
    }
}

/// A parsed `whsec_` secret: the signer and the forms of the key that the masker must know
/// besides the whole secret (the base64 part as written and in canonical padded form).
#[derive(Debug)]
pub struct ParsedSecret {
    pub signer: Signer,
    pub key_forms: Vec<String>,
}

impl Signer {
    /// Reads `whsec_<base64 key>` (padded or not). The error never holds the value.
    pub fn from_secret(secret: &str) -> Result<ParsedSecret, String> {
        let form = "a Standard Webhooks secret must have the form whsec_<base64 key>";
        let encoded = secret
            .strip_prefix(SECRET_PREFIX)
            .ok_or_else(|| format!("{form}: the value does not start with `{SECRET_PREFIX}`"))?;
        let key = STANDARD_NO_PAD
            .decode(encoded.trim_end_matches('='))
            .map_err(|_| format!("{form}: the part after `{SECRET_PREFIX}` is not base64"))?;
        if key.len() < MIN_KEY_BYTES {
            return Err(format!(
                "{form}: the key is {} bytes, the spec asks for at least {MIN_KEY_BYTES}",
                key.len()
            ));
        }
        let mac = Hmac::<Sha256>::new_from_slice(&key)
            .map_err(|_| format!("{form}: the key cannot key HMAC-SHA256"))?;
        let mut key_forms = vec![encoded.to_owned()];
        let canonical = STANDARD.encode(&key);
        if canonical != encoded {
            key_forms.push(canonical);
        }
        Ok(ParsedSecret {
            signer: Signer { mac },
            key_forms,
        })
    }

    /// `v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`.
    pub fn signature(&self, id: &str, timestamp: u64, body: &[u8]) -> String {
        let mut mac = self.mac.clone();
        mac.update(id.as_bytes());
        mac.update(b".");
        mac.update(timestamp.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
    }

    /// The three headers of a signed request.
    pub fn headers(&self, id: &str, timestamp: u64, body: &[u8]) -> Vec<(String, String)> {
        vec![
            ("webhook-id".to_owned(), id.to_owned()),
            ("webhook-timestamp".to_owned(), timestamp.to_string()),
            (
                "webhook-signature".to_owned(),
                self.signature(id, timestamp, body),
            ),
        ]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The vector of the Standard Webhooks reference libraries (standard-webhooks/
    /// standard-webhooks, libraries/python/tests/test_webhooks.py, `test_sign_function`).
    const SPEC_SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
    const SPEC_ID: &str = "msg_p5jXN8AQM9LWM0D4loKWxJek";
    const SPEC_TIMESTAMP: u64 = 1_614_265_330;
    const SPEC_BODY: &str = r#"{"test": 2432232314}"#;
    const SPEC_SIGNATURE: &str = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

    fn signer(secret: &str) -> Signer {
        Signer::from_secret(secret).expect("a valid secret").signer
    }

    #[test]
    fn matches_the_spec_vector() {
        let s = signer(SPEC_SECRET);
        assert_eq!(
            s.signature(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        let headers = s.headers(SPEC_ID, SPEC_TIMESTAMP, SPEC_BODY.as_bytes());
        assert_eq!(
            headers,
            [
                ("webhook-id".to_owned(), SPEC_ID.to_owned()),
                ("webhook-timestamp".to_owned(), "1614265330".to_owned()),
                ("webhook-signature".to_owned(), SPEC_SIGNATURE.to_owned()),
            ]
        );
        // Any change to the id, the time or one byte of the body changes the signature.
        assert_ne!(
            s.signature(SPEC_ID, SPEC_TIMESTAMP + 1, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        assert_ne!(
            s.signature("msg_other", SPEC_TIMESTAMP, SPEC_BODY.as_bytes()),
            SPEC_SIGNATURE
        );
        assert_ne!(
            s.signature(SPEC_ID, SPEC_TIMESTAMP, br#"{"test":2432232314}"#),
            SPEC_SIGNATURE
        );
    }

    #[test]
    fn padded_and_unpadded_keys_are_the_same_key() {
        // 25 bytes: base64 with one `=` of padding.
        let key = [7u8; 25];
        let padded = format!("whsec_{}", STANDARD.encode(key));
        let unpadded = format!("whsec_{}", STANDARD_NO_PAD.encode(key));
        assert!(padded.ends_with('='));
        let a = signer(&padded).signature("id", 1, b"{}");
        let b = signer(&unpadded).signature("id", 1, b"{}");
        assert_eq!(a, b);
        let forms = Signer::from_secret(&unpadded).expect("valid").key_forms;
        assert_eq!(forms, [STANDARD_NO_PAD.encode(key), STANDARD.encode(key)]);
    }

    #[test]
    fn refuses_other_forms_without_printing_them() {
        let key = STANDARD.encode([1u8; 32]);
        for bad in [
            key.clone(),                                     // no prefix
            format!("whsec-{key}"),                          // wrong prefix
            "whsec_not base64!".to_owned(),                  // not base64
            format!("whsec_{}", STANDARD.encode([1u8; 16])), // too short
            "whsec_".to_owned(),                             // empty
        ] {
            let err = Signer::from_secret(&bad).expect_err(&format!("refused: {bad}"));
            assert!(err.contains("whsec_<base64 key>"), "{err}");
            if bad.len() > 8 {
                assert!(!err.contains(&bad[6..]), "the error shows the value: {err}");
            }
        }
    }

    #[test]
    fn debug_prints_no_key() {
        assert_eq!(format!("{:?}", signer(SPEC_SECRET)), "Signer(***)");
    }
}
