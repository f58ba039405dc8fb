//! File I/O of the core: open, read, write, flush, release.
//!
//! All handles of one inode share one [`OpenFile`] (see `handles.rs`), so
//! a reader sees what another handle wrote before it was flushed. `flush`
//! (each `close`) and `fsync` store everything before they return: a later
//! `open`, here or on another machine, sees the data (close-to-open).
//! The exception is a small new file's `close`: it returns at once and
//! the file's release (which the kernel sends after the close, without
//! waiting for it) stores it, so `cp -r` of small files does not wait for
//! a round of puts per file. Its name reaches other machines only after
//! that (its entry is held, see `fs::pending`); an `open` here meets the
//! same open file until it is stored; `fsync`, `fsyncdir`, an `open` for
//! writing, a rename or a link of it and unmount store it first. A
//! failure is logged and reported by the next `fsyncdir` or unmount, and
//! until then every `close` stores its file itself.

use super::core::Core;
use super::handles::SharedFile;
use crate::fs::file::linked_as;
use crate::fs::{BlockStore, Conflicted, DirTicket, Durability, FsError, Kind, Link, OpenFile};
use std::sync::Arc;

/// The part of the `open(2)` flags the core looks at.
fn truncates(flags: i32) -> bool {
    flags & libc::O_TRUNC != 0 && flags & libc::O_ACCMODE != libc::O_RDONLY
}

impl<S: BlockStore> Core<S> {
    /// Opens file `ino`; returns the handle. The manifest is reloaded from
    /// the store unless the file is open here with unsaved changes.
    pub async fn open(&self, ino: u64, flags: i32) -> Result<u64, FsError> {
        let link = self.inodes().link(ino)?;
        match link.kind {
            Kind::File => {}
            Kind::Dir => return Err(FsError::IsDir),
            Kind::Symlink => return Err(FsError::Invalid("cannot open a symlink".into())),
            // A fifo or socket is opened by the kernel itself, never here.
            Kind::Fifo | Kind::Socket => return Err(FsError::NotSupported),
        }
        let vault = self.vault_of(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            self.writable(ino)?;
        }
        let attached = self.handles().attach(ino);
        let (fh, file, fresh) = match attached {
            Some((fh, file)) => (fh, file, false),
            None => {
                let opened = OpenFile::open(&vault, link).await;
                // Replaced or removed elsewhere (`sed -i`, an editor's save
                // on another machine) after the kernel looked the name up:
                // ESTALE makes it look the name up again, in the parent as
                // stored now. A file in the trash is gone for new opens
                // (one open here stays readable).
                let gone = match &opened {
                    Err(FsError::NotFound) => true,
                    Ok(f) => f.state.obj.is_trashed(),
                    Err(_) => false,
                };
                if gone {
                    let mut t = self.inodes();
                    let parent = t.parent(ino);
                    t.invalidate(parent);
                    return Err(FsError::Stale);
                }
                let f = opened?;
                self.handles().attach_or_insert(ino, f)
            }
        };
        let mut f = file.lock().await;
        let writes = flags & libc::O_ACCMODE != libc::O_RDONLY;
        let prepared = async {
            if writes && self.handles().is_behind(ino) {
                // What a close left to its release is a version of its
                // own, not merged into the next writer's.
                self.store_open(ino, &mut f).await?;
                f.begin_session();
            }
            if !fresh {
                f.refresh(&vault).await?;
            }
            if truncates(flags) && f.size() > 0 {
                f.truncate(&vault, 0).await?;
            }
            Ok::<(), FsError>(())
        }
        .await;
        if let Err(e) = prepared {
            drop(f);
            self.close(fh);
            return Err(e);
        }
        self.check_hinted(ino, f.size());
        self.after_change(ino, &f);
        Ok(fh)
    }

    /// The file behind handle `fh`.
    pub(super) fn file_of(&self, fh: u64) -> Result<(u64, super::handles::SharedFile), FsError> {
        self.handles()
            .file(fh)
            .ok_or_else(|| FsError::Invalid(format!("no open file handle {fh}")))
    }

    /// Reads up to `size` bytes at `offset` through handle `fh`.
    pub async fn read(&self, fh: u64, offset: u64, size: u32) -> Result<Vec<u8>, FsError> {
        let (ino, file) = self.file_of(fh)?;
        let vault = self.vault_of(ino)?;
        let mut f = file.lock().await;
        f.read(&vault, offset, size as usize).await
    }

    /// Writes `data` at `offset` through handle `fh`; returns its length.
    pub async fn write(&self, fh: u64, offset: u64, data: &[u8]) -> Result<u32, FsError> {
        self.write_at(fh, Some(offset), data).await.map(|(n, _)| n)
    }

    /// [`write`](Self::write) when it needs no waiting (see
    /// [`OpenFile::write_now`], the file found unlocked); `None`: call
    /// `write`.
    pub fn write_now(&self, fh: u64, offset: u64, data: &[u8]) -> Option<Result<u32, FsError>> {
        let (ino, file) = self.file_of(fh).ok()?;
        if let Err(e) = self.writable(ino) {
            return Some(Err(e));
        }
        let mut f = file.try_lock().ok()?;
        let r = f.write_now(offset, data)?;
        self.handles().set_attrs(ino, &f.state.obj.attrs);
        Some(r.map(|n| n as u32))
    }

    /// Appends `data` through handle `fh` (opened with `O_APPEND`) at the
    /// file's end as this mount knows it. The kernel's `offset` is its own
    /// idea of the end, which may be older than what `open` loaded (another
    /// machine appended since the kernel cached the size): writing there
    /// would overwrite that machine's bytes. Returns the length and whether
    /// the bytes went elsewhere than `offset`.
    pub async fn append(&self, fh: u64, offset: u64, data: &[u8]) -> Result<(u32, bool), FsError> {
        let (n, at) = self.write_at(fh, None, data).await?;
        Ok((n, at != offset))
    }

    /// Writes `data` through handle `fh` at `offset`, or at the file's end
    /// with `None`; returns the length and where it went.
    async fn write_at(
        &self,
        fh: u64,
        offset: Option<u64>,
        data: &[u8],
    ) -> Result<(u32, u64), FsError> {
        let (ino, file) = self.file_of(fh)?;
        self.writable(ino)?;
        let vault = self.vault_of(ino)?;
        let mut f = file.lock().await;
        let at = offset.unwrap_or_else(|| f.size());
        let n = f.write(&vault, at, data).await?;
        self.handles().set_attrs(ino, &f.state.obj.attrs);
        Ok((n as u32, at))
    }

    /// Stores the file behind `fh`: chunks, then manifest (`flush` on
    /// every close, and `fsync`).
    pub async fn flush(&self, fh: u64) -> Result<(), FsError> {
        self.flush_as(fh, Durability::Later).await
    }

    /// [`flush`](Self::flush), its puts durable now or later.
    async fn flush_as(&self, fh: u64, durability: Durability) -> Result<(), FsError> {
        let (ino, file) = self.file_of(fh)?;
        let mut f = file.lock().await;
        if self.handles().is_unlinked(ino) {
            return Ok(());
        }
        if durability == Durability::Later && self.may_store_behind(ino, &f) {
            return Ok(());
        }
        let res = self.flush_placed(ino, &mut f, durability).await;
        self.after_change(ino, &f);
        if res.is_ok() {
            // The directory entry's copy of the attributes is for listings
            // only (the file's own record, just stored as `durability`
            // asks, holds them): it rides along with the directory's next
            // update. Made durable at each `fsync`, it cost a durable
            // directory put on r replicas per `fsync`.
            self.note_attrs(ino, &f.link, &f.state.obj.attrs).await;
        }
        res
    }

    /// The `close` of handle `fh` decided without waiting: whether its
    /// file is left to its release ([`Core::flush`] on a small new file,
    /// found unlocked). `false`: the caller runs `flush`.
    pub fn close_behind(&self, fh: u64) -> bool {
        let Ok((ino, file)) = self.file_of(fh) else {
            return false;
        };
        let Ok(f) = file.try_lock() else {
            return false;
        };
        !self.handles().is_unlinked(ino) && self.may_store_behind(ino, &f)
    }

    /// Whether a `close` of `ino` may return without storing it (marking
    /// it so): a small new file, while no failure of work written behind
    /// waits to be reported and fewer than `BEHIND_MAX` files wait.
    fn may_store_behind(&self, ino: u64, f: &OpenFile) -> bool {
        f.is_dirty()
            && f.is_small_and_new()
            && self.writable(ino).is_ok()
            && self.vault_of(ino).is_ok_and(|v| !v.has_failed_behind())
            && self.handles().mark_behind(ino)
    }

    /// Stores file `ino` now if a `close` left it to its release (before
    /// a rename or link of it: its other names must not show it empty).
    pub(super) async fn store_behind_now(&self, ino: u64) -> Result<(), FsError> {
        if !self.handles().is_behind(ino) {
            return Ok(());
        }
        let Some(file) = self.handles().entry(ino).map(|e| Arc::clone(&e.file)) else {
            return Ok(());
        };
        let mut f = file.lock().await;
        self.store_open(ino, &mut f).await
    }

    /// Stores open file `ino` (`f`) if it has unsaved changes and still
    /// has a name, and notes its attributes for its entry.
    async fn store_open(&self, ino: u64, f: &mut OpenFile) -> Result<(), FsError> {
        if !f.is_dirty() || self.handles().is_unlinked(ino) {
            return Ok(());
        }
        let res = self.flush_placed(ino, f, Durability::Later).await;
        self.after_change(ino, f);
        if res.is_ok() {
            self.note_attrs(ino, &f.link, &f.state.obj.attrs).await;
        }
        res
    }

    /// `fsync`: stores the file like `flush`, its puts durable on their
    /// replicas before they answer, then waits until everything else this
    /// mount stored is durable too (nothing, if this was all: then no
    /// `Sync` round is needed).
    pub async fn fsync(&self, fh: u64) -> Result<(), FsError> {
        self.flush_as(fh, Durability::Now).await?;
        self.vault.store.sync().await
    }

    /// `fsyncdir`: waits for the directory changes still being stored
    /// (new files' entries, written behind), then makes everything durable.
    pub async fn fsyncdir(&self) -> Result<(), FsError> {
        let mut settled = Ok(());
        let behind = self.handles().behind_files();
        if let Some(e) = self.store_files(behind, "fsyncdir").await {
            settled = Err(e);
        }
        for v in self.all_vaults() {
            if let Err(e) = v.settle_all().await {
                settled = Err(e);
            }
        }
        self.vault.store.sync().await?;
        settled
    }

    /// Closes handle `fh`, storing unsaved changes first. A new file's
    /// entry still being stored is watched in the background once its
    /// last handle is closed.
    pub async fn release(self: &Arc<Self>, fh: u64) -> Result<(), FsError> {
        let Ok((ino, file)) = self.file_of(fh) else {
            return Ok(());
        };
        let res = {
            let mut f = file.lock().await;
            let res = self.store_open(ino, &mut f).await;
            if let Err(e) = &res
                && self.handles().is_behind(ino)
            {
                let path = self.inodes().path(ino);
                log::warn!("{path}: the new file could not be stored after its close: {e}");
                if let Ok(vault) = self.vault_of(ino) {
                    vault.note_failed_behind(e.clone());
                }
            }
            let last = self.handles().open_count(ino) <= 1;
            if last && let Some(ticket) = f.take_linking() {
                self.watch_linking(ino, &f, ticket);
            }
            res
        };
        self.close(fh);
        res
    }

    /// Flushes file `ino`, telling it where it is named so that a collision
    /// with another machine's changes becomes a conflict copy next to it.
    /// If it does, the kernel's attributes of the file (now the other
    /// machine's version) and this mount's copy of the directory are
    /// dropped.
    pub(super) async fn flush_placed(
        &self,
        ino: u64,
        f: &mut OpenFile,
        durability: Durability,
    ) -> Result<(), FsError> {
        if self.writable(ino).is_err() {
            // Opened read-only in a shared folder: nothing to store.
            return Ok(());
        }
        let vault = self.vault_of(ino)?;
        if let Some((parent, name)) = self.place_of(ino) {
            f.set_place(parent, name);
        }
        let res = f.flush(&vault, durability).await;
        match f.take_conflict() {
            None => {}
            Some(Conflicted::Copied(copy)) => {
                let (path, parent) = {
                    let mut t = self.inodes();
                    let parent = t.parent(ino);
                    t.invalidate(parent);
                    t.invalidate(ino);
                    (t.path(ino), parent)
                };
                let copy = self.path_in(parent, &copy);
                self.vault.conflicts.note(&path, &copy);
                self.drop_kernel_attrs(ino);
            }
            Some(Conflicted::Renamed(name)) => self.linked_as(ino, &f.link, &name),
        }
        res
    }

    /// New file `ino` was linked under the conflict name `name` (another
    /// machine's new file had taken its name meanwhile).
    fn linked_as(&self, ino: u64, link: &Link, name: &[u8]) {
        let (path, copy) = {
            let mut t = self.inodes();
            let parent = t.parent(ino);
            let path = t.path(ino);
            t.moved(&link.name, parent, name);
            t.invalidate(parent);
            (path, t.path(ino))
        };
        self.vault.conflicts.note(&path, &copy);
    }

    /// Watches the entry of new file `ino`, closed before its entry was
    /// stored (see `OpenFile::flush`): a conflict name is noted as at a
    /// flush, and a failure is logged and reported by the next `fsyncdir`
    /// or unmount.
    fn watch_linking(self: &Arc<Self>, ino: u64, f: &OpenFile, ticket: DirTicket) {
        let core = Arc::clone(self);
        let link = f.link.clone();
        let place = self.place_of(ino);
        let vault = self.vault_of(ino).ok();
        let task = tokio::spawn(async move {
            match ticket.wait().await {
                Ok(dir) => {
                    if let Some(name) = place
                        .as_ref()
                        .and_then(|(_, name)| linked_as(&dir.obj, name, &link))
                    {
                        core.linked_as(ino, &link, &name);
                    }
                }
                Err(e) => {
                    let path = core.inodes().path(ino);
                    log::warn!("{path}: the new file's directory entry could not be stored: {e}");
                    if let Ok(vault) = core.vault_of(ino) {
                        vault.note_failed_behind(e);
                    }
                }
            }
        });
        if let Some(v) = vault {
            v.keep_behind(task);
        }
    }

    /// Forgets handle `fh` (and the inode, if the kernel forgot it).
    fn close(&self, fh: u64) {
        let mut t = self.inodes();
        if let Some((ino, true)) = self.handles().detach(fh) {
            t.drop_if_unused(ino);
        }
    }

    /// Stores every open file with unsaved changes (at unmount).
    pub async fn flush_all(&self) -> Result<(), FsError> {
        let files = self.handles().all_files();
        let mut first_err = self.store_files(files, "unmount").await;
        for v in self.all_vaults() {
            if let Err(e) = v.settle_all().await {
                log::warn!("unmount: a directory change could not be stored: {e}");
                first_err.get_or_insert(e);
            }
        }
        if let Err(e) = self.vault.store.sync().await {
            log::warn!("unmount: stored data could not be made durable: {e}");
            first_err.get_or_insert(e);
        }
        first_err.map_or(Ok(()), Err)
    }

    /// Stores each of open `files` with unsaved changes; the first
    /// failure (each is logged, for `why`).
    /// The files are stored at once (each its own puts), not one after
    /// another: `fsyncdir` after a copy finds up to `BEHIND_MAX` waiting.
    async fn store_files(&self, files: Vec<(u64, SharedFile)>, why: &str) -> Option<FsError> {
        let stores = files.into_iter().map(|(ino, file)| async move {
            let mut f = file.lock().await;
            self.store_open(ino, &mut f).await
        });
        let mut first_err = None;
        for e in futures::future::join_all(stores)
            .await
            .into_iter()
            .filter_map(Result::err)
        {
            log::warn!("{why}: file could not be stored: {e}");
            first_err.get_or_insert(e);
        }
        first_err
    }

    /// Whether any open file or directory has unsaved changes (without
    /// waiting).
    pub fn has_unsaved(&self) -> bool {
        self.all_vaults().iter().any(|v| v.has_pending_dirs())
            || self
                .handles()
                .all_files()
                .iter()
                .any(|(_, f)| f.try_lock().map_or(true, |f| f.is_dirty()))
    }
}
