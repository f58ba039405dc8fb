//! Reuse of file inodes between writes.
//!
//! Replacing a file by renaming a fresh temp file over it allocates an
//! inode for every write and frees one for every overwrite. That is
//! costly on some file systems (ext4 without a journal scans past every
//! inode freed in the last seconds on each allocation), and a record that
//! is rewritten often (a directory being filled) churns through thousands.
//! Instead, an overwrite *swaps* the staged file with the old one
//! (`renameat2(RENAME_EXCHANGE)`, atomic like a rename): the destination
//! gets the new bytes and the old inode stays in `tmp/` as a *spare*,
//! which the next write stages into instead of creating a file.
//!
//! A spare is rewritten in place, so a reader that opened its path before
//! the swap may read a mix of old and new bytes; every store read checks
//! what it read (hash or signature, and key) and re-reads under the item's
//! lock, where the file is stable, so such a read is retried, never served.
//! Spares are temp files: removed when the store is opened.

use super::StoreError;
use super::fsutil::{Staged, io_err, stage_with};
use std::ffi::CString;
use std::fs::{self, OpenOptions};
use std::io::{self, ErrorKind, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Spare files kept at most; more are removed.
const MAX_SPARES: usize = 256;
/// Largest file kept as a spare (so spares hold at most 16 MiB of disk).
const MAX_SPARE_BYTES: u64 = 64 << 10;

/// Old files swapped out of place, ready to be staged into.
#[derive(Debug, Default)]
pub struct Spares {
    /// Paths of the spare files (all in the store's `tmp/`).
    paths: Mutex<Vec<PathBuf>>,
}

impl Spares {
    fn take(&self) -> Option<PathBuf> {
        self.paths.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn give(&self, path: PathBuf) {
        // Big files are not worth their disk space as spares.
        let small = fs::metadata(&path).is_ok_and(|m| m.len() <= MAX_SPARE_BYTES);
        let mut paths = self.paths.lock().unwrap_or_else(|e| e.into_inner());
        if small && paths.len() < MAX_SPARES {
            paths.push(path);
        } else {
            drop(paths);
            if let Err(e) = fs::remove_file(&path) {
                log::warn!("could not remove spare file {}: {e}", path.display());
            }
        }
    }

    /// How many spares are kept.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.paths.lock().unwrap_or_else(|e| e.into_inner()).len()
    }

    /// Stages `bytes` (synced if `sync`), into a spare file if there is one,
    /// else into a new file in `tmp_dir`.
    fn stage(&self, tmp_dir: &Path, bytes: &[u8], sync: bool) -> Result<Staged, StoreError> {
        if let Some(path) = self.take() {
            match rewrite(&path, bytes, sync) {
                Ok(()) => return Ok(Staged::at(path)),
                Err(e) => {
                    log::debug!("spare {} not reusable: {e}", path.display());
                    let _ = fs::remove_file(&path);
                }
            }
        }
        stage_with(tmp_dir, bytes, sync)
    }

    /// Atomically replaces `dest` (if any) by `bytes`, staged in `tmp_dir`;
    /// `replaces` says whether a file is expected at `dest` (if not, it is
    /// a plain rename, which would replace one all the same). The caller
    /// must then sync `dest`'s parent if it wants durability.
    pub fn write(
        &self,
        tmp_dir: &Path,
        dest: &Path,
        bytes: &[u8],
        sync: bool,
        replaces: bool,
    ) -> Result<(), StoreError> {
        let staged = self.stage(tmp_dir, bytes, sync)?;
        if !replaces {
            return staged.commit(dest);
        }
        if let Some(old) = staged.commit_swap(dest)? {
            self.give(old);
        }
        Ok(())
    }
}

/// Overwrites the file at `path` with exactly `bytes`.
fn rewrite(path: &Path, bytes: &[u8], sync: bool) -> io::Result<()> {
    let mut f = OpenOptions::new().write(true).open(path)?;
    f.seek(SeekFrom::Start(0))?;
    f.write_all(bytes)?;
    f.set_len(bytes.len() as u64)?;
    if sync {
        f.sync_all()?;
    }
    Ok(())
}

/// Swaps the directory entries `a` and `b` (both must exist).
pub fn exchange(a: &Path, b: &Path) -> io::Result<()> {
    let c = |p: &Path| {
        CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from(ErrorKind::InvalidInput))
    };
    let (ca, cb) = (c(a)?, c(b)?);
    // SAFETY: `ca` and `cb` are NUL-terminated strings that live across
    // the call; renameat2 only reads them.
    let r = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

impl Staged {
    /// Puts the staged file in place at `dest`: swapped with the file there
    /// (returning the path that now holds the old file), or renamed if
    /// there is none or the file system cannot swap.
    pub fn commit_swap(mut self, dest: &Path) -> Result<Option<PathBuf>, StoreError> {
        let Some(from) = self.path.clone() else {
            return Err(StoreError::Io(format!(
                "swap into {}: no temp file",
                dest.display()
            )));
        };
        match exchange(&from, dest) {
            Ok(()) => {
                // `from` now names the old file: hand it back as a spare.
                self.path = None;
                return Ok(Some(from));
            }
            // No file at `dest` yet, or no RENAME_EXCHANGE here: rename.
            Err(e)
                if e.kind() == ErrorKind::NotFound
                    || matches!(
                        e.raw_os_error(),
                        Some(libc::EINVAL | libc::ENOSYS | libc::EOPNOTSUPP)
                    ) => {}
            Err(e) => {
                return Err(io_err(&format!("swap {} with", from.display()), dest, e));
            }
        }
        self.commit(dest)?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overwrites_swap_and_reuse_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let (a, b) = (dir.path().join("a"), dir.path().join("b"));
        let spares = Spares::default();
        spares
            .write(&tmp, &a, b"first version", false, true)
            .unwrap();
        assert_eq!(spares.len(), 0, "a new file: renamed, nothing to spare");
        spares.write(&tmp, &a, b"second", true, true).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"second");
        assert_eq!(spares.len(), 1, "the old file is kept as a spare");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 1);
        // A new file stages into the spare (shorter and longer content).
        let spare_ino = {
            use std::os::unix::fs::MetadataExt;
            let p = fs::read_dir(&tmp).unwrap().next().unwrap().unwrap().path();
            fs::metadata(p).unwrap().ino()
        };
        spares.write(&tmp, &b, b"x", false, true).unwrap();
        assert_eq!(fs::read(&b).unwrap(), b"x");
        {
            use std::os::unix::fs::MetadataExt;
            assert_eq!(fs::metadata(&b).unwrap().ino(), spare_ino);
        }
        assert_eq!(spares.len(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        spares
            .write(&tmp, &b, b"a longer third version", false, true)
            .unwrap();
        spares.write(&tmp, &a, b"y", false, true).unwrap();
        assert_eq!(fs::read(&a).unwrap(), b"y");
        // A write known to be new renames (into a spare's inode too).
        assert_eq!(spares.len(), 1);
        spares
            .write(&tmp, &dir.path().join("d"), b"z", false, false)
            .unwrap();
        assert_eq!(fs::read(dir.path().join("d")).unwrap(), b"z");
        assert_eq!(spares.len(), 0);
        assert_eq!(fs::read(&b).unwrap(), b"a longer third version");
    }

    #[test]
    fn big_old_files_are_not_kept() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let a = dir.path().join("a");
        let spares = Spares::default();
        let big = vec![1u8; MAX_SPARE_BYTES as usize + 1];
        spares.write(&tmp, &a, &big, false, true).unwrap();
        spares.write(&tmp, &a, b"small", false, true).unwrap();
        assert_eq!(spares.len(), 0);
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(fs::read(&a).unwrap(), b"small");
    }

    #[test]
    fn a_vanished_spare_is_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let a = dir.path().join("a");
        let spares = Spares::default();
        spares.write(&tmp, &a, b"1", false, true).unwrap();
        spares.write(&tmp, &a, b"2", false, true).unwrap();
        // Someone removed the spare: the next write makes a new file.
        for e in fs::read_dir(&tmp).unwrap() {
            fs::remove_file(e.unwrap().path()).unwrap();
        }
        spares
            .write(&tmp, &dir.path().join("c"), b"3", false, true)
            .unwrap();
        assert_eq!(fs::read(dir.path().join("c")).unwrap(), b"3");
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        // A destination in a missing directory is created, as by a rename.
        spares
            .write(&tmp, &dir.path().join("new/dir/x"), b"4", false, true)
            .unwrap();
        assert_eq!(fs::read(dir.path().join("new/dir/x")).unwrap(), b"4");
        assert_eq!(fs::read(&a).unwrap(), b"2");
    }
}
