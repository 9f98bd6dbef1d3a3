//! `zip=yes`: 1C uploads one archive (in `mode=file` parts like any file) instead of the
//! XML files, and the first `mode=import` unpacks it in bounded steps (`progress` while it
//! works, as 1C-Bitrix does). Only `.xml` entries are written out; pictures
//! (`import_files/…`) are not decompressed at all, since obmen passes their paths on and
//! never the pictures.
//!
//! An archive is hostile input: every name is checked before anything is written (no
//! absolute names, no `..`, the rules of [`safe_name`]); encrypted entries and methods
//! other than stored/deflate are refused; each entry is read through a byte limit (its
//! compressed size times [`MAX_RATIO`], and what the session's `upload_limit` has left),
//! never trusting the sizes the headers claim; a CRC mismatch is an error; an entry that
//! is itself an archive is refused (it would be unpacked in its turn). When anything
//! fails, what this archive wrote is deleted, so nothing of it can be imported.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::Path;
use std::time::Instant;

use serde::{Deserialize, Serialize};
use zip::{CompressionMethod, ZipArchive};

use super::session::safe_name;

/// Entries one archive may hold (pictures included): a catalog has one picture per product
/// at most a few, and the central directory is held in memory while unpacking.
pub const MAX_ENTRIES: usize = 100_000;
/// An entry may expand at most this many times its compressed size (XML deflates 10 to 30
/// times; a deflate bomb about 1000).
pub const MAX_RATIO: u64 = 200;
/// Small entries may expand more than [`MAX_RATIO`] up to this size.
const RATIO_FLOOR: u64 = 1 << 20;

/// How far one archive has been unpacked, saved between `mode=import` requests.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct UnzipState {
    /// The next entry to look at.
    pub next: u64,
    pub entries: u64,
    /// Names written so far (relative to the work dir).
    pub written: Vec<String>,
    /// Entries not written (pictures and other non-XML files).
    pub skipped: u64,
    pub done: bool,
    /// Why the archive was refused; every later `mode=import` of the session repeats it.
    pub error: Option<String>,
}

impl UnzipState {
    pub fn encode(&self) -> Vec<u8> {
        postcard::to_stdvec(self).unwrap_or_default()
    }

    pub fn decode(bytes: &[u8]) -> Option<UnzipState> {
        postcard::from_bytes(bytes).ok()
    }
}

/// What one step may spend.
#[derive(Clone, Copy, Debug)]
pub struct Budget {
    /// Bytes the session may still hold (its `upload_limit` less what it holds now).
    pub bytes_left: u64,
    pub upload_limit: u64,
    pub deadline: Instant,
}

/// Whether a file starts like a zip archive (`PK\3\4`, or `PK\5\6` for an empty one).
/// XML and the pictures 1C sends never do.
pub fn is_archive(path: &Path) -> bool {
    let mut head = [0u8; 4];
    File::open(path)
        .and_then(|mut f| f.read_exact(&mut head))
        .is_ok()
        && (head == *b"PK\x03\x04" || head == *b"PK\x05\x06")
}

/// An entry that is written out: XML files (import.xml, offers.xml …), at any depth.
pub fn wanted(name: &str) -> bool {
    name.rsplit('.')
        .next()
        .is_some_and(|ext| ext.eq_ignore_ascii_case("xml"))
        && name.contains('.')
}

/// Unpacks from `state` on until the archive is done, the deadline passes, or an error
/// (then what this archive wrote is removed and `error` says why).
pub fn step(archive: &Path, dir: &Path, mut state: UnzipState, budget: Budget) -> UnzipState {
    if let Err(e) = run(archive, dir, &mut state, budget) {
        for name in &state.written {
            let _ = std::fs::remove_file(dir.join(name));
        }
        state.written.clear();
        state.error = Some(e);
    }
    state
}

fn run(archive: &Path, dir: &Path, st: &mut UnzipState, budget: Budget) -> Result<(), String> {
    let mut file = File::open(archive).map_err(|e| format!("cannot open the archive: {e}"))?;
    // Before the zip crate reads the central directory into memory: an upload of up to
    // `upload_limit` could declare millions of entries (gigabytes of index).
    let declared = declared_entries(&mut file)
        .map_err(|e| format!("cannot read the archive's end record: {e}"))?;
    if declared > MAX_ENTRIES as u64 {
        return Err(format!(
            "the archive declares {declared} entries, more than {MAX_ENTRIES}"
        ));
    }
    let mut zip = ZipArchive::new(BufReader::new(file))
        .map_err(|e| format!("not a readable zip archive ({e}); was every part uploaded?"))?;
    if zip.len() > MAX_ENTRIES {
        return Err(format!(
            "the archive holds {} entries, more than {MAX_ENTRIES}",
            zip.len()
        ));
    }
    st.entries = zip.len() as u64;
    let own = archive
        .file_name()
        .map(|n| n.to_string_lossy().into_owned());
    if st.next == 0 {
        // Every entry is checked before anything is written.
        for i in 0..zip.len() {
            check_entry(&zip, i, own.as_deref())?;
        }
    }
    let mut left = budget.bytes_left;
    // A set beside the saved list: an archive may hold up to MAX_ENTRIES XML files.
    let mut seen: std::collections::HashSet<String> = st.written.iter().cloned().collect();
    // At least one entry per step, however long opening the archive took: else a slow
    // open answered `progress` for ever.
    let first = st.next;
    while st.next < st.entries {
        if st.next > first && Instant::now() >= budget.deadline {
            return Ok(());
        }
        let i = usize::try_from(st.next).map_err(|_| "too many entries".to_owned())?;
        st.next += 1;
        let (rel, compressed) = {
            let entry = zip
                .by_index_data(i)
                .map_err(|e| format!("entry {i} cannot be read: {e}"))?;
            let name = entry_name(&entry.name().map_err(|e| e.to_string())?);
            if entry.is_dir() || !wanted(&name) {
                st.skipped += u64::from(!entry.is_dir());
                continue;
            }
            (name, entry.compressed_size())
        };
        let path = dir.join(safe_name(&rel)?);
        let by_ratio = compressed.saturating_mul(MAX_RATIO).max(RATIO_FLOOR);
        let cap = by_ratio.min(left);
        let mut entry = zip
            .by_index(i)
            .map_err(|e| format!("{rel} cannot be read: {e}"))?;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| format!("cannot write {rel}: {e}"))?;
        }
        let mut out = File::create(&path).map_err(|e| format!("cannot write {rel}: {e}"))?;
        if seen.insert(rel.clone()) {
            st.written.push(rel.clone());
        }
        // One byte over the cap tells a bomb from an entry that just fits.
        let n = std::io::copy(&mut (&mut entry).take(cap.saturating_add(1)), &mut out)
            .map_err(|e| format!("{rel} is corrupt: {e}"))?;
        if n > cap {
            return Err(if cap == by_ratio {
                format!(
                    "{rel} expands to more than {MAX_RATIO} times its compressed size \
                     ({compressed} bytes): refused as a zip bomb"
                )
            } else {
                format!(
                    "unpacking {rel} would pass upload_limit={} bytes for this session",
                    budget.upload_limit
                )
            });
        }
        // The entry must end here: the CRC is checked when the reader reaches its end.
        let mut probe = [0u8; 1];
        let more = entry
            .read(&mut probe)
            .map_err(|e| format!("{rel} is corrupt: {e}"))?;
        if more != 0 {
            return Err(format!("{rel} is longer than it can be"));
        }
        out.sync_data()
            .map_err(|e| format!("cannot write {rel}: {e}"))?;
        // The next mode=import unpacks every archive in the work dir: one written here
        // would be unpacked in its turn (a nested bomb, or names never checked with these).
        if is_archive(&path) {
            return Err(format!(
                "{rel} is itself a zip archive: nested archives are refused"
            ));
        }
        left -= n;
    }
    st.done = true;
    Ok(())
}

/// The largest entry count any end-of-central-directory record in the archive's tail
/// declares (ZIP64 records followed): every record a reader could fall back to, since the
/// zip crate tries earlier ones when the last is unusable. 0 when there is none (the crate
/// then refuses the file itself).
fn declared_entries(file: &mut File) -> std::io::Result<u64> {
    use std::io::{Seek, SeekFrom};
    const EOCD: &[u8; 4] = b"PK\x05\x06";
    const LOCATOR: &[u8; 4] = b"PK\x06\x07";
    const EOCD64: &[u8; 4] = b"PK\x06\x06";
    let len = file.seek(SeekFrom::End(0))?;
    // The record (22 bytes) with a comment of up to 65,535 bytes, and a ZIP64 locator before it.
    let start = len.saturating_sub(22 + 65_535 + 20 + 4);
    file.seek(SeekFrom::Start(start))?;
    let mut tail = Vec::new();
    file.take(len - start).read_to_end(&mut tail)?;
    let u16_at = |b: &[u8], i: usize| u64::from(u16::from_le_bytes([b[i], b[i + 1]]));
    let mut most = 0u64;
    for at in 0..tail.len().saturating_sub(21) {
        if &tail[at..at + 4] != EOCD {
            continue;
        }
        let mut entries = u16_at(&tail, at + 10);
        if entries == 0xFFFF && at >= 20 && &tail[at - 20..at - 16] == LOCATOR {
            let mut offset = [0u8; 8];
            offset.copy_from_slice(&tail[at - 12..at - 4]);
            let offset = u64::from_le_bytes(offset);
            let mut record = [0u8; 56];
            if offset.checked_add(56).is_some_and(|end| end <= len) {
                file.seek(SeekFrom::Start(offset))?;
                file.read_exact(&mut record)?;
                if &record[..4] == EOCD64 {
                    let mut total = [0u8; 8];
                    total.copy_from_slice(&record[32..40]);
                    entries = u64::from_le_bytes(total);
                }
            }
        }
        most = most.max(entries);
    }
    file.seek(SeekFrom::Start(0))?;
    Ok(most)
}

/// Names as 1C may write them on Windows (`import_files\ab\x.jpg`) read with `/`.
fn entry_name(raw: &str) -> String {
    raw.replace('\\', "/")
}

fn check_entry<R: Read + std::io::Seek>(
    zip: &ZipArchive<R>,
    i: usize,
    own: Option<&str>,
) -> Result<(), String> {
    let entry = zip
        .by_index_data(i)
        .map_err(|e| format!("entry {i} cannot be read: {e}"))?;
    let name = entry_name(&entry.name().map_err(|e| format!("entry {i}: {e}"))?);
    let trimmed = name.trim_end_matches('/');
    safe_name(trimmed).map_err(|e| format!("the archive is refused: {e}"))?;
    if entry.is_dir() {
        return Ok(());
    }
    if entry.encrypted() {
        return Err(format!(
            "{name} is encrypted: send the archive without a password"
        ));
    }
    let method = entry.compression();
    if !matches!(
        method,
        CompressionMethod::Stored | CompressionMethod::Deflated
    ) {
        return Err(format!(
            "{name} is compressed with {method}: only stored and deflate entries are read"
        ));
    }
    if own == Some(trimmed) {
        return Err(format!("{name} has the name of the archive itself"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::Duration;
    use zip::write::SimpleFileOptions;

    fn budget(bytes: u64) -> Budget {
        Budget {
            bytes_left: bytes,
            upload_limit: bytes,
            deadline: Instant::now() + Duration::from_secs(30),
        }
    }

    fn archive(dir: &Path, entries: &[(&str, &[u8])]) -> std::path::PathBuf {
        let path = dir.join("upload.zip");
        let mut w = zip::ZipWriter::new(File::create(&path).expect("create"));
        let opts = SimpleFileOptions::default().compression_method(CompressionMethod::Deflated);
        for (name, bytes) in entries {
            w.start_file(*name, opts).expect("entry");
            w.write_all(bytes).expect("write");
        }
        w.finish().expect("finish");
        path
    }

    #[test]
    fn xml_entries_are_written_and_pictures_skipped() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zip = archive(
            dir.path(),
            &[
                ("import.xml", b"<a/>"),
                ("import_files/ab/x.jpg", &[0xFF, 0xD8, 0xFF]),
                ("offers.XML", b"<b/>"),
            ],
        );
        assert!(is_archive(&zip));
        let st = step(&zip, dir.path(), UnzipState::default(), budget(1 << 20));
        assert_eq!(st.error, None);
        assert!(st.done);
        assert_eq!(st.skipped, 1);
        assert_eq!(st.written, vec!["import.xml", "offers.XML"]);
        assert!(!dir.path().join("import_files").exists());
        assert_eq!(
            std::fs::read(dir.path().join("import.xml")).expect("read"),
            b"<a/>"
        );
    }

    /// A step whose time went on opening and checking the archive still moves on.
    #[test]
    fn every_step_unpacks_at_least_one_entry() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zip = archive(dir.path(), &[("a.xml", b"<a/>"), ("b.xml", b"<b/>")]);
        let late = Budget {
            deadline: Instant::now(),
            ..budget(1 << 20)
        };
        let st = step(&zip, dir.path(), UnzipState::default(), late);
        assert_eq!((st.next, st.error.as_deref()), (1, None));
        let st = step(&zip, dir.path(), st, late);
        assert!(st.next == 2 && st.done, "{st:?}");
    }

    #[test]
    fn a_bomb_stops_at_the_ratio_and_leaves_nothing() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zeros = vec![b' '; 8 << 20];
        let zip = archive(dir.path(), &[("a.xml", b"<a/>"), ("import.xml", &zeros)]);
        let st = step(&zip, dir.path(), UnzipState::default(), budget(1 << 30));
        let e = st.error.expect("refused");
        assert!(e.contains("zip bomb"), "{e}");
        assert!(!dir.path().join("a.xml").exists());
        assert!(!dir.path().join("import.xml").exists());
    }

    #[test]
    fn the_session_budget_bounds_what_is_written() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text: Vec<u8> = (0..200_000u32)
            .flat_map(|i| format!("<x>{i}</x>").into_bytes())
            .collect();
        let zip = archive(dir.path(), &[("import.xml", &text)]);
        let st = step(&zip, dir.path(), UnzipState::default(), budget(100_000));
        let e = st.error.expect("refused");
        assert!(e.contains("upload_limit=100000"), "{e}");
    }

    #[test]
    fn hostile_names_refuse_the_whole_archive_before_writing() {
        for bad in [
            "../evil.xml",
            "/etc/evil.xml",
            "a/../../evil.xml",
            "..\\evil.xml",
        ] {
            let dir = tempfile::tempdir().expect("tempdir");
            let work = dir.path().join("work");
            std::fs::create_dir_all(&work).expect("mkdir");
            let path = work.join("upload.zip");
            let mut w = zip::ZipWriter::new(File::create(&path).expect("create"));
            let opts = SimpleFileOptions::default();
            w.start_file("import.xml", opts).expect("entry");
            w.write_all(b"<a/>").expect("write");
            // The writer itself would clean such a name: written raw as it arrives.
            w.start_file(bad, opts).expect("entry");
            w.write_all(b"<evil/>").expect("write");
            w.finish().expect("finish");
            let st = step(&path, &work, UnzipState::default(), budget(1 << 20));
            let e = st.error.expect("refused");
            assert!(e.contains("refused"), "{bad}: {e}");
            assert!(!work.join("import.xml").exists(), "{bad}");
            assert!(!dir.path().join("evil.xml").exists(), "{bad}");
        }
    }

    /// An end record that declares more entries than allowed is refused from the record
    /// alone, before the central directory is read into memory (plain and ZIP64).
    #[test]
    fn an_archive_declaring_too_many_entries_is_refused_before_its_index_is_read() {
        let dir = tempfile::tempdir().expect("tempdir");
        let zip = archive(dir.path(), &[("import.xml", b"<x/>")]);
        let good = std::fs::read(&zip).expect("read");
        let eocd = good.len() - 22;
        assert_eq!(&good[eocd..eocd + 4], b"PK\x05\x06");
        let mut file = File::open(&zip).expect("open");
        assert_eq!(declared_entries(&mut file).expect("read"), 1);

        // A second end record after the real one (as a comment would hold it), declaring
        // 0xFFFF entries with a ZIP64 locator pointing at a ZIP64 record of 30 million.
        let mut bytes = good.clone();
        let z64_at = bytes.len() as u64;
        let mut z64 = Vec::from(*b"PK\x06\x06");
        z64.extend_from_slice(&44u64.to_le_bytes());
        z64.extend_from_slice(&[45, 0, 45, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        z64.extend_from_slice(&30_000_000u64.to_le_bytes());
        z64.extend_from_slice(&30_000_000u64.to_le_bytes());
        z64.extend_from_slice(&0u64.to_le_bytes());
        z64.extend_from_slice(&0u64.to_le_bytes());
        bytes.extend_from_slice(&z64);
        bytes.extend_from_slice(b"PK\x06\x07");
        bytes.extend_from_slice(&0u32.to_le_bytes());
        bytes.extend_from_slice(&z64_at.to_le_bytes());
        bytes.extend_from_slice(&1u32.to_le_bytes());
        bytes.extend_from_slice(b"PK\x05\x06");
        bytes.extend_from_slice(&[0, 0, 0, 0, 0xFF, 0xFF, 0xFF, 0xFF]);
        bytes.extend_from_slice(&[0xFF; 8]);
        bytes.extend_from_slice(&[0, 0]);
        std::fs::write(&zip, &bytes).expect("write");
        let st = step(&zip, dir.path(), UnzipState::default(), budget(1 << 20));
        let e = st.error.expect("refused");
        assert!(e.contains("declares 30000000 entries"), "{e}");
        assert!(!dir.path().join("import.xml").exists());

        // A plain record declaring 65,000 is within the limit as far as this check goes.
        let mut bytes = good;
        let n = bytes.len();
        bytes[n - 12..n - 10].copy_from_slice(&65_000u16.to_le_bytes());
        std::fs::write(&zip, &bytes).expect("write");
        let mut file = File::open(&zip).expect("open");
        assert_eq!(declared_entries(&mut file).expect("read"), 65_000);
    }

    #[test]
    fn corrupt_and_truncated_archives_are_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let text = "<x>1</x>".repeat(10_000);
        let zip = archive(dir.path(), &[("import.xml", text.as_bytes())]);
        let mut bytes = std::fs::read(&zip).expect("read");
        // Flip bytes inside the compressed data: the inflater or the CRC must object.
        for b in &mut bytes[60..80] {
            *b ^= 0x5A;
        }
        std::fs::write(&zip, &bytes).expect("write");
        let st = step(&zip, dir.path(), UnzipState::default(), budget(1 << 20));
        assert!(st.error.is_some(), "{st:?}");
        assert!(!dir.path().join("import.xml").exists());
        std::fs::write(&zip, &bytes[..bytes.len() / 2]).expect("write");
        let st = step(&zip, dir.path(), UnzipState::default(), budget(1 << 20));
        let e = st.error.expect("refused");
        assert!(e.contains("not a readable zip"), "{e}");
    }
}
