//! Status page benchmark (a benchmark, not a test): seeds a data dir with N exchanges over
//! the last 7 days (mostly succeeded, some failed with a handful of error messages, some
//! rejected, duplicate, retrying and queued), starts obmen in-process on it and times real
//! HTTP GETs of the status pages with a Bearer token:
//!
//! - `/` (overview), `/errors` (error groups),
//! - `/exchanges?flow=orders&status=failed` (a filtered list),
//! - `/exchanges?q=<external id>` (a search),
//! - and, for reference, `/exchanges` (unfiltered) and one failed exchange's detail.
//!
//! It prints p50 / p95 / max per page over `--requests` sequential warm requests, the data
//! file size and the process RSS.
//!
//! ```text
//! cargo run --release --example pagebench -- --exchanges 1000000 --data-dir /var/tmp/obmen-pagebench
//! ```
//!
//! With `--data-dir`, a data dir seeded earlier with the same `--exchanges` is reused (the
//! seed is recorded in `pagebench.seed` beside the data file); without it a temp dir is
//! seeded and removed at the end. `--unique-errors N` adds about N failures whose messages
//! normalisation cannot merge (one error group each): the error dashboard's worst case.
//! Results and how to read them: docs/PERFORMANCE.md, "Status page at 1,000,000 exchanges".

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::Parser;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio_util::sync::CancellationToken;

use obmen::mask::Masked;
use obmen::model::{ErrorClass, Millis, Status, now_ms};
use obmen::store::ops::{self, NewExchange, Outcome};
use obmen::store::records::{AttemptRecord, CallRecord, ErrorSummary, WorkState};
use obmen::store::{MasterKey, Store, StoreError, Tx};

mod bench;
use bench::{mb, ms, percentile, proc_status_kb};

const ADMIN_TOKEN: &str = "pagebench-admin-token";
const VIEWER_TOKEN: &str = "pagebench-viewer-token";
const SEED_FILE: &str = "pagebench.seed";
const KEY_FILE: &str = "pagebench.key";
const DAY_MS: u64 = 86_400_000;
const HOUR_MS: u64 = 3_600_000;
const BATCH: usize = 1000;

/// A batch being written: (exchange id, item index, failed) per item.
type Batch = tokio::task::JoinHandle<Result<Vec<(u64, u64, bool)>, StoreError>>;

/// (name, share of the traffic, target system in its messages).
const FLOWS: [(&str, f64, &str); 4] = [
    ("orders", 0.50, "crm"),
    ("leads", 0.30, "crm"),
    ("payments", 0.15, "bank"),
    ("stock-sync", 0.05, "erp"),
];

/// Why a delivery failed for good: (class, HTTP status, message template). `{n}` becomes a
/// number, `{sec}` seconds, `{hex}` an id, `{sys}` the target: normalisation strips the
/// first three, so these make one group per (flow, message).
const FAILURES: [(ErrorClass, Option<u16>, &str); 7] = [
    (
        ErrorClass::Transient,
        Some(502),
        "HTTP 502 from {sys}: upstream timed out after 30000 ms",
    ),
    (
        ErrorClass::Permanent,
        Some(404),
        "HTTP 404: order {n} not found",
    ),
    (
        ErrorClass::Auth,
        Some(401),
        "HTTP 401: access token expired",
    ),
    (
        ErrorClass::Permanent,
        Some(422),
        "HTTP 422: lead {hex} already exists",
    ),
    (
        ErrorClass::RateLimited,
        Some(429),
        "HTTP 429: too many requests, retry after {sec} s",
    ),
    (
        ErrorClass::Transient,
        None,
        "connection refused (os error 111)",
    ),
    // Only with --unique-errors: a name normalisation keeps, so one group per exchange.
    (
        ErrorClass::Permanent,
        Some(409),
        "HTTP 409: contact {name} already exists",
    ),
];

/// The failure of `--unique-errors`; the usual mix draws from the ones before it.
const UNIQUE: usize = FAILURES.len() - 1;

/// Why intake refused the input (class input, no attempt).
const REJECTIONS: [&str; 2] = [
    "schema: /amount: \"{n}x\" is not a number",
    "key expression returned null at .order.id",
];

#[derive(Parser, Debug)]
#[command(about = "Seeds N exchanges and times the status pages over HTTP")]
struct Args {
    /// Exchanges in the store.
    #[arg(long, default_value_t = 1_000_000)]
    exchanges: u64,
    /// Sequential warm requests per page.
    #[arg(long, default_value_t = 200)]
    requests: usize,
    /// Data directory; reused when it already holds this many seeded exchanges. Default: a
    /// temp dir, removed at the end.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// About this many failed exchanges get a message of their own (a name the
    /// normalisation keeps): one error group each, the error dashboard's worst case.
    #[arg(long, default_value_t = 0)]
    unique_errors: u64,
    /// Send the viewer token instead of the admin one.
    #[arg(long)]
    viewer: bool,
    /// Seed only; do not start the server.
    #[arg(long)]
    seed_only: bool,
    /// Save each page's HTML (the first answer) in this directory, to check what was timed.
    #[arg(long)]
    dump: Option<PathBuf>,
}

/// What the benchmark needs to know about a seeded data dir.
#[derive(Debug)]
struct Seed {
    exchanges: u64,
    unique_errors: u64,
    seeded_at: Millis,
    /// An external id to search for.
    q: String,
    /// A failed exchange for the detail page.
    failed_id: u64,
}

impl Seed {
    fn load(dir: &Path) -> Option<Seed> {
        let text = std::fs::read_to_string(dir.join(SEED_FILE)).ok()?;
        let map: HashMap<&str, &str> = text.lines().filter_map(|l| l.split_once('=')).collect();
        Some(Seed {
            exchanges: map.get("exchanges")?.parse().ok()?,
            unique_errors: map.get("unique_errors")?.parse().ok()?,
            seeded_at: map.get("seeded_at")?.parse().ok()?,
            q: (*map.get("q")?).to_owned(),
            failed_id: map.get("failed_id")?.parse().ok()?,
        })
    }

    fn save(&self, dir: &Path) -> std::io::Result<()> {
        let text = format!(
            "exchanges={}\nunique_errors={}\nseeded_at={}\nq={}\nfailed_id={}\n",
            self.exchanges, self.unique_errors, self.seeded_at, self.q, self.failed_id
        );
        std::fs::write(dir.join(SEED_FILE), text)
    }
}

#[derive(Clone, Copy, Debug)]
enum Kind {
    Succeeded,
    /// Index into `FAILURES`, and how many attempts it took.
    Failed(usize, u32),
    /// Index into `REJECTIONS`.
    Rejected(usize),
    Duplicate,
    Retrying,
    Queued,
}

/// One exchange to write.
struct Item {
    index: u64,
    flow: usize,
    at: Millis,
    kind: Kind,
    key: String,
    /// A number used in payloads and messages.
    n: u32,
    duration_ms: u64,
}

/// Traffic by time of day: quiet at night, busy 09:00–18:00 (UTC+5, Almaty).
fn weight(t: Millis) -> f64 {
    let hour = ((t / HOUR_MS + 5) % 24) as f64;
    let day = ((hour - 7.0) / 14.0 * std::f64::consts::PI).sin().max(0.0);
    0.15 + 0.85 * day
}

/// Creation times of `n` exchanges over the 7 days before `end`, oldest first.
fn creation_times(rng: &mut StdRng, n: u64, end: Millis) -> Vec<Millis> {
    let start = end - 7 * DAY_MS;
    let mut times = Vec::with_capacity(usize::try_from(n).unwrap_or(0));
    while (times.len() as u64) < n {
        let t = start + rng.random_range(0..7 * DAY_MS);
        if rng.random::<f64>() < weight(t) {
            times.push(t);
        }
    }
    times.sort_unstable();
    times
}

fn pick_flow(rng: &mut StdRng) -> usize {
    let mut x = rng.random::<f64>();
    for (i, (_, share, _)) in FLOWS.iter().enumerate() {
        if x < *share {
            return i;
        }
        x -= share;
    }
    FLOWS.len() - 1
}

fn external_id(index: u64) -> String {
    format!("ext-{index:07}")
}

struct Planner {
    rng: StdRng,
    end: Millis,
    /// The latest delivered key per flow, for duplicates.
    last_key: [Option<String>; FLOWS.len()],
    /// Share of exchanges that fail with a message of their own (`--unique-errors`).
    unique_share: f64,
}

impl Planner {
    fn plan(&mut self, index: u64, at: Millis) -> Item {
        let rng = &mut self.rng;
        let flow = pick_flow(rng);
        let roll = rng.random::<f64>();
        let recent = rng.random::<f64>();
        let age = self.end.saturating_sub(at);
        let mut kind = if age < 10 * 60_000 && recent < 0.30 {
            Kind::Queued
        } else if age < 2 * HOUR_MS && recent < 0.02 {
            Kind::Retrying
        } else if rng.random::<f64>() < self.unique_share {
            Kind::Failed(UNIQUE, 1)
        } else if roll < 0.030 {
            Kind::Failed(rng.random_range(0..UNIQUE), rng.random_range(1..=3))
        } else if roll < 0.045 {
            Kind::Rejected(rng.random_range(0..REJECTIONS.len()))
        } else if roll < 0.085 {
            Kind::Duplicate
        } else {
            Kind::Succeeded
        };
        let key = match (kind, &self.last_key[flow]) {
            (Kind::Duplicate, Some(k)) => k.clone(),
            (Kind::Duplicate, None) => {
                kind = Kind::Succeeded;
                external_id(index)
            }
            _ => external_id(index),
        };
        if !matches!(kind, Kind::Duplicate | Kind::Rejected(_)) {
            self.last_key[flow] = Some(key.clone());
        }
        Item {
            index,
            flow,
            at,
            kind,
            key,
            n: rng.random_range(100..100_000),
            duration_ms: rng.random_range(20..800),
        }
    }
}

fn fill(template: &str, item: &Item) -> String {
    template
        .replace("{n}", &item.n.to_string())
        .replace("{hex}", &format!("a{:x}f{}", item.index * 7919, item.n))
        .replace("{sys}", FLOWS[item.flow].2)
        .replace("{sec}", &(item.n % 120 + 1).to_string())
        .replace("{name}", &name(item.index))
}

/// A made-up surname, letters only (normalisation keeps it), different for every index.
fn name(index: u64) -> String {
    let mut x = index.wrapping_mul(2_654_435_761) % 26u64.pow(7);
    let mut out = String::from("Ahmet");
    for _ in 0..7 {
        out.push(char::from(b'a' + (x % 26) as u8));
        x /= 26;
    }
    out.push_str("ov");
    out
}

fn payload(item: &Item) -> String {
    format!(
        r#"{{"order":{{"id":"{}","status":"paid","amount":{}.50,"currency":"KZT","phone":"+7 701 *** ** {:02}","items":[{{"sku":"SKU-{}","qty":{}}},{{"sku":"SKU-{}","qty":1}}],"note":"delivery after 18:00"}}}}"#,
        item.key,
        item.n,
        item.n % 100,
        item.n % 977,
        item.n % 5 + 1,
        item.n % 313,
    )
}

fn new_exchange(item: &Item) -> NewExchange {
    let (flow, _, _) = FLOWS[item.flow];
    let body = payload(item);
    let rejected = match item.kind {
        Kind::Rejected(r) => Some(ops::input_error(
            Masked::internal(fill(REJECTIONS[r], item)),
            item.at,
        )),
        _ => None,
    };
    NewExchange {
        flow: flow.into(),
        request_id: format!("req-{:08x}", item.index),
        external_id: Some(item.key.clone()),
        key: Some(item.key.clone()),
        raw_key: Some(item.key.clone()),
        raw_external_id: Some(item.key.clone()),
        dedup_scope: flow.into(),
        dedup_window_ms: 30 * DAY_MS,
        dry_run: false,
        source: "webhook".into(),
        payload: Masked::internal(body.clone()),
        work: WorkState {
            trigger: body,
            outputs: Vec::new(),
        },
        steps: vec!["map".into(), "send".into()],
        rejected,
        now: item.at,
    }
}

fn attempt(
    item: &Item,
    number: u32,
    started: Millis,
    failure: Option<usize>,
) -> (AttemptRecord, Millis) {
    let (_, _, system) = FLOWS[item.flow];
    let finished = started + item.duration_ms;
    let (status, error, response) = match failure {
        None => (
            Some(200),
            None,
            Some(Masked::internal(format!(r#"{{"id":"L-{}"}}"#, item.n))),
        ),
        Some(f) => {
            let (class, status, template) = FAILURES[f];
            let message = fill(template, item);
            let summary = ErrorSummary {
                class,
                step: Some("send".into()),
                message: Masked::internal(message.clone()),
                at: finished,
            };
            let response = status.map(|_| Masked::internal(format!(r#"{{"error":"{message}"}}"#)));
            (status, Some(summary), response)
        }
    };
    let call = CallRecord {
        step: "send".into(),
        method: "POST".into(),
        url: Masked::internal(format!("https://{system}.example.kz/api/v2/orders")),
        headers: vec![
            ("content-type".into(), Masked::fixed("application/json")),
            ("authorization".into(), Masked::fixed("***")),
        ],
        body: Some(Masked::internal(payload(item))),
        sent: true,
        status,
        response,
        duration_ms: item.duration_ms,
        error: match (status, &error) {
            (None, Some(e)) => Some(e.message.clone()),
            _ => None,
        },
    };
    let record = AttemptRecord {
        number,
        started_at: started,
        duration_ms: item.duration_ms,
        error,
        calls: vec![call],
    };
    (record, finished)
}

fn bench_error(text: String) -> StoreError {
    StoreError::NotCommitted(text)
}

/// Claims exchange `id` (it must be the only one due at `at`) and records one attempt.
fn run_attempt(
    txn: &Tx<'_>,
    id: u64,
    at: Millis,
    record: AttemptRecord,
    outcome: Outcome,
    finished: Millis,
) -> Result<(), StoreError> {
    let claimed = ops::claim_due(txn, at, 1)?;
    match claimed.first() {
        Some(c) if c.record.id == id => {}
        other => {
            return Err(bench_error(format!(
                "expected to claim {id}, got {:?}",
                other.map(|c| c.record.id)
            )));
        }
    }
    ops::finish_attempt(txn, id, record, outcome, finished)?;
    Ok(())
}

/// Writes one item: intake, then what its delivery did. `park` is a time far ahead, where
/// queued and retrying exchanges wait so that the server started later leaves them alone.
fn write_item(txn: &Tx<'_>, item: &Item, park: Millis) -> Result<u64, StoreError> {
    let created = ops::create_exchange(txn, new_exchange(item))?;
    let id = created.id;
    let expect = match item.kind {
        Kind::Duplicate => Status::Duplicate,
        Kind::Rejected(_) => Status::Rejected,
        _ => Status::Queued,
    };
    if created.status != expect {
        return Err(bench_error(format!(
            "exchange {} was created {:?}, expected {expect:?}",
            item.index, created.status
        )));
    }
    match item.kind {
        Kind::Duplicate | Kind::Rejected(_) => {}
        Kind::Queued => {
            let mut rec = ops::get(txn, id)?.ok_or_else(|| bench_error(format!("no {id}")))?;
            ops::schedule(txn, &mut rec, park)?;
            ops::put(txn, &rec)?;
        }
        Kind::Succeeded => {
            let (rec, done) = attempt(item, 1, item.at, None);
            run_attempt(
                txn,
                id,
                item.at,
                rec,
                Outcome::Done(Status::Succeeded),
                done,
            )?;
        }
        Kind::Retrying => {
            let (rec, done) = attempt(item, 1, item.at, Some(0));
            run_attempt(txn, id, item.at, rec, Outcome::RetryAt(park), done)?;
        }
        Kind::Failed(f, attempts) => {
            let mut at = item.at;
            for number in 1..=attempts {
                let (rec, done) = attempt(item, number, at, Some(f));
                let retry_at = done + 30_000 * u64::from(number);
                let outcome = if number == attempts {
                    Outcome::Stop(Status::Failed)
                } else {
                    Outcome::RetryAt(retry_at)
                };
                run_attempt(txn, id, at, rec, outcome, done)?;
                at = retry_at;
            }
        }
    }
    Ok(id)
}

/// Seeds `dir` with `n` exchanges created over the 7 days before now.
async fn seed(dir: &Path, key: MasterKey, n: u64, unique: u64) -> anyhow::Result<Seed> {
    let store = Store::open(dir, key)?;
    let seeded_at = now_ms();
    let end = seeded_at - 60_000;
    let park = seeded_at + 30 * DAY_MS;
    let mut rng = StdRng::seed_from_u64(0x0b3e);
    let times = creation_times(&mut rng, n, end);
    let mut planner = Planner {
        rng,
        end,
        last_key: Default::default(),
        unique_share: unique as f64 / n as f64,
    };
    let q_index = n / 2;
    let mut failed_id = 0;
    let started = Instant::now();
    let mut pending: Option<Batch> = None;
    let mut planned = 0u64;
    let mut written = 0u64;
    let mut reported = 0u64;
    for chunk in times.chunks(BATCH) {
        let items: Vec<Item> = chunk
            .iter()
            .enumerate()
            .map(|(i, &at)| planner.plan(planned + i as u64, at))
            .collect();
        planned += items.len() as u64;
        // Only one batch in flight, so batches commit in order (ids grow with time); the
        // next one is planned while the writer runs this one.
        if let Some(job) = pending.take() {
            written += collect(job, &mut failed_id, q_index).await?;
        }
        let s = store.clone();
        pending = Some(tokio::spawn(async move {
            s.write(move |txn| {
                items
                    .iter()
                    .map(|item| {
                        let id = write_item(txn, item, park)?;
                        Ok((id, item.index, matches!(item.kind, Kind::Failed(..))))
                    })
                    .collect()
            })
            .await
        }));
        if written >= reported + 50_000 {
            reported = written;
            let secs = started.elapsed().as_secs_f64();
            let rate = written as f64 / secs;
            println!(
                "  seeded {written:>9} / {n}  {rate:>7.0}/s  eta {:.0} s",
                (n - written) as f64 / rate
            );
        }
    }
    if let Some(job) = pending.take() {
        written += collect(job, &mut failed_id, q_index).await?;
    }
    println!(
        "  seeded {written} exchanges in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    store.close();
    drop(store);
    wait_released(&dir.join(obmen::store::DATA_FILE)).await?;
    Ok(Seed {
        exchanges: n,
        unique_errors: unique,
        seeded_at,
        q: external_id(q_index),
        failed_id,
    })
}

/// Awaits one batch; remembers the first failed exchange past the middle (for the detail
/// page) and returns how many were written.
async fn collect(job: Batch, failed_id: &mut u64, middle: u64) -> anyhow::Result<u64> {
    let written = job.await??;
    if *failed_id == 0
        && let Some((id, _, _)) = written
            .iter()
            .find(|(_, index, failed)| *failed && *index >= middle)
    {
        *failed_id = *id;
    }
    Ok(written.len() as u64)
}

/// The writer thread lets go of the file shortly after `close`.
async fn wait_released(file: &Path) -> anyhow::Result<()> {
    for _ in 0..500 {
        match redb::Database::open(file) {
            Ok(db) => {
                drop(db);
                return Ok(());
            }
            Err(redb::DatabaseError::DatabaseAlreadyOpen) => {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
    anyhow::bail!("the data file is still open after 10 s")
}

fn config(port: u16, data_dir: &Path, key: &Path) -> String {
    let mut flows = String::new();
    for (name, _, system) in FLOWS {
        flows.push_str(&format!(
            r#"
[[flows]]
name = "{name}"
trigger = {{ webhook = {{ system = "shop" }} }}
external_id = ".order.id"
key = ".order.id"
retry = {{ max_attempts = 3, initial = "30s", max = "10m" }}
steps = [
  {{ name = "map", map = "{{id: .trigger.order.id, amount: .trigger.order.amount}}" }},
  {{ name = "send", call = "{system}.put", args = ".map" }},
]
"#
        ));
    }
    let mut systems = String::new();
    for system in ["crm", "bank", "erp"] {
        systems.push_str(&format!(
            r#"
[systems.{system}]
kind = "http"
base_url = "http://127.0.0.1:9"

[systems.{system}.ops.put]
method = "POST"
path = "/put"
"#
        ));
    }
    let path = |p: &Path| p.display().to_string().replace('\\', "\\\\");
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"
master_key_file = "{key}"
shutdown_grace = "1s"

[auth]
tokens = [
  {{ name = "admin", role = "admin", token = "{ADMIN_TOKEN}" }},
  {{ name = "viewer", role = "viewer", token = "{VIEWER_TOKEN}" }},
]

[status_page]
language = "en"

[systems.shop]
kind = "http"
base_url = "http://127.0.0.1:9"
inbound = {{ token_header = "X-Token", token = "pagebench-hook" }}
{systems}
{flows}"#,
        data = path(data_dir),
        key = path(key),
    )
}

struct PageResult {
    path: String,
    first: Duration,
    sorted: Vec<Duration>,
    body: Vec<u8>,
}

async fn get(
    http: &reqwest::Client,
    url: &str,
    token: &str,
) -> anyhow::Result<(Duration, Vec<u8>)> {
    let t0 = Instant::now();
    let answer = http.get(url).bearer_auth(token).send().await?;
    let status = answer.status();
    let body = answer.bytes().await?;
    let took = t0.elapsed();
    anyhow::ensure!(
        status.is_success(),
        "GET {url} answered {status}: {}",
        String::from_utf8_lossy(&body)
    );
    Ok((took, body.to_vec()))
}

async fn measure(
    http: &reqwest::Client,
    base: &str,
    path: &str,
    token: &str,
    requests: usize,
) -> anyhow::Result<PageResult> {
    let url = format!("{base}{path}");
    let (first, body) = get(http, &url, token).await?;
    for _ in 0..10 {
        get(http, &url, token).await?;
    }
    let mut times = Vec::with_capacity(requests);
    for _ in 0..requests {
        times.push(get(http, &url, token).await?.0);
    }
    times.sort_unstable();
    Ok(PageResult {
        path: path.to_owned(),
        first,
        sorted: times,
        body,
    })
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let data_dir = match &args.data_dir {
        Some(d) => std::path::absolute(d)?,
        None => tmp.path().join("data"),
    };
    obmen::app::prepare_data_dir(&data_dir)?;
    let data_file = data_dir.join(obmen::store::DATA_FILE);
    let key_file = data_dir.join(KEY_FILE);

    // Named threads, so that a profile (`perf report --sort comm`) tells the client from obmen.
    let client_rt = tokio::runtime::Builder::new_multi_thread()
        .thread_name("bench-client")
        .enable_all()
        .build()?;
    let mut seeded_here = false;
    let seed = match Seed::load(&data_dir) {
        Some(s)
            if s.exchanges == args.exchanges
                && s.unique_errors == args.unique_errors
                && data_file.exists()
                && key_file.exists() =>
        {
            println!(
                "reusing {} ({} exchanges, seeded {:.1} h ago)",
                data_dir.display(),
                s.exchanges,
                (now_ms() - s.seeded_at) as f64 / HOUR_MS as f64
            );
            s
        }
        _ if data_file.exists() => anyhow::bail!(
            "{} holds a data file that this benchmark did not seed with --exchanges {} --unique-errors {}; remove it or pick another --data-dir",
            data_dir.display(),
            args.exchanges,
            args.unique_errors
        ),
        _ => {
            println!(
                "seeding {} exchanges into {}",
                args.exchanges,
                data_dir.display()
            );
            let (key, _) = obmen::store::cipher::load_or_create(&key_file, &data_file)?;
            let s = client_rt.block_on(seed(&data_dir, key, args.exchanges, args.unique_errors))?;
            s.save(&data_dir)?;
            seeded_here = true;
            s
        }
    };
    let file_bytes = std::fs::metadata(&data_file).map(|m| m.len())?;
    if args.seed_only {
        println!("data file {:.1} MB", file_bytes as f64 / 1_048_576.0);
        return Ok(());
    }

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let src = config(port, &data_dir, &key_file);
    let loaded = obmen::config::load_str(&tmp.path().join("pagebench.toml"), &src)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let rss_before_server = proc_status_kb("VmRSS");
    let shutdown = CancellationToken::new();
    let starting = Instant::now();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("obmen-server")
                .enable_all()
                .build()?;
            rt.block_on(async move {
                listener.set_nonblocking(true)?;
                let listener = tokio::net::TcpListener::from_std(listener)?;
                obmen::app::serve(loaded, listener, shutdown).await
            })
        })
    };
    let base = format!("http://127.0.0.1:{port}");
    let token = if args.viewer {
        VIEWER_TOKEN
    } else {
        ADMIN_TOKEN
    };
    let pages = [
        "/".to_owned(),
        "/errors".to_owned(),
        "/exchanges?flow=orders&status=failed".to_owned(),
        "/exchanges?status=failed".to_owned(),
        format!("/exchanges?q={}", seed.q),
        "/exchanges".to_owned(),
        format!("/exchanges/{}", seed.failed_id),
    ];

    let report = client_rt.block_on(async {
        let http = reqwest::Client::builder().build()?;
        let ready_by = Instant::now() + Duration::from_secs(60);
        loop {
            let ok = http
                .get(format!("{base}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status().is_success());
            if ok {
                break;
            }
            anyhow::ensure!(Instant::now() < ready_by, "obmen did not become ready");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let ready = starting.elapsed();
        let idle_rss = proc_status_kb("VmRSS");
        let mut results = Vec::new();
        for page in &pages {
            results.push(measure(&http, &base, page, token, args.requests).await?);
        }
        Ok::<_, anyhow::Error>((ready, idle_rss, results))
    });
    let rss_after = proc_status_kb("VmRSS");
    shutdown.cancel();
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("the obmen thread panicked"))?;
    let (ready, idle_rss, results) = report?;
    served?;
    // `serve` has returned, but its writer thread may still hold the file for a moment;
    // exiting before it lets go leaves the file to be repaired (read whole) at the next open.
    client_rt.block_on(wait_released(&data_file))?;
    if let Some(dir) = &args.dump {
        std::fs::create_dir_all(dir)?;
        for (i, r) in results.iter().enumerate() {
            std::fs::write(dir.join(format!("page{i}.html")), &r.body)?;
        }
    }

    println!(
        "obmen pagebench: {} exchanges ({} with an error of their own), {} sequential warm requests per page, {} token",
        seed.exchanges,
        seed.unique_errors,
        args.requests,
        if args.viewer { "viewer" } else { "admin" }
    );
    println!(
        "  {:<44} {:>9} {:>9} {:>9} {:>9} {:>9}",
        "page", "first", "p50", "p95", "max", "bytes"
    );
    for r in &results {
        println!(
            "  {:<44} {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>6.2} ms {:>9}",
            r.path,
            ms(r.first),
            ms(percentile(&r.sorted, 50.0)),
            ms(percentile(&r.sorted, 95.0)),
            ms(r.sorted.last().copied().unwrap_or_default()),
            r.body.len()
        );
    }
    println!(
        "  data file             {:.1} MB",
        file_bytes as f64 / 1_048_576.0
    );
    println!(
        "  ready after           {:.0} ms (open the file, recover, serve)",
        ms(ready)
    );
    println!(
        "  RSS                   {:.1} MB before the server, {:.1} MB once ready, {:.1} MB after the pages (VmRSS); peak {:.1} MB (VmHWM{})",
        mb(rss_before_server),
        mb(idle_rss),
        mb(rss_after),
        mb(proc_status_kb("VmHWM")),
        if seeded_here {
            ", includes seeding"
        } else {
            ""
        }
    );
    Ok(())
}
