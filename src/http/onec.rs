//! `/1c/exchange/{flow}`: the CommerceML 2 exchange with 1C as the client. 1C drives it
//! with `?type=catalog|sale&mode=checkauth|init|file|import|query|success`; every answer
//! is plain text lines in windows-1251 (`success` / `progress` / `failure` + message),
//! except `mode=query`, which answers a CommerceML document. Each item of an uploaded
//! file becomes an exchange through the engine's normal intake (dedup, journal, queue), in
//! bounded batches: `mode=import` answers `progress` until the whole file is committed.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

use crate::connectors::onec::commerceml::session::{
    self, COOKIE, ExchangeType, ImportState, Session, answer, safe_name, work_dir,
};
use crate::connectors::onec::commerceml::{map, write, xml};
use crate::engine::flow::{CommerceMl, Flow, Trigger};
use crate::engine::intake::Event;
use crate::model::{Status, now_ms};
use crate::store::onec as store;

use super::AppState;

/// Bounded work per `mode=import` request (with the flow's `import_batch`): 1C calls
/// again on `progress`.
const BATCH_TIME: Duration = Duration::from_secs(2);
/// An older module's order file is read inside its `mode=file` request, which has no
/// `progress`: reading stops well before the server's request timeout (90 s).
const AT_UPLOAD_TIME: Duration = Duration::from_secs(60);
const TEXT: &str = "text/plain; charset=windows-1251";

fn reply(code: StatusCode, status: &str, lines: &[&str]) -> Response {
    (code, [(header::CONTENT_TYPE, TEXT)], answer(status, lines)).into_response()
}

fn failure(why: &str) -> Response {
    reply(StatusCode::OK, "failure", &[why])
}

/// Where one step of reading a file left it.
enum Imported {
    /// More to read: call again.
    Progress(String),
    /// Another request holds this file's import now.
    Busy,
    Success(String),
    Failure(String),
}

impl Imported {
    fn response(self) -> Response {
        match self {
            Imported::Progress(msg) => reply(StatusCode::OK, "progress", &[&msg]),
            Imported::Busy => reply(
                StatusCode::OK,
                "progress",
                &["another request is importing this file"],
            ),
            Imported::Success(msg) => reply(StatusCode::OK, "success", &[&msg]),
            Imported::Failure(msg) => failure(&msg),
        }
    }
}

/// The CommerceML exchange endpoint (GET and POST).
pub async fn exchange(
    State(state): State<AppState>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Path(flow_name): Path<String>,
    RawQuery(raw_query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(flow) = state.engine.flow(&flow_name).cloned() else {
        return reply(StatusCode::NOT_FOUND, "failure", &["no such flow"]);
    };
    let query: Vec<(String, String)> = raw_query
        .as_deref()
        .and_then(|q| serde_urlencoded::from_str(q).ok())
        .unwrap_or_default();
    let Trigger::CommerceMl(t) = &flow.trigger else {
        return reply(
            StatusCode::NOT_FOUND,
            "failure",
            &["this flow is not a 1C exchange"],
        );
    };
    let t = CommerceMl {
        user: t.user.clone(),
        password: t.password.clone(),
        exchange: t.exchange,
        file_limit: t.file_limit,
        upload_limit: t.upload_limit,
        import_batch: t.import_batch,
    };
    handle(state, peer, flow, t, query, headers, body).await
}

async fn handle(
    state: AppState,
    peer: SocketAddr,
    flow: Arc<Flow>,
    trigger: CommerceMl,
    query: Vec<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let get = |k: &str| query.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let kind = get("type").unwrap_or_default();
    if ExchangeType::parse(&kind) != Some(trigger.exchange) {
        return failure(&format!(
            "this flow takes type={}, not type={kind}",
            trigger.exchange.as_str()
        ));
    }
    if let Some(wait) = state.auth_throttle.blocked_for(peer.ip()) {
        let msg = format!(
            "too many failed logins from this address; wait {} s",
            wait.as_secs() + 1
        );
        return reply(StatusCode::TOO_MANY_REQUESTS, "failure", &[&msg]);
    }
    let mode = get("mode").unwrap_or_default();
    if mode == "checkauth" {
        return checkauth(&state, peer, &flow, &trigger, &headers).await;
    }
    let Some((cookie_hash, session)) = find_session(&state, &flow, &headers) else {
        state.auth_throttle.failed(peer.ip());
        return failure("not authorized: call mode=checkauth first and send its cookie");
    };
    let ctx = Ctx {
        state,
        flow,
        trigger,
        cookie_hash,
        session,
    };
    match mode.as_str() {
        "init" => ctx.init(get("version")).await,
        "file" => ctx.file(get("filename").as_deref(), body).await,
        "import" => ctx.import(get("filename").as_deref()).await,
        "query" if ctx.trigger.exchange == ExchangeType::Sale => ctx.query().await,
        "success" if ctx.trigger.exchange == ExchangeType::Sale => ctx.success().await,
        // Newer modules end a catalog run with these; obmen deactivates nothing itself
        // (a deleted item arrives with `deleted: true`).
        "deactivate" | "complete" => ctx.complete().await,
        other => failure(&format!("unknown command mode={other}")),
    }
}

/// `Authorization: Basic` user and password, compared in constant time.
fn basic_ok(headers: &HeaderMap, t: &CommerceMl) -> Result<(), (String, Option<String>)> {
    let Some(value) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
    else {
        return Err(("no HTTP Basic credentials".into(), None));
    };
    let Some(encoded) = value.strip_prefix("Basic ").map(str::trim) else {
        return Err(("the Authorization header is not Basic".into(), None));
    };
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| ("the Basic credentials do not decode".to_owned(), None))?;
    let (user, password) = decoded.split_once(':').unwrap_or((decoded.as_str(), ""));
    let user_ok = user.as_bytes().ct_eq(t.user.as_bytes());
    let pass_ok = password.as_bytes().ct_eq(t.password.expose().as_bytes());
    if bool::from(user_ok & pass_ok) {
        Ok(())
    } else {
        Err(("wrong user or password".into(), Some(user.to_owned())))
    }
}

async fn checkauth(
    state: &AppState,
    peer: SocketAddr,
    flow: &Flow,
    t: &CommerceMl,
    headers: &HeaderMap,
) -> Response {
    if let Err((reason, user)) = basic_ok(headers, t) {
        // Journaled like a refused webhook, and throttled per address.
        state.auth_throttle.failed(peer.ip());
        let detail = format!(
            "mode=checkauth from {} as user `{}`",
            peer.ip(),
            user.as_deref().unwrap_or("")
        );
        if let Err(e) = state
            .engine
            .record_refused(
                flow,
                "1c exchange (refused)",
                &reason,
                detail.as_bytes(),
                None,
            )
            .await
        {
            tracing::warn!(flow = %flow.name, error = %e, "cannot journal a refused 1C login");
        }
        return failure(&reason);
    }
    let cookie = session::token();
    let now = now_ms();
    let session = Session {
        id: session::token()[..24].to_owned(),
        flow: flow.name.clone(),
        created_at: now,
        exported: Vec::new(),
        client_version: None,
    };
    let hash = state.engine.store.lookup_hash(&cookie);
    let bytes = session.encode();
    let swept = state
        .engine
        .store
        .write(move |txn| {
            let gone = store::sweep_sessions(txn, |raw| {
                Session::decode(raw)
                    .filter(|s| s.expired(now))
                    .map(|s| format!("{}/{}", s.flow, s.id))
            })?;
            store::put_session(txn, &hash, &bytes)?;
            Ok(gone)
        })
        .await;
    let swept = match swept {
        Ok(gone) => gone,
        Err(e) => return failure(&format!("the journal cannot commit now: {e}")),
    };
    let root = data_dir(state).join("1c");
    for rel in swept {
        let _ = std::fs::remove_dir_all(root.join(rel));
    }
    let sessid = format!("sessid={}", session::token());
    let timestamp = format!("timestamp={}", now / 1000);
    let mut response = reply(
        StatusCode::OK,
        "success",
        &[COOKIE, &cookie, &sessid, &timestamp],
    );
    let set = format!(
        "{COOKIE}={cookie}; Path=/1c/exchange/{}; HttpOnly",
        flow.name
    );
    if let Ok(v) = HeaderValue::from_str(&set) {
        response.headers_mut().insert(header::SET_COOKIE, v);
    }
    response
}

fn data_dir(state: &AppState) -> PathBuf {
    state
        .engine
        .store
        .path()
        .parent()
        .map(PathBuf::from)
        .unwrap_or_default()
}

/// The session of the cookie 1C sent, if it is this flow's and not expired.
fn find_session(state: &AppState, flow: &Flow, headers: &HeaderMap) -> Option<(String, Session)> {
    let cookie = headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .find_map(|pair| {
            let (k, v) = pair.trim().split_once('=')?;
            (k == COOKIE).then(|| v.trim().to_owned())
        })?;
    let hash = state.engine.store.lookup_hash(&cookie);
    let read = state.engine.store.read().ok()?;
    let raw = store::session(&read, &hash).ok()??;
    let session = Session::decode(&raw)?;
    (session.flow == flow.name && !session.expired(now_ms())).then_some((hash, session))
}

/// One authorised request.
struct Ctx {
    state: AppState,
    flow: Arc<Flow>,
    trigger: CommerceMl,
    cookie_hash: String,
    session: Session,
}

impl Ctx {
    fn dir(&self) -> PathBuf {
        work_dir(&data_dir(&self.state), &self.flow.name, &self.session.id)
    }

    /// Starts the run over: the session's files and import states go. The `version=` 1C
    /// sends (or not) is kept: it tells how an order file is to be read.
    async fn init(&self, version: Option<String>) -> Response {
        let _ = std::fs::remove_dir_all(self.dir());
        let versioned = version.is_some();
        let mut session = self.session.clone();
        session.client_version = version;
        let (id, hash) = (self.session.id.clone(), self.cookie_hash.clone());
        if let Err(e) = self
            .state
            .engine
            .store
            .write(move |txn| {
                store::clear_imports(txn, &id)?;
                store::put_session(txn, &hash, &session.encode())
            })
            .await
        {
            return failure(&format!("the journal cannot commit now: {e}"));
        }
        // zip=no: 1C then sends the XML files themselves (docs/connectors/1c.md).
        let limit = format!("file_limit={}", self.trigger.file_limit);
        let mut lines = vec!["zip=no".to_owned(), limit];
        if versioned && self.trigger.exchange == ExchangeType::Sale {
            lines.push(format!("sessid={}", session::token()));
            lines.push("version=2.09".to_owned());
        }
        let text = lines.join("\n");
        let mut body = encoding_rs::WINDOWS_1251.encode(&text).0.into_owned();
        body.push(b'\n');
        (StatusCode::OK, [(header::CONTENT_TYPE, TEXT)], body).into_response()
    }

    /// Appends one part of a file; a part over `file_limit` is refused whole.
    async fn file(&self, filename: Option<&str>, body: Body) -> Response {
        let Some(name) = filename else {
            return failure("mode=file needs filename=");
        };
        let rel = match safe_name(name) {
            Ok(rel) => rel,
            Err(e) => return failure(&e),
        };
        let limit = usize::try_from(self.trigger.file_limit).unwrap_or(usize::MAX);
        let Ok(bytes) = axum::body::to_bytes(body, limit).await else {
            return failure(&format!(
                "the part is larger than file_limit={} bytes",
                self.trigger.file_limit
            ));
        };
        let path = self.dir().join(&rel);
        let at_upload = self.session.reads_at_upload(self.trigger.exchange);
        // Any upload of a name already read (or refused) is new content: without this the
        // next mode=import answered the saved outcome and never read it.
        if let Err(e) = self.start_again_if_read(&rel, &path).await {
            return failure(&format!("cannot start the file again: {e}"));
        }
        // Parts are bounded one by one; the session's files together are bounded here, so
        // an endless upload cannot fill the disk.
        let held = held_bytes(&self.dir());
        if held.saturating_add(bytes.len() as u64) > self.trigger.upload_limit {
            return failure(&format!(
                "this session already holds {held} bytes of uploads: another {} would pass \
                 upload_limit={} bytes (mode=init starts over)",
                bytes.len(),
                self.trigger.upload_limit
            ));
        }
        let target = path.clone();
        let written = tokio::task::spawn_blocking(move || append(&target, &bytes)).await;
        match written {
            Ok(Ok(())) if at_upload => self.read_at_upload(&rel, path).await,
            Ok(Ok(())) => reply(StatusCode::OK, "success", &[]),
            Ok(Err(e)) => failure(&format!("cannot store the file: {e}")),
            Err(e) => failure(&format!("cannot store the file: {e}")),
        }
    }

    /// A name that was already read (or refused) in this session is uploaded again: new
    /// content, so its import starts over (and a broken earlier file is not appended to).
    async fn start_again_if_read(
        &self,
        rel: &std::path::Path,
        path: &std::path::Path,
    ) -> Result<(), crate::store::StoreError> {
        let file = rel.to_string_lossy().into_owned();
        let saved = self.import_state(&file)?;
        if !saved.cursor.done && saved.error.is_none() {
            return Ok(());
        }
        let _ = std::fs::remove_file(path);
        let id = self.session.id.clone();
        self.state
            .engine
            .store
            .write(move |txn| store::remove_import_state(txn, &id, &file))
            .await
    }

    /// An older module's order file (it never calls `mode=import`): read whole once its
    /// last part has closed the document, as 1C-Bitrix does inside `mode=file`.
    async fn read_at_upload(&self, rel: &std::path::Path, path: PathBuf) -> Response {
        let file = rel.to_string_lossy().into_owned();
        match tokio::task::spawn_blocking(move || xml::ends_document(&path)).await {
            Ok(Ok(true)) => {}
            // More parts to come.
            Ok(Ok(false)) => return reply(StatusCode::OK, "success", &[]),
            Ok(Err(e)) => return failure(&format!("cannot read {file}: {e}")),
            Err(e) => return failure(&format!("cannot read {file}: {e}")),
        }
        let deadline = Instant::now() + AT_UPLOAD_TIME;
        loop {
            match self.import_step(rel).await {
                Imported::Progress(msg) if Instant::now() >= deadline => {
                    // What was read is kept: 1C's next exchange sends the file again, and
                    // those items are duplicates then.
                    return failure(&format!(
                        "{msg}; not finished within {} s: send smaller files, or use an \
                         exchange module that calls mode=import",
                        AT_UPLOAD_TIME.as_secs()
                    ));
                }
                Imported::Progress(_) => {}
                Imported::Busy => tokio::time::sleep(Duration::from_millis(20)).await,
                done => return done.response(),
            }
        }
    }

    async fn import(&self, filename: Option<&str>) -> Response {
        let Some(name) = filename else {
            return failure("mode=import needs filename=");
        };
        match safe_name(name) {
            Ok(rel) => self.import_step(&rel).await.response(),
            Err(e) => failure(&e),
        }
    }

    /// The next batch of `rel`, or the outcome saved when it was finished.
    async fn import_step(&self, rel: &std::path::Path) -> Imported {
        let file = rel.to_string_lossy().into_owned();
        let before = match self.import_state(&file) {
            Ok(s) => s,
            Err(e) => return Imported::Failure(format!("cannot read the import state: {e}")),
        };
        if let Some(err) = &before.error {
            return Imported::Failure(format!("{file}: {err}"));
        }
        if before.cursor.done {
            return Imported::Success(summary(&file, &before));
        }
        let path = self.dir().join(rel);
        if !path.is_file() {
            return Imported::Failure(format!(
                "{file} was not uploaded in this session (mode=file)"
            ));
        }
        self.import_batch(file, path, before).await
    }

    fn import_state(&self, file: &str) -> Result<ImportState, crate::store::StoreError> {
        let read = self.state.engine.store.read()?;
        let raw = store::import_state(&read, &self.session.id, file)?;
        Ok(raw
            .and_then(|r| ImportState::decode(&r))
            .unwrap_or_default())
    }

    /// Reads the next bounded batch, accepts its items and saves the cursor, in one commit.
    async fn import_batch(&self, file: String, path: PathBuf, before: ImportState) -> Imported {
        let cursor = before.cursor.clone();
        let limits = xml::Limits {
            max_items: self.trigger.import_batch,
            deadline: Instant::now() + BATCH_TIME,
        };
        let name = file.clone();
        let parsed = tokio::task::spawn_blocking(move || {
            let batch = xml::read_batch(&path, cursor, limits);
            let src = map::Source {
                file: &name,
                header: &batch.cursor.header,
            };
            let payloads: Vec<Value> = batch
                .items
                .iter()
                .map(|(kind, node)| map::payload(*kind, node, &src))
                .collect();
            (batch.cursor, batch.error, payloads)
        })
        .await;
        let Ok((cursor, error, payloads)) = parsed else {
            return Imported::Failure(
                "the import stopped unexpectedly; call mode=import again".into(),
            );
        };
        let read_now = payloads.len();
        let events = payloads
            .into_iter()
            .map(|payload| Event {
                source: "1c exchange",
                payload,
                request_id: None,
            })
            .collect();
        let mut after = before.clone();
        after.cursor = cursor;
        after.error = error.clone();
        let accepted = self.commit(&file, before, after.clone(), events).await;
        let after = match accepted {
            Ok(Some(state)) => state,
            Ok(None) => return Imported::Busy,
            Err(e) => return Imported::Failure(format!("the journal cannot commit now: {e}")),
        };
        if let Some(err) = error {
            self.journal_unreadable(&file, &err, after.cursor.items)
                .await;
            return Imported::Failure(format!("{file}: {err}"));
        }
        if after.cursor.done {
            let _ = std::fs::remove_file(self.dir().join(&file));
            return Imported::Success(summary(&file, &after));
        }
        Imported::Progress(format!(
            "{file}: {} items read ({read_now} in this step)",
            after.cursor.items
        ))
    }

    /// Compare-and-set of the import state around the batch's exchanges.
    async fn commit(
        &self,
        file: &str,
        before: ImportState,
        after: ImportState,
        events: Vec<Event>,
    ) -> Result<Option<ImportState>, crate::store::StoreError> {
        let (sid, f) = (self.session.id.clone(), file.to_owned());
        let expected = before.encode();
        let fresh = before == ImportState::default();
        let (sid2, f2) = (sid.clone(), f.clone());
        let state = Arc::new(std::sync::Mutex::new(after));
        let out = state.clone();
        let guard = move |txn: &crate::store::Tx<'_>| {
            let now = store::import_state_in(txn, &sid, &f)?;
            Ok(match now {
                None => fresh,
                Some(raw) => raw == expected,
            })
        };
        let after_fn = move |txn: &crate::store::Tx<'_>, statuses: &[Status]| {
            let mut s = state.lock().map_err(|_| crate::store::StoreError::Closed)?;
            for st in statuses {
                match st {
                    Status::Duplicate => s.duplicates += 1,
                    Status::Rejected => s.rejected += 1,
                    _ => s.new += 1,
                }
            }
            store::put_import_state(txn, &sid2, &f2, &s.encode())
        };
        let done = self
            .state
            .engine
            .accept_batch(&self.flow, &events, guard, after_fn)
            .await?;
        let result = out.lock().map(|s| s.clone()).ok();
        Ok(done.and(result))
    }

    /// A file that is not CommerceML (or is cut short) is journaled as a rejected
    /// exchange: what was read before the error is accepted, the rest is not.
    async fn journal_unreadable(&self, file: &str, err: &str, items: u64) {
        let description =
            json!({"file": file, "error": err, "items_accepted_before_the_error": items});
        if let Err(e) = self
            .state
            .engine
            .record_unreadable(
                &self.flow,
                "1c exchange (unreadable file)",
                &description,
                err,
            )
            .await
        {
            tracing::warn!(flow = %self.flow.name, error = %e, "cannot journal an unreadable 1C file");
        }
    }

    /// The orders waiting for 1C, as one CommerceML document. Repeatable: they stay in the
    /// outbox until `mode=success`.
    async fn query(&self) -> Response {
        let (flow, hash) = (self.flow.name.clone(), self.cookie_hash.clone());
        let mut session = self.session.clone();
        let taken = self
            .state
            .engine
            .store
            .write(move |txn| {
                let out = store::outbox(txn, &flow)?;
                session.exported = out.iter().map(|o| (o.order_id.clone(), o.seq)).collect();
                store::put_session(txn, &hash, &session.encode())?;
                Ok(out)
            })
            .await;
        let orders = match taken {
            Ok(out) => out,
            Err(e) => return failure(&format!("the journal cannot commit now: {e}")),
        };
        let docs: Vec<Value> = orders
            .iter()
            .filter_map(|o| serde_json::from_str(&o.order).ok())
            .collect();
        let formed = chrono::Utc::now().format("%Y-%m-%dT%H:%M:%S").to_string();
        let body = write::query_document(&docs, &formed);
        let ct = "application/xml; charset=windows-1251";
        (StatusCode::OK, [(header::CONTENT_TYPE, ct)], body).into_response()
    }

    /// 1C confirms the last query: those orders leave the outbox, each exchange notes it.
    async fn success(&self) -> Response {
        let (flow, hash) = (self.flow.name.clone(), self.cookie_hash.clone());
        let mut session = self.session.clone();
        let by = format!("1C (user {})", self.trigger.user);
        let done = self
            .state
            .engine
            .store
            .write(move |txn| {
                let n = store::delivered(txn, &flow, &session.exported, &by, now_ms())?;
                session.exported.clear();
                store::put_session(txn, &hash, &session.encode())?;
                Ok(n)
            })
            .await;
        match done {
            Ok(n) => reply(
                StatusCode::OK,
                "success",
                &[&format!("{n} orders confirmed")],
            ),
            Err(e) => failure(&format!("the journal cannot commit now: {e}")),
        }
    }

    async fn complete(&self) -> Response {
        let _ = std::fs::remove_dir_all(self.dir());
        reply(StatusCode::OK, "success", &["done"])
    }
}

fn summary(file: &str, s: &ImportState) -> String {
    format!(
        "{file}: {} items ({} new, {} duplicates, {} rejected)",
        s.cursor.items, s.new, s.duplicates, s.rejected
    )
}

/// Bytes of all the files in a session's work dir (missing dir: none).
fn held_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0u64;
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            match entry.metadata() {
                Ok(m) if m.is_dir() => todo.push(entry.path()),
                Ok(m) => total = total.saturating_add(m.len()),
                Err(_) => {}
            }
        }
    }
    total
}

/// Appends a part to the file and syncs it: `success` means the bytes are on disk.
fn append(path: &std::path::Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write;
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    f.write_all(bytes)?;
    f.sync_data()
}
