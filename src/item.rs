//! What the ring stores, as every layer that keeps or moves it sees it: the
//! kinds of item and their versions ([`ItemVersion`]), the block size limit
//! ([`MAX_BLOCK`]), and proofs of holding an item ([`Proof`], [`proof_of`]).
//!
//! [`crate::wire`] re-exports all of them: they cross the wire inside
//! replica requests, and their serde encoding is part of the protocol.

use crate::id::Id;
use serde::{Deserialize, Serialize};

/// Largest block, in bytes.
pub const MAX_BLOCK: usize = 1 << 20;

/// What one node's kind of item and version is, for replica sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ItemVersion {
    /// A block (immutable: present or not).
    Block,
    /// A record at this sequence number.
    Record(u64),
    /// A record with concurrent versions waiting for a merge: the head's
    /// sequence number and how many versions.
    Records { seq: u64, versions: u32 },
}

impl ItemVersion {
    /// A record's version: `Record(seq)` for one version.
    pub fn record(seq: u64, versions: u32) -> ItemVersion {
        if versions > 1 {
            ItemVersion::Records { seq, versions }
        } else {
            ItemVersion::Record(seq)
        }
    }

    /// A record version's head sequence number and version count.
    pub fn record_parts(self) -> Option<(u64, u32)> {
        match self {
            ItemVersion::Block => None,
            ItemVersion::Record(seq) => Some((seq, 1)),
            ItemVersion::Records { seq, versions } => Some((seq, versions)),
        }
    }

    /// Whether a holder of record version `self` should be sent what a
    /// holder of `other` has: a lower head sequence number, or the same
    /// with fewer concurrent versions (the receiver keeps those it lacks
    /// beside its own, and drops those a newer version replaces).
    pub fn behind(self, other: ItemVersion) -> bool {
        match (self.record_parts(), other.record_parts()) {
            (Some(a), Some(b)) => a < b,
            _ => false,
        }
    }
}

/// One answer of a [`ReplicaRequest::Prove`](crate::wire::ReplicaRequest::Prove).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Proof {
    /// Not held (or an older record version).
    Missing,
    /// Held at exactly the version asked: `proof_of(nonce, key, bytes)`.
    Held([u8; 32]),
    /// A newer record version is held (its sequence number).
    Newer(u64),
}

/// The proof that the holder of `bytes` (a block, or the postcard encoding
/// of a record) under `key` has them: SHA-256 of nonce, key and bytes.
pub fn proof_of(nonce: &[u8; 32], key: Id, bytes: &[u8]) -> [u8; 32] {
    Id::hash_parts(&[b"peerstore-proof-v1", nonce, &key.0, bytes]).0
}

/// One node's data file system and what it holds for one owner.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeSpace {
    /// Size of the file system holding the node's store.
    pub total: u64,
    /// Bytes the store may still use there (its reserve left out).
    pub avail: u64,
    /// Bytes of the owner's blocks and records held.
    pub owner_bytes: u64,
}

/// The ring's space as one owner sees it: what `df` on the mount shows.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RingSpace {
    /// The members' data file systems, divided by the replication factor.
    pub total: u64,
    /// What they may still store, divided by the replication factor.
    pub avail: u64,
    /// The owner's stored bytes (one copy each).
    pub used: u64,
    /// Members counted (an estimate scales a sample up to the ring).
    pub members: u64,
}
