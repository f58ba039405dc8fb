//! The node's key pair, kept in its data directory.
//!
//! The node ID is SHA-256 of the ed25519 public key, so a node restarted on
//! the same data directory comes back at the same ring position. The secret
//! key file (`node.key`, 32 raw bytes) is written atomically with mode 0600
//! and refused if group or others can read it.

use crate::id::Id;
use ed25519_dalek::SigningKey;
use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

/// File name of the node's secret key inside the data directory.
pub const KEY_FILE: &str = "node.key";

/// Why the key could not be loaded or created.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("{path}: {err}")]
    Io { path: String, err: std::io::Error },
    #[error("{0}: key file is readable by group or others (mode {1:o}); run: chmod 600 {0}")]
    TooOpen(String, u32),
    #[error("{0}: key file is not 32 bytes")]
    Malformed(String),
}

fn io(path: &Path, err: std::io::Error) -> IdentityError {
    IdentityError::Io {
        path: path.display().to_string(),
        err,
    }
}

/// Loads the node key from `dir`, creating it (and `dir`) on first start.
pub fn load_or_create(dir: &Path) -> Result<SigningKey, IdentityError> {
    fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let path = dir.join(KEY_FILE);
    match fs::metadata(&path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(IdentityError::TooOpen(path.display().to_string(), mode));
            }
            let bytes = fs::read(&path).map_err(|e| io(&path, e))?;
            let secret: [u8; 32] = bytes
                .as_slice()
                .try_into()
                .map_err(|_| IdentityError::Malformed(path.display().to_string()))?;
            Ok(SigningKey::from_bytes(&secret))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let key = SigningKey::generate(&mut rand::rngs::OsRng);
            let tmp = dir.join(format!(".{KEY_FILE}.tmp"));
            let mut f = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)
                .map_err(|e| io(&tmp, e))?;
            f.write_all(&key.to_bytes()).map_err(|e| io(&tmp, e))?;
            f.sync_all().map_err(|e| io(&tmp, e))?;
            fs::rename(&tmp, &path).map_err(|e| io(&path, e))?;
            fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| io(dir, e))?;
            Ok(key)
        }
        Err(e) => Err(io(&path, e)),
    }
}

/// The ring ID of a node key.
pub fn node_id(key: &SigningKey) -> Id {
    Id::hash(key.verifying_key().as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_is_created_once_and_kept_private() {
        let d = tempfile::tempdir().unwrap();
        let a = load_or_create(d.path()).unwrap();
        let b = load_or_create(d.path()).unwrap();
        assert_eq!(node_id(&a), node_id(&b));
        let mode = fs::metadata(d.path().join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(mode, 0o600);
        fs::set_permissions(d.path().join(KEY_FILE), fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            load_or_create(d.path()),
            Err(IdentityError::TooOpen(..))
        ));
    }
}
