//! Files and directories as encrypted objects in the DHT (the "vault").
//!
//! Everything here runs on the client side of the DHT: names, paths, sizes
//! and contents are encrypted before they leave the machine
//! ([`crypto`]); storage nodes see only signed records of random names and
//! content-addressed blocks of ciphertext. The layer sits on a small
//! [`BlockStore`] trait so the same code runs inside a node (over the DHT),
//! in the command-line client (over one node's client API) and in tests
//! (in memory, [`mem_store`]). The first two are implemented where what they
//! talk to is in reach, in `node` and `cli`: this layer knows nothing of the
//! DHT or the network, nor of FUSE.

pub mod clocks;
pub mod conflicts;
pub mod crypto;
pub mod divergence;
pub mod extents;
pub mod file;
pub mod format;
pub mod history;
pub mod identity;
pub mod index;
pub mod index_trees;
pub mod mem_store;
pub mod merge;
pub mod object;
pub mod pending;
pub mod ranges;
pub mod rekey;
pub mod retag;
pub mod retry;
pub mod shards;
pub mod trash;
pub mod tree;
pub mod vault;
pub mod versions;

pub use file::{Conflicted, OpenFile};
pub use identity::Identity;
pub use object::{Attrs, Entry, Kind, Link, Object};
pub use pending::DirTicket;
pub use vault::{Vault, Versioned};

use crate::id::Id;
use crate::item::RingSpace;
use crate::ownership::{Claim, Release};
use crate::record::Record;
use std::future::Future;

/// When a put must be on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// Visible to readers when the put returns, durable after the next
    /// [`BlockStore::sync`] (or the nodes' own flush, within a second).
    Later,
    /// Durable when the put returns: on disk on every replica, or (the
    /// mount's journaling store, [`crate::journal::JournalStore`]) on this
    /// machine's disk and in the ring's memory until the ring syncs it
    /// (a block there: on this machine's disk once a durable record put
    /// or a `sync` that follows returns, as whatever refers to it is). A
    /// writer in `fsync` then needs no `sync` round for it.
    Now,
}

/// Where the vault keeps blocks and records.
pub trait BlockStore: Send + Sync + 'static {
    /// Stores block `data` (`key` names it, [`Id::names`]: the store checks),
    /// owned by `claim`'s signer, on r replicas; returns its key.
    fn put_block(
        &self,
        key: Id,
        data: Vec<u8>,
        claim: Claim,
        durability: Durability,
    ) -> impl Future<Output = Result<Id, FsError>> + Send;
    /// Applies the owner's release of blocks on their replicas (idempotent).
    fn release(&self, rel: Release) -> impl Future<Output = Result<(), FsError>> + Send;
    /// The space the store offers `owner`, for `df`.
    fn space(&self, owner: [u8; 32]) -> impl Future<Output = Result<RingSpace, FsError>> + Send;
    /// Reads a block; the bytes hash to `key`.
    fn get_block(&self, key: Id) -> impl Future<Output = Result<Vec<u8>, FsError>> + Send;
    /// Stores a record version; `expected_seq` makes it a compare-and-swap
    /// (`Some(0)`: only if absent).
    fn put_record(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
        durability: Durability,
    ) -> impl Future<Output = Result<(), FsError>> + Send;
    /// The newest version of a record, tombstones included; `None` if
    /// absent. The head of [`get_versions`](Self::get_versions).
    fn get_record(&self, key: Id) -> impl Future<Output = Result<Option<Record>, FsError>> + Send {
        async move { Ok(self.get_versions(key).await?.into_iter().next()) }
    }
    /// Every version of a record no other replaces, head first
    /// (tombstones included); empty if absent. More than one while
    /// versions written concurrently (on two sides of a partition) wait
    /// for a writer to merge them.
    fn get_versions(&self, key: Id) -> impl Future<Output = Result<Vec<Record>, FsError>> + Send;
    /// The versions of a record this machine kept from its earlier reads
    /// and writes, head first, without asking the ring; empty if none (the
    /// default). Only a guess, for a compare-and-swap that the replicas
    /// then judge: it may be stale.
    fn kept_versions(&self, _key: Id) -> Vec<Record> {
        Vec::new()
    }
    /// The writer this store's saves count as in records' clocks
    /// ([`crate::clock::Clock`]): the node they go through.
    fn writer(&self) -> impl Future<Output = Result<u64, FsError>> + Send;
    /// Stores the first version of a record whose name was just drawn at
    /// random (no other writer can know it, so nothing needs ordering).
    fn put_new_record(
        &self,
        rec: Record,
        durability: Durability,
    ) -> impl Future<Output = Result<(), FsError>> + Send {
        self.put_record(rec, Some(0), durability)
    }
    /// Stores a record version lazily (compare-and-swap on `expected_seq`),
    /// returning once its order among writers is decided: on the ring,
    /// once the record's owner took it, while the other replicas' copies
    /// follow ([`Following`]: a `sync` after it completed covers them).
    /// For a writer that keeps the version itself until then (the mount's
    /// journal). By default a lazy [`put_record`](Self::put_record), with
    /// nothing to follow.
    fn put_record_ordered(
        &self,
        rec: Record,
        expected_seq: Option<u64>,
    ) -> impl Future<Output = Result<Following, FsError>> + Send {
        async move {
            self.put_record(rec, expected_seq, Durability::Later)
                .await
                .map(|()| Following::done())
        }
    }
    /// Puts are visible to every reader once they return, and durable (on
    /// disk on every replica) once a later `sync` returns.
    fn sync(&self) -> impl Future<Output = Result<(), FsError>> + Send;
}

/// The copies an ordered put ([`BlockStore::put_record_ordered`]) still
/// makes in the background.
pub struct Following(Option<futures::future::BoxFuture<'static, Result<(), FsError>>>);

impl Following {
    /// Nothing follows: every copy is made.
    pub fn done() -> Following {
        Following(None)
    }

    /// The copies `rest` makes (it runs on its own: this only waits for
    /// its outcome).
    pub fn of(rest: impl Future<Output = Result<(), FsError>> + Send + 'static) -> Following {
        Following(Some(Box::pin(rest)))
    }

    /// Waits until every copy is made, or they failed.
    pub async fn wait(self) -> Result<(), FsError> {
        match self.0 {
            Some(rest) => rest.await,
            None => Ok(()),
        }
    }
}

impl std::fmt::Debug for Following {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(if self.0.is_some() {
            "Following(..)"
        } else {
            "Following(done)"
        })
    }
}

/// Why a file system operation failed; maps to one errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FsError {
    #[error("no such file or directory")]
    NotFound,
    #[error("file exists")]
    Exists,
    #[error("not a directory")]
    NotDir,
    #[error("is a directory")]
    IsDir,
    #[error("directory not empty")]
    NotEmpty,
    #[error("file name too long")]
    NameTooLong,
    #[error("invalid argument: {0}")]
    Invalid(String),
    #[error("file too large")]
    TooBig,
    #[error("concurrent update (current version {0:?})")]
    Conflict(Option<u64>),
    #[error("storage unavailable: {0}")]
    Unavailable(String),
    #[error("stored data failed to decrypt or parse: {0}")]
    Corrupt(String),
    #[error("operation not supported")]
    NotSupported,
    /// The object a name led to is gone (replaced or removed elsewhere
    /// since the name was looked up): look the name up again.
    #[error("stale file handle")]
    Stale,
    #[error("permission denied")]
    Permission,
    /// A rename or link between two trees (the own tree and a shared
    /// folder): tools copy and delete instead.
    #[error("cross-device link")]
    CrossDevice,
    /// A write into a folder another account shares read-only.
    #[error("read-only: a folder shared with you")]
    ReadOnly,
    #[error("no space left on the ring ({0})")]
    NoSpace(String),
}

impl FsError {
    /// Whether the store failed (unreachable, full, lost a race, corrupt),
    /// as opposed to a request the file system refuses by its rules.
    pub fn is_storage_failure(&self) -> bool {
        matches!(
            self,
            FsError::Unavailable(_)
                | FsError::NoSpace(_)
                | FsError::Conflict(_)
                | FsError::Corrupt(_)
        )
    }

    /// The errno a FUSE reply carries for this error.
    pub fn errno(&self) -> i32 {
        match self {
            FsError::NotFound => libc::ENOENT,
            FsError::Exists => libc::EEXIST,
            FsError::NotDir => libc::ENOTDIR,
            FsError::IsDir => libc::EISDIR,
            FsError::NotEmpty => libc::ENOTEMPTY,
            FsError::NameTooLong => libc::ENAMETOOLONG,
            FsError::Invalid(_) => libc::EINVAL,
            FsError::TooBig => libc::EFBIG,
            FsError::Conflict(_) | FsError::Unavailable(_) | FsError::Corrupt(_) => libc::EIO,
            FsError::NotSupported => libc::ENOTSUP,
            FsError::Stale => libc::ESTALE,
            FsError::Permission => libc::EPERM,
            FsError::ReadOnly => libc::EACCES,
            FsError::CrossDevice => libc::EXDEV,
            FsError::NoSpace(_) => libc::ENOSPC,
        }
    }
}

/// Checks one path component.
pub fn check_name(name: &[u8]) -> Result<(), FsError> {
    if name.len() > object::MAX_NAME {
        return Err(FsError::NameTooLong);
    }
    if name.is_empty() || name == b"." || name == b".." || name.contains(&b'/') || name.contains(&0)
    {
        return Err(FsError::Invalid(format!(
            "bad file name {:?}",
            String::from_utf8_lossy(name)
        )));
    }
    Ok(())
}

/// Splits an absolute or relative store path into checked components;
/// `.` is skipped and `..` refused (paths never escape the tree).
pub fn split_path(path: &str) -> Result<Vec<Vec<u8>>, FsError> {
    let mut out = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                return Err(FsError::Invalid(
                    "'..' is not allowed in store paths".into(),
                ));
            }
            p => {
                check_name(p.as_bytes())?;
                out.push(p.as_bytes().to_vec());
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_paths_are_checked() {
        assert_eq!(check_name(&[b'a'; 255]), Ok(()));
        assert_eq!(check_name(&[b'a'; 256]), Err(FsError::NameTooLong));
        assert!(check_name(b"a/b").is_err());
        assert!(check_name(b"..").is_err());
        assert_eq!(
            split_path("/a/./b/").unwrap(),
            vec![b"a".to_vec(), b"b".to_vec()]
        );
        assert!(split_path("/a/../../etc").is_err());
        assert!(split_path("/").unwrap().is_empty());
        assert_eq!(FsError::NameTooLong.errno(), libc::ENAMETOOLONG);
    }
}

#[cfg(test)]
mod file_tests;
#[cfg(test)]
pub(crate) mod gated;
#[cfg(test)]
pub(crate) mod merge_tests;
#[cfg(test)]
mod pending_tests;
#[cfg(test)]
mod vault_tests;
