//! What a writer does after losing a compare-and-swap of a record: the
//! judge (the key's owner node) reported another version than the one
//! the writer built on.
//!
//! - An older one (or none): the replicas hold the version the writer
//!   read, the owner node does not (it has just joined, or a put was
//!   counted without it). The writer stores every version the replicas
//!   hold again, with no expectation ([`reseed`]), so the next try is
//!   judged against them.
//! - A newer one: another writer got there first. The writer reads again
//!   and retries after a random pause that grows with the attempts
//!   ([`pause`]), so writers racing for one record spread out.

use super::{BlockStore, Durability};
use crate::id::Id;
use std::time::Duration;

/// Stores again, with no expectation, every version of record `key` the
/// replicas hold. Best effort: a failure only leaves the next
/// compare-and-swap to fail.
pub async fn reseed<S: BlockStore + ?Sized>(store: &S, key: Id) {
    let Ok(versions) = store.get_versions(key).await else {
        return;
    };
    for v in versions {
        if let Err(e) = store.put_record(v, None, Durability::Later).await {
            log::debug!("record {} not stored again: {e}", key.short());
        }
    }
}

/// A random pause before attempt `attempt + 1` of a write that lost a
/// race with another writer (none after the first loss).
pub async fn pause(attempt: u32) {
    if attempt > 0 {
        let jitter = rand::random::<u64>() % (5 << attempt.min(6));
        tokio::time::sleep(Duration::from_millis(jitter)).await;
    }
}

/// After attempt `attempt` to store a version of `key` over version
/// `expected` lost, with the judge at `current`: [`reseed`] if the judge
/// is behind, else [`pause`].
pub async fn after_lost_swap<S: BlockStore + ?Sized>(
    store: &S,
    key: Id,
    current: Option<u64>,
    expected: u64,
    attempt: u32,
) {
    if current.unwrap_or(0) < expected {
        reseed(store, key).await;
    } else {
        pause(attempt).await;
    }
}
