//! Keeps every item on its r replicas, and hands items over on leave.
//!
//! A repair pass walks the items this node holds in ring order, grouped by
//! owner (one lookup per group, see [`crate::replica`]). For each group it
//! asks every member of the replica set which items it lacks, pushes those,
//! and — only when every member confirmed — drops its own copies if it is
//! not itself in the set. A node that joins thus receives the keys it now
//! owns from the nodes that held them, a crashed node's keys are copied back
//! to r nodes by the survivors, and surplus copies disappear. Passes run on
//! a period and soon after a topology change.

use super::Node;
use crate::id::Id;
use crate::replica::{first_from, group_keys, replica_set};
use crate::wire::{ItemVersion, MAX_BATCH, Peer, ReplicaRequest, ReplicaResponse};
use futures::stream::{self, StreamExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

/// Items pushed to one peer in parallel.
const PUSH_PARALLELISM: usize = 8;

/// What one repair pass did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RepairStats {
    /// Groups (distinct owners) visited.
    pub groups: usize,
    /// Items copied to another node.
    pub pushed: usize,
    /// Local copies dropped because this node is not a replica.
    pub dropped: usize,
    /// Calls that failed (the pass retries next time).
    pub failures: usize,
}

impl Node {
    /// One repair pass over everything this node holds.
    pub async fn repair_pass(self: &Arc<Self>) -> RepairStats {
        let mut stats = RepairStats::default();
        let items: BTreeMap<Id, ItemVersion> = self.store.items().into_iter().collect();
        let mut todo: BTreeSet<Id> = items.keys().copied().collect();
        let me = self.ring.me();
        while let Some(first) = first_from(&todo, me.id) {
            let found = match self.ring.lookup(first).await {
                Ok(f) => f,
                Err(e) => {
                    log::debug!("repair: lookup of {} failed: {e}", first.short());
                    stats.failures += 1;
                    break;
                }
            };
            let group = group_keys(&todo, first, found.owner.id);
            for k in &group {
                todo.remove(k);
            }
            todo.remove(&first);
            stats.groups += 1;
            let set = replica_set(&found.owner, &found.next, self.replicas);
            let versions: Vec<(Id, ItemVersion)> = group
                .iter()
                .filter_map(|k| items.get(k).map(|v| (*k, *v)))
                .collect();
            let mut all_ok = true;
            for peer in set.iter().filter(|p| p.id != me.id) {
                match self.sync_to(peer, &versions).await {
                    Ok(n) => stats.pushed += n,
                    Err(n) => {
                        stats.failures += n;
                        all_ok = false;
                    }
                }
            }
            if all_ok && !set.iter().any(|p| p.id == me.id) {
                for (k, _) in &versions {
                    let store = Arc::clone(&self.store);
                    let k = *k;
                    if let Ok(Ok(())) = tokio::task::spawn_blocking(move || store.remove(k)).await {
                        stats.dropped += 1;
                    }
                }
            }
        }
        stats
    }

    /// Makes sure `peer` holds every item of `items` (at least the version
    /// listed). `Ok(pushed)`, or `Err(failures)` if anything failed.
    pub(super) async fn sync_to(
        &self,
        peer: &Peer,
        items: &[(Id, ItemVersion)],
    ) -> Result<usize, usize> {
        let mut pushed = 0;
        let mut failures = 0;
        for chunk in items.chunks(MAX_BATCH) {
            let missing = match self
                .transport_call(
                    peer,
                    ReplicaRequest::Missing {
                        items: chunk.to_vec(),
                    },
                )
                .await
            {
                Ok(ReplicaResponse::Missing(m)) => m,
                _ => return Err(failures + 1),
            };
            let keys: Vec<Id> = missing
                .into_iter()
                .filter_map(|i| chunk.get(i as usize).map(|(k, _)| *k))
                .collect();
            let results: Vec<bool> = stream::iter(keys)
                .map(|k| self.push_item(peer, k))
                .buffer_unordered(PUSH_PARALLELISM)
                .collect()
                .await;
            for ok in results {
                if ok {
                    pushed += 1;
                } else {
                    failures += 1;
                }
            }
        }
        if failures > 0 {
            Err(failures)
        } else {
            Ok(pushed)
        }
    }

    /// Copies one local item to `peer`. An item that vanished locally (or was
    /// corrupt) counts as done: there is nothing to push.
    async fn push_item(&self, peer: &Peer, key: Id) -> bool {
        let store = Arc::clone(&self.store);
        let local = tokio::task::spawn_blocking(move || {
            if let Ok(Some(r)) = store.get_record(key) {
                return Some(ReplicaRequest::StoreRecord {
                    record: r,
                    expected_seq: None,
                    durable: true,
                });
            }
            match store.get_block(key) {
                Ok(Some(data)) => Some(ReplicaRequest::StoreBlock {
                    key,
                    data,
                    durable: true,
                }),
                _ => None,
            }
        })
        .await;
        let Ok(Some(req)) = local else {
            return true;
        };
        match self.transport_call(peer, req).await {
            Ok(ReplicaResponse::Stored) => true,
            // A newer version already there is as good as ours.
            Err(crate::dht::DhtError::Refused(crate::wire::RemoteError::Stale { .. })) => true,
            _ => false,
        }
    }

    /// Hands every held item to the first r successors (the nodes that hold
    /// this node's ranges once it is gone). `Ok(())` when each item reached
    /// at least one live successor and every reachable one has it.
    pub async fn hand_off(self: &Arc<Self>) -> Result<usize, String> {
        let items = self.store.items();
        if items.is_empty() {
            return Ok(0);
        }
        let succs: Vec<Peer> = self.ring.view(|c| c.succs().to_vec());
        let targets: Vec<Peer> = succs.into_iter().take(self.replicas.max(1)).collect();
        if targets.is_empty() {
            log::warn!(
                "last node of the ring: its {} items stay in its data directory",
                items.len()
            );
            return Ok(0);
        }
        let mut reached = 0;
        let mut pushed = 0;
        for t in &targets {
            match self.sync_to(t, &items).await {
                Ok(n) => {
                    reached += 1;
                    pushed += n;
                }
                Err(n) => log::warn!("hand-off to {t:?}: {n} items failed"),
            }
        }
        if reached == 0 {
            return Err("no successor accepted the hand-off".into());
        }
        Ok(pushed)
    }
}
