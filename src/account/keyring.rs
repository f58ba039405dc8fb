//! An account's keyring, sealed under a key derived from its password.
//!
//! The key is Argon2id (RFC 9106, the RustCrypto `argon2` crate) of the
//! password and a random 16-byte salt, with the parameters stored next to
//! the sealed keyring so they can be raised later. The default is RFC
//! 9106's second recommended option (m = 64 MiB, t = 3, p = 4); anything
//! below OWASP's floor (m = 19 MiB, t = 2) is refused, whoever offers it
//! (an account record is public: its parameters decide how fast anyone
//! can guess its password offline). The keyring is sealed with
//! XChaCha20-Poly1305 (aad = "peerstore keyring v1" ‖ account name), so a
//! keyring copied to another account's record does not open.
//!
//! A wrong password and a damaged keyring give the same error: the
//! caller cannot tell them apart, and neither can whoever watches it.

use crate::fs::crypto::{SecretKey, open, seal};
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Associated-data prefix of a sealed keyring.
const KEYRING_AAD: &[u8] = b"peerstore keyring v1";
/// Longest password accepted, in bytes.
pub const MAX_PASSWORD: usize = 1024;

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
    pub fn check(&self) -> Result<(), KeyringError> {
        let (lo, hi) = (Self::FLOOR, Self::CEILING);
        if self.m_kib < lo.m_kib || self.t < lo.t || self.p < lo.p {
            return Err(KeyringError::WeakParams(*self));
        }
        if self.m_kib > hi.m_kib || self.t > hi.t || self.p > hi.p || self.m_kib < 8 * self.p {
            return Err(KeyringError::BadParams(*self));
        }
        Ok(())
    }
}

/// Why a keyring could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("wrong name or password")]
    WrongPassword,
    #[error("key derivation parameters below the floor (m = {} KiB, t = {}): at least m = 19456 KiB, t = 2", .0.m_kib, .0.t)]
    WeakParams(KdfParams),
    #[error("key derivation parameters out of range (m = {} KiB, t = {}, p = {})", .0.m_kib, .0.t, .0.p)]
    BadParams(KdfParams),
    #[error("the password is empty")]
    EmptyPassword,
    #[error("the password is longer than {MAX_PASSWORD} bytes")]
    LongPassword,
}

/// The secrets an account holds: its identity (signing) key and its box
/// (X25519) key. Wiped from memory when dropped.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct Keyring {
    pub identity: [u8; 32],
    pub box_secret: [u8; 32],
}

/// A keyring as stored in an account record.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedKeyring {
    pub salt: [u8; 16],
    pub params: KdfParams,
    /// `seal(derived key, postcard(Keyring), aad)`.
    pub sealed: Vec<u8>,
}

fn check_password(password: &[u8]) -> Result<(), KeyringError> {
    if password.is_empty() {
        return Err(KeyringError::EmptyPassword);
    }
    if password.len() > MAX_PASSWORD {
        return Err(KeyringError::LongPassword);
    }
    Ok(())
}

/// The key Argon2id derives from `password` and `salt` with `params`
/// (checked by the caller).
fn derive(password: &[u8], salt: &[u8; 16], params: KdfParams) -> Result<SecretKey, KeyringError> {
    let p = argon2::Params::new(params.m_kib, params.t, params.p, Some(32))
        .map_err(|_| KeyringError::BadParams(params))?;
    let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; 32];
    kdf.hash_password_into(password, salt, &mut out)
        .map_err(|_| KeyringError::BadParams(params))?;
    Ok(SecretKey(out))
}

fn aad(account: &str) -> Vec<u8> {
    [KEYRING_AAD, account.as_bytes()].concat()
}

/// Seals `keyring` of account `account` under `password`, with a fresh
/// salt and `params` (which must pass [`KdfParams::check`]).
pub fn seal_keyring(
    keyring: &Keyring,
    account: &str,
    password: &[u8],
    params: KdfParams,
) -> Result<SealedKeyring, KeyringError> {
    check_password(password)?;
    params.check()?;
    let salt: [u8; 16] = rand::random();
    let key = derive(password, &salt, params)?;
    let mut plain = postcard::to_allocvec(keyring).map_err(|_| KeyringError::BadParams(params))?;
    let sealed = seal(&key, &plain, &aad(account));
    plain.zeroize();
    Ok(SealedKeyring {
        salt,
        params,
        sealed,
    })
}

/// Opens the keyring of account `account` with `password`.
pub fn open_keyring(
    s: &SealedKeyring,
    account: &str,
    password: &[u8],
) -> Result<Keyring, KeyringError> {
    check_password(password)?;
    s.params.check()?;
    let key = derive(password, &s.salt, s.params)?;
    let mut plain =
        open(&key, &s.sealed, &aad(account)).map_err(|_| KeyringError::WrongPassword)?;
    let kr = postcard::from_bytes(&plain).map_err(|_| KeyringError::WrongPassword);
    plain.zeroize();
    kr
}

#[cfg(test)]
mod tests {
    use super::*;

    fn keyring() -> Keyring {
        Keyring {
            identity: [1; 32],
            box_secret: [2; 32],
        }
    }

    #[test]
    fn a_keyring_opens_with_its_password_only() {
        let s = seal_keyring(&keyring(), "alice", b"correct horse", KdfParams::FLOOR).unwrap();
        assert!(open_keyring(&s, "alice", b"correct horse").unwrap() == keyring());
        assert_eq!(
            open_keyring(&s, "alice", b"correct hors").err(),
            Some(KeyringError::WrongPassword)
        );
        // Bound to its account: copied to another, it does not open.
        assert_eq!(
            open_keyring(&s, "mallory", b"correct horse").err(),
            Some(KeyringError::WrongPassword)
        );
        // Tampered: the same error as a wrong password.
        let mut t = s.clone();
        t.sealed[30] ^= 1;
        assert_eq!(
            open_keyring(&t, "alice", b"correct horse").err(),
            Some(KeyringError::WrongPassword)
        );
        // A fresh salt every time.
        let s2 = seal_keyring(&keyring(), "alice", b"correct horse", KdfParams::FLOOR).unwrap();
        assert_ne!(s.salt, s2.salt);
    }

    #[test]
    fn weak_or_absurd_parameters_and_bad_passwords_are_refused() {
        let weak = KdfParams {
            m_kib: 4096,
            t: 1,
            p: 1,
        };
        assert_eq!(
            seal_keyring(&keyring(), "a", b"pw", weak).err(),
            Some(KeyringError::WeakParams(weak))
        );
        let huge = KdfParams {
            m_kib: u32::MAX,
            t: 3,
            p: 4,
        };
        assert!(matches!(huge.check(), Err(KeyringError::BadParams(_))));
        assert!(KdfParams::DEFAULT.check().is_ok());
        // A record whose parameters were lowered is refused before any
        // work is done.
        let mut s = seal_keyring(&keyring(), "a", b"pw", KdfParams::FLOOR).unwrap();
        s.params = weak;
        assert_eq!(
            open_keyring(&s, "a", b"pw").err(),
            Some(KeyringError::WeakParams(weak))
        );
        assert_eq!(
            seal_keyring(&keyring(), "a", b"", KdfParams::FLOOR).err(),
            Some(KeyringError::EmptyPassword)
        );
        let long = vec![b'x'; MAX_PASSWORD + 1];
        assert_eq!(
            seal_keyring(&keyring(), "a", &long, KdfParams::FLOOR).err(),
            Some(KeyringError::LongPassword)
        );
    }
}
