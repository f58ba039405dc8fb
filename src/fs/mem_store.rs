//! An in-memory [`BlockStore`] with the store's rules, for tests and
//! benchmarks of the layers above. The real stores are implemented higher
//! up, where what they talk to is in reach: the DHT in `node`, one node's
//! client API in `cli`.

use super::{BlockStore, Durability, FsError};
use crate::id::Id;
use crate::item::{MAX_BLOCK, RingSpace};
use crate::ownership::{Claim, Release};
use crate::record::Record;
use std::collections::HashMap;
use std::sync::Mutex;

/// What a [`MemStore`] says it can hold.
const MEM_CAPACITY: u64 = 1 << 40;

/// An in-memory backend with the store's rules (hash check, signed claims
/// and releases, newer-sequence and compare-and-swap), for tests and
/// benchmarks of the layers above.
#[derive(Default)]
pub struct MemStore {
    /// Blocks by key.
    pub blocks: Mutex<HashMap<Id, Vec<u8>>>,
    /// Each block's claims.
    pub claims: Mutex<HashMap<Id, Vec<Claim>>>,
    /// Records by key: their versions, head first.
    pub records: Mutex<HashMap<Id, Vec<Record>>>,
    /// The writer its saves count as (tests of two machines use two
    /// vaults over one store with different writers).
    pub writer: u64,
    /// Block puts so far (stored or not).
    pub puts: std::sync::atomic::AtomicUsize,
    /// Every put's key (a block's, or a record's) and the durability
    /// asked of it, in order.
    pub durabilities: Mutex<Vec<(Id, Durability)>>,
    /// The key of every record read so far, in order.
    pub record_reads: Mutex<Vec<Id>>,
    /// Block puts of more than this many bytes fail as if the ring were
    /// out of reach (0: none fail).
    pub fail_blocks_over: std::sync::atomic::AtomicUsize,
}

impl MemStore {
    /// Block puts so far.
    pub fn block_puts(&self) -> usize {
        self.puts.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The key and durability of every put so far, in order; clears them.
    pub fn take_durabilities(&self) -> Vec<(Id, Durability)> {
        std::mem::take(&mut *self.durabilities.lock().unwrap_or_else(|e| e.into_inner()))
    }

    fn note(&self, key: Id, d: Durability) {
        self.durabilities
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((key, d));
    }
}

impl BlockStore for MemStore {
    async fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        durability: Durability,
    ) -> Result<Id, FsError> {
        self.puts.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.note(key, durability);
        let over = self
            .fail_blocks_over
            .load(std::sync::atomic::Ordering::Relaxed);
        if over > 0 && data.len() > over {
            return Err(FsError::Unavailable("no replica in reach".into()));
        }
        if data.len() > MAX_BLOCK {
            return Err(FsError::TooBig);
        }
        if !key.names(&data) {
            return Err(FsError::Invalid(
                "block bytes do not hash to the key".into(),
            ));
        }
        claim
            .verify(key)
            .map_err(|e| FsError::Invalid(e.to_string()))?;
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, data);
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let list = claims.entry(key).or_default();
        list.retain(|c| c.owner != claim.owner);
        list.push(claim);
        Ok(key)
    }

    async fn release(&self, rel: Release) -> Result<(), FsError> {
        rel.verify().map_err(|e| FsError::Invalid(e.to_string()))?;
        let mut claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let mut blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        for key in &rel.keys {
            if let Some(list) = claims.get_mut(key) {
                list.retain(|c| !rel.covers(c));
                if list.is_empty() {
                    claims.remove(key);
                    blocks.remove(key);
                }
            }
        }
        Ok(())
    }

    async fn space(&self, owner: [u8; 32]) -> Result<RingSpace, FsError> {
        let claims = self.claims.lock().unwrap_or_else(|e| e.into_inner());
        let blocks = self.blocks.lock().unwrap_or_else(|e| e.into_inner());
        let used: u64 = claims
            .iter()
            .filter(|(_, l)| l.iter().any(|c| c.owner == owner))
            .filter_map(|(k, _)| blocks.get(k))
            .map(|d| d.len() as u64)
            .sum();
        let records: u64 = self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .values()
            .flatten()
            .filter(|r| r.owner == owner)
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum();
        let all: u64 = blocks.values().map(|d| d.len() as u64).sum();
        Ok(RingSpace {
            total: MEM_CAPACITY,
            avail: MEM_CAPACITY.saturating_sub(all),
            used: used + records,
            members: 1,
        })
    }

    async fn get_block(&self, key: Id) -> Result<Vec<u8>, FsError> {
        self.blocks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .ok_or(FsError::NotFound)
    }

    async fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        durability: Durability,
    ) -> Result<(), FsError> {
        self.note(rec.key(), durability);
        rec.verify().map_err(|e| FsError::Invalid(e.to_string()))?;
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        let held = records.get(&rec.key()).map_or(&[][..], |v| &v[..]);
        match crate::store::judge_versions(held, &rec, expected_seq) {
            Ok(Some(v)) => {
                records.insert(rec.key(), v);
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(crate::store::StoreError::Conflict { current }) => Err(FsError::Conflict(current)),
            Err(crate::store::StoreError::Stale { current, .. }) => {
                Err(FsError::Conflict(Some(current)))
            }
            Err(e) => Err(FsError::Unavailable(e.to_string())),
        }
    }

    async fn get_versions(&self, key: Id) -> Result<Vec<Record>, FsError> {
        self.record_reads
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(key);
        Ok(self
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(&key)
            .cloned()
            .unwrap_or_default())
    }

    async fn writer(&self) -> Result<u64, FsError> {
        Ok(self.writer)
    }

    async fn sync(&self) -> Result<(), FsError> {
        Ok(())
    }
}
