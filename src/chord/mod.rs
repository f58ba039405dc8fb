//! Chord ring maintenance and lookup as a state machine without I/O.
//!
//! The caller (the node's driver over TCP, or the deterministic simulator)
//! feeds in requests from peers ([`ChordNode::handle_request`], answered at
//! once), replies to this node's own calls ([`ChordNode::handle_reply`], a
//! timeout is a [`Failure`]), and timer ticks ([`ChordNode::stabilize`],
//! [`ChordNode::fix_fingers`], [`ChordNode::check_predecessor`]). It drains
//! calls to send with [`ChordNode::poll_outgoing`] and results with
//! [`ChordNode::poll_event`]. No clock, socket or thread is touched here.
//!
//! The protocol is Chord (Stoica et al., SIGCOMM 2001) with Zave's
//! corrections ("Reasoning about identifier spaces: How to make Chord
//! correct", IEEE TSE 2017):
//! - a node becomes a member only after it holds a successor list taken from
//!   a live member (`succ :: succ.list`);
//! - stabilize adopts a new successor only after that node has answered;
//! - notify is replaced by rectify: a notifier outside `(pred, self)` replaces
//!   the predecessor only if a ping shows the old one dead;
//! - while not yet a member, state queries get "busy" but pings are answered;
//! - fingers only shorten lookups: every decision about ring membership uses
//!   the successor list and the predecessor.
//!
//! Successor lists never contain the node itself and never repeat a node, so
//! in a ring smaller than the list length the list is simply shorter.
//!
//! Rings merge after a partition heals ([`ChordNode::probe_merge`]). Chord's
//! stabilization alone never joins two rings that each look whole, so every
//! member periodically looks its own ID up *through* a member it remembers
//! (the "seen" list, kept across restarts by the driver). In its own ring the
//! answer is its successor; if the answer is another node, the remembered
//! member is in another ring (or this node's view is stale), and the answer
//! `s` is where this node belongs in that ring. The node then checks `s`
//! (it must answer) and adopts it as successor if `s` lies between it and
//! its successor, and notifies `s`, which rectifies its predecessor to this
//! node if it lies between. Each such step is one that stabilize and
//! rectify would also allow (nothing unverified is adopted), and each
//! crossing pointer makes the neighbours' next stabilize rounds find
//! further ones, so the two rings zip into one (the "simple ring
//! unification" of Shafaat et al., "Handling network partitions and
//! mergers in structured overlay networks", P2P 2007, driven by periodic
//! probes instead of a detector).

mod fingers;
mod lookup;
pub mod view;

pub use fingers::FingerTable;
pub use lookup::{Lookup, LookupError, LookupResult, Purpose};
pub use view::RingView;

use crate::id::Id;
use crate::wire::{ChordRequest, ChordResponse, Peer};
use std::collections::{HashMap, VecDeque};

/// Tunables of the ring protocol.
#[derive(Debug, Clone)]
pub struct Config {
    /// Successor list length `s` (the replication factor must not exceed it).
    pub succ_list_len: usize,
    /// A lookup gives up after this many calls.
    pub max_hops: u32,
    /// At most this many candidates are offered in a `Next` answer.
    pub next_fanout: usize,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            succ_list_len: 8,
            max_hops: 64,
            next_fanout: 4,
        }
    }
}

/// Where the node is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, neither `create` nor `join` called yet.
    Idle,
    /// Looking for its successor; not a member, answers state queries busy.
    Joining,
    /// A ring member.
    Member,
    /// Left the ring (gracefully); answers everything busy.
    Left,
}

/// Identifies one outgoing call; its reply must come back with it.
pub type Token = u64;

/// Identifies one lookup started with [`ChordNode::start_lookup`].
pub type LookupId = u64;

/// A call this node wants sent.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// Return this with the reply (or the failure).
    pub token: Token,
    /// Who to call.
    pub to: Peer,
    /// What to send.
    pub req: ChordRequest,
}

/// Why a call got no usable answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// No answer within the call's timeout.
    Timeout,
    /// Could not connect or the connection broke.
    Unreachable,
    /// The peer answered with something that is not a chord answer.
    Protocol,
}

/// Something the driver should know about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The join finished: the node is a ring member.
    Joined,
    /// The join could not find a live successor; call `join` again later.
    JoinFailed,
    /// A lookup started with `start_lookup` finished.
    LookupDone {
        id: LookupId,
        result: Result<LookupResult, LookupError>,
    },
    /// Predecessor or successor list changed (replicas may need repair).
    Topology,
    /// The graceful leave finished notifying the neighbours.
    LeaveDone,
}

/// What an outstanding call was for.
#[derive(Debug)]
enum Pending {
    /// One hop of a lookup.
    LookupHop(LookupId),
    /// Join: fetching the successor list of the successor found.
    JoinState { target: Peer, fallbacks: Vec<Peer> },
    /// Stabilize: asking the first successor for its state.
    StabilizeSucc(Peer),
    /// Stabilize: checking a node between us and our successor.
    StabilizeCandidate(Peer),
    /// A notify we sent; the answer carries nothing.
    Notify,
    /// Rectify: is the old predecessor still alive?
    RectifyPing { old: Peer, candidate: Peer },
    /// check_predecessor's ping.
    CheckPred(Peer),
    /// A `Leaving` message we sent.
    Leaving,
    /// Rejoin: the state of the node found as our successor.
    RejoinState(Peer),
    /// Merge probe: the state of the node another ring places after us.
    MergeState(Peer),
    /// A ping of a successor-list entry offered by another node.
    VerifyEntry,
}

/// One node's ring state.
#[derive(Debug)]
pub struct ChordNode {
    /// This node.
    me: Peer,
    /// Protocol tunables.
    cfg: Config,
    /// Life-cycle phase.
    status: Status,
    /// Believed predecessor; `None` until someone notifies us.
    pred: Option<Peer>,
    /// Nearest successors, first is the successor; never contains `me`.
    /// Empty while alone in the ring.
    succs: Vec<Peer>,
    /// The list came back round to this node (or the node is alone):
    /// `me :: succs` is the whole ring.
    whole: bool,
    /// Shortcuts for lookups.
    fingers: FingerTable,
    /// Calls sent and not yet answered.
    pending: HashMap<Token, (Pending, Id)>,
    /// Source of fresh tokens.
    next_token: Token,
    /// Lookups in flight.
    lookups: HashMap<LookupId, Lookup>,
    /// Source of fresh lookup IDs.
    next_lookup: LookupId,
    /// Calls waiting to be sent by the driver.
    outbox: VecDeque<Outgoing>,
    /// Results waiting for the driver.
    events: VecDeque<Event>,
    /// A stabilize round is in progress (one at a time).
    stabilizing: bool,
    /// A finger refresh is in progress (one at a time).
    fixing: bool,
    /// A predecessor check is in progress (one at a time).
    checking_pred: bool,
    /// Leave messages not yet answered.
    leaving_left: usize,
    /// Members this node has had as successors or predecessor, newest
    /// first (at most [`SEEN_MAX`]): a node left alone asks them to find
    /// its way back into the ring.
    seen: VecDeque<Peer>,
    /// A rejoin is in progress (one at a time).
    rejoining: bool,
    /// A merge probe is in progress (one at a time).
    probing: bool,
    /// Index into `seen` of the next member a merge probe goes through.
    probe_next: usize,
    /// Stabilize rounds since every successor failed without a rejoin.
    alone_rounds: u32,
    /// The successor whose last state query timed out: dropped if the
    /// next one times out too.
    suspect: Option<Id>,
    /// Nodes that answered this node's last call to them: entries of a
    /// successor list offered by another node are adopted only once they
    /// are in here (Zave: no pointer without a liveness check).
    answered: std::collections::HashSet<Id>,
    /// A successor list waiting for pings of its new entries: head, tail,
    /// whether the tail was its sender's whole ring; and pings in flight.
    unverified: Option<(Peer, Vec<Peer>, bool)>,
    verifying: usize,
}

/// Nodes remembered as having answered, at most.
const ANSWERED_MAX: usize = 1024;

/// Members remembered for rejoining and merge probes.
pub const SEEN_MAX: usize = 64;

/// Stabilize rounds a node whose successors all failed waits (trying to
/// rejoin) before it takes itself for the whole ring: a node cut off from
/// the network must not believe a ring of one at once, or it would settle
/// for a single copy of what it is asked to store.
const ALONE_AFTER_ROUNDS: u32 = 20;

impl ChordNode {
    /// A node that is not yet in any ring.
    pub fn new(me: Peer, cfg: Config) -> Self {
        let fingers = FingerTable::new(me.id);
        ChordNode {
            me,
            cfg,
            status: Status::Idle,
            pred: None,
            succs: Vec::new(),
            whole: false,
            fingers,
            pending: HashMap::new(),
            next_token: 1,
            lookups: HashMap::new(),
            next_lookup: 1,
            outbox: VecDeque::new(),
            events: VecDeque::new(),
            stabilizing: false,
            fixing: false,
            checking_pred: false,
            leaving_left: 0,
            seen: VecDeque::new(),
            rejoining: false,
            probing: false,
            probe_next: 0,
            alone_rounds: 0,
            suspect: None,
            answered: std::collections::HashSet::new(),
            unverified: None,
            verifying: 0,
        }
    }

    /// This node.
    pub fn me(&self) -> &Peer {
        &self.me
    }

    /// Life-cycle phase.
    pub fn status(&self) -> Status {
        self.status
    }

    /// Whether the node is a ring member.
    pub fn is_member(&self) -> bool {
        self.status == Status::Member
    }

    /// Believed predecessor.
    pub fn pred(&self) -> Option<&Peer> {
        self.pred.as_ref()
    }

    /// Successor list (empty while alone).
    pub fn succs(&self) -> &[Peer] {
        &self.succs
    }

    /// The successor: the first list entry, or this node when alone.
    pub fn successor(&self) -> &Peer {
        self.succs.first().unwrap_or(&self.me)
    }

    /// Distinct finger entries.
    pub fn fingers(&self) -> Vec<Peer> {
        self.fingers.distinct()
    }

    /// Whether `me :: succs` is the whole ring: the list came back round
    /// to this node, and the predecessor (if any) is the list's last entry
    /// (a node that joined just before this one is not in the list yet).
    pub fn whole_ring(&self) -> bool {
        self.whole
            && match (&self.pred, self.succs.last()) {
                (None, _) => true,
                (Some(p), Some(last)) => p.id == last.id,
                (Some(_), None) => false,
            }
    }

    /// A snapshot of the ring state, for the request machines.
    pub fn view(&self) -> RingView {
        RingView {
            me: self.me.clone(),
            member: self.is_member(),
            pred: self.pred.clone(),
            succs: self.succs.clone(),
            whole: self.whole_ring(),
            fingers: self.fingers.distinct(),
        }
    }

    /// Whether this node believes it owns `key`: `key ∈ (pred, me]`, or it
    /// is alone.
    pub fn owns(&self, key: Id) -> bool {
        match &self.pred {
            _ if self.succs.is_empty() => true,
            Some(p) => key.in_half_open(p.id, self.me.id),
            None => false,
        }
    }

    /// Starts a new ring with this node as its only member.
    pub fn create(&mut self) {
        self.status = Status::Member;
        self.pred = None;
        self.succs.clear();
        self.whole = true;
        self.events.push_back(Event::Joined);
    }

    /// Starts joining the ring that `via` belongs to. `via.id` may be
    /// unknown (any value): it is only used as an address.
    pub fn join(&mut self, via: Peer) {
        self.status = Status::Joining;
        self.pred = None;
        self.succs.clear();
        let id = self.new_lookup(self.me.id, Purpose::Join, vec![via]);
        self.advance_lookup(id);
    }

    /// Starts a lookup for `key`; the answer comes as [`Event::LookupDone`].
    pub fn start_lookup(&mut self, key: Id) -> LookupId {
        self.start_lookup_for(key, Purpose::User)
    }

    fn start_lookup_for(&mut self, key: Id, purpose: Purpose) -> LookupId {
        let id = self.next_lookup;
        if !self.is_member() {
            self.next_lookup += 1;
            self.events.push_back(Event::LookupDone {
                id,
                result: Err(LookupError::NotMember),
            });
            return id;
        }
        if let Some((owner, next)) = self.local_answer(key) {
            self.next_lookup += 1;
            self.finish_lookup(
                id,
                purpose,
                Ok(LookupResult {
                    key,
                    owner,
                    next,
                    hops: 0,
                }),
            );
            return id;
        }
        let start = self.closest_preceding(key, usize::MAX);
        let id = self.new_lookup(key, purpose, start);
        self.advance_lookup(id);
        id
    }

    /// The owner of `key` if this node can tell without asking anyone
    /// (see [`view::local_answer`]). Returns the owner and the nodes after
    /// it.
    pub fn local_answer(&self, key: Id) -> Option<(Peer, Vec<Peer>)> {
        view::local_answer(
            &self.me,
            self.pred.as_ref(),
            &self.succs,
            self.whole_ring(),
            key,
        )
    }

    /// Known nodes strictly between this node and `key`, closest to the key
    /// first, at most `limit` of them.
    pub fn closest_preceding(&self, key: Id, limit: usize) -> Vec<Peer> {
        view::closest_preceding(
            &self.me,
            self.succs.iter().chain(self.fingers.iter()),
            key,
            limit,
        )
    }

    /// Answers a request from a peer. Pings are always answered; state
    /// queries get `Busy` while the node is not a member.
    pub fn handle_request(&mut self, req: ChordRequest) -> ChordResponse {
        match req {
            ChordRequest::Ping => match self.status {
                Status::Left => ChordResponse::Busy,
                _ => ChordResponse::Pong,
            },
            ChordRequest::GetState => match self.status {
                Status::Member => ChordResponse::State {
                    pred: self.pred.clone(),
                    succs: self.succs.clone(),
                    whole: self.whole,
                },
                _ => ChordResponse::Busy,
            },
            ChordRequest::Notify(n) => {
                if self.is_member() {
                    self.rectify(n);
                }
                ChordResponse::Ack
            }
            ChordRequest::FindSuccessor(key) => {
                // A node that lost its successors (and does not know it is
                // alone) is in flux: joiners must not take it for a ring.
                if !self.is_member() || (self.succs.is_empty() && !self.whole_ring()) {
                    return ChordResponse::Busy;
                }
                match self.local_answer(key) {
                    Some((owner, next)) => ChordResponse::Found { owner, next },
                    None => ChordResponse::Next(self.closest_preceding(key, self.cfg.next_fanout)),
                }
            }
            ChordRequest::Leaving { peer, succs } => {
                self.handle_leaving(peer, succs);
                ChordResponse::Ack
            }
        }
    }

    /// Feeds the reply (or failure) of call `token`.
    pub fn handle_reply(&mut self, token: Token, reply: Result<ChordResponse, Failure>) {
        let Some((pending, to)) = self.pending.remove(&token) else {
            return; // late reply to a call already given up on
        };
        // Who answered is alive now; who did not is no longer vouched for.
        if reply.is_ok() {
            if self.answered.len() >= ANSWERED_MAX {
                self.answered.clear();
            }
            self.answered.insert(to);
        } else {
            self.answered.remove(&to);
        }
        match pending {
            Pending::LookupHop(id) => self.on_lookup_reply(id, reply),
            Pending::JoinState { target, fallbacks } => {
                self.on_join_state(target, fallbacks, reply)
            }
            Pending::StabilizeSucc(succ) => self.on_stabilize_succ(succ, reply),
            Pending::StabilizeCandidate(cand) => self.on_stabilize_candidate(cand, reply),
            Pending::Notify => {
                if reply.is_err() {
                    // The successor may be dead; the next stabilize finds out.
                }
            }
            Pending::RectifyPing { old, candidate } => {
                let alive = matches!(reply, Ok(ChordResponse::Pong));
                if !alive && self.pred.as_ref().is_some_and(|p| p.id == old.id) {
                    self.forget_peer(old.id);
                    self.set_pred(Some(candidate));
                }
            }
            Pending::CheckPred(p) => {
                self.checking_pred = false;
                let alive = matches!(reply, Ok(ChordResponse::Pong));
                if !alive && self.pred.as_ref().is_some_and(|q| q.id == p.id) {
                    self.forget_peer(p.id);
                    self.set_pred(None);
                }
            }
            Pending::RejoinState(target) => self.on_rejoin_state(target, reply),
            Pending::MergeState(target) => self.on_merge_state(target, reply),
            Pending::VerifyEntry => {
                self.verifying = self.verifying.saturating_sub(1);
                if self.verifying == 0
                    && let Some((head, tail, whole)) = self.unverified.take()
                    && self.answered.contains(&head.id)
                    && self.succs.first().is_none_or(|s| s.id == head.id)
                {
                    self.adopt(head, tail, whole, false);
                }
            }
            Pending::Leaving => {
                self.leaving_left = self.leaving_left.saturating_sub(1);
                if self.leaving_left == 0 {
                    self.events.push_back(Event::LeaveDone);
                }
            }
        }
    }

    /// The next call to send, if any.
    pub fn poll_outgoing(&mut self) -> Option<Outgoing> {
        self.outbox.pop_front()
    }

    /// The next event for the driver, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Internal flags, for diagnostics.
    pub fn debug_flags(&self) -> String {
        format!(
            "stabilizing={} verifying={} unverified={:?} pending={:?}",
            self.stabilizing,
            self.verifying,
            self.unverified.as_ref().map(|(h, t, _)| (h, t.len())),
            self.pending
                .iter()
                .map(|(t, (p, _))| format!("{t}:{p:?}"))
                .collect::<Vec<_>>()
        )
    }

    /// Number of calls awaiting replies (for tests and metrics).
    pub fn pending_calls(&self) -> usize {
        self.pending.len()
    }

    fn send(&mut self, to: Peer, req: ChordRequest, why: Pending) {
        let token = self.next_token;
        self.next_token += 1;
        self.pending.insert(token, (why, to.id));
        self.outbox.push_back(Outgoing { token, to, req });
    }

    fn set_pred(&mut self, pred: Option<Peer>) {
        if self.pred != pred {
            if let Some(p) = &pred {
                self.remember(p);
            }
            self.pred = pred;
            self.events.push_back(Event::Topology);
        }
    }

    /// Sets the successor list to `head :: tail` (`head` just answered),
    /// dropping this node and repeats and stopping where the list comes
    /// back round to this node. `tail_whole` says whether `tail` was its
    /// sender's whole ring; the new list is the whole ring if it came back
    /// round to this node, or took all of a whole `tail` without being cut.
    ///
    /// The tail is another node's word: an entry is adopted only if it
    /// lies further round the ring than the one before it, and only once
    /// it has answered this node. Entries not yet heard from are pinged,
    /// and left out of the list until they answer.
    fn set_succs(&mut self, head: Peer, tail: Vec<Peer>, tail_whole: bool) {
        self.adopt(head, tail, tail_whole, true);
    }

    /// [`Self::set_succs`]; `ping` sends pings to the entries not heard
    /// from (not when adopting after such pings: the next stabilize round
    /// brings a fresh list).
    fn adopt(&mut self, head: Peer, tail: Vec<Peer>, tail_whole: bool, ping: bool) {
        let mut list: Vec<Peer> = Vec::with_capacity(self.cfg.succ_list_len);
        let mut whole = tail_whole;
        let mut unheard: Vec<Peer> = Vec::new();
        for p in std::iter::once(head.clone()).chain(tail.iter().cloned()) {
            if p.id == self.me.id {
                whole = true;
                break;
            }
            let out_of_order = list
                .last()
                .is_some_and(|prev: &Peer| !p.id.in_open(prev.id, self.me.id));
            if out_of_order || list.len() == self.cfg.succ_list_len {
                whole = false;
                break;
            }
            let heard = list.is_empty()
                || self.answered.contains(&p.id)
                || self.succs.iter().any(|q| q.id == p.id);
            if !heard {
                // Skipped (not cut there: the entries after it that this
                // node knows keep the list long) until it answers a ping.
                unheard.push(p);
                whole = false;
                continue;
            }
            list.push(p);
        }
        if unheard.is_empty() {
            self.unverified = None;
        } else {
            // Kept (the newest only) to adopt once the pings are answered.
            self.unverified = Some((head, tail, tail_whole));
            if ping && self.verifying == 0 {
                for p in unheard {
                    self.verifying += 1;
                    self.send(p, ChordRequest::Ping, Pending::VerifyEntry);
                }
            }
        }
        if !list.is_empty() {
            self.alone_rounds = 0;
        }
        if list != self.succs || whole != self.whole {
            for p in list.iter().rev() {
                self.remember(p);
            }
            self.succs = list;
            self.whole = whole;
            self.events.push_back(Event::Topology);
        }
    }

    /// Notes `p` as a member seen, for a later rejoin.
    fn remember(&mut self, p: &Peer) {
        if p.id == self.me.id {
            return;
        }
        self.seen.retain(|q| q.id != p.id);
        self.seen.push_front(p.clone());
        self.seen.truncate(SEEN_MAX);
    }

    /// Removes a node known to be dead or gone from the successor list (not
    /// the predecessor: that goes through rectify and check_predecessor),
    /// the fingers and running lookups.
    fn forget_peer(&mut self, id: Id) {
        self.fingers.remove(id);
        for l in self.lookups.values_mut() {
            l.forget(id);
        }
    }

    fn drop_successor(&mut self, id: Id) {
        let before = self.succs.len();
        self.succs.retain(|p| p.id != id);
        if self.succs.len() != before {
            self.events.push_back(Event::Topology);
        }
        self.forget_peer(id);
    }

    // ---- stabilize -------------------------------------------------------

    /// One stabilize round: ask the successor for its predecessor and list.
    pub fn stabilize(&mut self) {
        if !self.is_member() || self.stabilizing {
            return;
        }
        match self.succs.first().cloned() {
            Some(succ) => {
                self.stabilizing = true;
                self.send(
                    succ.clone(),
                    ChordRequest::GetState,
                    Pending::StabilizeSucc(succ),
                );
            }
            None => {
                if !self.whole {
                    self.alone_rounds += 1;
                    if self.alone_rounds >= ALONE_AFTER_ROUNDS {
                        self.whole = true;
                        self.events.push_back(Event::Topology);
                    }
                }
                // Alone: our own predecessor, if any, is the candidate
                // successor (this is how a one-node ring admits the second).
                if let Some(p) = self.pred.clone()
                    && p.id != self.me.id
                {
                    self.stabilizing = true;
                    self.send(
                        p.clone(),
                        ChordRequest::GetState,
                        Pending::StabilizeCandidate(p),
                    );
                } else {
                    self.rejoin();
                }
            }
        }
    }

    /// Alone, but this node was in a ring: ask a member it remembers (in
    /// turn) to find its successor, as a join would. A node cut off for a
    /// while drops every successor; this is how it finds its way back once
    /// the network does (a ring of one that never had others stays so).
    fn rejoin(&mut self) {
        if self.rejoining || !self.is_member() {
            return;
        }
        let Some(via) = self.seen.pop_front() else {
            return;
        };
        self.seen.push_back(via.clone());
        self.rejoining = true;
        let id = self.new_lookup(self.me.id, Purpose::Rejoin, vec![via]);
        self.advance_lookup(id);
    }

    fn on_rejoin_state(&mut self, target: Peer, reply: Result<ChordResponse, Failure>) {
        self.rejoining = false;
        if !self.is_member() || !self.succs.is_empty() {
            return;
        }
        if let Ok(ChordResponse::State { pred, succs, whole }) = reply
            && pred
                .as_ref()
                .is_none_or(|p| p.id == self.me.id || self.me.id.in_half_open(p.id, target.id))
        {
            self.set_succs(target, succs, whole);
            self.notify_successor();
            self.stabilize();
        }
    }

    /// Members remembered (newest first): the driver keeps them across
    /// restarts and gives them back with [`Self::remember_all`].
    pub fn seen(&self) -> Vec<Peer> {
        self.seen.iter().cloned().collect()
    }

    /// Whether this node is in contact with its ring: a member with other
    /// members in its successor list, or alone in a ring that never had
    /// others (or whose others all left gracefully). A member alone while
    /// it remembers others is cut off; so is a node that is not a member.
    pub fn in_contact(&self) -> bool {
        self.is_member() && (!self.succs.is_empty() || self.seen.is_empty())
    }

    /// Remembers `peers` as members seen (oldest last), as a restarted
    /// node's memory of the ring.
    pub fn remember_all(&mut self, peers: &[Peer]) {
        for p in peers.iter().rev() {
            self.remember(p);
        }
    }

    /// One merge probe (see the module doc): looks this node's ID up
    /// through the next remembered member that is not a neighbour.
    pub fn probe_merge(&mut self) {
        if self.probing || !self.is_member() {
            return;
        }
        let n = self.seen.len();
        for _ in 0..n {
            let q = self.seen[self.probe_next % n].clone();
            self.probe_next = (self.probe_next + 1) % n;
            let neighbour = self.succs.iter().any(|p| p.id == q.id)
                || self.pred.as_ref().is_some_and(|p| p.id == q.id);
            if !neighbour {
                self.probing = true;
                let id = self.new_lookup(self.me.id, Purpose::Merge, vec![q]);
                self.advance_lookup(id);
                return;
            }
        }
    }

    /// A merge probe's answer: the node the probed ring places after this
    /// node's ID.
    fn on_merge_answer(&mut self, r: LookupResult) {
        let Some(s) = std::iter::once(r.owner)
            .chain(r.next)
            .find(|p| p.id != self.me.id)
        else {
            return;
        };
        if self.succs.first().is_some_and(|f| f.id == s.id) {
            return; // the same ring, as far as this node can tell
        }
        if self
            .succs
            .first()
            .is_none_or(|f| s.id.in_open(self.me.id, f.id))
        {
            // Closer than our successor: adopt it once it answers.
            self.send(
                s.clone(),
                ChordRequest::GetState,
                Pending::MergeState(s.clone()),
            );
        }
        // And tell it about us: it takes us as predecessor if we lie
        // between (rectify), and its old predecessor then finds us.
        let me = self.me.clone();
        self.send(s, ChordRequest::Notify(me), Pending::Notify);
    }

    fn on_merge_state(&mut self, s: Peer, reply: Result<ChordResponse, Failure>) {
        if !self.is_member() {
            return;
        }
        if let Ok(ChordResponse::State { succs, whole, .. }) = reply
            && self
                .succs
                .first()
                .is_none_or(|f| s.id.in_open(self.me.id, f.id))
        {
            log::info!(
                "merge: node {} of another ring (or a newer view) becomes this node's successor",
                s.id.short()
            );
            self.set_succs(s, succs, whole);
            self.notify_successor();
            self.stabilize();
        }
    }

    fn on_stabilize_succ(&mut self, succ: Peer, reply: Result<ChordResponse, Failure>) {
        match reply {
            Ok(ChordResponse::State { pred, succs, whole }) => {
                self.suspect = None;
                if self.status != Status::Member {
                    self.stabilizing = false;
                    return;
                }
                self.set_succs(succ.clone(), succs, whole);
                match pred {
                    Some(p) if p.id.in_open(self.me.id, succ.id) => {
                        self.send(
                            p.clone(),
                            ChordRequest::GetState,
                            Pending::StabilizeCandidate(p),
                        );
                    }
                    _ => {
                        self.stabilizing = false;
                        self.notify_successor();
                    }
                }
            }
            Ok(ChordResponse::Busy) => {
                // Successor alive but in flux: keep it, try next round.
                self.stabilizing = false;
                self.notify_successor();
            }
            Err(Failure::Timeout) if self.suspect != Some(succ.id) => {
                // No answer in time: a lost message looks the same as a
                // dead node, so ask once more before dropping a successor
                // (a node that refuses the connection is dropped at once).
                self.stabilizing = false;
                self.suspect = Some(succ.id);
                self.stabilize();
            }
            _ => {
                // Dead (or talking nonsense): drop it, shift the list and try
                // the next successor straight away.
                self.stabilizing = false;
                self.suspect = None;
                self.drop_successor(succ.id);
                if self.succs.is_empty() {
                    self.recover_empty_list();
                }
                self.stabilize();
            }
        }
    }

    fn on_stabilize_candidate(&mut self, cand: Peer, reply: Result<ChordResponse, Failure>) {
        self.stabilizing = false;
        if self.status != Status::Member {
            return;
        }
        match reply {
            Ok(ChordResponse::State { succs, whole, .. }) => {
                // The candidate answered: adopt it with its list, and ask it
                // in turn straight away. Each round moves the successor
                // strictly closer, so a burst of k joins into one interval
                // is absorbed in k calls rather than k stabilize periods.
                self.set_succs(cand, succs, whole);
                self.notify_successor();
                self.stabilize();
                return;
            }
            _ => {
                self.forget_peer(cand.id);
                if self.pred.as_ref().is_some_and(|p| p.id == cand.id) && self.succs.is_empty() {
                    // Alone and our predecessor is gone.
                    self.set_pred(None);
                }
            }
        }
        self.notify_successor();
    }

    /// Every successor is gone: fall back on any other node we know of, in
    /// ring order, and let stabilize verify it. If there is none, the node
    /// is alone.
    fn recover_empty_list(&mut self) {
        let mut known: Vec<Peer> = self.fingers.distinct();
        if let Some(p) = &self.pred {
            known.push(p.clone());
        }
        known.retain(|p| p.id != self.me.id);
        let me = self.me.id;
        known.sort_by_key(|p| me.distance_to(p.id));
        if let Some(first) = known.into_iter().next() {
            self.succs = vec![first];
            self.whole = false;
        } else {
            // Nobody else answers. Alone, or cut off: the ring's size is
            // unknown until the node has been alone for a while (see
            // `stabilize`).
            self.whole = false;
        }
        self.events.push_back(Event::Topology);
    }

    fn notify_successor(&mut self) {
        if let Some(s) = self.succs.first().cloned() {
            let me = self.me.clone();
            self.send(s, ChordRequest::Notify(me), Pending::Notify);
        }
    }

    /// Zave's rectify: adopt `n` if it lies in `(pred, me)`; otherwise only
    /// if the old predecessor turns out to be dead.
    fn rectify(&mut self, n: Peer) {
        if n.id == self.me.id {
            return;
        }
        match self.pred.clone() {
            None => self.set_pred(Some(n)),
            Some(p) if p.id == n.id => {
                if p.addr != n.addr {
                    self.set_pred(Some(n));
                }
            }
            Some(p) if n.id.in_open(p.id, self.me.id) => self.set_pred(Some(n)),
            Some(p) => {
                self.send(
                    p.clone(),
                    ChordRequest::Ping,
                    Pending::RectifyPing {
                        old: p,
                        candidate: n,
                    },
                );
            }
        }
        // A node alone (a ring of one) that a joiner just notified asks it
        // for its state now, the stabilize round that admits a second node,
        // rather than at its next tick: until then it would take itself for
        // cut off from a ring it remembers, and its lookups would find no
        // way forward.
        if self.succs.is_empty() && self.pred.is_some() {
            self.stabilize();
        }
    }

    /// Pings the predecessor; a dead one is cleared.
    pub fn check_predecessor(&mut self) {
        if !self.is_member() || self.checking_pred {
            return;
        }
        if let Some(p) = self.pred.clone() {
            self.checking_pred = true;
            self.send(p.clone(), ChordRequest::Ping, Pending::CheckPred(p));
        }
    }

    // ---- fingers ---------------------------------------------------------

    /// Refreshes the next finger with a lookup of its start.
    pub fn fix_fingers(&mut self) {
        if !self.is_member() || self.fixing {
            return;
        }
        let (i, start) = self.fingers.next_to_fix();
        self.fixing = true;
        self.start_lookup_for(start, Purpose::Finger(i));
    }

    // ---- lookups ---------------------------------------------------------

    fn new_lookup(&mut self, key: Id, purpose: Purpose, start: Vec<Peer>) -> LookupId {
        let id = self.next_lookup;
        self.next_lookup += 1;
        self.lookups.insert(id, Lookup::new(key, purpose, start));
        id
    }

    /// Sends the lookup's next hop, or ends it if no candidate is left.
    fn advance_lookup(&mut self, id: LookupId) {
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        if l.hops >= self.cfg.max_hops {
            let (purpose, hops) = (l.purpose, l.hops);
            self.lookups.remove(&id);
            self.finish_lookup(id, purpose, Err(LookupError::TooManyHops(hops)));
            return;
        }
        match l.next_candidate() {
            Some(p) => {
                let key = l.key;
                self.send(p, ChordRequest::FindSuccessor(key), Pending::LookupHop(id));
            }
            None => {
                let purpose = l.purpose;
                self.lookups.remove(&id);
                self.finish_lookup(id, purpose, Err(LookupError::NoRoute));
            }
        }
    }

    fn on_lookup_reply(&mut self, id: LookupId, reply: Result<ChordResponse, Failure>) {
        let Some(l) = self.lookups.get_mut(&id) else {
            return;
        };
        let asked = l.asking.take();
        match reply {
            Ok(ChordResponse::Found { owner, next }) => {
                let l = self.lookups.remove(&id).expect("lookup present");
                let result = LookupResult {
                    key: l.key,
                    owner,
                    next,
                    hops: l.hops,
                };
                self.finish_lookup(id, l.purpose, Ok(result));
            }
            Ok(ChordResponse::Next(offered)) => {
                l.offer(asked.map(|p| p.id), offered);
                self.advance_lookup(id);
            }
            Ok(ChordResponse::Busy) => self.advance_lookup(id),
            _ => {
                if let Some(p) = asked {
                    self.forget_peer(p.id);
                }
                self.advance_lookup(id);
            }
        }
    }

    fn finish_lookup(
        &mut self,
        id: LookupId,
        purpose: Purpose,
        result: Result<LookupResult, LookupError>,
    ) {
        match purpose {
            Purpose::User => self.events.push_back(Event::LookupDone { id, result }),
            Purpose::Finger(i) => {
                self.fixing = false;
                if let Ok(r) = result
                    && self.is_member()
                {
                    self.fingers.set(i, r.owner);
                }
            }
            Purpose::Merge => {
                self.probing = false;
                if let Ok(r) = result {
                    self.on_merge_answer(r);
                }
            }
            Purpose::Rejoin => match result {
                Ok(r) => {
                    match std::iter::once(r.owner)
                        .chain(r.next)
                        .find(|p| p.id != self.me.id)
                    {
                        Some(target) => self.send(
                            target.clone(),
                            ChordRequest::GetState,
                            Pending::RejoinState(target),
                        ),
                        None => self.rejoining = false,
                    }
                }
                Err(_) => self.rejoining = false,
            },
            Purpose::Join => match result {
                Ok(r) => {
                    // The owner of our own ID is our successor-to-be; if the
                    // ring still lists an old incarnation of us, skip it.
                    let mut cands: Vec<Peer> = std::iter::once(r.owner)
                        .chain(r.next)
                        .filter(|p| p.id != self.me.id)
                        .collect();
                    if cands.is_empty() {
                        self.events.push_back(Event::JoinFailed);
                        self.status = Status::Idle;
                        return;
                    }
                    let target = cands.remove(0);
                    self.send(
                        target.clone(),
                        ChordRequest::GetState,
                        Pending::JoinState {
                            target,
                            fallbacks: cands,
                        },
                    );
                }
                Err(_) => {
                    self.status = Status::Idle;
                    self.events.push_back(Event::JoinFailed);
                }
            },
        }
    }

    fn on_join_state(
        &mut self,
        target: Peer,
        mut fallbacks: Vec<Peer>,
        reply: Result<ChordResponse, Failure>,
    ) {
        if self.status != Status::Joining {
            return;
        }
        match reply {
            Ok(ChordResponse::State { pred: Some(p), .. })
                if p.id != self.me.id && !self.me.id.in_half_open(p.id, target.id) =>
            {
                // The lookup's answer does not hold up: the named successor
                // does not hold our ID in its range. A node between us and
                // it is closer: ask that one; otherwise start over.
                if p.id.in_open(self.me.id, target.id) {
                    self.send(
                        p.clone(),
                        ChordRequest::GetState,
                        Pending::JoinState {
                            target: p,
                            fallbacks,
                        },
                    );
                } else {
                    self.status = Status::Idle;
                    self.events.push_back(Event::JoinFailed);
                }
            }
            Ok(ChordResponse::State { succs, whole, .. }) => {
                // Zave's join: take `succ :: succ.list`, only then a member.
                self.status = Status::Member;
                self.set_succs(target, succs, whole);
                self.events.push_back(Event::Joined);
                self.stabilize();
            }
            _ => {
                if fallbacks.is_empty() {
                    self.status = Status::Idle;
                    self.events.push_back(Event::JoinFailed);
                } else {
                    let next = fallbacks.remove(0);
                    self.send(
                        next.clone(),
                        ChordRequest::GetState,
                        Pending::JoinState {
                            target: next,
                            fallbacks,
                        },
                    );
                }
            }
        }
    }

    // ---- leave -----------------------------------------------------------

    /// Leaves gracefully: tells predecessor and successor. The caller must
    /// have handed this node's keys over first. [`Event::LeaveDone`] follows
    /// once both have answered (or failed).
    pub fn leave(&mut self) {
        if self.status != Status::Member {
            self.status = Status::Left;
            self.events.push_back(Event::LeaveDone);
            return;
        }
        self.status = Status::Left;
        let me = self.me.clone();
        let succs = self.succs.clone();
        let mut targets: Vec<Peer> = Vec::new();
        if let Some(s) = self.succs.first() {
            targets.push(s.clone());
        }
        if let Some(p) = &self.pred
            && !targets.iter().any(|t| t.id == p.id)
        {
            targets.push(p.clone());
        }
        if targets.is_empty() {
            self.events.push_back(Event::LeaveDone);
            return;
        }
        self.leaving_left = targets.len();
        for t in targets {
            self.send(
                t,
                ChordRequest::Leaving {
                    peer: me.clone(),
                    succs: succs.clone(),
                },
                Pending::Leaving,
            );
        }
    }

    fn handle_leaving(&mut self, peer: Peer, their_succs: Vec<Peer>) {
        if !self.is_member() || peer.id == self.me.id {
            return;
        }
        // It left on purpose: not a member to find again (and a node it
        // leaves alone is a ring of one, not cut off).
        self.seen.retain(|q| q.id != peer.id);
        let was_succ = self.succs.iter().any(|p| p.id == peer.id);
        if was_succ {
            self.drop_successor(peer.id);
            if self.succs.is_empty() {
                // Take the leaver's list; stabilize checks it before use.
                let tail: Vec<Peer> = their_succs
                    .into_iter()
                    .filter(|p| p.id != peer.id)
                    .collect();
                if let Some((h, t)) = tail.split_first() {
                    if h.id == self.me.id {
                        // The leaver's ring was it and this node.
                        self.whole = true;
                    } else if self.answered.contains(&h.id) {
                        self.set_succs(h.clone(), t.to_vec(), false);
                    } else if self.verifying == 0 {
                        // Its list is its word: ping the head first.
                        self.unverified = Some((h.clone(), t.to_vec(), false));
                        self.verifying = 1;
                        self.send(h.clone(), ChordRequest::Ping, Pending::VerifyEntry);
                    }
                }
            }
            // Check the new first successor now (a no-op if a round is
            // already running; it will see the change).
            self.stabilize();
        }
        if self.pred.as_ref().is_some_and(|p| p.id == peer.id) {
            self.set_pred(None);
        }
        self.forget_peer(peer.id);
    }
}

#[cfg(test)]
mod tests;
