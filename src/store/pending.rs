//! The item files a store wrote without fsync, and which write of each a
//! sync has covered.
//!
//! A sync takes a [`snapshot`](PendingFiles::snapshot) of the files,
//! makes them durable, then [`settles`](PendingFiles::settle) them: an
//! entry leaves only if the file was not written again meanwhile. So a
//! file stays listed until it is durable, and a durable put that finds it
//! listed during a sync makes it durable itself instead of taking it for
//! done.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

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

/// The pending files of a store, each with the number of the write that
/// listed it (growing with every write).
#[derive(Debug, Default)]
pub struct PendingFiles {
    files: HashMap<PathBuf, u64>,
    writes: u64,
}

impl PendingFiles {
    /// Lists `path` as just written.
    pub fn note(&mut self, path: PathBuf) {
        self.writes += 1;
        self.files.insert(path, self.writes);
    }

    /// Forgets `path` (the file is gone).
    pub fn remove(&mut self, path: &Path) {
        self.files.remove(path);
    }

    /// Every pending file.
    pub fn snapshot(&self) -> Snapshot {
        Snapshot(self.files.iter().map(|(p, w)| (p.clone(), *w)).collect())
    }

    /// The snapshot of one file, if pending.
    pub fn snapshot_one(&self, path: &Path) -> Snapshot {
        Snapshot(
            self.files
                .get(path)
                .map(|w| (path.to_path_buf(), *w))
                .into_iter()
                .collect(),
        )
    }

    /// Drops the files of `s`, now durable, unless written again since.
    pub fn settle(&mut self, s: Snapshot) {
        for (path, write) in s.0 {
            if self.files.get(&path) == Some(&write) {
                self.files.remove(&path);
            }
        }
    }

    /// How many files are pending.
    #[cfg(test)]
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
        p.note(a.clone());
        p.note(b.clone());
        let s = p.snapshot();
        assert_eq!(s.len(), 2);
        // While the sync runs, `a` is written again.
        p.note(a.clone());
        p.settle(s);
        assert_eq!(p.len(), 1);
        assert_eq!(p.snapshot().paths(), vec![a.clone()]);
        let s = p.snapshot_one(&a);
        p.settle(s);
        assert_eq!(p.len(), 0);
        assert!(p.snapshot_one(&a).is_empty());
    }
}
