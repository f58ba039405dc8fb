//! The clocks of the record versions this vault last read or wrote, so
//! each save can carry a clock one step above the versions it replaces
//! ([`crate::clock`]) without reading them again.
//!
//! A save of version `s + 1` looks up what the vault knows of version
//! `s`: the join of the clocks of every version it read at that head
//! (concurrent versions included, since the save replaces them all).

use crate::clock::Clock;
use crate::id::Id;
use crate::record::Record;
use std::collections::HashMap;
use std::sync::Mutex;

/// Records whose clocks are remembered, at most (the book is emptied when
/// full; a forgotten clock costs one read at the next save).
const MAX_CLOCKS: usize = 1 << 16;

/// Per record key: the head's sequence number and the join of the clocks
/// of the versions read or written at it.
#[derive(Default)]
pub struct ClockBook {
    map: Mutex<HashMap<Id, (u64, Clock)>>,
}

/// The join of the clocks of `versions`.
pub fn joined(versions: &[Record]) -> Clock {
    versions
        .iter()
        .fold(Clock::default(), |c, v| c.join(&v.clock))
}

impl ClockBook {
    /// Notes the versions of record `key` just read (head first).
    pub fn note_read(&self, key: Id, versions: &[Record]) {
        if let Some(head) = versions.first() {
            self.set(key, head.seq, joined(versions));
        }
    }

    /// Notes a version this vault wrote.
    pub fn note_written(&self, rec: &Record) {
        self.set(rec.key(), rec.seq, rec.clock.clone());
    }

    /// Notes that a save over version `seq` of `key` builds on `clock`
    /// (a first save over no stored version: the empty clock).
    pub fn note_base(&self, key: Id, seq: u64, clock: Clock) {
        self.set(key, seq, clock);
    }

    fn set(&self, key: Id, seq: u64, clock: Clock) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_CLOCKS && !m.contains_key(&key) {
            m.clear();
        }
        m.insert(key, (seq, clock));
    }

    /// The clock a save over version `seq` of record `key` builds on, if
    /// that version is the one last seen.
    pub fn base(&self, key: Id, seq: u64) -> Option<Clock> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&key)
            .filter(|(s, _)| *s == seq)
            .map(|(_, c)| c.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_save_builds_on_every_version_read() {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let a = Record::sign_clocked(&sk, b"r", 4, Clock::from_pairs([(1, 4)]), None);
        let b = Record::sign_clocked(&sk, b"r", 3, Clock::from_pairs([(1, 2), (2, 1)]), None);
        let book = ClockBook::default();
        book.note_read(a.key(), &[a.clone(), b]);
        assert_eq!(
            book.base(a.key(), 4),
            Some(Clock::from_pairs([(1, 4), (2, 1)]))
        );
        assert_eq!(book.base(a.key(), 3), None, "another version");
        book.note_written(&a);
        assert_eq!(book.base(a.key(), 4), Some(a.clock.clone()));
    }
}
