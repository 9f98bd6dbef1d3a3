//! Bearer tokens with roles, as extractors: a handler that takes [`Admin`] cannot run
//! without an admin token. Missing or unknown token: 401; known but not admin: 403.

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::StatusCode;
use axum::http::request::Parts;
use subtle::ConstantTimeEq;

use crate::config::validate::{Role, Token};

use super::AppState;
use super::error::ApiError;

#[derive(Clone, Debug)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

/// Any valid token (viewer or admin).
pub struct Viewer(pub Caller);
/// An admin token.
pub struct Admin(pub Caller);

/// Compares against every token, always, so timing does not reveal which one matched.
pub fn identify(tokens: &[Token], presented: &str) -> Option<Caller> {
    let mut found = None;
    for t in tokens {
        if bool::from(t.token.expose().as_bytes().ct_eq(presented.as_bytes())) {
            found = Some(Caller {
                name: t.name.clone(),
                role: t.role,
            });
        }
    }
    found
}

fn client_ip(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip())
}

pub fn caller(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let ip = client_ip(parts);
    if let Some(wait) = ip.and_then(|ip| state.auth_throttle.blocked_for(ip)) {
        let secs = u32::try_from(wait.as_secs() + 1).unwrap_or(u32::MAX);
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "too_many_failures",
            "too many failed logins from this address; wait",
        );
        err.retry_after = Some(secs);
        return Err(err);
    }
    let presented = parts
        .headers
        .contains_key(axum::http::header::AUTHORIZATION);
    let found = check_token(parts, state);
    // A wrong token is a guess; a missing one is not.
    if let (Err(_), Some(ip), true) = (&found, ip, presented) {
        state.auth_throttle.failed(ip);
    }
    found
}

fn check_token(parts: &Parts, state: &AppState) -> Result<Caller, ApiError> {
    let header = parts
        .headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let Some(token) = header.and_then(|h| h.strip_prefix("Bearer ")) else {
        return Err(ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "send Authorization: Bearer <token>",
        ));
    };
    identify(&state.tokens, token.trim()).ok_or_else(|| {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "unauthorized",
            "the token is not valid",
        )
    })
}

impl FromRequestParts<AppState> for Viewer {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        caller(parts, state).map(Viewer)
    }
}

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let c = caller(parts, state)?;
        if c.role != Role::Admin {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                "forbidden",
                "this needs an admin token",
            ));
        }
        Ok(Admin(c))
    }
}
