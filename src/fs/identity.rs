//! The identity that owns a file tree: an ed25519 key from which every
//! other key of the tree hangs.
//!
//! Kept at `~/.config/peerstore/identity` (32 raw secret bytes, mode 0600,
//! refused if group/other can read it; `--identity FILE` overrides). The
//! signing key signs every record of the tree; the root directory's record
//! name and encryption key are derived from it with HKDF-SHA256, so a user
//! with the same identity file on another machine finds the same tree.
//! Later issues replace the file by password-derived user keys; the rest of
//! the program sees only this type.

use super::crypto::SecretKey;
use crate::grant::{Grant, Scope};
use crate::id::Id;
use crate::keyfile::{KeyFileError, create_key, read_key};
use crate::ownership::{Claim, Release, now_ms};
use crate::record::{Record, record_key};
use ed25519_dalek::SigningKey;
use hkdf::Hkdf;
use sha2::Sha256;
use std::path::{Path, PathBuf};

/// An owner of a file tree, or (for a tree another account shared) a
/// reader of part of one.
pub struct Identity {
    /// Signs every record of the tree (of a shared tree: a throwaway key,
    /// whose versions storage nodes refuse).
    signing: SigningKey,
    /// Whose records the tree's are: the signing key's, or for a shared
    /// tree its owner's.
    owner: [u8; 32],
    /// For a shared tree, the shared directory: its record name and key
    /// stand in for the root's.
    shared_root: Option<(Vec<u8>, SecretKey)>,
    /// For a folder shared with write access: the owner's grant to the
    /// signing key (the writer's own), for the folder's scope.
    grant: Option<Grant>,
}

impl std::fmt::Debug for Identity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Identity({})", Id::hash(&self.owner()).short())
    }
}

/// Why an identity file could not be used.
pub type IdentityError = KeyFileError;

/// `~/.config/peerstore/identity` (or under `$XDG_CONFIG_HOME`).
pub fn default_identity_path() -> PathBuf {
    if let Some(x) = std::env::var_os("XDG_CONFIG_HOME") {
        return PathBuf::from(x).join("peerstore/identity");
    }
    match std::env::var_os("HOME") {
        Some(h) => PathBuf::from(h).join(".config/peerstore/identity"),
        None => PathBuf::from("peerstore-identity"),
    }
}

impl Identity {
    /// An identity from its 32 secret bytes.
    pub fn from_secret(secret: [u8; 32]) -> Identity {
        Identity::of(SigningKey::from_bytes(&secret))
    }

    /// A new random identity.
    pub fn generate() -> Identity {
        Identity::of(SigningKey::generate(&mut rand::rngs::OsRng))
    }

    fn of(signing: SigningKey) -> Identity {
        Identity {
            owner: signing.verifying_key().to_bytes(),
            signing,
            shared_root: None,
            grant: None,
        }
    }

    /// A reader of the directory `dir_name` (key `dir_key`) of the tree of
    /// `owner`, shared with this user: a vault over it reads that
    /// directory as its root. It cannot sign the owner's records.
    pub fn shared(owner: [u8; 32], dir_name: Vec<u8>, dir_key: SecretKey) -> Identity {
        Identity {
            owner,
            shared_root: Some((dir_name, dir_key)),
            ..Identity::generate()
        }
    }

    /// A writer of the directory `dir_name` (key `dir_key`) of the tree
    /// of `owner`, shared with write access: it signs with its own key
    /// `writer` and the owner's `grant`, and claims the blocks it writes.
    pub fn shared_writer(
        owner: [u8; 32],
        dir_name: Vec<u8>,
        dir_key: SecretKey,
        writer: [u8; 32],
        grant: Grant,
    ) -> Identity {
        Identity {
            owner,
            shared_root: Some((dir_name, dir_key)),
            grant: Some(grant),
            ..Identity::from_secret(writer)
        }
    }

    /// Whether this is a reader or writer of a shared tree.
    pub fn is_shared(&self) -> bool {
        self.shared_root.is_some()
    }

    /// Whether storage nodes accept what this identity signs: an owner's,
    /// or a writer's with a grant (a reader's throwaway key is refused).
    pub fn can_write(&self) -> bool {
        self.shared_root.is_none() || self.grant.is_some()
    }

    /// The scope of the folder this identity writes by grant.
    pub fn grant_scope(&self) -> Option<Scope> {
        self.grant.as_ref().map(|g| g.scope)
    }

    /// Loads the identity at `path`, creating it (mode 0600) if absent.
    pub fn load_or_create(path: &Path) -> Result<Identity, IdentityError> {
        if let Some(secret) = read_key::<32>(path)? {
            return Ok(Identity::from_secret(secret));
        }
        let id = Identity::generate();
        if create_key(path, &id.signing.to_bytes())? {
            return Ok(id);
        }
        // Another process created it first: use that one.
        match read_key::<32>(path)? {
            Some(secret) => Ok(Identity::from_secret(secret)),
            None => Err(KeyFileError::Malformed(path.display().to_string(), 32)),
        }
    }

    /// The secret key's bytes (to seal into an account's keyring).
    pub fn secret(&self) -> [u8; 32] {
        self.signing.to_bytes()
    }

    /// This owner's claim on block `key`, made now.
    pub fn claim(&self, key: Id) -> Claim {
        match &self.grant {
            // A writer's blocks in a shared folder are the folder owner's.
            Some(g) => Claim::sign_granted(&self.signing, self.owner, g, key, now_ms()),
            None => Claim::sign(&self.signing, key, now_ms()),
        }
    }

    /// This owner's release of its claims on `keys`, made now.
    pub fn release(&self, keys: Vec<Id>) -> Release {
        Release::sign(&self.signing, keys, now_ms())
    }

    /// The owner public key (records hang off it).
    pub fn owner(&self) -> [u8; 32] {
        self.owner
    }

    fn derive(&self, info: &[u8]) -> [u8; 32] {
        let hk = Hkdf::<Sha256>::new(Some(b"peerstore-identity-v1"), &self.signing.to_bytes());
        let mut out = [0u8; 32];
        // 32 bytes is far below HKDF-SHA256's 8160-byte limit.
        let _ = hk.expand(info, &mut out);
        out
    }

    /// The record name of the tree's root directory.
    pub fn root_name(&self) -> Vec<u8> {
        match &self.shared_root {
            Some((name, _)) => name.clone(),
            None => self.derive(b"root directory record name").to_vec(),
        }
    }

    /// The encryption key of the root directory.
    pub fn root_key(&self) -> SecretKey {
        match &self.shared_root {
            Some((_, key)) => key.clone(),
            None => SecretKey(self.derive(b"root directory key")),
        }
    }

    /// The record name of the list of what this owner shares.
    pub fn shares_name(&self) -> Vec<u8> {
        self.derive(b"shares record name")[..16].to_vec()
    }

    /// The encryption key of the list of what this owner shares.
    pub fn shares_key(&self) -> SecretKey {
        SecretKey(self.derive(b"shares record key"))
    }

    /// The key that seals this machine's list of pinned paths
    /// (`DATA/pins`): file names are not kept in plain text at rest.
    pub fn pins_key(&self) -> SecretKey {
        SecretKey(self.derive(b"pinned paths key"))
    }

    /// The record name of the tree's trash directory.
    pub fn trash_name(&self) -> Vec<u8> {
        self.derive(b"trash directory record name")[..16].to_vec()
    }

    /// The encryption key of the trash directory.
    pub fn trash_key(&self) -> SecretKey {
        SecretKey(self.derive(b"trash directory key"))
    }

    /// The DHT key of the record `name` owned by this identity.
    pub fn record_key(&self, name: &[u8]) -> Id {
        record_key(&self.owner(), name)
    }

    /// Signs a record version with no clock.
    pub fn sign(&self, name: &[u8], seq: u64, value: Option<Vec<u8>>) -> Record {
        self.sign_in(name, seq, crate::clock::Clock::default(), value, None)
    }

    /// Signs a record version with its writers' clock.
    pub fn sign_clocked(
        &self,
        name: &[u8],
        seq: u64,
        clock: crate::clock::Clock,
        value: Option<Vec<u8>>,
    ) -> Record {
        self.sign_in(name, seq, clock, value, None)
    }

    /// Signs a record version of a folder tagged `scope` (an owner's
    /// version; a granted writer's always carries its grant's scope).
    pub fn sign_in(
        &self,
        name: &[u8],
        seq: u64,
        clock: crate::clock::Clock,
        value: Option<Vec<u8>>,
        scope: Option<Scope>,
    ) -> Record {
        match (&self.grant, scope) {
            (Some(g), _) => {
                Record::sign_granted(&self.signing, self.owner, g, name, seq, clock, value)
            }
            (None, Some(s)) => Record::sign_scoped(&self.signing, name, seq, clock, value, s),
            (None, None) => Record::sign_clocked(&self.signing, name, seq, clock, value),
        }
    }

    /// Grants `writer` the right to write this owner's records tagged
    /// `scope`.
    pub fn grant(&self, writer: [u8; 32], scope: Scope) -> Grant {
        Grant::sign(&self.signing, writer, scope)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn created_once_private_and_deterministic_keys() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("sub/identity");
        let a = Identity::load_or_create(&p).unwrap();
        let b = Identity::load_or_create(&p).unwrap();
        assert_eq!(a.owner(), b.owner());
        assert_eq!(a.root_key(), b.root_key());
        assert_eq!(a.root_name(), b.root_name());
        assert_ne!(a.root_key().0.to_vec(), a.root_name());
        assert_eq!(
            fs::metadata(&p).unwrap().permissions().mode() & 0o777,
            0o600
        );
        fs::set_permissions(&p, fs::Permissions::from_mode(0o640)).unwrap();
        assert!(matches!(
            Identity::load_or_create(&p),
            Err(IdentityError::TooOpen(..))
        ));
        assert_ne!(Identity::generate().owner(), a.owner());
    }
}
