//! The offline journal on disk: what a mount wrote while its ring was out
//! of reach, in order, until it is replayed to the ring.
//!
//! Each entry is one file, `DIR/<20-digit number>`, holding a postcard
//! [`Entry`]: a block (with its owner's claim) or a record version. A file
//! is written to `DIR/tmp/` first (a unique name opened with `O_EXCL`),
//! then renamed into place, so a crash leaves whole entries only; a durable
//! append also fsyncs the file and the directory before it returns, a lazy
//! one at the next [`Journal::sync`]. On open, the entries are read back in
//! order and indexed; one that does not decode is moved to `DIR/damaged/`
//! (kept for the user, never deleted) with a warning.
//!
//! The index keeps each record's newest journaled version in memory (records
//! are small and read often while offline) and, for blocks, only which entry
//! holds them: a block is read back from its file when asked for.

use crate::id::Id;
use crate::ownership::Claim;
use crate::record::Record;
use crate::store::StoreError;
use crate::store::fsutil::{ensure_dir, stage_with, sync_dir, sync_file};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// One journaled write.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Entry {
    /// A block, under the hash of its bytes, claimed by its owner.
    Block {
        key: Id,
        data: Vec<u8>,
        claim: Claim,
    },
    /// A record version.
    Record { record: Record },
}

impl Entry {
    /// The item's DHT key.
    pub fn key(&self) -> Id {
        match self {
            Entry::Block { key, .. } => *key,
            Entry::Record { record } => record.key(),
        }
    }
}

/// What one entry is, without its bytes.
#[derive(Debug, Clone, Copy)]
struct Meta {
    key: Id,
    block: bool,
    bytes: u64,
}

#[derive(Default)]
struct Index {
    /// The number the next entry gets.
    next: u64,
    /// Every entry, oldest first.
    entries: BTreeMap<u64, Meta>,
    /// Each record's newest journaled version and its entry.
    records: HashMap<Id, (u64, Record)>,
    /// Each journaled block's (newest) entry.
    blocks: HashMap<Id, u64>,
    /// Sum of the entries' sizes.
    bytes: u64,
    /// Entries written lazily and not fsynced yet.
    unsynced: Vec<PathBuf>,
}

/// The journal in one directory.
pub struct Journal {
    dir: PathBuf,
    tmp: PathBuf,
    index: Mutex<Index>,
}

/// How many entries and bytes a journal holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct JournalSize {
    pub entries: u64,
    pub bytes: u64,
}

fn entry_name(n: u64) -> String {
    format!("{n:020}")
}

impl Journal {
    /// Opens (creating if needed) the journal in `dir` and indexes what it
    /// holds.
    pub fn open(dir: &Path) -> Result<Journal, StoreError> {
        let tmp = dir.join("tmp");
        ensure_dir(dir)?;
        ensure_dir(&tmp)?;
        // Leftovers of writes a crash interrupted: never renamed, so never
        // acknowledged.
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                let _ = fs::remove_file(e.path());
            }
        }
        let mut numbers: Vec<u64> = Vec::new();
        let rd =
            fs::read_dir(dir).map_err(|e| StoreError::Io(format!("{}: {e}", dir.display())))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.len() == 20
                && let Ok(n) = name.parse::<u64>()
            {
                numbers.push(n);
            }
        }
        numbers.sort_unstable();
        let j = Journal {
            dir: dir.to_path_buf(),
            tmp,
            index: Mutex::new(Index::default()),
        };
        for n in numbers {
            let path = dir.join(entry_name(n));
            match fs::read(&path)
                .map_err(|e| e.to_string())
                .and_then(|b| postcard::from_bytes::<Entry>(&b).map_err(|e| e.to_string()))
            {
                Ok(entry) => j.note(n, &entry, fs::metadata(&path).map(|m| m.len()).unwrap_or(0)),
                Err(e) => {
                    let damaged = dir.join("damaged");
                    let _ = ensure_dir(&damaged);
                    let _ = fs::rename(&path, damaged.join(entry_name(n)));
                    log::warn!(
                        "journal entry {} is damaged ({e}); moved to {}",
                        path.display(),
                        damaged.display()
                    );
                }
            }
            let mut ix = j.lock();
            ix.next = ix.next.max(n + 1);
        }
        Ok(j)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Index> {
        self.index.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Adds entry `n` to the index.
    fn note(&self, n: u64, entry: &Entry, bytes: u64) {
        let mut ix = self.lock();
        let key = entry.key();
        match entry {
            Entry::Block { .. } => {
                ix.blocks.insert(key, n);
            }
            Entry::Record { record } => {
                ix.records.insert(key, (n, record.clone()));
            }
        }
        ix.entries.insert(
            n,
            Meta {
                key,
                block: matches!(entry, Entry::Block { .. }),
                bytes,
            },
        );
        ix.bytes += bytes;
    }

    /// Appends `entry` (blocking file I/O); with `durable`, it is on disk
    /// when this returns, else after the next [`sync`](Self::sync).
    pub fn append(&self, entry: &Entry) -> Result<u64, StoreError> {
        self.append_with(entry, false)
    }

    /// [`append`](Self::append), fsynced before it returns.
    pub fn append_durable(&self, entry: &Entry) -> Result<u64, StoreError> {
        self.append_with(entry, true)
    }

    fn append_with(&self, entry: &Entry, durable: bool) -> Result<u64, StoreError> {
        let bytes = postcard::to_stdvec(entry).map_err(|e| StoreError::Io(e.to_string()))?;
        let staged = stage_with(&self.tmp, &bytes, durable)?;
        // The number is taken under the lock and the rename done under it
        // too, so entries land in the order their numbers say.
        let mut ix = self.lock();
        let n = ix.next;
        let path = self.dir.join(entry_name(n));
        staged.commit(&path)?;
        ix.next = n + 1;
        if !durable {
            ix.unsynced.push(path);
        }
        drop(ix);
        if durable {
            sync_dir(&self.dir)?;
        }
        self.note(n, entry, bytes.len() as u64);
        Ok(n)
    }

    /// Makes every entry appended so far durable.
    pub fn sync(&self) -> Result<(), StoreError> {
        let files = std::mem::take(&mut self.lock().unsynced);
        if files.is_empty() {
            return Ok(());
        }
        let synced = files
            .iter()
            .try_for_each(|f| sync_file(f))
            .and_then(|()| sync_dir(&self.dir));
        if synced.is_err() {
            // Tried again by the next sync.
            self.lock().unsynced.extend(files);
        }
        synced
    }

    /// The newest journaled version of record `key`.
    pub fn record(&self, key: Id) -> Option<Record> {
        self.lock().records.get(&key).map(|(_, r)| r.clone())
    }

    /// Whether entry `n` holds the newest journaled version of its record
    /// (older ones need not be replayed: the newest builds on them).
    pub fn is_newest(&self, n: u64, key: Id) -> bool {
        self.lock().records.get(&key).is_none_or(|(m, _)| *m == n)
    }

    /// Whether block `key` is journaled (no I/O).
    pub fn has_block(&self, key: Id) -> bool {
        self.lock().blocks.contains_key(&key)
    }

    /// Journaled block `key`, read back from its entry (checked against
    /// its hash).
    pub fn block(&self, key: Id) -> Option<Vec<u8>> {
        let n = *self.lock().blocks.get(&key)?;
        match self.read(n) {
            Ok(Entry::Block { data, .. }) if Id::hash(&data) == key => Some(data),
            _ => None,
        }
    }

    /// Entry `n` from its file.
    pub fn read(&self, n: u64) -> Result<Entry, StoreError> {
        let path = self.dir.join(entry_name(n));
        let bytes =
            fs::read(&path).map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))?;
        postcard::from_bytes(&bytes).map_err(|e| StoreError::Io(format!("{}: {e}", path.display())))
    }

    /// The numbers of the oldest `max` entries.
    pub fn oldest(&self, max: usize) -> Vec<u64> {
        self.lock().entries.keys().take(max).copied().collect()
    }

    /// Removes entry `n` (it reached the ring, or a newer one replaces it).
    pub fn remove(&self, n: u64) -> Result<(), StoreError> {
        let path = self.dir.join(entry_name(n));
        match fs::remove_file(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::Io(format!("remove {}: {e}", path.display()))),
        }
        let mut ix = self.lock();
        if let Some(m) = ix.entries.remove(&n) {
            ix.bytes -= m.bytes;
            if m.block {
                if ix.blocks.get(&m.key) == Some(&n) {
                    ix.blocks.remove(&m.key);
                }
            } else if ix.records.get(&m.key).is_some_and(|(k, _)| *k == n) {
                ix.records.remove(&m.key);
            }
        }
        ix.unsynced.retain(|p| p != &path);
        Ok(())
    }

    /// Moves entry `n` aside to `DIR/failed/` (the ring refused it for
    /// good): kept for the user, out of the replay.
    pub fn set_aside(&self, n: u64) -> Result<(), StoreError> {
        let failed = self.dir.join("failed");
        ensure_dir(&failed)?;
        let path = self.dir.join(entry_name(n));
        fs::rename(&path, failed.join(entry_name(n)))
            .map_err(|e| StoreError::Io(format!("move {} aside: {e}", path.display())))?;
        self.remove(n)
    }

    /// How much the journal holds.
    pub fn size(&self) -> JournalSize {
        let ix = self.lock();
        JournalSize {
            entries: ix.entries.len() as u64,
            bytes: ix.bytes,
        }
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.lock().entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ownership::Claim;

    fn claim(key: Id) -> Claim {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        Claim::sign(&sk, key, 7)
    }

    #[test]
    fn entries_survive_a_reopen_in_order_and_the_newest_record_wins() {
        let d = tempfile::tempdir().unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let r1 = Record::sign(&sk, b"dir", 1, Some(b"one".to_vec()));
        let r2 = Record::sign(&sk, b"dir", 2, Some(b"two".to_vec()));
        let data = b"block bytes".to_vec();
        let key = Id::hash(&data);
        {
            let j = Journal::open(d.path()).unwrap();
            j.append(&Entry::Block {
                key,
                data: data.clone(),
                claim: claim(key),
            })
            .unwrap();
            j.append(&Entry::Record { record: r1.clone() }).unwrap();
            j.append_durable(&Entry::Record { record: r2.clone() })
                .unwrap();
            j.sync().unwrap();
            assert_eq!(j.size().entries, 3);
        }
        // A write a crash cut short, left in tmp/: not an entry.
        fs::write(d.path().join("tmp").join("1-2-x.tmp"), b"half").unwrap();
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.size().entries, 3);
        assert_eq!(j.record(r1.key()), Some(r2.clone()));
        assert_eq!(j.block(key), Some(data));
        let order = j.oldest(10);
        assert_eq!(order.len(), 3);
        assert!(matches!(j.read(order[0]).unwrap(), Entry::Block { .. }));
        assert!(!j.is_newest(order[1], r1.key()));
        assert!(j.is_newest(order[2], r1.key()));
        // Removing the older version keeps the newer one readable.
        j.remove(order[1]).unwrap();
        assert_eq!(j.record(r1.key()), Some(r2));
        j.remove(order[2]).unwrap();
        assert_eq!(j.record(r1.key()), None);
        // New entries number after the old ones, even after a reopen.
        let n = j.append(&Entry::Record { record: r1.clone() }).unwrap();
        assert!(n > order[2]);
        assert!(fs::read_dir(d.path().join("tmp")).unwrap().next().is_none());
    }

    #[test]
    fn a_damaged_entry_is_moved_aside_not_lost() {
        let d = tempfile::tempdir().unwrap();
        let j = Journal::open(d.path()).unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&[2; 32]);
        let r = Record::sign(&sk, b"f", 1, Some(b"x".to_vec()));
        j.append_durable(&Entry::Record { record: r }).unwrap();
        fs::write(d.path().join(entry_name(5)), b"\xff\xff garbage").unwrap();
        drop(j);
        let j = Journal::open(d.path()).unwrap();
        assert_eq!(j.size().entries, 1);
        assert!(d.path().join("damaged").join(entry_name(5)).exists());
        // The next number is past the damaged one: it is never reused.
        let sk2 = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let r2 = Record::sign(&sk2, b"g", 1, None);
        assert!(j.append(&Entry::Record { record: r2 }).unwrap() > 5);
    }
}
