//! The DHT as a vault's [`BlockStore`], for a vault inside a node (the
//! mount): every operation goes through [`Dht`], and what the ring
//! refuses becomes an [`FsError`] ([`fs_error`], which the command-line
//! client's store uses too).

use crate::dht::{Dht, DhtError, Transport};
use crate::fs::{BlockStore, Durability, Following, FsError};
use crate::id::Id;
use crate::item::RingSpace;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use crate::wire::RemoteError;

/// What a node's refusal means to the vault.
pub fn fs_error(e: RemoteError) -> FsError {
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
        DhtError::Refused(r) => fs_error(r),
        DhtError::TooLarge(_) => FsError::TooBig,
        DhtError::NoSpace(m) => FsError::NoSpace(m),
        other => FsError::Unavailable(other.to_string()),
    }
}

impl<T: Transport + Clone + 'static> BlockStore for Dht<T> {
    async fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        durability: Durability,
    ) -> Result<Id, FsError> {
        Dht::put_block_as(self, key, data, vec![claim], durability == Durability::Now)
            .await
            .map(|(k, _)| k)
            .map_err(from_dht)
    }

    async fn release(&self, rel: Release) -> Result<(), FsError> {
        Dht::release(self, rel).await.map(|_| ()).map_err(from_dht)
    }

    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        Dht::space(self, owner).await.map_err(from_dht)
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        Dht::get_block(self, key).await.map_err(from_dht)
    }

    async fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        durability: Durability,
    ) -> Result<(), FsError> {
        Dht::put_record_as(self, rec, expected_seq, durability == Durability::Now)
            .await
            .map(|_| ())
            .map_err(from_dht)
    }

    async fn put_record_ordered(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
    ) -> Result<Following, FsError> {
        let rest = Dht::put_record_ordered(self, rec, expected_seq)
            .await
            .map_err(from_dht)?;
        Ok(Following::of(async move {
            rest.wait().await.map(|_| ()).map_err(from_dht)
        }))
    }

    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        match self.get_record_versions(key).await {
            Ok(v) => Ok(v),
            Err(DhtError::NotFound) => Ok(Vec::new()),
            Err(e) => Err(from_dht(e)),
        }
    }

    async fn writer(&self) -> Result<u64, FsError> {
        Ok(self.transport.view().me.id.prefix_u64())
    }

    async fn sync(&self) -> Result<(), FsError> {
        Dht::sync(self).await.map_err(from_dht)
    }

    async fn put_new_record(&self, rec: Record, durability: Durability) -> Result<(), FsError> {
        Dht::put_new_record(self, rec, durability == Durability::Now)
            .await
            .map(|_| ())
            .map_err(from_dht)
    }
}
