//! Durable, atomic file replacement, and the small file-system helpers the
//! store needs.
//!
//! A write goes through three steps, so that a crash or a full disk at any
//! point leaves either the old file or the new one in place, never a mix:
//!
//! 1. [`stage`]: the bytes go to a fresh file in the store's `tmp/` directory
//!    (opened with `create_new`, named `<pid>-<counter>-<random>.tmp`), then
//!    `sync_all`. Any error here removes the temp file; nothing else changed.
//! 2. [`Staged::commit`]: `rename` over the destination. POSIX makes this
//!    atomic: readers see the old file or the new one. On error the temp
//!    file is removed and the destination is untouched.
//! 3. [`sync_dir`] on the destination's parent, so the rename itself is on
//!    disk. The caller does this after updating its index, because the file
//!    *is* in place once the rename succeeded, even if this step fails.
//!
//! `tmp/` must be on the same file system as the destinations (it is a
//! sibling of them), or `rename` would fail with `EXDEV`.
//!
//! Every error becomes [`StoreError::Io`] naming the operation, the path and
//! the OS error, e.g. `write /d/tmp/1-2-ab.tmp: No space left on device`.

use super::StoreError;
use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// Suffix of staged files; anything in `tmp/` is a leftover on open anyway.
const TMP_SUFFIX: &str = ".tmp";

/// Per-process counter making temp names unique between threads.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Files at least this big, written without a sync, start their write to
/// disk at once.
pub const START_WRITEBACK: usize = 256 << 10;

/// Starts writing `file`'s dirty pages to disk without waiting for them
/// (`sync_file_range(SYNC_FILE_RANGE_WRITE)`). A large copy's blocks then
/// reach the disk while the copy goes on, rather than all at its closing
/// sync: the sync that makes them durable later finds little left to
/// write. Only a hint: an error is ignored (the sync reports real ones).
pub fn start_writeback(file: &File) {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain syscall on an open descriptor; no memory is passed.
    unsafe {
        libc::sync_file_range(file.as_raw_fd(), 0, 0, libc::SYNC_FILE_RANGE_WRITE);
    }
}

/// An [`StoreError::Io`] for operation `op` on `path` ([`StoreError::NoSpace`]
/// when the file system is full).
pub fn io_err(op: &str, path: &Path, e: std::io::Error) -> StoreError {
    let msg = format!("{op} {}: {e}", path.display());
    if e.raw_os_error() == Some(libc::ENOSPC) || e.kind() == ErrorKind::StorageFull {
        StoreError::NoSpace(msg)
    } else {
        StoreError::Io(msg)
    }
}

/// A fully written and synced temp file, not yet in place. Dropping it
/// without [`commit`](Staged::commit) removes the temp file.
#[derive(Debug)]
pub struct Staged {
    /// Where the bytes are now (inside `tmp/`); `None` once renamed away.
    pub(super) path: Option<PathBuf>,
}

/// A fresh, unique temp file name in `tmp_dir`.
pub fn temp_path(tmp_dir: &Path) -> PathBuf {
    tmp_dir.join(format!(
        "{}-{}-{:016x}{TMP_SUFFIX}",
        std::process::id(),
        TMP_COUNTER.fetch_add(1, Ordering::Relaxed),
        rand::random::<u64>()
    ))
}

/// Writes `bytes` to a new uniquely named file in `tmp_dir`, synced only if
/// `sync` (an unsynced file is made durable later by [`sync_file`]).
pub fn stage_with(tmp_dir: &Path, bytes: &[u8], sync: bool) -> Result<Staged, StoreError> {
    let path = temp_path(tmp_dir);
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io_err("create", &path, e))?;
    // From here on, dropping `staged` on an error path removes the file.
    let staged = Staged {
        path: Some(path.clone()),
    };
    file.write_all(bytes)
        .map_err(|e| io_err("write", &path, e))?;
    if sync {
        file.sync_all().map_err(|e| io_err("fsync", &path, e))?;
    } else if bytes.len() >= START_WRITEBACK {
        start_writeback(&file);
    }
    Ok(staged)
}

impl Staged {
    /// Renames the temp file over `dest` (creating `dest`'s parent directory
    /// if needed). The caller must then [`sync_dir`] `dest`'s parent.
    pub fn commit(mut self, dest: &Path) -> Result<(), StoreError> {
        let Some(from) = self.path.as_deref() else {
            // Unreachable: only `commit` (which consumes `self`) clears it.
            return Err(StoreError::Io(format!(
                "rename to {}: no temp file",
                dest.display()
            )));
        };
        if let Some(parent) = dest.parent() {
            ensure_dir(parent)?;
        }
        // On error `self` is dropped with its path set: the temp file goes.
        fs::rename(from, dest)
            .map_err(|e| io_err(&format!("rename {} to", from.display()), dest, e))?;
        self.path = None;
        Ok(())
    }
}

impl Drop for Staged {
    fn drop(&mut self) {
        if let Some(p) = self.path.take()
            && let Err(e) = fs::remove_file(&p)
            && e.kind() != ErrorKind::NotFound
        {
            log::warn!("could not remove temp file {}: {e}", p.display());
        }
    }
}

/// `dir/<n>.<ext>`, `<n>` as 16 lower-case hex digits: a numbered file of
/// a log (the store's packs, the old write-ahead log).
pub fn numbered_path(dir: &Path, n: u64, ext: &str) -> PathBuf {
    dir.join(format!("{n:016x}.{ext}"))
}

/// The number of a [`numbered_path`] file name with extension `ext`, if
/// it is one.
pub fn number_of(name: &str, ext: &str) -> Option<u64> {
    let hex = name.strip_suffix(ext)?.strip_suffix('.')?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok()
}

/// Fsyncs the file at `path`; a file removed meanwhile is not an error.
pub fn sync_file(path: &Path) -> Result<(), StoreError> {
    match File::open(path) {
        Ok(f) => f.sync_all().map_err(|e| io_err("fsync", path, e)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_err("open for fsync", path, e)),
    }
}

/// Whether every directory of `dirs` is on the file system of `home`.
pub fn one_file_system<'a>(home: &Path, mut dirs: impl Iterator<Item = &'a Path>) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(dev) = fs::metadata(home).map(|m| m.dev()) else {
        return false;
    };
    dirs.all(|d| fs::metadata(d).is_ok_and(|m| m.dev() == dev))
}

/// Commits everything written on the file system holding `dir` (`syncfs`):
/// one journal commit, however many files are dirty.
pub fn syncfs(dir: &Path) -> Result<(), StoreError> {
    let d = File::open(dir).map_err(|e| io_err("open", dir, e))?;
    nix::unistd::syncfs(&d).map_err(|e| io_err("syncfs", dir, std::io::Error::from(e)))
}

/// Threads that fsync at once in [`sync_with_parents`].
const SYNC_THREADS: usize = 16;

/// Fsyncs every file of `files` and every directory holding one, up to
/// [`SYNC_THREADS`] at once: a journaling file system commits concurrent
/// fsyncs together, so n of them cost about one commit instead of n.
/// Returns the first error; every fsync is tried either way.
pub fn sync_with_parents(files: &[PathBuf]) -> Result<(), StoreError> {
    let dirs: std::collections::HashSet<&Path> = files.iter().filter_map(|f| f.parent()).collect();
    let jobs: Vec<(&Path, bool)> = files
        .iter()
        .map(|f| (f.as_path(), false))
        .chain(dirs.into_iter().map(|d| (d, true)))
        .collect();
    let run = |(path, dir): (&Path, bool)| {
        if dir { sync_dir(path) } else { sync_file(path) }
    };
    if jobs.len() <= 1 {
        return jobs.into_iter().try_for_each(run);
    }
    let next = std::sync::atomic::AtomicUsize::new(0);
    let first_err: std::sync::Mutex<Option<StoreError>> = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..jobs.len().min(SYNC_THREADS) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::Relaxed);
                    let Some(job) = jobs.get(i) else { break };
                    if let Err(e) = run(*job) {
                        first_err
                            .lock()
                            .unwrap_or_else(|p| p.into_inner())
                            .get_or_insert(e);
                    }
                }
            });
        }
    });
    match first_err.into_inner().unwrap_or_else(|p| p.into_inner()) {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

/// Zeros written ahead of a log file's entries at a time ([`zeros_ahead`]).
pub const ZERO_AHEAD: u64 = 1 << 20;

/// Makes room for an entry ending at `end` in a log file of `size` bytes
/// (entries, then zeros) that grows up to `max`: writes zeros from `size`
/// up to [`ZERO_AHEAD`] past it, so appends overwrite bytes the file has
/// and their `fdatasync` commits no metadata. Returns the file's size
/// after: best effort, as far as the zeros got (on a full disk the entry
/// alone may still fit). The zeros come from a static buffer, not a
/// megabyte allocated per extension.
pub fn zeros_ahead(file: &File, size: u64, end: u64, max: u64) -> u64 {
    use std::os::unix::fs::FileExt;
    static ZEROS: [u8; 64 << 10] = [0; 64 << 10];
    if end <= size {
        return size;
    }
    let ahead = end.max(size + ZERO_AHEAD).min(max.max(end));
    let mut at = size;
    while at < ahead {
        let n = (ahead - at).min(ZEROS.len() as u64);
        if file.write_all_at(&ZEROS[..n as usize], at).is_err() {
            break;
        }
        at += n;
    }
    at
}

/// Fsyncs directory `dir`, making renames and unlinks inside it durable.
pub fn sync_dir(dir: &Path) -> Result<(), StoreError> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_err("fsync directory", dir, e))
}

/// Creates `dir` if it is missing, and syncs its parent so the new entry is
/// durable. An existing non-directory at `dir` is an error.
pub fn ensure_dir(dir: &Path) -> Result<(), StoreError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(StoreError::Io(format!(
                "{}: exists and is not a directory",
                dir.display()
            )));
        }
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(io_err("stat", dir, e)),
    }
    match fs::create_dir_all(dir) {
        Ok(()) => {}
        // Another thread created it in between: fine.
        Err(e) if e.kind() == ErrorKind::AlreadyExists && dir.is_dir() => {}
        Err(e) => return Err(io_err("create directory", dir, e)),
    }
    match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => sync_dir(parent),
        _ => Ok(()),
    }
}

/// Removes `path`; a file that is already gone is not an error. Returns
/// whether a file was removed.
pub fn remove_file(path: &Path) -> Result<bool, StoreError> {
    match fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(false),
        Err(e) => Err(io_err("remove", path, e)),
    }
}

/// Reads `path`; `Ok(None)` if it does not exist.
pub fn read_opt(path: &Path) -> Result<Option<Vec<u8>>, StoreError> {
    match fs::read(path) {
        Ok(b) => Ok(Some(b)),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", path, e)),
    }
}

/// Removes every entry of `tmp_dir` (leftovers of writes cut short by a
/// crash) and returns how many were removed. Entries that cannot be removed
/// are logged and left.
pub fn clear_dir(tmp_dir: &Path) -> Result<usize, StoreError> {
    let mut removed = 0;
    let entries = fs::read_dir(tmp_dir).map_err(|e| io_err("list", tmp_dir, e))?;
    for entry in entries {
        let entry = entry.map_err(|e| io_err("list", tmp_dir, e))?;
        let path = entry.path();
        let res = match entry.file_type() {
            Ok(t) if t.is_dir() => fs::remove_dir_all(&path),
            _ => fs::remove_file(&path),
        };
        match res {
            Ok(()) => {
                log::info!("removed leftover temp file {}", path.display());
                removed += 1;
            }
            Err(e) => log::warn!("could not remove leftover {}: {e}", path.display()),
        }
    }
    if removed > 0 {
        sync_dir(tmp_dir)?;
    }
    Ok(removed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_commit_and_drop() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        let dest = dir.path().join("a/b/file");
        stage_with(&tmp, b"one", true)
            .unwrap()
            .commit(&dest)
            .unwrap();
        sync_dir(dest.parent().unwrap()).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"one");
        // A staged file that is dropped leaves nothing behind.
        drop(stage_with(&tmp, b"two", true).unwrap());
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert_eq!(fs::read(&dest).unwrap(), b"one");
    }

    #[test]
    fn failed_rename_removes_temp_and_keeps_dest() {
        let dir = tempfile::tempdir().unwrap();
        let tmp = dir.path().join("tmp");
        fs::create_dir(&tmp).unwrap();
        // The destination is a non-empty directory: rename must fail.
        let dest = dir.path().join("d");
        fs::create_dir_all(dest.join("x")).unwrap();
        let err = stage_with(&tmp, b"x", true)
            .unwrap()
            .commit(&dest)
            .unwrap_err();
        assert!(
            matches!(err, StoreError::Io(ref m) if m.contains("rename")),
            "{err}"
        );
        assert_eq!(fs::read_dir(&tmp).unwrap().count(), 0);
        assert!(dest.join("x").is_dir());
    }

    #[test]
    fn clear_dir_removes_leftovers() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("1-2-3.tmp"), b"junk").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        assert_eq!(clear_dir(dir.path()).unwrap(), 2);
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
