//! The dashboard's survey of the ring: every [`SURVEY_EVERY`] the node
//! asks each member it knows of (its own successor list, predecessor and
//! fingers, the successor lists members report, and every member seen
//! before) for its health, at most [`MAX_MEMBERS`] of them, each call
//! bounded by [`PROBE_TIMEOUT`]. A member whose last probe failed is
//! suspected down; one down for [`FORGET_AFTER`] is dropped.

use crate::id::Id;
use crate::node::Node;
use crate::rpc::{ClientHealth, call};
use crate::wire::{Health, Peer};
use futures::stream::{self, StreamExt};
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::watch;

/// How often the members are asked.
pub const SURVEY_EVERY: Duration = Duration::from_secs(2);
/// How long one member has to answer.
pub const PROBE_TIMEOUT: Duration = Duration::from_millis(1500);
/// Members surveyed at most (the picture of a larger ring shows these).
pub const MAX_MEMBERS: usize = 128;
/// Members asked at once.
const PARALLEL: usize = 16;
/// A member down this long is no longer shown.
pub const FORGET_AFTER: Duration = Duration::from_secs(600);

/// One member as the survey last saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub peer: Peer,
    /// Its last answer (kept while it is down).
    pub health: Option<Health>,
    /// Whether its last probe was answered.
    pub up: bool,
    /// When it last answered.
    pub last_ok: Option<Instant>,
    /// Since when it has not answered (while down).
    pub down_since: Option<Instant>,
}

/// The members known, by ID.
#[derive(Default)]
pub struct Survey {
    members: Mutex<BTreeMap<Id, Seen>>,
}

impl Survey {
    /// The members as last surveyed, in ring order.
    pub fn members(&self) -> Vec<Seen> {
        self.lock().values().cloned().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<Id, Seen>> {
        self.members.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// One round: this node's own health, then every other member's.
    pub async fn round(&self, node: &Arc<Node>) {
        let mine = node.health();
        let me = mine.info.me.clone();
        let mut candidates: BTreeMap<Id, Peer> = BTreeMap::new();
        let mut add = |p: &Peer| {
            if p.id != me.id && candidates.len() < MAX_MEMBERS {
                candidates.entry(p.id).or_insert_with(|| p.clone());
            }
        };
        let info = &mine.info;
        for p in info.succs.iter().chain(&info.pred).chain(&info.fingers) {
            add(p);
        }
        for s in self.lock().values() {
            add(&s.peer);
            if let Some(h) = s.health.as_ref().filter(|_| s.up) {
                for p in h.info.succs.iter().chain(&h.info.pred) {
                    add(p);
                }
            }
        }
        let pool = &node.core.pool;
        let answers: Vec<(Peer, Option<Health>)> = stream::iter(candidates.into_values())
            .map(|p| async move {
                let h = tokio::time::timeout(PROBE_TIMEOUT, call(pool, &p, ClientHealth))
                    .await
                    .ok()
                    .and_then(|r| r.ok())
                    // A member answers for itself only.
                    .filter(|h| h.info.me.id == p.id);
                (p, h)
            })
            .buffer_unordered(PARALLEL)
            .collect()
            .await;
        let now = Instant::now();
        let mut members = self.lock();
        members.insert(
            me.id,
            Seen {
                peer: me,
                health: Some(mine),
                up: true,
                last_ok: Some(now),
                down_since: None,
            },
        );
        for (peer, health) in answers {
            let seen = members.entry(peer.id).or_insert_with(|| Seen {
                peer: peer.clone(),
                health: None,
                up: false,
                last_ok: None,
                down_since: None,
            });
            seen.peer = peer;
            match health {
                Some(h) => {
                    seen.health = Some(h);
                    seen.up = true;
                    seen.last_ok = Some(now);
                    seen.down_since = None;
                }
                None => {
                    seen.up = false;
                    seen.down_since.get_or_insert(now);
                }
            }
        }
        members.retain(|_, s| s.down_since.is_none_or(|d| now - d < FORGET_AFTER));
    }

    /// Surveys every [`SURVEY_EVERY`] until `stop`.
    pub async fn run(self: Arc<Self>, node: Arc<Node>, mut stop: watch::Receiver<bool>) {
        loop {
            self.round(&node).await;
            tokio::select! {
                _ = tokio::time::sleep(SURVEY_EVERY) => {}
                _ = stop.changed() => {}
            }
            if *stop.borrow() {
                return;
            }
        }
    }
}
