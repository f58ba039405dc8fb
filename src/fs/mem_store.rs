//! An in-memory [`BlockStore`] with the store's rules, for tests and
//! benchmarks of the layers above. The real stores are implemented higher
//! up, where what they talk to is in reach: the DHT in `node`, one node's
//! client API in `cli`.

use super::{BlockStore, FsError};
use crate::id::Id;
use crate::item::MAX_BLOCK;
use crate::record::Record;
use std::collections::HashMap;
use std::sync::Mutex;

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
        if data.len() > MAX_BLOCK {
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
