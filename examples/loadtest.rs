//! Load test (a benchmark, not a test): starts obmen in-process on a temp data dir with a
//! loopback sink target, drives webhooks at a fixed concurrency and prints
//!
//! - durable intake acks/s: webhooks answered 200, each only after its fsync'd commit;
//! - end-to-end exchanges/s: until every exchange is `succeeded` (delivered to the sink);
//! - intake latency p50/p99/max;
//! - idle RSS right after start and peak RSS (VmHWM) — of the whole process, so the peak
//!   includes the load generator and the sink.
//!
//! ```text
//! cargo run --release --example loadtest -- --concurrency 64 --requests 50000
//! ```

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use axum::routing::post;
use axum::{Json, Router};
use clap::Parser;
use serde_json::json;
use tokio_util::sync::CancellationToken;

mod bench;
use bench::{cpu_split, mb, ms, percentile, proc_status_kb};

const ADMIN_TOKEN: &str = "loadtest-admin-token";
const HOOK_TOKEN: &str = "loadtest-hook-token";
const FLOW: &str = "load";

#[derive(Parser, Debug)]
#[command(
    about = "Drives webhooks into an in-process obmen and measures durable intake and delivery"
)]
struct Args {
    /// Webhooks in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Webhooks to send in total.
    #[arg(long, default_value_t = 50_000)]
    requests: usize,
    /// obmen's `server.workers` (exchanges delivered at once).
    #[arg(long, default_value_t = 32)]
    workers: usize,
    /// Data directory (default: a fresh temp dir). Put it on the disk you want to measure.
    #[arg(long)]
    data_dir: Option<std::path::PathBuf>,
    /// Measure intake alone: one worker, held by a sink call that never answers, so no
    /// delivery competes for the writer and the CPU. No end-to-end figure.
    #[arg(long)]
    intake_only: bool,
}

fn config(port: u16, data_dir: &Path, sink: &str, args: &Args) -> String {
    let (workers, path) = if args.intake_only {
        (1, "/hold")
    } else {
        (args.workers, "/sink")
    };
    format!(
        r#"
[server]
listen = "127.0.0.1:{port}"
data_dir = "{data}"
workers = {workers}
shutdown_grace = "1s"

[auth]
tokens = [{{ name = "loadtest", role = "admin", token = "{ADMIN_TOKEN}" }}]

[systems.source]
kind = "http"
base_url = "http://127.0.0.1:9"
inbound = {{ token_header = "X-Token", token = "{HOOK_TOKEN}" }}

[systems.sink]
kind = "http"
base_url = "{sink}"
concurrency = {workers}
timeout = "1h"

[systems.sink.ops.put]
method = "POST"
path = "{path}"

[[flows]]
name = "{FLOW}"
trigger = {{ webhook = {{ system = "source" }} }}
external_id = ".id"
retry = {{ max_attempts = 5, initial = "100ms", max = "2s" }}
steps = [{{ call = "sink.put", args = ".trigger" }}]
"#,
        data = data_dir.display().to_string().replace('\\', "\\\\"),
    )
}

async fn start_sink() -> String {
    let app = Router::new()
        .route("/sink", post(|| async { Json(json!({"id": "x"})) }))
        .route(
            "/hold",
            post(std::future::pending::<Json<serde_json::Value>>),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind the sink");
    let addr = listener.local_addr().expect("sink address");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("the sink stopped") });
    format!("http://{addr}")
}

async fn metric(http: &reqwest::Client, base: &str, name: &str) -> Option<u64> {
    let text = http
        .get(format!("{base}/metrics"))
        .bearer_auth(ADMIN_TOKEN)
        .send()
        .await
        .ok()?
        .text()
        .await
        .ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix(name).and_then(|n| n.trim().parse().ok()))
}

async fn succeeded(http: &reqwest::Client, base: &str) -> Option<u64> {
    let name = format!("obmen_exchanges{{flow=\"{FLOW}\",status=\"succeeded\"}}");
    metric(http, base, &name).await
}

/// (durable commits, writes) of the store so far.
async fn commits(http: &reqwest::Client, base: &str) -> (u64, u64) {
    let commits = metric(http, base, "obmen_store_commits_total ").await;
    let writes = metric(http, base, "obmen_store_writes_total ").await;
    (commits.unwrap_or(0), writes.unwrap_or(0))
}

async fn sender(
    http: reqwest::Client,
    url: String,
    next: Arc<AtomicUsize>,
    total: usize,
    run: u64,
) -> (Vec<Duration>, usize) {
    let mut latencies = Vec::with_capacity(total / 32);
    let mut failures = 0;
    loop {
        let i = next.fetch_add(1, Ordering::Relaxed);
        if i >= total {
            return (latencies, failures);
        }
        let body = json!({"id": format!("{run}-{i}"), "name": "load", "amount": i, "note": "a small order"});
        let t0 = Instant::now();
        let answer = http
            .post(&url)
            .header("X-Token", HOOK_TOKEN)
            .json(&body)
            .send()
            .await;
        match answer {
            Ok(r) if r.status().is_success() => {
                let _ = r.bytes().await;
                latencies.push(t0.elapsed());
            }
            Ok(r) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!(
                        "webhook answered {}: {}",
                        r.status(),
                        r.text().await.unwrap_or_default()
                    );
                }
            }
            Err(e) => {
                failures += 1;
                if failures <= 3 {
                    eprintln!("webhook failed: {e}");
                }
            }
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let tmp = tempfile::tempdir()?;
    let data_dir = args
        .data_dir
        .clone()
        .unwrap_or_else(|| tmp.path().join("data"));

    // The load generator and the sink get their own runtime; obmen gets one like `obmen serve`.
    let generator = tokio::runtime::Builder::new_multi_thread()
        .thread_name("loadgen")
        .enable_all()
        .build()?;
    let sink = generator.block_on(start_sink());

    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    let src = config(port, &data_dir, &sink, &args);
    let loaded = obmen::config::load_str(&tmp.path().join("loadtest.toml"), &src)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let shutdown = CancellationToken::new();
    let server = {
        let shutdown = shutdown.clone();
        std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_multi_thread()
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

    let report = generator.block_on(async {
        let http = reqwest::Client::builder()
            .pool_max_idle_per_host(args.concurrency)
            .build()?;
        let ready_by = Instant::now() + Duration::from_secs(30);
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
        tokio::time::sleep(Duration::from_millis(200)).await;
        let idle_rss = proc_status_kb("VmRSS");

        let run: u64 = rand::random::<u32>().into();
        let next = Arc::new(AtomicUsize::new(0));
        let url = format!("{base}/hooks/{FLOW}");
        let commits_before = commits(&http, &base).await;
        let cpu_before = cpu_split("loadgen");
        let started = Instant::now();
        let tasks: Vec<_> = (0..args.concurrency)
            .map(|_| {
                tokio::spawn(sender(
                    http.clone(),
                    url.clone(),
                    next.clone(),
                    args.requests,
                    run,
                ))
            })
            .collect();
        let mut latencies = Vec::with_capacity(args.requests);
        let mut failures = 0;
        for t in tasks {
            let (l, f) = t.await?;
            latencies.extend(l);
            failures += f;
        }
        let intake = started.elapsed();
        let acked = latencies.len();

        if !args.intake_only {
            let deadline = Instant::now() + Duration::from_secs(600);
            while succeeded(&http, &base).await.unwrap_or(0) < acked as u64 {
                anyhow::ensure!(
                    Instant::now() < deadline,
                    "exchanges not all succeeded after 10 minutes"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        let end_to_end = started.elapsed();
        let cpu_after = cpu_split("loadgen");
        let commits_after = commits(&http, &base).await;
        let batches = (
            commits_after.0 - commits_before.0,
            commits_after.1 - commits_before.1,
        );
        let cpu = [
            cpu_after.writer - cpu_before.writer,
            cpu_after.rest - cpu_before.rest,
            cpu_after.generator - cpu_before.generator,
        ];
        latencies.sort_unstable();
        let file = std::fs::metadata(data_dir.join("obmen.redb"))
            .map(|m| m.len())
            .unwrap_or(0);
        Ok::<_, anyhow::Error>((
            idle_rss, intake, end_to_end, acked, failures, latencies, file, cpu, batches,
        ))
    });
    shutdown.cancel();
    let served = server
        .join()
        .map_err(|_| anyhow::anyhow!("the obmen thread panicked"))?;
    let (idle_rss, intake, end_to_end, acked, failures, latencies, file, cpu, batches) = report?;
    served?;
    let peak_rss = proc_status_kb("VmHWM");

    let workers = if args.intake_only {
        "1 (held: intake only)".to_owned()
    } else {
        args.workers.to_string()
    };
    println!(
        "obmen loadtest: {} webhooks, concurrency {}, workers {workers}",
        args.requests, args.concurrency
    );
    println!("  acknowledged          {acked} ({failures} failed)");
    println!(
        "  durable intake        {:>9.0} acks/s   ({:.2} s)",
        acked as f64 / intake.as_secs_f64(),
        intake.as_secs_f64()
    );
    if !args.intake_only {
        println!(
            "  end-to-end            {:>9.0} exchanges/s ({:.2} s until all succeeded)",
            acked as f64 / end_to_end.as_secs_f64(),
            end_to_end.as_secs_f64()
        );
    }
    println!(
        "  intake latency        p50 {:.2} ms   p99 {:.2} ms   max {:.2} ms",
        ms(percentile(&latencies, 50.0)),
        ms(percentile(&latencies, 99.0)),
        ms(latencies.last().copied().unwrap_or_default())
    );
    // CPU per exchange does not depend on what else the machine runs, unlike the rates.
    let per = |ns: u64| ns as f64 / 1000.0 / acked.max(1) as f64;
    println!(
        "  CPU per exchange      writer {:.1} µs, rest of obmen {:.1} µs, load generator + sink {:.1} µs",
        per(cpu[0]),
        per(cpu[1]),
        per(cpu[2])
    );
    println!(
        "  group commit          {} commits, {:.1} writes per commit",
        batches.0,
        batches.1 as f64 / batches.0.max(1) as f64
    );
    println!("  idle RSS after start  {:.1} MB (VmRSS)", mb(idle_rss));
    println!(
        "  peak RSS              {:.1} MB (VmHWM, includes the load generator and the sink)",
        mb(peak_rss)
    );
    println!(
        "  data file             {:.1} MB",
        file as f64 / 1_048_576.0
    );
    Ok(())
}
