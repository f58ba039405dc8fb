//! The `fuser::Filesystem` adapter: thin callbacks over [`Core`].
//!
//! Every callback copies its arguments, moves the reply into a task on the
//! tokio runtime and returns at once, so the FUSE threads never block on
//! the network; the task runs the core operation and answers. A `lookup`
//! or `getattr` whose answer is in memory (an open file, a view cached
//! within the TTL), a write that only adds to an open file's buffer, and
//! the `close` of a small new file left to its release, are answered on
//! the FUSE thread itself, which takes only short locks and never waits
//! for one: no hop to the runtime and back, and no wait behind its
//! background work. An `unlink` in a directory held in memory runs on the
//! FUSE thread too (`block_on`): it queues the removal, written behind;
//! only a full queue (1024 changes in one directory) makes that thread
//! wait for the directory's update, while the other threads serve on.
//! Errors become errnos in one place, [`errno`]. If the runtime is gone,
//! the dropped reply answers EIO (fuser does this), so no request ever
//! hangs.

use super::attr::AttrChange;
use super::core::{ATTR_TTL, Core};
use crate::fs::{BlockStore, FsError, Vault};
use fuser::{
    AccessFlags, BsdFileFlags, Errno, FileHandle, Filesystem, FopenFlags, Generation, INodeNo,
    InitFlags, IoctlFlags, KernelConfig, LockOwner, OpenFlags, RenameFlags, ReplyAttr, ReplyCreate,
    ReplyData, ReplyDirectory, ReplyDirectoryPlus, ReplyEmpty, ReplyEntry, ReplyIoctl, ReplyOpen,
    ReplyStatfs, ReplyWrite, ReplyXattr, Request, TimeOrNow, WriteFlags,
};
use std::ffi::OsStr;
use std::future::Future;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::runtime::Handle;
use tokio::sync::watch;

/// Listing rows given attributes per readdirplus call, at most (the
/// kernel's buffer holds ~30 of them; objects without a usable attribute
/// copy are loaded in parallel).
const PLUS_WINDOW: usize = 64;

/// Largest write the kernel sends in one request (one chunk's worth).
const MAX_WRITE: u32 = 1 << 20;
/// Read-ahead asked of the kernel (it may allow less).
const MAX_READAHEAD: u32 = 1 << 20;
/// Background requests (read-ahead, async reads) the kernel may queue.
const MAX_BACKGROUND: u16 = 64;
/// How long unmounting waits for unsaved files to be stored.
const DESTROY_FLUSH_WAIT: Duration = Duration::from_secs(60);

/// The errno for a core error (the one place errors are mapped).
pub fn errno(e: &FsError) -> Errno {
    Errno::from_i32(e.errno())
}

/// A vault as a FUSE file system.
pub struct PeerFs<S> {
    /// The state and all the logic.
    core: Arc<Core<S>>,
    /// Where the callbacks' tasks run.
    rt: Handle,
    /// Set to `true` when the kernel ends the session (unmount from here
    /// or from outside); dropping it also wakes the watchers.
    ended: watch::Sender<bool>,
}

impl<S: BlockStore> PeerFs<S> {
    /// A file system over `vault`, running its work on `rt`; `ended`
    /// becomes `true` when the session ends.
    pub fn new(vault: Arc<Vault<S>>, rt: Handle, ended: watch::Sender<bool>) -> PeerFs<S> {
        PeerFs {
            core: Arc::new(Core::new(vault)),
            rt,
            ended,
        }
    }

    /// The async core (for tests and diagnostics).
    pub fn core(&self) -> &Arc<Core<S>> {
        &self.core
    }

    /// Runs `f(core)`, FUSE operation `op`, as a task on the runtime
    /// (its time to answer counted in the metrics).
    fn spawn<F, Fut>(&self, op: &'static str, f: F)
    where
        F: FnOnce(Arc<Core<S>>) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let started = std::time::Instant::now();
        let work = f(Arc::clone(&self.core));
        self.rt.spawn(async move {
            work.await;
            crate::metrics::get().fuse_op(op, started.elapsed());
        });
    }
}

fn bytes(name: &OsStr) -> Vec<u8> {
    name.as_bytes().to_vec()
}

fn entry(reply: ReplyEntry, r: Result<fuser::FileAttr, FsError>) {
    match r {
        Ok(attr) => reply.entry(&ATTR_TTL, &attr, Generation(0)),
        Err(e) => reply.error(errno(&e)),
    }
}

fn empty(reply: ReplyEmpty, r: Result<(), FsError>) {
    match r {
        Ok(()) => reply.ok(),
        Err(e) => reply.error(errno(&e)),
    }
}

impl<S: BlockStore> Filesystem for PeerFs<S> {
    fn init(&mut self, _req: &Request, config: &mut KernelConfig) -> std::io::Result<()> {
        // Each setter returns the nearest allowed value when refused.
        if let Err(v) = config.set_max_write(MAX_WRITE) {
            let _ = config.set_max_write(v);
        }
        if let Err(v) = config.set_max_readahead(MAX_READAHEAD) {
            let _ = config.set_max_readahead(v);
        }
        if let Err(v) = config.set_max_background(MAX_BACKGROUND) {
            let _ = config.set_max_background(v);
        }
        // `open(O_TRUNC)` passes the flag to `open` instead of a separate
        // `setattr` without a handle: the truncation is then saved with
        // the handle's writes at its close, as one change (a collision
        // with another machine keeps both in the conflict copy; saved
        // alone, an empty version would be what the other side loses to).
        if let Err(e) = config.add_capabilities(InitFlags::FUSE_ATOMIC_O_TRUNC) {
            log::info!("kernel without atomic O_TRUNC ({e:?}): truncations are saved at once");
        }
        // Listings carry attributes (one fetch per directory for `ls -l`).
        if let Err(e) = config.add_capabilities(InitFlags::FUSE_DO_READDIRPLUS) {
            log::info!("kernel without readdirplus ({e:?}): listings fetch attributes per file");
        }
        // FUSE_ASYNC_READ and FUSE_BIG_WRITES are requested by fuser itself.
        Ok(())
    }

    fn destroy(&mut self) {
        if self.core.has_unsaved() {
            let core = Arc::clone(&self.core);
            let (tx, rx) = std::sync::mpsc::channel();
            self.rt.spawn(async move {
                let _ = tx.send(core.flush_all().await);
            });
            match rx.recv_timeout(DESTROY_FLUSH_WAIT) {
                Ok(Ok(())) => {}
                Ok(Err(e)) => log::error!("unmount: unsaved changes lost: {e}"),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                    log::error!("unmount: storing open files timed out")
                }
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    log::error!("unmount: runtime gone; unsaved changes lost")
                }
            }
        }
        self.ended.send_replace(true);
    }

    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let name = bytes(name);
        let started = std::time::Instant::now();
        if let Some(r) = self.core.lookup_cached(parent.0, &name) {
            entry(reply, r);
            crate::metrics::get().fuse_op("lookup", started.elapsed());
            return;
        }
        self.spawn("lookup", move |c| async move {
            entry(reply, c.lookup(parent.0, &name).await)
        });
    }

    fn forget(&self, _req: &Request, ino: INodeNo, nlookup: u64) {
        self.core.forget(ino.0, nlookup);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, _fh: Option<FileHandle>, reply: ReplyAttr) {
        let started = std::time::Instant::now();
        if let Some(attr) = self.core.getattr_cached(ino.0) {
            reply.attr(&ATTR_TTL, &attr);
            crate::metrics::get().fuse_op("getattr", started.elapsed());
            return;
        }
        self.spawn("getattr", move |c| async move {
            match c.getattr(ino.0).await {
                Ok(attr) => reply.attr(&ATTR_TTL, &attr),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let change = AttrChange {
            mode,
            uid,
            gid,
            atime,
            mtime,
        };
        self.spawn("setattr", move |c| async move {
            let r = c.setattr_via(ino.0, size, &change, fh.is_some()).await;
            match c.logged("setattr", || c.path_of(ino.0), r) {
                Ok(attr) => reply.attr(&ATTR_TTL, &attr),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        self.spawn("readlink", move |c| async move {
            match c.readlink(ino.0).await {
                Ok(t) => reply.data(&t),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn mknod(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        let (name, uid, gid) = (bytes(name), req.uid(), req.gid());
        self.spawn("mknod", move |c| async move {
            let r = c.mknod(parent.0, &name, mode & !umask, uid, gid).await;
            entry(reply, c.logged("mknod", || c.path_in(parent.0, &name), r))
        });
    }

    fn mkdir(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        let (name, uid, gid) = (bytes(name), req.uid(), req.gid());
        self.spawn("mkdir", move |c| async move {
            let r = c.mkdir(parent.0, &name, mode & !umask, uid, gid).await;
            entry(reply, c.logged("mkdir", || c.path_in(parent.0, &name), r))
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = bytes(name);
        if self.core.removes_in_memory(parent.0) {
            // Queued in memory and written behind: run here rather than
            // queue behind the runtime's background work (`rm -rf` waits
            // for each unlink in turn).
            let started = std::time::Instant::now();
            let c = &self.core;
            let r = self.rt.block_on(c.unlink(parent.0, &name));
            empty(reply, c.logged("unlink", || c.path_in(parent.0, &name), r));
            crate::metrics::get().fuse_op("unlink", started.elapsed());
            return;
        }
        self.spawn("unlink", move |c| async move {
            let r = c.unlink(parent.0, &name).await;
            empty(reply, c.logged("unlink", || c.path_in(parent.0, &name), r))
        });
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        let name = bytes(name);
        self.spawn("rmdir", move |c| async move {
            let r = c.rmdir(parent.0, &name).await;
            empty(reply, c.logged("rmdir", || c.path_in(parent.0, &name), r))
        });
    }

    fn symlink(
        &self,
        req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        let (name, uid, gid) = (bytes(link_name), req.uid(), req.gid());
        let target = target.as_os_str().as_bytes().to_vec();
        self.spawn("symlink", move |c| async move {
            let r = c.symlink(parent.0, &name, &target, uid, gid).await;
            entry(reply, c.logged("symlink", || c.path_in(parent.0, &name), r))
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        let (name, newname) = (bytes(name), bytes(newname));
        self.spawn("rename", move |c| async move {
            let r = c
                .rename(parent.0, &name, newparent.0, &newname, flags)
                .await;
            empty(reply, c.logged("rename", || c.path_in(parent.0, &name), r))
        });
    }

    fn link(
        &self,
        _req: &Request,
        ino: INodeNo,
        newparent: INodeNo,
        newname: &OsStr,
        reply: ReplyEntry,
    ) {
        let newname = bytes(newname);
        self.spawn("link", move |c| async move {
            let r = c.link(ino.0, newparent.0, &newname).await;
            entry(
                reply,
                c.logged("link", || c.path_in(newparent.0, &newname), r),
            )
        });
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        self.spawn("open", move |c| async move {
            match c.open(ino.0, flags.0).await {
                Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        self.spawn("read", move |c| async move {
            match c.read(fh.0, offset, size).await {
                Ok(data) => reply.data(&data),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let append = flags.0 & libc::O_APPEND != 0;
        let started = std::time::Instant::now();
        if !append && let Some(r) = self.core.write_now(fh.0, offset, data) {
            match self.core.logged("write", || self.core.path_of_fh(fh.0), r) {
                Ok(n) => reply.written(n),
                Err(e) => reply.error(errno(&e)),
            }
            crate::metrics::get().fuse_op("write", started.elapsed());
            return;
        }
        let data = data.to_vec();
        self.spawn("write", move |c| async move {
            let r = if append {
                c.append(fh.0, offset, &data).await
            } else {
                c.write(fh.0, offset, &data).await.map(|n| (n, false))
            };
            match c.logged("write", || c.path_of_fh(fh.0), r) {
                Ok((n, moved)) => {
                    reply.written(n);
                    if moved {
                        // The kernel put the bytes in its cache at its own
                        // idea of the end: dropped, now that it has the
                        // answer (its pages are unlocked by then).
                        tokio::task::spawn_blocking(move || c.drop_kernel_cache(ino.0, true));
                    }
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        let started = std::time::Instant::now();
        if self.core.close_behind(fh.0) {
            reply.ok();
            crate::metrics::get().fuse_op("flush", started.elapsed());
            return;
        }
        self.spawn("flush", move |c| async move {
            let r = c.flush(fh.0).await;
            empty(reply, c.logged("close", || c.path_of_fh(fh.0), r))
        });
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("release", move |c| async move {
            let path = c.path_of_fh(fh.0);
            let r = c.release(fh.0).await;
            empty(reply, c.logged("release", || path, r))
        });
    }

    fn fsync(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("fsync", move |c| async move {
            let r = c.fsync(fh.0).await;
            empty(reply, c.logged("fsync", || c.path_of_fh(fh.0), r))
        });
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        match self.core.opendir(ino.0) {
            Ok(fh) => reply.opened(FileHandle(fh), FopenFlags::empty()),
            Err(e) => reply.error(errno(&e)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        self.spawn("readdir", move |c| async move {
            match c.readdir(ino.0, fh.0, offset).await {
                Ok(listing) => {
                    for (i, e) in listing.iter().enumerate().skip(offset as usize) {
                        let name = OsStr::from_bytes(&e.name);
                        if reply.add(INodeNo(e.ino), i as u64 + 1, e.kind, name) {
                            break; // buffer full
                        }
                    }
                    reply.ok();
                }
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    fn readdirplus(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectoryPlus,
    ) {
        self.spawn("readdirplus", move |c| async move {
            let listing = match c.readdir(ino.0, fh.0, offset).await {
                Ok(l) => l,
                Err(e) => return reply.error(errno(&e)),
            };
            let start = (offset as usize).min(listing.len());
            let rows = &listing[start..(start + PLUS_WINDOW).min(listing.len())];
            let attrs = match c.plus_attrs(ino.0, rows).await {
                Ok(a) => a,
                Err(e) => return reply.error(errno(&e)),
            };
            for (i, (e, (attr, ttl))) in rows.iter().zip(attrs).enumerate() {
                let n = c.remember_row(ino.0, e);
                let attr = fuser::FileAttr {
                    ino: INodeNo(n),
                    ..attr
                };
                let name = OsStr::from_bytes(&e.name);
                let next = (start + i + 1) as u64;
                if reply.add(INodeNo(n), next, name, &ttl, &attr, Generation(0)) {
                    // Not sent: the kernel holds no lookup of it.
                    if e.link.is_some() {
                        c.forget(n, 1);
                    }
                    break;
                }
            }
            reply.ok();
        });
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.core.releasedir(fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        self.spawn("fsyncdir", move |c| async move {
            let r = c.fsyncdir().await;
            empty(reply, c.logged("fsyncdir", || c.path_of(ino.0), r))
        });
    }

    /// No ioctl is supported: ENOTTY at once (programs probe with TCGETS on
    /// every open; fuser's default would log each one).
    fn ioctl(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _flags: IoctlFlags,
        _cmd: u32,
        _in_data: &[u8],
        _out_size: u32,
        reply: ReplyIoctl,
    ) {
        reply.error(Errno::ENOTTY);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        self.spawn("statfs", move |core| async move {
            match core.statfs().await {
                Ok(s) => reply.statfs(
                    s.blocks, s.bfree, s.bavail, s.files, s.ffree, s.bsize, s.namelen, s.frsize,
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }

    // Extended attributes are not stored. ENOSYS (rather than ENOTSUP)
    // makes the kernel remember that and answer EOPNOTSUPP (= ENOTSUP)
    // itself from then on, so e.g. the security.capability check on every
    // write does not cost a round trip.

    fn setxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _value: &[u8],
        _flags: i32,
        _position: u32,
        reply: ReplyEmpty,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn getxattr(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _name: &OsStr,
        _size: u32,
        reply: ReplyXattr,
    ) {
        reply.error(Errno::ENOSYS);
    }

    fn listxattr(&self, _req: &Request, _ino: INodeNo, _size: u32, reply: ReplyXattr) {
        reply.error(Errno::ENOSYS);
    }

    fn removexattr(&self, _req: &Request, _ino: INodeNo, _name: &OsStr, reply: ReplyEmpty) {
        reply.error(Errno::ENOSYS);
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel checks permissions (`default_permissions`).
        reply.ok();
    }

    fn create(
        &self,
        req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _flags: i32,
        reply: ReplyCreate,
    ) {
        let (name, uid, gid) = (bytes(name), req.uid(), req.gid());
        self.spawn("create", move |c| async move {
            let r = c.create(parent.0, &name, mode & !umask, uid, gid).await;
            match c.logged("create", || c.path_in(parent.0, &name), r) {
                Ok((attr, fh)) => reply.created(
                    &ATTR_TTL,
                    &attr,
                    Generation(0),
                    FileHandle(fh),
                    FopenFlags::empty(),
                ),
                Err(e) => reply.error(errno(&e)),
            }
        });
    }
}
