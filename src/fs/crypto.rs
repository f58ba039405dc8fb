//! Client-side encryption of everything that enters the DHT.
//!
//! XChaCha20-Poly1305 (RustCrypto `chacha20poly1305`) with a fresh random
//! 24-byte nonce per sealed item: a sealed item is `nonce ‖ ciphertext ‖ tag`.
//! The associated data binds a sealed item to where it belongs (a record
//! name, or a file's chunk position), so a storage node cannot swap two
//! valid ciphertexts unnoticed. Keys are zeroized on drop and never printed.

use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use chacha20poly1305::{XChaCha20Poly1305, XNonce};
use rand::RngCore;
use serde::{Deserialize, Serialize};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Bytes a sealed item adds to its plaintext (nonce and tag).
pub const SEAL_OVERHEAD: usize = 24 + 16;

/// A 256-bit symmetric key.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize, Zeroize, ZeroizeOnDrop)]
pub struct SecretKey(pub [u8; 32]);

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey(****)")
    }
}

impl SecretKey {
    /// A fresh random key from the OS generator.
    pub fn random() -> SecretKey {
        let mut k = [0u8; 32];
        rand::rngs::OsRng.fill_bytes(&mut k);
        SecretKey(k)
    }
}

/// A sealed item failed to open: wrong key, tampered, or truncated.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("decryption failed: wrong key or tampered data")]
pub struct CryptoError;

/// Encrypts and authenticates `plaintext`, bound to `aad`.
pub fn seal(key: &SecretKey, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    let mut nonce = [0u8; 24];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let ct = cipher
        .encrypt(
            XNonce::from_slice(&nonce),
            Payload {
                msg: plaintext,
                aad,
            },
        )
        // Encryption fails only for inputs beyond 256 GiB; items are ≤ 1 MiB.
        .unwrap_or_default();
    let mut out = Vec::with_capacity(24 + ct.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(&ct);
    out
}

/// Checks and decrypts an item made by [`seal`] with the same key and aad.
pub fn open(key: &SecretKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < SEAL_OVERHEAD {
        return Err(CryptoError);
    }
    let (nonce, ct) = sealed.split_at(24);
    let cipher = XChaCha20Poly1305::new((&key.0).into());
    cipher
        .decrypt(XNonce::from_slice(nonce), Payload { msg: ct, aad })
        .map_err(|_| CryptoError)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper_detection() {
        let k = SecretKey::random();
        let s = seal(&k, b"secret text", b"where");
        assert_eq!(s.len(), 11 + SEAL_OVERHEAD);
        assert!(!s.windows(6).any(|w| w == b"secret"));
        assert_eq!(open(&k, &s, b"where").unwrap(), b"secret text");
        assert_eq!(open(&k, &s, b"elsewhere"), Err(CryptoError));
        assert_eq!(open(&SecretKey::random(), &s, b"where"), Err(CryptoError));
        let mut t = s.clone();
        t[30] ^= 1;
        assert_eq!(open(&k, &t, b"where"), Err(CryptoError));
        assert_eq!(open(&k, &s[..10], b"where"), Err(CryptoError));
        // Fresh nonce each time: same input, different output.
        assert_ne!(seal(&k, b"x", b""), seal(&k, b"x", b""));
        assert_eq!(format!("{k:?}"), "SecretKey(****)");
    }
}
