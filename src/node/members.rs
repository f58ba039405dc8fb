//! Who may make replica requests: ring members only.
//!
//! A replica request (store, fetch, missing, prove) acts on this node's
//! own store, so it is accepted only from a node the ring knows: one
//! of this node's neighbours or fingers, or a node whose ID the ring routes
//! to itself (a lookup of the caller's ID, checked like every lookup, finds
//! the caller as the owner). Client links use throwaway keys, whose IDs
//! are no ring member's; they must go through `ClientRequest`s, which the
//! node routes. Verified callers are remembered for [`MEMBER_TTL`]. A
//! `Sync` (fsync what is already stored) is accepted from any node of the
//! network.

use super::Node;
use crate::dht::Millis;
use crate::id::Id;
use crate::wire::RemoteError;
use std::collections::HashMap;
use std::sync::Mutex;

/// How long a verified member is believed without asking again.
const MEMBER_TTL: Millis = 60_000;
/// Verified members remembered at most.
const MAX_MEMBERS: usize = 4096;

/// Recently verified ring members.
#[derive(Default)]
pub struct Members {
    /// Member ID → when verified. A std mutex, never held across an await.
    verified: Mutex<HashMap<Id, Millis>>,
}

impl Members {
    fn fresh(&self, id: Id, now: Millis) -> bool {
        let v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        v.get(&id)
            .is_some_and(|&at| now.saturating_sub(at) < MEMBER_TTL)
    }

    fn insert(&self, id: Id, now: Millis) {
        let mut v = self.verified.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= MAX_MEMBERS {
            v.retain(|_, at| now.saturating_sub(*at) < MEMBER_TTL);
            if v.len() >= MAX_MEMBERS {
                v.clear();
            }
        }
        v.insert(id, now);
    }
}

impl Node {
    /// `Ok` if `id` is a ring member; `NotMember` if the ring places its ID
    /// at another node; `Busy` if that cannot be told now.
    pub(super) async fn check_member(&self, id: Id) -> Result<(), RemoteError> {
        let core = &self.core;
        let now = core.now();
        let view = core.ring.view(|c| c.view());
        if core.members.fresh(id, now) {
            return Ok(());
        }
        if view.knows(id) || view.fingers.iter().any(|p| p.id == id) {
            // Remembered, so a neighbour that is leaving may still hand
            // its items over once it is out of our lists.
            core.members.insert(id, now);
            return Ok(());
        }
        match self.dht.locate(id).await {
            Ok(p) if p.owner.id == id => {
                core.members.insert(id, core.now());
                Ok(())
            }
            Ok(p) => Err(RemoteError::NotMember(format!(
                "node {} is not a ring member (the ring places its ID at node {})",
                id.short(),
                p.owner.id.short()
            ))),
            Err(e) => {
                log::debug!("cannot tell whether {} is a member: {e}", id.short());
                Err(RemoteError::Busy)
            }
        }
    }
}
