//! Logs go through the masker too: every formatted line is scrubbed of known secret values
//! before it reaches stderr, whatever a future log statement puts in it. The masker is
//! installed once the config (and so the secrets) is loaded.

use std::io::Write;
use std::sync::{Arc, RwLock};

use crate::mask::Masker;

/// The handle that swaps in the masker once secrets are known.
#[derive(Clone, Default)]
pub struct LogMasker(Arc<RwLock<Masker>>);

impl LogMasker {
    pub fn set(&self, masker: Masker) {
        if let Ok(mut m) = self.0.write() {
            *m = masker;
        }
    }
}

/// Installs the `OBMEN_LOG`-filtered (default `info`) subscriber writing masked lines to
/// stderr.
pub fn init() -> LogMasker {
    let handle = LogMasker::default();
    let writer = handle.clone();
    let filter =
        tracing_subscriber::EnvFilter::try_from_env("OBMEN_LOG").unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(move || MaskedLine {
            masker: writer.0.clone(),
            line: Vec::new(),
            out: std::io::stderr(),
        })
        .try_init();
    handle
}

/// Collects one event's bytes and writes them masked to `out` when the event is done.
struct MaskedLine<W: Write> {
    masker: Arc<RwLock<Masker>>,
    line: Vec<u8>,
    out: W,
}

impl<W: Write> Write for MaskedLine<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.line.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<W: Write> Drop for MaskedLine<W> {
    fn drop(&mut self) {
        let text = String::from_utf8_lossy(&self.line);
        let masked = match self.masker.read() {
            Ok(m) => m.text(&text).into_string(),
            Err(_) => text.into_owned(),
        };
        let _ = self.out.write_all(masked.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::mask::Secret;

    #[test]
    fn a_log_line_is_masked_once_secrets_are_known() {
        let handle = LogMasker::default();
        let write = |text: &str| {
            let mut out = Vec::new();
            {
                let mut line = MaskedLine {
                    masker: handle.0.clone(),
                    line: Vec::new(),
                    out: &mut out,
                };
                line.write_all(text.as_bytes()).expect("write");
            }
            String::from_utf8(out).expect("utf8")
        };
        assert_eq!(
            write("token=abcdef123\n"),
            "token=abcdef123\n",
            "nothing known yet"
        );
        handle.set(Masker::new(&[Secret::new("abcdef123")], &[]));
        assert_eq!(write("token=abcdef123\n"), "token=***\n");
    }
}
