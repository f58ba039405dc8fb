//! The local block cache: on disk, bounded in bytes, least recently used
//! out first, content-addressed.
//!
//! Blocks are immutable and named by their hash ([`Id::names`]), so a cached block is
//! never stale; every read is re-hashed and a damaged file is dropped (it
//! is only a cache: writes skip fsync, a crash at worst leaves a file that
//! fails its hash). Blocks arrive here already encrypted, so the cache holds
//! no plaintext. [`CachedStore`] puts it in front of any vault backend:
//! writes go to the backend; reads try the cache first and keep what they fetch.
//!
//! Layout: `DIR/<first 2 hex>/<64 hex>` holds the block bytes; `DIR/tmp/`
//! holds files being written. [`records`] keeps records in an append-only log
//! instead (one file per record cost an inode per directory version).

pub mod records;

use crate::fs::{BlockStore, Durability, FsError};
use crate::id::Id;
use crate::item::RingSpace;
use crate::journal::LocalCopies;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use std::collections::{BTreeMap, HashMap};
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

/// Default cache size: 1 GiB.
pub const DEFAULT_CACHE_BYTES: u64 = 1 << 30;

/// LRU bookkeeping: which blocks are cached, how big, and in what order.
#[derive(Default)]
struct Lru {
    /// Block → (size, last-use tick).
    entries: HashMap<Id, (u64, u64)>,
    /// Last-use tick → block, oldest first.
    order: BTreeMap<u64, Id>,
    /// Sum of cached sizes.
    total: u64,
    /// Monotonic use counter.
    tick: u64,
    /// Blocks kept through eviction (`peerstore pin`).
    pinned: std::collections::HashSet<Id>,
    /// Blocks being written in (a pin's walk and a read may both keep
    /// the same block: it is written once).
    writing: std::collections::HashSet<Id>,
}

impl Lru {
    fn touch(&mut self, key: Id) -> bool {
        let Some((size, old)) = self.entries.get(&key).copied() else {
            return false;
        };
        self.order.remove(&old);
        self.tick += 1;
        self.order.insert(self.tick, key);
        self.entries.insert(key, (size, self.tick));
        true
    }

    fn add(&mut self, key: Id, size: u64) {
        if self.touch(key) {
            return;
        }
        self.tick += 1;
        self.entries.insert(key, (size, self.tick));
        self.order.insert(self.tick, key);
        self.total += size;
    }

    fn remove(&mut self, key: Id) {
        if let Some((size, t)) = self.entries.remove(&key) {
            self.order.remove(&t);
            self.total -= size;
        }
    }

    /// Removes least recently used unpinned entries until `total ≤ cap`
    /// (pinned ones may keep it above).
    fn evict(&mut self, cap: u64) -> Vec<Id> {
        let mut out = Vec::new();
        let mut cursor = 0;
        while self.total > cap {
            let Some((&t, &key)) = self.order.range(cursor..).next() else {
                break;
            };
            cursor = t + 1;
            if self.pinned.contains(&key) {
                continue;
            }
            self.order.remove(&t);
            if let Some((size, _)) = self.entries.remove(&key) {
                self.total -= size;
            }
            out.push(key);
        }
        out
    }
}

/// A bounded on-disk block cache.
pub struct BlockCache {
    /// Cache directory.
    dir: PathBuf,
    /// Byte budget.
    capacity: u64,
    /// Index; no I/O is done while it is locked.
    lru: Mutex<Lru>,
}

/// Hit/miss counts and size, for tests and statistics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheStats {
    pub blocks: u64,
    pub bytes: u64,
}

impl BlockCache {
    /// Opens (creating) the cache in `dir` with a budget of `capacity` bytes;
    /// blocks already there are kept, oldest modification first out.
    pub fn open(dir: &Path, capacity: u64) -> std::io::Result<BlockCache> {
        fs::create_dir_all(dir.join("tmp"))?;
        for e in fs::read_dir(dir.join("tmp"))? {
            let _ = fs::remove_file(e?.path());
        }
        let mut found: Vec<(std::time::SystemTime, Id, u64)> = Vec::new();
        for sub in fs::read_dir(dir)? {
            let sub = sub?;
            if sub.file_name() == "tmp" || !sub.file_type()?.is_dir() {
                continue;
            }
            for f in fs::read_dir(sub.path())? {
                let f = f?;
                let meta = f.metadata()?;
                match f.file_name().to_str().and_then(|n| n.parse::<Id>().ok()) {
                    Some(id) => found.push((
                        meta.modified().unwrap_or(std::time::UNIX_EPOCH),
                        id,
                        meta.len(),
                    )),
                    None => {
                        let _ = fs::remove_file(f.path());
                    }
                }
            }
        }
        found.sort();
        let mut lru = Lru::default();
        for (_, id, size) in found {
            lru.add(id, size);
        }
        let cache = BlockCache {
            dir: dir.to_path_buf(),
            capacity,
            lru: Mutex::new(lru),
        };
        cache.evict();
        Ok(cache)
    }

    fn path(&self, key: Id) -> PathBuf {
        let hex = key.to_hex();
        self.dir.join(&hex[..2]).join(hex)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Lru> {
        self.lru.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn evict(&self) {
        let victims = self.lock().evict(self.capacity);
        for v in victims {
            let _ = fs::remove_file(self.path(v));
        }
    }

    /// The cached block `key`, re-hashed; a damaged copy is dropped.
    pub fn get(&self, key: Id) -> Option<Vec<u8>> {
        let found = self.read(key);
        crate::metrics::get().cache_read("blocks", found.is_some());
        found
    }

    fn read(&self, key: Id) -> Option<Vec<u8>> {
        if !self.lock().touch(key) {
            return None;
        }
        match fs::read(self.path(key)) {
            Ok(data) if key.names(&data) => Some(data),
            _ => {
                self.lock().remove(key);
                let _ = fs::remove_file(self.path(key));
                None
            }
        }
    }

    /// Drops the cached copy of `key` (its owner released it).
    pub fn forget(&self, key: Id) {
        self.lock().remove(key);
        let _ = fs::remove_file(self.path(key));
    }

    /// Keeps a block (whose key the caller has checked).
    pub fn insert(&self, key: Id, data: &[u8]) {
        {
            let mut l = self.lock();
            if data.len() as u64 > self.capacity || l.touch(key) || !l.writing.insert(key) {
                return;
            }
        }
        // Staged as the store stages a block: a large one past the page
        // cache, so a streaming read leaves no dirty pages behind for the
        // next `sync` to write (and pays no page-cache copy).
        let written = crate::store::direct::stage_parts(&self.dir.join("tmp"), &[data])
            .and_then(|staged| staged.commit(&self.path(key)));
        let mut l = self.lock();
        l.writing.remove(&key);
        match written {
            Ok(()) => {
                l.add(key, data.len() as u64);
                drop(l);
                self.evict();
            }
            Err(e) => log::debug!("cache: could not keep block {}: {e}", key.short()),
        }
    }

    /// Keeps exactly `keys` through eviction from now on.
    pub fn set_pinned(&self, keys: std::collections::HashSet<Id>) {
        self.lock().pinned = keys;
        self.evict();
    }

    /// Whether block `key` is cached (without counting as a use).
    pub fn contains(&self, key: Id) -> bool {
        self.lock().entries.contains_key(&key)
    }

    /// Bytes of pinned blocks held.
    pub fn pinned_bytes(&self) -> u64 {
        let l = self.lock();
        l.pinned
            .iter()
            .filter_map(|k| l.entries.get(k).map(|(size, _)| *size))
            .sum()
    }

    /// Drops everything (for cold-read measurements).
    pub fn clear(&self) {
        let keys: Vec<Id> = self.lock().entries.keys().copied().collect();
        for k in keys {
            self.lock().remove(k);
            let _ = fs::remove_file(self.path(k));
        }
    }

    /// The byte budget.
    pub fn capacity(&self) -> u64 {
        self.capacity
    }

    /// Current contents.
    pub fn stats(&self) -> CacheStats {
        let l = self.lock();
        CacheStats {
            blocks: l.entries.len() as u64,
            bytes: l.total,
        }
    }
}

/// A vault backend with the block cache in front.
pub struct CachedStore<S> {
    /// The backend.
    pub inner: S,
    /// The cache.
    pub cache: Arc<BlockCache>,
    /// This node's own store, if it has one: a block it holds as a
    /// replica is read from there and never copied into the cache.
    local: Option<Arc<dyn LocalCopies>>,
}

impl<S> CachedStore<S> {
    /// `inner` with `cache` in front.
    pub fn new(inner: S, cache: Arc<BlockCache>) -> Self {
        CachedStore {
            inner,
            cache,
            local: None,
        }
    }

    /// Reads the blocks `local` (this node's store) holds from there and
    /// never caches them: a second copy on the same disk would only cost
    /// a write of every byte read (which the next `sync` pays) and the
    /// cache's space.
    pub fn with_local(mut self, local: Arc<dyn LocalCopies>) -> Self {
        self.local = Some(local);
        self
    }
}

impl<S: BlockStore> BlockStore for CachedStore<S> {
    async fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        durability: Durability,
    ) -> Result<Id, FsError> {
        // Not kept on write: the writer's recent chunks stay decrypted in
        // memory, and skipping the copy keeps the write path lean. Reads fill
        // the cache.
        self.inner.put_block(key, data, claim, durability).await
    }

    async fn release(&self, rel: Release) -> Result<(), FsError> {
        let keys = rel.keys.clone();
        self.inner.release(rel).await?;
        let cache = Arc::clone(&self.cache);
        tokio::task::spawn_blocking(move || {
            for k in keys {
                cache.forget(k);
            }
        });
        Ok(())
    }

    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        self.inner.space(owner).await
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        // A replica this node holds is read from its own store: what the
        // cache would hold, without a lookup (which also works while the
        // node is still joining, right after a restart).
        if let Some(local) = self.local.clone()
            && local.holds_block(key)
            && let Ok(Some(d)) = tokio::task::spawn_blocking(move || local.block(key)).await
        {
            return Ok(d);
        }
        let cache = Arc::clone(&self.cache);
        if let Ok(Some(d)) = tokio::task::spawn_blocking(move || cache.get(key)).await {
            return Ok(d);
        }
        // Every backend checks what it returns against the key (the DHT's
        // reads re-hash each copy): hashing it again here would be a third
        // pass over every byte read.
        let data = self.inner.get_block(key).await?;
        let cache = Arc::clone(&self.cache);
        let copy = data.clone();
        tokio::task::spawn_blocking(move || cache.insert(key, &copy));
        Ok(data)
    }

    async fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        durability: Durability,
    ) -> Result<(), FsError> {
        self.inner.put_record(rec, expected_seq, durability).await
    }

    async fn put_record_ordered(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
    ) -> Result<crate::fs::Following, FsError> {
        self.inner.put_record_ordered(rec, expected_seq).await
    }

    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        self.inner.get_versions(key).await
    }

    async fn writer(&self) -> Result<u64, FsError> {
        self.inner.writer().await
    }

    async fn sync(&self) -> Result<(), FsError> {
        self.inner.sync().await
    }

    async fn put_new_record(&self, rec: Record, durability: Durability) -> Result<(), FsError> {
        self.inner.put_new_record(rec, durability).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_lru_and_damage_detection() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(d.path(), 3000).unwrap();
        let blocks: Vec<Vec<u8>> = (0..4u8).map(|i| vec![i; 1000]).collect();
        let keys: Vec<Id> = blocks.iter().map(|b| Id::hash(b)).collect();
        for i in 0..3 {
            c.insert(keys[i], &blocks[i]);
        }
        assert_eq!(c.get(keys[0]).unwrap(), blocks[0]); // 0 is now most recent
        c.insert(keys[3], &blocks[3]); // evicts 1, the least recently used
        assert!(c.get(keys[1]).is_none());
        assert!(c.get(keys[0]).is_some() && c.get(keys[2]).is_some() && c.get(keys[3]).is_some());
        assert_eq!(
            c.stats(),
            CacheStats {
                blocks: 3,
                bytes: 3000
            }
        );
        // A damaged file is detected and dropped.
        fs::write(c.path(keys[2]), b"garbage").unwrap();
        assert!(c.get(keys[2]).is_none());
        assert_eq!(c.stats().blocks, 2);
        // Reopen keeps what is there, within budget.
        drop(c);
        let c = BlockCache::open(d.path(), 1500).unwrap();
        assert_eq!(c.stats().blocks, 1);
        c.clear();
        assert_eq!(
            c.stats(),
            CacheStats {
                blocks: 0,
                bytes: 0
            }
        );
    }

    #[tokio::test]
    async fn cached_store_serves_reads_locally() {
        let d = tempfile::tempdir().unwrap();
        let s = CachedStore::new(
            crate::fs::mem_store::MemStore::default(),
            Arc::new(BlockCache::open(d.path(), 1 << 20).unwrap()),
        );
        let key = Id::hash(b"block");
        let owner = crate::fs::Identity::generate();
        s.put_block(key, b"block".to_vec(), owner.claim(key), Durability::Later)
            .await
            .unwrap();
        assert_eq!(s.get_block(key).await.unwrap(), b"block");
        assert!(kept_soon(&s.cache, key).await, "a read keeps the block");
        s.inner.blocks.lock().unwrap().clear();
        assert_eq!(s.get_block(key).await.unwrap(), b"block");
        s.cache.clear();
        assert_eq!(s.get_block(key).await, Err(FsError::NotFound));
    }

    #[test]
    fn a_block_being_written_in_is_not_written_again() {
        let d = tempfile::tempdir().unwrap();
        let c = BlockCache::open(d.path(), 1 << 20).unwrap();
        let k = Id::hash(b"x");
        c.lock().writing.insert(k);
        c.insert(k, b"x");
        assert!(!c.contains(k), "a second writer of the block stood back");
        assert_eq!(fs::read_dir(d.path().join("tmp")).unwrap().count(), 0);
        c.lock().writing.remove(&k);
        c.insert(k, b"x");
        assert!(c.contains(k));
        assert_eq!(c.get(k).as_deref(), Some(b"x".as_slice()));
    }

    /// Whether `cache` holds `key` within 2 s: a read keeps a block in a
    /// background task the test cannot await.
    async fn kept_soon(cache: &BlockCache, key: Id) -> bool {
        for _ in 0..200 {
            if cache.contains(key) {
                return true;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        false
    }

    /// This node's store, as a fake: holds these blocks.
    struct Holds(Vec<(Id, Vec<u8>)>);

    impl LocalCopies for Holds {
        fn versions(&self, _key: Id) -> Vec<Record> {
            Vec::new()
        }
        fn block(&self, key: Id) -> Option<Vec<u8>> {
            self.0
                .iter()
                .find(|(k, _)| *k == key)
                .map(|(_, d)| d.clone())
        }
        fn holds_block(&self, key: Id) -> bool {
            self.0.iter().any(|(k, _)| *k == key)
        }
    }

    #[tokio::test]
    async fn blocks_held_here_are_not_cached() {
        let d = tempfile::tempdir().unwrap();
        let held = Id::hash(b"held");
        let s = CachedStore::new(
            crate::fs::mem_store::MemStore::default(),
            Arc::new(BlockCache::open(d.path(), 1 << 20).unwrap()),
        )
        .with_local(Arc::new(Holds(vec![(held, b"held".to_vec())])));
        let owner = crate::fs::Identity::generate();
        let other = Id::hash(b"other");
        for (key, bytes) in [(held, b"held".to_vec()), (other, b"other".to_vec())] {
            s.put_block(key, bytes.clone(), owner.claim(key), Durability::Later)
                .await
                .unwrap();
            assert_eq!(s.get_block(key).await.unwrap(), bytes);
        }
        assert!(
            kept_soon(&s.cache, other).await,
            "a block held elsewhere is cached"
        );
        assert!(!s.cache.contains(held), "a block held here is not cached");
        assert_eq!(s.cache.stats().blocks, 1);
        // Read from this node's store, not the backend.
        s.inner.blocks.lock().unwrap().clear();
        assert_eq!(s.get_block(held).await.unwrap(), b"held");
        assert_eq!(s.get_block(other).await.unwrap(), b"other");
    }
}
