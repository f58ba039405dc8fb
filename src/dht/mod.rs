//! The DHT: put and get of blocks and records, as request state machines.
//!
//! Each operation is a lookup of the key's owner (checked with the owner,
//! see [`locate`]) followed by calls to the owner and its replicas
//! (DESIGN.md, "Replication"). The operations are machines without I/O
//! ([`machine`]): [`put::Put`], [`get::Get`], [`locate::Locate`] and the
//! repair passes of [`repair`]. [`Dht`] drives them over a [`Transport`]
//! (the node's connection pool and its own store); the simulator drives
//! the same machines through its virtual network.
//!
//! - A put succeeds once as many nodes as needed stored the item: r, or
//!   every member when this node knows the ring is smaller than r. Short
//!   of that it keeps trying until its deadline, so a write in flight
//!   while a crashed node is dropped from the ring does not fail.
//! - A get says "not found" only when every replica of a fresh lookup
//!   answered so; unreachable data is [`DhtError::Unavailable`].
//! - Lookup answers are cached in one place ([`routes::RouteCache`]).

pub mod get;
pub mod locate;
pub mod machine;
mod owners;
pub mod put;
pub mod repair;
pub mod routes;
#[cfg(test)]
mod tests;

pub use locate::{CacheUse, LocateError};
pub use machine::{CallId, Cx, Io, Machine, Millis, Policy};
pub use routes::RouteCache;

use crate::chord::RingView;
use crate::id::Id;
use crate::record::Record;
use crate::replica::replica_set;
use crate::rpc::{CallError, Reply};
use crate::wire::{Claim, MAX_BLOCK, Peer, RemoteError, ReplicaRequest, Request};
use futures::stream::{FuturesUnordered, StreamExt};
use get::{Get, Got, Want};
use put::{Item, Put, Stored};
use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};

/// Where a key lives: its owner and the nodes after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// The key placed.
    pub key: Id,
    /// The owner's predecessor, as the owner confirmed: the owner holds
    /// `(from, owner]`. `None` for answers from this node's own state.
    pub from: Option<Id>,
    /// The node that succeeds the key.
    pub owner: Peer,
    /// Nodes following the owner, nearest first.
    pub next: Vec<Peer>,
    /// Lookup calls it took (0 when answered locally or from the cache).
    pub hops: u32,
    /// Whether it came from the route cache.
    pub cached: bool,
}

impl Placement {
    /// The nodes that must hold the key: the owner and the next `r − 1`
    /// distinct nodes.
    pub fn replicas(&self, r: usize) -> Vec<Peer> {
        replica_set(&self.owner, &self.next, r)
    }

    /// The nodes after the replica set, to stand in for failed members.
    pub fn spares(&self, r: usize) -> Vec<Peer> {
        let set = self.replicas(r);
        let mut out: Vec<Peer> = Vec::new();
        for p in &self.next {
            if !set.iter().any(|q| q.id == p.id) && !out.iter().any(|q| q.id == p.id) {
                out.push(p.clone());
            }
        }
        out
    }
}

/// Why a DHT operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    #[error("lookup failed: {0}")]
    Lookup(#[from] LocateError),
    #[error("not found on any replica")]
    NotFound,
    #[error("refused: {0}")]
    Refused(RemoteError),
    #[error("unavailable: {0}")]
    Unavailable(String),
    #[error("only {stored} of {wanted} copies stored (last error: {last})")]
    TooFewReplicas {
        stored: u32,
        wanted: u32,
        last: String,
    },
    #[error("no space left on the ring ({0})")]
    NoSpace(String),
    #[error("block of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
    #[error("{0}")]
    Call(#[from] CallError),
}

impl DhtError {
    /// The error to send back to a remote client.
    pub fn to_remote(&self) -> RemoteError {
        match self {
            DhtError::NotFound => RemoteError::NotFound,
            DhtError::Refused(e) => e.clone(),
            DhtError::TooLarge(n) => RemoteError::TooLarge(*n as u64),
            DhtError::NoSpace(m) => RemoteError::NoSpace(m.clone()),
            other => RemoteError::Unavailable(other.to_string()),
        }
    }
}

/// What the DHT needs from below: the ring state, the route cache, calls
/// to nodes (this node's own store included) and time.
pub trait Transport: Send + Sync {
    /// Milliseconds since some fixed origin.
    fn now(&self) -> Millis;
    /// The node's ring state now.
    fn view(&self) -> RingView;
    /// The node's cache of lookup answers.
    fn routes(&self) -> &RouteCache;
    /// One call; a call to this node itself is served from its own store.
    fn call(&self, to: &Peer, req: Request) -> impl Future<Output = Reply> + Send;
    /// Drops this node's own copies of `key`.
    fn remove_local(&self, key: Id) -> impl Future<Output = Reply> + Send;
}

impl<T: Transport + ?Sized> Transport for Arc<T> {
    fn now(&self) -> Millis {
        (**self).now()
    }
    fn view(&self) -> RingView {
        (**self).view()
    }
    fn routes(&self) -> &RouteCache {
        (**self).routes()
    }
    fn call(&self, to: &Peer, req: Request) -> impl Future<Output = Reply> + Send {
        (**self).call(to, req)
    }
    fn remove_local(&self, key: Id) -> impl Future<Output = Reply> + Send {
        (**self).remove_local(key)
    }
}

/// Put/get over a transport with replication factor `replicas`.
pub struct Dht<T> {
    /// Routing and calls.
    pub transport: T,
    /// Copies kept of every item (r).
    pub replicas: usize,
    /// Deadlines and retry pacing.
    pub policy: Policy,
    /// Nodes that took a non-durable write from this client since its last
    /// [`Dht::sync`] (shared with the [`Dht::sibling`]s that finish its
    /// ordered puts).
    unsynced: Arc<Mutex<HashMap<Id, Peer>>>,
    /// Held by a [`Dht::sync`] from the moment it takes the nodes to ask
    /// until they answered (or went back into `unsynced`): a sync that
    /// starts meanwhile waits, since the nodes it must cover may be the
    /// ones the running sync took and has not heard from yet.
    sync_turn: Arc<tokio::sync::Mutex<()>>,
}

/// How many times [`Dht::sync`] asks a node that does not answer in time.
pub const SYNC_TRIES: usize = 3;

impl<T> Dht<T> {
    /// A DHT client over `transport` keeping `replicas` copies.
    pub fn new(transport: T, replicas: usize) -> Dht<T> {
        Dht {
            transport,
            replicas,
            policy: Policy::default(),
            unsynced: Arc::new(Mutex::new(HashMap::new())),
            sync_turn: Arc::new(tokio::sync::Mutex::new(())),
        }
    }

    /// Whether `req` is a put the node answers before it is durable.
    fn is_lazy_put(req: &Request) -> bool {
        matches!(
            req,
            Request::Replica(
                ReplicaRequest::StoreBlock { durable: false, .. }
                    | ReplicaRequest::StoreRecord { durable: false, .. }
            )
        )
    }

    /// A client over a copy of the transport that shares this one's record
    /// of unsynced nodes: what it puts lazily, this one's
    /// [`sync`](Dht::sync) covers.
    fn sibling(&self) -> Dht<T>
    where
        T: Clone,
    {
        Dht {
            transport: self.transport.clone(),
            replicas: self.replicas,
            policy: self.policy.clone(),
            unsynced: Arc::clone(&self.unsynced),
            sync_turn: Arc::clone(&self.sync_turn),
        }
    }

    /// Notes that `to` took a non-durable put. Called once the put is
    /// answered, not when it is sent: a [`Dht::sync`] that starts between
    /// the two would otherwise send `Sync` before the node applied the
    /// put, and forget the node, so that no later `sync` covered it.
    fn note_unsynced(&self, to: &Peer) {
        self.unsynced
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(to.id, to.clone());
    }
}

impl<T: Transport> Dht<T> {
    /// Runs a request machine to its end.
    pub async fn run<M: Machine + Send>(&self, mut m: M) -> M::Output {
        let mut ids: CallId = 1;
        let mut inflight = FuturesUnordered::new();
        loop {
            let view = self.transport.view();
            let now = self.transport.now();
            let mut out = Vec::new();
            let mut wake = None;
            {
                let mut cx = Cx::new(
                    now,
                    &view,
                    self.transport.routes(),
                    self.replicas,
                    &self.policy,
                    &mut ids,
                    &mut out,
                    &mut wake,
                );
                if let Some(o) = m.step(&mut cx) {
                    return o;
                }
            }
            for io in out {
                inflight.push(self.perform(io));
            }
            if inflight.is_empty() && wake.is_none() {
                log::error!("a request machine left nothing to wait for; stepping it again");
                wake = Some(now + 100);
            }
            let nap = wake.map(|w| std::time::Duration::from_millis(w.saturating_sub(now)));
            tokio::select! {
                Some((id, peer, reply)) = inflight.next(), if !inflight.is_empty() => {
                    self.on_reply(&mut m, id, peer, reply);
                    // Take every other answer that is already in.
                    while let Some(Some((id, peer, reply))) =
                        futures::FutureExt::now_or_never(inflight.next())
                    {
                        self.on_reply(&mut m, id, peer, reply);
                    }
                }
                _ = tokio::time::sleep(nap.unwrap_or_default()), if nap.is_some() => {}
            }
        }
    }

    fn on_reply<M: Machine>(&self, m: &mut M, id: CallId, peer: Option<Id>, reply: Reply) {
        if let (Some(p), Err(CallError::Timeout | CallError::Unreachable(_))) = (peer, &reply) {
            self.transport.routes().forget_peer(p);
        }
        m.on_reply(id, reply);
    }

    /// Performs one I/O of a machine: (its ID, the node called, the reply).
    async fn perform(&self, io: Io) -> (CallId, Option<Id>, Reply) {
        match io {
            Io::Call {
                id,
                to,
                req,
                sync_later,
            } => {
                let lazy = sync_later && Self::is_lazy_put(&req);
                let reply = self.transport.call(&to, req).await;
                if lazy {
                    // Whatever the answer: a put that timed out may still
                    // have been applied.
                    self.note_unsynced(&to);
                }
                (id, Some(to.id), reply)
            }
            Io::Remove { id, key } => (id, None, self.transport.remove_local(key).await),
        }
    }

    /// Finds the owner of `key` (asking the ring, not the cache).
    pub async fn locate(&self, key: Id) -> Result<Placement, DhtError> {
        Ok(self
            .run(LocateOnce(locate::Locate::new(key, CacheUse::Fresh)))
            .await?)
    }

    /// Stores a block owned by `claim`'s signer on its replicas, each
    /// fsynced before it answers; returns its key and the copy count.
    pub async fn put_block(&self, data: Vec<u8>, claim: Claim) -> Result<(Id, u32), DhtError> {
        // A client of an earlier release names its block by SHA-256 and
        // signs its claim for that key.
        let key = match Id::of_block(&data) {
            k if claim.verify(k).is_ok() => k,
            _ => Id::hash(&data),
        };
        self.put_block_as(key, data, vec![claim], true).await
    }

    /// Stores block `data` (whose hash is `key`: the replicas check) with
    /// its owners' `claims` on its replicas; without `durable` the replicas
    /// answer once it is visible, and [`Dht::sync`] makes it durable.
    pub async fn put_block_as(
        &self,
        key: Id,
        data: Vec<u8>,
        claims: Vec<Claim>,
        durable: bool,
    ) -> Result<(Id, u32), DhtError> {
        if data.len() > MAX_BLOCK {
            return Err(DhtError::TooLarge(data.len()));
        }
        let item = Item::Block {
            key,
            data: bytes::Bytes::from(data),
            claims,
        };
        let Stored { key, copies, .. } = self.run(Put::new(item, durable)).await?;
        Ok((key, copies))
    }

    /// Makes every non-durable write of this client durable on every node
    /// that took one. A node that does not answer in time is asked again,
    /// up to [`SYNC_TRIES`] times in all: a `Sync` is idempotent, and a
    /// disk busy for a few seconds is no reason to fail an `fsync`.
    ///
    /// Concurrent syncs take turns: each covers every node noted before it
    /// started, either itself or by waiting for the sync that took the
    /// node (and put it back on failure).
    pub async fn sync(&self) -> Result<(), DhtError> {
        let _turn = self.sync_turn.lock().await;
        let mut peers: Vec<Peer> = {
            let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
            u.drain().map(|(_, p)| p).collect()
        };
        let mut failed = Vec::new();
        let mut gone = Vec::new();
        let mut synced = 0usize;
        for attempt in 1..=SYNC_TRIES {
            let results = futures::future::join_all(peers.iter().map(|p| {
                self.transport
                    .call(p, crate::rpc::Rpc::request(crate::rpc::Sync))
            }))
            .await;
            let mut slow = Vec::new();
            for (p, r) in peers.into_iter().zip(results) {
                match r {
                    Err(crate::rpc::CallError::Timeout) if attempt < SYNC_TRIES => slow.push(p),
                    Err(crate::rpc::CallError::Unreachable(e)) => gone.push((p, e)),
                    r => match <crate::rpc::Sync as crate::rpc::Rpc>::parse(r) {
                        Ok(_) => synced += 1,
                        Err(e) => failed.push((p, e)),
                    },
                }
            }
            if slow.is_empty() {
                break;
            }
            log::debug!("sync: {} nodes slow to answer; asking again", slow.len());
            peers = slow;
        }
        // A node that cannot be reached at all crashed or left: what it
        // took lazily is lost with it, and repair copies those items
        // again from the replicas that synced. Asking it forever would
        // fail every later sync. It counts only beside one that synced.
        if synced > 0 {
            for (p, e) in gone {
                log::warn!(
                    "sync: {} cannot be reached ({e}); its unsynced copies are left to repair",
                    p.addr
                );
            }
        } else {
            failed.extend(
                gone.into_iter()
                    .map(|(p, e)| (p, crate::rpc::CallError::Unreachable(e))),
            );
        }
        if failed.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = failed
            .iter()
            .map(|(p, e)| format!("{}: {e}", p.addr))
            .collect();
        // Keep them for the next try.
        let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        for (p, _) in failed {
            u.insert(p.id, p);
        }
        Err(DhtError::Unavailable(format!(
            "sync failed on {}",
            names.join(", ")
        )))
    }

    /// Stores a record version on its replicas (compare-and-swap on
    /// `expected_seq` if given).
    pub async fn put_record(
        &self,
        record: Record,
        expected_seq: Option<u64>,
    ) -> Result<u32, DhtError> {
        self.put_record_as(record, expected_seq, true).await
    }

    /// [`Dht::put_record`], durable or not (see [`Dht::put_block_as`]).
    pub async fn put_record_as(
        &self,
        record: Record,
        expected_seq: Option<u64>,
        durable: bool,
    ) -> Result<u32, DhtError> {
        let item = Item::Record {
            record: Arc::new(record),
            expected_seq,
            owner_first: true,
        };
        Ok(self.run(Put::new(item, durable)).await?.copies)
    }

    /// Stores a record version lazily, in order: a compare-and-swap on
    /// `expected_seq` that returns once the record's owner took it (one
    /// round, [`Put::until_owner`]), when no other writer's version can
    /// take its place any more. The other members get it in the
    /// background ([`Put::after`], on a [`sibling`](Dht::sibling)), and
    /// [`Rest`] says when they all did; a [`sync`](Dht::sync) after that
    /// makes every copy durable.
    pub async fn put_record_ordered(
        &self,
        record: Record,
        expected_seq: Option<u64>,
    ) -> Result<Rest, DhtError>
    where
        T: Clone + 'static,
    {
        let item = Item::Record {
            record: Arc::new(record),
            expected_seq,
            owner_first: true,
        };
        let first = self.run(Put::until_owner(item.clone())).await?;
        let (tx, rx) = futures::channel::oneshot::channel();
        let rest = self.sibling();
        tokio::spawn(async move {
            let r = rest.run(Put::after(item, first.by)).await;
            let _ = tx.send(r);
        });
        Ok(Rest(rx))
    }

    /// Stores the first version of a record under a name nobody else can
    /// know (drawn at random): all replicas at once, each checking the name
    /// is free (`expected_seq = 0`), no owner round first.
    pub async fn put_new_record(&self, record: Record, durable: bool) -> Result<u32, DhtError> {
        let item = Item::Record {
            record: Arc::new(record),
            expected_seq: Some(0),
            owner_first: false,
        };
        Ok(self.run(Put::new(item, durable)).await?.copies)
    }

    /// Reads a block from its replicas; the bytes hash to `key`.
    pub async fn get_block(&self, key: Id) -> Result<Vec<u8>, DhtError> {
        Ok(self.get_owned_block(key).await?.0)
    }

    /// Reads a block and its owners' claims (as the replica that answered
    /// keeps them) from its replicas.
    pub async fn get_owned_block(&self, key: Id) -> Result<(Vec<u8>, Vec<Claim>), DhtError> {
        match self.run(Get::new(key, Want::Block)).await? {
            Got::Block(d, c) => Ok((d, c)),
            Got::Record(_) => Err(DhtError::Call(CallError::Unexpected)),
        }
    }

    /// Reads the newest version of a record among its replicas (tombstones
    /// included: the caller decides what a delete means); the head of
    /// concurrent versions, if there are several.
    pub async fn get_record_version(&self, key: Id) -> Result<Record, DhtError> {
        let mut v = self.get_record_versions(key).await?;
        Ok(v.swap_remove(0))
    }

    /// Reads every version of a record among its replicas that no other
    /// replaces, head first: one, unless versions written concurrently
    /// (on two sides of a partition) wait for a writer to merge them.
    pub async fn get_record_versions(&self, key: Id) -> Result<Vec<Record>, DhtError> {
        match self.run(Get::new(key, Want::Record)).await? {
            Got::Record(v) if !v.is_empty() => Ok(v),
            _ => Err(DhtError::Call(CallError::Unexpected)),
        }
    }

    /// Reads a record's current value; a deleted record is `NotFound`.
    pub async fn get_record(&self, key: Id) -> Result<Record, DhtError> {
        let r = self.get_record_version(key).await?;
        if r.is_tombstone() {
            return Err(DhtError::NotFound);
        }
        Ok(r)
    }

    /// Deletes a record: a signed tombstone with a higher sequence number.
    pub async fn delete_record(
        &self,
        tombstone: Record,
        expected_seq: Option<u64>,
    ) -> Result<u32, DhtError> {
        if !tombstone.is_tombstone() {
            return Err(DhtError::Refused(RemoteError::Invalid(
                "a delete must carry no value".into(),
            )));
        }
        self.put_record(tombstone, expected_seq).await
    }
}

/// The copies an ordered put ([`Dht::put_record_ordered`]) still makes
/// in the background.
#[derive(Debug)]
pub struct Rest(futures::channel::oneshot::Receiver<Result<Stored, DhtError>>);

impl Rest {
    /// Waits until every copy is stored, or the put failed (at its
    /// deadline, or with a refusal: a new owner that never saw the
    /// version the compare-and-swap expects).
    pub async fn wait(self) -> Result<Stored, DhtError> {
        self.0.await.unwrap_or_else(|_| {
            Err(DhtError::Unavailable(
                "the put of the other copies was stopped".into(),
            ))
        })
    }
}

/// A single locate as a machine of its own.
#[derive(Debug)]
pub struct LocateOnce(pub locate::Locate);

impl Machine for LocateOnce {
    type Output = Result<Placement, LocateError>;

    fn on_reply(&mut self, id: CallId, reply: Reply) {
        self.0.on_reply(id, reply);
    }

    fn step(&mut self, cx: &mut Cx<'_>) -> Option<Self::Output> {
        self.0.step(cx)
    }
}
