//! Who owns a block, and the owner's signed word that frees it
//! (DESIGN.md, "Block ownership and space").
//!
//! A block is put with a [`Claim`]: the owner's ed25519 signature over the
//! block's key and a time. Storage nodes keep the claims with the block,
//! charge its bytes to each claiming owner, and delete the block only when
//! no claim is left. A claim is removed only by a [`Release`]: the same
//! owner's signature over a list of block keys and a time, which removes
//! that owner's claims made at or before that time. A storage node keeps
//! each release for a while (a tombstone), refuses a claim it covers (so a
//! replica that missed the release cannot put the block back during
//! repair), and hands it to any node that offers such a block.
//!
//! Times are milliseconds since the Unix epoch on the owner's clock; they
//! only order one owner's claims against the same owner's releases.

use crate::id::Id;
use ed25519_dalek::{Signature, Signer, SigningKey};
use serde::{Deserialize, Serialize};

/// Most keys one [`Release`] may name.
pub const MAX_RELEASE_KEYS: usize = 1024;
/// Domain separation for claim signatures.
const CLAIM_CONTEXT: &[u8] = b"peerstore-claim-v1";
/// Domain separation for release signatures.
const RELEASE_CONTEXT: &[u8] = b"peerstore-release-v1";

/// An owner's claim on one block.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claim {
    /// The owner's ed25519 public key.
    pub owner: [u8; 32],
    /// When it was made (ms since the epoch, the owner's clock).
    pub time: u64,
    /// ed25519 signature over the context, the block key and `time`.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// An owner's signed release of its claims on a list of blocks.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Release {
    /// The owner's ed25519 public key.
    pub owner: [u8; 32],
    /// Claims made at or before this time are released.
    pub time: u64,
    /// The blocks (at most [`MAX_RELEASE_KEYS`]).
    pub keys: Vec<Id>,
    /// ed25519 signature over the context, `time` and the keys.
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// One block an owner claims, as a storage node lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct OwnedBlock {
    /// The block's key.
    pub key: Id,
    /// Bytes it takes on that node.
    pub len: u64,
    /// The time of the owner's claim.
    pub time: u64,
}

/// What applying a release freed on one node.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freed {
    /// Block files removed (no claim left).
    pub blocks: u64,
    /// Their bytes.
    pub bytes: u64,
}

/// Why a claim or release was refused.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum OwnershipError {
    #[error("owner is not a valid ed25519 public key")]
    BadOwner,
    #[error("ownership signature does not verify")]
    BadSignature,
    #[error("a release names {0} blocks (max {MAX_RELEASE_KEYS})")]
    TooManyKeys(usize),
}

impl std::fmt::Debug for Claim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Claim({} at {})",
            Id::hash(&self.owner).short(),
            self.time
        )
    }
}

impl std::fmt::Debug for Release {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Release({} of {} blocks at {})",
            Id::hash(&self.owner).short(),
            self.keys.len(),
            self.time
        )
    }
}

/// Milliseconds since the Unix epoch, now (0 before 1970).
pub fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn claim_bytes(key: Id, time: u64) -> Vec<u8> {
    let mut out = Vec::with_capacity(CLAIM_CONTEXT.len() + 40);
    out.extend_from_slice(CLAIM_CONTEXT);
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&time.to_be_bytes());
    out
}

fn release_bytes(time: u64, keys: &[Id]) -> Vec<u8> {
    let mut out = Vec::with_capacity(RELEASE_CONTEXT.len() + 12 + 32 * keys.len());
    out.extend_from_slice(RELEASE_CONTEXT);
    out.extend_from_slice(&time.to_be_bytes());
    out.extend_from_slice(&(keys.len() as u32).to_be_bytes());
    for k in keys {
        out.extend_from_slice(&k.0);
    }
    out
}

fn check(owner: &[u8; 32], msg: &[u8], sig: &[u8]) -> Result<(), OwnershipError> {
    let vk = crate::record::verifying_key(owner).ok_or(OwnershipError::BadOwner)?;
    let sig: [u8; 64] = sig.try_into().map_err(|_| OwnershipError::BadSignature)?;
    vk.verify_strict(msg, &Signature::from_bytes(&sig))
        .map_err(|_| OwnershipError::BadSignature)
}

impl Claim {
    /// `key`'s claim on block `block`, made at `time`.
    pub fn sign(key: &SigningKey, block: Id, time: u64) -> Claim {
        Claim {
            owner: key.verifying_key().to_bytes(),
            time,
            sig: key.sign(&claim_bytes(block, time)).to_bytes().to_vec(),
        }
    }

    /// A writer's claim on block `block` for `owner`, by `grant` (a block
    /// written into the owner's folder shared for writing is the owner's:
    /// it lives and is freed with the owner's tree).
    pub fn sign_granted(
        writer: &SigningKey,
        owner: [u8; 32],
        grant: &crate::grant::Grant,
        block: Id,
        time: u64,
    ) -> Claim {
        let mut sig = writer.sign(&claim_bytes(block, time)).to_bytes().to_vec();
        sig.extend(postcard::to_stdvec(grant).unwrap_or_default());
        Claim { owner, time, sig }
    }

    /// Checks the signature for block `block`: the owner's, or a writer's
    /// with the owner's grant.
    pub fn verify(&self, block: Id) -> Result<(), OwnershipError> {
        let msg = claim_bytes(block, self.time);
        if self.sig.len() == 64 {
            return check(&self.owner, &msg, &self.sig);
        }
        let grant = match postcard::take_from_bytes::<crate::grant::Grant>(
            &self.sig[64.min(self.sig.len())..],
        ) {
            Ok((g, [])) if g.verify(&self.owner) => g,
            _ => return Err(OwnershipError::BadSignature),
        };
        check(&grant.writer, &msg, &self.sig[..64])
    }
}

impl Release {
    /// `key`'s release of its claims on `keys` made at or before `time`.
    pub fn sign(key: &SigningKey, keys: Vec<Id>, time: u64) -> Release {
        let sig = key.sign(&release_bytes(time, &keys)).to_bytes().to_vec();
        Release {
            owner: key.verifying_key().to_bytes(),
            time,
            keys,
            sig,
        }
    }

    /// Checks the size bound and the signature.
    pub fn verify(&self) -> Result<(), OwnershipError> {
        if self.keys.len() > MAX_RELEASE_KEYS {
            return Err(OwnershipError::TooManyKeys(self.keys.len()));
        }
        check(
            &self.owner,
            &release_bytes(self.time, &self.keys),
            &self.sig,
        )
    }

    /// Whether this release removes `claim` (same owner, made no later).
    pub fn covers(&self, claim: &Claim) -> bool {
        claim.owner == self.owner && claim.time <= self.time
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_granted_writer_claims_for_the_owner() {
        let owner = SigningKey::from_bytes(&[1; 32]);
        let o = owner.verifying_key().to_bytes();
        let writer = SigningKey::from_bytes(&[2; 32]);
        let g = crate::grant::Grant::sign(&owner, writer.verifying_key().to_bytes(), [5; 16]);
        let block = Id::hash(b"block");
        let c = Claim::sign_granted(&writer, o, &g, block, 7);
        assert_eq!(c.owner, o);
        assert_eq!(c.verify(block), Ok(()));
        assert!(c.verify(Id::hash(b"other")).is_err());
        // A grant the writer made itself, or one for another key: refused.
        let own = crate::grant::Grant::sign(&writer, writer.verifying_key().to_bytes(), [5; 16]);
        assert!(
            Claim::sign_granted(&writer, o, &own, block, 7)
                .verify(block)
                .is_err()
        );
        let other = SigningKey::from_bytes(&[3; 32]);
        assert!(
            Claim::sign_granted(&other, o, &g, block, 7)
                .verify(block)
                .is_err()
        );
        let mut short = c;
        short.sig.truncate(30);
        assert!(short.verify(block).is_err());
    }

    fn key(b: u8) -> SigningKey {
        SigningKey::from_bytes(&[b; 32])
    }

    #[test]
    fn claims_bind_key_time_and_owner() {
        let k = Id::hash(b"block");
        let c = Claim::sign(&key(1), k, 1000);
        assert_eq!(c.verify(k), Ok(()));
        assert_eq!(
            c.verify(Id::hash(b"other")),
            Err(OwnershipError::BadSignature)
        );
        let mut later = c.clone();
        later.time = 2000;
        assert_eq!(later.verify(k), Err(OwnershipError::BadSignature));
        let mut stolen = c.clone();
        stolen.owner = key(2).verifying_key().to_bytes();
        assert_eq!(stolen.verify(k), Err(OwnershipError::BadSignature));
        let mut short = c;
        short.sig.truncate(3);
        assert_eq!(short.verify(k), Err(OwnershipError::BadSignature));
    }

    #[test]
    fn releases_cover_only_their_owners_earlier_claims() {
        let k = Id::hash(b"block");
        let r = Release::sign(&key(1), vec![k, Id::hash(b"b2")], 1000);
        assert_eq!(r.verify(), Ok(()));
        assert!(r.covers(&Claim::sign(&key(1), k, 1000)));
        assert!(!r.covers(&Claim::sign(&key(1), k, 1001)));
        assert!(!r.covers(&Claim::sign(&key(2), k, 10)));
        let mut more = r.clone();
        more.keys.push(Id::hash(b"b3"));
        assert_eq!(more.verify(), Err(OwnershipError::BadSignature));
        let many = Release::sign(&key(1), vec![k; MAX_RELEASE_KEYS + 1], 5);
        assert_eq!(
            many.verify(),
            Err(OwnershipError::TooManyKeys(MAX_RELEASE_KEYS + 1))
        );
    }
}
