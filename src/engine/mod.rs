//! The engine: intake of triggers, the workers that run queued exchanges, the scheduler,
//! and dry runs. It knows flows and systems only through the config and the connector trait.

pub mod dryrun;
pub mod flow;
pub mod intake;
pub mod jq;
pub mod retry;
pub mod run;
pub mod scheduler;
pub mod worker;

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::connectors::System;
use crate::mask::Masker;
use crate::metrics::Metrics;
use crate::store::Store;

use flow::Flow;

/// Everything a worker, the scheduler and the HTTP handlers share.
pub struct Engine {
    pub store: Store,
    pub flows: BTreeMap<String, Arc<Flow>>,
    pub systems: BTreeMap<String, Arc<System>>,
    pub masker: Masker,
    pub metrics: Metrics,
    /// Rung after every commit that makes something due.
    pub wake: Notify,
    pub cancel: CancellationToken,
    pub tracker: TaskTracker,
    slots: Arc<Semaphore>,
}

impl Engine {
    pub fn new(
        store: Store,
        flows: Vec<Arc<Flow>>,
        systems: BTreeMap<String, Arc<System>>,
        masker: Masker,
        workers: usize,
    ) -> Engine {
        Engine {
            store,
            flows: flows.into_iter().map(|f| (f.name.clone(), f)).collect(),
            systems,
            masker,
            metrics: Metrics::default(),
            wake: Notify::new(),
            cancel: CancellationToken::new(),
            tracker: TaskTracker::new(),
            slots: Arc::new(Semaphore::new(workers.max(1))),
        }
    }

    pub fn flow(&self, name: &str) -> Option<&Arc<Flow>> {
        self.flows.get(name)
    }
}
