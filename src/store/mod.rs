//! This node's blocks and records on disk (DESIGN.md, "Data model").
//!
//! The store knows nothing of the ring or the network: it keeps what it is
//! given, checks it, and says what it holds. Its API is synchronous
//! (`std::fs`); the node shares one [`Store`] in an `Arc` and calls it from
//! `spawn_blocking`.
//!
//! # On-disk layout
//!
//! ```text
//! DIR/packs/<n>.pack       records and small blocks, appended ([`packs`])
//! DIR/blocks/<xx>/<key>    a block of more than packs::BLOCK_MAX bytes: its
//!                          owners' claims, then the block exactly as put
//!                          (≤ MAX_BLOCK), see [`block_file`]
//! DIR/records/<xx>/<key>   a record as releases before packs kept it
//! DIR/releases.log         owners' releases kept as tombstones ([`releases`])
//! DIR/wal/<gen>.log        the write-ahead log of layout 2, read once ([`wal`])
//! DIR/tmp/                 staged writes; emptied on open
//! ```
//!
//! `<key>` is the 64 lower-case hex digits of the item's [`Id`] and `<xx>` its
//! first two, spreading items over 256 directories. An item's "file" is
//! the same bytes wherever it is kept, in a pack entry or a file of its
//! own. The data part of a block's file hashes to its key. A record's
//! file holds the postcard encoding of [`Record`], fields in order:
//!
//! ```text
//! owner  32 bytes     ed25519 public key, raw (a fixed array: no length)
//! name   varint n, n bytes
//! seq    varint       (postcard varints are LEB128: 7 bits a byte, low first)
//! value  0x00                      tombstone
//!        0x01, varint n, n bytes   a value
//! sig    varint 64, 64 bytes       ed25519 signature
//! ```
//!
//! # Invariants
//!
//! - A record or small block is one entry appended to the packs; an older
//!   entry of the same item is garbage, which compaction frees
//!   ([`packs`]). A failed append (a full disk) leaves the old entry the
//!   newest.
//! - Every file in `blocks/` was written whole: bytes go to a temp file in
//!   `tmp/`, renamed into place. A failed write leaves the old version in
//!   place and no temp file.
//! - A put is durable when it returns if asked to be, else after the next
//!   `Sync` or flush: a packed item by an `fdatasync` of its segment (one
//!   for every put before it), a bigger block by fsyncs of its file and
//!   directory ([`fsutil`]).
//! - A file in `records/` or `blocks/` from before packs is read as it
//!   is; the item's next change goes to the packs, and the file is
//!   deleted once that entry is durable (a packed entry is always newer
//!   than a file of the same item).
//! - The in-memory [`Index`] lists exactly the files on disk, with block sizes
//!   and record sequence numbers, so version queries never touch the disk.
//! - A block is hashed once when stored. It is served to readers without
//!   being hashed again ([`Store::serve_block`]: every reader checks it
//!   against the key); a block read for the store's own use is re-hashed,
//!   and the scrub ([`scrub`]) re-hashes every block in the background.
//!   A record is verified (signature) when stored; read back, a packed one
//!   is checked by its pack entry's CRC and its key (every reader checks
//!   the signature), and one in a file of its own from before packs by
//!   signature and key again. A bad copy found is logged, deleted and
//!   reported as [`StoreError::Corrupt`], so the caller fetches it again
//!   from a replica.
//! - A stored record's sequence number only grows while it is held.
//! - A block is deleted only when a release signed by each of its claiming
//!   owners (or a repair hand-over, [`Store::remove`]) says so; the release
//!   is in `releases.log`, synced, before any file goes.
//! - The index charges each block's file size to each of its claiming
//!   owners and each record's to its owner ([`Store::usage`]).
//!
//! # Locking
//!
//! Lock order: one of `record_locks`, then one of `block_locks`, then
//! `releases`, then `index`. The index lock is only held for in-memory work, never across I/O.
//! Record puts hold their key's record stripe across check and write. Block puts
//! hold only the stripe of their key, so different blocks are written and
//! fsynced in parallel. All are `std::sync::Mutex`es: no `.await` is ever
//! held under them.

pub mod block_file;
pub mod direct;
mod error;
pub mod fsutil;
mod index;
mod items;
mod mem;
mod packs;
mod pending;
pub mod releases;
mod scan;
mod scrub;
mod space;
#[cfg(test)]
mod tests;
mod wal;

pub use error::StoreError;
pub use items::{
    ItemStore, MAX_VERSIONS, MAX_VERSIONS_BYTES, after_release, decode_versions, encode_versions,
    judge_claims, judge_versions, newest_versions, order_versions,
};
pub use mem::MemItems;
pub use scrub::Scrubbed;
pub use space::{FsSpace, fs_space};

use crate::id::Id;
use crate::item::{ItemVersion, MAX_BLOCK, NodeSpace};
use crate::ownership::{Claim, Freed, OwnedBlock, Release, now_ms};
use crate::record::Record;
use block_file::BlockFile;
use fsutil::{read_opt, remove_file, sync_dir, sync_file};
use index::{BlockMeta, Index, RecordMeta};
use releases::{ReleaseBook, ReleaseLog};
use space::SpaceGuard;
use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

/// Version of the store's on-disk layout, shown by `peerstore --version`.
///
/// 1: a block file is the block alone, a record file one version without
/// a clock. 2: block files carry their owners' claims ([`block_file`],
/// magic `PSB1`), record files hold versions with clocks, and the store
/// keeps `releases.log` and `wal/`. 3 (this one): records and blocks of at
/// most [`packs::BLOCK_MAX`] bytes are appended to `packs/` instead of a
/// file each. Each version reads what the ones before wrote (a block file
/// without claims as a block without claims; a record or small block file
/// moves into the packs at its next change; a `wal/` is replayed once);
/// nothing in the directory records the version: each file tells its own
/// layout.
pub const FORMAT_VERSION: u32 = 3;

/// Name of the block directory under the store root.
const BLOCKS_DIR: &str = "blocks";
/// Name of the record directory under the store root.
const RECORDS_DIR: &str = "records";
/// Name of the staging directory under the store root.
const TMP_DIR: &str = "tmp";
/// Name of the release log under the store root.
const RELEASES_LOG: &str = "releases.log";
/// Name of the legacy write-ahead log directory under the store root.
const WAL_DIR: &str = "wal";
/// Name of the pack directory under the store root.
const PACKS_DIR: &str = "packs";
/// Pack segments compacted at most per flush.
const COMPACT_PER_FLUSH: usize = 4;
/// How often expired releases are forgotten (an hour).
const PRUNE_EVERY_MS: u64 = 3600 * 1000;
/// Number of block lock stripes. Two blocks share a stripe with chance
/// 1/64; then their writes take turns, which costs time but not correctness.
const BLOCK_STRIPES: usize = 64;

/// Counts of what the store holds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Blocks held.
    pub blocks: u64,
    /// Records held, tombstones included.
    pub records: u64,
    /// Bytes of all block files and record files.
    pub bytes: u64,
}

/// The two kinds of item, each in its own directory (if kept in a file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Kind {
    Block,
    Record,
}

/// This node's blocks and records, on disk under one directory.
#[derive(Debug)]
pub struct Store {
    /// The root directory; holds `blocks/`, `records/` and `tmp/`.
    root: PathBuf,
    /// `root/tmp`, where writes are staged before the rename.
    tmp: PathBuf,
    /// Whether `tmp/` and every fan-out directory are on one file system
    /// (so one `syncfs` of it makes every pending file durable).
    one_fs: bool,
    /// What is on disk; see [`Index`]. Held only for in-memory work.
    index: Mutex<Index>,
    /// Item files written without fsync (visible, not yet durable), made
    /// durable by [`Store::sync_pending`] (periodically, or on a `Sync`
    /// request).
    pending: Mutex<pending::PendingFiles>,
    /// Records and small blocks ([`packs`]).
    packs: packs::Packs,
    /// Serializes record puts, record corruption handling and removals of
    /// the same key, so a record's check-and-write is atomic; striped by key
    /// so unrelated records do not wait on each other's fsync.
    record_locks: Vec<Mutex<()>>,
    /// Serializes writes and removals of blocks, striped by key so unrelated
    /// blocks do not wait on each other's fsync.
    block_locks: Vec<Mutex<()>>,
    /// Refuses new items when the file system is nearly full ([`space`]).
    space: SpaceGuard,
    /// The releases kept, their log, and when the book was last pruned.
    releases: Mutex<Releases>,
    /// Items written and blocks served so far ([`Store::served`]).
    served: AtomicU64,
}

/// The kept releases of a [`Store`].
#[derive(Debug)]
struct Releases {
    book: ReleaseBook,
    log: ReleaseLog,
    pruned_at: u64,
}

/// The index entry of a block file holding `claims` in `len` bytes.
fn block_meta(len: u64, claims: &[Claim]) -> BlockMeta {
    BlockMeta {
        len,
        owners: claims.iter().map(|c| (c.owner, c.time)).collect(),
    }
}

/// Locks `m`, carrying on after a panic in another holder: every critical
/// section leaves disk and index consistent at each step, so the data behind
/// a poisoned lock is still sound.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decodes and checks a record file that should hold the versions of
/// record `key` (head first). The error is a reason for the log.
fn decode_record(bytes: &[u8], key: Id) -> Result<Vec<Record>, String> {
    items::decode_versions(bytes, key)
}

impl Store {
    /// Opens (creating if needed) the store in `dir`: makes `blocks/`,
    /// `records/` and `tmp/`, removes leftover temp files, and indexes what
    /// is on disk. Unreadable or misplaced files are logged and skipped;
    /// record files that do not decode or verify are removed.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        fsutil::ensure_dir(dir)?;
        for sub in [BLOCKS_DIR, RECORDS_DIR, TMP_DIR] {
            fsutil::ensure_dir(&dir.join(sub))?;
        }
        // All 256 fan-out directories up front (one fsync per parent), so
        // the first writes do not each create and sync a directory.
        for sub in [BLOCKS_DIR, RECORDS_DIR] {
            let parent = dir.join(sub);
            for b in 0..=255u8 {
                let d = parent.join(hex::encode([b]));
                match std::fs::create_dir(&d) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(StoreError::Io(format!("create {}: {e}", d.display()))),
                }
            }
            sync_dir(&parent)?;
        }
        let tmp = dir.join(TMP_DIR);
        fsutil::clear_dir(&tmp)?;
        let fan_out: Vec<PathBuf> = [BLOCKS_DIR, RECORDS_DIR]
            .iter()
            .flat_map(|sub| (0..=255u8).map(move |b| dir.join(sub).join(hex::encode([b]))))
            .collect();
        let one_fs = fsutil::one_file_system(&tmp, fan_out.iter().map(PathBuf::as_path));
        let now = now_ms();
        let (log, kept) = ReleaseLog::open(&dir.join(RELEASES_LOG), now)?;
        let mut book = ReleaseBook::default();
        for r in kept {
            book.add(&std::sync::Arc::new(r));
        }
        let mut index = scan::build_index(&dir.join(BLOCKS_DIR), &dir.join(RECORDS_DIR))?;
        let (packs, packed) = packs::Packs::open(&dir.join(PACKS_DIR))?;
        for (kind, key) in packed {
            let Some(bytes) = packs.get(kind, key).transpose()? else {
                continue;
            };
            // A file of the same item is from before packs: the entry is newer.
            let legacy = match kind {
                Kind::Block => index.block(key).is_some(),
                Kind::Record => index.record(key).is_some(),
            };
            match scan::meta_of(kind, key, bytes) {
                Ok(scan::Meta::Block(m)) => index.set_block(key, m),
                Ok(scan::Meta::Record(m)) => index.set_record(key, m),
                Err(why) => {
                    log::error!("packed {kind:?} {key}: {why}; dropping it");
                    packs.remove(kind, key)?;
                    continue;
                }
            }
            if legacy {
                packs.shadow(Self::path_in(dir, kind, key));
            }
        }
        let t = index.totals();
        log::info!(
            "store {}: {} blocks, {} records, {} bytes",
            dir.display(),
            t.blocks,
            t.records,
            t.bytes
        );
        let (logs, logged) = wal::read_legacy(&dir.join(WAL_DIR))?;
        let store = Store {
            root: dir.to_path_buf(),
            tmp,
            one_fs,
            index: Mutex::new(index),
            pending: Mutex::new(pending::PendingFiles::default()),
            packs,
            record_locks: (0..BLOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            block_locks: (0..BLOCK_STRIPES).map(|_| Mutex::new(())).collect(),
            space: SpaceGuard::new(dir),
            releases: Mutex::new(Releases {
                book,
                log,
                pruned_at: now,
            }),
            served: AtomicU64::new(0),
        };
        store.replay(logged)?;
        if !logs.is_empty() {
            wal::remove_legacy(&dir.join(WAL_DIR), &logs)?;
        }
        Ok(store)
    }

    /// Puts again what the legacy write-ahead logs of an earlier run hold
    /// (their items may not have reached the disk), through the normal
    /// checks, then makes it all durable; the caller drops those logs.
    fn replay(&self, logged: Vec<wal::Entry>) -> Result<(), StoreError> {
        if logged.is_empty() {
            return self.sync_pending().map(|_| ());
        }
        let (mut applied, mut refused) = (0usize, 0usize);
        for e in &logged {
            let key = Id(e.key);
            let res = match e.kind {
                wal::EntryKind::Record => match decode_record(&e.file, key) {
                    Ok(versions) => versions.iter().try_fold(false, |any, rec| {
                        match self.put_record_with(rec, None, false) {
                            Ok(stored) => Ok(any || stored),
                            Err(StoreError::Stale { .. }) => Ok(any),
                            Err(e) => Err(e),
                        }
                    }),
                    Err(why) => Err(StoreError::Io(why)),
                },
                wal::EntryKind::Block => match block_file::decode(e.file.clone(), key) {
                    Some(f) => self.put_block_with(key, &f.data, &f.claims, false),
                    None => Err(StoreError::BadHash),
                },
            };
            match res {
                Ok(_) => applied += 1,
                // Newer versions held, released blocks: nothing to redo.
                Err(e) => {
                    log::debug!("log entry for {key} not applied: {e}");
                    refused += 1;
                }
            }
            // Held already (a process crash leaves files written but not
            // fsynced): made durable below either way.
            let kind = match e.kind {
                wal::EntryKind::Block => Kind::Block,
                wal::EntryKind::Record => Kind::Record,
            };
            let path = self.path(kind, key);
            if path.exists() {
                lock(&self.pending).note(path);
            }
        }
        log::info!(
            "store {}: replayed {} logged writes ({} already superseded)",
            self.root.display(),
            applied,
            refused
        );
        self.sync_pending().map(|_| ())
    }

    /// The store's root directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// Where the item `key` of `kind` lives if kept in a file.
    fn path(&self, kind: Kind, key: Id) -> PathBuf {
        Self::path_in(&self.root, kind, key)
    }

    /// [`path`](Self::path) in the store at `root`.
    fn path_in(root: &Path, kind: Kind, key: Id) -> PathBuf {
        let hex = key.to_hex();
        let dir = match kind {
            Kind::Block => BLOCKS_DIR,
            Kind::Record => RECORDS_DIR,
        };
        root.join(dir).join(&hex[..2]).join(hex)
    }

    /// The lock stripe guarding writes of record `key`.
    fn record_lock(&self, key: Id) -> &Mutex<()> {
        &self.record_locks[key.0[30] as usize % self.record_locks.len()]
    }

    /// The lock stripe guarding writes of block `key`.
    fn block_lock(&self, key: Id) -> &Mutex<()> {
        &self.block_locks[key.0[31] as usize % self.block_locks.len()]
    }

    /// Writes the file of item `key`, not yet durable (see
    /// [`sync_if_pending`](Self::sync_if_pending)): a record, or a block
    /// of at most [`packs::BLOCK_MAX`] bytes of data, is appended to the
    /// packs; a bigger block is staged (past the page cache: [`direct`])
    /// and renamed into place. The file is `parts`, one after the other.
    fn write_item(
        &self,
        kind: Kind,
        key: Id,
        parts: &[&[u8]],
        data_len: usize,
        replace: bool,
    ) -> Result<(), StoreError> {
        self.served.fetch_add(1, Ordering::Relaxed);
        let path = self.path(kind, key);
        if packs::packs(kind, data_len) {
            // Held but not packed: its file is from before packs, deleted
            // once the entry is durable.
            let legacy = (replace && !self.packs.holds(kind, key)).then_some(path);
            return match parts {
                [bytes] => self.packs.put(kind, key, bytes, legacy),
                _ => self.packs.put(kind, key, &parts.concat(), legacy),
            };
        }
        direct::stage_parts(&self.tmp, parts)?.commit(&path)?;
        lock(&self.pending).note(path);
        Ok(())
    }

    /// The file of item `key`, wherever it is kept; `None` if absent.
    fn read_item(&self, kind: Kind, key: Id) -> Result<Option<Vec<u8>>, StoreError> {
        match self.packs.get(kind, key) {
            Some(r) => r.map(Some),
            None => read_opt(&self.path(kind, key)),
        }
    }

    /// The versions in record `key`'s file as read from disk. A packed
    /// record's signatures were checked when it was stored, and its entry's
    /// CRC on this read: they are not checked again (an ed25519 check per
    /// version, twice per put on every replica before). A file of its own
    /// (from before packs) is checked in full.
    fn read_record(&self, key: Id) -> Result<Option<Result<Vec<Record>, String>>, StoreError> {
        if let Some(r) = self.packs.get(Kind::Record, key) {
            return Ok(Some(items::decode_stored_versions(&r?, key)));
        }
        Ok(read_opt(&self.path(Kind::Record, key))?.map(|b| decode_record(&b, key)))
    }

    /// Deletes item `key` wherever it is kept (a file from before packs
    /// too). `true` if a file went: its directory needs an fsync for
    /// that to be durable.
    fn remove_item(&self, kind: Kind, key: Id) -> Result<bool, StoreError> {
        let path = self.path(kind, key);
        // A packed item has a file only while one from before packs waits
        // to be deleted: no unlink to try otherwise.
        if self.packs.remove(kind, key)? && !self.packs.unshadow(&path) {
            return Ok(false);
        }
        let removed = remove_file(&path)?;
        if removed {
            lock(&self.pending).remove(&path);
        }
        Ok(removed)
    }

    /// Makes item `key` durable now, if it is not yet.
    fn sync_if_pending(&self, kind: Kind, key: Id) -> Result<(), StoreError> {
        if self.packs.holds(kind, key) {
            return self.packs.sync_for(kind, key);
        }
        let path = self.path(kind, key);
        let one = lock(&self.pending).snapshot_one(&path);
        if one.is_empty() {
            return Ok(());
        }
        sync_file(&path)?;
        Self::sync_parent(&path)?;
        lock(&self.pending).settle(one);
        Ok(())
    }

    /// The flush: makes every put so far durable (fsyncs of each pending
    /// file and of each directory it was renamed into, 16 at a time, and
    /// of the packs), then compacts the packs if they are due. Returns how
    /// many files were pending.
    pub fn sync_pending(&self) -> Result<usize, StoreError> {
        // Listed until durable: a durable put meanwhile syncs them itself.
        let taken = lock(&self.pending).snapshot();
        let n = taken.len();
        // On failure they stay listed for the next attempt (an fsync may
        // be repeated).
        fsutil::sync_with_parents(&taken.paths())?;
        lock(&self.pending).settle(taken);
        self.packs.sync_all()?;
        self.compact()?;
        Ok(n)
    }

    /// Makes every put so far durable for a writer waiting on it (a `Sync`
    /// request): one `fdatasync` of the packs for records and small
    /// blocks; for bigger blocks, if the store is on one file system
    /// (checked at open), one `syncfs` of it (one journal commit, however
    /// many files; it also writes out other programs' dirty data on that
    /// file system, which the flush does not), else fsyncs of each.
    /// Returns how many files and pack segments were pending.
    pub fn sync_pending_now(&self) -> Result<usize, StoreError> {
        let files = lock(&self.pending).snapshot();
        let n = files.len();
        if !files.is_empty() {
            if self.one_fs {
                fsutil::syncfs(&self.tmp)?;
            } else {
                fsutil::sync_with_parents(&files.paths())?;
            }
            lock(&self.pending).settle(files);
        }
        let packed = self.packs.unsynced();
        self.packs.sync_all()?;
        Ok(n + usize::from(packed))
    }

    /// Compacts the packs while enough of them is garbage: the oldest
    /// segment's live items are appended again (each under its item's
    /// lock, so no put of it interleaves), then the segment is deleted.
    /// Returns how many segments went.
    pub fn compact(&self) -> Result<usize, StoreError> {
        let mut freed = 0;
        while freed < COMPACT_PER_FLUSH {
            let Some((seg, items)) = self.packs.compaction_due() else {
                break;
            };
            for (kind, key) in items {
                let _item = match kind {
                    Kind::Record => lock(self.record_lock(key)),
                    Kind::Block => lock(self.block_lock(key)),
                };
                self.packs.relocate(seg, kind, key)?;
            }
            if !self.packs.retire(seg)? {
                break;
            }
            freed += 1;
        }
        Ok(freed)
    }

    /// Fsyncs the directory holding `path`.
    fn sync_parent(path: &Path) -> Result<(), StoreError> {
        match path.parent() {
            Some(p) => sync_dir(p),
            None => Ok(()),
        }
    }

    /// Stores block `data` under `key`, owned by `claims`. `Ok(true)` if
    /// newly stored or given a new claim, `Ok(false)` if it was already
    /// held with these claims (the file is not rewritten).
    pub fn put_block(&self, key: Id, data: &[u8], claims: &[Claim]) -> Result<bool, StoreError> {
        self.put_block_with(key, data, claims, true)
    }

    /// [`put_block`](Self::put_block); without `durable` the block is
    /// written and renamed into place but not fsynced: visible at once,
    /// durable after the next [`sync_pending`](Self::sync_pending). A
    /// durable put of a block held non-durably syncs it. The claims are
    /// judged by [`judge_claims`].
    pub fn put_block_with(
        &self,
        key: Id,
        data: &[u8],
        claims: &[Claim],
        durable: bool,
    ) -> Result<bool, StoreError> {
        if data.len() > MAX_BLOCK {
            return Err(StoreError::TooLarge(data.len()));
        }
        if !key.names(data) {
            return Err(StoreError::BadHash);
        }
        let _stripe = lock(self.block_lock(key));
        let held_meta = lock(&self.index).block_meta(key).cloned();
        // The common repeat (a retry, a repair): every claim is held as
        // new or newer already, so nothing can change.
        if let Some(m) = &held_meta
            && claims
                .iter()
                .all(|c| m.owners.iter().any(|(o, t)| *o == c.owner && *t >= c.time))
        {
            if durable {
                self.sync_if_pending(Kind::Block, key)?;
            }
            return Ok(false);
        }
        let held = match held_meta {
            Some(_) => match self.read_block_file(key)? {
                Some(f) => Some(f.claims),
                None => None,
            },
            None => None,
        };
        let merged = {
            let r = lock(&self.releases);
            judge_claims(key, held.as_deref(), claims, &r.book)?
        };
        let Some(merged) = merged else {
            if durable {
                self.sync_if_pending(Kind::Block, key)?;
            }
            return Ok(false);
        };
        if held.is_none() {
            self.space.admit(data.len() as u64)?;
        }
        let head = block_file::head(&merged, 0);
        self.write_item(Kind::Block, key, &[&head, data], data.len(), held.is_some())?;
        // Indexed before the write is made durable: the file is in place.
        lock(&self.index).set_block(key, block_meta((head.len() + data.len()) as u64, &merged));
        if durable {
            self.sync_if_pending(Kind::Block, key)?;
        }
        Ok(true)
    }

    /// Reads block `key`, checking that its bytes still hash to `key`.
    /// A bad copy is deleted and reported as [`StoreError::Corrupt`].
    pub fn get_block(&self, key: Id) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.get_owned_block(key)?.map(|f| f.data))
    }

    /// [`get_block`](Self::get_block), with the block's claims.
    pub fn get_owned_block(&self, key: Id) -> Result<Option<BlockFile>, StoreError> {
        if lock(&self.index).block(key).is_none() {
            return Ok(None);
        }
        if let Ok(Some(bytes)) = self.read_item(Kind::Block, key)
            && let Some(f) = block_file::decode(bytes, key)
        {
            return Ok(Some(f));
        }
        let _stripe = lock(self.block_lock(key));
        self.read_block_file(key)
    }

    /// Reads block `key` under its stripe (so no put or remove races with
    /// it). A copy that is gone is forgotten; a bad copy is deleted and
    /// reported as [`StoreError::Corrupt`].
    fn read_block_file(&self, key: Id) -> Result<Option<BlockFile>, StoreError> {
        if lock(&self.index).block(key).is_none() {
            return Ok(None);
        }
        let Some(bytes) = self.read_item(Kind::Block, key)? else {
            log::warn!("block {key} was indexed but is gone");
            lock(&self.index).drop_block(key);
            return Ok(None);
        };
        if let Some(f) = block_file::decode(bytes, key) {
            return Ok(Some(f));
        }
        log::error!("corrupt block {key}: its bytes do not hash to the key; removing it");
        self.remove_item(Kind::Block, key)?;
        lock(&self.index).drop_block(key);
        Self::sync_parent(&self.path(Kind::Block, key))?;
        Err(StoreError::Corrupt(key))
    }

    /// Applies an owner's release: logs it durably, then removes the
    /// owner's claims it covers, deleting each block left without a claim.
    pub fn release(&self, rel: &Release) -> Result<Freed, StoreError> {
        rel.verify()?;
        let rel = std::sync::Arc::new(rel.clone());
        {
            let mut r = lock(&self.releases);
            r.log.append(&rel)?;
            r.book.add(&rel);
            let now = now_ms();
            if now.saturating_sub(r.pruned_at) > PRUNE_EVERY_MS {
                r.book.prune(now);
                r.pruned_at = now;
            }
        }
        let mut freed = Freed::default();
        let mut dirs: HashSet<PathBuf> = HashSet::new();
        let mut packed = false;
        for &key in &rel.keys {
            let _stripe = lock(self.block_lock(key));
            let Some(meta) = lock(&self.index).block_meta(key).cloned() else {
                continue;
            };
            if !meta
                .owners
                .iter()
                .any(|(o, t)| *o == rel.owner && *t <= rel.time)
            {
                continue;
            }
            let path = self.path(Kind::Block, key);
            let file = match self.read_block_file(key) {
                Ok(Some(f)) => f,
                Ok(None) | Err(StoreError::Corrupt(_)) => continue,
                Err(e) => return Err(e),
            };
            packed |= self.packs.holds(Kind::Block, key);
            match after_release(&file.claims, &rel) {
                None => {}
                Some(left) if left.is_empty() => {
                    if self.remove_item(Kind::Block, key)?
                        && let Some(d) = path.parent()
                    {
                        dirs.insert(d.to_path_buf());
                    }
                    lock(&self.index).drop_block(key);
                    freed.blocks += 1;
                    freed.bytes += meta.len;
                }
                Some(left) => {
                    let bytes = block_file::encode(&left, &file.data);
                    self.write_item(Kind::Block, key, &[&bytes], file.data.len(), true)?;
                    lock(&self.index).set_block(key, block_meta(bytes.len() as u64, &left));
                    self.sync_if_pending(Kind::Block, key)?;
                }
            }
        }
        for d in &dirs {
            sync_dir(d)?;
        }
        if packed {
            self.packs.sync_all()?;
        }
        Ok(freed)
    }

    /// Up to `limit` blocks claimed by `owner`, in key order after `after`.
    pub fn owned(&self, owner: &[u8; 32], after: Option<Id>, limit: usize) -> Vec<OwnedBlock> {
        lock(&self.index).owned(owner, after, limit)
    }

    /// Bytes held for `owner`: the files of the blocks it claims and of
    /// the records it signs.
    pub fn usage(&self, owner: &[u8; 32]) -> u64 {
        lock(&self.index).usage(owner)
    }

    /// The file system holding the store (its reserve left out of what is
    /// available), and the bytes held for `owner`.
    pub fn space(&self, owner: &[u8; 32]) -> Result<NodeSpace, StoreError> {
        let fs = fs_space(&self.root)?;
        Ok(NodeSpace {
            total: fs.total,
            avail: fs.available.saturating_sub(space::reserve_for(fs.total)),
            owner_bytes: self.usage(owner),
        })
    }

    /// Stores record version `rec` if it verifies and is newer than the one
    /// held. With `expected_seq == Some(e)` it is also a compare-and-swap:
    /// stored only if the held record's sequence is `e` (an absent record
    /// counts as 0, so `Some(0)` means "only if absent").
    ///
    /// `Ok(true)` if stored. `Ok(false)` if this exact version (same
    /// sequence, same bytes) is already held, whatever `expected_seq` says:
    /// replica repair and a client's retry after a lost answer are then
    /// idempotent.
    pub fn put_record(&self, rec: &Record, expected_seq: Option<u64>) -> Result<bool, StoreError> {
        self.put_record_with(rec, expected_seq, true)
    }

    /// [`put_record`](Self::put_record), durable or not (see
    /// [`put_block_with`](Self::put_block_with)).
    pub fn put_record_with(
        &self,
        rec: &Record,
        expected_seq: Option<u64>,
        durable: bool,
    ) -> Result<bool, StoreError> {
        let key = rec.key();
        let _records = lock(self.record_lock(key));
        let current = lock(&self.index).record(key);
        let held = match current {
            Some(_) => self.read_versions(key)?,
            None => Vec::new(),
        };
        // The very version held (a retry, a repair, the owner's durable
        // second call of a swap) was verified when it was stored.
        if !held.contains(rec) {
            rec.verify()?;
        }
        let Some(versions) = judge_versions(&held, rec, expected_seq)? else {
            if durable {
                self.sync_if_pending(Kind::Record, key)?;
            }
            return Ok(false);
        };
        if versions.len() > 1 {
            log::warn!(
                "record {} has {} concurrent versions (sequence numbers {:?}): kept until a writer merges them",
                key.short(),
                versions.len(),
                versions.iter().map(|v| v.seq).collect::<Vec<_>>()
            );
        }
        let bytes = encode_versions(&versions)
            .map_err(|e| StoreError::Io(format!("encode record {key}: {e}")))?;
        if current.is_none() {
            self.space.admit(bytes.len() as u64)?;
        }
        self.write_item(Kind::Record, key, &[&bytes], bytes.len(), current.is_some())?;
        let meta = RecordMeta {
            seq: versions[0].seq,
            len: bytes.len() as u64,
            owner: rec.owner,
            versions: versions.len() as u32,
        };
        // Indexed before the write is made durable: the file is in place.
        lock(&self.index).set_record(key, meta);
        if durable {
            self.sync_if_pending(Kind::Record, key)?;
        }
        Ok(true)
    }

    /// The versions held of record `key` (head first), under its record
    /// lock; a corrupt file is removed and reported.
    fn read_versions(&self, key: Id) -> Result<Vec<Record>, StoreError> {
        let Some(decoded) = self.read_record(key)? else {
            log::warn!("record {key} was indexed but is gone");
            lock(&self.index).drop_record(key);
            return Ok(Vec::new());
        };
        match decoded {
            Ok(v) => Ok(v),
            Err(why) => {
                log::error!("corrupt record {key}: {why}; removing it");
                self.remove_item(Kind::Record, key)?;
                lock(&self.index).drop_record(key);
                Self::sync_parent(&self.path(Kind::Record, key))?;
                Err(StoreError::Corrupt(key))
            }
        }
    }

    /// Reads record `key` (a tombstone too), checked against damage on
    /// disk ([`Store::read_record`]) and for its key. A bad copy is deleted
    /// and reported as [`StoreError::Corrupt`].
    pub fn get_record(&self, key: Id) -> Result<Option<Record>, StoreError> {
        Ok(self.get_versions(key)?.into_iter().next())
    }

    /// Every version held of record `key`, head first (more than one
    /// while concurrent versions wait for a writer to merge them); empty
    /// if none, checked as [`Store::get_record`] says.
    pub fn get_versions(&self, key: Id) -> Result<Vec<Record>, StoreError> {
        if lock(&self.index).record(key).is_none() {
            return Ok(Vec::new());
        }
        if let Some(Ok(versions)) = self.read_record(key)? {
            return Ok(versions);
        }
        // The slow path: read again under the record lock and, if the
        // copy is still bad, delete it.
        let _records = lock(self.record_lock(key));
        if lock(&self.index).record(key).is_none() {
            return Ok(Vec::new());
        }
        self.read_versions(key)
    }

    /// What is held under `key`: the record's version if a record is held,
    /// else `Block` if a block is.
    pub fn version(&self, key: Id) -> Option<ItemVersion> {
        lock(&self.index).version(key)
    }

    /// How many items this store has written and blocks it has served
    /// since it opened: a count that moves while the node is busy, which
    /// background work that competes for the disk (the scrub) waits out.
    pub fn served(&self) -> u64 {
        self.served.load(Ordering::Relaxed)
    }

    /// Whether a block is held under `key` (the index, no I/O).
    pub fn holds_block(&self, key: Id) -> bool {
        lock(&self.index).block(key).is_some()
    }

    /// Indexes (into `items`) of the items this store lacks: blocks it does
    /// not hold and records it does not hold or holds an older version of.
    pub fn missing(&self, items: &[(Id, ItemVersion)]) -> Vec<u32> {
        let index = lock(&self.index);
        items
            .iter()
            .enumerate()
            .filter(|(_, (key, v))| index.lacks(*key, *v))
            .map(|(i, _)| i as u32)
            .collect()
    }

    /// Drops the local copies under `key` (block and record), once they
    /// have been handed to the replicas that now own them. Removing what
    /// is not held is not an error.
    pub fn remove(&self, key: Id) -> Result<(), StoreError> {
        let _records = lock(self.record_lock(key));
        let _stripe = lock(self.block_lock(key));
        for kind in [Kind::Block, Kind::Record] {
            let path = self.path(kind, key);
            let removed = self.remove_item(kind, key)?;
            let mut index = lock(&self.index);
            match kind {
                Kind::Block => index.drop_block(key),
                Kind::Record => index.drop_record(key),
            };
            drop(index);
            if removed {
                Self::sync_parent(&path)?;
            }
        }
        Ok(())
    }

    /// Every item held, sorted by key (a block before a record of the
    /// same key).
    pub fn items(&self) -> Vec<(Id, ItemVersion)> {
        lock(&self.index).items()
    }

    /// Counts of items and bytes held.
    pub fn stats(&self) -> StoreStats {
        let t = lock(&self.index).totals();
        StoreStats {
            blocks: t.blocks,
            records: t.records,
            bytes: t.bytes,
        }
    }
}

/// What a store directory holds: each block with the length of its file
/// (claims and data), and each record.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Held {
    pub blocks: std::collections::HashMap<Id, u64>,
    pub records: HashSet<Id>,
}

/// What the store in `dir` holds, read without changing anything (to look
/// into the store of a node that may be running, e.g. from a test).
pub fn held_in(dir: &Path) -> Result<Held, StoreError> {
    let mut held = Held::default();
    let files = |sub: &str, f: &mut dyn FnMut(Id, u64)| {
        let d = dir.join(sub);
        match d.exists() {
            true => scan::for_each_item(&d, |key, _, len| f(key, len)),
            false => Ok(()),
        }
    };
    files(BLOCKS_DIR, &mut |key, len| {
        held.blocks.insert(key, len);
    })?;
    files(RECORDS_DIR, &mut |key, _| {
        held.records.insert(key);
    })?;
    for ((kind, key), len) in packs::held_in(&dir.join(PACKS_DIR))? {
        match kind {
            Kind::Block => held.blocks.insert(key, len),
            Kind::Record => held.records.insert(key).then_some(0),
        };
    }
    Ok(held)
}

impl ItemStore for Store {
    fn put_block_with(
        &self,
        key: Id,
        data: &[u8],
        claims: &[Claim],
        durable: bool,
    ) -> Result<bool, StoreError> {
        Store::put_block_with(self, key, data, claims, durable)
    }

    fn get_block(&self, key: Id) -> Result<Option<Vec<u8>>, StoreError> {
        Store::get_block(self, key)
    }

    fn get_owned_block(&self, key: Id) -> Result<Option<BlockFile>, StoreError> {
        Store::get_owned_block(self, key)
    }

    fn serve_block(&self, key: Id) -> Result<Option<BlockFile>, StoreError> {
        Store::serve_block(self, key)
    }

    fn release(&self, rel: &Release) -> Result<Freed, StoreError> {
        Store::release(self, rel)
    }

    fn owned(&self, owner: &[u8; 32], after: Option<Id>, limit: usize) -> Vec<OwnedBlock> {
        Store::owned(self, owner, after, limit)
    }

    fn usage(&self, owner: &[u8; 32]) -> u64 {
        Store::usage(self, owner)
    }

    fn space(&self, owner: &[u8; 32]) -> Result<NodeSpace, StoreError> {
        Store::space(self, owner)
    }

    fn put_record_with(
        &self,
        rec: &Record,
        expected_seq: Option<u64>,
        durable: bool,
    ) -> Result<bool, StoreError> {
        Store::put_record_with(self, rec, expected_seq, durable)
    }

    fn get_record(&self, key: Id) -> Result<Option<Record>, StoreError> {
        Store::get_record(self, key)
    }

    fn get_versions(&self, key: Id) -> Result<Vec<Record>, StoreError> {
        Store::get_versions(self, key)
    }

    fn record_seq(&self, key: Id) -> Option<u64> {
        lock(&self.index).record(key).map(|m| m.seq)
    }

    fn record_version(&self, key: Id) -> Option<ItemVersion> {
        lock(&self.index)
            .record(key)
            .map(|m| ItemVersion::record(m.seq, m.versions))
    }

    fn sync_pending(&self) -> Result<usize, StoreError> {
        Store::sync_pending(self)
    }

    fn sync_pending_now(&self) -> Result<usize, StoreError> {
        Store::sync_pending_now(self)
    }

    fn missing(&self, items: &[(Id, ItemVersion)]) -> Vec<u32> {
        Store::missing(self, items)
    }

    fn remove(&self, key: Id) -> Result<(), StoreError> {
        Store::remove(self, key)
    }

    fn items(&self) -> Vec<(Id, ItemVersion)> {
        Store::items(self)
    }
}
