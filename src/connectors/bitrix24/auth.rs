//! The two ways to call Bitrix24: an inbound-webhook URL (the secret is a path segment,
//! `https://<portal>/rest/<user>/<secret>/`) and an OAuth application (`auth=<access token>`
//! on every call; on `401 expired_token` the refresh token buys a new pair from the OAuth
//! server, once for all the calls that were refused together).

use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::connectors::CallError;
use crate::mask::{Secret, url_encode};
use crate::model::ErrorClass;

/// A refresh finished this recently makes another refused call just send again: the calls
/// refused together with the one that refreshed carry the old token.
const FRESH: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Auth {
    /// `base` is the webhook URL, ending in `/`.
    Webhook {
        base: String,
    },
    OAuth(OAuth),
}

#[derive(Debug)]
pub struct Tokens {
    pub access: Option<Secret>,
    pub refresh: Secret,
    refreshed_at: Option<Instant>,
}

#[derive(Debug)]
pub struct OAuth {
    /// `https://<portal>/rest/`.
    pub base: String,
    /// `https://oauth.bitrix.info` or `https://oauth.bitrix24.tech` (regional).
    pub server: String,
    pub client_id: String,
    pub client_secret: Secret,
    pub tokens: RwLock<Tokens>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Set when an answer said the token expired or is missing: only then does a refusal
    /// refresh (a permission error would not get better, and the OAuth server blocks apps
    /// that refresh too often).
    pub expired_seen: AtomicBool,
}

impl OAuth {
    pub fn new(
        base: String,
        server: String,
        client_id: String,
        client_secret: Secret,
        access: Option<Secret>,
        refresh: Secret,
    ) -> OAuth {
        OAuth {
            base,
            server,
            client_id,
            client_secret,
            tokens: RwLock::new(Tokens {
                access,
                refresh,
                refreshed_at: None,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            expired_seen: AtomicBool::new(false),
        }
    }

    pub fn access_token(&self) -> Option<Secret> {
        self.tokens.read().ok().and_then(|t| t.access.clone())
    }

    /// Gets a new access/refresh pair unless another call just did; `Ok(true)`: send again.
    pub async fn refresh(&self, client: &reqwest::Client) -> Result<bool, CallError> {
        let _one = self.refreshing.lock().await;
        let (refresh, recent) = {
            let t = self
                .tokens
                .read()
                .map_err(|_| CallError::new(ErrorClass::Transient, "the token store is broken"))?;
            (
                t.refresh.clone(),
                t.refreshed_at.is_some_and(|at| at.elapsed() < FRESH),
            )
        };
        // Set by the refusal that brought the caller here, unless another caller already
        // took it; a refresh that just finished serves every call refused with the old token.
        let expired = self.expired_seen.swap(false, Ordering::SeqCst);
        if recent {
            return Ok(true);
        }
        if !expired {
            return Ok(false);
        }
        let url = format!(
            "{}/oauth/token/?grant_type=refresh_token&client_id={}&client_secret={}&refresh_token={}",
            self.server,
            url_encode(&self.client_id),
            url_encode(self.client_secret.expose()),
            url_encode(refresh.expose()),
        );
        let response = client
            .get(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| {
                CallError::new(
                    ErrorClass::Transient,
                    format!(
                        "cannot reach the Bitrix24 OAuth server ({})",
                        without_url(&e)
                    ),
                )
            })?;
        let status = response.status().as_u16();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        let access = body.get("access_token").and_then(Value::as_str);
        let new_refresh = body.get("refresh_token").and_then(Value::as_str);
        let (Some(access), Some(new_refresh)) = (access, new_refresh) else {
            let code = body
                .get("error")
                .and_then(Value::as_str)
                .unwrap_or("no tokens in the answer");
            let class = if status >= 500 {
                ErrorClass::Transient
            } else {
                ErrorClass::Auth
            };
            return Err(CallError::new(
                class,
                format!(
                    "the Bitrix24 OAuth server refused the refresh ({status} {code}); authorize the app again"
                ),
            ));
        };
        let mut t = self
            .tokens
            .write()
            .map_err(|_| CallError::new(ErrorClass::Transient, "the token store is broken"))?;
        t.access = Some(Secret::new(access));
        t.refresh = Secret::new(new_refresh);
        t.refreshed_at = Some(Instant::now());
        Ok(true)
    }
}

/// A reqwest error's cause without the URL (which holds the client secret).
fn without_url(e: &reqwest::Error) -> String {
    std::error::Error::source(e)
        .map(|s| s.to_string())
        .unwrap_or_else(|| "request failed".into())
}

/// The OAuth server for a portal: the Russian edition's for `.ru`, `.by`, `.kz` portals.
pub fn default_server(domain: &str) -> &'static str {
    let host = domain
        .trim_start_matches("https://")
        .trim_start_matches("http://")
        .split(['/', ':'])
        .next()
        .unwrap_or_default();
    if [".ru", ".by", ".kz"].iter().any(|tld| host.ends_with(tld)) {
        "https://oauth.bitrix24.tech"
    } else {
        "https://oauth.bitrix.info"
    }
}

/// The token of a webhook URL: the segment after the user id in `/rest/<user>/<token>/`.
pub fn webhook_token(url: &str) -> Option<&str> {
    let rest = url.split("/rest/").nth(1)?;
    let mut parts = rest.split('/');
    let user = parts.next()?;
    let token = parts.next()?;
    (!user.is_empty() && user.chars().all(|c| c.is_ascii_digit()) && !token.is_empty())
        .then_some(token)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_token_and_regional_servers() {
        assert_eq!(
            webhook_token("https://acme.bitrix24.kz/rest/1/abc123xyz/"),
            Some("abc123xyz")
        );
        assert_eq!(webhook_token("https://acme.bitrix24.kz/rest/"), None);
        assert_eq!(webhook_token("https://acme.bitrix24.kz/rest/x/abc/"), None);
        assert_eq!(
            default_server("acme.bitrix24.kz"),
            "https://oauth.bitrix24.tech"
        );
        assert_eq!(
            default_server("acme.bitrix24.com"),
            "https://oauth.bitrix.info"
        );
    }
}
