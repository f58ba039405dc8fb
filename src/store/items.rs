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
    /// Stores a record version by the rules of [`judge_versions`].
    fn put_record_with(
        &self,
        rec: &Record,
        expected_seq: Option<u64>,
        durable: bool,
    ) -> Result<bool, StoreError>;
    /// Reads a record's head version (tombstones too), checked for damage.
    fn get_record(&self, key: Id) -> Result<Option<Record>, StoreError>;
    /// Every version held of a record (head first), checked for damage.
    fn get_versions(&self, key: Id) -> Result<Vec<Record>, StoreError>;
    /// The head's sequence number of the record held under `key`, if any.
    fn record_seq(&self, key: Id) -> Option<u64>;
    /// The version of the record held under `key`, if any.
    fn record_version(&self, key: Id) -> Option<ItemVersion>;
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
                asked => {
                    let asked = asked.record_parts().unwrap_or_default();
                    let held = self.record_version(key).and_then(|h| h.record_parts());
                    match held {
                        Some(h) if h.0 > asked.0 => Proof::Newer(h.0),
                        Some(h) if h == asked => match self.get_versions(key) {
                            Ok(v) if v.first().is_some_and(|r| r.seq == asked.0) => {
                                match encode_versions(&v) {
                                    Ok(bytes) => Proof::Held(proof_of(nonce, key, &bytes)),
                                    Err(_) => Proof::Missing,
                                }
                            }
                            _ => Proof::Missing,
                        },
                        _ => Proof::Missing,
                    }
                }
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

/// Concurrent versions of one record a store keeps, at most; a further
/// one is refused until a writer merges them.
pub const MAX_VERSIONS: usize = 16;

/// Bytes of one record's versions together, at most: one answer carries
/// them all. (A lone version of the largest value always fits.)
pub const MAX_VERSIONS_BYTES: usize = crate::record::MAX_RECORD_VALUE + 48 * 1024;

/// The versions a store holds of one record once `offered` is judged
/// against `held` (head first, see [`order_versions`]): `Ok(None)` if
/// exactly this version is held already (repair and retries are
/// idempotent), `Ok(Some(versions))` to store, or why not.
///
/// A version some held one replaces is stale. The offered version
/// replaces every held one it is newer than ([`Record::order`]) and is
/// kept beside the concurrent ones: no version is dropped that no writer
/// saw. With `expected_seq` the put is a compare-and-swap, the writer's
/// path: the head's sequence number must be the expected one (an absent
/// record counts as 0), and the offered version must replace every held
/// one, so a writer never leaves siblings behind.
pub fn judge_versions(
    held: &[Record],
    offered: &Record,
    expected_seq: Option<u64>,
) -> Result<Option<Vec<Record>>, StoreError> {
    use crate::record::VersionOrder;
    if held.iter().any(|h| h == offered) {
        return Ok(None);
    }
    let current = held.first().map(|h| h.seq);
    if let Some(e) = expected_seq
        && current.unwrap_or(0) != e
    {
        return Err(StoreError::Conflict { current });
    }
    // Account and inbox records follow their kind's rules, and their
    // versions form one line (a concurrent one is refused like a stale
    // one).
    let refused = |e| StoreError::BadRecord(crate::record::RecordError::Refused(e));
    // A granted writer's version: every held version must be of the
    // folder the grant is for (a revoked writer's grant is for a scope
    // the owner has since replaced).
    if offered.is_granted() {
        let scope = offered.scope();
        if held.iter().any(|h| h.scope() != scope) {
            return Err(refused(
                "the writer's grant is not for this record's folder (revoked?)".into(),
            ));
        }
    }
    let special = crate::account_record::account_of(offered).is_some()
        || crate::inbox_record::inbox_of(offered).is_some();
    if special && offered.sig.len() != 64 {
        return Err(refused(
            "account and inbox versions carry a plain signature".into(),
        ));
    }
    let account = if crate::account_record::account_of(offered).is_some() {
        crate::account_record::judge(held, offered).map_err(refused)?;
        true
    } else if crate::inbox_record::inbox_of(offered).is_some() {
        crate::inbox_record::judge(held, offered).map_err(refused)?;
        true
    } else {
        false
    };
    let mut kept = Vec::with_capacity(held.len() + 1);
    for h in held {
        match offered.order(h) {
            VersionOrder::Concurrent if account => {
                return Err(StoreError::Stale {
                    offered: offered.seq,
                    current: current.unwrap_or(0),
                });
            }
            VersionOrder::Older | VersionOrder::Same => {
                return Err(StoreError::Stale {
                    offered: offered.seq,
                    current: current.unwrap_or(0),
                });
            }
            VersionOrder::Newer => {}
            VersionOrder::Concurrent => kept.push(h.clone()),
        }
    }
    if expected_seq.is_some() && !kept.is_empty() {
        return Err(StoreError::Conflict { current });
    }
    if kept.len() >= MAX_VERSIONS {
        return Err(StoreError::TooManyVersions(kept.len() + 1));
    }
    if !kept.is_empty() {
        let size = |r: &Record| postcard::experimental::serialized_size(r).unwrap_or(usize::MAX);
        let total = kept
            .iter()
            .chain([offered])
            .map(size)
            .fold(0, usize::saturating_add);
        if total > MAX_VERSIONS_BYTES {
            return Err(StoreError::TooManyVersions(kept.len() + 1));
        }
    }
    kept.push(offered.clone());
    order_versions(&mut kept);
    Ok(Some(kept))
}

/// Sorts concurrent versions head first: the one every node shows first
/// ([`Record::ranks_above`]).
pub fn order_versions(versions: &mut [Record]) {
    versions.sort_by(|a, b| (b.seq, &b.sig).cmp(&(a.seq, &a.sig)));
}

/// The versions of `all` (one record's) that no other of them replaces,
/// head first.
pub fn newest_versions(all: Vec<Record>) -> Vec<Record> {
    use crate::record::VersionOrder;
    let mut out: Vec<Record> = Vec::new();
    for r in all {
        if out
            .iter()
            .any(|b| matches!(r.order(b), VersionOrder::Same | VersionOrder::Older))
        {
            continue;
        }
        out.retain(|b| r.order(b) != VersionOrder::Newer);
        out.push(r);
    }
    order_versions(&mut out);
    out
}

/// The bytes a store keeps for a record's versions (head first): their
/// postcard encodings, one after another. One version encodes exactly as
/// a lone record.
pub fn encode_versions(versions: &[Record]) -> Result<Vec<u8>, String> {
    // Sized first, then written in place: one allocation of the ~20 KiB a
    // file's record may hold, not a growing buffer per version.
    let mut len = 0usize;
    for v in versions {
        len += postcard::experimental::serialized_size(v).map_err(|e| e.to_string())?;
    }
    let mut out = Vec::with_capacity(len);
    for v in versions {
        crate::postcard_tail::append(v, &mut out).map_err(|e| e.to_string())?;
    }
    Ok(out)
}

/// The versions in `bytes` ([`encode_versions`]), each checked to be a
/// signed version of record `key`; the reason for the log if not.
pub fn decode_versions(bytes: &[u8], key: Id) -> Result<Vec<Record>, String> {
    match decode_current(bytes, key, true) {
        Ok(v) => Ok(v),
        // A file written before records had clocks: one version.
        Err(why) => match Record::from_v1(bytes) {
            Some(rec) if rec.verify().is_ok() && rec.key() == key => Ok(vec![rec]),
            _ => Err(why),
        },
    }
}

/// [`decode_versions`] of a file this store verified when it stored it
/// and whose bytes a check (its pack entry's CRC) found intact since: the
/// signatures are not checked again.
pub fn decode_stored_versions(bytes: &[u8], key: Id) -> Result<Vec<Record>, String> {
    decode_current(bytes, key, false)
}

fn decode_current(mut bytes: &[u8], key: Id, verify: bool) -> Result<Vec<Record>, String> {
    let mut out = Vec::new();
    while !bytes.is_empty() || out.is_empty() {
        if out.len() >= MAX_VERSIONS {
            return Err(format!("more than {MAX_VERSIONS} versions"));
        }
        let (rec, rest) = Record::take_from(bytes).map_err(|e| format!("undecodable: {e}"))?;
        if verify {
            rec.verify().map_err(|e| e.to_string())?;
        }
        if rec.key() != key {
            return Err(format!("holds the record of key {}", rec.key()));
        }
        out.push(rec);
        bytes = rest;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::Clock;
    use crate::record::RecordError;
    use ed25519_dalek::SigningKey;

    fn rec(seq: u64, clock: &[(u64, u64)], v: &[u8]) -> Record {
        let sk = ed25519_dalek::SigningKey::from_bytes(&[3; 32]);
        let c = crate::clock::Clock::from_pairs(clock.iter().copied());
        Record::sign_clocked(&sk, b"r", seq, c, Some(v.to_vec()))
    }

    #[test]
    fn record_rules() {
        let r1 = rec(1, &[(1, 1)], b"one");
        assert_eq!(
            judge_versions(&[], &r1, Some(0)),
            Ok(Some(vec![r1.clone()]))
        );
        let held = [rec(3, &[(1, 3)], b"three")];
        assert_eq!(judge_versions(&held, &held[0], Some(9)), Ok(None));
        let r4 = rec(4, &[(1, 4)], b"four");
        assert_eq!(
            judge_versions(&held, &r4, Some(2)),
            Err(StoreError::Conflict { current: Some(3) })
        );
        assert_eq!(
            judge_versions(&held, &r1, None),
            Err(StoreError::Stale {
                offered: 1,
                current: 3
            })
        );
        assert_eq!(
            judge_versions(&held, &r4, Some(3)),
            Ok(Some(vec![r4.clone()]))
        );
        // Without clocks, as before: a higher sequence number replaces.
        let (p, q) = (rec(3, &[], b"p"), rec(5, &[], b"q"));
        assert_eq!(
            judge_versions(std::slice::from_ref(&p), &q, None),
            Ok(Some(vec![q.clone()]))
        );
        assert!(matches!(
            judge_versions(&[q], &p, None),
            Err(StoreError::Stale { .. })
        ));
    }

    #[test]
    fn a_granted_writer_writes_only_in_its_folder() {
        use crate::grant::Grant;
        let owner = SigningKey::from_bytes(&[1; 32]);
        let o = owner.verifying_key().to_bytes();
        let writer = SigningKey::from_bytes(&[2; 32]);
        let w = writer.verifying_key().to_bytes();
        let (s1, s2) = ([1u8; 16], [2u8; 16]);
        let c = Clock::default();
        let g1 = Grant::sign(&owner, w, s1);
        let v1 = Record::sign_scoped(&owner, b"d", 1, c.next(1), Some(b"a".to_vec()), s1);
        let held = vec![v1.clone()];
        // In the folder: accepted.
        let by_w = Record::sign_granted(
            &writer,
            o,
            &g1,
            b"d",
            2,
            c.next(1).next(2),
            Some(b"b".to_vec()),
        );
        assert!(judge_versions(&held, &by_w, Some(1)).is_ok());
        // A record the owner did not tag (outside the folder): refused.
        let plain = Record::sign_clocked(&owner, b"e", 1, c.next(1), Some(b"p".to_vec()));
        let into_plain = Record::sign_granted(&writer, o, &g1, b"e", 2, c.next(1).next(2), None);
        assert!(matches!(
            judge_versions(&[plain], &into_plain, Some(1)),
            Err(StoreError::BadRecord(RecordError::Refused(_)))
        ));
        // Revoked: the owner retagged the record with a new scope.
        let retagged =
            Record::sign_scoped(&owner, b"d", 2, c.next(1).next(1), Some(b"a".to_vec()), s2);
        let after = judge_versions(&held, &retagged, Some(1)).unwrap().unwrap();
        let late = Record::sign_granted(&writer, o, &g1, b"d", 3, c.next(1).next(1).next(2), None);
        assert!(matches!(
            judge_versions(&after, &late, None),
            Err(StoreError::BadRecord(RecordError::Refused(_)))
        ));
        // A grant never reaches account or inbox records.
        let acct = crate::account_record::record_name("alice");
        let g = Record::sign_granted(&writer, o, &g1, &acct, 1, Clock::default(), Some(vec![]));
        assert!(judge_versions(&[], &g, Some(0)).is_err());
    }

    #[test]
    fn concurrent_versions_are_kept_until_one_replaces_them() {
        // Two sides of a partition save from version 3.
        let a6 = rec(6, &[(1, 6)], b"side a");
        let b4 = rec(4, &[(1, 3), (2, 1)], b"side b");
        let held = judge_versions(std::slice::from_ref(&a6), &b4, None)
            .unwrap()
            .unwrap();
        assert_eq!(held, vec![a6.clone(), b4.clone()], "head first");
        // Either order gives the same set.
        let other = judge_versions(std::slice::from_ref(&b4), &a6, None)
            .unwrap()
            .unwrap();
        assert_eq!(held, other);
        // A writer that saw only one side cannot leave the other behind.
        let a7 = rec(7, &[(1, 7)], b"a again");
        assert_eq!(
            judge_versions(&held, &a7, Some(6)),
            Err(StoreError::Conflict { current: Some(6) })
        );
        // Repair keeps it beside b4, replacing a6.
        assert_eq!(
            judge_versions(&held, &a7, None),
            Ok(Some(vec![a7.clone(), b4.clone()]))
        );
        // A merge above both replaces both.
        let m = rec(8, &[(1, 7), (2, 2)], b"merged");
        assert_eq!(
            judge_versions(&held, &m, Some(6)),
            Ok(Some(vec![m.clone()]))
        );
        // The bytes round-trip, and one version is a lone record.
        let bytes = encode_versions(&held).unwrap();
        assert_eq!(decode_versions(&bytes, a6.key()), Ok(held));
        assert_eq!(
            encode_versions(std::slice::from_ref(&m)).unwrap(),
            postcard::to_stdvec(&m).unwrap()
        );
        assert!(decode_versions(&bytes[..bytes.len() - 1], a6.key()).is_err());
        assert!(decode_versions(&[], a6.key()).is_err());
    }

    #[test]
    fn concurrent_versions_are_bounded() {
        let mut held = Vec::new();
        for w in 0..MAX_VERSIONS as u64 {
            let r = rec(2, &[(100, 1), (w, 1)], b"x");
            held = judge_versions(&held, &r, None).unwrap().unwrap();
        }
        assert_eq!(held.len(), MAX_VERSIONS);
        let one_more = rec(2, &[(100, 1), (999, 1)], b"x");
        assert_eq!(
            judge_versions(&held, &one_more, None),
            Err(StoreError::TooManyVersions(MAX_VERSIONS + 1))
        );
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
