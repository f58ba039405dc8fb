//! The async file system core: every FUSE operation as an `async fn` over
//! inode and handle numbers, returning `Result<_, FsError>`. It knows
//! nothing of replies or of the kernel channel, so it is tested directly
//! (see `tests.rs`), without mounting.
//!
//! Locking: `inodes` and `handles` are `std::sync::Mutex`es that are never
//! held across an `.await`; when both are needed, `inodes` is taken first.
//! An open file's own mutex (async) is held across awaits, never while
//! taking `inodes` or `handles` for longer than a statement.
//!
//! Freshness (close-to-open): `lookup`, `getattr` and `readdir` may use an
//! object loaded up to [`ATTR_TTL`] ago; `open` always reloads the manifest
//! unless the file is open here with unsaved changes; `flush`/`fsync`
//! return only once chunks and manifest are stored.

use super::attr::{AttrChange, file_attr, file_type, trusted_hint};
use super::handles::{DirEntry, Handles};
use super::inodes::{InodeTable, LISTING_TREE, OWN_TREE, ROOT_INO};
use super::shared::SharedTrees;
use crate::fs::object::Body;
use crate::fs::{
    Attrs, BlockStore, Durability, FsError, Kind, Link, OpenFile, Vault, Versioned, check_name,
};
use crate::item::RingSpace;
use fuser::{FileAttr, FileType};
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::{Duration, Instant};

/// How long the kernel and the metadata cache may keep attributes and
/// entries.
pub const ATTR_TTL: Duration = Duration::from_secs(1);

/// `statfs` answer: the store has no fixed size, so report large numbers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
    pub bsize: u32,
    pub namelen: u32,
    pub frsize: u32,
}

/// The file system state of one mount.
pub struct Core<S> {
    /// Where the objects live.
    pub(super) vault: Arc<Vault<S>>,
    /// Inode numbers ↔ objects, with the metadata cache.
    pub(super) inodes: Mutex<InodeTable>,
    /// Open files and directories.
    pub(super) handles: Mutex<Handles>,
    /// The ring's space as last asked, and when.
    space: Mutex<Option<(RingSpace, Instant)>>,
    /// Sizes the kernel was given from directory entries' attribute copies
    /// (listings), by inode: `open` checks them against the object.
    hinted: Mutex<HashMap<u64, u64>>,
    /// Drops the kernel's cached attributes of an inode (set once mounted).
    invalidator: OnceLock<Invalidator>,
    /// The folders other accounts share with this one, under `/shared`
    /// (a mount acting as an account; set before mounting).
    shared: OnceLock<Arc<SharedTrees<S>>>,
}

/// The name of the folder of what other accounts share, at the root.
pub const SHARED_NAME: &[u8] = b"shared";

/// Drops the kernel's cached attributes of an inode, with `true` also its
/// cached pages (never from a request on that inode: the kernel may hold
/// its pages locked until the answer).
pub type Invalidator = Box<dyn Fn(u64, bool) + Send + Sync>;

/// Listed sizes remembered for `open` to check, at most.
const MAX_HINTED: usize = 1 << 16;

/// How long an answer about the ring's space is used for `statfs`.
const SPACE_TTL: Duration = Duration::from_secs(5);

impl<S: BlockStore> Core<S> {
    /// A core over `vault`, its root as inode 1.
    pub fn new(vault: Arc<Vault<S>>) -> Core<S> {
        let root = vault.root();
        Core {
            vault,
            inodes: Mutex::new(InodeTable::new(root)),
            handles: Mutex::new(Handles::default()),
            space: Mutex::new(None),
            hinted: Mutex::new(HashMap::new()),
            invalidator: OnceLock::new(),
            shared: OnceLock::new(),
        }
    }

    /// Shows the folders `trees` lists under `/shared`.
    pub fn set_shared(&self, trees: Arc<SharedTrees<S>>) {
        let _ = self.shared.set(trees);
    }

    /// Whether `parent/name` is the reserved `/shared` of a mount acting
    /// as an account.
    pub(super) fn is_shared_top(&self, parent: u64, name: &[u8]) -> bool {
        parent == ROOT_INO && name == SHARED_NAME && self.shared.get().is_some()
    }

    /// The vault of tree `tree`.
    fn tree_vault(&self, tree: u32) -> Result<Arc<Vault<S>>, FsError> {
        match (tree, self.shared.get()) {
            (OWN_TREE, _) => Ok(Arc::clone(&self.vault)),
            (LISTING_TREE, _) => Err(FsError::ReadOnly),
            (t, Some(s)) => s.vault(t),
            (_, None) => Err(FsError::Stale),
        }
    }

    /// The vault `ino` belongs to.
    pub(super) fn vault_of(&self, ino: u64) -> Result<Arc<Vault<S>>, FsError> {
        let tree = self.inodes().tree(ino);
        self.tree_vault(tree)
    }

    /// `Ok` if `ino` is in the mount's own tree (the only one it writes),
    /// `ReadOnly` (EACCES) if it is in a shared folder or `/shared`.
    pub(super) fn writable(&self, ino: u64) -> Result<(), FsError> {
        let tree = self.inodes().tree(ino);
        match (tree, self.shared.get()) {
            (OWN_TREE, _) => Ok(()),
            (LISTING_TREE, _) | (_, None) => Err(FsError::ReadOnly),
            (t, Some(s)) if s.writable(t) => Ok(()),
            _ => Err(FsError::ReadOnly),
        }
    }

    /// The vault of directories `a` and `b`, which must be of one tree
    /// (`CrossDevice` otherwise: a rename between the own tree and a
    /// shared folder is a copy).
    pub(super) fn same_tree(&self, a: u64, b: u64) -> Result<Arc<Vault<S>>, FsError> {
        let (ta, tb) = {
            let t = self.inodes();
            (t.tree(a), t.tree(b))
        };
        if ta != tb {
            return Err(FsError::CrossDevice);
        }
        self.tree_vault(ta)
    }

    /// Every vault of the mount: its own, and the shared folders'.
    pub(super) fn all_vaults(&self) -> Vec<Arc<Vault<S>>> {
        let mut v = vec![Arc::clone(&self.vault)];
        if let Some(s) = self.shared.get() {
            v.extend(s.vaults());
        }
        v
    }

    /// `Ok` if a name `name` may be made or removed in directory `parent`:
    /// it is in the own tree, and not the reserved `/shared`.
    pub(super) fn may_change(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        self.writable(parent)?;
        if self.is_shared_top(parent, name) {
            return Err(FsError::ReadOnly);
        }
        Ok(())
    }

    /// Loads `link` of tree `tree`: from its vault, or made up (`/shared`
    /// and `/shared/OWNER`, whose shared folders are noted as tree tops).
    async fn load_in(&self, tree: u32, link: &Link) -> Result<Versioned, FsError> {
        if tree != LISTING_TREE {
            return self.tree_vault(tree)?.load(link).await;
        }
        let shared = self.shared.get().ok_or(FsError::NotFound)?;
        let (v, roots) = shared.listing(link).await?;
        let mut t = self.inodes();
        for (record, tree) in roots {
            t.set_share_root(record, tree);
        }
        Ok(v)
    }

    /// Sets how the kernel's cached attributes of an inode are dropped.
    pub fn set_invalidator(&self, f: Invalidator) {
        let _ = self.invalidator.set(f);
    }

    /// Notes that the kernel was given `size` for `ino` from a directory
    /// entry's attribute copy.
    fn note_hinted(&self, ino: u64, size: u64) {
        let mut h = self.hinted.lock().unwrap_or_else(|e| e.into_inner());
        if h.len() >= MAX_HINTED {
            h.clear();
        }
        h.insert(ino, size);
    }

    /// On `open`, with the object's size as loaded: if the kernel was given
    /// another size from a listing (an entry's copy left stale by a crash
    /// between a file's save and its entry's update), its cached
    /// attributes are dropped, so reads are not cut at the stale size.
    pub(super) fn check_hinted(&self, ino: u64, size: u64) {
        let told = self
            .hinted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&ino);
        if told.is_some_and(|t| t != size) {
            self.drop_kernel_attrs(ino);
        }
    }

    pub(super) fn inodes(&self) -> MutexGuard<'_, InodeTable> {
        self.inodes.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The mount path of `ino`, as last seen.
    pub fn path_of(&self, ino: u64) -> String {
        self.inodes().path(ino)
    }

    /// The mount path of `name` in directory `parent`.
    pub fn path_in(&self, parent: u64, name: &[u8]) -> String {
        let dir = self.path_of(parent);
        let sep = if dir.ends_with('/') { "" } else { "/" };
        format!("{dir}{sep}{}", String::from_utf8_lossy(name))
    }

    /// The mount path of the file open as handle `fh`.
    pub fn path_of_fh(&self, fh: u64) -> String {
        let ino = self.handles().file(fh).map(|(ino, _)| ino);
        ino.map_or_else(|| format!("(handle {fh})"), |ino| self.path_of(ino))
    }

    /// Logs a write that failed for a storage reason, with its path and
    /// cause (one warning per failed operation), and passes the result on.
    pub fn logged<T>(
        &self,
        op: &str,
        path: impl FnOnce() -> String,
        r: Result<T, FsError>,
    ) -> Result<T, FsError> {
        if let Err(e) = &r
            && e.is_storage_failure()
        {
            log::warn!("{op} {} failed: {e}", path());
        }
        r
    }

    /// The object of `ino`, from the cache if fresh enough.
    pub(super) async fn load_ino(&self, ino: u64) -> Result<Arc<Versioned>, FsError> {
        let link = {
            let t = self.inodes();
            if let Some(v) = t.cached(ino, ATTR_TTL) {
                return Ok(v);
            }
            t.link(ino)?
        };
        self.reload(ino, &link).await
    }

    /// The object of `ino` as stored now; refreshes the cache.
    pub(super) async fn reload(&self, ino: u64, link: &Link) -> Result<Arc<Versioned>, FsError> {
        let tree = self.inodes().tree(ino);
        let v = Arc::new(self.load_in(tree, link).await?);
        self.inodes().store(ino, Arc::clone(&v));
        Ok(v)
    }

    /// The link of `ino`, which must be a directory.
    pub(super) fn dir_link(&self, ino: u64) -> Result<Link, FsError> {
        let link = self.inodes().link(ino)?;
        if link.kind != Kind::Dir {
            return Err(FsError::NotDir);
        }
        Ok(link)
    }

    /// The attributes of `ino` whose object is `v`; an open file reports
    /// its current (possibly unsaved) state.
    pub(super) fn attr_of(&self, ino: u64, kind: Kind, v: &Versioned) -> FileAttr {
        if let Some(e) = self.handles().entry(ino) {
            return file_attr(ino, kind, &e.attrs);
        }
        file_attr(ino, kind, &v.obj.attrs)
    }

    /// [`lookup`](Self::lookup) when it needs no load: the directory's
    /// view is cached within the TTL and the name is absent, or names an
    /// object open here or cached too. `None`: it needs the async path.
    pub fn lookup_cached(&self, parent: u64, name: &[u8]) -> Option<Result<FileAttr, FsError>> {
        if let Err(e) = check_name(name) {
            return Some(Err(e));
        }
        if self.is_shared_top(parent, name) {
            return None;
        }
        let mut t = self.inodes();
        let dir = t.cached(parent, ATTR_TTL)?;
        let (link, hint) = match dir.obj.dir_entry(name) {
            Ok(e) => (e.link.clone(), e.attrs.clone()),
            Err(e) => return Some(Err(e)),
        };
        let known = t.known(&link.name);
        let open = known.and_then(|i| self.handles().entry(i).map(|e| e.attrs.clone()));
        let (attrs, hinted) = if let Some(a) = open {
            (a, false)
        } else if let Some(v) = known.and_then(|i| t.cached(i, ATTR_TTL)) {
            (v.obj.attrs.clone(), false)
        } else {
            (trusted_hint(&link, hint.as_ref())?.clone(), true)
        };
        let ino = t.remember(&link, parent, name);
        drop(t);
        if hinted {
            self.note_hinted(ino, attrs.size);
        }
        Some(Ok(file_attr(ino, link.kind, &attrs)))
    }

    /// Looks `name` up in directory `parent`; counts one kernel lookup.
    pub async fn lookup(&self, parent: u64, name: &[u8]) -> Result<FileAttr, FsError> {
        check_name(name)?;
        let (link, hint) = if self.is_shared_top(parent, name) {
            (super::shared::top_link(), None)
        } else {
            let dir = self.load_ino(parent).await?;
            let e = dir.obj.dir_entry(name)?;
            (e.link.clone(), e.attrs.clone())
        };
        let known = self.inodes().known(&link.name);
        let open = known.and_then(|ino| {
            let h = self.handles();
            h.entry(ino).map(|e| (ino, e.attrs.clone()))
        });
        if let Some((_, attrs)) = open {
            // Open here: its state is the freshest there is (and an
            // unlinked-while-open file has no record to load).
            let ino = self.inodes().remember(&link, parent, name);
            return Ok(file_attr(ino, link.kind, &attrs));
        }
        let child = match known {
            Some(ino) => self.inodes().cached(ino, ATTR_TTL),
            None => None,
        };
        let child = match child {
            Some(v) => v,
            None if let Some(a) = trusted_hint(&link, hint.as_ref()) => {
                // The entry's copy, as a listing gives it: no fetch of the
                // object until it is opened (or its attributes expire).
                let ino = self.inodes().remember(&link, parent, name);
                self.note_hinted(ino, a.size);
                return Ok(file_attr(ino, link.kind, a));
            }
            None => {
                let tree = self.inodes().tree_in(parent, &link);
                Arc::new(self.load_in(tree, &link).await?)
            }
        };
        let ino = {
            let mut t = self.inodes();
            let ino = t.remember(&link, parent, name);
            t.store(ino, Arc::clone(&child));
            ino
        };
        Ok(self.attr_of(ino, link.kind, &child))
    }

    /// Drops `n` kernel lookups of `ino`.
    pub fn forget(&self, ino: u64, n: u64) {
        let mut t = self.inodes();
        let open = self.handles().is_open(ino);
        t.forget(ino, n, open);
    }

    /// [`getattr`](Self::getattr) when it needs no load (an open file, or
    /// attributes cached within the TTL); `None` otherwise.
    pub fn getattr_cached(&self, ino: u64) -> Option<FileAttr> {
        let t = self.inodes();
        let link = t.link(ino).ok()?;
        if let Some(e) = self.handles().entry(ino) {
            return Some(file_attr(ino, link.kind, &e.attrs));
        }
        let v = t.cached(ino, ATTR_TTL)?;
        Some(file_attr(ino, link.kind, &v.obj.attrs))
    }

    /// The attributes of `ino`.
    pub async fn getattr(&self, ino: u64) -> Result<FileAttr, FsError> {
        if let Some(attr) = self.getattr_cached(ino) {
            return Ok(attr);
        }
        let link = self.inodes().link(ino)?;
        let v = self.load_ino(ino).await?;
        Ok(self.attr_of(ino, link.kind, &v))
    }

    /// Changes the length (`size`) and attributes of `ino`, by path.
    pub async fn setattr(
        &self,
        ino: u64,
        size: Option<u64>,
        change: &AttrChange,
    ) -> Result<FileAttr, FsError> {
        self.setattr_via(ino, size, change, false).await
    }

    /// [`setattr`](Self::setattr); `by_handle` if it came through an open
    /// handle (`ftruncate`, or the truncation of an `open` with
    /// `O_TRUNC`): then a new length is saved with the handle's writes, at
    /// its flush, as one change. Saved alone, an `O_TRUNC` that collided
    /// with another machine's save would leave the writes that follow to
    /// overwrite that machine's version, which no conflict copy keeps.
    pub async fn setattr_via(
        &self,
        ino: u64,
        size: Option<u64>,
        change: &AttrChange,
        by_handle: bool,
    ) -> Result<FileAttr, FsError> {
        self.writable(ino)?;
        let vault = self.vault_of(ino)?;
        let link = self.inodes().link(ino)?;
        let open = self.handles().entry(ino).map(|e| Arc::clone(&e.file));
        if let Some(file) = open {
            let mut f = file.lock().await;
            let was_dirty = f.is_dirty();
            if let Some(size) = size {
                f.truncate(&vault, size).await?;
            }
            change.apply(&mut f.state.obj.attrs);
            if !change.is_empty() {
                f.touch_attrs();
            }
            // A change by path (or to a clean file) is saved now; one
            // among unsaved writes, or a new length through a handle, goes
            // with the writes at the next flush.
            let later = was_dirty || (by_handle && size.is_some());
            if !later && !self.handles().is_unlinked(ino) {
                self.flush_placed(ino, &mut f, Durability::Later).await?;
                self.note_attrs(ino, &f.link, &f.state.obj.attrs).await;
            }
            self.after_change(ino, &f);
            return Ok(file_attr(ino, link.kind, &f.state.obj.attrs));
        }
        let v = match (link.kind, size) {
            (Kind::File, Some(size)) => {
                let mut f = OpenFile::open(&vault, link.clone()).await?;
                f.truncate(&vault, size).await?;
                change.apply(&mut f.state.obj.attrs);
                f.touch_attrs();
                self.flush_placed(ino, &mut f, Durability::Later).await?;
                f.state
            }
            (Kind::Dir, Some(_)) => return Err(FsError::IsDir),
            (Kind::Symlink | Kind::Fifo | Kind::Socket, Some(_)) => {
                return Err(FsError::Invalid(
                    "only a regular file can be truncated".into(),
                ));
            }
            (_, None) => {
                if change.is_empty() {
                    vault.load(&link).await?
                } else {
                    let change = change.clone();
                    vault
                        .update(&link, move |obj| {
                            change.apply(&mut obj.attrs);
                            Ok(())
                        })
                        .await?
                }
            }
        };
        if size.is_some() || !change.is_empty() {
            // The entry's copy follows (`utimensat` of rsync's temporary
            // file, before its rename, must show under the final name).
            self.note_attrs(ino, &link, &v.obj.attrs).await;
        }
        let v = Arc::new(v);
        self.inodes().store(ino, Arc::clone(&v));
        Ok(self.attr_of(ino, link.kind, &v))
    }

    /// Records the state of open file `ino` after a change: the handle's
    /// attribute mirror and the metadata cache.
    pub(super) fn after_change(&self, ino: u64, f: &OpenFile) {
        let mut t = self.inodes();
        self.handles().set_attrs(ino, &f.state.obj.attrs);
        t.store(ino, Arc::new(f.state.clone()));
    }

    /// The target of symlink `ino`.
    pub async fn readlink(&self, ino: u64) -> Result<Vec<u8>, FsError> {
        let v = self.load_ino(ino).await?;
        match &v.obj.body {
            Body::Symlink { target } => Ok(target.clone()),
            _ => Err(FsError::Invalid("not a symlink".into())),
        }
    }

    /// Opens directory `ino`; returns the handle.
    pub fn opendir(&self, ino: u64) -> Result<u64, FsError> {
        self.dir_link(ino)?;
        Ok(self.handles().open_dir())
    }

    /// The listing of directory `ino` through handle `fh`: `.`, `..`, then
    /// the entries by name. Entry `i` has offset `i + 1` (the offset of the
    /// next one), so a reader resumes at index `offset`. The listing is read
    /// at offset 0 and kept in the handle for the later offsets.
    pub async fn readdir(
        &self,
        ino: u64,
        fh: u64,
        offset: u64,
    ) -> Result<Arc<Vec<DirEntry>>, FsError> {
        if offset > 0
            && let Some(l) = self.handles().listing(fh)
        {
            return Ok(l);
        }
        let dir = self.load_ino(ino).await?;
        let entries = dir.obj.entries().ok_or(FsError::NotDir)?;
        let listing = {
            let t = self.inodes();
            let mut out = Vec::with_capacity(entries.len() + 2);
            out.push(DirEntry {
                ino,
                kind: FileType::Directory,
                name: b".".to_vec(),
                link: None,
                hint: None,
            });
            out.push(DirEntry {
                ino: t.parent(ino),
                kind: FileType::Directory,
                name: b"..".to_vec(),
                link: None,
                hint: None,
            });
            if ino == ROOT_INO && self.shared.get().is_some() {
                let top = super::shared::top_link();
                out.push(DirEntry {
                    ino: t.ino_of(&top.name),
                    kind: FileType::Directory,
                    name: SHARED_NAME.to_vec(),
                    link: Some(top),
                    hint: None,
                });
            }
            for (name, e) in entries {
                if ino == ROOT_INO && name == SHARED_NAME && self.shared.get().is_some() {
                    continue;
                }
                out.push(DirEntry {
                    ino: t.ino_of(&e.link.name),
                    kind: file_type(e.link.kind),
                    name: name.clone(),
                    link: Some(e.link.clone()),
                    hint: e.attrs.clone(),
                });
            }
            Arc::new(out)
        };
        self.handles().set_listing(fh, Arc::clone(&listing));
        Ok(listing)
    }

    /// Attributes for the listing rows `rows` of directory `ino`
    /// (readdirplus), each with how long the kernel may keep them: from the
    /// entries' attribute copies where they can be trusted (not a
    /// directory, one link, not open here), else from the cache or the
    /// objects themselves, loaded in parallel. A row whose object cannot be
    /// loaded now is listed all the same, with its entry's copy (or bare
    /// attributes) valid for no time, so using it asks again (and fails
    /// with EIO while it is out of reach).
    pub async fn plus_attrs(
        &self,
        ino: u64,
        rows: &[DirEntry],
    ) -> Result<Vec<(FileAttr, std::time::Duration)>, FsError> {
        let dir = self.load_ino(ino).await?;
        let dot = file_attr(ino, Kind::Dir, &dir.obj.attrs);
        let loads = rows.iter().map(|e| async move {
            let Some(link) = &e.link else {
                return (dot, ATTR_TTL);
            };
            if let Some(a) = self.handles().entry(e.ino).map(|h| h.attrs.clone()) {
                return (file_attr(e.ino, link.kind, &a), ATTR_TTL);
            }
            if let Some(v) = self.inodes().cached(e.ino, ATTR_TTL) {
                return (file_attr(e.ino, link.kind, &v.obj.attrs), ATTR_TTL);
            }
            if let Some(a) = trusted_hint(link, e.hint.as_ref()) {
                self.note_hinted(e.ino, a.size);
                return (file_attr(e.ino, link.kind, a), ATTR_TTL);
            }
            let tree = self.inodes().tree_in(ino, link);
            match self.load_in(tree, link).await {
                Ok(v) => (file_attr(e.ino, link.kind, &v.obj.attrs), ATTR_TTL),
                Err(err) => {
                    log::debug!("listing: attributes of an entry out of reach: {err}");
                    let bare = Attrs::new(0o755, 0, 0);
                    let a = e.hint.as_ref().unwrap_or(&bare);
                    (file_attr(e.ino, link.kind, a), std::time::Duration::ZERO)
                }
            }
        });
        Ok(futures::future::join_all(loads).await)
    }

    /// Counts one kernel lookup of listing row `e` of directory `parent`
    /// (a readdirplus reply carried it); returns its inode number.
    pub fn remember_row(&self, parent: u64, e: &DirEntry) -> u64 {
        match &e.link {
            Some(link) => self.inodes().remember(link, parent, &e.name),
            None => e.ino,
        }
    }

    /// Notes that file `ino` was stored with `attrs`: its directory entry's
    /// attribute copy (what listings show) is brought up to date, written
    /// behind.
    pub(super) async fn note_attrs(&self, ino: u64, link: &Link, attrs: &Attrs) {
        let Some((parent, name)) = self.place_of(ino) else {
            return;
        };
        // Queued now, in the order of the changes (so a later `rename`
        // moves the entry with this copy); stored behind.
        let Ok(vault) = self.vault_of(ino) else {
            return;
        };
        let queued = vault
            .queue_entry_attrs(&parent, &name, link, attrs.clone(), Durability::Later)
            .await;
        match queued {
            Ok(Some(ticket)) => {
                tokio::spawn(async move {
                    if let Err(e) = ticket.wait().await {
                        log::debug!("directory entry attributes not updated: {e}");
                    }
                });
            }
            Ok(None) => {}
            Err(e) => log::debug!("directory entry attributes not queued: {e}"),
        }
    }

    /// Where `ino` is named now: its directory's link and its name (`None`
    /// for the root or an inode no longer known).
    pub(super) fn place_of(&self, ino: u64) -> Option<(Link, Vec<u8>)> {
        if ino == ROOT_INO {
            return None;
        }
        let t = self.inodes();
        let i = t.get(ino)?;
        Some((t.link(i.parent).ok()?, i.name.clone()))
    }

    /// Drops the kernel's cached attributes of `ino`.
    pub(super) fn drop_kernel_attrs(&self, ino: u64) {
        self.drop_kernel_cache(ino, false);
    }

    /// Drops the kernel's cached attributes of `ino`, and with `pages` its
    /// cached pages too (see [`Invalidator`]).
    pub fn drop_kernel_cache(&self, ino: u64, pages: bool) {
        if let Some(f) = self.invalidator.get() {
            f(ino, pages);
        }
    }

    /// Closes directory handle `fh`.
    pub fn releasedir(&self, fh: u64) {
        self.handles().close_dir(fh);
    }

    /// File system statistics, as `df` shows them: size and available
    /// are the ring's data file systems divided by the copies kept, used
    /// is this owner's stored bytes (so `size − used` is what `free`
    /// means to this owner). Asked of the ring at most every
    /// [`SPACE_TTL`]; if the ring cannot answer, the last answer is used.
    pub async fn statfs(&self) -> Result<StatFs, FsError> {
        let cached = *self.space.lock().unwrap_or_else(|e| e.into_inner());
        let space = match cached {
            Some((s, at)) if at.elapsed() < SPACE_TTL => s,
            _ => match self.vault.space().await {
                Ok(s) => {
                    *self.space.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some((s, Instant::now()));
                    s
                }
                Err(e) => match cached {
                    Some((s, _)) => {
                        log::debug!("statfs: using the last answer ({e})");
                        s
                    }
                    None => return Err(e),
                },
            },
        };
        let bsize = super::attr::BLKSIZE;
        let blocks = space.total / bsize as u64;
        let used = space.used.div_ceil(bsize as u64);
        Ok(StatFs {
            blocks,
            bfree: blocks.saturating_sub(used),
            bavail: (space.avail / bsize as u64).min(blocks),
            files: 1 << 32,
            ffree: 1 << 31,
            bsize,
            namelen: crate::fs::object::MAX_NAME as u32,
            frsize: bsize,
        })
    }

    /// The root's inode number.
    pub fn root_ino(&self) -> u64 {
        ROOT_INO
    }
}
