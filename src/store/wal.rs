//! The write-ahead log of store layout 2 before packs: read once, when a
//! store written by an older release opens, and then deleted.
//!
//! Older releases wrote each small item to its own file without fsync and
//! appended its bytes here, one `fdatasync` making it durable; a flush
//! fsynced the files and dropped the logs. After a crash the logs may
//! hold items whose files never reached the disk, so the store puts what
//! they hold again, through the normal checks (signature, sequence
//! number, hash, releases: a replayed entry can never roll an item back),
//! makes it durable in its packs ([`super::packs`]), and deletes the logs.
//!
//! # Format
//!
//! `DIR/wal/<gen>.log`, `<gen>` 16 lower-case hex digits, growing. A log is
//! a sequence of entries:
//!
//! ```text
//! len    u32 little-endian   n, the body's length (≤ ITEM_MAX + 33)
//! check  8 bytes             the first 8 bytes of SHA-256(body)
//! body   n bytes:
//!   kind 1 byte              1 = record file, 2 = block file
//!   key  32 bytes            the item's key
//!   file n - 33 bytes        the item's file, exactly as in records/ or blocks/
//! ```
//!
//! Reading stops at the first entry that is short or fails its check: a
//! crash could only tear the tail.

use super::StoreError;
use super::fsutil::{io_err, number_of, numbered_path, sync_dir};
use sha2::{Digest, Sha256};
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};

/// Largest item file older releases logged.
const ITEM_MAX: usize = 64 << 10;
/// Bytes before an entry's body: length and check.
const HEAD: usize = 12;
/// Bytes of an entry body before the item's file: kind and key.
const BODY_HEAD: usize = 33;

/// What an entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Record = 1,
    Block = 2,
}

/// One entry read back from a log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: EntryKind,
    pub key: [u8; 32],
    pub file: Vec<u8>,
}

fn log_path(dir: &Path, number: u64) -> PathBuf {
    numbered_path(dir, number, "log")
}

/// The generation number of a log file name, if it is one.
fn gen_of(name: &str) -> Option<u64> {
    number_of(name, "log")
}

fn check_of(body: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(body);
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[..8]);
    c
}

/// Encodes one entry (tests: a log as older releases wrote it).
#[cfg(test)]
pub fn encode_entry(kind: EntryKind, key: &[u8; 32], file: &[u8]) -> Vec<u8> {
    let mut body = Vec::with_capacity(BODY_HEAD + file.len());
    body.push(kind as u8);
    body.extend_from_slice(key);
    body.extend_from_slice(file);
    let mut out = Vec::with_capacity(HEAD + body.len());
    out.extend_from_slice(&(body.len() as u32).to_le_bytes());
    out.extend_from_slice(&check_of(&body));
    out.extend_from_slice(&body);
    out
}

/// The entries of a log's bytes, up to the first torn or damaged one.
fn decode_entries(mut bytes: &[u8]) -> Vec<Entry> {
    let mut out = Vec::new();
    while bytes.len() >= HEAD {
        let n = u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]) as usize;
        if !(BODY_HEAD..=BODY_HEAD + ITEM_MAX).contains(&n) || bytes.len() < HEAD + n {
            break;
        }
        let body = &bytes[HEAD..HEAD + n];
        if check_of(body)[..] != bytes[4..HEAD] {
            break;
        }
        let kind = match body[0] {
            1 => EntryKind::Record,
            2 => EntryKind::Block,
            _ => break,
        };
        let mut key = [0u8; 32];
        key.copy_from_slice(&body[1..BODY_HEAD]);
        out.push(Entry {
            kind,
            key,
            file: body[BODY_HEAD..].to_vec(),
        });
        bytes = &bytes[HEAD + n..];
    }
    out
}

/// The entries of the legacy logs in `dir`, oldest first, and the log
/// files (to delete once what they hold is durable elsewhere). Nothing if
/// there is no such directory.
pub fn read_legacy(dir: &Path) -> Result<(Vec<PathBuf>, Vec<Entry>), StoreError> {
    let listing = match fs::read_dir(dir) {
        Ok(l) => l,
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok((Vec::new(), Vec::new())),
        Err(e) => return Err(io_err("list", dir, e)),
    };
    let mut gens = Vec::new();
    for e in listing {
        let e = e.map_err(|e| io_err("list", dir, e))?;
        match e.file_name().to_str().and_then(gen_of) {
            Some(g) => gens.push(g),
            None => log::warn!("ignoring {} in the log directory", e.path().display()),
        }
    }
    gens.sort_unstable();
    let mut entries = Vec::new();
    let mut files = Vec::new();
    for g in gens {
        let path = log_path(dir, g);
        let bytes = fs::read(&path).map_err(|e| io_err("read", &path, e))?;
        let found = decode_entries(&bytes);
        let used: usize = found.iter().map(|e| HEAD + BODY_HEAD + e.file.len()).sum();
        if used < bytes.len() {
            log::warn!(
                "log {}: {} bytes after the last whole entry ignored (a write torn by a crash)",
                path.display(),
                bytes.len() - used
            );
        }
        entries.extend(found);
        files.push(path);
    }
    Ok((files, entries))
}

/// Deletes the legacy logs `files` and their directory `dir`.
pub fn remove_legacy(dir: &Path, files: &[PathBuf]) -> Result<(), StoreError> {
    for f in files {
        match fs::remove_file(f) {
            Ok(()) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("remove", f, e)),
        }
    }
    match fs::remove_dir(dir) {
        Ok(()) => {}
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => log::warn!("cannot remove {}: {e}", dir.display()),
    }
    if let Some(parent) = dir.parent() {
        sync_dir(parent)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(i: u8, n: usize) -> (EntryKind, [u8; 32], Vec<u8>) {
        (EntryKind::Record, [i; 32], vec![i; n])
    }

    #[test]
    fn entries_read_back_up_to_a_torn_tail() {
        let mut bytes = Vec::new();
        for i in 0..5u8 {
            let (k, key, f) = entry(i, 100 + i as usize);
            bytes.extend(encode_entry(k, &key, &f));
        }
        let whole = decode_entries(&bytes);
        assert_eq!(whole.len(), 5);
        assert_eq!(whole[3].key, [3; 32]);
        assert_eq!(whole[3].file, vec![3; 103]);
        // Every cut inside the last entry loses exactly that entry.
        let last = encode_entry(EntryKind::Block, &[9; 32], &[9; 50]);
        let mut torn = bytes.clone();
        torn.extend(&last);
        for cut in 1..last.len() {
            assert_eq!(
                decode_entries(&torn[..torn.len() - cut]).len(),
                5,
                "cut {cut}"
            );
        }
        assert_eq!(decode_entries(&torn).len(), 6);
        // A damaged byte ends the log there.
        let mut bad = bytes.clone();
        let second = HEAD + BODY_HEAD + 100;
        bad[second + HEAD + 5] ^= 1;
        assert_eq!(decode_entries(&bad).len(), 1);
        // An absurd length does not make it read past the end.
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(decode_entries(&huge).is_empty());
    }

    #[test]
    fn legacy_logs_are_read_in_order_and_removed() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("wal");
        assert_eq!(read_legacy(&d).unwrap().1.len(), 0);
        std::fs::create_dir(&d).unwrap();
        for g in [2u64, 1] {
            let (k, key, f) = entry(g as u8, 10);
            std::fs::write(log_path(&d, g), encode_entry(k, &key, &f)).unwrap();
        }
        let (files, entries) = read_legacy(&d).unwrap();
        assert_eq!(
            entries.iter().map(|e| e.key[0]).collect::<Vec<_>>(),
            vec![1, 2]
        );
        remove_legacy(&d, &files).unwrap();
        assert!(!d.exists());
    }
}
