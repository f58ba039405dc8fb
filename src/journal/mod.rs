//! Write-back and offline work: a vault backend that journals the mount's
//! writes on local disk and sends them to the ring, at once while the ring
//! is in reach, and once it is back while the node is cut off.
//!
//! [`JournalStore`] sits between the vault and the node's cached DHT
//! client. Its node tells it whether it is in contact with its ring
//! ([`Contact`]: a member with other members, or one that never saw any).
//!
//! - **Write-back** ([`WriteBack`], `node --write-back`): blocks under
//!   [`DIRECT_BLOCK`], record versions and releases go to the [`Journal`]
//!   and the call returns at local-disk speed; the replay is woken at once
//!   and sends them on. Writers wait (bounded) while the journal is over
//!   its limits and the ring is in reach.
//! - **Write-through**, online with an empty journal: every call goes to
//!   the ring. Either way each record read or written is also kept in the
//!   [`RecordCache`], so the tree stays readable later without the ring.
//!   A durable put (an `fsync`'s) goes to the ring lazily while the same
//!   write is appended to the journal durably, at once
//!   ([`Journal::append_sent`]): it is acknowledged once this machine's
//!   disk holds it and the ring took it: a block or a new record once r
//!   members hold it, a record's compare-and-swap once its owner took it
//!   ([`BlockStore::put_record_ordered`]: its order among writers is then
//!   decided, and the other members' copies follow in the background).
//!   The members' `fdatasync` and the second round leave the critical
//!   path. A block's entry is written without an `fdatasync` of its own
//!   ([`Journal::append_sent_lazily`]): the durable append of the record
//!   that refers to it, or the `sync` that ends an `fsync`, makes it
//!   durable first. The replay loop then waits for the copies that follow, asks the
//!   ring to sync ([`JournalStore::settle`], one `Sync` round for every
//!   write a short while gathered) and drops the entries; an entry whose
//!   copies could not all be made goes to the replay instead
//!   ([`Journal::resend`]), and a crash before the settle replays them
//!   from the journal at the next start. Past [`MAX_SENT`] entries
//!   waiting, or if the journal cannot be written, a durable put waits
//!   for the ring's `fdatasync` as before.
//! - **Offline** (or while the journal still holds entries, so that order
//!   is kept), writes go to the journal. A record's compare-and-swap is
//!   judged against the newest version this machine knows (journaled, else
//!   cached, else asked of the ring while it is in reach). Reads look in
//!   the journal, the caches and this node's own store (the replicas it
//!   holds: everything, on a ring no bigger than r); what none holds is
//!   unavailable (EIO), never absent.
//! - A put that fails because the ring cannot be reached is journaled too,
//!   rather than failed.
//!
//! **Replay** ([`JournalStore::replay`], run by [`replay_loop`] while in
//! contact) sends the entries in order, runs of one kind together: blocks,
//! then the record versions that refer to them, then releases. A record's
//! newest journaled version is sent as a compare-and-swap against the
//! version this machine last saw on the ring; where the ring moved on
//! meanwhile it goes again without one, and since each version carries its
//! clock the storage nodes keep both as siblings for the vault to merge by
//! the partition rules ([`crate::fs::merge`]): nothing is overwritten. A
//! release is sent only if no replayed record met such a version since the
//! journal was last empty (else the owner's orphan check frees its blocks
//! once it knows what the merge kept). An entry is removed only after the
//! ring took it and a sync made it durable there.

pub mod disk;

use crate::cache::records::RecordCache;
use crate::fs::{BlockStore, Durability, Following, FsError};
use crate::id::Id;
use crate::item::RingSpace;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use disk::{Entry, Journal, JournalSize};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    /// Block `key`, if held here, its bytes checked against `key` (blocking I/O).
    fn block(&self, key: Id) -> Option<Vec<u8>>;
    /// Whether block `key` is held here (in memory, no I/O).
    fn holds_block(&self, key: Id) -> bool;
}

impl LocalCopies for crate::store::Store {
    fn versions(&self, key: Id) -> Vec<Record> {
        self.get_versions(key).unwrap_or_default()
    }

    fn block(&self, key: Id) -> Option<Vec<u8>> {
        self.get_block(key).ok().flatten()
    }

    fn holds_block(&self, key: Id) -> bool {
        self.holds_block(key)
    }
}

/// Entries replayed per batch (one sync each).
const REPLAY_BATCH: usize = 64;

/// How long a block read while cut off waits behind the block cache
/// before it counts as out of reach.
const OFFLINE_ASK: Duration = Duration::from_secs(2);

/// How long the replay waits after a write before it starts, so the
/// writes right behind it go in the same batch.
const COALESCE: Duration = Duration::from_millis(30);

/// Entries appended as sent ([`Journal::append_sent`]) waiting for a ring
/// sync, at most; past it a durable put is made durable on the ring before
/// it returns.
pub const MAX_SENT: usize = 4096;

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
    /// Write-back: journal while online too.
    write_back: Option<WriteBack>,
    /// Wakes the replay (something was journaled).
    kick: tokio::sync::Notify,
    /// Wakes writers waiting for room (the replay removed entries).
    shrunk: tokio::sync::Notify,
    /// A replayed record met a version this machine had not seen since
    /// the journal last emptied: releases wait for the orphan check.
    tainted: AtomicBool,
    /// Record compare-and-swaps judged by the journal, one at a time per
    /// key (striped by key): a judge and its append are one step, or two
    /// writers of one version would both pass and the later would hide
    /// the earlier.
    judging: [tokio::sync::Mutex<()>; JUDGE_STRIPES],
    /// Durable puts the ring took lazily while the journal keeps them
    /// (their entries, and the copies still following), until
    /// [`settle`](Self::settle).
    sent: Mutex<Vec<(u64, Following)>>,
    /// One settle at a time.
    settling: tokio::sync::Mutex<()>,
    /// Lazy puts the ring took that no journal entry covers, counted, and
    /// how many of them the last ring sync covered: a `sync` with none
    /// since needs no `Sync` round.
    lazy: AtomicU64,
    lazy_synced: AtomicU64,
}

/// Locks that keep the journal's compare-and-swaps of one key in turn.
const JUDGE_STRIPES: usize = 64;

/// Write-back caching: the mount's writes go to the journal while the ring
/// is in reach too, and return at local-disk speed; the replay sends them
/// on at once, in order. Blocks of [`DIRECT_BLOCK`] bytes or more (a
/// sequential write's) still go straight to the ring: journaling them
/// would only copy them twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteBack {
    /// Journal bytes above which writers wait for the replay.
    pub max_bytes: u64,
    /// Journal entries above which writers wait for the replay.
    pub max_entries: u64,
}

impl Default for WriteBack {
    fn default() -> Self {
        WriteBack {
            max_bytes: 64 << 20,
            max_entries: 20_000,
        }
    }
}

/// How a write-through put is sent to the ring
/// ([`JournalStore::put_through`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Via {
    /// As asked.
    Plain(Durability),
    /// Lazily, kept by the journal until a settle; a record's
    /// compare-and-swap in order
    /// ([`BlockStore::put_record_ordered`]).
    Kept,
}

impl Via {
    /// The durability a put sent this way asks of the ring.
    fn durability(self) -> Durability {
        match self {
            Via::Plain(d) => d,
            Via::Kept => Durability::Later,
        }
    }
}

/// Blocks this big go to the ring directly even in write-back mode.
pub const DIRECT_BLOCK: usize = 256 << 10;

/// Entries of one kind sent to the ring at once by the replay.
const REPLAY_PARALLEL: usize = 16;

/// The pause between two tries of a drain that made no progress.
const DRAIN_RETRY: Duration = Duration::from_millis(100);

/// How long a writer waits for room in a full write-back journal before
/// it appends anyway (the ring may be refusing the replay).
const ROOM_WAIT: Duration = Duration::from_secs(30);

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
            write_back: None,
            kick: tokio::sync::Notify::new(),
            shrunk: tokio::sync::Notify::new(),
            tainted: AtomicBool::new(false),
            judging: std::array::from_fn(|_| tokio::sync::Mutex::new(())),
            sent: Mutex::new(Vec::new()),
            settling: tokio::sync::Mutex::new(()),
            lazy: AtomicU64::new(0),
            lazy_synced: AtomicU64::new(0),
        }
    }

    /// Journals while online too ([`WriteBack`]).
    pub fn with_write_back(mut self, wb: WriteBack) -> Self {
        self.write_back = Some(wb);
        self
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
        self.write_back.is_some() || !self.online() || !self.journal.is_empty()
    }

    /// Waits (bounded) while a write-back journal is over its limits and
    /// the ring is in reach to take it.
    async fn room(&self) {
        let Some(wb) = self.write_back else { return };
        let until = tokio::time::Instant::now() + ROOM_WAIT;
        loop {
            let s = self.journal.size();
            if (s.bytes < wb.max_bytes && s.entries < wb.max_entries)
                || !self.online()
                || tokio::time::Instant::now() >= until
            {
                return;
            }
            let shrunk = self.shrunk.notified();
            self.kick.notify_one();
            let _ = tokio::time::timeout(Duration::from_millis(200), shrunk).await;
        }
    }

    /// Sends what the journal holds, until it is empty or `limit` passes;
    /// returns what is left (for the leave: a mount's writes should be on
    /// the ring before its node goes).
    pub async fn drain(&self, limit: Duration) -> JournalSize {
        let until = tokio::time::Instant::now() + limit;
        if let Ok(Err(e)) = tokio::time::timeout(limit, self.settle()).await {
            log::warn!("journal: the ring did not sync what it took: {e}");
        }
        while !self.journal.is_empty() && self.online() {
            let left = until.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                break;
            }
            let progress = match tokio::time::timeout(left, self.replay()).await {
                Ok(Ok(n)) => n > 0,
                Ok(Err(e)) => {
                    log::warn!("journal replay: {e}");
                    false
                }
                Err(_) => break,
            };
            if !progress {
                // The ring refuses for now (a replica busy or going): the
                // next try is paced, within the deadline.
                tokio::time::sleep(DRAIN_RETRY.min(left)).await;
            }
        }
        self.journal_size()
    }

    /// What the journal holds.
    pub fn journal_size(&self) -> JournalSize {
        self.journal.size()
    }

    async fn append(&self, entry: Entry, durability: Durability) -> Result<(), FsError> {
        self.room().await;
        let j = Arc::clone(&self.journal);
        // A block is only of use once a record refers to it, and a durable
        // record's sync covers every frame before it: one `fdatasync` per
        // `fsync`, however many blocks it saved.
        let block = matches!(entry, Entry::Block { .. });
        match durability {
            Durability::Now if !block => {
                tokio::task::spawn_blocking(move || j.append(&entry).and_then(|_| j.sync()))
                    .await
                    .map_err(io)?
            }
            // One buffered `write` (the log's tail, no fsync): cheaper in
            // place than the hand-off to a blocking thread and back.
            _ => j.append(&entry).map(|_| ()),
        }
        .map_err(|e| match e {
            crate::store::StoreError::NoSpace(m) => FsError::NoSpace(m),
            e => io(e),
        })?;
        self.kick.notify_one();
        Ok(())
    }

    /// The versions of `key` this machine knows without the ring: cached,
    /// and while cut off, what this node's own store holds as a replica
    /// (it may have taken a later version than this machine read).
    async fn known(&self, key: Id) -> Vec<Record> {
        let local = match &self.local {
            Some(l) if !self.online() => Arc::clone(l),
            _ => return self.cached(key),
        };
        let records = Arc::clone(&self.records);
        tokio::task::spawn_blocking(move || {
            let mut all = records.get(key);
            all.extend(
                local
                    .versions(key)
                    .into_iter()
                    .filter(|r| r.verify().is_ok()),
            );
            crate::store::newest_versions(all)
        })
        .await
        .unwrap_or_default()
    }

    /// Keeps what the ring answered for `key`, before returning (as
    /// [`remember_written`](Self::remember_written); unchanged answers
    /// cost no write).
    fn remember(&self, key: Id, versions: &[Record]) {
        // A log append or a check in memory: cheaper in place than the
        // hand-off to a blocking thread and back.
        self.records.put(key, versions);
    }

    /// The versions the record cache holds of `key`, newest first: memory
    /// or one read of its log, in place.
    fn cached(&self, key: Id) -> Vec<Record> {
        crate::store::newest_versions(self.records.get(key))
    }

    /// Keeps a version this machine stored, before returning (a read
    /// right after going offline must find it).
    fn remember_written(&self, rec: &Record) {
        self.records.note_written(rec);
    }

    /// Whether a durable put may go to the ring lazily, kept by the
    /// journal until a ring sync ([`put_sent`](Self::put_sent)).
    fn may_send_lazily(&self, durability: Durability) -> bool {
        durability == Durability::Now && self.sent().len() < MAX_SENT
    }

    fn sent(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Following)>> {
        self.sent.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A durable put: `ring` (the put, sent lazily, or in order with
    /// copies following) and a durable append of `entry` to the journal,
    /// at once. Acknowledged when both are done; the entry is dropped by
    /// the next [`settle`](Self::settle). If the ring refused or is out of
    /// reach, the entry goes and so does the put's answer (the caller
    /// journals a put the ring could not take); if the journal could not
    /// keep it, the ring makes every copy durable first.
    async fn put_sent<T>(
        &self,
        entry: Entry,
        ring: impl std::future::Future<Output = Result<(T, Following), FsError>>,
    ) -> Result<T, FsError> {
        let j = Arc::clone(&self.journal);
        // A block is appended lazily: nothing acknowledged refers to it
        // before a durable record's append or a `sync` (an `fsync` ends
        // with one) made the journal durable behind it.
        let lazily = matches!(entry, Entry::Block { .. });
        let local = tokio::task::spawn_blocking(move || match lazily {
            true => j.append_sent_lazily(&entry),
            false => j.append_sent(&entry),
        });
        let (put, kept) = tokio::join!(ring, local);
        match (put, kept.map_err(io).and_then(|k| k.map_err(io))) {
            (Ok((v, rest)), Ok(n)) => {
                self.sent().push((n, rest));
                self.kick.notify_one();
                Ok(v)
            }
            (Ok((v, rest)), Err(e)) => {
                log::debug!("a durable put not journaled ({e}): synced on the ring instead");
                rest.wait().await?;
                self.inner.sync().await?;
                Ok(v)
            }
            (Err(e), Ok(n)) => {
                self.journal.remove(n).map_err(io)?;
                Err(e)
            }
            (Err(e), Err(_)) => Err(e),
        }
    }

    /// A put to the ring while writing through: `put` with `durability`,
    /// or, for a durable put the journal may keep (`keepable`), sent as
    /// [`Via::Kept`] with `entry` kept ([`put_sent`](Self::put_sent)). A
    /// lazy put no journal entry covers is counted, so the next `sync`
    /// syncs the ring.
    async fn put_through<T, F, Fut>(
        &self,
        durability: Durability,
        keepable: bool,
        entry: impl FnOnce() -> Entry,
        put: F,
    ) -> Result<T, FsError>
    where
        F: FnOnce(Via) -> Fut,
        Fut: std::future::Future<Output = Result<(T, Following), FsError>>,
    {
        if keepable && self.may_send_lazily(durability) {
            return self.put_sent(entry(), put(Via::Kept)).await;
        }
        let r = put(Via::Plain(durability)).await;
        if durability == Durability::Later && r.is_ok() {
            self.lazy.fetch_add(1, Ordering::AcqRel);
        }
        // Nothing follows a plain put.
        r.map(|(v, _)| v)
    }

    /// Makes the ring sync every lazy put it took, and drops the journal
    /// entries that kept them meanwhile ([`put_sent`](Self::put_sent)).
    /// First it waits for the copies that follow ordered puts: an entry
    /// whose copies could not all be made goes to the replay
    /// ([`Journal::resend`]), which sends it again as any journaled write.
    /// If the sync fails the others stay, for the next settle (or a replay
    /// after a restart).
    pub async fn settle(&self) -> Result<(), FsError> {
        let _one = self.settling.lock().await;
        let taken = std::mem::take(&mut *self.sent());
        if taken.is_empty() {
            return Ok(());
        }
        let covered = self.lazy.load(Ordering::Acquire);
        let mut made = Vec::with_capacity(taken.len());
        for (n, rest) in taken {
            match rest.wait().await {
                Ok(()) => made.push(n),
                Err(e) => {
                    log::warn!(
                        "journal: a write's copies could not all be made ({e}); it is sent again"
                    );
                    match self.journal.resend(n) {
                        Ok(()) => self.kick.notify_one(),
                        // Still in the journal: the next start replays it.
                        Err(e) => log::error!("journal: entry {n} cannot be sent again: {e}"),
                    }
                }
            }
        }
        if let Err(e) = self.inner.sync().await {
            self.sent()
                .extend(made.into_iter().map(|n| (n, Following::done())));
            return Err(e);
        }
        self.lazy_synced.fetch_max(covered, Ordering::AcqRel);
        for n in made {
            self.journal.remove(n).map_err(io)?;
        }
        Ok(())
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
                self.remember_written(rec);
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
        let stripe = usize::from(key.0[0]) % JUDGE_STRIPES;
        let _turn = self.judging[stripe].lock().await;
        let head = match self.journal.record(key) {
            Some(r) => Some(r),
            None => match self.known(key).await.into_iter().next() {
                Some(r) => Some(r),
                // Write-back, and this machine never saw the record: the
                // ring knows (a read that fails judges against nothing).
                None if self.online() => match self.inner.get_versions(key).await {
                    Ok(v) => {
                        self.remember(key, &v);
                        v.into_iter().next()
                    }
                    Err(_) => None,
                },
                None => None,
            },
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
    ///
    /// Consecutive entries of one kind go out together (blocks, or record
    /// versions); a change of kind waits for the run before it, so a
    /// record reaches the ring after the blocks it refers to, and a
    /// release after the records that stopped referring to them.
    pub async fn replay(&self) -> Result<u64, FsError> {
        let _one = self.replaying.lock().await;
        let mut done = 0;
        // Records whose older journaled versions were skipped and whose
        // newest one is not on the ring yet.
        let mut unsent = std::collections::HashSet::new();
        loop {
            if !self.online() {
                return Ok(done);
            }
            let batch = self.journal.oldest(REPLAY_BATCH);
            if batch.is_empty() {
                self.tainted.store(false, Ordering::Relaxed);
                return Ok(done);
            }
            let j = Arc::clone(&self.journal);
            let read = tokio::task::spawn_blocking(move || {
                batch
                    .into_iter()
                    .map(|n| (n, j.read(n)))
                    .collect::<Vec<_>>()
            })
            .await
            .map_err(io)?;
            let mut entries = Vec::with_capacity(read.len());
            for (n, e) in read {
                match e {
                    Ok(e) => entries.push((n, e)),
                    Err(e) => {
                        log::warn!("journal entry {n} cannot be read ({e}); set aside");
                        let _ = self.journal.set_aside(n);
                    }
                }
            }
            let mut sent = Vec::new();
            let mut stopped = None;
            for run in entries.chunk_by(|a, b| kind(&a.1) == kind(&b.1)) {
                // Releases one at a time (each checks what the runs
                // before it sent), the others [`REPLAY_PARALLEL`] at once.
                let width = match kind(&run[0].1) {
                    Kind::Release => 1,
                    _ => REPLAY_PARALLEL,
                };
                let mut results = Vec::with_capacity(run.len());
                for chunk in run.chunks(width) {
                    let sends = chunk.iter().map(|(n, e)| self.send(*n, e, &unsent));
                    results.extend(futures::future::join_all(sends).await);
                }
                for ((n, e), r) in run.iter().zip(results) {
                    if let Entry::Record { record } = e {
                        if !self.journal.is_newest(*n, record.key()) {
                            unsent.insert(record.key());
                        } else if r.is_ok() {
                            unsent.remove(&record.key());
                        }
                    }
                    match r {
                        Ok(()) => sent.push(*n),
                        Err(e @ (FsError::Unavailable(_) | FsError::NoSpace(_))) => {
                            stopped = Some(e);
                        }
                        Err(err) => {
                            log::error!(
                                "journal entry {n} ({}) refused by the ring: {err}; kept in the journal's failed/ directory",
                                e.key().short()
                            );
                            self.journal.set_aside(*n).map_err(io)?;
                        }
                    }
                }
                if stopped.is_some() {
                    break;
                }
            }
            if !sent.is_empty() {
                // Removed only once durable on the ring.
                self.inner.sync().await?;
                for n in &sent {
                    self.journal.remove(*n).map_err(io)?;
                }
                done += sent.len() as u64;
                self.shrunk.notify_waiters();
            }
            if let Some(e) = stopped {
                log::info!("journal replay paused ({e}); {done} entries sent so far");
                return Ok(done);
            }
        }
    }

    /// Sends journaled entry `n` to the ring (`unsent`: see
    /// [`send_release`](Self::send_release)).
    async fn send(
        &self,
        n: u64,
        entry: &Entry,
        unsent: &std::collections::HashSet<Id>,
    ) -> Result<(), FsError> {
        match entry {
            Entry::Block { key, data, claim } => self
                .inner
                .put_block(*key, data.clone(), claim.clone(), Durability::Later)
                .await
                .map(|_| ()),
            Entry::Record { record } if self.journal.is_newest(n, record.key()) => {
                self.send_record(record).await
            }
            // An older version of a record journaled again since: the
            // newest builds on it.
            Entry::Record { .. } => Ok(()),
            Entry::Release { release } => self.send_release(n, entry, release, unsent).await,
        }
    }

    /// Puts a journaled record version: as a compare-and-swap against the
    /// version this machine last saw on the ring, and where another writer
    /// got there first, without one, so the storage nodes keep both for a
    /// merge (nothing is overwritten).
    async fn send_record(&self, record: &Record) -> Result<(), FsError> {
        let key = record.key();
        let seen = self.cached(key);
        let expected = seen.first().map_or(0, |r| r.seq);
        let mut put = self
            .inner
            .put_record(record.clone(), Some(expected), Durability::Later)
            .await;
        if let Err(FsError::Conflict(_)) = put {
            self.tainted.store(true, Ordering::Relaxed);
            log::debug!(
                "record {} moved on the ring meanwhile: kept beside it for a merge",
                key.short()
            );
            put = self
                .inner
                .put_record(record.clone(), None, Durability::Later)
                .await;
        }
        match put {
            Ok(()) => {
                self.remember_written(record);
                Ok(())
            }
            // A version above it is there already.
            Err(FsError::Conflict(_)) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Sends journaled release `n`, if it is safe: every record version
    /// journaled before it is on the ring (else it goes to the journal's
    /// end, behind them), and none met a version this machine had not
    /// seen (else a merge may still refer to the blocks: the owner's
    /// orphan check frees them later, once it knows).
    async fn send_release(
        &self,
        n: u64,
        entry: &Entry,
        release: &Release,
        unsent: &std::collections::HashSet<Id>,
    ) -> Result<(), FsError> {
        if self.tainted.load(Ordering::Relaxed) {
            log::debug!(
                "journal entry {n}: {} blocks left for the orphan check to free",
                release.keys.len()
            );
            return Ok(());
        }
        if !unsent.is_empty() {
            let j = Arc::clone(&self.journal);
            let again = entry.clone();
            tokio::task::spawn_blocking(move || j.append(&again))
                .await
                .map_err(io)?
                .map_err(io)?;
            return Ok(());
        }
        self.inner.release(release.clone()).await
    }
}

/// The kinds of entry, for grouping the replay's runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Block,
    Record,
    Release,
}

fn kind(e: &Entry) -> Kind {
    match e {
        Entry::Block { .. } => Kind::Block,
        Entry::Record { .. } => Kind::Record,
        Entry::Release { .. } => Kind::Release,
    }
}

/// Replays the journal whenever the ring is in reach, until `stop`.
pub async fn replay_loop<S: BlockStore>(
    store: Arc<JournalStore<S>>,
    mut stop: watch::Receiver<bool>,
) {
    let mut was_online = store.online();
    let mut next_tick = tokio::time::Instant::now() + REPLAY_EVERY;
    loop {
        let kicked = tokio::select! {
            _ = tokio::time::sleep_until(next_tick) => false,
            _ = store.kick.notified() => true,
            _ = stop.changed() => return,
        };
        if kicked {
            // A moment for the writes that follow to join this replay (a
            // directory changed many times is sent once).
            tokio::select! {
                _ = tokio::time::sleep(COALESCE) => {}
                _ = stop.changed() => return,
            }
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
        if tokio::time::Instant::now() >= next_tick {
            next_tick = tokio::time::Instant::now() + REPLAY_EVERY;
            // Lazily written entries are on disk within a tick, as a
            // storage node flushes its own within a second.
            let j = Arc::clone(&store.journal);
            if let Ok(Err(e)) = tokio::task::spawn_blocking(move || j.sync()).await {
                log::warn!("journal: {e}");
            }
        }
        if online
            && !store.sent().is_empty()
            && let Err(e) = store.settle().await
        {
            log::debug!("journal: the ring did not sync what it took yet: {e}");
        }
        if online && !store.journal.is_empty() {
            let before = store.journal_size();
            match store.replay().await {
                Ok(n) if n > 0 && (before.entries > 1000 || store.write_back.is_none()) => {
                    log::info!(
                        "journal replayed: {n} of {} entries sent to the ring",
                        before.entries
                    )
                }
                Ok(n) => log::debug!("journal replayed: {n} of {} entries", before.entries),
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
        // A big block (a sequential write's) goes straight to the ring
        // while it is in reach, write-back or not: order does not matter
        // for blocks, and the records that refer to it come after.
        if !self.journaling() || (data.len() >= DIRECT_BLOCK && self.online()) {
            let keepable = !self.journaling() && data.len() < DIRECT_BLOCK;
            let entry = || Entry::Block {
                key,
                data: data.clone(),
                claim: claim.clone(),
            };
            let put = |via: Via| {
                let k = self
                    .inner
                    .put_block(key, data.clone(), claim.clone(), via.durability());
                async move { Ok((k.await?, Following::done())) }
            };
            match self.put_through(durability, keepable, entry, put).await {
                Err(FsError::Unavailable(e)) => {
                    log::debug!("block {} journaled: {e}", key.short());
                }
                r => return r,
            }
        }
        if !key.names(&data) {
            return Err(FsError::Invalid("block does not match its key".into()));
        }
        self.append(Entry::Block { key, data, claim }, durability)
            .await?;
        Ok(key)
    }

    async fn release(&self, rel: Release) -> Result<(), FsError> {
        if self.journaling() {
            // Sent after the records journaled before it, if safe then
            // (see `send_release`).
            return self
                .append(Entry::Release { release: rel }, Durability::Later)
                .await;
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
            && key.names(&d)
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
            let entry = || Entry::Record {
                record: rec.clone(),
            };
            let rec = &rec;
            let put = |via: Via| async move {
                match via {
                    Via::Kept => {
                        let rest = self.inner.put_record_ordered(rec.clone(), expected_seq);
                        Ok(((), rest.await?))
                    }
                    Via::Plain(d) => {
                        let r = self.inner.put_record(rec.clone(), expected_seq, d);
                        Ok((r.await?, Following::done()))
                    }
                }
            };
            let r = self.put_through(durability, true, entry, put).await;
            if let Some(done) = self.settle_online(rec, r).await {
                return done;
            }
        }
        self.journal_record(rec, expected_seq, durability).await
    }

    async fn put_new_record(&self, rec: Record, durability: Durability) -> Result<(), FsError> {
        if !self.journaling() {
            let entry = || Entry::Record {
                record: rec.clone(),
            };
            let put = |via: Via| {
                let r = self.inner.put_new_record(rec.clone(), via.durability());
                async move { Ok((r.await?, Following::done())) }
            };
            let r = self.put_through(durability, true, entry, put).await;
            if let Some(done) = self.settle_online(&rec, r).await {
                return done;
            }
        }
        // A fresh random name: nothing to compare with.
        self.append(Entry::Record { record: rec }, durability).await
    }

    fn kept_versions(&self, key: Id) -> Vec<Record> {
        match self.journal.record(key) {
            Some(r) => vec![r],
            None => self.cached(key),
        }
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
                    self.remember(key, &v);
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
        // Nothing journaled lazily (the usual case online): no hand-off to
        // a blocking thread.
        if !self.journal.is_synced() {
            let j = Arc::clone(&self.journal);
            tokio::task::spawn_blocking(move || j.sync())
                .await
                .map_err(io)?
                .map_err(io)?;
        }
        if self.journaling() {
            return Ok(());
        }
        // Only lazy puts no journal entry keeps need the ring's sync now.
        let covered = self.lazy.load(Ordering::Acquire);
        if self.lazy_synced.load(Ordering::Acquire) >= covered {
            return Ok(());
        }
        self.inner.sync().await?;
        self.lazy_synced.fetch_max(covered, Ordering::AcqRel);
        Ok(())
    }
}

#[cfg(test)]
mod tests;
