//! Verification of inbound webhooks on the raw body: a shared token in a header, or an
//! HMAC-SHA256 signature of the body. Comparisons are constant-time.

use base64::Engine as _;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

use crate::mask::Secret;

#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the request carries no {0}")]
    Missing(String),
    #[error("the {0} does not match")]
    Mismatch(String),
    #[error("this system accepts no webhooks: configure its `inbound` verification")]
    NotConfigured,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Encoding {
    Hex,
    Base64,
}

/// What an inbound webhook carries, for verification before anything is parsed.
pub struct InboundRequest<'a> {
    pub headers: &'a axum::http::HeaderMap,
    /// The URL's query string, decoded into pairs.
    pub query: &'a [(String, String)],
    pub body: &'a [u8],
}

impl InboundRequest<'_> {
    pub fn query_value(&self, name: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn compare(name: &str, got: &[u8], expected: &[u8]) -> Result<(), Refusal> {
    if bool::from(got.ct_eq(expected)) {
        Ok(())
    } else {
        Err(Refusal::Mismatch(name.to_owned()))
    }
}

#[derive(Clone, Debug)]
pub enum Verifier {
    /// The sender puts a shared token in a header.
    Token { header: String, token: Secret },
    /// The sender puts a shared token in a query parameter of the webhook URL.
    QueryToken { param: String, token: Secret },
    /// The sender signs the raw body: `prefix + encode(HMAC-SHA256(secret, body))`.
    Hmac {
        header: String,
        secret: Secret,
        encoding: Encoding,
        prefix: String,
    },
}

impl Verifier {
    pub fn verify(&self, req: &InboundRequest<'_>) -> Result<(), Refusal> {
        let (name, expected) = match self {
            Verifier::Token { header, token } => (header, token.expose().as_bytes().to_vec()),
            Verifier::QueryToken { param, token } => {
                let what = format!("`{param}` query parameter");
                let got = req
                    .query_value(param)
                    .ok_or_else(|| Refusal::Missing(what.clone()))?;
                return compare(&what, got.as_bytes(), token.expose().as_bytes());
            }
            Verifier::Hmac {
                header,
                secret,
                encoding,
                prefix,
            } => {
                let mut mac = Hmac::<Sha256>::new_from_slice(secret.expose().as_bytes())
                    .map_err(|_| Refusal::NotConfigured)?;
                mac.update(req.body);
                let digest = mac.finalize().into_bytes();
                let encoded = match encoding {
                    Encoding::Hex => hex::encode(digest),
                    Encoding::Base64 => base64::engine::general_purpose::STANDARD.encode(digest),
                };
                (header, format!("{prefix}{encoded}").into_bytes())
            }
        };
        let what = format!("{name} header");
        let got = req
            .headers
            .get(name.as_str())
            .ok_or_else(|| Refusal::Missing(what.clone()))?;
        compare(&what, got.as_bytes(), &expected)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::http::{HeaderMap, HeaderValue};

    fn req<'a>(
        headers: &'a HeaderMap,
        query: &'a [(String, String)],
        body: &'a [u8],
    ) -> InboundRequest<'a> {
        InboundRequest {
            headers,
            query,
            body,
        }
    }

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
        assert_eq!(v.verify(&req(&headers, &[], body)), Ok(()));
        let modified = v.verify(&req(&headers, &[], b"{\"id\":2}"));
        assert!(
            matches!(modified, Err(Refusal::Mismatch(_))),
            "a replay with another body"
        );
        let missing = v.verify(&req(&HeaderMap::new(), &[], body));
        assert!(matches!(missing, Err(Refusal::Missing(_))));
    }

    #[test]
    fn token_in_the_query() {
        let v = Verifier::QueryToken {
            param: "token".into(),
            token: Secret::new("q-token-1234"),
        };
        let headers = HeaderMap::new();
        let good = [
            ("a".to_owned(), "1".to_owned()),
            ("token".to_owned(), "q-token-1234".to_owned()),
        ];
        assert_eq!(v.verify(&req(&headers, &good, b"")), Ok(()));
        let bad = [("token".to_owned(), "q-token-0000".to_owned())];
        assert!(matches!(
            v.verify(&req(&headers, &bad, b"")),
            Err(Refusal::Mismatch(_))
        ));
        assert!(matches!(
            v.verify(&req(&headers, &[], b"")),
            Err(Refusal::Missing(_))
        ));
    }
}
