//! Namespace operations of the core: creating, removing and renaming
//! directory entries.
//!
//! Every change invalidates (or refreshes) the cached objects of the
//! directories it touched, so the next `lookup`/`readdir` here sees it at
//! once (other machines see it within [`super::ATTR_TTL`]). `create` writes
//! the new entry behind: it returns once the entry is in this mount's view
//! of the directory, held a moment for the next files' entries (see
//! `fs::pending`); the file's `fsync` waits until the entry is stored, its
//! `close` does not (other machines see the name up to
//! `fs::pending::CREATE_DELAY` after it). An object unlinked or
//! replaced while open here is marked so: its record is deleted, so its
//! open state is no longer saved, but it can still be read and written
//! until the last handle closes (POSIX "unlinked but open").

use super::attr::file_attr;
use super::core::{ATTR_TTL, Core};
use crate::fs::{
    Attrs, BlockStore, DirTicket, FsError, Kind, Link, OpenFile, Versioned, check_name,
};
use fuser::{FileAttr, RenameFlags};
use std::sync::Arc;

impl<S: BlockStore> Core<S> {
    /// Creates `parent/name` as a new object; counts one kernel lookup.
    /// With `behind` (files only) the entry is stored in the background
    /// and the ticket tells when; otherwise it is stored on return.
    async fn make(
        &self,
        parent: u64,
        name: &[u8],
        kind: Kind,
        attrs: Attrs,
        target: Option<Vec<u8>>,
        behind: bool,
    ) -> Result<(u64, Link, Versioned, Option<DirTicket>), FsError> {
        check_name(name)?;
        self.may_change(parent, name)?;
        let vault = self.vault_of(parent)?;
        let plink = self.dir_link(parent)?;
        let (link, v, ticket) = if behind && kind == Kind::File {
            let (l, v, t) = vault.create_pending(&plink, name, attrs).await?;
            (l, v, Some(t))
        } else {
            let (l, v) = vault.create(&plink, name, kind, attrs, target).await?;
            (l, v, None)
        };
        // The directory as this create left it: no reload for the next
        // lookup in it.
        self.refresh_dir(parent, &plink);
        let mut t = self.inodes();
        let ino = t.remember(&link, parent, name);
        t.store(ino, Arc::new(v.clone()));
        Ok((ino, link, v, ticket))
    }

    /// `mkdir`.
    pub async fn mkdir(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, FsError> {
        let (ino, _, v, _) = self
            .make(
                parent,
                name,
                Kind::Dir,
                Attrs::new(mode, uid, gid),
                None,
                false,
            )
            .await?;
        Ok(file_attr(ino, Kind::Dir, &v.obj.attrs))
    }

    /// `mknod`: regular files, fifos and sockets (devices: `NotSupported`).
    pub async fn mknod(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, FsError> {
        let kind = match mode & libc::S_IFMT {
            0 | libc::S_IFREG => Kind::File,
            libc::S_IFIFO => Kind::Fifo,
            libc::S_IFSOCK => Kind::Socket,
            // Device nodes would give access to this machine's devices.
            _ => return Err(FsError::NotSupported),
        };
        let (ino, _, v, _) = self
            .make(parent, name, kind, Attrs::new(mode, uid, gid), None, false)
            .await?;
        Ok(file_attr(ino, kind, &v.obj.attrs))
    }

    /// `symlink`: `parent/name` → `target`.
    pub async fn symlink(
        &self,
        parent: u64,
        name: &[u8],
        target: &[u8],
        uid: u32,
        gid: u32,
    ) -> Result<FileAttr, FsError> {
        if target.is_empty() || target.len() > libc::PATH_MAX as usize {
            return Err(FsError::Invalid("bad symlink target".into()));
        }
        let (ino, _, v, _) = self
            .make(
                parent,
                name,
                Kind::Symlink,
                Attrs::new(0o777, uid, gid),
                Some(target.to_vec()),
                false,
            )
            .await?;
        Ok(file_attr(ino, Kind::Symlink, &v.obj.attrs))
    }

    /// `create`: a new regular file, opened; returns its attributes and
    /// the handle.
    pub async fn create(
        &self,
        parent: u64,
        name: &[u8],
        mode: u32,
        uid: u32,
        gid: u32,
    ) -> Result<(FileAttr, u64), FsError> {
        let (ino, link, v, ticket) = self
            .make(
                parent,
                name,
                Kind::File,
                Attrs::new(mode, uid, gid),
                None,
                true,
            )
            .await?;
        let attr = file_attr(ino, Kind::File, &v.obj.attrs);
        let mut file = OpenFile::from_state(link, v);
        // The new file's record is written on its first flush (at close at
        // the latest), with the mode and owner given here; a durable flush
        // (fsync) also waits for the directory entry.
        file.touch_attrs();
        if let Some(t) = ticket {
            file.set_linking(t);
        }
        let (fh, _, _) = self.handles().attach_or_insert(ino, file);
        Ok((attr, fh))
    }

    /// The entry `name` of directory `ino`, as stored now.
    async fn entry_now(&self, ino: u64, name: &[u8]) -> Result<Option<Link>, FsError> {
        let link = self.dir_link(ino)?;
        let v = self.reload(ino, &link).await?;
        Ok(v.obj
            .entries()
            .ok_or(FsError::NotDir)?
            .get(name)
            .map(|e| e.link.clone()))
    }

    /// Notes that object `gone` left the tree (unlinked or replaced).
    fn gone(&self, gone: &Link) {
        let mut t = self.inodes();
        if let Some(ino) = t.known(&gone.name) {
            t.invalidate(ino);
            self.handles().mark_unlinked(ino);
        }
    }

    /// Notes that object `obj` lost a name but keeps others.
    fn fewer_links(&self, obj: &Link) {
        let mut t = self.inodes();
        if let Some(ino) = t.known(&obj.name) {
            t.invalidate(ino);
            self.handles().add_nlink(ino, -1);
        }
    }

    /// Removes `parent/name`, written behind (see
    /// [`crate::fs::Vault::remove_behind`]), unless the object is known
    /// here to have other names: then its link count must drop before this
    /// returns (the next `stat` of another name shows it), and the removal
    /// is stored first.
    async fn remove(&self, parent: u64, name: &[u8], dir: bool) -> Result<(), FsError> {
        check_name(name)?;
        self.may_change(parent, name)?;
        let vault = self.vault_of(parent)?;
        let plink = self.dir_link(parent)?;
        let child = self.load_ino(parent).await?.obj.entry(name).ok();
        let shared = child
            .as_ref()
            .is_some_and(|l| l.kind != Kind::Dir && self.known_links(l) > 1);
        let path = self.path_in(parent, name);
        if let (true, Some(l)) = (shared, child) {
            let res = vault.remove(&plink, name, dir, Some(&path)).await;
            self.refresh_dir(parent, &plink);
            if res? {
                self.gone(&l);
            } else {
                self.fewer_links(&l);
            }
            return Ok(());
        }
        let res = vault.remove_behind(&plink, name, dir, Some(&path)).await;
        self.refresh_dir(parent, &plink);
        self.gone(&res?);
        Ok(())
    }

    /// Caches this vault's view of directory `ino` (or drops the cache).
    fn refresh_dir(&self, ino: u64, link: &Link) {
        let recent = self.vault_of(ino).ok().and_then(|v| v.recent_dir(link));
        match recent {
            Some(d) => self.inodes().store(ino, Arc::new(d)),
            None => self.inodes().invalidate(ino),
        }
    }

    /// The link count of object `obj` as this mount last saw it (0 if
    /// unknown).
    fn known_links(&self, obj: &Link) -> u32 {
        let t = self.inodes();
        let Some(ino) = t.known(&obj.name) else {
            return 0;
        };
        if let Some(e) = self.handles().entry(ino) {
            return e.attrs.nlink;
        }
        t.cached(ino, std::time::Duration::MAX)
            .map_or(0, |v| v.obj.attrs.nlink)
    }

    /// Whether an `unlink` in `parent` runs from memory: the directory's
    /// view is cached and the removal is queued, not stored, before the
    /// call returns (see `remove`), so running it needs no network but a
    /// full queue's wait.
    pub fn removes_in_memory(&self, parent: u64) -> bool {
        let (Ok(vault), Ok(link)) = (self.vault_of(parent), self.dir_link(parent)) else {
            return false;
        };
        self.inodes().cached(parent, ATTR_TTL).is_some() && vault.recent_dir(&link).is_some()
    }

    /// `unlink`: removes a non-directory.
    pub async fn unlink(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        self.remove(parent, name, false).await
    }

    /// `rmdir`: removes an empty directory.
    pub async fn rmdir(&self, parent: u64, name: &[u8]) -> Result<(), FsError> {
        self.remove(parent, name, true).await
    }

    /// `rename`, across directories, replacing a compatible target.
    /// `RENAME_NOREPLACE` fails with `Exists` on an existing target;
    /// `RENAME_EXCHANGE` (and whiteouts) are not supported; moving a
    /// directory into its own subtree is `Invalid`.
    pub async fn rename(
        &self,
        parent: u64,
        name: &[u8],
        newparent: u64,
        newname: &[u8],
        flags: RenameFlags,
    ) -> Result<(), FsError> {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            return Err(FsError::NotSupported);
        }
        check_name(name)?;
        check_name(newname)?;
        self.may_change(parent, name)?;
        self.may_change(newparent, newname)?;
        let vault = self.same_tree(parent, newparent)?;
        let from = self.dir_link(parent)?;
        let to = self.dir_link(newparent)?;
        let moving = self
            .entry_now(parent, name)
            .await?
            .ok_or(FsError::NotFound)?;
        if moving.kind == Kind::Dir && self.inodes().has_ancestor(newparent, &moving.name) {
            return Err(FsError::Invalid(
                "cannot move a directory into itself".into(),
            ));
        }
        let target = self.entry_now(newparent, newname).await?;
        if flags.contains(RenameFlags::RENAME_NOREPLACE) && target.is_some() {
            return Err(FsError::Exists);
        }
        let known = self.inodes().known(&moving.name);
        if let Some(ino) = known {
            self.store_behind_now(ino).await?;
        }
        let replaced_at = self.path_in(newparent, newname);
        let res = vault
            .rename(&from, name, &to, newname, Some(&replaced_at))
            .await;
        {
            let mut t = self.inodes();
            t.invalidate(parent);
            t.invalidate(newparent);
        }
        let deleted = res?;
        self.inodes().moved(&moving.name, newparent, newname);
        if let Some(old) = target
            && old.name != moving.name
        {
            if deleted {
                self.gone(&old);
            } else {
                self.fewer_links(&old);
            }
        }
        Ok(())
    }

    /// `link`: a new name `newparent/newname` for non-directory `ino`;
    /// counts one kernel lookup.
    pub async fn link(
        &self,
        ino: u64,
        newparent: u64,
        newname: &[u8],
    ) -> Result<FileAttr, FsError> {
        self.writable(ino)?;
        self.may_change(newparent, newname)?;
        let vault = self.same_tree(ino, newparent)?;
        let link = self.inodes().link(ino)?;
        let to = self.dir_link(newparent)?;
        self.store_behind_now(ino).await?;
        let res = vault.hard_link(&link, &to, newname).await;
        self.inodes().invalidate(newparent);
        let v = res?;
        // The first name's copy says one link no more, so listings stop
        // trusting it (a write through the new name does not update it).
        self.note_attrs(ino, &link, &v.obj.attrs).await;
        let n = {
            let mut t = self.inodes();
            let n = t.remember(&link, newparent, newname);
            t.store(n, Arc::new(v.clone()));
            n
        };
        self.handles().add_nlink(n, 1);
        Ok(self.attr_of(n, link.kind, &v))
    }
}
