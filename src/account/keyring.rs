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

pub use crate::account_record::{KdfParams, ParamsError, SealedKeyring};

/// Why a keyring could not be sealed or opened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyringError {
    #[error("wrong name or password")]
    WrongPassword,
    #[error(transparent)]
    Params(#[from] ParamsError),
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

pub fn check_password(password: &[u8]) -> Result<(), KeyringError> {
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
        .map_err(|_| KeyringError::Params(ParamsError::OutOfRange(params)))?;
    let kdf = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, p);
    let mut out = [0u8; 32];
    kdf.hash_password_into(password, salt, &mut out)
        .map_err(|_| KeyringError::Params(ParamsError::OutOfRange(params)))?;
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
    let mut plain = postcard::to_allocvec(keyring)
        .map_err(|_| KeyringError::Params(ParamsError::OutOfRange(params)))?;
    let sealed = seal(&key, &plain, &aad(account));
    plain.zeroize();
    Ok(SealedKeyring {
        salt,
        params,
        sealed,
    })
}

/// Spends the time and memory of opening a keyring with `password` under
/// `params`, for nothing: a login for a name that has no account takes
/// as long as one with a wrong password.
pub fn derive_in_vain(password: &[u8], params: KdfParams) {
    let salt: [u8; 16] = rand::random();
    let _ = derive(password, &salt, params);
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
            Some(KeyringError::Params(ParamsError::Weak(weak)))
        );
        let huge = KdfParams {
            m_kib: u32::MAX,
            t: 3,
            p: 4,
        };
        assert!(matches!(huge.check(), Err(ParamsError::OutOfRange(_))));
        assert!(KdfParams::DEFAULT.check().is_ok());
        // A record whose parameters were lowered is refused before any
        // work is done.
        let mut s = seal_keyring(&keyring(), "a", b"pw", KdfParams::FLOOR).unwrap();
        s.params = weak;
        assert_eq!(
            open_keyring(&s, "a", b"pw").err(),
            Some(KeyringError::Params(ParamsError::Weak(weak)))
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
