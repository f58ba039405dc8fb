//! 256-bit identifiers on the Chord ring and the ring arithmetic over them.
//!
//! Every node ID, block key and record key is an [`Id`]: 32 bytes read as an
//! unsigned big-endian integer modulo 2^256. Intervals are taken clockwise:
//! `x.in_open(a, b)` is `x ∈ (a, b)`, `x.in_half_open(a, b)` is `x ∈ (a, b]`.
//! With `a == b` the open interval is the whole ring except `a` and the
//! half-open interval is the whole ring: that is what a one-node ring needs
//! (Stoica et al., SIGCOMM 2001, §4).

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::str::FromStr;

/// Number of bits in an identifier (the `m` of the Chord paper).
pub const ID_BITS: usize = 256;

/// A set of ids with a fast keyed hash (foldhash's quality variant, seeded
/// per process): the sets of a file's blocks are rebuilt on every save,
/// where SipHash over 32-byte keys was a fifth of the time.
pub type IdSet = std::collections::HashSet<Id, foldhash::quality::RandomState>;

/// A point on the identifier ring.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default)]
pub struct Id(pub [u8; 32]);

/// An identifier given as text that is not 64 hex digits.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a 256-bit hex identifier (expected 64 hex digits): {0:?}")]
pub struct ParseIdError(pub String);

impl Id {
    /// The first eight bytes, big-endian (a short stable tag).
    pub fn prefix_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        b.copy_from_slice(&self.0[..8]);
        u64::from_be_bytes(b)
    }

    /// The zero point of the ring.
    pub const ZERO: Id = Id([0; 32]);

    /// SHA-256 of `bytes`: the ID of a public key, the key of a block
    /// stored by a release before BLAKE3 block keys.
    pub fn hash(bytes: &[u8]) -> Id {
        Id(Sha256::digest(bytes).into())
    }

    /// The key of a block: the BLAKE3 of its bytes. Each block is hashed
    /// by its writer, by every replica that stores it and by every reader;
    /// BLAKE3 runs about four times as fast as SHA-256 (SHA-NI) here.
    pub fn of_block(bytes: &[u8]) -> Id {
        Id(*blake3::hash(bytes).as_bytes())
    }

    /// Whether `self` is the key of block `bytes`: their BLAKE3, or their
    /// SHA-256 (the key of a block stored by an earlier release). Either is
    /// a content address: no one can find other bytes for a given key.
    pub fn names(&self, bytes: &[u8]) -> bool {
        Id::of_block(bytes) == *self || Id::hash(bytes) == *self
    }

    /// SHA-256 over several parts, concatenated.
    pub fn hash_parts(parts: &[&[u8]]) -> Id {
        let mut h = Sha256::new();
        for p in parts {
            h.update(p);
        }
        Id(h.finalize().into())
    }

    /// Full lower-case hex (64 digits).
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    /// First 8 hex digits, for logs and tables.
    pub fn short(&self) -> String {
        hex::encode(&self.0[..4])
    }

    /// `self ∈ (a, b)` clockwise; with `a == b` every point but `a`.
    pub fn in_open(self, a: Id, b: Id) -> bool {
        if a == b {
            self != a
        } else if a < b {
            a < self && self < b
        } else {
            self > a || self < b
        }
    }

    /// `self ∈ (a, b]` clockwise; with `a == b` the whole ring.
    pub fn in_half_open(self, a: Id, b: Id) -> bool {
        a == b || self == b || self.in_open(a, b)
    }

    /// `self + 2^i mod 2^256`, the start of finger `i`.
    pub fn add_pow2(self, i: usize) -> Id {
        assert!(i < ID_BITS, "finger index out of range");
        let mut out = self.0;
        let byte = 31 - i / 8;
        let mut carry = 1u16 << (i % 8);
        let mut k = byte as isize;
        while carry != 0 && k >= 0 {
            let s = out[k as usize] as u16 + carry;
            out[k as usize] = s as u8;
            carry = s >> 8;
            k -= 1;
        }
        Id(out)
    }

    /// Clockwise distance from `self` to `other`: `other - self mod 2^256`.
    pub fn distance_to(self, other: Id) -> Id {
        let mut out = [0u8; 32];
        let mut borrow = 0i16;
        for k in (0..32).rev() {
            let d = other.0[k] as i16 - self.0[k] as i16 - borrow;
            if d < 0 {
                out[k] = (d + 256) as u8;
                borrow = 1;
            } else {
                out[k] = d as u8;
                borrow = 0;
            }
        }
        Id(out)
    }

    /// The point just before `self` (`self - 1`).
    pub fn pred(self) -> Id {
        let mut one = [0u8; 32];
        one[31] = 1;
        Id(one).distance_to(self)
    }

    /// An identifier from the first 8 bytes of a `u64` seed, spread by hashing.
    pub fn from_u64(n: u64) -> Id {
        Id::hash(&n.to_be_bytes())
    }
}

impl fmt::Debug for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Id({})", self.short())
    }
}

impl fmt::Display for Id {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl FromStr for Id {
    type Err = ParseIdError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            return Err(ParseIdError(s.chars().take(80).collect()));
        }
        Ok(Id(out))
    }
}

/// The identifier `n` (a small number on the ring), for tests.
#[cfg(test)]
pub(crate) fn small(n: u8) -> Id {
    let mut b = [0u8; 32];
    b[31] = n;
    Id(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn intervals_wrap() {
        assert!(small(5).in_open(small(3), small(7)));
        assert!(!small(3).in_open(small(3), small(7)));
        assert!(!small(7).in_open(small(3), small(7)));
        assert!(small(7).in_half_open(small(3), small(7)));
        // Wrapping interval (250, 4).
        assert!(small(255).in_open(small(250), small(4)));
        assert!(Id::ZERO.in_open(small(250), small(4)));
        assert!(!small(100).in_open(small(250), small(4)));
        // a == b: the whole ring (half-open) or all but a (open).
        assert!(small(9).in_half_open(small(1), small(1)));
        assert!(small(1).in_half_open(small(1), small(1)));
        assert!(!small(1).in_open(small(1), small(1)));
    }

    #[test]
    fn add_pow2_carries_and_wraps() {
        assert_eq!(small(1).add_pow2(0), small(2));
        assert_eq!(small(255).add_pow2(0).0[30], 1);
        let top = Id([0xff; 32]);
        assert_eq!(top.add_pow2(0), Id::ZERO);
        let mut b = [0u8; 32];
        b[0] = 0x80;
        assert_eq!(Id::ZERO.add_pow2(255), Id(b));
    }

    #[test]
    fn a_block_is_named_by_its_blake3_or_by_the_sha256_of_earlier_releases() {
        let data = b"sealed block bytes".to_vec();
        let key = Id::of_block(&data);
        // The published BLAKE3 test vector of the empty input.
        assert_eq!(
            Id::of_block(b"").to_hex(),
            "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262"
        );
        assert_ne!(key, Id::hash(&data));
        assert!(key.names(&data));
        assert!(Id::hash(&data).names(&data));
        assert!(!key.names(b"other bytes"));
        assert!(!Id::hash(b"other bytes").names(&data));
    }

    #[test]
    fn hex_round_trip_and_errors() {
        let id = Id::hash(b"x");
        assert_eq!(id.to_hex().parse::<Id>().unwrap(), id);
        assert!("abc".parse::<Id>().is_err());
        assert!("zz".repeat(32).parse::<Id>().is_err());
    }

    fn any_id() -> impl Strategy<Value = Id> {
        any::<[u8; 32]>().prop_map(Id)
    }

    proptest! {
        #[test]
        fn exactly_one_side(x in any_id(), a in any_id(), b in any_id()) {
            prop_assume!(a != b && x != a && x != b);
            // x is in exactly one of (a, b) and (b, a).
            prop_assert!(x.in_open(a, b) ^ x.in_open(b, a));
        }

        #[test]
        fn distance_orders_interval(x in any_id(), a in any_id(), b in any_id()) {
            prop_assume!(a != b);
            let inside = x.in_open(a, b);
            let by_distance = a.distance_to(x) < a.distance_to(b) && x != a;
            prop_assert_eq!(inside, by_distance);
        }

        #[test]
        fn pred_is_minus_one(x in any_id()) {
            prop_assert_eq!(x.pred().distance_to(x), small(1));
        }
    }
}
