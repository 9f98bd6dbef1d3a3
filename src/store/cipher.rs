//! The master key and authenticated encryption (XChaCha20-Poly1305, a random nonce per
//! value) of what must not rest in the data file in clear: secrets and the work copies.
//! A fingerprint of the key is kept in the file so that a wrong key is refused up front.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use sha2::{Digest, Sha256};

pub const KEY_LEN: usize = 32;
const NONCE_LEN: usize = 24;

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot read the master key {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the master key {path} must hold exactly {KEY_LEN} bytes (it holds {len})")]
    Length { path: PathBuf, len: usize },
    #[error("cannot create the master key {path}: {source}")]
    Create {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "no master key at {path}, but the data file {data} was sealed with one: restore that key file (or point OBMEN_MASTER_KEY_FILE or server.master_key_file at it)"
    )]
    Missing { path: PathBuf, data: PathBuf },
}

/// The key for serving: the file's, or a new one when neither the key nor the data file
/// exists yet (a first start). A rotation interrupted after its commit left the new key
/// beside the old one as `<key>.new`; `Store::open` then refuses the old key, and
/// `obmen secret rotate-key` explains how to finish.
pub fn load_or_create(path: &Path, data_file: &Path) -> Result<(MasterKey, bool), KeyError> {
    if path.exists() {
        return MasterKey::load(path).map(|k| (k, false));
    }
    if data_file.exists() {
        return Err(KeyError::Missing {
            path: path.to_path_buf(),
            data: data_file.to_path_buf(),
        });
    }
    let key = MasterKey::generate();
    key.write_new(path)?;
    Ok((key, true))
}

/// 32 random bytes. Never printed.
#[derive(Clone)]
pub struct MasterKey {
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(***)")
    }
}

impl MasterKey {
    pub fn generate() -> MasterKey {
        MasterKey {
            bytes: rand::random(),
        }
    }

    pub fn load(path: &Path) -> Result<MasterKey, KeyError> {
        let raw = std::fs::read(path).map_err(|source| KeyError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let bytes: [u8; KEY_LEN] = raw.as_slice().try_into().map_err(|_| KeyError::Length {
            path: path.to_path_buf(),
            len: raw.len(),
        })?;
        Ok(MasterKey { bytes })
    }

    /// Writes the key to a new file readable by its owner only (0600), synced to disk.
    pub fn write_new(&self, path: &Path) -> Result<(), KeyError> {
        let err = |source| KeyError::Create {
            path: path.to_path_buf(),
            source,
        };
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(err)?;
        file.write_all(&self.bytes).map_err(err)?;
        file.sync_all().map_err(err)
    }

    /// A short public digest of the key, stored in the data file to recognise it.
    pub fn fingerprint(&self) -> String {
        let mut h = Sha256::new();
        h.update(b"obmen master key v1\0");
        h.update(self.bytes);
        hex::encode(&h.finalize()[..16])
    }

    /// `nonce || ciphertext`; `context` is bound to the value (a row cannot be moved to
    /// another row and still open).
    pub fn seal(&self, context: &[u8], plain: &[u8]) -> Vec<u8> {
        let cipher = XChaCha20Poly1305::new(&self.bytes.into());
        let nonce_bytes: [u8; NONCE_LEN] = rand::random();
        let nonce = XNonce::from(nonce_bytes);
        let sealed = cipher.encrypt(
            &nonce,
            Payload {
                msg: plain,
                aad: context,
            },
        );
        let mut out = Vec::with_capacity(NONCE_LEN + plain.len() + 16);
        out.extend_from_slice(&nonce_bytes);
        // Encryption with a valid key and nonce cannot fail; an empty result would fail to open.
        out.extend(sealed.unwrap_or_default());
        out
    }

    /// Opens what `seal` made with the same key and context; `None` if it does not verify.
    pub fn open(&self, context: &[u8], sealed: &[u8]) -> Option<Vec<u8>> {
        if sealed.len() < NONCE_LEN {
            return None;
        }
        let (nonce, body) = sealed.split_at(NONCE_LEN);
        let cipher = XChaCha20Poly1305::new(&self.bytes.into());
        cipher
            .decrypt(
                XNonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: context,
                },
            )
            .ok()
    }
}

/// A random key for lookup hashes: the dedup table, the ID map and the key and external-id
/// indexes hold `hash(value)`, never the value, so personal data in a key (a phone, an IIN)
/// does not rest in clear, while equal values still find each other. It is sealed under the
/// master key and survives key rotation unchanged, so the hashes stay valid.
#[derive(Clone)]
pub struct LookupKey {
    bytes: [u8; KEY_LEN],
}

impl std::fmt::Debug for LookupKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("LookupKey(***)")
    }
}

impl LookupKey {
    pub fn generate() -> LookupKey {
        LookupKey {
            bytes: rand::random(),
        }
    }

    pub fn from_bytes(raw: &[u8]) -> Option<LookupKey> {
        Some(LookupKey {
            bytes: raw.try_into().ok()?,
        })
    }

    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// 128 bits of HMAC-SHA256, hex.
    pub fn hash(&self, text: &str) -> String {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(&self.bytes)
            .expect("HMAC takes any key length");
        mac.update(text.as_bytes());
        hex::encode(&mac.finalize().into_bytes()[..16])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_bound_to_context_and_key() {
        let key = MasterKey::generate();
        let sealed = key.seal(b"secret:a", b"hello");
        assert_eq!(
            key.open(b"secret:a", &sealed).as_deref(),
            Some(&b"hello"[..])
        );
        assert_eq!(key.open(b"secret:b", &sealed), None, "moved to another row");
        assert_eq!(
            MasterKey::generate().open(b"secret:a", &sealed),
            None,
            "another key"
        );
        assert_ne!(
            key.seal(b"secret:a", b"hello"),
            sealed,
            "a fresh nonce every time"
        );
        assert_ne!(key.fingerprint(), MasterKey::generate().fingerprint());
        assert_eq!(format!("{key:?}"), "MasterKey(***)");
    }

    #[test]
    fn key_file_is_owner_only_and_exact() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("master.key");
        let key = MasterKey::generate();
        key.write_new(&path).expect("write");
        assert!(key.write_new(&path).is_err(), "never overwritten");
        assert_eq!(
            MasterKey::load(&path).expect("load").fingerprint(),
            key.fingerprint()
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).expect("meta").permissions().mode() & 0o777;
            assert_eq!(mode, 0o600);
        }
        std::fs::write(&path, b"short").expect("write");
        assert!(matches!(
            MasterKey::load(&path),
            Err(KeyError::Length { len: 5, .. })
        ));
    }
}
