//! The node's repair passes and its hand-off on leave: the machines of
//! [`crate::dht::repair`] run over the node's own store snapshot.

use super::Node;
use crate::dht::repair::{HandOff, RepairPass, RepairStats};
use std::sync::Arc;

impl Node {
    /// One repair pass over everything this node holds.
    pub async fn repair_pass(self: &Arc<Self>) -> RepairStats {
        let items = self.core.store.items();
        if items.is_empty() {
            return RepairStats::default();
        }
        self.dht.run(RepairPass::new(items, rand::random())).await
    }

    /// Hands every held item to the first r successors (the nodes that
    /// hold this node's ranges once it is gone). `Ok(copied)` when at least
    /// one live successor took everything (or this is the last node, whose
    /// items stay in its data directory).
    pub async fn hand_off(self: &Arc<Self>) -> Result<usize, super::LeaveError> {
        let items = self.core.store.items();
        if items.is_empty() {
            return Ok(0);
        }
        let s = self.dht.run(HandOff::new(items.clone())).await;
        if s.targets == 0 {
            // Said once: a leaving node hands off before and after it
            // leaves, and the last one finds no successor either time.
            static SAID: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);
            if !SAID.swap(true, std::sync::atomic::Ordering::Relaxed) {
                log::warn!(
                    "last node of the ring: its {} items stay in its data directory",
                    items.len()
                );
            }
            return Ok(0);
        }
        for r in &s.reasons {
            log::warn!("hand-off: {r}");
        }
        if s.reached == 0 {
            return Err(super::LeaveError::HandOff(s.reasons.join("; ")));
        }
        Ok(s.pushed)
    }
}
