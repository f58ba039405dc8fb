//! Keeping every item on its replicas, and handing items over on leave, as
//! request machines.
//!
//! A repair pass walks the items this node holds in ring order, grouped by
//! owner (one lookup per group, see [`crate::replica`]), starting with the
//! keys it is a replica of and working on a few groups at once. For each
//! group it
//! locates the owner afresh (the answer checked with the owner, see
//! [`super::locate`]), asks every member of the replica set which items it
//! lacks and pushes those ([`SyncTo`]). If this node is not itself in the
//! set, it then drops its copies, but only those that every member has
//! *proved* it holds: each member answers a [`Prove`] challenge with a hash
//! over a fresh nonce and the item's bytes, which this node checks against
//! the same hash over its own copy. A member's word ("I hold it", or an
//! empty missing list) is never enough to delete data, and only the members
//! of the set this node located count.
//!
//! A hand-off (a node leaving gracefully) makes sure its first r successors
//! hold everything it holds, and drops nothing.

use super::locate::{CacheUse, Locate};
use super::machine::{CallId, Cx, Machine};
use crate::id::Id;
use crate::record::Record;
use crate::replica::{first_from, group_keys, walk_start};
use crate::rpc::{
    CallError, FetchBlock, FetchRecord, Missing, Prove, ReleaseBlocks, Reply, Rpc, StoreBlock,
    StoreRecord,
};
use crate::wire::{ItemVersion, MAX_BATCH, MAX_PROVE, Peer, Proof, RemoteError};
use std::collections::{BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;

/// Items copied to one peer at once. Four (with a pool of 8) made repair
/// passes slow enough that the 1000-seed churn simulation lost an
/// acknowledged record (seed 119: a pass outlived the budget between two
/// departures); eight per peer held every item in all 1000 seeds.
const PUSH_PARALLELISM: usize = 8;
/// Items copied at once by one repair pass or hand-off, to all peers
/// together: each holds a block read from the local store and its
/// request (~2 MiB). Without a bound, 4 workers syncing to up to 3 peers
/// each could hold ~100 blocks at once (data nodes' peak RSS 45-68 MiB
/// while the ring repaired after a member left, on a slow disk).
pub(crate) const PUSHES_IN_FLIGHT: usize = 32;
/// Failure reasons kept per pass, for the log.
const MAX_REASONS: usize = 4;

/// What one repair pass (or hand-off) did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct RepairStats {
    /// Groups (distinct owners) visited.
    pub groups: usize,
    /// Items copied to another node.
    pub pushed: usize,
    /// Local blocks freed by owners' releases another node handed back.
    pub released: usize,
    /// Local copies dropped because this node is not a replica and every
    /// replica proved it holds them.
    pub dropped: usize,
    /// Calls or items that failed (the next pass retries).
    pub failures: usize,
    /// Why, for the first few failures.
    pub reasons: Vec<String>,
}

impl RepairStats {
    fn fail(&mut self, why: String) {
        self.failures += 1;
        if self.reasons.len() < MAX_REASONS && !self.reasons.contains(&why) {
            self.reasons.push(why);
        }
    }

    fn absorb(&mut self, other: &SyncTo) {
        self.pushed += other.pushed;
        self.released += other.released;
        for r in &other.reasons {
            self.fail(r.clone());
        }
        self.failures += other.failures.saturating_sub(other.reasons.len());
    }
}

/// Makes sure one peer holds a list of items: asks which it lacks
/// (batches of [`MAX_BATCH`]), reads each from the local store and
/// stores it there, [`PUSH_PARALLELISM`] at a time, each copy under a
/// slot of its machine's pool (see [`SyncTo::step`]).
#[derive(Debug)]
pub struct SyncTo {
    /// Who must hold the items.
    pub peer: Peer,
    /// The items, and how far the missing-list questions got.
    items: Vec<(Id, ItemVersion)>,
    asked: usize,
    /// The missing-list call in flight.
    missing_call: Option<(CallId, usize)>,
    /// Items it lacks, not yet pushed.
    to_push: VecDeque<(Id, ItemVersion)>,
    /// Local reads in flight, then stores in flight.
    reads: HashMap<CallId, (Id, ItemVersion)>,
    stores: HashMap<CallId, Id>,
    /// Slots taken from the machine's pool for the copies in flight.
    slots: usize,
    /// Releases the peer handed back, being applied to this node's store.
    releases: HashSet<CallId>,
    replies: Vec<(CallId, Reply)>,
    /// Items copied.
    pub pushed: usize,
    /// Local blocks freed by releases the peer handed back.
    pub released: usize,
    /// Calls that failed.
    pub failures: usize,
    /// Why (distinct, the first few).
    pub reasons: Vec<String>,
}

impl SyncTo {
    /// A sync of `items` to `peer`.
    pub fn new(peer: Peer, items: Vec<(Id, ItemVersion)>) -> SyncTo {
        SyncTo {
            peer,
            items,
            asked: 0,
            missing_call: None,
            to_push: VecDeque::new(),
            reads: HashMap::new(),
            stores: HashMap::new(),
            slots: 0,
            releases: HashSet::new(),
            replies: Vec::new(),
            pushed: 0,
            released: 0,
            failures: 0,
            reasons: Vec::new(),
        }
    }

    fn fail(&mut self, what: &str, e: &CallError) {
        self.failures += 1;
        let why = format!("{} {what}: {e}", self.peer.addr);
        if self.reasons.len() < MAX_REASONS && !self.reasons.contains(&why) {
            self.reasons.push(why);
        }
    }

    /// Stops pushing to a peer that did not answer a copy: it has likely
    /// left or crashed, and each further copy would hold one of the
    /// machine's slots for a whole timeout while the copies to members
    /// that answer wait. The items not sent count as failures; the next
    /// pass tries again. A missing-list question in flight is dropped
    /// (its answer no longer matches a call of this sync).
    fn give_up(&mut self) {
        let asking = self
            .missing_call
            .take()
            .map_or(0, |(_, start)| self.asked - start);
        self.failures += self.to_push.len() + asking + (self.items.len() - self.asked);
        self.to_push.clear();
        self.asked = self.items.len();
    }

    /// Whether it would start a copy if its machine's pool had a slot.
    fn wants_slot(&self) -> bool {
        !self.to_push.is_empty() && self.reads.len() + self.stores.len() < PUSH_PARALLELISM
    }

    /// Whether call `id` is this sync's.
    pub fn owns(&self, id: CallId) -> bool {
        self.missing_call.is_some_and(|(c, _)| c == id)
            || self.reads.contains_key(&id)
            || self.stores.contains_key(&id)
            || self.releases.contains(&id)
    }

    /// Takes the reply of call `id` (one of this sync's).
    pub fn on_reply(&mut self, id: CallId, reply: Reply) {
        self.replies.push((id, reply));
    }

    /// Advances; `true` once finished (see `failures`). `pool` holds the
    /// push slots its machine has free: a copy takes one when its local
    /// read starts and gives it back once the copy is stored or failed.
    /// (A record's versions are stored in one call each, under the one
    /// slot of its read.)
    pub fn step(&mut self, cx: &mut Cx<'_>, pool: &mut usize) -> bool {
        let me = cx.view.me.clone();
        for (id, reply) in std::mem::take(&mut self.replies) {
            if let Some((c, start)) = self.missing_call
                && c == id
            {
                self.missing_call = None;
                match Missing::parse(reply) {
                    Ok(idx) => {
                        let end = (start + MAX_BATCH).min(self.items.len());
                        let chunk = &self.items[start..end];
                        self.to_push.extend(
                            idx.into_iter()
                                .filter_map(|i| chunk.get(i as usize).copied()),
                        );
                    }
                    Err(e) => {
                        // Without the list nothing more can be done now.
                        self.fail("missing list", &e);
                        self.asked = self.items.len();
                    }
                }
            } else if let Some((key, v)) = self.reads.remove(&id) {
                let sent = match v {
                    ItemVersion::Block => FetchBlock::parse(reply).map(|(data, claims)| {
                        vec![cx.call(
                            &self.peer,
                            StoreBlock {
                                key,
                                data: data.into(),
                                claims,
                                durable: true,
                            },
                        )]
                    }),
                    // Every version: the peer keeps those it lacks beside
                    // its own and refuses those it holds newer ones of.
                    _ => FetchRecord::parse(reply).map(|versions| {
                        versions
                            .into_iter()
                            .map(|record| {
                                cx.call(
                                    &self.peer,
                                    StoreRecord {
                                        record,
                                        expected_seq: None,
                                        durable: true,
                                    },
                                )
                            })
                            .collect()
                    }),
                };
                match sent {
                    Ok(calls) => {
                        self.stores.extend(calls.into_iter().map(|c| (c, key)));
                    }
                    // Gone or corrupt here since: nothing to push.
                    Err(e) if e.is_not_found() => {}
                    Err(e) => self.fail("local read", &e),
                }
            } else if self.stores.remove(&id).is_some() {
                match StoreBlock::parse(reply) {
                    Ok(()) => self.pushed += 1,
                    // A newer version there is as good as ours.
                    Err(CallError::Refused(RemoteError::Stale { .. })) => {}
                    // The owner released the block and the peer kept the
                    // release: apply it here too (it is checked here).
                    Err(CallError::Refused(RemoteError::Released(rel))) => {
                        let c = cx.call(&me, ReleaseBlocks(Arc::new(*rel)));
                        self.releases.insert(c);
                    }
                    Err(e) => {
                        self.fail("copy", &e);
                        if matches!(e, CallError::Timeout | CallError::Unreachable(_)) {
                            self.give_up();
                        }
                    }
                }
            } else if self.releases.remove(&id) {
                match ReleaseBlocks::parse(reply) {
                    Ok(f) => self.released += f.blocks as usize,
                    Err(e) => self.fail("apply a release", &e),
                }
            }
        }
        if self.missing_call.is_none() && self.asked < self.items.len() {
            let end = (self.asked + MAX_BATCH).min(self.items.len());
            let c = cx.call(&self.peer, Missing(self.items[self.asked..end].to_vec()));
            self.missing_call = Some((c, self.asked));
            self.asked = end;
        }
        let busy = self.reads.len() + self.stores.len();
        if self.slots > busy {
            *pool += self.slots - busy;
            self.slots = busy;
        }
        while self.reads.len() + self.stores.len() < PUSH_PARALLELISM && *pool > 0 {
            let Some((key, v)) = self.to_push.pop_front() else {
                break;
            };
            *pool -= 1;
            self.slots += 1;
            let c = match v {
                ItemVersion::Block => cx.call(&me, FetchBlock(key)),
                _ => cx.call(&me, FetchRecord(key)),
            };
            self.reads.insert(c, (key, v));
        }
        self.missing_call.is_none()
            && self.asked >= self.items.len()
            && self.to_push.is_empty()
            && self.reads.is_empty()
            && self.stores.is_empty()
            && self.releases.is_empty()
    }
}

/// Checks, chunk by chunk, that every member of a replica set proves it
/// holds the items, and drops the local copies of those proven.
///
/// A member proves a block, or a record at this node's version, with the
/// hash of the challenge over its bytes. A member that answers it holds a
/// newer record version must show it: this node fetches that version and
/// checks its signature and sequence number, and only then counts the
/// member as holding the record (this node's older copy is then obsolete).
#[derive(Debug)]
struct DropProven {
    members: Vec<Peer>,
    items: Vec<(Id, ItemVersion)>,
    nonce: [u8; 32],
    /// Start of the chunk being proved.
    at: usize,
    /// Whether the chunk's proofs were asked for.
    sent: bool,
    /// Proof calls in flight: `None` is this node's own.
    calls: HashMap<CallId, Option<Id>>,
    /// Answers to the current chunk: own, and per member.
    own: Option<Vec<Proof>>,
    theirs: HashMap<Id, Vec<Proof>>,
    /// Per item of the chunk: members still to show a newer version, or
    /// `None` once the item cannot be dropped.
    pending_newer: Vec<Option<usize>>,
    /// Fetches of versions in flight: (item index in chunk, the member
    /// showing its newer version, or `None` for this node's own).
    fetches: HashMap<CallId, (usize, Option<Id>)>,
    /// Per item of the chunk whose newer versions are being shown: this
    /// node's versions, and each member's (`None`: not shown).
    shown: HashMap<usize, Shown>,
    /// Removals in flight.
    removals: HashMap<CallId, Id>,
    replies: Vec<(CallId, Reply)>,
    dropped: usize,
    reasons: Vec<String>,
}

impl DropProven {
    fn new(members: Vec<Peer>, items: Vec<(Id, ItemVersion)>, nonce: [u8; 32]) -> DropProven {
        DropProven {
            members,
            items,
            nonce,
            at: 0,
            sent: false,
            calls: HashMap::new(),
            own: None,
            theirs: HashMap::new(),
            pending_newer: Vec::new(),
            fetches: HashMap::new(),
            shown: HashMap::new(),
            removals: HashMap::new(),
            replies: Vec::new(),
            dropped: 0,
            reasons: Vec::new(),
        }
    }

    fn owns(&self, id: CallId) -> bool {
        self.calls.contains_key(&id)
            || self.fetches.contains_key(&id)
            || self.removals.contains_key(&id)
    }

    fn on_reply(&mut self, id: CallId, reply: Reply) {
        self.replies.push((id, reply));
    }

    fn chunk(&self) -> &[(Id, ItemVersion)] {
        &self.items[self.at..(self.at + MAX_PROVE).min(self.items.len())]
    }

    fn note(&mut self, why: String) {
        if self.reasons.len() < MAX_REASONS && !self.reasons.contains(&why) {
            self.reasons.push(why);
        }
    }

    /// Advances; `true` once finished.
    fn step(&mut self, cx: &mut Cx<'_>) -> bool {
        for (id, reply) in std::mem::take(&mut self.replies) {
            if let Some(who) = self.calls.remove(&id) {
                match (who, Prove::parse(reply)) {
                    (None, Ok(p)) => self.own = Some(p),
                    (Some(m), Ok(p)) => {
                        self.theirs.insert(m, p);
                    }
                    (_, Err(e)) => self.note(format!("proof: {e}")),
                }
            } else if let Some((i, who)) = self.fetches.remove(&id) {
                let key = self.chunk()[i].0;
                let versions = FetchRecord::parse(reply).ok().filter(|v| {
                    !v.is_empty() && v.iter().all(|r| r.key() == key && r.verify().is_ok())
                });
                let shown = self.shown.entry(i).or_default();
                match who {
                    None => shown.ours = versions,
                    Some(_) => shown.theirs.push(versions),
                }
            } else if let Some(key) = self.removals.remove(&id) {
                match reply {
                    Ok(_) => self.dropped += 1,
                    Err(e) => log::warn!("repair: dropping {} failed: {e}", key.short()),
                }
            }
        }
        if !self.calls.is_empty() || !self.fetches.is_empty() || !self.removals.is_empty() {
            return false;
        }
        if self.at >= self.items.len() {
            return true;
        }
        if !self.sent {
            // Ask this node and every member for proofs of the chunk.
            self.sent = true;
            let chunk = self.chunk().to_vec();
            let me = cx.view.me.clone();
            for who in std::iter::once(None).chain(self.members.iter().map(Some)) {
                let to = who.unwrap_or(&me);
                let c = cx.call(
                    to,
                    Prove {
                        nonce: self.nonce,
                        items: chunk.clone(),
                    },
                );
                self.calls.insert(c, who.map(|m| m.id));
            }
            return false;
        }
        if let Some(own) = self.own.take() {
            // All proofs of the chunk are in: judge each item; newer
            // versions claimed must be shown before they count.
            let chunk = self.chunk().to_vec();
            let theirs = std::mem::take(&mut self.theirs);
            self.pending_newer = vec![None; chunk.len()];
            for (i, (key, v)) in chunk.iter().enumerate() {
                let Some(Proof::Held(h)) = own.get(i) else {
                    continue;
                };
                let ours = v.record_parts().map(|p| p.0);
                let mut newer = Vec::new();
                let all =
                    self.members
                        .iter()
                        .all(|m| match theirs.get(&m.id).and_then(|p| p.get(i)) {
                            Some(Proof::Held(x)) => x == h,
                            Some(Proof::Newer(s)) if ours.is_some_and(|o| *s > o) => {
                                newer.push(m.clone());
                                true
                            }
                            _ => false,
                        });
                if !all {
                    continue;
                }
                self.pending_newer[i] = Some(newer.len());
                if !newer.is_empty() {
                    let c = cx.call(&cx.view.me.clone(), FetchRecord(*key));
                    self.fetches.insert(c, (i, None));
                }
                for m in newer {
                    let c = cx.call(&m, FetchRecord(*key));
                    self.fetches.insert(c, (i, Some(m.id)));
                }
            }
            if !self.fetches.is_empty() {
                return false;
            }
        }
        // A member claiming a newer version proved it if what it showed
        // replaces every version held here (by their clocks: a longer
        // history from the other side of a partition does not).
        for (i, shown) in std::mem::take(&mut self.shown) {
            let proved = shown.ours.as_ref().is_some_and(|ours| {
                shown
                    .theirs
                    .iter()
                    .all(|t| t.as_ref().is_some_and(|t| Record::covers(t, ours)))
            });
            if let Some(slot) = self.pending_newer.get_mut(i) {
                *slot = match *slot {
                    Some(n) if proved => Some(n.saturating_sub(shown.theirs.len())),
                    _ => None,
                };
            }
        }
        // Drop what every member proved, then go on to the next chunk.
        let chunk = self.chunk().to_vec();
        for (i, (key, _)) in chunk.iter().enumerate() {
            if self.pending_newer.get(i) == Some(&Some(0)) {
                let c = cx.remove(*key);
                self.removals.insert(c, *key);
            }
        }
        self.at += chunk.len();
        self.sent = false;
        self.own = None;
        self.theirs.clear();
        self.pending_newer.clear();
        if !self.removals.is_empty() {
            return false;
        }
        self.step(cx)
    }
}

/// Versions shown for one item of a chunk (see [`DropProven`]).
#[derive(Debug, Default)]
struct Shown {
    ours: Option<Vec<Record>>,
    theirs: Vec<Option<Vec<Record>>>,
}

/// Where one of a repair pass's workers is.
#[derive(Debug)]
enum Phase {
    /// Idle: picking the next group.
    Next,
    Locating(Box<Locate>),
    /// Making sure each member holds the group.
    Syncing {
        members: Vec<Peer>,
        drop_after: bool,
        group: Vec<(Id, ItemVersion)>,
        syncs: Vec<SyncTo>,
    },
    Dropping(Box<DropProven>),
}

impl Phase {
    /// Whether one of its syncs waits for a push slot.
    fn wants_slot(&self) -> bool {
        matches!(self, Phase::Syncing { syncs, .. } if syncs.iter().any(SyncTo::wants_slot))
    }

    /// Whether call `id` is one this worker made and waits for.
    fn owns(&self, id: CallId) -> bool {
        match self {
            Phase::Next => false,
            Phase::Locating(l) => l.is_waiting_for(id),
            Phase::Syncing { syncs, .. } => syncs.iter().any(|s| s.owns(id)),
            Phase::Dropping(d) => d.owns(id),
        }
    }

    /// Takes the reply of call `id` (one this worker [`owns`](Self::owns)).
    fn on_reply(&mut self, id: CallId, reply: Reply) {
        match self {
            Phase::Next => {}
            Phase::Locating(l) => {
                l.on_reply(id, reply);
            }
            Phase::Syncing { syncs, .. } => {
                if let Some(s) = syncs.iter_mut().find(|s| s.owns(id)) {
                    s.on_reply(id, reply);
                }
            }
            Phase::Dropping(d) => d.on_reply(id, reply),
        }
    }
}

/// Groups a repair pass works on at once. While the ring is in flux a
/// lookup can take a second or more (dead nodes time out, owners fail to
/// confirm); one group at a time, a node holding a few dozen groups then
/// took longer than the ring's budget between failures to reach the keys
/// of a crashed neighbour.
const PASS_PARALLELISM: usize = 4;

/// One repair pass over a snapshot of the items this node holds.
///
/// [`PASS_PARALLELISM`] workers walk the keys in ring order from
/// [`walk_start`]. Each claims a batch: the next unclaimed keys up to the
/// nearest node this node knows of at or after the first (its guess of
/// their owner, from its predecessor, successors and fingers), so that
/// workers rarely look up keys of one group twice. Within its batch a
/// worker goes as a single pass would: it locates the first key's owner
/// and takes the batch's keys up to that owner as the group.
#[derive(Debug)]
pub struct RepairPass {
    /// The items held when the pass started, sorted by key.
    held: Vec<(Id, ItemVersion)>,
    /// Keys not yet claimed by a worker.
    todo: BTreeSet<Id>,
    /// The nonce of this pass's proofs.
    nonce: [u8; 32],
    /// Where the walk is: the last key claimed, at first [`walk_start`]
    /// (fixed at the first step, so that a view changing mid-pass cannot
    /// put a key off to the end).
    cursor: Option<Id>,
    workers: Vec<Worker>,
    /// Copies that may start now ([`PUSHES_IN_FLIGHT`] less those in
    /// flight), shared by all workers.
    push_slots: usize,
    stats: RepairStats,
}

/// One of a pass's workers: where it is, and the keys of its batch still
/// to do.
#[derive(Debug)]
struct Worker {
    phase: Phase,
    batch: Batch,
}

/// Keys a worker claimed, walked in ring order from `start`.
#[derive(Debug, Default)]
struct Batch {
    start: Id,
    keys: BTreeSet<Id>,
}

impl Batch {
    /// Takes the next key of the walk, if any is left.
    fn take_next(&mut self) -> Option<Id> {
        let k = first_from(&self.keys, self.start)?;
        self.keys.remove(&k);
        Some(k)
    }
}

impl RepairPass {
    /// A pass over `held` (as [`crate::store::Store::items`] lists them),
    /// proving with `nonce` (fresh and random for every pass).
    pub fn new(held: Vec<(Id, ItemVersion)>, nonce: [u8; 32]) -> RepairPass {
        let todo = held.iter().map(|(k, _)| *k).collect();
        RepairPass {
            held,
            todo,
            nonce,
            cursor: None,
            workers: (0..PASS_PARALLELISM)
                .map(|_| Worker {
                    phase: Phase::Next,
                    batch: Batch::default(),
                })
                .collect(),
            push_slots: PUSHES_IN_FLIGHT,
            stats: RepairStats::default(),
        }
    }

    fn versions(&self, keys: &[Id]) -> Vec<(Id, ItemVersion)> {
        let set: BTreeSet<Id> = keys.iter().copied().collect();
        self.held
            .iter()
            .filter(|(k, _)| set.contains(k))
            .copied()
            .collect()
    }

    /// Gives worker `w` the next batch of unclaimed keys; `false` if none
    /// is left.
    fn claim_batch(&mut self, w: usize, cx: &mut Cx<'_>) -> bool {
        let from = *self
            .cursor
            .get_or_insert_with(|| walk_start(cx.view.me.id, &cx.view.succs, cx.replicas));
        let Some(first) = first_from(&self.todo, from) else {
            return self.steal_batch(w);
        };
        let guess = cx.view.guess_owner(first);
        let mut batch: BTreeSet<Id> = group_keys(&self.todo, first, guess).into_iter().collect();
        batch.insert(first);
        for k in &batch {
            self.todo.remove(k);
        }
        self.cursor = Some(first);
        self.workers[w].batch = Batch {
            start: first,
            keys: batch,
        };
        true
    }

    /// Gives idle worker `w` the later half of the largest batch another
    /// worker still has (a guess of the owner can be far off while the
    /// ring is in flux, and one worker would go through a long batch alone
    /// while the others wait); `false` if no batch has two keys left.
    fn steal_batch(&mut self, w: usize) -> bool {
        let Some(j) = (0..self.workers.len())
            .filter(|&j| j != w && self.workers[j].batch.keys.len() >= 2)
            .max_by_key(|&j| self.workers[j].batch.keys.len())
        else {
            return false;
        };
        let Batch { start, keys } = &mut self.workers[j].batch;
        let ordered: Vec<Id> = keys
            .range(*start..)
            .chain(keys.range(..*start))
            .copied()
            .collect();
        let later = ordered[ordered.len() / 2..].to_vec();
        for k in &later {
            keys.remove(k);
        }
        self.workers[w].batch = Batch {
            start: later[0],
            keys: later.into_iter().collect(),
        };
        true
    }

    /// Advances worker `w` as far as it goes now; `true` once it is idle
    /// with nothing left to claim.
    fn step_worker(&mut self, w: usize, cx: &mut Cx<'_>) -> bool {
        loop {
            match &mut self.workers[w].phase {
                Phase::Next => {
                    let Some(first) = self.workers[w].batch.take_next() else {
                        if !self.claim_batch(w, cx) {
                            return true;
                        }
                        continue;
                    };
                    self.workers[w].phase =
                        Phase::Locating(Box::new(Locate::new(first, CacheUse::Fresh)));
                }
                Phase::Locating(l) => {
                    let first = l.key();
                    let Some(located) = l.step(cx) else {
                        return false;
                    };
                    let p = match located {
                        Ok(p) => p,
                        Err(e) => {
                            // The ring is in flux here: the next pass
                            // retries this key. Meanwhile its copy goes to
                            // this node's own successors (more copies, never
                            // fewer: they are dropped once the ring heals),
                            // and the worker goes on with the next key, so
                            // one unplaceable key never starves the groups
                            // after it.
                            self.stats.fail(format!("lookup of {}: {e}", first.short()));
                            let group = self.versions(&[first]);
                            let members: Vec<Peer> = cx
                                .view
                                .succs
                                .iter()
                                .take(cx.replicas.saturating_sub(1))
                                .cloned()
                                .collect();
                            let syncs = members
                                .iter()
                                .map(|m| SyncTo::new(m.clone(), group.clone()))
                                .collect();
                            self.workers[w].phase = Phase::Syncing {
                                drop_after: false,
                                members,
                                group,
                                syncs,
                            };
                            continue;
                        }
                    };
                    // The group: the key located, and the batch's keys up to
                    // its owner.
                    let batch = &mut self.workers[w].batch.keys;
                    let mut keys = group_keys(batch, first, p.owner.id);
                    for k in &keys {
                        batch.remove(k);
                    }
                    keys.push(first);
                    self.stats.groups += 1;
                    let group = self.versions(&keys);
                    let set = p.replicas(cx.replicas);
                    let in_set = set.iter().any(|q| cx.is_me(q));
                    let members: Vec<Peer> = set.into_iter().filter(|q| !cx.is_me(q)).collect();
                    let syncs = members
                        .iter()
                        .map(|m| SyncTo::new(m.clone(), group.clone()))
                        .collect();
                    self.workers[w].phase = Phase::Syncing {
                        drop_after: !in_set && !members.is_empty(),
                        members,
                        group,
                        syncs,
                    };
                }
                Phase::Syncing {
                    members,
                    drop_after,
                    group,
                    syncs,
                } => {
                    if !step_syncs(syncs, cx, &mut self.push_slots) {
                        return false;
                    }
                    let mut clean = true;
                    for s in syncs.iter() {
                        self.stats.absorb(s);
                        clean &= s.failures == 0;
                    }
                    let next = if *drop_after && clean {
                        Phase::Dropping(Box::new(DropProven::new(
                            std::mem::take(members),
                            std::mem::take(group),
                            self.nonce,
                        )))
                    } else {
                        Phase::Next
                    };
                    self.workers[w].phase = next;
                }
                Phase::Dropping(d) => {
                    if !d.step(cx) {
                        return false;
                    }
                    self.stats.dropped += d.dropped;
                    for r in std::mem::take(&mut d.reasons) {
                        self.stats.fail(r);
                    }
                    self.workers[w].phase = Phase::Next;
                }
            }
        }
    }
}

/// Steps each of `syncs` once, drawing copies from the shared `pool`;
/// whether every one is done.
fn step_syncs(syncs: &mut [SyncTo], cx: &mut Cx<'_>, pool: &mut usize) -> bool {
    syncs
        .iter_mut()
        .fold(true, |done, s| s.step(cx, pool) & done)
}

impl Machine for RepairPass {
    type Output = RepairStats;

    fn on_reply(&mut self, id: CallId, reply: Reply) {
        if let Some(w) = self.workers.iter_mut().find(|w| w.phase.owns(id)) {
            w.phase.on_reply(id, reply);
        }
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Option<RepairStats> {
        loop {
            let mut idle = true;
            for w in 0..self.workers.len() {
                idle &= self.step_worker(w, cx);
            }
            if idle {
                return Some(std::mem::take(&mut self.stats));
            }
            // Slots freed by a worker stepped after one that wanted them
            // go to it now: with nothing else in flight, no reply would
            // step it again. Each round takes a slot, so this ends.
            if self.push_slots == 0 || !self.workers.iter().any(|w| w.phase.wants_slot()) {
                return None;
            }
        }
    }
}

/// A graceful leave's hand-off: every item to each of the first r
/// successors (the nodes that hold this node's ranges once it is gone).
#[derive(Debug)]
pub struct HandOff {
    items: Vec<(Id, ItemVersion)>,
    syncs: Option<Vec<SyncTo>>,
    /// Copies that may start now, shared by the successors' syncs.
    push_slots: usize,
}

/// What a hand-off did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandOffStats {
    /// Successors asked.
    pub targets: usize,
    /// Successors that now hold everything.
    pub reached: usize,
    /// Items copied.
    pub pushed: usize,
    /// Why some failed.
    pub reasons: Vec<String>,
}

impl HandOff {
    /// A hand-off of `items`.
    pub fn new(items: Vec<(Id, ItemVersion)>) -> HandOff {
        HandOff {
            items,
            syncs: None,
            push_slots: PUSHES_IN_FLIGHT,
        }
    }
}

impl Machine for HandOff {
    type Output = HandOffStats;

    fn on_reply(&mut self, id: CallId, reply: Reply) {
        if let Some(s) = self
            .syncs
            .as_mut()
            .and_then(|syncs| syncs.iter_mut().find(|s| s.owns(id)))
        {
            s.on_reply(id, reply);
        }
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Option<HandOffStats> {
        let r = cx.replicas.max(1);
        let items = &self.items;
        let syncs = self.syncs.get_or_insert_with(|| {
            cx.view
                .succs
                .iter()
                .take(r)
                .map(|p| SyncTo::new(p.clone(), items.clone()))
                .collect()
        });
        // As in a repair pass: a sync stepped before another freed its
        // slots is stepped again.
        let all_done = loop {
            let all_done = step_syncs(syncs, cx, &mut self.push_slots);
            if all_done || self.push_slots == 0 || !syncs.iter().any(SyncTo::wants_slot) {
                break all_done;
            }
        };
        if !all_done {
            return None;
        }
        let mut stats = HandOffStats {
            targets: syncs.len(),
            reached: 0,
            pushed: 0,
            reasons: Vec::new(),
        };
        for s in syncs.iter() {
            stats.pushed += s.pushed;
            if s.failures == 0 {
                stats.reached += 1;
            }
            stats.reasons.extend(s.reasons.iter().cloned());
        }
        Some(stats)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::small;

    fn pass_over(keys: &[u8]) -> RepairPass {
        let held = keys
            .iter()
            .map(|&k| (small(k), ItemVersion::Block))
            .collect();
        RepairPass::new(held, [0; 32])
    }

    /// The order a test answers a machine's pending calls in.
    #[derive(Clone, Copy, Debug)]
    enum Order {
        OldestFirst,
        NewestFirst,
        /// Calls to this peer only once no other call is pending (its
        /// sync starts after the others are done).
        ThisPeerLast(u8),
        /// Every pending call at once, but the first calls to this peer
        /// wait one step: its sync starts while the others hold every
        /// slot, and they finish together, in one step.
        ThisPeerLate(u8),
    }

    /// A hand-off to five successors that lack everything, its calls
    /// answered a few at a time in several orders: the copies in flight
    /// (local reads and stores together) never pass the machine's pool,
    /// a step never leaves the hand-off waiting on nothing (a sync short
    /// of slots is stepped again once another frees them), and every
    /// successor still gets every item.
    #[test]
    fn a_hand_off_copies_at_most_its_pool_at_once() {
        for order in [
            Order::OldestFirst,
            Order::NewestFirst,
            Order::ThisPeerLast(2),
            Order::ThisPeerLate(2),
        ] {
            let (stats, stored, peak, _) = hand_off_answering(order, None);
            // Five syncs alone would start more than the pool allows.
            const { assert!(PUSHES_IN_FLIGHT < 5 * PUSH_PARALLELISM) };
            assert!(peak <= PUSHES_IN_FLIGHT, "{peak} copies in flight at once");
            assert!(peak >= PUSH_PARALLELISM, "the pool was used: {peak}");
            assert_eq!((stats.targets, stats.reached, stats.pushed), (5, 5, 160));
            assert_eq!(stored.len(), 32);
            assert!(stored.values().all(|&n| n == 5));
        }
    }

    /// A successor that answers the missing list but no copy (it crashed
    /// since) gets no more copies once the first goes unanswered, so it
    /// holds no slots the others could use; they still get everything.
    #[test]
    fn a_hand_off_stops_copying_to_a_successor_that_does_not_answer() {
        let (stats, stored, _, silent) = hand_off_answering(Order::OldestFirst, Some(7));
        assert!(
            silent <= PUSH_PARALLELISM,
            "{silent} copies sent to a silent successor"
        );
        assert_eq!((stats.targets, stats.reached, stats.pushed), (5, 4, 128));
        assert!(
            stats
                .reasons
                .iter()
                .any(|r| r.contains("no answer in time"))
        );
        assert_eq!(stored.len(), 32);
        assert!(stored.values().all(|&n| n == 4));
    }

    /// Runs a hand-off of 32 blocks to five successors, answering its
    /// calls in `order`; copies to successor `silent` time out. What it
    /// returned, how many successors stored each block, the most copies
    /// in flight at once, and the copies sent to `silent`.
    fn hand_off_answering(
        order: Order,
        silent: Option<u8>,
    ) -> (HandOffStats, HashMap<Id, usize>, usize, usize) {
        use crate::chord::RingView;
        use crate::dht::RouteCache;
        use crate::dht::machine::{Io, Policy};
        use crate::wire::{ReplicaRequest, ReplicaResponse, Request, Response, test_peer};
        let me = test_peer(1);
        let succs: Vec<Peer> = [2, 3, 4, 6, 7].map(test_peer).to_vec();
        let view = RingView {
            me: me.clone(),
            member: true,
            pred: Some(test_peer(5)),
            succs: succs.clone(),
            whole: false,
            fingers: Vec::new(),
        };
        let (routes, policy) = (RouteCache::default(), Policy::default());
        let items: Vec<(Id, ItemVersion)> =
            (0..32).map(|k| (small(k), ItemVersion::Block)).collect();
        let mut h = HandOff::new(items);
        let mut pending: VecDeque<Io> = VecDeque::new();
        let mut stored: HashMap<Id, usize> = HashMap::new();
        let (mut ids, mut peak, mut round, mut to_silent) = (1, 0, 0, 0);
        let silent = silent.map(test_peer);
        let stats = loop {
            let (mut out, mut wake) = (Vec::new(), None);
            let mut cx = Cx::new(0, &view, &routes, 5, &policy, &mut ids, &mut out, &mut wake);
            if let Some(stats) = h.step(&mut cx) {
                break stats;
            }
            pending.extend(out);
            let copies = pending
                .iter()
                .filter(|io| match io {
                    Io::Call { req, .. } => matches!(
                        req,
                        Request::Replica(
                            ReplicaRequest::FetchBlock { .. } | ReplicaRequest::StoreBlock { .. }
                        )
                    ),
                    Io::Remove { .. } => false,
                })
                .count();
            peak = peak.max(copies);
            assert!(
                !pending.is_empty(),
                "{order:?}: a step left nothing in flight"
            );
            round += 1;
            let answers = match order {
                Order::ThisPeerLate(_) => pending.len(),
                _ => 3,
            };
            for _ in 0..answers {
                let next = match order {
                    Order::OldestFirst => pending.pop_front(),
                    Order::NewestFirst => pending.pop_back(),
                    Order::ThisPeerLast(p) => {
                        let last = test_peer(p);
                        let i = pending
                            .iter()
                            .position(|io| !matches!(io, Io::Call { to, .. } if *to == last))
                            .unwrap_or(0);
                        pending.remove(i)
                    }
                    Order::ThisPeerLate(p) if round == 1 => {
                        let late = test_peer(p);
                        match pending
                            .iter()
                            .position(|io| !matches!(io, Io::Call { to, .. } if *to == late))
                        {
                            Some(i) => pending.remove(i),
                            None => break,
                        }
                    }
                    Order::ThisPeerLate(_) => pending.pop_front(),
                };
                let Some(Io::Call { id, to, req, .. }) = next else {
                    break;
                };
                let resp = match req {
                    Request::Replica(ReplicaRequest::Missing { items }) => {
                        ReplicaResponse::Missing((0..items.len() as u32).collect())
                    }
                    Request::Replica(ReplicaRequest::FetchBlock { key }) => {
                        assert_eq!(to, me, "read from the local store");
                        ReplicaResponse::Block {
                            data: key.0.to_vec(),
                            claims: Vec::new(),
                        }
                    }
                    Request::Replica(ReplicaRequest::StoreBlock { .. })
                        if silent.as_ref() == Some(&to) =>
                    {
                        to_silent += 1;
                        h.on_reply(id, Err(CallError::Timeout));
                        continue;
                    }
                    Request::Replica(ReplicaRequest::StoreBlock { key, .. }) => {
                        assert!(succs.contains(&to));
                        *stored.entry(key).or_default() += 1;
                        ReplicaResponse::Stored
                    }
                    other => panic!("unexpected call {other:?}"),
                };
                h.on_reply(id, Ok(Response::Replica(resp)));
            }
        };
        (stats, stored, peak, to_silent)
    }

    #[test]
    fn a_batch_is_walked_in_ring_order_from_its_start() {
        let mut b = Batch {
            start: small(200),
            keys: [5, 200, 1, 250].into_iter().map(small).collect(),
        };
        let walked: Vec<Id> = std::iter::from_fn(|| b.take_next()).collect();
        assert_eq!(walked, [200, 250, 1, 5].map(small));
        assert!(b.keys.is_empty());
    }

    #[test]
    fn an_idle_worker_takes_the_later_half_of_the_largest_batch() {
        let mut p = pass_over(&[]);
        // Worker 0's batch wraps past zero: 200, 250, 1, 5 in ring order.
        let batch: BTreeSet<Id> = [200, 250, 1, 5].into_iter().map(small).collect();
        p.workers[0].batch = Batch {
            start: small(200),
            keys: batch,
        };
        p.workers[1].batch = Batch {
            start: small(90),
            keys: [small(90)].into_iter().collect(),
        };
        assert!(p.steal_batch(2));
        assert_eq!(p.workers[2].batch.start, small(1));
        assert_eq!(
            p.workers[2].batch.keys,
            [small(1), small(5)].into_iter().collect::<BTreeSet<_>>()
        );
        assert_eq!(
            p.workers[0].batch.keys,
            [small(200), small(250)]
                .into_iter()
                .collect::<BTreeSet<_>>()
        );
        // Batches of one key are left alone.
        p.workers[0].batch.keys.remove(&small(250));
        p.workers[2].batch.keys.clear();
        p.workers[3].batch.keys.clear();
        assert!(!p.steal_batch(3));
    }
}
