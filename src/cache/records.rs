//! The local record cache: the last versions of each record this machine
//! read or wrote, on disk, so that a mount cut off from its ring still
//! finds its directories and files (their blocks are in the block cache).
//!
//! Online, every read goes to the ring and the answer replaces what is
//! kept here; the cache is only read when the ring cannot answer. Records
//! are signed, so every version read back is verified (a damaged or
//! planted file is dropped). Bounded in bytes, least recently used out
//! first, except pinned records ([`RecordCache::pin`]), which stay.
//!
//! Layout: `DIR/<first 2 hex>/<64 hex>` holds the versions, as a record
//! file of the store does; writes go through `DIR/tmp/` and a rename (not
//! fsynced: a crash at worst loses an entry of a cache).

use crate::id::Id;
use crate::record::Record;
use crate::store::fsutil::stage_with;
use crate::store::{decode_versions, encode_versions, newest_versions};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Default bound: 256 MiB of records.
pub const DEFAULT_RECORD_CACHE_BYTES: u64 = 256 << 20;

#[derive(Default)]
struct Lru {
    /// Record → (size, last-use tick, hash of the bytes kept; 0 unknown).
    entries: HashMap<Id, (u64, u64, u64)>,
    order: BTreeMap<u64, Id>,
    total: u64,
    tick: u64,
    pinned: HashSet<Id>,
}

impl Lru {
    fn touch(&mut self, key: Id) {
        if let Some(e) = self.entries.get_mut(&key) {
            self.order.remove(&e.1);
            self.tick += 1;
            e.1 = self.tick;
            self.order.insert(self.tick, key);
        }
    }
}

/// Records kept on this machine.
pub struct RecordCache {
    dir: PathBuf,
    tmp: PathBuf,
    capacity: u64,
    lru: Mutex<Lru>,
}

impl RecordCache {
    /// Opens (creating) the cache in `dir`, holding at most `capacity`
    /// bytes of unpinned records.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<RecordCache> {
        let tmp = dir.join("tmp");
        fs::create_dir_all(&tmp)?;
        for e in fs::read_dir(&tmp)?.flatten() {
            let _ = fs::remove_file(e.path());
        }
        let mut lru = Lru::default();
        for sub in fs::read_dir(dir)?.flatten() {
            if sub.file_name().len() != 2 {
                continue;
            }
            for f in fs::read_dir(sub.path())?.flatten() {
                let name = f.file_name().to_string_lossy().into_owned();
                if let (Ok(key), Ok(m)) = (name.parse::<Id>(), f.metadata()) {
                    lru.tick += 1;
                    let t = lru.tick;
                    lru.entries.insert(key, (m.len(), t, 0));
                    lru.order.insert(t, key);
                    lru.total += m.len();
                }
            }
        }
        Ok(RecordCache {
            dir: dir.to_path_buf(),
            tmp,
            capacity,
            lru: Mutex::new(lru),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, key: Id) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    /// The versions kept for `key` (each verified), head first; empty if
    /// none are.
    pub fn get(&self, key: Id) -> Vec<Record> {
        let path = self.path(key);
        let Ok(bytes) = fs::read(&path) else {
            return Vec::new();
        };
        match decode_versions(&bytes, key) {
            Ok(v) if !v.is_empty() && v.iter().all(|r| r.key() == key && r.verify().is_ok()) => {
                self.lock().touch(key);
                v
            }
            _ => {
                log::warn!("cached record {} does not verify; dropped", key.short());
                self.forget(key);
                Vec::new()
            }
        }
    }

    /// Keeps `versions` (what the ring answered, head first) for `key`.
    pub fn put(&self, key: Id, versions: &[Record]) {
        if versions.is_empty() {
            self.forget(key);
            return;
        }
        let Ok(bytes) = encode_versions(versions) else {
            return;
        };
        let fp = u64::from_le_bytes(Id::hash(&bytes).0[..8].try_into().unwrap_or_default()) | 1;
        let path = self.path(key);
        let known = self.lock().entries.get(&key).map(|e| e.2);
        // A file kept before this process started has no fingerprint yet:
        // reading it is cheaper than writing it again.
        let same = match known {
            Some(k) if k == fp => true,
            Some(0) => fs::read(&path).is_ok_and(|old| old == bytes),
            _ => false,
        };
        if same {
            let mut l = self.lock();
            if let Some(e) = l.entries.get_mut(&key) {
                e.2 = fp;
            }
            l.touch(key);
            return;
        }
        let written = stage_with(&self.tmp, &bytes, false).and_then(|s| s.commit(&path));
        if let Err(e) = written {
            log::debug!("record cache: {e}");
            return;
        }
        let mut l = self.lock();
        if let Some((size, old, _)) = l.entries.remove(&key) {
            l.order.remove(&old);
            l.total -= size;
        }
        l.tick += 1;
        let t = l.tick;
        l.entries.insert(key, (bytes.len() as u64, t, fp));
        l.order.insert(t, key);
        l.total += bytes.len() as u64;
        self.evict(l);
    }

    /// Adds a version this machine wrote: it replaces the kept versions
    /// it is above, and stands beside concurrent ones.
    pub fn note_written(&self, rec: &Record) {
        let key = rec.key();
        let mut versions = self.get(key);
        versions.push(rec.clone());
        self.put(key, &newest_versions(versions));
    }

    /// Drops what is kept for `key`.
    pub fn forget(&self, key: Id) {
        let _ = fs::remove_file(self.path(key));
        let mut l = self.lock();
        if let Some((size, t, _)) = l.entries.remove(&key) {
            l.order.remove(&t);
            l.total -= size;
        }
    }

    /// Keeps exactly `keys` (and whatever else fits) through eviction.
    pub fn set_pinned(&self, keys: HashSet<Id>) {
        self.lock().pinned = keys;
    }

    /// Whether `key` is pinned.
    pub fn is_pinned(&self, key: Id) -> bool {
        self.lock().pinned.contains(&key)
    }

    /// Bytes held.
    pub fn bytes(&self) -> u64 {
        self.lock().total
    }

    /// Drops least recently used unpinned records while over capacity.
    fn evict(&self, mut l: std::sync::MutexGuard<'_, Lru>) {
        let mut drop_paths = Vec::new();
        let mut cursor = 0;
        while l.total > self.capacity {
            let Some((&t, &key)) = l.order.range(cursor..).next() else {
                break;
            };
            cursor = t + 1;
            if l.pinned.contains(&key) {
                continue;
            }
            l.order.remove(&t);
            if let Some((size, _, _)) = l.entries.remove(&key) {
                l.total -= size;
            }
            drop_paths.push(self.path(key));
        }
        drop(l);
        for p in drop_paths {
            let _ = fs::remove_file(p);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;

    fn rec(name: &[u8], seq: u64, value: &[u8]) -> Record {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        Record::sign(&sk, name, seq, Some(value.to_vec()))
    }

    #[test]
    fn kept_versions_survive_a_reopen_and_forged_ones_are_dropped() {
        let d = tempfile::tempdir().unwrap();
        let r = rec(b"a", 3, b"three");
        {
            let c = RecordCache::open(d.path(), 1 << 20).unwrap();
            c.put(r.key(), std::slice::from_ref(&r));
            assert_eq!(c.get(r.key()), vec![r.clone()]);
        }
        let c = RecordCache::open(d.path(), 1 << 20).unwrap();
        assert_eq!(c.get(r.key()), vec![r.clone()]);
        // A planted file under another record's name does not verify.
        let other = rec(b"b", 1, b"x");
        let hex = other.key().to_hex();
        fs::create_dir_all(d.path().join(&hex[..2])).unwrap();
        fs::copy(c.path(r.key()), d.path().join(&hex[..2]).join(&hex)).unwrap();
        assert!(c.get(other.key()).is_empty());
    }

    #[test]
    fn a_written_version_replaces_what_it_is_above_and_keeps_concurrent_ones() {
        let d = tempfile::tempdir().unwrap();
        let c = RecordCache::open(d.path(), 1 << 20).unwrap();
        let sk = ed25519_dalek::SigningKey::from_bytes(&[9; 32]);
        let base = Clock::default().next(1);
        let v1 = Record::sign_clocked(&sk, b"f", 1, base.clone(), Some(b"1".to_vec()));
        c.put(v1.key(), std::slice::from_ref(&v1));
        let mine = Record::sign_clocked(&sk, b"f", 2, base.next(1), Some(b"mine".to_vec()));
        c.note_written(&mine);
        assert_eq!(c.get(v1.key()), vec![mine.clone()]);
        let theirs = Record::sign_clocked(&sk, b"f", 2, base.next(2), Some(b"theirs".to_vec()));
        c.note_written(&theirs);
        assert_eq!(c.get(v1.key()).len(), 2);
        // An older version changes nothing.
        c.note_written(&v1);
        assert_eq!(c.get(v1.key()).len(), 2);
    }

    #[test]
    fn eviction_spares_pinned_records() {
        let d = tempfile::tempdir().unwrap();
        let keep = rec(b"keep", 1, &[1; 400]);
        let c = RecordCache::open(d.path(), 1500).unwrap();
        c.put(keep.key(), std::slice::from_ref(&keep));
        c.set_pinned([keep.key()].into_iter().collect());
        for i in 0..10u8 {
            let r = rec(&[b'x', i], 1, &[i; 400]);
            c.put(r.key(), std::slice::from_ref(&r));
        }
        assert!(c.bytes() <= 1500 + 600);
        assert_eq!(c.get(keep.key()), vec![keep]);
    }
}
