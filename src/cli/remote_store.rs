//! The vault's store in the command-line client: every operation goes to
//! one node (`--peer`) over its client API, and that node routes it.

use crate::fs::{BlockStore, Durability, FsError};
use crate::id::Id;
use crate::item::RingSpace;
use crate::net::{LinkKeys, NetConfig, Pool};
use crate::node::fs_error;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use crate::rpc::{
    CallError, ClientGetBlock, ClientGetLatestRecord, ClientInfo, ClientPutBlock, ClientPutRecord,
    ClientRelease, ClientSpace, Rpc,
};
use std::time::Duration;

/// A vault backend that sends every operation to one node (`--peer`).
pub struct RemoteStore {
    /// The node's address.
    pub peer: String,
    /// The connection to it.
    pool: Pool,
    /// The node's writer ID, once asked.
    writer: std::sync::OnceLock<u64>,
}

impl RemoteStore {
    /// A backend talking to the node at `peer`, opening the link with
    /// `keys`.
    pub fn new(peer: &str, keys: LinkKeys) -> RemoteStore {
        RemoteStore {
            peer: peer.to_string(),
            pool: Pool::new(
                NetConfig {
                    rpc_timeout: Duration::from_secs(60),
                    connect_timeout: Duration::from_secs(5),
                    local_ip: None,
                },
                keys,
            ),
            writer: std::sync::OnceLock::new(),
        }
    }

    async fn call<R: Rpc>(&self, rpc: R) -> Result<R::Ok, FsError> {
        crate::rpc::call_addr(&self.pool, &self.peer, rpc, None)
            .await
            .map_err(|e| match e {
                CallError::Refused(r) => fs_error(r),
                CallError::Unexpected => {
                    FsError::Unavailable(format!("{}: unexpected answer", self.peer))
                }
                other => {
                    FsError::Unavailable(format!("cannot reach node at {}: {other}", self.peer))
                }
            })
    }
}

impl BlockStore for RemoteStore {
    // Every client put through a node is durable before it answers.
    async fn put_block(
        &self,
        _key: Id,
        data: Vec<u8>,
        claim: Claim,
        _: Durability,
    ) -> Result<Id, FsError> {
        Ok(self.call(ClientPutBlock(data, claim)).await?.0)
    }

    async fn release(&self, rel: Release) -> Result<(), FsError> {
        self.call(ClientRelease(rel)).await.map(|_| ())
    }

    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        self.call(ClientSpace(owner)).await
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        let d = self.call(ClientGetBlock(key)).await?;
        if !key.names(&d) {
            return Err(FsError::Corrupt(format!(
                "block {} does not match its key",
                key.short()
            )));
        }
        Ok(d)
    }

    async fn put_record(
        &self,
        record: Record,
        expected_seq: Option<u64>,
        _: Durability,
    ) -> Result<(), FsError> {
        self.call(ClientPutRecord {
            record,
            expected_seq,
        })
        .await
        .map(|_| ())
    }

    async fn sync(&self) -> Result<(), FsError> {
        // Every client put through a node is durable before it answers.
        Ok(())
    }

    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        match self.call(ClientGetLatestRecord(key)).await {
            Ok(v) if v.iter().all(|r| r.key() == key && r.verify().is_ok()) => Ok(v),
            Ok(_) => Err(FsError::Corrupt(format!(
                "record {} does not verify",
                key.short()
            ))),
            Err(FsError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(e),
        }
    }

    async fn writer(&self) -> Result<u64, FsError> {
        // Saves count as the node's own: they go through it, so they are
        // never on another side of a partition than its mount's.
        if let Some(w) = self.writer.get() {
            return Ok(*w);
        }
        let info = self.call(ClientInfo).await?;
        let w = info.me.id.prefix_u64();
        let _ = self.writer.set(w);
        Ok(w)
    }
}
