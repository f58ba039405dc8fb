//! The keys a link is made with: this side's static X25519 key pair and the
//! network secret every member holds.
//!
//! A peer's identity on the ring is the hash of its static public key
//! ([`peer_id`]), so the handshake that proves the key also proves the ID.
//! Secrets are zeroed on drop and never printed (their `Debug` is
//! redacted).

use crate::id::Id;
use x25519_dalek::{PublicKey, StaticSecret};
use zeroize::{Zeroize, ZeroizeOnDrop};

/// Length of the network secret (the Noise pre-shared key).
pub const SECRET_LEN: usize = 32;

/// The shared secret of one network: only its holders can complete a
/// handshake with a member.
#[derive(Clone, PartialEq, Eq, Zeroize, ZeroizeOnDrop)]
pub struct NetworkSecret([u8; SECRET_LEN]);

impl NetworkSecret {
    /// A fresh random secret.
    pub fn generate() -> NetworkSecret {
        NetworkSecret(rand::random())
    }

    /// The secret with these bytes.
    pub fn from_bytes(bytes: [u8; SECRET_LEN]) -> NetworkSecret {
        NetworkSecret(bytes)
    }

    /// The raw bytes (to store or put in a ticket).
    pub fn as_bytes(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }

    /// A short public name of the network: a hash of the secret, from
    /// which the secret cannot be recovered.
    pub fn network_id(&self) -> String {
        let h = Id::hash(&[b"peerstore network id\0".as_slice(), &self.0].concat());
        hex::encode(&h.0[..8])
    }
}

impl std::fmt::Debug for NetworkSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NetworkSecret(network {}, redacted)", self.network_id())
    }
}

/// A static X25519 key pair: a node's lasting identity, or a client's
/// throwaway one.
#[derive(Clone)]
pub struct StaticKey {
    secret: StaticSecret,
    public: PublicKey,
}

impl StaticKey {
    /// A fresh random key pair.
    pub fn generate() -> StaticKey {
        StaticKey::from_secret_bytes(rand::random())
    }

    /// The key pair of a stored 32-byte secret.
    pub fn from_secret_bytes(bytes: [u8; 32]) -> StaticKey {
        let secret = StaticSecret::from(bytes);
        let public = PublicKey::from(&secret);
        StaticKey { secret, public }
    }

    /// The secret half, to store (mode 0600) or hand to Noise.
    pub fn secret_bytes(&self) -> [u8; 32] {
        self.secret.to_bytes()
    }

    /// The public half.
    pub fn public(&self) -> [u8; 32] {
        self.public.to_bytes()
    }

    /// The ring ID this key stands for.
    pub fn id(&self) -> Id {
        peer_id(&self.public())
    }
}

impl std::fmt::Debug for StaticKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "StaticKey(public {}, secret redacted)",
            fingerprint(&self.public())
        )
    }
}

/// The ring ID of a static public key: SHA-256 of its 32 bytes.
pub fn peer_id(public: &[u8; 32]) -> Id {
    Id::hash(public)
}

/// A short printable form of a public key (its first 8 bytes, hex).
pub fn fingerprint(public: &[u8; 32]) -> String {
    hex::encode(&public[..8])
}

/// What one side brings to every link: its static key and the network
/// secret.
#[derive(Clone, Debug)]
pub struct LinkKeys {
    /// This side's static key pair.
    pub key: StaticKey,
    /// The network's pre-shared secret.
    pub secret: NetworkSecret,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_hash_of_public_key() {
        let k = StaticKey::generate();
        assert_eq!(k.id(), Id::hash(&k.public()));
        let again = StaticKey::from_secret_bytes(k.secret_bytes());
        assert_eq!(again.public(), k.public());
        assert_ne!(StaticKey::generate().public(), k.public());
    }

    #[test]
    fn secrets_are_not_printed() {
        let s = NetworkSecret::from_bytes([0xab; 32]);
        let k = StaticKey::from_secret_bytes([0xcd; 32]);
        let shown = format!("{s:?} {k:?}");
        assert!(!shown.contains("abab"), "{shown}");
        assert!(!shown.contains("cdcd"), "{shown}");
        assert!(
            !shown.contains(&hex::encode(k.secret_bytes())[..8]),
            "{shown}"
        );
    }

    #[test]
    fn network_id_differs_per_secret() {
        let a = NetworkSecret::generate();
        let b = NetworkSecret::generate();
        assert_ne!(a.network_id(), b.network_id());
        assert_eq!(a.network_id(), a.clone().network_id());
    }
}
