//! The DHT client API: put and get of blocks and records.
//!
//! Each operation is a lookup of the key's owner followed by calls to the
//! owner and its replicas (DESIGN.md, "Replication"). A put succeeds only
//! once `r` nodes (fewer if the ring is smaller) have stored the item; a
//! replica that fails is replaced by the next node after the replica set. A
//! get tries the owner, then every following node the lookup returned, and
//! re-hashes every block it receives, so a corrupt or missing copy on one
//! node is skipped. The lookup and the calls go through a [`Transport`], so
//! the same code runs in the node and in tests. A put of a block or of a
//! new record whose key lies between two ring neighbours a recent lookup
//! named skips the lookup ([`routes`]).

mod routes;

use crate::chord::LookupResult;
use crate::id::Id;
use crate::record::Record;
use crate::replica::replica_set;
use crate::wire::{MAX_BLOCK, Peer, RemoteError, ReplicaRequest, ReplicaResponse};
use futures::future::join_all;
use std::future::Future;

/// What the DHT needs from below: routing and calls to one node's store.
pub trait Transport: Send + Sync {
    /// The owner of `key` and the nodes after it.
    fn lookup(&self, key: Id) -> impl Future<Output = Result<LookupResult, DhtError>> + Send;
    /// One call to `peer`'s own store.
    fn replica_call(
        &self,
        peer: &Peer,
        req: ReplicaRequest,
    ) -> impl Future<Output = Result<ReplicaResponse, DhtError>> + Send;
    /// The ring ID of the node this transport runs in, if any: a read
    /// tries its own store first when it is one of the replicas.
    fn local_id(&self) -> Option<Id> {
        None
    }
    /// Forgets any remembered lookup answer for `key`, so the next lookup
    /// asks the ring (after a read found nothing where the answer said).
    fn forget_route(&self, _key: Id) {}
}

/// Why a DHT operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DhtError {
    #[error("lookup failed: {0}")]
    Lookup(String),
    #[error("not found on any replica")]
    NotFound,
    #[error("refused: {0}")]
    Refused(RemoteError),
    #[error("call failed: {0}")]
    Call(String),
    #[error("only {stored} of {wanted} replicas stored the item (last error: {last})")]
    TooFewReplicas {
        stored: u32,
        wanted: u32,
        last: String,
    },
    #[error("block of {0} bytes exceeds the 1 MiB limit")]
    TooLarge(usize),
}

impl DhtError {
    /// The error to send back to a remote client.
    pub fn to_remote(&self) -> RemoteError {
        match self {
            DhtError::NotFound => RemoteError::NotFound,
            DhtError::Refused(e) => e.clone(),
            DhtError::TooLarge(n) => RemoteError::TooLarge(*n as u64),
            other => RemoteError::Unavailable(other.to_string()),
        }
    }
}

/// Put/get over a transport with replication factor `replicas`.
pub struct Dht<T> {
    /// Routing and calls.
    pub transport: T,
    /// Copies kept of every item (r).
    pub replicas: usize,
    /// Nodes that took a non-durable write from this client since its last
    /// [`Dht::sync`].
    unsynced: std::sync::Mutex<std::collections::HashMap<crate::id::Id, Peer>>,
    /// Runs of ring members from recent lookups, to place new keys.
    runs: routes::Runs,
}

/// Pause before a put whose lookup named fewer than r nodes asks again.
const SHORT_SET_PAUSE: std::time::Duration = std::time::Duration::from_millis(200);

/// Pause before a block read that met only passing failures is retried.
const GET_RETRY_PAUSE: std::time::Duration = std::time::Duration::from_millis(300);

/// What one pass over a block's replicas found.
enum Fetched {
    Block(Vec<u8>),
    /// No replica had it; `transient` if some failed for a passing reason.
    Missing {
        transient: bool,
    },
}

/// Whether a refusal is final (retrying elsewhere cannot help).
fn is_final(e: &RemoteError) -> bool {
    matches!(
        e,
        RemoteError::BadHash
            | RemoteError::BadSignature
            | RemoteError::Stale { .. }
            | RemoteError::Conflict { .. }
            | RemoteError::TooLarge(_)
            | RemoteError::Invalid(_)
    )
}

impl<T> Dht<T> {
    /// A DHT client over `transport` keeping `replicas` copies.
    pub fn new(transport: T, replicas: usize) -> Dht<T> {
        Dht {
            transport,
            replicas,
            unsynced: Default::default(),
            runs: Default::default(),
        }
    }
}

impl<T: Transport> Dht<T> {
    /// Stores a block on its replicas, each fsynced before it answers;
    /// returns its key and the copy count.
    pub async fn put_block(&self, data: Vec<u8>) -> Result<(Id, u32), DhtError> {
        self.put_block_as(data, true).await
    }

    /// Stores a block on its replicas; without `durable` the replicas
    /// answer once it is visible, and [`Dht::sync`] makes it durable.
    pub async fn put_block_as(&self, data: Vec<u8>, durable: bool) -> Result<(Id, u32), DhtError> {
        if data.len() > MAX_BLOCK {
            return Err(DhtError::TooLarge(data.len()));
        }
        let key = Id::hash(&data);
        let copies = self
            .store_replicated(key, durable, false, |_| ReplicaRequest::StoreBlock {
                key,
                data: data.clone(),
                durable,
            })
            .await?;
        Ok((key, copies))
    }

    /// Makes every non-durable write of this client durable on every node
    /// that took one.
    pub async fn sync(&self) -> Result<(), DhtError> {
        let peers: Vec<Peer> = {
            let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
            u.drain().map(|(_, p)| p).collect()
        };
        let results = join_all(
            peers
                .iter()
                .map(|p| self.transport.replica_call(p, ReplicaRequest::Sync)),
        )
        .await;
        let mut failed = Vec::new();
        for (p, r) in peers.into_iter().zip(results) {
            if !matches!(r, Ok(ReplicaResponse::Stored)) {
                failed.push(p);
            }
        }
        if failed.is_empty() {
            return Ok(());
        }
        let names: Vec<String> = failed.iter().map(|p| p.addr.clone()).collect();
        // Keep them for the next try.
        let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
        for p in failed {
            u.insert(p.id, p);
        }
        Err(DhtError::Call(format!(
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
        let key = record.key();
        // Records: the owner orders writers (compare-and-swap) first.
        self.store_replicated(key, durable, true, |first| ReplicaRequest::StoreRecord {
            record: record.clone(),
            // The owner decides the compare-and-swap; replicas take the
            // version the owner accepted.
            expected_seq: if first { expected_seq } else { None },
            durable,
        })
        .await
    }

    /// Stores the first version of a record under a name nobody else can
    /// know (drawn at random): all replicas at once, each checking the name
    /// is free (`expected_seq = 0`), no owner round first.
    pub async fn put_new_record(&self, record: Record, durable: bool) -> Result<u32, DhtError> {
        let key = record.key();
        self.store_replicated(key, durable, false, |_| ReplicaRequest::StoreRecord {
            record: record.clone(),
            expected_seq: Some(0),
            durable,
        })
        .await
    }

    /// Sends a store request to the replica set, replacing failed members
    /// by later nodes, until `wanted` have stored it.
    async fn store_replicated(
        &self,
        key: Id,
        durable: bool,
        owner_first: bool,
        make: impl Fn(bool) -> ReplicaRequest,
    ) -> Result<u32, DhtError> {
        // A run from a recent lookup places an item that needs no ordering
        // (a block, a record's first version under a fresh name) without a
        // lookup, with one spare node at least; if that set falls short, a
        // real lookup decides (re-sending is idempotent: a held version
        // counts as stored). Compare-and-swap puts always look the owner up.
        if !owner_first && let Some(found) = self.runs.locate(key, self.replicas) {
            match self.store_on(found, durable, owner_first, &make).await {
                Err(DhtError::TooFewReplicas { .. }) => {}
                other => return other,
            }
        }
        let mut found = self.transport.lookup(key).await?;
        let size = |r: &LookupResult| replica_set(&r.owner, &r.next, self.replicas).len();
        if size(&found) < self.replicas {
            // Fewer than r nodes: the ring may really be that small, or the
            // answering node's successor list is still filling in (it just
            // joined, or a neighbour just died). Ask once more before
            // settling for fewer copies.
            self.transport.forget_route(key);
            tokio::time::sleep(SHORT_SET_PAUSE).await;
            let again = self.transport.lookup(key).await?;
            if size(&again) > size(&found) {
                found = again;
            }
        }
        self.runs.learn(&found);
        self.store_on(found, durable, owner_first, &make).await
    }

    /// [`Dht::store_replicated`] on the owner and nodes of `found`.
    async fn store_on(
        &self,
        found: LookupResult,
        durable: bool,
        owner_first: bool,
        make: &impl Fn(bool) -> ReplicaRequest,
    ) -> Result<u32, DhtError> {
        if !durable {
            // Remember every node that may take the write, before sending.
            let mut u = self.unsynced.lock().unwrap_or_else(|e| e.into_inner());
            for p in std::iter::once(&found.owner).chain(found.next.iter()) {
                u.insert(p.id, p.clone());
            }
        }
        let set = replica_set(&found.owner, &found.next, self.replicas);
        let wanted = set.len() as u32;
        let mut spare: Vec<Peer> = found
            .next
            .iter()
            .filter(|p| !set.iter().any(|q| q.id == p.id))
            .cloned()
            .collect();
        // With `owner_first` (records) the owner judges compare-and-swap
        // before the rest are asked; immutable blocks go to all at once.
        let mut stored = 0u32;
        let mut last = String::from("none");
        let mut failed = 0usize;
        let mut answers = Vec::with_capacity(set.len());
        let rest = if owner_first {
            answers.push(self.transport.replica_call(&set[0], make(true)).await);
            if let Err(DhtError::Refused(e)) = &answers[0]
                && is_final(e)
            {
                return Err(DhtError::Refused(e.clone()));
            }
            &set[1..]
        } else {
            &set[..]
        };
        answers.extend(
            join_all(
                rest.iter()
                    .map(|p| self.transport.replica_call(p, make(!owner_first))),
            )
            .await,
        );
        // Members that failed for a reason a retry may fix (a timeout on a
        // busy node), with whether they are the owner.
        let mut retry: Vec<(Peer, bool)> = Vec::new();
        for (i, r) in answers.into_iter().enumerate() {
            match r {
                Ok(ReplicaResponse::Stored) => stored += 1,
                Err(DhtError::Refused(e)) if is_final(&e) && stored == 0 => {
                    return Err(DhtError::Refused(e));
                }
                Err(e) => {
                    failed += 1;
                    last = e.to_string();
                    retry.push((set[i].clone(), i == 0 && owner_first));
                }
                Ok(_) => {
                    failed += 1;
                    last = "unexpected answer".into();
                }
            }
        }
        // Replace each failed member by the next spare node.
        while failed > 0 && !spare.is_empty() {
            let p = spare.remove(0);
            match self.transport.replica_call(&p, make(false)).await {
                Ok(ReplicaResponse::Stored) => {
                    stored += 1;
                    failed -= 1;
                }
                Err(e) => last = e.to_string(),
                Ok(_) => last = "unexpected answer".into(),
            }
        }
        // Still short: ask the members that failed once more (an item that
        // landed late answers as already stored).
        if stored < wanted && !retry.is_empty() {
            let again = join_all(
                retry
                    .iter()
                    .map(|(p, owner)| self.transport.replica_call(p, make(*owner))),
            )
            .await;
            for r in again {
                match r {
                    Ok(ReplicaResponse::Stored) => stored += 1,
                    Err(e) => last = e.to_string(),
                    Ok(_) => last = "unexpected answer".into(),
                }
            }
        }
        if stored < wanted {
            return Err(DhtError::TooFewReplicas {
                stored,
                wanted,
                last,
            });
        }
        Ok(stored)
    }

    /// Reads a block: owner first, then the following nodes; every copy is
    /// re-hashed and a bad one skipped.
    pub async fn get_block(&self, key: Id) -> Result<Vec<u8>, DhtError> {
        // A pass that finds nothing is tried once more with a fresh lookup
        // (a remembered answer may predate a change of the ring: the copies
        // have moved on), after a pause if some replica failed for a
        // passing reason (a call that timed out or was cut, a busy node, as
        // right after a crash).
        for attempt in 0..2 {
            match self.get_block_once(key).await? {
                Fetched::Block(data) => return Ok(data),
                Fetched::Missing { transient } if attempt == 0 => {
                    self.transport.forget_route(key);
                    if transient {
                        tokio::time::sleep(GET_RETRY_PAUSE).await;
                    }
                }
                Fetched::Missing { .. } => {}
            }
        }
        Err(DhtError::NotFound)
    }

    /// One pass of [`Dht::get_block`] over the replicas.
    async fn get_block_once(&self, key: Id) -> Result<Fetched, DhtError> {
        let found = self.transport.lookup(key).await?;
        let mut order: Vec<&Peer> = std::iter::once(&found.owner)
            .chain(found.next.iter())
            .collect();
        // A replica in this very node answers without a network hop.
        if let Some(me) = self.transport.local_id()
            && let Some(i) = order.iter().take(self.replicas).position(|p| p.id == me)
        {
            let local = order.remove(i);
            order.insert(0, local);
        }
        let mut transient = false;
        let mut failures: Vec<String> = Vec::new();
        for p in order {
            match self
                .transport
                .replica_call(p, ReplicaRequest::FetchBlock { key })
                .await
            {
                Ok(ReplicaResponse::Block(data)) if Id::hash(&data) == key => {
                    return Ok(Fetched::Block(data));
                }
                Ok(ReplicaResponse::Block(_)) => {
                    log::warn!(
                        "block {} from {:?} does not match its hash; trying the next replica",
                        key.short(),
                        p
                    );
                }
                Err(DhtError::Refused(RemoteError::NotFound)) => {
                    failures.push(format!("{}: not there", p.addr));
                }
                Err(e) => {
                    failures.push(format!("{}: {e}", p.addr));
                    transient = true;
                }
                Ok(_) => {
                    failures.push(format!("{}: unexpected answer", p.addr));
                    transient = true;
                }
            }
        }
        log::debug!(
            "block {} not read (owner {}): {}",
            key.short(),
            found.owner.addr,
            failures.join("; ")
        );
        Ok(Fetched::Missing { transient })
    }

    /// Reads the newest version of a record among its replicas (tombstones
    /// included: the caller decides what a delete means).
    pub async fn get_record_version(&self, key: Id) -> Result<Record, DhtError> {
        let found = self.transport.lookup(key).await?;
        let set = replica_set(&found.owner, &found.next, self.replicas);
        let answers = join_all(set.iter().map(|p| {
            self.transport
                .replica_call(p, ReplicaRequest::FetchRecord { key })
        }))
        .await;
        let mut best: Option<Record> = None;
        for a in answers {
            if let Ok(ReplicaResponse::Record(r)) = a
                && r.key() == key
                && r.verify().is_ok()
                && best.as_ref().is_none_or(|b| r.seq > b.seq)
            {
                best = Some(r);
            }
        }
        if best.is_none() {
            // Every replica in the set missed it: try the nodes after it.
            for p in found
                .next
                .iter()
                .filter(|p| !set.iter().any(|q| q.id == p.id))
            {
                if let Ok(ReplicaResponse::Record(r)) = self
                    .transport
                    .replica_call(p, ReplicaRequest::FetchRecord { key })
                    .await
                    && r.key() == key
                    && r.verify().is_ok()
                {
                    best = Some(r);
                    break;
                }
            }
        }
        best.ok_or(DhtError::NotFound)
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;
    use std::collections::HashMap;
    use std::sync::Mutex;

    /// Three in-memory stores, one of them unreachable or corrupt on demand.
    struct Fake {
        stores: Vec<(Peer, Store)>,
        down: Mutex<Vec<Id>>,
        /// Calls to these nodes fail this many more times, then succeed.
        flaky: Mutex<HashMap<Id, u32>>,
        corrupt: Mutex<HashMap<Id, Vec<u8>>>,
        /// Lookups asked for.
        lookups: std::sync::atomic::AtomicUsize,
        /// The node this fake transport runs in.
        local: Option<Id>,
        /// Nodes asked for a block, in order.
        fetched_from: Mutex<Vec<Id>>,
        /// A remembered (stale) lookup answer, until `forget_route`.
        remembered: Mutex<Option<LookupResult>>,
        _dirs: Vec<tempfile::TempDir>,
    }

    impl Fake {
        fn new(n: usize) -> Fake {
            let mut stores = Vec::new();
            let mut dirs = Vec::new();
            for i in 0..n {
                let d = tempfile::tempdir().unwrap();
                let mut id = [0u8; 32];
                id[0] = (i as u8 + 1) * 40;
                stores.push((
                    Peer {
                        id: Id(id),
                        addr: format!("fake:{i}"),
                    },
                    Store::open(d.path()).unwrap(),
                ));
                dirs.push(d);
            }
            Fake {
                stores,
                down: Mutex::new(Vec::new()),
                flaky: Mutex::new(HashMap::new()),
                corrupt: Mutex::new(HashMap::new()),
                lookups: Default::default(),
                local: None,
                fetched_from: Mutex::new(Vec::new()),
                remembered: Mutex::new(None),
                _dirs: dirs,
            }
        }
    }

    impl Transport for Fake {
        fn local_id(&self) -> Option<Id> {
            self.local
        }

        fn forget_route(&self, _key: Id) {
            *self.remembered.lock().unwrap() = None;
        }

        async fn lookup(&self, _key: Id) -> Result<LookupResult, DhtError> {
            if let Some(r) = self.remembered.lock().unwrap().clone() {
                return Ok(r);
            }
            self.lookups
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Ok(LookupResult {
                key: _key,
                owner: self.stores[0].0.clone(),
                next: self.stores[1..].iter().map(|s| s.0.clone()).collect(),
                hops: 0,
            })
        }

        async fn replica_call(
            &self,
            peer: &Peer,
            req: ReplicaRequest,
        ) -> Result<ReplicaResponse, DhtError> {
            if matches!(req, ReplicaRequest::FetchBlock { .. }) {
                self.fetched_from.lock().unwrap().push(peer.id);
            }
            if self.down.lock().unwrap().contains(&peer.id) {
                return Err(DhtError::Call("down".into()));
            }
            if let Some(n) = self.flaky.lock().unwrap().get_mut(&peer.id)
                && *n > 0
            {
                *n -= 1;
                return Err(DhtError::Call("timeout".into()));
            }
            if let Some(bad) = self.corrupt.lock().unwrap().get(&peer.id)
                && matches!(req, ReplicaRequest::FetchBlock { .. })
            {
                return Ok(ReplicaResponse::Block(bad.clone()));
            }
            let store = &self.stores.iter().find(|s| s.0.id == peer.id).unwrap().1;
            let r = match req {
                ReplicaRequest::StoreBlock { key, data, .. } => {
                    store.put_block(key, &data).map(|_| ReplicaResponse::Stored)
                }
                ReplicaRequest::FetchBlock { key } => match store.get_block(key) {
                    Ok(Some(d)) => Ok(ReplicaResponse::Block(d)),
                    _ => return Err(DhtError::Refused(RemoteError::NotFound)),
                },
                ReplicaRequest::StoreRecord {
                    record,
                    expected_seq,
                    ..
                } => store
                    .put_record(&record, expected_seq)
                    .map(|_| ReplicaResponse::Stored),
                ReplicaRequest::FetchRecord { key } => match store.get_record(key) {
                    Ok(Some(r)) => Ok(ReplicaResponse::Record(r)),
                    _ => return Err(DhtError::Refused(RemoteError::NotFound)),
                },
                ReplicaRequest::Sync => Ok(ReplicaResponse::Stored),
                ReplicaRequest::Missing { items } => {
                    Ok(ReplicaResponse::Missing(store.missing(&items)))
                }
            };
            r.map_err(|e| DhtError::Refused(e.to_remote()))
        }
    }

    #[tokio::test]
    async fn put_reaches_r_replicas_and_survives_a_dead_one() {
        let dht = Dht::new(Fake::new(4), 3);
        let (key, copies) = dht.put_block(b"hello".to_vec()).await.unwrap();
        assert_eq!(copies, 3);
        assert_eq!(dht.transport.stores[3].1.stats().blocks, 0);
        // With one replica down the spare takes its place.
        let down = dht.transport.stores[1].0.id;
        dht.transport.down.lock().unwrap().push(down);
        let (_, copies) = dht.put_block(b"world".to_vec()).await.unwrap();
        assert_eq!(copies, 3);
        assert_eq!(dht.transport.stores[3].1.stats().blocks, 1);
        // Reads skip the dead node and a corrupt copy.
        let owner = dht.transport.stores[0].0.id;
        dht.transport
            .corrupt
            .lock()
            .unwrap()
            .insert(owner, b"junk".to_vec());
        assert_eq!(dht.get_block(key).await.unwrap(), b"hello");
        assert_eq!(
            dht.get_block(Id::hash(b"absent")).await,
            Err(DhtError::NotFound)
        );
    }

    #[tokio::test]
    async fn put_fails_without_enough_replicas() {
        let dht = Dht::new(Fake::new(3), 3);
        let down = dht.transport.stores[2].0.id;
        dht.transport.down.lock().unwrap().push(down);
        assert!(matches!(
            dht.put_block(b"x".to_vec()).await,
            Err(DhtError::TooFewReplicas {
                stored: 2,
                wanted: 3,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn records_newest_wins_and_forgeries_are_refused() {
        let dht = Dht::new(Fake::new(3), 3);
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let r1 = Record::sign(&sk, b"n", 1, Some(b"one".to_vec()));
        dht.put_record(r1.clone(), Some(0)).await.unwrap();
        let r2 = Record::sign(&sk, b"n", 2, Some(b"two".to_vec()));
        dht.put_record(r2, Some(1)).await.unwrap();
        assert_eq!(
            dht.get_record(r1.key()).await.unwrap().value.unwrap(),
            b"two"
        );
        // Stale and CAS failures are final.
        assert!(matches!(
            dht.put_record(r1.clone(), None).await,
            Err(DhtError::Refused(RemoteError::Stale { .. }))
        ));
        let r3 = Record::sign(&sk, b"n", 3, Some(b"three".to_vec()));
        assert!(matches!(
            dht.put_record(r3, Some(1)).await,
            Err(DhtError::Refused(RemoteError::Conflict { .. }))
        ));
        let mut forged = Record::sign(&sk, b"n", 9, Some(b"evil".to_vec()));
        forged.value = Some(b"EVIL".to_vec());
        assert!(matches!(
            dht.put_record(forged, None).await,
            Err(DhtError::Refused(RemoteError::BadSignature))
        ));
        let del = Record::sign(&sk, b"n", 4, None);
        dht.delete_record(del, None).await.unwrap();
        assert_eq!(dht.get_record(r1.key()).await, Err(DhtError::NotFound));
    }

    #[tokio::test]
    async fn sync_reaches_every_node_written_lazily() {
        let dht = Dht::new(Fake::new(4), 3);
        dht.put_block_as(b"lazy".to_vec(), false).await.unwrap();
        assert_eq!(
            dht.unsynced.lock().unwrap().len(),
            4,
            "owner and every follower noted"
        );
        let down = dht.transport.stores[2].0.id;
        dht.transport.down.lock().unwrap().push(down);
        assert!(
            dht.sync().await.is_err(),
            "a node that cannot sync fails the sync"
        );
        assert_eq!(
            dht.unsynced.lock().unwrap().len(),
            1,
            "and is kept for the next try"
        );
        dht.transport.down.lock().unwrap().clear();
        dht.sync().await.unwrap();
        assert!(dht.unsynced.lock().unwrap().is_empty());
        // Durable puts need no sync.
        dht.put_block(b"durable".to_vec()).await.unwrap();
        assert!(dht.unsynced.lock().unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_replica_that_fails_once_is_asked_again() {
        let dht = Dht::new(Fake::new(3), 3);
        let slow = dht.transport.stores[1].0.id;
        dht.transport.flaky.lock().unwrap().insert(slow, 1);
        let (_, copies) = dht.put_block(b"retried".to_vec()).await.unwrap();
        assert_eq!(copies, 3);
        // Twice in a row is too many: the put reports the shortfall.
        dht.transport.flaky.lock().unwrap().insert(slow, 2);
        assert!(matches!(
            dht.put_block(b"failed".to_vec()).await,
            Err(DhtError::TooFewReplicas {
                stored: 2,
                wanted: 3,
                ..
            })
        ));
    }

    #[tokio::test]
    async fn new_items_between_known_neighbours_skip_the_lookup() {
        // Nodes at 40, 80, ..., 240 (first byte); the fake's lookups always
        // name the node at 40 and all after it.
        let dht = Dht::new(Fake::new(6), 3);
        dht.put_block(b"first".to_vec()).await.unwrap();
        let lookups = || {
            dht.transport
                .lookups
                .load(std::sync::atomic::Ordering::SeqCst)
        };
        assert_eq!(lookups(), 1);
        // A block whose key lies in (80, 120]: owned by the node at 120.
        let data = (0u32..)
            .map(|i| i.to_be_bytes().to_vec())
            .find(|d| (81..=119).contains(&Id::hash(d).0[0]))
            .unwrap();
        let (_, copies) = dht.put_block(data.clone()).await.unwrap();
        assert_eq!(copies, 3);
        assert_eq!(lookups(), 1, "placed from the first lookup's run");
        let holders: Vec<usize> = (0..6)
            .filter(|&i| {
                dht.transport.stores[i]
                    .1
                    .get_block(Id::hash(&data))
                    .unwrap()
                    .is_some()
            })
            .collect();
        assert_eq!(holders, vec![2, 3, 4]);
        // Compare-and-swap puts always look the owner up.
        let sk = ed25519_dalek::SigningKey::from_bytes(&[5; 32]);
        let r1 = Record::sign(&sk, b"cas", 1, Some(b"one".to_vec()));
        dht.put_record(r1, Some(0)).await.unwrap();
        assert_eq!(lookups(), 2);
    }

    #[tokio::test]
    async fn a_local_replica_is_read_first() {
        let mut fake = Fake::new(5);
        let me = fake.stores[2].0.id;
        fake.local = Some(me);
        let dht = Dht::new(fake, 3);
        let (key, _) = dht.put_block(b"near".to_vec()).await.unwrap();
        assert_eq!(dht.get_block(key).await.unwrap(), b"near");
        assert_eq!(dht.transport.fetched_from.lock().unwrap()[0], me);
        // Not a replica (4th node): the owner is asked first.
        let mut far = Fake::new(5);
        far.local = Some(far.stores[3].0.id);
        let owner = far.stores[0].0.id;
        let dht = Dht::new(far, 3);
        let (key, _) = dht.put_block(b"far".to_vec()).await.unwrap();
        dht.get_block(key).await.unwrap();
        assert_eq!(dht.transport.fetched_from.lock().unwrap()[0], owner);
    }

    #[tokio::test]
    async fn a_read_that_met_only_passing_failures_is_retried() {
        let dht = Dht::new(Fake::new(3), 3);
        let (key, _) = dht.put_block(b"survivor".to_vec()).await.unwrap();
        let ids: Vec<Id> = dht.transport.stores.iter().map(|s| s.0.id).collect();
        dht.transport.down.lock().unwrap().extend([ids[0], ids[1]]);
        dht.transport.flaky.lock().unwrap().insert(ids[2], 1);
        assert_eq!(dht.get_block(key).await.unwrap(), b"survivor");
        // A block nobody has is not found at once, without a second pass.
        let dht = Dht::new(Fake::new(3), 3);
        let t = std::time::Instant::now();
        assert_eq!(
            dht.get_block(Id::hash(b"nobody")).await,
            Err(DhtError::NotFound)
        );
        assert!(t.elapsed() < GET_RETRY_PAUSE);
    }

    #[tokio::test]
    async fn a_stale_route_is_forgotten_and_the_read_looks_up_again() {
        let dht = Dht::new(Fake::new(5), 3);
        let (key, _) = dht.put_block(b"moved on".to_vec()).await.unwrap();
        let peers: Vec<Peer> = dht.transport.stores.iter().map(|s| s.0.clone()).collect();
        // An answer from before the ring changed: nodes that do not hold it.
        *dht.transport.remembered.lock().unwrap() = Some(LookupResult {
            key,
            owner: peers[3].clone(),
            next: vec![peers[4].clone()],
            hops: 0,
        });
        assert_eq!(dht.get_block(key).await.unwrap(), b"moved on");
        assert!(dht.transport.remembered.lock().unwrap().is_none());
    }

    #[tokio::test]
    async fn a_put_shown_too_few_nodes_asks_again() {
        let dht = Dht::new(Fake::new(5), 3);
        let owner = dht.transport.stores[0].0.clone();
        // A lookup answered by a node whose successor list is still empty.
        *dht.transport.remembered.lock().unwrap() = Some(LookupResult {
            key: Id::ZERO,
            owner,
            next: vec![],
            hops: 0,
        });
        let (_, copies) = dht.put_block(b"three copies".to_vec()).await.unwrap();
        assert_eq!(copies, 3);
    }
}
