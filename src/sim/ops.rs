//! The request machines in the simulator, and the workload whose
//! acknowledged items the checks follow.
//!
//! Each node hosts its machines as the node's driver would: every call is
//! an event that arrives after a network delay (or is lost), is answered
//! by the callee's ring state machine or its [`MemItems`](crate::store::MemItems)
//! through the same [`apply_replica`] a real node uses, and comes back, or
//! times out. A machine that asks to wait gets a wake-up event.

use super::{Ev, Sim, SimNode, index_of};
use crate::chord::RingView;
use crate::dht::get::{Get, Got, Want};
use crate::dht::put::{Item, Put, Stored};
use crate::dht::repair::{HandOff, HandOffStats, RepairPass, RepairStats};
use crate::dht::{CallId, Cx, DhtError, Io, Machine, Millis, Policy, RouteCache};
use crate::id::Id;
use crate::node::{apply_replica, remote_error};
use crate::record::Record;
use crate::rpc::{CallError, Reply};
use crate::store::ItemStore;
use crate::wire::{ReplicaResponse, Request, Response};
use ed25519_dalek::SigningKey;
use rand::Rng;
use std::sync::Arc;

/// Names one request machine of the simulation.
pub type OpId = u64;

/// A record the workload writes, and what of it was acknowledged.
#[derive(Debug, Clone)]
pub struct RecordState {
    /// Its owner's key.
    key: SigningKey,
    /// Its name.
    name: Vec<u8>,
    /// The newest acknowledged version.
    pub acked: Option<Record>,
    /// The sequence number of the next version.
    next_seq: u64,
    /// A put of it is running.
    inflight: bool,
    /// A put of it failed: some replicas may hold that version, so the
    /// next one does not compare-and-swap.
    uncertain: bool,
}

/// What an acknowledged put adds to what the checks expect.
#[derive(Debug)]
pub(super) enum Acks {
    Block(Vec<u8>),
    Record { index: usize, record: Record },
}

/// What a verification get must return.
#[derive(Debug)]
pub(super) enum Expect {
    Block(Vec<u8>),
    /// At least this version (the acknowledged one, or a newer one).
    Record(Record),
}

/// A request machine running on a node.
pub(super) enum Op {
    Put { m: Put, ids: CallId, acks: Acks },
    Get { m: Get, ids: CallId, expect: Expect },
    Repair { m: RepairPass, ids: CallId },
    HandOff { m: HandOff, ids: CallId },
}

/// What a machine returned.
enum Done {
    Put(Result<Stored, DhtError>),
    Get(Result<Got, DhtError>),
    Repair(RepairStats),
    HandOff(HandOffStats),
}

/// Steps a machine with a context built from the parts given.
#[allow(clippy::too_many_arguments)]
fn step_machine<M: Machine>(
    m: &mut M,
    ids: &mut CallId,
    now: Millis,
    view: &RingView,
    routes: &RouteCache,
    r: usize,
    policy: &Policy,
    out: &mut Vec<Io>,
    wake: &mut Option<Millis>,
) -> Option<M::Output> {
    let mut cx = Cx::new(now, view, routes, r, policy, ids, out, wake);
    m.step(&mut cx)
}

impl Op {
    #[allow(clippy::too_many_arguments)]
    fn step(
        &mut self,
        now: Millis,
        view: &RingView,
        routes: &RouteCache,
        r: usize,
        policy: &Policy,
        out: &mut Vec<Io>,
        wake: &mut Option<Millis>,
    ) -> Option<Done> {
        match self {
            Op::Put { m, ids, .. } => {
                step_machine(m, ids, now, view, routes, r, policy, out, wake).map(Done::Put)
            }
            Op::Get { m, ids, .. } => {
                step_machine(m, ids, now, view, routes, r, policy, out, wake).map(Done::Get)
            }
            Op::Repair { m, ids } => {
                step_machine(m, ids, now, view, routes, r, policy, out, wake).map(Done::Repair)
            }
            Op::HandOff { m, ids } => {
                step_machine(m, ids, now, view, routes, r, policy, out, wake).map(Done::HandOff)
            }
        }
    }

    fn on_reply(&mut self, call: CallId, reply: Reply) {
        match self {
            Op::Put { m, .. } => m.on_reply(call, reply),
            Op::Get { m, .. } => m.on_reply(call, reply),
            Op::Repair { m, .. } => m.on_reply(call, reply),
            Op::HandOff { m, .. } => m.on_reply(call, reply),
        }
    }
}

impl Sim {
    fn start_op(&mut self, node: usize, op: Op) {
        let id = self.next_op;
        self.next_op += 1;
        self.nodes[node].ops.insert(id, op);
        self.step_op(node, id);
    }

    /// Steps machine `id` of node `i`: sends what it asks for, or takes
    /// its result.
    pub(super) fn step_op(&mut self, i: usize, id: OpId) {
        let now = self.millis();
        let view = self.nodes[i].chord.view();
        let r = self.cfg.replicas;
        let policy = self.cfg.policy.clone();
        let mut out = Vec::new();
        let mut wake = None;
        let done = {
            let SimNode { ops, routes, .. } = &mut self.nodes[i];
            let Some(op) = ops.get_mut(&id) else {
                return;
            };
            op.step(now, &view, routes, r, &policy, &mut out, &mut wake)
        };
        if let Some(d) = done {
            if let Some(op) = self.nodes[i].ops.remove(&id) {
                self.op_done(i, op, d);
            }
            return;
        }
        let waiting = !out.is_empty()
            || wake.is_some()
            || self.nodes[i].op_calls.iter().any(|(o, _)| *o == id);
        assert!(
            waiting,
            "seed {}: a request machine on node {i} stalled (no call in flight, no wake-up)",
            self.cfg.seed
        );
        for io in out {
            self.send_io(i, id, io);
        }
        if let Some(w) = wake {
            let at = w.max(self.now);
            self.schedule(at, Ev::OpWake { node: i, op: id });
        }
    }

    /// Feeds a reply to machine `op` of node `node` and steps it.
    pub(super) fn feed_op(&mut self, node: usize, op: OpId, call: CallId, reply: Reply) {
        let Some(o) = self.nodes[node].ops.get_mut(&op) else {
            return;
        };
        o.on_reply(call, reply);
        self.step_op(node, op);
    }

    fn send_io(&mut self, i: usize, op: OpId, io: Io) {
        match io {
            Io::Remove { id, key } => {
                if Sim::traced(key) {
                    eprintln!("TRACE t={} node {i} drops {}", self.now, key.short());
                }
                let reply = self.nodes[i]
                    .store
                    .remove(key)
                    .map(|()| Response::Replica(ReplicaResponse::Stored))
                    .map_err(|e| CallError::Refused(remote_error(&e)));
                self.nodes[i].op_calls.insert((op, id));
                let now = self.now;
                self.schedule(
                    now,
                    Ev::OpReply {
                        node: i,
                        op,
                        call: id,
                        reply,
                    },
                );
            }
            Io::Call { id, to, req, .. } => {
                if std::env::var("PEERSTORE_SIM_CALLS").is_ok_and(|v| v == i.to_string()) {
                    eprintln!(
                        "  t={} node {i} op {op} call {id} to {} {:?}",
                        self.now,
                        to.addr,
                        format!("{req:?}").chars().take(100).collect::<String>()
                    );
                }
                self.nodes[i].op_calls.insert((op, id));
                let Some(t) = index_of(&to.addr) else {
                    let now = self.now;
                    self.schedule(
                        now,
                        Ev::OpReply {
                            node: i,
                            op,
                            call: id,
                            reply: Err(CallError::Unreachable(to.addr.clone())),
                        },
                    );
                    return;
                };
                let timeout = self.now + self.cfg.rpc_timeout;
                self.schedule(
                    timeout,
                    Ev::OpTimeout {
                        node: i,
                        op,
                        call: id,
                    },
                );
                if self.dropped(i, t) {
                    return;
                }
                let at = self.arrival(i, t);
                self.schedule(
                    at,
                    Ev::OpCall {
                        from: i,
                        to: t,
                        op,
                        call: id,
                        req,
                    },
                );
            }
        }
    }

    /// When a message from `a` sent now reaches `b` (at once to itself).
    fn arrival(&mut self, a: usize, b: usize) -> u64 {
        if a == b {
            self.now
        } else {
            self.now + self.delay()
        }
    }

    /// Node `to` answers a machine's call from `from`.
    pub(super) fn serve_op_call(
        &mut self,
        from: usize,
        to: usize,
        op: OpId,
        call: CallId,
        req: Request,
    ) {
        if !self.nodes[to].alive {
            return;
        }
        if let Request::Replica(crate::wire::ReplicaRequest::StoreBlock { key, .. }) = &req
            && Sim::traced(*key)
        {
            eprintln!(
                "TRACE t={} node {to} stores {} (from node {from})",
                self.now,
                key.short()
            );
        }
        if let Request::Replica(crate::wire::ReplicaRequest::StoreRecord {
            record,
            expected_seq,
            durable,
        }) = &req
            && Sim::traced(record.key())
        {
            eprintln!(
                "TRACE t={} node {to} stores {} version {} (from node {from}, expected {expected_seq:?}, durable {durable})",
                self.now,
                record.key().short(),
                record.seq
            );
        }
        let reply = if self.nodes[to].liar && from != to {
            self.lie_request(to, req)
        } else {
            match req {
                Request::Chord(r) => {
                    let resp = self.nodes[to].chord.handle_request(r);
                    self.pump(to);
                    Ok(Response::Chord(resp))
                }
                Request::Replica(r) => match apply_replica(&self.nodes[to].store, r) {
                    Ok(Some(resp)) => Ok(Response::Replica(resp)),
                    Ok(None) => Err(CallError::Refused(crate::wire::RemoteError::NotFound)),
                    Err(e) => Err(CallError::Refused(remote_error(&e))),
                },
                Request::Client(_) => Err(CallError::Unexpected),
            }
        };
        if self.dropped(to, from) {
            return;
        }
        let at = self.arrival(to, from);
        self.schedule(
            at,
            Ev::OpReply {
                node: from,
                op,
                call,
                reply,
            },
        );
    }

    fn op_done(&mut self, i: usize, op: Op, done: Done) {
        match (op, done) {
            (Op::Put { acks, .. }, Done::Put(r)) => match (acks, r) {
                (Acks::Block(d), Ok(s)) => {
                    if Sim::traced(s.key) {
                        eprintln!(
                            "TRACE t={} node {i} put of {} acknowledged ({} copies)",
                            self.now,
                            s.key.short(),
                            s.copies
                        );
                    }
                    self.acked_blocks.insert(Id::of_block(&d), d);
                }
                (Acks::Record { index, record }, Ok(s)) => {
                    if Sim::traced(record.key()) {
                        eprintln!(
                            "TRACE t={} node {i} put of {} version {} acknowledged ({} copies)",
                            self.now,
                            record.key().short(),
                            record.seq,
                            s.copies
                        );
                    }
                    let st = &mut self.records[index];
                    st.inflight = false;
                    if st.acked.as_ref().is_none_or(|a| a.seq < record.seq) {
                        st.acked = Some(record);
                    }
                }
                (acks, Err(e)) => {
                    if let Acks::Record { index, .. } = acks {
                        self.records[index].inflight = false;
                        self.records[index].uncertain = true;
                    }
                    self.failed_puts
                        .push(format!("t={} put from node {i}: {e}", self.now));
                }
            },
            (Op::Get { expect, .. }, Done::Get(r)) => {
                self.gets_done += 1;
                let ok = match (&expect, &r) {
                    (Expect::Block(want), Ok(Got::Block(d, _))) => d == want,
                    (Expect::Record(want), Ok(Got::Record(got))) => {
                        got.len() == 1 && (got[0].seq > want.seq || got[0] == *want)
                    }
                    _ => false,
                };
                if !ok {
                    let what = match &r {
                        Ok(_) => "a wrong answer".to_string(),
                        Err(e) => e.to_string(),
                    };
                    self.failed_gets.push(format!(
                        "t={} get from node {i} of {:?}: {what}",
                        self.now, expect
                    ));
                }
            }
            (Op::Repair { .. }, Done::Repair(s)) => {
                if std::env::var("PEERSTORE_SIM_DEBUG").is_ok_and(|v| v == "repair") {
                    eprintln!("  t={} node {i} repair pass: {s:?}", self.now);
                }
                self.nodes[i].repairing = false;
                self.repaired.pushed += s.pushed;
                self.repaired.dropped += s.dropped;
                self.repaired.failures += s.failures;
            }
            (Op::HandOff { .. }, Done::HandOff(s)) => {
                if s.targets > 0 && s.reached == 0 {
                    self.failed_hand_offs += 1;
                }
                self.nodes[i].chord.leave();
                self.pump(i);
                let deadline = self.now + 2 * self.cfg.rpc_timeout;
                self.schedule(deadline, Ev::LeaveDeadline(i));
            }
            _ => {}
        }
    }

    pub(super) fn start_repair(&mut self, i: usize) {
        let items = self.nodes[i].store.items();
        if items.is_empty() {
            return;
        }
        let mut nonce = [0u8; 32];
        self.rng.fill(&mut nonce);
        self.nodes[i].repairing = true;
        self.start_op(
            i,
            Op::Repair {
                m: RepairPass::new(items, nonce),
                ids: 1,
            },
        );
    }

    pub(super) fn start_hand_off(&mut self, i: usize) {
        let items = self.nodes[i].store.items();
        self.start_op(
            i,
            Op::HandOff {
                m: HandOff::new(items),
                ids: 1,
            },
        );
    }

    // ---- workload ------------------------------------------------------

    /// Puts a block from a random healthy node; its acknowledgement is
    /// recorded in [`Sim::acked_blocks`]. False if no node could start it.
    pub fn put_block(&mut self, data: Vec<u8>) -> bool {
        let Some(i) = self.random_healthy() else {
            return false;
        };
        let item = Item::Block {
            key: Id::of_block(&data),
            data: bytes::Bytes::from(data.clone()),
            claims: Vec::new(),
        };
        self.start_op(
            i,
            Op::Put {
                m: Put::new(item, true),
                ids: 1,
                acks: Acks::Block(data),
            },
        );
        true
    }

    /// Starts a new record (its first version, all replicas at once).
    pub fn new_record(&mut self) -> bool {
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let mut name = vec![0u8; 16];
        self.rng.fill(&mut name[..]);
        self.records.push(RecordState {
            key: SigningKey::from_bytes(&seed),
            name,
            acked: None,
            next_seq: 1,
            inflight: false,
            uncertain: false,
        });
        self.update_record(self.records.len() - 1)
    }

    /// Writes the next version of record `index` (a compare-and-swap on
    /// the acknowledged version, unless an earlier put failed), unless a
    /// put of it is running.
    pub fn update_record(&mut self, index: usize) -> bool {
        if self.records[index].inflight {
            return false;
        }
        let Some(i) = self.random_healthy() else {
            return false;
        };
        let mut value = vec![0u8; 24];
        self.rng.fill(&mut value[..]);
        let st = &mut self.records[index];
        let seq = st.next_seq;
        st.next_seq += 1;
        st.inflight = true;
        let record = Record::sign(&st.key, &st.name, seq, Some(value));
        let item = if seq == 1 {
            Item::Record {
                record: Arc::new(record.clone()),
                expected_seq: Some(0),
                owner_first: false,
            }
        } else {
            Item::Record {
                record: Arc::new(record.clone()),
                expected_seq: if st.uncertain {
                    None
                } else {
                    st.acked.as_ref().map(|a| a.seq)
                },
                owner_first: true,
            }
        };
        self.start_op(
            i,
            Op::Put {
                m: Put::new(item, true),
                ids: 1,
                acks: Acks::Record { index, record },
            },
        );
        true
    }

    /// Starts a get of every acknowledged item from `per_item` random
    /// healthy honest nodes; mismatches land in [`Sim::failed_gets`].
    pub fn verify_acked(&mut self, per_item: usize) {
        let blocks: Vec<(Id, Vec<u8>)> = self
            .acked_blocks
            .iter()
            .map(|(k, d)| (*k, d.clone()))
            .collect();
        let records: Vec<Record> = self
            .records
            .iter()
            .filter_map(|r| r.acked.clone())
            .collect();
        for _ in 0..per_item {
            for (k, d) in &blocks {
                if let Some(i) = self.random_healthy() {
                    self.start_op(
                        i,
                        Op::Get {
                            m: Get::new(*k, Want::Block),
                            ids: 1,
                            expect: Expect::Block(d.clone()),
                        },
                    );
                }
            }
            for r in &records {
                if let Some(i) = self.random_healthy() {
                    self.start_op(
                        i,
                        Op::Get {
                            m: Get::new(r.key(), Want::Record),
                            ids: 1,
                            expect: Expect::Record(r.clone()),
                        },
                    );
                }
            }
        }
    }

    /// Whether any machine (other than repair) is still running.
    pub fn ops_running(&self) -> usize {
        self.nodes
            .iter()
            .filter(|n| n.alive)
            .map(|n| {
                n.ops
                    .values()
                    .filter(|o| !matches!(o, Op::Repair { .. }))
                    .count()
            })
            .sum()
    }
}
