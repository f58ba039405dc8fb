//! The in-memory index of what the store holds on disk, with running totals.
//!
//! Invariant (kept by [`Store`](super::Store)): a key has a block entry iff
//! `blocks/<xx>/<key>` exists and a record entry iff `records/<xx>/<key>`
//! exists, and the sizes and sequence numbers here are those of the files.
//! The totals always equal the sums over the entries.
//!
//! One key may name both a block and a record: a block whose bytes are
//! exactly `owner ‖ name` hashes to that record's key. The two are stored and
//! indexed apart, so neither can shadow or overwrite the other.

use crate::id::Id;
use crate::item::ItemVersion;
use crate::ownership::OwnedBlock;
use std::collections::{BTreeMap, HashMap};

/// An owner's public key.
pub type Owner = [u8; 32];

/// What is known about a stored record without reading its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The stored version's sequence number.
    pub seq: u64,
    /// Size of the record file (its postcard encoding), in bytes.
    pub len: u64,
    /// The record's owner, charged its bytes.
    pub owner: Owner,
    /// Concurrent versions held (1 but while they wait for a merge).
    pub versions: u32,
}

/// What is known about a stored block without reading its file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockMeta {
    /// Size of the block file (header and data), in bytes.
    pub len: u64,
    /// Its claiming owners and their claims' times, each charged `len`.
    pub owners: Vec<(Owner, u64)>,
}

/// Everything stored under one key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
struct Entry {
    /// The block stored under this key, if any.
    block: Option<BlockMeta>,
    /// The record stored under this key, if any.
    record: Option<RecordMeta>,
}

/// Item counts and bytes, maintained on every change.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Number of blocks.
    pub blocks: u64,
    /// Number of records, tombstones included.
    pub records: u64,
    /// Sum of the sizes of all block and record files.
    pub bytes: u64,
}

/// Key → what is stored, ordered by key (so listings come out sorted).
#[derive(Debug, Default)]
pub struct Index {
    /// The entries; an entry with neither block nor record is removed.
    map: BTreeMap<Id, Entry>,
    /// Running totals over `map`.
    totals: Totals,
    /// Bytes charged to each owner (blocks it claims, records it signs).
    usage: HashMap<Owner, u64>,
}

impl Index {
    /// Size of the block file stored under `key`, if any.
    pub fn block(&self, key: Id) -> Option<u64> {
        self.map
            .get(&key)
            .and_then(|e| e.block.as_ref())
            .map(|b| b.len)
    }

    /// The block stored under `key`, if any.
    pub fn block_meta(&self, key: Id) -> Option<&BlockMeta> {
        self.map.get(&key).and_then(|e| e.block.as_ref())
    }

    fn charge(&mut self, owner: &Owner, len: u64) {
        *self.usage.entry(*owner).or_default() += len;
    }

    fn refund(&mut self, owner: &Owner, len: u64) {
        if let Some(u) = self.usage.get_mut(owner) {
            *u = u.saturating_sub(len);
            if *u == 0 {
                self.usage.remove(owner);
            }
        }
    }

    /// Bytes charged to `owner`.
    pub fn usage(&self, owner: &Owner) -> u64 {
        self.usage.get(owner).copied().unwrap_or(0)
    }

    /// Up to `limit` blocks claimed by `owner`, in key order after `after`.
    pub fn owned(&self, owner: &Owner, after: Option<Id>, limit: usize) -> Vec<OwnedBlock> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.map
            .range((from, Unbounded))
            .filter_map(|(key, e)| {
                let b = e.block.as_ref()?;
                let (_, time) = b.owners.iter().find(|(o, _)| o == owner)?;
                Some(OwnedBlock {
                    key: *key,
                    len: b.len,
                    time: *time,
                })
            })
            .take(limit)
            .collect()
    }

    /// Up to `limit` blocks in key order after `after`, with their file
    /// sizes.
    pub fn blocks_after(&self, after: Option<Id>, limit: usize) -> Vec<(Id, u64)> {
        use std::ops::Bound::{Excluded, Unbounded};
        let from = after.map_or(Unbounded, Excluded);
        self.map
            .range((from, Unbounded))
            .filter_map(|(key, e)| e.block.as_ref().map(|b| (*key, b.len)))
            .take(limit)
            .collect()
    }

    /// The record stored under `key`, if any.
    pub fn record(&self, key: Id) -> Option<RecordMeta> {
        self.map.get(&key).and_then(|e| e.record)
    }

    /// Notes that block `meta` is stored under `key`.
    pub fn set_block(&mut self, key: Id, meta: BlockMeta) {
        let entry = self.map.entry(key).or_default();
        let (len, owners) = (meta.len, meta.owners.clone());
        match entry.block.replace(meta) {
            Some(old) => {
                self.totals.bytes -= old.len;
                for (o, _) in &old.owners {
                    self.refund(o, old.len);
                }
            }
            None => self.totals.blocks += 1,
        }
        self.totals.bytes += len;
        for (o, _) in &owners {
            self.charge(o, len);
        }
    }

    /// Notes that record version `meta` is stored under `key`.
    pub fn set_record(&mut self, key: Id, meta: RecordMeta) {
        let entry = self.map.entry(key).or_default();
        match entry.record.replace(meta) {
            Some(old) => {
                self.totals.bytes -= old.len;
                self.refund(&old.owner, old.len);
            }
            None => self.totals.records += 1,
        }
        self.totals.bytes += meta.len;
        self.charge(&meta.owner, meta.len);
    }

    /// Forgets the block under `key`; returns whether there was one.
    pub fn drop_block(&mut self, key: Id) -> bool {
        let Some(entry) = self.map.get_mut(&key) else {
            return false;
        };
        let Some(old) = entry.block.take() else {
            return false;
        };
        if entry.record.is_none() {
            self.map.remove(&key);
        }
        self.totals.blocks -= 1;
        self.totals.bytes -= old.len;
        for (o, _) in &old.owners {
            self.refund(o, old.len);
        }
        true
    }

    /// Forgets the record under `key`; returns whether there was one.
    pub fn drop_record(&mut self, key: Id) -> bool {
        let Some(entry) = self.map.get_mut(&key) else {
            return false;
        };
        let Some(meta) = entry.record.take() else {
            return false;
        };
        if entry.block.is_none() {
            self.map.remove(&key);
        }
        self.totals.records -= 1;
        self.totals.bytes -= meta.len;
        self.refund(&meta.owner, meta.len);
        true
    }

    /// The running totals.
    pub fn totals(&self) -> Totals {
        self.totals
    }

    /// Every item, sorted by key (a block before a record under the same key).
    pub fn items(&self) -> Vec<(Id, ItemVersion)> {
        let mut out = Vec::with_capacity(self.map.len());
        for (key, e) in &self.map {
            if e.block.is_some() {
                out.push((*key, ItemVersion::Block));
            }
            if let Some(r) = e.record {
                out.push((*key, ItemVersion::record(r.seq, r.versions)));
            }
        }
        out
    }

    /// The version held under `key`: the record's if there is one (the only
    /// kind with versions), else `Block` if a block is held.
    pub fn version(&self, key: Id) -> Option<ItemVersion> {
        let e = self.map.get(&key)?;
        match (e.record, &e.block) {
            (Some(r), _) => Some(ItemVersion::record(r.seq, r.versions)),
            (None, Some(_)) => Some(ItemVersion::Block),
            (None, None) => None,
        }
    }

    /// Whether this index lacks `(key, version)`: an absent block, or a
    /// record that is absent or behind `version` ([`ItemVersion::behind`]).
    pub fn lacks(&self, key: Id, version: ItemVersion) -> bool {
        match version {
            ItemVersion::Block => self.block(key).is_none(),
            v => self
                .record(key)
                .is_none_or(|r| ItemVersion::record(r.seq, r.versions).behind(v)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_follow_changes() {
        let mut ix = Index::default();
        let k = Id::from_u64(1);
        let (a, b) = ([1u8; 32], [2u8; 32]);
        ix.set_block(
            k,
            BlockMeta {
                len: 10,
                owners: vec![(a, 5), (b, 6)],
            },
        );
        ix.set_record(
            k,
            RecordMeta {
                seq: 1,
                len: 100,
                owner: a,
                versions: 1,
            },
        );
        ix.set_record(
            k,
            RecordMeta {
                seq: 2,
                len: 120,
                owner: a,
                versions: 1,
            },
        );
        assert_eq!((ix.usage(&a), ix.usage(&b)), (130, 10));
        assert_eq!(
            ix.owned(&b, None, 10),
            vec![OwnedBlock {
                key: k,
                len: 10,
                time: 6
            }]
        );
        assert!(ix.owned(&b, Some(k), 10).is_empty());
        assert_eq!(
            ix.totals(),
            Totals {
                blocks: 1,
                records: 1,
                bytes: 130
            }
        );
        assert_eq!(
            ix.items(),
            vec![(k, ItemVersion::Block), (k, ItemVersion::Record(2))]
        );
        assert_eq!(ix.version(k), Some(ItemVersion::Record(2)));
        assert!(ix.drop_block(k));
        assert!(!ix.drop_block(k));
        assert_eq!(ix.version(k), Some(ItemVersion::Record(2)));
        assert!(ix.drop_record(k));
        assert_eq!(ix.totals(), Totals::default());
        assert_eq!((ix.usage(&a), ix.usage(&b)), (0, 0));
        assert!(ix.items().is_empty());
    }

    #[test]
    fn lacks_compares_kind_and_seq() {
        let mut ix = Index::default();
        let k = Id::from_u64(2);
        ix.set_record(
            k,
            RecordMeta {
                seq: 5,
                len: 1,
                owner: [0; 32],
                versions: 1,
            },
        );
        assert!(ix.lacks(k, ItemVersion::Block));
        assert!(ix.lacks(k, ItemVersion::Record(6)));
        assert!(!ix.lacks(k, ItemVersion::Record(5)));
        assert!(!ix.lacks(k, ItemVersion::Record(4)));
    }
}
