//! Items kept in memory, by the same rules as the disk store: for the
//! simulator, whose nodes must store, refuse and prove exactly as real
//! nodes do, thousands of times a second.

use super::StoreError;
use super::block_file::BlockFile;
use super::items::{ItemStore, after_release, judge_claims, judge_versions};
use super::releases::ReleaseBook;
use crate::id::Id;
use crate::item::{ItemVersion, MAX_BLOCK, NodeSpace};
use crate::ownership::{Claim, Freed, OwnedBlock, Release};
use crate::record::Record;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};

/// Blocks and records in memory.
#[derive(Debug, Default)]
pub struct MemItems {
    /// Key → block bytes and claims. A std mutex: never held across an await.
    blocks: Mutex<BTreeMap<Id, BlockFile>>,
    /// The owners' releases kept.
    releases: Mutex<ReleaseBook>,
    /// Key → record versions, head first.
    records: Mutex<BTreeMap<Id, Vec<Record>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl MemItems {
    /// Items held (blocks and records).
    pub fn len(&self) -> usize {
        lock(&self.blocks).len() + lock(&self.records).len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Drops everything (a crashed node's disk).
    pub fn clear(&self) {
        lock(&self.blocks).clear();
        lock(&self.records).clear();
    }
}

impl ItemStore for MemItems {
    fn put_block_with(
        &self,
        key: Id,
        data: &[u8],
        claims: &[Claim],
        _durable: bool,
    ) -> Result<bool, StoreError> {
        if data.len() > MAX_BLOCK {
            return Err(StoreError::TooLarge(data.len()));
        }
        if !key.names(data) {
            return Err(StoreError::BadHash);
        }
        let mut b = lock(&self.blocks);
        let held = b.get(&key).map(|f| f.claims.as_slice());
        match judge_claims(key, held, claims, &lock(&self.releases))? {
            None => Ok(false),
            Some(merged) => {
                b.insert(
                    key,
                    BlockFile {
                        claims: merged,
                        data: data.to_vec(),
                    },
                );
                Ok(true)
            }
        }
    }

    fn get_block(&self, key: Id) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(lock(&self.blocks).get(&key).map(|f| f.data.clone()))
    }

    fn get_owned_block(&self, key: Id) -> Result<Option<BlockFile>, StoreError> {
        Ok(lock(&self.blocks).get(&key).cloned())
    }

    fn release(&self, rel: &Release) -> Result<Freed, StoreError> {
        rel.verify()?;
        lock(&self.releases).add(&Arc::new(rel.clone()));
        let mut b = lock(&self.blocks);
        let mut freed = Freed::default();
        for key in &rel.keys {
            let Some(f) = b.get_mut(key) else {
                continue;
            };
            match after_release(&f.claims, rel) {
                None => {}
                Some(left) if left.is_empty() => {
                    freed.blocks += 1;
                    freed.bytes += f.data.len() as u64;
                    b.remove(key);
                }
                Some(left) => f.claims = left,
            }
        }
        Ok(freed)
    }

    fn owned(&self, owner: &[u8; 32], after: Option<Id>, limit: usize) -> Vec<OwnedBlock> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        lock(&self.blocks)
            .range((from, Unbounded))
            .filter_map(|(key, f)| {
                let c = f.claims.iter().find(|c| &c.owner == owner)?;
                Some(OwnedBlock {
                    key: *key,
                    len: f.data.len() as u64,
                    time: c.time,
                })
            })
            .take(limit)
            .collect()
    }

    fn space(&self, owner: &[u8; 32]) -> Result<NodeSpace, StoreError> {
        /// What a simulated node's disk holds.
        const DISK: u64 = 1 << 40;
        let held: u64 = lock(&self.blocks)
            .values()
            .map(|f| f.data.len() as u64)
            .sum();
        Ok(NodeSpace {
            total: DISK,
            avail: DISK.saturating_sub(held),
            owner_bytes: self.usage(owner),
        })
    }

    fn usage(&self, owner: &[u8; 32]) -> u64 {
        let blocks: u64 = lock(&self.blocks)
            .values()
            .filter(|f| f.claims.iter().any(|c| &c.owner == owner))
            .map(|f| f.data.len() as u64)
            .sum();
        let records: u64 = lock(&self.records)
            .values()
            .flatten()
            .filter(|r| &r.owner == owner)
            .map(|r| r.value.as_ref().map_or(0, |v| v.len() as u64))
            .sum();
        blocks + records
    }

    fn put_record_with(
        &self,
        rec: &Record,
        expected_seq: Option<u64>,
        _durable: bool,
    ) -> Result<bool, StoreError> {
        rec.verify()?;
        let key = rec.key();
        let mut r = lock(&self.records);
        let held = r.get(&key).map_or(&[][..], |v| &v[..]);
        match judge_versions(held, rec, expected_seq)? {
            Some(versions) => {
                r.insert(key, versions);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    fn get_record(&self, key: Id) -> Result<Option<Record>, StoreError> {
        Ok(lock(&self.records)
            .get(&key)
            .and_then(|v| v.first().cloned()))
    }

    fn get_versions(&self, key: Id) -> Result<Vec<Record>, StoreError> {
        Ok(lock(&self.records).get(&key).cloned().unwrap_or_default())
    }

    fn record_seq(&self, key: Id) -> Option<u64> {
        lock(&self.records).get(&key).map(|v| v[0].seq)
    }

    fn record_version(&self, key: Id) -> Option<ItemVersion> {
        lock(&self.records)
            .get(&key)
            .map(|v| ItemVersion::record(v[0].seq, v.len() as u32))
    }

    fn sync_pending(&self) -> Result<usize, StoreError> {
        Ok(0)
    }

    fn missing(&self, items: &[(Id, ItemVersion)]) -> Vec<u32> {
        let (b, r) = (lock(&self.blocks), lock(&self.records));
        items
            .iter()
            .enumerate()
            .filter(|(_, (key, v))| match v {
                ItemVersion::Block => !b.contains_key(key),
                v => r
                    .get(key)
                    .is_none_or(|h| ItemVersion::record(h[0].seq, h.len() as u32).behind(*v)),
            })
            .map(|(i, _)| i as u32)
            .collect()
    }

    fn remove(&self, key: Id) -> Result<(), StoreError> {
        lock(&self.blocks).remove(&key);
        lock(&self.records).remove(&key);
        Ok(())
    }

    fn items(&self) -> Vec<(Id, ItemVersion)> {
        let (b, r) = (lock(&self.blocks), lock(&self.records));
        let mut out: Vec<(Id, ItemVersion)> = b.keys().map(|k| (*k, ItemVersion::Block)).collect();
        out.extend(
            r.iter()
                .map(|(k, v)| (*k, ItemVersion::record(v[0].seq, v.len() as u32))),
        );
        out.sort_by_key(|(k, v)| (*k, *v != ItemVersion::Block));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::item::Proof;

    #[test]
    fn memory_store_follows_the_store_rules() {
        let m = MemItems::default();
        let d = b"block".to_vec();
        let k = Id::hash(&d);
        let sk = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        let claim = Claim::sign(&sk, k, 5);
        let claims = std::slice::from_ref(&claim);
        assert_eq!(m.put_block_with(k, &d, claims, true), Ok(true));
        assert_eq!(m.put_block_with(k, &d, claims, true), Ok(false));
        assert_eq!(
            m.put_block_with(Id::ZERO, &d, &[], true),
            Err(StoreError::BadHash)
        );
        assert_eq!(m.usage(&claim.owner), d.len() as u64);
        assert_eq!(m.owned(&claim.owner, None, 5).len(), 1);
        let r1 = Record::sign(&sk, b"r", 1, Some(b"one".to_vec()));
        assert_eq!(m.put_record_with(&r1, Some(0), true), Ok(true));
        assert_eq!(m.put_record_with(&r1, Some(0), true), Ok(false));
        let r2 = Record::sign(&sk, b"r", 2, Some(b"two".to_vec()));
        assert!(matches!(
            m.put_record_with(&r2, Some(0), true),
            Err(StoreError::Conflict { .. })
        ));
        assert_eq!(
            m.missing(&[(k, ItemVersion::Block), (r1.key(), ItemVersion::Record(2))]),
            vec![1]
        );
        let nonce = [7; 32];
        let p = m.prove(
            &nonce,
            &[(k, ItemVersion::Block), (r1.key(), ItemVersion::Record(1))],
        );
        assert_eq!(p[0], Proof::Held(crate::item::proof_of(&nonce, k, &d)));
        assert!(matches!(p[1], Proof::Held(_)));
        assert_eq!(m.items().len(), 2);
        let rel = Release::sign(&sk, vec![k], 5);
        assert_eq!(m.release(&rel).unwrap().blocks, 1);
        assert!(matches!(
            m.put_block_with(k, &d, claims, true),
            Err(StoreError::Released(_))
        ));
        assert_eq!(m.put_block_with(k, &d, &[], true), Ok(true));
        m.remove(k).unwrap();
        assert_eq!(
            m.prove(&nonce, &[(k, ItemVersion::Block)]),
            vec![Proof::Missing]
        );
    }
}
