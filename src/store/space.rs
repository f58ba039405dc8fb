//! How full the store's file system may get.
//!
//! A node must keep room for its own metadata (record updates swap files,
//! the node key and address files are rewritten, the log grows), so the
//! store refuses *new* items once the free space of its file system would
//! drop below a reserve: 1% of the file system, at least 4 MiB and at most
//! 256 MiB. Updates of items already held are still taken. The refusal is
//! [`StoreError::NoSpace`], which crosses the wire as
//! `RemoteError::NoSpace`; the writer then tries other nodes, and the mount
//! answers ENOSPC when the ring as a whole cannot keep enough copies.
//!
//! The first refusal logs one warning naming the data directory; the first
//! item taken after space came back logs that too. Nothing needs a restart.

use super::StoreError;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

/// Smallest and largest reserve.
const MIN_RESERVE: u64 = 4 << 20;
const MAX_RESERVE: u64 = 256 << 20;

/// Free space of a file system, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FsSpace {
    /// Bytes an unprivileged writer may still use.
    pub available: u64,
    /// Size of the file system.
    pub total: u64,
}

/// Reads the free space of the file system holding `dir`.
pub fn fs_space(dir: &Path) -> Result<FsSpace, StoreError> {
    let s = nix::sys::statvfs::statvfs(dir)
        .map_err(|e| StoreError::Io(format!("statvfs {}: {e}", dir.display())))?;
    let frag = s.fragment_size() as u64;
    Ok(FsSpace {
        available: (s.blocks_available() as u64).saturating_mul(frag),
        total: (s.blocks() as u64).saturating_mul(frag),
    })
}

/// The reserve kept on a file system of `total` bytes.
pub fn reserve_for(total: u64) -> u64 {
    (total / 100).clamp(MIN_RESERVE, MAX_RESERVE)
}

/// The admission check for new items.
#[derive(Debug)]
pub struct SpaceGuard {
    /// The data directory (named in the warning).
    dir: PathBuf,
    /// Whether the last check refused (so the warning is logged once).
    full: AtomicBool,
}

impl SpaceGuard {
    /// A guard for the store in `dir`.
    pub fn new(dir: &Path) -> SpaceGuard {
        SpaceGuard {
            dir: dir.to_path_buf(),
            full: AtomicBool::new(false),
        }
    }

    /// `Ok` if a new item of `len` bytes leaves the reserve free.
    pub fn admit(&self, len: u64) -> Result<(), StoreError> {
        let s = fs_space(&self.dir)?;
        self.judge(s, len)
    }

    fn judge(&self, s: FsSpace, len: u64) -> Result<(), StoreError> {
        let reserve = reserve_for(s.total);
        if s.available >= reserve.saturating_add(len) {
            if self.full.swap(false, Ordering::Relaxed) {
                log::info!(
                    "store {}: space available again ({} MiB free); taking new items",
                    self.dir.display(),
                    s.available >> 20
                );
            }
            return Ok(());
        }
        let msg = format!(
            "data directory {} has {} KiB free, and keeps {} KiB for the node's own metadata",
            self.dir.display(),
            s.available >> 10,
            reserve >> 10
        );
        if !self.full.swap(true, Ordering::Relaxed) {
            log::warn!("store full: {msg}; refusing new items until space is freed");
        }
        Err(StoreError::NoSpace(msg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_items_stop_at_the_reserve_and_resume() {
        let g = SpaceGuard::new(Path::new("/data"));
        let total = 1 << 30; // reserve 1% = 10.24 MiB
        let reserve = reserve_for(total);
        assert_eq!(reserve, total / 100);
        let space = |available| FsSpace { available, total };
        assert!(g.judge(space(reserve + 100), 100).is_ok());
        let e = g.judge(space(reserve + 99), 100).unwrap_err();
        assert!(matches!(&e, StoreError::NoSpace(m) if m.contains("/data")));
        assert!(g.full.load(Ordering::Relaxed));
        assert!(g.judge(space(reserve * 2), 100).is_ok());
        assert!(!g.full.load(Ordering::Relaxed));
        assert_eq!(reserve_for(1 << 20), MIN_RESERVE);
        assert_eq!(reserve_for(1 << 50), MAX_RESERVE);
        assert!(fs_space(Path::new("/")).unwrap().total > 0);
    }
}
