//! The shape every request machine shares, and what drives it.
//!
//! A request (a put, a get, a lookup, a repair pass) is a state machine
//! without I/O, in the style of rust-libp2p's kad queries: the driver calls
//! [`Machine::step`] with the time and the node's [`RingView`], the machine
//! queues the calls it wants made (and, if it must wait, the time to wake
//! it) or returns its result; each answer, or the failure of a call, comes
//! back through [`Machine::on_reply`], and the driver steps it again.
//! Waiting is a deadline inside the machine, never a sleep in the request
//! path. The node's driver ([`super::Dht`]) makes the calls over the
//! network; the simulator ([`crate::sim`]) makes them through its event
//! queue, so the same code is tested at scale with loss, delay, crashes
//! and partitions.
//!
//! Contract: a step that returns no result leaves at least one call in
//! flight or a wake-up set, so a machine never stalls its driver.

use super::routes::RouteCache;
use crate::chord::RingView;
use crate::id::Id;
use crate::rpc::{Reply, Rpc};
use crate::wire::{Peer, Request};

/// Time in milliseconds, from an origin the driver chooses.
pub type Millis = u64;

/// Names one call of one machine; its reply comes back with it.
pub type CallId = u64;

/// Something a machine wants done.
#[derive(Debug, Clone)]
pub enum Io {
    /// A call to `to`. A call to this node itself is served by the driver
    /// from the local store, exactly as a peer's call would be.
    Call {
        id: CallId,
        to: Peer,
        req: Request,
        /// Whether a non-durable put is to be covered by a later `Sync`
        /// (false when the machine itself sends the node a durable call
        /// for the same item next).
        sync_later: bool,
    },
    /// Drop this node's own copies of `key` (repair, once the replica set
    /// proved it holds them). Answered `Stored`, or an error.
    Remove { id: CallId, key: Id },
}

impl Io {
    /// The call's ID.
    pub fn id(&self) -> CallId {
        match self {
            Io::Call { id, .. } | Io::Remove { id, .. } => *id,
        }
    }
}

/// How long requests keep trying, and how they pace their retries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// A put that has not stored enough copies by then fails.
    pub put_deadline: Millis,
    /// A get that has neither found the item nor heard every replica say
    /// it is absent by then fails as unavailable.
    pub get_deadline: Millis,
    /// First pause between attempts; doubles up to `backoff_max`.
    pub backoff_min: Millis,
    /// Longest pause between attempts.
    pub backoff_max: Millis,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            put_deadline: 30_000,
            get_deadline: 15_000,
            backoff_min: 100,
            backoff_max: 1_000,
        }
    }
}

impl Policy {
    /// The pause before attempt `attempt` (counting from 1).
    pub fn backoff(&self, attempt: u32) -> Millis {
        let shift = attempt.saturating_sub(1).min(16);
        (self.backoff_min << shift).min(self.backoff_max)
    }
}

/// What a machine sees in one step, and where it puts what it wants done.
pub struct Cx<'a> {
    /// Now.
    pub now: Millis,
    /// The node's ring state now.
    pub view: &'a RingView,
    /// The node's cache of confirmed lookup answers.
    pub routes: &'a RouteCache,
    /// Copies kept of every item (r).
    pub replicas: usize,
    /// Deadlines and retry pacing.
    pub policy: &'a Policy,
    /// Source of call IDs, unique within one machine.
    ids: &'a mut CallId,
    /// Calls queued in this step.
    out: &'a mut Vec<Io>,
    /// When to step the machine again without a reply.
    wake: &'a mut Option<Millis>,
}

impl<'a> Cx<'a> {
    /// A step context; the driver reads `out` and `wake` afterwards.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        now: Millis,
        view: &'a RingView,
        routes: &'a RouteCache,
        replicas: usize,
        policy: &'a Policy,
        ids: &'a mut CallId,
        out: &'a mut Vec<Io>,
        wake: &'a mut Option<Millis>,
    ) -> Cx<'a> {
        Cx {
            now,
            view,
            routes,
            replicas,
            policy,
            ids,
            out,
            wake,
        }
    }

    /// Queues `rpc` to `to`; returns the call's ID.
    pub fn call<R: Rpc>(&mut self, to: &Peer, rpc: R) -> CallId {
        self.call_with(to, rpc, true)
    }

    /// [`call`](Self::call); without `sync_later`, a non-durable put it
    /// makes is not noted for the next `Sync` (the caller follows it with
    /// a durable call to the same node).
    pub fn call_with<R: Rpc>(&mut self, to: &Peer, rpc: R, sync_later: bool) -> CallId {
        let id = self.fresh_id();
        self.out.push(Io::Call {
            id,
            to: to.clone(),
            req: rpc.request(),
            sync_later,
        });
        id
    }

    /// Queues the removal of this node's copies of `key`.
    pub fn remove(&mut self, key: Id) -> CallId {
        let id = self.fresh_id();
        self.out.push(Io::Remove { id, key });
        id
    }

    /// Asks to be stepped again at `at` (the earliest of all such asks).
    pub fn wake_at(&mut self, at: Millis) {
        *self.wake = Some(self.wake.map_or(at, |w| w.min(at)));
    }

    /// Whether this node is `p`.
    pub fn is_me(&self, p: &Peer) -> bool {
        p.id == self.view.me.id
    }

    fn fresh_id(&mut self) -> CallId {
        let id = *self.ids;
        *self.ids += 1;
        id
    }
}

/// A request as a state machine.
pub trait Machine {
    /// What it finally returns.
    type Output;
    /// Feeds the reply (or failure) of call `id`; replies to calls the
    /// machine no longer waits for are ignored.
    fn on_reply(&mut self, id: CallId, reply: Reply);
    /// Advances: queues calls and wake-ups in `cx`, or returns the result.
    fn step(&mut self, cx: &mut Cx<'_>) -> Option<Self::Output>;
}

/// A test harness for one machine: every call is answered at once by
/// `answer` (which sees the target and the request), time advances only
/// when the machine asks to wait.
#[cfg(test)]
pub fn run_sync<M: Machine>(
    m: &mut M,
    view: &RingView,
    routes: &RouteCache,
    r: usize,
    policy: &Policy,
    mut answer: impl FnMut(&Io, Millis) -> Reply,
) -> (M::Output, Millis) {
    let mut now: Millis = 0;
    let mut ids: CallId = 1;
    for _ in 0..100_000 {
        let mut out = Vec::new();
        let mut wake = None;
        let mut cx = Cx::new(now, view, routes, r, policy, &mut ids, &mut out, &mut wake);
        if let Some(o) = m.step(&mut cx) {
            return (o, now);
        }
        assert!(
            !out.is_empty() || wake.is_some(),
            "a machine step left nothing in flight and no wake-up"
        );
        if out.is_empty()
            && let Some(w) = wake
        {
            now = now.max(w);
        }
        for io in &out {
            let reply = answer(io, now);
            m.on_reply(io.id(), reply);
        }
    }
    panic!("machine did not finish in 100000 steps");
}
