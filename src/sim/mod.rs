//! A deterministic, in-process network for the ring and its data.
//!
//! Hundreds of nodes exchange their calls through an event queue ordered
//! by virtual time. Each node runs the real [`ChordNode`] state machine and
//! the real request machines of [`crate::dht`] (puts, gets, repair passes,
//! hand-offs), and keeps its items in a [`MemItems`] store that follows the
//! disk store's rules, so blocks and records really travel: with delay and
//! loss, to nodes that crash (their items gone), pause (a stopped process:
//! everything addressed to it waits), or are cut off by a partition. A
//! seeded RNG chooses delays, losses, churn and workload, so a run is fully
//! determined by its seed: a failing seed is printed and replays exactly.
//!
//! - [`ops`]: hosting the request machines, and the workload of puts and
//!   gets whose acknowledged items the checks follow.
//! - [`lies`]: a member that lies (forged lookup answers and successor
//!   lists, false "I hold it" claims).
//! - [`check`]: the ring invariants of DESIGN.md and the data checks.

mod check;
mod lies;
mod ops;

pub use check::DataReport;
pub use ops::RecordState;

use crate::chord::{ChordNode, Config, Event, LookupId, Status, Token};
use crate::dht::{CallId, Millis, Policy, RouteCache};
use crate::id::Id;
use crate::rpc::Reply;
use crate::store::MemItems;
use crate::wire::{ChordRequest, ChordResponse, Peer, Request};
use ops::{Op, OpId};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};

/// Knobs of a simulated network, in virtual milliseconds.
#[derive(Debug, Clone)]
pub struct SimConfig {
    /// RNG seed: same seed, same run.
    pub seed: u64,
    /// One-way message delay is uniform in `[min_delay, max_delay]`.
    pub min_delay: u64,
    pub max_delay: u64,
    /// Probability that a message is lost.
    pub loss: f64,
    /// A call with no reply by then fails.
    pub rpc_timeout: u64,
    /// Period of stabilize, fix_fingers, check_predecessor, repair.
    pub stabilize_every: u64,
    pub fix_fingers_every: u64,
    pub check_pred_every: u64,
    pub repair_every: u64,
    /// Period of the merge probe ([`ChordNode::probe_merge`]); 0: never.
    pub merge_every: u64,
    /// Replication factor r.
    pub replicas: usize,
    /// Ring protocol tunables (successor list length s).
    pub chord: Config,
    /// Deadlines and retry pacing of the request machines.
    pub policy: Policy,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            seed: 1,
            min_delay: 1,
            max_delay: 20,
            loss: 0.0,
            rpc_timeout: 500,
            stabilize_every: 500,
            fix_fingers_every: 100,
            check_pred_every: 1000,
            repair_every: 2000,
            merge_every: 2000,
            replicas: 3,
            chord: Config::default(),
            policy: Policy {
                put_deadline: 20_000,
                get_deadline: 15_000,
                backoff_min: 100,
                backoff_max: 1_000,
            },
        }
    }
}

/// One simulated node.
struct SimNode {
    chord: ChordNode,
    /// False once crashed or left.
    alive: bool,
    /// Its items.
    store: MemItems,
    /// Its cache of lookup answers.
    routes: RouteCache,
    /// Chord calls in flight, so a reply after a timeout is ignored.
    outstanding: HashSet<Token>,
    /// Measured chord lookups, by ID.
    measuring: HashSet<LookupId>,
    /// Request machines running here.
    ops: HashMap<OpId, Op>,
    /// Their calls in flight.
    op_calls: HashSet<(OpId, CallId)>,
    /// A repair pass is running.
    repairing: bool,
    /// Handing its items over and leaving.
    leaving: bool,
    /// Stopped (SIGSTOP) until then: everything addressed to it waits.
    paused_until: Option<u64>,
    /// Cut off from every other node until then.
    cut_until: Option<u64>,
    /// In side `.0` of a partition until `.1`: reaches only its side.
    side: Option<(usize, u64)>,
    /// Answers others with lies ([`lies`]).
    liar: bool,
}

/// Scheduled happenings; each is addressed to one node.
#[derive(Debug, Clone)]
enum Ev {
    /// A chord call arrives at `to`.
    Deliver {
        from: usize,
        to: usize,
        token: Token,
        req: ChordRequest,
    },
    /// The answer to chord call `token` arrives back at `to`.
    Reply {
        to: usize,
        token: Token,
        resp: ChordResponse,
    },
    Timeout {
        node: usize,
        token: Token,
    },
    /// A request machine's call arrives at `to`.
    OpCall {
        from: usize,
        to: usize,
        op: OpId,
        call: CallId,
        req: Request,
    },
    /// Its answer arrives back at `node`.
    OpReply {
        node: usize,
        op: OpId,
        call: CallId,
        reply: Reply,
    },
    OpTimeout {
        node: usize,
        op: OpId,
        call: CallId,
    },
    /// A machine asked to be stepped.
    OpWake {
        node: usize,
        op: OpId,
    },
    Stabilize(usize),
    FixFingers(usize),
    CheckPred(usize),
    Repair(usize),
    Rejoin(usize),
    LeaveDeadline(usize),
    ProbeMerge(usize),
}

impl Ev {
    /// The node the event happens at.
    fn target(&self) -> usize {
        match self {
            Ev::Deliver { to, .. } | Ev::OpCall { to, .. } => *to,
            Ev::Reply { to, .. } => *to,
            Ev::Timeout { node, .. }
            | Ev::OpReply { node, .. }
            | Ev::OpTimeout { node, .. }
            | Ev::OpWake { node, .. } => *node,
            Ev::Stabilize(i)
            | Ev::FixFingers(i)
            | Ev::CheckPred(i)
            | Ev::Repair(i)
            | Ev::Rejoin(i)
            | Ev::LeaveDeadline(i)
            | Ev::ProbeMerge(i) => *i,
        }
    }
}

/// The simulated network and all its nodes.
pub struct Sim {
    pub cfg: SimConfig,
    /// Virtual time, ms.
    pub now: u64,
    rng: StdRng,
    /// Event times and sequence numbers, so equal times keep insertion order.
    queue: BinaryHeap<Reverse<(u64, u64)>>,
    /// The events themselves, by sequence number.
    events: HashMap<u64, Ev>,
    seq: u64,
    /// Every node ever created; index = address.
    nodes: Vec<SimNode>,
    /// Loss applies only while this is set (churn phases).
    pub lossy: bool,
    /// Hop counts of measured lookups.
    pub hops: Vec<u32>,
    /// Measured lookups whose owner was wrong (at answer time).
    pub wrong_owners: u64,
    /// Measured lookups that failed.
    pub failed_lookups: u64,
    /// Violations of Zave's invariant seen by `check_zave`.
    pub zave_violations: Vec<String>,
    /// Source of request machine IDs.
    next_op: OpId,
    /// Blocks whose put was acknowledged, by key.
    pub acked_blocks: BTreeMap<Id, Vec<u8>>,
    /// Records written by the workload, and what of them was acknowledged.
    pub records: Vec<RecordState>,
    /// Puts that failed (not acknowledged), with why.
    pub failed_puts: Vec<String>,
    /// Results of verification gets: failures.
    pub failed_gets: Vec<String>,
    /// Verification gets finished.
    pub gets_done: usize,
    /// What the repair passes did, summed.
    pub repaired: crate::dht::repair::RepairStats,
    /// Hand-offs that reached no successor.
    pub failed_hand_offs: usize,
}

/// Whether the run prints its debug lines (`PEERSTORE_SIM_DEBUG` set).
fn debug_on() -> bool {
    std::env::var("PEERSTORE_SIM_DEBUG").is_ok()
}

fn addr_of(i: usize) -> String {
    format!("sim:{i}")
}

fn index_of(addr: &str) -> Option<usize> {
    addr.strip_prefix("sim:")?.parse().ok()
}

impl Sim {
    /// An empty network.
    pub fn new(cfg: SimConfig) -> Self {
        let rng = StdRng::seed_from_u64(cfg.seed);
        Sim {
            cfg,
            now: 0,
            rng,
            queue: BinaryHeap::new(),
            events: HashMap::new(),
            seq: 0,
            nodes: Vec::new(),
            lossy: false,
            hops: Vec::new(),
            wrong_owners: 0,
            failed_lookups: 0,
            zave_violations: Vec::new(),
            next_op: 1,
            acked_blocks: BTreeMap::new(),
            records: Vec::new(),
            failed_puts: Vec::new(),
            failed_gets: Vec::new(),
            gets_done: 0,
            repaired: Default::default(),
            failed_hand_offs: 0,
        }
    }

    fn schedule(&mut self, at: u64, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse((at, self.seq)));
        self.events.insert(self.seq, ev);
    }

    fn jitter(&mut self, period: u64) -> u64 {
        period / 2 + self.rng.gen_range(0..=period)
    }

    fn delay(&mut self) -> u64 {
        self.rng.gen_range(self.cfg.min_delay..=self.cfg.max_delay)
    }

    /// Whether a message from `a` to `b` is lost (loss, or a partition).
    fn dropped(&mut self, a: usize, b: usize) -> bool {
        if a == b {
            return false;
        }
        let cut = |n: &SimNode, now| n.cut_until.is_some_and(|t| now < t);
        if cut(&self.nodes[a], self.now) || cut(&self.nodes[b], self.now) {
            return true;
        }
        let side = |n: &SimNode, now| n.side.filter(|&(_, until)| now < until).map(|(s, _)| s);
        if let (Some(x), Some(y)) = (
            side(&self.nodes[a], self.now),
            side(&self.nodes[b], self.now),
        ) && x != y
        {
            return true;
        }
        self.lossy && self.rng.gen_bool(self.cfg.loss)
    }

    fn spawn(&mut self) -> usize {
        let i = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let me = Peer {
            id: Id::hash(&seed),
            addr: addr_of(i),
        };
        self.nodes.push(SimNode {
            chord: ChordNode::new(me, self.cfg.chord.clone()),
            alive: true,
            store: MemItems::default(),
            routes: RouteCache::default(),
            outstanding: HashSet::new(),
            measuring: HashSet::new(),
            ops: HashMap::new(),
            op_calls: HashSet::new(),
            repairing: false,
            leaving: false,
            paused_until: None,
            cut_until: None,
            side: None,
            liar: false,
        });
        let (s, f, c, r) = (
            self.cfg.stabilize_every,
            self.cfg.fix_fingers_every,
            self.cfg.check_pred_every,
            self.cfg.repair_every,
        );
        let now = self.now;
        let t = self.jitter(s);
        self.schedule(now + t, Ev::Stabilize(i));
        let t = self.jitter(f);
        self.schedule(now + t, Ev::FixFingers(i));
        let t = self.jitter(c);
        self.schedule(now + t, Ev::CheckPred(i));
        let t = self.jitter(r);
        self.schedule(now + t, Ev::Repair(i));
        if self.cfg.merge_every > 0 {
            let t = self.jitter(self.cfg.merge_every);
            self.schedule(now + t, Ev::ProbeMerge(i));
        }
        i
    }

    /// Creates the first node of a ring.
    pub fn create_first(&mut self) -> usize {
        let i = self.spawn();
        self.nodes[i].chord.create();
        self.pump(i);
        i
    }

    /// Adds a node that joins through a random live member.
    pub fn join_new(&mut self) -> usize {
        let i = self.spawn();
        self.start_join(i);
        i
    }

    fn start_join(&mut self, i: usize) {
        // A new node joins through a member it can reach.
        let members: Vec<usize> = self.healthy().into_iter().filter(|&j| j != i).collect();
        if members.is_empty() {
            self.nodes[i].chord.create();
        } else {
            let via = members[self.rng.gen_range(0..members.len())];
            let bootstrap = self.nodes[via].chord.me().clone();
            self.nodes[i].chord.join(bootstrap);
        }
        self.pump(i);
    }

    /// Whether `key` is traced (`PEERSTORE_SIM_TRACE` = a key prefix).
    pub(crate) fn traced(key: Id) -> bool {
        std::env::var("PEERSTORE_SIM_TRACE")
            .is_ok_and(|t| !t.is_empty() && key.to_hex().starts_with(&t))
    }

    /// Logs `what` about node `i` for every traced key it holds.
    fn trace_holdings(&self, i: usize, what: &str) {
        if std::env::var("PEERSTORE_SIM_TRACE").is_err() {
            return;
        }
        for (k, _) in crate::store::ItemStore::items(&self.nodes[i].store) {
            if Self::traced(k) {
                eprintln!(
                    "TRACE t={} {} node {i} holding {}",
                    self.now,
                    what,
                    k.short()
                );
            }
        }
    }

    /// Crashes a node: it stops answering, its items are gone.
    pub fn crash(&mut self, i: usize) {
        if debug_on() {
            eprintln!("  t={} crash of node {i}", self.now);
        }
        self.trace_holdings(i, "crash of");
        let n = &mut self.nodes[i];
        n.alive = false;
        n.store.clear();
        n.ops.clear();
        n.op_calls.clear();
    }

    /// Stops a node for `ms` (SIGSTOP, then SIGCONT): it keeps its items
    /// and state, and everything addressed to it waits until it runs again.
    pub fn pause(&mut self, i: usize, ms: u64) {
        if debug_on() {
            eprintln!("  t={} pause of node {i} for {ms} ms", self.now);
        }
        self.nodes[i].paused_until = Some(self.now + ms);
    }

    /// Cuts node `i` off from every other node for `ms`.
    pub fn cut_off(&mut self, i: usize, ms: u64) {
        if debug_on() {
            eprintln!("  t={} node {i} cut off for {ms} ms", self.now);
        }
        self.nodes[i].cut_until = Some(self.now + ms);
    }

    /// Splits the network into `sides` for `ms`: a message between nodes
    /// of two different sides is lost (a node in no side reaches all).
    pub fn partition(&mut self, sides: &[Vec<usize>], ms: u64) {
        let until = self.now + ms;
        for (k, side) in sides.iter().enumerate() {
            for &i in side {
                self.nodes[i].side = Some((k, until));
            }
        }
    }

    /// The rings the live members form now, as each node's successor
    /// pointers chain them: the number of distinct cycles reached.
    pub fn ring_count(&self) -> usize {
        let members = self.live_members();
        let by_id: HashMap<Id, usize> = members
            .iter()
            .map(|&i| (self.nodes[i].chord.me().id, i))
            .collect();
        let mut cycle_of: HashMap<usize, usize> = HashMap::new();
        let mut cycles = 0;
        for &start in &members {
            // Follow first successors until a node repeats.
            let mut path = Vec::new();
            let mut seen = HashSet::new();
            let mut at = start;
            loop {
                if let Some(&c) = cycle_of.get(&at) {
                    for p in path {
                        cycle_of.insert(p, c);
                    }
                    break;
                }
                if !seen.insert(at) {
                    cycles += 1;
                    for p in path {
                        cycle_of.insert(p, cycles);
                    }
                    break;
                }
                path.push(at);
                match self.nodes[at]
                    .chord
                    .succs()
                    .first()
                    .and_then(|p| by_id.get(&p.id))
                {
                    Some(&next) => at = next,
                    None => {
                        // Alone: a ring of one.
                        cycles += 1;
                        for p in path {
                            cycle_of.insert(p, cycles);
                        }
                        break;
                    }
                }
            }
        }
        cycles
    }

    /// Makes node `i` a liar ([`lies`]).
    pub fn make_liar(&mut self, i: usize) {
        if debug_on() {
            eprintln!("  t={} node {i} lies from now on", self.now);
        }
        self.nodes[i].liar = true;
    }

    /// Graceful leave: hand the items to the successors (a request
    /// machine), then tell the neighbours.
    pub fn leave(&mut self, i: usize) {
        if debug_on() {
            eprintln!("  t={} node {i} leaves", self.now);
        }
        self.trace_holdings(i, "leave of");
        self.nodes[i].leaving = true;
        self.start_hand_off(i);
    }

    /// Starts `n` measured lookups for random keys from random members.
    pub fn measure_lookups(&mut self, n: usize) {
        for _ in 0..n {
            let members = self.live_members();
            let i = members[self.rng.gen_range(0..members.len())];
            let mut k = [0u8; 32];
            self.rng.fill(&mut k);
            let id = self.nodes[i].chord.start_lookup(Id(k));
            self.nodes[i].measuring.insert(id);
            self.pump(i);
        }
    }

    /// Indexes of live nodes that are ring members.
    pub fn live_members(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive && self.nodes[i].chord.is_member())
            .collect()
    }

    /// Indexes of live nodes (members or not).
    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| self.nodes[i].alive)
            .collect()
    }

    /// Live members that are neither paused, cut off, leaving nor lying:
    /// the nodes a workload runs on and churn may pick.
    pub fn healthy(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|&i| {
                let n = &self.nodes[i];
                n.alive
                    && n.chord.is_member()
                    && !n.leaving
                    && !n.liar
                    && n.paused_until.is_none_or(|t| t <= self.now)
                    && n.cut_until.is_none_or(|t| t <= self.now)
            })
            .collect()
    }

    /// A node's ring state (for tests).
    pub fn node(&self, i: usize) -> &ChordNode {
        &self.nodes[i].chord
    }

    /// A random live member index.
    pub fn random_member(&mut self) -> Option<usize> {
        let m = self.live_members();
        if m.is_empty() {
            None
        } else {
            Some(m[self.rng.gen_range(0..m.len())])
        }
    }

    /// A random healthy node.
    pub fn random_healthy(&mut self) -> Option<usize> {
        let m = self.healthy();
        if m.is_empty() {
            None
        } else {
            Some(m[self.rng.gen_range(0..m.len())])
        }
    }

    /// A random number from the simulation's RNG (for tests' own choices).
    pub fn rand_u64(&mut self) -> u64 {
        self.rng.r#gen()
    }

    /// Sends what node `i`'s ring state machine wants sent and handles its
    /// events.
    fn pump(&mut self, i: usize) {
        while let Some(out) = self.nodes[i].chord.poll_outgoing() {
            self.nodes[i].outstanding.insert(out.token);
            let timeout_at = self.now + self.cfg.rpc_timeout;
            self.schedule(
                timeout_at,
                Ev::Timeout {
                    node: i,
                    token: out.token,
                },
            );
            let Some(to) = index_of(&out.to.addr) else {
                continue;
            };
            if self.dropped(i, to) {
                continue;
            }
            let at = self.now + self.delay();
            self.schedule(
                at,
                Ev::Deliver {
                    from: i,
                    to,
                    token: out.token,
                    req: out.req,
                },
            );
        }
        while let Some(ev) = self.nodes[i].chord.poll_event() {
            match ev {
                Event::LookupDone { id, result } => {
                    if !self.nodes[i].measuring.remove(&id) {
                        continue;
                    }
                    match result {
                        Ok(r) => {
                            self.hops.push(r.hops);
                            let truth = self.true_owner(r.key).map(|o| self.nodes[o].chord.me().id);
                            if truth != Some(r.owner.id) {
                                self.wrong_owners += 1;
                            }
                        }
                        Err(_) => self.failed_lookups += 1,
                    }
                }
                Event::JoinFailed => {
                    let at = self.now + 1000;
                    self.schedule(at, Ev::Rejoin(i));
                }
                Event::LeaveDone => self.nodes[i].alive = false,
                Event::Joined | Event::Topology => self.nodes[i].routes.clear(),
            }
        }
    }

    /// Runs events until virtual time `until`.
    pub fn run_until(&mut self, until: u64) {
        while let Some(Reverse((at, _))) = self.queue.peek() {
            if *at > until {
                break;
            }
            let Some(Reverse((at, seq))) = self.queue.pop() else {
                break;
            };
            let Some(ev) = self.events.remove(&seq) else {
                continue;
            };
            self.now = at;
            // A stopped process does nothing until it runs again.
            let t = ev.target();
            if let Some(resume) = self.nodes[t].paused_until {
                if at < resume {
                    self.schedule(resume, ev);
                    continue;
                }
                self.nodes[t].paused_until = None;
            }
            self.step(ev);
        }
        self.now = until;
    }

    /// Runs for `ms` more virtual milliseconds.
    pub fn run_for(&mut self, ms: u64) {
        let until = self.now + ms;
        self.run_until(until);
    }

    fn step(&mut self, ev: Ev) {
        match ev {
            Ev::Deliver {
                from,
                to,
                token,
                req,
            } => {
                if !self.nodes[to].alive {
                    return;
                }
                let resp = if self.nodes[to].liar {
                    self.lie_chord(to, req)
                } else {
                    self.nodes[to].chord.handle_request(req)
                };
                self.pump(to);
                if self.dropped(to, from) {
                    return;
                }
                let at = self.now + self.delay();
                self.schedule(
                    at,
                    Ev::Reply {
                        to: from,
                        token,
                        resp,
                    },
                );
            }
            Ev::Reply { to, token, resp } => {
                if self.nodes[to].alive && self.nodes[to].outstanding.remove(&token) {
                    self.nodes[to].chord.handle_reply(token, Ok(resp));
                    self.pump(to);
                }
            }
            Ev::Timeout { node, token } => {
                if self.nodes[node].alive && self.nodes[node].outstanding.remove(&token) {
                    self.nodes[node]
                        .chord
                        .handle_reply(token, Err(crate::chord::Failure::Timeout));
                    self.pump(node);
                }
            }
            Ev::OpCall {
                from,
                to,
                op,
                call,
                req,
            } => self.serve_op_call(from, to, op, call, req),
            Ev::OpReply {
                node,
                op,
                call,
                reply,
            } => {
                if self.nodes[node].alive && self.nodes[node].op_calls.remove(&(op, call)) {
                    self.feed_op(node, op, call, reply);
                }
            }
            Ev::OpTimeout { node, op, call } => {
                if self.nodes[node].alive && self.nodes[node].op_calls.remove(&(op, call)) {
                    self.feed_op(node, op, call, Err(crate::rpc::CallError::Timeout));
                }
            }
            Ev::OpWake { node, op } => {
                if self.nodes[node].alive {
                    self.step_op(node, op);
                }
            }
            Ev::Stabilize(i) => self.periodic(i, self.cfg.stabilize_every, Ev::Stabilize(i), |c| {
                c.stabilize()
            }),
            Ev::FixFingers(i) => {
                self.periodic(i, self.cfg.fix_fingers_every, Ev::FixFingers(i), |c| {
                    c.fix_fingers()
                })
            }
            Ev::CheckPred(i) => {
                self.periodic(i, self.cfg.check_pred_every, Ev::CheckPred(i), |c| {
                    c.check_predecessor()
                })
            }
            Ev::ProbeMerge(i) => self.periodic(i, self.cfg.merge_every, Ev::ProbeMerge(i), |c| {
                c.probe_merge()
            }),
            Ev::Repair(i) => {
                if !self.nodes[i].alive {
                    return;
                }
                let at = self.now + self.cfg.repair_every;
                self.schedule(at, Ev::Repair(i));
                let n = &self.nodes[i];
                if std::env::var("PEERSTORE_SIM_DEBUG").is_ok_and(|v| v == "repair") {
                    eprintln!(
                        "  t={} node {i} repair tick: member {} repairing {} leaving {} succs {:?} pred {:?} whole {} {}",
                        self.now,
                        n.chord.is_member(),
                        n.repairing,
                        n.leaving,
                        n.chord
                            .succs()
                            .iter()
                            .map(|p| p.addr.clone())
                            .collect::<Vec<_>>(),
                        n.chord.pred().map(|p| p.addr.clone()),
                        n.chord.whole_ring(),
                        n.chord.debug_flags()
                    );
                }
                if n.chord.is_member() && !n.repairing && !n.leaving && !n.liar {
                    self.start_repair(i);
                }
            }
            Ev::Rejoin(i) => {
                if self.nodes[i].alive && self.nodes[i].chord.status() == Status::Idle {
                    self.start_join(i);
                }
            }
            Ev::LeaveDeadline(i) => self.nodes[i].alive = false,
        }
    }

    fn periodic(&mut self, i: usize, period: u64, again: Ev, f: impl FnOnce(&mut ChordNode)) {
        if !self.nodes[i].alive {
            return;
        }
        let at = self.now + period;
        self.schedule(at, again);
        f(&mut self.nodes[i].chord);
        self.pump(i);
    }

    /// Live members sorted by ID: the ring as it truly is.
    fn true_ring(&self) -> Vec<usize> {
        let mut m = self.live_members();
        m.sort_by_key(|&i| self.nodes[i].chord.me().id);
        m
    }

    /// The live member that truly succeeds `key`.
    pub fn true_owner(&self, key: Id) -> Option<usize> {
        let ring = self.true_ring();
        ring.iter()
            .copied()
            .find(|&i| self.nodes[i].chord.me().id >= key)
            .or_else(|| ring.first().copied())
    }

    /// The virtual clock as the request machines see it.
    fn millis(&self) -> Millis {
        self.now
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ring_converges_stores_and_agrees() {
        let mut sim = Sim::new(SimConfig::default());
        sim.create_first();
        for _ in 0..9 {
            sim.join_new();
            sim.run_for(300);
        }
        sim.run_for(10_000);
        for k in 0..30u64 {
            sim.put_block(k.to_be_bytes().to_vec());
        }
        sim.run_for(20_000);
        assert!(sim.failed_puts.is_empty(), "{:?}", sim.failed_puts);
        assert_eq!(sim.acked_blocks.len(), 30);
        sim.check_ring().unwrap();
        sim.measure_lookups(200);
        sim.run_for(5_000);
        assert_eq!(sim.failed_lookups, 0);
        assert_eq!(sim.wrong_owners, 0);
        assert_eq!(sim.hops.len(), 200);
        sim.verify_acked(1);
        sim.run_for(20_000);
        assert!(sim.failed_gets.is_empty(), "{:?}", sim.failed_gets);
        assert_eq!(sim.gets_done, 30);
    }
}
