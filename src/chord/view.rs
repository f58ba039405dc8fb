//! A snapshot of one node's ring state, and the routing answers it gives
//! without asking anyone.
//!
//! The request machines of [`crate::dht`] take a [`RingView`] at every
//! step: who the node is, its predecessor, its successor list and fingers,
//! and whether that list came back round to the node (then the node and
//! its list are the whole ring, and a ring smaller than the replication
//! factor is known for what it is). [`ChordNode`](super::ChordNode)
//! answers `FindSuccessor` with the same two functions, [`local_answer`]
//! and [`closest_preceding`].

use crate::id::Id;
use crate::wire::Peer;

/// One node's ring state at one moment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RingView {
    /// This node.
    pub me: Peer,
    /// Whether it is a ring member (else nothing can be routed).
    pub member: bool,
    /// Its predecessor, if known.
    pub pred: Option<Peer>,
    /// Its successor list, nearest first, without itself.
    pub succs: Vec<Peer>,
    /// The list came back round to this node: `me :: succs` is the ring.
    pub whole: bool,
    /// Distinct finger entries.
    pub fingers: Vec<Peer>,
}

impl RingView {
    /// A view of a node alone in its own ring.
    pub fn alone(me: Peer) -> RingView {
        RingView {
            me,
            member: true,
            pred: None,
            succs: Vec::new(),
            whole: true,
            fingers: Vec::new(),
        }
    }

    /// The ring's members in ring order from this node, if the view holds
    /// the whole ring.
    pub fn members(&self) -> Option<Vec<Peer>> {
        self.whole.then(|| {
            std::iter::once(self.me.clone())
                .chain(self.succs.iter().cloned())
                .collect()
        })
    }

    /// The number of ring members if the view holds the whole ring.
    pub fn ring_size(&self) -> Option<usize> {
        self.whole.then_some(self.succs.len() + 1)
    }

    /// Copies an item needs for a put to count: `r`, or the ring size when
    /// the whole ring is known and smaller.
    pub fn copies_needed(&self, r: usize) -> usize {
        match self.ring_size() {
            Some(n) => r.min(n).max(1),
            None => r.max(1),
        }
    }

    /// Owner of `key` and the nodes after it, if this node can tell on its
    /// own (see [`local_answer`]). A node without successors owns every key
    /// only if it knows it is alone (else its list is being rebuilt).
    pub fn local_answer(&self, key: Id) -> Option<(Peer, Vec<Peer>)> {
        if self.succs.is_empty() && !self.whole {
            return None;
        }
        local_answer(&self.me, self.pred.as_ref(), &self.succs, self.whole, key)
    }

    /// Known nodes strictly between this node and `key`, closest first.
    pub fn closest_preceding(&self, key: Id, limit: usize) -> Vec<Peer> {
        closest_preceding(
            &self.me,
            self.succs.iter().chain(self.fingers.iter()),
            key,
            limit,
        )
    }

    /// The nearest node this node knows of (itself, its predecessor,
    /// successors and fingers) at or after `key`: its guess of the key's
    /// owner, unchecked, for ordering work (a repair pass's batches), never
    /// for placing data.
    pub fn guess_owner(&self, key: Id) -> Id {
        std::iter::once(&self.me)
            .chain(self.pred.iter())
            .chain(self.succs.iter())
            .chain(self.fingers.iter())
            .map(|p| p.id)
            .min_by_key(|id| key.distance_to(*id))
            .unwrap_or(self.me.id)
    }

    /// Whether `id` is this node, its predecessor or in its successor list.
    pub fn knows(&self, id: Id) -> bool {
        self.me.id == id
            || self.pred.as_ref().is_some_and(|p| p.id == id)
            || self.succs.iter().any(|p| p.id == id)
    }
}

/// The owner of `key` if a node can tell without asking anyone: the node
/// itself (alone, or `key ∈ (pred, me]`), its successor (`key ∈ (me,
/// succ]`), or, when its list is the whole ring, whichever member follows
/// the key. Returns the owner and the nodes after it.
pub fn local_answer(
    me: &Peer,
    pred: Option<&Peer>,
    succs: &[Peer],
    whole: bool,
    key: Id,
) -> Option<(Peer, Vec<Peer>)> {
    if succs.is_empty() {
        return Some((me.clone(), Vec::new()));
    }
    if whole {
        // Members in ring order from me; the owner is the first at or
        // after the key, and the rest follow it round the ring.
        let ring: Vec<&Peer> = std::iter::once(me).chain(succs.iter()).collect();
        let n = ring.len();
        let at = (0..n)
            .find(|&i| key.in_half_open(ring[i].id, ring[(i + 1) % n].id))
            .map(|i| (i + 1) % n)
            .unwrap_or(0);
        let owner = ring[at].clone();
        let next = (1..n).map(|d| ring[(at + d) % n].clone()).collect();
        return Some((owner, next));
    }
    if let Some(p) = pred
        && key.in_half_open(p.id, me.id)
    {
        return Some((me.clone(), succs.to_vec()));
    }
    if key.in_half_open(me.id, succs[0].id) {
        return Some((succs[0].clone(), succs[1..].to_vec()));
    }
    None
}

/// Nodes among `known` strictly between `me` and `key`, closest to the key
/// first, at most `limit`.
pub fn closest_preceding<'a>(
    me: &Peer,
    known: impl Iterator<Item = &'a Peer>,
    key: Id,
    limit: usize,
) -> Vec<Peer> {
    let mut out: Vec<Peer> = Vec::new();
    for p in known {
        if p.id.in_open(me.id, key) && !out.iter().any(|q| q.id == p.id) {
            out.push(p.clone());
        }
    }
    out.sort_by_key(|p| p.id.distance_to(key));
    out.truncate(limit);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::small;
    use crate::wire::test_peer as peer;

    #[test]
    fn the_guessed_owner_is_the_nearest_known_node_at_or_after_the_key() {
        let mut v = RingView::alone(peer(100));
        v.pred = Some(peer(50));
        v.succs = vec![peer(150), peer(200)];
        v.fingers = vec![peer(10)];
        assert_eq!(v.guess_owner(small(60)), small(100));
        assert_eq!(v.guess_owner(small(150)), small(150));
        assert_eq!(v.guess_owner(small(151)), small(200));
        // Past the last known node it wraps to the first.
        assert_eq!(v.guess_owner(small(201)), small(10));
    }

    #[test]
    fn a_whole_ring_answers_every_key_locally() {
        let v = RingView {
            me: peer(10),
            member: true,
            pred: Some(peer(30)),
            succs: vec![peer(20), peer(30)],
            whole: true,
            fingers: vec![],
        };
        assert_eq!(v.ring_size(), Some(3));
        assert_eq!(v.copies_needed(3), 3);
        assert_eq!(v.copies_needed(5), 3);
        let (o, next) = v.local_answer(small(15)).unwrap();
        assert_eq!(o, peer(20));
        assert_eq!(next, vec![peer(30), peer(10)]);
        let (o, next) = v.local_answer(small(31)).unwrap();
        assert_eq!(o, peer(10));
        assert_eq!(next, vec![peer(20), peer(30)]);
        assert_eq!(v.local_answer(small(30)).unwrap().0, peer(30));
    }

    #[test]
    fn a_partial_view_answers_only_near_keys() {
        let v = RingView {
            me: peer(10),
            member: true,
            pred: Some(peer(5)),
            succs: vec![peer(20), peer(30)],
            whole: false,
            fingers: vec![peer(100)],
        };
        assert_eq!(v.copies_needed(3), 3, "an unknown ring size needs r");
        assert_eq!(v.local_answer(small(7)).unwrap().0, peer(10));
        assert_eq!(v.local_answer(small(15)).unwrap().0, peer(20));
        assert!(v.local_answer(small(25)).is_none());
        assert_eq!(
            v.closest_preceding(small(150), 8),
            vec![peer(100), peer(30), peer(20)]
        );
        assert_eq!(RingView::alone(peer(1)).copies_needed(3), 1);
    }
}
