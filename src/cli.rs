//! What each command does. Exit codes: 0 ok, 1 user error (bad config, bad input) with a
//! one-line cause, 2 runtime failure.

use std::io::Read as _;
use std::path::Path;

use tokio_util::sync::CancellationToken;

use crate::config::{self, Loaded, SecretSource};

pub const OK: u8 = 0;
pub const USER_ERROR: u8 = 1;
pub const RUNTIME_ERROR: u8 = 2;

#[derive(Debug, clap::Subcommand)]
pub enum ExchangesCmd {
    /// List exchanges, newest first.
    List {
        #[arg(long)]
        flow: Option<String>,
        #[arg(long)]
        status: Option<String>,
        #[arg(long)]
        since: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: usize,
    },
    /// Show one exchange with its attempts and journal.
    Show { id: u64 },
    /// Retry one exchange (`--force` for a succeeded one).
    Retry {
        id: u64,
        #[arg(long)]
        force: bool,
    },
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the OS refused to start the runtime")
}

fn load(path: &Path) -> Result<Loaded, u8> {
    let source = secret_source(path, false)?;
    config::load_with(path, &source).map_err(|e| {
        eprintln!("{e}");
        USER_ERROR
    })
}

/// Secrets for a config: the encrypted store (when no server holds it), then the
/// environment.
fn secret_source(path: &Path, say_in_use: bool) -> Result<SecretSource, u8> {
    let paths = config::paths(path).map_err(|e| {
        eprintln!("{e}");
        USER_ERROR
    })?;
    match config::stored_secrets(&paths) {
        Ok(source) => Ok(source),
        Err(e) if e.is_in_use() => {
            if say_in_use {
                eprintln!(
                    "note: a running obmen holds the data file; secrets were taken from the environment only"
                );
            }
            Ok(SecretSource::env_only())
        }
        Err(e) => {
            eprintln!("{e}");
            Err(USER_ERROR)
        }
    }
}

pub fn check(path: &Path) -> u8 {
    let source = match secret_source(path, true) {
        Ok(s) => s,
        Err(code) => return code,
    };
    match config::load_with(path, &source) {
        Ok(loaded) => {
            println!(
                "{}: ok ({} systems, {} flows)",
                path.display(),
                loaded.connectors.len(),
                loaded.flows.len()
            );
            OK
        }
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{} problem(s) found", e.lines.len());
            USER_ERROR
        }
    }
}

pub fn serve(path: &Path) -> u8 {
    let logs = crate::logging::init();
    let loaded = match load(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    logs.set(loaded.masker.clone());
    runtime().block_on(async move {
        let listener = match tokio::net::TcpListener::bind(loaded.server.listen).await {
            Ok(l) => l,
            Err(e) => {
                eprintln!("cannot listen on {}: {e}", loaded.server.listen);
                return RUNTIME_ERROR;
            }
        };
        let token = CancellationToken::new();
        tokio::spawn(crate::app::on_signal(token.clone()));
        match crate::app::serve(loaded, listener, token).await {
            Ok(()) => OK,
            Err(e) => {
                eprintln!("obmen stopped: {e}");
                RUNTIME_ERROR
            }
        }
    })
}

pub fn init(dir: &Path) -> u8 {
    let path = dir.join("obmen.toml");
    if path.exists() {
        eprintln!("{} exists; not overwriting it", path.display());
        return USER_ERROR;
    }
    let write = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, TEMPLATE));
    let key_path = dir.join("master.key");
    let key = match (&write, key_path.exists()) {
        (Ok(()), false) => crate::store::MasterKey::generate()
            .write_new(&key_path)
            .map_err(|e| e.to_string()),
        _ => Ok(()),
    };
    if let Err(e) = key {
        eprintln!("{e}");
        return RUNTIME_ERROR;
    }
    match write {
        Ok(()) => {
            println!(
                "wrote {} and the master key {} (0600; back it up apart from the data)",
                path.display(),
                key_path.display()
            );
            println!(
                "store the secrets it references: openssl rand -hex 24 | obmen secret set admin_token -c {}",
                path.display()
            );
            println!(
                "then: obmen check -c {0} && obmen serve -c {0}",
                path.display()
            );
            OK
        }
        Err(e) => {
            eprintln!("cannot write {}: {e}", path.display());
            RUNTIME_ERROR
        }
    }
}

pub const TEMPLATE: &str = include_str!("../examples/obmen.toml");

pub fn demo(dir: &Path, port: u16) -> u8 {
    let logs = crate::logging::init();
    runtime().block_on(crate::demo::run(dir, port, logs))
}

/// A client of the running server, from the config's listen address and CLI token.
struct Client {
    base: String,
    token: String,
    http: reqwest::Client,
}

fn client(path: &Path) -> Result<Client, u8> {
    let loaded = load(path)?;
    let token = match (&loaded.cli_token, std::env::var("OBMEN_TOKEN")) {
        (_, Ok(t)) => t,
        (Some(t), _) => t.expose().to_owned(),
        (None, _) => {
            eprintln!("no admin token: set server.cli_token in the config or OBMEN_TOKEN");
            return Err(USER_ERROR);
        }
    };
    Ok(Client {
        base: format!("http://{}", loaded.server.listen),
        token,
        http: crate::app::http_client(),
    })
}

impl Client {
    async fn call(&self, method: reqwest::Method, path: &str, body: Option<Vec<u8>>) -> u8 {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        match req.send().await {
            Ok(resp) => {
                let ok = resp.status().is_success();
                let text = resp.text().await.unwrap_or_default();
                let pretty = serde_json::from_str::<serde_json::Value>(&text)
                    .and_then(|v| serde_json::to_string_pretty(&v))
                    .unwrap_or(text);
                if ok {
                    println!("{pretty}");
                    OK
                } else {
                    eprintln!("{pretty}");
                    USER_ERROR
                }
            }
            Err(e) => {
                eprintln!("cannot reach obmen at {}: {e}", self.base);
                RUNTIME_ERROR
            }
        }
    }
}

pub fn exchanges(path: &Path, cmd: ExchangesCmd) -> u8 {
    let c = match client(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let (method, url) = match cmd {
        ExchangesCmd::List {
            flow,
            status,
            since,
            limit,
        } => {
            let mut q = format!("/api/exchanges?limit={limit}");
            for (k, v) in [("flow", flow), ("status", status), ("since", since)] {
                if let Some(v) = v {
                    q.push_str(&format!("&{k}={}", crate::mask::url_encode(&v)));
                }
            }
            (reqwest::Method::GET, q)
        }
        ExchangesCmd::Show { id } => (reqwest::Method::GET, format!("/api/exchanges/{id}")),
        ExchangesCmd::Retry { id, force } => (
            reqwest::Method::POST,
            format!("/api/exchanges/{id}/retry?force={force}"),
        ),
    };
    runtime().block_on(c.call(method, &url, None))
}

pub fn dry_run(path: &Path, flow: &str, file: Option<&Path>) -> u8 {
    let c = match client(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let mut body = Vec::new();
    let read = match file {
        Some(f) => std::fs::read(f).map(|b| body = b),
        None => std::io::stdin().read_to_end(&mut body).map(|_| ()),
    };
    if let Err(e) = read {
        eprintln!("cannot read the payload: {e}");
        return USER_ERROR;
    }
    if serde_json::from_slice::<serde_json::Value>(&body).is_err() {
        eprintln!("the payload is not valid JSON");
        return USER_ERROR;
    }
    let url = format!("/api/flows/{}/dry-run", crate::mask::url_encode(flow));
    runtime().block_on(c.call(reqwest::Method::POST, &url, Some(body)))
}

/// Copies the data file. With the server running, the server's writer makes the copy
/// between two commits; otherwise the file is opened here.
pub fn backup(path: &Path, dest: &Path) -> u8 {
    let loaded = match load(path) {
        Ok(l) => l,
        Err(code) => return code,
    };
    runtime().block_on(async move {
        let file = loaded.server.data_dir.join(crate::store::DATA_FILE);
        let result = match crate::store::copy_closed(&file, dest) {
            Err(e) if e.is_in_use() => backup_via_server(path, dest).await,
            other => other.map_err(|e| e.to_string()),
        };
        match result {
            Ok(bytes) => {
                println!("wrote {} ({bytes} bytes)", dest.display());
                OK
            }
            Err(e) => {
                eprintln!("backup failed: {e}");
                RUNTIME_ERROR
            }
        }
    })
}

async fn backup_via_server(path: &Path, dest: &Path) -> Result<u64, String> {
    let c = client(path).map_err(|_| "no admin token for the running server".to_owned())?;
    let resp = c
        .http
        .post(format!("{}/api/backup", c.base))
        .bearer_auth(&c.token)
        .send()
        .await
        .map_err(|e| format!("cannot reach obmen at {}: {e}", c.base))?;
    if !resp.status().is_success() {
        return Err(format!("the server answered {}", resp.status()));
    }
    let bytes = resp.bytes().await.map_err(|e| e.to_string())?;
    let tmp = dest.with_extension("partial");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, dest))
        .map_err(|e| e.to_string())?;
    Ok(bytes.len() as u64)
}

#[derive(Debug, clap::Subcommand)]
pub enum SecretCmd {
    /// Store a secret; the value is read from stdin (never from the command line).
    Set { name: String },
    /// Names and when they were set; never values.
    List,
    /// Delete a secret.
    Rm { name: String },
    /// Re-seal everything under a new master key.
    RotateKey,
}

fn valid_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// Opens the secret store for a command: the key is created on a first use.
fn secret_store(path: &Path) -> Result<(crate::store::secrets::SecretStore, config::Paths), u8> {
    let paths = config::paths(path).map_err(|e| {
        eprintln!("{e}");
        USER_ERROR
    })?;
    if let Err(e) = crate::app::prepare_data_dir(&paths.data_dir) {
        eprintln!(
            "cannot create the data directory {}: {e}",
            paths.data_dir.display()
        );
        return Err(RUNTIME_ERROR);
    }
    let data_file = paths.data_dir.join(crate::store::DATA_FILE);
    let (key, _) =
        crate::store::cipher::load_or_create(&paths.master_key, &data_file).map_err(|e| {
            eprintln!("{e}");
            USER_ERROR
        })?;
    match crate::store::secrets::SecretStore::open(&paths.data_dir, key) {
        Ok(store) => Ok((store, paths)),
        Err(e) if e.is_in_use() => {
            eprintln!(
                "obmen is running and holds the data file: stop it, change the secret, start it again (secrets are read at start)"
            );
            Err(USER_ERROR)
        }
        Err(e) => {
            eprintln!("{e}");
            Err(USER_ERROR)
        }
    }
}

pub fn secret(path: &Path, cmd: SecretCmd) -> u8 {
    let (mut store, paths) = match secret_store(path) {
        Ok(s) => s,
        Err(code) => return code,
    };
    let result = match cmd {
        SecretCmd::Set { name } => set_secret(&store, &name),
        SecretCmd::List => store.list().map_err(|e| e.to_string()).map(|names| {
            for (name, at) in names {
                println!("{name}\tset {}", crate::http::views::time(at));
            }
        }),
        SecretCmd::Rm { name } => match store.remove(&name) {
            Ok(true) => {
                println!("removed {name}");
                Ok(())
            }
            Ok(false) => Err(format!("no secret named {name}")),
            Err(e) => Err(e.to_string()),
        },
        SecretCmd::RotateKey => rotate_key(&mut store, &paths.master_key),
    };
    match result {
        Ok(()) => OK,
        Err(e) => {
            eprintln!("{e}");
            USER_ERROR
        }
    }
}

fn set_secret(store: &crate::store::secrets::SecretStore, name: &str) -> Result<(), String> {
    if !valid_secret_name(name) {
        return Err(format!(
            "`{name}`: a secret name uses letters, digits, _ and - (at most 64)"
        ));
    }
    let mut value = String::new();
    std::io::stdin()
        .read_to_string(&mut value)
        .map_err(|e| format!("cannot read the value from stdin: {e}"))?;
    let value = value
        .strip_suffix('\n')
        .map(|v| v.strip_suffix('\r').unwrap_or(v))
        .unwrap_or(&value);
    if value.len() < crate::mask::MIN_SECRET_LEN {
        return Err(format!(
            "the value is shorter than {} characters",
            crate::mask::MIN_SECRET_LEN
        ));
    }
    store.set(name, value).map_err(|e| e.to_string())?;
    println!("stored {name}; reference it as \"secret:{name}\" and restart obmen");
    Ok(())
}

/// The new key is written beside the old one first, then everything is re-sealed in one
/// commit, then the files are swapped; the old key is kept for backups made before.
fn rotate_key(
    store: &mut crate::store::secrets::SecretStore,
    key_path: &Path,
) -> Result<(), String> {
    let fresh = key_path.with_extension("key.new");
    let new = crate::store::MasterKey::generate();
    new.write_new(&fresh).map_err(|e| {
        format!("{e} (a rotation that stopped half-way leaves this file: obmen serve finishes it)")
    })?;
    let count = store.rotate(new).map_err(|e| e.to_string())?;
    let old = key_path.with_extension(format!("key.old-{}", crate::model::now_ms() / 1000));
    std::fs::rename(key_path, &old)
        .and_then(|()| std::fs::rename(&fresh, key_path))
        .map_err(|e| e.to_string())?;
    println!(
        "re-sealed {count} values under a new key in {}",
        key_path.display()
    );
    println!(
        "the previous key is kept as {}: keep it while you keep backups made before now",
        old.display()
    );
    Ok(())
}
