//! The files a store wrote without fsync: which are covered by the
//! write-ahead log, and which write of each a sync has covered.
//!
//! A sync takes a [`snapshot`](PendingFiles::snapshot) of the files,
//! makes them durable, then [`settles`](PendingFiles::settle) them: an
//! entry leaves only if the file was not written again meanwhile. So a
//! file stays listed until it is durable, and a durable put that finds it
//! listed during a sync makes it durable itself instead of taking it for
//! done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// One pending file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pending {
    /// Its bytes are in the write-ahead log.
    logged: bool,
    /// Which write listed it (grows with every write).
    write: u64,
}

/// A taken list of pending files, to settle once they are durable.
#[derive(Debug, Default)]
pub struct Snapshot(Vec<(PathBuf, u64)>);

impl Snapshot {
    /// The files, to make durable.
    pub fn paths(&self) -> Vec<PathBuf> {
        self.0.iter().map(|(p, _)| p.clone()).collect()
    }

    pub fn len(&self) -> usize {
        self.0.len()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// The pending files of a store.
#[derive(Debug, Default)]
pub struct PendingFiles {
    files: HashMap<PathBuf, Pending>,
    writes: u64,
}

impl PendingFiles {
    /// Lists `path` as just written, its bytes in the log or not.
    pub fn note(&mut self, path: PathBuf, logged: bool) {
        self.writes += 1;
        let write = self.writes;
        self.files.insert(path, Pending { logged, write });
    }

    /// Whether `path` is pending, and if so whether it is logged.
    pub fn logged(&self, path: &Path) -> Option<bool> {
        self.files.get(path).map(|p| p.logged)
    }

    /// Forgets `path` (the file is gone).
    pub fn remove(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// The pending files, all of them or only those not in the log.
    pub fn snapshot(&self, unlogged_only: bool) -> Snapshot {
        Snapshot(
            self.files
                .iter()
                .filter(|(_, p)| !(unlogged_only && p.logged))
                .map(|(path, p)| (path.clone(), p.write))
                .collect(),
        )
    }

    /// The snapshot one file, if pending.
    pub fn snapshot_one(&self, path: &Path) -> Snapshot {
        Snapshot(
            self.files
                .get(path)
                .map(|p| (path.to_path_buf(), p.write))
                .into_iter()
                .collect(),
        )
    }

    /// Drops the files of `s`, now durable, unless written again since.
    pub fn settle(&mut self, s: Snapshot) {
        for (path, write) in s.0 {
            if self.files.get(&path).is_some_and(|p| p.write == write) {
                self.files.remove(&path);
            }
        }
    }

    /// How many files are pending.
    pub fn len(&self) -> usize {
        self.files.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_written_again_during_a_sync_stays_pending() {
        let mut p = PendingFiles::default();
        let (a, b) = (PathBuf::from("/s/a"), PathBuf::from("/s/b"));
        p.note(a.clone(), true);
        p.note(b.clone(), false);
        assert_eq!(p.snapshot(true).paths(), vec![b.clone()]);
        let s = p.snapshot(false);
        assert_eq!(s.len(), 2);
        // While the sync runs, `a` is written again (now too big to log).
        p.note(a.clone(), false);
        p.settle(s);
        assert_eq!(p.len(), 1);
        assert_eq!(p.logged(&a), Some(false));
        assert_eq!(p.logged(&b), None);
        let s = p.snapshot_one(&a);
        p.settle(s);
        assert_eq!(p.len(), 0);
        assert!(p.snapshot_one(&a).is_empty());
    }
}
