//! The TOML config: the file model (`file.rs`), where each key sits in the source
//! (`spans.rs`), and the checks that turn it into the running model (`validate.rs`).
//! `obmen check` and `obmen serve` share this code.

pub mod cron;
pub mod file;
pub mod spans;
pub mod validate;
pub mod values;

use std::path::{Path, PathBuf};

pub use spans::PathSeg;
pub use validate::Loaded;
pub use values::SecretSource;

/// One problem in the config, located by its key path.
#[derive(Clone, Debug)]
pub struct Problem {
    pub path: Vec<PathSeg>,
    pub message: String,
}

impl Problem {
    pub fn new(path: Vec<PathSeg>, message: impl Into<String>) -> Problem {
        Problem {
            path,
            message: message.into(),
        }
    }
}

/// Every problem found, rendered `file:line:column: key: message`, one per line.
#[derive(Debug, thiserror::Error)]
#[error("{}", self.render())]
pub struct ConfigErrors {
    pub file: PathBuf,
    pub lines: Vec<String>,
}

impl ConfigErrors {
    fn render(&self) -> String {
        self.lines.join("\n")
    }

    pub fn single(file: &Path, message: &str) -> ConfigErrors {
        ConfigErrors {
            file: file.to_path_buf(),
            lines: vec![format!("{}: {message}", file.display())],
        }
    }

    pub fn locate(file: &Path, src: &str, problems: &[Problem]) -> ConfigErrors {
        let lines = problems
            .iter()
            .map(|p| {
                let key = spans::fmt_path(&p.path);
                let at = spans::key_span_of(src, &p.path).or_else(|| spans::span_of(src, &p.path));
                match at.map(|r| spans::line_col(src, r.start)) {
                    Some((line, col)) => {
                        format!("{}:{line}:{col}: {key}: {}", file.display(), p.message)
                    }
                    None if key.is_empty() => format!("{}: {}", file.display(), p.message),
                    None => format!("{}: {key}: {}", file.display(), p.message),
                }
            })
            .collect();
        ConfigErrors {
            file: file.to_path_buf(),
            lines,
        }
    }
}

/// Reads, parses and checks a config file with secrets from the environment only.
pub fn load(path: &Path) -> Result<Loaded, ConfigErrors> {
    load_with(path, &SecretSource::env_only())
}

/// Reads, parses and checks a config file; every problem is reported at once.
pub fn load_with(path: &Path, source: &SecretSource) -> Result<Loaded, ConfigErrors> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(path, &format!("cannot read the config: {e}")))?;
    load_str_with(path, &src, source)
}

pub fn load_str(path: &Path, src: &str) -> Result<Loaded, ConfigErrors> {
    load_str_with(path, src, &SecretSource::env_only())
}

pub fn load_str_with(
    path: &Path,
    src: &str,
    source: &SecretSource,
) -> Result<Loaded, ConfigErrors> {
    let (raw, unknown) = file::parse(src).map_err(|e| {
        let at = e.span().map(|r| spans::line_col(src, r.start));
        let msg = e.message().to_owned();
        match at {
            Some((l, c)) => ConfigErrors {
                file: path.to_path_buf(),
                lines: vec![format!("{}:{l}:{c}: {msg}", path.display())],
            },
            None => ConfigErrors::single(path, &msg),
        }
    })?;
    let base = path.parent().unwrap_or(Path::new(".")).to_path_buf();
    let mut problems: Vec<Problem> = unknown
        .into_iter()
        .map(|p| Problem::new(p, "unknown key"))
        .collect();
    let loaded = validate::build(raw, &base, source, &mut problems);
    if problems.is_empty() {
        Ok(loaded)
    } else {
        Err(ConfigErrors::locate(path, src, &problems))
    }
}

/// Where a config keeps its data and master key, read before the full check so that
/// secrets in the store can take part in it.
pub struct Paths {
    pub data_dir: PathBuf,
    pub master_key: PathBuf,
}

pub fn paths(path: &Path) -> Result<Paths, ConfigErrors> {
    let src = std::fs::read_to_string(path)
        .map_err(|e| ConfigErrors::single(path, &format!("cannot read the config: {e}")))?;
    let (raw, _) =
        file::parse(src.as_str()).map_err(|e| ConfigErrors::single(path, e.message()))?;
    let base = path.parent().unwrap_or(Path::new("."));
    Ok(Paths {
        data_dir: base.join(raw.server.data_dir.as_deref().unwrap_or("data")),
        master_key: validate::master_key_path(raw.server.master_key_file.as_deref(), base),
    })
}

/// Secrets from the encrypted store, when there is a data file and its key; a missing
/// store is no error (secrets then come from the environment).
pub fn stored_secrets(paths: &Paths) -> Result<SecretSource, crate::store::StoreError> {
    let data_file = paths.data_dir.join(crate::store::DATA_FILE);
    if !data_file.exists() || !paths.master_key.exists() {
        return Ok(SecretSource::env_only());
    }
    let key = crate::store::MasterKey::load(&paths.master_key)
        .map_err(|e| crate::store::StoreError::NotCommitted(e.to_string()))?;
    let store = crate::store::secrets::SecretStore::open(&paths.data_dir, key)?;
    Ok(SecretSource::with_stored(store.read_all()?))
}
