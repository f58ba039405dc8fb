//! Account records: what an account publishes on the ring, and the rules
//! every storage node applies before it keeps a version of one.
//!
//! An account record is an ordinary signed [`Record`] whose name is
//! [`ACCOUNT_RECORD_PREFIX`] ‖ the account name, so its key hangs off the
//! name alone ([`crate::record::account_key`]): anyone finds it by name.
//! Its value is an [`AccountBody`]: the name again, the box (X25519)
//! public key, the keyring sealed under the password, and the Argon2id
//! parameters that sealed it. The signing key is the record's owner.
//!
//! Storage nodes keep a version only if ([`judge`]):
//! - its value decodes, names the same account, and its parameters lie
//!   between [`KdfParams::FLOOR`] and [`KdfParams::CEILING`] (an account
//!   record is public: its parameters decide how fast anyone can guess the
//!   password offline, and how much a forged one makes a login work);
//! - it is signed by the key that holds the name: the owner of the first
//!   version stored (first come, first served; the create is a
//!   compare-and-swap judged by the key's owner node first), and no other
//!   key ever after;
//! - it replaces every held version (no concurrent versions; a replayed or
//!   stale one is refused), and it is not a delete: accounts are kept.

use crate::record::{ACCOUNT_RECORD_PREFIX, Record};
use serde::{Deserialize, Serialize};

/// Longest account name, in bytes.
pub const MAX_ACCOUNT_NAME: usize = 32;
/// Largest sealed keyring an account record may carry, in bytes.
pub const MAX_SEALED_KEYRING: usize = 4096;

/// Argon2id parameters, as stored with the keyring.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KdfParams {
    /// Memory, in KiB.
    pub m_kib: u32,
    /// Passes over the memory.
    pub t: u32,
    /// Lanes.
    pub p: u32,
}

/// Why key derivation parameters are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ParamsError {
    #[error("key derivation parameters below the floor (m = {} KiB, t = {}): at least m = 19456 KiB, t = 2", .0.m_kib, .0.t)]
    Weak(KdfParams),
    #[error("key derivation parameters out of range (m = {} KiB, t = {}, p = {})", .0.m_kib, .0.t, .0.p)]
    OutOfRange(KdfParams),
}

impl KdfParams {
    /// RFC 9106's second recommended option: 64 MiB, 3 passes, 4 lanes.
    pub const DEFAULT: KdfParams = KdfParams {
        m_kib: 64 * 1024,
        t: 3,
        p: 4,
    };
    /// The least any keyring may use (OWASP: 19 MiB, 2 passes).
    pub const FLOOR: KdfParams = KdfParams {
        m_kib: 19 * 1024,
        t: 2,
        p: 1,
    };
    /// The most a keyring may ask of a machine opening it (4 GiB, 64
    /// passes, 16 lanes): a forged record must not exhaust anyone.
    pub const CEILING: KdfParams = KdfParams {
        m_kib: 4 * 1024 * 1024,
        t: 64,
        p: 16,
    };

    /// Checks the parameters lie between [`Self::FLOOR`] and
    /// [`Self::CEILING`].
    pub fn check(&self) -> Result<(), ParamsError> {
        let (lo, hi) = (Self::FLOOR, Self::CEILING);
        if self.m_kib < lo.m_kib || self.t < lo.t || self.p < lo.p {
            return Err(ParamsError::Weak(*self));
        }
        if self.m_kib > hi.m_kib || self.t > hi.t || self.p > hi.p || self.m_kib < 8 * self.p {
            return Err(ParamsError::OutOfRange(*self));
        }
        Ok(())
    }
}

/// A keyring as stored in an account record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKeyring {
    pub salt: [u8; 16],
    pub params: KdfParams,
    /// `seal(derived key, postcard(Keyring), aad)`.
    #[serde(with = "serde_bytes")]
    pub sealed: Vec<u8>,
}

/// The value of an account record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccountBody {
    /// The account name (the same as in the record's name).
    pub name: String,
    /// The account's X25519 public key: shares are sealed to it.
    pub box_key: [u8; 32],
    /// The signing and box secrets, sealed under the password.
    pub keyring: SealedKeyring,
    /// When the account was created (ms since the epoch, the creator's
    /// clock; informational).
    pub created_ms: u64,
}

impl AccountBody {
    /// The record value.
    pub fn encode(&self) -> Vec<u8> {
        // Encoding plain fields into a Vec cannot fail.
        postcard::to_stdvec(self).unwrap_or_default()
    }
}

/// Why an account name is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    #[error("an account name must not be empty")]
    Empty,
    #[error("the account name is {0} bytes long (at most {MAX_ACCOUNT_NAME})")]
    TooLong(usize),
    #[error(
        "account name {0:?}: use lower-case letters, digits, '.', '_' and '-', starting with a letter or digit"
    )]
    BadChars(String),
}

/// Checks an account name: 1 to 32 bytes of `a-z 0-9 . _ -`, starting
/// with a letter or digit (it becomes a folder name under `/shared`).
pub fn check_name(name: &str) -> Result<(), NameError> {
    let first_ok = name
        .bytes()
        .next()
        .map(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
    match first_ok {
        None => return Err(NameError::Empty),
        Some(false) => return Err(NameError::BadChars(name.into())),
        Some(true) => {}
    }
    if name.len() > MAX_ACCOUNT_NAME {
        return Err(NameError::TooLong(name.len()));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
    {
        return Err(NameError::BadChars(name.into()));
    }
    Ok(())
}

/// The record name of the account `name`.
pub fn record_name(name: &str) -> Vec<u8> {
    [ACCOUNT_RECORD_PREFIX, name.as_bytes()].concat()
}

/// The account name of `rec`, if it is an account record.
pub fn account_of(rec: &Record) -> Option<&[u8]> {
    rec.name.strip_prefix(ACCOUNT_RECORD_PREFIX)
}

/// Checks one version of an account record on its own (see the module
/// doc) and returns its body.
pub fn check_version(rec: &Record) -> Result<AccountBody, String> {
    let Some(raw) = account_of(rec) else {
        return Err("not an account record".into());
    };
    let name = std::str::from_utf8(raw).map_err(|_| "account name is not UTF-8".to_string())?;
    check_name(name).map_err(|e| e.to_string())?;
    if !rec.clock.is_empty() {
        return Err(format!("account {name}: versions carry no clock"));
    }
    let Some(value) = &rec.value else {
        return Err(format!("account {name}: accounts are not deleted"));
    };
    let body = match postcard::take_from_bytes::<AccountBody>(value) {
        Ok((b, [])) => b,
        _ => return Err(format!("account {name}: the record value is malformed")),
    };
    if body.name != name {
        return Err(format!(
            "account {name}: the record names account {:?}",
            body.name
        ));
    }
    body.keyring
        .params
        .check()
        .map_err(|e| format!("account {name}: {e}"))?;
    if body.keyring.sealed.len() > MAX_SEALED_KEYRING {
        return Err(format!("account {name}: the sealed keyring is too large"));
    }
    Ok(body)
}

/// The account rules a storage node applies to `offered` against the
/// versions it holds (head first): a valid version, signed by the key
/// that holds the name. Sequence numbers are judged by the caller, with
/// concurrent versions refused.
pub fn judge(held: &[Record], offered: &Record) -> Result<(), String> {
    check_version(offered)?;
    if let Some(h) = held.first()
        && h.owner != offered.owner
    {
        let name = String::from_utf8_lossy(account_of(offered).unwrap_or_default());
        return Err(format!(
            "account {name} belongs to another key: only its key may change it"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    fn body(name: &str, params: KdfParams) -> AccountBody {
        AccountBody {
            name: name.into(),
            box_key: [3; 32],
            keyring: SealedKeyring {
                salt: [1; 16],
                params,
                sealed: vec![9; 100],
            },
            created_ms: 1,
        }
    }

    fn version(key: &SigningKey, name: &str, seq: u64, b: &AccountBody) -> Record {
        Record::sign(key, &record_name(name), seq, Some(b.encode()))
    }

    #[test]
    fn names() {
        for ok in ["alice", "bob-2", "x", "0day", "a.b_c", &"a".repeat(32)] {
            assert_eq!(check_name(ok), Ok(()), "{ok}");
        }
        assert_eq!(check_name(""), Err(NameError::Empty));
        assert_eq!(check_name(&"a".repeat(33)), Err(NameError::TooLong(33)));
        for bad in ["Alice", "-x", ".x", "a/b", "a b", "é", "..", "a\0"] {
            assert!(
                matches!(check_name(bad), Err(NameError::BadChars(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn the_key_hangs_off_the_name_alone() {
        let (a, b) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let va = version(&a, "alice", 1, &body("alice", KdfParams::FLOOR));
        let vb = version(&b, "alice", 1, &body("alice", KdfParams::FLOOR));
        assert_eq!(va.key(), vb.key());
        assert_eq!(va.key(), crate::record::account_key(b"alice"));
        assert_eq!(va.verify(), Ok(()));
        assert_ne!(
            va.key(),
            version(&a, "bob", 1, &body("bob", KdfParams::FLOOR)).key()
        );
    }

    #[test]
    fn storage_rules() {
        let (a, b) = (
            SigningKey::from_bytes(&[1; 32]),
            SigningKey::from_bytes(&[2; 32]),
        );
        let v1 = version(&a, "alice", 1, &body("alice", KdfParams::DEFAULT));
        assert!(judge(&[], &v1).is_ok());
        // Another key cannot take over the name.
        let taken = version(&b, "alice", 2, &body("alice", KdfParams::DEFAULT));
        assert!(judge(&[], &taken).is_ok());
        assert!(judge(std::slice::from_ref(&v1), &taken).is_err());
        // The owner can change it.
        let v2 = version(&a, "alice", 2, &body("alice", KdfParams::DEFAULT));
        assert!(judge(std::slice::from_ref(&v1), &v2).is_ok());
        // Weak parameters, a body naming another account, a delete, a
        // clock, garbage: refused.
        let weak = KdfParams {
            m_kib: 1024,
            t: 1,
            p: 1,
        };
        for bad in [
            version(&a, "alice", 2, &body("alice", weak)),
            version(&a, "alice", 2, &body("bob", KdfParams::DEFAULT)),
            Record::sign(&a, &record_name("alice"), 2, None),
            Record::sign_clocked(
                &a,
                &record_name("alice"),
                2,
                crate::clock::Clock::default().next(1),
                Some(body("alice", KdfParams::DEFAULT).encode()),
            ),
            Record::sign(&a, &record_name("alice"), 2, Some(vec![1, 2, 3])),
            Record::sign(&a, &record_name("Alice"), 1, Some(vec![])),
        ] {
            assert!(judge(std::slice::from_ref(&v1), &bad).is_err(), "{bad:?}");
            assert!(check_version(&bad).is_err(), "{bad:?}");
        }
        let mut big = body("alice", KdfParams::DEFAULT);
        big.keyring.sealed = vec![0; MAX_SEALED_KEYRING + 1];
        assert!(check_version(&version(&a, "alice", 2, &big)).is_err());
    }
}
