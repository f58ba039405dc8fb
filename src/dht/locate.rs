//! Finding a key's owner and replicas, and checking the answer.
//!
//! A locate answers from what this node knows when it can: the whole ring
//! when its successor list came back round to it, its own range, its
//! successor's range, or a cached confirmed answer. Otherwise it runs an
//! iterative Chord lookup (hops through ever closer nodes, see
//! [`crate::chord::Lookup`]) and does not believe the final answer
//! until two nodes agree on it:
//!
//! - the hop `H` that answers `Found { owner: O }` says `key ∈ (H, O]`;
//!   the locate then asks `O` itself for its state, and accepts only if
//!   `key ∈ (pred(O), O]`. The replicas are then `O`'s own successor list,
//!   not the hop's;
//! - when the hop names itself (`O = H`), its predecessor is asked in turn
//!   and must name `O` as its successor.
//!
//! A hop whose answer does not hold up is a suspect: it is not asked again,
//! and the lookup starts over from this node (at most [`MAX_RESTARTS`]
//! times). So one member that lies about ownership makes a locate slower,
//! not wrong. The result is a [`Placement`]; every failure is a
//! [`LocateError`] the calling request retries on.

use super::Placement;
use super::machine::{CallId, Cx};
use crate::chord::{Lookup, Purpose};
use crate::id::Id;
use crate::rpc::{CallError, FindSuccessor, GetState, Hop, NodeState, Reply, Rpc};
use crate::wire::Peer;
use std::collections::HashMap;

/// Times a lookup starts over after an answer that did not hold up.
pub const MAX_RESTARTS: u32 = 3;
/// Candidates asked per lookup at most.
const MAX_HOPS: u32 = 64;

/// Which cached answers a locate may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheUse {
    /// None: ask the ring.
    Fresh,
    /// Answers the owner confirmed.
    Confirmed,
    /// Those and ranges derived from an owner's successor list (only to
    /// place new items).
    Any,
}

/// Why a locate gave no placement.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocateError {
    #[error("this node is not a ring member")]
    NotMember,
    #[error("no reachable node makes progress towards the key")]
    NoRoute,
    #[error("the owner {0} could not confirm: {1}")]
    Unconfirmed(String, String),
    #[error("answers about the owner disagreed {0} times")]
    Inconsistent(u32),
}

/// What a call in flight is for.
#[derive(Debug, Clone)]
enum Waiting {
    /// A lookup step to this node.
    Hop(Peer),
    /// The named owner's state; `hop` named it.
    Confirm { hop: Peer, owner: Peer },
    /// A self-named owner's state.
    SelfClaim { owner: Peer },
    /// The predecessor of a self-named owner, which must name it.
    PredCheck { owner: Peer, state: NodeState },
}

/// One locate in progress.
#[derive(Debug)]
pub struct Locate {
    /// The key to place.
    key: Id,
    /// Which cached answers count.
    cache: CacheUse,
    /// The lookup, once routing has started.
    lookup: Option<Lookup>,
    /// Whether the first step (local answers) ran.
    started: bool,
    /// Nodes whose answers did not hold up: never asked again.
    suspects: Vec<Id>,
    /// Times the lookup started over.
    restarts: u32,
    /// Calls in flight.
    pending: HashMap<CallId, Waiting>,
    /// Replies not yet handled.
    replies: Vec<(CallId, Reply)>,
    /// The outcome, once known.
    done: Option<Result<Placement, LocateError>>,
}

impl Locate {
    /// A locate of `key` using the cached answers `cache` allows.
    pub fn new(key: Id, cache: CacheUse) -> Locate {
        Locate {
            key,
            cache,
            lookup: None,
            started: false,
            suspects: Vec::new(),
            restarts: 0,
            pending: HashMap::new(),
            replies: Vec::new(),
            done: None,
        }
    }

    /// The key being placed.
    pub fn key(&self) -> Id {
        self.key
    }

    /// Whether call `id` is one of this lookup's, still unanswered.
    pub fn is_waiting_for(&self, id: CallId) -> bool {
        self.pending.contains_key(&id)
    }

    /// Takes the reply of call `id`; `false` if it is not this lookup's.
    pub fn on_reply(&mut self, id: CallId, reply: Reply) -> bool {
        if self.pending.contains_key(&id) {
            self.replies.push((id, reply));
            true
        } else {
            false
        }
    }

    /// Advances; the placement (or why there is none) once known.
    pub fn step(&mut self, cx: &mut Cx<'_>) -> Option<Result<Placement, LocateError>> {
        let end = self.advance(cx)?;
        crate::metrics::get().lookup(end.as_ref().ok().map(|p| p.hops));
        Some(end)
    }

    fn advance(&mut self, cx: &mut Cx<'_>) -> Option<Result<Placement, LocateError>> {
        if !self.started {
            self.started = true;
            if let Some(p) = self.answer_locally(cx) {
                return Some(p);
            }
            self.start_lookup(cx);
        }
        for (id, reply) in std::mem::take(&mut self.replies) {
            if let Some(w) = self.pending.remove(&id) {
                self.handle(w, reply, cx);
            }
            if self.done.is_some() {
                break;
            }
        }
        if let Some(d) = self.done.take() {
            self.pending.clear();
            return Some(d);
        }
        if self.pending.is_empty() {
            self.ask_next(cx);
        }
        self.done.take()
    }

    /// A placement from this node's own state or cache, if it has one.
    fn answer_locally(&mut self, cx: &mut Cx<'_>) -> Option<Result<Placement, LocateError>> {
        let view = cx.view;
        if !view.member {
            return Some(Err(LocateError::NotMember));
        }
        if let Some((owner, next)) = view.local_answer(self.key) {
            return Some(Ok(Placement {
                key: self.key,
                from: None,
                owner,
                next,
                hops: 0,
                cached: false,
            }));
        }
        let cached = match self.cache {
            CacheUse::Fresh => None,
            CacheUse::Confirmed => cx.routes.get(self.key, cx.now, false),
            CacheUse::Any => cx.routes.get(self.key, cx.now, true),
        };
        cached.map(Ok)
    }

    fn start_lookup(&mut self, cx: &mut Cx<'_>) {
        let mut start = cx.view.closest_preceding(self.key, usize::MAX);
        start.retain(|p| !self.suspects.contains(&p.id));
        if start.is_empty() {
            // Nothing known precedes the key: ask the successor, which
            // answers for its own range or routes on.
            start.extend(
                cx.view
                    .succs
                    .iter()
                    .filter(|p| !self.suspects.contains(&p.id))
                    .take(1)
                    .cloned(),
            );
        }
        self.lookup = Some(Lookup::new(self.key, Purpose::User, start));
    }

    /// Sends the lookup's next hop, or ends it.
    fn ask_next(&mut self, cx: &mut Cx<'_>) {
        let Some(l) = self.lookup.as_mut() else {
            self.done = Some(Err(LocateError::NoRoute));
            return;
        };
        let next = loop {
            if l.hops >= MAX_HOPS {
                break None;
            }
            match l.next_candidate() {
                Some(p) if self.suspects.contains(&p.id) || cx.is_me(&p) => continue,
                other => break other,
            }
        };
        match next {
            Some(p) => {
                let id = cx.call(&p, FindSuccessor(self.key));
                self.pending.insert(id, Waiting::Hop(p));
            }
            None => self.done = Some(Err(LocateError::NoRoute)),
        }
    }

    fn handle(&mut self, w: Waiting, reply: Reply, cx: &mut Cx<'_>) {
        match w {
            Waiting::Hop(hop) => match FindSuccessor::parse(reply) {
                Ok(Hop::Found { owner, next }) => self.found(hop, owner, next, cx),
                Ok(Hop::Next(offered)) => {
                    if let Some(l) = self.lookup.as_mut() {
                        let offered = offered
                            .into_iter()
                            .filter(|p| !self.suspects.contains(&p.id))
                            .collect();
                        l.offer(Some(hop.id), offered);
                    }
                }
                Err(_) => {
                    if let Some(l) = self.lookup.as_mut() {
                        l.forget(hop.id);
                    }
                }
            },
            Waiting::Confirm { hop, owner } => match GetState::parse(reply) {
                Ok(state) => {
                    let agrees = state
                        .pred
                        .as_ref()
                        .is_some_and(|p| self.key.in_half_open(p.id, owner.id));
                    if agrees {
                        self.accept(owner, state, cx);
                    } else {
                        log::debug!(
                            "locate {}: {:?} named {:?}, which does not hold the key",
                            self.key.short(),
                            hop,
                            owner
                        );
                        self.distrust(hop.id, cx);
                    }
                }
                Err(e) => self.unconfirmed(&owner, e),
            },
            Waiting::SelfClaim { owner } => match GetState::parse(reply) {
                Ok(state) => match state.pred.clone() {
                    Some(p) if self.key.in_half_open(p.id, owner.id) => {
                        if cx.is_me(&p) {
                            // Its predecessor is this node: check our own list.
                            if cx.view.succs.first().is_some_and(|s| s.id == owner.id) {
                                self.accept(owner, state, cx);
                            } else {
                                self.distrust(owner.id, cx);
                            }
                        } else {
                            let id = cx.call(&p, GetState);
                            self.pending.insert(id, Waiting::PredCheck { owner, state });
                        }
                    }
                    _ => self.distrust(owner.id, cx),
                },
                Err(e) => self.unconfirmed(&owner, e),
            },
            Waiting::PredCheck { owner, state } => match GetState::parse(reply) {
                Ok(pred_state) if pred_state.succs.first().is_some_and(|s| s.id == owner.id) => {
                    self.accept(owner, state, cx);
                }
                Ok(_) => self.distrust(owner.id, cx),
                Err(e) => self.unconfirmed(&owner, e),
            },
        }
    }

    /// `hop` answered that `owner` holds the key.
    fn found(&mut self, hop: Peer, owner: Peer, next: Vec<Peer>, cx: &mut Cx<'_>) {
        if cx.is_me(&owner) {
            // The ring says this node owns the key although its own state
            // did not: its predecessor is unknown or just changed. Believe
            // it only if our predecessor does not contradict it.
            let ours = match &cx.view.pred {
                None => true,
                Some(p) => self.key.in_half_open(p.id, owner.id),
            };
            if ours {
                self.done = Some(Ok(Placement {
                    key: self.key,
                    from: None,
                    owner,
                    next: cx.view.succs.clone(),
                    hops: self.hops(),
                    cached: false,
                }));
            } else {
                self.distrust(hop.id, cx);
            }
            return;
        }
        let _ = next; // the replicas come from the owner itself
        if owner.id == hop.id {
            let id = cx.call(&owner, GetState);
            self.pending.insert(id, Waiting::SelfClaim { owner });
        } else {
            let id = cx.call(&owner, GetState);
            self.pending.insert(id, Waiting::Confirm { hop, owner });
        }
    }

    fn hops(&self) -> u32 {
        self.lookup.as_ref().map_or(0, |l| l.hops)
    }

    fn accept(&mut self, owner: Peer, state: NodeState, cx: &mut Cx<'_>) {
        let p = Placement {
            key: self.key,
            from: state.pred.map(|p| p.id),
            owner,
            next: state.succs,
            hops: self.hops(),
            cached: false,
        };
        cx.routes.learn(&p, cx.now);
        self.done = Some(Ok(p));
    }

    /// The named owner did not answer: the ring is changing (or it is
    /// gone); the caller retries later.
    fn unconfirmed(&mut self, owner: &Peer, e: CallError) {
        self.done = Some(Err(LocateError::Unconfirmed(
            format!("{owner:?}"),
            e.to_string(),
        )));
    }

    /// `id`'s answer did not hold up: never ask it again in this locate,
    /// and start over.
    fn distrust(&mut self, id: crate::id::Id, cx: &mut Cx<'_>) {
        if !self.suspects.contains(&id) {
            self.suspects.push(id);
        }
        self.restarts += 1;
        if self.restarts > MAX_RESTARTS {
            self.done = Some(Err(LocateError::Inconsistent(self.restarts)));
            return;
        }
        self.pending.clear();
        self.start_lookup(cx);
    }
}
