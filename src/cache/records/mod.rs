//! The local record cache: the last versions of each record this machine
//! read or wrote, on disk, so that a mount cut off from its ring still
//! finds its directories and files (their blocks are in the block cache).
//!
//! Online, every read goes to the ring and the answer replaces what is
//! kept here; the cache is only read when the ring cannot answer. Records
//! are signed, so every version read back from disk is verified (a damaged or
//! planted entry is dropped). Bounded in bytes, least recently used out
//! first, except pinned records ([`RecordCache::set_pinned`]), which stay.
//!
//! Layout: a log. `DIR/seg-<20-digit number>.log` are append-only
//! segments of about 8 MiB, written one after another; each is a run of
//! frames: u32 LE payload length, u32 LE CRC-32 of key and payload, the
//! 32-byte record key, then the payload, the versions as a record file of
//! the store holds them ([`encode_versions`]), or nothing for a tombstone
//! (the key was forgotten or evicted). A later frame of a key replaces the
//! earlier ones. Nothing is fsynced (a crash at worst loses the tail of a
//! cache): opening scans the segments in order, a torn or damaged frame
//! ends the scan of its segment, and the newest segment is cut there.
//! When dead frames outweigh the live ones (and exceed 16 MiB), the
//! oldest segment's live entries are appended again and the segment
//! deleted, one segment per put. The index (key → segment, offset) and
//! the decoded versions of recently used keys are in memory. The
//! one-file-per-record layout of earlier versions (`DIR/<first 2
//! hex>/<64 hex>`, `DIR/tmp/`) is moved into the log on open.

mod segment_log;
#[cfg(test)]
mod tests;

use crate::id::Id;
use crate::record::{Record, VersionOrder};
use crate::store::{encode_versions, newest_versions};
use segment_log::{Found, LIMITS, Limits, Log, Shared, fingerprint, load, sound};
use std::collections::HashSet;
use std::fs;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};

/// Default bound: 256 MiB of records.
pub const DEFAULT_RECORD_CACHE_BYTES: u64 = 256 << 20;

/// Records kept on this machine.
pub struct RecordCache {
    capacity: u64,
    log: Mutex<Log>,
}

impl RecordCache {
    /// Opens (creating) the cache in `dir`, holding at most `capacity`
    /// bytes of unpinned records. Records above it are evicted by the
    /// next [`put`](Self::put), once the pins may have been set.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<RecordCache> {
        Self::open_with(dir, capacity, LIMITS)
    }

    fn open_with(dir: &Path, capacity: u64, limits: Limits) -> std::io::Result<RecordCache> {
        fs::create_dir_all(dir)?;
        let mut log = Log::new(dir, limits);
        log.load_segments()?;
        log.import_old_layout();
        Ok(RecordCache {
            capacity,
            log: Mutex::new(log),
        })
    }

    fn lock(&self) -> MutexGuard<'_, Log> {
        self.log.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The versions kept for `key` (each verified), head first; empty if
    /// none are.
    pub fn get(&self, key: Id) -> Vec<Record> {
        self.get_shared(key)
            .map(|v| v.as_ref().clone())
            .unwrap_or_default()
    }

    /// [`get`](Self::get), shared with the cache rather than copied.
    fn get_shared(&self, key: Id) -> Option<Shared> {
        // Read and verified outside the lock: a segment file stays
        // readable through its handle even if compaction deletes it.
        let (seen, loaded, from_disk) = match self.lock().find(key) {
            Found::Missing => return None,
            Found::Recent(loc, v) => (loc, Ok((loc.fp, v)), false),
            Found::OnDisk(loc, file) => (
                loc,
                load(&file, &loc, key).map(|(fp, v)| (fp, Arc::new(v))),
                true,
            ),
        };
        // Versions kept in memory came from the ring (every version a
        // read returns is verified), were signed here, or were verified
        // when read from the log: only a read of the log is checked.
        let why = match loaded {
            Ok((fp, v)) if !from_disk || sound(key, &v) => {
                if from_disk {
                    self.lock().settle(key, &seen, fp, &v);
                }
                return Some(v);
            }
            Ok(_) => "a version does not verify".to_string(),
            Err(why) => why,
        };
        log::warn!("cached record {} dropped: {why}", key.short());
        self.lock().forget_if_unchanged(key, &seen);
        None
    }

    /// Keeps `versions` (what the ring answered, verified, head first)
    /// for `key`.
    pub fn put(&self, key: Id, versions: &[Record]) {
        self.put_shared(key, Arc::new(versions.to_vec()));
    }

    fn put_shared(&self, key: Id, versions: Shared) {
        if versions.is_empty() {
            self.forget(key);
            return;
        }
        let Ok(bytes) = encode_versions(&versions) else {
            return;
        };
        let fp = fingerprint(&bytes);
        let mut log = self.lock();
        if log.holds(key, fp, &bytes) {
            log.touch(key);
        } else if !log.write_entry(key, &bytes, fp) {
            return;
        }
        log.recent.keep(key, fp, bytes.len() as u64, versions);
        log.evict(self.capacity);
        log.compact();
    }

    /// Adds a version this machine wrote: it replaces the kept versions
    /// it is above, and stands beside concurrent ones.
    pub fn note_written(&self, rec: &Record) {
        let key = rec.key();
        let versions = match self.get_shared(key) {
            // A writer's next version replaces every kept one: nothing
            // kept is copied to find that out.
            Some(kept) if !kept.iter().all(|k| rec.order(k) == VersionOrder::Newer) => {
                newest_versions(kept.iter().cloned().chain([rec.clone()]).collect())
            }
            _ => vec![rec.clone()],
        };
        self.put_shared(key, Arc::new(versions));
    }

    /// Drops what is kept for `key`.
    pub fn forget(&self, key: Id) {
        self.lock().forget_entry(key);
    }

    /// Keeps exactly `keys` (and whatever else fits) through eviction.
    pub fn set_pinned(&self, keys: HashSet<Id>) {
        self.lock().pinned = keys;
    }

    /// Whether `key` is pinned.
    pub fn is_pinned(&self, key: Id) -> bool {
        self.lock().pinned.contains(&key)
    }

    /// Bytes held (the live frames).
    pub fn bytes(&self) -> u64 {
        self.lock().total
    }
}
