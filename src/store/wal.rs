//! The store's write-ahead log: how a small item is made durable with one
//! `fdatasync` of an append-only file instead of fsyncs of its file and
//! its directory.
//!
//! A small item's file is written and renamed into place without fsync
//! (as a non-durable put is), and its bytes are appended here. A put that
//! must be durable now, or a `Sync` request, then costs one `fdatasync` of
//! the log, however many items it covers. The periodic flush
//! ([`super::Store::sync_pending`]) fsyncs the items' own files and drops
//! the logs written before it began ([`Wal::rotate`], [`Wal::retire`]).
//! When the store opens after a crash, what the old logs hold is put
//! again through the normal checks (signature, sequence number, hash,
//! releases), so a replayed entry can never roll an item back.
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
//! Entries are appended whole, one `write` each, under a lock. Reading
//! stops at the first entry that is short or fails its check: a crash can
//! only tear the tail, and every `fdatasync` covers all entries before it,
//! so nothing after a torn entry was ever acknowledged.

use super::StoreError;
use super::fsutil::{ensure_dir, io_err, sync_dir};
use sha2::{Digest, Sha256};
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

/// Largest item file logged; bigger ones are fsynced on their own (their
/// data dominates the cost, and logging would write it twice).
pub const ITEM_MAX: usize = 64 << 10;
/// A log stops taking entries at this size until the next flush rotates
/// it: items then fall back to fsyncs of their own files.
const LOG_MAX: u64 = 64 << 20;
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

/// The log file being appended to.
#[derive(Debug)]
struct Current {
    number: u64,
    file: Arc<File>,
    len: u64,
}

/// The logs of one store: the one being appended to, and older ones kept
/// until a flush has made their items durable by other means. Lock order:
/// `current`, then `old`.
#[derive(Debug)]
pub struct Wal {
    dir: PathBuf,
    current: Mutex<Current>,
    /// Older logs not yet retired, oldest first, open for `fdatasync`.
    old: Mutex<Vec<(u64, Arc<File>)>>,
}

/// A rotation's mark: once everything pending at the rotation is durable,
/// [`Wal::retire`] removes every log older than `below`.
#[derive(Debug, Clone, Copy)]
pub struct Rotation {
    below: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn log_path(dir: &Path, number: u64) -> PathBuf {
    dir.join(format!("{number:016x}.log"))
}

/// The generation number of a log file name, if it is one.
fn gen_of(name: &str) -> Option<u64> {
    let hex = name.strip_suffix(".log")?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

fn check_of(body: &[u8]) -> [u8; 8] {
    let d = Sha256::digest(body);
    let mut c = [0u8; 8];
    c.copy_from_slice(&d[..8]);
    c
}

/// Encodes one entry.
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
pub fn decode_entries(mut bytes: &[u8]) -> Vec<Entry> {
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

/// Creates log `number` in `dir` (the directory synced, so the file exists
/// after a crash).
fn create(dir: &Path, number: u64) -> Result<Arc<File>, StoreError> {
    let path = log_path(dir, number);
    let f = OpenOptions::new()
        .create_new(true)
        .append(true)
        .open(&path)
        .map_err(|e| io_err("create", &path, e))?;
    sync_dir(dir)?;
    Ok(Arc::new(f))
}

fn datasync(f: &File, dir: &Path) -> Result<(), StoreError> {
    f.sync_data()
        .map_err(|e| io_err("fdatasync log in", dir, e))
}

impl Wal {
    /// Opens the logs in `dir` (created if missing): returns the log and
    /// the entries the existing logs hold, oldest first, to be put again.
    /// The existing logs stay until the first [`retire`](Self::retire).
    pub fn open(dir: &Path) -> Result<(Wal, Vec<Entry>), StoreError> {
        ensure_dir(dir)?;
        let mut gens = Vec::new();
        for e in fs::read_dir(dir).map_err(|e| io_err("list", dir, e))? {
            let e = e.map_err(|e| io_err("list", dir, e))?;
            match e.file_name().to_str().and_then(gen_of) {
                Some(g) => gens.push(g),
                None => log::warn!("ignoring {} in the log directory", e.path().display()),
            }
        }
        gens.sort_unstable();
        let mut entries = Vec::new();
        let mut old = Vec::new();
        for &g in &gens {
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
            let f = OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(|e| io_err("open", &path, e))?;
            old.push((g, Arc::new(f)));
        }
        let number = gens.last().map_or(0, |g| g + 1);
        let file = create(dir, number)?;
        let wal = Wal {
            dir: dir.to_path_buf(),
            current: Mutex::new(Current {
                number,
                file,
                len: 0,
            }),
            old: Mutex::new(old),
        };
        Ok((wal, entries))
    }

    /// Appends an entry (durable after the next [`sync_all`](Self::sync_all));
    /// `false` if the log is full (the caller makes the item durable by
    /// fsyncs instead).
    pub fn append(&self, kind: EntryKind, key: &[u8; 32], file: &[u8]) -> Result<bool, StoreError> {
        if file.len() > ITEM_MAX {
            return Ok(false);
        }
        let entry = encode_entry(kind, key, file);
        let mut cur = lock(&self.current);
        if cur.len + entry.len() as u64 > LOG_MAX {
            return Ok(false);
        }
        if let Err(e) = (&*cur.file).write_all(&entry) {
            // A partial entry may be on the file: later ones would be
            // unreadable behind it, so this log takes no more.
            cur.len = LOG_MAX;
            return Err(io_err("append to log in", &self.dir, e));
        }
        cur.len += entry.len() as u64;
        Ok(true)
    }

    /// Makes every entry of every log durable.
    pub fn sync_all(&self) -> Result<(), StoreError> {
        // Lock order: `current`, then `old` (as in `rotate`). A rotation
        // between the two reads moves the current log into `old`, which
        // is then synced as the current one.
        let cur = Arc::clone(&lock(&self.current).file);
        let files: Vec<Arc<File>> = lock(&self.old)
            .iter()
            .map(|(_, f)| Arc::clone(f))
            .chain(std::iter::once(cur))
            .collect();
        files.iter().try_for_each(|f| datasync(f, &self.dir))
    }

    /// Starts a new log if the current one holds entries. Call it before
    /// taking the set of files to fsync; once they are durable, pass the
    /// mark to [`retire`](Self::retire). `None`: nothing is logged.
    pub fn rotate(&self) -> Result<Option<Rotation>, StoreError> {
        let mut cur = lock(&self.current);
        if cur.len == 0 {
            let old = lock(&self.old);
            return Ok((!old.is_empty()).then_some(Rotation { below: cur.number }));
        }
        let number = cur.number + 1;
        let file = create(&self.dir, number)?;
        let prev = std::mem::replace(
            &mut *cur,
            Current {
                number,
                file,
                len: 0,
            },
        );
        lock(&self.old).push((prev.number, prev.file));
        Ok(Some(Rotation { below: number }))
    }

    /// Removes the logs older than the rotation's mark: every item they
    /// hold has been made durable by other means.
    pub fn retire(&self, r: Rotation) -> Result<(), StoreError> {
        let gone: Vec<u64> = {
            let mut old = lock(&self.old);
            let (gone, kept): (Vec<_>, Vec<_>) = old.drain(..).partition(|(g, _)| *g < r.below);
            *old = kept;
            gone.into_iter().map(|(g, _)| g).collect()
        };
        for g in gone {
            let path = log_path(&self.dir, g);
            match fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &path, e)),
            }
        }
        Ok(())
    }

    /// Bytes in the current log (tests).
    #[cfg(test)]
    pub fn current_len(&self) -> u64 {
        lock(&self.current).len
    }

    /// How many logs exist, current included (tests).
    #[cfg(test)]
    pub fn logs(&self) -> usize {
        lock(&self.old).len() + 1
    }
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
    fn a_reopened_log_gives_back_what_was_appended_until_retired() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("wal");
        {
            let (wal, old) = Wal::open(&d).unwrap();
            assert!(old.is_empty());
            for i in 0..3u8 {
                let (k, key, f) = entry(i, 10);
                assert!(wal.append(k, &key, &f).unwrap());
                wal.sync_all().unwrap();
            }
            assert!(
                !wal.append(EntryKind::Block, &[1; 32], &vec![0; ITEM_MAX + 1])
                    .unwrap()
            );
        }
        let (wal, old) = Wal::open(&d).unwrap();
        assert_eq!(old.len(), 3);
        assert_eq!(old[2].key, [2; 32]);
        assert_eq!(wal.logs(), 2, "the old log is kept until retired");
        // The new log is empty: a rotation only marks the old one.
        let r = wal.rotate().unwrap().unwrap();
        wal.retire(r).unwrap();
        assert_eq!(wal.logs(), 1);
        assert!(wal.rotate().unwrap().is_none(), "nothing left to retire");
        let (_, old) = Wal::open(&d).unwrap();
        assert!(old.is_empty());
    }

    #[test]
    fn a_rotation_keeps_entries_appended_after_it() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("wal");
        let (wal, _) = Wal::open(&d).unwrap();
        let (k, key, f) = entry(1, 10);
        assert!(wal.append(k, &key, &f).unwrap());
        let r = wal.rotate().unwrap().unwrap();
        let (k, key, f) = entry(2, 10);
        assert!(wal.append(k, &key, &f).unwrap());
        wal.sync_all().unwrap();
        wal.retire(r).unwrap();
        drop(wal);
        let (_, old) = Wal::open(&d).unwrap();
        assert_eq!(old.len(), 1);
        assert_eq!(old[0].key, [2; 32]);
    }
}
