//! One iterative lookup: which node succeeds `key`?
//!
//! The lookup keeps a list of candidate nodes that precede the key, best
//! (closest to the key) first, and asks one at a time. An answer either names
//! the owner (`Found`) or offers closer candidates (`Next`), which are merged
//! in; a failed or busy candidate is skipped and the next best one is asked,
//! so a lookup survives dead fingers as long as some candidate still makes
//! progress. Every candidate is asked at most once and the number of hops is
//! bounded, so a lookup always ends.

use crate::id::Id;
use crate::wire::Peer;
use std::collections::HashSet;

/// Why a lookup started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// Asked for by the node's user (the DHT, a client).
    User,
    /// The node's own join: find its successor.
    Join,
    /// A node left alone finding its way back into the ring it was in.
    Rejoin,
    /// A merge probe: where another ring places this node's ID.
    Merge,
    /// Refreshing finger `i`.
    Finger(usize),
}

/// A finished lookup.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LookupResult {
    /// The key looked up.
    pub key: Id,
    /// The node that succeeds the key.
    pub owner: Peer,
    /// Nodes following the owner, nearest first (replica candidates).
    pub next: Vec<Peer>,
    /// Number of lookup calls sent (0 when the answer was local).
    pub hops: u32,
}

/// Why a lookup gave up.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LookupError {
    #[error("node is not a ring member")]
    NotMember,
    #[error("no reachable node makes progress towards the key")]
    NoRoute,
    #[error("lookup exceeded {0} hops")]
    TooManyHops(u32),
}

/// State of one lookup in flight.
#[derive(Debug)]
pub struct Lookup {
    /// The key being resolved.
    pub key: Id,
    /// Why it runs (decides what happens with the answer).
    pub purpose: Purpose,
    /// Calls sent so far.
    pub hops: u32,
    /// Nodes to ask, closest preceding the key first.
    candidates: Vec<Peer>,
    /// IDs already asked (never asked twice).
    tried: HashSet<Id>,
    /// The node being asked now.
    pub asking: Option<Peer>,
}

impl Lookup {
    /// A lookup for `key` that starts by asking the given candidates.
    pub fn new(key: Id, purpose: Purpose, start: Vec<Peer>) -> Self {
        let mut l = Lookup {
            key,
            purpose,
            hops: 0,
            candidates: Vec::new(),
            tried: HashSet::new(),
            asking: None,
        };
        // Initial candidates keep their given order (the first may be a
        // bootstrap node whose ID is not known yet).
        for p in start {
            if !l.candidates.iter().any(|c| c.addr == p.addr) {
                l.candidates.push(p);
            }
        }
        l
    }

    /// Merges closer candidates offered by `from`. Only nodes strictly
    /// between `from` and the key are taken, so every step makes progress.
    pub fn offer(&mut self, from: Option<Id>, offered: Vec<Peer>) {
        for p in offered {
            let progresses = match from {
                Some(f) => p.id.in_open(f, self.key),
                None => p.id != self.key,
            };
            if progresses
                && !self.tried.contains(&p.id)
                && !self.candidates.iter().any(|c| c.id == p.id)
            {
                self.candidates.push(p);
            }
        }
        let key = self.key;
        self.candidates.sort_by_key(|c| c.id.distance_to(key));
    }

    /// The next candidate to ask, marking it tried; `None` when exhausted.
    pub fn next_candidate(&mut self) -> Option<Peer> {
        while !self.candidates.is_empty() {
            let p = self.candidates.remove(0);
            if self.tried.insert(p.id) {
                self.hops += 1;
                self.asking = Some(p.clone());
                return Some(p);
            }
        }
        self.asking = None;
        None
    }

    /// Drops every remaining candidate with this ID (it is known dead).
    pub fn forget(&mut self, id: Id) {
        self.candidates.retain(|c| c.id != id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::small;
    use crate::wire::test_peer as peer;

    #[test]
    fn candidates_are_tried_closest_first_once() {
        let mut l = Lookup::new(small(100), Purpose::User, vec![peer(10)]);
        assert_eq!(l.next_candidate(), Some(peer(10)));
        l.offer(
            Some(small(10)),
            vec![peer(50), peer(90), peer(120), peer(10)],
        );
        // 120 does not precede the key; 10 was tried.
        assert_eq!(l.next_candidate(), Some(peer(90)));
        assert_eq!(l.next_candidate(), Some(peer(50)));
        assert_eq!(l.next_candidate(), None);
        assert_eq!(l.hops, 3);
    }
}
