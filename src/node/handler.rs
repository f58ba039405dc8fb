//! Serves requests arriving at the node: one exhaustive match into a
//! `handle_*` function per request family.
//!
//! Ring messages that speak for their sender must name the sender's own
//! proven ID; replica requests act on this node's store and are accepted
//! only from ring members ([`super::members`]); client requests are routed
//! through the DHT on the client's behalf.

use super::Node;
use super::serve_replica::serve_replica;
use crate::net::{Caller, Handler};
use crate::wire::{
    ChordRequest, ChordResponse, ClientRequest, ClientResponse, NodeInfo, RemoteError,
    ReplicaRequest, ReplicaResponse, Request, Response,
};
use std::sync::Arc;

impl Handler for Node {
    async fn handle(&self, caller: Caller, req: Request) -> Response {
        let kind = req.kind();
        let answer = match req {
            Request::Chord(r) => self.handle_chord(&caller, r).map(Response::Chord),
            Request::Replica(r) => self.handle_replica(&caller, r).await.map(Response::Replica),
            Request::Client(r) => self.handle_client(r).await.map(Response::Client),
        };
        crate::metrics::get().served(kind, answer.is_ok());
        answer.unwrap_or_else(Response::Error)
    }
}

/// A ring message that speaks for its sender (`Notify`, `Leaving`) must
/// name the sender's own ID, the one its link key proves: nobody can claim
/// to be another node.
fn check_claim(caller: &Caller, req: &ChordRequest) -> Result<(), RemoteError> {
    let claimed = match req {
        ChordRequest::Notify(p) => p,
        ChordRequest::Leaving { peer, .. } => peer,
        ChordRequest::Ping | ChordRequest::GetState | ChordRequest::FindSuccessor(_) => {
            return Ok(());
        }
    };
    if claimed.id == caller.id {
        return Ok(());
    }
    Err(RemoteError::Invalid(format!(
        "it claims node ID {} but its link key is node {}",
        claimed.id.short(),
        caller.id.short()
    )))
}

impl Node {
    fn handle_chord(
        &self,
        caller: &Caller,
        req: ChordRequest,
    ) -> Result<ChordResponse, RemoteError> {
        if let Err(e) = check_claim(caller, &req) {
            log::warn!("refusing a ring message from {}: {e}", caller.addr);
            return Err(e);
        }
        Ok(self.core.ring.handle_request(req))
    }

    async fn handle_replica(
        &self,
        caller: &Caller,
        req: ReplicaRequest,
    ) -> Result<ReplicaResponse, RemoteError> {
        // A sync only makes durable what this node already stored: any
        // node of the network may ask (one that just joined, before the
        // ring routes its ID to it, must not see its fsync fail).
        let harmless = matches!(req, ReplicaRequest::Sync);
        if !harmless && let Err(e) = self.check_member(caller.id).await {
            if matches!(e, RemoteError::NotMember(_)) {
                log::warn!("refusing a replica request from {}: {e}", caller.addr);
            }
            return Err(e);
        }
        if let ReplicaRequest::StoreRecord {
            record,
            expected_seq: Some(e),
            ..
        } = &req
            && *e > 0
        {
            self.check_cas_owner(record.key())?;
        }
        serve_replica(Arc::clone(&self.core.store), req, self.refetcher()).await
    }

    /// A compare-and-swap update of a record is judged by the key's owner
    /// alone, which orders its writers; a node that does not own `key` by
    /// its own ring state (a writer's cached answer is out of date, the
    /// ring changed) refuses, with an error the writer retries on after a
    /// fresh lookup. Two nodes judging one key would each accept a version
    /// with the same number, and the replicas would hold both.
    fn check_cas_owner(&self, key: crate::id::Id) -> Result<(), RemoteError> {
        let owns = self.core.ring.view(|c| c.pred().is_none() || c.owns(key));
        if owns {
            Ok(())
        } else {
            log::debug!(
                "refusing a compare-and-swap of {} (not its owner)",
                key.short()
            );
            Err(RemoteError::Unavailable(format!(
                "not the owner of {} now: look it up again",
                key.short()
            )))
        }
    }

    async fn handle_client(&self, req: ClientRequest) -> Result<ClientResponse, RemoteError> {
        // Answered by members and non-members alike.
        match req {
            ClientRequest::Status => {
                return Ok(ClientResponse::Status(Box::new(self.status().await)));
            }
            ClientRequest::Health => return Ok(ClientResponse::Health(self.health())),
            _ => {}
        }
        if let ClientRequest::Pin { path, pin } = req {
            let Some(hook) = self.core.pin_hook.get() else {
                return Err(RemoteError::Invalid("this node mounts no folder".into()));
            };
            hook(path, pin).await.map_err(RemoteError::Invalid)?;
            return Ok(ClientResponse::Status(Box::new(self.status().await)));
        }
        if !self.core.ring.view(|c| c.is_member()) {
            return Err(RemoteError::Unavailable("node is not a ring member".into()));
        }
        match req {
            ClientRequest::Lookup { key } => self.handle_lookup(key).await,
            ClientRequest::PutBlock { data, claim } => {
                let (key, copies) = self
                    .dht
                    .put_block(data, claim)
                    .await
                    .map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Put { key, copies })
            }
            ClientRequest::Release(rel) => {
                rel.verify()
                    .map_err(|e| RemoteError::Invalid(e.to_string()))?;
                let f = self.dht.release(rel).await.map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Freed(f))
            }
            ClientRequest::Space { owner } => {
                let s = self.dht.space(owner).await.map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Space(s))
            }
            ClientRequest::GetBlock { key } => {
                let data = self.dht.get_block(key).await.map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Block(data))
            }
            ClientRequest::PutRecord {
                record,
                expected_seq,
            } => {
                let key = record.key();
                let copies = self
                    .dht
                    .put_record(record, expected_seq)
                    .await
                    .map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Put { key, copies })
            }
            ClientRequest::GetRecord { key } => {
                let r = self.dht.get_record(key).await.map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Record(r))
            }
            ClientRequest::GetLatestRecord { key } => {
                let v = self
                    .dht
                    .get_record_versions(key)
                    .await
                    .map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Versions(v))
            }
            ClientRequest::Info => Ok(ClientResponse::Info(self.info())),
            ClientRequest::Health => Ok(ClientResponse::Health(self.health())),
            ClientRequest::Status | ClientRequest::Pin { .. } => {
                Ok(ClientResponse::Status(Box::new(self.status().await)))
            }
        }
    }

    async fn handle_lookup(&self, key: crate::id::Id) -> Result<ClientResponse, RemoteError> {
        let p = self.dht.locate(key).await.map_err(|e| e.to_remote())?;
        Ok(ClientResponse::Lookup {
            owner: p.owner,
            next: p.next,
            hops: p.hops,
        })
    }

    /// This node's description of itself.
    pub fn info(&self) -> NodeInfo {
        let stats = self.core.store.stats();
        let (me, pred, succs, fingers) = self.core.ring.view(|c| {
            (
                c.me().clone(),
                c.pred().cloned(),
                c.succs().to_vec(),
                c.fingers(),
            )
        });
        NodeInfo {
            me,
            pred,
            succs,
            fingers,
            blocks: stats.blocks,
            records: stats.records,
            bytes: stats.bytes,
            replicas: self.core.replicas as u32,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::Id;
    use crate::wire::Peer;

    fn caller(id: Id) -> Caller {
        Caller {
            addr: "127.0.0.1:1".parse().unwrap(),
            id,
        }
    }

    #[test]
    fn claims_must_match_the_link_key() {
        let me = Id::from_u64(1);
        let other = Id::from_u64(2);
        let peer = |id| Peer {
            id,
            addr: "x:1".into(),
        };
        assert!(check_claim(&caller(me), &ChordRequest::Notify(peer(me))).is_ok());
        assert!(check_claim(&caller(me), &ChordRequest::Notify(peer(other))).is_err());
        let leaving = ChordRequest::Leaving {
            peer: peer(other),
            succs: vec![],
        };
        assert!(check_claim(&caller(me), &leaving).is_err());
        assert!(check_claim(&caller(me), &ChordRequest::GetState).is_ok());
    }
}
