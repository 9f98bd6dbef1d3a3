//! Start-up order and shutdown: open the store, recover leases, start the workers, the
//! schedulers and the HTTP server; on shutdown stop intake, let running attempts finish
//! within the grace period, and leave the rest due.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::Loaded;
use crate::connectors::System;
use crate::engine::Engine;
use crate::engine::flow::Trigger;
use crate::http::{self, AppState};
use crate::store::Store;

/// Creates the data directory readable by its owner only.
pub fn prepare_data_dir(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    Ok(())
}

pub fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .user_agent(concat!("obmen/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_default()
}

/// Builds the engine on an opened store.
pub fn engine(loaded: &Loaded, store: Store) -> Engine {
    let client = http_client();
    let systems: BTreeMap<String, Arc<System>> = loaded
        .connectors
        .iter()
        .map(|(name, c)| {
            c.attach_store(&store);
            (
                name.clone(),
                Arc::new(System::new(name.clone(), c.clone(), client.clone())),
            )
        })
        .collect();
    Engine::new(
        store,
        loaded.flows.clone(),
        systems,
        loaded.masker.clone(),
        loaded.server.workers,
    )
}

/// Runs everything until `shutdown` fires, then drains.
pub async fn serve(
    loaded: Loaded,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let data_dir = loaded.server.data_dir.clone();
    prepare_data_dir(&data_dir).map_err(|e| {
        anyhow::anyhow!(
            "cannot create the data directory {}: {e}",
            data_dir.display()
        )
    })?;
    let data_file = data_dir.join(crate::store::DATA_FILE);
    let (key, created) =
        crate::store::cipher::load_or_create(&loaded.server.master_key, &data_file)?;
    if created {
        tracing::info!(path = %loaded.server.master_key.display(), "created a new master key: back it up apart from the data");
    }
    let store = open_store(&loaded, key)?;
    let engine = Arc::new(engine(&loaded, store.clone()));
    let recovered = engine.recover().await?;
    if recovered > 0 {
        tracing::info!(recovered, "returned interrupted exchanges to the queue");
    }
    engine.tracker.spawn(engine.clone().dispatch());
    for flow in engine.flows.values() {
        if matches!(flow.trigger, Trigger::Schedule { .. }) {
            engine.tracker.spawn(engine.clone().schedule(flow.clone()));
        }
    }
    let state = AppState {
        engine: engine.clone(),
        tokens: Arc::new(loaded.tokens.clone()),
        auth_throttle: Arc::default(),
        public_summary: loaded.public_summary,
        sessions: Arc::default(),
        ui_lang: loaded.ui_lang,
    };
    let router = http::router(state, loaded.server.max_body);
    tracing::info!(address = %listener.local_addr()?, flows = engine.flows.len(), "obmen is serving");
    let stop = shutdown.clone();
    let service = router.into_make_service_with_connect_info::<std::net::SocketAddr>();
    axum::serve(listener, service)
        .with_graceful_shutdown(async move { stop.cancelled().await })
        .await?;
    drain(&engine, loaded.server.shutdown_grace).await;
    // The last handles go before returning, so the database closes cleanly before exit.
    drop(engine);
    let closing = store.clone();
    drop(store);
    let _ = tokio::task::spawn_blocking(move || closing.close()).await;
    Ok(())
}

/// Opens the store; finishes a key rotation that committed but did not swap the key files.
fn open_store(loaded: &Loaded, key: crate::store::MasterKey) -> anyhow::Result<Store> {
    let s = &loaded.server;
    let pending = s.master_key.with_extension("key.new");
    match Store::open_with_cache(&s.data_dir, key, s.cache_bytes) {
        Err(crate::store::StoreError::WrongKey { .. }) if pending.exists() => {
            let new = crate::store::MasterKey::load(&pending)?;
            let store = Store::open_with_cache(&s.data_dir, new, s.cache_bytes)?;
            let old = s
                .master_key
                .with_extension(format!("key.old-{}", crate::model::now_ms() / 1000));
            std::fs::rename(&s.master_key, &old)?;
            std::fs::rename(&pending, &s.master_key)?;
            tracing::warn!(old = %old.display(), "finished an interrupted key rotation");
            Ok(store)
        }
        other => Ok(other?),
    }
}

async fn drain(engine: &Engine, grace: std::time::Duration) {
    engine.cancel.cancel();
    engine.tracker.close();
    if tokio::time::timeout(grace, engine.tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!(
            "attempts still running after the grace period; they resume at the next start"
        );
    }
}

/// Cancels `token` on SIGTERM or SIGINT.
pub async fn on_signal(token: CancellationToken) {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
    tracing::info!("shutting down: intake stopped, finishing running attempts");
    token.cancel();
}
