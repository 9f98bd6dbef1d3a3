//! Crash test on the real binary (SPEC §3.1–3.3): `obmen serve` runs as a child process and
//! is killed with SIGKILL at random moments while webhooks arrive and exchanges are being
//! delivered to a slow fake target, then restarted on the same data dir. Afterwards every
//! acknowledged webhook must have ended `succeeded`, and the target's ledger must show each
//! record created exactly once and each write-back applied exactly once.
//!
//! The flow: webhook → `upsert` of a lead (ID map, else search by `ext`, else create) →
//! `call` of a write-back that the fake applies once per `Idempotency-Key`. The fake applies
//! a mutation as soon as the request arrives and only then sleeps, so a kill while the
//! answer is on its way leaves obmen not knowing the outcome — the case the guards exist for.
//!
//! `OBMEN_CRASH_SEED=<n>` replays the kill schedule of a failed run.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Path as UrlPath, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};

const KEYS: usize = 2_000;
const SENDERS: usize = 32;
const FLOW: &str = "crash";
const ADMIN_TOKEN: &str = "crash-admin-token-0001";
const HOOK_TOKEN: &str = "crash-hook-token-0001";
const PENDING: [&str; 4] = ["received", "queued", "running", "retrying"];

// ---------------------------------------------------------------------------------------
// The fake target: a CRM with leads and a write-back endpoint, keeping a ledger.

#[derive(Default)]
struct Ledger {
    next_id: u64,
    /// lead id -> ext
    leads: HashMap<String, String>,
    /// ext -> the first lead created for it (what a search finds)
    by_ext: HashMap<String, String>,
    created: HashMap<String, u32>,
    updated: HashMap<String, u32>,
    applied: HashMap<String, u32>,
    applied_total: usize,
    /// Requests answered from the idempotency store instead of applied again.
    replayed: usize,
    /// Idempotency-Key -> the first answer.
    answers: HashMap<String, Value>,
    /// Anything the fake did not expect (bad bodies, missing headers, wrong ids).
    problems: Vec<String>,
}

type Shared = Arc<Mutex<Ledger>>;

fn ledger(shared: &Shared) -> std::sync::MutexGuard<'_, Ledger> {
    shared.lock().expect("the ledger lock is poisoned")
}

/// 5–20 ms per request: slow enough that kills land while calls are in flight.
async fn slow() {
    let ms = rand::rng().random_range(5..=20);
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

fn refuse(shared: &Shared, problem: String) -> (StatusCode, Json<Value>) {
    let answer = json!({"error": problem});
    ledger(shared).problems.push(problem);
    (StatusCode::BAD_REQUEST, Json(answer))
}

async fn find_leads(
    State(s): State<Shared>,
    Query(q): Query<HashMap<String, String>>,
) -> Json<Value> {
    slow().await;
    let l = ledger(&s);
    let items: Vec<Value> = q
        .get("ext")
        .and_then(|ext| l.by_ext.get(ext).map(|id| json!({"id": id, "ext": ext})))
        .into_iter()
        .collect();
    Json(json!({"items": items}))
}

async fn create_lead(
    State(s): State<Shared>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let Some(ext) = body.get("ext").and_then(Value::as_str).map(str::to_owned) else {
        return refuse(&s, format!("create without ext: {body}"));
    };
    let answer = {
        let mut l = ledger(&s);
        l.next_id += 1;
        let id = format!("L{}", l.next_id);
        *l.created.entry(ext.clone()).or_default() += 1;
        l.leads.insert(id.clone(), ext.clone());
        l.by_ext.entry(ext.clone()).or_insert_with(|| id.clone());
        json!({"id": id, "ext": ext})
    };
    slow().await;
    (StatusCode::CREATED, Json(answer))
}

async fn update_lead(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let ext = body
        .get("ext")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    {
        let mut l = ledger(&s);
        if l.leads.get(&id) != Some(&ext) {
            drop(l);
            return refuse(
                &s,
                format!("update of lead {id} with ext `{ext}` that is not its own"),
            );
        }
        *l.updated.entry(ext).or_default() += 1;
    }
    slow().await;
    (StatusCode::OK, Json(json!({"id": id})))
}

async fn write_back(
    State(s): State<Shared>,
    UrlPath(id): UrlPath<String>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let Some(key) = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
    else {
        return refuse(&s, format!("write-back of {id} without an Idempotency-Key"));
    };
    let ext = body
        .get("ext")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_owned();
    let answer = {
        let mut l = ledger(&s);
        if let Some(first) = l.answers.get(&key).cloned() {
            l.replayed += 1;
            first
        } else if l.leads.get(&id) != Some(&ext) {
            drop(l);
            return refuse(
                &s,
                format!("write-back to lead {id} for ext `{ext}` that is not its own"),
            );
        } else {
            let n = {
                let count = l.applied.entry(ext.clone()).or_default();
                *count += 1;
                *count
            };
            l.applied_total += 1;
            let answer = json!({"ok": true, "id": id, "applied": n});
            l.answers.insert(key, answer.clone());
            answer
        }
    };
    slow().await;
    (StatusCode::OK, Json(answer))
}

async fn start_fake() -> (String, Shared) {
    let shared = Shared::default();
    let app = Router::new()
        .route("/leads", get(find_leads).post(create_lead))
        .route("/leads/{id}", patch(update_lead))
        .route("/writeback/{id}", post(write_back))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the fake target");
    let addr = listener.local_addr().expect("fake address");
    tokio::spawn(async move {
        axum::serve(listener, app)
            .await
            .expect("the fake target stopped")
    });
    (format!("http://{addr}"), shared)
}

// ---------------------------------------------------------------------------------------
// The obmen child process.

fn config(port: u16, data_dir: &Path, fake: &str) -> String {
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"
workers = 32
shutdown_grace = "1s"

[auth]
tokens = [{{ name = "crash-test", role = "admin", token = "{ADMIN_TOKEN}" }}]

[systems.source]
kind = "http"
base_url = "http://127.0.0.1:9"
inbound = {{ token_header = "X-Token", token = "{HOOK_TOKEN}" }}

[systems.crm]
kind = "http"
base_url = "{fake}"
timeout = "10s"
concurrency = 32

[systems.crm.ops.writeback]
method = "POST"
path = "/writeback/{{id}}"

[systems.crm.entities.lead]
path = "/leads"
results = "items"

[[flows]]
name = "{FLOW}"
trigger = {{ webhook = {{ system = "source" }} }}
external_id = ".ext"
retry = {{ max_attempts = 50, initial = "100ms", max = "2s" }}
steps = [
  {{ upsert = "crm.lead", match = ["ext"], as = "lead", args = '{{ext: .trigger.ext, name: .trigger.name}}' }},
  {{ call = "crm.writeback", args = '{{id: .lead.id, ext: .trigger.ext}}' }},
]
"#,
        data = data_dir.display().to_string().replace('\\', "\\\\"),
    )
}

struct Obmen {
    config: PathBuf,
    logs: PathBuf,
    base: String,
    child: Option<Child>,
    starts: usize,
}

impl Obmen {
    fn start(&mut self) {
        self.starts += 1;
        let log_path = self.logs.join(format!("serve-{}.log", self.starts));
        let log = File::create(&log_path).expect("create the child's log file");
        let child = Command::new(env!("CARGO_BIN_EXE_obmen"))
            .arg("serve")
            .arg("-c")
            .arg(&self.config)
            .env("OBMEN_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start obmen serve");
        self.child = Some(child);
    }

    /// Waits until `/readyz` answers 200; fails with the child's log if it exits or hangs.
    async fn ready(&mut self, http: &reqwest::Client) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(Ok(Some(status))) = self.child.as_mut().map(Child::try_wait) {
                return Err(format!(
                    "obmen exited during start ({status}):\n{}",
                    self.log_tail()
                ));
            }
            let probe = http
                .get(format!("{}/readyz", self.base))
                .timeout(Duration::from_secs(2))
                .send()
                .await;
            if probe.is_ok_and(|r| r.status().is_success()) {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "obmen was not ready within 30 s:\n{}",
                    self.log_tail()
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// SIGKILL (what `Child::kill` sends on Unix) and reap.
    fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn log_tail(&self) -> String {
        let path = self.logs.join(format!("serve-{}.log", self.starts));
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    }

    fn all_logs(&self) -> String {
        (1..=self.starts)
            .map(|n| {
                let text = std::fs::read_to_string(self.logs.join(format!("serve-{n}.log")))
                    .unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                format!(
                    "--- serve-{n}.log (last lines) ---\n{}",
                    lines[lines.len().saturating_sub(15)..].join("\n")
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    }
}

impl Drop for Obmen {
    fn drop(&mut self) {
        self.kill();
    }
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("find a free port");
    l.local_addr().expect("port").port()
}

// ---------------------------------------------------------------------------------------
// The sender: retries each webhook until obmen acknowledges it (the sender's job).

#[derive(Default)]
struct Sent {
    /// key -> the exchange id from the acknowledging answer
    acked: Mutex<BTreeMap<String, u64>>,
    acked_count: AtomicUsize,
    /// Sends that failed (server down, 503) and were retried.
    retried: AtomicUsize,
    /// Answers that are neither 2xx nor "come back later": each is a failure.
    refused: Mutex<Vec<String>>,
}

fn key_of(i: usize) -> String {
    format!("ext-{i:05}")
}

async fn send_all(http: reqwest::Client, url: String, next: Arc<AtomicUsize>, sent: Arc<Sent>) {
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= KEYS {
            return;
        }
        let key = key_of(i);
        let body = json!({"ext": key, "name": format!("Lead {i}")});
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let answer = http
                .post(&url)
                .header("X-Token", HOOK_TOKEN)
                .json(&body)
                .timeout(Duration::from_secs(15))
                .send()
                .await;
            match answer {
                Ok(r) if r.status().is_success() => {
                    let v: Value = r.json().await.unwrap_or(Value::Null);
                    let id = v.get("exchange_id").and_then(Value::as_u64).unwrap_or(0);
                    sent.acked
                        .lock()
                        .expect("acked lock")
                        .insert(key.clone(), id);
                    sent.acked_count.fetch_add(1, Ordering::Relaxed);
                    break;
                }
                Ok(r) if r.status() == StatusCode::SERVICE_UNAVAILABLE => {}
                Ok(r) => {
                    let status = r.status();
                    let text = r.text().await.unwrap_or_default();
                    sent.refused
                        .lock()
                        .expect("refused lock")
                        .push(format!("{key}: {status} {text}"));
                    break;
                }
                // Connection refused or reset: the server is down or was killed mid-request.
                Err(_) => {}
            }
            if Instant::now() > deadline {
                sent.refused
                    .lock()
                    .expect("refused lock")
                    .push(format!("{key}: not acknowledged within 60 s"));
                break;
            }
            sent.retried.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }
}

// ---------------------------------------------------------------------------------------
// Reading obmen's view.

fn metric(text: &str, name_and_labels: &str) -> u64 {
    text.lines()
        .find_map(|l| {
            l.strip_prefix(name_and_labels)
                .and_then(|rest| rest.trim().parse().ok())
        })
        .unwrap_or(0)
}

async fn metrics(http: &reqwest::Client, base: &str) -> Result<String, String> {
    let r = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .timeout(Duration::from_secs(10))
        .send()
        .await
        .map_err(|e| format!("GET /metrics: {e}"))?;
    if !r.status().is_success() {
        return Err(format!("GET /metrics answered {}", r.status()));
    }
    r.text()
        .await
        .map_err(|e| format!("GET /metrics body: {e}"))
}

fn status_count(text: &str, status: &str) -> u64 {
    metric(
        text,
        &format!("obmen_exchanges{{flow=\"{FLOW}\",status=\"{status}\"}}"),
    )
}

/// Every exchange of the flow, through the paged API.
async fn all_exchanges(http: &reqwest::Client, base: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<u64> = None;
    loop {
        let mut url = format!("{base}/api/exchanges?flow={FLOW}&limit=500");
        if let Some(c) = cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = http
            .get(&url)
            .bearer_auth(ADMIN_TOKEN)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .expect("GET /api/exchanges")
            .error_for_status()
            .expect("GET /api/exchanges answered an error")
            .json()
            .await
            .expect("an exchange page is JSON");
        out.extend(page["items"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_u64() {
            Some(c) => cursor = Some(c),
            None => return out,
        }
    }
}

fn listing(wrong: &[String]) -> String {
    let shown: Vec<&str> = wrong.iter().take(25).map(String::as_str).collect();
    let more = wrong.len().saturating_sub(shown.len());
    let tail = if more > 0 {
        format!("\n  … and {more} more")
    } else {
        String::new()
    };
    format!("{} key(s):\n  {}{tail}", wrong.len(), shown.join("\n  "))
}

/// SIGKILL, note the moment, stay down a random while (senders meet a closed port), restart
/// on the same data dir and wait until it is ready.
async fn crash_and_restart(
    obmen: &mut Obmen,
    http: &reqwest::Client,
    rng: &mut StdRng,
    kills: &mut Vec<String>,
    why: String,
    sent: &Sent,
    applied: usize,
) {
    obmen.kill();
    let acked = sent.acked_count.load(Ordering::Relaxed);
    kills.push(format!(
        "kill {}: {why}; {acked} acked, {applied} write-backs applied",
        kills.len() + 1
    ));
    tokio::time::sleep(Duration::from_millis(rng.random_range(0..150))).await;
    obmen.start();
    if let Err(e) = obmen.ready(http).await {
        panic!("restart after kill {} failed: {e}", kills.len());
    }
}

// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_traffic_loses_nothing_and_duplicates_nothing() {
    let started = Instant::now();
    let seed: u64 = std::env::var("OBMEN_CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(rand::random);
    println!("crash test seed: {seed} (set OBMEN_CRASH_SEED={seed} to replay the kill schedule)");
    let mut rng = StdRng::seed_from_u64(seed);

    let tmp = tempfile::tempdir().expect("temp dir");
    let data_dir = tmp.path().join("data");
    let (fake, shared) = start_fake().await;
    let port = free_port();
    let config_path = tmp.path().join("obmen.toml");
    std::fs::write(&config_path, config(port, &data_dir, &fake)).expect("write the config");
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(64)
        .build()
        .expect("http client");

    let mut obmen = Obmen {
        config: config_path,
        logs: tmp.path().to_path_buf(),
        base: base.clone(),
        child: None,
        starts: 0,
    };
    obmen.start();
    if let Err(e) = obmen.ready(&http).await {
        panic!("{e}");
    }

    // Traffic: 32 senders, each key retried until acknowledged.
    let sent = Arc::new(Sent::default());
    let next = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..SENDERS)
        .map(|_| {
            tokio::spawn(send_all(
                http.clone(),
                format!("{base}/hooks/{FLOW}"),
                next.clone(),
                sent.clone(),
            ))
        })
        .collect();

    let mut kills: Vec<String> = Vec::new();
    let applied = || ledger(&shared).applied_total;

    // Kills while webhooks arrive (and delivery runs behind them): at random points of intake.
    let thresholds: Vec<usize> = [(0.05, 0.25), (0.35, 0.6), (0.65, 0.9)]
        .iter()
        .map(|&(lo, hi)| (rng.random_range(lo..hi) * KEYS as f64) as usize)
        .collect();
    for threshold in thresholds {
        let deadline = Instant::now() + Duration::from_secs(60);
        while sent.acked_count.load(Ordering::Relaxed) < threshold {
            assert!(
                Instant::now() < deadline,
                "intake stalled below {threshold} acks\n{}",
                obmen.all_logs()
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..40))).await;
        let why = format!("during intake, after ≥{threshold} acks");
        crash_and_restart(
            &mut obmen,
            &http,
            &mut rng,
            &mut kills,
            why,
            &sent,
            applied(),
        )
        .await;
    }

    for s in senders {
        s.await.expect("a sender task panicked");
    }
    let intake_done = started.elapsed();

    // One more kill while only delivery runs, if delivery is still behind.
    let behind = applied();
    if behind < KEYS {
        let target = behind + ((KEYS - behind) as f64 * rng.random_range(0.1..0.6)) as usize;
        let deadline = Instant::now() + Duration::from_secs(60);
        while applied() < target && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let why = format!("during delivery only, after ≥{target} write-backs");
        crash_and_restart(
            &mut obmen,
            &http,
            &mut rng,
            &mut kills,
            why,
            &sent,
            applied(),
        )
        .await;
    }

    // Wait until nothing is pending.
    let deadline = Instant::now() + Duration::from_secs(60);
    let final_metrics = loop {
        let text = metrics(&http, &base).await.unwrap_or_default();
        let pending: u64 = PENDING.iter().map(|s| status_count(&text, s)).sum();
        if !text.is_empty() && pending == 0 {
            break text;
        }
        if Instant::now() > deadline {
            panic!(
                "exchanges still pending 60 s after intake ended: {}\nkills:\n  {}\n{}",
                PENDING
                    .iter()
                    .map(|s| format!("{s}={}", status_count(&text, s)))
                    .collect::<Vec<_>>()
                    .join(" "),
                kills.join("\n  "),
                obmen.all_logs()
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let delivery_done = started.elapsed();

    // ---- what obmen says
    let refused = sent.refused.lock().expect("refused lock").clone();
    assert!(
        refused.is_empty(),
        "webhooks refused instead of acknowledged: {}",
        listing(&refused)
    );
    let acked = sent.acked.lock().expect("acked lock").clone();
    assert_eq!(
        acked.len(),
        KEYS,
        "every key is acknowledged in the end (the sender retries until it is)"
    );
    assert!(kills.len() >= 3, "at least three kills happened: {kills:?}");

    let exchanges = all_exchanges(&http, &base).await;
    let mut by_key: HashMap<String, Vec<(u64, String)>> = HashMap::new();
    for e in &exchanges {
        let key = e["external_id"].as_str().unwrap_or("<none>").to_owned();
        let id = e["id"].as_u64().unwrap_or(0);
        let status = e["status"].as_str().unwrap_or("<none>").to_owned();
        by_key.entry(key).or_default().push((id, status));
    }
    let mut wrong_status = Vec::new();
    for key in acked.keys() {
        let list = by_key.get(key).cloned().unwrap_or_default();
        let originals: Vec<&(u64, String)> =
            list.iter().filter(|(_, s)| s != "duplicate").collect();
        match originals.as_slice() {
            [(_, s)] if s == "succeeded" => {}
            [] => wrong_status.push(format!(
                "{key}: acknowledged but no exchange in the journal ({list:?})"
            )),
            _ => wrong_status.push(format!("{key}: {list:?}")),
        }
    }
    let unknown: Vec<String> = by_key
        .keys()
        .filter(|k| !acked.contains_key(*k))
        .cloned()
        .collect();
    assert!(
        wrong_status.is_empty(),
        "acknowledged keys that did not end `succeeded` exactly once (id, status): {}\nkills:\n  {}\n{}",
        listing(&wrong_status),
        kills.join("\n  "),
        obmen.all_logs()
    );
    assert!(
        unknown.is_empty(),
        "exchanges for keys never sent: {}",
        listing(&unknown)
    );
    let duplicates = exchanges
        .iter()
        .filter(|e| e["status"] == "duplicate")
        .count();
    assert_eq!(
        status_count(&final_metrics, "succeeded"),
        KEYS as u64,
        "the status counters agree with the journal after the crashes:\n{final_metrics}"
    );
    assert_eq!(
        status_count(&final_metrics, "duplicate"),
        duplicates as u64,
        "duplicate counter"
    );

    // ---- what the target saw
    let l = ledger(&shared);
    assert!(
        l.problems.is_empty(),
        "the fake target saw unexpected requests: {}",
        listing(&l.problems)
    );
    let wrong_creates = not_exactly_once(acked.keys(), &l.created, "created");
    assert!(
        wrong_creates.is_empty(),
        "each key must be created exactly once at the target: {}\nkills:\n  {}",
        listing(&wrong_creates),
        kills.join("\n  ")
    );
    let wrong_applies = not_exactly_once(acked.keys(), &l.applied, "write-back applied");
    assert!(
        wrong_applies.is_empty(),
        "each write-back must be applied exactly once: {}\nkills:\n  {}",
        listing(&wrong_applies),
        kills.join("\n  ")
    );
    let strays: Vec<String> = l
        .created
        .keys()
        .filter(|k| !acked.contains_key(*k))
        .cloned()
        .collect();
    assert!(
        strays.is_empty(),
        "records created for keys never acknowledged: {}",
        listing(&strays)
    );

    println!(
        "crash test: {KEYS} webhooks, {} sends retried, {} duplicates journaled, {} kills:\n  {}\n\
         guards used: {} upserts found the record and updated it, {} write-backs answered from the idempotency store\n\
         intake done at {:.1} s, all final at {:.1} s, total {:.1} s",
        sent.retried.load(Ordering::Relaxed),
        duplicates,
        kills.len(),
        kills.join("\n  "),
        l.updated.values().sum::<u32>(),
        l.replayed,
        intake_done.as_secs_f64(),
        delivery_done.as_secs_f64(),
        started.elapsed().as_secs_f64(),
    );
}

/// The keys whose count at the fake is not exactly one, described for a failure message.
fn not_exactly_once<'a, K, V>(
    keys: impl Iterator<Item = &'a K>,
    counts: &HashMap<K, V>,
    what: &str,
) -> Vec<String>
where
    K: std::hash::Hash + Eq + std::fmt::Display + 'a,
    V: Copy + Into<u64>,
{
    keys.filter_map(|k| {
        let n: u64 = counts.get(k).copied().map_or(0, Into::into);
        (n != 1).then(|| format!("{k}: {what} {n} times"))
    })
    .collect()
}
