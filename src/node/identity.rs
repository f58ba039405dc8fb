//! The node's static key, kept in its data directory.
//!
//! The node ID is SHA-256 of the static X25519 public key that the node
//! proves in every link handshake, so a node restarted on the same data
//! directory comes back at the same ring position, and nobody can take a
//! ring position without the matching secret key. The key file
//! (`node.key`, 32 raw bytes) is written atomically with mode 0600 and
//! refused if group or others can read it.

use crate::keyfile::{KeyFileError, create_key, read_key};
use crate::net::StaticKey;
use std::path::Path;

/// File name of the node's secret key inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Loads the node key from `dir`, creating it (and `dir`) on first start.
pub fn load_or_create(dir: &Path) -> Result<StaticKey, KeyFileError> {
    let path = dir.join(KEY_FILE);
    if let Some(bytes) = read_key::<32>(&path)? {
        return Ok(StaticKey::from_secret_bytes(bytes));
    }
    let key = StaticKey::generate();
    if create_key(&path, &key.secret_bytes())? {
        return Ok(key);
    }
    // Another process created it first: use that one.
    match read_key::<32>(&path)? {
        Some(bytes) => Ok(StaticKey::from_secret_bytes(bytes)),
        None => Err(KeyFileError::Malformed(path.display().to_string(), 32)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn key_is_created_once_and_kept_private() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(d.path()).unwrap();
        let b = load_or_create(d.path()).unwrap();
        assert_eq!(a.id(), b.id());
        let mode = fs::metadata(d.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(d.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(d.path()),
            Err(KeyFileError::TooOpen(..))
        ));
    }
}
