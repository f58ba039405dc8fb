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
    /// hold this node's ranges once it is gone). `Ok` when at least one
    /// live successor took everything, or when there is none (the last
    /// node, whose items stay in its data directory).
    pub async fn hand_off(self: &Arc<Self>) -> Result<HandedOff, super::LeaveError> {
        let items = self.core.store.items();
        if items.is_empty() {
            return Ok(HandedOff::Copied(0));
        }
        let s = self.dht.run(HandOff::new(items.clone())).await;
        if s.targets == 0 {
            return Ok(HandedOff::NoSuccessor(items.len()));
        }
        for r in &s.reasons {
            log::warn!("hand-off: {r}");
        }
        if s.reached == 0 {
            return Err(super::LeaveError::HandOff(s.reasons.join("; ")));
        }
        Ok(HandedOff::Copied(s.pushed))
    }
}

/// What a hand-off did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HandedOff {
    /// Copied this many items the successors lacked.
    Copied(usize),
    /// No successor: the ring's last node keeps its items (this many).
    NoSuccessor(usize),
}

impl HandedOff {
    /// Items copied.
    pub fn copied(self) -> usize {
        match self {
            HandedOff::Copied(n) => n,
            HandedOff::NoSuccessor(_) => 0,
        }
    }
}
