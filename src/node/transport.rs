//! The node's side of the DHT: its ring state, its route cache, and calls
//! over the connection pool — or straight into the local store when the
//! node called is this one.

use super::Core;
use crate::chord::RingView;
use crate::dht::{Millis, RouteCache, Transport};
use crate::id::Id;
use crate::rpc::{CallError, Reply, reply_of};
use crate::store::{Store, StoreError, apply_replica};
use crate::wire::{
    MAX_BATCH, MAX_PROVE, Peer, RemoteError, ReplicaRequest, ReplicaResponse, Request, Response,
};
use std::sync::Arc;

/// Routing and calls for a node's [`crate::dht::Dht`]: a handle on the
/// node's one shared state.
#[derive(Clone)]
pub struct NodeTransport {
    /// The node's state.
    pub core: Arc<Core>,
}

/// The wire answer to a replica request handled by `store`. An absent item
/// is `NotFound`; a corrupt one too: it was dropped and logged, and
/// `on_corrupt` is told so the node can refetch it from a replica.
pub async fn serve_replica(
    store: Arc<Store>,
    req: ReplicaRequest,
    on_corrupt: impl FnOnce(Id),
) -> Result<ReplicaResponse, RemoteError> {
    match &req {
        ReplicaRequest::Missing { items } if items.len() > MAX_BATCH => {
            return Err(RemoteError::Invalid(format!("more than {MAX_BATCH} items")));
        }
        ReplicaRequest::Prove { items, .. } if items.len() > MAX_PROVE => {
            return Err(RemoteError::Invalid(format!("more than {MAX_PROVE} items")));
        }
        _ => {}
    }
    let res = tokio::task::spawn_blocking(move || apply_replica(store.as_ref(), req))
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
    fn now(&self) -> Millis {
        self.core.now()
    }

    fn view(&self) -> RingView {
        self.core.ring.view(|c| c.view())
    }

    fn routes(&self) -> &RouteCache {
        &self.core.ring.routes
    }

    async fn call(&self, to: &Peer, req: Request) -> Reply {
        if to.id == self.core.me {
            return match req {
                Request::Replica(r) => serve_replica(Arc::clone(&self.core.store), r, |_| {})
                    .await
                    .map(Response::Replica)
                    .map_err(CallError::Refused),
                Request::Chord(r) => Ok(Response::Chord(self.core.ring.handle_request(r))),
                Request::Client(_) => Err(CallError::Unexpected),
            };
        }
        reply_of(self.core.pool.call_peer(to, req).await)
    }

    async fn remove_local(&self, key: Id) -> Reply {
        let store = Arc::clone(&self.core.store);
        match tokio::task::spawn_blocking(move || store.remove(key)).await {
            Ok(Ok(())) => Ok(Response::Replica(ReplicaResponse::Stored)),
            Ok(Err(e)) => Err(CallError::Refused(e.to_remote())),
            Err(e) => Err(CallError::Refused(RemoteError::Storage(format!(
                "store task failed: {e}"
            )))),
        }
    }
}
