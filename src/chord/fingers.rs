//! The finger table: `finger[i]` is the node believed to succeed
//! `me + 2^i` (Stoica et al., SIGCOMM 2001, §4.3).
//!
//! Fingers only speed lookups up; ring correctness never depends on them
//! (DESIGN.md, "Chord, done correctly"). An entry may be stale or empty; a
//! dead entry is cleared as soon as a call to it fails.

use crate::id::{ID_BITS, Id};
use crate::wire::Peer;

/// `ID_BITS` optional entries plus the index of the next entry to refresh.
#[derive(Debug, Clone)]
pub struct FingerTable {
    /// Owner of the table; finger `i` starts at `me + 2^i`.
    me: Id,
    /// `entries[i]`: believed successor of `me + 2^i`.
    entries: Vec<Option<Peer>>,
    /// Next index `fix_fingers` refreshes; walks 0..ID_BITS and wraps.
    next: usize,
}

impl FingerTable {
    /// An empty table for node `me`.
    pub fn new(me: Id) -> Self {
        FingerTable {
            me,
            entries: vec![None; ID_BITS],
            next: 0,
        }
    }

    /// The start of finger `i`.
    pub fn start(&self, i: usize) -> Id {
        self.me.add_pow2(i)
    }

    /// The index to refresh next, and its start point.
    pub fn next_to_fix(&self) -> (usize, Id) {
        (self.next, self.start(self.next))
    }

    /// Records that `owner` succeeds finger `i`'s start. Every later finger
    /// whose start also lies in `(me, owner]` has the same successor, so it is
    /// set too and the refresh cursor skips past them.
    pub fn set(&mut self, i: usize, owner: Peer) {
        let mut j = i;
        while j < ID_BITS && (j == i || self.start(j).in_half_open(self.me, owner.id)) {
            self.entries[j] = Some(owner.clone());
            j += 1;
        }
        self.next = if j >= ID_BITS { 0 } else { j };
    }

    /// Forgets every entry pointing at `id` (it failed or left).
    pub fn remove(&mut self, id: Id) {
        for e in self.entries.iter_mut() {
            if e.as_ref().is_some_and(|p| p.id == id) {
                *e = None;
            }
        }
    }

    /// Distinct entries, in finger order.
    pub fn distinct(&self) -> Vec<Peer> {
        let mut out: Vec<Peer> = Vec::new();
        for p in self.iter() {
            if !out.iter().any(|q| q.id == p.id) {
                out.push(p.clone());
            }
        }
        out
    }

    /// Iterates over present entries, skipping runs of the same node (equal
    /// entries are mostly adjacent, so this is nearly distinct and cheap).
    pub fn iter(&self) -> impl Iterator<Item = &Peer> {
        let mut last: Option<Id> = None;
        self.entries.iter().flatten().filter(move |p| {
            let fresh = last != Some(p.id);
            last = Some(p.id);
            fresh
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer(id: Id) -> Peer {
        Peer {
            id,
            addr: format!("n{}", id.short()),
        }
    }

    #[test]
    fn set_fills_covered_fingers_and_advances() {
        let me = Id::ZERO;
        let mut t = FingerTable::new(me);
        // owner at 2^10: fingers 0..=10 all have it as successor.
        let owner = peer(me.add_pow2(10));
        t.set(0, owner.clone());
        assert_eq!(t.next_to_fix().0, 11);
        assert_eq!(t.distinct(), vec![owner.clone()]);
        t.remove(owner.id);
        assert!(t.distinct().is_empty());
    }

    #[test]
    fn last_finger_wraps_cursor() {
        let mut t = FingerTable::new(Id::ZERO);
        t.set(255, peer(Id([0xff; 32])));
        assert_eq!(t.next_to_fix().0, 0);
    }
}
