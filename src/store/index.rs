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
use std::collections::BTreeMap;

/// What is known about a stored record without reading its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RecordMeta {
    /// The stored version's sequence number.
    pub seq: u64,
    /// Size of the record file (its postcard encoding), in bytes.
    pub len: u64,
}

/// Everything stored under one key.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
struct Entry {
    /// Size of the block file, if a block is stored under this key.
    block: Option<u64>,
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
}

impl Index {
    /// Size of the block stored under `key`, if any.
    pub fn block(&self, key: Id) -> Option<u64> {
        self.map.get(&key).and_then(|e| e.block)
    }

    /// The record stored under `key`, if any.
    pub fn record(&self, key: Id) -> Option<RecordMeta> {
        self.map.get(&key).and_then(|e| e.record)
    }

    /// Notes that a block of `len` bytes is stored under `key`.
    pub fn set_block(&mut self, key: Id, len: u64) {
        let entry = self.map.entry(key).or_default();
        match entry.block.replace(len) {
            Some(old) => self.totals.bytes -= old,
            None => self.totals.blocks += 1,
        }
        self.totals.bytes += len;
    }

    /// Notes that record version `meta` is stored under `key`.
    pub fn set_record(&mut self, key: Id, meta: RecordMeta) {
        let entry = self.map.entry(key).or_default();
        match entry.record.replace(meta) {
            Some(old) => self.totals.bytes -= old.len,
            None => self.totals.records += 1,
        }
        self.totals.bytes += meta.len;
    }

    /// Forgets the block under `key`; returns whether there was one.
    pub fn drop_block(&mut self, key: Id) -> bool {
        let Some(entry) = self.map.get_mut(&key) else {
            return false;
        };
        let Some(len) = entry.block.take() else {
            return false;
        };
        self.totals.blocks -= 1;
        self.totals.bytes -= len;
        if entry.record.is_none() {
            self.map.remove(&key);
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
        self.totals.records -= 1;
        self.totals.bytes -= meta.len;
        if entry.block.is_none() {
            self.map.remove(&key);
        }
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
                out.push((*key, ItemVersion::Record(r.seq)));
            }
        }
        out
    }

    /// The version held under `key`: the record's if there is one (the only
    /// kind with versions), else `Block` if a block is held.
    pub fn version(&self, key: Id) -> Option<ItemVersion> {
        let e = self.map.get(&key)?;
        match (e.record, e.block) {
            (Some(r), _) => Some(ItemVersion::Record(r.seq)),
            (None, Some(_)) => Some(ItemVersion::Block),
            (None, None) => None,
        }
    }

    /// Whether this index lacks `(key, version)`: an absent block, or a
    /// record that is absent or older than `version`'s sequence.
    pub fn lacks(&self, key: Id, version: ItemVersion) -> bool {
        match version {
            ItemVersion::Block => self.block(key).is_none(),
            ItemVersion::Record(seq) => self.record(key).is_none_or(|r| r.seq < seq),
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
        ix.set_block(k, 10);
        ix.set_record(k, RecordMeta { seq: 1, len: 100 });
        ix.set_record(k, RecordMeta { seq: 2, len: 120 });
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
        assert!(ix.items().is_empty());
    }

    #[test]
    fn lacks_compares_kind_and_seq() {
        let mut ix = Index::default();
        let k = Id::from_u64(2);
        ix.set_record(k, RecordMeta { seq: 5, len: 1 });
        assert!(ix.lacks(k, ItemVersion::Block));
        assert!(ix.lacks(k, ItemVersion::Record(6)));
        assert!(!ix.lacks(k, ItemVersion::Record(5)));
        assert!(!ix.lacks(k, ItemVersion::Record(4)));
    }
}
