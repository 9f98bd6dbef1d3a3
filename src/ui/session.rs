//! Sessions of the status page: a token typed once on the login page becomes an HttpOnly,
//! SameSite=Strict cookie naming an in-memory session (a restart logs everyone out). Each
//! session has a CSRF token that every form that changes state must carry back.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::http::AppState;
use crate::http::auth::Caller;

use super::i18n::Lang;

pub const COOKIE: &str = "obmen_session";
const LIFETIME: Duration = Duration::from_secs(12 * 3600);

#[derive(Clone, Debug)]
pub struct Session {
    pub caller: Caller,
    pub csrf: String,
    expires: Instant,
}

#[derive(Default)]
pub struct Sessions {
    map: Mutex<HashMap<String, Session>>,
}

fn random_token() -> String {
    hex::encode(rand::random::<[u8; 24]>())
}

impl Sessions {
    /// A new session; returns its id (the cookie value).
    pub fn create(&self, caller: Caller) -> String {
        let id = random_token();
        let session = Session {
            caller,
            csrf: random_token(),
            expires: Instant::now() + LIFETIME,
        };
        if let Ok(mut map) = self.map.lock() {
            let now = Instant::now();
            map.retain(|_, s| s.expires > now);
            map.insert(id.clone(), session);
        }
        id
    }

    pub fn get(&self, id: &str) -> Option<Session> {
        let map = self.map.lock().ok()?;
        map.get(id).filter(|s| s.expires > Instant::now()).cloned()
    }

    pub fn remove(&self, id: &str) {
        if let Ok(mut map) = self.map.lock() {
            map.remove(id);
        }
    }
}

pub fn set_cookie(id: &str) -> String {
    format!(
        "{COOKIE}={id}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
        LIFETIME.as_secs()
    )
}

pub fn clear_cookie() -> String {
    format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0")
}

fn cookie<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Who looks at a page: a session, a Bearer token, or nobody; and in which language.
pub struct PageUser {
    pub caller: Option<Caller>,
    /// Present for cookie sessions: forms must send it back.
    pub csrf: Option<String>,
    pub session: Option<String>,
    pub lang: Lang,
}

impl PageUser {
    pub fn is_admin(&self) -> bool {
        self.caller
            .as_ref()
            .is_some_and(|c| c.role == crate::config::validate::Role::Admin)
    }

    /// A form's CSRF token matches the session's; Bearer callers need none (a browser
    /// never sends that header on its own).
    pub fn csrf_ok(&self, sent: &str) -> bool {
        match &self.csrf {
            Some(expected) => bool::from(expected.as_bytes().ct_eq(sent.as_bytes())),
            None => self.caller.is_some(),
        }
    }
}

impl FromRequestParts<AppState> for PageUser {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let query_lang = parts.uri.query().and_then(|q| {
            q.split('&')
                .find_map(|kv| kv.strip_prefix("lang="))
                .map(str::to_owned)
        });
        let lang = Lang::pick(query_lang.as_deref(), &parts.headers, state.ui_lang);
        if let Some(id) = cookie(parts, COOKIE)
            && let Some(s) = state.sessions.get(id)
        {
            return Ok(PageUser {
                caller: Some(s.caller),
                csrf: Some(s.csrf),
                session: Some(id.to_owned()),
                lang,
            });
        }
        let bearer = parts
            .headers
            .contains_key(axum::http::header::AUTHORIZATION);
        let caller = if bearer {
            crate::http::auth::caller(parts, state).ok()
        } else {
            None
        };
        Ok(PageUser {
            caller,
            csrf: None,
            session: None,
            lang,
        })
    }
}
