//! Offline work: a vault backend that keeps a mount working while its
//! node is cut off from the ring, and replays what it wrote once the ring
//! is back.
//!
//! [`JournalStore`] sits between the vault and the node's cached DHT
//! client. Its node tells it whether it is in contact with its ring
//! ([`Contact`]: a member with other members, or one that never saw any).
//!
//! - **Online**, with an empty journal, every call goes to the ring; each
//!   record read or written is also kept in the [`RecordCache`], so the
//!   tree stays readable later without the ring.
//! - **Offline** (or while the journal still holds entries, so that order
//!   is kept), blocks and record versions go to the [`Journal`] on local
//!   disk and the call returns at local-disk speed (a lazy write is
//!   fsynced by the next `sync`, or by [`replay_loop`] within half a
//!   second). A record's
//!   compare-and-swap is judged against the newest version this machine
//!   knows (journaled, else cached). Reads look in the journal, the
//!   caches and this node's own store (the replicas it holds: everything,
//!   on a ring no bigger than r); what none holds is unavailable (EIO),
//!   never absent. Releases are not sent: the owner's orphan check
//!   frees those blocks later, once every version that could still refer
//!   to them is known.
//! - A put that fails because the ring cannot be reached is journaled too,
//!   rather than failed.
//!
//! **Replay** ([`JournalStore::replay`], run by [`replay_loop`] while in
//! contact) sends the entries in order: blocks, then record versions
//! without a compare-and-swap. Each version carries its clock, so where
//! the ring moved on meanwhile the storage nodes keep both versions as
//! siblings and the vault merges them by the partition rules
//! ([`crate::fs::merge`]): nothing is overwritten. Only a record's newest
//! journaled version is sent (it builds on the older ones). An entry is
//! removed only after the ring took it and a sync made it durable there.

pub mod disk;

use crate::cache::records::RecordCache;
use crate::fs::{BlockStore, Durability, FsError};
use crate::id::Id;
use crate::item::RingSpace;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use disk::{Entry, Journal, JournalSize};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// Whether the node is in contact with its ring now.
pub type Contact = Arc<dyn Fn() -> bool + Send + Sync>;

/// The copies this node's own store holds (as a replica), read directly
/// while cut off: no lookup, no waiting for members that do not answer.
pub trait LocalCopies: Send + Sync + 'static {
    /// The versions of record `key` held here (blocking I/O).
    fn versions(&self, key: Id) -> Vec<Record>;
    /// Block `key`, if held here (blocking I/O).
    fn block(&self, key: Id) -> Option<Vec<u8>>;
}

impl LocalCopies for crate::store::Store {
    fn versions(&self, key: Id) -> Vec<Record> {
        self.get_versions(key).unwrap_or_default()
    }

    fn block(&self, key: Id) -> Option<Vec<u8>> {
        self.get_block(key).ok().flatten()
    }
}

/// Entries replayed per batch (one sync each).
const REPLAY_BATCH: usize = 64;

/// How long a block read while cut off waits behind the block cache
/// before it counts as out of reach.
const OFFLINE_ASK: Duration = Duration::from_secs(2);

/// Record keys one pin walk notes at most.
const MAX_RECORDED: usize = 1 << 20;

/// The journal's flush period (lazy entries are on disk within it, as a
/// storage node flushes within a second); contact is sampled at the same
/// tick, so a replay starts at most this long after the ring is back.
const REPLAY_EVERY: Duration = Duration::from_millis(500);

/// A vault backend that journals while its ring is out of reach.
pub struct JournalStore<S> {
    /// The ring (through the block cache).
    pub inner: S,
    /// Writes waiting for the ring.
    pub journal: Arc<Journal>,
    /// Records last seen.
    pub records: Arc<RecordCache>,
    contact: Contact,
    /// This node's own store, if it has one.
    local: Option<Arc<dyn LocalCopies>>,
    /// The ring's space as last answered, for `df` while offline.
    space: Mutex<Option<RingSpace>>,
    /// One replay at a time.
    replaying: tokio::sync::Mutex<()>,
    /// Record keys read while a pin walk records them.
    recording: Mutex<Option<std::collections::HashSet<Id>>>,
}

fn io(e: impl std::fmt::Display) -> FsError {
    FsError::Unavailable(format!("journal: {e}"))
}

impl<S: BlockStore> JournalStore<S> {
    /// A journaling backend over `inner`, asking `contact` whether the
    /// ring is in reach.
    pub fn new(inner: S, journal: Journal, records: RecordCache, contact: Contact) -> Self {
        JournalStore {
            inner,
            journal: Arc::new(journal),
            records: Arc::new(records),
            contact,
            local: None,
            space: Mutex::new(None),
            replaying: tokio::sync::Mutex::new(()),
            recording: Mutex::new(None),
        }
    }

    /// Reads this node's own copies while cut off.
    pub fn with_local(mut self, local: Arc<dyn LocalCopies>) -> Self {
        self.local = Some(local);
        self
    }

    /// Starts noting the keys of the records read (for a pin walk).
    pub fn start_recording(&self) {
        *self.recording.lock().unwrap_or_else(|p| p.into_inner()) =
            Some(std::collections::HashSet::new());
    }

    /// The record keys read since [`start_recording`](Self::start_recording).
    pub fn stop_recording(&self) -> std::collections::HashSet<Id> {
        self.recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take()
            .unwrap_or_default()
    }

    /// Whether the ring is in reach now.
    pub fn online(&self) -> bool {
        (self.contact)()
    }

    /// Whether writes go to the journal now.
    fn journaling(&self) -> bool {
        !self.online() || !self.journal.is_empty()
    }

    /// What the journal holds.
    pub fn journal_size(&self) -> JournalSize {
        self.journal.size()
    }

    async fn append(&self, entry: Entry, durability: Durability) -> Result<(), FsError> {
        let j = Arc::clone(&self.journal);
        tokio::task::spawn_blocking(move || match durability {
            Durability::Now => j.append_durable(&entry),
            Durability::Later => j.append(&entry),
        })
        .await
        .map_err(io)?
        .map(|_| ())
        .map_err(|e| match e {
            crate::store::StoreError::NoSpace(m) => FsError::NoSpace(m),
            e => io(e),
        })
    }

    /// The versions of `key` this machine knows without the ring: cached,
    /// and while cut off, what this node's own store holds as a replica
    /// (it may have taken a later version than this machine read).
    async fn known(&self, key: Id) -> Vec<Record> {
        let records = Arc::clone(&self.records);
        let local = if self.online() {
            None
        } else {
            self.local.clone()
        };
        tokio::task::spawn_blocking(move || {
            let mut all = records.get(key);
            if let Some(l) = local {
                all.extend(l.versions(key).into_iter().filter(|r| r.verify().is_ok()));
            }
            crate::store::newest_versions(all)
        })
        .await
        .unwrap_or_default()
    }

    /// Keeps what the ring answered for `key` (awaited, as
    /// [`remember_written`](Self::remember_written); unchanged answers
    /// cost no write).
    async fn remember(&self, key: Id, versions: Vec<Record>) {
        let records = Arc::clone(&self.records);
        let _ = tokio::task::spawn_blocking(move || records.put(key, &versions)).await;
    }

    /// Keeps a version this machine stored (awaited: a read right after
    /// going offline must find it).
    async fn remember_written(&self, rec: &Record) {
        let records = Arc::clone(&self.records);
        let rec = rec.clone();
        let _ = tokio::task::spawn_blocking(move || records.note_written(&rec)).await;
    }

    /// What the ring answered a put of `rec`: the put's result, or `None`
    /// when the ring was out of reach (the caller journals it instead).
    async fn settle_online(
        &self,
        rec: &Record,
        r: Result<(), FsError>,
    ) -> Option<Result<(), FsError>> {
        match r {
            Ok(()) => {
                self.remember_written(rec).await;
                Some(Ok(()))
            }
            Err(FsError::Unavailable(e)) => {
                log::debug!("record {} journaled: {e}", rec.key().short());
                None
            }
            Err(e) => Some(Err(e)),
        }
    }

    /// Journals record version `rec` if its compare-and-swap holds against
    /// the newest version this machine knows.
    async fn journal_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        durability: Durability,
    ) -> Result<(), FsError> {
        let key = rec.key();
        let head = match self.journal.record(key) {
            Some(r) => Some(r),
            None => self.known(key).await.into_iter().next(),
        };
        if let Some(expected) = expected_seq {
            let current = head.as_ref().map(|r| r.seq);
            if current.unwrap_or(0) != expected {
                return Err(FsError::Conflict(current));
            }
        }
        self.append(Entry::Record { record: rec }, durability).await
    }

    /// Sends the journal to the ring, oldest first, while in contact;
    /// returns how many entries left it.
    pub async fn replay(&self) -> Result<u64, FsError> {
        let _one = self.replaying.lock().await;
        let mut done = 0;
        loop {
            if !self.online() {
                return Ok(done);
            }
            let batch = self.journal.oldest(REPLAY_BATCH);
            if batch.is_empty() {
                return Ok(done);
            }
            let mut sent = Vec::new();
            let mut stopped = None;
            for n in batch {
                let j = Arc::clone(&self.journal);
                let entry = match tokio::task::spawn_blocking(move || j.read(n)).await {
                    Ok(Ok(e)) => e,
                    Ok(Err(e)) => {
                        log::warn!("journal entry {n} cannot be read ({e}); set aside");
                        let _ = self.journal.set_aside(n);
                        continue;
                    }
                    Err(e) => return Err(io(e)),
                };
                let key = entry.key();
                let result = match entry {
                    Entry::Block { key, data, claim } => self
                        .inner
                        .put_block(key, data, claim, Durability::Later)
                        .await
                        .map(|_| ()),
                    Entry::Record { record } if self.journal.is_newest(n, key) => {
                        // No compare-and-swap: the storage nodes keep it
                        // beside a version written meanwhile, for a merge.
                        match self
                            .inner
                            .put_record(record.clone(), None, Durability::Later)
                            .await
                        {
                            Ok(()) => {
                                self.remember_written(&record).await;
                                Ok(())
                            }
                            // A version above it is there already.
                            Err(FsError::Conflict(_)) => Ok(()),
                            Err(e) => Err(e),
                        }
                    }
                    // An older version of a record journaled again since.
                    Entry::Record { .. } => Ok(()),
                };
                match result {
                    Ok(()) => sent.push(n),
                    Err(e @ (FsError::Unavailable(_) | FsError::NoSpace(_))) => {
                        stopped = Some(e);
                        break;
                    }
                    Err(e) => {
                        log::error!(
                            "journal entry {n} ({}) refused by the ring: {e}; kept in the journal's failed/ directory",
                            key.short()
                        );
                        self.journal.set_aside(n).map_err(io)?;
                    }
                }
            }
            if !sent.is_empty() {
                // Removed only once durable on the ring.
                self.inner.sync().await?;
                for n in &sent {
                    self.journal.remove(*n).map_err(io)?;
                }
                done += sent.len() as u64;
            }
            if let Some(e) = stopped {
                log::info!("journal replay paused ({e}); {done} entries sent so far");
                return Ok(done);
            }
        }
    }
}

/// Replays the journal whenever the ring is in reach, until `stop`.
pub async fn replay_loop<S: BlockStore>(
    store: Arc<JournalStore<S>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut was_online = store.online();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(REPLAY_EVERY) => {}
            _ = stop.changed() => return,
        }
        let online = store.online();
        if online != was_online {
            if online {
                log::info!("in contact with the ring again");
            } else {
                log::warn!("cut off from the ring: writes go to the journal until it is back");
            }
            was_online = online;
        }
        // Lazily written entries are on disk within a tick, as a storage
        // node flushes its own within a second.
        let j = Arc::clone(&store.journal);
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.sync()).await {
            log::warn!("journal: {e}");
        }
        if online && !store.journal.is_empty() {
            let before = store.journal_size();
            match store.replay().await {
                Ok(n) if n > 0 => log::info!(
                    "journal replayed: {n} of {} entries sent to the ring",
                    before.entries
                ),
                Ok(_) => {}
                Err(e) => log::warn!("journal replay: {e}"),
            }
        }
    }
}

impl<S: BlockStore> BlockStore for JournalStore<S> {
    async fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        durability: Durability,
    ) -> Result<Id, FsError> {
        if !self.journaling() {
            match self
                .inner
                .put_block(key, data.clone(), claim.clone(), durability)
                .await
            {
                Err(FsError::Unavailable(e)) => {
                    log::debug!("block {} journaled: {e}", key.short());
                }
                r => return r,
            }
        }
        if Id::hash(&data) != key {
            return Err(FsError::Invalid("block does not match its key".into()));
        }
        self.append(Entry::Block { key, data, claim }, durability)
            .await?;
        Ok(key)
    }

    async fn release(&self, rel: Release) -> Result<(), FsError> {
        if self.journaling() {
            log::debug!(
                "offline: {} blocks left for the orphan check to free",
                rel.keys.len()
            );
            return Ok(());
        }
        self.inner.release(rel).await
    }

    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        if self.online() {
            match self.inner.space(owner).await {
                Ok(s) => {
                    *self.space.lock().unwrap_or_else(|p| p.into_inner()) = Some(s);
                    return Ok(s);
                }
                Err(e) => {
                    if let Some(s) = *self.space.lock().unwrap_or_else(|p| p.into_inner()) {
                        return Ok(s);
                    }
                    return Err(e);
                }
            }
        }
        self.space
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .ok_or_else(|| FsError::Unavailable("cut off from the ring".into()))
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        if self.journal.has_block(key) {
            let j = Arc::clone(&self.journal);
            if let Ok(Some(d)) = tokio::task::spawn_blocking(move || j.block(key)).await {
                return Ok(d);
            }
        }
        if self.online() {
            return self.inner.get_block(key).await;
        }
        if let Some(l) = self.local.clone()
            && let Ok(Some(d)) = tokio::task::spawn_blocking(move || l.block(key)).await
            && Id::hash(&d) == key
        {
            return Ok(d);
        }
        // The block cache answers at once; a miss would wait on the ring.
        match tokio::time::timeout(OFFLINE_ASK, self.inner.get_block(key)).await {
            Ok(Ok(d)) => Ok(d),
            _ => Err(FsError::Unavailable(format!(
                "block {}: cut off from the ring, and not in this machine's cache",
                key.short()
            ))),
        }
    }

    async fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        durability: Durability,
    ) -> Result<(), FsError> {
        if !self.journaling() {
            let r = self
                .inner
                .put_record(rec.clone(), expected_seq, durability)
                .await;
            if let Some(done) = self.settle_online(&rec, r).await {
                return done;
            }
        }
        self.journal_record(rec, expected_seq, durability).await
    }

    async fn put_new_record(&self, rec: Record, durability: Durability) -> Result<(), FsError> {
        if !self.journaling() {
            let r = self.inner.put_new_record(rec.clone(), durability).await;
            if let Some(done) = self.settle_online(&rec, r).await {
                return done;
            }
        }
        // A fresh random name: nothing to compare with.
        self.append(Entry::Record { record: rec }, durability).await
    }

    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        if let Some(keys) = self
            .recording
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .as_mut()
            && keys.len() < MAX_RECORDED
        {
            keys.insert(key);
        }
        if let Some(r) = self.journal.record(key) {
            return Ok(vec![r]);
        }
        if self.online() {
            return match self.inner.get_versions(key).await {
                Ok(v) => {
                    self.remember(key, v.clone()).await;
                    Ok(v)
                }
                Err(FsError::Unavailable(m)) => {
                    let known = self.known(key).await;
                    if known.is_empty() {
                        Err(FsError::Unavailable(m))
                    } else {
                        Ok(known)
                    }
                }
                Err(e) => Err(e),
            };
        }
        let all = self.known(key).await;
        if all.is_empty() {
            return Err(FsError::Unavailable(format!(
                "record {}: cut off from the ring, and not in this machine's cache",
                key.short()
            )));
        }
        Ok(all)
    }

    async fn writer(&self) -> Result<u64, FsError> {
        self.inner.writer().await
    }

    async fn sync(&self) -> Result<(), FsError> {
        let j = Arc::clone(&self.journal);
        tokio::task::spawn_blocking(move || j.sync())
            .await
            .map_err(io)?
            .map_err(io)?;
        if self.journaling() {
            return Ok(());
        }
        self.inner.sync().await
    }
}

#[cfg(test)]
mod tests;
