//! Which nodes must hold a key, and how a node's held keys split by owner.
//!
//! A key lives on its owner (its successor on the ring) and the next `r − 1`
//! nodes (DESIGN.md, "Replication"). A repair pass walks the keys a node
//! holds in ring order: it looks up the first one, learns its owner `o`, and
//! every held key in `[k, o]` has that same owner, so one lookup covers the
//! whole group. The node then makes sure every member of the group's replica
//! set holds the keys, and drops its own copies if it is not in that set.
//! This module is the pure part of that walk, shared by the node and the
//! simulator.

use crate::id::Id;
use crate::wire::Peer;
use std::collections::BTreeSet;

/// The nodes that must hold a key owned by `owner`: the owner and the first
/// `r − 1` distinct nodes of `next` (fewer if the ring is smaller).
pub fn replica_set(owner: &Peer, next: &[Peer], r: usize) -> Vec<Peer> {
    let mut out = vec![owner.clone()];
    for p in next {
        if out.len() >= r {
            break;
        }
        if !out.iter().any(|q| q.id == p.id) {
            out.push(p.clone());
        }
    }
    out.truncate(r.max(1));
    out
}

/// The held keys with the same owner as `first`: `first` itself and every
/// key in `(first, owner]` clockwise.
pub fn group_keys(held: &BTreeSet<Id>, first: Id, owner: Id) -> Vec<Id> {
    if first == owner {
        return if held.contains(&first) {
            vec![first]
        } else {
            Vec::new()
        };
    }
    // Walk clockwise from `first` to `owner`, which may wrap past zero.
    let mut out: Vec<Id> = Vec::new();
    if first <= owner {
        out.extend(held.range(first..=owner).copied());
    } else {
        out.extend(held.range(first..).copied());
        out.extend(held.range(..=owner).copied());
    }
    out
}

/// The first held key at or after `from` clockwise (wrapping), if any.
pub fn first_from(held: &BTreeSet<Id>, from: Id) -> Option<Id> {
    held.range(from..)
        .next()
        .or_else(|| held.iter().next())
        .copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::small;
    use crate::wire::test_peer as peer;

    #[test]
    fn replica_set_takes_owner_and_distinct_followers() {
        let set = replica_set(&peer(1), &[peer(2), peer(2), peer(3), peer(4)], 3);
        assert_eq!(set, vec![peer(1), peer(2), peer(3)]);
        assert_eq!(replica_set(&peer(1), &[], 3), vec![peer(1)]);
    }

    #[test]
    fn groups_wrap_around_zero() {
        let held: BTreeSet<Id> = [1, 5, 9, 200, 250].into_iter().map(small).collect();
        assert_eq!(
            group_keys(&held, small(200), small(5)),
            vec![small(200), small(250), small(1), small(5)]
        );
        assert_eq!(
            group_keys(&held, small(5), small(100)),
            vec![small(5), small(9)]
        );
        assert_eq!(first_from(&held, small(251)), Some(small(1)));
        assert_eq!(first_from(&held, small(6)), Some(small(9)));
    }
}
