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

/// Where a repair pass starts its walk: an estimate of the start of the
/// arc of keys this node is a replica of (its own range and those of its
/// `r − 1` predecessors), so that a pass visits the keys whose copies it is
/// responsible for before stray copies it holds from elsewhere. A pass can
/// be slow while the ring is in flux (every lookup waiting for dead nodes to
/// time out), and that is exactly when the keys of a crashed neighbour have
/// a copy too few. The arc's width is guessed from the spacing of the
/// successor list (`r` average gaps back from `me`, one more than needed);
/// a wrong guess only changes the order of the walk.
pub fn walk_start(me: Id, succs: &[Peer], r: usize) -> Id {
    let Some(last) = succs.last() else {
        return me;
    };
    let span = me.distance_to(last.id).prefix_u64();
    let gap = span / succs.len() as u64;
    let back = gap.saturating_mul(r as u64);
    let start = me.prefix_u64().wrapping_sub(back);
    let mut out = [0u8; 32];
    out[..8].copy_from_slice(&start.to_be_bytes());
    Id(out)
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
    fn a_walk_starts_r_gaps_before_this_node() {
        // Successors 10 apart in the top 64 bits: the arc of r = 3 starts
        // 30 before me, wrapping below zero.
        let at = |n: u64| {
            let mut b = [0u8; 32];
            b[..8].copy_from_slice(&n.to_be_bytes());
            Id(b)
        };
        let peers = |ns: [u64; 3]| -> Vec<Peer> {
            ns.into_iter()
                .map(|n| Peer {
                    id: at(n),
                    addr: format!("sim:{n}"),
                })
                .collect()
        };
        let succs = peers([110, 120, 130]);
        assert_eq!(walk_start(at(100), &succs, 3), at(70));
        assert_eq!(
            walk_start(at(10), &peers([20, 30, 40]), 3),
            at(10u64.wrapping_sub(30))
        );
        assert_eq!(walk_start(at(100), &[], 3), at(100));
        // The pass then visits the arc before the strays above this node.
        let held: BTreeSet<Id> = [at(105), at(80), at(95)].into_iter().collect();
        assert_eq!(
            first_from(&held, walk_start(at(100), &succs, 3)),
            Some(at(80))
        );
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
