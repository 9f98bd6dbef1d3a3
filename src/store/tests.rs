//! The store on a real redb file: group commit, dedup window, queue claim and crash
//! recovery, counters, listing filters and paging.

use std::sync::Arc;

use crate::mask::Masked;
use crate::model::{ErrorClass, Status};

use super::Store;
use super::ops::{self, NewExchange, Outcome};
use super::query::{self, Filter};
use super::records::{AttemptRecord, ErrorSummary, WorkState};

fn new_exchange(flow: &str, key: Option<&str>, now: u64) -> NewExchange {
    NewExchange {
        flow: flow.into(),
        request_id: format!("req-{now}"),
        external_id: key.map(str::to_owned),
        key: key.map(str::to_owned),
        raw_key: key.map(str::to_owned),
        raw_external_id: key.map(str::to_owned),
        dedup_scope: flow.into(),
        dedup_window_ms: 1000,
        dry_run: false,
        source: "test".into(),
        payload: Masked::fixed("{}"),
        work: WorkState {
            trigger: "{\"a\":1}".into(),
            outputs: Vec::new(),
        },
        steps: vec!["one".into(), "two".into()],
        rejected: None,
        now,
    }
}

fn open() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path(), super::MasterKey::generate()).expect("open");
    (dir, store)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_share_commits() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..400u64 {
        let s = store.clone();
        tasks.push(tokio::spawn(async move {
            s.write(move |txn| {
                ops::create_exchange(
                    txn,
                    new_exchange("f", Some(&format!("k{i}")), 1_000_000 + i),
                )
            })
            .await
        }));
    }
    for t in tasks {
        assert_eq!(
            t.await.expect("join").expect("write").status,
            Status::Queued
        );
    }
    let (commits, writes) = store.write_stats();
    assert!(writes >= 400, "{writes}");
    assert!(
        commits < writes,
        "400 concurrent writes must share commits: {commits} commits"
    );
    let read = store.read().expect("read");
    assert_eq!(
        query::counts(&read, "f").expect("counts")[Status::Queued.code() as usize],
        400
    );
}

#[tokio::test]
async fn dedup_holds_inside_the_window_only() {
    let (_dir, store) = open();
    let first = store
        .write(|t| ops::create_exchange(t, new_exchange("f", Some("k"), 10_000)))
        .await
        .expect("first");
    let again = store
        .write(|t| ops::create_exchange(t, new_exchange("f", Some("k"), 10_500)))
        .await
        .expect("again");
    assert_eq!(
        (again.status, again.original_id),
        (Status::Duplicate, Some(first.id))
    );
    let other_flow = store
        .write(|t| ops::create_exchange(t, new_exchange("g", Some("k"), 10_600)))
        .await
        .expect("g");
    assert_eq!(other_flow.status, Status::Queued, "keys are per flow");
    let later = store
        .write(|t| ops::create_exchange(t, new_exchange("f", Some("k"), 11_001)))
        .await
        .expect("later");
    assert_eq!(
        later.status,
        Status::Queued,
        "past the window the key is new again"
    );
}

#[tokio::test]
async fn claim_recover_and_finish_move_an_exchange_through_the_queue() {
    let (_dir, store) = open();
    let created = store
        .write(|t| ops::create_exchange(t, new_exchange("f", None, 5_000)))
        .await
        .expect("create");
    let none = store
        .write(|t| ops::claim_due(t, 4_000, 10))
        .await
        .expect("claim early");
    assert!(none.is_empty(), "not due before its time");
    let claimed = store
        .write(|t| ops::claim_due(t, 5_000, 10))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    assert_eq!(
        (claimed[0].record.status, claimed[0].record.attempts),
        (Status::Running, 1)
    );
    assert_eq!(claimed[0].work.trigger, "{\"a\":1}");
    // A crash here: the next start returns it to the queue.
    let recovered = store
        .write(|t| ops::recover_leases(t, 6_000))
        .await
        .expect("recover");
    assert_eq!(recovered, 1);
    let again = store
        .write(|t| ops::claim_due(t, 6_000, 10))
        .await
        .expect("claim again");
    assert_eq!(again[0].record.attempts, 2);
    let id = created.id;
    let err = ErrorSummary {
        class: ErrorClass::Transient,
        step: Some("one".into()),
        message: Masked::fixed("boom"),
        at: 6_100,
    };
    let attempt = AttemptRecord {
        number: 2,
        started_at: 6_000,
        duration_ms: 100,
        error: Some(err),
        calls: Vec::new(),
    };
    store
        .write(move |t| ops::finish_attempt(t, id, attempt, Outcome::RetryAt(9_000), 6_100))
        .await
        .expect("finish");
    let read = store.read().expect("read");
    assert_eq!(query::next_due(&read).expect("due"), Some(9_000));
    let rec = query::exchange(&read, id).expect("get").expect("exists");
    assert_eq!(rec.status, Status::Retrying);
    let errors = query::attempt_errors(&read).expect("errors");
    assert_eq!(errors, vec![("f".to_owned(), ErrorClass::Transient, 1)]);
    let journal = query::journal(&read, id).expect("journal");
    assert!(
        journal.len() >= 6,
        "received, queued, running, queued, running, attempt, retrying: {}",
        journal.len()
    );
}

#[tokio::test]
async fn checkpoint_and_manual_retry_keep_history_and_done_steps() {
    let (_dir, store) = open();
    let id = store
        .write(|t| ops::create_exchange(t, new_exchange("f", None, 5_000)))
        .await
        .expect("create")
        .id;
    store
        .write(|t| ops::claim_due(t, 5_000, 1))
        .await
        .expect("claim");
    let link = ops::Link {
        system: "crm".into(),
        entity: "lead".into(),
        external_key: "ext-1".into(),
        target_id: "L-9".into(),
        masked_key: Masked::fixed("ext-1"),
        masked_target: Masked::fixed("L-9"),
    };
    store
        .write(move |t| {
            ops::checkpoint(
                t,
                id,
                0,
                "{\"id\":\"L-9\"}".into(),
                Masked::fixed("{}"),
                Some(link),
                5_010,
            )
        })
        .await
        .expect("checkpoint");
    let attempt = AttemptRecord {
        number: 1,
        started_at: 5_000,
        duration_ms: 20,
        error: None,
        calls: Vec::new(),
    };
    store
        .write(move |t| ops::finish_attempt(t, id, attempt, Outcome::Stop(Status::Failed), 5_020))
        .await
        .expect("fail");
    let retried = store
        .write(move |t| ops::manual_retry(t, id, false, "me", 6_000))
        .await
        .expect("retry");
    let rec = retried.expect("allowed");
    assert_eq!(rec.status, Status::Queued);
    assert!(
        rec.steps[0].done_at.is_some() && rec.steps[1].done_at.is_none(),
        "step one stays done"
    );
    let read = store.read().expect("read");
    let hashed = store.lookup_hash("ext-1");
    let found = query::idmap(&read, "crm", "lead", &hashed).expect("idmap");
    assert_eq!(found.as_deref(), Some("L-9"));
    let raw = query::idmap(&read, "crm", "lead", "ext-1").expect("idmap");
    assert_eq!(raw, None, "only the lookup hash is stored");
    let refused = store
        .write(move |t| ops::manual_retry(t, id, false, "me", 6_001))
        .await
        .expect("retry");
    assert_eq!(
        refused.err(),
        Some(ops::RetryRefused::Pending(Status::Queued))
    );
}

#[tokio::test]
async fn listing_filters_and_pages_newest_first() {
    let (_dir, store) = open();
    for i in 0..25u64 {
        let flow = if i % 2 == 0 { "even" } else { "odd" };
        store
            .write(move |t| {
                ops::create_exchange(
                    t,
                    new_exchange(flow, Some(&format!("k{i}")), 100_000 + i * 10),
                )
            })
            .await
            .expect("create");
    }
    let read = store.read().expect("read");
    let page = query::list(
        &read,
        &Filter {
            flow: Some("even".into()),
            limit: 5,
            ..Filter::default()
        },
    )
    .expect("list");
    assert_eq!(page.items.len(), 5);
    assert!(
        page.items.windows(2).all(|w| w[0].id > w[1].id),
        "newest first"
    );
    let mut seen = page.items.len();
    let mut cursor = page.next_cursor;
    while let Some(c) = cursor {
        let next = query::list(
            &read,
            &Filter {
                flow: Some("even".into()),
                limit: 5,
                cursor: Some(c),
                ..Filter::default()
            },
        )
        .expect("page");
        seen += next.items.len();
        cursor = next.next_cursor;
    }
    assert_eq!(seen, 13);
    let by_key = query::list(
        &read,
        &Filter {
            key_hash: Some(store.lookup_hash("k7")),
            limit: 10,
            ..Filter::default()
        },
    )
    .expect("key");
    assert_eq!(by_key.items.len(), 1);
    let window = Filter {
        since: Some(100_100),
        until: Some(100_150),
        limit: 50,
        ..Filter::default()
    };
    assert_eq!(query::list(&read, &window).expect("window").items.len(), 5);
    let q = query::list(
        &read,
        &Filter {
            q: Some(("req-100030".into(), store.lookup_hash("req-100030"))),
            limit: 10,
            ..Filter::default()
        },
    )
    .expect("q");
    assert_eq!(q.items.len(), 1);
}

#[tokio::test]
async fn work_copies_rest_sealed_and_a_wrong_key_is_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let key = super::MasterKey::generate();
    let store = Store::open(dir.path(), key.clone()).expect("open");
    let mut new = new_exchange("f", Some("k"), 5_000);
    new.work.trigger = r#"{"iin":"CANARY-900101350012"}"#.into();
    store
        .write(move |t| ops::create_exchange(t, new))
        .await
        .expect("create");
    let claimed = store
        .write(|t| ops::claim_due(t, 5_000, 1))
        .await
        .expect("claim");
    assert!(
        claimed[0].work.trigger.contains("CANARY-900101350012"),
        "the worker sees the raw payload"
    );
    store.close();
    drop(store);
    drop(claimed);
    let bytes = std::fs::read(dir.path().join(super::DATA_FILE)).expect("read");
    let found = bytes.windows(6).any(|w| w == b"CANARY");
    assert!(!found, "the work copy must be sealed at rest");
    // The writer thread lets go of the file shortly after close.
    let mut refused = None;
    for _ in 0..100 {
        match Store::open(dir.path(), super::MasterKey::generate()) {
            Err(e) if e.is_in_use() => std::thread::sleep(std::time::Duration::from_millis(20)),
            other => {
                refused = Some(other);
                break;
            }
        }
    }
    let err = refused
        .expect("the file was released")
        .err()
        .expect("a wrong key must be refused");
    assert!(
        err.to_string().contains("master key does not match"),
        "{err}"
    );
}

/// Counters are summed in memory per batch and written at commit: after many batches that
/// mix intake, claims and finishes of several flows, every counter equals what the status
/// index holds, and the hourly buckets sum to the same.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batched_counters_match_the_status_index() {
    let (_dir, store) = open();
    let store = Arc::new(store);
    let mut tasks = Vec::new();
    for i in 0..300u64 {
        let s = store.clone();
        let flow = if i % 3 == 0 { "a" } else { "b" };
        // Two creation hours, so that several hourly buckets are bumped in one batch.
        let now = 3_600_000 * (1 + i % 2) + i;
        tasks.push(tokio::spawn(async move {
            s.write(move |t| {
                let created = ops::create_exchange(t, new_exchange(flow, None, now))?;
                // Some exchanges go on to run and end in the same batch as others' intake.
                if i % 4 == 0 {
                    let claimed = ops::claim_due(t, u64::MAX / 2, 2)?;
                    for c in claimed {
                        let attempt = AttemptRecord {
                            number: c.record.attempts,
                            started_at: now,
                            duration_ms: 1,
                            error: None,
                            calls: Vec::new(),
                        };
                        let status = if c.record.id % 2 == 0 {
                            Status::Succeeded
                        } else {
                            Status::Skipped
                        };
                        ops::finish_attempt(t, c.record.id, attempt, Outcome::Done(status), now)?;
                    }
                }
                Ok(created)
            })
            .await
        }));
    }
    for t in tasks {
        t.await.expect("join").expect("write");
    }
    let read = store.read().expect("read");
    let mut total = 0;
    for flow in ["a", "b"] {
        let counts = query::counts(&read, flow).expect("counts");
        let hourly = query::counts_since(&read, flow, 0).expect("hourly");
        assert_eq!(
            counts, hourly,
            "flow {flow}: hourly buckets sum to the counters"
        );
        for status in [
            Status::Queued,
            Status::Running,
            Status::Succeeded,
            Status::Skipped,
        ] {
            let listed = query::list(
                &read,
                &Filter {
                    flow: Some(flow.into()),
                    status: Some(status),
                    limit: 1000,
                    ..Filter::default()
                },
            )
            .expect("list")
            .items
            .len() as u64;
            assert_eq!(
                counts[status.code() as usize],
                listed,
                "flow {flow}, {status:?}"
            );
            total += listed;
        }
    }
    assert_eq!(total, 300, "every exchange is counted once");
}

/// A failure opens its error group; the flow's next success closes every open group (read
/// through the open-group index) and reports those that were announced.
#[tokio::test]
async fn a_success_closes_the_open_error_groups() {
    let (_dir, store) = open();
    let fail = |t: &super::Tx<'_>, now: u64, message: &'static str| {
        let created = ops::create_exchange(t, new_exchange("f", None, now))?;
        ops::claim_due(t, now, 10)?;
        let attempt = AttemptRecord {
            number: 1,
            started_at: now,
            duration_ms: 1,
            error: Some(ErrorSummary {
                class: ErrorClass::Permanent,
                step: Some("one".into()),
                message: Masked::fixed(message),
                at: now,
            }),
            calls: Vec::new(),
        };
        let rec = ops::finish_attempt(t, created.id, attempt, Outcome::Stop(Status::Failed), now)?
            .expect("exists");
        super::groups::digest(t, &rec)
    };
    let first = store
        .write(move |t| fail(t, 10_000, "HTTP 422: order 17 refused"))
        .await
        .expect("first failure");
    assert!(
        matches!(first, Some(super::groups::Digest::Started(_))),
        "a new group is announced"
    );
    let second = store
        .write(move |t| fail(t, 11_000, "HTTP 422: order 18 refused"))
        .await
        .expect("same group again");
    assert!(
        second.is_none(),
        "an open, announced group is not announced twice"
    );
    store
        .write(move |t| fail(t, 12_000, "HTTP 500: the target is down"))
        .await
        .expect("another group");
    let read = store.read().expect("read");
    let groups = query::error_groups(&read, Some("f")).expect("groups");
    assert_eq!(groups.len(), 2);
    assert!(groups.iter().all(|(_, g)| g.open));
    drop(read);

    let closed = store
        .write(|t| {
            let created = ops::create_exchange(t, new_exchange("f", None, 13_000))?;
            ops::claim_due(t, 13_000, 10)?;
            let attempt = AttemptRecord {
                number: 1,
                started_at: 13_000,
                duration_ms: 1,
                error: None,
                calls: Vec::new(),
            };
            let rec = ops::finish_attempt(
                t,
                created.id,
                attempt,
                Outcome::Done(Status::Succeeded),
                13_000,
            )?
            .expect("exists");
            super::groups::digest(t, &rec)
        })
        .await
        .expect("success");
    match closed {
        Some(super::groups::Digest::Stopped(stopped)) => assert_eq!(stopped.len(), 2),
        other => panic!("the success must close both announced groups: {other:?}"),
    }
    let read = store.read().expect("read");
    let groups = query::error_groups(&read, Some("f")).expect("groups");
    assert!(groups.iter().all(|(_, g)| !g.open && !g.announced));
    assert_eq!(groups.iter().map(|(_, g)| g.count).sum::<u64>(), 3);
}

/// A status across flows is the flows' status ranges merged newest first, paged by cursor
/// like any listing; bulk retry and crash recovery read the same ranges.
#[tokio::test]
async fn a_status_across_flows_merges_their_ranges_newest_first() {
    let (_dir, store) = open();
    for i in 0..30u64 {
        let flow = ["a", "b", "c"][(i % 3) as usize];
        store
            .write(move |t| ops::create_exchange(t, new_exchange(flow, None, 200_000 + i * 10)))
            .await
            .expect("create");
    }
    // Two exchanges run (one of flow a, one of b); the rest stay queued.
    let claimed = store
        .write(|t| ops::claim_due(t, 200_015, 2))
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 2);
    let read = store.read().expect("read");
    let mut ids = Vec::new();
    let mut cursor = None;
    loop {
        let page = query::list(
            &read,
            &Filter {
                status: Some(Status::Queued),
                limit: 7,
                cursor,
                ..Filter::default()
            },
        )
        .expect("list");
        ids.extend(page.items.iter().map(|r| r.id));
        assert!(page.items.iter().all(|r| r.status == Status::Queued));
        cursor = page.next_cursor;
        if cursor.is_none() {
            break;
        }
    }
    assert_eq!(ids.len(), 28, "every queued exchange of every flow, once");
    assert!(ids.windows(2).all(|w| w[0] > w[1]), "newest first: {ids:?}");
    let stats = query::queue_stats(&read).expect("stats");
    assert_eq!((stats.waiting, stats.running), (28, 2));
    drop(read);

    let queued = store
        .write(|t| ops::select_for_retry(t, None, &[Status::Queued], 0, u64::MAX / 2))
        .await
        .expect("select");
    assert_eq!(queued.len(), 28);
    let recovered = store
        .write(|t| ops::recover_leases(t, 300_000))
        .await
        .expect("recover");
    assert_eq!(recovered, 2, "both running exchanges return to the queue");
    let read = store.read().expect("read");
    assert_eq!(query::queue_stats(&read).expect("stats").running, 0);
}
