//! The status page and error dashboard: server-rendered HTML (maud), usable without
//! JavaScript and on a phone, in Russian and English. Reads go to the store's counters and
//! indexes; the only actions (retry, retry a group, log in/out) are POST forms with a CSRF
//! token.

pub mod dashboard;
pub mod exchanges;
pub mod i18n;
pub mod layout;
pub mod session;

use axum::Router;
use axum::extract::{ConnectInfo, Form, Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use maud::{Markup, html};
use serde::Deserialize;

use crate::http::AppState;
use crate::model::now_ms;
use crate::store::ops;
use crate::store::query;

use session::PageUser;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(overview))
        .route("/errors", get(errors))
        .route("/errors/{group}/retry", post(retry_group))
        .route("/exchanges", get(list))
        .route("/exchanges/{id}", get(detail))
        .route("/exchanges/{id}/retry", post(retry))
        .route("/login", get(login_form).post(login))
        .route("/logout", post(logout))
        .route("/static/obmen.css", get(css))
}

const CSS: &str = include_str!("../../static/obmen.css");

async fn css() -> Response {
    let headers = [
        (header::CONTENT_TYPE, "text/css; charset=utf-8"),
        (header::CACHE_CONTROL, "public, max-age=31536000, immutable"),
    ];
    (headers, CSS).into_response()
}

fn html_page(status: StatusCode, markup: Markup) -> Response {
    let headers = [
        (header::CACHE_CONTROL, "no-store"),
        (header::X_FRAME_OPTIONS, "DENY"),
    ];
    (status, headers, markup).into_response()
}

fn to_login() -> Response {
    Redirect::to("/login").into_response()
}

fn failure(user: &PageUser, status: StatusCode, message: &str) -> Response {
    html_page(
        status,
        layout::page(
            user,
            status.canonical_reason().unwrap_or("error"),
            &html! { p.error { (message) } },
        ),
    )
}

fn store_failure(user: &PageUser, e: &crate::store::StoreError) -> Response {
    tracing::error!(error = %e, "the status page cannot read the store");
    failure(
        user,
        StatusCode::SERVICE_UNAVAILABLE,
        "the journal cannot be read right now",
    )
}

async fn overview(State(s): State<AppState>, user: PageUser) -> Response {
    let public = user.caller.is_none();
    if public && !s.public_summary {
        return to_login();
    }
    match dashboard::overview(&s.engine, &user, public) {
        Ok(page) => html_page(StatusCode::OK, page),
        Err(e) => store_failure(&user, &e),
    }
}

#[derive(Debug, Default, Deserialize)]
struct ErrorsQuery {
    flow: Option<String>,
}

async fn errors(
    State(s): State<AppState>,
    user: PageUser,
    Query(q): Query<ErrorsQuery>,
) -> Response {
    if user.caller.is_none() {
        return to_login();
    }
    match dashboard::errors(
        &s.engine,
        &user,
        q.flow.as_deref().filter(|f| !f.is_empty()),
    ) {
        Ok(page) => html_page(StatusCode::OK, page),
        Err(e) => store_failure(&user, &e),
    }
}

async fn list(
    State(s): State<AppState>,
    user: PageUser,
    Query(p): Query<exchanges::ListParams>,
) -> Response {
    if user.caller.is_none() {
        return to_login();
    }
    match exchanges::list(&s.engine, &user, &p) {
        Ok(page) => html_page(StatusCode::OK, page),
        Err(e) => store_failure(&user, &e),
    }
}

async fn detail(State(s): State<AppState>, user: PageUser, Path(id): Path<u64>) -> Response {
    if user.caller.is_none() {
        return to_login();
    }
    match exchanges::detail(&s.engine, &user, id) {
        Ok(Some(page)) => html_page(StatusCode::OK, page),
        Ok(None) => failure(&user, StatusCode::NOT_FOUND, &format!("no exchange {id}")),
        Err(e) => store_failure(&user, &e),
    }
}

#[derive(Debug, Deserialize)]
struct ActionForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    force: Option<String>,
}

/// Only an admin with the session's CSRF token may act.
fn may_act(user: &PageUser, form: &ActionForm) -> Result<String, Box<Response>> {
    match &user.caller {
        None => Err(Box::new(to_login())),
        Some(c) if !user.is_admin() => Err(Box::new(failure(
            user,
            StatusCode::FORBIDDEN,
            &format!("{}: this needs an admin", c.name),
        ))),
        Some(_) if !user.csrf_ok(&form.csrf) => Err(Box::new(failure(
            user,
            StatusCode::FORBIDDEN,
            "the form is stale or forged (CSRF check failed); reload the page",
        ))),
        Some(c) => Ok(c.name.clone()),
    }
}

async fn retry(
    State(s): State<AppState>,
    user: PageUser,
    Path(id): Path<u64>,
    Form(form): Form<ActionForm>,
) -> Response {
    let by = match may_act(&user, &form) {
        Ok(by) => by,
        Err(r) => return *r,
    };
    let force = form.force.as_deref() == Some("true");
    let done = s
        .engine
        .store
        .write(move |txn| {
            ops::manual_retry(txn, id, force, &format!("{by} (status page)"), now_ms())
        })
        .await;
    match done {
        Ok(Ok(_)) => {
            s.engine.wake.notify_one();
            Redirect::to(&format!("/exchanges/{id}")).into_response()
        }
        Ok(Err(refused)) => failure(&user, StatusCode::CONFLICT, &format!("{refused:?}")),
        Err(e) => store_failure(&user, &e),
    }
}

async fn retry_group(
    State(s): State<AppState>,
    user: PageUser,
    Path(group): Path<String>,
    Form(form): Form<ActionForm>,
) -> Response {
    let by = match may_act(&user, &form) {
        Ok(by) => by,
        Err(r) => return *r,
    };
    let members = match s
        .engine
        .store
        .read()
        .and_then(|t| query::group_members(&t, &group))
    {
        Ok(m) => m,
        Err(e) => return store_failure(&user, &e),
    };
    let by = format!("{by} (status page, group)");
    let done = s
        .engine
        .store
        .write(move |txn| {
            // Members that already succeeded or wait are left alone.
            for id in members {
                let _ = ops::manual_retry(txn, id, false, &by, now_ms())?;
            }
            Ok(())
        })
        .await;
    match done {
        Ok(()) => {
            s.engine.wake.notify_one();
            Redirect::to("/errors").into_response()
        }
        Err(e) => store_failure(&user, &e),
    }
}

fn login_page(user: &PageUser, message: Option<&str>) -> Markup {
    let lang = user.lang;
    layout::page(
        user,
        i18n::LOGIN.get(lang),
        &html! {
            @if let Some(m) = message { p.error { (m) } }
            form.login method="post" action="/login" {
                label { (i18n::TOKEN.get(lang)) input type="password" name="token" autocomplete="current-password" required; }
                button type="submit" { (i18n::LOGIN.get(lang)) }
            }
        },
    )
}

async fn login_form(user: PageUser) -> Response {
    html_page(StatusCode::OK, login_page(&user, None))
}

#[derive(Debug, Deserialize)]
struct LoginForm {
    token: String,
}

async fn login(
    State(s): State<AppState>,
    ConnectInfo(peer): ConnectInfo<std::net::SocketAddr>,
    user: PageUser,
    Form(form): Form<LoginForm>,
) -> Response {
    if s.auth_throttle.blocked_for(peer.ip()).is_some() {
        return html_page(
            StatusCode::TOO_MANY_REQUESTS,
            login_page(&user, Some("too many failed logins; wait a minute")),
        );
    }
    let Some(caller) = crate::http::auth::identify(&s.tokens, form.token.trim()) else {
        s.auth_throttle.failed(peer.ip());
        return html_page(
            StatusCode::UNAUTHORIZED,
            login_page(&user, Some(i18n::BAD_TOKEN.get(user.lang))),
        );
    };
    let id = s.sessions.create(caller);
    (
        [(header::SET_COOKIE, session::set_cookie(&id))],
        Redirect::to("/"),
    )
        .into_response()
}

async fn logout(
    State(s): State<AppState>,
    user: PageUser,
    Form(form): Form<ActionForm>,
) -> Response {
    if let Some(id) = &user.session
        && user.csrf_ok(&form.csrf)
    {
        s.sessions.remove(id);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}
