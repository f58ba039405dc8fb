//! What any store of items does, whatever keeps the bytes: the rules a
//! record version must pass, and proofs of holding.
//!
//! [`Store`](super::Store) keeps items on disk; [`MemItems`](super::MemItems)
//! keeps them in memory for the simulator. Both implement [`ItemStore`]:
//! the node answers replica requests through it, and the simulator through
//! the same code, so the simulated ring stores by the same rules as a real
//! node.

use super::StoreError;
use super::block_file::BlockFile;
use super::releases::ReleaseBook;
use crate::id::Id;
use crate::item::{ItemVersion, NodeSpace, Proof, proof_of};
use crate::ownership::{Claim, Freed, OwnedBlock, Release};
use crate::record::Record;
use std::sync::Arc;

/// A node's own store of blocks and records.
pub trait ItemStore {
    /// Stores a block (checked against its key) with its owners' claims
    /// (by the rules of [`judge_claims`]); `Ok(false)` if held with them.
    fn put_block_with(
        &self,
        key: Id,
        data: &[u8],
        claims: &[Claim],
        durable: bool,
    ) -> Result<bool, StoreError>;
    /// Reads a block, re-hashed.
    fn get_block(&self, key: Id) -> Result<Option<Vec<u8>>, StoreError>;
    /// Reads a block and its claims.
    fn get_owned_block(&self, key: Id) -> Result<Option<BlockFile>, StoreError>;
    /// Reads a block and its claims to send to a reader, who checks the
    /// bytes against the key (a disk store does not hash them again).
    fn serve_block(&self, key: Id) -> Result<Option<BlockFile>, StoreError> {
        self.get_owned_block(key)
    }
    /// Applies an owner's release: keeps it (durably, before anything is
    /// removed), removes the claims it covers, and deletes each block no
    /// claim is left on.
    fn release(&self, rel: &Release) -> Result<Freed, StoreError>;
    /// Up to `limit` blocks claimed by `owner`, in key order after `after`.
    fn owned(&self, owner: &[u8; 32], after: Option<Id>, limit: usize) -> Vec<OwnedBlock>;
    /// Bytes held for `owner` (the blocks it claims, the records it signs).
    fn usage(&self, owner: &[u8; 32]) -> u64;
    /// The store's file system, and the bytes held for `owner`.
    fn space(&self, owner: &[u8; 32]) -> Result<NodeSpace, StoreError>;
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
    /// `sync_pending` for a writer waiting on it (may be cheaper in commits,
    /// dearer for the rest of the machine).
    fn sync_pending_now(&self) -> Result<usize, StoreError> {
        self.sync_pending()
    }
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

/// What a put of a block offered with `offered` claims does to the claims
/// `held` with it (`None`: the block is not held): `Ok(None)` if nothing
/// changes, `Ok(Some(claims))` to store the block with these claims (per
/// owner the newest claim), or why not. Every offered claim must verify;
/// one covered by a kept release is left out, and if that leaves a block
/// that is not held without any of the claims it was offered with, the put
/// is refused with the release, for the offering node to apply.
pub fn judge_claims(
    key: Id,
    held: Option<&[Claim]>,
    offered: &[Claim],
    book: &ReleaseBook,
) -> Result<Option<Vec<Claim>>, StoreError> {
    for c in offered {
        c.verify(key)?;
    }
    let mut merged: Vec<Claim> = held.map(<[Claim]>::to_vec).unwrap_or_default();
    let mut changed = held.is_none();
    let mut newest: Option<Arc<Release>> = None;
    for c in offered {
        if let Some(r) = book.covering(key, c) {
            if newest.as_ref().is_none_or(|n| r.time > n.time) {
                newest = Some(r);
            }
            continue;
        }
        match merged.iter_mut().find(|m| m.owner == c.owner) {
            Some(m) if m.time >= c.time => {}
            Some(m) => {
                *m = c.clone();
                changed = true;
            }
            None => {
                merged.push(c.clone());
                changed = true;
            }
        }
    }
    if held.is_none()
        && merged.is_empty()
        && let Some(r) = newest
    {
        return Err(StoreError::Released(r));
    }
    Ok(changed.then_some(merged))
}

/// The claims left on a block holding `held` once `rel` is applied, or
/// `None` if `rel` removes none of them.
pub fn after_release(held: &[Claim], rel: &Release) -> Option<Vec<Claim>> {
    let left: Vec<Claim> = held.iter().filter(|c| !rel.covers(c)).cloned().collect();
    (left.len() != held.len()).then_some(left)
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

    #[test]
    fn claim_rules() {
        let sk = |b: u8| ed25519_dalek::SigningKey::from_bytes(&[b; 32]);
        let k = Id::hash(b"block");
        let mut book = ReleaseBook::default();
        let a1 = Claim::sign(&sk(1), k, 10);
        let a2 = Claim::sign(&sk(1), k, 20);
        let b1 = Claim::sign(&sk(2), k, 10);
        // New block: stored with its claims; unowned (old repair) too.
        assert_eq!(
            judge_claims(k, None, std::slice::from_ref(&a1), &book),
            Ok(Some(vec![a1.clone()]))
        );
        assert_eq!(judge_claims(k, None, &[], &book), Ok(Some(vec![])));
        // Held: the same claim changes nothing, a newer one or another
        // owner's is added.
        let held = std::slice::from_ref(&a1);
        assert_eq!(
            judge_claims(k, Some(held), std::slice::from_ref(&a1), &book),
            Ok(None)
        );
        assert_eq!(
            judge_claims(k, Some(held), std::slice::from_ref(&a2), &book),
            Ok(Some(vec![a2.clone()]))
        );
        assert_eq!(
            judge_claims(k, Some(held), std::slice::from_ref(&b1), &book),
            Ok(Some(vec![a1.clone(), b1.clone()]))
        );
        // A bad signature is refused.
        let mut forged = b1.clone();
        forged.owner = a1.owner;
        assert!(matches!(
            judge_claims(k, None, &[forged], &book),
            Err(StoreError::BadClaim(_))
        ));
        // Released: the old claim is refused with the release, a newer
        // claim is not covered.
        let rel = Arc::new(Release::sign(&sk(1), vec![k], 15));
        book.add(&rel);
        assert_eq!(
            judge_claims(k, None, std::slice::from_ref(&a1), &book),
            Err(StoreError::Released(rel.clone()))
        );
        assert_eq!(
            judge_claims(k, None, std::slice::from_ref(&a2), &book),
            Ok(Some(vec![a2.clone()]))
        );
        assert_eq!(
            after_release(&[a1.clone(), b1.clone()], &rel),
            Some(vec![b1.clone()])
        );
        assert_eq!(after_release(&[a2], &rel), None);
    }
}
