//! Storing an item on its replicas until enough copies exist.
//!
//! A put locates the key, then sends the item to the replica set: a block
//! or a record's first version under a fresh name to all members at once,
//! a compare-and-swap record version to the owner first (the owner orders
//! writers) and then to the rest. A durable compare-and-swap asks the
//! owner to judge without fsyncing, then sends the version durably to the
//! whole set, the owner included (which then only fsyncs what it holds),
//! so the owner's fsync runs alongside the others' rather than before
//! them; nothing counts as stored until it is durable. An ordered put
//! ([`Put::until_owner`], then [`Put::after`]) splits a lazy
//! compare-and-swap in two: the owner's verdict, which its writer waits
//! for, and the other members' copies, which follow in the background.
//! A member that fails is replaced by the
//! next node after the set. The put succeeds once as many distinct nodes
//! as [`RingView::copies_needed`](crate::chord::RingView::copies_needed)
//! asks (r, or the ring's size when this node knows the whole ring and it
//! is smaller) answered that they store the item.
//!
//! Short of that, the put waits (a deadline inside the machine, doubling
//! from [`Policy::backoff_min`](super::Policy)) and tries again with a
//! fresh lookup and the node's fresh view of the ring: a crashed member is
//! dropped by the ring within a few stabilize rounds, and then the copies
//! already stored count towards a smaller set. Re-sending is idempotent (a
//! node answers `Stored` for a version it holds). The put fails only at
//! its deadline, with [`DhtError::TooFewReplicas`] naming the last
//! reason, at once with a final refusal (bad hash or signature, a lost
//! compare-and-swap), or as soon as it is clear that every node it can
//! reach is out of space ([`DhtError::NoSpace`]).

use super::locate::{CacheUse, Locate};
use super::machine::{CallId, Cx, Machine, Millis};
use super::{DhtError, Placement};
use crate::id::Id;
use crate::record::Record;
use crate::rpc::{CallError, Reply, Rpc, StoreBlock, StoreRecord};
use crate::wire::{Claim, Peer, RemoteError};
use std::collections::{HashMap, VecDeque};
use std::sync::Arc;

/// What is being stored.
#[derive(Debug, Clone)]
pub enum Item {
    /// An immutable block under the hash of its bytes, with its owners'
    /// claims.
    Block {
        key: Id,
        data: bytes::Bytes,
        claims: Vec<Claim>,
    },
    /// A record version.
    Record {
        record: Arc<Record>,
        /// Compare-and-swap on the stored sequence number, judged by the
        /// owner (`Some(0)`: only if absent).
        expected_seq: Option<u64>,
        /// Whether the owner must judge first (an update) or all members
        /// may check at once (a first version under a fresh random name,
        /// `expected_seq == Some(0)`).
        owner_first: bool,
    },
}

impl Item {
    /// The item's DHT key.
    pub fn key(&self) -> Id {
        match self {
            Item::Block { key, .. } => *key,
            Item::Record { record, .. } => record.key(),
        }
    }

    fn owner_first(&self) -> bool {
        matches!(
            self,
            Item::Record {
                owner_first: true,
                ..
            }
        )
    }
}

/// What a successful put reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    /// The item's key.
    pub key: Id,
    /// Distinct nodes that answered that they store it.
    pub copies: u32,
    /// Those nodes.
    pub by: Vec<Peer>,
}

/// Where a put is.
#[derive(Debug)]
enum Phase {
    /// Not started.
    New,
    /// Finding the replica set.
    Locating(Box<Locate>),
    /// Waiting for the owner's compare-and-swap verdict.
    Owner,
    /// Waiting for the other members (and spares).
    Members,
    /// Pausing until the next attempt.
    Backoff(Millis),
}

/// A put in progress.
#[derive(Debug)]
pub struct Put {
    /// What to store.
    item: Item,
    /// Whether replicas fsync before answering.
    durable: bool,
    /// Whether the put ends once the owner took the version (see
    /// [`Put::until_owner`]).
    until_owner: bool,
    /// Where it is.
    phase: Phase,
    /// Attempts started (a fresh lookup each).
    attempt: u32,
    /// Give up at this time (set at the first step).
    deadline: Millis,
    /// Distinct nodes that stored the item, over all attempts.
    stored: Vec<Peer>,
    /// The current attempt's placement.
    placement: Option<Placement>,
    /// Nodes after the set still to try in place of failed members.
    spares: VecDeque<Peer>,
    /// Calls in flight: the node, and whether it is the owner's CAS call.
    pending: HashMap<CallId, Peer>,
    /// Replies not yet handled.
    replies: Vec<(CallId, Reply)>,
    /// Why the last call that failed failed.
    last: Option<String>,
    /// In this attempt: calls that failed for a passing reason (a retry
    /// may succeed), and refusals for lack of space.
    transient: usize,
    no_space: usize,
    /// The final refusal, if any.
    refused: Option<CallError>,
}

impl Put {
    /// A put of `item`; with `durable`, every replica fsyncs before it
    /// answers.
    pub fn new(item: Item, durable: bool) -> Put {
        Put {
            item,
            durable,
            until_owner: false,
            phase: Phase::New,
            attempt: 0,
            deadline: 0,
            stored: Vec::new(),
            placement: None,
            spares: VecDeque::new(),
            pending: HashMap::new(),
            replies: Vec::new(),
            last: None,
            transient: 0,
            no_space: 0,
            refused: None,
        }
    }

    /// The first half of an ordered put: a compare-and-swap record version
    /// sent lazily to its owner alone, done once the owner took it. The
    /// version's place among its writers' versions is then decided; the
    /// other members get it from [`Put::after`].
    pub fn until_owner(item: Item) -> Put {
        debug_assert!(item.owner_first(), "only an update has an owner's verdict");
        Put {
            until_owner: true,
            ..Put::new(item, false)
        }
    }

    /// The second half of an ordered put: `item`, which the nodes `by`
    /// (the owner) already store, sent lazily to the rest of its set.
    pub fn after(item: Item, by: Vec<Peer>) -> Put {
        Put {
            stored: by,
            ..Put::new(item, false)
        }
    }

    /// Copies the put needs.
    fn needed(&self, cx: &Cx<'_>) -> usize {
        if self.until_owner {
            1
        } else {
            cx.view.copies_needed(cx.replicas)
        }
    }

    /// Whether the owner's compare-and-swap call of a durable put is sent
    /// without durability: the owner then judges and keeps the version at
    /// once, and is asked again, durably, with the other members, so its
    /// fsync overlaps theirs instead of coming first.
    fn owner_judges_first(&self) -> bool {
        self.durable && self.item.owner_first()
    }

    /// The store call to `to`; `cas` carries the compare-and-swap.
    fn send(&mut self, to: &Peer, cas: bool, cx: &mut Cx<'_>) {
        let judging = cas && self.owner_judges_first();
        let durable = self.durable && !judging;
        let id = match &self.item {
            Item::Block { key, data, claims } => cx.call(
                to,
                StoreBlock {
                    key: *key,
                    data: data.clone(),
                    claims: claims.clone(),
                    durable,
                },
            ),
            Item::Record {
                record,
                expected_seq,
                owner_first,
            } => cx.call_with(
                to,
                StoreRecord {
                    // A copy shares the value's bytes.
                    record: Record::clone(record),
                    // Replicas after the owner take the version the owner
                    // accepted; all-at-once puts check at every member.
                    expected_seq: if cas || !owner_first {
                        *expected_seq
                    } else {
                        None
                    },
                    durable,
                },
                // The durable call that follows covers it.
                !judging,
            ),
        };
        self.pending.insert(id, to.clone());
    }

    fn has_stored(&self, p: &Peer) -> bool {
        self.stored.iter().any(|q| q.id == p.id)
    }

    /// Starts an attempt on `p`.
    fn start_storing(&mut self, p: Placement, cx: &mut Cx<'_>) {
        let set = p.replicas(cx.replicas);
        self.spares = p
            .spares(cx.replicas)
            .into_iter()
            .filter(|s| !self.has_stored(s))
            .collect();
        self.transient = 0;
        self.no_space = 0;
        self.placement = Some(p);
        if self.item.owner_first() && !self.has_stored(&set[0]) {
            self.send(&set[0], true, cx);
            self.phase = Phase::Owner;
            return;
        }
        self.send_rest(cx);
    }

    /// Sends to every member of the set that has not stored yet.
    fn send_rest(&mut self, cx: &mut Cx<'_>) {
        let set = self
            .placement
            .as_ref()
            .map(|p| p.replicas(cx.replicas))
            .unwrap_or_default();
        for m in set {
            if !self.has_stored(&m) {
                self.send(&m, false, cx);
            }
        }
        self.phase = Phase::Members;
    }

    fn note_failure(&mut self, peer: &Peer, e: &CallError) {
        if e.is_no_space() {
            self.no_space += 1;
        } else {
            self.transient += 1;
        }
        self.last = Some(format!("{}: {e}", peer.addr));
    }

    /// Ends the attempt: done, or a pause before the next.
    fn end_attempt(&mut self, cx: &mut Cx<'_>) -> Option<Result<Stored, DhtError>> {
        let needed = self.needed(cx);
        if self.stored.len() >= needed {
            log::debug!(
                "{} stored on {} (attempt {}, placement {})",
                self.item.key().short(),
                self.stored
                    .iter()
                    .map(|p| p.addr.to_string())
                    .collect::<Vec<_>>()
                    .join(", "),
                self.attempt,
                if self.placement.as_ref().is_some_and(|p| p.cached) {
                    "cached"
                } else {
                    "located"
                }
            );
            return Some(Ok(Stored {
                key: self.item.key(),
                copies: self.stored.len() as u32,
                by: std::mem::take(&mut self.stored),
            }));
        }
        // Every node we could try refused for space and none failed for a
        // passing reason: waiting will not help.
        if self.no_space > 0 && self.transient == 0 && self.spares.is_empty() {
            return Some(Err(DhtError::NoSpace(
                self.last.clone().unwrap_or_default(),
            )));
        }
        let wait = cx.policy.backoff(self.attempt);
        if cx.now + wait >= self.deadline {
            let last = self.last.clone().unwrap_or_else(|| {
                format!(
                    "the ring offered {} of the {needed} nodes needed",
                    self.stored.len()
                )
            });
            if self.no_space > 0 {
                return Some(Err(DhtError::NoSpace(last)));
            }
            return Some(Err(DhtError::TooFewReplicas {
                stored: self.stored.len() as u32,
                wanted: needed as u32,
                last,
            }));
        }
        self.phase = Phase::Backoff(cx.now + wait);
        cx.wake_at(cx.now + wait);
        None
    }

    fn start_attempt(&mut self, cx: &mut Cx<'_>) -> Option<Result<Stored, DhtError>> {
        self.attempt += 1;
        // First attempts may place new items from derived ranges; an
        // update asks its confirmed owner; retries ask the ring afresh.
        let cache = match (self.attempt, self.item.owner_first()) {
            (1, false) => CacheUse::Any,
            (1, true) => CacheUse::Confirmed,
            _ => CacheUse::Fresh,
        };
        self.phase = Phase::Locating(Box::new(Locate::new(self.item.key(), cache)));
        self.step_locate(cx)
    }

    fn step_locate(&mut self, cx: &mut Cx<'_>) -> Option<Result<Stored, DhtError>> {
        let Phase::Locating(l) = &mut self.phase else {
            return None;
        };
        match l.step(cx)? {
            Ok(p) => {
                self.start_storing(p, cx);
                if self.pending.is_empty() {
                    // Every member of this set stored it already.
                    return self.end_attempt(cx);
                }
                None
            }
            Err(e) => {
                self.transient += 1;
                self.last = Some(format!("lookup: {e}"));
                self.end_attempt(cx)
            }
        }
    }
}

impl Machine for Put {
    type Output = Result<Stored, DhtError>;

    fn on_reply(&mut self, id: CallId, reply: Reply) {
        if let Phase::Locating(l) = &mut self.phase {
            l.on_reply(id, reply);
        } else if self.pending.contains_key(&id) {
            self.replies.push((id, reply));
        }
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Option<Self::Output> {
        match self.phase {
            Phase::New => {
                self.deadline = cx.now + cx.policy.put_deadline;
                return self.start_attempt(cx);
            }
            Phase::Locating(_) => return self.step_locate(cx),
            Phase::Backoff(until) => {
                if cx.now >= until {
                    return self.start_attempt(cx);
                }
                cx.wake_at(until);
                return None;
            }
            Phase::Owner | Phase::Members => {}
        }
        for (id, reply) in std::mem::take(&mut self.replies) {
            let Some(peer) = self.pending.remove(&id) else {
                continue;
            };
            let owner_call = matches!(self.phase, Phase::Owner);
            let r = StoreRecord::parse(reply);
            match r {
                // A member after the owner already holds a newer version:
                // the owner accepted this one first, so that one was
                // ordered after it and carries it on (the member got the
                // two out of order). The copy counts.
                Err(CallError::Refused(RemoteError::Stale { offered, current }))
                    if !owner_call && self.item.owner_first() && current > offered =>
                {
                    if !self.has_stored(&peer) {
                        self.stored.push(peer);
                    }
                }
                Ok(()) => {
                    // An owner that judged without fsyncing counts once
                    // it answers the durable call `send_rest` sends it.
                    let counts = !(owner_call && self.owner_judges_first());
                    if counts && !self.has_stored(&peer) {
                        self.stored.push(peer);
                    }
                    if owner_call && !self.until_owner {
                        self.send_rest(cx);
                    }
                }
                Err(e) if e.is_final() && (owner_call || self.stored.is_empty()) => {
                    self.refused = Some(e);
                }
                // A first version stored at every member at once that one
                // of them refuses as taken: another writer's version was
                // there first (the owner decides which). Final, so the
                // writer reloads and keeps its own as a conflict copy;
                // the other writer's version, numbered above the first,
                // replaces what this one left on the others.
                Err(e @ CallError::Refused(RemoteError::Conflict { .. }))
                    if !self.item.owner_first() =>
                {
                    self.refused = Some(e);
                }
                Err(e) => {
                    self.note_failure(&peer, &e);
                    if owner_call {
                        // Without the owner's verdict nothing may be sent
                        // on: look the owner up again.
                        self.pending.clear();
                        return self.end_attempt(cx);
                    }
                    if let Some(s) = self.spares.pop_front() {
                        self.send(&s, false, cx);
                    }
                }
            }
        }
        if let Some(CallError::Refused(e)) = self.refused.take() {
            return Some(Err(DhtError::Refused(e)));
        }
        if self.pending.is_empty() {
            return self.end_attempt(cx);
        }
        None
    }
}
