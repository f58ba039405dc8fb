//! Write-behind of directory changes.
//!
//! A directory change (link a name, unlink one, change attributes) is put
//! in the directory's queue and applied at once to an in-memory *view* of
//! the directory, which [`Vault::load`] returns while changes are pending:
//! lookups, listings and `Exists` checks through this vault see the change
//! immediately. A background task per directory stores the queued changes
//! as one compare-and-swap update ([`Vault::save`]): every change queued
//! while an update is in flight goes into the next one, so a burst of
//! changes to one directory costs one update, not one each. When the
//! update loses a race with another writer, the task re-reads the
//! directory and applies the changes again; a change that no longer
//! applies (its name was taken meanwhile) fails alone.
//!
//! Each change has a [`DirTicket`] that resolves once the change is stored
//! (or has failed). Whoever must not return before the change is visible
//! elsewhere waits on it: [`Vault::update`] at once, a newly created file
//! at its `fsync`, `fsyncdir` and unmount through [`Vault::settle_all`].
//! A new file's `close` does not wait for its entry (see below); a failure
//! found after that close is reported by the next `fsyncdir` or unmount
//! ([`Vault::note_failed_behind`]).
//!
//! Invariants:
//! - `view` = `base` with every queued and in-flight change applied, in
//!   order; `base` is the newest stored version this vault knows.
//! - A change leaves the object untouched when it fails (it checks before
//!   it edits), so changes can be applied in place.
//! - At most one task stores a given directory; a directory's state is
//!   dropped once its queue is empty, so later loads read the store again.
//! - At most one change at a time fetches a directory to start its state;
//!   changes queued meanwhile wait for that state.
//! - The per-directory queue is bounded by [`MAX_QUEUED`]: past it,
//!   [`Vault::queue_dir_change`] waits for its change to be stored.
//!
//! A change may be *held* before its update starts, so that the changes
//! after it ride along: an entry's attribute copy (which only listings
//! read) up to [`LAZY_DELAY`], a new file's entry up to [`CREATE_DELAY`].
//! Nobody waits for either while it is held (a new file's `close` stores
//! its record and returns), so a copy of many small files, which creates
//! them one after another, stores its directory once per batch rather
//! than once per file. An update starts when the earliest hold of its
//! queue ends, at once for a change that is not held (`mkdir`, `unlink`,
//! `rename`), and at once when someone waits for a ticket through
//! [`DirTicket::hurry`] or [`Vault::settle_all`] (`fsync` of the new
//! file, `fsyncdir`, unmount).

use super::object::{Link, Object};
use super::vault::{CAS_ATTEMPTS, Vault, Versioned};
use super::{BlockStore, Durability, FsError};
use futures::channel::oneshot;
use futures::future::{FutureExt, Shared};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use tokio::time::Instant;

/// A change to a directory object. It may run several times (once per
/// attempt) and must leave the object as it was when it fails.
pub type DirChange = Box<dyn FnMut(&mut Object) -> Result<(), FsError> + Send>;

/// What a stored change resolves to: the version that holds it.
type Outcome = Result<Arc<Versioned>, FsError>;

/// Changes queued in one directory before `queue_dir_change` waits.
pub const MAX_QUEUED: usize = 1024;

/// How long lazy changes wait for another change to ride along with.
pub const LAZY_DELAY: Duration = Duration::from_millis(250);

/// How long a removed file's trash entry waits for the next removals'.
/// The trash is one big directory whose names spread over all its
/// shards, so each batch rewrites about every shard: an `rm -rf` costs
/// one such round per delay, not per file (`fsyncdir` and unmount store
/// it at once).
pub const TRASH_DELAY: Duration = Duration::from_secs(1);

/// How long a new file's entry waits for the next files' entries. It
/// bounds how much later other machines see a new name (a mount's
/// listings are up to a second old anyway).
pub const CREATE_DELAY: Duration = Duration::from_millis(20);

/// Tells a directory's storing task to stop holding its queue back.
#[derive(Default)]
struct Urge {
    /// Someone waits for the queued changes: nothing is held back.
    hurry: AtomicBool,
    /// Wakes the storing task while it holds changes back.
    wake: tokio::sync::Notify,
}

impl Urge {
    fn now(&self) {
        self.hurry.store(true, Ordering::SeqCst);
        self.wake.notify_one();
    }
}

/// Resolves once its directory change is stored, or has failed.
#[derive(Clone)]
pub struct DirTicket {
    outcome: Shared<oneshot::Receiver<Outcome>>,
    /// The directory's, to store a held change at once.
    urge: Arc<Urge>,
}

impl std::fmt::Debug for DirTicket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DirTicket")
            .field("done", &self.is_done())
            .finish()
    }
}

impl DirTicket {
    /// Waits for the change; `Ok` once it is stored on its replicas.
    pub async fn wait(&self) -> Result<Arc<Versioned>, FsError> {
        match self.outcome.clone().await {
            Ok(r) => r,
            Err(_) => Err(FsError::Unavailable(
                "directory update abandoned (shutting down)".into(),
            )),
        }
    }

    /// Whether the change is stored or has failed (without waiting).
    pub fn is_done(&self) -> bool {
        self.outcome.clone().now_or_never().is_some()
    }

    /// Has the directory's update start now if the change is held (and
    /// every change queued with it).
    pub fn hurry(&self) {
        if !self.is_done() {
            self.urge.now();
        }
    }
}

/// One change waiting to be stored.
struct Queued {
    change: DirChange,
    /// When the change must be durable (a batch is stored durably at once
    /// if any of its changes asks).
    durability: Durability,
    /// Until when it may be held back (see the module doc).
    until: Instant,
    done: oneshot::Sender<Outcome>,
    ticket: DirTicket,
}

/// The pending state of one directory.
struct DirState {
    /// The newest stored version known.
    base: Versioned,
    /// `base` with every queued and in-flight change applied.
    view: Versioned,
    /// Changes not yet handed to the storing task, in order.
    queued: Vec<Queued>,
    /// Changes the storing task is storing now (taken out of `queued`,
    /// still part of `view` until the update lands or fails).
    flying: Vec<DirTicket>,
    /// A task is storing this directory's changes (at most one is).
    running: bool,
    /// Shared with the tickets: stop holding back.
    urge: Arc<Urge>,
    /// The storing task holds the queue back until then.
    holding: Option<Instant>,
}

impl DirState {
    /// Until when the queue may be held back: the earliest hold among
    /// its changes, or now if someone waits.
    fn hold_until(&self) -> Option<Instant> {
        if self.urge.hurry.load(Ordering::SeqCst) {
            return None;
        }
        let until = self.queued.iter().map(|q| q.until).min()?;
        (until > Instant::now()).then_some(until)
    }
}

/// Pending directory changes of a vault, by directory record name.
/// `std::sync::Mutex`: never held across an `.await`.
#[derive(Default)]
pub struct PendingDirs {
    dirs: Mutex<HashMap<Vec<u8>, DirState>>,
    /// `settle_all` calls under way: changes queued meanwhile (a
    /// removal's trash entry, queued once the removal is stored) are not
    /// held back, so a settle never waits out a hold.
    settling: AtomicUsize,
    /// Why work written behind could not be stored after the call that
    /// queued it returned (a new file's entry or content after its
    /// `close`): the first such failure since the last `settle_all`.
    failed_behind: Mutex<Option<FsError>>,
    /// One turn per directory whose stored version is being fetched to
    /// start its state: changes queued meanwhile wait for that fetch
    /// rather than each fetching the whole directory (an `rm -rf`'s
    /// hundreds of trash entries, queued at once behind the removals,
    /// each loaded a trash of tens of thousands of entries: gigabytes).
    loading: Mutex<HashMap<Vec<u8>, Arc<tokio::sync::Mutex<()>>>>,
}

/// The turn to fetch a directory's stored version
/// ([`PendingDirs::loading`]); given up when dropped.
struct LoadTurn<'a> {
    pending: &'a PendingDirs,
    name: Vec<u8>,
    turn: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for LoadTurn<'_> {
    fn drop(&mut self) {
        let mut loading = self
            .pending
            .loading
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        // The map's and this turn's: nobody else waits for it.
        if Arc::strong_count(tokio::sync::OwnedMutexGuard::mutex(&self.turn)) == 2 {
            loading.remove(&self.name);
        }
    }
}

/// Counts one `settle_all` under way while it lives.
struct Settling<'a>(&'a AtomicUsize);

impl<'a> Settling<'a> {
    fn start(n: &'a AtomicUsize) -> Settling<'a> {
        n.fetch_add(1, Ordering::SeqCst);
        Settling(n)
    }
}

impl Drop for Settling<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

impl PendingDirs {
    /// Waits for the turn to fetch directory `name`'s stored version.
    async fn load_turn(&self, name: &[u8]) -> LoadTurn<'_> {
        let lock = {
            let mut loading = self.loading.lock().unwrap_or_else(|e| e.into_inner());
            Arc::clone(loading.entry(name.to_vec()).or_default())
        };
        LoadTurn {
            pending: self,
            name: name.to_vec(),
            turn: lock.lock_owned().await,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<Vec<u8>, DirState>> {
        self.dirs.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The view of directory `name`, if it has pending changes.
    pub fn view(&self, name: &[u8]) -> Option<Versioned> {
        self.lock().get(name).map(|s| s.view.clone())
    }

    /// Tickets of every pending change (of one directory, or of all);
    /// held changes among them are stored now.
    fn tickets(&self, name: Option<&[u8]>) -> Vec<DirTicket> {
        let dirs = self.lock();
        for (n, s) in dirs.iter() {
            if name.is_none_or(|w| w == n.as_slice()) {
                s.urge.now();
            }
        }
        let of = |s: &DirState| -> Vec<DirTicket> {
            s.flying
                .iter()
                .cloned()
                .chain(s.queued.iter().map(|q| q.ticket.clone()))
                .collect()
        };
        match name {
            Some(n) => dirs.get(n).map(of).unwrap_or_default(),
            None => dirs.values().flat_map(of).collect(),
        }
    }

    /// Whether any directory change is pending.
    pub fn any(&self) -> bool {
        !self.lock().is_empty()
    }
}

/// Drops a directory's state when its storing task ends however it ends
/// (normally the state is gone already): if the task panicked or was
/// cancelled, the queued changes' waiters learn it (their senders drop)
/// instead of waiting for a task that no longer runs.
struct Running<'a> {
    pending: &'a PendingDirs,
    name: &'a [u8],
    /// The task ended normally (and dropped the state itself: a state
    /// there now belongs to a newer task).
    finished: bool,
}

impl Drop for Running<'_> {
    fn drop(&mut self) {
        if !self.finished {
            self.pending.lock().remove(self.name);
        }
    }
}

/// Applies `queued` to a copy of `base`, skipping changes that fail now
/// (they fail again, and are reported, when stored).
fn rebuild_view(base: &Versioned, queued: &mut [Queued]) -> Versioned {
    let mut view = base.clone();
    for q in queued {
        let _ = (q.change)(&mut view.obj);
    }
    view
}

impl<S: BlockStore> Vault<S> {
    /// Queues `change` to directory `link`: applied to the view at once
    /// (its error, such as `Exists`, is returned here), stored in the
    /// background. The returned ticket resolves when it is stored.
    pub async fn queue_dir_change(
        &self,
        link: &Link,
        change: DirChange,
    ) -> Result<DirTicket, FsError> {
        self.queue_dir_change_as(link, change, Durability::Later)
            .await
    }

    /// [`queue_dir_change`](Self::queue_dir_change) of a lazy change (see
    /// the module doc): stored with the directory's next change that is
    /// not held, or after [`LAZY_DELAY`].
    pub async fn queue_dir_change_lazy(
        &self,
        link: &Link,
        change: DirChange,
    ) -> Result<DirTicket, FsError> {
        self.queue_dir_change_held(link, change, LAZY_DELAY).await
    }

    /// [`queue_dir_change`](Self::queue_dir_change) of a change that may
    /// be held back up to `hold` (not while a `settle_all` runs).
    pub(crate) async fn queue_dir_change_held(
        &self,
        link: &Link,
        change: DirChange,
        hold: Duration,
    ) -> Result<DirTicket, FsError> {
        let hold = match self.pending.settling.load(Ordering::SeqCst) {
            0 => hold,
            _ => Duration::ZERO,
        };
        self.queue_dir_change_with(link, change, Durability::Later, hold)
            .await
    }

    /// [`queue_dir_change`](Self::queue_dir_change), stored durably at
    /// once or not.
    pub async fn queue_dir_change_as(
        &self,
        link: &Link,
        change: DirChange,
        durability: Durability,
    ) -> Result<DirTicket, FsError> {
        self.queue_dir_change_with(link, change, durability, Duration::ZERO)
            .await
    }

    /// Queues `change`, to be held back up to `hold`.
    async fn queue_dir_change_with(
        &self,
        link: &Link,
        mut change: DirChange,
        durability: Durability,
        hold: Duration,
    ) -> Result<DirTicket, FsError> {
        let mut base = None;
        // A few rounds at most: the state may go idle between the check
        // and the lock, and then the base must be fetched after all.
        for _ in 0..3 {
            // Held until the state is in place, so that changes queued
            // meanwhile find it rather than fetch the directory again.
            let mut _turn = None;
            if base.is_none() && !self.pending.lock().contains_key(&link.name) {
                _turn = Some(self.pending.load_turn(&link.name).await);
                if !self.pending.lock().contains_key(&link.name) {
                    base = Some(match self.guess(link) {
                        Some(g) => g,
                        None => self.load_stored(link).await?,
                    });
                }
            }
            let (ticket, start, full) = {
                let mut dirs = self.pending.lock();
                if !dirs.contains_key(&link.name) {
                    let Some(b) = base.take() else {
                        continue;
                    };
                    dirs.insert(
                        link.name.clone(),
                        DirState {
                            view: b.clone(),
                            base: b,
                            queued: Vec::new(),
                            flying: Vec::new(),
                            running: false,
                            urge: Arc::default(),
                            holding: None,
                        },
                    );
                }
                let Some(st) = dirs.get_mut(&link.name) else {
                    continue;
                };
                if let Err(e) = change(&mut st.view.obj) {
                    if !st.running {
                        // Created just now for this change: nothing pends.
                        dirs.remove(&link.name);
                    }
                    return Err(e);
                }
                let (done, rx) = oneshot::channel();
                let ticket = DirTicket {
                    outcome: rx.shared(),
                    urge: Arc::clone(&st.urge),
                };
                let until = Instant::now() + hold;
                st.queued.push(Queued {
                    change,
                    durability,
                    until,
                    done,
                    ticket: ticket.clone(),
                });
                let full = st.queued.len() > MAX_QUEUED;
                if full {
                    st.urge.now();
                } else if st.holding.is_some_and(|h| until < h) {
                    st.urge.wake.notify_one();
                }
                let start = !st.running;
                st.running = true;
                (ticket, start, full)
            };
            if start {
                match self.me.upgrade() {
                    Some(me) => {
                        tokio::spawn(me.store_dir_changes(link.clone()));
                    }
                    None => {
                        // Unreachable while `self` is borrowed from its Arc.
                        self.pending.lock().remove(&link.name);
                        return Err(FsError::Unavailable("vault is closing".into()));
                    }
                }
            }
            if full {
                ticket.wait().await?;
            }
            return Ok(ticket);
        }
        Err(FsError::Unavailable(
            "directory state changed too often".into(),
        ))
    }

    /// The background task of directory `link`: stores its queue, batch
    /// by batch, until it is empty.
    async fn store_dir_changes(self: Arc<Self>, link: Link) {
        let mut guard = Running {
            pending: &self.pending,
            name: &link.name,
            finished: false,
        };
        self.drain_dir(&link).await;
        guard.finished = true;
    }

    /// The loop of [`Vault::store_dir_changes`]; returns once the queue is
    /// empty and the directory's state dropped.
    async fn drain_dir(&self, link: &Link) {
        loop {
            // Held changes only: wait for more, or for someone to wait.
            let hold = {
                let mut dirs = self.pending.lock();
                let Some(st) = dirs.get_mut(&link.name) else {
                    return;
                };
                st.holding = st.hold_until();
                st.holding.map(|until| (until, Arc::clone(&st.urge)))
            };
            if let Some((until, urge)) = hold {
                let woken = urge.wake.notified();
                let _ = tokio::time::timeout_at(until, woken).await;
                if let Some(st) = self.pending.lock().get_mut(&link.name) {
                    st.holding = None;
                }
                // A change not held, or a hurry, may have come: look again.
                continue;
            }
            let mut batch = {
                let mut dirs = self.pending.lock();
                let Some(st) = dirs.get_mut(&link.name) else {
                    return;
                };
                if st.queued.is_empty() {
                    dirs.remove(&link.name);
                    return;
                }
                let batch = std::mem::take(&mut st.queued);
                st.urge.hurry.store(false, Ordering::SeqCst);
                st.flying = batch.iter().map(|q| q.ticket.clone()).collect();
                batch
            };
            let (stored, results) = self.store_batch(link, &mut batch).await;
            if let Err(e) = &stored {
                log::warn!(
                    "directory {}: {} change(s) could not be stored: {e}",
                    hex::encode(&link.name[..link.name.len().min(4)]),
                    batch.len()
                );
            }
            {
                let mut dirs = self.pending.lock();
                if let Some(st) = dirs.get_mut(&link.name) {
                    st.flying.clear();
                    match &stored {
                        Ok(v) => st.base = Versioned::clone(v),
                        Err(_) => {
                            if let Some(g) = self.guess(link) {
                                st.base = g;
                            }
                        }
                    }
                    st.view = rebuild_view(&st.base, &mut st.queued);
                }
            }
            for (i, q) in batch.into_iter().enumerate() {
                let outcome = match (&stored, results.get(i)) {
                    (Err(e), _) => Err(e.clone()),
                    (Ok(_), Some(Err(e))) => Err(e.clone()),
                    (Ok(v), _) => Ok(Arc::clone(v)),
                };
                let _ = q.done.send(outcome);
            }
        }
    }

    /// Stores `batch` in directory `link` as one compare-and-swap update,
    /// re-reading and re-applying on conflict. Returns the stored version
    /// (or why nothing could be stored) and each change's own result.
    async fn store_batch(
        &self,
        link: &Link,
        batch: &mut [Queued],
    ) -> (Result<Arc<Versioned>, FsError>, Vec<Result<(), FsError>>) {
        for attempt in 0..CAS_ATTEMPTS {
            let guessed = if attempt == 0 { self.guess(link) } else { None };
            let base = match guessed {
                Some(g) => g,
                None => match self.load_stored(link).await {
                    Ok(v) => v,
                    Err(e) => return (Err(e), Vec::new()),
                },
            };
            let mut v = base.clone();
            let results: Vec<Result<(), FsError>> =
                batch.iter_mut().map(|q| (q.change)(&mut v.obj)).collect();
            if results.iter().all(|r| r.is_err()) {
                return (Ok(Arc::new(v)), results);
            }
            let durability = match batch.iter().any(|q| q.durability == Durability::Now) {
                true => Durability::Now,
                false => Durability::Later,
            };
            match self.save_dir(link, &v.obj, &base, durability).await {
                Ok(stored) => {
                    v = stored;
                    self.remember(link, &v);
                    return (Ok(Arc::new(v)), results);
                }
                Err(FsError::Conflict(_)) => {
                    self.forget(link);
                    if attempt > 0 {
                        let jitter = rand::random::<u64>() % (5 << attempt.min(6));
                        tokio::time::sleep(Duration::from_millis(jitter)).await;
                    }
                }
                Err(e) => {
                    self.forget(link);
                    return (Err(e), Vec::new());
                }
            }
        }
        (Err(FsError::Conflict(None)), Vec::new())
    }

    /// Waits until every change queued to directory `link` so far is
    /// stored or has failed.
    pub async fn settle_dir(&self, link: &Link) {
        for t in self.pending.tickets(Some(&link.name)) {
            let _ = t.wait().await;
        }
    }

    /// Waits until every directory change queued so far is stored or has
    /// failed, and every task kept with [`Vault::keep_behind`] (an object
    /// removed meanwhile losing its name, a new file's entry watched) has
    /// ended; the first failure is returned.
    pub async fn settle_all(&self) -> Result<(), FsError> {
        let _settling = Settling::start(&self.pending.settling);
        let mut first = Ok(());
        for t in self.pending.tickets(None) {
            if let Err(e) = t.wait().await
                && first.is_ok()
            {
                first = Err(e);
            }
        }
        // Objects whose removal was stored lose their names now, and
        // their blocks are released (a task may queue another).
        loop {
            let tasks =
                std::mem::take(&mut *self.unlinking.lock().unwrap_or_else(|e| e.into_inner()));
            if tasks.is_empty() {
                break;
            }
            // Blocks waiting for a batch are released now.
            self.send_releases().await;
            for t in tasks {
                let _ = t.await;
            }
        }
        // A new file's entry that failed after its close (its watcher ran
        // among the tasks above); reported once, by the ticket or here.
        if let Some(e) = self.take_failed_behind()
            && first.is_ok()
        {
            first = Err(e);
        }
        first
    }

    /// Whether directory changes are waiting to be stored.
    pub fn has_pending_dirs(&self) -> bool {
        self.pending.any()
    }

    /// Notes that work written behind (a new file's entry or content)
    /// could not be stored after its `close` had returned: the next
    /// [`Vault::settle_all`] (`fsyncdir`, unmount) reports it.
    pub fn note_failed_behind(&self, e: FsError) {
        let mut u = self
            .pending
            .failed_behind
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        u.get_or_insert(e);
    }

    /// Whether such a failure waits to be reported (then a new file's
    /// `close` stores it before returning, and reports its own failure).
    pub fn has_failed_behind(&self) -> bool {
        self.pending
            .failed_behind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .is_some()
    }

    fn take_failed_behind(&self) -> Option<FsError> {
        self.pending
            .failed_behind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
    }
}
