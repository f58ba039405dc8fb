//! A deterministic, in-process network for the `chord` state machine.
//!
//! Hundreds of [`ChordNode`]s exchange their calls through an event queue
//! ordered by virtual time. A seeded RNG chooses delays, losses, churn and
//! workload, so a run is fully determined by its seed: a failing seed is
//! printed and replays exactly. Calls time out like real RPCs; a crashed node
//! simply stops answering. Each node also holds a set of keys (the block
//! store, reduced to IDs) and runs the same grouping-by-owner repair walk as
//! the real node ([`crate::replica`]); key transfers are instant and reliable
//! to live nodes, since the byte transport is tested over real sockets.
//!
//! [`Sim::check_ring`] checks the ring invariants of DESIGN.md.

use crate::chord::{ChordNode, Config, Event, LookupId, Status, Token};
use crate::id::Id;
use crate::replica::{first_from, group_keys, replica_set};
use crate::wire::{ChordRequest, ChordResponse, Peer};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use std::cmp::Reverse;
use std::collections::{BTreeSet, BinaryHeap, HashMap, HashSet};

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
    /// Replication factor r.
    pub replicas: usize,
    /// Ring protocol tunables (successor list length s).
    pub chord: Config,
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
            replicas: 3,
            chord: Config::default(),
        }
    }
}

/// What a finished lookup was for, in the simulator.
#[derive(Debug, Clone)]
enum Waiter {
    /// A measured lookup: record hops and check the owner.
    Measure,
    /// Placing a new key on its replicas.
    Insert(Id),
    /// One step of the repair walk.
    Repair(Id),
}

/// One simulated node.
struct SimNode {
    chord: ChordNode,
    alive: bool,
    /// Keys this node stores.
    keys: BTreeSet<Id>,
    /// Calls in flight, so a reply after a timeout is ignored.
    outstanding: HashSet<Token>,
    /// Lookups the simulator started, by ID.
    waiters: HashMap<LookupId, Waiter>,
    /// Keys still to visit in the current repair walk.
    repair_todo: BTreeSet<Id>,
    /// Handing its keys over and leaving: takes no more keys from repair.
    leaving: bool,
}

/// Scheduled happenings.
#[derive(Debug, Clone)]
enum Ev {
    Deliver {
        from: usize,
        to: usize,
        token: Token,
        req: ChordRequest,
    },
    Reply {
        to: usize,
        token: Token,
        resp: ChordResponse,
    },
    Timeout {
        node: usize,
        token: Token,
    },
    Stabilize(usize),
    FixFingers(usize),
    CheckPred(usize),
    Repair(usize),
    Rejoin(usize),
    LeaveDeadline(usize),
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
            keys: BTreeSet::new(),
            outstanding: HashSet::new(),
            waiters: HashMap::new(),
            repair_todo: BTreeSet::new(),
            leaving: false,
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
        let members: Vec<usize> = self
            .live_members()
            .into_iter()
            .filter(|&j| j != i)
            .collect();
        if members.is_empty() {
            self.nodes[i].chord.create();
        } else {
            let via = members[self.rng.gen_range(0..members.len())];
            let mut bootstrap = self.nodes[via].chord.me().clone();
            bootstrap.id = Id::ZERO; // the joiner knows only the address
            self.nodes[i].chord.join(bootstrap);
        }
        self.pump(i);
    }

    /// Crashes a node: it stops answering, its keys are gone.
    pub fn crash(&mut self, i: usize) {
        self.nodes[i].alive = false;
        self.nodes[i].keys.clear();
    }

    /// Graceful leave: hand keys to the successors, then tell the neighbours.
    pub fn leave(&mut self, i: usize) {
        let succs: Vec<Peer> = self.nodes[i].chord.succs().to_vec();
        let keys: Vec<Id> = self.nodes[i].keys.iter().copied().collect();
        for p in succs.iter().take(self.cfg.replicas) {
            if let Some(j) = index_of(&p.addr)
                && self.nodes[j].alive
            {
                self.nodes[j].keys.extend(keys.iter().copied());
            }
        }
        self.nodes[i].leaving = true;
        self.nodes[i].chord.leave();
        self.pump(i);
        let deadline = self.now + 2 * self.cfg.rpc_timeout;
        self.schedule(deadline, Ev::LeaveDeadline(i));
    }

    /// Stores a new key through a random member's lookup.
    pub fn insert_key(&mut self, key: Id) {
        let members = self.live_members();
        let i = members[self.rng.gen_range(0..members.len())];
        let id = self.nodes[i].chord.start_lookup(key);
        self.nodes[i].waiters.insert(id, Waiter::Insert(key));
        self.pump(i);
    }

    /// Starts `n` measured lookups for random keys from random members.
    pub fn measure_lookups(&mut self, n: usize) {
        for _ in 0..n {
            let members = self.live_members();
            let i = members[self.rng.gen_range(0..members.len())];
            let mut k = [0u8; 32];
            self.rng.fill(&mut k);
            let id = self.nodes[i].chord.start_lookup(Id(k));
            self.nodes[i].waiters.insert(id, Waiter::Measure);
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

    /// A random number from the simulation's RNG (for tests' own choices).
    pub fn rand_u64(&mut self) -> u64 {
        self.rng.r#gen()
    }

    /// Sends what node `i` wants sent and handles its events.
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
            if self.lossy && self.rng.gen_bool(self.cfg.loss) {
                continue;
            }
            let d = self.rng.gen_range(self.cfg.min_delay..=self.cfg.max_delay);
            let at = self.now + d;
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
                    let Some(w) = self.nodes[i].waiters.remove(&id) else {
                        continue;
                    };
                    self.on_lookup_done(i, w, result);
                }
                Event::JoinFailed => {
                    let at = self.now + 1000;
                    self.schedule(at, Ev::Rejoin(i));
                }
                Event::LeaveDone => self.nodes[i].alive = false,
                Event::Joined | Event::Topology => {}
            }
        }
    }

    fn on_lookup_done(
        &mut self,
        i: usize,
        w: Waiter,
        result: Result<crate::chord::LookupResult, crate::chord::LookupError>,
    ) {
        match (w, result) {
            (Waiter::Measure, Ok(r)) => {
                self.hops.push(r.hops);
                if self.true_owner(r.key).map(|o| self.nodes[o].chord.me().id) != Some(r.owner.id) {
                    self.wrong_owners += 1;
                }
            }
            (Waiter::Measure, Err(_)) => self.failed_lookups += 1,
            (Waiter::Insert(key), Ok(r)) => {
                for p in replica_set(&r.owner, &r.next, self.cfg.replicas) {
                    if let Some(j) = index_of(&p.addr)
                        && self.nodes[j].alive
                    {
                        self.nodes[j].keys.insert(key);
                    }
                }
            }
            (Waiter::Insert(_), Err(_)) => self.failed_lookups += 1,
            (Waiter::Repair(first), Ok(r)) => {
                let group = group_keys(&self.nodes[i].repair_todo, first, r.owner.id);
                let set = replica_set(&r.owner, &r.next, self.cfg.replicas);
                let me = self.nodes[i].chord.me().id;
                let mut all_ok = true;
                for p in &set {
                    match index_of(&p.addr) {
                        Some(j) if j != i && self.nodes[j].alive && !self.nodes[j].leaving => {
                            self.nodes[j].keys.extend(group.iter().copied());
                        }
                        Some(j) if j == i => {}
                        _ => all_ok = false,
                    }
                }
                let keep = set.iter().any(|p| p.id == me);
                for k in &group {
                    self.nodes[i].repair_todo.remove(k);
                    if !keep && all_ok {
                        self.nodes[i].keys.remove(k);
                    }
                }
                if group.is_empty() {
                    self.nodes[i].repair_todo.remove(&first);
                }
                self.repair_step(i);
            }
            (Waiter::Repair(_), Err(_)) => self.nodes[i].repair_todo.clear(),
        }
    }

    /// Starts the next lookup of node `i`'s repair walk.
    fn repair_step(&mut self, i: usize) {
        let me = self.nodes[i].chord.me().id;
        let Some(first) = first_from(&self.nodes[i].repair_todo, me) else {
            return;
        };
        let id = self.nodes[i].chord.start_lookup(first);
        self.nodes[i].waiters.insert(id, Waiter::Repair(first));
        self.pump(i);
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
                let resp = self.nodes[to].chord.handle_request(req);
                self.pump(to);
                if self.lossy && self.rng.gen_bool(self.cfg.loss) {
                    return;
                }
                let d = self.rng.gen_range(self.cfg.min_delay..=self.cfg.max_delay);
                let at = self.now + d;
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
            Ev::Repair(i) => {
                if !self.nodes[i].alive {
                    return;
                }
                let at = self.now + self.cfg.repair_every;
                self.schedule(at, Ev::Repair(i));
                if self.nodes[i].chord.is_member()
                    && self.nodes[i].repair_todo.is_empty()
                    && !self.nodes[i].leaving
                {
                    self.nodes[i].repair_todo = self.nodes[i].keys.clone();
                    self.repair_step(i);
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

    /// Every key stored anywhere among live nodes.
    pub fn all_keys(&self) -> BTreeSet<Id> {
        self.live()
            .iter()
            .flat_map(|&i| self.nodes[i].keys.iter().copied())
            .collect()
    }

    /// Zave's inductive invariant, checked now: every member has a live entry
    /// in its successor list, and at least `min(s + 1, N)` members are
    /// principal (skipped by no other member's successor list).
    pub fn check_zave(&mut self) {
        let ring = self.true_ring();
        let n = ring.len();
        if n < 2 {
            return;
        }
        let pos: HashMap<Id, usize> = ring
            .iter()
            .enumerate()
            .map(|(k, &i)| (self.nodes[i].chord.me().id, k))
            .collect();
        let mut skipped = vec![false; n];
        for (k, &i) in ring.iter().enumerate() {
            let c = &self.nodes[i].chord;
            let live_entries: Vec<usize> = c
                .succs()
                .iter()
                .filter_map(|p| pos.get(&p.id).copied())
                .collect();
            if live_entries.is_empty() {
                self.zave_violations.push(format!(
                    "t={} node {} has no live successor",
                    self.now,
                    c.me().id.short()
                ));
                continue;
            }
            // Members strictly between consecutive live entries are skipped.
            let mut prev = k;
            for &e in &live_entries {
                let mut x = (prev + 1) % n;
                while x != e && x != k {
                    skipped[x] = true;
                    x = (x + 1) % n;
                }
                prev = e;
            }
        }
        let principals = skipped.iter().filter(|s| !**s).count();
        let need = (self.cfg.chord.succ_list_len + 1).min(n);
        if principals < need {
            self.zave_violations.push(format!(
                "t={} only {principals} principal members (need {need})",
                self.now
            ));
        }
    }

    /// The ring invariants of DESIGN.md, after stabilization: one ordered
    /// cycle, exact successor lists and predecessors, every key owned by
    /// exactly one live node and held by its r replicas, lookups agree.
    pub fn check_ring(&self) -> Result<(), String> {
        let ring = self.true_ring();
        let n = ring.len();
        if n == 0 {
            return Err("no live members".into());
        }
        let s = self.cfg.chord.succ_list_len;
        for (k, &i) in ring.iter().enumerate() {
            let c = &self.nodes[i].chord;
            let want: Vec<Id> = (1..n.min(s + 1))
                .map(|d| self.nodes[ring[(k + d) % n]].chord.me().id)
                .collect();
            let got: Vec<Id> = c.succs().iter().map(|p| p.id).collect();
            if got != want {
                return Err(format!(
                    "node {} successor list {:?}, expected {:?}",
                    c.me().id.short(),
                    got.iter().map(|x| x.short()).collect::<Vec<_>>(),
                    want.iter().map(|x| x.short()).collect::<Vec<_>>()
                ));
            }
            if n > 1 {
                let want_pred = self.nodes[ring[(k + n - 1) % n]].chord.me().id;
                if c.pred().map(|p| p.id) != Some(want_pred) {
                    return Err(format!(
                        "node {} predecessor {:?}, expected {}",
                        c.me().id.short(),
                        c.pred().map(|p| p.id.short()),
                        want_pred.short()
                    ));
                }
            }
        }
        // Following successors from any member visits all members once.
        let start = ring[0];
        let mut seen = BTreeSet::new();
        let mut cur = start;
        for _ in 0..n {
            seen.insert(cur);
            let next = self.nodes[cur].chord.successor().addr.clone();
            cur = index_of(&next).ok_or("bad address")?;
        }
        if cur != start || seen.len() != n {
            return Err(format!(
                "successor cycle covers {} of {n} members",
                seen.len()
            ));
        }
        // Ownership and replication of every stored key.
        let r = self.cfg.replicas.min(n);
        for key in self.all_keys() {
            let owners: Vec<usize> = ring
                .iter()
                .copied()
                .filter(|&i| self.nodes[i].chord.owns(key))
                .collect();
            if owners.len() != 1 {
                return Err(format!(
                    "key {} owned by {} live nodes",
                    key.short(),
                    owners.len()
                ));
            }
            let o = ring
                .iter()
                .position(|&i| i == owners[0])
                .ok_or("owner not in ring")?;
            for d in 0..r {
                let holder = ring[(o + d) % n];
                if !self.nodes[holder].keys.contains(&key) {
                    return Err(format!(
                        "key {} missing on replica {} (#{d} of {r})",
                        key.short(),
                        self.nodes[holder].chord.me().id.short()
                    ));
                }
            }
            let copies = ring
                .iter()
                .filter(|&&i| self.nodes[i].keys.contains(&key))
                .count();
            if copies != r {
                return Err(format!(
                    "key {} held by {copies} nodes, expected {r}",
                    key.short()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_ring_converges_and_agrees() {
        let mut sim = Sim::new(SimConfig::default());
        sim.create_first();
        for _ in 0..9 {
            sim.join_new();
            sim.run_for(300);
        }
        for k in 0..50u64 {
            sim.insert_key(Id::from_u64(k));
        }
        sim.run_for(20_000);
        sim.check_ring().unwrap();
        assert_eq!(sim.all_keys().len(), 50);
        sim.measure_lookups(200);
        sim.run_for(5_000);
        assert_eq!(sim.failed_lookups, 0);
        assert_eq!(sim.wrong_owners, 0);
        assert_eq!(sim.hops.len(), 200);
    }
}
