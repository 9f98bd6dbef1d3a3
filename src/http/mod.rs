//! HTTP: the router, shared state and the small endpoints (health, readiness, OpenAPI).

pub mod api;
pub mod auth;
pub mod error;
pub mod hooks;
pub mod metrics;
pub mod onec;
pub mod throttle;
pub mod views;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use tower_http::timeout::TimeoutLayer;
use utoipa::OpenApi;

use crate::config::validate::Token;
use crate::engine::Engine;

use error::ApiError;

#[derive(Clone)]
pub struct AppState {
    pub engine: Arc<Engine>,
    pub tokens: Arc<Vec<Token>>,
    pub auth_throttle: Arc<throttle::AuthThrottle>,
    /// `status_page.public`: `/api/summary` answers without a token.
    pub public_summary: bool,
    pub sessions: Arc<crate::ui::session::Sessions>,
    /// The status page's language when the browser names none obmen speaks.
    pub ui_lang: crate::ui::i18n::Lang,
}

pub fn router(state: AppState, max_body: usize) -> Router {
    let api = Router::new()
        .route("/api/exchanges", get(api::list))
        .route("/api/exchanges/retry", post(api::bulk_retry))
        .route("/api/exchanges/{id}", get(api::show))
        .route("/api/exchanges/{id}/retry", post(api::retry))
        .route("/api/flows", get(api::flows))
        .route("/api/summary", get(api::summary))
        .route("/api/flows/{flow}/dry-run", post(api::dry_run))
        .route("/api/flows/{flow}/run", post(api::run))
        .route("/api/backup", post(api::backup))
        .route("/api/openapi.json", get(openapi))
        .route("/metrics", get(metrics::metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .layer(DefaultBodyLimit::max(max_body));
    // Webhooks read their body themselves, up to the flow's own limit.
    let hooks = Router::new()
        .route("/hooks/{flow}", post(hooks::receive).get(hooks::handshake))
        .route(
            "/1c/exchange/{flow}",
            post(onec::exchange).get(onec::exchange),
        )
        .layer(DefaultBodyLimit::disable());
    // A slow or stuck client cannot hold a handler forever; dry runs call targets, so the
    // bound is above the longest connector timeout.
    let timeout = TimeoutLayer::with_status_code(StatusCode::REQUEST_TIMEOUT, REQUEST_TIMEOUT);
    api.merge(hooks)
        .merge(crate::ui::router())
        .fallback(not_found)
        .layer(timeout)
        .with_state(state)
}

const REQUEST_TIMEOUT: Duration = Duration::from_secs(90);

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint")
}

/// Liveness.
#[utoipa::path(get, path = "/healthz", tag = "ops", responses((status = 200)))]
pub async fn healthz() -> &'static str {
    "ok"
}

/// Readiness: the journal accepts a durable write.
#[utoipa::path(get, path = "/readyz", tag = "ops", responses((status = 200), (status = 503)))]
pub async fn readyz(State(s): State<AppState>) -> Result<&'static str, ApiError> {
    let probe = s.engine.store.write(|_| Ok(()));
    match tokio::time::timeout(Duration::from_secs(5), probe).await {
        Ok(Ok(())) => Ok("ready"),
        Ok(Err(e)) => Err(ApiError::from(e)),
        Err(_) => Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the journal did not commit within 5 s",
        )),
    }
}

#[derive(OpenApi)]
#[openapi(
    info(title = "obmen", description = "API integrations with a journal, a durable queue, retry and dedup."),
    paths(
        hooks::receive, api::summary, api::list, api::show, api::retry, api::bulk_retry, api::flows, api::dry_run, api::run, api::backup,
        metrics::metrics, healthz, readyz, openapi
    ),
    modifiers(&BearerAuth)
)]
pub struct ApiDoc;

struct BearerAuth;

impl utoipa::Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// This API's OpenAPI description.
#[utoipa::path(get, path = "/api/openapi.json", tag = "ops", responses((status = 200, body = Object)))]
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}
