//! What owners ask of the whole ring: release blocks on their replicas,
//! list the blocks they claim (for the owner's orphan check), and the
//! ring's space as one owner sees it (`df`).

use super::locate::{CacheUse, Locate};
use super::{Dht, DhtError, LocateOnce, Transport};
use crate::id::Id;
use crate::rpc::{GetState, OwnedBy, ReleaseBlocks, Rpc, SpaceOf};
use crate::wire::{Freed, MAX_OWNED, NodeSpace, OwnedBlock, Peer, Release, RingSpace};
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

/// Most members a ring walk visits.
const MAX_WALK: usize = 4096;
/// Most members asked for their space; a larger ring is estimated from
/// this many.
const SPACE_SAMPLE: usize = 64;

/// The estimated member count of a ring of which `me` and its successor
/// list `succs` are seen: members are spread evenly over the ID space, so
/// the share of it the list covers is the share of the members it holds.
fn estimate_members(me: Id, succs: &[Peer]) -> f64 {
    let Some(last) = succs.last() else {
        return 1.0;
    };
    // Fraction of the ring from `me` to `last`, from the top 64 bits.
    let top = |id: Id| u64::from_be_bytes(id.0[..8].try_into().unwrap_or_default());
    let span = top(last.id).wrapping_sub(top(me)) as f64 / 2f64.powi(64);
    if span <= 0.0 {
        return succs.len() as f64 + 1.0;
    }
    (succs.len() as f64 / span).max(succs.len() as f64 + 1.0)
}

impl<T: Transport> Dht<T> {
    /// Applies an owner's release on every replica of its blocks (every
    /// member, when this node sees the whole ring). Fails if a node that
    /// should have it could not be told; applying it again is harmless.
    pub async fn release(&self, rel: Release) -> Result<Freed, DhtError> {
        let rel = Arc::new(rel);
        let view = self.transport.view();
        let peers: Vec<Peer> = match view.members() {
            Some(all) => all,
            None => {
                let mut by_id: HashMap<Id, Peer> = HashMap::new();
                for &key in &rel.keys {
                    let p = self
                        .run(LocateOnce(Locate::new(key, CacheUse::Confirmed)))
                        .await?;
                    for q in p.replicas(self.replicas) {
                        by_id.insert(q.id, q);
                    }
                }
                by_id.into_values().collect()
            }
        };
        let answers = futures::future::join_all(peers.iter().map(|p| {
            self.transport
                .call(p, ReleaseBlocks(Arc::clone(&rel)).request())
        }))
        .await;
        let mut freed = Freed::default();
        let mut failed = Vec::new();
        for (p, a) in peers.iter().zip(answers) {
            match ReleaseBlocks::parse(a) {
                Ok(f) => {
                    freed.blocks += f.blocks;
                    freed.bytes += f.bytes;
                }
                Err(e) => failed.push(format!("{}: {e}", p.addr)),
            }
        }
        if failed.is_empty() {
            Ok(freed)
        } else {
            Err(DhtError::Unavailable(format!(
                "release not applied on {}",
                failed.join(", ")
            )))
        }
    }

    /// Members of the ring in ring order from this node, at most `limit`,
    /// and whether that is all of them: the view's when it holds the whole
    /// ring, else a walk along successor lists.
    pub async fn members(&self, limit: usize) -> Result<(Vec<Peer>, bool), DhtError> {
        let view = self.transport.view();
        if let Some(all) = view.members() {
            return Ok((all, true));
        }
        let me = view.me.clone();
        let mut out = vec![me.clone()];
        out.extend(view.succs.iter().cloned());
        while out.len() < limit {
            let Some(last) = out.last().cloned() else {
                break;
            };
            let state = GetState::parse(self.transport.call(&last, GetState.request()).await)
                .map_err(DhtError::Call)?;
            let mut progressed = false;
            for p in state.succs {
                if p.id == me.id {
                    return Ok((out, true));
                }
                if !out.iter().any(|q| q.id == p.id) {
                    out.push(p);
                    progressed = true;
                }
            }
            if !progressed {
                break;
            }
        }
        Ok((out, false))
    }

    /// Every block `owner` claims on the ring: each member's list, merged
    /// (per block the newest claim time seen). Fails if a member cannot
    /// be asked: an orphan check must not act on a partial list.
    pub async fn owned_blocks(&self, owner: [u8; 32]) -> Result<Vec<OwnedBlock>, DhtError> {
        let (members, whole) = self.members(MAX_WALK).await?;
        if !whole {
            return Err(DhtError::Unavailable(format!(
                "the ring walk stopped after {} members",
                members.len()
            )));
        }
        let mut all: BTreeMap<Id, OwnedBlock> = BTreeMap::new();
        for p in members {
            let mut after = None;
            loop {
                let page = OwnedBy::parse(
                    self.transport
                        .call(&p, OwnedBy { owner, after }.request())
                        .await,
                )
                .map_err(DhtError::Call)?;
                let full = page.len() >= MAX_OWNED;
                after = page.last().map(|b| b.key);
                for b in page {
                    let e = all.entry(b.key).or_insert(b);
                    e.time = e.time.max(b.time);
                }
                if !full {
                    break;
                }
            }
        }
        Ok(all.into_values().collect())
    }

    /// The ring's space for `owner`: the members' data file systems and
    /// the owner's bytes, summed and divided by the copies kept. A ring of
    /// up to [`SPACE_SAMPLE`] members is counted exactly; a larger one is
    /// estimated from that many consecutive members, scaled to the ring's
    /// estimated size.
    pub async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, DhtError> {
        let (peers, whole) = self.members(SPACE_SAMPLE).await?;
        let members = if whole {
            peers.len() as f64
        } else {
            estimate_members(peers[0].id, &peers[1..])
        };
        let answers = futures::future::join_all(
            peers
                .iter()
                .map(|p| self.transport.call(p, SpaceOf(owner).request())),
        )
        .await;
        let mut sum = NodeSpace::default();
        let mut counted = 0u64;
        for a in answers {
            if let Ok(s) = SpaceOf::parse(a) {
                sum.total += s.total;
                sum.avail += s.avail;
                sum.owner_bytes += s.owner_bytes;
                counted += 1;
            }
        }
        if counted == 0 {
            return Err(DhtError::Unavailable("no member answered".into()));
        }
        let scale = members / counted as f64;
        let copies = (self.replicas as f64).min(members).max(1.0);
        let per_copy = |v: u64| (v as f64 * scale / copies) as u64;
        Ok(RingSpace {
            total: per_copy(sum.total),
            avail: per_copy(sum.avail),
            used: per_copy(sum.owner_bytes),
            members: members.round() as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn peer_at(top: u64) -> Peer {
        let mut id = [0u8; 32];
        id[..8].copy_from_slice(&top.to_be_bytes());
        Peer {
            id: Id(id),
            addr: "x:1".into(),
        }
    }

    #[test]
    fn member_count_is_scaled_from_the_successor_lists_span() {
        let me = peer_at(0).id;
        // 8 successors spread over 1/16 of the ring: about 128 members.
        let succs: Vec<Peer> = (1..=8).map(|i| peer_at(i << 57)).collect();
        let n = estimate_members(me, &succs);
        assert!((n - 128.0).abs() < 1.0, "{n}");
        assert_eq!(estimate_members(me, &[]), 1.0);
    }
}
