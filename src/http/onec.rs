//! `/1c/exchange/{flow}`: the CommerceML 2 exchange with 1C as the client. 1C drives it
//! with `?type=catalog|sale&mode=checkauth|init|file|import|query|success`; every answer
//! is plain text lines in windows-1251 (`success` / `progress` / `failure` + message),
//! except `mode=query`, which answers a CommerceML document. Each item of an uploaded
//! file becomes an exchange through the engine's normal intake (dedup, journal, queue), in
//! bounded batches: `mode=import` answers `progress` until the whole file is committed.
//! With `zip = true` the first `mode=import` unpacks the uploaded archive first; after a
//! full catalog, `mode=deactivate` names the products it lost (`commerceml::snapshot`).

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
use crate::connectors::onec::commerceml::snapshot::{self, FullCatalogs};
use crate::connectors::onec::commerceml::unzip::{self, UnzipState};
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
/// `mode=deactivate` answers `progress` after this long (the next call goes on).
const DEACTIVATE_TIME: Duration = Duration::from_secs(30);
/// Ids of the flow's catalog one deactivate step looks at.
const DEACTIVATE_SCAN: usize = 5000;
/// The import-state name of an archive: a colon is never in a file name (`safe_name`).
const ZIP_STATE: &str = "zip:";

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
    let t = t.clone();
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
        "deactivate" => ctx.deactivate(get("timestamp").as_deref()).await,
        "complete" => ctx.complete().await,
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
                    .map(|s| (s.flow, s.id))
            })?;
            store::put_session(txn, &hash, &bytes)?;
            Ok(gone)
        })
        .await;
    let swept = match swept {
        Ok(gone) => gone,
        Err(e) => return failure(&format!("the journal cannot commit now: {e}")),
    };
    let data = data_dir(state);
    for (flow, id) in swept {
        let _ = std::fs::remove_dir_all(work_dir(&data, &flow, &id));
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
        let mut session = self.session.clone();
        session.client_version = version;
        // zip=no: 1C then sends the XML files themselves; zip=yes: one archive, unpacked at
        // the first mode=import (docs/connectors/1c.md). An older module's order file is
        // read at upload, where no archive could be unpacked.
        let zip = self.trigger.zip && !session.reads_at_upload(self.trigger.exchange);
        let versioned = session.client_version.is_some();
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
        let limit = format!("file_limit={}", self.trigger.file_limit);
        let zip_line = if zip { "zip=yes" } else { "zip=no" };
        let mut lines = vec![zip_line.to_owned(), limit];
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
        let dir = self.dir();
        let Ok(held) = tokio::task::spawn_blocking(move || held_bytes(&dir)).await else {
            return failure("cannot measure this session's uploads; send the part again");
        };
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
        let archive = format!("{ZIP_STATE}{file}");
        let (saved, unpacked) = {
            let read = self.state.engine.store.read()?;
            let saved = store::import_state(&read, &self.session.id, &file)?;
            let unpacked = store::import_state(&read, &self.session.id, &archive)?.is_some();
            (decode_import(saved), unpacked)
        };
        if !unpacked && !saved.cursor.done && saved.error.is_none() {
            return Ok(());
        }
        let _ = std::fs::remove_file(path);
        let id = self.session.id.clone();
        self.state
            .engine
            .store
            .write(move |txn| {
                store::remove_import_state(txn, &id, &archive)?;
                store::remove_import_state(txn, &id, &file)
            })
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
        let rel = match safe_name(name) {
            Ok(rel) => rel,
            Err(e) => return failure(&e),
        };
        if self.trigger.zip
            && let Some(answer) = self.unpack().await
        {
            return answer;
        }
        self.import_step(&rel).await.response()
    }

    /// zip=yes: the next step of unpacking an uploaded archive, while one is not unpacked
    /// (`None`: nothing to unpack). Nothing of the session is imported before every archive
    /// is unpacked whole, so a refused archive leaves nothing half-imported.
    async fn unpack(&self) -> Option<Response> {
        let dir = self.dir();
        let listed = dir.clone();
        let archives = tokio::task::spawn_blocking(move || archives_in(&listed))
            .await
            .unwrap_or_default();
        for name in archives {
            let key = format!("{ZIP_STATE}{name}");
            let raw = match self.raw_state(&key) {
                Ok(raw) => raw,
                Err(e) => return Some(failure(&format!("cannot read the import state: {e}"))),
            };
            let before = raw
                .as_deref()
                .and_then(UnzipState::decode)
                .unwrap_or_default();
            if let Some(e) = &before.error {
                return Some(failure(&format!("{name}: {e}")));
            }
            let path = dir.join(&name);
            if before.done {
                // Unpacked, but the answer was lost before the archive was removed.
                let _ = std::fs::remove_file(&path);
                continue;
            }
            let upload_limit = self.trigger.upload_limit;
            let work = dir.clone();
            let step = tokio::task::spawn_blocking(move || {
                let budget = unzip::Budget {
                    bytes_left: upload_limit.saturating_sub(held_bytes(&work)),
                    upload_limit,
                    deadline: Instant::now() + BATCH_TIME,
                };
                unzip::step(&path, &work, before, budget)
            })
            .await;
            let Ok(after) = step else {
                return Some(failure(
                    "unpacking stopped unexpectedly; call mode=import again",
                ));
            };
            match self.save_unzip(&key, raw, &after).await {
                Ok(true) => {}
                Ok(false) => return Some(Imported::Busy.response()),
                Err(e) => return Some(failure(&format!("the journal cannot commit now: {e}"))),
            }
            if let Some(e) = &after.error {
                self.journal_unreadable(&name, e, 0).await;
                return Some(failure(&format!("{name}: {e}")));
            }
            let msg = if after.done {
                let _ = std::fs::remove_file(dir.join(&name));
                format!(
                    "{name} unpacked: {} files, {} pictures and other files skipped",
                    after.written.len(),
                    after.skipped
                )
            } else {
                format!(
                    "{name}: unpacking, {} of {} entries",
                    after.next, after.entries
                )
            };
            return Some(reply(StatusCode::OK, "progress", &[&msg]));
        }
        None
    }

    /// Compare-and-set of an archive's state; once it is unpacked, the files it wrote are
    /// new content (an earlier import of the same name starts over).
    async fn save_unzip(
        &self,
        key: &str,
        expected: Option<Vec<u8>>,
        after: &UnzipState,
    ) -> Result<bool, crate::store::StoreError> {
        let (sid, key) = (self.session.id.clone(), key.to_owned());
        let after = after.clone();
        self.state
            .engine
            .store
            .write(move |txn| {
                if store::import_state_in(txn, &sid, &key)? != expected {
                    return Ok(false);
                }
                store::put_import_state(txn, &sid, &key, &after.encode())?;
                if after.done {
                    for name in &after.written {
                        store::remove_import_state(txn, &sid, name)?;
                    }
                }
                Ok(true)
            })
            .await
    }

    fn raw_state(&self, key: &str) -> Result<Option<Vec<u8>>, crate::store::StoreError> {
        let read = self.state.engine.store.read()?;
        store::import_state(&read, &self.session.id, key)
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
        self.raw_state(file).map(decode_import)
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
            let full = full_ids(&batch.cursor.header, &batch.items);
            (batch.cursor, batch.error, payloads, full)
        })
        .await;
        let Ok((cursor, error, payloads, full)) = parsed else {
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
        let accepted = self
            .commit(&file, before, after.clone(), events, full)
            .await;
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
        full: Option<FullIds>,
    ) -> Result<Option<ImportState>, crate::store::StoreError> {
        let (sid, f) = (self.session.id.clone(), file.to_owned());
        let flow = self.flow.name.clone();
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
            if let Some(full) = &full {
                keep_full(txn, &sid2, &flow, full)?;
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

    /// After a full catalog: one `deleted` exchange per product the flow's last full
    /// catalog had and this session's lacks, in bounded steps, each committed with the
    /// removal of those Ids; at the end the session's Ids are the flow's catalog. Nothing
    /// when the session imported only changes, or a file of it is unfinished or broken.
    async fn deactivate(&self, timestamp: Option<&str>) -> Response {
        let given = timestamp.and_then(|t| t.trim().parse::<u64>().ok());
        if given.unwrap_or(0) == 0 {
            return failure("mode=deactivate needs timestamp= (the one checkauth answered)");
        }
        if let Err(why) = self.every_file_imported().await {
            return failure(&format!("{why}: nothing is deactivated"));
        }
        let mut cats = match self.session_catalogs() {
            Ok(Some(c)) if !c.catalogs.is_empty() => c,
            Ok(_) => {
                return reply(
                    StatusCode::OK,
                    "success",
                    &[
                        "no full catalog was imported in this session (only changes): nothing is deactivated",
                    ],
                );
            }
            Err(e) => return failure(&format!("cannot read the import state: {e}")),
        };
        let deadline = Instant::now() + DEACTIVATE_TIME;
        while let Some(at) = cats.catalogs.iter().position(|c| !c.done) {
            if Instant::now() >= deadline {
                let n: u64 = cats.catalogs.iter().map(|c| c.deactivated).sum();
                let msg = format!("{n} products absent from the full catalog so far");
                return reply(StatusCode::OK, "progress", &[&msg]);
            }
            match self.deactivate_step(&cats, at).await {
                Ok(Some(next)) => cats = next,
                // Another request moved on: read where it is.
                Ok(None) => match self.session_catalogs() {
                    Ok(Some(c)) => cats = c,
                    Ok(None) => return failure("the session was started over (mode=init)"),
                    Err(e) => return failure(&format!("cannot read the import state: {e}")),
                },
                Err(e) => return failure(&format!("the journal cannot commit now: {e}")),
            }
        }
        let n: u64 = cats.catalogs.iter().map(|c| c.deactivated).sum();
        let msg = format!(
            "{n} products absent from the full catalog: each is an exchange with deleted: true"
        );
        reply(StatusCode::OK, "success", &[&msg])
    }

    fn session_catalogs(&self) -> Result<Option<FullCatalogs>, crate::store::StoreError> {
        let read = self.state.engine.store.read()?;
        let raw = store::full_catalogs(&read, &self.session.id)?;
        Ok(raw.and_then(|r| FullCatalogs::decode(&r)))
    }

    /// A catalog is whole only when every file (and archive) of the session was read to
    /// its end without an error: otherwise products would be missing that 1C still has.
    /// That includes an XML file or archive 1C uploaded and never asked to import.
    async fn every_file_imported(&self) -> Result<(), String> {
        let all = {
            let read = self
                .state
                .engine
                .store
                .read()
                .map_err(|e| format!("cannot read the import state: {e}"))?;
            store::imports_of(&read, &self.session.id)
                .map_err(|e| format!("cannot read the import state: {e}"))?
        };
        let mut whole = std::collections::HashSet::new();
        for (file, raw) in all {
            let done = match file.strip_prefix(ZIP_STATE) {
                Some(_) => UnzipState::decode(&raw).is_some_and(|s| s.done && s.error.is_none()),
                None => {
                    ImportState::decode(&raw).is_some_and(|s| s.cursor.done && s.error.is_none())
                }
            };
            if !done {
                return Err(format!("{file} was not imported completely"));
            }
            whole.insert(file);
        }
        let dir = self.dir();
        let held = tokio::task::spawn_blocking(move || importable_files(&dir))
            .await
            .unwrap_or_default();
        for (name, archive) in held {
            let state = if archive {
                format!("{ZIP_STATE}{name}")
            } else {
                name.clone()
            };
            if !whole.contains(&state) {
                return Err(format!("{name} was uploaded but not imported"));
            }
        }
        Ok(())
    }

    /// One bounded step of catalog `at`: `None` when another request changed the state.
    async fn deactivate_step(
        &self,
        cats: &FullCatalogs,
        at: usize,
    ) -> Result<Option<FullCatalogs>, crate::store::StoreError> {
        let sid = self.session.id.clone();
        let cat = &cats.catalogs[at];
        let kept = store::flow_scope(&self.flow.name, &cat.id);
        let current = store::session_scope(&sid, &cat.id);
        let absent = {
            let read = self.state.engine.store.read()?;
            store::absent_ids(
                &read,
                &kept,
                &current,
                cat.cursor.as_deref(),
                DEACTIVATE_SCAN,
                self.trigger.import_batch,
            )?
        };
        let events: Vec<Event> = absent
            .ids
            .iter()
            .map(|id| Event {
                source: "1c exchange (deactivate)",
                payload: snapshot::absent_payload(id, cat, &sid),
                request_id: None,
            })
            .collect();
        let mut after = cats.clone();
        let c = &mut after.catalogs[at];
        c.cursor = absent.cursor;
        c.deactivated += absent.ids.len() as u64;
        c.done = absent.end;
        let expected = cats.encode();
        let sid2 = sid.clone();
        let guard = move |txn: &crate::store::Tx<'_>| {
            Ok(store::full_catalogs_in(txn, &sid)?.as_deref() == Some(expected.as_slice()))
        };
        let saved = after.clone();
        let ids = absent.ids;
        let end = absent.end;
        let after_fn = move |txn: &crate::store::Tx<'_>, _: &[Status]| {
            store::remove_ids(txn, &kept, ids.iter().map(String::as_str))?;
            if end {
                store::adopt_ids(txn, &current, &kept)?;
            }
            store::put_full_catalogs(txn, &sid2, &saved.encode())
        };
        let done = self
            .state
            .engine
            .accept_batch(&self.flow, &events, guard, after_fn)
            .await?;
        Ok(done.map(|_| after))
    }

    async fn complete(&self) -> Response {
        let _ = std::fs::remove_dir_all(self.dir());
        reply(StatusCode::OK, "success", &["done"])
    }
}

/// The product Ids of a batch for `mode=deactivate`: those of a full catalog
/// (`СодержитТолькоИзменения` false or absent), and those marked deleted in any file.
struct FullIds {
    catalog: String,
    formed_at: Option<String>,
    /// Present products of a full catalog (empty for a change-only file).
    ids: Vec<String>,
    /// Marked deleted: their own exchange says so, so they leave the flow's catalog (else
    /// a later full catalog without them deactivated them a second time).
    deleted: Vec<String>,
}

fn full_ids(header: &xml::Header, items: &[(xml::Kind, xml::Node)]) -> Option<FullIds> {
    let full = header.only_changes != Some(true);
    let (mut ids, mut deleted) = (Vec::new(), Vec::new());
    for (kind, node) in items.iter().filter(|(k, _)| *k == xml::Kind::Product) {
        if let Some(id) = node.text_of("Ид") {
            match map::deleted(*kind, node) {
                true => deleted.push(id.to_owned()),
                false if full => ids.push(id.to_owned()),
                false => {}
            }
        }
    }
    (!ids.is_empty() || !deleted.is_empty()).then(|| FullIds {
        catalog: header.catalog_id.clone().unwrap_or_default(),
        formed_at: header.formed_at.clone(),
        ids,
        deleted,
    })
}

/// Keeps a batch's full-catalog Ids with the session; a catalog whose deactivate already
/// ran in this session adds them to the flow's catalog straight away. Products marked
/// deleted leave both.
fn keep_full(
    txn: &crate::store::Tx<'_>,
    session: &str,
    flow: &str,
    full: &FullIds,
) -> Result<(), crate::store::StoreError> {
    let gone = || full.deleted.iter().map(String::as_str);
    store::remove_ids(txn, &store::flow_scope(flow, &full.catalog), gone())?;
    store::remove_ids(txn, &store::session_scope(session, &full.catalog), gone())?;
    if full.ids.is_empty() {
        return Ok(());
    }
    let mut cats = store::full_catalogs_in(txn, session)?
        .and_then(|raw| FullCatalogs::decode(&raw))
        .unwrap_or_default();
    let cat = cats.catalog(&full.catalog, full.formed_at.as_deref());
    let scope = if cat.done {
        store::flow_scope(flow, &full.catalog)
    } else {
        store::session_scope(session, &full.catalog)
    };
    cat.items += store::keep_ids(txn, &scope, full.ids.iter().map(String::as_str))?;
    store::put_full_catalogs(txn, session, &cats.encode())
}

/// A file's import state; none yet (or unreadable) is the start.
fn decode_import(raw: Option<Vec<u8>>) -> ImportState {
    raw.and_then(|r| ImportState::decode(&r))
        .unwrap_or_default()
}

fn summary(file: &str, s: &ImportState) -> String {
    format!(
        "{file}: {} items ({} new, {} duplicates, {} rejected)",
        s.cursor.items, s.new, s.duplicates, s.rejected
    )
}

/// One file under a session's work dir.
struct WorkFile {
    /// Relative name, with `/`.
    rel: String,
    len: u64,
    /// Directly in the work dir (where 1C's archives are uploaded), not unpacked below.
    top_level: bool,
    path: PathBuf,
}

/// Every file under a session's work dir (missing dir: none). It reads the disk: call it
/// inside `spawn_blocking`. Names are UTF-8 (`safe_name` made every one of them).
fn work_files(dir: &std::path::Path) -> Vec<WorkFile> {
    let mut out = Vec::new();
    let mut todo = vec![(dir.to_path_buf(), String::new())];
    while let Some((d, prefix)) = todo.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for entry in entries.flatten() {
            let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
                continue;
            };
            let rel = format!("{prefix}{name}");
            match entry.file_type() {
                Ok(t) if t.is_dir() => todo.push((entry.path(), format!("{rel}/"))),
                Ok(t) if t.is_file() => out.push(WorkFile {
                    rel,
                    len: entry.metadata().map_or(0, |m| m.len()),
                    top_level: prefix.is_empty(),
                    path: entry.path(),
                }),
                _ => {}
            }
        }
    }
    out
}

/// The files an import reads (and whether each is an archive): XML files and, at the
/// top, zip archives; pictures are not.
fn importable_files(dir: &std::path::Path) -> Vec<(String, bool)> {
    work_files(dir)
        .into_iter()
        .filter_map(|f| {
            if unzip::wanted(&f.rel) {
                Some((f.rel, false))
            } else if f.top_level && unzip::is_archive(&f.path) {
                Some((f.rel, true))
            } else {
                None
            }
        })
        .collect()
}

/// Top-level files of the work dir that are zip archives (XML and pictures never are).
fn archives_in(dir: &std::path::Path) -> Vec<String> {
    let mut out: Vec<String> = work_files(dir)
        .into_iter()
        .filter(|f| f.top_level && unzip::is_archive(&f.path))
        .map(|f| f.rel)
        .collect();
    out.sort();
    out
}

/// Bytes of all the files in a session's work dir.
fn held_bytes(dir: &std::path::Path) -> u64 {
    work_files(dir)
        .iter()
        .fold(0u64, |total, f| total.saturating_add(f.len))
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
