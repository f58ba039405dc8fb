//! Reading an item from its replicas, telling "absent" from "unreachable".
//!
//! A block read asks one node at a time: this node first when it is a
//! replica, then the owner and the rest of the set, then the nodes after
//! it. Every block is re-hashed; a copy that does not match is skipped. A
//! record read asks the whole set at once and keeps the newest version
//! that verifies, then the nodes after the set if none had it (a put may
//! have placed it there: in place of a member that failed, or from a range
//! this node derived before a new node joined in front of them).
//!
//! A get answers [`DhtError::NotFound`] only when every member of a replica
//! set this node located afresh (not from the cache) answered that it does
//! not hold the item (and, for a record, none of the nodes after it had it). If some member failed to answer, the get waits and
//! tries again with a fresh lookup until its deadline, and then fails with
//! [`DhtError::Unavailable`]: data that exists but cannot be reached must
//! never read as absent.

use super::locate::{CacheUse, Locate};
use super::machine::{CallId, Cx, Machine, Millis};
use super::{DhtError, Placement};
use crate::id::Id;
use crate::record::Record;
use crate::rpc::{CallError, FetchBlock, FetchRecord, Reply, Rpc};
use crate::wire::{Claim, Peer};
use std::collections::{HashMap, HashSet, VecDeque};

/// What is being read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Want {
    Block,
    Record,
}

/// What a get returns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Got {
    /// A block and its owners' claims (as the node that answered keeps them).
    Block(Vec<u8>, Vec<Claim>),
    /// A record's versions that no other version seen replaces, head
    /// first (one, unless concurrent versions wait for a merge).
    Record(Vec<Record>),
}

/// Where a get is.
#[derive(Debug)]
enum Phase {
    New,
    Locating(Box<Locate>),
    /// Asking the set (and then the spares).
    Asking,
    Backoff(Millis),
}

/// A get in progress.
#[derive(Debug)]
pub struct Get {
    key: Id,
    want: Want,
    phase: Phase,
    attempt: u32,
    deadline: Millis,
    /// The current attempt's placement.
    placement: Option<Placement>,
    /// Replica set members of this attempt (IDs).
    set: Vec<Id>,
    /// Nodes still to ask, in order (block reads ask one at a time).
    order: VecDeque<Peer>,
    /// Whether the spares were added to a record read already.
    asked_spares: bool,
    /// Set members that answered "not held" in this attempt.
    absent: HashSet<Id>,
    /// The record versions seen in this attempt that no other replaces.
    best: Vec<Record>,
    /// Calls in flight.
    pending: HashMap<CallId, Peer>,
    replies: Vec<(CallId, Reply)>,
    /// What went wrong, per node, in the last attempt.
    failures: Vec<String>,
}

impl Want {
    fn noun(self) -> &'static str {
        match self {
            Want::Block => "block",
            Want::Record => "record",
        }
    }
}

impl Get {
    /// A read of `key`.
    pub fn new(key: Id, want: Want) -> Get {
        Get {
            key,
            want,
            phase: Phase::New,
            attempt: 0,
            deadline: 0,
            placement: None,
            set: Vec::new(),
            order: VecDeque::new(),
            asked_spares: false,
            absent: HashSet::new(),
            best: Vec::new(),
            pending: HashMap::new(),
            replies: Vec::new(),
            failures: Vec::new(),
        }
    }

    fn start_attempt(&mut self, cx: &mut Cx<'_>) -> Option<Result<Got, DhtError>> {
        self.attempt += 1;
        let cache = if self.attempt == 1 {
            CacheUse::Confirmed
        } else {
            CacheUse::Fresh
        };
        self.placement = None;
        self.phase = Phase::Locating(Box::new(Locate::new(self.key, cache)));
        self.step_locate(cx)
    }

    /// Looks the key up again at once (a cached answer led nowhere).
    fn relocate_now(&mut self, cx: &mut Cx<'_>) -> Option<Result<Got, DhtError>> {
        cx.routes.forget_key(self.key);
        self.placement = None;
        self.phase = Phase::Locating(Box::new(Locate::new(self.key, CacheUse::Fresh)));
        self.step_locate(cx)
    }

    fn step_locate(&mut self, cx: &mut Cx<'_>) -> Option<Result<Got, DhtError>> {
        let Phase::Locating(l) = &mut self.phase else {
            return None;
        };
        match l.step(cx)? {
            Ok(p) => {
                self.start_asking(p, cx);
                self.step_asking(cx)
            }
            Err(e) => {
                self.failures = vec![format!("lookup: {e}")];
                self.end_attempt(false, cx)
            }
        }
    }

    fn start_asking(&mut self, p: Placement, cx: &mut Cx<'_>) {
        let set = p.replicas(cx.replicas);
        self.set = set.iter().map(|q| q.id).collect();
        self.absent.clear();
        self.best.clear();
        self.failures.clear();
        self.asked_spares = false;
        let mut order: VecDeque<Peer> = set.into_iter().collect();
        // A replica in this very node answers without a network hop.
        if let Some(i) = order.iter().position(|q| cx.is_me(q))
            && let Some(me) = order.remove(i)
        {
            order.push_front(me);
        }
        if self.want == Want::Block {
            order.extend(p.spares(cx.replicas));
        }
        self.order = order;
        self.placement = Some(p);
        self.phase = Phase::Asking;
        if self.want == Want::Record {
            // Records are small: ask the whole set at once.
            while let Some(q) = self.order.pop_front() {
                self.ask(&q, cx);
            }
        }
    }

    fn ask(&mut self, p: &Peer, cx: &mut Cx<'_>) {
        let id = match self.want {
            Want::Block => cx.call(p, FetchBlock(self.key)),
            Want::Record => cx.call(p, FetchRecord(self.key)),
        };
        self.pending.insert(id, p.clone());
    }

    /// Notes one answer; the block, if it is the answer.
    fn take(&mut self, peer: Peer, reply: Reply) -> Option<(Vec<u8>, Vec<Claim>)> {
        let fail = |s: &mut Self, e: CallError| {
            if e.is_not_found() {
                s.absent.insert(peer.id);
            }
            s.failures.push(format!("{}: {e}", peer.addr));
        };
        match self.want {
            Want::Block => match FetchBlock::parse(reply) {
                Ok((d, c)) if self.key.names(&d) => return Some((d, c)),
                Ok(_) => {
                    log::warn!(
                        "block {} from {:?} does not match its hash; trying the next replica",
                        self.key.short(),
                        peer
                    );
                    self.failures.push(format!("{}: corrupt copy", peer.addr));
                }
                Err(e) => fail(self, e),
            },
            Want::Record => match FetchRecord::parse(reply) {
                Ok(versions) => {
                    for r in versions {
                        if !self.note_version(r) {
                            log::warn!(
                                "record {} from {:?} does not verify; ignoring it",
                                self.key.short(),
                                peer
                            );
                            self.failures.push(format!("{}: forged copy", peer.addr));
                            break;
                        }
                    }
                }
                Err(e) => fail(self, e),
            },
        }
        None
    }

    /// Adds record version `r` to those seen unless one seen replaces it;
    /// drops those it replaces. Only a version that would be kept is
    /// verified (one signature check per read, not one per replica).
    /// `false` if it is forged.
    fn note_version(&mut self, r: Record) -> bool {
        use crate::record::VersionOrder;
        if r.key() != self.key {
            return false;
        }
        if self
            .best
            .iter()
            .any(|b| matches!(r.order(b), VersionOrder::Same | VersionOrder::Older))
        {
            return true;
        }
        if r.verify().is_err() {
            return false;
        }
        self.best.retain(|b| r.order(b) != VersionOrder::Newer);
        self.best.push(r);
        true
    }

    fn step_asking(&mut self, cx: &mut Cx<'_>) -> Option<Result<Got, DhtError>> {
        for (id, reply) in std::mem::take(&mut self.replies) {
            if let Some(peer) = self.pending.remove(&id)
                && let Some((d, c)) = self.take(peer, reply)
            {
                self.pending.clear();
                return Some(Ok(Got::Block(d, c)));
            }
        }
        if !self.pending.is_empty() {
            return None;
        }
        if !self.best.is_empty() {
            let mut versions = std::mem::take(&mut self.best);
            crate::store::order_versions(&mut versions);
            return Some(Ok(Got::Record(versions)));
        }
        if self.want == Want::Block
            && let Some(q) = self.order.pop_front()
        {
            self.ask(&q, cx);
            return None;
        }
        let all_absent = self.set.iter().all(|id| self.absent.contains(id));
        if self.want == Want::Record && !self.asked_spares {
            // Some member did not answer, or none holds it: the nodes after
            // the set may hold a copy a put placed there instead (in place
            // of a member that failed, or from a range this node derived
            // before a new node joined in front of them).
            self.asked_spares = true;
            let spares = self
                .placement
                .as_ref()
                .map(|p| p.spares(cx.replicas))
                .unwrap_or_default();
            for q in spares {
                self.ask(&q, cx);
            }
            if !self.pending.is_empty() {
                return None;
            }
        }
        self.end_attempt(all_absent, cx)
    }

    fn end_attempt(&mut self, all_absent: bool, cx: &mut Cx<'_>) -> Option<Result<Got, DhtError>> {
        let cached = self.placement.as_ref().is_some_and(|p| p.cached);
        if all_absent && !cached {
            log::debug!(
                "{} {} absent: {}",
                self.want.noun(),
                self.key.short(),
                self.failures.join("; ")
            );
            return Some(Err(DhtError::NotFound));
        }
        if cached {
            // The cached answer led nowhere: ask the ring now.
            return self.relocate_now(cx);
        }
        let wait = cx.policy.backoff(self.attempt);
        if cx.now + wait >= self.deadline {
            return Some(Err(DhtError::Unavailable(format!(
                "{} {} could not be read: {}",
                self.want.noun(),
                self.key.short(),
                self.failures.join("; ")
            ))));
        }
        self.phase = Phase::Backoff(cx.now + wait);
        cx.wake_at(cx.now + wait);
        None
    }
}

impl Machine for Get {
    type Output = Result<Got, DhtError>;

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
                self.deadline = cx.now + cx.policy.get_deadline;
                self.start_attempt(cx)
            }
            Phase::Locating(_) => self.step_locate(cx),
            Phase::Asking => self.step_asking(cx),
            Phase::Backoff(until) => {
                if cx.now >= until {
                    self.start_attempt(cx)
                } else {
                    cx.wake_at(until);
                    None
                }
            }
        }
    }
}
