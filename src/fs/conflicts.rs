//! The conflict copies made here: which file collided, the copy's path,
//! when. Kept in memory, bounded, for the log and for `peerstore status`
//! (which lists those still present); the copies themselves are ordinary
//! files the user can see, move and delete. Whoever knows the paths (the
//! mount) notes them.

use super::divergence::host_label;
use super::object::{Object, Time};
use super::vault::Vault;
use super::{BlockStore, FsError};
use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, OnceLock};

/// Conflicts remembered at most (the oldest are forgotten first).
pub const MAX_REMEMBERED: usize = 256;

/// One conflict copy made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The file's path when the copy was made.
    pub path: String,
    /// The copy's path (in the same directory).
    pub copy: String,
    /// When (this machine's clock; a label only).
    pub at: Time,
}

/// This vault's conflict copies and the machine label in their names.
#[derive(Debug, Default)]
pub struct ConflictLog {
    machine: OnceLock<String>,
    seen: Mutex<VecDeque<Conflict>>,
}

impl ConflictLog {
    /// Sets the machine label used in copies' names (once; later calls
    /// are ignored). Without it, the host name is used.
    pub fn set_machine(&self, label: &str) {
        let _ = self.machine.set(label.to_string());
    }

    /// The machine label for copies' names.
    pub fn machine(&self) -> &str {
        self.machine.get_or_init(host_label)
    }

    /// Notes a copy made now, and logs it.
    pub fn note(&self, path: &str, copy: &str) {
        log::warn!(
            "conflict: {path:?} was changed on another machine at the same time; \
             this machine's version is kept as {copy:?}"
        );
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= MAX_REMEMBERED {
            s.pop_front();
        }
        s.push_back(Conflict {
            path: path.to_string(),
            copy: copy.to_string(),
            at: Time::now(),
        });
    }

    /// The copies made, oldest first.
    pub fn list(&self) -> Vec<Conflict> {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().cloned().collect()
    }
}

impl<S: BlockStore> Vault<S> {
    /// The conflict copies made here, oldest first, each with whether a
    /// file is still at its path (the user may have moved or deleted it).
    /// Each directory holding copies is loaded once; a copy in a directory
    /// out of reach counts as present.
    pub async fn conflict_copies(&self) -> Vec<(Conflict, bool)> {
        // Directory path → its names (`None`: gone), or out of reach.
        let mut dirs: HashMap<String, Result<Option<Object>, ()>> = HashMap::new();
        let mut out = Vec::new();
        for c in self.conflicts.list() {
            let (dir, name) = c.copy.rsplit_once('/').unwrap_or(("", &c.copy));
            if !dirs.contains_key(dir) {
                let loaded = match self.resolve(dir).await {
                    Ok((_, v)) => Ok(Some(v.obj)),
                    Err(FsError::NotFound) => Ok(None),
                    Err(_) => Err(()),
                };
                dirs.insert(dir.to_string(), loaded);
            }
            let present = match &dirs[dir] {
                Ok(Some(d)) => d.entries().is_some_and(|e| e.contains_key(name.as_bytes())),
                Ok(None) => false,
                Err(()) => true,
            };
            out.push((c, present));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_log_is_bounded_and_keeps_the_newest() {
        let log = ConflictLog::default();
        log.set_machine("box-1");
        log.set_machine("ignored");
        assert_eq!(log.machine(), "box-1");
        for i in 0..MAX_REMEMBERED + 3 {
            log.note(&format!("/f{i}"), "/c");
        }
        let l = log.list();
        assert_eq!(l.len(), MAX_REMEMBERED);
        assert_eq!(l[0].path, "/f3");
    }
}
