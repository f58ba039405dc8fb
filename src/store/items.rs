//! What any store of items does, whatever keeps the bytes: the rules a
//! record version must pass, and proofs of holding.
//!
//! [`Store`](super::Store) keeps items on disk; [`MemItems`](super::MemItems)
//! keeps them in memory for the simulator. Both implement [`ItemStore`]:
//! the node answers replica requests through it, and the simulator through
//! the same code, so the simulated ring stores by the same rules as a real
//! node.

use super::StoreError;
use crate::id::Id;
use crate::item::{ItemVersion, Proof, proof_of};
use crate::record::Record;

/// A node's own store of blocks and records.
pub trait ItemStore {
    /// Stores a block (checked against its key); `Ok(false)` if held.
    fn put_block_with(&self, key: Id, data: &[u8], durable: bool) -> Result<bool, StoreError>;
    /// Reads a block, re-hashed.
    fn get_block(&self, key: Id) -> Result<Option<Vec<u8>>, StoreError>;
    /// Stores a record version by the rules of [`judge_record`].
    fn put_record_with(
        &self,
        rec: &Record,
        expected_seq: Option<u64>,
        durable: bool,
    ) -> Result<bool, StoreError>;
    /// Reads a record (tombstones too), re-verified.
    fn get_record(&self, key: Id) -> Result<Option<Record>, StoreError>;
    /// The sequence number of the record held under `key`, if any.
    fn record_seq(&self, key: Id) -> Option<u64>;
    /// Makes non-durable writes durable; how many.
    fn sync_pending(&self) -> Result<usize, StoreError>;
    /// Indexes of the items lacked (absent, or an older record version).
    fn missing(&self, items: &[(Id, ItemVersion)]) -> Vec<u32>;
    /// Drops the copies held under `key`.
    fn remove(&self, key: Id) -> Result<(), StoreError>;
    /// Every item held, sorted by key.
    fn items(&self) -> Vec<(Id, ItemVersion)>;

    /// Proofs of holding `items` ([`proof_of`] over `nonce` and the held
    /// bytes): a block if held, a record if held at exactly the version
    /// asked (`Newer` if a later one is held).
    fn prove(&self, nonce: &[u8; 32], items: &[(Id, ItemVersion)]) -> Vec<Proof> {
        items
            .iter()
            .map(|&(key, v)| match v {
                ItemVersion::Block => match self.get_block(key) {
                    Ok(Some(d)) => Proof::Held(proof_of(nonce, key, &d)),
                    _ => Proof::Missing,
                },
                ItemVersion::Record(seq) => match self.record_seq(key) {
                    Some(held) if held > seq => Proof::Newer(held),
                    Some(held) if held == seq => match self.get_record(key) {
                        Ok(Some(r)) if r.seq == seq => match postcard::to_stdvec(&r) {
                            Ok(bytes) => Proof::Held(proof_of(nonce, key, &bytes)),
                            Err(_) => Proof::Missing,
                        },
                        _ => Proof::Missing,
                    },
                    _ => Proof::Missing,
                },
            })
            .collect()
    }
}

/// Whether a record version `offered` may replace what is held: `Ok(false)`
/// if exactly this version is held already (repair and retries are
/// idempotent), `Ok(true)` to store it, or why not. With `expected_seq`
/// the put is a compare-and-swap on the held sequence number (an absent
/// record counts as 0); and a held version is never replaced by one that
/// is not newer.
pub fn judge_record(
    held: Option<u64>,
    same_version_held: bool,
    offered: u64,
    expected_seq: Option<u64>,
) -> Result<bool, StoreError> {
    if same_version_held {
        return Ok(false);
    }
    if let Some(e) = expected_seq
        && held.unwrap_or(0) != e
    {
        return Err(StoreError::Conflict { current: held });
    }
    if let Some(cur) = held
        && offered <= cur
    {
        return Err(StoreError::Stale {
            offered,
            current: cur,
        });
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn record_rules() {
        assert_eq!(judge_record(None, false, 1, Some(0)), Ok(true));
        assert_eq!(judge_record(Some(3), true, 3, Some(9)), Ok(false));
        assert_eq!(
            judge_record(Some(3), false, 4, Some(2)),
            Err(StoreError::Conflict { current: Some(3) })
        );
        assert_eq!(
            judge_record(Some(3), false, 3, None),
            Err(StoreError::Stale {
                offered: 3,
                current: 3
            })
        );
        assert_eq!(judge_record(Some(3), false, 5, None), Ok(true));
    }
}
