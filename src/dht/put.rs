//! Storing an item on its replicas until enough copies exist.
//!
//! A put locates the key, then sends the item to every member of the
//! replica set at once. A block or a record's first version under a fresh
//! name needs no ordering. A record update is a compare-and-swap that the
//! key's owner judges (it orders writers): the owner gets the swap, the
//! other members at the same time a copy that they check the same way
//! (`StoreRecordCopy`: kept only if they hold the version the swap
//! expects), so an update costs one round, fsyncs included. The owner's
//! verdict decides: a copy counts only once the owner accepted, and a
//! member that refused its copy because it held another version (it
//! lagged, or a losing writer's copy reached it first) is then sent the
//! accepted version plainly, to keep beside what it holds. If the owner
//! refuses, the put fails with its refusal; the copies a member took are
//! of a version that lost, which the losing writer's next version
//! replaces (it merges and writes again). With `durable`, nothing counts
//! as stored until it is durable. A member that fails is replaced by the
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
use crate::rpc::{CallError, Reply, Rpc, StoreBlock, StoreRecord, StoreRecordCopy};
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
        data: Arc<Vec<u8>>,
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
}

/// Where a put is.
#[derive(Debug)]
enum Phase {
    /// Not started.
    New,
    /// Finding the replica set.
    Locating(Box<Locate>),
    /// Waiting for the members (and spares).
    Storing,
    /// Pausing until the next attempt.
    Backoff(Millis),
}

/// How a member is asked to store a record version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ask {
    /// The owner judging an update's compare-and-swap, or any member
    /// checking that a fresh name is absent.
    Judge,
    /// A member beside the owner, checking the same compare-and-swap
    /// without judging (counted once the owner accepted).
    Beside,
    /// A member taking the version the owner accepted.
    Follow,
}

/// A put in progress.
#[derive(Debug)]
pub struct Put {
    /// What to store.
    item: Item,
    /// Whether replicas fsync before answering.
    durable: bool,
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
    /// Calls in flight: the node, and how it was asked.
    pending: HashMap<CallId, (Peer, Ask)>,
    /// The owner's compare-and-swap call of this attempt, while its
    /// verdict is awaited.
    owner_call: Option<CallId>,
    /// Refusals of members beside the owner, held until its verdict.
    held: Vec<(Peer, Ask, CallError)>,
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
            phase: Phase::New,
            attempt: 0,
            deadline: 0,
            stored: Vec::new(),
            placement: None,
            spares: VecDeque::new(),
            pending: HashMap::new(),
            owner_call: None,
            held: Vec::new(),
            replies: Vec::new(),
            last: None,
            transient: 0,
            no_space: 0,
            refused: None,
        }
    }

    /// The store call to `to`, asked as `ask` (records; a block is
    /// stored alike by every member).
    fn send(&mut self, to: &Peer, ask: Ask, cx: &mut Cx<'_>) -> CallId {
        let durable = self.durable;
        let id = match &self.item {
            Item::Block { key, data, claims } => cx.call(
                to,
                StoreBlock {
                    key: *key,
                    data: Arc::clone(data),
                    claims: claims.clone(),
                    durable,
                },
            ),
            Item::Record {
                record,
                expected_seq,
                ..
            } => match (ask, *expected_seq) {
                (Ask::Beside, Some(e)) => cx.call(
                    to,
                    StoreRecordCopy {
                        record: Record::clone(record),
                        expected_seq: e,
                        durable,
                    },
                ),
                (ask, expected_seq) => cx.call(
                    to,
                    StoreRecord {
                        record: Record::clone(record),
                        // A follower takes the version the owner accepted.
                        expected_seq: if ask == Ask::Follow {
                            None
                        } else {
                            expected_seq
                        },
                        durable,
                    },
                ),
            },
        };
        self.pending.insert(id, (to.clone(), ask));
        id
    }

    fn has_stored(&self, p: &Peer) -> bool {
        self.stored.iter().any(|q| q.id == p.id)
    }

    /// Starts an attempt on `p`: sends to every member that has not
    /// stored yet, an update's owner its compare-and-swap and the others
    /// their copies, unless the owner holds the version already (from an
    /// earlier attempt): then the others simply take it.
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
        self.owner_call = None;
        self.held.clear();
        self.phase = Phase::Storing;
        let update = self.item.owner_first();
        let judged = update && !set.first().is_some_and(|o| self.has_stored(o));
        for (i, m) in set.iter().enumerate() {
            if self.has_stored(m) {
                continue;
            }
            let ask = match (update, judged, i) {
                (false, _, _) => Ask::Judge,
                (true, true, 0) => Ask::Judge,
                (true, true, _) => Ask::Beside,
                (true, false, _) => Ask::Follow,
            };
            let id = self.send(m, ask, cx);
            if update && ask == Ask::Judge {
                self.owner_call = Some(id);
            }
        }
    }

    /// A member's refusal or failure, once no verdict is awaited: a
    /// copy refused for holding another version is sent the accepted
    /// version plainly; a member holding a later version counts; a final
    /// refusal of a fresh name ends the put; anything else moves on to
    /// a spare.
    fn member_failed(&mut self, peer: Peer, ask: Ask, e: CallError, cx: &mut Cx<'_>) {
        let update = self.item.owner_first();
        match e {
            // A member already holds a newer version: the owner accepted
            // this one first, so that one was ordered after it and
            // carries it on (the member got the two out of order). The
            // copy counts.
            CallError::Refused(RemoteError::Stale { offered, current })
                if update && current > offered =>
            {
                if !self.has_stored(&peer) {
                    self.stored.push(peer);
                }
            }
            // A copy beside the owner found another version held (the
            // member lagged, or a losing writer's copy came first): it
            // takes the accepted one beside what it holds.
            CallError::Refused(RemoteError::Conflict { .. }) if ask == Ask::Beside => {
                self.send(&peer, Ask::Follow, cx);
            }
            e if e.is_final() && self.stored.is_empty() => self.refused = Some(e),
            // A first version stored at every member at once that one of
            // them refuses as taken: another writer's version was there
            // first (the owner decides which). Final, so the writer
            // reloads and keeps its own as a conflict copy; the other
            // writer's version, numbered above the first, replaces what
            // this one left on the others.
            e @ CallError::Refused(RemoteError::Conflict { .. }) if !update => {
                self.refused = Some(e);
            }
            e => {
                self.note_failure(&peer, &e);
                if let Some(s) = self.spares.pop_front() {
                    let ask = if update { Ask::Follow } else { Ask::Judge };
                    self.send(&s, ask, cx);
                }
            }
        }
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
        let needed = cx.view.copies_needed(cx.replicas);
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
            }));
        }
        self.retry(cx)
    }

    /// Pauses before the next attempt, or fails: at once if every node
    /// tried is out of space, else once the deadline is near.
    fn retry(&mut self, cx: &mut Cx<'_>) -> Option<Result<Stored, DhtError>> {
        let needed = cx.view.copies_needed(cx.replicas);
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
            Phase::Storing => {}
        }
        for (id, reply) in std::mem::take(&mut self.replies) {
            let Some((peer, ask)) = self.pending.remove(&id) else {
                continue;
            };
            let verdict = self.owner_call == Some(id);
            if verdict {
                self.owner_call = None;
            }
            match StoreRecord::parse(reply) {
                Ok(()) => {
                    if !self.has_stored(&peer) {
                        self.stored.push(peer);
                    }
                    if verdict {
                        for (p, a, e) in std::mem::take(&mut self.held) {
                            self.member_failed(p, a, e, cx);
                        }
                    }
                }
                Err(e) if verdict && e.is_final() => self.refused = Some(e),
                Err(e) if verdict => {
                    // Without the owner's verdict the attempt ends, however
                    // many copies it has: look the owner up again.
                    self.note_failure(&peer, &e);
                    self.pending.clear();
                    self.held.clear();
                    return self.retry(cx);
                }
                Err(e) if self.owner_call.is_some() => self.held.push((peer, ask, e)),
                Err(e) => self.member_failed(peer, ask, e, cx),
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
