//! The node's side of the DHT: its ring state, its route cache, and calls
//! over the connection pool — or straight into the local store when the
//! node called is this one.

use super::Core;
use super::serve_replica::{remote_error, serve_replica};
use crate::chord::RingView;
use crate::dht::{Millis, RouteCache, Transport};
use crate::id::Id;
use crate::rpc::{CallError, Reply, reply_of};
use crate::wire::{Peer, RemoteError, ReplicaResponse, Request, Response};
use std::sync::Arc;

/// Routing and calls for a node's [`crate::dht::Dht`]: a handle on the
/// node's one shared state.
#[derive(Clone)]
pub struct NodeTransport {
    /// The node's state.
    pub core: Arc<Core>,
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
            Ok(Err(e)) => Err(CallError::Refused(remote_error(&e))),
            Err(e) => Err(CallError::Refused(RemoteError::Storage(format!(
                "store task failed: {e}"
            )))),
        }
    }
}
