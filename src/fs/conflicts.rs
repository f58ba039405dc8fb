//! The conflict copies this vault made: which file collided, the copy's
//! name, when. Kept in memory, bounded, for the log and for `status`;
//! the copies themselves are ordinary files the user can see, move and
//! delete.

use super::divergence::host_label;
use super::object::Time;
use std::collections::VecDeque;
use std::sync::{Mutex, OnceLock};

/// Conflicts remembered at most (the oldest are forgotten first).
pub const MAX_REMEMBERED: usize = 256;

/// One conflict copy made here.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Conflict {
    /// The file's name when the copy was made.
    pub name: Vec<u8>,
    /// The copy's name, in the same directory.
    pub copy: Vec<u8>,
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
    pub fn note(&self, name: &[u8], copy: &[u8]) {
        log::warn!(
            "conflict: {:?} was changed on another machine at the same time; \
             this machine's version is kept as {:?} next to it",
            String::from_utf8_lossy(name),
            String::from_utf8_lossy(copy)
        );
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= MAX_REMEMBERED {
            s.pop_front();
        }
        s.push_back(Conflict {
            name: name.to_vec(),
            copy: copy.to_vec(),
            at: Time::now(),
        });
    }

    /// The copies made, oldest first.
    pub fn list(&self) -> Vec<Conflict> {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.iter().cloned().collect()
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
            log.note(format!("f{i}").as_bytes(), b"c");
        }
        let l = log.list();
        assert_eq!(l.len(), MAX_REMEMBERED);
        assert_eq!(l[0].name, b"f3".to_vec());
    }
}
