//! The node's side of the DHT: lookups through this node's ring state, and
//! replica calls over the pool — or straight into the local store when the
//! replica is this node.

use super::ring::Ring;
use crate::chord::LookupResult;
use crate::dht::{DhtError, Transport};
use crate::id::Id;
use crate::net::Pool;
use crate::store::{Store, StoreError};
use crate::wire::{
    MAX_BATCH, Peer, RemoteError, ReplicaRequest, ReplicaResponse, Request, Response,
};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Routing and replica calls for a node's [`crate::dht::Dht`].
pub struct NodeTransport {
    /// This node's ring driver (for lookups).
    pub ring: Arc<Ring>,
    /// This node's own store (for calls to itself).
    pub store: Arc<Store>,
    /// Connections to other nodes.
    pub pool: Pool,
    /// This node's ID, to recognize calls to itself.
    pub me: Id,
    /// Recent lookup answers, shared by clones of this transport.
    pub routes: Arc<RouteCache>,
}

/// How long a lookup answer is reused by the DHT client.
const ROUTE_TTL: Duration = Duration::from_secs(2);
/// Lookup answers kept at most.
const ROUTE_MAX: usize = 16_384;

/// Recent lookup answers by key, so hot records (a directory being filled)
/// do not pay a lookup per operation. Entries live [`ROUTE_TTL`]; a stale
/// answer at worst sends a copy to a node that repair later moves on.
/// Repair itself never uses this cache.
#[derive(Default)]
pub struct RouteCache {
    /// Key → (answer, when).
    entries: Mutex<HashMap<Id, (LookupResult, Instant)>>,
}

impl RouteCache {
    fn get(&self, key: Id) -> Option<LookupResult> {
        let e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        e.get(&key)
            .filter(|(_, at)| at.elapsed() < ROUTE_TTL)
            .map(|(r, _)| r.clone())
    }

    fn forget(&self, key: Id) {
        self.entries
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key);
    }

    fn put(&self, key: Id, r: &LookupResult) {
        let mut e = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        if e.len() >= ROUTE_MAX {
            e.retain(|_, (_, at)| at.elapsed() < ROUTE_TTL);
            if e.len() >= ROUTE_MAX {
                e.clear();
            }
        }
        e.insert(key, (r.clone(), Instant::now()));
    }
}

/// Applies a replica request to a local store; `Ok(None)` means the item
/// asked for is not held. Blocking (disk I/O): call it from
/// `spawn_blocking`. A corrupt local copy reads as `Err(Corrupt)`.
pub fn apply_replica(
    store: &Store,
    req: ReplicaRequest,
) -> Result<Option<ReplicaResponse>, StoreError> {
    Ok(Some(match req {
        ReplicaRequest::StoreBlock { key, data, durable } => {
            store.put_block_with(key, &data, durable)?;
            ReplicaResponse::Stored
        }
        ReplicaRequest::FetchBlock { key } => match store.get_block(key)? {
            Some(d) => ReplicaResponse::Block(d),
            None => return Ok(None),
        },
        ReplicaRequest::StoreRecord {
            record,
            expected_seq,
            durable,
        } => {
            store.put_record_with(&record, expected_seq, durable)?;
            ReplicaResponse::Stored
        }
        ReplicaRequest::FetchRecord { key } => match store.get_record(key)? {
            Some(r) => ReplicaResponse::Record(r),
            None => return Ok(None),
        },
        ReplicaRequest::Sync => {
            store.sync_pending()?;
            ReplicaResponse::Stored
        }
        ReplicaRequest::Missing { items } => ReplicaResponse::Missing(store.missing(&items)),
    }))
}

/// The wire answer to a replica request handled by `store`. An absent item
/// is `NotFound`; a corrupt one too: it was dropped and logged, and
/// `on_corrupt` is told so the node can refetch it from a replica.
pub async fn serve_replica(
    store: Arc<Store>,
    req: ReplicaRequest,
    on_corrupt: impl FnOnce(Id),
) -> Result<ReplicaResponse, RemoteError> {
    if let ReplicaRequest::Missing { items } = &req
        && items.len() > MAX_BATCH
    {
        return Err(RemoteError::Invalid(format!("more than {MAX_BATCH} items")));
    }
    let res = tokio::task::spawn_blocking(move || apply_replica(&store, req))
        .await
        .map_err(|e| RemoteError::Storage(format!("store task failed: {e}")))?;
    match res {
        Ok(Some(r)) => Ok(r),
        Ok(None) => Err(RemoteError::NotFound),
        Err(StoreError::Corrupt(key)) => {
            on_corrupt(key);
            Err(RemoteError::NotFound)
        }
        Err(e) => Err(e.to_remote()),
    }
}

impl Transport for NodeTransport {
    fn local_id(&self) -> Option<Id> {
        Some(self.me)
    }

    fn forget_route(&self, key: Id) {
        self.routes.forget(key);
    }

    async fn lookup(&self, key: Id) -> Result<LookupResult, DhtError> {
        if let Some(r) = self.routes.get(key) {
            return Ok(r);
        }
        let r = self
            .ring
            .lookup(key)
            .await
            .map_err(|e| DhtError::Lookup(e.to_string()))?;
        self.routes.put(key, &r);
        Ok(r)
    }

    async fn replica_call(
        &self,
        peer: &Peer,
        req: ReplicaRequest,
    ) -> Result<ReplicaResponse, DhtError> {
        if peer.id == self.me {
            return serve_replica(Arc::clone(&self.store), req, |_| {})
                .await
                .map_err(DhtError::Refused);
        }
        match self.pool.call_peer(peer, Request::Replica(req)).await {
            Ok(Response::Replica(r)) => Ok(r),
            Ok(Response::Error(e)) => Err(DhtError::Refused(e)),
            Ok(_) => Err(DhtError::Call(format!("{}: unexpected answer", peer.addr))),
            Err(e) => Err(DhtError::Call(format!("{}: {e}", peer.addr))),
        }
    }
}
