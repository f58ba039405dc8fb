//! Client-side encryption of everything that enters the DHT.
//!
//! Records and index blocks: XChaCha20-Poly1305 (RustCrypto
//! `chacha20poly1305`) with a fresh random 24-byte nonce per sealed item: a
//! sealed item is `nonce ‖ ciphertext ‖ tag`. File content: AES-256-GCM
//! (`ring`, several times faster with AES-NI) with a fresh random 12-byte
//! nonce, `nonce ‖ ciphertext ‖ tag`, under the file's own key: a key seals
//! at most a few million blocks, far inside GCM's 2^32 random-nonce budget.
//! The associated data binds a sealed item to where it belongs (a record
//! name, or a file's chunk position), so a storage node cannot swap two
//! valid ciphertexts unnoticed. Keys are zeroized on drop and never printed.

use chacha20poly1305::aead::{Aead, AeadInPlace, KeyInit, Payload};
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
    // Encrypted in place in the one buffer it is returned in.
    let mut out = Vec::with_capacity(SEAL_OVERHEAD + plaintext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    match cipher.encrypt_in_place_detached(XNonce::from_slice(&nonce), aad, &mut out[24..]) {
        Ok(tag) => out.extend_from_slice(&tag),
        // Encryption fails only for inputs beyond 256 GiB; items are ≤ 1 MiB.
        Err(_) => return Vec::new(),
    }
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

/// Bytes an AES-256-GCM sealed block adds to its plaintext.
pub const GCM_OVERHEAD: usize = 12 + 16;

/// Encrypts file content with AES-256-GCM, bound to `aad`.
pub fn seal_gcm(key: &SecretKey, plaintext: &[u8], aad: &[u8]) -> Vec<u8> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    let mut nonce = [0u8; 12];
    rand::rngs::OsRng.fill_bytes(&mut nonce);
    let mut out = Vec::with_capacity(GCM_OVERHEAD + plaintext.len());
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    // A 32-byte key is always a valid AES-256 key, and sealing fails only
    // past GCM's 64 GiB message limit; blocks are at most 1 MiB.
    let Ok(unbound) = UnboundKey::new(&AES_256_GCM, &key.0) else {
        return Vec::new();
    };
    let k = LessSafeKey::new(unbound);
    match k.seal_in_place_separate_tag(
        Nonce::assume_unique_for_key(nonce),
        Aad::from(aad),
        &mut out[12..],
    ) {
        Ok(tag) => out.extend_from_slice(tag.as_ref()),
        Err(_) => return Vec::new(),
    }
    out
}

/// Checks and decrypts a block made by [`seal_gcm`].
pub fn open_gcm(key: &SecretKey, sealed: &[u8], aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
    use ring::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
    if sealed.len() < GCM_OVERHEAD {
        return Err(CryptoError);
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&sealed[..12]);
    let unbound = UnboundKey::new(&AES_256_GCM, &key.0).map_err(|_| CryptoError)?;
    let k = LessSafeKey::new(unbound);
    let mut buf = sealed[12..].to_vec();
    let n = k
        .open_in_place(
            Nonce::assume_unique_for_key(nonce),
            Aad::from(aad),
            &mut buf,
        )
        .map_err(|_| CryptoError)?
        .len();
    buf.truncate(n);
    Ok(buf)
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

    #[test]
    fn gcm_round_trip_and_tamper_detection() {
        let k = SecretKey::random();
        let s = seal_gcm(&k, b"secret text", b"where");
        assert_eq!(s.len(), 11 + GCM_OVERHEAD);
        assert_eq!(open_gcm(&k, &s, b"where").unwrap(), b"secret text");
        assert_eq!(open_gcm(&k, &s, b"elsewhere"), Err(CryptoError));
        let mut t = s.clone();
        t[14] ^= 1;
        assert_eq!(open_gcm(&k, &t, b"where"), Err(CryptoError));
        assert_eq!(open_gcm(&k, &s[..20], b"where"), Err(CryptoError));
        assert_ne!(seal_gcm(&k, b"x", b""), seal_gcm(&k, b"x", b""));
        assert_eq!(open_gcm(&k, &seal_gcm(&k, b"", b"a"), b"a").unwrap(), b"");
    }
}
