//! The two ways to call Bitrix24: an inbound-webhook URL (the secret is a path segment,
//! `https://<portal>/rest/<user>/<secret>/`) and an OAuth application (`auth=<access token>`
//! on every call; on `401 expired_token` the refresh token buys a new pair from the OAuth
//! server, once for all the calls that were refused together).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{OnceLock, RwLock};
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::connectors::CallError;
use crate::mask::{Secret, url_encode};
use crate::model::{ErrorClass, now_ms};
use crate::store::{Store, secrets};

/// A refresh finished this recently makes another refused call just send again: the calls
/// refused together with the one that refreshed carry the old token.
const FRESH: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub enum Auth {
    /// `base` is the webhook URL, ending in `/`; it changes when the portal moves.
    Webhook {
        base: RwLock<String>,
    },
    OAuth(Box<OAuth>),
}

impl Auth {
    /// The REST base the calls go to now.
    pub fn base(&self) -> String {
        let lock = match self {
            Auth::Webhook { base } => base,
            Auth::OAuth(o) => &o.base,
        };
        read(lock)
    }

    /// The portal answered from a new address: later calls go there. Returns the old origin.
    pub fn move_to(&self, origin: &str) -> Option<String> {
        let lock = match self {
            Auth::Webhook { base } => base,
            Auth::OAuth(o) => &o.base,
        };
        let mut base = lock.write().ok()?;
        let (old, rest) = split_origin(&base)?;
        let (old, rest) = (old.to_owned(), rest.to_owned());
        *base = format!("{origin}{rest}");
        Some(old)
    }
}

fn read(lock: &RwLock<String>) -> String {
    lock.read().map(|s| s.clone()).unwrap_or_default()
}

/// `https://host:port/rest/x` → (`https://host:port`, `/rest/x`).
pub fn split_origin(url: &str) -> Option<(&str, &str)> {
    let scheme_end = url.find("://")? + 3;
    let path_at = url[scheme_end..]
        .find(['/', '?'])
        .map_or(url.len(), |i| scheme_end + i);
    Some(url.split_at(path_at))
}

#[derive(Debug)]
pub struct Tokens {
    pub access: Option<Secret>,
    pub refresh: Secret,
    refreshed_at: Option<Instant>,
}

#[derive(Debug)]
pub struct OAuth {
    /// `https://<portal>/rest/`: the configured domain, then `client_endpoint` of the last
    /// refresh (or the new address of a moved portal).
    pub base: RwLock<String>,
    /// `https://oauth.bitrix.info` or `https://oauth.bitrix24.tech` (regional); then the
    /// `server_endpoint` of the last refresh.
    pub server: RwLock<String>,
    pub client_id: String,
    pub client_secret: Secret,
    pub tokens: RwLock<Tokens>,
    /// One refresh at a time.
    refreshing: tokio::sync::Mutex<()>,
    /// Set when an answer said the token expired or is missing: only then does a refusal
    /// refresh (a permission error would not get better, and the OAuth server blocks apps
    /// that refresh too often).
    pub expired_seen: AtomicBool,
    /// The portal moved since the pair was kept: keep it again with the new address.
    pub moved: AtomicBool,
    keep: Keep,
}

/// Where the rotated pair is kept: Bitrix24 spends the refresh token at every refresh, so
/// the configured one is useless after the first; the newest pair lives sealed in the data
/// file's secret table and wins over the config's on the next start.
struct Keep {
    /// `oauth:bitrix24:<system>`.
    name: String,
    /// Which configured refresh token the kept pair descends from (a digest, inside the
    /// sealed value): an operator who puts a new one in the config after authorizing the
    /// app again gets it used, not an older kept pair.
    origin: String,
    store: OnceLock<Store>,
    loaded: tokio::sync::OnceCell<()>,
}

impl std::fmt::Debug for Keep {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Keep")
            .field("name", &self.name)
            .field("attached", &self.store.get().is_some())
            .finish_non_exhaustive()
    }
}

/// The sealed value of a kept pair.
#[derive(Serialize, Deserialize)]
struct Kept {
    origin: String,
    access: Option<String>,
    refresh: String,
    base: String,
    server: String,
    at: u64,
}

fn digest(refresh: &Secret) -> String {
    let d = Sha256::digest(format!("obmen:bitrix24:refresh:{}", refresh.expose()).as_bytes());
    hex::encode(&d[..16])
}

impl OAuth {
    pub fn new(
        system: &str,
        base: String,
        server: String,
        client_id: String,
        client_secret: Secret,
        access: Option<Secret>,
        refresh: Secret,
    ) -> OAuth {
        let origin = digest(&refresh);
        OAuth {
            base: RwLock::new(base),
            server: RwLock::new(server),
            client_id,
            client_secret,
            tokens: RwLock::new(Tokens {
                access,
                refresh,
                refreshed_at: None,
            }),
            refreshing: tokio::sync::Mutex::new(()),
            expired_seen: AtomicBool::new(false),
            moved: AtomicBool::new(false),
            keep: Keep {
                name: format!("oauth:bitrix24:{system}"),
                origin,
                store: OnceLock::new(),
                loaded: tokio::sync::OnceCell::new(),
            },
        }
    }

    pub fn access_token(&self) -> Option<Secret> {
        self.tokens.read().ok().and_then(|t| t.access.clone())
    }

    pub fn server(&self) -> String {
        read(&self.server)
    }

    pub fn attach(&self, store: &Store) {
        let _ = self.keep.store.set(store.clone());
    }

    /// Takes the kept pair from the data file, once, before the first call.
    pub async fn load(&self) -> Result<(), CallError> {
        let Some(store) = self.keep.store.get() else {
            return Ok(());
        };
        self.keep
            .loaded
            .get_or_try_init(|| async {
                let name = self.keep.name.clone();
                let stored = store
                    .write(move |tx| secrets::get(tx, &name))
                    .await
                    .map_err(|e| {
                        CallError::new(
                            ErrorClass::Transient,
                            format!("cannot read the kept Bitrix24 tokens: {e}"),
                        )
                    })?;
                let Some((sealed, _)) = stored else {
                    return Ok(());
                };
                match serde_json::from_str::<Kept>(sealed.expose()) {
                    Ok(kept) if kept.origin == self.keep.origin => self.apply(kept),
                    Ok(_) => tracing::info!(
                        system = %self.keep.name,
                        "the configured Bitrix24 refresh token is new: the kept pair is set aside"
                    ),
                    Err(_) => tracing::warn!(
                        system = %self.keep.name,
                        "the kept Bitrix24 tokens do not read; using the configured ones"
                    ),
                }
                Ok(())
            })
            .await
            .map(|_| ())
    }

    fn apply(&self, kept: Kept) {
        if let Ok(mut t) = self.tokens.write() {
            t.access = kept.access.map(Secret::new);
            t.refresh = Secret::new(kept.refresh);
        }
        if let Ok(mut b) = self.base.write() {
            *b = kept.base;
        }
        if let Ok(mut s) = self.server.write() {
            *s = kept.server;
        }
    }

    /// Writes the pair in use (with the endpoints) into the data file, sealed.
    pub async fn keep(&self) {
        let Some(store) = self.keep.store.get() else {
            return;
        };
        let kept = {
            let Ok(t) = self.tokens.read() else { return };
            Kept {
                origin: self.keep.origin.clone(),
                access: t.access.as_ref().map(|a| a.expose().to_owned()),
                refresh: t.refresh.expose().to_owned(),
                base: read(&self.base),
                server: read(&self.server),
                at: now_ms(),
            }
        };
        let Ok(text) = serde_json::to_string(&kept) else {
            return;
        };
        let name = self.keep.name.clone();
        if let Err(e) = store.write(move |tx| secrets::put(tx, &name, &text)).await {
            // The pair still works in memory; only a restart before the next refresh would
            // start from a spent token.
            tracing::error!(system = %self.keep.name, error = %e, "cannot keep the rotated Bitrix24 tokens");
        }
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
            self.server(),
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
        {
            let mut t = self
                .tokens
                .write()
                .map_err(|_| CallError::new(ErrorClass::Transient, "the token store is broken"))?;
            t.access = Some(Secret::new(access));
            t.refresh = Secret::new(new_refresh);
            t.refreshed_at = Some(Instant::now());
        }
        self.use_endpoints(&body);
        // Kept before the call is sent again: the old refresh token is spent now.
        self.keep().await;
        Ok(true)
    }

    /// `client_endpoint` (`https://<portal>/rest/`) is where the calls go from now on;
    /// `server_endpoint` (`https://oauth.bitrix.info/rest/`) names the OAuth server that
    /// issued the pair, which the next refresh asks.
    fn use_endpoints(&self, body: &Value) {
        let endpoint = |k: &str| {
            body.get(k)
                .and_then(Value::as_str)
                .filter(|u| u.starts_with("https://") || u.starts_with("http://"))
                .filter(|u| reqwest::Url::parse(u).is_ok())
        };
        if let Some(client) = endpoint("client_endpoint") {
            let client = if client.ends_with('/') {
                client.to_owned()
            } else {
                format!("{client}/")
            };
            if let Ok(mut b) = self.base.write()
                && *b != client
            {
                tracing::info!(from = %*b, to = %client, "Bitrix24 names a new REST address for the portal");
                *b = client;
            }
        }
        if let Some(server) = endpoint("server_endpoint") {
            let server = server.trim_end_matches('/');
            let server = server.strip_suffix("/rest").unwrap_or(server).to_owned();
            if let Ok(mut s) = self.server.write() {
                *s = server;
            }
        }
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
