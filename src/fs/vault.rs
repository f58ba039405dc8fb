//! The vault: loading, saving and linking encrypted objects.
//!
//! Every object is a record named by its [`Link`]; saving is a
//! compare-and-swap on the record's sequence number, so two writers never
//! silently overwrite each other's directory changes: a directory update
//! that loses the race re-reads the directory and applies its change again
//! ([`Vault::update`]). Directory changes are written behind: queued,
//! visible here at once, stored in the background ([`super::pending`]).
//! A file whose save loses a race merges its changes into the winner's
//! version, or, where they collide, becomes a conflict copy (see
//! [`super::divergence`]).
//!
//! Directory operations order their writes so that a crash between them
//! never loses an object: a new directory or link is saved before it is
//! linked (a new file is linked first and reads as empty until its first
//! flush saves it), a rename links the new name before unlinking the old
//! one, and an unlinked object is deleted (tombstoned) only after it is
//! unlinked. A file created with [`Vault::create_pending`] is linked in the
//! background; its first flush waits for the link (see `OpenFile::flush`).

use super::clocks::ClockBook;
use super::conflicts::ConflictLog;
use super::crypto::{SEAL_OVERHEAD, open, open_gcm, seal, seal_gcm};
use super::divergence::conflict_name;
use super::extents::{BlockRef, Cipher};
use super::format::{Decoded, Top, decode_v2, encode_v2, object_aad, v1};
use super::history::{TAG_V1, TAG_V2};
use super::index::{NodeCache, Unstored};
use super::object::{Attrs, Body, Entry, Kind, Link, Object, Time, chunk_aad};
use super::pending::{DirTicket, PendingDirs};
use super::shards::Layout;
use super::{BlockStore, Durability, FsError, Identity, check_name, split_path};
use crate::id::{Id, IdSet};
use crate::item::RingSpace;
use crate::ownership::{MAX_RELEASE_KEYS, OwnedBlock};
use crate::record::MAX_RECORD_VALUE;
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// Chunk uploads in flight per vault (the write pipeline's depth).
pub const UPLOAD_SLOTS: usize = 4;
/// Decrypted chunks kept in memory for reads.
const PLAIN_CACHE_CHUNKS: usize = 8;
/// How long unused blocks wait to be released together.
const RELEASE_DELAY: Duration = Duration::from_millis(500);
/// Attempts of a compare-and-swap update before giving up.
pub(crate) const CAS_ATTEMPTS: u32 = 16;

/// An object as loaded, with the record version it came from.
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned {
    pub obj: Object,
    /// Record sequence number (0: never saved).
    pub seq: u64,
    /// A directory's shard records and their versions (empty for other
    /// objects and for a directory never loaded or saved).
    pub layout: Layout,
    /// A file's record plaintext as read, tagged with its format
    /// ([`super::history::TAG_V2`] or `TAG_V1`): what a save keeps when it
    /// replaces this version (`None` for a version made here).
    pub plain: Option<Arc<Vec<u8>>>,
}

impl Versioned {
    /// A version of `obj` at `seq` with no shard records.
    pub fn new(obj: Object, seq: u64) -> Versioned {
        Versioned {
            obj,
            seq,
            layout: Layout::default(),
            plain: None,
        }
    }
}

/// A file tree owned by one identity, stored in `S`.
pub struct Vault<S> {
    /// Where blocks and records go.
    pub store: Arc<S>,
    /// The owner: signs records, roots the key tree.
    identity: Identity,
    /// Bounds chunk uploads in flight.
    pub(crate) upload_slots: Arc<Semaphore>,
    /// Recently decrypted chunks, by block key (content-addressed: never stale).
    plain: Mutex<VecDeque<(Id, Arc<Vec<u8>>)>>,
    /// Blocks being fetched ahead of readers (so each is fetched once).
    prefetching: Mutex<HashSet<Id>>,
    /// The last version of each directory this vault loaded or saved, used
    /// as the first guess of a compare-and-swap update (a stale guess costs
    /// one retry, never correctness).
    dirs: Mutex<HashMap<Vec<u8>, (Versioned, Instant)>>,
    /// Directory changes queued or being stored (write-behind).
    pub(crate) pending: PendingDirs,
    /// This vault's own `Arc`, for the tasks that store directory changes.
    pub(crate) me: Weak<Vault<S>>,
    /// Whether this vault has seen the root stored (loaded or saved it):
    /// from then on a root that no replica has is out of reach, not new.
    root_seen: std::sync::atomic::AtomicBool,
    /// Index blocks already stored, for reuse by the next save.
    index_nodes: NodeCache,
    /// Objects being unlinked after their removal was stored (see
    /// [`Vault::remove_behind`]) and blocks being released (see
    /// [`Vault::release_behind`]); [`Vault::settle_all`] waits for them.
    pub(crate) unlinking: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    /// Permits for removals written behind ([`REMOVALS_BEHIND`]).
    removals: Arc<tokio::sync::Semaphore>,
    /// Blocks waiting to be released, and whether a task will send them.
    releasing: Mutex<(HashSet<Id>, bool)>,
    /// Conflict copies made here, and this machine's label in their names.
    pub conflicts: ConflictLog,
    /// The clocks of the record versions last read or written.
    pub(crate) clocks: ClockBook,
    /// Files whose concurrent versions are being resolved (record names).
    pub(crate) resolving: Mutex<HashSet<Vec<u8>>>,
    /// Told each time a piece of that background work ends.
    pub(crate) merges_done: tokio::sync::Notify,
    /// Files of merged directories already checked for concurrent versions.
    pub(crate) checked: Mutex<HashSet<Vec<u8>>>,
    /// The writer saves count as ([`BlockStore::writer`]), once asked.
    writer: std::sync::OnceLock<u64>,
    /// Files created here whose first save has not happened (record
    /// names, at most [`UNSAVED_MAX`]): they read as empty even when the
    /// store cannot tell "absent" (offline, see [`crate::journal`]).
    unsaved: Mutex<HashSet<Vec<u8>>>,
    /// How long replaced versions and deleted files are kept, in seconds
    /// (0: none are; overwrites and deletes free their blocks at once).
    retention_secs: std::sync::atomic::AtomicU64,
}

/// Unsaved new files remembered at most.
const UNSAVED_MAX: usize = 65536;

/// How long a remembered directory version is used as a first guess.
const DIR_GUESS_TTL: Duration = Duration::from_secs(5);

/// How old a remembered directory a removal may check its name in,
/// instead of loading the directory again (as old as what a mount's
/// kernel caches).
const REMOVE_GUESS_TTL: Duration = Duration::from_secs(1);

/// Removals written behind ([`Vault::remove_behind`]) whose object is not
/// unlinked yet, at most: past this an `unlink` waits for one to finish.
/// A removal is finished ~1 s after its `unlink` in an `rm -rf` (its
/// directory change is stored in a batch, then its file goes to the
/// trash), so this bound is reached at some 4,000 removals a second;
/// 256 made an `rm -rf` of 10,000 files take 42 s instead of 8.
pub const REMOVALS_BEHIND: usize = 4096;

/// Directories remembered at most.
const DIR_GUESS_MAX: usize = 4096;

/// An object that lost a name ([`Vault::begin_unlink`]): whether it was its
/// last, and the trash entry it waits for, if it went to the trash.
pub(crate) struct Unlinked {
    deleted: bool,
    trash: Option<DirTicket>,
}

impl Unlinked {
    /// Waits for the trash entry, if any; whether the object lost its
    /// last name.
    pub(crate) async fn finish(self) -> Result<bool, FsError> {
        if let Some(t) = &self.trash {
            t.wait().await?;
        }
        Ok(self.deleted)
    }
}

impl<S: BlockStore> Vault<S> {
    /// A vault for `identity` over `store`.
    pub fn new(store: Arc<S>, identity: Identity) -> Arc<Vault<S>> {
        Arc::new_cyclic(|me| Vault {
            store,
            identity,
            upload_slots: Arc::new(Semaphore::new(UPLOAD_SLOTS)),
            plain: Mutex::new(VecDeque::new()),
            prefetching: Mutex::new(HashSet::new()),
            dirs: Mutex::new(HashMap::new()),
            pending: PendingDirs::default(),
            me: me.clone(),
            root_seen: std::sync::atomic::AtomicBool::new(false),
            index_nodes: NodeCache::default(),
            unlinking: Mutex::new(Vec::new()),
            removals: Arc::new(tokio::sync::Semaphore::new(REMOVALS_BEHIND)),
            releasing: Mutex::new((HashSet::new(), false)),
            conflicts: ConflictLog::default(),
            clocks: ClockBook::default(),
            resolving: Mutex::new(HashSet::new()),
            merges_done: tokio::sync::Notify::new(),
            checked: Mutex::new(HashSet::new()),
            writer: std::sync::OnceLock::new(),
            unsaved: Mutex::new(HashSet::new()),
            retention_secs: std::sync::atomic::AtomicU64::new(
                super::history::DEFAULT_RETENTION.as_secs(),
            ),
        })
    }

    /// Sets how long replaced versions and deleted files are kept (zero:
    /// not at all).
    pub fn set_retention(&self, keep: Duration) {
        self.retention_secs
            .store(keep.as_secs(), std::sync::atomic::Ordering::Relaxed);
    }

    /// How long replaced versions and deleted files are kept.
    pub fn retention(&self) -> Duration {
        Duration::from_secs(
            self.retention_secs
                .load(std::sync::atomic::Ordering::Relaxed),
        )
    }

    /// The owner of this tree.
    pub fn identity(&self) -> &Identity {
        &self.identity
    }

    /// The link of the root directory.
    pub fn root(&self) -> Link {
        Link {
            kind: Kind::Dir,
            name: self.identity.root_name(),
            key: self.identity.root_key(),
        }
    }

    fn is_root(&self, link: &Link) -> bool {
        link.name == self.identity.root_name()
    }

    /// Whether `link` is a directory at a name derived from the identity
    /// (the root, the trash): empty until first saved, and saved first
    /// by compare-and-swap (two machines may create it at once).
    fn is_fixed(&self, link: &Link) -> bool {
        // A shared folder's top is an ordinary directory of its owner's
        // tree: absent or deleted, it is gone (the share was revoked).
        (self.is_root(link) && !self.identity.is_shared())
            || link.name == self.identity.trash_name()
    }

    /// Loads an object. The root directory exists implicitly (empty, seq 0)
    /// until first saved. A directory with changes still being stored
    /// loads as this vault's view of it (the stored version with the
    /// changes applied; `seq` is the stored version's).
    pub async fn load(&self, link: &Link) -> Result<Versioned, FsError> {
        if link.kind == Kind::Dir
            && let Some(v) = self.pending.view(&link.name)
        {
            return Ok(v);
        }
        self.load_stored(link).await
    }

    fn lock_unsaved(&self) -> std::sync::MutexGuard<'_, HashSet<Vec<u8>>> {
        self.unsaved.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Loads an object as stored now (no pending changes applied).
    pub(crate) async fn load_stored(&self, link: &Link) -> Result<Versioned, FsError> {
        let key = self.identity.record_key(&link.name);
        let versions = match self.read_versions(key).await {
            Ok(v) => v,
            // A file made here and not saved yet has nothing to read.
            Err(FsError::Unavailable(_))
                if link.kind == Kind::File && self.lock_unsaved().contains(&link.name) =>
            {
                Vec::new()
            }
            Err(e) => return Err(e),
        };
        self.versioned_from(link, key, versions).await
    }

    /// A guess at file `link` as stored, from the one version this machine
    /// kept of it (no ring read); `None` if it kept none, or several, or a
    /// delete. Only for a compare-and-swap write, which fails on replicas
    /// holding anything newer: the caller then loads it from the ring.
    async fn load_kept(&self, link: &Link) -> Option<Versioned> {
        if link.kind != Kind::File {
            return None;
        }
        let key = self.identity.record_key(&link.name);
        let versions = self.store.kept_versions(key);
        if versions.len() != 1 || versions[0].is_tombstone() {
            return None;
        }
        self.clocks.note_read(key, &versions);
        self.versioned_from(link, key, versions).await.ok()
    }

    /// The object that `versions` (read for `link`, under `key`) hold.
    async fn versioned_from(
        &self,
        link: &Link,
        key: Id,
        versions: Vec<crate::record::Record>,
    ) -> Result<Versioned, FsError> {
        // With concurrent versions, a change beats a delete: a deleted
        // head gives way to the best live version (the sequence number
        // stays the head's, which the next save swaps on).
        let head_seq = versions.first().map_or(0, |h| h.seq);
        let rec = versions
            .iter()
            .find(|r| !r.is_tombstone())
            .or(versions.first())
            .cloned();
        let root = self.is_root(link);
        let fixed = self.is_fixed(link);
        let seen = root && self.root_seen.load(std::sync::atomic::Ordering::Relaxed);
        if root && rec.is_some() {
            self.root_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        let (value, seq) = match rec {
            None if seen => {
                return Err(FsError::Unavailable(
                    "the root directory was stored, but no replica has it now".into(),
                ));
            }
            None if fixed => {
                return Ok(Versioned::new(
                    Object::empty(Kind::Dir, Attrs::new(0o755, 0, 0)),
                    0,
                ));
            }
            // A linked file whose first save has not happened yet (new files
            // are saved by their first flush) is empty.
            None if link.kind == Kind::File => {
                return Ok(Versioned::new(
                    Object::empty(Kind::File, Attrs::new(0o644, 0, 0)),
                    0,
                ));
            }
            // A directory or link is saved before its entry points at it,
            // so one that is listed but absent exists somewhere the ring
            // cannot reach now (a partition): never report it as absent.
            None => {
                return Err(FsError::Unavailable(format!(
                    "object {} is listed in its directory but no replica has it",
                    key.short()
                )));
            }
            Some(r) => match r.value {
                Some(v) => (v, head_seq),
                None if fixed => {
                    return Ok(Versioned::new(
                        Object::empty(Kind::Dir, Attrs::new(0o755, 0, 0)),
                        head_seq,
                    ));
                }
                None => return Err(FsError::NotFound),
            },
        };
        let (mut obj, mut layout, plain) = self.decode(link, key, &value, seq).await?;
        if versions.len() > 1 {
            self.merge_loaded(link, &versions, &mut obj, &mut layout)
                .await?;
        }
        if !obj.fits(link.kind) {
            return Err(FsError::Corrupt(format!(
                "object {}: kind does not match its link",
                key.short()
            )));
        }
        let merged = !layout.merged.is_empty();
        let v = Versioned {
            obj,
            seq,
            layout,
            plain,
        };
        self.remember(link, &v);
        if merged {
            self.spawn_store_merge(link);
        }
        Ok(v)
    }

    /// Opens and decodes a record value (format v2, else v1), fetching a
    /// file's index tree; a file's plaintext comes back too, tagged.
    pub(crate) async fn decode(
        &self,
        link: &Link,
        key: crate::id::Id,
        value: &[u8],
        seq: u64,
    ) -> Result<(Object, Layout, Option<Arc<Vec<u8>>>), FsError> {
        let tagged = match open(&link.key, value, &object_aad(&link.name)) {
            Ok(plain) => tagged(TAG_V2, &plain),
            Err(_) => {
                let plain = open(&link.key, value, &link.name)
                    .map_err(|e| FsError::Corrupt(format!("object {}: {e}", key.short())))?;
                tagged(TAG_V1, &plain)
            }
        };
        let (obj, layout) = self.decode_plain(link, &tagged, seq).await?;
        let plain = (link.kind == Kind::File).then(|| Arc::new(tagged));
        Ok((obj, layout, plain))
    }

    /// Decodes a tagged record plaintext of `link` (a record's, or a kept
    /// version's), fetching a file's index tree.
    pub(crate) async fn decode_plain(
        &self,
        link: &Link,
        tagged: &[u8],
        seq: u64,
    ) -> Result<(Object, Layout), FsError> {
        let (tag, plain) = tagged
            .split_first()
            .ok_or_else(|| FsError::Corrupt("empty object".into()))?;
        let mut obj = if *tag == TAG_V1 {
            v1::decode(plain)?
        } else {
            match decode_v2(plain)? {
                Decoded::Done(o) => o,
                Decoded::DirSplit { attrs, epoch } => {
                    let (entries, layout) = self.load_shards(link, seq, epoch).await?;
                    let mut obj = Object {
                        attrs,
                        body: Body::Dir { entries },
                    };
                    set_dir_nlink(&mut obj);
                    return Ok((obj, layout));
                }
                Decoded::FileTree {
                    attrs,
                    top,
                    over,
                    journal,
                    history,
                    priors,
                } => {
                    let (tree, index_blocks) =
                        super::index::load(self.store.as_ref(), link, &self.index_nodes, top)
                            .await?;
                    let mut extents = tree.clone();
                    for e in over.iter() {
                        extents.insert(*e);
                    }
                    Object {
                        attrs,
                        body: Body::File(super::object::FileContent {
                            inline: None,
                            extents,
                            index_blocks,
                            journal,
                            history,
                            priors,
                            tree: super::object::TreeBase::new(Some(tree)),
                        }),
                    }
                }
            }
        };
        set_dir_nlink(&mut obj);
        let layout = match obj.body {
            Body::Dir { ref entries } => Layout::single(&link.name, seq, entries),
            _ => Layout::default(),
        };
        Ok((obj, layout))
    }

    /// Saves `obj` as version `expected + 1`, only if the stored version is
    /// still `expected`. Returns the new sequence number.
    pub async fn save(&self, link: &Link, obj: &Object, expected: u64) -> Result<u64, FsError> {
        let mut o = obj.clone();
        self.save_file(
            link,
            &mut o,
            expected,
            (&IdSet::default(), &[]),
            Durability::Later,
            false,
        )
        .await
    }

    /// Saves a change of `obj` other than to its content (a link count, a
    /// trash mark) as version `expected + 1`, reusing the index blocks
    /// of `reusable` (the stored version's); not durable before a sync.
    pub async fn resave(
        &self,
        link: &Link,
        obj: &mut Object,
        expected: u64,
        reusable: &IdSet,
    ) -> Result<u64, FsError> {
        self.save_file(
            link,
            obj,
            expected,
            (reusable, &[]),
            Durability::Later,
            false,
        )
        .await
    }

    /// [`Vault::save`], which for a file also stores its index tree and
    /// notes the tree's blocks in `obj`. Index nodes stored before are
    /// reused only if their block is in `reusable`: the blocks of the
    /// version being replaced, which no one can have released while it is
    /// the stored version (a block of an older version may have been
    /// released by the writer that replaced it, on any machine). The
    /// blocks of `extra` (sealed, not yet stored) are stored with the
    /// index nodes, before the record.
    pub async fn save_file(
        &self,
        link: &Link,
        obj: &mut Object,
        expected: u64,
        (reusable, extra): (&IdSet, &[Unstored]),
        durability: Durability,
        found_unsaved: bool,
    ) -> Result<u64, FsError> {
        let top = match &mut obj.body {
            Body::File(c) => {
                let saved = self
                    .store_index(link, c, reusable, extra, durability)
                    .await?;
                c.index_blocks = saved.blocks;
                c.tree = super::object::TreeBase::new(saved.tree);
                Top::File(saved.index)
            }
            // Only a file's content has blocks to store with its save.
            _ if !extra.is_empty() => {
                return Err(FsError::Invalid(
                    "content blocks saved with a non-file".into(),
                ));
            }
            _ => Top::None,
        };
        if found_unsaved && expected == 0 {
            return self.save_first_of_another(link, obj, top, durability).await;
        }
        self.save_top(link, obj, top, expected, durability).await
    }

    /// Stores what a save of a file with `content` would store before its
    /// record: the index nodes it needs (reusing a cached node only from
    /// `reusable`) and the `extra` blocks, in one parallel round
    /// ([`super::index::save`] with this vault's store, identity and
    /// cache). A journal spilled behind a `fsync` ([`super::file`]) is
    /// stored this way, its record later.
    pub async fn store_index(
        &self,
        link: &Link,
        content: &super::object::FileContent,
        reusable: &IdSet,
        extra: &[Unstored],
        durability: Durability,
    ) -> Result<super::index::Saved, FsError> {
        super::index::save(
            self.store.as_ref(),
            &self.identity,
            link,
            (&self.index_nodes, reusable),
            (content, extra),
            durability,
        )
        .await
    }

    /// Saves the first version of a file another machine created and has
    /// not saved yet (its entry was stored first, so this vault found it
    /// empty), as version 2, compare-and-swap at the owner. The creator
    /// stores its version 1 at every member at once; whichever the owner
    /// takes first wins, and version 2 supersedes a version 1 any member
    /// took meanwhile, so the replicas end alike. The loser sees a lost
    /// compare-and-swap and keeps its content as a conflict copy.
    async fn save_first_of_another(
        &self,
        link: &Link,
        obj: &Object,
        top: Top,
        durability: Durability,
    ) -> Result<u64, FsError> {
        // It builds on no stored version (the swap checks there is none).
        let key = self.identity.record_key(&link.name);
        self.clocks
            .note_base(key, 1, crate::clock::Clock::default());
        let rec = self.sealed_record(link, obj, top, 2).await?;
        self.store.put_record(rec, Some(0), durability).await?;
        Ok(2)
    }

    /// Version `seq` of `obj`'s own record (with its top part), sealed
    /// under the object's key and signed.
    async fn sealed_record(
        &self,
        link: &Link,
        obj: &Object,
        top: Top,
        seq: u64,
    ) -> Result<crate::record::Record, FsError> {
        let bytes = encode_v2(obj, top)?;
        if bytes.len() + SEAL_OVERHEAD > MAX_RECORD_VALUE {
            return Err(FsError::TooBig);
        }
        let sealed = seal(&link.key, &bytes, &object_aad(&link.name));
        self.sign_next(&link.name, seq, Some(sealed)).await
    }

    /// The writer this vault's saves count as in records' clocks.
    async fn writer(&self) -> Result<u64, FsError> {
        if let Some(w) = self.writer.get() {
            return Ok(*w);
        }
        let w = self.store.writer().await?;
        let _ = self.writer.set(w);
        Ok(w)
    }

    /// Signs version `seq` of record `name`, with a clock one save by
    /// this writer above every version of `seq - 1` this vault last saw
    /// (read again if it has forgotten them).
    pub(crate) async fn sign_next(
        &self,
        name: &[u8],
        seq: u64,
        value: Option<Vec<u8>>,
    ) -> Result<crate::record::Record, FsError> {
        let key = self.identity.record_key(name);
        let writer = self.writer().await?;
        let base = match self.clocks.base(key, seq.saturating_sub(1)) {
            Some(c) => c,
            None if seq <= 1 => crate::clock::Clock::default(),
            None => {
                let v = self.store.get_versions(key).await?;
                self.clocks.note_read(key, &v);
                super::clocks::joined(&v)
            }
        };
        let scope = self.clocks.scope(key);
        let rec = self
            .identity
            .sign_in(name, seq, base.next(writer), value, scope);
        self.clocks.note_written(&rec);
        Ok(rec)
    }

    /// Stores again, with no expectation, every version of `link`'s record
    /// the replicas hold: a replica lacking them (an owner a put was
    /// counted without) takes them, the others hold them already. Best
    /// effort: a failure only leaves the next compare-and-swap to fail.
    pub(crate) async fn reseed(&self, link: &Link) {
        super::retry::reseed(self.store.as_ref(), self.identity.record_key(&link.name)).await;
    }

    /// Makes the new object `child` of directory `parent` carry the
    /// directory's scope (a folder shared with write access), so granted
    /// writers may change it.
    pub(crate) fn inherit_scope(&self, parent: &Link, child: &Link) {
        let scope = self.clocks.scope(self.identity.record_key(&parent.name));
        if scope.is_some() {
            self.clocks
                .set_scope(self.identity.record_key(&child.name), scope);
        }
    }

    /// Reads every version of record `key` (head first), noting their
    /// clocks for the next save.
    pub(crate) async fn read_versions(
        &self,
        key: Id,
    ) -> Result<Vec<crate::record::Record>, FsError> {
        let v = self.store.get_versions(key).await?;
        self.clocks.note_read(key, &v);
        Ok(v)
    }

    /// Writes an object's own record (with its top part) as version
    /// `expected + 1`.
    pub(crate) async fn save_top(
        &self,
        link: &Link,
        obj: &Object,
        top: Top,
        expected: u64,
        durability: Durability,
    ) -> Result<u64, FsError> {
        let rec = self.sealed_record(link, obj, top, expected + 1).await?;
        if expected == 0 && !self.is_fixed(link) {
            // A fresh random name: the first version needs no ordering.
            self.store.put_new_record(rec, durability).await?;
            self.lock_unsaved().remove(&link.name);
        } else {
            self.store
                .put_record(rec, Some(expected), durability)
                .await?;
        }
        if self.is_root(link) {
            self.root_seen
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(expected + 1)
    }

    /// Deletes an object (a signed tombstone), whatever its version.
    pub async fn delete(&self, link: &Link) -> Result<(), FsError> {
        self.delete_as(link, false).await
    }

    /// [`Vault::delete`]; `untagged`: the tombstone carries no scope even
    /// if the record did (no writer's grant matches it any more).
    pub(crate) async fn delete_as(&self, link: &Link, untagged: bool) -> Result<(), FsError> {
        let key = self.identity.record_key(&link.name);
        for _ in 0..CAS_ATTEMPTS {
            let current = match self.read_versions(key).await?.first() {
                None => return Ok(()),
                Some(r) if r.is_tombstone() && (!untagged || r.scope().is_none()) => {
                    return Ok(());
                }
                Some(r) => r.seq,
            };
            if untagged {
                self.clocks.set_scope(key, None);
            }
            let rec = self.sign_next(&link.name, current + 1, None).await?;
            match self
                .store
                .put_record(rec, Some(current), Durability::Later)
                .await
            {
                Err(FsError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(FsError::Conflict(None))
    }

    /// Read-modify-write of one object with compare-and-swap, retried when
    /// another writer got there first; returns the stored version. `f` may
    /// run several times and must leave the object untouched when it
    /// fails. A directory change goes through the directory's queue
    /// ([`Vault::queue_dir_change`]) and is stored when this returns.
    pub async fn update(
        &self,
        link: &Link,
        mut f: impl FnMut(&mut Object) -> Result<(), FsError> + Send + 'static,
    ) -> Result<Versioned, FsError> {
        if link.kind == Kind::Dir {
            let ticket = self.queue_dir_change(link, Box::new(f)).await?;
            return ticket.wait().await.map(|v| Versioned::clone(&v));
        }
        for attempt in 0..CAS_ATTEMPTS {
            let mut v = self.load(link).await?;
            f(&mut v.obj)?;
            match self.save(link, &v.obj, v.seq).await {
                Ok(seq) => {
                    v.seq = seq;
                    return Ok(v);
                }
                Err(FsError::Conflict(_)) => super::retry::pause(attempt).await,
                Err(e) => return Err(e),
            }
        }
        Err(FsError::Conflict(None))
    }

    /// Brings the attribute copy in entry `name` of directory `parent` up
    /// to date with `attrs` (if the entry still links to `link`), written
    /// behind; returns once it is stored. The copy is what listings show;
    /// the object's own record stays the authority.
    pub async fn note_entry_attrs(
        &self,
        parent: &Link,
        name: &[u8],
        link: &Link,
        attrs: Attrs,
        durability: Durability,
    ) -> Result<(), FsError> {
        // Not lazy: the caller waits for it.
        let change = self.entry_attrs_change(parent, name, link, attrs);
        let Some(change) = change else {
            return Ok(());
        };
        let ticket = self.queue_dir_change_as(parent, change, durability).await?;
        ticket.wait().await.map(|_| ())
    }

    /// Queues the change of [`note_entry_attrs`](Self::note_entry_attrs)
    /// and returns its ticket without waiting for it to be stored (`None`:
    /// the copy is already up to date, or the entry links elsewhere now).
    /// Changes queued for one directory apply in the order they were
    /// queued, so a caller that queues in the order its changes happened
    /// (a `close`, then a `utimensat`, then a `rename`) leaves the copy of
    /// the last one, under the entry's last name.
    pub async fn queue_entry_attrs(
        &self,
        parent: &Link,
        name: &[u8],
        link: &Link,
        attrs: Attrs,
        durability: Durability,
    ) -> Result<Option<DirTicket>, FsError> {
        let Some(change) = self.entry_attrs_change(parent, name, link, attrs) else {
            return Ok(None);
        };
        // A copy that need not be durable now is lazy: it rides along
        // with the directory's next update.
        match durability {
            Durability::Later => self.queue_dir_change_lazy(parent, change).await,
            Durability::Now => self.queue_dir_change_as(parent, change, durability).await,
        }
        .map(Some)
    }

    /// The directory change that sets the attribute copy of entry `name`
    /// to `attrs` if it still links to `link`; `None` if this vault's view
    /// shows nothing to change.
    fn entry_attrs_change(
        &self,
        parent: &Link,
        name: &[u8],
        link: &Link,
        attrs: Attrs,
    ) -> Option<super::pending::DirChange> {
        if let Some(v) = self.recent_dir(parent)
            && let Some(e) = v.obj.entries().and_then(|e| e.get(name))
            && (e.link.name != link.name || e.attrs.as_ref() == Some(&attrs))
        {
            return None;
        }
        let (name, record) = (name.to_vec(), link.name.clone());
        let change = move |d: &mut Object| {
            let entries = d.entries_mut().ok_or(FsError::NotDir)?;
            if let Some(e) = entries.get_mut(&name)
                && e.link.name == record
            {
                e.attrs = Some(attrs.clone());
            }
            Ok(())
        };
        Some(Box::new(change))
    }

    /// This vault's view of directory `link` with its pending changes, or
    /// the version it saved or loaded last, if recent (a hint: another
    /// writer may have changed it since).
    pub fn recent_dir(&self, link: &Link) -> Option<Versioned> {
        self.recent_dir_within(link, DIR_GUESS_TTL)
    }

    /// [`recent_dir`](Self::recent_dir), a saved or loaded version only if
    /// less than `age` old.
    fn recent_dir_within(&self, link: &Link, age: Duration) -> Option<Versioned> {
        self.pending
            .view(&link.name)
            .or_else(|| self.guess_within(link, age))
    }

    /// The remembered version of directory `link`, if recent.
    pub(crate) fn guess(&self, link: &Link) -> Option<Versioned> {
        self.guess_within(link, DIR_GUESS_TTL)
    }

    /// The remembered version of directory `link`, if stored or loaded
    /// less than `age` ago.
    fn guess_within(&self, link: &Link, age: Duration) -> Option<Versioned> {
        if link.kind != Kind::Dir {
            return None;
        }
        let d = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        d.get(&link.name)
            .filter(|(_, at)| at.elapsed() < age)
            .map(|(v, _)| v.clone())
    }

    pub(crate) fn remember(&self, link: &Link, v: &Versioned) {
        if link.kind != Kind::Dir {
            return;
        }
        let mut d = self.dirs.lock().unwrap_or_else(|e| e.into_inner());
        if d.len() >= DIR_GUESS_MAX {
            d.retain(|_, (_, at)| at.elapsed() < DIR_GUESS_TTL);
            if d.len() >= DIR_GUESS_MAX {
                d.clear();
            }
        }
        d.insert(link.name.clone(), (v.clone(), Instant::now()));
    }

    pub(crate) fn forget(&self, link: &Link) {
        self.dirs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&link.name);
    }

    /// Creates `name` in directory `parent` as a new object (a symlink gets
    /// `target`). Fails with `Exists` if the name is taken. Returns once
    /// the entry is stored.
    pub async fn create(
        &self,
        parent: &Link,
        name: &[u8],
        kind: Kind,
        attrs: Attrs,
        target: Option<Vec<u8>>,
    ) -> Result<(Link, Versioned), FsError> {
        if kind == Kind::File {
            let (link, v, ticket) = self.create_pending(parent, name, attrs).await?;
            ticket.wait().await?;
            return Ok((link, v));
        }
        check_name(name)?;
        let link = Link::fresh(kind);
        self.inherit_scope(parent, &link);
        let mut obj = Object::empty(kind, attrs);
        if let (Body::Symlink { target: t }, Some(v)) = (&mut obj.body, target) {
            obj.attrs.size = v.len() as u64;
            *t = v;
        }
        // A directory or link must exist before its entry points at it.
        let seq = self.save(&link, &obj, 0).await?;
        let entry = Entry {
            link: link.clone(),
            attrs: Some(obj.attrs.clone()),
        };
        if let Err(e) = self.update(parent, link_entry(name, entry)).await {
            let _ = self.delete(&link).await;
            return Err(e);
        }
        Ok((link, Versioned::new(obj, seq)))
    }

    /// Creates the file `name` in directory `parent`, writing the entry
    /// behind: it is in this vault's view of `parent` at once (`Exists` if
    /// the name is taken there), and stored in the background, held up to
    /// [`CREATE_DELAY`](super::pending::CREATE_DELAY) for the next files'
    /// entries; the ticket resolves when it is stored. The file's record
    /// is written by its first flush (until then the entry reads as an
    /// empty file, see `load`); its `fsync` waits for the ticket too.
    pub async fn create_pending(
        &self,
        parent: &Link,
        name: &[u8],
        attrs: Attrs,
    ) -> Result<(Link, Versioned, DirTicket), FsError> {
        check_name(name)?;
        let link = Link::fresh(Kind::File);
        self.inherit_scope(parent, &link);
        {
            let mut unsaved = self.lock_unsaved();
            if unsaved.len() >= UNSAVED_MAX {
                unsaved.clear();
            }
            unsaved.insert(link.name.clone());
        }
        let obj = Object::empty(Kind::File, attrs);
        let entry = Entry {
            link: link.clone(),
            attrs: Some(obj.attrs.clone()),
        };
        let change = link_new_file(name, entry, self.conflicts.machine().to_string());
        // Held a moment for the next files' entries: nobody waits for it
        // but the file's `fsync` (which hurries it), `fsyncdir` and unmount.
        let ticket = self
            .queue_dir_change_held(parent, Box::new(change), super::pending::CREATE_DELAY)
            .await?;
        Ok((link, Versioned::new(obj, 0), ticket))
    }

    /// Adds the name `parent/name` to the existing non-directory `link`
    /// (a hard link): its link count goes up first, then the entry is
    /// stored (a failure takes the count back). Returns the object.
    pub async fn hard_link(
        &self,
        link: &Link,
        parent: &Link,
        name: &[u8],
    ) -> Result<Versioned, FsError> {
        check_name(name)?;
        if link.kind == Kind::Dir {
            return Err(FsError::Permission);
        }
        // (Storing an entry is idempotent for its own object, so a name
        // that already links here must be refused before.)
        if self.load(parent).await?.obj.entry(name).is_ok() {
            return Err(FsError::Exists);
        }
        let v = self
            .update(link, |o| {
                o.attrs.nlink = o.attrs.nlink.max(1) + 1;
                o.attrs.ctime = Time::now();
                Ok(())
            })
            .await?;
        let entry = Entry {
            link: link.clone(),
            attrs: Some(v.obj.attrs.clone()),
        };
        if let Err(e) = self.update(parent, link_entry(name, entry)).await {
            if let Err(u) = self.unlink_object(link, None).await {
                log::warn!("link count of a failed hard link not taken back: {u}");
            }
            return Err(e);
        }
        Ok(v)
    }

    /// Drops one name of object `link`, after its entry is gone: with other
    /// names left its link count goes down; else a file goes to the trash
    /// if `trash_as` (the path it had) is given and versions are kept, and
    /// anything else is deleted. Returns whether it lost its last name.
    pub async fn unlink_object(
        &self,
        link: &Link,
        trash_as: Option<&str>,
    ) -> Result<bool, FsError> {
        self.begin_unlink(link, trash_as).await?.finish().await
    }

    /// [`Vault::unlink_object`] up to its trash entry being queued: what is
    /// left to wait for. (Awaited boxed, the unlink's state is freed
    /// before the wait, which lasts up to the trash's batching delay.)
    pub(crate) async fn begin_unlink(
        &self,
        link: &Link,
        trash_as: Option<&str>,
    ) -> Result<Unlinked, FsError> {
        let done = |deleted| Unlinked {
            deleted,
            trash: None,
        };
        if link.kind == Kind::Dir {
            // Its own changes still being stored (the removals that
            // emptied it) go first: a delete racing them would make them
            // fail on the replicas that took the tombstone first, and the
            // objects they removed would keep their names.
            self.settle_dir(link).await;
            self.delete(link).await?;
            return Ok(done(true));
        }
        // A writer in a folder another account shares has no trash there
        // (the owner's trash is the owner's): its deletes are final.
        let to_trash = trash_as.filter(|_| {
            link.kind == Kind::File && self.keeps_versions() && !self.identity.is_shared()
        });
        // One compare-and-swap write in the common case, over the version
        // this machine kept (it wrote or read it: an `rm -rf` of what it
        // made costs no read); again over a fresh read if the record
        // changed meanwhile (a new link elsewhere), or nothing was kept.
        for attempt in 0..CAS_ATTEMPTS {
            let kept = match attempt {
                0 => self.load_kept(link).await,
                _ => None,
            };
            let v = match kept {
                Some(v) => v,
                None => match self.load(link).await {
                    Ok(v) => v,
                    Err(FsError::NotFound) => return Ok(done(true)),
                    Err(e) => return Err(e),
                },
            };
            let written = if v.obj.attrs.nlink > 1 {
                // Other names stay: one fewer.
                let mut o = v.obj.clone();
                o.attrs.nlink -= 1;
                o.attrs.ctime = Time::now();
                let reusable = v.obj.blocks();
                self.resave(link, &mut o, v.seq, &reusable)
                    .await
                    .map(|_| done(false))
            } else if let Some(path) = to_trash {
                self.trash_file(link, v.seq, v.obj, path)
                    .await
                    .map(|ticket| Unlinked {
                        deleted: true,
                        trash: Some(ticket),
                    })
            } else {
                let rec = self.sign_next(&link.name, v.seq + 1, None).await?;
                let put = self
                    .store
                    .put_record(rec, Some(v.seq), Durability::Later)
                    .await;
                if put.is_ok() {
                    self.release_file(link, &v.obj).await;
                }
                put.map(|_| done(true))
            };
            match written {
                Err(FsError::Conflict(_)) => continue,
                other => return other,
            }
        }
        Err(FsError::Conflict(None))
    }

    /// Removes `name` from `parent`: a directory only if `dir` (and empty),
    /// anything else only if not `dir`. The object loses that name, and is
    /// deleted (a file with `trash_as`, its path, goes to the trash) if it
    /// was its last; returns whether it was.
    pub async fn remove(
        &self,
        parent: &Link,
        name: &[u8],
        dir: bool,
        trash_as: Option<&str>,
    ) -> Result<bool, FsError> {
        let (link, shards, ticket) = self.queue_remove(parent, name, dir).await?;
        ticket.wait().await?;
        Ok(self.finish_remove(&link, shards, trash_as).await)
    }

    /// [`Vault::remove`], written behind: returns (the object removed) once
    /// the removal is in this vault's view of `parent` (checked as
    /// `remove` checks it). The directory change is stored in the
    /// background (with the directory's other changes; `fsyncdir` and
    /// unmount wait for it), and only then does the object lose its name
    /// or get deleted, so a crash leaves the name or nothing, never a name
    /// of a deleted object.
    pub async fn remove_behind(
        &self,
        parent: &Link,
        name: &[u8],
        dir: bool,
        trash_as: Option<&str>,
    ) -> Result<Link, FsError> {
        let permit = Arc::clone(&self.removals)
            .acquire_owned()
            .await
            .map_err(|_| FsError::Unavailable("vault is closing".into()))?;
        let (link, shards, ticket) = self.queue_remove(parent, name, dir).await?;
        let trash_as = trash_as.map(str::to_string);
        let me = self
            .me
            .upgrade()
            .ok_or_else(|| FsError::Unavailable("vault is closing".into()))?;
        let gone = link.clone();
        let task = tokio::spawn(async move {
            let _permit = permit;
            match ticket.wait().await {
                Ok(_) => {
                    me.finish_remove(&gone, shards, trash_as.as_deref()).await;
                }
                Err(e) => log::warn!("a removal could not be stored (the name stays): {e}"),
            }
        });
        self.keep_behind(task);
        Ok(link)
    }

    /// Removals written behind whose object is not unlinked yet (at most
    /// [`REMOVALS_BEHIND`]).
    #[cfg(test)]
    pub(crate) fn removals_behind(&self) -> usize {
        REMOVALS_BEHIND - self.removals.available_permits()
    }

    /// Keeps `task`, work done behind the caller's back (a removal's
    /// unlink, a batch of releases, a new file's entry watched after its
    /// close), for [`Vault::settle_all`] to wait for.
    ///
    /// Finished tasks are swept out when the list is full, and the list
    /// grows when over half of it is still running: O(1) per task on
    /// average (a sweep at every task cost 3% of an `rm -rf` of 10,000
    /// files), and the finished tasks kept until a sweep bounded by the
    /// list's size, which follows the running tasks' count.
    pub fn keep_behind(&self, task: tokio::task::JoinHandle<()>) {
        let mut tasks = self.unlinking.lock().unwrap_or_else(|e| e.into_inner());
        if tasks.len() == tasks.capacity() {
            tasks.retain(|t| !t.is_finished());
            let (len, cap) = (tasks.len(), tasks.capacity());
            if len > cap / 2 {
                tasks.reserve(cap.max(16));
            } else if cap > 64 && len < cap / 4 {
                tasks.shrink_to(cap / 2);
            }
        }
        tasks.push(task);
    }

    /// Checks the removal of `name` from `parent` against this vault's
    /// view and queues it; the object, a removed directory's shards, and
    /// the ticket of the directory change.
    async fn queue_remove(
        &self,
        parent: &Link,
        name: &[u8],
        dir: bool,
    ) -> Result<(Link, Option<Layout>, DirTicket), FsError> {
        check_name(name)?;
        // The view includes changes still being stored, and the removal is
        // queued behind them. A directory this vault stored or loaded
        // moments ago is not loaded again (a sharded one is a read per
        // shard, for every name of an `rm -rf`): the change checks at
        // store time that the name still links to the object removed, and
        // one replaced meanwhile elsewhere stays. (A mount acts on
        // listings as old as its attribute TTL anyway.)
        let pv = match self.recent_dir_within(parent, REMOVE_GUESS_TTL) {
            Some(v) if v.obj.entry(name).is_ok() => v,
            _ => self.load(parent).await?,
        };
        let link = pv.obj.entry(name)?;
        let mut shards = None;
        match (link.kind == Kind::Dir, dir) {
            (true, false) => return Err(FsError::IsDir),
            (false, true) => return Err(FsError::NotDir),
            (true, true) => {
                let child = self.load(&link).await?;
                if child.obj.entries().is_some_and(|e| !e.is_empty()) {
                    return Err(FsError::NotEmpty);
                }
                shards = Some(child.layout);
            }
            _ => {}
        }
        let (name_owned, gone) = (name.to_vec(), link.name.clone());
        let change = move |d: &mut Object| {
            let entries = d.entries_mut().ok_or(FsError::NotDir)?;
            match entries.get(&name_owned) {
                Some(e) if e.link.name == gone => {
                    entries.remove(&name_owned);
                    touch(&mut d.attrs);
                    Ok(())
                }
                // Gone already (a retry after part of a sharded update
                // landed, or another writer removed it): done.
                None => Ok(()),
                Some(_) => Err(FsError::NotFound),
            }
        };
        let ticket = self.queue_dir_change(parent, Box::new(change)).await?;
        Ok((link, shards, ticket))
    }

    /// After its entry is stored gone: the object loses the name (deleted
    /// if it was the last; whether it was).
    ///
    /// Its own state is small: the unlink and the shards' deletion are
    /// boxed, so a removal holds ~10 KiB only while it runs, not while it
    /// waits for its ticket or its trash entry.
    async fn finish_remove(
        &self,
        link: &Link,
        shards: Option<Layout>,
        trash_as: Option<&str>,
    ) -> bool {
        // Bound by `let`, the boxed unlink is freed at the end of this
        // statement (as a `match` scrutinee it would live through the
        // wait below).
        let unlinked = Box::pin(self.begin_unlink(link, trash_as)).await;
        let finished = match unlinked {
            Ok(u) => u.finish().await,
            Err(e) => Err(e),
        };
        let deleted = finished.unwrap_or_else(|e| {
            log::warn!("unlinked object could not be deleted: {e}");
            false
        });
        if let Some(layout) = shards {
            Box::pin(self.delete_shards(&layout)).await;
        }
        deleted
    }

    /// Renames `from_parent/from` to `to_parent/to`, replacing a target of
    /// a compatible kind (an empty directory by a directory, a non-directory
    /// by a non-directory). The caller checks that a directory is not moved
    /// into itself. Returns whether a replaced object was deleted (it was
    /// its last name; a file replaced goes to the trash as `replaced_at`,
    /// its path, if given).
    pub async fn rename(
        &self,
        from_parent: &Link,
        from: &[u8],
        to_parent: &Link,
        to: &[u8],
        replaced_at: Option<&str>,
    ) -> Result<bool, FsError> {
        check_name(from)?;
        check_name(to)?;
        self.settle_dir(from_parent).await;
        self.settle_dir(to_parent).await;
        let src = self.load(from_parent).await?;
        let moving_entry = src
            .obj
            .entries()
            .ok_or(FsError::NotDir)?
            .get(from)
            .cloned()
            .ok_or(FsError::NotFound)?;
        let moving = moving_entry.link.clone();
        let dst = self.load(to_parent).await?;
        let replaced = dst
            .obj
            .entries()
            .ok_or(FsError::NotDir)?
            .get(to)
            .map(|e| e.link.clone());
        if let Some(old) = &replaced {
            if old.name == moving.name {
                return Ok(false); // same object: nothing to do
            }
            match (moving.kind == Kind::Dir, old.kind == Kind::Dir) {
                (true, false) => return Err(FsError::NotDir),
                (false, true) => return Err(FsError::IsDir),
                (true, true) => {
                    let o = self.load(old).await?;
                    if o.obj.entries().is_some_and(|e| !e.is_empty()) {
                        return Err(FsError::NotEmpty);
                    }
                }
                _ => {}
            }
        }
        let same_dir = from_parent.name == to_parent.name;
        // Link the new name first (in one update when in the same directory).
        // A rename changes the object's ctime; the entry's copy carries it,
        // which tells a merge of two sides' versions the newer name.
        let mut moving_entry = moving_entry;
        if let Some(a) = moving_entry.attrs.as_mut() {
            a.ctime = Time::now();
        }
        let (from_name, to_name, moved) = (from.to_vec(), to.to_vec(), moving_entry);
        self.update(to_parent, move |d| {
            let entries = d.entries_mut().ok_or(FsError::NotDir)?;
            if same_dir {
                match entries.get(&from_name) {
                    Some(e) if e.link.name == moved.link.name => {
                        entries.remove(&from_name);
                    }
                    _ => return Err(FsError::NotFound),
                }
            }
            entries.insert(to_name.clone(), moved.clone());
            touch(&mut d.attrs);
            Ok(())
        })
        .await?;
        if !same_dir {
            let from_name = from.to_vec();
            self.update(from_parent, move |d| {
                let entries = d.entries_mut().ok_or(FsError::NotDir)?;
                if entries
                    .get(&from_name)
                    .is_some_and(|e| e.link.name == moving.name)
                {
                    entries.remove(&from_name);
                    touch(&mut d.attrs);
                }
                Ok(())
            })
            .await?;
        }
        let mut deleted = false;
        if let Some(old) = replaced {
            match self.unlink_object(&old, replaced_at).await {
                Ok(d) => deleted = d,
                Err(e) => log::warn!("replaced object could not be deleted: {e}"),
            }
        }
        Ok(deleted)
    }

    /// Finds the object at `path` (from the root).
    pub async fn resolve(&self, path: &str) -> Result<(Link, Versioned), FsError> {
        let mut link = self.root();
        let mut v = self.load(&link).await?;
        for part in split_path(path)? {
            let next = v.obj.entry(&part)?;
            v = self.load(&next).await?;
            link = next;
        }
        Ok((link, v))
    }

    /// The parent directory of `path` and the last component.
    pub async fn resolve_parent(&self, path: &str) -> Result<(Link, Vec<u8>), FsError> {
        let mut parts = split_path(path)?;
        let name = parts
            .pop()
            .ok_or_else(|| FsError::Invalid("the root has no parent".into()))?;
        let mut link = self.root();
        for part in parts {
            let v = self.load(&link).await?;
            link = v.obj.entry(&part)?;
            if link.kind != Kind::Dir {
                return Err(FsError::NotDir);
            }
        }
        Ok((link, name))
    }

    /// Releases this owner's claims on `blocks` in the background (they
    /// are no longer referred to by any version kept): storage nodes
    /// delete them. Releases are batched: the blocks join a set that one
    /// task sends [`RELEASE_DELAY`] later (or at once when it holds
    /// [`MAX_RELEASE_KEYS`]), so a run of small saves costs one release,
    /// not one each. [`Vault::settle_all`] sends what is waiting and waits
    /// for it; a failure is logged and left to the owner's orphan check.
    pub fn release_behind(&self, blocks: HashSet<Id>) {
        if blocks.is_empty() {
            return;
        }
        self.forget_blocks(&blocks);
        let start = {
            let mut r = self.releasing.lock().unwrap_or_else(|e| e.into_inner());
            r.0.extend(blocks);
            !std::mem::replace(&mut r.1, true)
        };
        if !start {
            return;
        }
        let Some(me) = self.me.upgrade() else {
            return;
        };
        let task = tokio::spawn(async move {
            let deadline = tokio::time::Instant::now() + RELEASE_DELAY;
            while tokio::time::Instant::now() < deadline {
                let full = me
                    .releasing
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .0
                    .len()
                    >= MAX_RELEASE_KEYS;
                if full {
                    break;
                }
                tokio::time::sleep(RELEASE_DELAY / 10).await;
            }
            me.send_releases().await;
        });
        self.keep_behind(task);
    }

    /// Sends the releases waiting in [`Vault::release_behind`]'s set.
    pub(crate) async fn send_releases(&self) {
        let keys: Vec<Id> = {
            let mut r = self.releasing.lock().unwrap_or_else(|e| e.into_inner());
            r.1 = false;
            r.0.drain().collect()
        };
        for chunk in keys.chunks(MAX_RELEASE_KEYS) {
            let rel = self.identity.release(chunk.to_vec());
            if let Err(e) = self.store.release(rel).await {
                log::warn!(
                    "{} unused blocks could not be released now ({e}); the orphan check will",
                    chunk.len()
                );
            }
        }
    }

    /// Forgets what this vault keeps of released blocks (so no later
    /// index save reuses one).
    fn forget_blocks(&self, blocks: &HashSet<Id>) {
        self.index_nodes.forget_blocks(blocks);
        self.plain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|(k, _)| !blocks.contains(k));
    }

    /// Every block the tree refers to now: a walk of every directory and
    /// every file's index, of the versions kept within the retention
    /// period, and of the files in the trash. Fails if any object cannot
    /// be loaded (an orphan check must not act on a partial walk).
    pub async fn live_blocks(&self) -> Result<HashSet<Id>, FsError> {
        let cutoff = Some(self.keep_cutoff());
        let mut live = self.walk_blocks(self.root(), cutoff).await?;
        let trash = self.trash_link();
        live.extend(self.walk_blocks(trash, cutoff).await?);
        Ok(live)
    }

    /// Every block the subtree at `top` refers to now (its current
    /// versions only): reading it loads every object under `top`.
    pub async fn subtree_blocks(&self, top: Link) -> Result<HashSet<Id>, FsError> {
        self.walk_blocks(top, None).await
    }

    /// The blocks of the subtree at `top`, and with `kept_since`, those of
    /// the versions its files kept that were replaced since then.
    async fn walk_blocks(
        &self,
        top: Link,
        kept_since: Option<Time>,
    ) -> Result<HashSet<Id>, FsError> {
        let mut live = HashSet::new();
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        let mut todo = vec![top];
        while let Some(link) = todo.pop() {
            if !seen.insert(link.name.clone()) {
                continue;
            }
            let v = self.load(&link).await?;
            live.extend(v.obj.blocks());
            if let (Some(cut), Some(c)) = (kept_since, v.obj.content())
                && !c.history.kept.is_empty()
            {
                live.extend(self.kept_blocks(&link, &c.history, Some(cut)).await?);
            }
            if let Some(entries) = v.obj.entries() {
                for e in entries.values() {
                    if matches!(e.link.kind, Kind::Dir | Kind::File) {
                        todo.push(e.link.clone());
                    }
                }
            }
        }
        Ok(live)
    }

    /// The blocks of `listed` (what storage nodes hold for this owner)
    /// that no version of the tree refers to and that were claimed more
    /// than `grace_ms` before `now_ms` (younger ones may belong to a save
    /// still under way, here or on another machine of this owner).
    pub async fn orphans(
        &self,
        listed: &[OwnedBlock],
        grace_ms: u64,
        now_ms: u64,
    ) -> Result<Vec<Id>, FsError> {
        let old: Vec<&OwnedBlock> = listed
            .iter()
            .filter(|b| b.time.saturating_add(grace_ms) < now_ms)
            .collect();
        if old.is_empty() {
            return Ok(Vec::new());
        }
        let live = self.live_blocks().await?;
        Ok(old
            .into_iter()
            .filter(|b| !live.contains(&b.key))
            .map(|b| b.key)
            .collect())
    }

    /// Block uploads under way (of at most [`UPLOAD_SLOTS`]).
    pub fn uploads_in_flight(&self) -> usize {
        UPLOAD_SLOTS - self.upload_slots.available_permits()
    }

    /// Releases `blocks` now, in batches of [`MAX_RELEASE_KEYS`].
    pub async fn release_now(&self, blocks: Vec<Id>) -> Result<(), FsError> {
        let set: HashSet<Id> = blocks.iter().copied().collect();
        self.forget_blocks(&set);
        for chunk in blocks.chunks(MAX_RELEASE_KEYS) {
            let rel = self.identity.release(chunk.to_vec());
            self.store.release(rel).await?;
        }
        Ok(())
    }

    /// The ring's space as this owner sees it (`df`).
    pub async fn space(&self) -> Result<RingSpace, FsError> {
        self.store.space(self.identity.owner()).await
    }

    /// Encrypts and stores a content block of the file `link`.
    pub async fn write_block(
        &self,
        link: &Link,
        data: &[u8],
        durability: Durability,
    ) -> Result<BlockRef, FsError> {
        let (block, u) = self.seal_block(link, data);
        self.store
            .put_block(u.key, u.sealed, self.identity.claim(u.key), durability)
            .await?;
        Ok(block)
    }

    /// Seals a content block of the file `link` without storing it: its
    /// reference, and the block to store ([`Vault::save_file`]'s `extra`).
    pub fn seal_block(&self, link: &Link, data: &[u8]) -> (BlockRef, Unstored) {
        let seal_no = rand::random::<u64>();
        let sealed = seal_gcm(&link.key, data, &chunk_aad(&link.name, seal_no));
        let key = Id::of_block(&sealed);
        let block = BlockRef {
            key,
            seal: seal_no,
            cipher: Cipher::Aes256Gcm,
            len: data.len() as u32,
        };
        (block, Unstored { key, sealed })
    }

    /// Fetches and decrypts a content block of the file `link`, sealed
    /// under its link or one of its `priors` (tried first: a file re-keyed
    /// with its content left as it was has every older block under one).
    pub async fn read_block(
        &self,
        link: &Link,
        priors: &[Link],
        block: BlockRef,
    ) -> Result<Arc<Vec<u8>>, FsError> {
        if let Some(p) = self.cached_plain(block.key) {
            return Ok(p);
        }
        let sealed = self.store.get_block(block.key).await?;
        let plain = Arc::new(open_under(priors.iter().chain([link]), block, &sealed)?);
        self.remember_plain(block.key, Arc::clone(&plain));
        Ok(plain)
    }

    /// The plaintext of content block `block` of the file `link` if it is
    /// sealed under one of `priors` rather than the link itself (`None`
    /// if under the link).
    pub async fn under_prior(
        &self,
        link: &Link,
        priors: &[Link],
        block: BlockRef,
    ) -> Result<Option<Vec<u8>>, FsError> {
        let sealed = self.store.get_block(block.key).await?;
        if open_block(link, block, &sealed).is_some() {
            return Ok(None);
        }
        open_under(priors.iter(), block, &sealed).map(Some)
    }

    fn cached_plain(&self, block: Id) -> Option<Arc<Vec<u8>>> {
        let mut c = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        let pos = c.iter().position(|(k, _)| *k == block)?;
        let hit = c.remove(pos)?;
        let data = Arc::clone(&hit.1);
        c.push_front(hit);
        Some(data)
    }

    /// Whether a decrypted copy of `block` is in memory.
    pub(crate) fn has_plain(&self, block: Id) -> bool {
        self.plain
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|(k, _)| *k == block)
    }

    /// Claims `block` for a read-ahead fetch; false if one is running.
    pub(crate) fn claim_prefetch(&self, block: Id) -> bool {
        self.prefetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(block)
    }

    /// Ends a read-ahead fetch.
    pub(crate) fn release_prefetch(&self, block: Id) {
        self.prefetching
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&block);
    }

    pub(crate) fn remember_plain(&self, block: Id, data: Arc<Vec<u8>>) {
        let mut c = self.plain.lock().unwrap_or_else(|e| e.into_inner());
        if c.iter().any(|(k, _)| *k == block) {
            return;
        }
        c.push_front((block, data));
        c.truncate(PLAIN_CACHE_CHUNKS);
    }
}

/// The directory change that links `name` to `link`, refused with
/// `Exists` if the name is taken.
fn link_entry(
    name: &[u8],
    entry: Entry,
) -> impl FnMut(&mut Object) -> Result<(), FsError> + Send + 'static {
    let name = name.to_vec();
    move |dir| {
        let entries = dir.entries_mut().ok_or(FsError::NotDir)?;
        match entries.get(&name) {
            // Applied already (a retry after part of a sharded update landed).
            Some(e) if e.link == entry.link => return Ok(()),
            Some(_) => return Err(FsError::Exists),
            None => {}
        }
        entries.insert(name.clone(), entry.clone());
        touch(&mut dir.attrs);
        Ok(())
    }
}

/// [`link_entry`] for a file created behind: its first application (to
/// this vault's view, when the file is created) fails with `Exists` if
/// the name is taken. Applied again after another machine's update won
/// the race and took the name meanwhile, the file is linked under a
/// conflict copy's name instead (`NAME.conflict-<machine>-<time>.EXT`),
/// so a file whose `create` succeeded here is never dropped.
fn link_new_file(
    name: &[u8],
    entry: Entry,
    machine: String,
) -> impl FnMut(&mut Object) -> Result<(), FsError> + Send + 'static {
    let name = name.to_vec();
    let mut first = true;
    let mut at: Option<jiff::Timestamp> = None;
    move |dir| {
        let entries = dir.entries_mut().ok_or(FsError::NotDir)?;
        let mine = |e: &Entry| e.link == entry.link;
        let mut target = name.clone();
        match entries.get(&name) {
            Some(e) if mine(e) => return Ok(()),
            Some(_) if first => return Err(FsError::Exists),
            Some(_) => {
                let at = *at.get_or_insert_with(|| Time::now().timestamp());
                let free = (1..=64)
                    .map(|n| conflict_name(&name, &machine, at, n))
                    .find(|c| !matches!(entries.get(c), Some(e) if !mine(e)));
                let Some(free) = free else {
                    return Err(FsError::Exists);
                };
                if entries.get(&free).is_some() {
                    return Ok(());
                }
                target = free;
            }
            None => {}
        }
        first = false;
        entries.insert(target, entry.clone());
        touch(&mut dir.attrs);
        Ok(())
    }
}

/// A directory's link count: 2 and one per subdirectory.
pub(crate) fn set_dir_nlink(obj: &mut Object) {
    if let Some(entries) = obj.entries() {
        let subdirs = entries
            .values()
            .filter(|e| e.link.kind == Kind::Dir)
            .count();
        obj.attrs.nlink = 2 + subdirs as u32;
    }
}

/// Marks a directory changed now.
/// `plain` with the format tag `tag` in front.
fn tagged(tag: u8, plain: &[u8]) -> Vec<u8> {
    let mut t = Vec::with_capacity(plain.len() + 1);
    t.push(tag);
    t.extend_from_slice(plain);
    t
}

/// Stamps a changed directory's mtime and ctime.
pub(crate) fn touch(attrs: &mut Attrs) {
    let now = Time::now();
    attrs.mtime = now;
    attrs.ctime = now;
}

/// `sealed`, content block `block` of the file `link`, opened under the
/// link (`None` if it does not open).
fn open_block(link: &Link, block: BlockRef, sealed: &[u8]) -> Option<Vec<u8>> {
    let aad = chunk_aad(&link.name, block.seal);
    match block.cipher {
        Cipher::Aes256Gcm => open_gcm(&link.key, sealed, &aad),
        Cipher::XChaCha20Poly1305 => open(&link.key, sealed, &aad),
    }
    .ok()
}

/// `sealed`, content block `block`, opened under the first of `links`
/// that opens it, its length checked against the index.
fn open_under<'a>(
    mut links: impl Iterator<Item = &'a Link>,
    block: BlockRef,
    sealed: &[u8],
) -> Result<Vec<u8>, FsError> {
    let plain = links
        .find_map(|l| open_block(l, block, sealed))
        .ok_or_else(|| {
            let e = super::crypto::CryptoError;
            FsError::Corrupt(format!("block {}: {e}", block.key.short()))
        })?;
    if plain.len() != block.len as usize {
        return Err(FsError::Corrupt(format!(
            "block {}: length differs from the index",
            block.key.short()
        )));
    }
    Ok(plain)
}
