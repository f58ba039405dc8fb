//! Mounting and unmounting: the FUSE session in the background, a way to
//! learn that it ended (also when unmounted from outside, e.g. by
//! `fusermount3 -u DIR`), and clean-up of a mount left behind by a process
//! that died.

use super::fuse::PeerFs;
use crate::fs::{BlockStore, Vault};
use fuser::{BackgroundSession, Config, MountOption, SessionACL};
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;
use tokio::runtime::Handle;
use tokio::sync::watch;

/// FUSE threads reading requests (each only dispatches to the runtime).
const FUSE_THREADS: usize = 4;
/// How long `unmount` waits for the session to end.
const UNMOUNT_WAIT: Duration = Duration::from_secs(60);

/// A mounted vault. Dropping it unmounts (best effort).
pub struct Mount {
    /// The running session; `None` once unmounted.
    session: Option<BackgroundSession>,
    /// The mount point.
    dir: PathBuf,
    /// Becomes `true` when the session ends.
    ended: watch::Receiver<bool>,
}

/// How a folder is mounted.
#[derive(Debug, Clone, Copy, Default)]
pub struct MountOpts {
    /// Other local users may use it (`allow_other`; the kernel checks
    /// modes and owners, `default_permissions`).
    pub allow_other: bool,
}

/// Mounts `vault` on `dir`; file system work runs on `rt`.
///
/// Options: fsname and subtype `peerstore`, `default_permissions` (the
/// kernel checks modes), no `auto_unmount` (it can hang an unmount, fuser
/// PR #731). Must not be called from a thread that `rt` needs to make
/// progress on (the kernel handshake waits for nothing from it, but keep
/// blocking calls off async threads anyway: use `spawn_blocking`).
pub fn mount<S: BlockStore>(
    vault: Arc<Vault<S>>,
    rt: Handle,
    dir: &Path,
    opts: MountOpts,
) -> io::Result<Mount> {
    mount_with(vault, rt, dir, opts, None)
}

/// [`mount`], showing under `/shared` the folders `shared` lists (a mount
/// acting as an account).
pub fn mount_with<S: BlockStore>(
    vault: Arc<Vault<S>>,
    rt: Handle,
    dir: &Path,
    opts: MountOpts,
    shared: Option<Arc<super::shared::SharedTrees<S>>>,
) -> io::Result<Mount> {
    let (tx, rx) = watch::channel(false);
    let fs = PeerFs::new(vault, rt, tx);
    if let Some(s) = shared {
        fs.core().set_shared(s);
    }
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("peerstore".into()),
        MountOption::Subtype("peerstore".into()),
        MountOption::DefaultPermissions,
    ];
    if opts.allow_other {
        config.acl = SessionACL::All;
    }
    config.n_threads = Some(FUSE_THREADS);
    config.clone_fd = true;
    let core = Arc::clone(fs.core());
    let session = fuser::spawn_mount(fs, dir, &config)?;
    let notifier = session.notifier();
    core.set_invalidator(Box::new(move |ino, pages| {
        // Attributes only (offset -1) unless asked: the page cache is
        // dropped on every open anyway.
        let offset = if pages { 0 } else { -1 };
        if let Err(e) = notifier.inval_inode(fuser::INodeNo(ino), offset, 0) {
            log::debug!("could not drop the kernel's attributes of inode {ino}: {e}");
        }
    }));
    Ok(Mount {
        session: Some(session),
        dir: dir.to_path_buf(),
        ended: rx,
    })
}

impl Mount {
    /// The mount point.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Whether the session is still running.
    pub fn is_mounted(&self) -> bool {
        !*self.ended.borrow() && self.ended.has_changed().is_ok()
    }

    /// A watch that becomes `true` when the session ends, however it ends
    /// (a closed channel means ended too).
    pub fn ended(&self) -> watch::Receiver<bool> {
        self.ended.clone()
    }

    /// Resolves when the session has ended.
    pub fn unmounted(&self) -> impl Future<Output = ()> + Send + 'static {
        let mut rx = self.ended.clone();
        async move {
            let _ = rx.wait_for(|&ended| ended).await;
        }
    }

    /// Unmounts and waits for the session to end (open files are stored
    /// first, in `destroy`). A busy mount point is detached lazily.
    /// Blocks: call it from a plain thread or `spawn_blocking`.
    pub fn unmount(mut self) -> io::Result<()> {
        self.unmount_inner()
    }

    fn unmount_inner(&mut self) -> io::Result<()> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // Already unmounted from outside: the session ends by itself (and
        // unmounting again would fail, or hit a newer mount on `dir`).
        let gone = *self.ended.borrow() || !is_fuse_mounted(&self.dir);
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(if gone {
                join_unmounted(session)
            } else {
                session.umount_and_join()
            });
        });
        match rx.recv_timeout(UNMOUNT_WAIT) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                log::warn!("unmount {}: {e}; detaching lazily", self.dir.display());
                lazy_unmount(&self.dir);
                Err(e)
            }
            Err(_) => {
                lazy_unmount(&self.dir);
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("unmount {} timed out", self.dir.display()),
                ))
            }
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Err(e) = self.unmount_inner() {
            log::warn!("unmount {}: {e}", self.dir.display());
        }
    }
}

/// Waits for the session of a folder that was unmounted from outside
/// (`fusermount3 -u`) to end.
///
/// Not `BackgroundSession::join`, which drops fuser's mount guard: in
/// fuser 0.18 the guard's check whether the folder is still mounted reads
/// the dead connection as mounted (fuser PR #703, not in a release yet),
/// so it unmounts the path again, which fails with EINVAL, logged as
/// "Unmount failed: Invalid argument" at every such clean unmount, or,
/// had something been mounted there meanwhile, unmounts that. The guard is
/// forgotten instead: that keeps one descriptor of the dead connection
/// open, and a few bytes, until the process exits.
fn join_unmounted(mut session: BackgroundSession) -> io::Result<()> {
    let done = std::thread::spawn(|| Ok(()));
    let thread = std::mem::replace(&mut session.guard, done);
    std::mem::forget(session);
    thread
        .join()
        .map_err(|_| io::Error::other("the FUSE session thread panicked"))?
}

/// Detaches the mount at `dir` now (`fusermount3 -u -z`, else `umount -l`).
fn lazy_unmount(dir: &Path) {
    let quiet = |cmd: &mut Command| {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if !quiet(
        Command::new("fusermount3")
            .arg("-u")
            .arg("-z")
            .arg("--")
            .arg(dir),
    ) {
        quiet(Command::new("umount").arg("-l").arg(dir));
    }
}

/// `dir` as /proc/mounts spells it: absolute, with symlinks of the parent
/// resolved (the last component is not touched: a dead mount cannot be
/// resolved).
fn mount_path(dir: &Path) -> PathBuf {
    let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.to_path_buf());
    match (abs.parent(), abs.file_name()) {
        (Some(p), Some(n)) => p.canonicalize().map_or(abs.clone(), |p| p.join(n)),
        _ => abs,
    }
}

/// Decodes the octal escapes (`\040` for a space) of a /proc/mounts field.
fn unescape(field: &str) -> Vec<u8> {
    let b = field.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && let Some(oct) = b.get(i + 1..i + 4)
            && oct.iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push(oct.iter().fold(0u8, |v, c| v.wrapping_mul(8) + (c - b'0')));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    out
}

/// Whether a FUSE file system is mounted at `dir` (per /proc/mounts).
pub fn is_fuse_mounted(dir: &Path) -> bool {
    use std::os::unix::ffi::OsStrExt;
    let want = mount_path(dir);
    let Ok(table) = std::fs::read_to_string("/proc/mounts") else {
        return false;
    };
    table.lines().any(|line| {
        let mut f = line.split(' ');
        let (_, Some(point), Some(fstype)) = (f.next(), f.next(), f.next()) else {
            return false;
        };
        (fstype == "fuse" || fstype.starts_with("fuse.") || fstype == "fuseblk")
            && unescape(point) == want.as_os_str().as_bytes()
    })
}

/// Whether `dir` is a FUSE mount whose server is gone ("Transport endpoint
/// is not connected").
fn is_dead_mount(dir: &Path) -> bool {
    matches!(std::fs::metadata(dir), Err(e) if e.raw_os_error() == Some(libc::ENOTCONN))
}

/// Clears a FUSE mount left on `dir` (by a process that died, or still
/// listed in /proc/mounts): `fusermount3 -u -z`, then `umount -l`. A plain
/// directory is left alone. Returns whether a mount was cleared.
///
/// Only call this for a directory this program owns: a FUSE mount of a
/// live process there is detached too.
pub fn clear_stale_mount(dir: &Path) -> io::Result<bool> {
    if !is_dead_mount(dir) && !is_fuse_mounted(dir) {
        return Ok(false);
    }
    log::info!("clearing a stale mount on {}", dir.display());
    lazy_unmount(dir);
    if is_dead_mount(dir) || is_fuse_mounted(dir) {
        return Err(io::Error::other(format!(
            "{} is still mounted; try `fusermount3 -u -z {0}` or `umount -l {0}`",
            dir.display()
        )));
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_mounts_escapes_decode() {
        assert_eq!(unescape(r"/mnt/a\040b"), b"/mnt/a b");
        assert_eq!(unescape(r"/x\\y"), br"/x\\y");
        assert_eq!(unescape(r"/end\04"), br"/end\04");
    }

    #[test]
    fn plain_directory_is_left_alone() {
        let d = tempfile::tempdir().unwrap();
        assert!(!is_fuse_mounted(d.path()));
        assert!(!clear_stale_mount(d.path()).unwrap());
        assert!(d.path().is_dir());
    }
}
