//! Where a vault stores things: the DHT inside a node, one node's client
//! API from the command line, or memory in tests.

use super::{BlockStore, FsError};
use crate::dht::{Dht, DhtError, Transport};
use crate::id::Id;
use crate::net::{NetConfig, Pool};
use crate::record::Record;
use crate::rpc::{
    CallError, ClientGetBlock, ClientGetLatestRecord, ClientPutBlock, ClientPutRecord, Rpc,
};
use crate::wire::RemoteError;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

fn from_remote(e: RemoteError) -> FsError {
    match e {
        RemoteError::NotFound => FsError::NotFound,
        RemoteError::Conflict { current } => FsError::Conflict(current),
        RemoteError::Stale { current, .. } => FsError::Conflict(Some(current)),
        RemoteError::TooLarge(_) => FsError::TooBig,
        RemoteError::NoSpace(m) => FsError::NoSpace(m),
        other => FsError::Unavailable(other.to_string()),
    }
}

fn from_dht(e: DhtError) -> FsError {
    match e {
        DhtError::NotFound => FsError::NotFound,
        DhtError::Refused(r) => from_remote(r),
        DhtError::TooLarge(_) => FsError::TooBig,
        DhtError::NoSpace(m) => FsError::NoSpace(m),
        other => FsError::Unavailable(other.to_string()),
    }
}

impl<T: Transport + 'static> BlockStore for Dht<T> {
    async fn put_block(&self, data: Vec<u8>) -> Result<Id, FsError> {
        Dht::put_block_as(self, data, false)
            .await
            .map(|(k, _)| k)
            .map_err(from_dht)
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        Dht::get_block(self, key).await.map_err(from_dht)
    }

    async fn put_record(&self, rec: Record, expected_seq: Option<u64>) -> Result<(), FsError> {
        Dht::put_record_as(self, rec, expected_seq, false)
            .await
            .map(|_| ())
            .map_err(from_dht)
    }

    async fn get_record(&self, key: Id) -> Result<Option<Record>, FsError> {
        match self.get_record_version(key).await {
            Ok(r) => Ok(Some(r)),
            Err(DhtError::NotFound) => Ok(None),
            Err(e) => Err(from_dht(e)),
        }
    }

    async fn sync(&self) -> Result<(), FsError> {
        Dht::sync(self).await.map_err(from_dht)
    }

    async fn put_new_record(&self, rec: Record) -> Result<(), FsError> {
        Dht::put_new_record(self, rec, false)
            .await
            .map(|_| ())
            .map_err(from_dht)
    }
}

/// A vault backend that sends every operation to one node (`--peer`).
pub struct RemoteStore {
    /// The node's address.
    pub peer: String,
    /// The connection to it.
    pool: Pool,
}

impl RemoteStore {
    /// A backend talking to the node at `peer`, opening the link with
    /// `keys`.
    pub fn new(peer: &str, keys: crate::net::LinkKeys) -> RemoteStore {
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
        }
    }

    async fn call<R: Rpc>(&self, rpc: R) -> Result<R::Ok, FsError> {
        crate::rpc::call_addr(&self.pool, &self.peer, rpc, None)
            .await
            .map_err(|e| match e {
                CallError::Refused(r) => from_remote(r),
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
    async fn put_block(&self, data: Vec<u8>) -> Result<Id, FsError> {
        Ok(self.call(ClientPutBlock(data)).await?.0)
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        let d = self.call(ClientGetBlock(key)).await?;
        if Id::hash(&d) != key {
            return Err(FsError::Corrupt(format!(
                "block {} does not match its key",
                key.short()
            )));
        }
        Ok(d)
    }

    async fn put_record(&self, record: Record, expected_seq: Option<u64>) -> Result<(), FsError> {
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

    async fn get_record(&self, key: Id) -> Result<Option<Record>, FsError> {
        match self.call(ClientGetLatestRecord(key)).await {
            Ok(r) if r.key() == key && r.verify().is_ok() => Ok(Some(r)),
            Ok(_) => Err(FsError::Corrupt(format!(
                "record {} does not verify",
                key.short()
            ))),
            Err(FsError::NotFound) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

/// An in-memory backend with the store's rules (hash check, newer-sequence
/// and compare-and-swap), for tests and benchmarks of the layers above.
#[derive(Default)]
pub struct MemStore {
    /// Blocks by key.
    pub blocks: Mutex<HashMap<Id, Vec<u8>>>,
    /// Records by key.
    pub records: Mutex<HashMap<Id, Record>>,
}

impl BlockStore for MemStore {
    async fn put_block(&self, data: Vec<u8>) -> Result<Id, FsError> {
        if data.len() > crate::wire::MAX_BLOCK {
            return Err(FsError::TooBig);
        }
        let key = Id::hash(&data);
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, data);
        Ok(key)
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    async fn put_record(&self, rec: Record, expected_seq: Option<u64>) -> Result<(), FsError> {
        rec.verify().map_err(|e| FsError::Invalid(e.to_string()))?;
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let current = records.get(&rec.key()).map(|r| r.seq);
        if let Some(e) = expected_seq
            && current.unwrap_or(0) != e
        {
            return Err(FsError::Conflict(current));
        }
        if current.is_some_and(|c| rec.seq <= c) {
            return Err(FsError::Conflict(current));
        }
        records.insert(rec.key(), rec);
        Ok(())
    }

    async fn get_record(&self, key: Id) -> Result<Option<Record>, FsError> {
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned())
    }

    async fn sync(&self) -> Result<(), FsError> {
        Ok(())
    }
}
