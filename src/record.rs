//! Signed, sequence-numbered mutable records (DESIGN.md, "Data model").
//!
//! A record's key is `SHA-256(owner public key ‖ name)`, so only the holder of
//! the owner's ed25519 key can produce a record that verifies under that key.
//! Each version carries a sequence number; storage nodes keep the highest one
//! and refuse older ones. A delete is a signed tombstone (`value == None`)
//! with a higher sequence number, so replicas cannot resurrect a deleted
//! record during repair.

use crate::clock::{Causal, Clock};
use crate::grant::{Grant, Scope, Sig};
use crate::id::Id;
use bytes::Bytes;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// Largest record value, in bytes (the same bound as a block).
pub const MAX_RECORD_VALUE: usize = 1 << 20;
/// Largest record name, in bytes.
pub const MAX_RECORD_NAME: usize = 1024;
/// Domain separation for record signatures: versions without a clock
/// (as every version was before clocks), with one, and (what this
/// release signs) over the value's BLAKE3 digest instead of the value.
const SIGN_CONTEXT: &[u8] = b"peerstore-record-v1";
const SIGN_CONTEXT_CLOCKED: &[u8] = b"peerstore-record-v2";
const SIGN_CONTEXT_DIGEST: &[u8] = b"peerstore-record-v3";

/// One version of a mutable record.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Record {
    /// The owner's ed25519 public key; the record key hangs off it.
    pub owner: [u8; 32],
    /// The owner's name for the record (opaque bytes, often itself a hash).
    #[serde(with = "serde_bytes")]
    pub name: Vec<u8>,
    /// Version number: one more than the version it replaces.
    pub seq: u64,
    /// Which writers made the versions this one replaces ([`Clock`]):
    /// stores keep every version no other one's clock is above.
    pub clock: Clock,
    /// The payload, or `None` for a signed delete (tombstone). Shared,
    /// not copied, by the versions' many holders on a save's way (the
    /// journal, the puts to each member, the record cache); encoded as a
    /// byte string, as before.
    pub value: Option<Bytes>,
    /// ed25519 signature over the key, sequence number, clock and the
    /// value's BLAKE3 digest ([`digest_signed_bytes`]): the
    /// owner's, or a granted writer's with its grant ([`crate::grant`]).
    #[serde(with = "serde_bytes")]
    pub sig: Vec<u8>,
}

/// Why a record was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum RecordError {
    #[error("record owner is not a valid ed25519 public key")]
    BadOwner,
    #[error("record signature does not verify")]
    BadSignature,
    #[error("record name is {0} bytes (max {MAX_RECORD_NAME})")]
    NameTooLong(usize),
    #[error("record value is {0} bytes (max {MAX_RECORD_VALUE})")]
    ValueTooLarge(usize),
    #[error("record clock is malformed")]
    BadClock,
    /// A writer's version whose grant does not verify under the owner or
    /// is for another scope.
    #[error("the writer's grant does not verify")]
    BadGrant,
    /// The version breaks a rule of its kind of record (an account
    /// record's: [`crate::account_record`]).
    #[error("record refused: {0}")]
    Refused(String),
}

/// How one version of a record stands to another of the same record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VersionOrder {
    /// The same version, byte for byte.
    Same,
    /// It replaces the other.
    Newer,
    /// The other replaces it.
    Older,
    /// Written without seeing each other: both must be kept.
    Concurrent,
}

/// A record version as stored and sent before records had clocks (the
/// same fields less the clock): still read from data directories written
/// then, as a version with no clock (whose signature covers the same
/// bytes as then).
#[derive(Deserialize)]
struct RecordV1 {
    owner: [u8; 32],
    #[serde(with = "serde_bytes")]
    name: Vec<u8>,
    seq: u64,
    #[serde(with = "serde_bytes")]
    value: Option<Vec<u8>>,
    #[serde(with = "serde_bytes")]
    sig: Vec<u8>,
}

impl Record {
    /// Decodes one version from the start of `bytes` in the current
    /// encoding; the rest of the bytes.
    pub fn take_from(bytes: &[u8]) -> Result<(Record, &[u8]), postcard::Error> {
        postcard::take_from_bytes(bytes)
    }

    /// Decodes `bytes` as exactly one version in the encoding before
    /// clocks.
    pub fn from_v1(bytes: &[u8]) -> Option<Record> {
        match postcard::take_from_bytes::<RecordV1>(bytes) {
            Ok((r, [])) => Some(Record {
                owner: r.owner,
                name: r.name,
                seq: r.seq,
                clock: Clock::default(),
                value: r.value.map(Bytes::from),
                sig: r.sig,
            }),
            _ => None,
        }
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Record")
            .field("key", &self.key())
            .field("seq", &self.seq)
            .field("clock", &self.clock.pairs())
            .field("len", &self.value.as_ref().map(|v| v.len()))
            .finish()
    }
}

/// The key of the record `name` owned by `owner`: `SHA-256(owner ‖
/// name)`, except for an account record (a name starting with
/// [`ACCOUNT_RECORD_PREFIX`]), whose key hangs off the account name alone
/// ([`account_key`]) so anyone can find it by name, and an inbox record
/// ([`INBOX_RECORD_PREFIX`]), whose key hangs off its owner's key alone
/// ([`inbox_key`]) so anyone can append to it.
pub fn record_key(owner: &[u8; 32], name: &[u8]) -> Id {
    if let Some(account) = name.strip_prefix(ACCOUNT_RECORD_PREFIX) {
        return account_key(account);
    }
    if let Some(inbox_owner) = name.strip_prefix(INBOX_RECORD_PREFIX) {
        return inbox_key(inbox_owner);
    }
    Id::hash_parts(&[owner, name])
}

/// Names of inbox records start with these bytes; the rest is the public
/// key of the inbox's owner (`crate::inbox_record` has the rules).
pub const INBOX_RECORD_PREFIX: &[u8] = b"\0peerstore-inbox-v1\0";

/// The DHT key of the inbox of the owner whose public key is `owner`:
/// the same whoever appends to it.
pub fn inbox_key(owner: &[u8]) -> Id {
    Id::hash_parts(&[b"peerstore-inbox-v1", owner])
}

/// Names of account records start with these bytes; the rest is the
/// account name. Other records are named by random bytes or hashes, which
/// never start so.
pub const ACCOUNT_RECORD_PREFIX: &[u8] = b"\0peerstore-account-v1\0";

/// The DHT key of the account record of `account` (the name's bytes):
/// the same whoever asks, so the first to store it owns the name
/// (`crate::account_record` has the rules storage nodes apply).
pub fn account_key(account: &[u8]) -> Id {
    Id::hash_parts(&[b"peerstore-account-v1", account])
}

/// The digests of record versions whose signatures checked out in this
/// process (bounded; emptied when full, as the key cache).
mod verified {
    use crate::id::Id;
    use std::collections::HashSet;
    use std::sync::{Mutex, OnceLock};

    /// Digests kept at most (32 bytes each).
    const MAX: usize = 1 << 16;

    fn set() -> &'static Mutex<HashSet<Id>> {
        static SET: OnceLock<Mutex<HashSet<Id>>> = OnceLock::new();
        SET.get_or_init(Default::default)
    }

    /// Whether `digest` checked out before.
    pub fn seen(digest: &Id) -> bool {
        set()
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(digest)
    }

    /// Notes that `digest` checked out.
    pub fn note(digest: Id) {
        let mut s = set().lock().unwrap_or_else(|e| e.into_inner());
        if s.len() >= MAX {
            s.clear();
        }
        s.insert(digest);
    }
}

/// What [`verified`] keeps of a version whose signature checked out:
/// everything the check depends on (the owner, the whole signature field
/// with its scope and grant, and the version as [`digest_signed_bytes`]
/// gives it, whichever form its signature covers).
fn verified_digest(owner: &[u8; 32], sig: &[u8], signed: &[u8]) -> Id {
    // The signature field's length first: no other split of the same
    // bytes into a field and signed bytes gives the same digest. BLAKE3,
    // not the SHA-256 of keys: the digest never leaves this process, and
    // a record of a file's journal is some 20 KiB hashed at every check.
    let len = (sig.len() as u64).to_le_bytes();
    let mut h = blake3::Hasher::new();
    for part in [&b"peerstore-verified-v3"[..], owner, &len, sig, signed] {
        h.update(part);
    }
    Id(*h.finalize().as_bytes())
}

/// Owners' keys kept decompressed, at most (a node sees few owners; the
/// cache is emptied when full).
const KEY_CACHE: usize = 1024;

/// The ed25519 key `owner`, decompressed once and kept: decompressing
/// costs a field inversion, a good part of a signature check.
pub fn verifying_key(owner: &[u8; 32]) -> Option<VerifyingKey> {
    use std::collections::HashMap;
    use std::sync::{Mutex, OnceLock};
    static KEYS: OnceLock<Mutex<HashMap<[u8; 32], VerifyingKey>>> = OnceLock::new();
    let keys = KEYS.get_or_init(Default::default);
    if let Some(k) = keys.lock().unwrap_or_else(|e| e.into_inner()).get(owner) {
        return Some(*k);
    }
    let k = VerifyingKey::from_bytes(owner).ok()?;
    let mut m = keys.lock().unwrap_or_else(|e| e.into_inner());
    if m.len() >= KEY_CACHE {
        m.clear();
    }
    m.insert(*owner, k);
    Some(k)
}

/// What a version signs: `"peerstore-record-v3" ‖ key ‖ seq (u64 BE) ‖
/// clock ‖ value tag ‖ BLAKE3(value)`. Signing a digest, not the value,
/// costs the same for any value: ed25519 hashes its message twice with
/// SHA-512 to sign and once to check, which on a file's record carrying
/// its journal (some 20 KiB per `fsync`) was most of the cost of each.
fn digest_signed_bytes(key: &Id, seq: u64, clock: &Clock, value: Option<&[u8; 32]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(SIGN_CONTEXT_DIGEST.len() + 81 + 16 * clock.pairs().len());
    out.extend_from_slice(SIGN_CONTEXT_DIGEST);
    out.extend_from_slice(&key.0);
    out.extend_from_slice(&seq.to_be_bytes());
    clock.encode_into(&mut out);
    push_tagged(&mut out, value.map(|h| &h[..]));
    out
}

/// Appends a value's tag (0: a tombstone, 1: a value) and its bytes.
fn push_tagged(out: &mut Vec<u8>, value: Option<&[u8]>) {
    match value {
        Some(v) => {
            out.push(1);
            out.extend_from_slice(v);
        }
        None => out.push(0),
    }
}

/// The BLAKE3 digest of a version's value (`None` for a tombstone).
fn value_digest(value: Option<&[u8]>) -> Option<[u8; 32]> {
    value.map(|v| *blake3::hash(v).as_bytes())
}

/// What versions signed before [`digest_signed_bytes`]: the value itself,
/// after the clock (or, with no clock, exactly what versions signed before
/// clocks existed). Still checked, so records written then verify.
fn full_signed_bytes(key: &Id, seq: u64, clock: &Clock, value: Option<&[u8]>) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        SIGN_CONTEXT.len() + 49 + 16 * clock.pairs().len() + value.map_or(0, |v| v.len()),
    );
    if clock.is_empty() {
        // Exactly the bytes signed before records had clocks.
        out.extend_from_slice(SIGN_CONTEXT);
        out.extend_from_slice(&key.0);
        out.extend_from_slice(&seq.to_be_bytes());
    } else {
        out.extend_from_slice(SIGN_CONTEXT_CLOCKED);
        out.extend_from_slice(&key.0);
        out.extend_from_slice(&seq.to_be_bytes());
        clock.encode_into(&mut out);
    }
    push_tagged(&mut out, value);
    out
}

impl Record {
    /// Creates and signs a record version (`value == None` for a delete)
    /// with no clock: versions are then ordered by `seq` alone.
    pub fn sign(key: &SigningKey, name: &[u8], seq: u64, value: Option<Vec<u8>>) -> Record {
        Record::sign_clocked(key, name, seq, Clock::default(), value)
    }

    /// Creates and signs a record version with its writers' clock.
    pub fn sign_clocked(
        key: &SigningKey,
        name: &[u8],
        seq: u64,
        clock: Clock,
        value: Option<Vec<u8>>,
    ) -> Record {
        let owner = key.verifying_key().to_bytes();
        Record::signed_as(key, owner, As::Owner, name, seq, clock, value)
    }

    /// How this version stands to `other`, a version of the same record:
    /// by their clocks, and by sequence number where the clocks are
    /// equal (records written without clocks). Two different versions of
    /// one sequence number and clock are concurrent.
    pub fn order(&self, other: &Record) -> VersionOrder {
        if self == other {
            return VersionOrder::Same;
        }
        match self.clock.causal(&other.clock) {
            Causal::After => VersionOrder::Newer,
            Causal::Before => VersionOrder::Older,
            Causal::Concurrent => VersionOrder::Concurrent,
            Causal::Equal => match self.seq.cmp(&other.seq) {
                std::cmp::Ordering::Greater => VersionOrder::Newer,
                std::cmp::Ordering::Less => VersionOrder::Older,
                std::cmp::Ordering::Equal => VersionOrder::Concurrent,
            },
        }
    }

    /// Whether the versions `newer` hold everything `older` do: each of
    /// `older` is one of them or replaced by one.
    pub fn covers(newer: &[Record], older: &[Record]) -> bool {
        older.iter().all(|o| {
            newer
                .iter()
                .any(|n| matches!(n.order(o), VersionOrder::Newer | VersionOrder::Same))
        })
    }

    /// Which of two concurrent versions is shown first (and keeps a
    /// file's name): the higher sequence number, then the larger
    /// signature. Every node picks the same.
    pub fn ranks_above(&self, other: &Record) -> bool {
        (self.seq, &self.sig) > (other.seq, &other.sig)
    }

    /// The record's DHT key.
    pub fn key(&self) -> Id {
        record_key(&self.owner, &self.name)
    }

    /// Whether this version is a delete.
    pub fn is_tombstone(&self) -> bool {
        self.value.is_none()
    }

    /// Size bounds and signature check.
    pub fn verify(&self) -> Result<(), RecordError> {
        if self.name.len() > MAX_RECORD_NAME {
            return Err(RecordError::NameTooLong(self.name.len()));
        }
        if let Some(v) = &self.value
            && v.len() > MAX_RECORD_VALUE
        {
            return Err(RecordError::ValueTooLarge(v.len()));
        }
        if !self.clock.is_valid() {
            return Err(RecordError::BadClock);
        }
        let vk = verifying_key(&self.owner).ok_or(RecordError::BadOwner)?;
        let key = self.key();
        let hash = value_digest(self.value.as_deref());
        let signed = digest_signed_bytes(&key, self.seq, &self.clock, hash.as_ref());
        // Everything the check depends on: a version checked before (by a
        // replica's read-modify-write, the record cache, a re-read) costs
        // a hash, not a signature check.
        let digest = verified_digest(&self.owner, &self.sig, &signed);
        if verified::seen(&digest) {
            return Ok(());
        }
        let (signer, scope, sig) = match Sig::parse(&self.sig).ok_or(RecordError::BadSignature)? {
            Sig::Owner(sig) => (vk, None, sig),
            Sig::Scoped(sig, scope) => (vk, Some(scope), sig),
            Sig::Granted(sig, scope, grant) => {
                if grant.scope != scope || !grant.verify(&self.owner) {
                    return Err(RecordError::BadGrant);
                }
                let writer = verifying_key(&grant.writer).ok_or(RecordError::BadGrant)?;
                (writer, Some(scope), sig)
            }
        };
        let message = |bytes: Vec<u8>| match &scope {
            Some(s) => scoped(bytes, s),
            None => bytes,
        };
        let sig = Signature::from_bytes(&sig);
        if signer.verify_strict(&message(signed), &sig).is_err() {
            // A version signed before signatures covered the digest.
            let full = full_signed_bytes(&key, self.seq, &self.clock, self.value.as_deref());
            signer
                .verify_strict(&message(full), &sig)
                .map_err(|_| RecordError::BadSignature)?;
        }
        verified::note(digest);
        Ok(())
    }

    /// The scope this version is tagged with: a version of a record in a
    /// folder shared with write access ([`crate::grant`]).
    pub fn scope(&self) -> Option<Scope> {
        Sig::parse(&self.sig).and_then(|s| s.scope())
    }

    /// Whether a writer the owner granted access signed this version
    /// (rather than the owner).
    pub fn is_granted(&self) -> bool {
        matches!(Sig::parse(&self.sig), Some(Sig::Granted(..)))
    }

    /// Creates and signs, as the owner, a version tagged with `scope`.
    pub fn sign_scoped(
        key: &SigningKey,
        name: &[u8],
        seq: u64,
        clock: Clock,
        value: Option<Vec<u8>>,
        scope: Scope,
    ) -> Record {
        let owner = key.verifying_key().to_bytes();
        Record::signed_as(key, owner, As::Scoped(scope), name, seq, clock, value)
    }

    /// Creates and signs, as a writer with `grant` from `owner`, a version
    /// of `owner`'s record `name`, tagged with the grant's scope.
    pub fn sign_granted(
        writer: &SigningKey,
        owner: [u8; 32],
        grant: &Grant,
        name: &[u8],
        seq: u64,
        clock: Clock,
        value: Option<Vec<u8>>,
    ) -> Record {
        Record::signed_as(writer, owner, As::Granted(grant), name, seq, clock, value)
    }

    /// A version of `owner`'s record `name` signed by `signer` in one of
    /// the signature layouts ([`crate::grant`]).
    fn signed_as(
        signer: &SigningKey,
        owner: [u8; 32],
        how: As<'_>,
        name: &[u8],
        seq: u64,
        clock: Clock,
        value: Option<Vec<u8>>,
    ) -> Record {
        let hash = value_digest(value.as_deref());
        let bytes = digest_signed_bytes(&record_key(&owner, name), seq, &clock, hash.as_ref());
        let by_owner = signer.verifying_key().to_bytes() == owner;
        let (sig, checks_out) = match how {
            As::Owner => (Sig::Owner(signer.sign(&bytes).to_bytes()), by_owner),
            As::Scoped(s) => (
                Sig::Scoped(signer.sign(&scoped(bytes.clone(), &s)).to_bytes(), s),
                by_owner,
            ),
            // Whether the grant holds is for the check to judge.
            As::Granted(g) => (
                Sig::Granted(
                    signer.sign(&scoped(bytes.clone(), &g.scope)).to_bytes(),
                    g.scope,
                    g.clone(),
                ),
                false,
            ),
        };
        let sig = sig.encode();
        if checks_out {
            // Signed here with the owner's own key, so the signature checks
            // out by construction: this node's later checks of it (its own
            // replica's put, the record cache) cost a hash. Size and clock
            // bounds are still checked every time.
            verified::note(verified_digest(&owner, &sig, &bytes));
        }
        Record {
            owner,
            name: name.to_vec(),
            seq,
            clock,
            value: value.map(Bytes::from),
            sig,
        }
    }
}

/// Whose signature a version carries ([`Record::signed_as`]).
enum As<'a> {
    Owner,
    Scoped(Scope),
    Granted(&'a Grant),
}

/// The bytes a scoped version's signature covers: the version's, then the
/// scope.
fn scoped(mut bytes: Vec<u8>, scope: &Scope) -> Vec<u8> {
    bytes.extend_from_slice(b"scope");
    bytes.extend_from_slice(scope);
    bytes
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[7u8; 32])
    }

    #[test]
    fn signed_record_verifies() {
        let r = Record::sign(&key(), b"dir", 3, Some(b"hello".to_vec()));
        assert_eq!(r.verify(), Ok(()));
        assert_eq!(
            r.key(),
            record_key(&key().verifying_key().to_bytes(), b"dir")
        );
        let t = Record::sign(&key(), b"dir", 4, None);
        assert!(t.is_tombstone());
        assert_eq!(t.verify(), Ok(()));
    }

    #[test]
    fn tampering_breaks_signature() {
        let r = Record::sign(&key(), b"dir", 3, Some(b"hello".to_vec()));
        // Checked once first: a version that checked out before must not
        // vouch for a changed one (the cache of checked versions).
        assert_eq!(r.verify(), Ok(()));
        assert_eq!(r.verify(), Ok(()));
        let mut v = r.clone();
        v.value = Some(Bytes::from_static(b"hellO"));
        assert_eq!(v.verify(), Err(RecordError::BadSignature));
        let mut s = r.clone();
        s.seq = 4;
        assert_eq!(s.verify(), Err(RecordError::BadSignature));
        let mut n = r.clone();
        n.name = b"other".to_vec();
        assert_eq!(n.verify(), Err(RecordError::BadSignature));
        // Another key claiming the same owner cannot sign for it.
        let forged = Record::sign(&SigningKey::from_bytes(&[9u8; 32]), b"dir", 5, None);
        let mut f = forged.clone();
        f.owner = r.owner;
        assert_eq!(f.verify(), Err(RecordError::BadSignature));
        let mut short = r;
        short.sig.truncate(10);
        assert_eq!(short.verify(), Err(RecordError::BadSignature));
        let c = Record::sign_clocked(&key(), b"dir", 3, Clock::default().next(1), None);
        let mut moved = c.clone();
        moved.clock = Clock::default().next(2);
        assert_eq!(moved.verify(), Err(RecordError::BadSignature));
        let mut bad = c;
        bad.clock = unsorted_clock(&[(2, 1), (1, 1)]);
        assert_eq!(bad.verify(), Err(RecordError::BadClock));
    }

    /// A clock out of order, as a hostile writer might send it.
    fn unsorted_clock(pairs: &[(u64, u64)]) -> Clock {
        postcard::from_bytes(&postcard::to_stdvec(&pairs.to_vec()).unwrap()).unwrap()
    }

    #[test]
    fn scoped_and_granted_versions() {
        let owner = key();
        let o = owner.verifying_key().to_bytes();
        let writer = SigningKey::from_bytes(&[8u8; 32]);
        let w = writer.verifying_key().to_bytes();
        let c = Clock::default().next(1);
        let s = Record::sign_scoped(&owner, b"f", 2, c.clone(), Some(b"x".to_vec()), [1; 16]);
        assert_eq!(s.verify(), Ok(()));
        assert_eq!(s.scope(), Some([1; 16]));
        assert!(!s.is_granted());
        // The scope is signed: it cannot be swapped or cut off.
        let mut swapped = s.clone();
        swapped.sig[64..].copy_from_slice(&[2; 16]);
        assert_eq!(swapped.verify(), Err(RecordError::BadSignature));
        let mut cut = s.clone();
        cut.sig.truncate(64);
        assert_eq!(cut.verify(), Err(RecordError::BadSignature));
        // A granted writer's version verifies, under the owner's key.
        let g = Grant::sign(&owner, w, [1; 16]);
        let v = Record::sign_granted(&writer, o, &g, b"f", 3, c.next(2), Some(b"y".to_vec()));
        assert_eq!(v.verify(), Ok(()));
        assert_eq!(v.key(), s.key());
        assert!(v.is_granted());
        // A grant the owner did not sign, one for another writer or scope,
        // or a version of another owner's record: refused.
        let self_made = Grant::sign(&writer, w, [1; 16]);
        let forged = Record::sign_granted(&writer, o, &self_made, b"f", 3, c.clone(), None);
        assert_eq!(forged.verify(), Err(RecordError::BadGrant));
        let for_other = Grant::sign(&owner, [9; 32], [1; 16]);
        let stolen = Record::sign_granted(&writer, o, &for_other, b"f", 3, c.clone(), None);
        assert_eq!(stolen.verify(), Err(RecordError::BadSignature));
        let mut rescoped = v.clone();
        rescoped.sig[64..80].copy_from_slice(&[2; 16]);
        assert_eq!(rescoped.verify(), Err(RecordError::BadGrant));
        let mut moved = v;
        moved.owner = [7; 32];
        assert!(moved.verify().is_err());
    }

    #[test]
    fn a_shared_value_encodes_as_the_byte_string_it_was() {
        #[derive(Serialize)]
        struct Before<'a> {
            owner: [u8; 32],
            #[serde(with = "serde_bytes")]
            name: &'a [u8],
            seq: u64,
            clock: &'a Clock,
            #[serde(with = "serde_bytes")]
            value: Option<&'a [u8]>,
            #[serde(with = "serde_bytes")]
            sig: &'a [u8],
        }
        for value in [Some(vec![7u8; 300]), Some(Vec::new()), None] {
            let r = Record::sign_clocked(&key(), b"dir", 3, Clock::default().next(1), value);
            let bytes = postcard::to_stdvec(&r).unwrap();
            let before = postcard::to_stdvec(&Before {
                owner: r.owner,
                name: &r.name,
                seq: r.seq,
                clock: &r.clock,
                value: r.value.as_deref(),
                sig: &r.sig,
            })
            .unwrap();
            assert_eq!(bytes, before);
            let back: Record = postcard::from_bytes(&bytes).unwrap();
            assert_eq!(back, r);
            assert_eq!(back.verify(), Ok(()));
        }
    }

    #[test]
    fn a_version_stored_before_clocks_still_reads_and_verifies() {
        #[derive(Serialize)]
        struct Old<'a> {
            owner: [u8; 32],
            #[serde(with = "serde_bytes")]
            name: &'a [u8],
            seq: u64,
            #[serde(with = "serde_bytes")]
            value: Option<&'a [u8]>,
            #[serde(with = "serde_bytes")]
            sig: &'a [u8],
        }
        let r = Record::sign(&key(), b"dir", 3, Some(b"hello".to_vec()));
        let old = postcard::to_stdvec(&Old {
            owner: r.owner,
            name: &r.name,
            seq: r.seq,
            value: r.value.as_deref(),
            sig: &r.sig,
        })
        .unwrap();
        let back = Record::from_v1(&old).unwrap();
        assert_eq!(back, r);
        assert_eq!(back.verify(), Ok(()));
        // A clocked version signs other bytes: its clock cannot be cut off.
        let c = Record::sign_clocked(
            &key(),
            b"dir",
            3,
            Clock::default().next(1),
            r.value.as_deref().map(<[u8]>::to_vec),
        );
        let mut cut = c.clone();
        cut.clock = Clock::default();
        assert_eq!(cut.verify(), Err(RecordError::BadSignature));
    }

    /// A version signed as releases before digest signatures signed it:
    /// over the whole value (and the scope, if any).
    fn signed_over_the_value(
        k: &SigningKey,
        seq: u64,
        clock: Clock,
        value: Option<Vec<u8>>,
        scope: Option<Scope>,
    ) -> Record {
        let owner = k.verifying_key().to_bytes();
        let bytes = full_signed_bytes(&record_key(&owner, b"dir"), seq, &clock, value.as_deref());
        let sig = match scope {
            Some(s) => Sig::Scoped(k.sign(&scoped(bytes, &s)).to_bytes(), s),
            None => Sig::Owner(k.sign(&bytes).to_bytes()),
        };
        Record {
            owner,
            name: b"dir".to_vec(),
            seq,
            clock,
            value: value.map(Bytes::from),
            sig: sig.encode(),
        }
    }

    #[test]
    fn versions_sign_their_values_digest_and_those_signed_over_the_value_still_verify() {
        let value = Some(vec![5u8; 20_000]);
        let clock = Clock::default().next(1);
        // What this release signs: the digest form, whatever the value's size.
        let r = Record::sign_clocked(&key(), b"dir", 3, clock.clone(), value.clone());
        let Some(Sig::Owner(sig)) = Sig::parse(&r.sig) else {
            panic!("an owner's signature")
        };
        let digest_form =
            digest_signed_bytes(&r.key(), 3, &clock, value_digest(value.as_deref()).as_ref());
        assert!(digest_form.len() < 200);
        let vk = key().verifying_key();
        assert!(
            vk.verify_strict(&digest_form, &Signature::from_bytes(&sig))
                .is_ok()
        );
        // Versions written before: without a clock, with one, scoped.
        let old = [
            signed_over_the_value(&key(), 3, Clock::default(), value.clone(), None),
            signed_over_the_value(&key(), 4, clock.clone(), value.clone(), None),
            signed_over_the_value(&key(), 5, clock.clone(), None, None),
            signed_over_the_value(&key(), 6, clock.clone(), value.clone(), Some([4; 16])),
        ];
        for v in &old {
            assert_ne!(v.sig, r.sig);
            assert_eq!(v.verify(), Ok(()), "{v:?}");
            assert_eq!(v.verify(), Ok(()), "{v:?} checked again");
            // Still bound to every byte of the value, and to the scope.
            let mut changed = v.clone();
            changed.value = Some(match &changed.value {
                Some(x) => {
                    let mut x = x.to_vec();
                    x[19_999] ^= 1;
                    Bytes::from(x)
                }
                None => Bytes::new(),
            });
            assert_eq!(changed.verify(), Err(RecordError::BadSignature));
        }
        let mut rescoped = old[3].clone();
        rescoped.sig[64..].copy_from_slice(&[5; 16]);
        assert_eq!(rescoped.verify(), Err(RecordError::BadSignature));
        // A digest-form signature moved onto another value does not hold.
        let mut moved = r.clone();
        moved.value = Some(Bytes::from(vec![6u8; 20_000]));
        assert_eq!(moved.verify(), Err(RecordError::BadSignature));
    }

    #[test]
    fn versions_order_by_clock_then_seq() {
        let base = Clock::default().next(1);
        let v = |seq, c: &Clock, b: &[u8]| {
            Record::sign_clocked(&key(), b"f", seq, c.clone(), Some(b.to_vec()))
        };
        let a1 = v(2, &base.next(1), b"a");
        let b1 = v(2, &base.next(2), b"b");
        let a2 = v(3, &base.next(1).next(1), b"a2");
        assert_eq!(a1.order(&a1.clone()), VersionOrder::Same);
        assert_eq!(a2.order(&a1), VersionOrder::Newer);
        assert_eq!(a1.order(&a2), VersionOrder::Older);
        // A partition: a longer history on one side is no newer.
        assert_eq!(a2.order(&b1), VersionOrder::Concurrent);
        // Without clocks, the sequence number decides; equal ones differ.
        let (p, q) = (v(4, &Clock::default(), b"p"), v(5, &Clock::default(), b"q"));
        assert_eq!(q.order(&p), VersionOrder::Newer);
        let p2 = v(4, &Clock::default(), b"p2");
        assert_eq!(p2.order(&p), VersionOrder::Concurrent);
        assert!(p2.ranks_above(&p) != p.ranks_above(&p2));
    }
}
