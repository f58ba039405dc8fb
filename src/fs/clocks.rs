//! The clocks of the record versions this vault last read or wrote, so
//! each save can carry a clock one step above the versions it replaces
//! ([`crate::clock`]) without reading them again.
//!
//! A save of version `s + 1` looks up what the vault knows of version
//! `s`: the join of the clocks of every version it read at that head
//! (concurrent versions included, since the save replaces them all).
//!
//! The book also keeps each record's scope (the tag of a folder shared
//! with write access, [`crate::grant`]), as the head read or written
//! carries it, or as a new object inherits it from its directory: the
//! owner's saves keep the tag, so granted writers can go on writing.

use crate::clock::Clock;
use crate::grant::Scope;
use crate::id::Id;
use crate::record::Record;
use std::collections::HashMap;
use std::sync::Mutex;

/// Records whose clocks are remembered, at most (the book is emptied when
/// full; a forgotten clock costs one read at the next save).
const MAX_CLOCKS: usize = 1 << 16;

/// Per record key: the head's sequence number, the join of the clocks
/// of the versions read or written at it, and the head's scope.
#[derive(Default)]
pub struct ClockBook {
    map: Mutex<HashMap<Id, Seen>>,
}

/// What the book keeps of one record: head sequence number, clock, scope.
type Seen = (u64, Clock, Option<Scope>);

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
            self.set(key, head.seq, joined(versions), Some(head.scope()));
        }
    }

    /// Notes a version this vault wrote.
    pub fn note_written(&self, rec: &Record) {
        self.set(rec.key(), rec.seq, rec.clock.clone(), Some(rec.scope()));
    }

    /// Notes that a save over version `seq` of `key` builds on `clock`
    /// (a first save over no stored version: the empty clock).
    pub fn note_base(&self, key: Id, seq: u64, clock: Clock) {
        self.set(key, seq, clock, None);
    }

    /// Sets the scope the next saves of `key` carry (a new object inherits
    /// its directory's; sharing a folder retags its records).
    pub fn set_scope(&self, key: Id, scope: Option<Scope>) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match m.get_mut(&key) {
            Some(e) => e.2 = scope,
            None => {
                if m.len() >= MAX_CLOCKS {
                    m.clear();
                }
                m.insert(key, (0, Clock::default(), scope));
            }
        }
    }

    /// The scope of record `key` as last seen (`None`: untagged or unknown).
    pub fn scope(&self, key: Id) -> Option<Scope> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&key).and_then(|e| e.2)
    }

    /// `scope`: `Some` to set it, `None` to keep the one known.
    fn set(&self, key: Id, seq: u64, clock: Clock, scope: Option<Option<Scope>>) {
        let mut m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() >= MAX_CLOCKS && !m.contains_key(&key) {
            m.clear();
        }
        let scope = match scope {
            Some(s) => s,
            None => m.get(&key).and_then(|e| e.2),
        };
        m.insert(key, (seq, clock, scope));
    }

    /// The clock a save over version `seq` of record `key` builds on, if
    /// that version is the one last seen.
    pub fn base(&self, key: Id, seq: u64) -> Option<Clock> {
        let m = self.map.lock().unwrap_or_else(|e| e.into_inner());
        m.get(&key)
            .filter(|(s, _, _)| *s == seq)
            .map(|(_, c, _)| c.clone())
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
