//! Serves requests arriving at the node: one exhaustive match into
//! `handle_*` per request family.

use super::Node;
use super::transport::serve_replica;
use crate::net::Handler;
use crate::wire::{ClientRequest, ClientResponse, NodeInfo, RemoteError, Request, Response};
use std::net::SocketAddr;
use std::sync::Arc;

impl Handler for Node {
    async fn handle(&self, _peer: SocketAddr, req: Request) -> Response {
        match req {
            Request::Chord(r) => Response::Chord(self.ring.handle_request(r)),
            Request::Replica(r) => {
                let refetch = self.refetcher();
                match serve_replica(Arc::clone(&self.store), r, refetch).await {
                    Ok(r) => Response::Replica(r),
                    Err(e) => Response::Error(e),
                }
            }
            Request::Client(r) => match self.handle_client(r).await {
                Ok(r) => Response::Client(r),
                Err(e) => Response::Error(e),
            },
        }
    }
}

impl Node {
    async fn handle_client(&self, req: ClientRequest) -> Result<ClientResponse, RemoteError> {
        if !self.ring.view(|c| c.is_member()) {
            return Err(RemoteError::Unavailable("node is not a ring member".into()));
        }
        match req {
            ClientRequest::Lookup { key } => {
                let r = self
                    .ring
                    .lookup(key)
                    .await
                    .map_err(|e| RemoteError::Unavailable(e.to_string()))?;
                Ok(ClientResponse::Lookup {
                    owner: r.owner,
                    next: r.next,
                    hops: r.hops,
                })
            }
            ClientRequest::PutBlock { data } => {
                let (key, copies) = self.dht.put_block(data).await.map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Put { key, copies })
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
                let r = self
                    .dht
                    .get_record_version(key)
                    .await
                    .map_err(|e| e.to_remote())?;
                Ok(ClientResponse::Record(r))
            }
            ClientRequest::Info => Ok(ClientResponse::Info(self.info())),
        }
    }

    /// This node's description of itself.
    pub fn info(&self) -> NodeInfo {
        let stats = self.store.stats();
        let (me, pred, succs, fingers) = self.ring.view(|c| {
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
            replicas: self.replicas as u32,
        }
    }
}
