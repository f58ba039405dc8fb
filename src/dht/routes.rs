//! The one cache of lookup answers: key ranges and who owns them.
//!
//! A confirmed answer says that `owner` holds the keys of `(from, owner]`
//! (its predecessor's ID to its own, as the owner itself confirmed) and
//! names the nodes after it. Any key in that range is placed from the
//! cached answer without another lookup, for `ttl` milliseconds. The
//! owner's successor list also names the owners of the ranges after it;
//! those derived answers are unconfirmed and serve only to place new
//! items (a block, a record's first version under a fresh random name),
//! which need no ordering: if a derived answer is wrong, the item still
//! sits on real nodes that each stored it, and repair moves it on.
//!
//! Entries are dropped when a call to a node they name fails, and the node
//! clears the whole cache when its own neighbours change. A get that finds
//! nothing where a cached answer said looks the key up again. Time is the
//! caller's (virtual in the simulator).

use super::Placement;
use super::machine::Millis;
use crate::id::Id;
use crate::wire::Peer;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// How long an answer is used, by default.
pub const ROUTE_TTL: Millis = 5_000;
/// Entries kept at most; past it, expired ones go, then all.
const MAX_ENTRIES: usize = 16_384;

/// One owner's range.
#[derive(Debug, Clone)]
struct Entry {
    /// The range is `(from, owner]`.
    from: Id,
    owner: Peer,
    /// Nodes after the owner, nearest first.
    next: Vec<Peer>,
    /// Confirmed by the owner (else derived from another owner's list).
    confirmed: bool,
    /// When learned.
    at: Millis,
}

/// Recent owner ranges, keyed by owner ID.
#[derive(Debug)]
pub struct RouteCache {
    /// How long an entry answers.
    ttl: Millis,
    /// Owner ID → entry. A std mutex, held only for in-memory work.
    entries: Mutex<BTreeMap<Id, Entry>>,
}

impl Default for RouteCache {
    fn default() -> Self {
        RouteCache::new(ROUTE_TTL)
    }
}

impl RouteCache {
    /// An empty cache whose entries answer for `ttl` ms.
    pub fn new(ttl: Millis) -> RouteCache {
        RouteCache {
            ttl,
            entries: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Id, Entry>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The placement of `key` if a fresh entry covers it; derived entries
    /// only with `derived_ok`.
    pub fn get(&self, key: Id, now: Millis, derived_ok: bool) -> Option<Placement> {
        let entries = self.lock();
        // The owner of `key` is the first owner at or after it, round the
        // ring.
        let (_, e) = entries
            .range(key..)
            .next()
            .or_else(|| entries.iter().next())?;
        let fresh = now.saturating_sub(e.at) < self.ttl;
        let covers = e.from != e.owner.id && key.in_half_open(e.from, e.owner.id);
        (fresh && covers && (e.confirmed || derived_ok)).then(|| Placement {
            key,
            from: Some(e.from),
            owner: e.owner.clone(),
            next: e.next.clone(),
            hops: 0,
            cached: true,
        })
    }

    /// Learns a confirmed placement (one with `from` set) and the ranges
    /// its successor list implies.
    pub fn learn(&self, p: &Placement, now: Millis) {
        let Some(from) = p.from else {
            return;
        };
        let mut entries = self.lock();
        if entries.len() >= MAX_ENTRIES {
            let ttl = self.ttl;
            entries.retain(|_, e| now.saturating_sub(e.at) < ttl);
            if entries.len() >= MAX_ENTRIES {
                entries.clear();
            }
        }
        entries.insert(
            p.owner.id,
            Entry {
                from,
                owner: p.owner.clone(),
                next: p.next.clone(),
                confirmed: true,
                at: now,
            },
        );
        // Derived: the range of each node of the list ends at it and
        // starts at the one before it.
        let mut prev = &p.owner;
        for (i, n) in p.next.iter().enumerate() {
            if n.id == p.owner.id || p.next[..i].iter().any(|q| q.id == n.id) {
                break; // came back round
            }
            let keep = entries
                .get(&n.id)
                .is_some_and(|e| e.confirmed && now.saturating_sub(e.at) < self.ttl);
            if !keep {
                entries.insert(
                    n.id,
                    Entry {
                        from: prev.id,
                        owner: n.clone(),
                        next: p.next[i + 1..].to_vec(),
                        confirmed: false,
                        at: now,
                    },
                );
            }
            prev = n;
        }
    }

    /// Drops every entry naming node `id` (a call to it failed).
    pub fn forget_peer(&self, id: Id) {
        self.lock()
            .retain(|_, e| e.owner.id != id && !e.next.iter().any(|p| p.id == id));
    }

    /// Drops every entry whose range holds `key`.
    pub fn forget_key(&self, key: Id) {
        self.lock()
            .retain(|_, e| !(e.from != e.owner.id && key.in_half_open(e.from, e.owner.id)));
    }

    /// Drops everything (the node's own neighbours changed).
    pub fn clear(&self) {
        self.lock().clear();
    }

    /// Entries held (for tests).
    pub fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether nothing is cached.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::small;
    use crate::wire::test_peer as peer;

    fn placement() -> Placement {
        Placement {
            key: small(15),
            from: Some(small(10)),
            owner: peer(20),
            next: vec![peer(30), peer(40), peer(50)],
            hops: 2,
            cached: false,
        }
    }

    #[test]
    fn confirmed_and_derived_ranges() {
        let c = RouteCache::new(1000);
        c.learn(&placement(), 0);
        let p = c.get(small(12), 10, false).unwrap();
        assert_eq!(p.owner, peer(20));
        assert!(p.cached);
        assert_eq!(p.next, vec![peer(30), peer(40), peer(50)]);
        assert!(c.get(small(10), 10, true).is_none(), "outside (10, 20]");
        // (20, 30] is owned by 30, but only as 20's list says.
        assert!(c.get(small(25), 10, false).is_none());
        let d = c.get(small(25), 10, true).unwrap();
        assert_eq!(d.owner, peer(30));
        assert_eq!(d.next, vec![peer(40), peer(50)]);
        assert!(c.get(small(55), 10, true).is_none(), "past the list");
        // Expiry, and forgetting a failed node.
        assert!(c.get(small(12), 1000, false).is_none());
        c.forget_peer(peer(40).id);
        assert!(c.get(small(12), 10, false).is_none());
        assert!(c.get(small(35), 10, true).is_none());
    }

    #[test]
    fn ranges_wrap_past_zero() {
        let c = RouteCache::new(1000);
        c.learn(
            &Placement {
                key: small(2),
                from: Some(small(250)),
                owner: peer(5),
                next: vec![peer(9)],
                hops: 1,
                cached: false,
            },
            0,
        );
        assert_eq!(c.get(small(255), 1, false).unwrap().owner, peer(5));
        assert_eq!(c.get(small(1), 1, false).unwrap().owner, peer(5));
        assert!(c.get(small(249), 1, false).is_none());
        c.forget_key(small(3));
        assert!(c.get(small(1), 1, false).is_none());
    }
}
