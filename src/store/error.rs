//! Why a store operation failed.

use crate::id::Id;
use crate::item::MAX_BLOCK;
use crate::ownership::{OwnershipError, Release};
use crate::record::RecordError;
use std::sync::Arc;

/// A refused or failed store operation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum StoreError {
    /// The block's bytes do not hash to the key it was offered under.
    #[error("block bytes do not hash to the key")]
    BadHash,
    /// The block is larger than [`MAX_BLOCK`].
    #[error("block is {0} bytes (max {MAX_BLOCK})")]
    TooLarge(usize),
    /// The record fails its size bounds or signature check.
    #[error("invalid record: {0}")]
    BadRecord(#[from] RecordError),
    /// The offered record is not newer than the stored one.
    #[error("record sequence number {offered} is not newer than the stored {current}")]
    Stale { offered: u64, current: u64 },
    /// The compare-and-swap's expected sequence number is not the stored
    /// one (`None`: no record is stored).
    #[error("compare-and-swap failed: current sequence is {current:?}")]
    Conflict { current: Option<u64> },
    /// The record already has this many concurrent versions, too many to
    /// keep another until a writer merges them.
    #[error("too many concurrent versions of the record ({0})")]
    TooManyVersions(usize),
    /// The local copy under this key failed its check on read; it has been
    /// deleted and must be fetched again from a replica.
    #[error("local copy of {0} was corrupt and has been removed")]
    Corrupt(Id),
    /// A file-system operation failed: the operation, the path, the OS error.
    #[error("storage I/O error: {0}")]
    Io(String),
    /// The store's file system is (nearly) full: new items are refused
    /// (the message names the data directory and what is left).
    #[error("no space left: {0}")]
    NoSpace(String),
    /// A claim or release does not verify.
    #[error("invalid ownership: {0}")]
    BadClaim(#[from] OwnershipError),
    /// Every claim offered with the block was released by its owner (the
    /// release, for the offering node to apply too).
    #[error("the block was released by its owner")]
    Released(Arc<Release>),
}
