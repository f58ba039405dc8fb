//! Why a store operation failed, and how that is told to a remote caller.

use crate::id::Id;
use crate::record::RecordError;
use crate::wire::{MAX_BLOCK, RemoteError};

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
}

impl StoreError {
    /// The error to send back to the peer whose request failed.
    pub fn to_remote(&self) -> RemoteError {
        match self {
            StoreError::BadHash => RemoteError::BadHash,
            StoreError::TooLarge(n) => RemoteError::TooLarge(*n as u64),
            StoreError::BadRecord(RecordError::BadSignature | RecordError::BadOwner) => {
                RemoteError::BadSignature
            }
            StoreError::BadRecord(e) => RemoteError::Invalid(e.to_string()),
            StoreError::Stale { offered, current } => RemoteError::Stale {
                offered: *offered,
                current: *current,
            },
            StoreError::Conflict { current } => RemoteError::Conflict { current: *current },
            StoreError::Corrupt(_) | StoreError::Io(_) => RemoteError::Storage(self.to_string()),
            StoreError::NoSpace(m) => RemoteError::NoSpace(m.clone()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remote_mapping() {
        assert_eq!(StoreError::BadHash.to_remote(), RemoteError::BadHash);
        assert_eq!(
            StoreError::TooLarge(9).to_remote(),
            RemoteError::TooLarge(9)
        );
        assert_eq!(
            StoreError::BadRecord(RecordError::BadOwner).to_remote(),
            RemoteError::BadSignature
        );
        assert!(matches!(
            StoreError::BadRecord(RecordError::NameTooLong(2000)).to_remote(),
            RemoteError::Invalid(_)
        ));
        assert_eq!(
            StoreError::Stale {
                offered: 1,
                current: 2
            }
            .to_remote(),
            RemoteError::Stale {
                offered: 1,
                current: 2
            }
        );
        assert_eq!(
            StoreError::Conflict { current: None }.to_remote(),
            RemoteError::Conflict { current: None }
        );
        assert!(matches!(
            StoreError::Corrupt(Id::ZERO).to_remote(),
            RemoteError::Storage(m) if m.contains("corrupt")
        ));
        assert!(matches!(
            StoreError::Io("write /x: disk full".into()).to_remote(),
            RemoteError::Storage(m) if m.contains("/x")
        ));
    }
}
