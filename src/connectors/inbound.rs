//! Verification of inbound webhooks on the raw body: a shared token in a header, or an
//! HMAC-SHA256 signature of the body. Comparisons are constant-time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::mask::Secret;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request carries no {0} header")]
    Missing(String),
    #[error("the {0} header does not match")]
    Mismatch(String),
    #[error("this system accepts no webhooks: configure its `inbound` verification")]
    NotConfigured,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

#[derive(Clone, Debug)]
pub enum Verifier {
    /// The sender puts a shared token in a header.
    Token { header: String, token: Secret },
    /// The sender signs the raw body: `prefix + encode(HMAC-SHA256(secret, body))`.
    Hmac {
        header: String,
        secret: Secret,
        encoding: Encoding,
        prefix: String,
    },
}

impl Verifier {
    pub fn verify(&self, headers: &axum::http::HeaderMap, body: &[u8]) -> Result<(), Refusal> {
        let (header, expected) = match self {
            Verifier::Token { header, token } => (header, token.expose().as_bytes().to_vec()),
            Verifier::Hmac {
                header,
                secret,
                encoding,
                prefix,
            } => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                    .map_err(|_| Refusal::NotConfigured)?;
                mac.update(body);
                let digest = mac.finalize().into_bytes();
                let encoded = match encoding {
                    Encoding::Hex => hex::encode(digest),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(digest),
                };
                (header, format!("{prefix}{encoded}").into_bytes())
            }
        };
        let got = headers
            .get(header.as_str())
            .ok_or_else(|| Refusal::Missing(header.clone()))?;
        if bool::from(got.as_bytes().ct_eq(&expected)) {
            Ok(())
        } else {
            Err(Refusal::Mismatch(header.clone()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    #[test]
    fn hmac_hex_with_prefix() {
        let v = Verifier::Hmac {
            header: "x-signature".into(),
            secret: Secret::new("topsecret"),
            encoding: Encoding::Hex,
            prefix: "sha256=".into(),
        };
        let body = b"{\"id\":1}";
        let mut mac = Hmac::<Sha256>::new_from_slice(b"topsecret").expect("key");
        mac.update(body);
        let sig = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let mut headers = HeaderMap::new();
        headers.insert("x-signature", HeaderValue::from_str(&sig).expect("hv"));
        assert_eq!(v.verify(&headers, body), Ok(()));
        assert!(matches!(
            v.verify(&headers, b"{\"id\":2}"),
            Err(Refusal::Mismatch(_))
        ));
        assert!(matches!(
            v.verify(&HeaderMap::new(), body),
            Err(Refusal::Missing(_))
        ));
    }
}
